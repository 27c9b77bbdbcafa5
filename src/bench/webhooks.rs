//! Publish → webhook latency under load: `meterstack up` on loopback takes `rate` readings/s
//! from simulated meters while a separate client publishes anomalous readings (262 V, a
//! voltage swell) for fresh meters; a receiver in this process, subscribed to
//! `voltage_swell`, notes when each alert's webhook arrives. The latency of one anomaly is
//! from just before its PUBLISH is written to when the webhook request is read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use chrono::{DurationRound, TimeDelta, Utc};
use meterstack_core::mqtt::{self, Connect};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::server::Server;
use super::suite::{load, median, percentile};

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WebhookLatency {
    /// Background readings acknowledged per second.
    pub(crate) readings_per_s: f64,
    /// Anomalies published.
    pub(crate) anomalies: usize,
    /// Of those, webhooks received.
    pub(crate) delivered: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// When each meter's message arrived.
pub(super) type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, body: String) -> &'static str {
    let at = Instant::now();
    if let Ok(v) = serde_json::from_str::<Value>(&body)
        && let Some(meter) = v["data"]["alert"]["meter_id"].as_str()
        && v["type"] == "alert.opened"
    {
        arrivals.lock().await.entry(meter.to_owned()).or_insert(at);
    }
    "ok"
}

/// Connects as meter `meter`, publishes `payload` on its readings topic (QoS 1) and waits for
/// the PUBACK; returns the instant just before the PUBLISH was written.
pub(super) async fn publish_once(
    mqtt_addr: &str,
    meter: &str,
    payload: &str,
) -> anyhow::Result<Instant> {
    let mut stream = tokio::net::TcpStream::connect(mqtt_addr).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(&Connect::new(meter, true, 60).encode())
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    anyhow::ensure!(connack[3] == 0, "CONNACK {connack:?}");
    let mut packet = bytes::BytesMut::new();
    mqtt::put_publish(
        &mut packet,
        &format!("meters/{meter}/readings"),
        Some(1),
        payload.as_bytes(),
    );
    let published = Instant::now();
    stream.write_all(&packet).await?;
    let mut puback = [0u8; 4];
    stream.read_exact(&mut puback).await?;
    Ok(published)
}

/// Publishes `payload` once as each of `meters`, `per_s` a second, and waits (up to 10 s
/// after the last) for each to be noted in `arrivals`; returns how many were published and the
/// sorted latencies, in ms, from just before each PUBLISH was written to its arrival.
pub(super) async fn probe(
    mqtt_addr: &str,
    meters: &[String],
    per_s: u32,
    payload: &str,
    arrivals: &Arrivals,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_s.max(1))));
    let mut pending = tokio::task::JoinSet::new();
    for meter in meters {
        tick.tick().await;
        let (addr, payload, meter) = (mqtt_addr.to_owned(), payload.to_owned(), meter.clone());
        pending.spawn(async move { (meter.clone(), publish_once(&addr, &meter, &payload).await) });
    }
    let mut published = HashMap::new();
    while let Some(done) = pending.join_next().await {
        let (meter, at) = done?;
        published.insert(meter, at?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().await.len() < published.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived = arrivals.lock().await.clone();
    let mut latencies: Vec<f64> = published
        .iter()
        .filter_map(|(meter, sent)| {
            arrived
                .get(meter)
                .map(|got| got.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok((published.len(), latencies))
}

/// One run: `rate` readings/s from `meters` meters for `seconds`, with `per_s` anomalies a
/// second after a 5 s warm-up.
pub(crate) async fn run(
    rate: f64,
    meters: usize,
    seconds: u64,
    per_s: u32,
) -> anyhow::Result<WebhookLatency> {
    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(arrivals.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("METERSTACK__WEBHOOKS__ALLOW", "[\"127.0.0.1/32\"]".into()),
            ("METERSTACK__WEBHOOKS__REMINDERS", "{}".into()),
            ("METERSTACK__WEBHOOKS__PER_SUBSCRIPTION", "16".into()),
        ],
    )
    .await?;
    server
        .post(
            "/api/v1/subscriptions",
            &json!({ "url": hook, "types": ["voltage_swell"], "description": "bench" }),
        )
        .await?;

    // 15-minute readings: `speed` simulated seconds per second gives `rate` readings/s.
    let speed = rate * 900.0 / meters as f64;
    let mqtt_addr = server.mqtt.clone();
    let background =
        tokio::spawn(async move { load(&mqtt_addr, meters, seconds + 10, "wl-", speed).await });
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ts = Utc::now()
        .duration_trunc(TimeDelta::minutes(15))?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let payload = format!(r#"{{"ts":"{ts}","import_wh":1000,"voltage_v":262}}"#);
    let meters: Vec<String> = (0..seconds as usize * per_s as usize)
        .map(|i| format!("lat-{i}"))
        .collect();
    let (published, latencies) = probe(&server.mqtt, &meters, per_s, &payload, &arrivals).await?;
    let (acked, publish_s) = background.await??;
    server.stop().await;
    receiver.abort();
    Ok(WebhookLatency {
        readings_per_s: acked as f64 / publish_s,
        anomalies: published,
        delivered: latencies.len(),
        p50_ms: median(latencies.clone()),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}
