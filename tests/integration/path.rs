//! The path of a reading: mosquitto_pub → broker → bus → raw zone → SQL over HTTP.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{Value, json};

use crate::harness::{Meterstack, mosquitto_pub_lines};

/// One expected reading, as sent.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    meter_id: String,
    ts: DateTime<Utc>,
    import_wh: f64,
    export_wh: Option<f64>,
    power_w: Option<f64>,
    voltage_v: Option<f64>,
    current_a: Option<f64>,
    seq: Option<u64>,
}

fn payload(r: &Sent, epoch_ms: bool) -> String {
    let mut obj = json!({ "import_wh": r.import_wh });
    obj["ts"] = if epoch_ms {
        json!(r.ts.timestamp_millis())
    } else {
        json!(r.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    for (k, v) in [
        ("export_wh", r.export_wh),
        ("power_w", r.power_w),
        ("voltage_v", r.voltage_v),
        ("current_a", r.current_a),
    ] {
        if let Some(v) = v {
            obj[k] = json!(v);
        }
    }
    if let Some(seq) = r.seq {
        obj["seq"] = json!(seq);
    }
    obj.to_string()
}

fn opt_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[test]
fn thousand_readings_from_ten_meters_come_back_through_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let base = Utc::now() - TimeDelta::days(2);
    let base = DateTime::from_timestamp_millis(base.timestamp_millis()).expect("ms precision");
    let mut sent = Vec::new();
    let mut publishers = Vec::new();
    for m in 0..10u32 {
        let meter_id = format!("m-{m:03}");
        let readings: Vec<Sent> = (0..100u32)
            .map(|j| Sent {
                meter_id: meter_id.clone(),
                ts: base
                    + TimeDelta::minutes(15 * i64::from(j))
                    + TimeDelta::milliseconds(i64::from(m)),
                import_wh: 1_000_000.0 * f64::from(m) + 123.25 * f64::from(j),
                export_wh: (m % 2 == 0).then(|| 10.5 * f64::from(j)),
                power_w: (j % 7 != 0).then(|| 400.0 + f64::from(j) / 3.0),
                voltage_v: Some(229.0 + f64::from(m) / 10.0),
                current_a: (j % 5 != 0).then(|| 1.0 + f64::from(j) / 100.0),
                seq: (j % 3 != 0).then_some(u64::from(j)),
            })
            .collect();
        let lines: Vec<String> = readings
            .iter()
            .enumerate()
            .map(|(i, r)| payload(r, i % 2 == 1))
            .collect();
        sent.extend(readings);
        let port = ms.mqtt_port;
        publishers.push(std::thread::spawn(move || {
            mosquitto_pub_lines(
                port,
                &format!("meters/{meter_id}/readings"),
                &meter_id,
                &lines,
            )
        }));
    }
    for p in publishers {
        assert!(p.join().expect("publisher thread"), "mosquitto_pub failed");
    }

    let landed = ms.wait_for_count("raw_readings", 1000);
    assert_eq!(landed, 1000, "/metrics:\n{}", ms.get("/metrics").1);
    let rows = ms.rows(
        "SELECT meter_id, ts, import_wh, export_wh, power_w, voltage_v, current_a, seq \
         FROM raw_readings ORDER BY meter_id, ts",
    );
    let got: Vec<Sent> = rows
        .iter()
        .map(|r| Sent {
            meter_id: r["meter_id"].as_str().expect("meter_id").to_owned(),
            ts: DateTime::parse_from_rfc3339(r["ts"].as_str().expect("ts"))
                .expect("RFC 3339 ts")
                .with_timezone(&Utc),
            import_wh: r["import_wh"].as_f64().expect("import_wh"),
            export_wh: opt_f64(&r["export_wh"]),
            power_w: opt_f64(&r["power_w"]),
            voltage_v: opt_f64(&r["voltage_v"]),
            current_a: opt_f64(&r["current_a"]),
            seq: r["seq"].as_u64(),
        })
        .collect();
    sent.sort_by(|a, b| (&a.meter_id, a.ts).cmp(&(&b.meter_id, b.ts)));
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g, s);
    }

    // The issue's example query, and the metrics of the path.
    let one = ms.rows("SELECT * FROM raw_readings WHERE meter_id = 'm-001'");
    assert_eq!(one.len(), 100);
    assert!(
        one[0].get("received_at").is_some() && one[0].get("date").is_some(),
        "{}",
        one[0]
    );
    assert_eq!(ms.metric("meterstack_messages_received_total"), 1000.0);
    assert_eq!(ms.metric("meterstack_mqtt_overwritten_total"), 0.0);
    assert_eq!(ms.metric("meterstack_readings_accepted_total"), 1000.0);
    assert_eq!(
        ms.metric("meterstack_readings_written_total{zone=\"raw\"}"),
        1000.0
    );
    let (status, _) = ms.get("/healthz");
    assert_eq!(status, 200);
    let (status, body) = ms.get("/readyz");
    assert_eq!(status, 200, "{body}");
}

/// With a broker log far too small for the load (2 segments of 2 KiB, about 8 messages),
/// rumqttd would overwrite acknowledged messages before the bridge reads them. The gate's
/// backpressure holds meters back instead: every published message reaches the bus, none is
/// overwritten.
#[test]
fn broker_backpressure_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(
        dir.path(),
        &[
            ("METERSTACK__MQTT__SEGMENT_BYTES", "2048"),
            ("METERSTACK__MQTT__SEGMENTS", "2"),
        ],
    );
    let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let publishers: Vec<_> = (0..10)
        .map(|m| {
            let port = ms.mqtt_port;
            let lines: Vec<String> = (0..200)
                .map(|i| {
                    format!(
                        r#"{{"ts":"{ts}","import_wh":{i},"seq":{i},"pad":"{}"}}"#,
                        "x".repeat(200)
                    )
                })
                .collect();
            std::thread::spawn(move || {
                mosquitto_pub_lines(
                    port,
                    &format!("meters/o-{m}/readings"),
                    &format!("o-{m}"),
                    &lines,
                )
            })
        })
        .collect();
    for p in publishers {
        assert!(p.join().expect("publisher"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let received = ms.metric("meterstack_messages_received_total");
        let overwritten = ms.metric("meterstack_mqtt_overwritten_total");
        if received + overwritten >= 2000.0 || std::time::Instant::now() > deadline {
            assert_eq!(
                (received, overwritten),
                (2000.0, 0.0),
                "messages received by the bus, and overwritten in the broker"
            );
            assert!(
                ms.metric("meterstack_mqtt_backpressure_total") > 0.0,
                "the load never made the gate wait: the test does not exercise backpressure"
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
