//! Tables over the SQL store, read whole at each query: `meters` (the registry), `alerts`
//! (the alert lifecycle), `forecasts` (each meter's newest forecast per hour),
//! `temperatures` (outdoor temperature per area and hour) and `bills` (bill runs' bills, every
//! revision). A [`StoreRows`] kind says how its rows page out of the store and
//! become one Arrow batch; [`StoreTable`] is the query engine's provider for any of them.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use meterstack_core::reading::timestamp_type;
use meterstack_core::store::SqlStore;
use meterstack_core::store::alerts::{AlertFilter, StoredAlert};
use meterstack_core::store::bills::StoredBill;
use meterstack_core::store::forecasts::ForecastRow;
use meterstack_core::store::meters::{Meter, MeterFilter};
use meterstack_core::store::temperatures::Temperature;

/// Rows one store request reads (the store pages them).
const PAGE: u32 = 1000;

/// A kind of rows kept in the SQL store and shown as a table.
#[async_trait]
pub trait StoreRows: std::fmt::Debug + Send + Sync + 'static {
    /// The table's columns.
    fn columns() -> SchemaRef;
    /// Every row, as one batch of [`columns`](StoreRows::columns).
    async fn batch(store: &SqlStore) -> Result<RecordBatch>;
}

/// The provider of a [`StoreRows`] table.
#[derive(Debug, Clone)]
pub struct StoreTable<R> {
    store: SqlStore,
    rows: PhantomData<R>,
}

impl<R> StoreTable<R> {
    /// The table over `store`.
    pub fn new(store: SqlStore) -> Self {
        Self {
            store,
            rows: PhantomData,
        }
    }
}

#[async_trait]
impl<R: StoreRows> TableProvider for StoreTable<R> {
    fn schema(&self) -> SchemaRef {
        R::columns()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = R::batch(&self.store).await?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], R::columns(), projection.cloned())
            .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}

/// Reads every page: `page(after)` returns up to [`PAGE`] rows after the cursor, and
/// `cursor` names a row's position.
async fn all_pages<T, F, Fut>(page: F, cursor: fn(&T) -> String) -> Result<Vec<T>>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = meterstack_core::store::Result<Vec<T>>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let got = page(after.clone())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let n = got.len();
        after = got.last().map(cursor);
        all.extend(got);
        if n < PAGE as usize {
            return Ok(all);
        }
    }
}

