//! What the hub follows: `readings.clean` and `aggregates` from their end (a tail of the bus,
//! on the consumer driver), routed to the clients that asked for them; the alert event feed
//! from the SQL store; the meters' feeders from the registry.

use super::*;

/// Adds `list` to `out` without duplicates (a client may match by meter and by feeder).
fn gather<'a>(out: &mut Vec<&'a Arc<Client>>, list: Option<&'a Vec<Arc<Client>>>) {
    for c in list.into_iter().flatten() {
        if !out.iter().any(|o| o.id == c.id) {
            out.push(c);
        }
    }
}

/// The fields of a clean reading the hub routes by.
#[derive(Deserialize)]
struct ReadingHead<'a> {
    #[serde(borrow)]
    meter_id: Cow<'a, str>,
    ts: DateTime<Utc>,
}

/// The fields of an aggregate the hub routes by.
#[derive(Deserialize)]
struct AggregateHead<'a> {
    #[serde(borrow, default)]
    meter_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    feeder: Option<Cow<'a, str>>,
}

/// The body of an alert message.
pub(super) fn alert_body(seq: i64, event: &Value) -> Arc<str> {
    Arc::from(json!({ "type": "alert", "cursor": seq, "data": event }).to_string())
}

pub(super) async fn load_feeders(inner: &Inner) {
    match inner.store.meter_feeders().await {
        Ok(rows) => {
            let map: HashMap<String, String> = rows.into_iter().collect();
            publish(&inner.feeders, map);
        }
        Err(e) => warn!(error = %e, "live: cannot load the meters' feeders"),
    }
}

/// Follows `topic` from its end and routes each record to the clients that want it.
pub(super) async fn follow(
    inner: Arc<Inner>,
    bus: Arc<dyn Bus>,
    topic: String,
    kind: Channel,
    stop: CancellationToken,
) {
    let mut backoff =
        meterstack_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut sub = loop {
        let tailed = tokio::select! {
            () = stop.cancelled() => return,
            r = bus.tail(&topic) => r,
        };
        match tailed {
            Ok(sub) => break sub,
            Err(e) => {
                warn!(error = %e, topic, "live: cannot follow the topic; retrying");
                if !backoff.wait(&stop).await {
                    return;
                }
            }
        }
    };
    let options = ConsumerOptions {
        retry_initial: Duration::from_millis(200),
        ..ConsumerOptions::new(topic)
    };
    consume(sub.as_mut(), &mut Router { inner, kind }, &options, &stop).await;
}

/// The live feed as a consumer of a tail: routes records to clients; nothing to make durable.
struct Router {
    inner: Arc<Inner>,
    kind: Channel,
}

impl Handler for Router {
    type Error = std::convert::Infallible;

    fn handle(&mut self, batch: Vec<Delivery>) {
        match self.kind {
            Channel::Readings => route_readings(&self.inner, &batch),
            _ => route_aggregates(&self.inner, &batch),
        }
    }

    async fn flush(&mut self, _last: bool) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn route_readings(inner: &Inner, batch: &[Delivery]) {
    if batch.is_empty() {
        return;
    }
    let index = snapshot(&inner.index);
    let feeders = snapshot(&inner.feeders);
    let step = inner.interval.as_micros() as i64;
    let recent = Utc::now().timestamp_micros() - 2 * step;
    let mut sent = 0u64;
    let mut targets = Vec::new();
    let mut heard = Vec::new();
    for d in batch {
        let Ok(head) = serde_json::from_slice::<ReadingHead<'_>>(&d.record.value) else {
            // Our own pipeline's output: not expected, but never forwarded broken.
            warn!(
                offset = d.offset,
                "live: a record on readings.clean is not a reading"
            );
            continue;
        };
        let ts = head.ts.timestamp_micros();
        if ts >= recent {
            heard.push((ts - ts.rem_euclid(step), head.meter_id.to_string()));
        }
        targets.clear();
        gather(
            &mut targets,
            index.readings_by_meter.get(head.meter_id.as_ref()),
        );
        if let Some(f) = feeders.get(head.meter_id.as_ref()) {
            gather(&mut targets, index.readings_by_feeder.get(f));
        }
        if targets.is_empty() {
            continue;
        }
        sent += deliver(inner, &targets, "reading", &d.record.value);
    }
    inner
        .readings_seen
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    if !heard.is_empty() {
        let mut h = lock(&inner.heard);
        for (start, meter) in heard {
            h.entry(start).or_default().insert(meter);
        }
    }
    metrics::counter!(LIVE_MESSAGES, "channel" => "readings").increment(sent);
}

