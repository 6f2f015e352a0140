//! The store's own record of who wrote each session, for the one-writer invariant
//! ([`check::one_writer`](crate::check::one_writer)): what the clients saw cannot tell two
//! writers of one epoch apart, the store can.
//!
//! When the run's store is PostgreSQL, [`Recorder::install`] migrates the schema (as a node
//! does when it opens the store; applying it again is a no-op) and installs, in that database
//! only, a trigger on `sessions` that counts every row it sees per (session, epoch, owner) and
//! notes each write whose epoch is below the session's previous write. The run's store is a
//! throw-away database (`--postgres`): never point a chaos run at one that matters.
//!
//! Every write the store accepts passes through the session's row (store/src/postgres.rs): a
//! claim inserts it or updates it (`ON CONFLICT … DO UPDATE`), and every write, the record
//! alone or with events appended and streams forgotten, starts with the fence check `hold`, an
//! `UPDATE` of that row in the same transaction. A refused claim or write changes no row and
//! fires nothing; a write whose transaction rolls back takes its record with it. Deletes (a
//! session ended, an expired one purged) are not recorded: they set no fence.
//!
//! Writes of one session are ordered by the row's lock (a new row's by its primary key), so the
//! trigger sees them in commit order and "the previous write" is well defined. The previous
//! write is kept across a delete, so a session stored again under an earlier epoch (after it
//! expired, when the store lets any claim in) counts as going back.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

/// What the store recorded of its writers, or why nothing was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Writers {
    Recorded {
        /// Every (session, epoch, owner) that wrote, in that order.
        writers: Vec<Writer>,
        /// Every write whose epoch was below its session's previous write, in the order seen.
        regressions: Vec<Regression>,
    },
    /// The store is not PostgreSQL, or its record could not be read.
    NotRecorded { why: String },
}

/// One owner's writes of one session under one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Writer {
    pub session: String,
    pub epoch: i64,
    pub owner: String,
    /// The database's clock at the first of these writes (UTC, ISO 8601).
    pub first_at: String,
    pub writes: i64,
}

/// A write under an earlier epoch than the session's previous write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub session: String,
    pub from_epoch: i64,
    pub from_owner: String,
    pub to_epoch: i64,
    pub to_owner: String,
    /// The database's clock at the write that went back (UTC, ISO 8601).
    pub at: String,
}

