//! Connections to the endpoint, on hyper's connection API directly: HTTP/1.1, or HTTP/2 by
//! prior knowledge (cleartext) or by ALPN (over TLS); HTTP/3 over QUIC (quinn and the h3
//! crate's client). `https://` takes the cluster's credentials, so that a node's session
//! listener, which serves only members, can be measured straight, or a CA to trust (a
//! gateway's certificate). No pool logic beyond a fixed set of connections that are
//! reopened when they break: the generator shares the machine with what it measures, so a
//! request must cost it little.
//!
//! - HTTP/1.1: a connection carries one exchange at a time. A session leases its connection
//!   for the whole exchange, body included; several sessions on one connection queue for it,
//!   and that wait counts in their latency as it would for a real client.
//! - HTTP/2 and HTTP/3: every session sends on a shared connection, concurrently.
//!
//! A lease that is dropped before its exchange ended cleanly (a timeout, a body not read to
//! its end) takes its HTTP/1.1 connection with it: the next lease opens a new one, since
//! nobody knows what is still in flight on the old one.

use anyhow::{Context, bail};
use bytes::{Buf, Bytes};
use http::header::{HOST, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use shardgate_trust::tls::{Mtls, TlsFiles, read_roots};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio_rustls::TlsConnector;

type Body = Full<Bytes>;

/// The HTTP version the generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    /// HTTP/2: by prior knowledge over cleartext (h2c), as the gateway's listeners accept it;
    /// by ALPN over TLS.
    Http2,
    /// HTTP/3 over QUIC: `https://` only.
    Http3,
}

impl FromStr for HttpVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<HttpVersion, String> {
        match text.trim() {
            "1" | "1.1" => Ok(HttpVersion::Http1),
            "2" => Ok(HttpVersion::Http2),
            "3" => Ok(HttpVersion::Http3),
            other => Err(format!("'{other}' is not an HTTP version: use 1, 2 or 3")),
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpVersion::Http1 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
            HttpVersion::Http3 => "HTTP/3",
        })
    }
}

/// Where requests go.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `https://`: the name the server's certificate must carry.
    tls: Option<ServerName<'static>>,
    /// The `Host` of HTTP/1.1 requests.
    host: HeaderValue,
    /// The request target of HTTP/1.1 (origin form) …
    path: Uri,
    /// … and of HTTP/2 (absolute: its scheme and authority become pseudo-headers).
    absolute: Uri,
}

impl Target {
    /// Parses an `http://` or `https://host:port/path` URL and resolves its host.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("'{url}' is not a URL"))?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some("http") => ("http", 80),
            Some("https") => ("https", 443),
            _ => bail!("{url}: the URL must start with http:// or https://"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("{url}: no host"))?
            .clone();
        let tls = match scheme {
            "https" => Some(
                ServerName::try_from(authority.host().to_owned()).with_context(|| {
                    format!("{url}: '{}' is not a server name", authority.host())
                })?,
            ),
            _ => None,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .with_context(|| format!("cannot resolve {}", authority.host()))?
            .next()
            .with_context(|| format!("{} has no address", authority.host()))?;
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Target {
            addr,
            tls,
            host: HeaderValue::from_str(authority.as_str())?,
            path: path_and_query.parse()?,
            absolute: Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()?,
        })
    }
}

/// What went wrong on the wire.
#[derive(Debug)]
pub struct TransportError(pub String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<hyper::Error> for TransportError {
    fn from(e: hyper::Error) -> TransportError {
        // hyper's own message is terse ("connection closed before message completed"); its
        // source says why.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        TransportError(text)
    }
}

impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> TransportError {
        TransportError(e.to_string())
    }
}

/// One HTTP/3 connection: the QUIC endpoint and connection it lives on, and its sender.
#[derive(Clone)]
struct H3Conn {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
}

enum Slot {
    H1(Mutex<Option<http1::SendRequest<Body>>>),
    H2(Mutex<Option<http2::SendRequest<Body>>>),
    H3(Mutex<Option<H3Conn>>),
}

/// Whom an `https://` target is trusted as.
#[derive(Clone, Debug)]
pub enum Trust {
    /// A member of the cluster (a node's session listener): its CA, and our certificate.
    Member(TlsFiles),
    /// A server whose certificate this CA signed (a gateway's), without a client certificate.
    Ca(PathBuf),
}

/// A fixed set of connections to the target.
pub struct Connections {
    target: Target,
    version: HttpVersion,
    slots: Vec<Slot>,
    /// `https://`: TLS offering only `version` by ALPN.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `Authorization` of every request, when the endpoint wants a bearer token.
    authorization: Option<HeaderValue>,
}

