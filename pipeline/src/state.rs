//! What the pipeline knows, as checkpointed: per meter, per feeder, and the clock. The
//! processor owns it; each stage reads and changes its own parts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use meterstack_core::records::MeterWindow;

use crate::transforms::anomaly::meter::MeterRulesState;
use crate::transforms::anomaly::{Alerts, Baseline};
use crate::transforms::intervals::Track;
use crate::transforms::windows::Windows;

/// A time in µs as UTC.
pub(crate) fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// One meter's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MeterState {
    pub(crate) track: Track,
    pub(crate) windows: Windows,
    pub(crate) alerts: Alerts,
    pub(crate) baseline: Baseline,
    /// Receive time of its newest record, µs.
    pub(crate) last_received: i64,
    /// Missing interval ends still awaited, and whether a resend was requested.
    pub(crate) missing: BTreeMap<i64, bool>,
    /// Intervals in a row without consumption.
    pub(crate) zero_run: u32,
    /// Intervals in a row far outside the baseline.
    pub(crate) anomaly_run: u32,
    /// Its feeder was out while it was silent.
    pub(crate) feeder_out: bool,
}

impl MeterState {
    /// The parts its anomaly rules keep.
    pub(crate) fn rules_state(&mut self) -> MeterRulesState<'_> {
        MeterRulesState {
            alerts: &mut self.alerts,
            baseline: &mut self.baseline,
            zero_run: &mut self.zero_run,
            anomaly_run: &mut self.anomaly_run,
        }
    }

    /// Finalizes what fell out of the allowed `lateness` (µs), forgets gaps older than
    /// `resend_after` that were never asked for, and emits meter `id`'s windows that changed.
    pub(crate) fn settle(
        &mut self,
        id: &str,
        lateness: i64,
        resend_after: i64,
        dt: i64,
        out: &mut Vec<MeterWindow>,
    ) {
        let Some(newest) = self.track.last_ts() else {
            return;
        };
        self.track.prune(newest - lateness);
        let anchor = self.track.first_ts().unwrap_or(newest);
        self.missing
            .retain(|t, requested| *requested || *t > anchor - resend_after);
        self.windows.flush(id, newest, anchor, dt, out);
    }
}

/// A feeder's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FeederState {
    pub(crate) alerts: Alerts,
    /// Meters named by the open outage alert.
    pub(crate) out: BTreeSet<String>,
}

/// Everything the pipeline knows, as checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Per bus partition of `readings.raw`, the offset of the first record not yet reflected.
    pub offsets: BTreeMap<u32, u64>,
    pub(crate) clock: i64,
    pub(crate) next_tick: i64,
    pub(crate) meters: BTreeMap<String, MeterState>,
    pub(crate) feeders: BTreeMap<String, FeederState>,
    /// Intervals received per feeder and UTC day (start µs).
    pub(crate) received: BTreeMap<String, BTreeMap<i64, u64>>,
}

impl State {
    /// The pipeline clock.
    pub fn clock(&self) -> DateTime<Utc> {
        ts(self.clock)
    }

    /// Meters with state.
    pub fn meters(&self) -> usize {
        self.meters.len()
    }
}
