//! The node's configuration file (TOML): the upstreams a session is served by, and limits.
//!
//! Raw serde types with unknown fields denied, then [`NodeFile::validate`]; an empty file (or
//! none) means one builtin upstream, the embedded default. `etc/shardgate.toml` is the
//! commented template of every key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The upstreams, in order; with two or more, their names are prefixed (federation).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in errors, logs and metrics.
    pub name: String,
    /// Prefix of this upstream's tool, prompt and resource names when several upstreams are
    /// federated (`<prefix>__<name>`); defaults to `name`. Unused with a single upstream.
    pub prefix: Option<String>,
    /// Exactly one of the kinds below.
    pub builtin: Option<BuiltinConfig>,
    pub stdio: Option<StdioConfig>,
    pub http: Option<HttpConfig>,
}

/// Our own in-process MCP server (tests, demos, benchmarks).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinConfig {}

/// A command spawned on the owning node, speaking line-delimited JSON-RPC on stdin/stdout.
/// `Debug` shows the environment's names, not its values (they are often credentials).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the node's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// How long one request may take before the client gets an error.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

/// What protocol era a remote upstream speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamEra {
    /// Session era (2025-03-26 … 2025-11-25): `initialize`, `Mcp-Session-Id`.
    #[default]
    Session,
    /// Stateless era (2026-07-28): per-request `_meta`, `server/discover`.
    Stateless,
}

/// A remote MCP server over Streamable HTTP. `Debug` shows the headers' names, not their
/// values, and the URL without its query or user info (any of them may be a credential).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    /// Sent on every request: the node's own credentials. The client's are never forwarded.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub era: UpstreamEra,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before it tries the upstream again.
    #[serde(default = "default_breaker_open")]
    pub breaker_open_secs: u64,
}

/// Configured name–value pairs as `Debug` shows them: the names only.
struct Redacted<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// A URL as `Debug` shows it: without its query and user info.
fn redacted_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?<redacted>"),
        None => (url, ""),
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}{path}{query}")
}

impl fmt::Debug for StdioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioConfig")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &Redacted(&self.env))
            .field("cwd", &self.cwd)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &redacted_url(&self.url))
            .field("headers", &Redacted(&self.headers))
            .field("era", &self.era)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_secs", &self.breaker_open_secs)
            .finish()
    }
}

/// What one node holds at most, whatever its clients do; each refusal names its key.
/// `etc/shardgate.toml` documents every key with its default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Session-era sessions one node holds (live and being initialized).
    pub sessions: usize,
    /// Client requests one node serves at once, both eras.
    pub requests: usize,
    /// Client requests one session has in flight at once.
    pub requests_per_session: usize,
    /// Bytes of finished event streams one node keeps for replay.
    pub replay_bytes: usize,
    /// Bytes of event streams one session keeps for replay.
    pub replay_bytes_per_session: usize,
    /// Calls parked while their client answers a question (stateless-era `input_required`).
    pub parked_calls: usize,
    /// Largest message read from an upstream (a JSON body, an SSE event, a stdio line).
    pub upstream_message_bytes: usize,
    /// stdio upstream processes one node runs at once.
    pub stdio_processes: usize,
    /// stdio upstream processes one principal's sessions and keys run on one node at once.
    pub stdio_processes_per_principal: usize,
    /// Sessions one verified principal holds on one node.
    pub sessions_per_principal: usize,
    /// GET streams one verified principal holds open on one node.
    pub streams_per_principal: usize,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Limits {
            sessions: 10_000,
            requests: 4096,
            requests_per_session: 64,
            replay_bytes: 256 * MIB,
            replay_bytes_per_session: 8 * MIB,
            parked_calls: 1024,
            upstream_message_bytes: 16 * MIB,
            stdio_processes: 256,
            stdio_processes_per_principal: 64,
            sessions_per_principal: 1000,
            streams_per_principal: 1000,
        }
    }
}

