//! A meter's intervals from the trusted zone (`readings`), for the bill engine.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use meterstack_lake::query::{Lake, params_from_json};

use crate::engine::{Interval, local_midnight};

/// Why the intervals could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The lake refused or failed the query.
    #[error("reading the trusted zone: {0}")]
    Lake(String),
    /// A column had an unexpected type.
    #[error("readings: column {0} has an unexpected type")]
    Schema(&'static str),
}

fn lake_error<E: std::fmt::Display>(e: E) -> SourceError {
    SourceError::Lake(e.to_string())
}

/// The intervals of `meter_id` whose start falls on the local dates `from ..= to`, in time
/// order.
pub async fn intervals(
    lake: &Lake,
    meter_id: &str,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Interval>, SourceError> {
    let mut by_meter = of_meters(lake, (meter_id, meter_id), tz, from, to).await?;
    Ok(by_meter.remove(meter_id).unwrap_or_default())
}

/// The intervals of every meter whose id is in `first ..= last` (one scan), by meter, each in
/// time order.
pub async fn of_meters(
    lake: &Lake,
    (first, last): (&str, &str),
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashMap<String, Vec<Interval>>, SourceError> {
    let start = local_midnight(tz, from);
    let end = local_midnight(tz, to + chrono::Days::new(1));
    // Our own values, not the caller's text: RFC 3339 literals; the date bounds (UTC dates)
    // prune partitions, the time bounds are exact.
    let literal = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let sql = format!(
        "SELECT ts, energy_wh, export_wh, quality, meter_id FROM readings \
         WHERE meter_id >= $1 AND meter_id <= $2 \
         AND ts >= TIMESTAMP '{}' AND ts < TIMESTAMP '{}' AND date >= '{}' AND date <= '{}'",
        literal(start),
        literal(end),
        start.format("%Y-%m-%d"),
        end.format("%Y-%m-%d"),
    );
    let params = params_from_json(&serde_json::json!([first, last])).map_err(lake_error)?;
    let frame = lake.plan(&sql, params).await.map_err(lake_error)?;
    let mut stream = frame.execute_stream().await.map_err(lake_error)?;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
    let mut out: HashMap<String, Vec<Interval>> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(lake_error)?;
        let ts = arrow::compute::cast(batch.column(0), &ts_type).map_err(lake_error)?;
        let ts = ts
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or(SourceError::Schema("ts"))?;
        let energy = batch
            .column(1)
            .as_primitive_opt::<Float64Type>()
            .ok_or(SourceError::Schema("energy_wh"))?;
        let export = batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or(SourceError::Schema("export_wh"))?;
        let quality = batch
            .column(3)
            .as_string_opt::<i32>()
            .ok_or(SourceError::Schema("quality"))?;
        let ids = batch
            .column(4)
            .as_string_opt::<i32>()
            .ok_or(SourceError::Schema("meter_id"))?;
        // Rows come sorted by meter within a date's file: a run of one meter's rows is
        // gathered before it is looked up.
        let mut run: Option<(&str, Vec<Interval>)> = None;
        for i in 0..batch.num_rows() {
            if ts.is_null(i) || energy.is_null(i) || ids.is_null(i) {
                continue;
            }
            let id = ids.value(i);
            if run.as_ref().is_none_or(|(current, _)| *current != id) {
                if let Some((current, rows)) = run.take() {
                    out.entry(current.to_owned()).or_default().extend(rows);
                }
                run = Some((id, Vec::with_capacity(96)));
            }
            let Some((_, list)) = run.as_mut() else {
                continue;
            };
            list.push(Interval {
                start: DateTime::from_timestamp_micros(ts.value(i)).unwrap_or_default(),
                import_wh: energy.value(i),
                export_wh: if export.is_null(i) {
                    0.0
                } else {
                    export.value(i)
                },
                estimated: !quality.is_null(i) && quality.value(i) == "estimated",
            });
        }
        if let Some((current, rows)) = run {
            out.entry(current.to_owned()).or_default().extend(rows);
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|i| i.start);
    }
    Ok(out)
}
