//! The raw-zone sink: `readings.raw` → decode → Parquet in `raw/readings/` and `raw/rejected/`.
//!
//! Every message is decoded with [`meterstack_core::wire::Decoder`]. Good readings are
//! buffered per reading hour, rejects (whole messages or single readings of an array) per
//! receive hour, and written as one Parquet file per hour partition (rows sorted by meter and
//! time) every `flush_interval` or when the buffer holds `max_buffer_bytes` (Firehose's
//! buffering hints: 5 s / 64 MiB by default). The sink commits its bus position only after every file of a flush is
//! stored, so nothing it consumed is lost if it stops: a failed write is retried with the same
//! object path (idempotent), and a graceful shutdown drains the topic and flushes before
//! returning.

mod config;

pub use config::RawSinkConfig;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryArray, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use meterstack_core::backoff::Backoff;
use meterstack_core::bus::{Bus, Delivery, Subscription, headers};
use meterstack_core::metrics::{
    BUS_ERRORS, LAKE_FILES_WRITTEN, LAKE_WRITE_ERRORS, READINGS_ACCEPTED, READINGS_REJECTED,
    READINGS_WRITTEN, REJECTS_WRITTEN,
};
use meterstack_core::reading::{self, Reading};
use meterstack_core::wire::{DecodeConfig, Decoder};
use object_store::ObjectStore;
use object_store::path::Path;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Result;
use crate::paths::Table;
use crate::sink::{encode_parquet, put};

/// Consumer group of the raw sink on `readings.raw`.
pub const GROUP: &str = "lake-raw-sink";

impl RawSinkConfig {
    /// Joins the sink's consumer group on `topic` and returns the sink, ready to run.
    pub async fn build(
        &self,
        decode: &DecodeConfig,
        bus: &dyn Bus,
        topic: &str,
        store: Arc<dyn ObjectStore>,
    ) -> Result<RawSink> {
        Ok(RawSink {
            config: self.clone(),
            decoder: Decoder::new(decode.clone()),
            subscription: bus.subscribe(topic, GROUP).await?,
            store,
            buffer: Buffer::default(),
        })
    }
}

/// A batch of the `raw_readings` table: `readings` and when each was received (µs).
pub fn raw_readings_batch(readings: &[Reading], received_at_us: Vec<i64>) -> Result<RecordBatch> {
    let mut columns = reading::to_columns(readings);
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(received_at_us).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(Table::RawReadings.schema(), columns)?)
}

/// The running sink; see the module docs.
#[derive(Debug)]
pub struct RawSink {
    config: RawSinkConfig,
    decoder: Decoder,
    subscription: Box<dyn Subscription>,
    store: Arc<dyn ObjectStore>,
    buffer: Buffer,
}

/// Buffered rows by hour partition (the hour's start, µs).
#[derive(Debug, Default)]
struct Buffer {
    readings: BTreeMap<i64, ReadingRows>,
    rejects: BTreeMap<i64, Vec<RejectRow>>,
    /// Estimated in-memory size of the rows, bytes.
    bytes: usize,
}

const HOUR_US: i64 = 3_600_000_000;

/// The start (µs) of the hour partition `t` falls in.
pub fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros().div_euclid(HOUR_US) * HOUR_US
}

/// Estimated bytes a buffered reading takes.
fn reading_bytes(r: &Reading) -> usize {
    std::mem::size_of::<Reading>() + 8 + r.meter_id.as_str().len()
}

#[derive(Debug, Default)]
struct ReadingRows {
    readings: Vec<Reading>,
    received_at: Vec<i64>,
}

#[derive(Debug)]
struct RejectRow {
    received_at: i64,
    source_topic: String,
    meter_id: Option<String>,
    reason: &'static str,
    detail: String,
    index: Option<u32>,
    payload: Bytes,
    payload_bytes: u64,
}

/// One Parquet file of a flush, encoded and named before the first write attempt so that a
/// retry writes the same object.
struct PendingFile {
    table: Table,
    path: Path,
    bytes: Bytes,
    rows: usize,
}