fn utc_micros(values: impl Iterator<Item = Option<DateTime<Utc>>>) -> ArrayRef {
    Arc::new(
        values
            .map(|t| t.map(|t| t.timestamp_micros()))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

/// `meters`: the registry.
#[derive(Debug)]
pub struct Meters;

/// `alerts`: every alert with its lifecycle, newest first.
#[derive(Debug)]
pub struct Alerts;
fn days(d: Option<NaiveDate>) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    d.map(|d| (d - epoch).num_days() as i32)
}

fn meters_batch(meters: &[Meter]) -> Result<RecordBatch> {
    let text = |f: fn(&Meter) -> Option<&str>| -> ArrayRef {
        Arc::new(meters.iter().map(f).collect::<StringArray>())
    };
    let num = |f: fn(&Meter) -> Option<f64>| -> ArrayRef {
        Arc::new(meters.iter().map(f).collect::<Float64Array>())
    };
    let date = |f: fn(&Meter) -> Option<NaiveDate>| -> ArrayRef {
        Arc::new(meters.iter().map(|m| days(f(m))).collect::<Date32Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        text(|m| Some(m.meter_id.as_str())),
        text(|m| m.site_ref.as_deref()),
        text(|m| m.customer_ref.as_deref()),
        text(|m| m.feeder.as_deref()),
        text(|m| m.transformer.as_deref()),
        num(|m| m.lat),
        num(|m| m.lon),
        text(|m| m.meter_class.map(|c| c.as_str())),
        num(|m| m.rated_current_a),
        text(|m| m.tariff_id.as_deref()),
        text(|m| Some(m.status.as_str())),
        date(|m| m.installed_on),
        date(|m| m.exchanged_on),
        Arc::new(
            meters
                .iter()
                .map(|m| Some(m.auto_registered))
                .collect::<BooleanArray>(),
        ),
        utc_micros(meters.iter().map(|m| Some(m.created_at))),
    ];
    Ok(RecordBatch::try_new(Meters::columns(), columns)?)
}

#[async_trait]
impl StoreRows for Meters {
    fn columns() -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        Arc::new(Schema::new(vec![
            Field::new("meter_id", DataType::Utf8, false),
            text("site_ref"),
            text("customer_ref"),
            text("feeder"),
            text("transformer"),
            Field::new("lat", DataType::Float64, true),
            Field::new("lon", DataType::Float64, true),
            text("meter_class"),
            Field::new("rated_current_a", DataType::Float64, true),
            text("tariff_id"),
            Field::new("status", DataType::Utf8, false),
            Field::new("installed_on", DataType::Date32, true),
            Field::new("exchanged_on", DataType::Date32, true),
            Field::new("auto_registered", DataType::Boolean, false),
            Field::new("created_at", timestamp_type(), false),
        ]))
    }

    async fn batch(store: &SqlStore) -> Result<RecordBatch> {
        let meters = all_pages(
            |after| async move {
                let filter = MeterFilter {
                    after,
                    limit: Some(PAGE),
                    ..MeterFilter::default()
                };
                store.list_meters(&filter).await
            },
            |m: &Meter| m.meter_id.to_string(),
        )
        .await?;
        meters_batch(&meters)
    }
}

#[async_trait]
impl StoreRows for Alerts {
    fn columns() -> SchemaRef {
        let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
        let time = |n: &str, nullable| Field::new(n, timestamp_type(), nullable);
        Arc::new(Schema::new(vec![
            text("alert_id", false),
            text("type", false),
            text("severity", false),
            text("meter_id", true),
            text("feeder", true),
            text("state", false),
            time("start", false),
            time("end", true),
            time("opened_at", false),
            time("updated_at", false),
            text("acknowledged_by", true),
            time("acknowledged_at", true),
            text("resolved_by", true),
            time("resolved_at", true),
            text("evidence", false),
        ]))
    }

    async fn batch(store: &SqlStore) -> Result<RecordBatch> {
        let alerts = all_pages(
            |after| async move {
                let filter = AlertFilter {
                    after,
                    limit: Some(PAGE),
                    ..AlertFilter::default()
                };
                store.list_alerts(&filter).await
            },
            |a: &StoredAlert| a.alert_id.clone(),
        )
        .await?;
        let text = |f: fn(&StoredAlert) -> Option<&str>| -> ArrayRef {
            Arc::new(alerts.iter().map(f).collect::<StringArray>())
        };
        let time = |f: fn(&StoredAlert) -> Option<DateTime<Utc>>| utc_micros(alerts.iter().map(f));
        let evidence: ArrayRef = Arc::new(
            alerts
                .iter()
                .map(|a| Some(a.evidence.to_string()))
                .collect::<StringArray>(),
        );
        let columns: Vec<ArrayRef> = vec![
            text(|a| Some(&a.alert_id)),
            text(|a| Some(&a.alert_type)),
            text(|a| Some(&a.severity)),
            text(|a| a.meter_id.as_deref()),
            text(|a| a.feeder.as_deref()),
            text(|a| Some(a.state.as_str())),
            time(|a| Some(a.start)),
            time(|a| a.end),
            time(|a| Some(a.opened_at)),
            time(|a| Some(a.updated_at)),
            text(|a| a.acknowledged_by.as_deref()),
            time(|a| a.acknowledged_at),
            text(|a| a.resolved_by.as_deref()),
            time(|a| a.resolved_at),
            evidence,
        ];
        Ok(RecordBatch::try_new(Self::columns(), columns)?)
    }
}

/// `forecasts`: each meter's newest forecast per hour (`ts` = start of the hour, Wh).
#[derive(Debug)]
pub struct Forecasts;

#[async_trait]
impl StoreRows for Forecasts {
    fn columns() -> SchemaRef {
        let num = |n: &str| Field::new(n, DataType::Float64, false);
        Arc::new(Schema::new(vec![
            Field::new("meter_id", DataType::Utf8, false),
            Field::new("ts", timestamp_type(), false),
            num("p10"),
            num("p50"),
            num("p90"),
            Field::new("model_version", DataType::Utf8, false),
            Field::new("made_at", timestamp_type(), false),
        ]))
    }

    async fn batch(store: &SqlStore) -> Result<RecordBatch> {
        let rows = all_pages(
            |after| async move { store.forecast_rows(after.as_deref(), PAGE).await },
            ForecastRow::cursor,
        )
        .await?;
        let num = |f: fn(&ForecastRow) -> f64| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Float64Array>())
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.meter_id.as_str()))
                    .collect::<StringArray>(),
            ),
            utc_micros(rows.iter().map(|r| Some(r.hour.ts))),
            num(|r| r.hour.p10),
            num(|r| r.hour.p50),
            num(|r| r.hour.p90),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.model_version.as_str()))
                    .collect::<StringArray>(),
            ),
            utc_micros(rows.iter().map(|r| Some(r.made_at))),
        ];
        Ok(RecordBatch::try_new(Self::columns(), columns)?)
    }
}

