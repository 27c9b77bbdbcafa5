//! Stream transforms between the bus topics: the Kinesis Analytics + Lambda of the AWS design.
//!
//! In: `readings.raw` (what meters sent, as the broker received it).
//! Out: `readings.clean` (validated readings with quality flags), `readings.rejected` (with the
//! rule), `aggregates` (interval, hourly and daily windows per meter, restated when late data
//! changes them; feeder completeness), `alerts` (anomaly lifecycle) and `meter.commands`
//! (resend requests for gaps).
//!
//! | stage | folder | what it does |
//! |---|---|---|
//! | validation | [`vee`] | grid placement and clock skew, range checks, the quality flag |
//! | intervals | [`intervals`] | cumulative registers → interval energy (rollover, reset, exchange, gaps, outages), energy conserved |
//! | windows | [`windows`] | event-time windows with watermarks, allowed lateness and revisions |
//! | anomalies | [`anomaly`] | alert lifecycle and per-meter baselines |
//!
//! [`alerts::AlertRecorder`] keeps the `alerts` topic's lifecycle in the SQL store;
//! [`webhooks::Dispatcher`] delivers its events to webhook subscribers and sends reminders.
//!
//! [`processor::Processor`] wires the stages per meter and per feeder; [`runner`] runs it on
//! the bus with checkpoints. The processor is deterministic, so `meterstack eval` and the golden
//! replay test drive it directly.

pub mod alerts;
pub mod anomaly;
pub mod config;
pub mod intervals;
pub mod output;
pub mod processor;
pub mod registry;
pub mod runner;
pub mod vee;
pub mod webhooks;
pub mod windows;

pub use config::PipelineConfig;
pub use processor::{Processor, State};
pub use registry::{MeterInfo, Registry};
pub use runner::{Pipeline, PipelineDeps};
