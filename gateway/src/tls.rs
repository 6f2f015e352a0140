//! TLS for the client listener: a PEM certificate chain and key, ALPN `h2` then `http/1.1`,
//! the `ring` provider only.
//!
//! The certificate is reloaded without a restart when its files change (cert-manager rotates
//! them in place, through a symlink swap): [`Certificates`] hands each new handshake the
//! newest pair that loaded whole and matching; connections already open keep the certificate
//! they were made with. A pair that does not load (a half-written file, a key that does not
//! match its certificate) leaves the previous one in place and is tried again at the next look.

use crate::config::TlsFiles;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use shardgate_trust::tls::{read_chain, read_key};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Files(#[from] shardgate_trust::TrustError),
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate new handshakes get, reloaded from its files when they change.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// What the files looked like when `current` was loaded from them.
    seen: Mutex<Option<Stamp>>,
}

/// A file's modification time and length, after symlinks: a swap or a rewrite changes it.
type Stamp = [(Option<SystemTime>, u64); 2];

impl Certificates {
    /// Loads the pair; an error here stops the gateway from starting.
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = stamp(files);
        let key = certified(files, &provider)?;
        Ok(Arc::new(Certificates {
            files: files.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        }))
    }

    /// Loads the files again if they changed since the last load: `Ok(true)` when new
    /// handshakes now get a new certificate.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if now.is_none() || now == *seen {
            return Ok(false);
        }
        let key = certified(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *seen = now;
        Ok(true)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    let of = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    Some([of(&files.cert)?, of(&files.key)?])
}

/// The pair in `files`, checked to belong together.
fn certified(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    Ok(CertifiedKey::from_der(certs, key, provider)?)
}

impl Certificates {
    /// A server configuration whose handshakes get these certificates, offering `alpn`;
    /// TLS 1.3 only when `tls13_only` (QUIC).
    pub fn config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        tls13_only: bool,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone());
        let builder = match tls13_only {
            true => builder.with_protocol_versions(&[&rustls::version::TLS13])?,
            false => builder.with_safe_default_protocol_versions()?,
        };
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The acceptor of the client listener over TCP.
pub fn acceptor(certificates: &Arc<Certificates>) -> Result<TlsAcceptor, TlsError> {
    let config = certificates.config(&[b"h2", b"http/1.1"], false)?;
    Ok(TlsAcceptor::from(config))
}

/// Looks at the files every [`RELOAD_EVERY`] until `shutdown`.
pub async fn watch(certificates: Arc<Certificates>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match certificates.reload_if_changed() {
            Ok(true) => tracing::info!(
                cert = %certificates.files.cert.display(),
                "TLS certificate reloaded: new connections get it"
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                %error,
                "TLS certificate files changed but do not load; the previous certificate stays"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end-entity certificate new handshakes get.
    fn served(certs: &Certificates) -> Vec<u8> {
        let key = certs.current.read().expect("not poisoned");
        key.cert[0].to_vec()
    }

    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn write(files: &TlsFiles, (cert, key): &(String, String)) {
        std::fs::write(&files.cert, cert).expect("cert written");
        std::fs::write(&files.key, key).expect("key written");
    }

    fn files(name: &str) -> (Dir, TlsFiles) {
        let dir = std::env::temp_dir().join(format!("sg-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        (Dir(dir), files)
    }

    #[test]
    fn a_changed_pair_is_served_a_broken_one_is_not() {
        let (_dir, files) = files("reload");
        let first = pair("first.test");
        write(&files, &first);
        let certs = Certificates::load(&files).expect("loaded");
        let served_first = served(&certs);
        assert!(
            !certs.reload_if_changed().expect("looked"),
            "nothing changed"
        );

        // A key that does not belong to the certificate: the first pair stays.
        let second = pair("second.test");
        write(&files, &(second.0.clone(), first.1.clone() + "\n"));
        assert!(certs.reload_if_changed().is_err());
        assert_eq!(served(&certs), served_first);

        write(&files, &(second.0.clone(), second.1.clone() + "\n\n"));
        assert!(certs.reload_if_changed().expect("reloaded"));
        assert_ne!(served(&certs), served_first);
    }

    #[test]
    fn a_pair_that_does_not_load_stops_the_start() {
        let (_dir, files) = files("broken");
        std::fs::write(&files.cert, "not a certificate").expect("written");
        std::fs::write(&files.key, "not a key").expect("written");
        assert!(Certificates::load(&files).is_err());
    }
}
