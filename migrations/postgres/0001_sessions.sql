-- Sessions, their stream events and the audit of tool calls (store/src/postgres.rs).
-- Append-only: a change to the schema is a new numbered file, never an edit of this one.

-- One row per claimed session: who may write it, its record, and when it expires if not written.
CREATE TABLE sessions (
    id         TEXT        NOT NULL PRIMARY KEY,
    owner      TEXT        NOT NULL,
    epoch      BIGINT      NOT NULL CHECK (epoch >= 0),
    -- The SessionRecord; NULL until the owner's first save.
    record     JSONB,
    -- A row past it is gone for every read and claim; purge_expired() deletes it.
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- The bounded replay log of each stream of a session.
CREATE TABLE events (
    session_id TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    stream     BIGINT NOT NULL CHECK (stream >= 0),
    seq        BIGINT NOT NULL CHECK (seq >= 0),
    -- The serialized JSON-RPC message; empty for a priming event.
    data       TEXT   NOT NULL,
    PRIMARY KEY (session_id, stream, seq)
);

-- One row per tool call: who called what, when, for how long, and how it ended. Not tied to
-- the sessions table: the audit outlives the sessions it mentions.
CREATE TABLE audit (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal   TEXT        NOT NULL,
    session     TEXT,
    tool        TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT      NOT NULL CHECK (duration_ms >= 0),
    outcome     TEXT        NOT NULL
);

CREATE INDEX audit_principal_started_at ON audit (principal, started_at);
CREATE INDEX audit_session ON audit (session) WHERE session IS NOT NULL;
