//! HMAC mode: requests and internal responses signed with HMAC-SHA256 under a key derived from
//! the cluster secret, carried in one [`AUTH_HEADER`].
//!
//! Layout, in the order a request meets it: [`Signer`] (the derived key), [`sign_request`] on the
//! caller, [`verify_request`] on the callee, then [`sign_response`] on the callee and
//! [`verify_response`] back on the caller. The canonical strings are built by
//! `request_canonical` and `response_canonical`; their format is the wire contract.
//!
//! What it gives: each request, and each response to it, comes from a holder of the cluster
//! secret and arrived unchanged (method, path and query, body, every `x-shardgate-*` header; for
//! responses the status and body), signed within [`MAX_SKEW`] of the verifier's clock. A response
//! is bound to its request's nonce, so an old answer (an old membership view, say) cannot be
//! replayed to a new request.
//!
//! What it does not give: confidentiality (anyone on the path reads everything), protection of
//! headers other than `x-shardgate-*`, and protection from replay inside the window (a captured
//! request can be sent again within 60 s; the nonce is returned so that a caller can remember
//! nonces if it needs to, but nothing here does). On networks you do not trust, use mutual TLS.
//!
//! Header value: `v1 t=<unix seconds> n=<nonce> s=<mac>`, nonce 16 random bytes and mac 32 bytes,
//! both base64url without padding.

use crate::error::AuthError;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ring::{digest, hmac};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header that carries a request's or a response's signature.
pub const AUTH_HEADER: &str = "x-shardgate-auth";

/// Request headers whose names start with this are signed (all but [`AUTH_HEADER`] itself).
pub const SIGNED_HEADER_PREFIX: &str = "x-shardgate-";

/// How far a signature's timestamp may be from the verifier's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The label of the request- and response-signing key derived from the cluster secret.
pub const REQUEST_SIGNING_LABEL: &str = "shardgate request v1";

const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
const REQUEST_DOMAIN: &[u8] = b"shardgate-request-v1\n";
const RESPONSE_DOMAIN: &[u8] = b"shardgate-response-v1\n";

/// The signing key for requests and responses, derived from the cluster secret with
/// [`REQUEST_SIGNING_LABEL`]. Cloning copies a few hundred bytes of precomputed HMAC state; no
/// allocation, no lock.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &Secret) -> Signer {
        let derived = secret.derive(REQUEST_SIGNING_LABEL);
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &derived),
        }
    }
}

impl From<&Secret> for Signer {
    fn from(secret: &Secret) -> Signer {
        Signer::new(secret)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(redacted)")
    }
}

