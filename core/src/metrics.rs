//! Names of the Prometheus metrics meterstack exports at `/metrics`.
//!
//! Every stage counts what goes in, what comes out, what it rejects and its errors. Labels stay
//! low-cardinality: a `reason`, a `zone` or a `topic`, never a meter id.
//!
//! Each metric is declared once, below, with its kind and its help text: [`ALL`] is what the
//! binary describes to the Prometheus exporter, so the name, the kind and the help cannot drift
//! apart.

/// What a metric measures over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// A value now.
    Gauge,
    /// A distribution (`_seconds`).
    Histogram,
}

/// A metric: its name, kind and help, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` line.
    pub help: &'static str,
}

/// Declares each metric's name constant and its entry in [`ALL`].
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $kind:ident $id:ident = $name:literal, $help:literal; )*) => {
        $( $(#[doc = $doc])* pub const $id: &str = $name; )*

        /// Every metric meterstack exports.
        pub const ALL: &[Metric] = &[
            $( Metric { name: $name, kind: Kind::$kind, help: $help } ),*
        ];
    };
}

metrics! {
    /// MQTT publishes the broker accepted and the bridge appended to the bus (one per message, which
    /// may carry several readings).
    Counter MESSAGES_RECEIVED = "meterstack_messages_received_total",
        "MQTT publishes accepted by the broker and appended to the bus";
    /// Messages rumqttd acknowledged but overwrote before the bridge read them (the bridge fell
    /// more than `mqtt.segments × mqtt.segment_bytes` behind, which the gate's backpressure
    /// prevents). Should stay 0.
    Counter MQTT_OVERWRITTEN = "meterstack_mqtt_overwritten_total",
        "Acknowledged MQTT messages rumqttd overwrote before the bridge read them";
    /// Times a meter connection waited because the bridge had too much outstanding (the gate stops
    /// reading the meter until the bridge catches up, so rumqttd's log never overflows).
    Counter MQTT_BACKPRESSURE = "meterstack_mqtt_backpressure_total",
        "Times a meter connection waited for the bridge to catch up with the broker";
    /// Bytes of meter publishes forwarded to rumqttd that the bridge has not yet put on the bus.
    Gauge BRIDGE_BACKLOG_BYTES = "meterstack_bridge_backlog_bytes",
        "Bytes of meter publishes in the broker that the bridge has not yet put on the bus";
    /// Bridge failures to append an accepted message to the bus.
    Counter BRIDGE_ERRORS = "meterstack_bridge_errors_total",
        "Failed attempts to append accepted publishes to the bus (retried)";
    /// Readings decoded successfully from the wire format.
    Counter READINGS_ACCEPTED = "meterstack_readings_accepted_total",
        "Readings decoded successfully";
    /// Readings (or whole messages) rejected by the decoder, labelled `reason`.
    Counter READINGS_REJECTED = "meterstack_readings_rejected_total",
        "Messages or readings rejected by the decoder, by reason";
    /// Readings written to the lake, labelled `zone` (`raw`).
    Counter READINGS_WRITTEN = "meterstack_readings_written_total",
        "Readings written to the lake, by zone";
    /// Rejected records written to the rejected area of the raw zone.
    Counter REJECTS_WRITTEN = "meterstack_rejects_written_total",
        "Rejected records written to the rejected area of the raw zone";
    /// Parquet files written to the lake, labelled `zone` and `table`.
    Counter LAKE_FILES_WRITTEN = "meterstack_lake_files_written_total",
        "Parquet files written to the lake";
    /// Lake write failures (each is retried), labelled `zone`.
    Counter LAKE_WRITE_ERRORS = "meterstack_lake_write_errors_total",
        "Failed lake writes (retried)";
    /// Records appended to the bus, labelled `topic`.
    Counter BUS_RECORDS_APPENDED = "meterstack_bus_records_appended_total",
        "Records appended to the bus, by topic";
    /// Records consumed from the bus, labelled `topic` and `group`.
    Counter BUS_RECORDS_CONSUMED = "meterstack_bus_records_consumed_total",
        "Records consumed from the bus, by topic and group";
    /// Records appended but not yet committed by a consumer group, labelled `topic` and `group`.
    Gauge BUS_CONSUMER_LAG = "meterstack_bus_consumer_lag",
        "Records appended but not committed, by topic and group";
    /// SQL queries answered, labelled `outcome` (`ok`, `invalid`, `error`).
    Counter QUERIES = "meterstack_queries_total",
        "SQL queries answered, by outcome";
    /// HTTP requests, labelled `status` class (`2xx`, `4xx`, `5xx`).
    Counter HTTP_REQUESTS = "meterstack_http_requests_total",
        "HTTP requests, by status class";
    /// Records deleted by retention, labelled `topic`.
    Counter BUS_RETENTION_DELETED = "meterstack_bus_retention_deleted_total",
        "Bus records deleted by retention, by topic";
    /// Records a consumer group never saw because retention deleted them first, labelled `topic`
    /// and `group`.
    Counter BUS_RETENTION_SKIPPED = "meterstack_bus_retention_skipped_total",
        "Bus records a group never consumed because retention deleted them first";
    /// Damaged records skipped in the embedded log, labelled `topic`.
    Counter BUS_CORRUPT_RECORDS = "meterstack_bus_corrupt_records_total",
        "Damaged records skipped in the embedded bus, by topic";
    /// Failed bus operations of a consumer (retried), labelled `op` (`poll`, `commit`) and
    /// `consumer` (its group, or the topic it follows).
    Counter BUS_ERRORS = "meterstack_bus_errors_total",
        "Failed bus polls and commits of consumers (retried), by op and consumer";
    /// Failed attempts of a consumer to make its output durable (retried in place), labelled
    /// `consumer`; each stage also counts its own kind of failure (lake writes, alert store,
    /// pipeline appends and checkpoints).
    Counter CONSUMER_OUTPUT_ERRORS = "meterstack_consumer_output_errors_total",
        "Failed attempts of a consumer to make its output durable (retried), by consumer";
    /// Seconds from the bridge receiving a batch of acknowledged MQTT messages to the bus holding
    /// it: the window in which an acknowledged message exists only in rumqttd's memory.
    Histogram BRIDGE_APPEND_SECONDS = "meterstack_bridge_append_seconds",
        "Seconds acknowledged MQTT messages wait in the broker before the bus holds them";
    /// MQTT connections, publishes and subscriptions the gate refused, labelled `reason` (see
    /// `meterstack_broker::Refusal`): bad or missing credentials, spoofing attempts, limits.
    Counter MQTT_REFUSED = "meterstack_mqtt_refused_total",
        "MQTT connections, publishes and subscriptions refused by the gate, by reason";
    /// MQTT connections accepted, labelled `auth` (`secret`, `certificate`, `none`).
    Counter MQTT_CONNECTS = "meterstack_mqtt_connects_total",
        "MQTT connections accepted, by auth method";
    /// Meter connections open now.
    Gauge MQTT_CONNECTIONS = "meterstack_mqtt_connections",
        "Meter connections open now";
    /// Times a meter's publishes were delayed because it exceeded `mqtt.limits.publish_rate`.
    Counter MQTT_THROTTLED = "meterstack_mqtt_throttled_total",
        "Times a meter was slowed down for exceeding mqtt.limits.publish_rate";
    /// Meters registered automatically on first connect (development mode only).
    Counter METERS_AUTO_REGISTERED = "meterstack_meters_auto_registered_total",
        "Meters registered on first connect (development mode)";
    /// Connectivity updates the broker could not record (store or bus unavailable), labelled
    /// `sink` (`store`, `bus`).
    Counter CONNECTIVITY_ERRORS = "meterstack_connectivity_errors_total",
        "Connectivity updates that could not be recorded, by sink";
    /// Commands published to meters.
    Counter COMMANDS_SENT = "meterstack_commands_sent_total",
        "Commands published to meters";
    /// API requests refused for a missing, unknown or revoked key (401) or a role without the
    /// permission (403), labelled `status`.
    Counter API_AUTH_REFUSED = "meterstack_api_auth_refused_total",
        "API requests refused for a missing or revoked key (401) or role (403)";
    /// Readings the pipeline validated, labelled `quality` and `rule` (`none` when no rule fired).
    Counter PIPELINE_READINGS = "meterstack_pipeline_readings_total",
        "Readings the pipeline validated, labelled quality and rule (none when no rule fired)";
    /// Window aggregates emitted, labelled `window` and `version` (`first`, `restated`).
    Counter PIPELINE_AGGREGATES = "meterstack_pipeline_aggregates_total",
        "Window aggregates emitted, labelled window and version (first, restated)";
    /// Alert lifecycle events, labelled `type` and `event` (`opened`, `resolved`).
    Counter PIPELINE_ALERTS = "meterstack_pipeline_alerts_total",
        "Alert lifecycle events, labelled type and event (opened, resolved)";
    /// Alert lifecycle changes stored, by `transition` (opened, acknowledged, resolved).
    Counter ALERTS_TRANSITIONS = "meterstack_alerts_transitions_total",
        "Alert lifecycle changes stored, by transition";
    /// Records on `alerts` that are not alert events, or that the store refused (skipped).
    Counter ALERTS_INVALID = "meterstack_alerts_invalid_total",
        "Records on the alerts topic that are not alert events (skipped)";
    /// Failed attempts to store a batch of alert events (retried).
    Counter ALERTS_STORE_ERRORS = "meterstack_alerts_store_errors_total",
        "Failed attempts to store a batch of alert events (retried)";
    /// Webhook delivery attempts, by `outcome` (delivered, retry, dead, gone).
    Counter WEBHOOK_ATTEMPTS = "meterstack_webhook_attempts_total",
        "Webhook delivery attempts, by outcome (delivered, retry, dead, gone)";
    /// Seconds from an alert event's commit to its delivery's 2xx answer (first attempts).
    Histogram WEBHOOK_DELIVERY_SECONDS = "meterstack_webhook_delivery_seconds",
        "Seconds from an alert event's commit to the 2xx answer of its first delivery attempt";
    /// Webhook connections refused by the SSRF guard (a target resolving to a non-public address).
    Counter WEBHOOK_REFUSED = "meterstack_webhook_refused_total",
        "Webhook connections refused by the SSRF guard";
    /// Reminders sent for alerts left unacknowledged.
    Counter ALERT_REMINDERS = "meterstack_alert_reminders_total",
        "Reminders sent for unacknowledged alerts, by severity";
    /// Dispatcher failures to read or update the outbox (retried).
    Counter WEBHOOK_STORE_ERRORS = "meterstack_webhook_store_errors_total",
        "Failed reads or updates of the webhook outbox (retried)";
    /// Missing intervals the pipeline asked meters to resend.
    Counter PIPELINE_RESEND_REQUESTED = "meterstack_pipeline_resend_requested_intervals_total",
        "Missing intervals the pipeline asked meters to resend";
    /// Requested intervals that came back.
    Counter PIPELINE_RESEND_RECOVERED = "meterstack_pipeline_resend_recovered_intervals_total",
        "Requested intervals that came back";
    /// Share of a feeder's expected intervals received on its last completed day, labelled
    /// `feeder`.
    Gauge PIPELINE_COMPLETENESS = "meterstack_pipeline_completeness_ratio",
        "Share of a feeder's expected intervals received on its last completed day, labelled feeder";
    /// Pipeline checkpoints written.
    Counter PIPELINE_CHECKPOINTS = "meterstack_pipeline_checkpoints_total",
        "Pipeline checkpoints written";
    /// Failed pipeline operations (retried), labelled `op` (`append`, `checkpoint`); its bus polls
    /// and commits count in [`BUS_ERRORS`].
    Counter PIPELINE_ERRORS = "meterstack_pipeline_errors_total",
        "Failed pipeline appends and checkpoints (retried), by op";
    /// ETL runs from the raw to the trusted zone, by `outcome` (`ok`, `error`).
    Counter ETL_RUNS = "meterstack_etl_runs_total",
        "ETL runs from the raw to the trusted zone, by outcome (ok, error)";
    /// Raw readings the ETL read.
    Counter ETL_READINGS_READ = "meterstack_etl_readings_read_total",
        "Raw readings the ETL read";
    /// Raw readings the ETL dropped as duplicates of one (meter, timestamp).
    Counter ETL_DUPLICATES = "meterstack_etl_duplicates_total",
        "Raw readings the ETL dropped as duplicates of one (meter, timestamp)";
    /// Trusted partitions (re)written, by `table`.
    Counter ETL_PARTITIONS_WRITTEN = "meterstack_etl_partitions_written_total",
        "Trusted partitions (re)written, by table";
    /// Raw files merged by compaction, by `table`.
    Counter ETL_FILES_COMPACTED = "meterstack_etl_files_compacted_total",
        "Raw files merged by compaction, by table";
    /// Partitions retired by retention, by `table`.
    Counter ETL_PARTITIONS_EXPIRED = "meterstack_etl_partitions_expired_total",
        "Partitions retired by retention, by table";
    /// Retired files (merged by compaction, expired by retention) deleted after their grace.
    Counter ETL_FILES_DELETED = "meterstack_etl_files_deleted_total",
        "Retired files (merged by compaction, expired by retention) deleted after their grace";
    /// Raw files the ETL could not read (damaged), skipped and left in place.
    Counter ETL_UNREADABLE_FILES = "meterstack_etl_unreadable_files_total",
        "Raw files the ETL could not read (damaged), skipped and left in place";
    /// Model trainings by the `ml` role, by `outcome` (`promoted`, `kept`, `no_data`, `error`).
    Counter ML_TRAININGS = "meterstack_ml_trainings_total",
        "Model trainings by the ml role, by outcome (promoted, kept, no_data, error)";
    /// Forecast runs of the `ml` role, by `outcome` (`ok`, `no_model`, `error`).
    Counter ML_FORECAST_RUNS = "meterstack_ml_forecast_runs_total",
        "Forecast runs of the ml role, by outcome (ok, no_model, error)";
    /// Forecast hours written to the SQL store (meters and totals).
    Counter ML_FORECAST_ROWS = "meterstack_ml_forecast_rows_total",
        "Forecast hours written to the SQL store (meters and totals)";
    /// Forecast-deviation alert events the `ml` role published, by `event` (`opened`,
    /// `resolved`).
    Counter ML_DEVIATION_EVENTS = "meterstack_ml_deviation_events_total",
        "Forecast-deviation alert events the ml role published, by event (opened, resolved)";
    /// SQL queries running now (gauge).
    Gauge QUERIES_RUNNING = "meterstack_queries_running",
        "SQL queries running now (gauge)";
    /// Live feed connections open now (gauge).
    Gauge LIVE_CLIENTS = "meterstack_live_clients",
        "Live feed connections open now";
    /// Messages queued to live feed clients, by `channel`.
    Counter LIVE_MESSAGES = "meterstack_live_messages_total",
        "Messages queued to live feed clients, by channel";
    /// Messages a live feed client lost because its queue was full.
    Counter LIVE_DROPPED = "meterstack_live_dropped_total",
        "Messages live feed clients lost because they read too slowly";
    /// Live feed connections ended, by `reason` (closed, silent, slow, shutdown, full).
    Counter LIVE_DISCONNECTS = "meterstack_live_disconnects_total",
        "Live feed connections ended, by reason (closed, silent, slow, shutdown, full)";
    /// Live feed client messages refused (not JSON, not a request, too large).
    Counter LIVE_BAD_MESSAGES = "meterstack_live_bad_messages_total",
        "Live feed client messages refused (not JSON, not a request, too large)";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a metric is declared twice");
        for m in ALL {
            assert!(m.name.starts_with("meterstack_"), "{}", m.name);
            assert!(!m.help.is_empty(), "{} has no help", m.name);
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                m.name
            );
        }
    }
}
