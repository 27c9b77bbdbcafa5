//! The records that flow between meterstack's stages, defined once: what the pipeline
//! appends to `readings.clean` and `readings.rejected` ([`clean`]), to `aggregates`
//! ([`aggregate`]) and to `alerts` ([`alert`]), as the store, the lake, the API and the live
//! feed read them. (Raw readings are [`crate::Reading`]; commands to meters are
//! [`crate::wire::command::CommandMessage`].) Each is one JSON record on its topic.
//!
//! Every record carries a key that identifies it across at-least-once redelivery: a clean
//! reading by (meter, ts), an aggregate by (meter, window, start, revision), an alert event by
//! (alert id, event). Consumers that need exactly-once results deduplicate by that key.

pub mod aggregate;
pub mod alert;
pub mod clean;

pub use aggregate::{Aggregate, FeederCompleteness, MeterWindow, Width};
pub use alert::{Alert, AlertEvent, AlertType, Severity};
pub use clean::{CleanReading, Quality, RejectedReading, Rule};

/// A name that is not one of an enumeration's (a severity, an alert type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {expected}, not {got:?}")]
pub struct UnknownName {
    /// What was named.
    pub what: &'static str,
    /// The names it may have.
    pub expected: &'static str,
    /// The name given.
    pub got: String,
}
