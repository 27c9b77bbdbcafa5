//! kill -9 during ingest: every reading that reached `readings.raw` before the kill reaches
//! the raw zone after the restart (duplicates allowed, nothing lost).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{Meterstack, bin, spawn_fleet};

const METERS: u64 = 10;
const PER_METER: u64 = 10_000;

#[test]
fn kill_9_during_ingest_loses_nothing_that_reached_the_bus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let publishers = spawn_fleet(ms.mqtt_port, "c", METERS, PER_METER);
    // Mid-ingest: a good part has arrived, the rest is still coming.
    let received = ms.wait_metric(
        "meterstack_messages_received_total",
        Duration::from_secs(120),
        |v| v >= 30_000.0,
    );
    assert!(received >= 30_000.0, "ingest too slow to test: {received}");
    ms.kill9();
    for mut p in publishers {
        // mosquitto_pub would reconnect forever to the dead broker.
        let _ = p.kill();
        let _ = p.wait();
    }

    // Restart: the sink resumes from its committed offsets and catches up.
    let ms = Meterstack::start(dir.path(), &[]);
    let lag = ms.wait_metric(
        "meterstack_bus_consumer_lag{topic=\"readings.raw\",group=\"lake-raw-sink\"}",
        Duration::from_secs(120),
        |v| v == 0.0,
    );
    assert_eq!(lag, 0.0);
    assert!(ms.terminate().success());

    // What reached readings.raw before the kill, read back from the bus itself.
    let out = bin()
        .args(["bus", "read", "--topic", "readings.raw", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .expect("meterstack bus read");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut on_bus = BTreeSet::new();
    for line in String::from_utf8(out.stdout).expect("utf8").lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("json line");
        let payload: serde_json::Value =
            serde_json::from_str(record["value"].as_str().expect("text payload"))
                .expect("reading json");
        on_bus.insert((
            record["key"].as_str().expect("key").to_owned(),
            payload["seq"].as_u64().expect("seq"),
        ));
    }
    assert!(
        on_bus.len() as f64 >= received,
        "the bus holds at least what was counted before the kill"
    );

    let ms = Meterstack::start(
        dir.path(),
        &[("METERSTACK__HTTP__QUERY__MAX_ROWS", "1000000")],
    );
    let rows = ms.rows("SELECT meter_id, seq FROM raw_readings");
    let in_lake: BTreeSet<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["meter_id"].as_str().expect("id").to_owned(),
                r["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    let missing: Vec<_> = on_bus.difference(&in_lake).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} readings on the bus never reached the lake, e.g. {missing:?}",
        on_bus.difference(&in_lake).count()
    );
    assert!(
        in_lake.is_subset(&on_bus),
        "the lake holds nothing the bus did not"
    );
    eprintln!(
        "kill -9 after {received} messages: {} on the bus, {} rows in the lake ({} distinct)",
        on_bus.len(),
        rows.len(),
        in_lake.len()
    );
}
