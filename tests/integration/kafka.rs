//! meterstack on the Kafka backend, against a real Kafka-protocol broker (tansu), with a plain
//! Kafka consumer (confluent-kafka) as the independent reader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::harness::{
    Meterstack, kafka_config, kafka_read_all, mosquitto_pub_lines, reading_lines, spawn_fleet,
};

fn unique() -> String {
    format!("{:x}-{}", Utc::now().timestamp_micros(), std::process::id())
}

#[test]
fn up_on_kafka_and_a_plain_kafka_consumer_reads_what_meterstack_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = unique();
    let config = kafka_config(dir.path(), &suffix);
    let config = config.to_str().expect("utf8 path");
    let ms = Meterstack::launch(dir.path(), &["up", "--config", config], &[]);
    for m in 0..2 {
        let (topic, id) = (format!("meters/k-{m}/readings"), format!("k-{m}"));
        assert!(mosquitto_pub_lines(
            ms.mqtt_port,
            &topic,
            &id,
            &reading_lines(100)
        ));
    }
    assert_eq!(ms.wait_for_count("raw_readings", 200), 200);

    let records = kafka_read_all(&format!("readings.raw.{suffix}"), 200);
    assert_eq!(records.len(), 200);
    let mut seen = BTreeSet::new();
    for r in &records {
        let key = r["key"].as_str().expect("key");
        assert_eq!(
            r["headers"]["source_topic"].as_str(),
            Some(format!("meters/{key}/readings").as_str())
        );
        assert_eq!(r["headers"]["format"].as_str(), Some("json"));
        let reading: serde_json::Value =
            serde_json::from_str(r["value"].as_str().expect("value")).expect("payload");
        seen.insert((key.to_owned(), reading["seq"].as_u64().expect("seq")));
    }
    assert_eq!(seen.len(), 200, "every reading once");
    // Keyed by meter: one meter, one partition.
    for m in 0..2 {
        let partitions: BTreeSet<u64> = records
            .iter()
            .filter(|r| r["key"] == format!("k-{m}"))
            .map(|r| r["partition"].as_u64().expect("partition"))
            .collect();
        assert_eq!(partitions.len(), 1);
    }
    assert!(ms.terminate().success());
}

#[test]
fn kill_9_of_a_separate_sink_process_on_kafka_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = unique();
    let config = kafka_config(dir.path(), &suffix);
    let config = config.to_str().expect("utf8 path");
    let broker_dir = dir.path().join("broker");
    let sink_dir = dir.path().join("sink");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    std::fs::create_dir_all(&sink_dir).expect("mkdir");
    let broker = Meterstack::launch(
        &broker_dir,
        &["run", "--roles", "broker", "--config", config],
        &[],
    );
    let sink_args = ["run", "--roles", "sink,api", "--config", config];
    let sink = Meterstack::launch(&sink_dir, &sink_args, &[]);

    const METERS: u64 = 10;
    const PER_METER: u64 = 10_000;
    let publishers = spawn_fleet(broker.mqtt_port, "q", METERS, PER_METER);
    let written = sink.wait_metric(
        "meterstack_readings_written_total{zone=\"raw\"}",
        Duration::from_secs(180),
        |v| v >= 20_000.0,
    );
    assert!(written >= 20_000.0, "ingest too slow to test: {written}");
    sink.kill9();
    for mut p in publishers {
        assert!(
            p.wait().expect("mosquitto_pub").success(),
            "the broker process is alive"
        );
    }
    let total = (METERS * PER_METER) as f64;
    let received = broker.wait_metric(
        "meterstack_messages_received_total",
        Duration::from_secs(180),
        |v| v >= total,
    );
    assert_eq!(received, total);

    // Everything on readings.raw, read by a plain Kafka consumer.
    let on_topic: BTreeSet<(String, u64)> =
        kafka_read_all(&format!("readings.raw.{suffix}"), total as usize)
            .iter()
            .map(|r| {
                let reading: serde_json::Value =
                    serde_json::from_str(r["value"].as_str().expect("value")).expect("payload");
                (
                    r["key"].as_str().expect("key").to_owned(),
                    reading["seq"].as_u64().expect("seq"),
                )
            })
            .collect();
    assert_eq!(on_topic.len() as f64, total);

    // The restarted sink resumes from its group's committed offsets and catches up.
    let sink = Meterstack::launch(
        &sink_dir,
        &sink_args,
        &[("METERSTACK__HTTP__QUERY__MAX_ROWS", "1000000")],
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut distinct = 0;
    while Instant::now() < deadline {
        distinct = sink.count("(SELECT DISTINCT meter_id, seq FROM raw_readings)");
        if distinct as usize >= on_topic.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let rows = sink.rows("SELECT meter_id, seq FROM raw_readings");
    let in_lake: BTreeSet<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["meter_id"].as_str().expect("id").to_owned(),
                r["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    let missing = on_topic.difference(&in_lake).count();
    assert_eq!(
        missing, 0,
        "{missing} readings on the topic never reached the lake ({distinct} distinct)"
    );
    eprintln!(
        "kafka: sink killed after {written} readings written; after restart {} rows for {} distinct readings",
        rows.len(),
        in_lake.len()
    );
    assert!(sink.terminate().success());
    assert!(broker.terminate().success());
}