fn route_aggregates(inner: &Inner, batch: &[Delivery]) {
    let index = snapshot(&inner.index);
    let feeders = snapshot(&inner.feeders);
    let mut sent = 0u64;
    let mut targets = Vec::new();
    for d in batch {
        let Ok(head) = serde_json::from_slice::<AggregateHead<'_>>(&d.record.value) else {
            warn!(
                offset = d.offset,
                "live: a record on aggregates is not an aggregate"
            );
            continue;
        };
        targets.clear();
        gather(&mut targets, Some(&index.aggregates_all));
        if let Some(m) = &head.meter_id {
            gather(&mut targets, index.aggregates_by_meter.get(m.as_ref()));
        }
        let feeder = head.feeder.as_deref().or_else(|| {
            head.meter_id
                .as_deref()
                .and_then(|m| feeders.get(m))
                .map(String::as_str)
        });
        if let Some(f) = feeder {
            gather(&mut targets, index.aggregates_by_feeder.get(f));
        }
        if targets.is_empty() {
            continue;
        }
        sent += deliver(inner, &targets, "aggregate", &d.record.value);
    }
    metrics::counter!(LIVE_MESSAGES, "channel" => "aggregates").increment(sent);
}

/// Offers `{"type":kind,"data":<record>}` to `targets`; returns how many took it.
fn deliver(inner: &Inner, targets: &[&Arc<Client>], kind: &str, data: &[u8]) -> u64 {
    let body = body(kind, data);
    targets
        .iter()
        .map(|c| u64::from(c.offer(&body, inner)))
        .sum()
}

/// `{"type":…,"data":<record>}`, the record's JSON as it is on the bus.
fn body(kind: &str, data: &[u8]) -> Arc<str> {
    let data = String::from_utf8_lossy(data);
    let mut s = String::with_capacity(data.len() + kind.len() + 20);
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push_str("\",\"data\":");
    s.push_str(&data);
    s.push('}');
    Arc::from(s)
}

/// Follows the store's alert event feed and hands each event to the alert subscribers.
pub(super) async fn follow_alerts(inner: Arc<Inner>, stop: CancellationToken) {
    const RECHECK: Duration = Duration::from_millis(250);
    loop {
        let cursor = {
            let mut feed = inner.alerts.lock().await;
            match feed.cursor {
                Some(c) => c,
                None => match inner.store.last_event_seq().await {
                    Ok(c) => *feed.cursor.insert(c),
                    Err(e) => {
                        drop(feed);
                        warn!(error = %e, "live: cannot read the alert feed; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            }
        };
        let page = tokio::select! {
            () = stop.cancelled() => return,
            p = inner.store.wait_events(cursor, 500, Duration::from_secs(10), RECHECK) => p,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "live: cannot read the alert feed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if page.events.is_empty() {
            continue;
        }
        let mut feed = inner.alerts.lock().await;
        let head = feed.cursor.unwrap_or(cursor);
        for event in &page.events {
            let seq = event["data"]["seq"].as_i64().unwrap_or_default();
            if seq <= head {
                continue;
            }
            let body = alert_body(seq, event);
            for c in &feed.subscribers {
                c.offer(&body, &inner);
            }
            metrics::counter!(LIVE_MESSAGES, "channel" => "alerts")
                .increment(feed.subscribers.len() as u64);
        }
        feed.cursor = Some(page.next.max(head));
    }
}
