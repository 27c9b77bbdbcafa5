-- Bills of billing runs (`meterstack billing run`): one row per meter, period (the cycle's
-- month, 'YYYY-MM') and revision. A run that bills a period again (late data restated its
-- intervals) adds a revision when the bill changed and keeps the older ones. `lines` and
-- `carry` are JSON text; dates are local ISO dates; `created_at` microseconds since the epoch.
CREATE TABLE bills (
    meter_id TEXT NOT NULL,
    period TEXT NOT NULL,
    revision INTEGER NOT NULL,
    tariff_id TEXT NOT NULL,
    tariff_version INTEGER NOT NULL,
    bill_from TEXT NOT NULL,
    bill_to TEXT NOT NULL,
    currency TEXT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    estimated_share DOUBLE PRECISION NOT NULL,
    lines TEXT NOT NULL,
    carry TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (meter_id, period, revision)
);
