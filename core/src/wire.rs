//! The wire format meters publish, and its decoder.
//!
//! Meters publish JSON on `meters/{meter_id}/readings`, or DSMR P1 telegrams on
//! `meters/{meter_id}/dsmr` ([`dsmr`]). JSON is: one object or an array of objects, e.g.
//! `{"ts":"2026-11-23T10:15:00Z","import_wh":1234567,"export_wh":0,"power_w":412.5,"voltage_v":229.8,"current_a":1.8}`.
//! `ts` is RFC 3339 or integer epoch milliseconds. The meter id comes from the topic; a
//! `meter_id` field, if present, must match it. Unknown fields are ignored.
//!
//! Decoding is a pure function of the topic, the payload bytes and the receive time (timestamps
//! are judged against the receive time, not the wall clock, so a replay decodes the same way).
//! Every failure is a [`Rejection`] value with a [`RejectReason`]; nothing here panics on input.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::reading::{MeterId, Reading};

/// The MQTT topic filter meters publish readings on.
pub const READINGS_TOPIC_FILTER: &str = "meters/+/readings";

/// Every topic a meter may publish on: `meters/{meter_id}/{format}`.
pub const METER_TOPIC_FILTER: &str = "meters/+/+";

/// The payload formats, named by the last topic segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `meters/{id}/readings`: the JSON wire format.
    Json,
    /// `meters/{id}/dsmr`: a DSMR P1 telegram.
    Dsmr,
}

/// The MQTT topic a meter publishes its readings on.
pub fn readings_topic(meter_id: &MeterId) -> String {
    format!("meters/{meter_id}/readings")
}

/// `meters/{id}/commands`: where the platform sends a meter its commands.
pub fn commands_topic(meter_id: &MeterId) -> String {
    format!("meters/{meter_id}/commands")
}

/// Encodes `readings` in the wire format: one object for one reading, an array for several.
/// Absent optional fields are left out; the meter id is not written, as the topic carries it.
pub fn encode(readings: &[Reading]) -> Vec<u8> {
    let object = |r: &Reading| {
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            Value::from(r.ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
        obj.insert("import_wh".into(), Value::from(r.import_wh));
        let optional = [
            ("export_wh", r.export_wh),
            ("power_w", r.power_w),
            ("voltage_v", r.voltage_v),
            ("current_a", r.current_a),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                obj.insert(name.into(), Value::from(v));
            }
        }
        if let Some(seq) = r.seq {
            obj.insert("seq".into(), Value::from(seq));
        }
        Value::Object(obj)
    };
    let value = match readings {
        [one] => object(one),
        many => Value::Array(many.iter().map(object).collect()),
    };
    value.to_string().into_bytes()
}

/// Limits the decoder enforces. Section `[ingest]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Largest accepted payload, in bytes (AWS IoT Core allows 128 KiB).
    pub max_payload_bytes: usize,
    /// Most readings accepted in one message (one JSON array).
    pub max_readings_per_message: usize,
    /// How far a reading's timestamp may lie ahead of its receive time.
    #[serde(with = "crate::duration")]
    pub max_future_skew: Duration,
    /// How far a reading's timestamp may lie behind its receive time.
    #[serde(with = "crate::duration")]
    pub max_age: Duration,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 128 * 1024,
            max_readings_per_message: 1000,
            max_future_skew: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(3650 * 86_400),
        }
    }
}

/// Why a message or a reading was rejected. The `code` is stable: it labels metrics and the
/// `reason` column of the rejected area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The payload exceeds `max_payload_bytes`.
    PayloadTooLarge,
    /// The topic is not `meters/{valid meter id}/{format}`.
    BadTopic,
    /// The payload is not valid JSON.
    NotJson,
    /// The payload is JSON but neither an object nor an array of objects.
    BadShape,
    /// The array is empty.
    EmptyBatch,
    /// The array holds more than `max_readings_per_message` readings.
    TooManyReadings,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or an impossible value (negative register, …).
    InvalidField,
    /// `ts` is neither RFC 3339 nor epoch milliseconds in range.
    BadTimestamp,
    /// `ts` lies further ahead of the receive time than `max_future_skew`.
    TimestampInFuture,
    /// `ts` lies further behind the receive time than `max_age`.
    TimestampTooOld,
    /// The body's `meter_id` differs from the topic's.
    MeterIdMismatch,
    /// The topic names a payload format meterstack does not decode.
    UnknownFormat,
    /// A DSMR P1 telegram is malformed.
    BadTelegram,
    /// A DSMR P1 telegram's CRC does not match its content.
    BadCrc,
}

