//! A store from the URL a node is configured with:
//!
//! - `sqlite:<path>`, `sqlite://<path>`: [`SqliteStore`] on that file (its directory is
//!   created); `sqlite::memory:` a private in-memory one.
//! - `redis://host:port[,host:port…]`, `rediss://…`: [`RedisStore`] on a Redis Cluster, reached
//!   through those seed nodes; with a durable `postgres://…` URL, [`Tiered`]: that cluster hot,
//!   PostgreSQL written behind it.
//! - `postgres://…`, `postgresql://…`: [`PgStore`], migrated first.
//!
//! Store URLs carry passwords, so an error names at most a URL's scheme or one `host:port`,
//! never user info, a path or a query.

use crate::postgres::{self, PgStore};
use crate::redis::RedisStore;
use crate::sqlite::SqliteStore;
use crate::tiered::Tiered;
use crate::{SessionStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The URL forms [`open`] accepts, for the error that refuses another.
const ACCEPTED: &str = "sqlite:<path>, sqlite://<path>, redis://host:port[,host:port…], \
                        rediss://host:port[,host:port…], postgres://… or postgresql://…";

/// Opens the store `url` names, with `durable` (a PostgreSQL URL) written behind it when given,
/// which only a Redis Cluster store takes. PostgreSQL databases, `url`'s or `durable`'s, are
/// migrated first, so a fresh database works; SQLite files are created and migrated by
/// [`SqliteStore::open`] anyway.
pub async fn open(
    url: &str,
    durable: Option<&str>,
    ttl: Duration,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    let location = Location::parse(url, durable)?;
    let kinds: &[&'static str] = match &location {
        Location::Memory | Location::Sqlite(_) => &["sqlite"],
        Location::Redis { durable: None, .. } => &["redis"],
        Location::Redis { .. } => &["redis", "postgres"],
        Location::Postgres(_) => &["postgres"],
    };
    for kind in kinds {
        crate::measured::show(kind);
    }
    Ok(match location {
        Location::Memory => Arc::new(SqliteStore::memory(ttl).await?),
        Location::Sqlite(path) => {
            if let Some(dir) = Path::new(&path).parent()
                && !dir.as_os_str().is_empty()
            {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            Arc::new(SqliteStore::open(&path, ttl).await?)
        }
        Location::Redis { nodes, durable } => {
            let hot = RedisStore::connect(&nodes, ttl).await?;
            match durable {
                None => Arc::new(hot),
                Some(url) => Arc::new(Tiered::new(hot, postgres_store(&url, ttl).await?)),
            }
        }
        Location::Postgres(url) => Arc::new(postgres_store(&url, ttl).await?),
    })
}

async fn postgres_store(url: &str, ttl: Duration) -> Result<PgStore, StoreError> {
    postgres::migrate(url).await?;
    PgStore::connect(url, ttl).await
}

/// What a store URL (and its durable URL) name, checked before anything connects.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// A private in-memory SQLite database.
    Memory,
    /// An SQLite file.
    Sqlite(String),
    /// A Redis Cluster's seed nodes, each `redis://host:port` (or `rediss://`), with the
    /// PostgreSQL URL to write behind it.
    Redis {
        nodes: Vec<String>,
        durable: Option<String>,
    },
    /// A PostgreSQL URL, as given.
    Postgres(String),
}

impl Location {
    fn parse(url: &str, durable: Option<&str>) -> Result<Location, StoreError> {
        let location = Location::parse_one(url)?;
        let Some(durable) = durable else {
            return Ok(location);
        };
        let Location::Redis { nodes, .. } = location else {
            return Err(config(format!(
                "a durable store is written behind a Redis Cluster store only, and `{}` is \
                 not one: give a redis:// store URL, or no durable URL",
                shown_scheme(url)
            )));
        };
        match Location::parse_one(durable) {
            Ok(Location::Postgres(durable)) => Ok(Location::Redis {
                nodes,
                durable: Some(durable),
            }),
            Ok(_) => Err(config(format!(
                "the durable store must be PostgreSQL (postgres://… or postgresql://…), not `{}`",
                shown_scheme(durable)
            ))),
            Err(StoreError::Config(why)) => Err(config(format!("durable store: {why}"))),
            Err(e) => Err(e),
        }
    }

    fn parse_one(url: &str) -> Result<Location, StoreError> {
        let Some((scheme, rest)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
            return Err(config(format!(
                "a store URL must start with a scheme; expected one of {ACCEPTED}"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path == ":memory:" {
                    return Ok(Location::Memory);
                }
                if path.is_empty() {
                    return Err(config("an sqlite: URL needs a file path: sqlite:<path>"));
                }
                if path.contains('?') {
                    return Err(config(
                        "an sqlite: URL takes a file path only, without `?` options",
                    ));
                }
                Ok(Location::Sqlite(path.to_owned()))
            }
            scheme @ ("redis" | "rediss") => {
                let Some(rest) = rest.strip_prefix("//") else {
                    return Err(config(format!(
                        "a Redis Cluster URL is {scheme}://host:port[,host:port…]"
                    )));
                };
                Ok(Location::Redis {
                    nodes: seed_nodes(scheme, rest)?,
                    durable: None,
                })
            }
            "postgres" | "postgresql" => {
                if rest.strip_prefix("//").is_none_or(str::is_empty) {
                    return Err(config(
                        "a PostgreSQL URL is postgres://[user@]host[:port]/db",
                    ));
                }
                Ok(Location::Postgres(url.to_owned()))
            }
            // Shown only in the `scheme://` form: in `user:password@host`, what parses as a
            // scheme is a user name.
            other if rest.starts_with("//") => Err(config(format!(
                "unknown store URL scheme `{other}:`; expected one of {ACCEPTED}"
            ))),
            _ => Err(config(format!(
                "unknown store URL scheme; expected one of {ACCEPTED}"
            ))),
        }
    }
}

/// `redis://host:port` for each comma-separated seed node of `[user info@]host:port,…`; user
/// info given once is each node's.
fn seed_nodes(scheme: &str, authority: &str) -> Result<Vec<String>, StoreError> {
    // A password may hold `@`, so user info ends at the last one.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    if hosts.contains(['/', '?', '#']) {
        return Err(config(
            "a Redis Cluster URL names seed nodes only (host:port, comma separated): no \
             database, path or options",
        ));
    }
    let nodes: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if nodes.iter().all(|n| n.is_empty()) {
        return Err(config(format!(
            "a Redis Cluster URL needs at least one seed node: {scheme}://host:port"
        )));
    }
    nodes
        .into_iter()
        .map(|node| {
            check_node(node)?;
            Ok(format!("{scheme}://{userinfo}{node}"))
        })
        .collect()
}

/// A seed node is `host[:port]`, an IPv6 host in brackets.
fn check_node(node: &str) -> Result<(), StoreError> {
    let bad = |why: &str| config(format!("Redis seed node `{node}`: {why}"));
    if node.is_empty() {
        return Err(config(
            "a Redis Cluster URL has an empty seed node (a stray comma)",
        ));
    }
    if node.contains(char::is_whitespace) {
        return Err(bad("holds whitespace"));
    }
    let (host, port) = match node.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("expected [ipv6]:port")),
            },
            None => return Err(bad("an unclosed `[`")),
        },
        None => match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    Ok(())
}

