//! MCP protocol facts shared by gateway and node: revisions and their eras, header names,
//! JSON-RPC message shapes and error codes.
//!
//! Only what routing and safety need is parsed; everything else in a message is carried as
//! opaque JSON so that fields we do not know pass through unchanged.

mod id;

pub use id::{RequestId, answer};
use serde_json::{Map, Value, json};

/// Session-era revisions, oldest first.
pub const SESSION_ERA_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// Stateless-era revisions, oldest first.
pub const STATELESS_ERA_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The newest session-era revision, offered when a client asks for one we do not know.
pub const LATEST_SESSION_VERSION: &str = "2025-11-25";

pub const HEADER_SESSION_ID: &str = "mcp-session-id";
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";
pub const HEADER_LAST_EVENT_ID: &str = "last-event-id";
/// Prefix of the stateless era's `Mcp-Param-<Name>` headers (lowercase, as `http` names them).
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";

/// `_meta` key of a stateless-era request that names its protocol revision.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of a stateless-era request that carries the client's capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// `_meta` key of a stateless-era request that opts in to log messages at or above a level.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key of a stateless-era result naming the server's implementation.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key tying a `subscriptions/listen` notification to its listen request.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Log levels (RFC 5424 severities), least severe first.
pub const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// How severe a log level is (0 for `debug`); `None` for a level that does not exist.
pub fn log_level_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// JSON-RPC and MCP error codes we produce.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A request header disagrees with the body (stateless era).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// The request needs a client capability it did not declare (stateless era).
    pub const MISSING_CAPABILITY: i64 = -32021;
    /// The requested protocol revision is not supported (stateless era).
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// The resource asked for does not exist.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// The gateway or node could not serve the request (ours; in the implementation range).
    pub const UNAVAILABLE: i64 = -32001;
}

/// What a request is told when the node serving it was lost before it answered: it may or may
/// not have taken effect.
pub const INTERRUPTED: &str = "interrupted by failover; not known to have completed";

/// Which era of the protocol a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    Session,
    Stateless,
}

pub fn is_session_version(v: &str) -> bool {
    SESSION_ERA_VERSIONS.contains(&v)
}

pub fn is_stateless_version(v: &str) -> bool {
    STATELESS_ERA_VERSIONS.contains(&v)
}

/// Every revision this server speaks, newest first (the order clients pick from).
pub fn supported_versions() -> Vec<&'static str> {
    STATELESS_ERA_VERSIONS
        .iter()
        .rev()
        .chain(SESSION_ERA_VERSIONS.iter().rev())
        .copied()
        .collect()
}

/// The -32022 error: `requested` is not a revision we speak; `data` lists those we do.
pub fn unsupported_version(requested: &str) -> RpcError {
    RpcError::new(code::UNSUPPORTED_VERSION, "Unsupported protocol version").with_data(
        serde_json::json!({ "supported": supported_versions(), "requested": excerpt(requested) }),
    )
}

/// Characters of client input an error message quotes at most.
pub const EXCERPT_CHARS: usize = 64;

/// What an error message may quote of client input (a header value, a method name): at most
/// [`EXCERPT_CHARS`] characters, control characters escaped, and `…` when cut. Echoing input
/// whole would hand a client back kilobytes of its own header, and put its bytes into logs.
pub fn excerpt(input: &str) -> String {
    let mut out = String::with_capacity(input.len().min(EXCERPT_CHARS + 8));
    for (i, c) in input.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Picks the era of one POSTed message (the dual-era rule of the 2026-07-28 versioning
/// section): a request that carries the stateless `_meta` version, or names a stateless revision
/// in its `MCP-Protocol-Version` header, is stateless; everything else — `initialize`, session
/// traffic, and clients too old to send the header — is session era.
pub fn classify_era(header_version: Option<&str>, msg: Option<&Value>) -> Era {
    let meta_version = msg.and_then(meta_protocol_version);
    if meta_version.is_some() || header_version.is_some_and(is_stateless_version) {
        Era::Stateless
    } else {
        Era::Session
    }
}

/// A JSON-RPC message, classified by shape. The original JSON is kept whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request { id: RequestId, method: String },
    Notification { method: String },
    Response { id: Value },
}

impl Message {
    /// Classifies one JSON-RPC message; `None` when it is not a valid JSON-RPC 2.0 message.
    pub fn classify(v: &Value) -> Option<Message> {
        let obj = v.as_object()?;
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return None;
        }
        let id = obj.get("id").filter(|id| id.is_string() || id.is_number());
        match (obj.get("method"), id) {
            (Some(Value::String(m)), Some(id)) => Some(Message::Request {
                id: RequestId::new(id.clone()),
                method: m.clone(),
            }),
            (Some(Value::String(m)), None) if !obj.contains_key("id") => {
                Some(Message::Notification { method: m.clone() })
            }
            (None, Some(id)) if obj.contains_key("result") ^ obj.contains_key("error") => {
                Some(Message::Response { id: id.clone() })
            }
            _ => None,
        }
    }
}

/// A POST body: one message or (2025-03-26 only) a batch.
#[derive(Debug)]
pub struct Body {
    pub messages: Vec<(Message, Value)>,
    pub batch: bool,
}

/// The revisions that removed JSON-RPC batching (2025-06-18 changelog): a batch is not a
/// message there.
pub fn batches_allowed(version: &str) -> bool {
    version < "2025-06-18"
}

