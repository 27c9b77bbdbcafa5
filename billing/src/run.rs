//! Bill runs: every meter with a tariff billed for one cycle into the SQL store (`bills`),
//! idempotently. A meter's cycle is the one its tariff's `billing_day` starts in the run's
//! month. Its carry-in is the previous period's stored bill, or the cycles before it in the
//! same year billed from the trusted zone when there is none. A bill equal to the newest
//! stored revision is left alone; a changed one (late data restated its intervals) is stored
//! as the next revision, and the older ones are kept.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, Months, NaiveDate};
use chrono_tz::Tz;
use meterstack_core::store::SqlStore;
use meterstack_core::store::bills::StoredBill;
use meterstack_lake::query::Lake;
use serde::Serialize;

use crate::engine::{self, Bill, Carry, Grid};
use crate::{BillingError, Tariff, carry_before, source, tariff_on, year_start};

/// Meters read from the lake in one scan.
const CHUNK: usize = 2_000;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// The period, `YYYY-MM`.
    pub period: String,
    /// Meters with a tariff.
    pub meters: usize,
    /// Bills stored for the first time.
    pub new: usize,
    /// New revisions of bills that changed.
    pub revised: usize,
    /// Bills equal to their stored revision.
    pub unchanged: usize,
    /// Meters not billed, with why (missing data, no tariff version in force, …).
    pub failed: Vec<(String, String)>,
}

/// `YYYY-MM` of a month's first day.
pub fn period_name(month: NaiveDate) -> String {
    format!("{:04}-{:02}", month.year(), month.month())
}

/// The cycle of `tariff` that starts in `month`.
fn cycle(tariff: &Tariff, month: NaiveDate) -> (NaiveDate, NaiveDate) {
    let from = month.with_day(tariff.billing_day).unwrap_or(month);
    (from, from + Months::new(1) - chrono::Days::new(1))
}

/// A tariff version and the meters billed under it.
struct Group {
    tariff: Tariff,
    version: i64,
    from: NaiveDate,
    to: NaiveDate,
    meters: Vec<String>,
}

/// Bills every meter with a tariff for the cycle starting in `month` (its first day).
pub async fn run(
    lake: &Lake,
    store: &SqlStore,
    tz: Tz,
    step: Duration,
    month: NaiveDate,
) -> Result<RunReport, BillingError> {
    let month = month.with_day(1).unwrap_or(month);
    let period = period_name(month);
    let previous_period = period_name(month - Months::new(1));
    let mut report = RunReport {
        period: period.clone(),
        ..RunReport::default()
    };
    let meters = store.meter_tariffs().await?;
    report.meters = meters.len();
    let mut by_tariff: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (meter, tariff) in meters {
        by_tariff.entry(tariff).or_default().push(meter);
    }
    let mut groups = Vec::new();
    for (tariff_id, meters) in by_tariff {
        // The version in force when the cycle starts (its billing day is the version's).
        let found = match tariff_on(store, &tariff_id, month).await {
            Ok((t, _)) => tariff_on(store, &tariff_id, cycle(&t, month).0).await,
            Err(e) => Err(e),
        };
        match found {
            Ok((tariff, version)) => {
                let (from, to) = cycle(&tariff, month);
                groups.push(Group {
                    tariff,
                    version,
                    from,
                    to,
                    meters,
                });
            }
            Err(e) => report
                .failed
                .extend(meters.into_iter().map(|m| (m, e.to_string()))),
        }
    }
    let stored = store.latest_bills(&period).await?;
    let previous = store.latest_bills(&previous_period).await?;
    for group in groups {
        let grid = Grid::new(tz, group.from, group.to, step, group.tariff.billing_day)?;
        for chunk in group.meters.chunks(CHUNK) {
            // A meter without last period's bill needs its year so far for its carry-in.
            let needs_year = chunk.iter().any(|m| !previous.contains_key(m));
            let read_from = if needs_year {
                year_start(&group.tariff, group.from).min(group.from)
            } else {
                group.from
            };
            let (first, last) = (chunk[0].as_str(), chunk[chunk.len() - 1].as_str());
            let mut intervals =
                source::of_meters(lake, (first, last), tz, read_from, group.to).await?;
            let mut new = Vec::new();
            for meter in chunk {
                let own = intervals.remove(meter).unwrap_or_default();
                let carry = match previous.get(meter) {
                    Some(b) => serde_json::from_str::<Carry>(&b.carry).map_err(|e| e.to_string()),
                    None => carry_before(&group.tariff, tz, step, &own, group.from)
                        .map_err(|e| e.to_string()),
                };
                let bill = carry.and_then(|c| {
                    engine::bill_on(&grid, &group.tariff, &own, c).map_err(|e| e.to_string())
                });
                match bill {
                    Ok(bill) => {
                        let row = stored_bill(meter, &period, group.version, &bill);
                        match stored.get(meter) {
                            Some(old) if same(old, &row) => report.unchanged += 1,
                            Some(old) => {
                                report.revised += 1;
                                new.push(StoredBill {
                                    revision: old.revision + 1,
                                    ..row
                                });
                            }
                            None => {
                                report.new += 1;
                                new.push(row);
                            }
                        }
                    }
                    Err(why) => report.failed.push((meter.clone(), why)),
                }
            }
            store.add_bills(&new).await?;
        }
    }
    Ok(report)
}

fn stored_bill(meter: &str, period: &str, version: i64, bill: &Bill) -> StoredBill {
    StoredBill {
        meter_id: meter.to_owned(),
        period: period.to_owned(),
        revision: 1,
        tariff_id: bill.tariff_id.clone(),
        tariff_version: version,
        from: bill.from,
        to: bill.to,
        currency: bill.currency.clone(),
        total: bill.total,
        estimated_share: bill.estimated_share,
        lines: serde_json::to_string(&bill.lines).unwrap_or_default(),
        carry: serde_json::to_string(&bill.carry).unwrap_or_default(),
        created_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
    }
}

/// The same bill: tariff version, dates, amounts, lines, estimates and carry.
fn same(a: &StoredBill, b: &StoredBill) -> bool {
    (
        a.tariff_id.as_str(),
        a.tariff_version,
        a.from,
        a.to,
        a.total,
        a.estimated_share,
        a.lines.as_str(),
        a.carry.as_str(),
    ) == (
        b.tariff_id.as_str(),
        b.tariff_version,
        b.from,
        b.to,
        b.total,
        b.estimated_share,
        b.lines.as_str(),
        b.carry.as_str(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_period_is_named_by_its_month() {
        assert_eq!(
            period_name(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()),
            "2026-11"
        );
    }

    #[test]
    fn equal_bills_are_the_same_and_a_changed_line_is_not() {
        let bill = Bill {
            tariff_id: "t".into(),
            from: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            currency: "USD".into(),
            total: 12.5,
            lines: Vec::new(),
            estimated_share: 0.0,
            carry: Carry::default(),
        };
        let a = stored_bill("m", "2026-11", 1, &bill);
        assert!(same(&a, &stored_bill("m", "2026-11", 1, &bill)));
        let changed = Bill {
            total: 12.51,
            ..bill
        };
        assert!(!same(&a, &stored_bill("m", "2026-11", 1, &changed)));
    }
}
