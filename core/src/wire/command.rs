//! Commands the platform sends to a meter on `meters/{meter_id}/commands` (JSON).
//!
//! `{"command_id":"…","issued_at":"…","command":"resend","from":"…","to":"…"}` asks the meter
//! to publish again the readings it took in `[from, to)`; `"command":"ping"` asks it to
//! publish its latest reading now.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a meter is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Publish again the readings taken in `[from, to)`.
    Resend {
        /// Start, inclusive.
        from: DateTime<Utc>,
        /// End, exclusive.
        to: DateTime<Utc>,
    },
    /// Publish the latest reading now.
    Ping,
}

impl Command {
    /// Checks the command makes sense (`from` before `to`, at most 31 days).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Resend { from, to } if from >= to => {
                Err(format!("`from` {from} must lie before `to` {to}"))
            }
            Self::Resend { from, to } if *to - *from > chrono::TimeDelta::days(31) => {
                Err("a resend may span at most 31 days".into())
            }
            _ => Ok(()),
        }
    }
}

/// A command as published to the meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMessage {
    /// Unique id, echoed by the meter if it reports on the command.
    pub command_id: String,
    /// When the platform issued it.
    pub issued_at: DateTime<Utc>,
    /// The command.
    #[serde(flatten)]
    pub command: Command,
}
