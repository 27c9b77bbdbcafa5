//! The hub without sockets: routing, bounded queues, alert replay.

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use meterstack_core::bus::embedded::EmbeddedBus;
use meterstack_core::bus::{Record, Retention};
use meterstack_core::reading::MeterId;
use meterstack_core::records::{Alert, AlertEvent, AlertType, Severity};
use meterstack_core::store::StoreConfig;
use meterstack_core::store::meters::MeterFields;
use serde_json::Value;

use super::*;

async fn hub(dir: &std::path::Path, config: LiveConfig) -> (Hub, Arc<dyn Bus>, SqlStore) {
    let bus: Arc<dyn Bus> = Arc::new(
        EmbeddedBus::open(
            &dir.join("bus.redb"),
            Default::default(),
            4,
            Retention::default(),
        )
        .expect("bus"),
    );
    let store = StoreConfig::default().build(dir).await.expect("store");
    let hub = Hub::new(
        config,
        Some(bus.clone()),
        TopicNames::default(),
        store.clone(),
        Duration::from_secs(900),
    );
    (hub, bus, store)
}

fn reading(meter: &str, i: i64) -> Record {
    let ts = Utc::now() - TimeDelta::minutes(15 * (100 - i));
    let value = json!({
        "meter_id": meter, "ts": ts, "import_wh": 1000 + i, "voltage_v": 230.0,
        "received_at": Utc::now(), "quality": "measured", "seq": i,
    });
    Record {
        key: meter.into(),
        value: Bytes::from(value.to_string()),
        timestamp: Utc::now(),
        headers: vec![],
    }
}

/// Receives messages for up to `wait`, until `enough` says stop.
async fn collect(
    rx: &mut mpsc::Receiver<Arc<str>>,
    wait: Duration,
    enough: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while !enough(&out) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => out.push(serde_json::from_str(&m).expect("JSON")),
            _ => break,
        }
    }
    out
}

