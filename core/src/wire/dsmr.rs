//! DSMR P1 telegrams: the text a Dutch or Belgian smart meter writes on its P1 port, as a
//! P1 reader publishes it on MQTT.
//!
//! A telegram is a header line (`/` and the meter identification), an empty line, one OBIS line
//! per value (`1-0:1.8.1(001581.123*kWh)`) and an end line: `!` and, from DSMR 4 on, a CRC of
//! four hex digits. [`parse`] turns one telegram into a [`Telegram`]; every failure is a
//! [`DsmrError`] that names the line or field, and nothing here panics on input.
//!
//! What is checked:
//! - size: at most [`MAX_PAYLOAD`] bytes, lines at most [`MAX_LINE`] bytes; UTF-8 text; leading
//!   and trailing whitespace is ignored, lines may end in CRLF or LF;
//! - the CRC (CRC-16/ARC over every byte from `/` through `!`) whenever one is given. DSMR 2.2
//!   and 3 telegrams carry none and are accepted without; a telegram that declares DSMR 4 or
//!   later (`1-3:0.2.8`, or the Belgian `0-0:96.1.4`) but has no CRC is rejected;
//! - every data line is an OBIS line `a-b:c.d.e(...)(...)`. A line that starts with `(` continues
//!   the previous one (the DSMR 2.2/3 gas value). Lines this module does not use (power failure
//!   log, text messages, Belgian peak demand, …) are only checked for that shape;
//! - the values used: plain non-negative decimals (no sign, exponent, NaN or infinity), the unit,
//!   when given, the expected one (`kWh`, `kW`, `V`, `A`, `m3`); timestamps `YYMMDDhhmmss` with
//!   `S` (CEST, UTC+2) or `W` (CET, UTC+1). A timestamp without the flag (the DSMR 2.2/3 gas
//!   capture time) is read as Dutch local time, CET/CEST by the EU summer-time rule, taking the
//!   summer reading of the repeated autumn hour;
//! - each OBIS reference this module uses appears at most once.
//!
//! Gas is taken from an M-Bus channel (`0-n:…`, n = 1..9) whose reading has the unit `m3`:
//! `0-n:24.2.1` (DSMR 4/5), `0-n:24.2.3` (Belgian e-MUCS, not temperature corrected) or
//! `0-n:24.3.0` with its value on the next line (DSMR 2.2/3). A channel whose device type
//! (`0-n:24.1.0`) is given and is not 3 (gas) is skipped, so a water meter reading in m3 is not
//! taken for gas; a channel declared gas is preferred, then the lowest channel number, and within
//! a channel 24.2.1 before 24.2.3 before 24.3.0.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeDelta, Utc};

/// The largest payload [`parse`] accepts, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// The longest line [`parse`] accepts, in bytes, without its line end.
pub const MAX_LINE: usize = 1024;

/// One decoded P1 telegram.
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram {
    /// Header identification after '/', e.g. "ISk5\2MT382-1000".
    pub header: String,
    /// DSMR version from 1-3:0.2.8 (e.g. "42", "50"), None when absent (DSMR 2.2/3).
    pub version: Option<String>,
    /// Equipment id 0-0:96.1.1 (hex string as sent), if present.
    pub equipment_id: Option<String>,
    /// Timestamp 0-0:1.0.0 converted to UTC (YYMMDDhhmmssX, X = 'S' summer CEST = UTC+2, 'W'
    /// winter CET = UTC+1). None if absent.
    pub timestamp: Option<DateTime<Utc>>,
    /// Import register in Wh: 1-0:1.8.1 + 1-0:1.8.2 (kWh * 1000); absent tariffs count 0, but
    /// at least one must be present.
    pub import_wh: f64,
    /// Export register in Wh: 1-0:2.8.1 + 1-0:2.8.2, None if neither present.
    pub export_wh: Option<f64>,
    /// Net active power in W: (1-0:1.7.0 − 1-0:2.7.0) × 1000; None if 1.7.0 absent.
    pub power_w: Option<f64>,
    /// Voltage L1 (1-0:32.7.0) in V, None if absent.
    pub voltage_v: Option<f64>,
    /// Current: sum of phase currents 1-0:31.7.0, 51.7.0, 71.7.0 in A; None if none present.
    pub current_a: Option<f64>,
    /// Phase voltages L1..L3 as present (32.7.0, 52.7.0, 72.7.0).
    pub voltages_v: [Option<f64>; 3],
    /// Gas: (capture time in UTC if given, m3 value) from 0-n:24.2.1 (DSMR 4/5), 0-n:24.2.3
    /// (Belgian e-MUCS) or 0-n:24.3.0 (DSMR 2.2/3, value on the following line); see the module
    /// documentation for how the channel is chosen.
    pub gas: Option<(Option<DateTime<Utc>>, f64)>,
}

