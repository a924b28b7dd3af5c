//! Migrations, applied in order; `PRAGMA user_version` records how many have run.
//!
//! Times are integer milliseconds since the Unix epoch. Lists of strings and maps are JSON
//! text. The delivery queue is the `destination` table itself: a row is due when
//! `next_attempt` has passed and no live lease holds it.

pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE app (
    id            TEXT PRIMARY KEY,
    uid           TEXT UNIQUE,
    name          TEXT NOT NULL,
    throttle_rate INTEGER,
    metadata      TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE endpoint (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    uid           TEXT,
    url           TEXT NOT NULL,
    description   TEXT NOT NULL,
    disabled      INTEGER NOT NULL,
    throttle_rate INTEGER,
    event_types   TEXT,
    channels      TEXT,
    metadata      TEXT NOT NULL,
    headers       TEXT NOT NULL,
    secrets       TEXT NOT NULL,
    failing_since INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoint_app ON endpoint (app_id, id);

CREATE TABLE event_type (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL,
    archived     INTEGER NOT NULL,
    deprecated   INTEGER NOT NULL,
    schemas      TEXT,
    feature_flag TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE message (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    event_id   TEXT,
    event_type TEXT NOT NULL,
    payload    TEXT,
    channels   TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (app_id, event_id)
);
CREATE INDEX message_app ON message (app_id, id);

CREATE TABLE destination (
    msg_id         TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id    TEXT NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
    app_id         TEXT NOT NULL,
    status         INTEGER NOT NULL,
    next_attempt   INTEGER,
    attempts       INTEGER NOT NULL,
    trigger_type   INTEGER NOT NULL,
    lease_owner    TEXT,
    lease_until    INTEGER,
    msg_created_at INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
);
CREATE INDEX destination_due ON destination (next_attempt) WHERE next_attempt IS NOT NULL;
CREATE INDEX destination_endpoint ON destination (endpoint_id, msg_id);

CREATE TABLE attempt (
    id                   TEXT PRIMARY KEY,
    app_id               TEXT NOT NULL,
    msg_id               TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id          TEXT NOT NULL,
    url                  TEXT NOT NULL,
    status               INTEGER NOT NULL,
    response_status_code INTEGER NOT NULL,
    response             TEXT,
    response_headers     TEXT NOT NULL,
    duration_ms          INTEGER NOT NULL,
    trigger_type         INTEGER NOT NULL,
    error_kind           TEXT,
    created_at           INTEGER NOT NULL
);
CREATE INDEX attempt_msg ON attempt (msg_id, id);
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, id);

CREATE TABLE idempotency (
    key        TEXT PRIMARY KEY,
    status     INTEGER NOT NULL,
    body       BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE token (
    hash       TEXT PRIMARY KEY,
    app_id     TEXT,
    created_at INTEGER NOT NULL
);
"#,
    // A resend that arrived while the delivery was in flight: the in-flight attempt's
    // outcome must not overwrite it.
    "ALTER TABLE destination ADD COLUMN requeued INTEGER NOT NULL DEFAULT 0",
    // The receiving side. A source owns a hidden application (`app_id`) that holds its
    // forwarding endpoints and messages; `last_seq` numbers its received requests in
    // commit order and never goes back, even once the log has been purged. A forwarded
    // message carries headers of its own (`NULL` for none).
    r#"
ALTER TABLE message ADD COLUMN headers TEXT;

CREATE TABLE source (
    id                        TEXT PRIMARY KEY,
    uid                       TEXT UNIQUE,
    name                      TEXT NOT NULL,
    source_type               TEXT NOT NULL,
    config                    TEXT NOT NULL,
    metadata                  TEXT NOT NULL,
    app_id                    TEXT NOT NULL UNIQUE REFERENCES app (id),
    token                     TEXT NOT NULL UNIQUE,
    previous_token            TEXT,
    previous_token_expires_at INTEGER,
    last_seq                  INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);
CREATE INDEX source_previous_token ON source (previous_token)
    WHERE previous_token IS NOT NULL;

CREATE TABLE ingest_request (
    id          TEXT PRIMARY KEY,
    source_id   TEXT NOT NULL REFERENCES source (id),
    seq         INTEGER NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL,
    verdict     TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    reason_code TEXT NOT NULL,
    reason      TEXT NOT NULL,
    dedupe_key  TEXT,
    event_type  TEXT,
    msg_id      TEXT,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX ingest_request_seq ON ingest_request (source_id, seq);
CREATE INDEX ingest_request_source ON ingest_request (source_id, id);
CREATE INDEX ingest_request_dedupe ON ingest_request (source_id, dedupe_key, id)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX ingest_request_created ON ingest_request (created_at);
"#,
    // Expired idempotency records are swept by `expires_at`.
    r#"
CREATE INDEX idempotency_expires ON idempotency (expires_at);
"#,
    // Tokens expire. App tokens issued before expiry was kept get the longest lifetime
    // any issuer could have asked for (7 days, from their creation); admin tokens
    // (`app_id IS NULL`) never expire.
    r#"
ALTER TABLE token ADD COLUMN expires_at INTEGER;
UPDATE token SET expires_at = created_at + 604800000 WHERE app_id IS NOT NULL;
"#,
    // Bounded refused requests and payload retention. A logged request keeps its body's
    // size as received (`NULL`: logged before this, whole); `dropped_before` counts the
    // refused requests skipped before it. A source counts its refused requests per window
    // (`refused_*`) so that every node keeps to one cap. A message's payload is removed at
    // `payload_expires_at` (`NULL`: kept until expunged); the partial index holds only
    // payloads still to expire, so the sweep finds them without a scan.
    r#"
ALTER TABLE ingest_request ADD COLUMN body_size INTEGER;
ALTER TABLE ingest_request ADD COLUMN dropped_before INTEGER NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_window INTEGER NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_logged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE message ADD COLUMN payload_expires_at INTEGER;
CREATE INDEX message_payload_expiry ON message (payload_expires_at)
    WHERE payload IS NOT NULL AND payload_expires_at IS NOT NULL;
"#,
    // Long-running AI jobs. The job as the API shows it is `body` (JSON); the columns
    // beside it are what lists filter on and what polling needs. A job's poll is due at
    // `poll_due_at` (`NULL` once it ended) unless a live lease holds it. Webhooks that
    // arrived before their job wait in `job_unmatched` under the job's match key.
    r#"
CREATE TABLE job (
    id            TEXT PRIMARY KEY,
    uid           TEXT UNIQUE,
    app_id        TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    match_key     TEXT UNIQUE,
    grp           TEXT,
    status        INTEGER NOT NULL,
    body          TEXT NOT NULL,
    poll_due_at   INTEGER,
    lease_owner   TEXT,
    lease_until   INTEGER,
    polls         INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX job_poll_due ON job (poll_due_at) WHERE poll_due_at IS NOT NULL;
CREATE INDEX job_app ON job (app_id, id);
CREATE INDEX job_group ON job (app_id, grp, status) WHERE grp IS NOT NULL;

CREATE TABLE job_unmatched (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    match_key   TEXT NOT NULL,
    observation TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX job_unmatched_key ON job_unmatched (match_key, id);
CREATE INDEX job_unmatched_received ON job_unmatched (received_at);
"#,
    // A poll asked for (by a thin webhook) while another is in flight: the earlier of it
    // and the in-flight poll's next time wins when that poll ends. Each provider
    // family's polls are claimed apart, within its budget (`JobStore::claim_polls`).
    r#"
ALTER TABLE job ADD COLUMN poll_asked_at INTEGER;
CREATE INDEX job_provider_poll_due ON job (provider, poll_due_at) WHERE poll_due_at IS NOT NULL;
"#,
    // The headers each attempt sent (its signature among them), for the console and the
    // attempts API: `[[name, value], …]`.
    "ALTER TABLE attempt ADD COLUMN request_headers TEXT NOT NULL DEFAULT '[]'",
    // Fewer pages written per message. A destination is found by its key, so the table is
    // keyed by it (`WITHOUT ROWID`) instead of holding a rowid and a second b-tree for the
    // key; a message's `eventId` is indexed only when it has one. Each was a b-tree every
    // create wrote a page of: together 17 % of the WAL's frames and 127 B a message kept.
    // Both tables are copied (the runner turns foreign keys off for that, so that dropping
    // `message` does not cascade, and checks them before it commits).
    r#"
CREATE TABLE destination_keyed (
    msg_id         TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id    TEXT NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
    app_id         TEXT NOT NULL,
    status         INTEGER NOT NULL,
    next_attempt   INTEGER,
    attempts       INTEGER NOT NULL,
    trigger_type   INTEGER NOT NULL,
    lease_owner    TEXT,
    lease_until    INTEGER,
    msg_created_at INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    requeued       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (msg_id, endpoint_id)
) WITHOUT ROWID;
INSERT INTO destination_keyed (msg_id, endpoint_id, app_id, status, next_attempt, attempts,
        trigger_type, lease_owner, lease_until, msg_created_at, updated_at, requeued)
    SELECT msg_id, endpoint_id, app_id, status, next_attempt, attempts, trigger_type,
        lease_owner, lease_until, msg_created_at, updated_at, requeued
    FROM destination;
DROP TABLE destination;
ALTER TABLE destination_keyed RENAME TO destination;
CREATE INDEX destination_due ON destination (next_attempt, app_id, lease_until)
    WHERE next_attempt IS NOT NULL;
CREATE INDEX destination_endpoint ON destination (endpoint_id, msg_id);

CREATE TABLE message_keyed (
    id                 TEXT PRIMARY KEY,
    app_id             TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    event_id           TEXT,
    event_type         TEXT NOT NULL,
    payload            TEXT,
    channels           TEXT,
    created_at         INTEGER NOT NULL,
    headers            TEXT,
    payload_expires_at INTEGER
);
INSERT INTO message_keyed (id, app_id, event_id, event_type, payload, channels, created_at,
        headers, payload_expires_at)
    SELECT id, app_id, event_id, event_type, payload, channels, created_at, headers,
        payload_expires_at
    FROM message ORDER BY rowid;
DROP TABLE message;
ALTER TABLE message_keyed RENAME TO message;
CREATE UNIQUE INDEX message_event ON message (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX message_app ON message (app_id, id);
CREATE INDEX message_payload_expiry ON message (payload_expires_at)
    WHERE payload IS NOT NULL AND payload_expires_at IS NOT NULL;
"#,
    // Every claim reads its provider's stretch of `job_provider_poll_due`, which counts
    // the open jobs as well: `job_poll_due` was one more b-tree written at every poll.
    "DROP INDEX job_poll_due",
    // Fewer b-trees written per attempt. An attempt is read by its message (then its id)
    // or by its endpoint, never by its id alone: keyed by `(msg_id, id)`, the key's index
    // is the index by message, and neither the index of `id` alone nor `attempt_msg` is
    // written any more (three b-trees an attempt instead of four). The rows stay in a
    // rowid table: one holds a response excerpt of up to 4 KiB, more than a keyed table
    // keeps in its pages. Attempt ids stay unique as they are made (a millisecond time and
    // 14 random bytes).
    r#"
CREATE TABLE attempt_keyed (
    id                   TEXT NOT NULL,
    app_id               TEXT NOT NULL,
    msg_id               TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id          TEXT NOT NULL,
    url                  TEXT NOT NULL,
    status               INTEGER NOT NULL,
    response_status_code INTEGER NOT NULL,
    response             TEXT,
    response_headers     TEXT NOT NULL,
    duration_ms          INTEGER NOT NULL,
    trigger_type         INTEGER NOT NULL,
    error_kind           TEXT,
    created_at           INTEGER NOT NULL,
    request_headers      TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (msg_id, id)
);
INSERT INTO attempt_keyed (id, app_id, msg_id, endpoint_id, url, status, response_status_code,
        response, response_headers, duration_ms, trigger_type, error_kind, created_at,
        request_headers)
    SELECT id, app_id, msg_id, endpoint_id, url, status, response_status_code, response,
        response_headers, duration_ms, trigger_type, error_kind, created_at, request_headers
    FROM attempt ORDER BY rowid;
DROP TABLE attempt;
ALTER TABLE attempt_keyed RENAME TO attempt;
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, id);
"#,
];
