//! A throw-away development CA for the local cluster (`shardgate up`): a new CA and one leaf
//! certificate that every process of the cluster shares, as server and as client.
//!
//! Layout: [`generate`] makes the CA (`ca_params`), signs the leaf (`leaf_params`) and writes
//! `ca.pem`, `cert.pem` and `key.pem` into a directory. The CA's private key is dropped once the
//! leaf is signed and never written anywhere, so nothing can issue further certificates under it:
//! each run makes a fresh CA, and a copied `ca.pem` trusts only that run's leaf.

use crate::error::TrustError;
use crate::files;
use crate::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the certificates are valid.
pub const VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How far in the past validity starts, so that a peer whose clock is a little behind accepts
/// the certificates straight away.
pub const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Makes a CA and a leaf certificate for `hosts` (IP addresses become IP SANs, anything else DNS
/// SANs) and writes them into `dir`, creating it if needed: `ca.pem`, `cert.pem`, and `key.pem`
/// with mode 0600. Existing files are replaced.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<TlsFiles, TrustError> {
    if hosts.is_empty() {
        return Err(TrustError::NoHosts);
    }
    let now = SystemTime::now();
    let generate_error = |what| move |source| TrustError::Generate { what, source };

    let ca_key = KeyPair::generate().map_err(generate_error("the CA key"))?;
    let ca_params = ca_params(now);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate_error("the CA certificate"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(generate_error("the leaf key"))?;
    let leaf_cert = leaf_params(hosts, now)
        .and_then(|params| params.signed_by(&leaf_key, &issuer))
        .map_err(generate_error("the leaf certificate"))?;

    std::fs::create_dir_all(dir).map_err(|source| TrustError::Write {
        what: "certificate directory",
        path: dir.to_owned(),
        source,
    })?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let write_error = |what, path: &Path| {
        let path = path.to_owned();
        move |source| TrustError::Write { what, path, source }
    };
    files::write_public(&files.ca, ca_cert.pem().as_bytes())
        .map_err(write_error("CA certificate", &files.ca))?;
    files::write_public(&files.cert, leaf_cert.pem().as_bytes())
        .map_err(write_error("certificate", &files.cert))?;
    files::write_private(&files.key, leaf_key.serialize_pem().as_bytes())
        .map_err(write_error("private key", &files.key))?;
    Ok(files)
}

fn ca_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    // A name of its own per CA: peers match issuers by name, so a certificate from another
    // run's CA is then reported as "unknown issuer" rather than as a bad signature.
    let id = getrandom::u32().expect("the operating system's random source failed");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("shardgate development CA {id:08x}"),
    );
    // Path length 0: this CA signs leaves only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now);
    params
}

fn leaf_params(hosts: &[String], now: SystemTime) -> Result<CertificateParams, rcgen::Error> {
    // `new` turns each host that parses as an IP address into an IP SAN, the rest into DNS SANs.
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "shardgate cluster member");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now);
    Ok(params)
}

/// From [`BACKDATE`] before `now` to [`VALIDITY`] after it. rcgen takes `time::OffsetDateTime`; counting
/// from its epoch with std durations spares us a direct dependency on `time`.
fn set_validity(params: &mut CertificateParams, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + VALIDITY;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::TempDir;
    use crate::tls::{read_chain, read_key};

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    #[test]
    fn writes_a_ca_a_leaf_and_a_private_key_only() {
        let dir = TempDir::new("devca");
        let tls_dir = dir.path().join("nested/tls");
        let files = generate(&tls_dir, &["127.0.0.1".to_owned()]).expect("generate");
        assert_eq!(files.ca, tls_dir.join("ca.pem"));
        assert_eq!(files.cert, tls_dir.join("cert.pem"));
        assert_eq!(files.key, tls_dir.join("key.pem"));
        let mut names: Vec<String> = std::fs::read_dir(&tls_dir)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["ca.pem", "cert.pem", "key.pem"],
            "no CA key on disk"
        );
        read_key(&files.key).expect("key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// The handshake tests show that peers accept the certificates; a trust anchor's own
    /// extensions are not checked by them, so look at the DER: exact encodings of the extensions.
    #[test]
    fn the_ca_is_a_ca_and_the_leaf_serves_both_ends() {
        let dir = TempDir::new("devca-der");
        let files = generate(dir.path(), &["10.0.0.7".to_owned()]).expect("generate");
        let ca = read_chain(&files.ca).expect("ca");
        let leaf = read_chain(&files.cert).expect("leaf");
        assert_eq!((ca.len(), leaf.len()), (1, 1));

        // basicConstraints, critical: cA TRUE, pathLenConstraint 0.
        let ca_basic = b"\x06\x03\x55\x1d\x13\x01\x01\xff\x04\x08\x30\x06\x01\x01\xff\x02\x01\x00";
        assert!(contains(&ca[0], ca_basic));
        // keyUsage, critical: digitalSignature, keyCertSign, cRLSign.
        let ca_usage = b"\x06\x03\x55\x1d\x0f\x01\x01\xff\x04\x04\x03\x02\x01\x86";
        assert!(contains(&ca[0], ca_usage));

        assert!(!contains(&leaf[0], ca_basic));
        let server_auth = b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x01";
        let client_auth = b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x02";
        assert!(contains(&leaf[0], server_auth));
        assert!(contains(&leaf[0], client_auth));
        // An IP SAN (tag [7], 4 bytes) for 10.0.0.7, not a DNS name.
        assert!(contains(&leaf[0], b"\x87\x04\x0a\x00\x00\x07"));
    }

    #[test]
    fn validity_starts_an_hour_back_and_lasts_30_days() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut params = CertificateParams::default();
        set_validity(&mut params, now);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        assert_eq!(
            params.not_before,
            epoch + Duration::from_secs(1_800_000_000 - 3600)
        );
        assert_eq!(
            params.not_after,
            epoch + Duration::from_secs(1_800_000_000 + 30 * 24 * 3600)
        );
    }

    #[test]
    fn needs_a_host() {
        let dir = TempDir::new("no-hosts");
        let err = generate(dir.path(), &[]).expect_err("no hosts");
        assert!(matches!(err, TrustError::NoHosts), "{err}");
    }
}
