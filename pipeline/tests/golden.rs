//! Golden replay: a recorded `readings.raw` stream (12 meters, one day, many faults) goes
//! through the pipeline on the embedded bus; the clean readings, aggregates and alerts must
//! equal the recorded expectation — also when the pipeline is killed in the middle and
//! restarted from its checkpoint.
//!
//! `UPDATE_GOLDEN=1` re-records the stream from the simulator and the expectation from the
//! pipeline; `UPDATE_GOLDEN=expected` re-records only the expectation from the same stream
//! (after a rule change). Review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use meterstack_core::MeterId;
use meterstack_core::bus::{Bus, BusConfig, Record, TopicNames, headers};
use meterstack_core::component::Context;
use meterstack_core::store::meters::{MeterClass, MeterFields};
use meterstack_core::store::{SqlStore, StoreConfig};
use meterstack_core::wire;
use meterstack_pipeline::PipelineConfig;
use meterstack_sim::meter::Class;
use meterstack_sim::offline::Offline;
use meterstack_sim::{FaultConfig, FleetConfig, RunShape, build_fleet};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct RawLine {
    received_at: DateTime<Utc>,
    topic: String,
    payload: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct MeterLine {
    meter_id: String,
    feeder: String,
    class: String,
    rated_current_a: f64,
    exchanged_on: Option<chrono::NaiveDate>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Records the input from the simulator.
fn record_input() {
    let mut faults = FaultConfig {
        scale: 25.0,
        ..FaultConfig::default()
    };
    faults
        .rates
        .insert(meterstack_sim::FaultType::FeederOutage, 0.04);
    let shape = RunShape {
        start: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
        dt: TimeDelta::minutes(15),
        horizon: Some(TimeDelta::hours(30)),
        seed: 11,
        faults: Arc::new(faults),
        buffer: 96,
    };
    let fleet = FleetConfig {
        meters: 12,
        meters_per_feeder: 4,
        ..FleetConfig::default()
    };
    let specs = build_fleet(&fleet, &shape).unwrap();
    let meters: Vec<String> = specs
        .iter()
        .map(|s| {
            serde_json::to_string(&MeterLine {
                meter_id: s.id.to_string(),
                feeder: s.feeder.clone(),
                class: match s.class {
                    Class::Household => "household",
                    Class::Commercial => "commercial",
                    Class::Prosumer => "prosumer",
                }
                .into(),
                rated_current_a: s.rated_current_a,
                exchanged_on: s.exchanged_on,
            })
            .unwrap()
        })
        .collect();
    std::fs::write(dir().join("meters.jsonl"), meters.join("\n") + "\n").unwrap();
    let (received, _) = Offline::run(specs, &shape, fleet.site().unwrap(), 36 * 4);
    let mut lines: Vec<String> = Vec::new();
    for (reading, at) in received {
        lines.push(
            serde_json::to_string(&RawLine {
                received_at: at,
                topic: wire::readings_topic(&reading.meter_id),
                payload: String::from_utf8(wire::encode(std::slice::from_ref(&reading))).unwrap(),
            })
            .unwrap(),
        );
    }
    // Bad input from outside belongs in the stream too.
    let bad_at = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 1).unwrap();
    for (topic, payload) in [
        ("meters/m-01/readings", "{not json"),
        ("meters/m-01/readings", r#"{"ts":"2026-06-01T12:00:00Z"}"#),
        (
            "meters/bad id/readings",
            r#"{"ts":"2026-06-01T12:00:00Z","import_wh":1}"#,
        ),
    ] {
        lines.push(
            serde_json::to_string(&RawLine {
                received_at: bad_at,
                topic: topic.into(),
                payload: payload.into(),
            })
            .unwrap(),
        );
    }
    std::fs::write(dir().join("raw.jsonl"), lines.join("\n") + "\n").unwrap();
}

async fn setup(root: &Path) -> (Arc<dyn Bus>, SqlStore, Arc<dyn ObjectStore>) {
    let bus = BusConfig {
        partitions: 1,
        ..BusConfig::default()
    }
    .build(root)
    .await
    .unwrap();
    let store = StoreConfig::default().build(root).await.unwrap();
    let rows: Vec<(MeterId, MeterFields)> = std::fs::read_to_string(dir().join("meters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let m: MeterLine = serde_json::from_str(l).unwrap();
            (
                MeterId::new(&m.meter_id).unwrap(),
                MeterFields {
                    feeder: Some(Some(m.feeder)),
                    meter_class: Some(Some(MeterClass::parse(&m.class).unwrap())),
                    rated_current_a: Some(Some(m.rated_current_a)),
                    exchanged_on: Some(m.exchanged_on),
                    ..MeterFields::default()
                },
            )
        })
        .collect();
    store.upsert_meters(&rows).await.unwrap();
    let records: Vec<Record> = std::fs::read_to_string(dir().join("raw.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let line: RawLine = serde_json::from_str(l).unwrap();
            Record {
                key: line.topic.split('/').nth(1).unwrap_or_default().to_owned(),
                value: line.payload.into_bytes().into(),
                timestamp: line.received_at,
                headers: vec![(headers::SOURCE_TOPIC.into(), line.topic)],
            }
        })
        .collect();
    bus.append(&TopicNames::default().readings_raw, records)
        .await
        .unwrap();
    let state_dir = root.join("lake");
    std::fs::create_dir_all(&state_dir).unwrap();
    let state: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&state_dir).unwrap());
    (bus, store, state)
}