impl RejectReason {
    /// Every reason, for documentation and for pre-registering metrics.
    pub const ALL: [RejectReason; 15] = [
        Self::PayloadTooLarge,
        Self::BadTopic,
        Self::NotJson,
        Self::BadShape,
        Self::EmptyBatch,
        Self::TooManyReadings,
        Self::MissingField,
        Self::InvalidField,
        Self::BadTimestamp,
        Self::TimestampInFuture,
        Self::TimestampTooOld,
        Self::MeterIdMismatch,
        Self::UnknownFormat,
        Self::BadTelegram,
        Self::BadCrc,
    ];

    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::PayloadTooLarge => "payload_too_large",
            Self::BadTopic => "bad_topic",
            Self::NotJson => "not_json",
            Self::BadShape => "bad_shape",
            Self::EmptyBatch => "empty_batch",
            Self::TooManyReadings => "too_many_readings",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::BadTimestamp => "bad_timestamp",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::MeterIdMismatch => "meter_id_mismatch",
            Self::UnknownFormat => "unknown_format",
            Self::BadTelegram => "bad_telegram",
            Self::BadCrc => "bad_crc",
        }
    }
}

/// A rejected message (`index` is `None`) or one rejected reading of an array (`index` is its
/// position).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// A human-readable explanation naming the field or the limit.
    pub detail: String,
    /// Position of the reading in its array, if only that reading was rejected.
    pub index: Option<usize>,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            index: None,
        }
    }
}

/// What one message decoded into: the good readings and the rejections, in payload order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// The meter id taken from the topic, if the topic was valid.
    pub meter_id: Option<MeterId>,
    /// Readings that passed.
    pub readings: Vec<Reading>,
    /// Rejections, whole-message or per reading.
    pub rejections: Vec<Rejection>,
}

/// Decodes meter messages under a [`DecodeConfig`].
#[derive(Debug, Clone)]
pub struct Decoder {
    config: DecodeConfig,
    max_future_skew: TimeDelta,
    max_age: TimeDelta,
}

impl Decoder {
    /// A decoder enforcing `config`.
    pub fn new(config: DecodeConfig) -> Self {
        let to_delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Self {
            max_future_skew: to_delta(config.max_future_skew),
            max_age: to_delta(config.max_age),
            config,
        }
    }

