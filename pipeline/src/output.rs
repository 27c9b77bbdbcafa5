//! What one step of the pipeline emits, in order, to its output topics. The records
//! themselves are defined once, in [`meterstack_core::records`].

use meterstack_core::records::{Aggregate, Alert, CleanReading, RejectedReading};
use meterstack_core::wire::command::CommandMessage;

/// Everything one step of the pipeline emits, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    /// To `readings.clean`.
    pub clean: Vec<CleanReading>,
    /// To `readings.rejected`.
    pub rejected: Vec<RejectedReading>,
    /// To `aggregates`.
    pub aggregates: Vec<Aggregate>,
    /// To `alerts`.
    pub alerts: Vec<Alert>,
    /// To `meter.commands`, with the meter id.
    pub commands: Vec<(String, CommandMessage)>,
}

impl Outputs {
    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.clean.is_empty()
            && self.rejected.is_empty()
            && self.aggregates.is_empty()
            && self.alerts.is_empty()
            && self.commands.is_empty()
    }
}
