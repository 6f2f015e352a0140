//! The two ways trust fails: [`TrustError`] when credentials cannot be loaded or made (at
//! start-up, an operator's problem), and [`AuthError`] when a signed request or response does not
//! check out (per request, the peer's problem).

use std::io;
use std::path::PathBuf;

/// Loading or generating credentials failed. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {what} {}: {source}", path.display())]
    Write {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "cluster secret from {origin} is {got} bytes; at least {min} are needed \
         (generate one with `openssl rand -hex 32`)",
        min = crate::secret::MIN_SECRET_LEN
    )]
    SecretTooShort { origin: String, got: usize },
    #[error("{what} {} is not valid PEM: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {what} {}", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("no private key in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("CA certificate in {} is not usable as a trust anchor: {source}", path.display())]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate {} with key {} does not make a TLS configuration: {source}", cert.display(), key.display())]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("a development certificate needs at least one host name or IP address")]
    NoHosts,
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// A signed request or response was refused. Messages never include the secret or the expected
/// MAC, so they are safe to log and to send back to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {} header", crate::signature::AUTH_HEADER)]
    Missing,
    #[error("malformed {header} header: {0}", header = crate::signature::AUTH_HEADER)]
    Malformed(&'static str),
    /// Authentic, but signed `skew_secs` seconds away from the local clock (positive: from the
    /// future); the clocks disagree or the message is being replayed late.
    #[error(
        "signature timestamp is {} s {} the local clock; at most {max} s either way is allowed",
        skew_secs.unsigned_abs(),
        if *skew_secs < 0 { "behind" } else { "ahead of" },
        max = crate::signature::MAX_SKEW.as_secs()
    )]
    Skew { skew_secs: i64 },
    /// Wrong secret, or anything covered by the signature changed on the way.
    #[error("signature does not match")]
    BadSignature,
}
