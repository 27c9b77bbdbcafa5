//! Names of the Prometheus metrics meterstack exports at `/metrics`.
//!
//! Every stage counts what goes in, what comes out, what it rejects and its errors. Labels stay
//! low-cardinality: a `reason`, a `zone` or a `topic`, never a meter id.

/// MQTT publishes the broker accepted and the bridge appended to the bus (one per message, which
/// may carry several readings).
pub const MESSAGES_RECEIVED: &str = "meterstack_messages_received_total";
/// Messages rumqttd acknowledged but overwrote before the bridge read them (the bridge fell
/// more than `mqtt.segments × mqtt.segment_bytes` behind, which the gate's backpressure
/// prevents). Should stay 0.
pub const MQTT_OVERWRITTEN: &str = "meterstack_mqtt_overwritten_total";
/// Times a meter connection waited because the bridge had too much outstanding (the gate stops
/// reading the meter until the bridge catches up, so rumqttd's log never overflows).
pub const MQTT_BACKPRESSURE: &str = "meterstack_mqtt_backpressure_total";
/// Bytes of meter publishes forwarded to rumqttd that the bridge has not yet put on the bus.
pub const BRIDGE_BACKLOG_BYTES: &str = "meterstack_bridge_backlog_bytes";
/// Bridge failures to append an accepted message to the bus.
pub const BRIDGE_ERRORS: &str = "meterstack_bridge_errors_total";
/// Readings decoded successfully from the wire format.
pub const READINGS_ACCEPTED: &str = "meterstack_readings_accepted_total";
/// Readings (or whole messages) rejected by the decoder, labelled `reason`.
pub const READINGS_REJECTED: &str = "meterstack_readings_rejected_total";
/// Readings written to the lake, labelled `zone` (`raw`).
pub const READINGS_WRITTEN: &str = "meterstack_readings_written_total";
/// Rejected records written to the rejected area of the raw zone.
pub const REJECTS_WRITTEN: &str = "meterstack_rejects_written_total";
/// Parquet files written to the lake, labelled `zone` and `table`.
pub const LAKE_FILES_WRITTEN: &str = "meterstack_lake_files_written_total";
/// Lake write failures (each is retried), labelled `zone`.
pub const LAKE_WRITE_ERRORS: &str = "meterstack_lake_write_errors_total";
/// Records appended to the bus, labelled `topic`.
pub const BUS_RECORDS_APPENDED: &str = "meterstack_bus_records_appended_total";
/// Records consumed from the bus, labelled `topic` and `group`.
pub const BUS_RECORDS_CONSUMED: &str = "meterstack_bus_records_consumed_total";
/// Records appended but not yet committed by a consumer group, labelled `topic` and `group`.
pub const BUS_CONSUMER_LAG: &str = "meterstack_bus_consumer_lag";
/// SQL queries answered, labelled `outcome` (`ok`, `invalid`, `error`).
pub const QUERIES: &str = "meterstack_queries_total";
/// HTTP requests, labelled `status` class (`2xx`, `4xx`, `5xx`).
pub const HTTP_REQUESTS: &str = "meterstack_http_requests_total";
/// Records deleted by retention, labelled `topic`.
pub const BUS_RETENTION_DELETED: &str = "meterstack_bus_retention_deleted_total";
/// Records a consumer group never saw because retention deleted them first, labelled `topic`
/// and `group`.
pub const BUS_RETENTION_SKIPPED: &str = "meterstack_bus_retention_skipped_total";
/// Damaged records skipped in the embedded log, labelled `topic`.
pub const BUS_CORRUPT_RECORDS: &str = "meterstack_bus_corrupt_records_total";
/// Failed bus operations of a consumer (retried), labelled `op` (`poll`, `commit`).
pub const BUS_ERRORS: &str = "meterstack_bus_errors_total";
/// Seconds from the bridge receiving a batch of acknowledged MQTT messages to the bus holding
/// it: the window in which an acknowledged message exists only in rumqttd's memory.
pub const BRIDGE_APPEND_SECONDS: &str = "meterstack_bridge_append_seconds";
/// MQTT connections, publishes and subscriptions the gate refused, labelled `reason` (see
/// `meterstack_broker::Refusal`): bad or missing credentials, spoofing attempts, limits.
pub const MQTT_REFUSED: &str = "meterstack_mqtt_refused_total";
/// MQTT connections accepted, labelled `auth` (`secret`, `certificate`, `none`).
pub const MQTT_CONNECTS: &str = "meterstack_mqtt_connects_total";
/// Meter connections open now.
pub const MQTT_CONNECTIONS: &str = "meterstack_mqtt_connections";
/// Times a meter's publishes were delayed because it exceeded `mqtt.limits.publish_rate`.
pub const MQTT_THROTTLED: &str = "meterstack_mqtt_throttled_total";
/// Meters registered automatically on first connect (development mode only).
pub const METERS_AUTO_REGISTERED: &str = "meterstack_meters_auto_registered_total";
/// Connectivity updates the broker could not record (store or bus unavailable), labelled
/// `sink` (`store`, `bus`).
pub const CONNECTIVITY_ERRORS: &str = "meterstack_connectivity_errors_total";
/// Commands published to meters.
pub const COMMANDS_SENT: &str = "meterstack_commands_sent_total";
/// API requests refused for a missing, unknown or revoked key (401) or a role without the
/// permission (403), labelled `status`.
pub const API_AUTH_REFUSED: &str = "meterstack_api_auth_refused_total";
/// Readings the pipeline validated, labelled `quality` and `rule` (`none` when no rule fired).
pub const PIPELINE_READINGS: &str = "meterstack_pipeline_readings_total";
/// Window aggregates emitted, labelled `window` and `version` (`first`, `restated`).
pub const PIPELINE_AGGREGATES: &str = "meterstack_pipeline_aggregates_total";
/// Alert lifecycle events, labelled `type` and `event` (`opened`, `resolved`).
pub const PIPELINE_ALERTS: &str = "meterstack_pipeline_alerts_total";
/// Alert lifecycle changes stored, by `transition` (opened, acknowledged, resolved).
pub const ALERTS_TRANSITIONS: &str = "meterstack_alerts_transitions_total";
/// Records on `alerts` that are not alert events, or that the store refused (skipped).
pub const ALERTS_INVALID: &str = "meterstack_alerts_invalid_total";
/// Failed attempts to store a batch of alert events (retried).
pub const ALERTS_STORE_ERRORS: &str = "meterstack_alerts_store_errors_total";
/// Webhook delivery attempts, by `outcome` (delivered, retry, dead, gone).
pub const WEBHOOK_ATTEMPTS: &str = "meterstack_webhook_attempts_total";
/// Seconds from an alert event's commit to its delivery's 2xx answer (first attempts).
pub const WEBHOOK_DELIVERY_SECONDS: &str = "meterstack_webhook_delivery_seconds";
/// Webhook connections refused by the SSRF guard (a target resolving to a non-public address).
pub const WEBHOOK_REFUSED: &str = "meterstack_webhook_refused_total";
/// Reminders sent for alerts left unacknowledged.
pub const ALERT_REMINDERS: &str = "meterstack_alert_reminders_total";
/// Dispatcher failures to read or update the outbox (retried).
pub const WEBHOOK_STORE_ERRORS: &str = "meterstack_webhook_store_errors_total";
/// Missing intervals the pipeline asked meters to resend.
pub const PIPELINE_RESEND_REQUESTED: &str = "meterstack_pipeline_resend_requested_intervals_total";
/// Requested intervals that came back.
pub const PIPELINE_RESEND_RECOVERED: &str = "meterstack_pipeline_resend_recovered_intervals_total";
/// Share of a feeder's expected intervals received on its last completed day, labelled
/// `feeder`.
pub const PIPELINE_COMPLETENESS: &str = "meterstack_pipeline_completeness_ratio";
/// Pipeline checkpoints written.
pub const PIPELINE_CHECKPOINTS: &str = "meterstack_pipeline_checkpoints_total";
/// Failed pipeline operations (retried), labelled `op` (`append`, `checkpoint`, `commit`).
pub const PIPELINE_ERRORS: &str = "meterstack_pipeline_errors_total";
/// ETL runs from the raw to the trusted zone, by `outcome` (`ok`, `error`).
pub const ETL_RUNS: &str = "meterstack_etl_runs_total";
/// Raw readings the ETL read.
pub const ETL_READINGS_READ: &str = "meterstack_etl_readings_read_total";
/// Raw readings the ETL dropped as duplicates of one (meter, timestamp).
pub const ETL_DUPLICATES: &str = "meterstack_etl_duplicates_total";
/// Trusted partitions (re)written, by `table`.
pub const ETL_PARTITIONS_WRITTEN: &str = "meterstack_etl_partitions_written_total";
/// Raw files merged by compaction, by `table`.
pub const ETL_FILES_COMPACTED: &str = "meterstack_etl_files_compacted_total";
/// Partitions retired by retention, by `table`.
pub const ETL_PARTITIONS_EXPIRED: &str = "meterstack_etl_partitions_expired_total";
/// Retired files (merged by compaction, expired by retention) deleted after their grace.
pub const ETL_FILES_DELETED: &str = "meterstack_etl_files_deleted_total";
/// Raw files the ETL could not read (damaged), skipped and left in place.
pub const ETL_UNREADABLE_FILES: &str = "meterstack_etl_unreadable_files_total";
/// SQL queries running now (gauge).
pub const QUERIES_RUNNING: &str = "meterstack_queries_running";
/// Live feed connections open now (gauge).
pub const LIVE_CLIENTS: &str = "meterstack_live_clients";
/// Messages queued to live feed clients, by `channel`.
pub const LIVE_MESSAGES: &str = "meterstack_live_messages_total";
/// Messages a live feed client lost because its queue was full.
pub const LIVE_DROPPED: &str = "meterstack_live_dropped_total";
/// Live feed connections ended, by `reason` (closed, silent, slow, shutdown, full).
pub const LIVE_DISCONNECTS: &str = "meterstack_live_disconnects_total";
/// Live feed client messages refused (not JSON, not a request, too large).
pub const LIVE_BAD_MESSAGES: &str = "meterstack_live_bad_messages_total";
