//! The meter registry: what each meter is and where it sits in the grid, its credentials,
//! its certificates and its connectivity.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Result, SqlStore, StoreError, from_micros, now_micros};
use crate::reading::MeterId;

/// What kind of customer a meter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The descriptive fields of a meter, for creating (absent = empty) or changing it (absent =
/// unchanged, `null` = cleared).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::option_option)]
pub struct MeterFields {
    /// Site (premise) reference.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub site_ref: Option<Option<String>>,
    /// Customer (account) reference.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_ref: Option<Option<String>>,
    /// Feeder the meter is supplied from.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub feeder: Option<Option<String>>,
    /// Distribution transformer.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub transformer: Option<Option<String>>,
    /// Latitude, degrees.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub lat: Option<Option<f64>>,
    /// Longitude, degrees.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub lon: Option<Option<f64>>,
    /// Customer class.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub meter_class: Option<Option<MeterClass>>,
    /// Rated maximum current, A.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub rated_current_a: Option<Option<f64>>,
    /// Tariff.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub tariff_id: Option<Option<String>>,
    /// Service status (default `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MeterStatus>,
    /// Installation date.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub installed_on: Option<Option<NaiveDate>>,
    /// Date of the last meter exchange (a register reset is expected then).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub exchanged_on: Option<Option<NaiveDate>>,
}

const MAX_TEXT: usize = 200;

impl MeterFields {
    /// Checks ranges and lengths; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let texts = [
            ("site_ref", &self.site_ref),
            ("customer_ref", &self.customer_ref),
            ("feeder", &self.feeder),
            ("transformer", &self.transformer),
            ("tariff_id", &self.tariff_id),
        ];
        for (name, value) in texts {
            if let Some(Some(v)) = value
                && (v.len() > MAX_TEXT || v.chars().any(char::is_control))
            {
                return Err(StoreError::Invalid(format!(
                    "{name} must be at most {MAX_TEXT} bytes without control characters"
                )));
            }
        }
        let range = |name: &str, v: Option<Option<f64>>, lo: f64, hi: f64| match v {
            Some(Some(x)) if !(x.is_finite() && x >= lo && x <= hi) => Err(StoreError::Invalid(
                format!("{name} is {x}; expected {lo} to {hi}"),
            )),
            _ => Ok(()),
        };
        range("lat", self.lat, -90.0, 90.0)?;
        range("lon", self.lon, -180.0, 180.0)?;
        range("rated_current_a", self.rated_current_a, 0.001, 100_000.0)?;
        Ok(())
    }

    /// Builds fields from text cells (a CSV row): an empty cell is NULL. Unknown column
    /// names are an error.
    pub fn from_cells<'a>(cells: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut f = Self::default();
        let text = |v: &str| Some((!v.is_empty()).then(|| v.to_owned()));
        let number = |name: &str, v: &str| -> Result<Option<Option<f64>>> {
            if v.is_empty() {
                return Ok(Some(None));
            }
            v.parse::<f64>()
                .map(|x| Some(Some(x)))
                .map_err(|_| StoreError::Invalid(format!("{name} {v:?} is not a number")))
        };
        let date = |name: &str, v: &str| -> Result<Option<Option<NaiveDate>>> {
            if v.is_empty() {
                return Ok(Some(None));
            }
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(|d| Some(Some(d)))
                .map_err(|_| StoreError::Invalid(format!("{name} {v:?} is not a YYYY-MM-DD date")))
        };
        for (name, v) in cells {
            let v = v.trim();
            match name {
                "site_ref" => f.site_ref = text(v),
                "customer_ref" => f.customer_ref = text(v),
                "feeder" => f.feeder = text(v),
                "transformer" => f.transformer = text(v),
                "tariff_id" => f.tariff_id = text(v),
                "lat" => f.lat = number(name, v)?,
                "lon" => f.lon = number(name, v)?,
                "rated_current_a" => f.rated_current_a = number(name, v)?,
                "meter_class" => {
                    f.meter_class = Some(if v.is_empty() {
                        None
                    } else {
                        Some(MeterClass::parse(v)?)
                    });
                }
                "status" => {
                    if !v.is_empty() {
                        f.status = Some(MeterStatus::parse(v)?);
                    }
                }
                "installed_on" => f.installed_on = date(name, v)?,
                "exchanged_on" => f.exchanged_on = date(name, v)?,
                other => {
                    return Err(StoreError::Invalid(format!("unknown column {other:?}")));
                }
            }
        }
        f.validate()?;
        Ok(f)
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