/// Whether `s` can be a URL scheme: a letter, then letters, digits, `+`, `-` and `.`.
fn is_scheme(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A URL's scheme, the only part of it an error shows.
fn shown_scheme(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _)) if is_scheme(scheme) => format!("{scheme}:"),
        _ => "a URL without a scheme".to_owned(),
    }
}

fn config(why: impl Into<String>) -> StoreError {
    StoreError::Config(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Location, StoreError> {
        Location::parse(url, None)
    }

    fn redis(nodes: &[&str], durable: Option<&str>) -> Location {
        Location::Redis {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            durable: durable.map(str::to_owned),
        }
    }

    /// The message of a configuration error.
    fn refusal(outcome: Result<Location, StoreError>) -> String {
        match outcome {
            Err(StoreError::Config(why)) => why,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn sqlite_urls_name_a_file() {
        let file = |p: &str| Ok(Location::Sqlite(p.to_owned()));
        assert_eq!(parse("sqlite:sessions.db"), file("sessions.db"));
        assert_eq!(parse("sqlite:/var/lib/sg/s.db"), file("/var/lib/sg/s.db"));
        assert_eq!(parse("sqlite://data/s.db"), file("data/s.db"));
        assert_eq!(parse("sqlite:///var/lib/sg/s.db"), file("/var/lib/sg/s.db"));
        assert_eq!(parse("SQLite:s.db"), file("s.db"));
        assert_eq!(parse("sqlite::memory:"), Ok(Location::Memory));
        assert!(refusal(parse("sqlite:")).contains("file path"));
        assert!(refusal(parse("sqlite://")).contains("file path"));
        assert!(refusal(parse("sqlite://s.db?mode=rwc")).contains("without `?` options"));
    }

    #[test]
    fn redis_urls_list_seed_nodes() {
        assert_eq!(
            parse("redis://10.0.0.1:7000"),
            Ok(redis(&["redis://10.0.0.1:7000"], None))
        );
        assert_eq!(
            parse("redis://a:7000,b:7001, c:7002"),
            Ok(redis(
                &["redis://a:7000", "redis://b:7001", "redis://c:7002"],
                None
            ))
        );
        assert_eq!(
            parse("rediss://a:7000,[::1]:7001,c"),
            Ok(redis(
                &["rediss://a:7000", "rediss://[::1]:7001", "rediss://c"],
                None
            ))
        );
        // User info given once is every node's.
        assert_eq!(
            parse("redis://user:p@ss@a:1,b:2"),
            Ok(redis(
                &["redis://user:p@ss@a:1", "redis://user:p@ss@b:2"],
                None
            ))
        );
    }

    #[test]
    fn malformed_redis_urls_are_refused_without_their_password() {
        for (url, expect) in [
            ("redis:a:7000", "redis://host:port"),
            ("redis://", "at least one seed node"),
            ("redis://u:secret@a:7000,,b:7001", "empty seed node"),
            ("redis://u:secret@a:70000", "`a:70000`: the port"),
            ("redis://u:secret@a:7000/0", "no database"),
            ("redis://u:secret@a:7000?protocol=resp3", "no database"),
            ("redis://u:secret@[::1:7000", "unclosed"),
            ("redis://u:secret@:7000", "no host"),
        ] {
            let why = refusal(parse(url));
            assert!(why.contains(expect), "{url}: {why}");
            assert!(!why.contains("secret"), "{url}: {why}");
        }
    }

    #[test]
    fn postgres_urls_pass_as_given() {
        for url in [
            "postgres://sg:pw@db:5432/sessions?sslmode=require",
            "postgresql://db/sessions",
        ] {
            assert_eq!(parse(url), Ok(Location::Postgres(url.to_owned())));
        }
        assert!(refusal(parse("postgres:db")).contains("postgres://"));
    }

    #[test]
    fn a_durable_store_goes_behind_redis_only() {
        let pg = "postgres://sg:pw@db/sessions";
        assert_eq!(
            Location::parse("redis://a:1,b:2", Some(pg)),
            Ok(redis(&["redis://a:1", "redis://b:2"], Some(pg)))
        );
        for url in ["sqlite:s.db", "postgres://other:secret@db/x"] {
            let why = refusal(Location::parse(url, Some(pg)));
            assert!(why.contains("Redis Cluster store only"), "{why}");
            assert!(!why.contains("secret") && !why.contains("pw"), "{why}");
        }
        let why = refusal(Location::parse("redis://a:1", Some("redis://u:secret@b:2")));
        assert!(
            why.contains("must be PostgreSQL") && why.contains("`redis:`"),
            "{why}"
        );
        assert!(!why.contains("secret"), "{why}");
        let why = refusal(Location::parse("redis://a:1", Some("mysql://u:secret@db")));
        assert!(why.starts_with("durable store: unknown"), "{why}");
        assert!(!why.contains("secret"), "{why}");
    }

    #[test]
    fn unknown_schemes_list_the_accepted_forms_without_echoing_the_url() {
        let why = refusal(parse("mysql://root:hunter2@db:3306/sessions?ssl=true"));
        assert!(why.contains("`mysql:`"), "{why}");
        assert!(why.contains(ACCEPTED), "{why}");
        for secret in ["hunter2", "root", "db:3306", "ssl"] {
            assert!(!why.contains(secret), "{why}");
        }
        // No scheme at all (a bare path, or `user:password@host` without one): nothing of it
        // is shown, not even what looks like a scheme.
        for url in ["/var/lib/sessions.db", "admin pw:x@host", "", "9p:x"] {
            let why = refusal(parse(url));
            assert!(why.contains("must start with a scheme"), "{url}: {why}");
            assert!(url.is_empty() || !why.contains(url), "{why}");
        }
        let why = refusal(parse("admin:hunter2@db:5432"));
        assert!(why.starts_with("unknown store URL scheme;"), "{why}");
        assert!(!why.contains("admin") && !why.contains("hunter2"), "{why}");
    }
}
