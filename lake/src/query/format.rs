//! Result formats of SQL over the lake, encoded batch by batch so results stream.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::csv::Writer as CsvWriter;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{JsonArray, LineDelimited, Writer as JsonWriter, WriterBuilder};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::Result;

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array of objects, nulls explicit, timestamps RFC 3339 (the default).
    #[default]
    Json,
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Jsonl,
        Format::Csv,
        Format::Arrow,
        Format::Parquet,
    ];

    /// The name used in `format=`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
        }
    }

    /// The format named `name`.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The media type of the response.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Jsonl => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format an `Accept` header asks for first, if it names one of ours.
    pub fn from_accept(accept: &str) -> Option<Format> {
        accept.split(',').find_map(|part| {
            let media = part.split(';').next().unwrap_or_default().trim();
            match media {
                "application/json" => Some(Format::Json),
                "application/jsonl" | "application/x-ndjson" | "application/jsonlines" => {
                    Some(Format::Jsonl)
                }
                "text/csv" => Some(Format::Csv),
                "application/vnd.apache.arrow.stream" => Some(Format::Arrow),
                "application/vnd.apache.parquet" | "application/parquet" => Some(Format::Parquet),
                _ => None,
            }
        })
    }
}

/// A `Write` whose bytes are taken out after each batch.
#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Bytes {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Bytes::from(std::mem::take(&mut *buf))
    }
}

impl Write for Shared {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Json(JsonWriter<Shared, JsonArray>, bool),
    Jsonl(JsonWriter<Shared, LineDelimited>),
    Csv(CsvWriter<Shared>),
    Arrow(StreamWriter<Shared>),
    Parquet(ArrowWriter<Shared>),
}

/// Encodes batches of one result in one format; each call returns the bytes it produced.
pub struct Encoder {
    out: Shared,
    writer: Writer,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder of `format` for results of `schema`.
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self> {
        let out = Shared::default();
        let json = || WriterBuilder::new().with_explicit_nulls(true);
        let writer = match format {
            Format::Json => Writer::Json(json().build(out.clone()), false),
            Format::Jsonl => Writer::Jsonl(json().build(out.clone())),
            Format::Csv => Writer::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out.clone()),
            ),
            Format::Arrow => Writer::Arrow(StreamWriter::try_new(out.clone(), &schema)?),
            Format::Parquet => Writer::Parquet(ArrowWriter::try_new(
                out.clone(),
                schema,
                Some(
                    WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                        .set_max_row_group_row_count(Some(crate::sink::ROW_GROUP_ROWS))
                        .build(),
                ),
            )?),
        };
        Ok(Self { out, writer })
    }

    /// Encodes `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        match &mut self.writer {
            Writer::Json(w, wrote) => {
                *wrote |= batch.num_rows() > 0;
                w.write(batch)?;
            }
            Writer::Jsonl(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Arrow(w) => w.write(batch)?,
            // Row groups leave as they fill (`ROW_GROUP_ROWS`).
            Writer::Parquet(w) => w.write(batch)?,
        }
        Ok(self.out.take())
    }

    /// Ends the result.
    pub fn finish(self) -> Result<Bytes> {
        match self.writer {
            Writer::Json(mut w, wrote) => {
                w.finish()?;
                if !wrote {
                    return Ok(Bytes::from_static(b"[]"));
                }
            }
            Writer::Jsonl(mut w) => w.finish()?,
            Writer::Csv(w) => drop(w),
            Writer::Arrow(mut w) => w.finish()?,
            Writer::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(self.out.take())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BinaryArray, Float64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn encode(format: Format, batches: &[RecordBatch], schema: SchemaRef) -> Vec<u8> {
        let mut e = Encoder::new(format, schema).expect("encoder");
        let mut out = Vec::new();
        for b in batches {
            out.extend_from_slice(&e.write(b).expect("write"));
        }
        out.extend_from_slice(&e.finish().expect("finish"));
        out
    }

    #[test]
    fn every_format_encodes_rows_and_json_is_explicit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("meter_id", DataType::Utf8, false),
            Field::new("ts", meterstack_core::reading::timestamp_type(), false),
            Field::new("power_w", DataType::Float64, true),
            Field::new("payload", DataType::Binary, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["m-1"])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_795_428_900_000_000])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![None])),
                Arc::new(BinaryArray::from(vec![b"ab".as_ref()])),
            ],
        )
        .expect("batch");
        let json: serde_json::Value = serde_json::from_slice(&encode(
            Format::Json,
            std::slice::from_ref(&batch),
            schema.clone(),
        ))
        .expect("valid json");
        assert_eq!(
            json,
            serde_json::json!([{"meter_id": "m-1", "ts": "2026-11-23T10:15:00Z", "power_w": null, "payload": "6162"}])
        );
        assert_eq!(encode(Format::Json, &[], schema.clone()), b"[]");
        let csv = String::from_utf8(encode(
            Format::Csv,
            std::slice::from_ref(&batch),
            schema.clone(),
        ))
        .expect("utf8");
        assert!(
            csv.starts_with("meter_id,ts,power_w,payload\nm-1,2026-11-23T10:15:00"),
            "{csv}"
        );
        let lines = encode(
            Format::Jsonl,
            &[batch.clone(), batch.clone()],
            schema.clone(),
        );
        assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 2);
        let ipc = encode(Format::Arrow, std::slice::from_ref(&batch), schema.clone());
        let reader = arrow::ipc::reader::StreamReader::try_new(ipc.as_slice(), None).expect("ipc");
        assert_eq!(
            reader.map(|b| b.expect("batch").num_rows()).sum::<usize>(),
            1
        );
        let parquet = encode(Format::Parquet, std::slice::from_ref(&batch), schema);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            Bytes::from(parquet),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        assert_eq!(
            reader.map(|b| b.expect("batch").num_rows()).sum::<usize>(),
            1
        );
        assert_eq!(
            Format::from_accept("text/csv;q=0.9, */*"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_accept("*/*"), None);
    }
}