    /// Decodes one message received on `topic` at `received_at`.
    pub fn decode(&self, topic: &str, payload: &[u8], received_at: DateTime<Utc>) -> Decoded {
        let mut out = Decoded::default();
        let whole = |out: &mut Decoded, rejection: Rejection| out.rejections.push(rejection);
        let (meter_id, format) = match parse_topic(topic) {
            Ok(parsed) => parsed,
            Err(rejection) => {
                // An unknown format still names a valid meter: keep it with the reject.
                if rejection.reason == RejectReason::UnknownFormat {
                    out.meter_id = topic
                        .strip_prefix("meters/")
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|id| MeterId::new(id).ok());
                }
                whole(&mut out, rejection);
                return out;
            }
        };
        out.meter_id = Some(meter_id.clone());
        if payload.len() > self.config.max_payload_bytes {
            let detail = format!(
                "payload is {} bytes; the limit is {}",
                payload.len(),
                self.config.max_payload_bytes
            );
            whole(
                &mut out,
                Rejection::new(RejectReason::PayloadTooLarge, detail),
            );
            return out;
        }
        if format == Format::Dsmr {
            match dsmr::parse(payload) {
                Ok(telegram) => match self.telegram_reading(&meter_id, &telegram, received_at) {
                    Ok(reading) => out.readings.push(reading),
                    Err(rejection) => whole(&mut out, rejection),
                },
                Err(e) => {
                    let reason = if e.is_crc() {
                        RejectReason::BadCrc
                    } else {
                        RejectReason::BadTelegram
                    };
                    whole(&mut out, Rejection::new(reason, e.to_string()));
                }
            }
            return out;
        }
        let value: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                whole(
                    &mut out,
                    Rejection::new(RejectReason::NotJson, format!("not JSON: {e}")),
                );
                return out;
            }
        };
        match value {
            Value::Object(obj) => match self.decode_one(&meter_id, &obj, received_at) {
                Ok(reading) => out.readings.push(reading),
                Err(rejection) => whole(&mut out, rejection),
            },
            Value::Array(items) => {
                if items.is_empty() {
                    whole(
                        &mut out,
                        Rejection::new(RejectReason::EmptyBatch, "the array holds no readings"),
                    );
                } else if items.len() > self.config.max_readings_per_message {
                    let detail = format!(
                        "the array holds {} readings; the limit is {}",
                        items.len(),
                        self.config.max_readings_per_message
                    );
                    whole(
                        &mut out,
                        Rejection::new(RejectReason::TooManyReadings, detail),
                    );
                } else {
                    for (index, item) in items.iter().enumerate() {
                        let result = match item {
                            Value::Object(obj) => self.decode_one(&meter_id, obj, received_at),
                            other => Err(Rejection::new(
                                RejectReason::BadShape,
                                format!("element is {}, expected an object", kind(other)),
                            )),
                        };
                        match result {
                            Ok(reading) => out.readings.push(reading),
                            Err(mut rejection) => {
                                rejection.index = Some(index);
                                out.rejections.push(rejection);
                            }
                        }
                    }
                }
            }
            other => whole(
                &mut out,
                Rejection::new(
                    RejectReason::BadShape,
                    format!(
                        "payload is {}, expected an object or an array of objects",
                        kind(&other)
                    ),
                ),
            ),
        }
        out
    }

    /// The reading a P1 telegram carries; a telegram without a timestamp (DSMR 2.2) is
    /// stamped with its receive time.
    fn telegram_reading(
        &self,
        meter_id: &MeterId,
        t: &dsmr::Telegram,
        received_at: DateTime<Utc>,
    ) -> Result<Reading, Rejection> {
        Ok(Reading {
            meter_id: meter_id.clone(),
            ts: self.check_time(t.timestamp.unwrap_or(received_at), received_at)?,
            import_wh: t.import_wh,
            export_wh: t.export_wh,
            power_w: t.power_w,
            voltage_v: t.voltage_v,
            current_a: t.current_a,
            seq: None,
        })
    }

    fn decode_one(
        &self,
        meter_id: &MeterId,
        obj: &Map<String, Value>,
        received_at: DateTime<Utc>,
    ) -> Result<Reading, Rejection> {
        if let Some(body_id) = obj.get("meter_id").filter(|v| !v.is_null()) {
            match body_id.as_str() {
                Some(id) if id == meter_id.as_str() => {}
                Some(id) => {
                    return Err(Rejection::new(
                        RejectReason::MeterIdMismatch,
                        format!(
                            "body meter_id {id:?} differs from topic meter id {meter_id:?}",
                            meter_id = meter_id.as_str()
                        ),
                    ));
                }
                None => return Err(invalid("meter_id", "a string", body_id)),
            }
        }
        let ts = self.timestamp(obj, received_at)?;
        let import_wh = register(obj, "import_wh")?.ok_or_else(|| {
            Rejection::new(RejectReason::MissingField, "missing field `import_wh`")
        })?;
        Ok(Reading {
            meter_id: meter_id.clone(),
            ts,
            import_wh,
            export_wh: register(obj, "export_wh")?,
            power_w: number(obj, "power_w")?,
            voltage_v: non_negative(obj, "voltage_v")?,
            current_a: number(obj, "current_a")?,
            seq: match obj.get("seq") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| invalid("seq", "a non-negative integer", v))?,
                ),
            },
        })
    }

    fn timestamp(
        &self,
        obj: &Map<String, Value>,
        received_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let ts = match obj.get("ts") {
            None | Some(Value::Null) => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    "missing field `ts`",
                ));
            }
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    Rejection::new(
                        RejectReason::BadTimestamp,
                        format!("`ts` {s:?} is not RFC 3339: {e}"),
                    )
                })?,
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| {
                    Rejection::new(
                        RejectReason::BadTimestamp,
                        format!("`ts` {n} is not integer epoch milliseconds in range"),
                    )
                })?,
            Some(other) => {
                return Err(Rejection::new(
                    RejectReason::BadTimestamp,
                    format!(
                        "`ts` is {}, expected an RFC 3339 string or epoch milliseconds",
                        kind(other)
                    ),
                ));
            }
        };
        self.check_time(ts, received_at)
    }

    /// `ts` truncated to microseconds, if it lies within the allowed skew and age of
    /// `received_at`.
    fn check_time(
        &self,
        ts: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        // Store microseconds: the precision of every timestamp column in the lake.
        let ts = DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts);
        if ts.signed_duration_since(received_at) > self.max_future_skew {
            return Err(Rejection::new(
                RejectReason::TimestampInFuture,
                format!(
                    "`ts` {} is more than {} ahead of the receive time {}",
                    ts.to_rfc3339(),
                    crate::duration::format(self.config.max_future_skew),
                    received_at.to_rfc3339()
                ),
            ));
        }
        if received_at.signed_duration_since(ts) > self.max_age {
            return Err(Rejection::new(
                RejectReason::TimestampTooOld,
                format!(
                    "`ts` {} is more than {} before the receive time {}",
                    ts.to_rfc3339(),
                    crate::duration::format(self.config.max_age),
                    received_at.to_rfc3339()
                ),
            ));
        }
        Ok(ts)
    }
}

