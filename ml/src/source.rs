//! The training frame from the trusted zone: `readings_hourly`, hours before a cut-off, with
//! each meter's class from the registry. An hour with any estimated or missing interval is
//! unknown (`NaN`): the models learn from measurements only.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType, UInt32Type};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use meterstack_core::store::meters::MeterClass;
use meterstack_lake::query::{Lake, params_from_json};

use crate::series::Series;

/// Why the frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The lake refused or failed the query.
    #[error("reading readings_hourly: {0}")]
    Lake(String),
    /// A column had an unexpected type.
    #[error("readings_hourly: column {0} has an unexpected type")]
    Schema(&'static str),
}

fn lake_error<E: std::fmt::Display>(e: E) -> SourceError {
    SourceError::Lake(e.to_string())
}

/// Every meter's hourly series in `[from, until)` (open ends when `None`), of the meters whose id
/// matches the SQL `LIKE` pattern `meters` (all when `None`), each with its class from
/// `class_of`; `progress` is told the rows read.
pub async fn hourly(
    lake: &Lake,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    meters: Option<&str>,
    class_of: impl Fn(&str) -> Option<MeterClass>,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Series>, SourceError> {
    let mut sql = String::from(
        "SELECT meter_id, ts, energy_wh, expected_intervals, measured_intervals \
         FROM readings_hourly WHERE meter_id LIKE $1",
    );
    // Our own values, not the caller's text: RFC 3339 literals; the date bounds prune
    // partitions, the time bounds are exact.
    let literal = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    if let Some(t) = from {
        sql.push_str(&format!(
            " AND ts >= TIMESTAMP '{}' AND date >= '{}'",
            literal(t),
            t.format("%Y-%m-%d")
        ));
    }
    if let Some(t) = until {
        sql.push_str(&format!(
            " AND ts < TIMESTAMP '{}' AND date <= '{}'",
            literal(t),
            t.format("%Y-%m-%d")
        ));
    }
    let params =
        params_from_json(&serde_json::json!([meters.unwrap_or("%")])).map_err(lake_error)?;
    let frame = lake.plan(&sql, params).await.map_err(lake_error)?;
    let mut stream = frame.execute_stream().await.map_err(lake_error)?;
    let mut by_meter: HashMap<String, Series> = HashMap::new();
    let mut rows = 0u64;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(lake_error)?;
        let ids = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or(SourceError::Schema("meter_id"))?;
        let ts = arrow::compute::cast(batch.column(1), &ts_type).map_err(lake_error)?;
        let ts = ts
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or(SourceError::Schema("ts"))?;
        let energy = batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or(SourceError::Schema("energy_wh"))?;
        let expected = batch
            .column(3)
            .as_primitive_opt::<UInt32Type>()
            .ok_or(SourceError::Schema("expected_intervals"))?;
        let measured = batch
            .column(4)
            .as_primitive_opt::<UInt32Type>()
            .ok_or(SourceError::Schema("measured_intervals"))?;
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || ts.is_null(i) {
                continue;
            }
            let id = ids.value(i);
            let series = match by_meter.get_mut(id) {
                Some(s) => s,
                None => by_meter
                    .entry(id.to_owned())
                    .or_insert_with(|| Series::new(id, class_of(id))),
            };
            let whole = measured.value(i) >= expected.value(i) && energy.is_valid(i);
            let h = ts.value(i).div_euclid(3_600_000_000);
            series.set(h, if whole { energy.value(i) } else { f64::NAN });
        }
        rows += batch.num_rows() as u64;
        progress(rows);
    }
    let mut out: Vec<Series> = by_meter.into_values().collect();
    out.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
    Ok(out)
}
