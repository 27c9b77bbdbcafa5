use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `[lake.raw_sink]` of `meterstack.toml`: the sink from `readings.raw` to the raw zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSinkConfig {
    /// Longest a decoded reading waits in memory before it is written; a reading published
    /// over MQTT is queryable within about this long.
    #[serde(with = "meterstack_core::duration")]
    pub flush_interval: Duration,
    /// Buffered bytes (readings and rejects, as held in memory) that force a flush before
    /// the interval ends.
    pub max_buffer_bytes: usize,
    /// Most bus records taken per poll.
    pub poll_max: usize,
    /// How much of a rejected payload is kept in the rejected area, in bytes.
    pub rejected_payload_max_bytes: usize,
}

impl Default for RawSinkConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(5),
            max_buffer_bytes: 64 * 1024 * 1024,
            poll_max: 5_000,
            rejected_payload_max_bytes: 64 * 1024,
        }
    }
}
