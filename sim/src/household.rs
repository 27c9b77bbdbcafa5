//! One household's behaviour on top of the standard profile: who is at home when, the
//! appliances they switch on, and their holidays away.
//!
//! The BDEW household profile is the *average* of many homes; one home is lumpier. Its load is
//! a standby floor (fridge, routers, standby), a continuous part that follows the profile's
//! shape while someone is at home, and appliance runs (kettle, cooking, washing machine,
//! dishwasher, dryer, television) arriving at random, more often when the profile says people
//! are active. Working households are away on working days (their own leave and return times,
//! different each day); every household spends a few weeks a year away, when only the
//! standby floor remains. Calibrated so that the mean stays the meter's annual consumption.
//!
//! Everything is a function of the household's seed and the ticks it is driven through.

use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::load::{DayType, TickContext, hash_unit};

/// Share of the energy drawn by the standby floor.
const STANDBY_SHARE: f64 = 0.22;
/// Share of the energy drawn by appliance runs.
const APPLIANCE_SHARE: f64 = 0.38;

/// An appliance: power (W, for a home of 3,000 kWh a year) and run length range (minutes).
struct Appliance {
    power_w: f64,
    minutes: (f64, f64),
    /// Relative frequency of runs.
    weight: f64,
}

const APPLIANCES: [Appliance; 6] = [
    // Kettle, microwave: short and strong.
    Appliance {
        power_w: 2000.0,
        minutes: (3.0, 10.0),
        weight: 4.0,
    },
    // Cooking (hob, oven).
    Appliance {
        power_w: 1800.0,
        minutes: (20.0, 75.0),
        weight: 1.6,
    },
    // Washing machine (heating phase dominates).
    Appliance {
        power_w: 1100.0,
        minutes: (60.0, 120.0),
        weight: 0.45,
    },
    // Dishwasher.
    Appliance {
        power_w: 900.0,
        minutes: (90.0, 150.0),
        weight: 0.5,
    },
    // Tumble dryer.
    Appliance {
        power_w: 2200.0,
        minutes: (50.0, 90.0),
        weight: 0.25,
    },
    // Television, computers, lighting scene.
    Appliance {
        power_w: 250.0,
        minutes: (60.0, 240.0),
        weight: 1.5,
    },
];

/// When the household is at home.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Occupancy {
    /// Someone is at home most of the day.
    AtHome,
    /// Away on working days, leaving around `leave_h` and returning around `return_h`.
    Working { leave_h: f64, return_h: f64 },
}

/// A running appliance: power (W) and when it stops (µs).
#[derive(Debug, Clone, Copy)]
struct Run {
    power_w: f64,
    until_us: i64,
}

/// One household's behaviour.
#[derive(Debug)]
pub struct Household {
    seed: u64,
    rng: StdRng,
    occupancy: Occupancy,
    /// Appliance power scale (bigger homes, bigger appliances).
    scale: f64,
    /// Holidays away: (first, last) local dates of the year `vacation_year`.
    vacations: Vec<(NaiveDate, NaiveDate)>,
    vacation_year: i32,
    runs: Vec<Run>,
}

