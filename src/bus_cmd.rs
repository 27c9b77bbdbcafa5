//! `meterstack bus`: look at the bus from the command line.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;

/// Subcommands of `meterstack bus`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BusCommand {
    /// Print a topic's records from the beginning of what is retained, one JSON object per
    /// line (partition, offset, key, timestamp, headers, value). Reads without committing.
    /// The embedded bus can be read only while no other process has it open.
    Read {
        /// Topic name
        #[arg(long)]
        topic: String,
        /// Stop after this many records
        #[arg(long)]
        max: Option<usize>,
    },
}

pub(crate) async fn run(command: BusCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BusCommand::Read { topic, max } => {
            let bus = config
                .bus
                .build(&config.data_dir)
                .await
                .context("cannot open the bus")?;
            // A group of its own, never committed: reading changes nothing for anyone else.
            let group = format!(
                "meterstack-cli-read-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_micros()
            );
            let mut sub = bus.subscribe(&topic, &group).await?;
            // Joining a Kafka group takes a few seconds; later polls stop at the first silence.
            let mut wait = Duration::from_secs(15);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut printed = 0usize;
            loop {
                let want = max.map_or(10_000, |m| (m - printed).min(10_000));
                if want == 0 {
                    break;
                }
                let batch = sub.poll(want, wait).await?;
                wait = Duration::from_secs(2);
                if batch.is_empty() {
                    break;
                }
                for d in batch {
                    let value = match std::str::from_utf8(&d.record.value) {
                        Ok(text) => json!(text),
                        Err(_) => {
                            json!({ "hex": d.record.value.iter().map(|b| format!("{b:02x}")).collect::<String>() })
                        }
                    };
                    let line = json!({
                        "partition": d.partition,
                        "offset": d.offset,
                        "key": d.record.key,
                        "timestamp": d.record.timestamp.to_rfc3339(),
                        "headers": d.record.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                        "value": value,
                    });
                    writeln!(out, "{line}")?;
                    printed += 1;
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}