/// The meter id and payload format of a `meters/{meter_id}/{format}` topic.
pub fn parse_topic(topic: &str) -> Result<(MeterId, Format), Rejection> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("meters"), Some(id), Some(format), None) => {
            let id = MeterId::new(id).map_err(|e| {
                Rejection::new(RejectReason::BadTopic, format!("topic {topic:?}: {e}"))
            })?;
            let format = match format {
                "readings" => Format::Json,
                "dsmr" => Format::Dsmr,
                other => {
                    return Err(Rejection::new(
                        RejectReason::UnknownFormat,
                        format!(
                            "topic {topic:?}: format {other:?} is not `readings` (JSON) or `dsmr` (DSMR P1)"
                        ),
                    ));
                }
            };
            Ok((id, format))
        }
        _ => Err(Rejection::new(
            RejectReason::BadTopic,
            format!("topic {topic:?} is not meters/{{meter_id}}/{{format}}"),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid(field: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new(
        RejectReason::InvalidField,
        format!("`{field}` is {}, expected {expected}", kind(got)),
    )
}

/// How a reading field's number is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Any finite number (power, current).
    Number,
    /// A finite number that is not negative (registers, voltage).
    NonNegative,
}

/// Checks one reading field's value as every input path does (the wire formats and history
/// imports): finite, and not negative where the field cannot be.
pub fn check_field(field: &str, x: f64, kind: FieldKind) -> Result<f64, Rejection> {
    if !x.is_finite() {
        return Err(Rejection::new(
            RejectReason::InvalidField,
            format!("`{field}` is {x}, expected a finite number"),
        ));
    }
    if kind == FieldKind::NonNegative && x < 0.0 {
        return Err(Rejection::new(
            RejectReason::InvalidField,
            format!("`{field}` is {x}, expected a value >= 0"),
        ));
    }
    Ok(x)
}

/// An optional finite number.
fn number(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, Rejection> {
    checked(obj, field, FieldKind::Number)
}

fn checked(
    obj: &Map<String, Value>,
    field: &str,
    kind: FieldKind,
) -> Result<Option<f64>, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) => check_field(field, x, kind).map(Some),
            None => Err(invalid(field, "a finite number", v)),
        },
    }
}

/// An optional finite number that is not negative.
fn non_negative(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, Rejection> {
    checked(obj, field, FieldKind::NonNegative)
}

/// A cumulative register: an optional non-negative finite number of Wh.
fn register(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, Rejection> {
    non_negative(obj, field)
}

pub mod command;
pub mod dsmr;
#[cfg(test)]
mod tests;