fn config() -> PipelineConfig {
    PipelineConfig {
        poll_max: 5,
        checkpoint_interval: Duration::from_millis(20),
        idle_clock: Duration::ZERO,
        ..PipelineConfig::default()
    }
}

/// Every record of the output topics, as JSON lines, in order, without exact repeats (the
/// at-least-once redelivery a consumer deduplicates by key).
async fn outputs(bus: &Arc<dyn Bus>) -> Vec<String> {
    let topics = TopicNames::default();
    let mut out = Vec::new();
    for topic in [
        &topics.readings_clean,
        &topics.readings_rejected,
        &topics.aggregates,
        &topics.alerts,
        &topics.meter_commands,
    ] {
        let mut sub = bus.subscribe(topic, "golden-reader").await.unwrap();
        let mut seen = HashSet::new();
        loop {
            let batch = sub.poll(10_000, Duration::from_millis(100)).await.unwrap();
            if batch.is_empty() {
                break;
            }
            for d in batch {
                let line = format!("{topic} {}", String::from_utf8_lossy(&d.record.value));
                if seen.insert(line.clone()) {
                    out.push(line);
                }
            }
        }
    }
    out
}

fn deps(bus: &Arc<dyn Bus>, store: &SqlStore, state: &Arc<dyn ObjectStore>) -> Context {
    Context {
        bus: Some(bus.clone()),
        topics: TopicNames::default(),
        objects: state.clone(),
        store: store.clone(),
        health: Arc::default(),
    }
}

async fn drain(bus: &Arc<dyn Bus>, store: &SqlStore, state: &Arc<dyn ObjectStore>) {
    let pipeline = config().build(&deps(bus, store, state)).await.unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    pipeline.run(stop).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_replay_is_identical_with_a_kill_in_the_middle() {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "expected") {
        record_input();
    }
    // Uninterrupted.
    let a = tempfile::tempdir().unwrap();
    let (bus, store, state) = setup(a.path()).await;
    drain(&bus, &store, &state).await;
    let expected = outputs(&bus).await;
    let golden = dir().join("expected.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, expected.join("\n") + "\n").unwrap();
    }
    let recorded: Vec<String> = std::fs::read_to_string(&golden)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        expected.len(),
        recorded.len(),
        "output count differs from the golden file"
    );
    for (i, (got, want)) in expected.iter().zip(&recorded).enumerate() {
        assert_eq!(got, want, "output {i} differs from the golden file");
    }
    for kind in [
        "readings.clean",
        "readings.rejected",
        "\"kind\":\"meter_window\"",
        "\"revision\":1",
        "\"event\":\"opened\"",
        "\"event\":\"resolved\"",
        "feeder_outage",
    ] {
        assert!(
            recorded.iter().any(|l| l.contains(kind)),
            "the golden stream has no {kind}"
        );
    }

    // Killed in the middle (a task aborted at whatever await it was in), then restarted.
    let b = tempfile::tempdir().unwrap();
    let (bus, store, state) = setup(b.path()).await;
    let pipeline = config().build(&deps(&bus, &store, &state)).await.unwrap();
    let task = tokio::spawn(pipeline.run(CancellationToken::new()));
    let mut probe = bus
        .subscribe(&TopicNames::default().readings_clean, "probe")
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 600 {
        seen += probe
            .poll(1000, Duration::from_millis(50))
            .await
            .unwrap()
            .len();
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let checkpoint = meterstack_pipeline::runner::load_checkpoint(&state)
        .await
        .unwrap();
    assert!(
        checkpoint.is_some_and(|c| !c.offsets.is_empty()),
        "no checkpoint before the kill"
    );
    drain(&bus, &store, &state).await;
    let restarted = outputs(&bus).await;
    assert_eq!(
        restarted.len(),
        expected.len(),
        "outputs lost or added by the restart"
    );
    assert_eq!(restarted, expected);
}