impl RawSink {
    /// Consumes until `shutdown` is cancelled, then drains what the bus still holds, flushes
    /// and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let mut last_flush = Instant::now();
        loop {
            let draining = shutdown.is_cancelled();
            let wait = if draining {
                Duration::from_millis(50)
            } else {
                self.config
                    .flush_interval
                    .saturating_sub(last_flush.elapsed())
                    .clamp(Duration::from_millis(1), Duration::from_millis(250))
            };
            let deliveries = match self.subscription.poll(self.config.poll_max, wait).await {
                Ok(d) => d,
                Err(e) => {
                    // A bus hiccup (a Kafka rebalance, a broker restart): nothing was taken,
                    // so try again after a pause.
                    metrics::counter!(BUS_ERRORS, "op" => "poll").increment(1);
                    warn!(error = %e, "bus poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let caught_up = deliveries.is_empty();
            for delivery in deliveries {
                self.ingest(delivery);
            }
            if self.buffer.bytes >= self.config.max_buffer_bytes
                || last_flush.elapsed() >= self.config.flush_interval
                || (draining && caught_up)
            {
                self.flush().await?;
                last_flush = Instant::now();
            }
            if draining && caught_up {
                info!("raw sink drained and flushed");
                return Ok(());
            }
        }
    }

    fn ingest(&mut self, delivery: Delivery) {
        let record = delivery.record;
        let topic = record.header(headers::SOURCE_TOPIC).unwrap_or_default();
        let received_at = record.timestamp;
        let decoded = self.decoder.decode(topic, &record.value, received_at);
        metrics::counter!(READINGS_ACCEPTED).increment(decoded.readings.len() as u64);
        for reading in decoded.readings {
            self.buffer.bytes += reading_bytes(&reading);
            let rows = self.buffer.readings.entry(hour_of(reading.ts)).or_default();
            rows.readings.push(reading);
            rows.received_at.push(received_at.timestamp_micros());
        }
        for rejection in decoded.rejections {
            let code = rejection.reason.code();
            metrics::counter!(READINGS_REJECTED, "reason" => code).increment(1);
            debug!(topic, reason = code, detail = %rejection.detail, "reading rejected");
            let keep = record
                .value
                .len()
                .min(self.config.rejected_payload_max_bytes);
            self.buffer.bytes +=
                std::mem::size_of::<RejectRow>() + keep + rejection.detail.len() + topic.len();
            self.buffer
                .rejects
                .entry(hour_of(received_at))
                .or_default()
                .push(RejectRow {
                    received_at: received_at.timestamp_micros(),
                    source_topic: topic.to_owned(),
                    meter_id: decoded.meter_id.as_ref().map(|id| id.as_str().to_owned()),
                    reason: code,
                    detail: rejection.detail,
                    index: rejection
                        .index
                        .map(|i| u32::try_from(i).unwrap_or(u32::MAX)),
                    payload: record.value.slice(..keep),
                    payload_bytes: record.value.len() as u64,
                });
        }
    }

    /// Writes every buffered row, then commits the bus position.
    async fn flush(&mut self) -> Result<()> {
        let files = self.encode()?;
        for file in &files {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            while let Err(e) = put(&self.store, &file.path, file.bytes.clone()).await {
                metrics::counter!(LAKE_WRITE_ERRORS, "zone" => file.table.zone()).increment(1);
                warn!(path = %file.path, error = %e, retry_in_ms = backoff.next_delay().as_millis() as u64, "lake write failed; retrying");
                backoff.wait().await;
            }
            metrics::counter!(LAKE_FILES_WRITTEN, "zone" => file.table.zone(), "table" => file.table.name())
                .increment(1);
            let counter = match file.table {
                Table::RawReadings => {
                    metrics::counter!(READINGS_WRITTEN, "zone" => file.table.zone())
                }
                _ => metrics::counter!(REJECTS_WRITTEN),
            };
            counter.increment(file.rows as u64);
            debug!(path = %file.path, rows = file.rows, "lake file written");
        }
        // The files are stored: keep trying to commit, or they would be written again.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        while let Err(e) = self.subscription.commit().await {
            metrics::counter!(BUS_ERRORS, "op" => "commit").increment(1);
            warn!(error = %e, retry_in_ms = backoff.next_delay().as_millis() as u64, "bus commit failed; retrying");
            backoff.wait().await;
        }
        Ok(())
    }

    /// Turns the buffer into named Parquet files and empties it.
    fn encode(&mut self) -> Result<Vec<PendingFile>> {
        let buffer = std::mem::take(&mut self.buffer);
        let mut files = Vec::new();
        let at = |hour: i64| DateTime::from_timestamp_micros(hour).unwrap_or_default();
        for (hour, rows) in buffer.readings {
            let n = rows.readings.len();
            files.push(PendingFile {
                table: Table::RawReadings,
                path: Table::RawReadings.new_file(at(hour)),
                bytes: encode_raw_readings(rows.readings, rows.received_at)?,
                rows: n,
            });
        }
        for (hour, rows) in buffer.rejects {
            let batch = rejects_batch(&rows)?;
            files.push(PendingFile {
                table: Table::RejectedReadings,
                path: Table::RejectedReadings.new_file(at(hour)),
                bytes: encode_parquet(&batch, Table::RejectedReadings)?,
                rows: rows.len(),
            });
        }
        Ok(files)
    }
}

/// One raw-zone Parquet file of `readings` received at `received_at` (µs), rows sorted by
/// meter, time and receive time so that row-group and page statistics prune by meter. The
/// sink, compaction and `meterstack backfill` all write raw files through this.
pub fn encode_raw_readings(readings: Vec<Reading>, received_at: Vec<i64>) -> Result<Bytes> {
    let mut rows: Vec<(Reading, i64)> = readings.into_iter().zip(received_at).collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        (a.meter_id.as_str(), a.ts, ra).cmp(&(b.meter_id.as_str(), b.ts, rb))
    });
    let (readings, received_at): (Vec<Reading>, Vec<i64>) = rows.into_iter().unzip();
    let batch = raw_readings_batch(&readings, received_at)?;
    encode_parquet(&batch, Table::RawReadings)
}

fn rejects_batch(rows: &[RejectRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|r| Some(r.received_at))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.source_topic.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.meter_id.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| Some(r.reason)).collect::<StringArray>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.detail.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.index).collect::<UInt32Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.payload.as_ref()))
                .collect::<BinaryArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.payload_bytes))
                .collect::<UInt64Array>(),
        ),
    ];
    Ok(RecordBatch::try_new(
        Table::RejectedReadings.schema(),
        columns,
    )?)
}

#[cfg(test)]
mod tests;
