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
    const COUNTERS: [(&str, &str); 36] = [
        (
            m::MQTT_REFUSED,
            "MQTT connections, publishes and subscriptions refused by the gate, by reason",
        ),
        (
            m::MQTT_CONNECTS,
            "MQTT connections accepted, by auth method",
        ),
        (
            m::MQTT_THROTTLED,
            "Times a meter was slowed down for exceeding mqtt.limits.publish_rate",
        ),
        (
            m::METERS_AUTO_REGISTERED,
            "Meters registered on first connect (development mode)",
        ),
        (
            m::CONNECTIVITY_ERRORS,
            "Connectivity updates that could not be recorded, by sink",
        ),
        (m::COMMANDS_SENT, "Commands published to meters"),
        (
            m::API_AUTH_REFUSED,
            "API requests refused for a missing or revoked key (401) or role (403)",
        ),
        (
            m::BUS_ERRORS,
            "Failed bus polls and commits of consumers (retried), by op",
        ),
        (
            m::MESSAGES_RECEIVED,
            "MQTT publishes accepted by the broker and appended to the bus",
        ),
        (
            m::MQTT_OVERWRITTEN,
            "Acknowledged MQTT messages rumqttd overwrote before the bridge read them",
        ),
        (
            m::MQTT_BACKPRESSURE,
            "Times a meter connection waited for the bridge to catch up with the broker",
        ),
        (
            m::BRIDGE_ERRORS,
            "Failed attempts to append accepted publishes to the bus (retried)",
        ),
        (m::READINGS_ACCEPTED, "Readings decoded successfully"),
        (
            m::READINGS_REJECTED,
            "Messages or readings rejected by the decoder, by reason",
        ),
        (m::READINGS_WRITTEN, "Readings written to the lake, by zone"),
        (
            m::REJECTS_WRITTEN,
            "Rejected records written to the rejected area of the raw zone",
        ),
        (m::LAKE_FILES_WRITTEN, "Parquet files written to the lake"),
        (m::LAKE_WRITE_ERRORS, "Failed lake writes (retried)"),
        (
            m::BUS_RECORDS_APPENDED,
            "Records appended to the bus, by topic",
        ),
        (
            m::BUS_RECORDS_CONSUMED,
            "Records consumed from the bus, by topic and group",
        ),
        (
            m::BUS_RETENTION_DELETED,
            "Bus records deleted by retention, by topic",
        ),
        (
            m::BUS_RETENTION_SKIPPED,
            "Bus records a group never consumed because retention deleted them first",
        ),
        (
            m::BUS_CORRUPT_RECORDS,
            "Damaged records skipped in the embedded bus, by topic",
        ),
        (m::QUERIES, "SQL queries answered, by outcome"),
        (
            m::ALERTS_TRANSITIONS,
            "Alert lifecycle changes stored, by transition",
        ),
        (
            m::ALERTS_INVALID,
            "Records on the alerts topic that are not alert events (skipped)",
        ),
        (
            m::ALERTS_STORE_ERRORS,
            "Failed attempts to store a batch of alert events (retried)",
        ),
        (
            m::WEBHOOK_ATTEMPTS,
            "Webhook delivery attempts, by outcome (delivered, retry, dead, gone)",
        ),
        (
            m::WEBHOOK_REFUSED,
            "Webhook connections refused by the SSRF guard",
        ),
        (
            m::WEBHOOK_STORE_ERRORS,
            "Failed reads or updates of the webhook outbox (retried)",
        ),
        (
            m::ALERT_REMINDERS,
            "Reminders sent for unacknowledged alerts, by severity",
        ),
        (m::HTTP_REQUESTS, "HTTP requests, by status class"),
        (
            m::LIVE_MESSAGES,
            "Messages queued to live feed clients, by channel",
        ),
        (
            m::LIVE_DROPPED,
            "Messages live feed clients lost because they read too slowly",
        ),
        (
            m::LIVE_DISCONNECTS,
            "Live feed connections ended, by reason (closed, silent, slow, shutdown, full)",
        ),
        (
            m::LIVE_BAD_MESSAGES,
            "Live feed client messages refused (not JSON, not a request, too large)",
        ),
    ];
    metrics::describe_gauge!(m::LIVE_CLIENTS, "Live feed connections open now");
    metrics::gauge!(m::LIVE_CLIENTS).set(0.0);
    metrics::counter!(m::LIVE_DROPPED).absolute(0);
    metrics::counter!(m::LIVE_BAD_MESSAGES).absolute(0);
    metrics::describe_gauge!(m::MQTT_CONNECTIONS, "Meter connections open now");
    for reason in meterstack_broker::REFUSAL_REASONS {
        metrics::counter!(m::MQTT_REFUSED, "reason" => reason).absolute(0);
    }
    metrics::counter!(m::MQTT_THROTTLED).absolute(0);
    metrics::gauge!(m::MQTT_CONNECTIONS).set(0.0);
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_histogram!(
        m::BRIDGE_APPEND_SECONDS,
        "Seconds acknowledged MQTT messages wait in the broker before the bus holds them"
    );
    metrics::describe_histogram!(
        m::WEBHOOK_DELIVERY_SECONDS,
        "Seconds from an alert event's commit to the 2xx answer of its first delivery attempt"
    );
    metrics::counter!(m::WEBHOOK_REFUSED).absolute(0);
    metrics::describe_gauge!(
        m::BRIDGE_BACKLOG_BYTES,
        "Bytes of meter publishes in the broker that the bridge has not yet put on the bus"
    );
    metrics::gauge!(m::BRIDGE_BACKLOG_BYTES).set(0.0);
    metrics::describe_gauge!(
        m::BUS_CONSUMER_LAG,
        "Records appended but not committed, by topic and group"
    );
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
