//! Reading an OpenEI Utility Rate Database record (API v7/v8 field names, and the older
//! `fixedmonthlycharge` / `minmonthlycharge` / `annualmincharge`) into the parts of a
//! [`Tariff`](super::Tariff). Every field the engine uses is checked, and a field that would
//! change the bill but is not supported is refused by name — a bill is never silently wrong.

use serde_json::{Map, Value};

use super::{DemandTier, EnergyTier, Metering, Per, Recurring, Schedules, TariffError, TierUnit};

/// URDB's "no limit": the last tier's `max` is often 1e38 (or 9.9999997e37 after a float
/// round trip); anything this large is no limit.
const NO_LIMIT: f64 = 1e37;

/// Fields that change a bill and that meterstack does not bill: refused when they are present
/// with a value that matters.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("coincidentratestructure", "coincident demand charges"),
    (
        "lookbackpercent",
        "demand ratchets (billing demand from earlier months)",
    ),
    (
        "lookbackrange",
        "demand ratchets (billing demand from earlier months)",
    ),
    ("fueladjustmentsmonthly", "monthly fuel adjustments"),
    ("demandreactivepowercharge", "reactive power charges"),
    (
        "energytieredrates",
        "the old flat tier fields (energyratestructure is needed)",
    ),
];

/// The rate parts of a URDB record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub(crate) energy: Vec<Vec<EnergyTier>>,
    pub(crate) energy_schedules: Schedules,
    pub(crate) demand: Vec<Vec<DemandTier>>,
    pub(crate) demand_schedules: Option<Schedules>,
    pub(crate) flat_demand: Vec<Vec<DemandTier>>,
    pub(crate) flat_demand_months: Option<[u8; 12]>,
    pub(crate) fixed: Vec<Recurring>,
    pub(crate) minimum: Vec<Recurring>,
    pub(crate) metering: Metering,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> TariffError {
    TariffError::new(field, reason)
}

fn number(v: &Value, field: &str) -> Result<f64, TariffError> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(err(field, format!("must be a number, not {v}"))),
    }
}

fn opt_number(o: &Map<String, Value>, key: &str, field: &str) -> Result<Option<f64>, TariffError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => number(v, &format!("{field}.{key}")).map(Some),
    }
}

/// A structure's tiers, each with its field path, by period.
type Periods<'a> = Vec<Vec<(&'a Map<String, Value>, String)>>;

/// A structure: periods (non-empty arrays) of tier objects.
fn structure<'a>(
    record: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<Periods<'a>>, TariffError> {
    let Some(v) = record.get(key) else {
        return Ok(None);
    };
    let periods = v
        .as_array()
        .ok_or_else(|| err(key, "must be an array of periods"))?;
    if periods.is_empty() || periods.len() > 256 {
        return Err(err(key, "must have 1 … 256 periods"));
    }
    let mut out = Vec::with_capacity(periods.len());
    for (p, period) in periods.iter().enumerate() {
        let tiers = period
            .as_array()
            .ok_or_else(|| err(format!("{key}[{p}]"), "must be an array of tiers"))?;
        if tiers.is_empty() {
            return Err(err(format!("{key}[{p}]"), "has no tiers"));
        }
        let mut row = Vec::with_capacity(tiers.len());
        for (t, tier) in tiers.iter().enumerate() {
            let field = format!("{key}[{p}][{t}]");
            let o = tier
                .as_object()
                .ok_or_else(|| err(&field, "must be an object"))?;
            row.push((o, field));
        }
        out.push(row);
    }
    Ok(Some(out))
}

/// A tier's limit, checked to rise from the tier before; the last tier may have none.
fn limit(
    o: &Map<String, Value>,
    field: &str,
    previous: &mut Option<f64>,
    last: bool,
) -> Result<Option<f64>, TariffError> {
    let max = opt_number(o, "max", field)?.filter(|m| *m < NO_LIMIT);
    match (max, *previous) {
        (Some(m), _) if m <= 0.0 => return Err(err(format!("{field}.max"), "must be above 0")),
        (Some(m), Some(p)) if m <= p => {
            return Err(err(
                format!("{field}.max"),
                format!("tiers out of order: {m} is not above the tier before ({p})"),
            ));
        }
        (Some(_), _) if last => {
            return Err(err(
                format!("{field}.max"),
                "the last tier must have no limit (what lies above it would be unpriced)",
            ));
        }
        (None, _) if !last => {
            return Err(err(
                format!("{field}.max"),
                "tiers out of order: only the last tier may have no limit",
            ));
        }
        _ => {}
    }
    *previous = max;
    Ok(max)
}

/// `rate + adj`.
fn price(o: &Map<String, Value>, field: &str) -> Result<f64, TariffError> {
    let rate =
        opt_number(o, "rate", field)?.ok_or_else(|| err(format!("{field}.rate"), "missing"))?;
    Ok(rate + opt_number(o, "adj", field)?.unwrap_or(0.0))
}

