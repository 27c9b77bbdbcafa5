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
mod hours;

pub use config::RawSinkConfig;
pub use hours::{HourFile, RawHours, hour_of};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryArray, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::DateTime;
use meterstack_core::bus::consumer::{ConsumerOptions, Handler, consume};
use meterstack_core::bus::{Bus, Delivery, Subscription, headers};
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::metrics::{
    LAKE_FILES_WRITTEN, LAKE_WRITE_ERRORS, READINGS_ACCEPTED, READINGS_REJECTED, READINGS_WRITTEN,
    REJECTS_WRITTEN,
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
    /// Joins the sink's consumer group on `readings.raw` and returns the sink, ready to run;
    /// it decodes with `decode` and writes to the context's object store.
    pub async fn build(&self, decode: &DecodeConfig, ctx: &Context) -> Result<RawSink> {
        let bus = ctx
            .bus("the raw sink")
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        self.build_on(
            decode,
            bus.as_ref(),
            &ctx.topics.readings_raw,
            ctx.objects.clone(),
        )
        .await
    }

    /// [`build`](Self::build) from the parts: the sink of `topic` on `bus`, into `store`.
    pub async fn build_on(
        &self,
        decode: &DecodeConfig,
        bus: &dyn Bus,
        topic: &str,
        store: Arc<dyn ObjectStore>,
    ) -> Result<RawSink> {
        Ok(RawSink {
            subscription: bus.subscribe(topic, GROUP).await?,
            writer: Writer {
                config: self.clone(),
                decoder: Decoder::new(decode.clone()),
                store,
                buffer: Buffer::default(),
                pending: Vec::new(),
                last_flush: Instant::now(),
                broken: None,
            },
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
    subscription: Box<dyn Subscription>,
    writer: Writer,
}

/// The sink as a consumer of the bus's driver: decodes and buffers in memory, writes files
/// when a flush is due.
#[derive(Debug)]
struct Writer {
    config: RawSinkConfig,
    decoder: Decoder,
    store: Arc<dyn ObjectStore>,
    buffer: Buffer,
    /// Files of a flush not yet stored, named before the first attempt (a retry writes the
    /// same objects).
    pending: Vec<PendingFile>,
    last_flush: Instant,
    /// Set when a flush could not be encoded (a bug): the buffer is gone, so the sink never
    /// commits again in this process; a restart gets the records again from the bus.
    broken: Option<String>,
}

/// Buffered rows: readings by reading hour, rejects by receive hour (the hour's start, µs).
#[derive(Debug, Default)]
struct Buffer {
    readings: RawHours,
    rejects: BTreeMap<i64, Vec<RejectRow>>,
    /// Estimated in-memory size of the rejects, bytes.
    reject_bytes: usize,
}

impl Buffer {
    fn bytes(&self) -> usize {
        self.readings.bytes() + self.reject_bytes
    }
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
#[derive(Debug)]
struct PendingFile {
    table: Table,
    path: Path,
    bytes: Bytes,
    rows: usize,
}

#[async_trait::async_trait]
impl Component for RawSink {
    fn name(&self) -> &'static str {
        "raw sink"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        Ok((*self).run(stop).await?)
    }
}

impl RawSink {
    /// Consumes until `shutdown` is cancelled, then drains what the bus still holds, flushes
    /// and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let options = ConsumerOptions {
            batch: self.writer.config.poll_max,
            wait: Duration::from_millis(250),
            drain: true,
            ..ConsumerOptions::new(GROUP)
        };
        consume(
            self.subscription.as_mut(),
            &mut self.writer,
            &options,
            &shutdown,
        )
        .await;
        Ok(())
    }
}

impl Handler for Writer {
    type Error = crate::Error;

    fn handle(&mut self, batch: Vec<Delivery>) {
        for delivery in batch {
            self.ingest(delivery);
        }
    }

    fn wait(&self) -> Option<Duration> {
        Some(
            self.config
                .flush_interval
                .saturating_sub(self.last_flush.elapsed())
                .max(Duration::from_millis(1)),
        )
    }

    /// Writes every buffered row when the buffer is full, the flush interval has passed or the
    /// sink stops; the bus position may be committed once every file is stored.
    async fn flush(&mut self, last: bool) -> Result<bool> {
        if let Some(broken) = &self.broken {
            return Err(crate::Error::State(broken.clone()));
        }
        if self.pending.is_empty() {
            let due = self.buffer.bytes() >= self.config.max_buffer_bytes
                || self.last_flush.elapsed() >= self.config.flush_interval
                || last;
            if !due {
                return Ok(false);
            }
            match self.encode() {
                Ok(files) => self.pending = files,
                Err(e) => {
                    let broken = format!(
                        "cannot encode buffered rows ({e}); nothing more is committed until a restart"
                    );
                    tracing::error!("raw sink: {broken}");
                    self.broken = Some(broken);
                    return Err(e);
                }
            }
        }
        while let Some(file) = self.pending.last() {
            if let Err(e) = put(&self.store, &file.path, file.bytes.clone()).await {
                metrics::counter!(LAKE_WRITE_ERRORS, "zone" => file.table.zone()).increment(1);
                warn!(path = %file.path, error = %e, "lake write failed");
                return Err(e);
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
            self.pending.pop();
        }
        self.last_flush = Instant::now();
        if last {
            info!("raw sink drained and flushed");
        }
        Ok(true)
    }
}

impl Writer {
    fn ingest(&mut self, delivery: Delivery) {
        let record = delivery.record;
        let topic = record.header(headers::SOURCE_TOPIC).unwrap_or_default();
        let received_at = record.timestamp;
        let decoded = self.decoder.decode(topic, &record.value, received_at);
        metrics::counter!(READINGS_ACCEPTED).increment(decoded.readings.len() as u64);
        for reading in decoded.readings {
            self.buffer.readings.push(reading, received_at);
        }
        for rejection in decoded.rejections {
            let code = rejection.reason.code();
            metrics::counter!(READINGS_REJECTED, "reason" => code).increment(1);
            debug!(topic, reason = code, detail = %rejection.detail, "reading rejected");
            let keep = record
                .value
                .len()
                .min(self.config.rejected_payload_max_bytes);
            self.buffer.reject_bytes +=
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

    /// Turns the buffer into named Parquet files and empties it.
    fn encode(&mut self) -> Result<Vec<PendingFile>> {
        let buffer = std::mem::take(&mut self.buffer);
        let mut files = Vec::new();
        let at = |hour: i64| DateTime::from_timestamp_micros(hour).unwrap_or_default();
        for file in buffer.readings.encode()? {
            files.push(PendingFile {
                table: Table::RawReadings,
                path: Table::RawReadings.new_file(file.hour),
                bytes: file.bytes,
                rows: file.rows,
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
