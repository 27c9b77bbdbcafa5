//! The meter registry: what each meter is and where it sits in the grid, its credentials,
//! its certificates and its connectivity.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

mod certificates;
mod connectivity;
mod credentials;
mod fields;

pub use certificates::CertificateRecord;
pub use connectivity::Connectivity;
pub use credentials::MeterCredentials;
pub use fields::MeterFields;

use super::{Result, SqlStore, StoreError, from_micros, now_micros};
use crate::reading::MeterId;

/// What kind of customer a meter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterClass {
    /// A household.
    Household,
    /// A commercial customer.
    Commercial,
    /// A prosumer: consumption and solar generation (export).
    #[serde(alias = "solar")]
    Prosumer,
}

/// Whether a meter may deliver readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterStatus {
    /// In service.
    Active,
    /// Taken out of service: it can no longer connect.
    Decommissioned,
}

impl MeterClass {
    /// The class's name in the registry and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Household => "household",
            Self::Commercial => "commercial",
            Self::Prosumer => "prosumer",
        }
    }

    /// Parses `household`, `commercial`, `prosumer` (or `solar`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "household" => Ok(Self::Household),
            "commercial" => Ok(Self::Commercial),
            "prosumer" | "solar" => Ok(Self::Prosumer),
            other => Err(StoreError::Invalid(format!(
                "meter_class {other:?} is not household, commercial or prosumer"
            ))),
        }
    }
}

impl MeterStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Decommissioned => "decommissioned",
        }
    }

    /// Parses `active` or `decommissioned`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Self::Active),
            "decommissioned" => Ok(Self::Decommissioned),
            other => Err(StoreError::Invalid(format!(
                "status {other:?} is not active or decommissioned"
            ))),
        }
    }
}

