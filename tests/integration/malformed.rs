//! Malformed payloads are rejected with a reason, counted, kept, and never stop good readings.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};

use crate::harness::{Meterstack, mosquitto_pub, mosquitto_pub_file, mosquitto_pub_lines};

#[test]
fn malformed_payloads_are_rejected_counted_and_kept_between_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let port = ms.mqtt_port;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let topic = "meters/m-007/readings";
    let lines: Vec<String> = [
        format!(r#"{{"ts":"{now}","import_wh":1,"seq":1}}"#),
        "not json at all".to_owned(),
        r#"{"import_wh":1}"#.to_owned(),
        format!(r#"{{"ts":"{now}","import_wh":"lots"}}"#),
        r#"{"ts":"3000-01-01T00:00:00Z","import_wh":1}"#.to_owned(),
        format!(r#"{{"ts":"{now}","import_wh":1,"meter_id":"m-008"}}"#),
        format!(r#"[{{"ts":"{now}","import_wh":2,"seq":2}},{{"ts":"{now}","import_wh":-5}},{{"ts":"{now}","import_wh":3,"seq":3}}]"#),
    ]
    .into();
    assert!(mosquitto_pub_lines(port, topic, "m-007", &lines));
    let blob = dir.path().join("blob.bin");
    std::fs::write(&blob, vec![b'{'; 1 << 20]).expect("write blob");
    assert!(mosquitto_pub_file(port, topic, &blob));
    // A payload format meterstack does not decode: kept as a reject with its reason.
    assert!(mosquitto_pub(
        port,
        "meters/m-007/xml",
        r#"<reading ts="0" import_wh="1"/>"#
    ));
    // A client id that is no meter id never gets past the gate.
    assert!(!mosquitto_pub(
        port,
        "meters/m!x/readings",
        r#"{"ts":0,"import_wh":1}"#
    ));
    assert!(mosquitto_pub(
        port,
        topic,
        &format!(r#"{{"ts":"{now}","import_wh":4,"seq":4}}"#)
    ));

    assert_eq!(ms.wait_for_count("rejected_readings", 8), 8);
    assert_eq!(ms.wait_for_count("raw_readings", 4), 4);
    let seqs: Vec<u64> = ms
        .rows("SELECT seq FROM raw_readings ORDER BY seq")
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4],
        "good readings around the bad ones all landed"
    );

    let rows = ms.rows(
        "SELECT reason, detail, source_topic, meter_id, element_index, payload_bytes \
         FROM rejected_readings ORDER BY reason",
    );
    let by_reason: BTreeMap<&str, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["reason"].as_str().expect("reason"), r))
        .collect();
    let reasons: Vec<&str> = by_reason.keys().copied().collect();
    assert_eq!(
        reasons,
        [
            "invalid_field",
            "meter_id_mismatch",
            "missing_field",
            "not_json",
            "payload_too_large",
            "timestamp_in_future",
            "unknown_format"
        ]
    );
    assert_eq!(
        rows.len(),
        8,
        "invalid_field twice: a wrong type, and a negative register in an array"
    );
    for row in &rows {
        assert!(
            !row["detail"].as_str().unwrap_or_default().is_empty(),
            "{row}"
        );
    }
    assert_eq!(
        by_reason["payload_too_large"]["payload_bytes"].as_u64(),
        Some(1 << 20)
    );
    assert_eq!(
        by_reason["unknown_format"]["meter_id"].as_str(),
        Some("m-007")
    );
    assert_eq!(
        by_reason["unknown_format"]["source_topic"].as_str(),
        Some("meters/m-007/xml")
    );
    assert_eq!(by_reason["not_json"]["meter_id"].as_str(), Some("m-007"));
    let array_reject = rows
        .iter()
        .find(|r| r["element_index"].as_u64() == Some(1))
        .expect("the array's bad element is kept with its index");
    assert_eq!(array_reject["reason"].as_str(), Some("invalid_field"));

    for (reason, n) in [
        ("not_json", 1.0),
        ("missing_field", 1.0),
        ("invalid_field", 2.0),
        ("timestamp_in_future", 1.0),
        ("meter_id_mismatch", 1.0),
        ("payload_too_large", 1.0),
        ("unknown_format", 1.0),
        ("bad_topic", 0.0),
        ("timestamp_too_old", 0.0),
    ] {
        assert_eq!(
            ms.metric(&format!(
                "meterstack_readings_rejected_total{{reason=\"{reason}\"}}"
            )),
            n,
            "{reason}"
        );
    }
    assert_eq!(ms.metric("meterstack_readings_accepted_total"), 4.0);
    assert_eq!(
        ms.metric("meterstack_mqtt_refused_total{reason=\"bad_client_id\"}"),
        1.0
    );
}