fn energy_structure(record: &Map<String, Value>) -> Result<Vec<Vec<EnergyTier>>, TariffError> {
    let key = "energyratestructure";
    let periods = structure(record, key)?.ok_or_else(|| err(key, "missing"))?;
    periods
        .into_iter()
        .map(|tiers| {
            let mut previous = None;
            let n = tiers.len();
            tiers
                .into_iter()
                .enumerate()
                .map(|(t, (o, field))| {
                    let unit = match o.get("unit").and_then(Value::as_str).map(str::to_lowercase) {
                        None => TierUnit::Kwh,
                        Some(u) => match u.as_str() {
                            "kwh" => TierUnit::Kwh,
                            "kwh/kw" => TierUnit::KwhPerKw,
                            "kwh daily" => TierUnit::KwhDaily,
                            "kwh/kw daily" => TierUnit::KwhPerKwDaily,
                            other => {
                                return Err(err(
                                    format!("{field}.unit"),
                                    format!("unknown unit {other:?} (kWh, kWh/kW, kWh daily, kWh/kW daily)"),
                                ));
                            }
                        },
                    };
                    Ok(EnergyTier {
                        max: limit(o, &field, &mut previous, t + 1 == n)?,
                        unit,
                        rate: price(o, &field)?,
                        sell: opt_number(o, "sell", &field)?.unwrap_or(0.0),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .enumerate()
        .map(|(p, tiers)| {
            let tiers = tiers?;
            let per_kw = |t: &EnergyTier| matches!(t.unit, TierUnit::KwhPerKw | TierUnit::KwhPerKwDaily);
            if tiers.iter().any(per_kw) && !tiers.iter().all(per_kw) {
                return Err(err(
                    format!("{key}[{p}]"),
                    "tiers that mix kWh and kWh/kW limits are not supported",
                ));
            }
            Ok(tiers)
        })
        .collect()
}

fn demand_structure(
    record: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<Vec<DemandTier>>>, TariffError> {
    let Some(periods) = structure(record, key)? else {
        return Ok(None);
    };
    periods
        .into_iter()
        .map(|tiers| {
            let mut previous = None;
            let n = tiers.len();
            tiers
                .into_iter()
                .enumerate()
                .map(|(t, (o, field))| {
                    if let Some(u) = o.get("unit").and_then(Value::as_str)
                        && !u.eq_ignore_ascii_case("kw")
                    {
                        return Err(err(
                            format!("{field}.unit"),
                            format!("unknown unit {u:?} (kW)"),
                        ));
                    }
                    Ok(DemandTier {
                        max: limit(o, &field, &mut previous, t + 1 == n)?,
                        rate: price(o, &field)?,
                    })
                })
                .collect()
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A 0-based period index (URDB may write `1.0`).
fn index(v: &Value, field: &str, periods: usize) -> Result<u8, TariffError> {
    let x = number(v, field)?;
    if x.fract() != 0.0 || x < 0.0 || x >= periods as f64 {
        return Err(err(
            field,
            format!(
                "period {x} is out of range (the structure has {periods} periods, numbered from 0)"
            ),
        ));
    }
    Ok(x as u8)
}

fn schedule(
    record: &Map<String, Value>,
    key: &str,
    periods: usize,
) -> Result<Option<[[u8; 24]; 12]>, TariffError> {
    let Some(v) = record.get(key) else {
        return Ok(None);
    };
    let months = v
        .as_array()
        .filter(|m| m.len() == 12)
        .ok_or_else(|| err(key, "must be 12 × 24 (month × hour)"))?;
    let mut out = [[0u8; 24]; 12];
    for (m, hours) in months.iter().enumerate() {
        let hours = hours.as_array().filter(|h| h.len() == 24).ok_or_else(|| {
            err(
                format!("{key}[{m}]"),
                "must hold 24 hours (the schedule must be 12 × 24)",
            )
        })?;
        for (h, p) in hours.iter().enumerate() {
            out[m][h] = index(p, &format!("{key}[{m}][{h}]"), periods)?;
        }
    }
    Ok(Some(out))
}

/// Weekday and weekend schedules of a structure of `periods` periods; with one period they
/// may be left out.
fn schedules(
    record: &Map<String, Value>,
    prefix: &str,
    periods: usize,
) -> Result<Option<Schedules>, TariffError> {
    let weekday_key = format!("{prefix}weekdayschedule");
    let weekend_key = format!("{prefix}weekendschedule");
    let weekday = schedule(record, &weekday_key, periods)?;
    let weekend = schedule(record, &weekend_key, periods)?;
    match (weekday, weekend) {
        (Some(weekday), Some(weekend)) => Ok(Some(Schedules { weekday, weekend })),
        (None, None) if periods == 1 => Ok(None),
        (None, _) => Err(err(weekday_key, "missing")),
        (_, None) => Err(err(weekend_key, "missing")),
    }
}

fn recurring(
    record: &Map<String, Value>,
    amount_key: &str,
    unit_key: Option<&str>,
    per: Per,
) -> Result<Option<Recurring>, TariffError> {
    let Some(v) = record.get(amount_key) else {
        return Ok(None);
    };
    let amount = number(v, amount_key)?;
    if amount < 0.0 {
        return Err(err(amount_key, "must not be negative"));
    }
    let per = match unit_key {
        None => per,
        Some(k) => match record.get(k).and_then(Value::as_str) {
            None | Some("$/month") => Per::Month,
            Some("$/day") => Per::Day,
            Some("$/year") => Per::Year,
            Some(other) => {
                return Err(err(
                    k,
                    format!("unknown unit {other:?} ($/month, $/day, $/year)"),
                ));
            }
        },
    };
    Ok((amount > 0.0).then_some(Recurring { amount, per }))
}

impl Rates {
    /// Reads and checks a URDB record.
    pub fn read(record: &Value) -> Result<Self, TariffError> {
        let record = record
            .as_object()
            .ok_or_else(|| err("(record)", "must be an object"))?;
        for (key, what) in UNSUPPORTED {
            let matters = match record.get(*key) {
                None | Some(Value::Null) => false,
                Some(Value::Number(n)) => n.as_f64() != Some(0.0),
                Some(Value::Array(a)) => a.iter().any(|x| x.as_f64() != Some(0.0)),
                Some(_) => true,
            };
            if matters {
                return Err(err(*key, format!("{what} are not supported")));
            }
        }
        for key in ["demandrateunit", "flatdemandunit", "demandunits"] {
            if let Some(u) = record.get(key)
                && !u.as_str().is_some_and(|u| u.eq_ignore_ascii_case("kw"))
            {
                return Err(err(key, format!("demand in {u} is not supported (kW)")));
            }
        }
        if let Some(w) = record.get("demandwindow")
            && number(w, "demandwindow")? != 15.0
        {
            return Err(err("demandwindow", "only 15-minute demand is supported"));
        }

        let energy = energy_structure(record)?;
        let energy_schedules = schedules(record, "energy", energy.len())?.unwrap_or(Schedules {
            weekday: [[0; 24]; 12],
            weekend: [[0; 24]; 12],
        });
        let demand = demand_structure(record, "demandratestructure")?.unwrap_or_default();
        let demand_schedules = if demand.is_empty() {
            None
        } else {
            Some(
                schedules(record, "demand", demand.len())?.unwrap_or(Schedules {
                    weekday: [[0; 24]; 12],
                    weekend: [[0; 24]; 12],
                }),
            )
        };
        let flat_demand = demand_structure(record, "flatdemandstructure")?.unwrap_or_default();
        let flat_demand_months = match record.get("flatdemandmonths") {
            None => None,
            Some(_) if flat_demand.is_empty() => {
                return Err(err(
                    "flatdemandstructure",
                    "missing (flatdemandmonths refers to it)",
                ));
            }
            Some(v) => {
                let months = v
                    .as_array()
                    .filter(|m| m.len() == 12)
                    .ok_or_else(|| err("flatdemandmonths", "must hold 12 months"))?;
                let mut out = [0u8; 12];
                for (m, p) in months.iter().enumerate() {
                    out[m] = index(p, &format!("flatdemandmonths[{m}]"), flat_demand.len())?;
                }
                Some(out)
            }
        };
        let flat_demand_months = match flat_demand_months {
            None if flat_demand.len() > 1 => {
                return Err(err(
                    "flatdemandmonths",
                    "missing (flatdemandstructure has several periods)",
                ));
            }
            None if flat_demand.len() == 1 => Some([0; 12]),
            months => months,
        };

        let mut fixed = Vec::new();
        fixed.extend(recurring(
            record,
            "fixedchargefirstmeter",
            Some("fixedchargeunits"),
            Per::Month,
        )?);
        fixed.extend(recurring(record, "fixedmonthlycharge", None, Per::Month)?);
        let mut minimum = Vec::new();
        minimum.extend(recurring(
            record,
            "mincharge",
            Some("minchargeunits"),
            Per::Month,
        )?);
        minimum.extend(recurring(record, "minmonthlycharge", None, Per::Month)?);
        minimum.extend(recurring(record, "annualmincharge", None, Per::Year)?);

        let metering = match record.get("dgrules").and_then(Value::as_str) {
            None | Some("Net Metering") => Metering::NetMetering,
            Some("Net Billing Instantaneous") => Metering::NetBillingInstantaneous,
            Some("Net Billing Hourly") => Metering::NetBillingHourly,
            Some("Buy All Sell All") => Metering::BuyAllSellAll,
            Some(other) => {
                return Err(err(
                    "dgrules",
                    format!(
                        "unknown rule {other:?} (Net Metering, Net Billing Instantaneous, Net Billing Hourly, Buy All Sell All)"
                    ),
                ));
            }
        };
        Ok(Self {
            energy,
            energy_schedules,
            demand,
            demand_schedules,
            flat_demand,
            flat_demand_months,
            fixed,
            minimum,
            metering,
        })
    }
}
