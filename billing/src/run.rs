//! Bill runs: every meter with a tariff billed for one cycle into the SQL store (`bills`),
//! idempotently. A meter's cycle is the one its tariff version's `billing_day` starts in the
//! run's month (the version in force on that day, which must cover the whole cycle). Its
//! carry-in is the previous cycle's stored bill under the same tariff, else the cycles before
//! it in the same year billed from the trusted zone. A bill equal to the newest stored
//! revision is left alone; a changed one (late data restated its intervals, a corrected
//! version) is stored as the next revision, and the older ones are kept.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use meterstack_core::store::SqlStore;
use meterstack_core::store::bills::StoredBill;
use meterstack_lake::query::Lake;
use serde::Serialize;

use crate::engine::{self, Bill, Carry, Grid, cycles};
use crate::{BillingError, Tariff, carry_before, source, version_tariff, year_start};

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

/// The cycle that starts in `month` on `billing_day`.
fn cycle_in(month: NaiveDate, billing_day: u32) -> (NaiveDate, NaiveDate) {
    cycles::cycle_of(month.with_day(billing_day).unwrap_or(month), billing_day)
}

/// A tariff version's cycle in the run's month, with its grid.
struct Group {
    tariff: Tariff,
    version: i64,
    from: NaiveDate,
    to: NaiveDate,
    grid: Grid,
}

/// The version of a tariff whose cycle in `month` it covers whole: of the stored versions,
/// the one in force on the first day of its own cycle that month.
async fn group(
    store: &SqlStore,
    tz: Tz,
    step: Duration,
    tariff_id: &str,
    month: NaiveDate,
) -> Result<Group, BillingError> {
    let versions = store.tariff_versions(Some(tariff_id)).await?;
    for stored in versions.iter().rev() {
        let tariff = version_tariff(stored)?;
        let (from, to) = cycle_in(month, tariff.billing_day);
        let starts = tariff.effective_from <= from;
        if starts && tariff.effective_to.is_none_or(|end| from <= end) {
            if tariff.effective_to.is_some_and(|end| end < to) {
                return Err(BillingError::Bill(engine::BillError::NotEffective {
                    id: tariff.id.clone(),
                    from: tariff.effective_from,
                    to: tariff.effective_to,
                    first: from,
                    last: to,
                }));
            }
            let grid = Grid::new(tz, from, to, step, tariff.billing_day)?;
            return Ok(Group {
                tariff,
                version: stored.version,
                from,
                to,
                grid,
            });
        }
    }
    Err(meterstack_core::store::StoreError::NotFound(format!(
        "a version of tariff {tariff_id} in force on its cycle of {}",
        period_name(month)
    ))
    .into())
}

/// The carry a meter's stored bill of the previous cycle hands to `group`'s cycle: only from
/// a bill under the same tariff whose last day is the day before this cycle.
fn stored_carry(previous: Option<&StoredBill>, group: &Group) -> Option<Carry> {
    let b = previous?;
    let adjacent = b.to.succ_opt() == Some(group.from) && b.tariff_id == group.tariff.id;
    adjacent
        .then(|| serde_json::from_str(&b.carry).ok())
        .flatten()
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
    let previous_period = period_name(month - chrono::Months::new(1));
    let mut report = RunReport {
        period: period.clone(),
        ..RunReport::default()
    };
    let mut meters = store.meter_tariffs().await?;
    report.meters = meters.len();
    let mut groups: BTreeMap<String, Result<Group, String>> = BTreeMap::new();
    for (_, tariff_id) in &meters {
        if !groups.contains_key(tariff_id) {
            let g = group(store, tz, step, tariff_id, month).await;
            groups.insert(tariff_id.clone(), g.map_err(|e| e.to_string()));
        }
    }
    // Byte order, as the lake compares ids (a store's collation may sort otherwise).
    meters.sort();
    let stored = store.latest_bills(&period).await?;
    let previous = store.latest_bills(&previous_period).await?;
    for chunk in meters.chunks(CHUNK) {
        let billable: Vec<(&String, &Group)> = chunk
            .iter()
            .filter_map(|(meter, tariff_id)| match &groups[tariff_id] {
                Ok(g) => Some((meter, g)),
                Err(why) => {
                    report.failed.push((meter.clone(), why.clone()));
                    None
                }
            })
            .collect();
        let (Some(first), Some(last)) = (billable.first(), billable.last()) else {
            continue;
        };
        // From the earliest day any of them needs: the cycle, or the year so far for a
        // meter without a stored carry.
        let read_from = billable
            .iter()
            .map(|(m, g)| match stored_carry(previous.get(*m), g) {
                Some(_) => g.from,
                None => year_start(&g.tariff, g.from).min(g.from),
            })
            .min()
            .unwrap_or(first.1.from);
        let read_to = billable
            .iter()
            .map(|(_, g)| g.to)
            .max()
            .unwrap_or(first.1.to);
        let mut intervals =
            source::of_meters(lake, (first.0, last.0), tz, read_from, read_to).await?;
        let mut new = Vec::new();
        for (meter, g) in billable {
            let own = intervals.remove(meter.as_str()).unwrap_or_default();
            let carry = match stored_carry(previous.get(meter), g) {
                Some(c) => Ok(c),
                None => carry_before(&g.tariff, tz, step, &own, g.from).map_err(|e| e.to_string()),
            };
            let bill = carry.and_then(|c| {
                engine::bill_on(&g.grid, &g.tariff, &own, c).map_err(|e| e.to_string())
            });
            match bill {
                Ok(bill) => {
                    let row = stored_bill(meter, &period, g.version, &bill);
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
    fn a_stored_carry_counts_only_from_the_day_before_under_the_same_tariff() {
        let doc = serde_json::json!({"id": "t", "effective_from": "2026-01-01",
            "urdb": {"energyratestructure": [[{"rate": 0.1}]]}});
        let tariff = serde_json::from_value::<crate::Document>(doc)
            .unwrap()
            .tariff()
            .unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let group = Group {
            grid: Grid::new(
                chrono_tz::UTC,
                d("2026-12-01"),
                d("2026-12-31"),
                Duration::minutes(15),
                1,
            )
            .unwrap(),
            tariff,
            version: 1,
            from: d("2026-12-01"),
            to: d("2026-12-31"),
        };
        let carry = Carry {
            credit: 4.5,
            ..Carry::default()
        };
        let bill = Bill {
            tariff_id: "t".into(),
            from: d("2026-11-01"),
            to: d("2026-11-30"),
            currency: "USD".into(),
            total: 1.0,
            lines: Vec::new(),
            estimated_share: 0.0,
            carry: carry.clone(),
        };
        let stored = stored_bill("m", "2026-11", 1, &bill);
        assert_eq!(stored_carry(Some(&stored), &group), Some(carry));
        let other_tariff = StoredBill {
            tariff_id: "u".into(),
            ..stored.clone()
        };
        assert_eq!(stored_carry(Some(&other_tariff), &group), None);
        let gap = StoredBill {
            to: d("2026-11-29"),
            ..stored
        };
        assert_eq!(stored_carry(Some(&gap), &group), None);
        assert_eq!(stored_carry(None, &group), None);
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
