//! The MQTT driver: one task and one MQTT 3.1.1 connection per meter.
//!
//! Each task ticks its [`Meter`] on the run's clock and sends what is due as QoS 1 PUBLISHes
//! (one reading per message; a backlog after a reconnect as arrays). A message stays in the
//! meter's in-flight set until its PUBACK arrives; when the connection is lost, everything in
//! flight goes back to the meter's queue and is sent again after the reconnect, so the broker
//! gets at least once what it never acknowledged. The task also subscribes to
//! `meters/{id}/commands` and answers resend requests from the meter's buffer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::mqtt::{self, Connect, kind};
use meterstack_core::wire::command::{Command, CommandMessage};
use meterstack_core::wire::{commands_topic, encode, readings_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::faults::Label;
use crate::load::{Site, TickContext, Weather};
use crate::meter::{Meter, Sample};

/// Readings per message when a meter sends a backlog (about 80 KB of JSON, under the
/// decoder's default payload limit of 128 KiB).
pub const MAX_READINGS_PER_MESSAGE: usize = 500;

/// What a simulation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Intervals simulated (by the slowest meter).
    pub intervals: u64,
    /// Readings published, counting those sent again.
    pub published: u64,
    /// Readings the broker acknowledged (PUBACK), counting those sent again.
    pub acked: u64,
    /// Readings that were never acknowledged when the run ended.
    pub unacked: u64,
    /// Connections opened, including reconnects.
    pub connects: u64,
    /// Resend commands answered, and the readings sent for them.
    pub resend_commands: u64,
    /// Readings sent again because of resend commands.
    pub resent_readings: u64,
    /// Fault labels written.
    pub labels: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    unacked: AtomicU64,
    connects: AtomicU64,
    resend_commands: AtomicU64,
    resent_readings: AtomicU64,
    min_intervals: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SimStats {
        SimStats {
            intervals: self.min_intervals.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            unacked: self.unacked.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            resend_commands: self.resend_commands.load(Ordering::Relaxed),
            resent_readings: self.resent_readings.load(Ordering::Relaxed),
            labels: 0,
        }
    }
}

/// The run's clock: when (in real time) each tick happens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) start: DateTime<Utc>,
    pub(crate) dt: TimeDelta,
    pub(crate) speed: f64,
    pub(crate) real0: Instant,
    pub(crate) wall0: DateTime<Utc>,
}

impl Clock {
    fn sim_time(&self, k: u64) -> DateTime<Utc> {
        self.start + self.dt * i32::try_from(k).unwrap_or(i32::MAX)
    }

    /// When tick `k` happens: `speed` times faster than real time, but never before the wall
    /// clock reaches the reading's timestamp.
    fn real_instant(&self, k: u64) -> Instant {
        let sim_t = self.sim_time(k);
        let by_speed = self.real0
            + (sim_t - self.start)
                .to_std()
                .unwrap_or_default()
                .div_f64(self.speed);
        let by_wall = self.real0 + (sim_t - self.wall0).to_std().unwrap_or_default();
        by_speed.max(by_wall)
    }
}

/// Everything a meter task needs besides its meter.
#[derive(Debug, Clone)]
pub(crate) struct TaskEnv {
    pub(crate) addr: String,
    pub(crate) clock: Clock,
    pub(crate) intervals: Option<u64>,
    pub(crate) site: Site,
    pub(crate) weather: Weather,
    pub(crate) inflight: usize,
    pub(crate) keep_alive: u16,
    pub(crate) counters: Arc<Counters>,
    pub(crate) labels: Option<mpsc::UnboundedSender<Label>>,
    pub(crate) credentials: Option<Arc<HashMap<String, String>>>,
}

/// One open MQTT connection of a meter.
struct Link {
    stream: TcpStream,
    rx: BytesMut,
    inflight: HashMap<u16, Vec<Sample>>,
    next_id: u16,
    last_sent: Instant,
}

impl Link {
    fn packet_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }
}