impl Connections {
    /// `trust` is needed for, and used only with, an `https://` target.
    pub fn new(
        target: Target,
        version: HttpVersion,
        count: usize,
        trust: Option<&Trust>,
    ) -> anyhow::Result<Connections> {
        let alpn = match version {
            HttpVersion::Http1 => b"http/1.1".to_vec(),
            HttpVersion::Http2 => b"h2".to_vec(),
            HttpVersion::Http3 => b"h3".to_vec(),
        };
        let tls = match (&target.tls, trust) {
            (None, _) if version == HttpVersion::Http3 => {
                bail!("HTTP/3 needs an https:// target")
            }
            (None, _) => None,
            (Some(_), None) => bail!(
                "an https:// target needs the cluster's credentials (--credentials DIR, as `shardgate up` prints) or the CA of its certificate (--ca FILE)"
            ),
            (Some(_), Some(Trust::Member(files))) => {
                let mut client = (*Mtls::load(files)?.client).clone();
                client.alpn_protocols = vec![alpn];
                Some(Arc::new(client))
            }
            (Some(_), Some(Trust::Ca(ca))) => {
                let roots = read_roots(ca)?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut client = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                client.alpn_protocols = vec![alpn];
                Some(Arc::new(client))
            }
        };
        let slots = (0..count.max(1))
            .map(|_| match version {
                HttpVersion::Http1 => Slot::H1(Mutex::new(None)),
                HttpVersion::Http2 => Slot::H2(Mutex::new(None)),
                HttpVersion::Http3 => Slot::H3(Mutex::new(None)),
            })
            .collect();
        Ok(Connections {
            target,
            version,
            slots,
            tls,
            authorization: None,
        })
    }

    /// Every request carries `token` as its bearer token.
    pub fn with_bearer(mut self, token: Option<&str>) -> anyhow::Result<Connections> {
        self.authorization = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("the bearer token cannot be a header")?;
        Ok(self)
    }

    fn connector(&self) -> Option<TlsConnector> {
        self.tls.clone().map(TlsConnector::from)
    }

    async fn connect_h3(&self) -> Result<H3Conn, TransportError> {
        let (Some(tls), Some(name)) = (&self.tls, &self.target.tls) else {
            return Err(TransportError("HTTP/3 needs TLS".into()));
        };
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.clone())
            .map_err(|e| TransportError(format!("TLS for QUIC: {e}")))?;
        let local: SocketAddr = match self.target.addr {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut endpoint = quinn::Endpoint::client(local)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(self.target.addr, &name.to_str())
            .map_err(|e| TransportError(e.to_string()))?
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        tokio::spawn(async move {
            // Its end shows up on the connection as a close reason.
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Conn {
            _endpoint: endpoint,
            conn,
            send,
        })
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Body>, TransportError> {
        let tcp = tcp(self.target.addr).await?;
        match (self.connector(), &self.target.tls) {
            (Some(tls), Some(name)) => {
                let stream = tls.connect(name.clone(), tcp).await?;
                handshake_h1(TokioIo::new(stream)).await
            }
            _ => handshake_h1(TokioIo::new(tcp)).await,
        }
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Body>, TransportError> {
        let tcp = tcp(self.target.addr).await?;
        match (self.connector(), &self.target.tls) {
            (Some(tls), Some(name)) => {
                let stream = tls.connect(name.clone(), tcp).await?;
                handshake_h2(TokioIo::new(stream)).await
            }
            _ => handshake_h2(TokioIo::new(tcp)).await,
        }
    }

    /// Opens every connection, so that the run does not start with a burst of handshakes.
    pub async fn open_all(&self) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            let lease = self
                .lease(i)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", self.target.addr))?;
            lease.release();
        }
        Ok(())
    }

    /// A request to the endpoint, in the form the version needs.
    pub fn request(&self, method: Method) -> http::request::Builder {
        let b = match self.version {
            HttpVersion::Http1 => Request::builder()
                .method(method)
                .uri(self.target.path.clone())
                .header(HOST, self.target.host.clone()),
            HttpVersion::Http2 | HttpVersion::Http3 => Request::builder()
                .method(method)
                .uri(self.target.absolute.clone()),
        };
        match &self.authorization {
            Some(value) => b.header(http::header::AUTHORIZATION, value.clone()),
            None => b,
        }
    }

    /// The use of connection `i` (modulo their number) for one exchange, opening it if needed.
    pub async fn lease(&self, i: usize) -> Result<Lease<'_>, TransportError> {
        let slot = self
            .slots
            .get(i % self.slots.len().max(1))
            .ok_or_else(|| TransportError("no connections".into()))?;
        match slot {
            Slot::H1(mutex) => {
                let mut guard = mutex.lock().await;
                let sender = match guard.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => self.connect_h1().await?,
                };
                Ok(Lease::H1 {
                    guard,
                    sender: Some(sender),
                })
            }
            Slot::H2(mutex) => {
                let mut guard = mutex.lock().await;
                let sender = match guard.as_ref() {
                    Some(s) if !s.is_closed() => s.clone(),
                    _ => {
                        let s = self.connect_h2().await?;
                        *guard = Some(s.clone());
                        s
                    }
                };
                Ok(Lease::H2 { sender })
            }
            Slot::H3(mutex) => {
                let mut guard = mutex.lock().await;
                let conn = match guard.as_ref() {
                    Some(c) if c.conn.close_reason().is_none() => c.clone(),
                    _ => {
                        let c = self.connect_h3().await?;
                        *guard = Some(c.clone());
                        c
                    }
                };
                Ok(Lease::H3 { sender: conn.send })
            }
        }
    }

    /// A connection of its own for one exchange that will not end cleanly (a GET stream read
    /// only to its first event), so that no shared HTTP/1.1 connection is lost to it. Over
    /// HTTP/2 closing a stream costs the connection nothing: this is a lease like any other.
    pub async fn dedicated(&self, i: usize) -> Result<Lease<'_>, TransportError> {
        match self.version {
            HttpVersion::Http1 => Ok(Lease::Own {
                sender: self.connect_h1().await?,
            }),
            HttpVersion::Http2 | HttpVersion::Http3 => self.lease(i).await,
        }
    }
}

