//! Load shapes and the per-meter reading model. Pure functions of time and a seeded RNG.

use chrono::{DateTime, Datelike, Duration as TimeDelta, FixedOffset, Timelike, Utc, Weekday};
use meterstack_core::{MeterId, Reading};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A meter's customer class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A home: morning and evening peaks, more at home on weekends.
    Household,
    /// A shop or office: business hours on weekdays, little at night and on Sundays.
    Commercial,
}

impl Class {
    /// Relative load (mean about 1) at local `hour` (fractional) on `weekday`.
    pub fn shape(self, hour: f64, weekday: Weekday) -> f64 {
        let bump = |centre: f64, width: f64| (-((hour - centre) / width).powi(2)).exp();
        let weekend = matches!(weekday, Weekday::Sat | Weekday::Sun);
        match self {
            Class::Household => {
                let (morning, midday) = if weekend { (0.5, 0.7) } else { (0.8, 0.3) };
                0.35 + morning * bump(7.5, 1.2) + midday * bump(12.5, 2.0) + 1.3 * bump(19.0, 2.0)
            }
            Class::Commercial => {
                let open = match weekday {
                    Weekday::Sun => 0.0,
                    Weekday::Sat => 0.5,
                    _ => 1.0,
                };
                0.25 + open * 1.6 * (bump(10.0, 2.5) + bump(15.0, 2.5)).min(1.0)
            }
        }
    }
}

/// Seasonal factor: highest in mid-winter, lowest in mid-summer (northern hemisphere).
pub fn season(ts: DateTime<FixedOffset>) -> f64 {
    let day = f64::from(ts.ordinal0());
    1.0 + 0.2 * (2.0 * std::f64::consts::PI * (day + 10.0) / 365.25).cos()
}

/// One simulated meter.
#[derive(Debug, Clone)]
pub struct Meter {
    /// Its id.
    pub id: MeterId,
    /// Its class.
    pub class: Class,
    /// Mean active power, W.
    pub mean_w: f64,
    import_wh: f64,
    seq: u64,
    rng: StdRng,
}

impl Meter {
    /// Meter number `n` of a fleet seeded with `seed`.
    pub fn new(id: MeterId, n: u64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (class, mean_w) = if rng.random_bool(0.85) {
            (Class::Household, rng.random_range(250.0..650.0))
        } else {
            (Class::Commercial, rng.random_range(2_000.0..15_000.0))
        };
        let import_wh = rng.random_range(1.0e5..5.0e7_f64).round();
        Self {
            id,
            class,
            mean_w,
            import_wh,
            seq: 0,
            rng,
        }
    }

    /// The reading at `ts`, closing an interval of `interval` since the previous one.
    pub fn read(&mut self, ts: DateTime<Utc>, interval: TimeDelta, offset: FixedOffset) -> Reading {
        let local = ts.with_timezone(&offset);
        let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
        let noise = 1.0 + 0.15 * self.normal();
        let power_w =
            (self.mean_w * self.class.shape(hour, local.weekday()) * season(local) * noise)
                .max(0.02 * self.mean_w);
        let hours = interval.num_milliseconds() as f64 / 3_600_000.0;
        // Whole Wh, as registers report them; the register never goes down.
        self.import_wh += (power_w * hours).round();
        let voltage_v = 230.0 + 1.5 * self.normal() - 2.0 * power_w / (self.mean_w * 4.0);
        self.seq += 1;
        Reading {
            meter_id: self.id.clone(),
            ts,
            import_wh: self.import_wh,
            export_wh: None,
            power_w: Some(round_to(power_w, 1)),
            voltage_v: Some(round_to(voltage_v, 1)),
            current_a: Some(round_to(power_w / voltage_v, 2)),
            seq: Some(self.seq),
        }
    }

    /// A standard normal sample (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn meter(n: u64) -> Meter {
        Meter::new(MeterId::new(&format!("m-{n}")).expect("id"), n, 42)
    }

    #[test]
    fn registers_only_grow_and_values_are_plausible() {
        let offset = FixedOffset::east_opt(3600).expect("offset");
        let step = TimeDelta::minutes(15);
        for n in 0..20 {
            let mut m = meter(n);
            let mut t = Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("time");
            let mut last = 0.0;
            for _ in 0..(96 * 14) {
                let r = m.read(t, step, offset);
                assert!(r.import_wh >= last, "register went down");
                last = r.import_wh;
                let v = r.voltage_v.expect("voltage");
                assert!((215.0..245.0).contains(&v), "voltage {v}");
                assert!(r.power_w.expect("power") > 0.0);
                t += step;
            }
        }
    }

    #[test]
    fn households_peak_in_the_evening_and_commercial_in_business_hours() {
        let h = Class::Household;
        assert!(h.shape(19.0, Weekday::Wed) > 2.0 * h.shape(3.0, Weekday::Wed));
        let c = Class::Commercial;
        assert!(c.shape(11.0, Weekday::Tue) > 3.0 * c.shape(11.0, Weekday::Sun));
        let winter = Utc
            .with_ymd_and_hms(2026, 1, 10, 0, 0, 0)
            .single()
            .expect("t")
            .fixed_offset();
        let summer = Utc
            .with_ymd_and_hms(2026, 7, 10, 0, 0, 0)
            .single()
            .expect("t")
            .fixed_offset();
        assert!(season(winter) > season(summer));
    }

    #[test]
    fn same_seed_same_fleet() {
        let t = Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("t");
        let offset = FixedOffset::east_opt(0).expect("offset");
        assert_eq!(
            meter(3).read(t, TimeDelta::minutes(15), offset),
            meter(3).read(t, TimeDelta::minutes(15), offset)
        );
    }
}
