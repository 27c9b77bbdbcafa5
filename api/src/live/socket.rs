//! One WebSocket connection of the live feed.
//!
//! Browsers cannot set `Authorization` on a WebSocket, so the API key may also come as a
//! subprotocol, `bearer.<key>`, next to `meterstack.v1` (the one the server selects, so the key
//! is never echoed); see [`crate::auth`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use meterstack_core::metrics::{LIVE_BAD_MESSAGES, LIVE_DISCONNECTS};
use meterstack_core::store::keys::ApiKey;
use serde_json::json;

use super::{Client, Hub, protocol};
use crate::{ApiError, AppState};

/// The subprotocol the server speaks.
pub(crate) const PROTOCOL: &str = "meterstack.v1";
/// The largest message a client may send.
const MAX_MESSAGE: usize = 64 * 1024;
/// Messages written before one flush.
const BATCH: usize = 64;

/// `GET /api/v1/live`.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    ws: WebSocketUpgrade,
) -> Response {
    let hub = state.live.clone();
    if hub.is_full() {
        metrics::counter!(LIVE_DISCONNECTS, "reason" => "full").increment(1);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            "the live feed has as many clients as http.live.max_clients allows",
        )
        .into_response();
    }
    ws.protocols([PROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move { serve(hub, socket, key).await })
}

/// Why a connection ended.
enum End {
    /// The client closed it, or the network did.
    Closed,
    /// No message, not even a pong, for three heartbeats.
    Silent,
    /// Disconnected for staying behind.
    Slow,
    /// The server is shutting down.
    Shutdown,
}

async fn serve(hub: Hub, socket: WebSocket, key: ApiKey) {
    let (client, mut rx) = hub.join();
    let (mut sink, mut stream) = socket.split();
    let config = hub.config().clone();
    let mut seq = 0u64;
    let welcome = json!({
        "type": "welcome",
        "role": key.role.as_str(),
        "queue": config.queue,
        "heartbeat_s": config.heartbeat.as_secs_f64(),
        "channels": ["readings", "aggregates", "alerts", "stats"],
    });
    let mut pending: Vec<Arc<str>> = vec![Arc::from(welcome.to_string())];
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let end = loop {
        // Write what is due, giving up if the client is kicked meanwhile.
        if !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            let write = async {
                for body in batch {
                    seq += 1;
                    sink.feed(Message::Text(Utf8Bytes::from(protocol::frame(seq, &body))))
                        .await?;
                }
                sink.flush().await
            };
            tokio::select! {
                r = write => if r.is_err() { break End::Closed },
                () = client.kick.cancelled() => break kicked(&hub),
            }
        }
        tokio::select! {
            () = client.kick.cancelled() => break kicked(&hub),
            body = rx.recv() => {
                let Some(body) = body else { break End::Closed };
                note_losses(&client, &mut pending);
                pending.push(body);
                while pending.len() < BATCH {
                    match rx.try_recv() {
                        Ok(body) => pending.push(body),
                        Err(_) => break,
                    }
                }
            }
            message = stream.next() => {
                heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let answer = match protocol::parse(&text, config.max_meters) {
                            Ok(request) => hub.request(&client, request).await,
                            Err(message) => {
                                metrics::counter!(LIVE_BAD_MESSAGES).increment(1);
                                protocol::error("bad_request", &message)
                            }
                        };
                        pending.push(Arc::from(answer.to_string()));
                    }
                    Some(Ok(Message::Binary(_))) => {
                        metrics::counter!(LIVE_BAD_MESSAGES).increment(1);
                        pending.push(Arc::from(protocol::error("bad_request", "send JSON text messages").to_string()));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break End::Closed,
                    Some(Err(e)) => {
                        // Oversized or malformed frames: the connection cannot continue.
                        metrics::counter!(LIVE_BAD_MESSAGES).increment(1);
                        tracing::debug!(error = %e, "live: connection error");
                        break End::Closed;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if heard.elapsed() > config.heartbeat * 3 {
                    break End::Silent;
                }
                let ping = sink.send(Message::Ping(bytes_of(seq)));
                tokio::select! {
                    r = ping => if r.is_err() { break End::Closed },
                    () = client.kick.cancelled() => break kicked(&hub),
                }
            }
        }
    };
    let (reason, close) = match end {
        End::Closed => ("closed", None),
        End::Silent => (
            "silent",
            Some((1001, "no message or pong for three heartbeats")),
        ),
        End::Slow => ("slow", None),
        End::Shutdown => ("shutdown", Some((1001, "the server is shutting down"))),
    };
    if reason != "slow" {
        metrics::counter!(LIVE_DISCONNECTS, "reason" => reason).increment(1);
    }
    if let Some((code, why)) = close {
        // Best effort, bounded: the peer may not be reading.
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(why),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
    }
    hub.leave(&client).await;
}

/// Why `kick` fired: shutdown, or the hub found the client behind (already counted).
fn kicked(hub: &Hub) -> End {
    if hub.inner.shutdown.is_cancelled() {
        End::Shutdown
    } else {
        End::Slow
    }
}

/// Puts a `lagged` message first when the client lost messages since it was last told.
pub(super) fn note_losses(client: &Arc<Client>, pending: &mut Vec<Arc<str>>) {
    let lost = client.lost.swap(0, Ordering::Relaxed);
    if lost > 0 {
        let body = json!({
            "type": "lagged",
            "dropped": lost,
            "message": "this connection read too slowly; messages were dropped",
        });
        pending.push(Arc::from(body.to_string()));
    }
}

fn bytes_of(seq: u64) -> axum::body::Bytes {
    axum::body::Bytes::from(seq.to_be_bytes().to_vec())
}
