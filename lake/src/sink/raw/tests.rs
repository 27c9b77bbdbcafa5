use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, UInt32Type};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use meterstack_core::bus::embedded::{EmbeddedBus, EmbeddedConfig};
use meterstack_core::bus::{Bus, Record, Retention};
use object_store::memory::InMemory;

use super::*;
use crate::query::Lake;

fn message(topic: &str, payload: &str) -> Record {
    Record {
        key: topic.split('/').nth(1).unwrap_or_default().to_owned(),
        value: Bytes::copy_from_slice(payload.as_bytes()),
        timestamp: Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 16, 0)
            .single()
            .expect("valid"),
        headers: vec![(headers::SOURCE_TOPIC.to_owned(), topic.to_owned())],
    }
}

fn bus(dir: &std::path::Path) -> EmbeddedBus {
    EmbeddedBus::open(
        &dir.join("log.redb"),
        EmbeddedConfig::default(),
        2,
        Retention::default(),
    )
    .expect("bus")
}

/// A context of `bus` and `store`, with topic `readings.raw` named `raw_topic` and a SQLite
/// store in `dir`.
async fn context(
    dir: &std::path::Path,
    bus: EmbeddedBus,
    store: Arc<dyn ObjectStore>,
    raw_topic: &str,
) -> (Arc<dyn Bus>, Context) {
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let ctx = Context {
        bus: Some(bus.clone()),
        topics: meterstack_core::bus::TopicNames {
            readings_raw: raw_topic.to_owned(),
            ..Default::default()
        },
        objects: store,
        store: meterstack_core::store::StoreConfig::default()
            .build(dir)
            .await
            .expect("store"),
        health: Arc::default(),
    };
    (bus, ctx)
}

async fn query(lake: &Lake, sql: &str) -> Vec<RecordBatch> {
    lake.plan(sql, None)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_readings_and_rejects_land_in_their_tables_after_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let config = RawSinkConfig {
        flush_interval: Duration::from_secs(3600),
        ..RawSinkConfig::default()
    };
    let (bus, ctx) = context(dir.path(), bus, store.clone(), "readings.raw").await;
    let sink = config
        .build(&DecodeConfig::default(), &ctx)
        .await
        .expect("sink");
    bus.append(
        "readings.raw",
        vec![
            message("meters/m-1/readings", r#"{"ts":"2026-11-23T10:00:00Z","import_wh":100.5,"voltage_v":230.1}"#),
            message("meters/m-1/readings", "garbage"),
            message(
                "meters/m-2/readings",
                r#"[{"ts":"2026-11-22T23:45:00Z","import_wh":7},{"ts":"2026-11-23T00:00:00Z"},{"ts":"2026-11-23T00:15:00Z","import_wh":9}]"#,
            ),
        ],
    )
    .await
    .expect("append");

    // Cancelled before it starts: the sink must still drain the topic and flush.
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    sink.run(shutdown).await.expect("sink run");

    let lake = Lake::new(store.clone(), Default::default()).expect("lake");
    let batches = query(
        &lake,
        "SELECT meter_id, import_wh, date FROM raw_readings ORDER BY ts",
    )
    .await;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    assert_eq!(batch.num_rows(), 3);
    let ids: Vec<&str> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(ids, ["m-2", "m-2", "m-1"]);
    let wh: Vec<f64> = batch
        .column(1)
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    assert_eq!(wh, [7.0, 9.0, 100.5]);
    // Readings are partitioned by their own date, not the receive date.
    let dates: Vec<String> = (0..3)
        .map(|i| arrow::util::display::array_value_to_string(batch.column(2), i).expect("date"))
        .collect();
    assert_eq!(dates, ["2026-11-22", "2026-11-23", "2026-11-23"]);

    let batches = query(
        &lake,
        "SELECT meter_id, reason, element_index, payload_bytes FROM rejected_readings ORDER BY reason",
    )
    .await;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    assert_eq!(batch.num_rows(), 2);
    let reasons: Vec<&str> = batch
        .column(1)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(reasons, ["missing_field", "not_json"]);
    let index = batch.column(2).as_primitive::<UInt32Type>();
    assert_eq!(index.value(0), 1);
    assert!(index.is_null(1));

    // Everything consumed was committed: a new subscription of the group sees nothing.
    let mut again = bus
        .subscribe("readings.raw", GROUP)
        .await
        .expect("subscribe");
    assert!(
        again
            .poll(10, Duration::from_millis(10))
            .await
            .expect("poll")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_kept_cut_to_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus(dir.path());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let config = RawSinkConfig {
        rejected_payload_max_bytes: 16,
        ..RawSinkConfig::default()
    };
    let (bus, ctx) = context(dir.path(), bus, store.clone(), "t").await;
    let sink = config
        .build(&DecodeConfig::default(), &ctx)
        .await
        .expect("sink");
    let blob = "x".repeat(1 << 20);
    bus.append("t", vec![message("meters/m-9/readings", &blob)])
        .await
        .expect("append");
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    sink.run(shutdown).await.expect("run");
    let lake = Lake::new(store, Default::default()).expect("lake");
    let batches = query(
        &lake,
        "SELECT reason, payload, payload_bytes FROM rejected_readings",
    )
    .await;
    let row = |c: usize| {
        arrow::util::display::array_value_to_string(batches[0].column(c), 0).expect("value")
    };
    assert_eq!(
        (row(0), row(2)),
        ("payload_too_large".into(), "1048576".into())
    );
    assert_eq!(
        batches[0].column(1).as_binary::<i32>().value(0),
        &[b'x'; 16]
    );
}
