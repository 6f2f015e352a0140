-- Sessions and their stream events: the embedded store (store/src/sqlite.rs).
-- Append-only: a change to the schema is a new numbered file, never an edit of this one.

-- One row per claimed session: who may write it, its record, and when it expires if not written.
CREATE TABLE sessions (
    id         TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    -- The SessionRecord as JSON; NULL until the owner's first save.
    record     TEXT,
    -- Unix milliseconds; a row past it is gone for every read and claim.
    expires_at INTEGER NOT NULL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- The bounded replay log of each stream of a session.
CREATE TABLE events (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    stream     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    -- The serialized JSON-RPC message; empty for a priming event.
    data       TEXT    NOT NULL,
    PRIMARY KEY (session_id, stream, seq)
) WITHOUT ROWID;
