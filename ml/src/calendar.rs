//! The utility's calendar: its time zone (forecast days start at local midnight; hour of day
//! and day of week are local) and its public holidays.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::series::{Hour, start_of};

/// `[ml.calendar]`: time zone and holidays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    /// IANA time zone of the service area.
    pub timezone: String,
    /// Public holidays (local dates), treated like Sundays.
    pub holidays: Vec<NaiveDate>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            holidays: Vec::new(),
        }
    }
}

/// Local time facts of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHour {
    /// Hour of the local day, 0–23.
    pub hour: u32,
    /// Day of the week, Monday = 0.
    pub weekday: u32,
    /// A public holiday.
    pub holiday: bool,
}

/// The calendar, built from its config.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    holidays: BTreeSet<NaiveDate>,
}

impl Calendar {
    /// Builds the calendar; an unknown time zone is an error.
    pub fn new(config: &CalendarConfig) -> Result<Self, String> {
        let tz: Tz = config.timezone.parse().map_err(|_| {
            format!(
                "ml.calendar.timezone: unknown time zone {:?}",
                config.timezone
            )
        })?;
        Ok(Self {
            tz,
            holidays: config.holidays.iter().copied().collect(),
        })
    }

    /// The local facts of hour `h`.
    pub fn local(&self, h: Hour) -> LocalHour {
        let t = start_of(h).with_timezone(&self.tz);
        LocalHour {
            hour: t.hour(),
            weekday: t.weekday().num_days_from_monday(),
            holiday: self.holidays.contains(&t.date_naive()),
        }
    }

    /// The hour in which the local day containing hour `h` starts (its local midnight; on a
    /// day whose midnight does not exist, the first hour that does).
    pub fn midnight(&self, h: Hour) -> Hour {
        let date = start_of(h).with_timezone(&self.tz).date_naive();
        self.day_start(date)
    }

    /// The first hour of local `date`.
    pub fn day_start(&self, date: NaiveDate) -> Hour {
        (0..24)
            .find_map(|hh| {
                let naive = date.and_hms_opt(hh, 0, 0)?;
                self.tz.from_local_datetime(&naive).earliest()
            })
            .map_or(0, |t| t.timestamp().div_euclid(3600))
    }

    /// Local midnights from the day of hour `from` up to (not including) hour `to`.
    pub fn midnights(&self, from: Hour, to: Hour) -> Vec<Hour> {
        let mut out = Vec::new();
        let mut date = start_of(from).with_timezone(&self.tz).date_naive();
        loop {
            let h = self.day_start(date);
            if h >= to {
                return out;
            }
            if h >= from {
                out.push(h);
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => return out,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::hour_of;
    use chrono::{DateTime, Utc};

    #[test]
    fn local_midnights_follow_daylight_saving() {
        let cal = Calendar::new(&CalendarConfig {
            timezone: "Europe/Berlin".into(),
            holidays: vec![NaiveDate::from_ymd_opt(2025, 3, 31).unwrap_or_default()],
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let at = |s: &str| hour_of(s.parse::<DateTime<Utc>>().unwrap_or_default());
        let days = cal.midnights(at("2025-03-29T12:00:00Z"), at("2025-03-31T22:00:00Z"));
        // 30 March is 23 hours long.
        assert_eq!(
            days,
            vec![at("2025-03-29T23:00:00Z"), at("2025-03-30T22:00:00Z")]
        );
        let l = cal.local(at("2025-03-31T06:00:00Z"));
        assert_eq!((l.hour, l.weekday, l.holiday), (8, 0, true));
        assert!(
            Calendar::new(&CalendarConfig {
                timezone: "Mars/Olympus".into(),
                holidays: vec![]
            })
            .is_err()
        );
    }
}
