//! What drives a meter's load: the BDEW standard load profiles, the calendar (weekends and
//! public holidays), a synthetic weather series and the sun. All pure functions of time and
//! the fleet's seed, computed once per tick into a [`TickContext`] that every meter shares.

use std::f64::consts::PI;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// The BDEW day types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayType {
    /// Saturday (and 24 and 31 December).
    Saturday,
    /// Sunday or public holiday.
    Holiday,
    /// Working day.
    Working,
}

/// A standard load profile: kWh per quarter hour for 1,000,000 kWh a year, by month, day type
/// and quarter hour of the local day.
#[derive(Debug)]
pub struct Profile {
    values: Vec<[f64; 96]>,
}

impl Profile {
    /// Parses a BDEW 2025 profile CSV (see `sim/data/README.md`).
    pub fn parse(csv: &str) -> Result<Self, String> {
        let mut lines = csv.lines();
        let _months = lines.next().ok_or("empty profile")?;
        let types: Vec<&str> = lines.next().ok_or("no day-type row")?.split(',').collect();
        if types.len() != 37 {
            return Err(format!("expected 36 columns, found {}", types.len() - 1));
        }
        let mut values = vec![[0.0; 96]; 36];
        let mut quarters = 0;
        for (q, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
            if q >= 96 {
                return Err("more than 96 quarter hours".into());
            }
            for (col, cell) in line.split(',').skip(1).enumerate() {
                let v: f64 = cell
                    .trim()
                    .parse()
                    .map_err(|_| format!("quarter {q}: bad value {cell:?}"))?;
                let slot = values
                    .get_mut(col)
                    .ok_or_else(|| format!("quarter {q}: too many columns"))?;
                slot[q] = v;
            }
            quarters += 1;
        }
        if quarters != 96 {
            return Err(format!("expected 96 quarter hours, found {quarters}"));
        }
        // Reorder each month's columns as [Saturday, Holiday, Working] (the files' SA, FT, WT).
        for (col, t) in types.iter().skip(1).enumerate() {
            let expected = ["SA", "FT", "WT"][col % 3];
            if *t != expected {
                return Err(format!(
                    "column {}: day type {t}, expected {expected}",
                    col + 1
                ));
            }
        }
        Ok(Self { values })
    }

    /// kWh in quarter hour `quarter` (0–95) of a day of `month` (1–12) and `day` type, for an
    /// annual consumption of 1,000,000 kWh.
    pub fn quarter_kwh(&self, month: u32, day: DayType, quarter: usize) -> f64 {
        let col = (month.clamp(1, 12) as usize - 1) * 3
            + match day {
                DayType::Saturday => 0,
                DayType::Holiday => 1,
                DayType::Working => 2,
            };
        self.values[col][quarter % 96]
    }

    /// The households profile (H25).
    pub fn household() -> &'static Profile {
        static P: OnceLock<Profile> = OnceLock::new();
        P.get_or_init(|| parse_embedded(include_str!("../data/h25.csv")))
    }

    /// The commercial profile (G25).
    pub fn commercial() -> &'static Profile {
        static P: OnceLock<Profile> = OnceLock::new();
        P.get_or_init(|| parse_embedded(include_str!("../data/g25.csv")))
    }
}

#[allow(clippy::panic)]
fn parse_embedded(csv: &str) -> Profile {
    // The files are part of the source tree and checked by a unit test.
    Profile::parse(csv).unwrap_or_else(|e| panic!("embedded load profile: {e}"))
}

/// Easter Sunday of `year` (Gregorian, anonymous algorithm).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or_default()
}

/// Whether `date` is a nationwide public holiday in Germany (the BDEW profiles' calendar).
pub fn is_holiday(date: NaiveDate) -> bool {
    let (m, d) = (date.month(), date.day());
    if matches!((m, d), (1, 1) | (5, 1) | (10, 3) | (12, 25) | (12, 26)) {
        return true;
    }
    let from_easter = (date - easter(date.year())).num_days();
    // Good Friday, Easter Monday, Ascension, Whit Monday.
    matches!(from_easter, -2 | 1 | 39 | 50)
}

