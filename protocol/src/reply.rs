//! Building HTTP answers: JSON-RPC bodies with a status, and plain status answers.

use crate::mcp::{self, RequestId, RpcError};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

/// A JSON body with `status`.
pub fn json(status: StatusCode, body: &Value) -> Response {
    json_text(status, body.to_string())
}

/// JSON already serialized, with `status`.
pub fn json_text(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON-RPC error response (`id` null when the request's id is unknown) with `status`.
pub fn rpc_error(status: StatusCode, id: Option<&RequestId>, err: &RpcError) -> Response {
    json_text(status, mcp::answer(id, Err(err)))
}

/// A status with a short JSON-RPC error body saying why, for transport-level refusals.
pub fn refuse(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => mcp::code::INVALID_REQUEST,
        StatusCode::NOT_FOUND => mcp::code::INVALID_REQUEST,
        _ => mcp::code::UNAVAILABLE,
    };
    rpc_error(status, None, &RpcError::new(code, message))
}

/// `202 Accepted` with no body: the answer to notifications and responses.
pub fn accepted() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}