impl std::str::FromStr for MeterClass {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::str::FromStr for MeterStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A meter as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meter {
    /// The meter's id (its MQTT client id and topic segment).
    pub meter_id: MeterId,
    /// Site reference.
    pub site_ref: Option<String>,
    /// Customer reference.
    pub customer_ref: Option<String>,
    /// Feeder.
    pub feeder: Option<String>,
    /// Transformer.
    pub transformer: Option<String>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Customer class.
    pub meter_class: Option<MeterClass>,
    /// Rated maximum current, A.
    pub rated_current_a: Option<f64>,
    /// Tariff.
    pub tariff_id: Option<String>,
    /// Service status.
    pub status: MeterStatus,
    /// Installation date.
    pub installed_on: Option<NaiveDate>,
    /// Last exchange date.
    pub exchanged_on: Option<NaiveDate>,
    /// Registered automatically on first connect (development mode only).
    pub auto_registered: bool,
    /// Whether a secret is set (the secret itself is never stored).
    pub has_secret: bool,
    /// When the registry entry was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A meter with whether it is online, when it was last heard from, and its latest connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterView {
    /// The registry entry.
    #[serde(flatten)]
    pub meter: Meter,
    /// Connected now.
    pub online: bool,
    /// Last traffic, if it ever connected.
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest connection, if any.
    pub connectivity: Option<Connectivity>,
}

/// Which meters to list, and the page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterFilter {
    /// Only this feeder.
    pub feeder: Option<String>,
    /// Only this transformer.
    pub transformer: Option<String>,
    /// Only this class.
    pub meter_class: Option<MeterClass>,
    /// Only this status.
    pub status: Option<MeterStatus>,
    /// Only this tariff.
    pub tariff_id: Option<String>,
    /// Only meters whose id sorts after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

const METER_COLUMNS: &str = "meter_id, site_ref, customer_ref, feeder, transformer, lat, lon, \
     meter_class, rated_current_a, tariff_id, status, installed_on, exchanged_on, \
     auto_registered, secret_hash, created_at, updated_at";

fn date_text(d: Option<NaiveDate>) -> Option<String> {
    d.map(|d| d.format("%Y-%m-%d").to_string())
}

fn meter_from_row(row: &AnyRow) -> Result<Meter> {
    let id: String = row.try_get("meter_id")?;
    let date = |col: &str| -> Result<Option<NaiveDate>> {
        let text: Option<String> = row.try_get(col)?;
        Ok(text.and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()))
    };
    let class: Option<String> = row.try_get("meter_class")?;
    let status: String = row.try_get("status")?;
    let secret: Option<String> = row.try_get("secret_hash")?;
    Ok(Meter {
        meter_id: MeterId::new(&id)
            .map_err(|e| StoreError::Invalid(format!("stored meter id {id:?}: {e}")))?,
        site_ref: row.try_get("site_ref")?,
        customer_ref: row.try_get("customer_ref")?,
        feeder: row.try_get("feeder")?,
        transformer: row.try_get("transformer")?,
        lat: row.try_get("lat")?,
        lon: row.try_get("lon")?,
        meter_class: class.as_deref().map(MeterClass::parse).transpose()?,
        rated_current_a: row.try_get("rated_current_a")?,
        tariff_id: row.try_get("tariff_id")?,
        status: MeterStatus::parse(&status)?,
        installed_on: date("installed_on")?,
        exchanged_on: date("exchanged_on")?,
        auto_registered: row.try_get::<i64, _>("auto_registered")? != 0,
        has_secret: secret.is_some(),
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

/// Applies `fields` over `meter` (absent fields keep their value).
fn apply(meter: &mut Meter, f: &MeterFields) {
    fn set<T: Clone>(target: &mut Option<T>, v: &Option<Option<T>>) {
        if let Some(v) = v {
            target.clone_from(v);
        }
    }
    set(&mut meter.site_ref, &f.site_ref);
    set(&mut meter.customer_ref, &f.customer_ref);
    set(&mut meter.feeder, &f.feeder);
    set(&mut meter.transformer, &f.transformer);
    set(&mut meter.lat, &f.lat);
    set(&mut meter.lon, &f.lon);
    set(&mut meter.meter_class, &f.meter_class);
    set(&mut meter.rated_current_a, &f.rated_current_a);
    set(&mut meter.tariff_id, &f.tariff_id);
    set(&mut meter.installed_on, &f.installed_on);
    set(&mut meter.exchanged_on, &f.exchanged_on);
    if let Some(s) = f.status {
        meter.status = s;
    }
}

fn blank(meter_id: &MeterId) -> Meter {
    let now = from_micros(now_micros());
    Meter {
        meter_id: meter_id.clone(),
        site_ref: None,
        customer_ref: None,
        feeder: None,
        transformer: None,
        lat: None,
        lon: None,
        meter_class: None,
        rated_current_a: None,
        tariff_id: None,
        status: MeterStatus::Active,
        installed_on: None,
        exchanged_on: None,
        auto_registered: false,
        has_secret: false,
        created_at: now,
        updated_at: now,
    }
}

impl SqlStore {
    /// Registers a new meter; `Conflict` if the id is taken.
    pub async fn create_meter(&self, meter_id: &MeterId, fields: &MeterFields) -> Result<Meter> {
        fields.validate()?;
        let mut meter = blank(meter_id);
        apply(&mut meter, fields);
        let mut tx = self.begin().await?;
        if exists(&mut tx, meter_id).await? {
            return Err(StoreError::Conflict(format!("meter {meter_id}")));
        }
        insert(&mut tx, &meter).await?;
        tx.commit().await?;
        Ok(meter)
    }

    /// Changes the given fields of a meter; `NotFound` if it is not registered.
    pub async fn update_meter(&self, meter_id: &MeterId, fields: &MeterFields) -> Result<Meter> {
        fields.validate()?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {METER_COLUMNS} FROM meters WHERE meter_id = $1"
        )))
        .bind(meter_id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("meter {meter_id}")))?;
        let mut meter = meter_from_row(&row)?;
        apply(&mut meter, fields);
        meter.updated_at = from_micros(now_micros());
        update(&mut tx, &meter).await?;
        tx.commit().await?;
        Ok(meter)
    }

    /// Creates or updates every meter in one transaction: all or nothing. Returns (created,
    /// updated).
    pub async fn upsert_meters(&self, rows: &[(MeterId, MeterFields)]) -> Result<(usize, usize)> {
        for (_, f) in rows {
            f.validate()?;
        }
        let mut tx = self.begin().await?;
        let (mut created, mut updated) = (0, 0);
        for (meter_id, fields) in rows {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {METER_COLUMNS} FROM meters WHERE meter_id = $1"
            )))
            .bind(meter_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => {
                    let mut meter = meter_from_row(&row)?;
                    apply(&mut meter, fields);
                    meter.updated_at = from_micros(now_micros());
                    update(&mut tx, &meter).await?;
                    updated += 1;
                }
                None => {
                    let mut meter = blank(meter_id);
                    apply(&mut meter, fields);
                    insert(&mut tx, &meter).await?;
                    created += 1;
                }
            }
        }
        tx.commit().await?;
        Ok((created, updated))
    }

    /// One meter, if registered.
    pub async fn meter(&self, meter_id: &MeterId) -> Result<Option<Meter>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {METER_COLUMNS} FROM meters WHERE meter_id = $1"
        )))
        .bind(meter_id.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(meter_from_row).transpose()
    }

    /// One page of meters matching `filter`, ordered by id.
    pub async fn list_meters(&self, filter: &MeterFilter) -> Result<Vec<Meter>> {
        let mut sql = format!("SELECT {METER_COLUMNS} FROM meters WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut cond = |column: &str, value: Option<String>| {
            if let Some(v) = value {
                binds.push(v);
                let op = if column == "meter_id" { ">" } else { "=" };
                sql.push_str(&format!(" AND {column} {op} ${}", binds.len()));
            }
        };
        cond("feeder", filter.feeder.clone());
        cond("transformer", filter.transformer.clone());
        cond(
            "meter_class",
            filter.meter_class.map(|c| c.as_str().to_owned()),
        );
        cond("status", filter.status.map(|s| s.as_str().to_owned()));
        cond("tariff_id", filter.tariff_id.clone());
        cond("meter_id", filter.after.clone());
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY meter_id LIMIT {limit}"));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(meter_from_row).collect()
    }

    /// Removes a meter with its connectivity and certificate records; false if it was not
    /// registered.
    pub async fn delete_meter(&self, meter_id: &MeterId) -> Result<bool> {
        let mut tx = self.begin().await?;
        for table in ["meter_connectivity", "meter_certificates"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE meter_id = $1"
            )))
            .bind(meter_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let deleted = sqlx::query("DELETE FROM meters WHERE meter_id = $1")
            .bind(meter_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// A meter with its connectivity, as `GET /api/v1/meters/{id}` and `meterstack meters
    /// show` present it.
    pub async fn meter_view(&self, meter_id: &MeterId) -> Result<Option<MeterView>> {
        let Some(meter) = self.meter(meter_id).await? else {
            return Ok(None);
        };
        let connectivity = self.connectivity(meter_id).await?;
        Ok(Some(MeterView {
            online: connectivity.as_ref().is_some_and(|c| c.online),
            last_seen: connectivity.as_ref().map(|c| c.last_seen),
            meter,
            connectivity,
        }))
    }

    /// How many meters are in service (status `active`).
    pub async fn meter_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM meters WHERE status = 'active'")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
    }

    /// Every meter that has a tariff: (meter id, tariff id), by meter.
    pub async fn meter_tariffs(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT meter_id, tariff_id FROM meters WHERE tariff_id IS NOT NULL ORDER BY meter_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("meter_id")?, r.try_get("tariff_id")?)))
            .collect()
    }

    /// Every meter that has a feeder, with it.
    pub async fn meter_feeders(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT meter_id, feeder FROM meters WHERE feeder IS NOT NULL")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("meter_id")?, r.try_get("feeder")?)))
            .collect()
    }
}

