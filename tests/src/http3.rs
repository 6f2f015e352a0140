//! Our own HTTP/3 client for the end-to-end tests: one QUIC connection (quinn) speaking
//! HTTP/3 (the h3 crate's client), requests sent whole, answers read whole or chunk by chunk.

use anyhow::Context;
use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use shardgate_protocol::sse;
use std::net::SocketAddr;
use std::sync::Arc;

type Stream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// One HTTP/3 connection to `https://localhost:PORT/mcp`.
pub struct H3 {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    url: String,
}

/// An answer whose head has arrived; its body is read as asked.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    stream: Stream,
    events: sse::Parser,
}

impl H3 {
    /// Connects to `addr`, trusting `roots` for the name `localhost`.
    pub async fn connect(addr: SocketAddr, roots: rustls::RootCertStore) -> anyhow::Result<H3> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
        let mut endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(addr, "localhost")?
            .await
            .context("QUIC handshake")?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .context("HTTP/3 setup")?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(H3 {
            endpoint,
            conn,
            send,
            url: format!("https://localhost:{}/mcp", addr.port()),
        })
    }

    /// Sends a request to `/mcp` and waits for the head of its answer.
    pub async fn request(
        &mut self,
        method: Method,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = Request::builder().method(method).uri(&self.url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let mut stream = self.send.send_request(req.body(())?).await?;
        if let Some(body) = body {
            stream.send_data(Bytes::from(body.to_string())).await?;
        }
        stream.finish().await?;
        let head = stream.recv_response().await?;
        Ok(Answer {
            status: head.status(),
            headers: head.headers().clone(),
            stream,
            events: sse::Parser::default(),
        })
    }

    /// A POST of `body` with the headers every MCP client sends, in session `sid` if given.
    pub async fn post(&mut self, sid: Option<&str>, body: &Value) -> anyhow::Result<Answer> {
        let mut headers = vec![("accept", "application/json, text/event-stream")];
        if let Some(sid) = sid {
            headers.push(("mcp-session-id", sid));
        }
        self.request(Method::POST, &headers, Some(body)).await
    }

    /// Moves the client to a new UDP socket (a new local port) on the same connection, as a
    /// phone moving from Wi-Fi to mobile data does; returns the new local address.
    pub fn migrate(&self) -> anyhow::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        let local = socket.local_addr()?;
        self.endpoint.rebind(socket)?;
        Ok(local)
    }

    /// The QUIC connection's identity, the same across a migration.
    pub fn connection_id(&self) -> usize {
        self.conn.stable_id()
    }

    /// The local address the connection sends from.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Cuts the connection at once, as a network that goes away does (no GOAWAY first).
    pub fn cut(&self) {
        self.conn.close(0u32.into(), b"cut");
        self.endpoint.close(0u32.into(), b"cut");
    }
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        Ok(self
            .stream
            .recv_data()
            .await?
            .map(|mut b| b.copy_to_bytes(b.remaining())))
    }

    /// The whole body.
    pub async fn body(mut self) -> anyhow::Result<Bytes> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    /// The next SSE event of the body; `None` at its end.
    pub async fn event(&mut self) -> anyhow::Result<Option<sse::Event>> {
        loop {
            if let Some(event) = self.events.next_event() {
                return Ok(Some(event));
            }
            match self.chunk().await? {
                Some(chunk) => self.events.push(&chunk),
                None => return Ok(None),
            }
        }
    }

    /// The JSON-RPC answer with `id`: the JSON body, or the SSE event that carries it.
    pub async fn answer(mut self, id: &Value) -> anyhow::Result<Value> {
        if self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
        {
            return Ok(serde_json::from_slice(&self.body().await?)?);
        }
        while let Some(event) = self.event().await? {
            if let Some(msg) = event.json()
                && msg.get("id") == Some(id)
            {
                return Ok(msg);
            }
        }
        anyhow::bail!("the stream ended without the answer to {id}")
    }
}