/// The BDEW day type of `date`.
pub fn day_type(date: NaiveDate) -> DayType {
    if date.weekday() == Weekday::Sun || is_holiday(date) {
        DayType::Holiday
    } else if date.weekday() == Weekday::Sat
        || matches!((date.month(), date.day()), (12, 24) | (12, 31))
    {
        DayType::Saturday
    } else {
        DayType::Working
    }
}

/// A deterministic number in [-1, 1) from `seed` and `k` (SplitMix64).
pub(crate) fn hash_unit(seed: u64, k: i64) -> f64 {
    let mut z = seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Smooth noise: random values at integer knots, cosine-interpolated between them.
fn value_noise(seed: u64, x: f64) -> f64 {
    let k = x.floor();
    let f = x - k;
    let w = (1.0 - (PI * f).cos()) / 2.0;
    let k = k as i64;
    hash_unit(seed, k) * (1.0 - w) + hash_unit(seed, k + 1) * w
}

/// A synthetic weather series for the fleet's area: temperature with a seasonal and a daily
/// cycle plus multi-day anomalies, and cloud cover.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    seed: u64,
}

impl Weather {
    /// The series of fleet `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed: seed ^ 0x5745_4154_4845_5200,
        }
    }

    /// The long-term normal temperature (°C) of local day-of-year `doy` and local `hour`.
    pub fn normal_c(doy: f64, hour: f64) -> f64 {
        9.5 - 9.0 * (2.0 * PI * (doy - 15.0) / 365.25).cos()
            + 4.0 * (2.0 * PI * (hour - 9.0) / 24.0).sin()
    }

    /// The temperature (°C) at `t`: the normal plus an anomaly that wanders over days.
    pub fn temperature_c(&self, t: DateTime<Utc>, doy: f64, hour: f64) -> f64 {
        let days = t.timestamp() as f64 / 86_400.0;
        let anomaly =
            4.0 * value_noise(self.seed, days / 3.0) + 1.5 * value_noise(self.seed ^ 1, days);
        Self::normal_c(doy, hour) + anomaly
    }

    /// Cloud cover in [0, 1] at `t`, changing over hours.
    pub fn cloud(&self, t: DateTime<Utc>) -> f64 {
        let hours = t.timestamp() as f64 / 3_600.0;
        (0.5 + 0.45 * value_noise(self.seed ^ 2, hours / 6.0)
            + 0.2 * value_noise(self.seed ^ 3, hours))
        .clamp(0.0, 1.0)
    }
}

/// Clear-sky irradiance on a PV module (W/m², at most 1000) at `t` and `latitude`/`longitude`.
pub fn clear_sky_w_m2(t: DateTime<Utc>, latitude: f64, longitude: f64) -> f64 {
    let doy = f64::from(t.ordinal());
    let declination = 23.44_f64.to_radians() * (2.0 * PI * (284.0 + doy) / 365.0).sin();
    let solar_hours = f64::from(t.hour())
        + f64::from(t.minute()) / 60.0
        + f64::from(t.second()) / 3600.0
        + longitude / 15.0;
    let hour_angle = (15.0 * (solar_hours - 12.0)).to_radians();
    let lat = latitude.to_radians();
    let sin_elevation =
        lat.sin() * declination.sin() + lat.cos() * declination.cos() * hour_angle.cos();
    if sin_elevation <= 0.0 {
        0.0
    } else {
        1000.0 * sin_elevation.powf(1.15) * 0.9
    }
}

/// A quarter hour of the local calendar that an interval overlaps, with the share of the
/// interval it covers.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Local month, 1–12.
    pub month: u32,
    /// Day type.
    pub day: DayType,
    /// Quarter hour of the local day, 0–95.
    pub quarter: usize,
    /// Share of the interval (the shares sum to 1).
    pub weight: f64,
}

