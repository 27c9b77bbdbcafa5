//! The live feed under load: `meterstack up` on loopback, simulated meters, and WebSocket
//! clients of `/api/v1/live` in this process.
//!
//! - Ingestion with clients: readings acknowledged per second with the meters publishing as
//!   fast as they can, with no live client, then with `clients` connected: all but one read,
//!   each subscribed to fleet statistics, alerts and one meter; the last subscribes to every
//!   simulated meter and never reads (its queue fills, it loses messages, it is disconnected).
//! - Publish → WebSocket: with the same clients connected and `rate` readings/s from the
//!   simulated meters, a probe client subscribes to fresh meters; each probe reading is timed
//!   from just before its PUBLISH is written to when its message arrives on the probe's socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::server::Server;
use super::suite::{load, median, percentile};
use super::webhooks::{Arrivals, probe};

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LiveFigures {
    /// Readings acknowledged per second, meters as fast as they can, no client.
    pub(crate) ingest_no_clients: f64,
    /// The same, with the clients connected.
    pub(crate) ingest_with_clients: f64,
    /// Clients connected (one never reads).
    pub(crate) clients: usize,
    /// Messages the server dropped for slow clients, and slow clients it disconnected.
    pub(crate) dropped: f64,
    pub(crate) slow_disconnects: f64,
    /// Background readings/s during the latency run.
    pub(crate) readings_per_s: f64,
    pub(crate) probes: usize,
    pub(crate) received: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the live feed and subscribes with `requests`, waiting for each answer.
async fn client(server: &Server, requests: &[Value]) -> anyhow::Result<Socket> {
    let url = format!(
        "{}/api/v1/live",
        server.http.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {}", server.key()).parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    for r in requests {
        ws.send(Message::text(r.to_string())).await?;
    }
    let mut answered = 0;
    while answered < requests.len() {
        let Some(m) = ws.next().await else {
            anyhow::bail!("the live feed closed the connection")
        };
        if let Message::Text(t) = m? {
            let v: Value = serde_json::from_str(&t)?;
            match v["type"].as_str() {
                Some("subscribed") => answered += 1,
                Some("error") => anyhow::bail!("live feed: {v}"),
                _ => {}
            }
        }
    }
    Ok(ws)
}

/// The simulated fleet's meter ids (as `load` names them).
fn fleet_ids(meters: usize, prefix: &str) -> anyhow::Result<Vec<String>> {
    let fleet = meterstack_sim::build_fleet(
        &meterstack_sim::FleetConfig {
            meters,
            id_prefix: prefix.into(),
            ..meterstack_sim::FleetConfig::default()
        },
        &meterstack_sim::RunShape {
            start: Utc::now(),
            dt: TimeDelta::minutes(15),
            horizon: None,
            seed: 0,
            faults: Arc::new(meterstack_sim::FaultConfig::none()),
            buffer: 0,
        },
    )
    .map_err(anyhow::Error::msg)?;
    Ok(fleet.into_iter().map(|m| m.id.to_string()).collect())
}

/// Connects `n` clients: `n - 1` readers (each drains its socket in a task) and one that
/// never reads; returns the never-reading one and the reader tasks.
async fn crowd(
    server: &Server,
    n: usize,
    ids: &[String],
) -> anyhow::Result<(Option<Socket>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut readers = Vec::new();
    for i in 0..n.saturating_sub(1) {
        let meter = &ids[i % ids.len()];
        let mut ws = client(
            server,
            &[
                json!({"op": "subscribe", "channel": "stats"}),
                json!({"op": "subscribe", "channel": "alerts"}),
                json!({"op": "subscribe", "channel": "readings", "meters": [meter]}),
            ],
        )
        .await?;
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    let never_reads = if n > 0 {
        Some(
            client(
                server,
                &[json!({"op": "subscribe", "channel": "readings", "meters": ids})],
            )
            .await?,
        )
    } else {
        None
    };
    Ok((never_reads, readers))
}

/// Readings acknowledged per second from `meters` meters as fast as they can, for `seconds`,
/// with `clients` live clients connected.
async fn ingest(meters: usize, seconds: u64, clients: usize) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &env(meters)).await?;
    let ids = fleet_ids(meters, "li-")?;
    let (slow, readers) = crowd(&server, clients, &ids).await?;
    let (acked, publish_s) = load(&server.mqtt, meters, seconds, "li-", f64::INFINITY).await?;
    let dropped = server.metric("meterstack_live_dropped_total").await?;
    let slow_disconnects = server
        .metric("meterstack_live_disconnects_total{reason=\"slow\"}")
        .await?;
    drop(slow);
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    server.stop().await;
    Ok((acked as f64 / publish_s, dropped, slow_disconnects))
}

fn env(meters: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "METERSTACK__MQTT__MAX_CONNECTIONS",
            (meters + 1000).to_string(),
        ),
        ("METERSTACK__MQTT__LIMITS__PUBLISH_RATE", "1000000".into()),
        ("METERSTACK__MQTT__LIMITS__PUBLISH_BURST", "1000000".into()),
    ]
}

/// One run: ingestion without and with `clients`, then publish → WebSocket latency at `rate`
/// readings/s from `meters` meters for `seconds`, with `per_s` probes a second.
pub(crate) async fn run(
    rate: f64,
    meters: usize,
    seconds: u64,
    clients: usize,
    per_s: u32,
) -> anyhow::Result<LiveFigures> {
    let (ingest_no_clients, _, _) = ingest(meters, seconds, 0).await?;
    let (ingest_with_clients, dropped, slow_disconnects) = ingest(meters, seconds, clients).await?;

    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &env(meters)).await?;
    let ids = fleet_ids(meters, "ll-")?;
    let (slow, readers) = crowd(&server, clients, &ids).await?;
    let probes: Vec<String> = (0..(seconds as usize * per_s as usize).min(1000))
        .map(|i| format!("probe-{i}"))
        .collect();
    let mut watcher = client(
        &server,
        &[json!({"op": "subscribe", "channel": "readings", "meters": probes})],
    )
    .await?;
    let arrivals: Arrivals = Arc::default();
    let receiver = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = watcher.next().await {
                let at = Instant::now();
                if let Message::Text(t) = m
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && let Some(meter) = v["data"]["meter_id"].as_str()
                {
                    arrivals.lock().await.entry(meter.to_owned()).or_insert(at);
                }
            }
        })
    };
    // 15-minute readings: `speed` simulated seconds per second gives `rate` readings/s.
    let speed = rate * 900.0 / meters as f64;
    let mqtt = server.mqtt.clone();
    let background =
        tokio::spawn(async move { load(&mqtt, meters, seconds + 10, "ll-", speed).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ts = Utc::now()
        .duration_trunc(TimeDelta::minutes(15))?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let payload = format!(r#"{{"ts":"{ts}","import_wh":1000,"power_w":500,"voltage_v":231}}"#);
    let (published, latencies) = probe(&server.mqtt, &probes, per_s, &payload, &arrivals).await?;
    let (acked, publish_s) = background.await??;
    receiver.abort();
    drop(slow);
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    server.stop().await;
    Ok(LiveFigures {
        ingest_no_clients,
        ingest_with_clients,
        clients,
        dropped,
        slow_disconnects,
        readings_per_s: acked as f64 / publish_s,
        probes: published,
        received: latencies.len(),
        p50_ms: median(latencies.clone()),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}