/// Why a payload is not a valid P1 telegram. Lines are numbered from 1, the header line being
/// line 1, after leading whitespace is dropped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DsmrError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload is {len} bytes; a P1 telegram is at most {MAX_PAYLOAD} bytes")]
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
    },
    /// The payload is not UTF-8 text.
    #[error("payload is not text: invalid UTF-8 at byte {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The payload does not start with `/` and a meter identification.
    #[error("no telegram header: a P1 telegram starts with '/' and the meter identification")]
    NoHeader,
    /// There is no `!` end line.
    #[error("no end of telegram: the '!' line is missing (truncated telegram?)")]
    NoEnd,
    /// Something other than a 4-digit hex CRC follows the `!`.
    #[error("unexpected text after '!': {text:?}; expected a 4-digit hex CRC or nothing")]
    BadTrailer {
        /// The text after `!` (shortened).
        text: String,
    },
    /// The telegram declares DSMR 4 or later, but no CRC follows the `!`.
    #[error("telegram declares {marker} (DSMR 4 or later) but has no CRC after '!'")]
    MissingCrc {
        /// The line that declares the version, e.g. `1-3:0.2.8(50)`.
        marker: String,
    },
    /// The CRC after `!` does not match the telegram.
    #[error("CRC mismatch: the telegram says {expected:04X}, its content gives {computed:04X}")]
    BadCrc {
        /// The CRC the telegram carries.
        expected: u16,
        /// The CRC computed over the telegram.
        computed: u16,
    },
    /// A line is longer than [`MAX_LINE`].
    #[error("line {line} is {len} bytes long; at most {MAX_LINE} are allowed")]
    LineTooLong {
        /// The line number.
        line: usize,
        /// The line's length in bytes.
        len: usize,
    },
    /// A line is not an OBIS data line `a-b:c.d.e(value)…`.
    #[error("line {line} is not an OBIS data line a-b:c.d.e(value): {text:?}")]
    BadLine {
        /// The line number.
        line: usize,
        /// The line (shortened).
        text: String,
    },
    /// A value is malformed, negative or in the wrong unit.
    #[error("line {line}: bad value for {obis}: {value:?}: {reason}")]
    BadValue {
        /// The line number.
        line: usize,
        /// The OBIS reference, e.g. `1-0:1.8.1`.
        obis: String,
        /// The value as sent, parentheses left out (shortened).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timestamp is malformed.
    #[error(
        "line {line}: bad timestamp for {obis}: {value:?}; expected YYMMDDhhmmss followed by S or W"
    )]
    BadTimestamp {
        /// The line number.
        line: usize,
        /// The OBIS reference, e.g. `0-0:1.0.0`.
        obis: String,
        /// The timestamp as sent (shortened).
        value: String,
    },
    /// A value this parser uses appears on more than one line.
    #[error("line {line}: {obis} appears a second time")]
    Duplicate {
        /// The line number of the second occurrence.
        line: usize,
        /// The OBIS reference.
        obis: String,
    },
    /// Neither import register (1-0:1.8.1, 1-0:1.8.2) is present.
    #[error("no import register: neither 1-0:1.8.1 nor 1-0:1.8.2 is present")]
    NoImportRegister,
}

impl DsmrError {
    /// True for CRC mismatches (they get their own reject code).
    pub fn is_crc(&self) -> bool {
        matches!(self, DsmrError::BadCrc { .. })
    }
}

/// CRC-16/ARC (reflected polynomial 0xA001, initial value 0, no final XOR), the DSMR telegram
/// CRC. Computed over every byte from `/` through `!` inclusive.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        let mut crc = crc ^ u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
        crc
    })
}

/// Parses one telegram (bytes as published on MQTT; CRLF or LF line ends; leading and trailing
/// whitespace is ignored).
pub fn parse(payload: &[u8]) -> Result<Telegram, DsmrError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(DsmrError::TooLarge { len: payload.len() });
    }
    let text = std::str::from_utf8(payload).map_err(|e| DsmrError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if !text.starts_with('/') {
        return Err(DsmrError::NoHeader);
    }
    let bang = text.find('!').ok_or(DsmrError::NoEnd)?;
    let (signed, trailer) = text.split_at(bang + 1);
    let crc = match trailer {
        "" => None,
        t if t.len() == 4 && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u16::from_str_radix(t, 16).ok()
        }
        t => return Err(DsmrError::BadTrailer { text: excerpt(t) }),
    };
    if let Some(expected) = crc {
        let computed = crc16(signed.as_bytes());
        if computed != expected {
            return Err(DsmrError::BadCrc { expected, computed });
        }
    }

    let body = signed.strip_suffix('!').unwrap_or(signed);
    let (header, lines) = split_lines(body)?;
    let known = index(&lines)?;

    if crc.is_none() {
        let marker = [Obis::new(1, 3, 0, 2, 8), Obis::new(0, 0, 96, 1, 4)]
            .iter()
            .find_map(|o| known.get(o));
        if let Some(line) = marker {
            return Err(DsmrError::MissingCrc {
                marker: format!("{}({})", line.obis, line.groups.join(")(")),
            });
        }
    }
    interpret(header, &known)
}

/// An OBIS reduced id `a-b:c.d.e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Obis {
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    e: u8,
}

impl Obis {
    const fn new(a: u8, b: u8, c: u8, d: u8, e: u8) -> Self {
        Obis { a, b, c, d, e }
    }
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Obis { a, b, c, d, e } = self;
        write!(f, "{a}-{b}:{c}.{d}.{e}")
    }
}

/// One data line with its value groups (parentheses stripped), continuation lines appended.
#[derive(Debug)]
struct Line<'a> {
    no: usize,
    obis: Obis,
    groups: Vec<&'a str>,
}

