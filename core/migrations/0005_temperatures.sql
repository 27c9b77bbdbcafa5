-- Outdoor temperature per area, hourly, for forecasting: an area is a feeder, or '*' for every
-- meter whose feeder has no series of its own. `ts` is the start of the hour (microseconds
-- since the epoch), `temperature_c` its mean in °C. Observations and weather forecasts alike:
-- the newest import of an hour replaces the older one.
CREATE TABLE temperatures (
    area TEXT NOT NULL,
    ts BIGINT NOT NULL,
    temperature_c DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (area, ts)
);