/// What the broker needs to authenticate a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterCredentials {
    /// Service status.
    pub status: MeterStatus,
    /// Argon2 hash of its secret, if one is set.
    pub secret_hash: Option<String>,
}

/// A meter's latest connection, as the broker saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connectivity {
    /// Connected now.
    pub online: bool,
    /// The broker's id of the latest connection.
    pub session_id: String,
    /// `secret`, `certificate` or `none` (development mode).
    pub auth_method: String,
    /// The client's address.
    pub remote_addr: String,
    /// When the latest connection was accepted.
    pub connected_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub disconnect_reason: Option<String>,
    /// Last traffic (connect or publish).
    pub last_seen: DateTime<Utc>,
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

/// A certificate issued to a meter by the built-in CA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateRecord {
    /// Serial number, hex.
    pub serial: String,
    /// The meter it identifies.
    pub meter_id: MeterId,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
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

    /// Registers `meter_id` with no details if it is unknown (development mode). True if it
    /// was added.
    pub async fn auto_register(&self, meter_id: &MeterId) -> Result<bool> {
        let now = now_micros();
        let added = sqlx::query(
            "INSERT INTO meters (meter_id, status, auto_registered, created_at, updated_at) \
             VALUES ($1, 'active', 1, $2, $2) ON CONFLICT (meter_id) DO NOTHING",
        )
        .bind(meter_id.as_str())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(added > 0)
    }

    /// The status and secret hash of a meter, if registered.
    pub async fn meter_credentials(&self, meter_id: &MeterId) -> Result<Option<MeterCredentials>> {
        let row = sqlx::query("SELECT status, secret_hash FROM meters WHERE meter_id = $1")
            .bind(meter_id.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            let status: String = row.try_get("status")?;
            Ok(MeterCredentials {
                status: MeterStatus::parse(&status)?,
                secret_hash: row.try_get("secret_hash")?,
            })
        })
        .transpose()
    }

    /// Gives a meter a new random secret and returns it; only its Argon2 hash is stored (the
    /// old secret stops working). Hashing runs on a blocking thread.
    pub async fn rotate_meter_secret(&self, meter_id: &MeterId) -> Result<String> {
        let secret = super::secret::generate_meter_secret();
        let to_hash = secret.clone();
        let hash = tokio::task::spawn_blocking(move || super::secret::hash_meter_secret(&to_hash))
            .await
            .map_err(|e| StoreError::Invalid(format!("cannot hash the secret: {e}")))??;
        self.set_meter_secret(meter_id, &hash).await?;
        Ok(secret)
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

    /// Stores the hash of a meter's new secret (the old one stops working).
    pub async fn set_meter_secret(&self, meter_id: &MeterId, secret_hash: &str) -> Result<()> {
        let changed =
            sqlx::query("UPDATE meters SET secret_hash = $1, updated_at = $2 WHERE meter_id = $3")
                .bind(secret_hash)
                .bind(now_micros())
                .bind(meter_id.as_str())
                .execute(self.pool())
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("meter {meter_id}")));
        }
        Ok(())
    }

    /// How many meters are connected now.
    pub async fn meters_online(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM meter_connectivity WHERE online = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
    }

    /// How many meters are in service (status `active`).
    pub async fn meter_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM meters WHERE status = 'active'")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
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

    /// The meter's latest connection, if it ever connected.
    pub async fn connectivity(&self, meter_id: &MeterId) -> Result<Option<Connectivity>> {
        let row = sqlx::query(
            "SELECT online, session_id, auth_method, remote_addr, connected_at, \
             disconnected_at, disconnect_reason, last_seen \
             FROM meter_connectivity WHERE meter_id = $1",
        )
        .bind(meter_id.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Connectivity {
                online: row.try_get::<i64, _>("online")? != 0,
                session_id: row.try_get("session_id")?,
                auth_method: row.try_get("auth_method")?,
                remote_addr: row.try_get("remote_addr")?,
                connected_at: from_micros(row.try_get("connected_at")?),
                disconnected_at: row
                    .try_get::<Option<i64>, _>("disconnected_at")?
                    .map(from_micros),
                disconnect_reason: row.try_get("disconnect_reason")?,
                last_seen: from_micros(row.try_get("last_seen")?),
            })
        })
        .transpose()
    }

    /// Records that `session_id` of `meter_id` connected.
    pub async fn record_connect(
        &self,
        meter_id: &MeterId,
        session_id: &str,
        auth_method: &str,
        remote_addr: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO meter_connectivity (meter_id, online, session_id, auth_method, \
             remote_addr, connected_at, disconnected_at, disconnect_reason, last_seen) \
             VALUES ($1, 1, $2, $3, $4, $5, NULL, NULL, $5) \
             ON CONFLICT (meter_id) DO UPDATE SET online = 1, session_id = excluded.session_id, \
             auth_method = excluded.auth_method, remote_addr = excluded.remote_addr, \
             connected_at = excluded.connected_at, disconnected_at = NULL, \
             disconnect_reason = NULL, last_seen = excluded.last_seen",
        )
        .bind(meter_id.as_str())
        .bind(session_id)
        .bind(auth_method)
        .bind(remote_addr)
        .bind(at.timestamp_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that `session_id` of `meter_id` ended. A newer session of the same meter (a
    /// reconnect, possibly through another broker) is left online.
    pub async fn record_disconnect(
        &self,
        meter_id: &MeterId,
        session_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE meter_connectivity SET online = 0, disconnected_at = $1, \
             disconnect_reason = $2 WHERE meter_id = $3 AND session_id = $4",
        )
        .bind(at.timestamp_micros())
        .bind(reason)
        .bind(meter_id.as_str())
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records traffic: `last_seen` only moves forward.
    pub async fn record_seen(&self, seen: &[(MeterId, DateTime<Utc>)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (meter_id, at) in seen {
            sqlx::query(
                "UPDATE meter_connectivity SET last_seen = $1 \
                 WHERE meter_id = $2 AND last_seen < $1",
            )
            .bind(at.timestamp_micros())
            .bind(meter_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a certificate issued to a registered meter.
    pub async fn record_certificate(
        &self,
        serial: &str,
        meter_id: &MeterId,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<()> {
        if self.meter(meter_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("meter {meter_id}")));
        }
        sqlx::query(
            "INSERT INTO meter_certificates (serial, meter_id, not_before, not_after, issued_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(serial)
        .bind(meter_id.as_str())
        .bind(not_before.timestamp_micros())
        .bind(not_after.timestamp_micros())
        .bind(now_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A certificate record by serial (hex).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query(
            "SELECT serial, meter_id, not_before, not_after, issued_at, revoked_at \
             FROM meter_certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(certificate_from_row).transpose()
    }

    /// The certificates issued to a meter, newest first.
    pub async fn certificates(&self, meter_id: &MeterId) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query(
            "SELECT serial, meter_id, not_before, not_after, issued_at, revoked_at \
             FROM meter_certificates WHERE meter_id = $1 ORDER BY issued_at DESC",
        )
        .bind(meter_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(certificate_from_row).collect()
    }

    /// Revokes a certificate; `NotFound` if no such serial was issued. Revoking twice keeps
    /// the first time.
    pub async fn revoke_certificate(&self, serial: &str) -> Result<CertificateRecord> {
        sqlx::query(
            "UPDATE meter_certificates SET revoked_at = $1 \
             WHERE serial = $2 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(serial)
        .execute(self.pool())
        .await?;
        self.certificate(serial)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("certificate {serial}")))
    }
}

fn certificate_from_row(row: &AnyRow) -> Result<CertificateRecord> {
    let id: String = row.try_get("meter_id")?;
    Ok(CertificateRecord {
        serial: row.try_get("serial")?,
        meter_id: MeterId::new(&id)
            .map_err(|e| StoreError::Invalid(format!("stored meter id {id:?}: {e}")))?,
        not_before: from_micros(row.try_get("not_before")?),
        not_after: from_micros(row.try_get("not_after")?),
        issued_at: from_micros(row.try_get("issued_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_micros),
    })
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