impl Line<'_> {
    fn bad_value(&self, value: &str, reason: impl Into<String>) -> DsmrError {
        DsmrError::BadValue {
            line: self.no,
            obis: self.obis.to_string(),
            value: excerpt(value),
            reason: reason.into(),
        }
    }

    fn bad_timestamp(&self, value: &str) -> DsmrError {
        DsmrError::BadTimestamp {
            line: self.no,
            obis: self.obis.to_string(),
            value: excerpt(value),
        }
    }

    /// The only value group of a line that must have exactly one.
    fn single(&self) -> Result<&str, DsmrError> {
        match self.groups.as_slice() {
            [one] => Ok(one),
            _ => Err(self.bad_value(
                &self.groups.join(")("),
                format!("expected one value, found {}", self.groups.len()),
            )),
        }
    }
}

/// Splits the telegram body (without `!`) into its header identification and data lines.
fn split_lines(body: &str) -> Result<(&str, Vec<Line<'_>>), DsmrError> {
    let mut header = None;
    let mut lines: Vec<Line<'_>> = Vec::new();
    for (i, raw) in body.split('\n').enumerate() {
        let no = i + 1;
        let line = raw.trim_end_matches(|c: char| c.is_ascii_whitespace());
        if line.len() > MAX_LINE {
            return Err(DsmrError::LineTooLong {
                line: no,
                len: line.len(),
            });
        }
        if header.is_none() {
            let id = line.strip_prefix('/').unwrap_or_default();
            if id.trim().is_empty() {
                return Err(DsmrError::NoHeader);
            }
            header = Some(id);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let bad_line = || DsmrError::BadLine {
            line: no,
            text: excerpt(line),
        };
        if line.starts_with('(') {
            let groups = value_groups(line).ok_or_else(bad_line)?;
            let previous = lines.last_mut().ok_or_else(bad_line)?;
            previous.groups.extend(groups);
            continue;
        }
        let (obis, rest) = obis_prefix(line).ok_or_else(bad_line)?;
        let groups = value_groups(rest).ok_or_else(bad_line)?;
        lines.push(Line { no, obis, groups });
    }
    let header = header.ok_or(DsmrError::NoHeader)?;
    Ok((header, lines))
}

/// Reads `a-b:c.d.e` at the start of `line`; returns it and the rest, which starts with `(`.
fn obis_prefix(line: &str) -> Option<(Obis, &str)> {
    fn field(s: &str, end: char) -> Option<(u8, &str)> {
        let pos = s.find(end)?;
        let digits = &s[..pos];
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((digits.parse().ok()?, &s[pos + 1..]))
    }
    let (a, s) = field(line, '-')?;
    let (b, s) = field(s, ':')?;
    let (c, s) = field(s, '.')?;
    let (d, s) = field(s, '.')?;
    let open = s.find('(')?;
    let (e, _) = field(&s[..=open], '(')?;
    Some((Obis::new(a, b, c, d, e), &s[open..]))
}

/// Splits `(v1)(v2)…` into its values; None unless the whole text is such groups (at least one,
/// no nesting).
fn value_groups(mut rest: &str) -> Option<Vec<&str>> {
    let mut groups = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('(')?;
        let close = inner.find(')')?;
        let value = &inner[..close];
        if value.contains('(') {
            return None;
        }
        groups.push(value);
        rest = &inner[close + 1..];
    }
    (!groups.is_empty()).then_some(groups)
}

/// Whether this parser uses the OBIS reference (and so allows it only once).
fn is_known(o: Obis) -> bool {
    matches!(
        (o.a, o.b, o.c, o.d, o.e),
        (1, 3, 0, 2, 8)
            | (0, 0, 96, 1, 4)
            | (0, 0, 1, 0, 0)
            | (0, 0, 96, 1, 1)
            | (1, 0, 1 | 2, 8, 1 | 2)
            | (1, 0, 1 | 2, 7, 0)
            | (1, 0, 31 | 32 | 51 | 52 | 71 | 72, 7, 0)
            | (0, 1..=9, 24, 1, 0)
            | (0, 1..=9, 24, 2, 1 | 3)
            | (0, 1..=9, 24, 3, 0)
    )
}

/// The lines this parser uses, by OBIS reference; rejects duplicates.
fn index<'l, 'a>(lines: &'l [Line<'a>]) -> Result<BTreeMap<Obis, &'l Line<'a>>, DsmrError> {
    let mut known = BTreeMap::new();
    for line in lines.iter().filter(|l| is_known(l.obis)) {
        if known.insert(line.obis, line).is_some() {
            return Err(DsmrError::Duplicate {
                line: line.no,
                obis: line.obis.to_string(),
            });
        }
    }
    Ok(known)
}

