//! Human-readable durations in configuration files: `"500ms"`, `"5s"`, `"15m"`, `"36h"`, `"30d"`.
//!
//! Parsing accepts anything `humantime` does; printing uses the largest unit that divides the
//! value exactly, so `meterstack config` prints back what a person would write.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Formats `d` in the largest exact unit.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    const UNITS: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        for (size, unit) in UNITS {
            if ms != 0 && ms.is_multiple_of(size) {
                return format!("{}{unit}", ms / size);
            }
        }
        return format!("{ms}ms");
    }
    humantime::format_duration(d).to_string()
}

/// Parses a human-readable duration.
pub fn parse(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s.trim())
}

/// For `#[serde(with = "meterstack_core::duration")]`.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

/// For `#[serde(with = "meterstack_core::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(deserializer)?;
    parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// A duration that (de)serializes in the human-readable form, for lists and maps of
/// durations in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Human(pub Duration);

impl Serialize for Human {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Human)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_largest_exact_unit_and_parses_back() {
        for (d, s) in [
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(3600 * 36), "36h"),
            (Duration::from_secs(86_400 * 3650), "3650d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s).expect("parses"), d);
        }
    }
}
