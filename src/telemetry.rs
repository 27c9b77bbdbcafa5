//! Logging and the Prometheus metrics registry.

use anyhow::Context;
use meterstack_core::metrics as m;
use meterstack_core::wire::RejectReason;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` if set, else by `filter`.
pub(crate) fn init_logging(filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the process-wide metrics recorder, describes every metric and registers the
/// labelled counters at zero, so `/metrics` shows them before the first event.
pub(crate) fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    for metric in m::ALL {
        match metric.kind {
            m::Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            m::Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            m::Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
    metrics::gauge!(m::LIVE_CLIENTS).set(0.0);
    metrics::counter!(m::LIVE_DROPPED).absolute(0);
    metrics::counter!(m::LIVE_BAD_MESSAGES).absolute(0);
    for reason in meterstack_broker::REFUSAL_REASONS {
        metrics::counter!(m::MQTT_REFUSED, "reason" => reason).absolute(0);
    }
    metrics::counter!(m::MQTT_THROTTLED).absolute(0);
    metrics::gauge!(m::MQTT_CONNECTIONS).set(0.0);
    metrics::counter!(m::WEBHOOK_REFUSED).absolute(0);
    metrics::gauge!(m::BRIDGE_BACKLOG_BYTES).set(0.0);
    for name in [
        m::MESSAGES_RECEIVED,
        m::MQTT_OVERWRITTEN,
        m::MQTT_BACKPRESSURE,
        m::BRIDGE_ERRORS,
        m::READINGS_ACCEPTED,
        m::REJECTS_WRITTEN,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::counter!(m::READINGS_WRITTEN, "zone" => "raw").absolute(0);
    for reason in RejectReason::ALL {
        metrics::counter!(m::READINGS_REJECTED, "reason" => reason.code()).absolute(0);
    }
    Ok(handle)
}