async fn exists(tx: &mut sqlx::AnyConnection, meter_id: &MeterId) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM meters WHERE meter_id = $1")
        .bind(meter_id.as_str())
        .fetch_optional(tx)
        .await?
        .is_some())
}

/// Binds a meter's descriptive fields, in the order of [`FIELD_COLUMNS`].
fn bind_fields<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    m: &'q Meter,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(m.site_ref.as_deref())
        .bind(m.customer_ref.as_deref())
        .bind(m.feeder.as_deref())
        .bind(m.transformer.as_deref())
        .bind(m.lat)
        .bind(m.lon)
        .bind(m.meter_class.map(|c| c.as_str()))
        .bind(m.rated_current_a)
        .bind(m.tariff_id.as_deref())
        .bind(m.status.as_str())
        .bind(date_text(m.installed_on))
        .bind(date_text(m.exchanged_on))
}

/// The descriptive columns, bound as `$1`…`$12` by [`bind_fields`].
const FIELD_COLUMNS: [&str; 12] = [
    "site_ref",
    "customer_ref",
    "feeder",
    "transformer",
    "lat",
    "lon",
    "meter_class",
    "rated_current_a",
    "tariff_id",
    "status",
    "installed_on",
    "exchanged_on",
];

async fn insert(tx: &mut sqlx::AnyConnection, m: &Meter) -> Result<()> {
    let sql = format!(
        "INSERT INTO meters ({}, meter_id, auto_registered, secret_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, NULL, $14, $15)",
        FIELD_COLUMNS.join(", ")
    );
    bind_fields(sqlx::query(AssertSqlSafe(sql)), m)
        .bind(m.meter_id.as_str())
        .bind(m.created_at.timestamp_micros())
        .bind(m.updated_at.timestamp_micros())
        .execute(tx)
        .await?;
    Ok(())
}

async fn update(tx: &mut sqlx::AnyConnection, m: &Meter) -> Result<()> {
    let set: Vec<String> = FIELD_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE meters SET {}, auto_registered = 0, updated_at = $13 WHERE meter_id = $14",
        set.join(", ")
    );
    bind_fields(sqlx::query(AssertSqlSafe(sql)), m)
        .bind(m.updated_at.timestamp_micros())
        .bind(m.meter_id.as_str())
        .execute(tx)
        .await?;
    Ok(())
}
