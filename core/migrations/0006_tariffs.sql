-- Tariffs, versioned: each version of a tariff applies from `effective_from` to
-- `effective_to` (local ISO dates, both included; NULL: until a later version starts) and
-- holds its document (the native form with the URDB record, JSON text) as imported. Versions
-- of one tariff never overlap; a meter's `tariff_id` links it to all of them.
CREATE TABLE tariffs (
    tariff_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    effective_from TEXT NOT NULL,
    effective_to TEXT,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    document TEXT NOT NULL,
    imported_at BIGINT NOT NULL,
    PRIMARY KEY (tariff_id, version)
);
