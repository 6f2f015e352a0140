//! The cluster's credentials: how a gateway, a node or the operator CLI proves to a node that it
//! belongs to the cluster, and how a node's answer proves the same back.
//!
//! Two modes, one per cluster, chosen by [`Credentials::choose`]:
//! - mutual TLS with a cluster CA ([`tls`]), when certificate files are configured: both ends
//!   present a certificate signed by the CA, and the connection is private;
//! - otherwise HMAC-signed requests and responses under a shared cluster secret ([`signature`]):
//!   authentic and intact, but readable by anyone on the path.
//!
//! Layout, in the order a process meets it:
//! - [`secret`]: the cluster secret, from a file or the environment, and keys derived from it.
//! - [`signature`]: HMAC mode; signing and checking requests and responses.
//! - [`devca`]: a throw-away CA and one certificate for the local cluster (`shardgate up`).
//! - [`tls`]: mutual TLS mode; rustls server and client configurations from PEM files.
//! - [`error`]: [`TrustError`] for loading credentials, [`AuthError`] for refused messages.
//!
//! This crate holds the pieces only; the HTTP servers and clients wire them in.

pub mod devca;
pub mod error;
mod files;
pub mod secret;
pub mod signature;
pub mod tls;

pub use error::{AuthError, TrustError};
pub use secret::Secret;
pub use signature::Signer;
pub use tls::{Mtls, TlsFiles};

use std::sync::Arc;

/// How this process authenticates to the cluster and checks who talks to it.
///
/// - `Mtls` when the cluster has TLS files: the handshake authenticates both ends and encrypts,
///   so requests need no signature. Use it on any network you do not fully trust.
/// - `Hmac` when TLS is not configured but a cluster secret is: every request and every internal
///   response carries an [`signature::AUTH_HEADER`] signed with the derived key.
#[derive(Clone, Debug)]
pub enum Credentials {
    Mtls(Arc<Mtls>),
    Hmac(Signer),
}

impl Credentials {
    /// mTLS when `tls` is given (the secret, if any, is then left to its other uses such as
    /// sealing `requestState`), HMAC when only a secret is, `None` when neither is: the caller
    /// decides whether an unauthenticated cluster is acceptable (say, loopback only).
    pub fn choose(
        tls: Option<&TlsFiles>,
        secret: Option<&Secret>,
    ) -> Result<Option<Credentials>, TrustError> {
        if let Some(files) = tls {
            return Ok(Some(Credentials::Mtls(Arc::new(Mtls::load(files)?))));
        }
        Ok(secret.map(|secret| Credentials::Hmac(Signer::new(secret))))
    }
}

/// Appends `bytes` as lowercase hex.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::TempDir;

    #[test]
    fn tls_files_win_then_a_secret_then_nothing() {
        let dir = TempDir::new("choose");
        let files = devca::generate(dir.path(), &["127.0.0.1".to_owned()]).expect("generate");
        let secret = Secret::generate();

        let both = Credentials::choose(Some(&files), Some(&secret)).expect("choose");
        assert!(matches!(both, Some(Credentials::Mtls(_))));
        let hmac = Credentials::choose(None, Some(&secret)).expect("choose");
        assert!(matches!(hmac, Some(Credentials::Hmac(_))));
        assert!(Credentials::choose(None, None).expect("choose").is_none());

        let broken = TlsFiles {
            ca: dir.path().join("nope.pem"),
            ..files
        };
        assert!(Credentials::choose(Some(&broken), Some(&secret)).is_err());
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_per_byte() {
        let mut out = Vec::new();
        push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, b"000fa5ff");
    }
}
