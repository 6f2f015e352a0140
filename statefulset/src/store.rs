//! Where the local cluster's nodes keep their sessions: one store every node writes through to,
//! so that when a node dies, drains or a new one joins, the session's new owner takes it over.
//!
//! Without `--store`, every node gets the same SQLite file in the cluster's data directory, so
//! `kill -9` of a local node is survived out of the box. The URLs reach the nodes through their
//! environment, never their command line: a `postgres://user:password@…` in argv is readable by
//! every local user (`/proc/<pid>/cmdline`, `ps`), and the cluster's other secrets are passed by
//! path for the same reason. Wherever a URL is shown ([`StoreUrl`]'s `Display` and `Debug`, the
//! summary `up` prints) its credentials are left out, and `--help` does not echo the variables.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The environment variables a node reads its store configuration from (`shardgate node`'s
/// `--store`, `--store-durable` and `--ack`).
pub const STORE: &str = "SHARDGATE_STORE";
pub const STORE_DURABLE: &str = "SHARDGATE_STORE_DURABLE";
pub const ACK: &str = "SHARDGATE_ACK";

/// The store flags of `shardgate up`, passed to every node.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreOptions {
    /// Where every node writes its sessions through to: `sqlite:<path>`,
    /// `redis://host:port[,host:port…]` (Redis Cluster seeds), `postgres://…`, or `none` (in
    /// memory only: a node's sessions die with it). Default: `sqlite:<data dir>/sessions.db`,
    /// one file all the local nodes share.
    #[arg(long, env = STORE, hide_env_values = true)]
    pub store: Option<StoreUrl>,
    /// A PostgreSQL URL behind a `redis://` store: the durable copy sessions are recovered from.
    #[arg(long, env = STORE_DURABLE, hide_env_values = true)]
    pub store_durable: Option<StoreUrl>,
    /// When a node counts a message as acknowledged (and lets it leave): once in its memory,
    /// once in the store, or once the store has replicated it. Default: the node's (store).
    #[arg(long, env = ACK, value_enum)]
    pub ack: Option<Ack>,
}

/// How durable a message is before it leaves the node.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    Memory,
    Store,
    Replicated,
}

impl Ack {
    fn as_str(self) -> &'static str {
        match self {
            Ack::Memory => "memory",
            Ack::Store => "store",
            Ack::Replicated => "replicated",
        }
    }
}

impl StoreOptions {
    /// The store every node of the cluster whose data directory is `data_dir` uses.
    pub fn store_or_default(&self, data_dir: &Path) -> StoreUrl {
        self.store.clone().unwrap_or_else(|| {
            StoreUrl(format!("sqlite:{}", data_dir.join("sessions.db").display()))
        })
    }

    /// The environment every node is started with.
    pub fn node_env(&self, data_dir: &Path) -> Vec<(&'static str, String)> {
        let mut env = vec![(STORE, self.store_or_default(data_dir).0)];
        if let Some(durable) = &self.store_durable {
            env.push((STORE_DURABLE, durable.0.clone()));
        }
        if let Some(ack) = self.ack {
            env.push((ACK, ack.as_str().to_owned()));
        }
        env
    }

    /// The summary's lines about the store, without credentials.
    pub fn summary(&self, data_dir: &Path) -> String {
        let mut out = format!("store {}\n", self.store_or_default(data_dir));
        if let Some(durable) = &self.store_durable {
            out.push_str(&format!("store-durable {durable}\n"));
        }
        if let Some(ack) = self.ack {
            out.push_str(&format!("ack {}\n", ack.as_str()));
        }
        out
    }
}

/// A store URL as given. It may carry credentials, so it is shown only through [`redact`].
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a store URL must not be empty".into());
        }
        Ok(StoreUrl(s.to_owned()))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", redact(&self.0))
    }
}

/// Query parameters whose value is a secret (libpq's `password`, and the usual spellings).
const SECRET_PARAMS: [&str; 4] = ["password", "pass", "passwd", "secret"];

/// `url` without its user info (`user:password@`) and with secret query values masked, for
/// every host of a comma-separated list (`redis://a@h1:1,h2:2`, libpq's multi-host URLs).
/// It errs on the side of leaving out too much: everything up to a host's last '@' goes, so a
/// password with an unencoded '/', '?' or '#' does not show either.
pub fn redact(url: &str) -> String {
    // A file path has no credentials, and may well contain an '@'.
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let hosts = url
        .split(',')
        .map(without_user_info)
        .collect::<Vec<_>>()
        .join(",");
    let Some((head, query)) = hosts.split_once('?') else {
        return hosts;
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) => {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", masked.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// One `[scheme://][user[:password]@]host[:port][/path]` without its user info.
fn without_user_info(part: &str) -> String {
    let (scheme, rest) = match part.find("://") {
        Some(at) => part.split_at(at + 3),
        None => ("", part),
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_parameters_are_left_out() {
        let cases = [
            (
                "postgres://shardgate:s3cr%40t@db.internal:5432/sessions?sslmode=require",
                "postgres://db.internal:5432/sessions?sslmode=require",
            ),
            (
                "postgres://db:5432/s?user=sg&password=hunter2&sslmode=disable",
                "postgres://db:5432/s?user=sg&password=***&sslmode=disable",
            ),
            (
                "postgresql://u:p@h1:5432,h2:5433/db?PassWord=x#frag",
                "postgresql://h1:5432,h2:5433/db?PassWord=***#frag",
            ),
            (
                "redis://:token@127.0.0.1:7000,127.0.0.1:7001",
                "redis://127.0.0.1:7000,127.0.0.1:7001",
            ),
            (
                "redis://a:b@h1:1,redis://c:d@h2:2",
                "redis://h1:1,redis://h2:2",
            ),
            ("redis://127.0.0.1:7000", "redis://127.0.0.1:7000"),
            (
                "postgres://db/s?options=-c%20x&password=a,b@c",
                "postgres://db/s?options=-c%20x&password=***",
            ),
            ("postgres://u:p/q?x#y@db:5432/s", "postgres://db:5432/s"),
            (
                "sqlite:/tmp/me@host/sessions.db",
                "sqlite:/tmp/me@host/sessions.db",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
            let parsed: StoreUrl = url.parse().expect("a URL");
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("hunter2"));
        }
    }

    #[test]
    fn without_a_store_every_node_shares_one_sqlite_file() {
        let dir = Path::new("/var/lib/shardgate");
        let options = StoreOptions::default();
        assert_eq!(
            options.node_env(dir),
            vec![(STORE, "sqlite:/var/lib/shardgate/sessions.db".to_owned())]
        );
        let options = StoreOptions {
            store: Some("redis://u:p@h:1".parse().expect("a URL")),
            store_durable: Some("postgres://u:p@db/s".parse().expect("a URL")),
            ack: Some(Ack::Replicated),
        };
        assert_eq!(
            options.node_env(dir),
            vec![
                (STORE, "redis://u:p@h:1".to_owned()),
                (STORE_DURABLE, "postgres://u:p@db/s".to_owned()),
                (ACK, "replicated".to_owned()),
            ]
        );
        let summary = options.summary(dir);
        assert_eq!(
            summary,
            "store redis://h:1\nstore-durable postgres://db/s\nack replicated\n"
        );
    }
}