fn interpret(header: &str, known: &BTreeMap<Obis, &Line<'_>>) -> Result<Telegram, DsmrError> {
    let get = |c: u8, d: u8, e: u8| known.get(&Obis::new(1, 0, c, d, e)).copied();
    // A quantity in `unit`; `milli` scales by 1000 (kWh to Wh, kW to W) exactly.
    let quantity =
        |c: u8, d: u8, e: u8, unit: &str, milli: bool| -> Result<Option<f64>, DsmrError> {
            get(c, d, e)
                .map(|line| {
                    let value = line.single()?;
                    measured(line, value, unit, milli)
                })
                .transpose()
        };

    let version = match known.get(&Obis::new(1, 3, 0, 2, 8)) {
        Some(line) => {
            let v = line.single()?;
            if v.is_empty() {
                return Err(line.bad_value(v, "empty version"));
            }
            Some(v.to_owned())
        }
        None => None,
    };
    let equipment_id = match known.get(&Obis::new(0, 0, 96, 1, 1)) {
        Some(line) => Some(line.single()?)
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        None => None,
    };
    let timestamp = match known.get(&Obis::new(0, 0, 1, 0, 0)) {
        Some(line) => {
            let v = line.single()?;
            Some(dsmr_time(v).ok_or_else(|| line.bad_timestamp(v))?)
        }
        None => None,
    };

    let import = [
        quantity(1, 8, 1, "kWh", true)?,
        quantity(1, 8, 2, "kWh", true)?,
    ];
    let export = [
        quantity(2, 8, 1, "kWh", true)?,
        quantity(2, 8, 2, "kWh", true)?,
    ];
    let power_in = quantity(1, 7, 0, "kW", true)?;
    let power_out = quantity(2, 7, 0, "kW", true)?;
    let voltages_v = [
        quantity(32, 7, 0, "V", false)?,
        quantity(52, 7, 0, "V", false)?,
        quantity(72, 7, 0, "V", false)?,
    ];
    let currents = [
        quantity(31, 7, 0, "A", false)?,
        quantity(51, 7, 0, "A", false)?,
        quantity(71, 7, 0, "A", false)?,
    ];

    if import.iter().all(Option::is_none) {
        return Err(DsmrError::NoImportRegister);
    }
    Ok(Telegram {
        header: header.to_owned(),
        version,
        equipment_id,
        timestamp,
        import_wh: import.iter().flatten().sum(),
        export_wh: sum_present(&export),
        power_w: power_in.map(|p| p - power_out.unwrap_or(0.0)),
        voltage_v: voltages_v[0],
        current_a: sum_present(&currents),
        voltages_v,
        gas: gas(known)?,
    })
}

fn sum_present(values: &[Option<f64>]) -> Option<f64> {
    values
        .iter()
        .any(Option::is_some)
        .then(|| values.iter().flatten().sum())
}

/// A gas reading: capture time (if given) and volume in m3.
type GasReading = (Option<DateTime<Utc>>, f64);

/// A line that may hold the gas reading, with its capture time and value groups.
struct GasCandidate<'l, 'a> {
    /// Orders the candidates: (not declared gas, channel, kind: 24.2.1, 24.2.3, 24.3.0).
    key: (bool, u8, u8),
    line: &'l Line<'a>,
    time: &'a str,
    value: &'a str,
}

/// The gas reading: see the module documentation for how the channel is chosen.
fn gas(known: &BTreeMap<Obis, &Line<'_>>) -> Result<Option<GasReading>, DsmrError> {
    let mut best: Option<GasCandidate<'_, '_>> = None;
    for (obis, line) in known.range(Obis::new(0, 1, 0, 0, 0)..Obis::new(1, 0, 0, 0, 0)) {
        let candidate = match (obis.c, obis.d, obis.e, line.groups.as_slice()) {
            (24, 2, 1, [time, value]) if unit_of(value) == Some("m3") => Some((0, *time, *value)),
            (24, 2, 3, [time, value]) if unit_of(value) == Some("m3") => Some((1, *time, *value)),
            (24, 3, 0, [time, _, _, _, _, unit, value])
                if *unit == "m3" && unit_of(value).is_none_or(|u| u == "m3") =>
            {
                Some((2, *time, *value))
            }
            _ => None,
        };
        let Some((rank, time, value)) = candidate else {
            continue;
        };
        let device = known.get(&Obis::new(0, obis.b, 24, 1, 0));
        let declared_gas = match device {
            Some(device) => match device.single()? {
                "" => false,
                kind => match kind.parse::<u32>() {
                    Ok(3) => true,
                    Ok(_) => continue,
                    Err(_) => return Err(device.bad_value(kind, "device type is not a number")),
                },
            },
            None => false,
        };
        let key = (!declared_gas, obis.b, rank);
        if best.as_ref().is_none_or(|b| key < b.key) {
            best = Some(GasCandidate {
                key,
                line,
                time,
                value,
            });
        }
    }
    let Some(GasCandidate {
        line, time, value, ..
    }) = best
    else {
        return Ok(None);
    };
    let captured = if time.is_empty() {
        None
    } else {
        Some(dsmr_time(time).ok_or_else(|| line.bad_timestamp(time))?)
    };
    Ok(Some((captured, measured(line, value, "m3", false)?)))
}

/// The unit of a `value*unit` group, if any.
fn unit_of(group: &str) -> Option<&str> {
    group.split_once('*').map(|(_, unit)| unit)
}

