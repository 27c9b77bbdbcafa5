-- Alert delivery: every lifecycle event of every alert in commit order (the pull API's feed
-- and the webhooks' source), webhook subscriptions, and the outbox of deliveries with the log
-- of their attempts. Instants are microseconds since the epoch; booleans are 0/1.

-- When the last reminder for an unacknowledged alert was sent.
ALTER TABLE alerts ADD COLUMN reminded_at BIGINT;

-- Counters handed out under a row lock: a writer that takes number n commits before any
-- writer can take n + 1, so readers of `seq > cursor` never skip a later-committed event.
CREATE TABLE sequences (
    name TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);
INSERT INTO sequences (name, last) VALUES ('alert_events', 0);

CREATE TABLE alert_events (
    seq BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alert_events_by_alert ON alert_events (alert_id, seq);

CREATE TABLE subscriptions (
    subscription_id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    url TEXT NOT NULL,
    types TEXT NOT NULL,
    min_severity TEXT,
    meters TEXT NOT NULL,
    feeders TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until BIGINT,
    enabled BIGINT NOT NULL,
    disabled_reason TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The outbox: one row per (subscription, event), pending until delivered or dead.
CREATE TABLE deliveries (
    subscription_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    PRIMARY KEY (subscription_id, seq)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);

CREATE TABLE delivery_attempts (
    subscription_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status BIGINT,
    latency_us BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (subscription_id, seq, attempt)
);
CREATE INDEX delivery_attempts_by_time ON delivery_attempts (subscription_id, at);
