//! Mutual TLS mode: rustls server and client configurations, built from PEM files, in which both
//! ends present a certificate that chains to the cluster CA.
//!
//! The server verifies any client certificate against the CA and fails the handshake of one
//! from another CA, but lets a client without a certificate finish it: the listener then answers
//! that client's every request 401, which tells it what is wrong where a failed handshake would
//! not. Whether a connection is certified is `peer_certificates().is_some()`.
//!
//! Layout: [`TlsFiles`] names the files, [`Mtls::load`] reads them (`read_roots`, `read_chain`,
//! `read_key`) and builds both configurations. Always the `ring` provider, passed explicitly, so
//! that nothing depends on a process-wide default provider being installed.
//!
//! The client trusts the cluster CA only, not the system roots: a certificate from a public CA
//! must not make someone a cluster member. The certificate's names are checked as usual, so a
//! peer's certificate must carry the name or IP address it is dialled by.

use crate::error::TrustError;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocols offered and accepted, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The PEM files of a cluster member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s); the only trust anchors, for servers and clients.
    pub ca: PathBuf,
    /// Our certificate chain, leaf first, used both as server and as client certificate.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The TLS configurations of a cluster member, for accepting and for dialling.
#[derive(Clone, Debug)]
pub struct Mtls {
    /// Verifies a client certificate against the CA (a connection without one completes, and
    /// its listener refuses its requests); ALPN `h2`, then `http/1.1`.
    pub server: Arc<ServerConfig>,
    /// Trusts the CA only and presents our certificate; ALPN `h2`, then `http/1.1`.
    pub client: Arc<ClientConfig>,
}

impl Mtls {
    /// Reads the three PEM files and builds both configurations. Fails, naming the file, when a
    /// file cannot be read, holds no certificate or no key, or when the key does not belong to
    /// the certificate. Warns when the key file is readable by group or others.
    pub fn load(files: &TlsFiles) -> Result<Mtls, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(read_roots(&files.ca)?);
        let chain = read_chain(&files.cert)?;
        let key = read_key(&files.key)?;
        crate::files::warn_if_shared(&files.key, "TLS private key");
        let config_error = |source: rustls::Error| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TrustError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                }
            }
            source => TrustError::TlsConfig {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            },
        };

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        client.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        Ok(Mtls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The CA file's certificates as trust anchors; refuses a file without any.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA certificate file")? {
        roots.add(cert).map_err(|source| TrustError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// A certificate chain, leaf first; refuses a file without any.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    read_certs(path, "certificate file")
}

/// A private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TrustError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::NoItemsFound => TrustError::NoPrivateKey {
            path: path.to_owned(),
        },
        error => pem_error(error, "private key file", path),
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| pem_error(error, what, path))?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn pem_error(error: pem::Error, what: &'static str, path: &Path) -> TrustError {
    match error {
        pem::Error::Io(source) => TrustError::Read {
            what,
            path: path.to_owned(),
            source,
        },
        source => TrustError::Pem {
            what,
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests;