fn readings_of(messages: &[Value]) -> Vec<(String, i64)> {
    messages
        .iter()
        .filter(|m| m["type"] == "reading")
        .map(|m| {
            (
                m["data"]["meter_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                m["data"]["seq"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn subscribe(hub: &Hub, client: &Arc<Client>, text: &str) -> Value {
    let request = protocol::parse(text, 100).expect("request");
    hub.request(client, request).await
}

/// Appends a probe for `meter` until `rx` sees one: the followers have started.
async fn await_followers(bus: &Arc<dyn Bus>, rx: &mut mpsc::Receiver<Arc<str>>, meter: &str) {
    for _ in 0..50 {
        bus.append("readings.clean", vec![reading(meter, 0)])
            .await
            .expect("append");
        if !collect(rx, Duration::from_millis(200), |m| {
            !readings_of(m).is_empty()
        })
        .await
        .is_empty()
        {
            return;
        }
    }
    panic!("the followers never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_clients_of_their_meter_or_feeder_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, bus, store) = hub(dir.path(), LiveConfig::default()).await;
    store
        .create_meter(
            &MeterId::new("m-2").expect("id"),
            &MeterFields {
                feeder: Some(Some("F1".into())),
                ..MeterFields::default()
            },
        )
        .await
        .expect("meter");
    let (a, mut rx_a) = hub.join();
    let (b, mut rx_b) = hub.join();
    let answer = subscribe(
        &hub,
        &a,
        r#"{"op":"subscribe","channel":"readings","meters":["m-1"]}"#,
    )
    .await;
    assert_eq!(answer["type"], "subscribed");
    subscribe(
        &hub,
        &b,
        r#"{"op":"subscribe","channel":"readings","feeder":"F1"}"#,
    )
    .await;
    // The feeder map loads in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    await_followers(&bus, &mut rx_a, "m-1").await;
    await_followers(&bus, &mut rx_b, "m-2").await;

    let mut records = Vec::new();
    for i in 1..=60 {
        records.push(reading("m-1", i));
        records.push(reading("m-2", i));
        records.push(reading("m-3", i));
    }
    for chunk in records.chunks(25) {
        bus.append("readings.clean", chunk.to_vec())
            .await
            .expect("append");
    }
    let got_a = readings_of(
        &collect(&mut rx_a, Duration::from_secs(10), |m| {
            readings_of(m).len() >= 60
        })
        .await,
    );
    let got_b = readings_of(
        &collect(&mut rx_b, Duration::from_secs(10), |m| {
            readings_of(m).len() >= 60
        })
        .await,
    );
    let want = |meter: &str| (1..=60).map(|i| (meter.to_owned(), i)).collect::<Vec<_>>();
    assert_eq!(
        got_a,
        want("m-1"),
        "every reading of m-1, in order, and nothing else"
    );
    assert_eq!(got_b, want("m-2"), "the feeder's meter only");

    // Unsubscribing stops the flow; the stats channel reports the rate.
    subscribe(&hub, &a, r#"{"op":"unsubscribe","channel":"readings"}"#).await;
    subscribe(&hub, &a, r#"{"op":"subscribe","channel":"stats"}"#).await;
    bus.append("readings.clean", vec![reading("m-1", 61)])
        .await
        .expect("append");
    let later = collect(&mut rx_a, Duration::from_secs(3), |m| {
        m.iter().any(|m| m["type"] == "stats")
    })
    .await;
    assert!(readings_of(&later).is_empty(), "{later:?}");
    let stats = later.iter().find(|m| m["type"] == "stats").expect("stats");
    assert_eq!(stats["data"]["clients"], 2);
    assert!(stats["data"]["completeness"]["interval_start"].is_string());
    hub.leave(&a).await;
    hub.leave(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_messages_is_told_and_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LiveConfig {
        queue: 16,
        max_behind: Duration::from_millis(300),
        ..LiveConfig::default()
    };
    let (hub, bus, _store) = hub(dir.path(), config).await;
    let (slow, _never_read) = hub.join();
    let (fast, mut rx) = hub.join();
    for c in [&slow, &fast] {
        subscribe(
            &hub,
            c,
            r#"{"op":"subscribe","channel":"readings","meters":["m-1"]}"#,
        )
        .await;
    }
    await_followers(&bus, &mut rx, "m-1").await;
    // Small batches, so the reader keeps up (a batch is routed at once).
    let reader = tokio::spawn(async move {
        let got = collect(&mut rx, Duration::from_secs(10), |m| {
            readings_of(m).len() >= 100
        })
        .await;
        (readings_of(&got).len(), rx)
    });
    for chunk in (1..=100).collect::<Vec<_>>().chunks(5) {
        bus.append(
            "readings.clean",
            chunk.iter().map(|&i| reading("m-1", i)).collect(),
        )
        .await
        .expect("append");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (n, _rx) = reader.await.expect("reader");
    assert_eq!(n, 100, "the reader gets everything");
    let lost = slow.lost.load(Ordering::Relaxed);
    assert!(lost > 50, "the slow client lost what did not fit: {lost}");
    assert!(!slow.kick.is_cancelled(), "not yet behind for max_behind");
    tokio::time::sleep(Duration::from_millis(400)).await;
    bus.append("readings.clean", vec![reading("m-1", 101)])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), slow.kick.cancelled())
        .await
        .expect("still behind after max_behind: disconnected");
    assert!(!fast.kick.is_cancelled());
    // The lagged notice: what the writer sends before the next message.
    let mut pending = Vec::new();
    socket_note(&slow, &mut pending);
    let notice: Value = serde_json::from_str(&pending[0]).expect("JSON");
    assert_eq!(notice["type"], "lagged");
    assert!(notice["dropped"].as_u64() > Some(50));
}

fn socket_note(client: &Arc<Client>, pending: &mut Vec<Arc<str>>) {
    super::socket::note_losses(client, pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_resume_from_a_cursor_then_follow_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, _bus, store) = hub(dir.path(), LiveConfig::default()).await;
    let open = |i: usize| Alert {
        alert_id: format!("a{i}"),
        event: AlertEvent::Opened,
        kind: AlertType::VoltageSwell,
        severity: Severity::Major,
        meter_id: Some(format!("m-{i}")),
        feeder: None,
        start: Utc::now(),
        end: None,
        at: Utc::now(),
        evidence: json!({}),
    };
    for i in 1..=5 {
        store.record_alert(&open(i)).await.expect("alert");
    }
    let (client, mut rx) = hub.join();
    let answer = subscribe(
        &hub,
        &client,
        r#"{"op":"subscribe","channel":"alerts","after":2}"#,
    )
    .await;
    assert_eq!(answer["type"], "subscribed");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 6..=12 {
                store.record_alert(&open(i)).await.expect("alert");
            }
        })
    };
    writer.await.expect("writer");
    let got = collect(&mut rx, Duration::from_secs(10), |m| m.len() >= 10).await;
    let cursors: Vec<i64> = got.iter().filter_map(|m| m["cursor"].as_i64()).collect();
    assert_eq!(cursors, (3..=12).collect::<Vec<_>>(), "{got:?}");
    assert_eq!(got[0]["data"]["type"], "alert.opened");
    assert_eq!(got[0]["data"]["data"]["alert"]["alert_id"], "a3");
    // A client without a cursor starts from now.
    let (late, mut late_rx) = hub.join();
    subscribe(&hub, &late, r#"{"op":"subscribe","channel":"alerts"}"#).await;
    store.acknowledge_alert("a1", "ops").await.expect("ack");
    let got = collect(&mut late_rx, Duration::from_secs(10), |m| !m.is_empty()).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["cursor"], 13);
    assert_eq!(got[0]["data"]["type"], "alert.acknowledged");
}
