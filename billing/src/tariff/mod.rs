//! Tariffs: the one model the bill engine reads ([`Tariff`]), built from a stored tariff
//! document ([`Document`]): meterstack's native form, which holds an OpenEI Utility Rate
//! Database record (`urdb`, as the URDB API returns it) and says what URDB does not — the
//! currency, taxes, rounding, the billing-cycle day, the effective dates, the year-end credit
//! rate of net metering.
//!
//! A bare URDB record is a document too (everything else defaulted, see [`Document::parse`]).

pub mod urdb;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a tariff document was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TariffError {
    /// The field, as a path (`energyratestructure[2][0].max`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TariffError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A stored tariff document: the native form. JSON or TOML with these keys; `urdb` holds the
/// URDB record unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The tariff's id (meters link to it with `tariff_id`).
    pub id: String,
    /// A name for people; default: the URDB record's `name`.
    #[serde(default)]
    pub name: String,
    /// ISO 4217 code of every amount (URDB rates are in US dollars).
    #[serde(default = "usd")]
    pub currency: String,
    /// The first local date this version applies to.
    pub effective_from: NaiveDate,
    /// The last local date it applies to (none: until a later version starts).
    #[serde(default)]
    pub effective_to: Option<NaiveDate>,
    /// The local day of the month each billing cycle starts (1–28).
    #[serde(default = "one")]
    pub billing_day: u32,
    /// Digits after the decimal point of an amount (2 for cents).
    #[serde(default = "two")]
    pub decimals: u32,
    /// Taxes, each a percentage of the bill's charges before taxes, in this order.
    #[serde(default)]
    pub taxes: Vec<Tax>,
    /// Under net metering, the rate (per kWh) at which kWh credits left at the end of the
    /// year's last cycle (December) are paid out; then they lapse (SAM's
    /// `ur_nm_yearend_sell_rate`; 0 by default, as there).
    #[serde(default)]
    pub yearend_sell_rate: f64,
    /// The URDB record.
    pub urdb: Value,
}

/// A TOML document as JSON: dates and times as their text, non-finite numbers refused.
fn from_toml(value: toml::Value, at: &str) -> Result<Value, TariffError> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| {
                TariffError::new(at.trim_start_matches('.'), "must be a finite number")
            })?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| from_toml(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| {
                    let path = format!("{at}.{k}");
                    from_toml(v, &path).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn usd() -> String {
    "USD".into()
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}

/// A tax on the bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tax {
    /// Its name on the bill.
    pub name: String,
    /// Percent of the charges before taxes.
    pub percent: f64,
}

/// The limit of an energy tier: kWh in the billing cycle, per day of it, or per kW of the
/// cycle's peak demand (hours use), per cycle or per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierUnit {
    /// kWh per cycle (URDB `kWh`).
    Kwh,
    /// kWh per kW of peak demand (URDB `kWh/kW`).
    KwhPerKw,
    /// kWh per day (URDB `kWh daily`).
    KwhDaily,
    /// kWh per kW of peak demand per day (URDB `kWh/kW daily`).
    KwhPerKwDaily,
}

/// One tier of an energy period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyTier {
    /// Upper limit, counted from the first tier; `None`: no limit.
    pub max: Option<f64>,
    /// What `max` counts.
    pub unit: TierUnit,
    /// Price of a kWh bought (URDB `rate + adj`).
    pub rate: f64,
    /// Price paid for a kWh sold (URDB `sell`), under net billing and buy all, sell all.
    pub sell: f64,
}

/// One tier of a demand period: price per kW up to `max` kW.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DemandTier {
    /// Upper limit in kW, counted from the first tier; `None`: no limit.
    pub max: Option<f64>,
    /// Price per kW (URDB `rate + adj`).
    pub rate: f64,
}

/// Month × hour (local) → period index, weekdays and weekends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    /// Monday to Friday: `[month 0–11][hour 0–23]`.
    pub weekday: [[u8; 24]; 12],
    /// Saturday and Sunday.
    pub weekend: [[u8; 24]; 12],
}

