//! Why a request got no answer, and the text of a transport error as a client may see it:
//! with its causes, without the upstream's URL or the credentials it may carry.

use shardgate_protocol::mcp::RpcError;

/// Why a request got no answer from the upstream.
pub(super) enum Failure {
    /// The upstream answered with a JSON-RPC error: its answer, not its failure.
    Rpc(RpcError),
    /// The upstream no longer knows the session (404).
    SessionGone,
    /// Unreachable, failing (5xx), too slow, or talking nonsense.
    Broken(String),
    /// A message from the upstream (a JSON body, an SSE event) was longer than this many bytes;
    /// the upstream works, but what it said was not read.
    TooLarge(usize),
}

/// What a client is told of a message over the limit: its size, and the limit's name.
pub(super) fn too_large(limit: usize) -> String {
    format!("the upstream's message exceeded {limit} bytes (limit upstream_message_bytes)")
}

/// A transport error with its causes, which say what actually went wrong (refused, reset,
/// timed out, certificate…). Without the URL reqwest adds: the client is told which upstream
/// failed by its name, and the URL's path and query may hold a credential.
pub(super) fn broken(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure::Broken(text)
}

/// `text` with the upstream's URL cut down to its origin (`scheme://host[:port]`), and its
/// query and password gone wherever they appear alone: what reaches a client or a log says
/// which server failed, never the credentials a URL may carry.
pub(super) fn redact(text: &str, url: &reqwest::Url) -> String {
    let mut out = text.replace(url.as_str(), &url.origin().ascii_serialization());
    for secret in [url.query(), url.password()].into_iter().flatten() {
        if !secret.is_empty() {
            out = out.replace(secret, "…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_name_the_origin_not_the_url() {
        let url =
            reqwest::Url::parse("https://user:hunter2@mcp.example.com:8443/t/mcp?token=s3cret")
                .expect("url");
        let text = format!("error sending request for url ({url}): connection refused");
        let clean = redact(&text, &url);
        assert_eq!(
            clean,
            "error sending request for url (https://mcp.example.com:8443): connection refused"
        );
        let alone = redact("bad query token=s3cret, password hunter2", &url);
        assert!(
            !alone.contains("s3cret") && !alone.contains("hunter2"),
            "{alone}"
        );
    }
}
