//! The `meters` table: the registry in the SQL store, read at each query.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use meterstack_core::reading::timestamp_type;
use meterstack_core::store::SqlStore;
use meterstack_core::store::meters::{Meter, MeterFilter};

/// Most meters one query reads from the registry (pages of 1,000).
const PAGE: u32 = 1000;

/// The provider; see the module docs.
#[derive(Debug, Clone)]
pub struct MetersTable {
    store: SqlStore,
}

impl MetersTable {
    /// The table over `store`'s registry.
    pub fn new(store: SqlStore) -> Self {
        Self { store }
    }

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

    async fn load(&self) -> Result<Vec<Meter>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_meters(&MeterFilter {
                    after: after.clone(),
                    limit: Some(PAGE),
                    ..MeterFilter::default()
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let n = page.len();
            after = page.last().map(|m| m.meter_id.to_string());
            all.extend(page);
            if n < PAGE as usize {
                return Ok(all);
            }
        }
    }
}

fn days(d: Option<NaiveDate>) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    d.map(|d| (d - epoch).num_days() as i32)
}

fn batch(meters: &[Meter]) -> Result<RecordBatch> {
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
        Arc::new(
            meters
                .iter()
                .map(|m| Some(m.created_at.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(MetersTable::columns(), columns)?)
}

#[async_trait]
impl TableProvider for MetersTable {
    fn schema(&self) -> SchemaRef {
        Self::columns()
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
        let batch = batch(&self.load().await?)?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], Self::columns(), projection.cloned())
            .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}