impl Schedules {
    /// The period of a local month (0–11), hour (0–23) and day kind.
    pub fn period(&self, month: usize, hour: usize, weekend: bool) -> usize {
        let table = if weekend {
            &self.weekend
        } else {
            &self.weekday
        };
        table[month][hour] as usize
    }
}

/// How exported energy is treated (URDB `dgrules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metering {
    /// Net metering: each TOU period's energy is netted over the cycle; a surplus is a kWh
    /// credit carried to the same period of later cycles (paid at `yearend_sell_rate` after
    /// December).
    NetMetering,
    /// Net billing: every interval's import is bought, every interval's export sold.
    NetBillingInstantaneous,
    /// Net billing on each hour's net energy.
    NetBillingHourly,
    /// Everything imported is bought, everything exported is sold.
    BuyAllSellAll,
}

/// A recurring charge: an amount per cycle (month), day or year.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recurring {
    /// The amount.
    pub amount: f64,
    /// Per what.
    pub per: Per,
}

/// What a recurring charge's amount is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// A billing cycle (URDB `$/month`).
    Month,
    /// A day (URDB `$/day`).
    Day,
    /// A year (URDB `$/year`).
    Year,
}

/// A tariff version as the bill engine reads it. Every index and shape is checked when it
/// is built ([`Document::tariff`]), so the engine never indexes out of range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tariff {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// First local date.
    pub effective_from: NaiveDate,
    /// Last local date, if any.
    pub effective_to: Option<NaiveDate>,
    /// Local day of the month a cycle starts.
    pub billing_day: u32,
    /// Digits of an amount.
    pub decimals: u32,
    /// Taxes in order.
    pub taxes: Vec<Tax>,
    /// Energy periods × tiers.
    pub energy: Vec<Vec<EnergyTier>>,
    /// Energy periods by local month and hour.
    pub energy_schedules: Schedules,
    /// TOU demand periods × tiers (empty: none).
    pub demand: Vec<Vec<DemandTier>>,
    /// TOU demand periods by local month and hour.
    pub demand_schedules: Option<Schedules>,
    /// Flat (monthly maximum) demand periods × tiers (empty: none).
    pub flat_demand: Vec<Vec<DemandTier>>,
    /// The flat demand period of each month.
    pub flat_demand_months: Option<[u8; 12]>,
    /// Fixed charges (URDB `fixedchargefirstmeter`, and the older `fixedmonthlycharge`).
    pub fixed: Vec<Recurring>,
    /// Minimum charges (`mincharge`, or the older `minmonthlycharge` / `annualmincharge`).
    pub minimum: Vec<Recurring>,
    /// How export is treated.
    pub metering: Metering,
    /// Net metering's year-end rate for kWh credits left.
    pub yearend_sell_rate: f64,
}