/// Runs one meter until the run ends or `stop` is cancelled.
pub(crate) async fn meter_task(mut meter: Meter, env: TaskEnv, stop: CancellationToken) {
    let id = meter.spec.id.clone();
    let topic = readings_topic(&id);
    let mut link: Option<Link> = None;
    let mut retry_at = Instant::now();
    let mut warned = false;
    let mut k: u64 = 0;
    let dt = env.clock.dt;
    loop {
        if env.intervals.is_some_and(|n| k >= n) || stop.is_cancelled() {
            break;
        }
        let due_at = env.clock.real_instant(k);
        // Serve the connection (acknowledgements, commands, keep-alive) until the tick.
        loop {
            let ping_at = link
                .as_ref()
                .map(|l| l.last_sent + Duration::from_secs(u64::from(env.keep_alive) / 2));
            let wake = ping_at.map_or(due_at, |p| p.min(due_at));
            let read = async {
                match link.as_mut() {
                    Some(l) => l.stream.read_buf(&mut l.rx).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {
                    if wake >= due_at {
                        break;
                    }
                    if let Some(l) = link.as_mut()
                        && l.stream.write_all(&mqtt::PINGREQ).await.is_ok()
                    {
                        l.last_sent = Instant::now();
                    }
                }
                n = read => {
                    let ok = matches!(n, Ok(n) if n > 0) && serve(&mut link, &mut meter, &env);
                    // A resend request is answered at once, not at the next tick.
                    let resent = meter.take_due(i64::MIN);
                    if !ok || !send(&mut link, &mut meter, &env, &topic, resent).await {
                        drop_link(&mut link, &mut meter);
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let ctx = TickContext::new(env.clock.sim_time(k), dt, &env.site, &env.weather);
        let tick = meter.tick(&ctx);
        k += 1;
        env.counters.min_intervals.fetch_max(k, Ordering::Relaxed);
        if let Some(tx) = &env.labels {
            for label in tick.labels {
                let _ = tx.send(label);
            }
        }
        if !tick.online {
            if link.is_some() {
                // Power or link lost: the connection just ends, without a DISCONNECT.
                drop_link(&mut link, &mut meter);
            }
            continue;
        }
        if link.is_none() && Instant::now() >= retry_at {
            match connect(&env, &id).await {
                Ok(l) => {
                    env.counters.connects.fetch_add(1, Ordering::Relaxed);
                    link = Some(l);
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        warn!(meter_id = %id, error = %e, "MQTT connection failed; the meter buffers and retries every second");
                        warned = true;
                    }
                    retry_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        // `due` starts with anything put back before (a backlog, a resend).
        if !send(&mut link, &mut meter, &env, &topic, tick.due).await {
            drop_link(&mut link, &mut meter);
        }
    }
    // The run is over: send what is still queued and wait for acknowledgements.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rest = meter.drain();
    if link.is_none() && !rest.is_empty() {
        link = connect(&env, &id).await.ok();
    }
    if !send(&mut link, &mut meter, &env, &topic, rest).await {
        drop_link(&mut link, &mut meter);
    }
    while link.as_ref().is_some_and(|l| !l.inflight.is_empty()) && Instant::now() < deadline {
        let Some(l) = link.as_mut() else { break };
        match tokio::time::timeout_at(deadline, l.stream.read_buf(&mut l.rx)).await {
            Ok(Ok(n)) if n > 0 => {
                if !serve(&mut link, &mut meter, &env) {
                    drop_link(&mut link, &mut meter);
                }
            }
            _ => drop_link(&mut link, &mut meter),
        }
    }
    if let Some(mut l) = link.take() {
        let _ = l.stream.write_all(&mqtt::DISCONNECT).await;
        let _ = l.stream.shutdown().await;
        let left: usize = l.inflight.values().map(Vec::len).sum();
        env.counters
            .unacked
            .fetch_add(left as u64, Ordering::Relaxed);
    }
    let left = meter.drain().len();
    env.counters
        .unacked
        .fetch_add(left as u64, Ordering::Relaxed);
}

/// Ends the connection; what it had in flight goes back to the meter's queue.
fn drop_link(link: &mut Option<Link>, meter: &mut Meter) {
    if let Some(l) = link.take() {
        let mut samples: Vec<Sample> = l.inflight.into_values().flatten().collect();
        samples.sort_by_key(|s| s.ts_us);
        meter.requeue(samples);
    }
}

/// Handles the complete packets received so far. `false`: the connection is unusable.
fn serve(link: &mut Option<Link>, meter: &mut Meter, env: &TaskEnv) -> bool {
    let Some(l) = link.as_mut() else { return true };
    loop {
        let frame = match mqtt::frame(&l.rx, 1 << 20) {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let packet = l.rx.split_to(frame.len);
        match frame.kind {
            kind::PUBACK => {
                if let Ok(id) = mqtt::leading_u16(&packet, frame)
                    && let Some(samples) = l.inflight.remove(&id)
                {
                    env.counters
                        .acked
                        .fetch_add(samples.len() as u64, Ordering::Relaxed);
                }
            }
            kind::PUBLISH => {
                let Ok(publish) = mqtt::parse_publish(&packet, frame) else {
                    return false;
                };
                if let Ok(message) = serde_json::from_slice::<CommandMessage>(publish.payload) {
                    if let Command::Resend { from, to } = message.command {
                        let n = meter.resend(from, to);
                        env.counters.resend_commands.fetch_add(1, Ordering::Relaxed);
                        env.counters
                            .resent_readings
                            .fetch_add(n as u64, Ordering::Relaxed);
                        debug!(meter_id = %meter.spec.id, %from, %to, readings = n, "resend requested");
                    }
                } else {
                    debug!(meter_id = %meter.spec.id, "ignored a command it does not understand");
                }
                // Commands arrive at QoS 0; a QoS 1 one is acknowledged all the same.
                if let Some(id) = publish.packet_id {
                    let ack = mqtt::puback(id);
                    if l.stream.try_write(&ack).is_err() {
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends `samples` (one per message, or arrays when there are several), keeping at most
/// `env.inflight` messages unacknowledged. `false`: the connection failed (what was not
/// sent is back in the meter's queue).
async fn send(
    link: &mut Option<Link>,
    meter: &mut Meter,
    env: &TaskEnv,
    topic: &str,
    samples: Vec<Sample>,
) -> bool {
    if samples.is_empty() {
        return true;
    }
    let Some(_) = link.as_ref() else {
        meter.requeue(samples);
        return true;
    };
    let chunk = if samples.len() == 1 {
        1
    } else {
        MAX_READINGS_PER_MESSAGE
    };
    let mut pending: std::collections::VecDeque<Vec<Sample>> =
        samples.chunks(chunk).map(<[Sample]>::to_vec).collect();
    while let Some(batch) = pending.pop_front() {
        // Flow control: wait for acknowledgements while the window is full.
        while let Some(l) = link.as_mut()
            && l.inflight.len() >= env.inflight.max(1)
        {
            let read =
                tokio::time::timeout(Duration::from_secs(30), l.stream.read_buf(&mut l.rx)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) || !serve(link, meter, env) {
                meter.requeue(batch.into_iter().chain(pending.into_iter().flatten()));
                return false;
            }
        }
        let Some(l) = link.as_mut() else { break };
        let readings: Vec<_> = batch.iter().map(|s| s.reading(&meter.spec.id)).collect();
        let payload = if readings.len() == 1 {
            serde_json::to_vec(&readings[0]).unwrap_or_default()
        } else {
            encode(&readings)
        };
        let id = l.packet_id();
        let mut out = BytesMut::new();
        mqtt::put_publish(&mut out, topic, Some(id), &payload);
        let n = batch.len() as u64;
        l.inflight.insert(id, batch);
        if l.stream.write_all(&out).await.is_err() {
            meter.requeue(pending.into_iter().flatten());
            return false;
        }
        l.last_sent = Instant::now();
        env.counters.published.fetch_add(n, Ordering::Relaxed);
    }
    true
}

/// Opens the meter's connection: CONNECT (with its secret, if it has one), CONNACK, and a
/// subscription to its command topic.
async fn connect(env: &TaskEnv, id: &meterstack_core::MeterId) -> std::io::Result<Link> {
    use std::io::{Error, ErrorKind};
    let timeout = Duration::from_secs(10);
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(&env.addr))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let mut connect = Connect::new(id.as_str(), true, env.keep_alive);
    if let Some(secret) = env.credentials.as_ref().and_then(|c| c.get(id.as_str())) {
        connect.username = Some(id.to_string());
        connect.password = Some(secret.clone().into_bytes());
    }
    let mut out = connect.encode();
    out.extend_from_slice(&mqtt::subscribe(1, &commands_topic(id), 0));
    stream.write_all(&out).await?;
    let mut rx = BytesMut::with_capacity(256);
    let connack = tokio::time::timeout(timeout, async {
        loop {
            if let Some(f) =
                mqtt::frame(&rx, 1 << 16).map_err(|e| Error::new(ErrorKind::InvalidData, e))?
            {
                return Ok::<_, Error>((f, rx.split_to(f.len)));
            }
            if stream.read_buf(&mut rx).await? == 0 {
                return Err(Error::new(
                    ErrorKind::ConnectionReset,
                    "closed before CONNACK",
                ));
            }
        }
    })
    .await
    .map_err(|_| Error::new(ErrorKind::TimedOut, "no CONNACK"))??;
    let (frame, packet) = connack;
    let code = mqtt::leading_u16(&packet, frame)
        .map(|c| c & 0xff)
        .unwrap_or(u16::MAX);
    if frame.kind != kind::CONNACK || code != u16::from(mqtt::connack::ACCEPTED) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("CONNACK refused the meter (code {code})"),
        ));
    }
    Ok(Link {
        stream,
        rx,
        inflight: HashMap::new(),
        next_id: 1,
        last_sent: Instant::now(),
    })
}

/// Writes labels as JSON lines until the channel closes; returns how many.
pub(crate) async fn write_labels(
    path: std::path::PathBuf,
    mut rx: mpsc::UnboundedReceiver<Label>,
) -> std::io::Result<u64> {
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(&path).await?);
    let mut n = 0;
    while let Some(label) = rx.recv().await {
        let mut line = serde_json::to_vec(&label).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line).await?;
        n += 1;
        if rx.is_empty() {
            file.flush().await?;
        }
    }
    file.flush().await?;
    info!(labels = n, path = %path.display(), "labels written");
    Ok(n)
}
