//! Billing: tariffs (OpenEI URDB records in meterstack's native form, [`tariff`]), the pure
//! bill engine ([`engine`]), and bills of a meter from the trusted zone ([`source`],
//! [`meter_bill`]).

pub mod engine;
pub mod run;
pub mod source;
pub mod tariff;

use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use meterstack_core::store::tariffs::{NewTariffVersion, TariffVersion};
use meterstack_core::store::{SqlStore, StoreError};
use meterstack_lake::query::Lake;
use serde::{Deserialize, Serialize};

pub use engine::{Bill, BillError, Carry, Interval, Line, LineKind};
pub use tariff::{Document, Tariff, TariffError};

/// `[billing]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// The utility's IANA time zone: TOU periods, tier resets and billing days are local.
    pub timezone: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
        }
    }
}

impl BillingConfig {
    /// The time zone; an unknown one is an error naming the key.
    pub fn tz(&self) -> Result<Tz, String> {
        self.timezone
            .parse()
            .map_err(|_| format!("billing.timezone: unknown time zone {:?}", self.timezone))
    }
}

/// Why a meter's bill could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The meter has no tariff.
    #[error("meter {0} has no tariff (set its tariff_id)")]
    NoTariff(String),
    /// The SQL store failed, or the meter or tariff version is not there.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored tariff document no longer reads.
    #[error("stored tariff {id} version {version}: {source}")]
    Tariff {
        /// The tariff.
        id: String,
        /// Its version.
        version: i64,
        /// Why.
        source: TariffError,
    },
    /// The engine refused (dates, missing data).
    #[error(transparent)]
    Bill(#[from] BillError),
    /// The lake failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A tariff document was refused.
    #[error("tariff: {0}")]
    Invalid(#[from] TariffError),
}

/// Imports a tariff file (see [`Document::parse`]) as a new version of its tariff.
pub async fn import_tariff(
    store: &SqlStore,
    text: &str,
    id: Option<&str>,
    effective_from: Option<NaiveDate>,
) -> Result<TariffVersion, BillingError> {
    let doc = Document::parse(text, id, effective_from)?;
    let tariff = doc.tariff()?;
    let document =
        serde_json::to_string(&doc).map_err(|e| TariffError::new("(document)", e.to_string()))?;
    Ok(store
        .add_tariff_version(&NewTariffVersion {
            tariff_id: tariff.id,
            effective_from: tariff.effective_from,
            effective_to: tariff.effective_to,
            name: tariff.name,
            currency: tariff.currency,
            document,
        })
        .await?)
}

/// A stored version as the engine reads it, with the version's own dates (a later version
/// may have closed it).
pub fn version_tariff(stored: &TariffVersion) -> Result<Tariff, BillingError> {
    let tariff_error = |source| BillingError::Tariff {
        id: stored.tariff_id.clone(),
        version: stored.version,
        source,
    };
    let doc: Document = serde_json::from_str(&stored.document)
        .map_err(|e| tariff_error(TariffError::new("(document)", e.to_string())))?;
    let mut tariff = doc.tariff().map_err(tariff_error)?;
    tariff.effective_from = stored.effective_from;
    tariff.effective_to = stored.effective_to;
    Ok(tariff)
}

/// The tariff version of `tariff_id` in force on `day`, with its version number.
pub async fn tariff_on(
    store: &SqlStore,
    tariff_id: &str,
    day: NaiveDate,
) -> Result<(Tariff, i64), BillingError> {
    let stored = store.tariff_on(tariff_id, day).await?;
    Ok((version_tariff(&stored)?, stored.version))
}

/// The first cycle of the billing year that holds `day` under `tariff` (the cycle that
/// starts on its January billing day; days before it belong to the previous year's December
/// cycle), or the tariff version's first day if later.
pub fn year_start(tariff: &Tariff, day: NaiveDate) -> NaiveDate {
    let (cycle_start, _) = engine::cycles::cycle_of(day, tariff.billing_day);
    let january =
        NaiveDate::from_ymd_opt(cycle_start.year(), 1, tariff.billing_day).unwrap_or(cycle_start);
    january.max(tariff.effective_from)
}

/// What a bill starting on `from` carries in: the cycles before it in the same year (from
/// [`year_start`], or the meter's first whole day of data if later), billed from `intervals`.
pub fn carry_before(
    tariff: &Tariff,
    tz: Tz,
    step: Duration,
    intervals: &[Interval],
    from: NaiveDate,
) -> Result<Carry, BillError> {
    let Some(first) = intervals.iter().map(|i| i.start).min() else {
        return Ok(Carry::default());
    };
    let day = first.with_timezone(&tz).date_naive();
    let first_day = if engine::local_midnight(tz, day) < first {
        day + chrono::Days::new(1)
    } else {
        day
    };
    let prior_from = year_start(tariff, from).max(first_day);
    if prior_from >= from {
        return Ok(Carry::default());
    }
    let prior_to = from.pred_opt().unwrap_or(from);
    Ok(engine::bill(
        tariff,
        tz,
        prior_from,
        prior_to,
        intervals,
        step,
        Carry::default(),
    )?
    .carry)
}

/// The bill of a meter for `from ..= to` (local dates): its tariff version in force on
/// `from`, its intervals from the trusted zone, and the credits and year's charges carried
/// from the cycles before it in the same year ([`carry_before`]).
pub async fn meter_bill(
    lake: &Lake,
    store: &SqlStore,
    tz: Tz,
    step: Duration,
    meter_id: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Bill, BillingError> {
    let id = meterstack_core::MeterId::new(meter_id)
        .map_err(|e| StoreError::Invalid(format!("meter id: {e}")))?;
    let meter = store
        .meter(&id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("meter {meter_id}")))?;
    let tariff_id = meter
        .tariff_id
        .ok_or_else(|| BillingError::NoTariff(meter_id.to_owned()))?;
    let (tariff, _) = tariff_on(store, &tariff_id, from).await?;
    let start = year_start(&tariff, from).min(from);
    let intervals = source::intervals(lake, meter_id, tz, start, to).await?;
    let carry = carry_before(&tariff, tz, step, &intervals, from)?;
    Ok(engine::bill(
        &tariff, tz, from, to, &intervals, step, carry,
    )?)
}