/// The use of a connection for one exchange.
pub enum Lease<'a> {
    H1 {
        guard: MutexGuard<'a, Option<http1::SendRequest<Body>>>,
        /// Taken out of the slot while leased: put back only by [`Lease::release`].
        sender: Option<http1::SendRequest<Body>>,
    },
    H2 {
        sender: http2::SendRequest<Body>,
    },
    H3 {
        sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    },
    Own {
        sender: http1::SendRequest<Body>,
    },
}

impl Lease<'_> {
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Answer>, TransportError> {
        let hyper = |resp: Response<Incoming>| resp.map(Answer::Hyper);
        match self {
            Lease::H1 { sender, .. } => {
                let s = sender
                    .as_mut()
                    .ok_or_else(|| TransportError("the connection was given up".into()))?;
                s.ready().await?;
                Ok(hyper(s.send_request(req).await?))
            }
            Lease::H2 { sender } => {
                sender.ready().await?;
                Ok(hyper(sender.send_request(req).await?))
            }
            Lease::H3 { sender } => {
                let h3 = |e: h3::error::StreamError| TransportError(e.to_string());
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut stream = sender
                    .send_request(Request::from_parts(parts, ()))
                    .await
                    .map_err(h3)?;
                if !body.is_empty() {
                    stream.send_data(body).await.map_err(h3)?;
                }
                stream.finish().await.map_err(h3)?;
                let head = stream.recv_response().await.map_err(h3)?;
                Ok(head.map(|()| Answer::H3(Box::new(stream))))
            }
            Lease::Own { sender } => {
                sender.ready().await?;
                Ok(hyper(sender.send_request(req).await?))
            }
        }
    }

    /// The exchange ended cleanly (its body read to the end): the connection can carry the
    /// next one. A lease dropped without this closes an HTTP/1.1 connection.
    pub fn release(self) {
        if let Lease::H1 { mut guard, sender } = self
            && let Some(s) = sender
            && !s.is_closed()
        {
            *guard = Some(s);
        }
    }
}

/// An answer's body, whichever version carried it.
pub enum Answer {
    Hyper(Incoming),
    H3(Box<h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>>),
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        match self.get_mut() {
            Answer::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(TransportError::from),
            Answer::H3(stream) => match ready!(stream.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    Poll::Ready(Some(Ok(Frame::data(data.copy_to_bytes(data.remaining())))))
                }
                Ok(None) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(TransportError(e.to_string())))),
            },
        }
    }
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, TransportError> {
    let stream = TcpStream::connect(addr).await?;
    // Requests are small and answered at once: Nagle's delay would be pure latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn handshake_h1<I>(io: I) -> Result<http1::SendRequest<Body>, TransportError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        // Its end (or error) shows up on the sender as a closed connection.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn handshake_h2<I>(io: I) -> Result<http2::SendRequest<Body>, TransportError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!("1".parse(), Ok(HttpVersion::Http1));
        assert_eq!("1.1".parse(), Ok(HttpVersion::Http1));
        assert_eq!("2".parse(), Ok(HttpVersion::Http2));
        assert_eq!("3".parse(), Ok(HttpVersion::Http3));
        assert!("h2".parse::<HttpVersion>().is_err());
    }

    #[tokio::test]
    async fn urls_become_request_targets_of_both_forms() {
        let t = Target::resolve("http://127.0.0.1:8080/mcp")
            .await
            .expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/mcp");
        assert_eq!(t.absolute, "http://127.0.0.1:8080/mcp");
        let bare = Target::resolve("http://127.0.0.1").await.expect("valid");
        assert_eq!((bare.addr.port(), bare.path.to_string()), (80, "/".into()));
        let https = Target::resolve("https://127.0.0.1/mcp")
            .await
            .expect("https");
        assert_eq!(
            (https.addr.port(), https.absolute.to_string()),
            (443, "https://127.0.0.1/mcp".into())
        );
        let refused = Connections::new(https, HttpVersion::Http1, 1, None)
            .err()
            .expect("https without credentials is refused");
        assert!(refused.to_string().contains("--credentials"), "{refused}");
        assert!(Target::resolve("127.0.0.1:8080/mcp").await.is_err());
    }
}