impl Limits {
    /// Every key with its value, in the order they are documented.
    pub fn entries(&self) -> [(&'static str, usize); 11] {
        [
            ("sessions", self.sessions),
            ("requests", self.requests),
            ("requests_per_session", self.requests_per_session),
            ("replay_bytes", self.replay_bytes),
            ("replay_bytes_per_session", self.replay_bytes_per_session),
            ("parked_calls", self.parked_calls),
            ("upstream_message_bytes", self.upstream_message_bytes),
            ("stdio_processes", self.stdio_processes),
            (
                "stdio_processes_per_principal",
                self.stdio_processes_per_principal,
            ),
            ("sessions_per_principal", self.sessions_per_principal),
            ("streams_per_principal", self.streams_per_principal),
        ]
    }
}

fn default_request_timeout() -> u64 {
    300
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u64 {
    10
}

/// Separator between a federated upstream's prefix and the name it gave.
pub const PREFIX_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("upstream {0:?}: exactly one of builtin, stdio or http must be given")]
    Kind(String),
    #[error("upstream name {0:?} is used twice")]
    DuplicateName(String),
    #[error("upstream prefix {0:?} is used twice")]
    DuplicatePrefix(String),
    #[error("upstream {name:?}: {problem}")]
    Invalid { name: String, problem: String },
}

/// The kind of one upstream, once validated.
pub enum Kind<'a> {
    Builtin,
    Stdio(&'a StdioConfig),
    Http(&'a HttpConfig),
}

impl UpstreamConfig {
    pub fn kind(&self) -> Result<Kind<'_>, ConfigError> {
        match (&self.builtin, &self.stdio, &self.http) {
            (Some(_), None, None) => Ok(Kind::Builtin),
            (None, Some(s), None) => Ok(Kind::Stdio(s)),
            (None, None, Some(h)) => Ok(Kind::Http(h)),
            _ => Err(ConfigError::Kind(self.name.clone())),
        }
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }
}

impl NodeFile {
    pub fn parse(text: &str) -> Result<NodeFile, ConfigError> {
        let file: NodeFile = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        file.validate()?;
        Ok(file)
    }

