-- deskwire broker store, schema 1: accounts, devices, connection codes, sessions, audit log.
--
-- This one file runs unchanged on SQLite and PostgreSQL, so it sticks to what both accept:
-- * BIGINT and TEXT everywhere; BYTEA for raw bytes (SQLite gives an unknown type name
--   NUMERIC affinity, which stores blob values untouched).
-- * No BOOLEAN: sqlx's Any driver cannot decode a SQLite column declared BOOLEAN.
-- * No SERIAL / AUTOINCREMENT / IDENTITY (no common spelling): ids come from id_counters.
-- * Times are Unix milliseconds (BIGINT), written by the broker, never by the database.
-- * Enumerations are TEXT; CHECK only where the set is part of the design (code states,
--   acceptance modes), so a new permission or audit event needs no table rebuild in SQLite.

CREATE TABLE id_counters (
    name    TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
INSERT INTO id_counters (name, last_id) VALUES
    ('company', 0), ('tech_group', 0), ('technician', 0), ('api_token', 0), ('session', 0);

CREATE TABLE companies (
    id          BIGINT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- "groups" is a keyword in both dialects (window frames).
CREATE TABLE tech_groups (
    id                      BIGINT PRIMARY KEY,
    company_id              BIGINT NOT NULL REFERENCES companies (id),
    name                    TEXT NOT NULL,
    acceptance              TEXT NOT NULL CHECK (acceptance IN ('auto', 'request', 'deny')),
    auto_reject_secs        BIGINT NOT NULL,
    request_timeout_secs    BIGINT NOT NULL,
    max_sessions            BIGINT NULL, -- NULL: no cap
    created_at              BIGINT NOT NULL,
    UNIQUE (company_id, name)
);

CREATE TABLE group_permissions (
    group_id    BIGINT NOT NULL REFERENCES tech_groups (id) ON DELETE CASCADE,
    permission  TEXT NOT NULL,
    PRIMARY KEY (group_id, permission)
);

CREATE TABLE technicians (
    id              BIGINT PRIMARY KEY,
    group_id        BIGINT NOT NULL REFERENCES tech_groups (id),
    name            TEXT NOT NULL UNIQUE,
    password_hash   TEXT NULL, -- Argon2id PHC string; NULL: token login only
    created_at      BIGINT NOT NULL
);
CREATE INDEX technicians_by_group ON technicians (group_id);

-- A token is "dw_<lookup>_<secret>": the lookup finds the row, only the secret's Argon2id
-- hash is kept.
CREATE TABLE api_tokens (
    id              BIGINT PRIMARY KEY,
    technician_id   BIGINT NOT NULL REFERENCES technicians (id),
    lookup          TEXT NOT NULL UNIQUE,
    secret_hash     TEXT NOT NULL,
    label           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT NULL
);
CREATE INDEX api_tokens_by_technician ON api_tokens (technician_id);

CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    public_key  BYTEA NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);

-- Connection codes by the part the broker knows. Rows stay after use as tombstones (so a
-- reused code is told apart from a wrong one) until purged after their retention.
CREATE TABLE codes (
    session_code            TEXT PRIMARY KEY,
    technician_id           BIGINT NULL REFERENCES technicians (id),
    issued_at               BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    state                   TEXT NOT NULL
                            CHECK (state IN ('pending', 'redeemed', 'cancelled', 'burned')),
    failed_confirmations    BIGINT NOT NULL,
    closed_at               BIGINT NULL
);
CREATE INDEX codes_by_expiry ON codes (expires_at);

CREATE TABLE sessions (
    id              BIGINT PRIMARY KEY,
    session_code    TEXT NOT NULL,
    technician_id   BIGINT NULL REFERENCES technicians (id),
    device_id       TEXT NULL REFERENCES devices (id),
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT NULL,
    ended_by        TEXT NULL CHECK (ended_by IN ('controller', 'target', 'broker')),
    end_reason      TEXT NULL
);
CREATE INDEX sessions_by_technician ON sessions (technician_id, ended_at);

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical row), both hex. No
-- foreign keys: the log must outlive the rows it mentions and never block their removal.
CREATE TABLE audit_log (
    id              BIGINT PRIMARY KEY,
    at              BIGINT NOT NULL,
    event           TEXT NOT NULL,
    technician_id   BIGINT NULL,
    device_id       TEXT NULL,
    source_addr     TEXT NULL,
    session_code    TEXT NULL,
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);

-- The chain head: appenders lock this row first, which serialises them (no forked chain),
-- and verification compares it with the last row (a truncated log is detected).
CREATE TABLE audit_head (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    last_id     BIGINT NOT NULL,
    last_hash   TEXT NOT NULL
);
INSERT INTO audit_head (id, last_id, last_hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
