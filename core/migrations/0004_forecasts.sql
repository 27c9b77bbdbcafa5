-- Forecasts (the DynamoDB of the AWS design): each meter's newest forecast per hour, and the
-- totals per feeder and for the fleet. `ts` is the start of the hour, `made_at` when the
-- forecast was made, both microseconds since the epoch; energy in Wh.
CREATE TABLE forecasts (
    meter_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    p10 DOUBLE PRECISION NOT NULL,
    p50 DOUBLE PRECISION NOT NULL,
    p90 DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    made_at BIGINT NOT NULL,
    PRIMARY KEY (meter_id, ts)
);
-- scope: 'feeder' (name = the feeder) or 'fleet' (name = '').
CREATE TABLE forecast_totals (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    p10 DOUBLE PRECISION NOT NULL,
    p50 DOUBLE PRECISION NOT NULL,
    p90 DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL,
    made_at BIGINT NOT NULL,
    meters INTEGER NOT NULL,
    PRIMARY KEY (scope, name, ts)
);