/// Everything about one tick (the end of one interval) that every meter shares.
#[derive(Debug, Clone)]
pub struct TickContext {
    /// End of the interval: the reading's timestamp.
    pub t: DateTime<Utc>,
    /// Interval length.
    pub dt: TimeDelta,
    /// Local quarter hours the interval covers.
    pub slots: Vec<Slot>,
    /// Temperature, °C.
    pub temperature_c: f64,
    /// The normal temperature for this local time of year, °C.
    pub normal_c: f64,
    /// Irradiance on PV modules including clouds, W/m².
    pub irradiance_w_m2: f64,
    /// The local date the interval starts on.
    pub local_date: NaiveDate,
}

/// Where the fleet is: time zone and location.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// Local time zone (load shapes follow local time, with daylight saving).
    pub tz: Tz,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
}

impl TickContext {
    /// The context of the interval `(t - dt, t]`.
    pub fn new(t: DateTime<Utc>, dt: TimeDelta, site: &Site, weather: &Weather) -> Self {
        const QUARTER: i64 = 900;
        let end = t.timestamp();
        let start = end - dt.num_seconds().max(1);
        let total = (end - start) as f64;
        let mut slots = Vec::with_capacity(((end - start) / QUARTER + 2) as usize);
        let mut s = start;
        while s < end {
            let next = ((s.div_euclid(QUARTER)) + 1) * QUARTER;
            let e = next.min(end);
            let local = DateTime::from_timestamp(s, 0)
                .unwrap_or_default()
                .with_timezone(&site.tz);
            let date = local.date_naive();
            slots.push(Slot {
                month: local.month(),
                day: day_type(date),
                quarter: (local.hour() * 4 + local.minute() / 15) as usize,
                weight: (e - s) as f64 / total,
            });
            s = e;
        }
        let local = t.with_timezone(&site.tz);
        let doy = f64::from(local.ordinal());
        let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
        let mid = t - dt / 2;
        let irradiance =
            clear_sky_w_m2(mid, site.latitude, site.longitude) * (1.0 - 0.75 * weather.cloud(mid));
        Self {
            t,
            dt,
            slots,
            temperature_c: weather.temperature_c(t, doy, hour),
            normal_c: Weather::normal_c(doy, hour),
            irradiance_w_m2: irradiance,
            local_date: DateTime::from_timestamp(start, 0)
                .unwrap_or_default()
                .with_timezone(&site.tz)
                .date_naive(),
        }
    }