    pub fn load(path: &std::path::Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        NodeFile::parse(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for u in &self.upstreams {
            let invalid = |problem: &str| ConfigError::Invalid {
                name: u.name.clone(),
                problem: problem.to_owned(),
            };
            if u.name.is_empty() {
                return Err(invalid("the name is empty"));
            }
            if !names.insert(u.name.as_str()) {
                return Err(ConfigError::DuplicateName(u.name.clone()));
            }
            let prefix = u.prefix();
            // `x_` next to `x` would make `x___tool` ambiguous.
            if prefix.is_empty() || prefix.contains(PREFIX_SEPARATOR) || prefix.ends_with('_') {
                return Err(invalid(
                    "the prefix must be non-empty, contain no \"__\" and not end in \"_\"",
                ));
            }
            if !prefixes.insert(prefix) {
                return Err(ConfigError::DuplicatePrefix(prefix.to_owned()));
            }
            match u.kind()? {
                Kind::Builtin => {}
                Kind::Stdio(s) if s.command.trim().is_empty() => {
                    return Err(invalid("stdio.command is empty"));
                }
                Kind::Stdio(_) => {}
                Kind::Http(h) => {
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                        return Err(invalid("http.url must be an http:// or https:// URL"));
                    }
                    if h.breaker_failures == 0 {
                        return Err(invalid("http.breaker_failures must be at least 1"));
                    }
                }
            }
        }
        if let Some((key, _)) = self.limits.entries().into_iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Parse(format!(
                "limits.{key} must be at least 1"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses() {
        let file = NodeFile::parse(
            r#"
            [[upstream]]
            name = "local"
            [upstream.builtin]

            [[upstream]]
            name = "everything"
            prefix = "ev"
            [upstream.stdio]
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-everything"]
            env = { DEBUG = "1" }

            [[upstream]]
            name = "remote"
            [upstream.http]
            url = "https://mcp.example.com/mcp"
            headers = { Authorization = "Bearer node-credential" }
            era = "stateless"

            [limits]
            stdio_processes = 8
            "#,
        )
        .expect("valid");
        assert_eq!(file.upstreams.len(), 3);
        assert_eq!(file.upstreams[1].prefix(), "ev");
        assert_eq!(file.limits.stdio_processes, 8);
        assert!(
            matches!(file.upstreams[2].kind(), Ok(Kind::Http(h)) if h.era == UpstreamEra::Stateless)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let file = NodeFile::parse(
            r#"
            [[upstream]]
            name = "remote"
            [upstream.http]
            url = "https://bot:pa55@mcp.example.com/mcp?token=s3cret"
            headers = { Authorization = "Bearer node-credential" }

            [[upstream]]
            name = "local"
            [upstream.stdio]
            command = "server"
            env = { API_KEY = "k3y" }
            "#,
        )
        .expect("valid");
        let shown = format!("{file:?}");
        for secret in ["node-credential", "s3cret", "pa55", "k3y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for name in ["Authorization", "API_KEY", "mcp.example.com/mcp", "server"] {
            assert!(shown.contains(name), "{name} missing from {shown}");
        }
        assert_eq!(redacted_url("http://h:1/mcp"), "http://h:1/mcp");
    }

    #[test]
    fn mistakes_are_named() {
        let two_kinds = "[[upstream]]\nname='a'\n[upstream.builtin]\n[upstream.stdio]\ncommand='x'";
        assert!(matches!(
            NodeFile::parse(two_kinds),
            Err(ConfigError::Kind(_))
        ));
        let unknown = "[[upstream]]\nname='a'\ncolour='red'\n[upstream.builtin]";
        assert!(matches!(
            NodeFile::parse(unknown),
            Err(ConfigError::Parse(_))
        ));
        let twice = "[[upstream]]\nname='a'\n[upstream.builtin]\n[[upstream]]\nname='a'\n[upstream.builtin]";
        assert!(matches!(
            NodeFile::parse(twice),
            Err(ConfigError::DuplicateName(_))
        ));
        let trailing = "[[upstream]]\nname='a'\nprefix='x_'\n[upstream.builtin]";
        assert!(matches!(
            NodeFile::parse(trailing),
            Err(ConfigError::Invalid { .. })
        ));
        let bad_url = "[[upstream]]\nname='a'\n[upstream.http]\nurl='ftp://x'";
        assert!(matches!(
            NodeFile::parse(bad_url),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(
            NodeFile::parse("")
                .expect("empty is fine")
                .upstreams
                .is_empty()
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// Every configuration file the repository ships parses and validates.
    #[test]
    fn every_shipped_config_parses() {
        let etc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        let mut files = vec![etc.join("shardgate.toml")];
        let examples = std::fs::read_dir(etc.join("examples")).expect("etc/examples exists");
        for entry in examples.flatten() {
            files.push(entry.path());
        }
        assert!(files.len() >= 4, "{files:?}");
        for f in files {
            if let Err(e) = NodeFile::load(&f) {
                panic!("{}: {e}", f.display());
            }
        }
    }

    /// The commented template states the defaults the code has.
    #[test]
    fn the_template_documents_the_default_limits() {
        let etc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        let file = NodeFile::load(&etc.join("shardgate.toml")).expect("the template loads");
        assert_eq!(file.limits, Limits::default());
    }

    #[test]
    fn a_zero_limit_is_refused_by_name() {
        let err = NodeFile::parse("[limits]\nparked_calls = 0\n")
            .and_then(|f| f.validate().map(|()| f))
            .expect_err("refused");
        assert!(err.to_string().contains("limits.parked_calls"), "{err}");
    }
}
