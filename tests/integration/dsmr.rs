//! DSMR P1 telegrams published by a gateway on `meters/{id}/dsmr` become readings; a telegram
//! with a bad CRC is rejected with its reason.

use serde_json::json;

use crate::harness::{Meterstack, mosquitto_pub_file};

#[test]
fn p1_telegrams_become_readings_and_bad_crcs_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/data/dsmr");
    let topic = "meters/p1-meter/dsmr";
    assert!(mosquitto_pub_file(
        ms.mqtt_port,
        topic,
        &fixtures.join("v5-three-phase-gas-export.txt")
    ));
    assert!(mosquitto_pub_file(
        ms.mqtt_port,
        topic,
        &fixtures.join("v5-three-phase-gas-export-bad-crc.txt")
    ));
    assert_eq!(ms.wait_for_count("raw_readings", 1), 1);
    assert_eq!(ms.wait_for_count("rejected_readings", 1), 1);
    let rows = ms.rows(
        "SELECT meter_id, CAST(ts AS VARCHAR) AS ts, import_wh, export_wh, power_w, voltage_v, current_a \
         FROM raw_readings",
    );
    assert_eq!(
        rows,
        vec![json!({
            "meter_id": "p1-meter",
            "ts": "2023-06-17T11:15:05Z",
            "import_wh": 9509536.0,
            "export_wh": 6175677.0,
            "power_w": -3861.0,
            "voltage_v": 241.3,
            "current_a": 16.0
        })]
    );
    let rejected = ms.rows("SELECT reason, source_topic FROM rejected_readings");
    assert_eq!(
        rejected,
        vec![json!({"reason": "bad_crc", "source_topic": topic})]
    );
    assert_eq!(
        ms.metric("meterstack_readings_rejected_total{reason=\"bad_crc\"}"),
        1.0
    );
}
