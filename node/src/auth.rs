//! Who may talk to a node: every request on its session and internal listeners comes from a
//! member of the cluster's trust domain (a gateway, another node, an operator's CLI), or it is
//! refused with 401 before any handler sees it.
//!
//! Two ways to prove it, chosen by the credentials the node is given:
//! - **mTLS**: both listeners speak TLS and require a client certificate signed by the cluster
//!   CA; a connection without one never gets to send a request.
//! - **HMAC**, where TLS is not configured: each request carries a signature under the cluster
//!   secret over its method, path, body, time and every `x-shardgate-*` header
//!   ([`shardgate_trust::signature`]). Answers on the internal listener are signed back, bound
//!   to the request, so that a client knows a membership view or a Raft reply came from a
//!   member and was meant for it.
//!
//! Either way, the trusted `x-shardgate-*` headers reach handlers only on authenticated
//! requests, because no other request reaches them at all.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use shardgate_protocol::listener::Tls;
use shardgate_protocol::reply;
use shardgate_trust::Credentials;
use shardgate_trust::signature::{self, Signer};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// Largest body taken for signature checks; handlers enforce their own, smaller limits.
const MAX_SIGNED_BODY: usize = 16 * 1024 * 1024;

/// Which listener a router serves: the internal one also signs its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Session,
    Internal,
}

/// The node's side of the cluster credentials.
#[derive(Clone)]
pub struct Guard {
    credentials: Credentials,
}

impl Guard {
    pub fn new(credentials: Credentials) -> Guard {
        Guard { credentials }
    }

    /// TLS demanding a client certificate of the cluster CA under mTLS; `None` under HMAC.
    pub fn tls(&self) -> Option<Tls> {
        match &self.credentials {
            Credentials::Mtls(mtls) => Some(Tls {
                acceptor: TlsAcceptor::from(mtls.server.clone()),
                client_certificate_required: true,
            }),
            Credentials::Hmac(_) => None,
        }
    }

    /// `router` behind the signature check under HMAC; unchanged under mTLS, where the
    /// handshake already proved the peer.
    pub fn protect(&self, router: Router, hop: Hop) -> Router {
        match &self.credentials {
            Credentials::Mtls(_) => router,
            Credentials::Hmac(signer) => router.layer(middleware::from_fn_with_state(
                (signer.clone(), hop),
                check_signature,
            )),
        }
    }
}

async fn check_signature(
    State((signer, hop)): State<(Signer, Hop)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_SIGNED_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return reply::refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or cut short",
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let nonce = match signature::verify_request(
        &signer,
        &parts.method,
        path,
        &parts.headers,
        &body,
        SystemTime::now(),
    ) {
        Ok(nonce) => nonce,
        Err(e) => {
            tracing::warn!(path, error = %e, "refused an unauthenticated request");
            return reply::refuse(
                StatusCode::UNAUTHORIZED,
                &format!("cluster authentication failed: {e}"),
            );
        }
    };
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    match hop {
        Hop::Session => resp,
        Hop::Internal => sign_response(&signer, &nonce, resp).await,
    }
}

/// Signs an internal answer; they are small JSON bodies (a long poll answers once).
async fn sign_response(signer: &Signer, nonce: &str, resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let value = signature::sign_response(signer, parts.status.as_u16(), nonce, &body);
    parts.headers.insert(signature::AUTH_HEADER, value);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests;
