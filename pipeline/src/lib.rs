//! Stream transforms between the bus topics: the Kinesis Analytics + Lambda of the AWS design.
//!
//! In: `readings.raw` (what meters sent, as the broker received it).
//! Out: `readings.clean` (validated readings with quality flags), `readings.rejected` (with the
//! rule), `aggregates` (interval, hourly and daily windows per meter, restated when late data
//! changes them; feeder completeness), `alerts` (anomaly lifecycle) and `meter.commands`
//! (resend requests for gaps).
//!
//! The stages are folders under [`transforms`] (validation, intervals, windows, anomalies,
//! completeness), each with its pure logic and tests.
//!
//! Under [`sinks`], [`sinks::alerts::AlertRecorder`] keeps the `alerts` topic's lifecycle in the
//! SQL store and [`sinks::webhooks::Dispatcher`] delivers its events to webhook subscribers and
//! sends reminders.
//!
//! [`processor::Processor`] sequences the stages per meter and per feeder and owns their state
//! ([`state`]); [`runner`] runs it on the bus's consumer driver with checkpoints. The processor
//! is deterministic, so `meterstack eval` and the golden
//! replay test drive it directly.

pub mod config;
pub mod output;
pub mod processor;
pub mod registry;
pub mod runner;
pub mod sinks;
pub mod state;
pub mod transforms;

pub use config::PipelineConfig;
pub use processor::Processor;
pub use registry::{MeterInfo, Registry};
pub use runner::Pipeline;
pub use state::State;
