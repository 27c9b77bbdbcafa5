//! SQL behaviour of the lake, locked in sqllogictest files (`lake/tests/slt/*.slt`).
//!
//! A fixed set of meter messages (good readings over two days, and malformed ones) goes the
//! real way — bus, raw sink, Parquet in an in-memory object store — and the `.slt` files
//! query the resulting tables through the same engine the HTTP API uses.

mod etl;

use etl::at;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use meterstack_core::bus::embedded::{EmbeddedBus, EmbeddedConfig};
use meterstack_core::bus::{Bus, Record, Retention, headers};
use meterstack_core::wire::DecodeConfig;
use meterstack_lake::etl::EtlConfig;
use meterstack_lake::query::Lake;
use meterstack_lake::sink::raw::RawSinkConfig;
use meterstack_pipeline::{PipelineConfig, Registry};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_util::sync::CancellationToken;

/// Messages as meters sent them: (topic, payload), all received at 2026-11-23T12:00:00Z.
const FIXTURE: &[(&str, &str)] = &[
    (
        "meters/m-001/readings",
        r#"{"ts":"2026-11-22T23:45:00Z","import_wh":1000,"export_wh":0,"power_w":400.5,"voltage_v":230.1,"current_a":1.74,"seq":1}"#,
    ),
    (
        "meters/m-001/readings",
        r#"[{"ts":"2026-11-23T00:00:00Z","import_wh":1100,"seq":2},{"ts":"2026-11-23T00:15:00Z","import_wh":1250.5,"seq":3}]"#,
    ),
    (
        "meters/m-002/readings",
        r#"{"ts":1795392000000,"import_wh":50,"voltage_v":229.0}"#,
    ),
    (
        "meters/m-003/readings",
        r#"{"ts":"2026-11-23T10:00:00+01:00","import_wh":7,"meter_id":"m-003"}"#,
    ),
    ("meters/m-003/readings", "not json"),
    (
        "meters/m-003/readings",
        r#"{"ts":"2026-11-23T10:00:00Z","import_wh":-1}"#,
    ),
    (
        "meters/bad id/readings",
        r#"{"ts":"2026-11-23T10:00:00Z","import_wh":1}"#,
    ),
];

async fn fixture_lake(dir: &Path) -> Lake {
    let bus = EmbeddedBus::open(
        &dir.join("log.redb"),
        EmbeddedConfig::default(),
        2,
        Retention::default(),
    )
    .expect("bus");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // The fixture, with m-001's messages delivered twice (at-least-once) …
    let replayed = FIXTURE
        .iter()
        .chain(FIXTURE.iter().filter(|(topic, _)| topic.contains("m-001")));
    sink_and_etl(&bus, &store, replayed, "2026-11-23T12:00:00Z").await;
    // … then, six hours late, m-001's 00:30 reading.
    sink_and_etl(&bus, &store, LATE.iter(), "2026-11-23T18:00:00Z").await;
    // … and once the files compaction merged are past their grace, they are deleted.
    run_etl(
        &store,
        at("2026-11-23T18:00:00Z") + EtlConfig::default().delete_grace,
    )
    .await;
    Lake::new(store, Default::default()).expect("lake")
}

/// m-001's reading of 00:30, arriving late.
const LATE: &[(&str, &str)] = &[(
    "meters/m-001/readings",
    r#"{"ts":"2026-11-23T00:30:00Z","import_wh":1400,"seq":4}"#,
)];

/// Publishes `messages` received at `received`, drains them into the raw zone with the sink,
/// and runs the ETL.
async fn sink_and_etl<'a>(
    bus: &EmbeddedBus,
    store: &Arc<dyn ObjectStore>,
    messages: impl Iterator<Item = &'a (&'static str, &'static str)>,
    received: &str,
) {
    let sink = RawSinkConfig::default()
        .build_on(&DecodeConfig::default(), bus, "readings.raw", store.clone())
        .await
        .expect("sink");
    let received = at(received);
    let records = messages
        .map(|(topic, payload)| Record {
            key: topic.split('/').nth(1).unwrap_or_default().to_owned(),
            value: Bytes::from_static(payload.as_bytes()),
            timestamp: received,
            headers: vec![(headers::SOURCE_TOPIC.to_owned(), (*topic).to_owned())],
        })
        .collect();
    bus.append("readings.raw", records).await.expect("append");
    let stop = CancellationToken::new();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), sink.run(stop))
        .await
        .expect("sink drains")
        .expect("sink runs");
    run_etl(store, received).await;
}

async fn run_etl(store: &Arc<dyn ObjectStore>, now: DateTime<Utc>) {
    EtlConfig::default()
        .build(&PipelineConfig::default(), store.clone())
        .run_once(Arc::new(Registry::default()), now, &|_| {})
        .await
        .expect("etl");
}

struct LakeDb(Lake);

#[async_trait]
impl AsyncDB for LakeDb {
    type Error = meterstack_lake::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let batches = self
            .0
            .plan(sql, None)
            .await?
            .collect()
            .await
            .map_err(meterstack_lake::Error::from)?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::Rows {
                types: Vec::new(),
                rows: Vec::new(),
            });
        };
        let types = vec![DefaultColumnType::Any; first.num_columns()];
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .map(|col| {
                        if col.is_null(row) {
                            Ok("NULL".to_owned())
                        } else {
                            arrow::util::display::array_value_to_string(col, row)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                rows.push(cells);
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meterstack-lake"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour_matches_the_slt_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = fixture_lake(dir.path()).await;
    let slt_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&slt_dir)
        .expect("tests/slt")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let lake = lake.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let lake = lake.clone();
            async move { Ok::<_, meterstack_lake::Error>(LakeDb(lake)) }
        });
        // METERSTACK_SLT_COMPLETE=1 rewrites the expected results from the actual ones (review
        // the diff before committing it).
        if std::env::var_os("METERSTACK_SLT_COMPLETE").is_some() {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}
