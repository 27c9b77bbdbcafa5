-- Alerts and their lifecycle (open -> acknowledged -> resolved). Instants are microseconds
-- since the epoch. `subject` is what an alert is about: its meter, or its feeder for feeder
-- alerts; at most one alert per (type, subject) is active (not resolved).
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    alert_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    meter_id TEXT,
    feeder TEXT,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at BIGINT,
    resolved_by TEXT,
    resolved_at BIGINT,
    evidence TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_one_active ON alerts (alert_type, subject) WHERE state <> 'resolved';
CREATE INDEX alerts_by_start ON alerts (started_at);
CREATE INDEX alerts_by_meter ON alerts (meter_id, started_at);
