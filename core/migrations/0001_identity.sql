-- The meter registry, meter credentials and connectivity, and API keys.
-- Written once for SQLite and PostgreSQL: only types and syntax both accept.
-- Instants are microseconds since the Unix epoch (UTC); dates are ISO 8601 text.

CREATE TABLE meters (
    meter_id        TEXT PRIMARY KEY,
    site_ref        TEXT,
    customer_ref    TEXT,
    feeder          TEXT,
    transformer     TEXT,
    lat             DOUBLE PRECISION,
    lon             DOUBLE PRECISION,
    meter_class     TEXT,
    rated_current_a DOUBLE PRECISION,
    tariff_id       TEXT,
    status          TEXT NOT NULL,
    installed_on    TEXT,
    exchanged_on    TEXT,
    auto_registered BIGINT NOT NULL,
    secret_hash     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX meters_feeder ON meters (feeder, meter_id);
CREATE INDEX meters_transformer ON meters (transformer, meter_id);

-- The latest connect/disconnect of each meter, and when it was last heard from.
CREATE TABLE meter_connectivity (
    meter_id        TEXT PRIMARY KEY,
    online          BIGINT NOT NULL,
    session_id      TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    remote_addr     TEXT NOT NULL,
    connected_at    BIGINT NOT NULL,
    disconnected_at BIGINT,
    disconnect_reason TEXT,
    last_seen       BIGINT NOT NULL
);

-- Client certificates issued by the built-in CA (`meterstack certs issue`).
CREATE TABLE meter_certificates (
    serial     TEXT PRIMARY KEY,
    meter_id   TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    issued_at  BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX meter_certificates_meter ON meter_certificates (meter_id);

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    key_hash   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