/// The refusal of a batch under a revision without batching: HTTP 400 (the transport's answer
/// to input it cannot accept) with JSON-RPC Invalid Request, as the body is not one message.
pub fn batch_refused(version: &str) -> RpcError {
    RpcError::new(
        code::INVALID_REQUEST,
        format!(
            "Invalid Request: JSON-RPC batches are not part of revision {}; send one message per POST",
            excerpt(version)
        ),
    )
}

/// Why a POST body is not acceptable JSON-RPC.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all: JSON-RPC parse error.
    Parse,
    /// JSON, but not a JSON-RPC message (or an empty batch): invalid request.
    Invalid,
}

impl Body {
    pub fn parse(bytes: &[u8]) -> Result<Body, BodyError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| BodyError::Parse)?;
        let (values, batch) = match value {
            Value::Array(items) if !items.is_empty() => (items, true),
            Value::Array(_) => return Err(BodyError::Invalid),
            other => (vec![other], false),
        };
        let mut messages = values
            .into_iter()
            .map(|v| Message::classify(&v).map(|m| (m, v)))
            .collect::<Option<Vec<_>>>()
            .ok_or(BodyError::Invalid)?;
        id::keep_exact(&mut messages, bytes, batch);
        Ok(Body { messages, batch })
    }

    /// The single `initialize` request of this body, if that is what it is.
    pub fn initialize(&self) -> Option<(&RequestId, &Value)> {
        match self.messages.as_slice() {
            [(Message::Request { id, method }, v)] if method == "initialize" => Some((id, v)),
            _ => None,
        }
    }
}

/// Which of the two response media types an `Accept` header allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepts {
    pub json: bool,
    pub sse: bool,
}

impl Accepts {
    /// Reads an `Accept` header; wildcards count, `q=0` excludes. A missing header accepts
    /// anything (RFC 9110).
    pub fn parse(header: Option<&str>) -> Accepts {
        let Some(header) = header else {
            return Accepts {
                json: true,
                sse: true,
            };
        };
        let mut out = Accepts::default();
        for item in header.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match media.as_str() {
                "*/*" => {
                    out.json = true;
                    out.sse = true;
                }
                "application/*" | "application/json" => out.json = true,
                "text/*" | "text/event-stream" => out.sse = true,
                _ => {}
            }
        }
        out
    }

    /// Reads every `Accept` field of a request: several fields form one list (RFC 9110 §5.3).
    pub fn from_headers(headers: &http::HeaderMap) -> Accepts {
        let values: Vec<&str> = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            Accepts::parse(None)
        } else {
            Accepts::parse(Some(&values.join(",")))
        }
    }

    pub fn any(self) -> bool {
        self.json || self.sse
    }
}

/// The protocol revision a stateless-era request names in its `_meta`.
pub fn meta_protocol_version(msg: &Value) -> Option<&str> {
    msg.get("params")?
        .get("_meta")?
        .get(META_PROTOCOL_VERSION)?
        .as_str()
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut err = Map::new();
        err.insert("code".into(), self.code.into());
        err.insert("message".into(), self.message.clone().into());
        if let Some(d) = &self.data {
            err.insert("data".into(), d.clone());
        }
        Value::Object(err)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error_response(id: Option<&Value>, err: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err.to_json()})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

pub fn request(id: &Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_shapes() {
        let req = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let resp = json!({"jsonrpc":"2.0","id":"a","result":{}});
        assert!(matches!(
            Message::classify(&req),
            Some(Message::Request { .. })
        ));
        assert!(matches!(
            Message::classify(&note),
            Some(Message::Notification { .. })
        ));
        assert!(matches!(
            Message::classify(&resp),
            Some(Message::Response { .. })
        ));
    }

    #[test]
    fn rejects_what_is_not_json_rpc() {
        assert_eq!(Body::parse(b"{").expect_err("refused"), BodyError::Parse);
        assert_eq!(Body::parse(b"[]").expect_err("refused"), BodyError::Invalid);
        assert_eq!(
            Body::parse(br#"{"id":1}"#).expect_err("refused"),
            BodyError::Invalid
        );
        assert_eq!(
            Body::parse(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).expect_err("refused"),
            BodyError::Invalid
        );
        assert_eq!(
            Body::parse(br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#).expect_err("refused"),
            BodyError::Invalid
        );
    }

    #[test]
    fn reads_accept_headers() {
        let both = Accepts::parse(Some("application/json, text/event-stream"));
        assert!(both.json && both.sse);
        let sse = Accepts::parse(Some("text/event-stream"));
        assert!(sse.sse && !sse.json);
        assert!(Accepts::parse(Some("*/*")).json);
        assert!(!Accepts::parse(Some("text/html")).any());
        assert!(!Accepts::parse(Some("application/json;q=0")).json);
        assert!(Accepts::parse(None).sse);
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("2025-06-18"), "2025-06-18");
        let long = "x".repeat(8192);
        let quoted = excerpt(&long);
        assert_eq!(quoted.chars().count(), EXCERPT_CHARS + 1);
        assert!(quoted.ends_with('…'));
        assert_eq!(excerpt("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn batches_end_with_2025_03_26() {
        assert!(batches_allowed("2025-03-26"));
        assert!(!batches_allowed("2025-06-18"));
        assert!(!batches_allowed("2025-11-25"));
        assert_eq!(batch_refused("2025-11-25").code, code::INVALID_REQUEST);
    }

    #[test]
    fn finds_initialize() {
        let b = Body::parse(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#)
            .expect("valid");
        assert!(b.initialize().is_some());
        assert!(!b.batch);
    }
}