/// Reads a `value[*unit]` group: a non-negative decimal whose unit, when given, is `unit`.
/// `milli` multiplies by 1000 by moving the decimal point, so "001581.123" kWh is exactly
/// 1581123 Wh.
fn measured(line: &Line<'_>, group: &str, unit: &str, milli: bool) -> Result<f64, DsmrError> {
    let (number, given) = match group.split_once('*') {
        Some((number, given)) => (number, Some(given)),
        None => (group, None),
    };
    if let Some(given) = given
        && given != unit
    {
        return Err(line.bad_value(group, format!("unit {given:?}, expected {unit}")));
    }
    decimal(number, milli).map_err(|reason| line.bad_value(group, reason))
}

/// A plain non-negative decimal: digits, optionally a point and more digits.
fn decimal(s: &str, milli: bool) -> Result<f64, &'static str> {
    if s.is_empty() {
        return Err("empty value");
    }
    if s.starts_with('-') {
        return Err("negative value");
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || (s.contains('.') && (frac.is_empty() || !digits(frac))) {
        return Err("not a decimal number");
    }
    let parsed = if milli {
        let (head, tail) = frac.split_at(frac.len().min(3));
        format!("{int}{head:0<3}.{tail}0").parse::<f64>()
    } else {
        s.parse::<f64>()
    };
    parsed
        .ok()
        .filter(|v| v.is_finite())
        .ok_or("number out of range")
}

/// Reads `YYMMDDhhmmss` followed by `S` (CEST, UTC+2) or `W` (CET, UTC+1); without the flag, the
/// offset follows the EU summer-time rule for Dutch local time.
fn dsmr_time(s: &str) -> Option<DateTime<Utc>> {
    if !s.is_ascii() || !(s.len() == 12 || s.len() == 13) {
        return None;
    }
    let (digits, flag) = s.split_at(12);
    let b = digits.as_bytes();
    if !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let year = 2000 + i32::try_from(two(0)).ok()?;
    let local =
        NaiveDate::from_ymd_opt(year, two(2), two(4))?.and_hms_opt(two(6), two(8), two(10))?;
    let offset_hours = match flag {
        "S" => 2,
        "W" => 1,
        "" => dutch_offset_hours(local)?,
        _ => return None,
    };
    Some(
        local
            .checked_sub_signed(TimeDelta::hours(offset_hours))?
            .and_utc(),
    )
}

/// The UTC offset of Dutch local time `local`: CEST (2) from the last Sunday of March 01:00 UTC
/// to the last Sunday of October 01:00 UTC, else CET (1). The repeated autumn hour reads as
/// summer time; a time in the skipped spring hour as winter time.
fn dutch_offset_hours(local: NaiveDateTime) -> Option<i64> {
    let switch = |month: u32| -> Option<NaiveDateTime> {
        let last = NaiveDate::from_ymd_opt(local.year(), month, 31)?;
        let back = u64::from(last.weekday().num_days_from_sunday());
        last.checked_sub_days(Days::new(back))?.and_hms_opt(1, 0, 0)
    };
    let as_summer_utc = local.checked_sub_signed(TimeDelta::hours(2))?;
    let summer = switch(3)? <= as_summer_utc && as_summer_utc < switch(10)?;
    Some(if summer { 2 } else { 1 })
}

