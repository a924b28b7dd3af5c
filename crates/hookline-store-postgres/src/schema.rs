//! Migrations, applied in order; the `hookline_migrations` table records which have run.
//!
//! The tables mirror the SQLite store's, in PostgreSQL's own types: times are
//! `timestamptz` kept to the millisecond, lists of strings are `text[]`, maps and
//! structured values are `jsonb`, and a payload is `text` so that it comes back exactly as
//! it was received. Ids and event type names sort with `COLLATE "C"` (byte order), which
//! is the order their time-sortable encoding and cursor pagination rely on, whatever the
//! database's default collation.
//!
//! The delivery queue is the `destination` table itself: a row is due when
//! `next_attempt` has passed and no live lease holds it.

/// Each entry runs once, in its own transaction, in this order. Never edit an entry that
/// has shipped; append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE app (
    id            TEXT COLLATE "C" PRIMARY KEY,
    uid           TEXT UNIQUE,
    name          TEXT NOT NULL,
    throttle_rate INTEGER,
    metadata      JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE endpoint (
    id            TEXT COLLATE "C" PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    uid           TEXT,
    url           TEXT NOT NULL,
    description   TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL,
    throttle_rate INTEGER,
    event_types   TEXT[],
    channels      TEXT[],
    metadata      JSONB NOT NULL,
    headers       JSONB NOT NULL,
    secrets       JSONB NOT NULL,
    failing_since TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoint_app ON endpoint (app_id, id);

CREATE TABLE event_type (
    name         TEXT COLLATE "C" PRIMARY KEY,
    description  TEXT NOT NULL,
    archived     BOOLEAN NOT NULL,
    deprecated   BOOLEAN NOT NULL,
    schemas      JSONB,
    feature_flag TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE message (
    id         TEXT COLLATE "C" PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    event_id   TEXT,
    event_type TEXT NOT NULL,
    payload    TEXT,
    channels   TEXT[],
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, event_id)
);
CREATE INDEX message_app ON message (app_id, id);

CREATE TABLE destination (
    msg_id         TEXT COLLATE "C" NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id    TEXT COLLATE "C" NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
    app_id         TEXT NOT NULL,
    status         SMALLINT NOT NULL,
    next_attempt   TIMESTAMPTZ,
    attempts       INTEGER NOT NULL,
    trigger_type   SMALLINT NOT NULL,
    lease_owner    TEXT,
    lease_until    TIMESTAMPTZ,
    msg_created_at TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
);
CREATE INDEX destination_due ON destination (next_attempt) WHERE next_attempt IS NOT NULL;
CREATE INDEX destination_endpoint ON destination (endpoint_id, msg_id);

CREATE TABLE attempt (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    app_id               TEXT NOT NULL,
    msg_id               TEXT COLLATE "C" NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id          TEXT COLLATE "C" NOT NULL,
    url                  TEXT NOT NULL,
    status               SMALLINT NOT NULL,
    response_status_code SMALLINT NOT NULL,
    response             TEXT,
    response_headers     JSONB NOT NULL,
    duration_ms          BIGINT NOT NULL,
    trigger_type         SMALLINT NOT NULL,
    error_kind           TEXT,
    created_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX attempt_msg ON attempt (msg_id, id);
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, id);
CREATE INDEX attempt_app ON attempt (app_id, id);

CREATE TABLE idempotency (
    key        TEXT PRIMARY KEY,
    status     INTEGER NOT NULL,
    body       BYTEA NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE token (
    hash       TEXT PRIMARY KEY,
    app_id     TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
"#,
    // A resend that arrived while the delivery was in flight: the in-flight attempt's
    // outcome must not overwrite it.
    "ALTER TABLE destination ADD COLUMN requeued BOOLEAN NOT NULL DEFAULT FALSE",
    // The receiving side. A source owns a hidden application (`app_id`) that holds its
    // forwarding endpoints and messages; `last_seq` numbers its received requests in
    // commit order (its row lock, held to commit, orders them) and never goes back, even
    // once the log has been purged. A forwarded message carries headers of its own
    // (`NULL` for none).
    r#"
ALTER TABLE message ADD COLUMN headers JSONB;

CREATE TABLE source (
    id                        TEXT COLLATE "C" PRIMARY KEY,
    uid                       TEXT UNIQUE,
    name                      TEXT NOT NULL,
    source_type               TEXT NOT NULL,
    config                    JSONB NOT NULL,
    metadata                  JSONB NOT NULL,
    app_id                    TEXT NOT NULL UNIQUE REFERENCES app (id),
    token                     TEXT NOT NULL UNIQUE,
    previous_token            TEXT,
    previous_token_expires_at TIMESTAMPTZ,
    last_seq                  BIGINT NOT NULL DEFAULT 0,
    created_at                TIMESTAMPTZ NOT NULL,
    updated_at                TIMESTAMPTZ NOT NULL
);
CREATE INDEX source_previous_token ON source (previous_token)
    WHERE previous_token IS NOT NULL;

CREATE TABLE ingest_request (
    id          TEXT COLLATE "C" PRIMARY KEY,
    source_id   TEXT COLLATE "C" NOT NULL REFERENCES source (id),
    seq         BIGINT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT NOT NULL,
    headers     JSONB NOT NULL,
    body        BYTEA NOT NULL,
    verdict     TEXT NOT NULL,
    status_code SMALLINT NOT NULL,
    reason_code TEXT NOT NULL,
    reason      TEXT NOT NULL,
    dedupe_key  TEXT,
    event_type  TEXT,
    msg_id      TEXT,
    created_at  TIMESTAMPTZ NOT NULL
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
ALTER TABLE token ADD COLUMN expires_at TIMESTAMPTZ;
UPDATE token SET expires_at = created_at + INTERVAL '7 days' WHERE app_id IS NOT NULL;
"#,
    // Bounded refused requests and payload retention. A logged request keeps its body's
    // size as received (`NULL`: logged before this, whole); `dropped_before` counts the
    // refused requests skipped before it. A source counts its refused requests per window
    // (`refused_*`, under its row lock) so that every node keeps to one cap. A message's
    // payload is removed at `payload_expires_at` (`NULL`: kept until expunged); the
    // partial index holds only payloads still to expire, so the sweep finds them without
    // a scan.
    r#"
ALTER TABLE ingest_request ADD COLUMN body_size BIGINT;
ALTER TABLE ingest_request ADD COLUMN dropped_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_window BIGINT NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_logged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE source ADD COLUMN refused_dropped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE message ADD COLUMN payload_expires_at TIMESTAMPTZ;
CREATE INDEX message_payload_expiry ON message (payload_expires_at)
    WHERE payload IS NOT NULL AND payload_expires_at IS NOT NULL;
"#,
    // Worker nodes announce themselves here every few seconds (`DeliveryQueue::heartbeat`),
    // so that each knows how many share the queue and enforces its share of every
    // throttle rate: the rates then hold in total, not per node.
    r#"
CREATE TABLE worker_node (
    id         TEXT COLLATE "C" PRIMARY KEY,
    last_seen  TIMESTAMPTZ NOT NULL
);
"#,
    // Long-running AI jobs, as in the SQLite schema: the job as the API shows it is
    // `body` (JSON text); the columns beside it are what lists filter on and what polling
    // needs. Changes to one job, and the creation of a job with the webhooks kept for it,
    // are serialized by the job's row lock and by an advisory lock on its match key; a
    // group's end by an advisory lock on the group.
    r#"
CREATE TABLE job (
    id            TEXT COLLATE "C" PRIMARY KEY,
    uid           TEXT UNIQUE,
    app_id        TEXT NOT NULL REFERENCES app (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    match_key     TEXT UNIQUE,
    grp           TEXT,
    status        SMALLINT NOT NULL,
    body          TEXT NOT NULL,
    poll_due_at   TIMESTAMPTZ,
    lease_owner   TEXT,
    lease_until   TIMESTAMPTZ,
    polls         INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_poll_due ON job (poll_due_at) WHERE poll_due_at IS NOT NULL;
CREATE INDEX job_app ON job (app_id, id);
CREATE INDEX job_group ON job (app_id, grp, status) WHERE grp IS NOT NULL;

CREATE TABLE job_unmatched (
    id          BIGSERIAL PRIMARY KEY,
    match_key   TEXT NOT NULL,
    observation TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_unmatched_key ON job_unmatched (match_key, id);
CREATE INDEX job_unmatched_received ON job_unmatched (received_at);
"#,
    // A poll asked for (by a thin webhook) while another is in flight: the earlier of it
    // and the in-flight poll's next time wins when that poll ends. Each provider
    // family's polls are claimed apart, within its budget (`JobStore::claim_polls`).
    r#"
ALTER TABLE job ADD COLUMN poll_asked_at TIMESTAMPTZ;
CREATE INDEX job_provider_poll_due ON job (provider, poll_due_at) WHERE poll_due_at IS NOT NULL;
"#,
    // The headers each attempt sent (its signature among them), for the console and the
    // attempts API: `[[name, value], …]`.
    "ALTER TABLE attempt ADD COLUMN request_headers JSONB NOT NULL DEFAULT '[]'",
    // No foreign key from a delivery to its endpoint: its check share-locked the
    // endpoint's row for every delivery queued, and with creates on several connections
    // PostgreSQL keeps a multixact for such a row, which cost more than a third of a
    // create. Deleting an endpoint deletes its deliveries, then again what creates running
    // at its commit queued (`queries::wait_for_running`).
    "ALTER TABLE destination DROP CONSTRAINT destination_endpoint_id_fkey",
    // A message's `eventId` is indexed only when it has one: most messages have none, yet
    // each wrote an entry (and its WAL) into the constraint's index.
    r#"
CREATE UNIQUE INDEX message_event ON message (app_id, event_id) WHERE event_id IS NOT NULL;
ALTER TABLE message DROP CONSTRAINT message_app_id_event_id_key;
"#,
    // No foreign keys from a message to its application, nor from a delivery or an
    // attempt to its message. Each check locked the row it refers to (`FOR KEY SHARE`)
    // for every row inserted: every create locked its application's row, a multixact
    // when creates commit on several connections, and every delivery and attempt locked
    // its message's row, a write and a WAL record each. Without them the inserts of a
    // 20,000-message bench run took 177, 311 and 290 ms (deliveries, messages, attempts)
    // against 345, 482 and 467. Deleting an application deletes them, then again what
    // transactions running at its commit wrote (`queries::resources`).
    r#"
ALTER TABLE message DROP CONSTRAINT message_app_id_fkey;
ALTER TABLE destination DROP CONSTRAINT destination_msg_id_fkey;
ALTER TABLE attempt DROP CONSTRAINT attempt_msg_id_fkey;
"#,
    // Every claim reads its provider's stretch of `job_provider_poll_due`, which counts
    // the open jobs as well: `job_poll_due` was one more index written at every poll.
    "DROP INDEX job_poll_due",
    // An attempt is read by its message (then its id) or by its endpoint, never by its id
    // alone: the primary key on `(msg_id, id)` is the index by message, and `attempt_msg`
    // is one index fewer written at every attempt. Attempt ids stay unique as they are
    // made (a millisecond time and 14 random bytes).
    r#"
ALTER TABLE attempt DROP CONSTRAINT attempt_pkey;
ALTER TABLE attempt ADD PRIMARY KEY (msg_id, id);
DROP INDEX attempt_msg;
"#,
];