impl Household {
    /// A household of `annual_kwh` whose behaviour follows `seed`.
    pub fn new(seed: u64, annual_kwh: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4053_E401_D000_0001);
        let occupancy = if rng.random_bool(0.6) {
            Occupancy::Working {
                leave_h: rng.random_range(6.5..9.0),
                return_h: rng.random_range(15.5..19.0),
            }
        } else {
            Occupancy::AtHome
        };
        Self {
            seed,
            rng,
            occupancy,
            scale: (annual_kwh / 3000.0).sqrt().clamp(0.6, 2.0),
            vacations: Vec::new(),
            vacation_year: i32::MIN,
            runs: Vec::new(),
        }
    }

    /// Whether the household is away on holiday on local `date`.
    pub fn on_vacation(&mut self, date: NaiveDate) -> bool {
        if date.year() != self.vacation_year {
            self.plan_vacations(date.year());
        }
        self.vacations.iter().any(|(a, b)| *a <= date && date <= *b)
    }

    /// Holidays of `year`: none to three trips of three days to two weeks, drawn from the
    /// seed and the year alone.
    fn plan_vacations(&mut self, year: i32) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (year as u64).wrapping_mul(0x2545_F491));
        let trips = rng.random_range(0..=3);
        self.vacations = (0..trips)
            .filter_map(|_| {
                let start = NaiveDate::from_yo_opt(year, rng.random_range(1..=350))?;
                let days = rng.random_range(3..=14);
                Some((start, start + chrono::Days::new(days - 1)))
            })
            .collect();
        self.vacation_year = year;
    }

    /// Presence (0 away … 1 at home) at local hour `h` of a day of `day` type, the day being
    /// `day_index` (days since the epoch, local).
    fn presence(&self, day: DayType, day_index: i64, h: f64) -> f64 {
        match self.occupancy {
            Occupancy::AtHome => 1.0,
            Occupancy::Working { leave_h, return_h } if day == DayType::Working => {
                // Each working day its own times, ± about an hour.
                let leave = leave_h + 0.6 * hash_unit(self.seed, day_index * 2);
                let back = return_h + 1.2 * hash_unit(self.seed, day_index * 2 + 1);
                if (leave..back).contains(&h) {
                    0.15
                } else {
                    1.25
                }
            }
            Occupancy::Working { .. } => 1.15,
        }
    }

    /// Mean power (W) over the tick `ctx`, for a home whose average-household profile power
    /// is `profile_w` and whose mean power over a year is `mean_w`.
    pub fn load_w(&mut self, ctx: &TickContext, profile_w: f64, mean_w: f64) -> f64 {
        let t_us = ctx.t.timestamp_micros();
        let dt_us = ctx.dt.num_microseconds().unwrap_or(900_000_000).max(1);
        let start_us = t_us - dt_us;
        let standby = STANDBY_SHARE * mean_w;
        let away = self.on_vacation(ctx.local_date);
        let day = ctx.slots.first().map_or(DayType::Working, |s| s.day);
        let h = ctx.slots.first().map_or(0.0, |s| s.quarter as f64 / 4.0);
        let day_index = i64::from(ctx.local_date.num_days_from_ce());
        let presence = if away {
            0.0
        } else {
            self.presence(day, day_index, h)
        };
        let activity = (profile_w / mean_w.max(1.0)).max(0.0);

        // Appliance runs started in this tick: Poisson with a rate that follows activity and
        // presence, sized so that runs draw APPLIANCE_SHARE of the energy on average.
        let total_weight: f64 = APPLIANCES.iter().map(|a| a.weight).sum();
        let mean_run_wh: f64 = APPLIANCES
            .iter()
            .map(|a| {
                a.weight / total_weight * a.power_w * self.scale * (a.minutes.0 + a.minutes.1)
                    / 120.0
            })
            .sum();
        let dt_h = dt_us as f64 / 3.6e9;
        let rate = APPLIANCE_SHARE * mean_w * dt_h / mean_run_wh * activity * presence;
        let mut starts = 0;
        let mut p = (-rate).exp();
        let mut u: f64 = self.rng.random();
        while u > p && starts < 8 {
            u -= p;
            starts += 1;
            p *= rate / f64::from(starts);
        }
        for _ in 0..starts {
            let pick = self.rng.random_range(0.0..total_weight);
            let mut acc = 0.0;
            let a = APPLIANCES
                .iter()
                .find(|a| {
                    acc += a.weight;
                    pick < acc
                })
                .unwrap_or(&APPLIANCES[0]);
            let minutes = self.rng.random_range(a.minutes.0..=a.minutes.1);
            let begin = start_us + self.rng.random_range(0..dt_us);
            let power = a.power_w * self.scale * self.rng.random_range(0.8..1.2);
            self.runs.push(Run {
                power_w: power,
                until_us: begin + (minutes * 60e6) as i64,
            });
            // The part of this tick before it began draws nothing.
            self.runs.push(Run {
                power_w: -power,
                until_us: begin,
            });
        }
        let mut appliances = 0.0;
        for r in &self.runs {
            let on = (r.until_us.min(t_us) - start_us).max(0) as f64 / dt_us as f64;
            appliances += r.power_w * on;
        }
        self.runs.retain(|r| r.until_us > t_us);

        let continuous = (1.0 - STANDBY_SHARE - APPLIANCE_SHARE) * profile_w * presence;
        standby * self.rng.random_range(0.85..1.15) + continuous + appliances.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::load::{Profile, Site, Weather};

    #[test]
    fn a_year_of_a_household_keeps_its_annual_energy_and_is_lumpy() {
        let site = Site {
            tz: chrono_tz::Europe::Berlin,
            latitude: 51.0,
            longitude: 10.0,
        };
        let weather = Weather::new(7);
        let dt = TimeDelta::minutes(15);
        let mut total_kwh = 0.0;
        let mut homes = 0;
        for seed in 0..20u64 {
            let mut home = Household::new(seed, 3000.0);
            let mut t = DateTime::<Utc>::from_timestamp(1_704_067_200, 0).unwrap_or_default();
            let mut kwh = 0.0;
            let mut peak: f64 = 0.0;
            let mean_w = 3000.0 * 1000.0 / 8760.0;
            for _ in 0..(365 * 96) {
                t += dt;
                let ctx = TickContext::new(t, dt, &site, &weather);
                let base = ctx.profile_w(Profile::household(), 3000.0, 0);
                let w = home.load_w(&ctx, base, mean_w);
                assert!(w.is_finite() && w >= 0.0);
                peak = peak.max(w);
                kwh += w / 4000.0;
            }
            total_kwh += kwh;
            homes += 1;
            assert!(
                peak > 4.0 * mean_w,
                "seed {seed}: peak {peak} W is not lumpy"
            );
        }
        let mean = total_kwh / f64::from(homes);
        assert!((2400.0..3600.0).contains(&mean), "mean {mean} kWh a year");
    }
}