/// The recorder's tables and trigger. Idempotent, so installing twice is harmless; quiet about
/// what it skips.
const INSTALL: &str = r#"
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS chaos_writers (
    session  TEXT        NOT NULL,
    epoch    BIGINT      NOT NULL,
    owner    TEXT        NOT NULL,
    first_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    writes   BIGINT      NOT NULL DEFAULT 1,
    PRIMARY KEY (session, epoch, owner)
);
CREATE TABLE IF NOT EXISTS chaos_last_writer (
    session TEXT   NOT NULL PRIMARY KEY,
    epoch   BIGINT NOT NULL,
    owner   TEXT   NOT NULL
);
CREATE TABLE IF NOT EXISTS chaos_regressions (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session    TEXT        NOT NULL,
    from_epoch BIGINT      NOT NULL,
    from_owner TEXT        NOT NULL,
    to_epoch   BIGINT      NOT NULL,
    to_owner   TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION chaos_record_writer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last chaos_last_writer%ROWTYPE;
BEGIN
    INSERT INTO chaos_writers (session, epoch, owner) VALUES (NEW.id, NEW.epoch, NEW.owner)
    ON CONFLICT (session, epoch, owner) DO UPDATE SET writes = chaos_writers.writes + 1;
    SELECT * INTO last FROM chaos_last_writer WHERE session = NEW.id FOR UPDATE;
    IF FOUND AND NEW.epoch < last.epoch THEN
        INSERT INTO chaos_regressions (session, from_epoch, from_owner, to_epoch, to_owner)
        VALUES (NEW.id, last.epoch, last.owner, NEW.epoch, NEW.owner);
    END IF;
    INSERT INTO chaos_last_writer (session, epoch, owner) VALUES (NEW.id, NEW.epoch, NEW.owner)
    ON CONFLICT (session) DO UPDATE SET epoch = excluded.epoch, owner = excluded.owner;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS chaos_record_writer ON sessions;
CREATE TRIGGER chaos_record_writer AFTER INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION chaos_record_writer();
"#;

/// Where the run's writers are recorded, if anywhere.
#[derive(Clone, Debug)]
pub enum Recorder {
    /// The store's PostgreSQL database, with the recorder installed.
    Postgres { url: String },
    /// Nothing records: why.
    Off { why: String },
}

impl Recorder {
    /// Installs the recorder in the run's store when it is PostgreSQL: before any node starts,
    /// so that it sees every write.
    pub async fn install(store: Option<&str>) -> anyhow::Result<Recorder> {
        let Some(url) = store.filter(|url| is_postgres(url)) else {
            return Ok(Recorder::Off {
                why: "the store is not PostgreSQL".into(),
            });
        };
        shardgate_store::postgres::migrate(url)
            .await
            .context("cannot migrate the store before installing the writers' record")?;
        let mut conn = PgConnection::connect(url).await?;
        sqlx::raw_sql(INSTALL)
            .execute(&mut conn)
            .await
            .context("cannot install the writers' record")?;
        let _ = conn.close().await;
        Ok(Recorder::Postgres {
            url: url.to_owned(),
        })
    }

    /// What was recorded; once the cluster has stopped, so that nothing is written after.
    /// A record that cannot be read is reported as not recorded, rather than losing the run.
    pub async fn read(&self) -> Writers {
        match self {
            Recorder::Off { why } => Writers::NotRecorded { why: why.clone() },
            Recorder::Postgres { url } => match read(url).await {
                Ok(writers) => writers,
                Err(e) => Writers::NotRecorded {
                    why: format!("the writers' record could not be read: {e}"),
                },
            },
        }
    }
}

/// Whether a store URL names PostgreSQL (as `shardgate_store::open` reads it).
pub fn is_postgres(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

/// Reads the record the trigger kept in the database at `url`.
pub async fn read(url: &str) -> anyhow::Result<Writers> {
    let mut conn = PgConnection::connect(url).await?;
    let rows = sqlx::query(
        r#"SELECT session, epoch, owner,
                  to_char(first_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), writes
           FROM chaos_writers ORDER BY session, epoch, owner"#,
    )
    .fetch_all(&mut conn)
    .await?;
    let writers = rows
        .iter()
        .map(|row| {
            Ok(Writer {
                session: row.try_get(0)?,
                epoch: row.try_get(1)?,
                owner: row.try_get(2)?,
                first_at: row.try_get(3)?,
                writes: row.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let rows = sqlx::query(
        r#"SELECT session, from_epoch, from_owner, to_epoch, to_owner,
                  to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM chaos_regressions ORDER BY id"#,
    )
    .fetch_all(&mut conn)
    .await?;
    let regressions = rows
        .iter()
        .map(|row| {
            Ok(Regression {
                session: row.try_get(0)?,
                from_epoch: row.try_get(1)?,
                from_owner: row.try_get(2)?,
                to_epoch: row.try_get(3)?,
                to_owner: row.try_get(4)?,
                at: row.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let _ = conn.close().await;
    Ok(Writers::Recorded {
        writers,
        regressions,
    })
}

#[cfg(test)]
mod tests {
    use super::is_postgres;

    #[test]
    fn only_postgres_urls_are_recorded() {
        assert!(is_postgres("postgres://postgres@127.0.0.1:5432/postgres"));
        assert!(is_postgres("PostgreSQL://db/s"));
        assert!(!is_postgres("redis://127.0.0.1:7000"));
        assert!(!is_postgres("sqlite:/tmp/sessions.db"));
        assert!(!is_postgres("none"));
    }
}
