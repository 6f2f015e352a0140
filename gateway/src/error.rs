//! Everything that can go wrong on the proxy path, with who is to blame, whether a retry is
//! safe, and the one HTTP status, JSON-RPC error and metric label each maps to.

use crate::{auth, rate};
use http::StatusCode;
use shardgate_protocol::mcp::{self, RpcError, code};
use shardgate_protocol::stateless_checks::Refusal;

/// Who caused a failure; a metric label and a hint for operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    Client,
    Gateway,
    Node,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The origin as quoted back: an excerpt (`mcp::excerpt`), never the whole header.
    #[error("Forbidden: origin '{0}' is not allowed")]
    Origin(String),
    /// The host as quoted back: an excerpt, never the whole header.
    #[error("Forbidden: host '{0}' is not allowed")]
    Host(String),
    #[error("{}", .0.message())]
    Auth(auth::Refusal),
    #[error("Too Many Requests: over the rate allowed per {}; retry after {} s", .0.by, .0.retry_after_secs())]
    RateLimited(rate::Limited),
    #[error("Method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("Not Acceptable: {0}")]
    NotAcceptable(&'static str),
    #[error("Unsupported Media Type: Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("Payload Too Large: the body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("Bad Request: the body could not be read: {0}")]
    BodyRead(String),
    #[error("Parse error: the body is not valid JSON")]
    Parse,
    #[error("Invalid Request: the body is not a JSON-RPC 2.0 message")]
    Invalid,
    #[error("Bad Request: Mcp-Session-Id header is required")]
    MissingSession,
    #[error("{}", .0.error.message)]
    Stateless(Refusal),
    #[error("no active node can serve this request")]
    NoNodes,
    /// The request may have reached the node before its connection failed: what it did is not
    /// known, which the message says in the words the node's own failover error uses.
    #[error("node {node} was lost with the request under way ({error}): {interrupted}", interrupted = mcp::INTERRUPTED)]
    NodeUnreachable { node: String, error: String },
    /// Nothing reached the node (the connection was refused), and the ring did not move its key
    /// to another node while the request was held.
    #[error(
        "node {node} refused the connection and no other node took over its keys in time; retry"
    )]
    NodeDown { node: String },
    #[error("node {node} does not own this key and no newer ring names another owner")]
    Misdirected { node: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Origin(_) | ProxyError::Host(_) => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyRead(_)
            | ProxyError::Parse
            | ProxyError::Invalid
            | ProxyError::MissingSession => StatusCode::BAD_REQUEST,
            ProxyError::Stateless(r) => r.status,
            ProxyError::Auth(r) => r.status(),
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoNodes | ProxyError::Misdirected { .. } | ProxyError::NodeDown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NodeUnreachable { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn rpc_error(&self) -> RpcError {
        match self {
            ProxyError::Stateless(r) => r.error.clone(),
            ProxyError::Parse => RpcError::new(code::PARSE_ERROR, self.to_string()),
            ProxyError::NoNodes
            | ProxyError::NodeUnreachable { .. }
            | ProxyError::NodeDown { .. }
            | ProxyError::Misdirected { .. }
            | ProxyError::Auth(auth::Refusal::KeysUnavailable) => {
                RpcError::new(code::UNAVAILABLE, self.to_string())
            }
            _ => RpcError::new(code::INVALID_REQUEST, self.to_string()),
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoNodes
            | ProxyError::Misdirected { .. }
            | ProxyError::Auth(auth::Refusal::KeysUnavailable) => Blame::Gateway,
            ProxyError::NodeUnreachable { .. } | ProxyError::NodeDown { .. } => Blame::Node,
            _ => Blame::Client,
        }
    }

    /// Whether the client may send the same request again. Refusals of the request itself are
    /// final; a node we could not reach may or may not have taken it, so only the client knows.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::NoNodes
                | ProxyError::Misdirected { .. }
                | ProxyError::NodeDown { .. }
                | ProxyError::Auth(auth::Refusal::KeysUnavailable)
                | ProxyError::RateLimited(_)
        )
    }

    /// The metric label for this failure.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::Origin(_) => "origin",
            ProxyError::Host(_) => "host",
            ProxyError::Auth(auth::Refusal::Missing) => "unauthenticated",
            ProxyError::Auth(auth::Refusal::Invalid(_)) => "invalid_token",
            ProxyError::Auth(auth::Refusal::Scope) => "insufficient_scope",
            ProxyError::Auth(auth::Refusal::KeysUnavailable) => "keys_unavailable",
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::NotAcceptable(_) => "not_acceptable",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyRead(_) => "body_read",
            ProxyError::Parse => "parse_error",
            ProxyError::Invalid => "invalid_request",
            ProxyError::MissingSession => "missing_session",
            ProxyError::Stateless(_) => "stateless_check",
            ProxyError::NoNodes => "no_nodes",
            ProxyError::NodeUnreachable { .. } => "node_unreachable",
            ProxyError::NodeDown { .. } => "node_down",
            ProxyError::Misdirected { .. } => "misdirected",
        }
    }
}