/// `temperatures`: outdoor temperature per area (a feeder, or `*`) and hour, °C.
#[derive(Debug)]
pub struct Temperatures;

#[async_trait]
impl StoreRows for Temperatures {
    fn columns() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("area", DataType::Utf8, false),
            Field::new("ts", timestamp_type(), false),
            Field::new("temperature_c", DataType::Float64, false),
        ]))
    }

    async fn batch(store: &SqlStore) -> Result<RecordBatch> {
        let rows: Vec<Temperature> = store
            .temperatures(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.area.as_str()))
                    .collect::<StringArray>(),
            ),
            utc_micros(rows.iter().map(|r| Some(r.ts))),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.celsius))
                    .collect::<Float64Array>(),
            ),
        ];
        Ok(RecordBatch::try_new(Self::columns(), columns)?)
    }
}

/// `bills`: the bills of bill runs, every revision (`latest` marks the newest of a meter's
/// period); `lines` is JSON text.
#[derive(Debug)]
pub struct Bills;

#[async_trait]
impl StoreRows for Bills {
    fn columns() -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, false);
        let int = |n: &str| Field::new(n, DataType::Int64, false);
        let num = |n: &str| Field::new(n, DataType::Float64, false);
        let day = |n: &str| Field::new(n, DataType::Date32, false);
        Arc::new(Schema::new(vec![
            text("meter_id"),
            text("period"),
            int("revision"),
            Field::new("latest", DataType::Boolean, false),
            text("tariff_id"),
            int("tariff_version"),
            day("from_date"),
            day("to_date"),
            text("currency"),
            num("total"),
            num("estimated_share"),
            text("lines"),
            Field::new("created_at", timestamp_type(), false),
        ]))
    }

    async fn batch(store: &SqlStore) -> Result<RecordBatch> {
        let rows: Vec<StoredBill> = store
            .bills(None)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let text = |f: fn(&StoredBill) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        let int = |f: fn(&StoredBill) -> i64| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|r| Some(f(r)))
                    .collect::<arrow::array::Int64Array>(),
            )
        };
        let num = |f: fn(&StoredBill) -> f64| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Float64Array>())
        };
        let day = |f: fn(&StoredBill) -> NaiveDate| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|r| days(Some(f(r))))
                    .collect::<Date32Array>(),
            )
        };
        // Rows come by meter, period and revision: the newest is the last of its run.
        let latest: BooleanArray = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Some(
                    rows.get(i + 1)
                        .is_none_or(|n| (&n.meter_id, &n.period) != (&r.meter_id, &r.period)),
                )
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            text(|r| &r.meter_id),
            text(|r| &r.period),
            int(|r| r.revision),
            Arc::new(latest),
            text(|r| &r.tariff_id),
            int(|r| r.tariff_version),
            day(|r| r.from),
            day(|r| r.to),
            text(|r| &r.currency),
            num(|r| r.total),
            num(|r| r.estimated_share),
            text(|r| &r.lines),
            utc_micros(rows.iter().map(|r| Some(r.created_at))),
        ];
        Ok(RecordBatch::try_new(Self::columns(), columns)?)
    }
}
