use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `[lake.etl]` of `meterstack.toml`: the ETL from the raw to the trusted zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtlConfig {
    /// How often the `etl` role runs it (`meterstack etl` runs it once).
    #[serde(with = "meterstack_core::duration")]
    pub schedule: Duration,
    /// A raw hour partition is compacted into one file once its hour ended this long ago
    /// (later arrivals into it are compacted again on a later run).
    #[serde(with = "meterstack_core::duration")]
    pub compact_after: Duration,
    /// Files that compaction merged or retention expired are deleted only this long after,
    /// so a query that listed them before still reads them; at least `http.query.timeout`.
    #[serde(with = "meterstack_core::duration")]
    pub delete_grace: Duration,
    /// How long each zone and table is kept.
    pub retention: RetentionConfig,
}

impl Default for EtlConfig {
    fn default() -> Self {
        Self {
            schedule: Duration::from_secs(300),
            compact_after: Duration::from_secs(2 * 3600),
            delete_grace: Duration::from_secs(600),
            retention: RetentionConfig::default(),
        }
    }
}

/// `[lake.etl.retention]`: days each table keeps, counted from today (UTC) back to a
/// partition's date; 0 keeps it forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `raw_readings` (the raw zone's readings).
    pub raw_days: u32,
    /// `rejected_readings`.
    pub rejected_days: u32,
    /// `readings`, `readings_hourly` and `readings_daily` (the trusted zone; 2,562 days is 7
    /// years).
    pub trusted_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw_days: 30,
            rejected_days: 30,
            trusted_days: 2562,
        }
    }
}

impl EtlConfig {
    /// Checks values a configuration file could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.schedule < Duration::from_secs(1) {
            return Err("lake.etl.schedule must be at least 1s".into());
        }
        let r = &self.retention;
        if r.raw_days != 0 && r.raw_days < 2 {
            // The ETL reads the day before a restated day as context.
            return Err("lake.etl.retention.raw_days must be 0 (forever) or at least 2".into());
        }
        Ok(())
    }
}
