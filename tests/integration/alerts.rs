//! The alert lifecycle end to end: an anomalous reading published with mosquitto_pub opens an
//! alert in the SQL store, operators acknowledge and resolve it over HTTP, and the pipeline
//! resolves it when the condition clears.

use std::time::{Duration, Instant};

use chrono::DurationRound;
use serde_json::Value;

use crate::harness::{Meterstack, mosquitto_pub};

/// Polls `GET path` (admin key) until `ready` holds for its body, for up to 30 s.
fn wait_for(ms: &Meterstack, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ms.admin("GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_anomaly_opens_an_alert_that_operators_acknowledge_and_the_pipeline_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let t0 = chrono::Utc::now()
        .duration_trunc(chrono::TimeDelta::minutes(15))
        .expect("grid");
    let at = |minutes: i64| {
        (t0 - chrono::TimeDelta::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let topic = "meters/al-1/readings";
    assert!(mosquitto_pub(
        ms.mqtt_port,
        topic,
        &format!(r#"{{"ts":"{}","import_wh":1000,"voltage_v":230}}"#, at(30))
    ));
    assert!(mosquitto_pub(
        ms.mqtt_port,
        topic,
        &format!(r#"{{"ts":"{}","import_wh":1100,"voltage_v":262}}"#, at(15))
    ));

    let body = wait_for(&ms, "/api/v1/alerts?meter=al-1", |b| {
        b["alerts"].as_array().is_some_and(|a| !a.is_empty())
    });
    let alerts = body["alerts"].as_array().expect("list");
    assert_eq!(alerts.len(), 1, "{body}");
    let alert = &alerts[0];
    assert_eq!(alert["type"], "voltage_swell", "{alert}");
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["evidence"]["voltage_v"], 262.0);
    let id = alert["alert_id"].as_str().expect("id").to_owned();

    let (status, body) = ms.admin("POST", &format!("/api/v1/alerts/{id}/ack"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["alert"]["state"], &body["changed"]),
        (&Value::from("acknowledged"), &Value::from(true))
    );
    assert!(
        body["alert"]["acknowledged_by"]
            .as_str()
            .is_some_and(|by| by.contains("created on first start")),
        "{body}"
    );
    let (status, body) = ms.admin("POST", &format!("/api/v1/alerts/{id}/ack"), None);
    assert_eq!((status, &body["changed"]), (200, &Value::from(false)));
    let (status, _) = ms.request("POST", &format!("/api/v1/alerts/{id}/ack"), None, None);
    assert_eq!(status, 401, "acknowledging needs a key");
    let (status, _) = ms.admin("POST", "/api/v1/alerts/no-such-alert/ack", None);
    assert_eq!(status, 404);

    // The voltage returns to normal: the pipeline resolves the alert.
    assert!(mosquitto_pub(
        ms.mqtt_port,
        topic,
        &format!(r#"{{"ts":"{}","import_wh":1200,"voltage_v":231}}"#, at(0))
    ));
    let body = wait_for(&ms, &format!("/api/v1/alerts/{id}"), |b| {
        b["state"] == "resolved"
    });
    assert_eq!(body["resolved_by"], Value::Null, "{body}");
    assert!(body["end"].is_string(), "{body}");
    let (status, body) = ms.admin("POST", &format!("/api/v1/alerts/{id}/ack"), None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &Value::from("conflict"))
    );
    let (status, body) = ms.admin("POST", &format!("/api/v1/alerts/{id}/resolve"), None);
    assert_eq!((status, &body["changed"]), (200, &Value::from(false)));

    // The `alerts` SQL table shows the same.
    let rows = ms.rows(&format!(
        "SELECT type, state, acknowledged_by IS NOT NULL AS acked, resolved_by, \"end\" IS NOT NULL AS ended FROM alerts WHERE alert_id = '{id}'"
    ));
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"type": "voltage_swell", "state": "resolved", "acked": true, "resolved_by": null, "ended": true})
        ]
    );
    let (_, open) = ms.admin("GET", "/api/v1/alerts?state=open", None);
    assert_eq!(open["alerts"], Value::Array(vec![]), "{open}");
    let (status, body) = ms.admin("GET", "/api/v1/alerts?state=closed", None);
    assert_eq!(status, 400, "{body}");
    assert!(ms.metric("meterstack_alerts_transitions_total{transition=\"opened\"}") >= 1.0);
    assert!(ms.terminate().success());
}