/// Signs a request about to be sent. Returns the value for [`AUTH_HEADER`] and the request's
/// nonce, which the answer's signature must be bound to (see [`verify_response`]). `headers` are
/// the headers that will be sent; add the returned value to them and change no `x-shardgate-*`
/// header afterwards.
pub fn sign_request(
    key: &Signer,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (HeaderValue, String) {
    let nonce = new_nonce();
    let secs = unix_secs(SystemTime::now());
    let canonical = request_canonical(method, path_and_query, secs, &nonce, headers, body);
    (sign(key, &canonical, secs, &nonce), nonce)
}

/// Checks a received request's signature. Returns its nonce, to bind the response to.
pub fn verify_request(
    key: &Signer,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<String, AuthError> {
    let auth = Auth::from_headers(headers)?;
    let canonical = request_canonical(method, path_and_query, auth.secs, auth.nonce, headers, body);
    auth.verify(key, &canonical, now)?;
    Ok(auth.nonce.to_owned())
}

/// Signs a response to the request whose nonce was `request_nonce`.
pub fn sign_response(key: &Signer, status: u16, request_nonce: &str, body: &[u8]) -> HeaderValue {
    let nonce = new_nonce();
    let secs = unix_secs(SystemTime::now());
    let canonical = response_canonical(status, secs, &nonce, request_nonce, body);
    sign(key, &canonical, secs, &nonce)
}

/// Checks that a response was signed by a cluster member for the request whose nonce was
/// `request_nonce` (as returned by [`sign_request`]).
pub fn verify_response(
    key: &Signer,
    status: u16,
    request_nonce: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AuthError> {
    let auth = Auth::from_headers(headers)?;
    let canonical = response_canonical(status, auth.secs, auth.nonce, request_nonce, body);
    auth.verify(key, &canonical, now)
}

/// The string a request signature covers:
/// `shardgate-request-v1\n METHOD\n path-and-query\n secs\n nonce\n hex(sha256(body))\n`, then
/// `name:value\n` for each value of each `x-shardgate-*` header but [`AUTH_HEADER`], by name,
/// values in the order received. Header names are lowercase in `http`, and no part can hold a
/// newline (`http` refuses one in a method, URI or header value), so the string is unambiguous.
fn request_canonical(
    method: &Method,
    path_and_query: &str,
    secs: u64,
    nonce: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(REQUEST_DOMAIN);
    for part in [method.as_str(), path_and_query, &secs.to_string(), nonce] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    crate::push_hex(&mut out, digest::digest(&digest::SHA256, body).as_ref());
    out.push(b'\n');

    let mut names: Vec<&HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(SIGNED_HEADER_PREFIX) && *name != AUTH_HEADER)
        .collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names {
        for value in headers.get_all(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// The string a response signature covers:
/// `shardgate-response-v1\n status\n secs\n nonce\n request-nonce\n hex(sha256(body))`.
fn response_canonical(
    status: u16,
    secs: u64,
    nonce: &str,
    request_nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(RESPONSE_DOMAIN);
    for part in [&status.to_string(), &secs.to_string(), nonce, request_nonce] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    crate::push_hex(&mut out, digest::digest(&digest::SHA256, body).as_ref());
    out
}

fn sign(key: &Signer, canonical: &[u8], secs: u64, nonce: &str) -> HeaderValue {
    let tag = hmac::sign(&key.key, canonical);
    let mac = URL_SAFE_NO_PAD.encode(tag.as_ref());
    let mut value = HeaderValue::try_from(format!("v1 t={secs} n={nonce} s={mac}"))
        .expect("digits and base64url are valid header characters");
    // Unique per message: an HPACK/QPACK table entry for it would never be hit.
    value.set_sensitive(true);
    value
}

fn new_nonce() -> String {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(nonce)
}

/// Seconds since the epoch; a clock set before 1970 counts as 0 (and fails the skew check).
fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A parsed [`AUTH_HEADER`] value.
#[derive(Debug)]
struct Auth<'a> {
    secs: u64,
    nonce: &'a str,
    mac: [u8; MAC_LEN],
}

impl<'a> Auth<'a> {
    fn from_headers(headers: &'a HeaderMap) -> Result<Auth<'a>, AuthError> {
        let mut values = headers.get_all(AUTH_HEADER).iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::Malformed("more than one value"));
        }
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("not visible ASCII"))?;
        Self::parse(value)
    }

    fn parse(value: &'a str) -> Result<Auth<'a>, AuthError> {
        let mut fields = value.split(' ');
        if fields.next() != Some("v1") {
            return Err(AuthError::Malformed("expected version v1"));
        }
        let secs = field(fields.next(), "t=", "expected t=<seconds>")?;
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed("t is not a number of seconds"));
        }
        let secs = secs
            .parse()
            .map_err(|_| AuthError::Malformed("t is out of range"))?;
        let nonce = field(fields.next(), "n=", "expected n=<nonce>")?;
        match URL_SAFE_NO_PAD.decode(nonce) {
            Ok(bytes) if bytes.len() == NONCE_LEN => {}
            _ => return Err(AuthError::Malformed("n is not 16 bytes of base64url")),
        }
        let mac = field(fields.next(), "s=", "expected s=<mac>")?;
        let mac = match URL_SAFE_NO_PAD.decode(mac) {
            Ok(bytes) => <[u8; MAC_LEN]>::try_from(bytes.as_slice())
                .map_err(|_| AuthError::Malformed("s is not 32 bytes of base64url"))?,
            Err(_) => return Err(AuthError::Malformed("s is not 32 bytes of base64url")),
        };
        if fields.next().is_some() {
            return Err(AuthError::Malformed("unexpected field after s"));
        }
        Ok(Auth { secs, nonce, mac })
    }

    /// The MAC is checked before the clock, so that [`AuthError::Skew`] is only ever reported
    /// for authentic messages, where it points at a clock or a late replay and not at noise.
    fn verify(&self, key: &Signer, canonical: &[u8], now: SystemTime) -> Result<(), AuthError> {
        hmac::verify(&key.key, canonical, &self.mac).map_err(|_| AuthError::BadSignature)?;
        let skew = i128::from(self.secs) - i128::from(unix_secs(now));
        if skew.unsigned_abs() > u128::from(MAX_SKEW.as_secs()) {
            let skew_secs =
                i64::try_from(skew).unwrap_or(if skew > 0 { i64::MAX } else { i64::MIN });
            return Err(AuthError::Skew { skew_secs });
        }
        Ok(())
    }
}

fn field<'a>(
    field: Option<&'a str>,
    prefix: &str,
    missing: &'static str,
) -> Result<&'a str, AuthError> {
    field
        .and_then(|f| f.strip_prefix(prefix))
        .ok_or(AuthError::Malformed(missing))
}

#[cfg(test)]
mod tests;
