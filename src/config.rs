//! The effective configuration: defaults, then `meterstack.toml`, then `METERSTACK__…`
//! environment variables, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use meterstack_api::HttpConfig;
use meterstack_billing::BillingConfig;
use meterstack_broker::MqttConfig;
use meterstack_core::bus::{BusBackend, BusConfig};
use meterstack_core::store::StoreConfig;
use meterstack_core::wire::DecodeConfig;
use meterstack_lake::store::LakeConfig;
use meterstack_ml::MlConfig;
use meterstack_pipeline::PipelineConfig;
use meterstack_pipeline::sinks::webhooks::WebhooksConfig;
use serde::{Deserialize, Serialize};

/// The config file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_FILE: &str = "meterstack.toml";

/// Every setting of a meterstack process. Each section is the typed config of the stage it
/// builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Directory for everything the process stores (the lake, by default).
    pub data_dir: PathBuf,
    /// Development mode (flag `--dev`): meters may connect without credentials and unknown
    /// meters are registered on first connect. Never in production.
    pub dev: bool,
    /// Logging.
    pub log: LogConfig,
    /// The embedded MQTT broker.
    pub mqtt: MqttConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// The bus.
    pub bus: BusConfig,
    /// Decoding of meter payloads.
    pub ingest: DecodeConfig,
    /// The lake.
    pub lake: LakeConfig,
    /// The SQL store (registry, API keys).
    pub store: StoreConfig,
    /// Stream processing: validation, intervals, windows, anomalies.
    pub pipeline: PipelineConfig,
    /// Alert delivery: webhooks, retries, reminders, the SSRF guard.
    pub webhooks: WebhooksConfig,
    /// Forecasting: calendar, learner, training window, promotion.
    pub ml: MlConfig,
    /// Billing: the utility's time zone for tariffs.
    pub billing: BillingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            dev: false,
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            bus: BusConfig::default(),
            ingest: DecodeConfig::default(),
            lake: LakeConfig::default(),
            store: StoreConfig::default(),
            pipeline: PipelineConfig::default(),
            webhooks: WebhooksConfig::default(),
            ml: MlConfig::default(),
            billing: BillingConfig::default(),
        }
    }
}

/// Section `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A `tracing` filter; `RUST_LOG`, when set, takes precedence.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,rumqttd=off".into(),
        }
    }
}

/// Flags that override configuration keys.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Overrides {
    /// Config file [default: ./meterstack.toml if it exists]
    #[arg(long, global = true, env = "METERSTACK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (key `data_dir`)
    #[arg(long, global = true, env = "METERSTACK__DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MQTT port (the port of `mqtt.listen`)
    #[arg(long, global = true, env = "METERSTACK_MQTT_PORT")]
    pub mqtt_port: Option<u16>,
    /// HTTP port (the port of `http.listen`; 0 picks a free one)
    #[arg(long, global = true, env = "METERSTACK_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Bus backend: embedded or kafka (key `bus.backend`)
    #[arg(long, global = true, env = "METERSTACK__BUS__BACKEND")]
    pub bus: Option<BusBackend>,
    /// Kafka bootstrap brokers, HOST:PORT[,…] (key `bus.kafka.brokers`)
    #[arg(long, global = true, env = "METERSTACK__BUS__KAFKA__BROKERS")]
    pub kafka_brokers: Option<String>,
    /// SQL store URL, sqlite://… or postgres://… (key `store.url`)
    #[arg(long, global = true, env = "METERSTACK__STORE__URL")]
    pub store_url: Option<String>,
}

impl Config {
    /// Opens the SQL store the configuration names (creating the data directory for SQLite).
    pub(crate) async fn open_store(&self) -> anyhow::Result<meterstack_core::store::SqlStore> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        Ok(self.store.build(&self.data_dir).await?)
    }

    /// Loads the effective configuration.
    pub(crate) fn load(overrides: &Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &overrides.config {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new(DEFAULT_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_FILE));
            }
            None => {}
        }
        let mut config: Config = figment
            .merge(Env::prefixed("METERSTACK__").split("__"))
            .extract()
            .context("invalid configuration")?;
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        let set_port = |addr: &mut SocketAddr, port: Option<u16>| {
            if let Some(port) = port {
                addr.set_port(port);
            }
        };
        set_port(&mut config.mqtt.listen, overrides.mqtt_port);
        set_port(&mut config.http.listen, overrides.http_port);
        if let Some(backend) = overrides.bus {
            config.bus.backend = backend;
        }
        if let Some(brokers) = &overrides.kafka_brokers {
            config.bus.kafka.brokers.clone_from(brokers);
        }
        if let Some(url) = &overrides.store_url {
            config.store.url.clone_from(url);
        }
        config
            .pipeline
            .validate()
            .and_then(|()| config.lake.etl.validate())
            .and_then(|()| config.http.query.validate())
            .and_then(|()| config.http.live.validate())
            .and_then(|()| config.webhooks.validate().map_err(|e| e.to_string()))
            .and_then(|()| config.ml.validate())
            .and_then(|()| config.billing.tz().map(|_| ()))
            .and_then(|()| {
                if config.lake.etl.delete_grace < config.http.query.timeout {
                    // A query could otherwise lose a file it listed.
                    Err("lake.etl.delete_grace must be at least http.query.timeout".to_owned())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub(crate) fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("cannot print the configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_documents_exactly_the_defaults() {
        let shipped = include_str!("../meterstack.toml");
        let parsed: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(shipped))
            .extract()
            .expect("meterstack.toml parses");
        assert_eq!(parsed, Config::default());
        let mut keys = Vec::new();
        collect_keys(
            "",
            &toml::Value::try_from(Config::default()).expect("toml"),
            &mut keys,
        );
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            assert!(
                shipped
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{leaf} ="))
                        || l.trim_start().starts_with(&format!("# {leaf} ="))),
                "meterstack.toml does not document `{key}`"
            );
        }
    }

    fn collect_keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(table) = value {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() {
                    collect_keys(&key, v, out);
                } else {
                    out.push(key);
                }
            }
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let result: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[mqtt]\nlisten_port = 1\n"))
            .extract();
        let message = result.expect_err("unknown key must fail").to_string();
        assert!(message.contains("listen_port"), "{message}");
    }
}
