//! The training frame from the trusted zone: `readings_hourly`, hours before a cut-off, with
//! each meter's class from the registry and its area's temperature from the SQL store. An hour
//! with any estimated or missing interval is unknown (`NaN`): the models learn from
//! measurements only.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType, UInt32Type};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures::StreamExt;
use meterstack_core::store::SqlStore;
use meterstack_core::store::temperatures::ALL_AREAS;
use meterstack_lake::query::{Lake, params_from_json};
use meterstack_pipeline::Registry;

use crate::series::{Series, hour_of};

/// Why the frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The lake refused or failed the query.
    #[error("reading readings_hourly: {0}")]
    Lake(String),
    /// A column had an unexpected type.
    #[error("readings_hourly: column {0} has an unexpected type")]
    Schema(&'static str),
    /// The SQL store failed reading temperatures.
    #[error("reading temperatures: {0}")]
    Store(#[from] meterstack_core::store::StoreError),
}

/// How far past the frame's end temperatures are read: the weather forecast its forecasts use.
const TEMPERATURE_AHEAD: Duration = Duration::days(7);

fn lake_error<E: std::fmt::Display>(e: E) -> SourceError {
    SourceError::Lake(e.to_string())
}

/// Every meter's hourly series in `[from, until)`, of the meters whose id matches the SQL
/// `LIKE` pattern `meters` (all when `None`), each with its class from `registry` and the
/// temperature of its area (see [`attach_temperatures`]); `progress` is told the rows read.
pub async fn hourly(
    lake: &Lake,
    store: &SqlStore,
    registry: &Registry,
    (from, until): (DateTime<Utc>, DateTime<Utc>),
    meters: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Series>, SourceError> {
    let mut sql = String::from(
        "SELECT meter_id, ts, energy_wh, expected_intervals, measured_intervals \
         FROM readings_hourly WHERE meter_id LIKE $1",
    );
    // Our own values, not the caller's text: RFC 3339 literals; the date bounds prune
    // partitions, the time bounds are exact.
    let literal = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    sql.push_str(&format!(
        " AND ts >= TIMESTAMP '{}' AND date >= '{}' AND ts < TIMESTAMP '{}' AND date <= '{}'",
        literal(from),
        from.format("%Y-%m-%d"),
        literal(until),
        until.format("%Y-%m-%d")
    ));
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
                    .or_insert_with(|| Series::new(id, registry.get(id).and_then(|m| m.class))),
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
    attach_temperatures(store, registry, &mut out, from, until + TEMPERATURE_AHEAD).await?;
    Ok(out)
}

/// Gives each series the temperature of its area over `[from, to)`: its feeder's series if
/// the store has one there, else the series of [`ALL_AREAS`], else none.
pub async fn attach_temperatures(
    store: &SqlStore,
    registry: &Registry,
    series: &mut [Series],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), SourceError> {
    let mut areas: HashMap<String, Series> = HashMap::new();
    for t in store.temperatures(from, to).await? {
        areas
            .entry(t.area.clone())
            .or_insert_with(|| Series::new(t.area, None))
            .set(hour_of(t.ts), t.celsius);
    }
    let areas: HashMap<String, Arc<Series>> =
        areas.into_iter().map(|(a, s)| (a, Arc::new(s))).collect();
    for s in series {
        let feeder = registry.get(&s.meter_id).and_then(|m| m.feeder.as_deref());
        s.temperature = feeder
            .and_then(|f| areas.get(f))
            .or_else(|| areas.get(ALL_AREAS))
            .cloned();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use meterstack_core::store::StoreConfig;
    use meterstack_core::store::temperatures::Temperature;
    use meterstack_pipeline::registry::MeterInfo;

    use super::*;
    use crate::series::start_of;

    #[tokio::test]
    async fn a_meter_gets_its_feeders_temperature_else_the_whole_areas() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreConfig::default().build(dir.path()).await.unwrap();
        let t = |area: &str, h: i64, celsius: f64| Temperature {
            area: area.into(),
            ts: start_of(h),
            celsius,
        };
        store
            .upsert_temperatures(&[t("F1", 10, 1.0), t("*", 10, 5.0), t("*", 11, 6.0)])
            .await
            .unwrap();
        let info = |feeder: Option<&str>| MeterInfo {
            feeder: feeder.map(str::to_owned),
            ..MeterInfo::default()
        };
        let registry = Registry::new([
            ("a".to_owned(), info(Some("F1"))),
            ("b".to_owned(), info(Some("F2"))),
            ("c".to_owned(), info(None)),
        ]);
        let mut series: Vec<Series> = ["a", "b", "c", "unregistered"]
            .into_iter()
            .map(|id| Series::new(id, None))
            .collect();
        attach_temperatures(&store, &registry, &mut series, start_of(0), start_of(100))
            .await
            .unwrap();
        let at = |i: usize, h: i64| series[i].temperature_at(h);
        assert_eq!(
            (at(0, 10), at(1, 10), at(2, 11), at(3, 10)),
            (1.0, 5.0, 6.0, 5.0)
        );
        assert!(
            at(0, 11).is_nan(),
            "a feeder's own series is not patched from another"
        );
        // An empty store: no temperature at all.
        let other = tempfile::tempdir().unwrap();
        let empty = StoreConfig::default().build(other.path()).await.unwrap();
        attach_temperatures(&empty, &registry, &mut series, start_of(0), start_of(100))
            .await
            .unwrap();
        assert!(series.iter().all(|s| s.temperature.is_none()));
    }
}
