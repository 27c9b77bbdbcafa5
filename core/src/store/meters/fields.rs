//! The registry fields of a meter as an operator gives them (API, CSV import), with their
//! validation.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use super::{MeterClass, MeterStatus};
use crate::store::{Result, StoreError};

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
