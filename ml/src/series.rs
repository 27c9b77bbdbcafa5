//! The training frame: each meter's hourly consumption on one clock of whole UTC hours, with
//! the outdoor temperature of its area where one is known.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use meterstack_core::store::meters::MeterClass;

/// An hour as a number: hours since the Unix epoch (UTC).
pub type Hour = i64;

/// The hour that contains `t`.
pub fn hour_of(t: DateTime<Utc>) -> Hour {
    t.timestamp().div_euclid(3600)
}

/// The start of hour `h`.
pub fn start_of(h: Hour) -> DateTime<Utc> {
    DateTime::from_timestamp(h * 3600, 0).unwrap_or_default()
}

/// One meter's hourly imported energy, Wh, from hour `start` on; `NaN` where unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The meter.
    pub meter_id: String,
    /// Its class, from the registry.
    pub class: Option<MeterClass>,
    /// The hour of `values[0]`.
    pub start: Hour,
    /// Energy per hour, Wh.
    pub values: Vec<f64>,
    /// The outdoor temperature of the meter's area, °C per hour (a series of its own,
    /// shared by the area's meters; observations up to now, a weather forecast after): the
    /// one input read at and after a forecast's origin.
    pub temperature: Option<Arc<Series>>,
}

impl Series {
    /// An empty series of `meter_id`.
    pub fn new(meter_id: impl Into<String>, class: Option<MeterClass>) -> Self {
        Self {
            meter_id: meter_id.into(),
            class,
            start: 0,
            values: Vec::new(),
            temperature: None,
        }
    }

    /// The value of hour `h` (`NaN` outside the series or where unknown).
    pub fn at(&self, h: Hour) -> f64 {
        usize::try_from(h - self.start)
            .ok()
            .and_then(|i| self.values.get(i))
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// The first hour after the series.
    pub fn end(&self) -> Hour {
        self.start + self.values.len() as Hour
    }

    /// Sets hour `h` to `wh`, growing the series (with unknown hours) as needed.
    pub fn set(&mut self, h: Hour, wh: f64) {
        if self.values.is_empty() {
            self.start = h;
        }
        if h < self.start {
            let grow = (self.start - h) as usize;
            self.values
                .splice(0..0, std::iter::repeat_n(f64::NAN, grow));
            self.start = h;
        }
        let i = (h - self.start) as usize;
        if i >= self.values.len() {
            self.values.resize(i + 1, f64::NAN);
        }
        self.values[i] = wh;
    }

    /// The series cut to the hours before `until`: what was known then (the temperature
    /// stays whole: after `until` it stands for the weather forecast of then).
    pub fn before(&self, until: Hour) -> Self {
        let keep = (until - self.start).clamp(0, self.values.len() as Hour) as usize;
        Self {
            meter_id: self.meter_id.clone(),
            class: self.class,
            start: self.start,
            values: self.values[..keep].to_vec(),
            temperature: self.temperature.clone(),
        }
    }

    /// The temperature at hour `h`, °C (`NaN` where unknown).
    pub fn temperature_at(&self, h: Hour) -> f64 {
        self.temperature.as_ref().map_or(f64::NAN, |t| t.at(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_grows_both_ways_and_cuts_at_an_hour() {
        let mut s = Series::new("m", None);
        s.set(10, 1.0);
        s.set(12, 3.0);
        s.set(8, 0.5);
        assert_eq!(s.start, 8);
        assert_eq!(s.end(), 13);
        assert!(s.at(9).is_nan() && s.at(11).is_nan() && s.at(13).is_nan());
        assert_eq!((s.at(8), s.at(10), s.at(12)), (0.5, 1.0, 3.0));
        let cut = s.before(11);
        assert_eq!(cut.end(), 11);
        assert!(cut.at(12).is_nan());
    }
}
