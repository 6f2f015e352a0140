//! The client side of the internal listener: what nodes (Raft and cluster RPCs), gateways
//! (membership, reports) and the operator CLI (`status`, `sessions`, `drain`) send to a node,
//! authenticated with the cluster credentials, and whose answers are checked to come from a
//! member.
//!
//! Under mTLS the connection is HTTPS with our certificate, and only a server certificate of
//! the cluster CA is trusted. Under HMAC each request is signed and each answer's signature
//! checked against the request it answers.

use crate::internal;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use shardgate_raft::consensus::{BoxFuture, Transport, TransportError};
use shardgate_trust::Credentials;
use shardgate_trust::signature::{self, Signer};
use std::time::{Duration, SystemTime};

/// Bounds connection setup to a peer that is gone (a blackholed pod IP) well below a lease.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One pooled client for every node; cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    http: reqwest::Client,
    scheme: &'static str,
    signer: Option<Signer>,
    /// The deadline of Raft's calls, which bound each one with a shorter deadline of their own.
    timeout: Duration,
}

/// A node's answer: its status and body, authenticated.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl ClusterClient {
    /// `timeout` caps every call as a last resort; callers pass shorter deadlines per call.
    pub fn new(credentials: &Credentials, timeout: Duration) -> Result<ClusterClient, String> {
        // reqwest is built without a TLS provider of its own (one crypto library, ring); the
        // client refuses to build unless one is installed, even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        let (builder, scheme, signer) = match credentials {
            Credentials::Mtls(mtls) => (
                builder.tls_backend_preconfigured((*mtls.client).clone()),
                "https",
                None,
            ),
            // HTTP/1.1 with keep-alive: a few small requests per heartbeat.
            Credentials::Hmac(signer) => (builder.http1_only(), "http", Some(signer.clone())),
        };
        let http = builder.build().map_err(|e| format!("http client: {e}"))?;
        Ok(ClusterClient {
            http,
            scheme,
            signer,
            timeout,
        })
    }

    /// Sends `method path_and_query` with `body` to the node at `addr` (its internal
    /// listener) and returns the authenticated answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let url = format!("{}://{addr}{path_and_query}", self.scheme);
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let nonce = match &self.signer {
            Some(signer) => {
                let (value, nonce) = signature::sign_request(
                    signer,
                    &method,
                    path_and_query,
                    &HeaderMap::new(),
                    &body,
                );
                request = request.header(signature::AUTH_HEADER, value);
                Some(nonce)
            }
            None => None,
        };
        let response = request.body(body).send().await.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(classify)?;
        if status == StatusCode::UNAUTHORIZED {
            // A refusal of our credentials is not signed (the node could not tell who we are),
            // and carries nothing to believe: say plainly what it is.
            return Err(TransportError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        if let (Some(signer), Some(nonce)) = (&self.signer, nonce) {
            signature::verify_response(
                signer,
                status.as_u16(),
                &nonce,
                &headers,
                &body,
                SystemTime::now(),
            )
            .map_err(|e| {
                TransportError::Other(format!("unauthenticated answer from {addr}: {e}"))
            })?;
        }
        Ok(Answer { status, body })
    }

    /// [`Self::send`], taking only a 2xx answer.
    pub async fn call(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let answer = self
            .send(method, addr, path_and_query, body, timeout)
            .await?;
        if !answer.status.is_success() {
            return Err(TransportError::Status {
                status: answer.status.as_u16(),
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
        Ok(answer.body)
    }

    /// A `GET` whose 2xx answer is JSON of type `T`: the reports operators read.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<T, TransportError> {
        let body = self
            .call(Method::GET, addr, path_and_query, Vec::new(), timeout)
            .await?;
        serde_json::from_slice(&body).map_err(|e| {
            TransportError::Other(format!("{addr} answered {path_and_query} unreadably: {e}"))
        })
    }
}

/// Raft and cluster RPCs: `POST /internal/raft/{name}`.
impl Transport for ClusterClient {
    fn call(
        &self,
        addr: &str,
        name: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let (client, addr) = (self.clone(), addr.to_owned());
        let path = internal::RAFT_PATH.replace("{name}", name);
        Box::pin(async move {
            let timeout = client.timeout;
            let body =
                ClusterClient::call(&client, Method::POST, &addr, &path, body, timeout).await?;
            Ok(body.to_vec())
        })
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if refused(&e) {
        TransportError::Refused(e.to_string())
    } else if e.is_connect() {
        TransportError::Unreachable(e.to_string())
    } else if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Other(e.to_string())
    }
}

/// Whether the connection was refused: somewhere in the error's causes, the connect failed
/// with `ECONNREFUSED`.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = err.source();
    }
    false
}