impl Document {
    /// Reads a tariff file: the native form (JSON or TOML, with `urdb`), a bare URDB record,
    /// or the URDB API's `{"items": [record]}` envelope. For a URDB record the id is `id`
    /// (else the record's `label`), the name its `name`, and the effective date
    /// `effective_from` (else the record's `startdate`, a Unix time read as a UTC date).
    pub fn parse(
        text: &str,
        id: Option<&str>,
        effective_from: Option<NaiveDate>,
    ) -> Result<Self, TariffError> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| TariffError::new("(document)", format!("not JSON: {e}")))?
        } else {
            let t: toml::Value = toml::from_str(text)
                .map_err(|e| TariffError::new("(document)", format!("not TOML: {e}")))?;
            from_toml(t, "")?
        };
        let mut value = match value {
            Value::Object(mut o) if o.contains_key("items") && !o.contains_key("urdb") => {
                match o.remove("items") {
                    Some(Value::Array(mut items)) if items.len() == 1 => items.remove(0),
                    _ => {
                        return Err(TariffError::new(
                            "items",
                            "the URDB envelope must hold exactly one rate",
                        ));
                    }
                }
            }
            v => v,
        };
        let Value::Object(map) = &mut value else {
            return Err(TariffError::new("(document)", "not an object"));
        };
        if !map.contains_key("urdb") {
            let record = std::mem::take(map);
            let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
            // URDB dates are Unix times of a local midnight somewhere in the US: the date
            // is the UTC date half a day later.
            let day = |k: &str| {
                record
                    .get(k)
                    .and_then(Value::as_i64)
                    .and_then(|s| chrono::DateTime::from_timestamp(s + 12 * 3600, 0))
                    .map(|t| t.date_naive())
            };
            // The record's end date holds only with its own start date.
            let (from, to) = match effective_from {
                Some(d) => (Some(d), None),
                None => (day("startdate"), day("enddate")),
            };
            let id = id.map(str::to_owned).or_else(|| text("label"));
            let doc = serde_json::json!({
                "id": id.ok_or_else(|| TariffError::new("id", "missing: give --id (the record has no label)"))?,
                "name": text("name").unwrap_or_default(),
                "effective_from": from
                    .ok_or_else(|| TariffError::new("effective_from", "missing: give it (the record has no startdate)"))?,
                "effective_to": to,
                "urdb": Value::Object(record),
            });
            value = doc;
        } else {
            if let Some(id) = id {
                map.insert("id".into(), Value::String(id.into()));
            }
            if let Some(d) = effective_from {
                map.insert("effective_from".into(), Value::String(d.to_string()));
            }
        }
        let doc: Document = serde_json::from_value(value)
            .map_err(|e| TariffError::new("(document)", e.to_string()))?;
        doc.tariff()?;
        Ok(doc)
    }

    /// The tariff the engine reads, every field checked.
    pub fn tariff(&self) -> Result<Tariff, TariffError> {
        let id = self.id.trim();
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
            return Err(TariffError::new("id", "must be 1–128 printable characters"));
        }
        if !(1..=28).contains(&self.billing_day) {
            return Err(TariffError::new("billing_day", "must be 1 … 28"));
        }
        if self.decimals > 4 {
            return Err(TariffError::new("decimals", "must be 0 … 4"));
        }
        let code = &self.currency;
        if code.len() != 3 || !code.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(TariffError::new(
                "currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
        let sane = |d: NaiveDate| (1900..=9999).contains(&d.year());
        if !sane(self.effective_from) || self.effective_to.is_some_and(|d| !sane(d)) {
            return Err(TariffError::new(
                "effective_from",
                "dates must lie in the years 1900 … 9999",
            ));
        }
        if let Some(to) = self.effective_to
            && to < self.effective_from
        {
            return Err(TariffError::new("effective_to", "is before effective_from"));
        }
        for (i, t) in self.taxes.iter().enumerate() {
            if !(t.percent.is_finite() && (0.0..=100.0).contains(&t.percent)) {
                return Err(TariffError::new(
                    format!("taxes[{i}].percent"),
                    "must be 0 … 100",
                ));
            }
            if t.name.trim().is_empty() {
                return Err(TariffError::new(format!("taxes[{i}].name"), "is empty"));
            }
        }
        if !(self.yearend_sell_rate.is_finite() && self.yearend_sell_rate >= 0.0) {
            return Err(TariffError::new(
                "yearend_sell_rate",
                "must be a number ≥ 0",
            ));
        }
        let rates = urdb::Rates::read(&self.urdb).map_err(|mut e| {
            e.field = format!("urdb.{}", e.field);
            e
        })?;
        Ok(Tariff {
            id: id.to_owned(),
            name: if self.name.is_empty() {
                self.urdb
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            } else {
                self.name.clone()
            },
            currency: self.currency.clone(),
            effective_from: self.effective_from,
            effective_to: self.effective_to,
            billing_day: self.billing_day,
            decimals: self.decimals,
            taxes: self.taxes.clone(),
            energy: rates.energy,
            energy_schedules: rates.energy_schedules,
            demand: rates.demand,
            demand_schedules: rates.demand_schedules,
            flat_demand: rates.flat_demand,
            flat_demand_months: rates.flat_demand_months,
            fixed: rates.fixed,
            minimum: rates.minimum,
            metering: rates.metering,
            yearend_sell_rate: self.yearend_sell_rate,
        })
    }
}

#[cfg(test)]
mod tests;