/// At most 64 characters of `s`, for error messages.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .expect("valid test timestamp")
    }

    /// Joins `lines` with CRLF and appends `!` and the correct CRC.
    fn signed(lines: &[&str]) -> String {
        let mut text = lines.join("\r\n");
        text.push_str("\r\n!");
        let crc = crc16(text.as_bytes());
        format!("{text}{crc:04X}\r\n")
    }

    const V5: &[&str] = &[
        "/ISK5\\2M550T-1012",
        "",
        "1-3:0.2.8(50)",
        "0-0:1.0.0(190123154512W)",
        "0-0:96.1.1(4530303434303037313331363530363138)",
        "1-0:1.8.1(004512.123*kWh)",
        "1-0:1.8.2(003301.077*kWh)",
        "1-0:2.8.1(000101.500*kWh)",
        "1-0:2.8.2(000202.250*kWh)",
        "0-0:96.14.0(0002)",
        "1-0:1.7.0(00.412*kW)",
        "1-0:2.7.0(00.000*kW)",
        "0-0:96.7.21(00010)",
        "0-0:96.7.9(00003)",
        "1-0:99.97.0(2)(0-0:96.7.19)(180112093712W)(0000000271*s)(170823154513S)(0000001547*s)",
        "0-0:96.13.0()",
        "1-0:32.7.0(229.8*V)",
        "1-0:31.7.0(002*A)",
        "1-0:21.7.0(00.412*kW)",
        "1-0:22.7.0(00.000*kW)",
        "0-1:24.1.0(003)",
        "0-1:96.1.0(4730303339303031363532303530323136)",
        "0-1:24.2.1(190123154500W)(01234.567*m3)",
    ];

    fn v5_with(replace: &str, with: &str) -> String {
        let lines: Vec<&str> = V5
            .iter()
            .map(|l| if l.starts_with(replace) { with } else { l })
            .collect();
        signed(&lines)
    }

    fn err(payload: &str) -> DsmrError {
        parse(payload.as_bytes()).expect_err("telegram should be rejected")
    }

    #[test]
    fn crc_check_vector() {
        // The CRC-16/ARC check value.
        assert_eq!(crc16(b"123456789"), 0xBB3D);
        assert_eq!(crc16(b""), 0);
        // A telegram whose CRC dsmr-parser's own CRC routine computed as 0x28DB.
        let telegram = "/ABC5\\2TEST\r\n\r\n1-3:0.2.8(50)\r\n1-0:1.8.1(000001.000*kWh)\r\n!";
        assert_eq!(crc16(telegram.as_bytes()), 0x28DB);
        let parsed = parse(format!("{telegram}28DB\r\n").as_bytes()).expect("valid");
        assert_eq!(parsed.import_wh, 1000.0);
    }

    #[test]
    fn parses_dsmr5() {
        let t = parse(signed(V5).as_bytes()).expect("valid telegram");
        assert_eq!(t.header, "ISK5\\2M550T-1012");
        assert_eq!(t.version.as_deref(), Some("50"));
        assert_eq!(
            t.equipment_id.as_deref(),
            Some("4530303434303037313331363530363138")
        );
        assert_eq!(t.timestamp, Some(utc("2019-01-23T14:45:12Z")));
        assert_eq!(t.import_wh, 7_813_200.0);
        assert_eq!(t.export_wh, Some(303_750.0));
        assert_eq!(t.power_w, Some(412.0));
        assert_eq!(t.voltage_v, Some(229.8));
        assert_eq!(t.voltages_v, [Some(229.8), None, None]);
        assert_eq!(t.current_a, Some(2.0));
        assert_eq!(t.gas, Some((Some(utc("2019-01-23T14:45:00Z")), 1234.567)));
    }

    #[test]
    fn dsmr22_without_crc() {
        let telegram = "/ISk5\\2ME382-1003\r\n\r\n0-0:96.1.1(4B414C37303035313730333437383132)\r\n\
            1-0:1.8.1(00123.456*kWh)\r\n1-0:1.8.2(00654.321*kWh)\r\n1-0:2.8.1(00000.000*kWh)\r\n\
            1-0:2.8.2(00000.000*kWh)\r\n0-0:96.14.0(0001)\r\n1-0:1.7.0(0000.35*kW)\r\n\
            1-0:2.7.0(0000.00*kW)\r\n0-0:17.0.0(0999.00*kW)\r\n0-0:96.3.10(1)\r\n0-0:96.13.1()\r\n\
            0-0:96.13.0()\r\n0-1:24.1.0(3)\r\n0-1:96.1.0(3238303131303031323331343435)\r\n\
            0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00412.075)\r\n0-1:24.4.0(1)\r\n!\r\n";
        let t = parse(telegram.as_bytes()).expect("DSMR 2.2 telegram without CRC");
        assert_eq!(t.version, None);
        assert_eq!(t.timestamp, None);
        assert_eq!(t.import_wh, 777_777.0);
        assert_eq!(t.export_wh, Some(0.0));
        assert_eq!(t.power_w, Some(350.0));
        assert_eq!(t.current_a, None);
        // 30 October 2012 is winter time: 14:00 CET.
        assert_eq!(t.gas, Some((Some(utc("2012-10-30T13:00:00Z")), 412.075)));

        // The same with LF line ends and surrounding whitespace.
        let lf = format!("\n  {}  \n\n", telegram.replace("\r\n", "\n"));
        assert_eq!(parse(lf.as_bytes()), Ok(t));
    }

    #[test]
    fn lf_line_ends_with_crc() {
        let mut text = V5.join("\n");
        text.push_str("\n!");
        let crc = crc16(text.as_bytes());
        let t = parse(format!("{text}{crc:04x}\n").as_bytes()).expect("LF telegram");
        assert_eq!(t.import_wh, 7_813_200.0);
    }

    #[test]
    fn bad_crc() {
        let good = signed(V5);
        let bad = good.replacen("004512.123", "004512.124", 1);
        let e = err(&bad);
        assert!(e.is_crc(), "{e}");
        let DsmrError::BadCrc { expected, computed } = e else {
            panic!("expected BadCrc, got {e:?}");
        };
        assert_ne!(expected, computed);
        assert!(e.to_string().contains("CRC mismatch"), "{e}");
        assert!(!DsmrError::NoImportRegister.is_crc());
    }

    #[test]
    fn dsmr4_without_crc_is_rejected() {
        let mut text = V5.join("\r\n");
        text.push_str("\r\n!\r\n");
        let e = err(&text);
        assert!(matches!(e, DsmrError::MissingCrc { .. }), "{e:?}");
        assert!(!e.is_crc());
        assert!(e.to_string().contains("1-3:0.2.8(50)"), "{e}");
    }

    #[test]
    fn timestamp_summer_and_winter() {
        assert_eq!(
            dsmr_time("170102192002W"),
            Some(utc("2017-01-02T18:20:02Z"))
        );
        assert_eq!(
            dsmr_time("170702192002S"),
            Some(utc("2017-07-02T17:20:02Z"))
        );
        // In the repeated autumn hour the flag decides.
        assert_eq!(
            dsmr_time("231029023000S"),
            Some(utc("2023-10-29T00:30:00Z"))
        );
        assert_eq!(
            dsmr_time("231029023000W"),
            Some(utc("2023-10-29T01:30:00Z"))
        );
        // Without a flag: Dutch local time.
        assert_eq!(dsmr_time("230701120000"), Some(utc("2023-07-01T10:00:00Z")));
        assert_eq!(dsmr_time("231201120000"), Some(utc("2023-12-01T11:00:00Z")));
        assert_eq!(dsmr_time("230326030000"), Some(utc("2023-03-26T01:00:00Z")));
        assert_eq!(dsmr_time("230326013000"), Some(utc("2023-03-26T00:30:00Z")));
        assert_eq!(dsmr_time("231029023000"), Some(utc("2023-10-29T00:30:00Z")));
        assert_eq!(dsmr_time("231029030000"), Some(utc("2023-10-29T02:00:00Z")));
        for bad in [
            "",
            "170102192002X",
            "171302192002W",
            "170230192002W",
            "170102246002W",
            "17010219200W",
            "1701021920022W",
            "17010219200éW",
        ] {
            assert_eq!(dsmr_time(bad), None, "{bad:?}");
        }

        let t = parse(v5_with("0-0:1.0.0", "0-0:1.0.0(190723154512S)").as_bytes()).expect("ok");
        assert_eq!(t.timestamp, Some(utc("2019-07-23T13:45:12Z")));
        let e = err(&v5_with("0-0:1.0.0", "0-0:1.0.0(190723154512Z)"));
        assert!(
            matches!(e, DsmrError::BadTimestamp { line: 4, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("0-0:1.0.0"), "{e}");
    }

    #[test]
    fn missing_import() {
        let lines: Vec<&str> = V5
            .iter()
            .copied()
            .filter(|l| !l.starts_with("1-0:1.8."))
            .collect();
        assert_eq!(err(&signed(&lines)), DsmrError::NoImportRegister);

        // One tariff is enough.
        let lines: Vec<&str> = V5
            .iter()
            .copied()
            .filter(|l| !l.starts_with("1-0:1.8.2"))
            .collect();
        let t = parse(signed(&lines).as_bytes()).expect("one tariff");
        assert_eq!(t.import_wh, 4_512_123.0);
    }

    #[test]
    fn optional_values() {
        let lines: Vec<&str> = V5
            .iter()
            .copied()
            .filter(|l| {
                ![
                    "1-0:2.8.",
                    "1-0:1.7.0",
                    "1-0:32.7.0",
                    "1-0:31.7.0",
                    "0-1:",
                    "0-0:1.0.0",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .collect();
        let t = parse(signed(&lines).as_bytes()).expect("valid");
        assert_eq!(t.timestamp, None);
        assert_eq!(t.export_wh, None);
        assert_eq!(t.power_w, None);
        assert_eq!(t.voltage_v, None);
        assert_eq!(t.current_a, None);
        assert_eq!(t.gas, None);
    }

    #[test]
    fn net_power_and_three_phases() {
        let mut lines: Vec<&str> = V5.to_vec();
        lines.retain(|l| !l.starts_with("1-0:2.7.0") && !l.starts_with("1-0:1.7.0"));
        lines.extend([
            "1-0:1.7.0(00.100*kW)",
            "1-0:2.7.0(01.350*kW)",
            "1-0:52.7.0(231.0*V)",
            "1-0:72.7.0(0230.5*V)",
            "1-0:51.7.0(1.5*A)",
            "1-0:71.7.0(000*A)",
        ]);
        let t = parse(signed(&lines).as_bytes()).expect("valid");
        assert_eq!(t.power_w, Some(-1250.0));
        assert_eq!(t.voltages_v, [Some(229.8), Some(231.0), Some(230.5)]);
        assert_eq!(t.current_a, Some(3.5));
    }

    #[test]
    fn malformed_values_are_rejected() {
        for (line, needle) in [
            ("1-0:1.8.1(-04512.123*kWh)", "negative"),
            ("1-0:1.8.1(NaN*kWh)", "not a decimal"),
            ("1-0:1.8.1(inf)", "not a decimal"),
            ("1-0:1.8.1(1e3*kWh)", "not a decimal"),
            ("1-0:1.8.1(12.*kWh)", "not a decimal"),
            ("1-0:1.8.1(.5*kWh)", "not a decimal"),
            ("1-0:1.8.1(1.2.3*kWh)", "not a decimal"),
            ("1-0:1.8.1(*kWh)", "empty"),
            ("1-0:1.8.1(004512.123*Wh)", "unit \"Wh\""),
            ("1-0:1.8.1(004512.123*kWh)(1)", "one value"),
        ] {
            let e = err(&v5_with("1-0:1.8.1", line));
            assert!(
                matches!(&e, DsmrError::BadValue { line: 6, obis, .. } if obis == "1-0:1.8.1"),
                "{line}: {e:?}"
            );
            assert!(e.to_string().contains(needle), "{line}: {e}");
        }
        let e = err(&v5_with("1-0:32.7.0", "1-0:32.7.0(229.8*kV)"));
        assert!(e.to_string().contains("1-0:32.7.0"), "{e}");
        let e = err(&v5_with("0-1:24.2.1", "0-1:24.2.1(190123154500W)(-1.0*m3)"));
        assert!(e.to_string().contains("negative"), "{e}");
        let e = err(&v5_with("0-1:24.2.1", "0-1:24.2.1(1901231545W)(1.0*m3)"));
        assert!(matches!(e, DsmrError::BadTimestamp { .. }), "{e:?}");
        // A unit-less value is taken as in the expected unit.
        let t = parse(v5_with("1-0:1.8.1", "1-0:1.8.1(004512.123)").as_bytes()).expect("ok");
        assert_eq!(t.import_wh, 7_813_200.0);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for line in [
            "1-0:72:32.0(00000)",
            "1-0:1.8.1",
            "1-0:1.8.1(1*kWh",
            "1-0:1.8.1(1*kWh)x",
            "1-0:1.8.1((1*kWh))",
            "1-0:1.8(1*kWh)",
            "1-0:1.8.1 (1*kWh)",
            "hello",
            "1-0:1.8.1000(1*kWh)",
            "1-0:1.8.256(1*kWh)",
        ] {
            let e = err(&v5_with("1-0:1.8.1", line));
            assert!(
                matches!(e, DsmrError::BadLine { line: 6, .. }),
                "{line}: {e:?}"
            );
        }
        let e = err(&v5_with("1-0:1.8.2", "1-0:1.8.1(000001.000*kWh)"));
        assert_eq!(
            e,
            DsmrError::Duplicate {
                line: 7,
                obis: "1-0:1.8.1".into()
            }
        );
    }

    #[test]
    fn ignored_lines_may_be_odd_but_well_formed() {
        let mut lines: Vec<&str> = V5.to_vec();
        lines.extend([
            "0-0:96.13.0(303132333435363738393A3B3C3D3E3F)",
            "0-0:96.13.1()",
            "1-0:99.97.0()",
            "1-0:99.97.0(10)(0-0:96.7.19)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)(000101000001W)(2147483647*s)",
            "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)(200423192538S)(03.695*kW)(200401000000S)(200305122139S)(05.980*kW)",
            "1-0:1.6.0(200509134558S)(02.589*kW)",
            "0-2:24.2.1(632525252525W)(00000.000)",
        ]);
        let t = parse(signed(&lines).as_bytes()).expect("valid");
        assert_eq!(t.import_wh, 7_813_200.0);
        assert_eq!(t.gas.map(|g| g.1), Some(1234.567));
    }

    #[test]
    fn gas_channel_choice() {
        // Belgian style: water on channel 1 (24.2.1, m3), gas on channel 2 (24.2.3).
        let mut lines: Vec<&str> = V5
            .iter()
            .copied()
            .filter(|l| !l.starts_with("0-1:"))
            .collect();
        lines.extend([
            "0-1:24.1.0(007)",
            "0-1:24.2.1(200512134558S)(00872.234*m3)",
            "0-2:24.1.0(003)",
            "0-2:24.2.3(200512134558S)(00112.384*m3)",
        ]);
        let t = parse(signed(&lines).as_bytes()).expect("valid");
        assert_eq!(t.gas, Some((Some(utc("2020-05-12T11:45:58Z")), 112.384)));

        // No device types: the lowest channel with m3; a heat meter in GJ is not gas.
        let mut lines: Vec<&str> = V5
            .iter()
            .copied()
            .filter(|l| !l.starts_with("0-1:"))
            .collect();
        lines.extend([
            "0-1:24.2.1(200512134558S)(00003.100*GJ)",
            "0-3:24.2.1(200512134558S)(00333.000*m3)",
            "0-2:24.2.1()(00222.000*m3)",
        ]);
        let t = parse(signed(&lines).as_bytes()).expect("valid");
        assert_eq!(t.gas, Some((None, 222.0)));

        // A device type that is not a number is an error.
        let e = err(&v5_with("0-1:24.1.0", "0-1:24.1.0(gas)"));
        assert!(matches!(e, DsmrError::BadValue { line: 21, .. }), "{e:?}");
    }

    #[test]
    fn framing_errors() {
        let good = signed(V5);
        assert_eq!(err(""), DsmrError::NoHeader);
        assert_eq!(err("garbage"), DsmrError::NoHeader);
        assert_eq!(err("/\r\n\r\n1-0:1.8.1(1*kWh)\r\n!"), DsmrError::NoHeader);
        assert_eq!(err(&good[..good.len() - 10]), DsmrError::NoEnd);
        assert!(matches!(
            err(&format!("{good}/next")),
            DsmrError::BadTrailer { .. }
        ));
        assert!(matches!(
            err(&good.replace('!', "!12")),
            DsmrError::BadTrailer { .. }
        ));
        assert_eq!(
            parse(&[b'/', 0xFF, b'!']),
            Err(DsmrError::NotUtf8 { offset: 1 })
        );
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            parse(&big),
            Err(DsmrError::TooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        let long = format!("0-0:96.13.0({})", "30".repeat(MAX_LINE));
        let e = err(&v5_with("0-0:96.13.0", &long));
        assert!(
            matches!(e, DsmrError::LineTooLong { line: 16, .. }),
            "{e:?}"
        );
        // A continuation line needs a line to continue.
        let e = err("/X\r\n\r\n(00001.000)\r\n1-0:1.8.1(1*kWh)\r\n!");
        assert!(matches!(e, DsmrError::BadLine { line: 3, .. }), "{e:?}");
        // Error texts are shortened.
        let e = err(&v5_with("1-0:1.8.1", &"x".repeat(500)));
        assert!(e.to_string().len() < 200, "{e}");
    }
}
