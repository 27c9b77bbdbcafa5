//! Event-time windows per meter: interval, hourly and daily energy, peak demand and voltage
//! extremes.
//!
//! A window is first emitted (revision 0) when its meter's watermark (its newest reading)
//! passes the window's end. Changes inside the allowed lateness (an out-of-order reading
//! filling a hole) mark it dirty, and the next flush emits it again with the next revision.
//! Once the meter's anchor (the newest finalized reading) passes its end, nothing can change
//! it any more and its state is dropped.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::transforms::intervals::{Change, Interval};
use meterstack_core::records::{MeterWindow, Quality, Rule, Width};

/// The widths every meter is aggregated over.
pub const WIDTHS: [Width; 3] = [Width::Interval, Width::Hour, Width::Day];

/// The length of `width` in µs, for an interval of `dt_us`.
pub fn width_us(width: Width, dt_us: i64) -> i64 {
    match width {
        Width::Interval => dt_us,
        Width::Hour => 3_600_000_000.max(dt_us),
        Width::Day => 86_400_000_000,
    }
}

/// One window's running aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    energy_wh: f64,
    export_wh: f64,
    measured: u32,
    estimated: u32,
    peak_demand_w: Option<f64>,
    max_power_w: Option<f64>,
    min_voltage_v: Option<f64>,
    max_voltage_v: Option<f64>,
    rules: BTreeSet<Rule>,
    revision: u32,
    emitted: bool,
    dirty: bool,
}

fn max_opt(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.max(b)))
}

fn min_opt(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One meter's open windows, by width and start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    open: [BTreeMap<i64, Window>; 3],
}

impl Windows {
    fn each(&mut self, t_us: i64, dt_us: i64, mut f: impl FnMut(&mut Window)) {
        for (i, width) in WIDTHS.into_iter().enumerate() {
            let w = width_us(width, dt_us);
            let start = t_us.div_euclid(w) * w;
            let window = self.open[i].entry(start).or_default();
            f(window);
            window.dirty = true;
        }
    }

    /// Applies an interval's change.
    pub fn apply(&mut self, change: &Change, dt_us: i64) {
        let old = change.old.unwrap_or(Interval {
            energy_wh: 0.0,
            export_wh: 0.0,
            quality: Quality::Rejected,
            rule: None,
        });
        let new = change.new;
        self.each(change.end - dt_us, dt_us, |w| {
            w.energy_wh += new.energy_wh - old.energy_wh;
            w.export_wh += new.export_wh - old.export_wh;
            match old.quality {
                Quality::Measured => w.measured -= 1,
                Quality::Estimated => w.estimated -= 1,
                _ => {}
            }
            match new.quality {
                Quality::Measured => {
                    w.measured += 1;
                    // A measured interval never changes again: its demand can set the peak.
                    let demand = new.energy_wh * 3.6e9 / dt_us as f64;
                    w.peak_demand_w = max_opt(w.peak_demand_w, demand);
                }
                _ => w.estimated += 1,
            }
            if let (Some(rule), false) = (new.rule, new.quality == Quality::Measured) {
                w.rules.insert(rule);
            }
        });
    }

    /// Adds a reading's power and voltage to the windows of the interval ending at `ts_us`.
    pub fn observe(
        &mut self,
        ts_us: i64,
        dt_us: i64,
        power_w: Option<f64>,
        voltage_v: Option<f64>,
    ) {
        if power_w.is_none() && voltage_v.is_none() {
            return;
        }
        self.each(ts_us - dt_us, dt_us, |w| {
            if let Some(p) = power_w {
                w.max_power_w = max_opt(w.max_power_w, p);
            }
            if let Some(v) = voltage_v {
                w.min_voltage_v = min_opt(w.min_voltage_v, v);
                w.max_voltage_v = max_opt(w.max_voltage_v, v);
            }
        });
    }

    /// Emits the windows that ended by `watermark` and changed since they were last emitted,
    /// then drops those that ended by `anchor` (final).
    pub fn flush(
        &mut self,
        meter_id: &str,
        watermark: i64,
        anchor: i64,
        dt_us: i64,
        out: &mut Vec<MeterWindow>,
    ) {
        for (i, width) in WIDTHS.into_iter().enumerate() {
            let w_us = width_us(width, dt_us);
            for (start, w) in self.open[i].range_mut(..=watermark - w_us) {
                if !w.dirty {
                    continue;
                }
                if w.emitted {
                    w.revision += 1;
                }
                w.emitted = true;
                w.dirty = false;
                let ts = |us: i64| DateTime::from_timestamp_micros(us).unwrap_or_default();
                out.push(MeterWindow {
                    meter_id: meter_id.to_owned(),
                    window: width,
                    start: ts(*start),
                    end: ts(start + w_us),
                    energy_wh: w.energy_wh,
                    export_wh: w.export_wh,
                    peak_demand_w: w.peak_demand_w,
                    max_power_w: w.max_power_w,
                    min_voltage_v: w.min_voltage_v,
                    max_voltage_v: w.max_voltage_v,
                    expected_intervals: (w_us / dt_us) as u32,
                    measured_intervals: w.measured,
                    estimated_intervals: w.estimated,
                    rules: w.rules.iter().copied().collect(),
                    revision: w.revision,
                });
            }
            // `anchor - w_us + 1`: windows ending at or before the anchor.
            self.open[i] = self.open[i].split_off(&(anchor - w_us + 1));
        }
    }

    /// Whether any window is waiting to be emitted.
    pub fn is_empty(&self) -> bool {
        self.open.iter().all(BTreeMap::is_empty)
    }
}