    /// Mean power (W) over the interval of a customer with `annual_kwh` on `profile`, its
    /// schedule shifted by `shift` quarter hours.
    pub fn profile_w(&self, profile: &Profile, annual_kwh: f64, shift: i32) -> f64 {
        let kwh_per_quarter: f64 = self
            .slots
            .iter()
            .map(|s| {
                let q = (s.quarter as i32 + shift).rem_euclid(96) as usize;
                s.weight * profile.quarter_kwh(s.month, s.day, q)
            })
            .sum();
        // kWh per quarter hour for 1e6 kWh/year → W for this customer.
        kwh_per_quarter * annual_kwh / 1.0e6 * 4.0 * 1000.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn site() -> Site {
        crate::FleetConfig::default().site().unwrap()
    }

    #[test]
    fn embedded_profiles_sum_to_about_a_million_kwh_a_year() {
        for profile in [Profile::household(), Profile::commercial()] {
            let mut total = 0.0;
            let mut day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
            while day.year() == 2025 {
                for q in 0..96 {
                    total += profile.quarter_kwh(day.month(), day_type(day), q);
                }
                day = day.succ_opt().unwrap();
            }
            assert!((900_000.0..1_100_000.0).contains(&total), "{total}");
        }
    }

    #[test]
    fn calendar_knows_easter_and_holidays() {
        assert_eq!(easter(2026), NaiveDate::from_ymd_opt(2026, 4, 5).unwrap());
        assert_eq!(easter(2025), NaiveDate::from_ymd_opt(2025, 4, 20).unwrap());
        let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(day_type(d(4, 3)), DayType::Holiday); // Good Friday
        assert_eq!(day_type(d(5, 14)), DayType::Holiday); // Ascension
        assert_eq!(day_type(d(12, 25)), DayType::Holiday);
        assert_eq!(day_type(d(12, 24)), DayType::Saturday);
        assert_eq!(day_type(d(11, 21)), DayType::Saturday);
        assert_eq!(day_type(d(11, 22)), DayType::Holiday); // Sunday
        assert_eq!(day_type(d(11, 23)), DayType::Working);
    }

    #[test]
    fn households_peak_in_the_evening_and_offices_on_weekdays() {
        let weather = Weather::new(1);
        let at = |h| Utc.with_ymd_and_hms(2026, 1, 14, h, 0, 0).single().unwrap();
        let w = |h, p: &Profile| {
            TickContext::new(at(h), TimeDelta::minutes(15), &site(), &weather)
                .profile_w(p, 3500.0, 0)
        };
        assert!(w(18, Profile::household()) > 1.8 * w(3, Profile::household()));
        let sunday = Utc
            .with_ymd_and_hms(2026, 1, 18, 10, 0, 0)
            .single()
            .unwrap();
        let office_sunday = TickContext::new(sunday, TimeDelta::minutes(15), &site(), &weather)
            .profile_w(Profile::commercial(), 3500.0, 0);
        assert!(w(10, Profile::commercial()) > 2.0 * office_sunday);
    }

    #[test]
    fn intervals_longer_than_a_quarter_average_their_quarters() {
        let weather = Weather::new(1);
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 19, 0, 0).single().unwrap();
        let hour = TickContext::new(t, TimeDelta::hours(1), &site(), &weather);
        assert_eq!(hour.slots.len(), 4);
        let quarters: f64 = (0..4)
            .map(|i| {
                TickContext::new(
                    t - TimeDelta::minutes(15 * i),
                    TimeDelta::minutes(15),
                    &site(),
                    &weather,
                )
                .profile_w(Profile::household(), 1e6 / 8760.0, 0)
            })
            .sum::<f64>()
            / 4.0;
        let mean = hour.profile_w(Profile::household(), 1e6 / 8760.0, 0);
        assert!((mean - quarters).abs() < 1e-9, "{mean} vs {quarters}");
    }

    #[test]
    fn sun_shines_by_day_and_more_in_summer() {
        let noon = |m| {
            Utc.with_ymd_and_hms(2026, m, 21, 11, 20, 0)
                .single()
                .unwrap()
        };
        let night = Utc
            .with_ymd_and_hms(2026, 6, 21, 23, 0, 0)
            .single()
            .unwrap();
        assert_eq!(clear_sky_w_m2(night, 51.0, 10.0), 0.0);
        assert!(clear_sky_w_m2(noon(6), 51.0, 10.0) > 1.5 * clear_sky_w_m2(noon(12), 51.0, 10.0));
    }

    #[test]
    fn weather_has_seasons_and_stays_plausible() {
        let w = Weather::new(7);
        let mut t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let (mut jan, mut jul) = (0.0, 0.0);
        for _ in 0..(365 * 24) {
            let temp = w.temperature_c(t, f64::from(t.ordinal()), f64::from(t.hour()));
            assert!((-20.0..40.0).contains(&temp), "{temp}");
            if t.month() == 1 {
                jan += temp;
            }
            if t.month() == 7 {
                jul += temp;
            }
            let c = w.cloud(t);
            assert!((0.0..=1.0).contains(&c));
            t += TimeDelta::hours(1);
        }
        assert!(jul / 744.0 > jan / 744.0 + 10.0);
    }
}
