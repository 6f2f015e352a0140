//! The cluster credentials every command takes the same way: mTLS files, or a cluster secret
//! for HMAC, and the key that seals MRTR `requestState`. Secrets come from files or the
//! environment, never from the command line, where every user of the machine can read them.
//!
//! The operator commands (`status`, `sessions`, `drain`) also find the credentials of a local cluster that
//! `shardgate up` runs (`shardgate_statefulset::local`), so that they need no flags on a laptop.

use anyhow::{Context, bail};
use shardgate_trust::secret::REQUEST_STATE_LABEL;
use shardgate_trust::tls::TlsFiles;
use shardgate_trust::{Credentials, Secret};
use std::path::PathBuf;

/// Where the cluster secret is read from when no file is named.
pub const CLUSTER_SECRET_ENV: &str = "SHARDGATE_CLUSTER_SECRET";
/// Where the `requestState` key is read from when no file is named.
pub const STATE_SECRET_ENV: &str = "SHARDGATE_STATE_SECRET";

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterCredentials {
    /// Cluster CA certificate (PEM). With --cluster-cert and --cluster-key, every hop inside
    /// the cluster is mutual TLS with certificates of this CA.
    #[arg(long, env = "SHARDGATE_CLUSTER_CA", requires_all = ["cluster_cert", "cluster_key"])]
    pub cluster_ca: Option<PathBuf>,
    /// This process's certificate (PEM), signed by the cluster CA.
    #[arg(long, env = "SHARDGATE_CLUSTER_CERT", requires = "cluster_ca")]
    pub cluster_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, env = "SHARDGATE_CLUSTER_KEY", requires = "cluster_ca")]
    pub cluster_key: Option<PathBuf>,
    /// A file holding the cluster secret (at least 32 bytes; `openssl rand -hex 32`): without
    /// mTLS, every request inside the cluster is signed with it. Or set
    /// SHARDGATE_CLUSTER_SECRET.
    #[arg(long, env = "SHARDGATE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

impl ClusterCredentials {
    /// The credentials of a local cluster `shardgate up` runs.
    pub fn of(entry: &shardgate_statefulset::local::Entry) -> ClusterCredentials {
        ClusterCredentials {
            cluster_ca: Some(entry.cluster_ca.clone()),
            cluster_cert: Some(entry.cluster_cert.clone()),
            cluster_key: Some(entry.cluster_key.clone()),
            cluster_secret_file: Some(entry.cluster_secret_file.clone()),
        }
    }
}

/// What a process loaded: how it authenticates, and the cluster secret if it has one.
pub struct Loaded {
    pub credentials: Credentials,
    pub secret: Option<Secret>,
}

impl ClusterCredentials {
    /// Whether any credential was named (flags or environment).
    pub fn given(&self) -> bool {
        self.cluster_ca.is_some()
            || self.cluster_secret_file.is_some()
            || std::env::var_os(CLUSTER_SECRET_ENV).is_some_and(|v| !v.is_empty())
    }

    /// mTLS when the files are given, else HMAC under the cluster secret; an error when
    /// neither is, since nothing inside the cluster is ever unauthenticated.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let secret = Secret::load(self.cluster_secret_file.as_deref(), CLUSTER_SECRET_ENV)
            .context("cluster secret")?;
        let files = match (&self.cluster_ca, &self.cluster_cert, &self.cluster_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let Some(credentials) =
            Credentials::choose(files.as_ref(), secret.as_ref()).context("cluster credentials")?
        else {
            bail!(
                "no cluster credentials: give --cluster-ca, --cluster-cert and --cluster-key \
                 (mTLS), or a cluster secret with --cluster-secret-file or {CLUSTER_SECRET_ENV}"
            )
        };
        Ok(Loaded {
            credentials,
            secret,
        })
    }
}

/// The key that seals `requestState`: its own (`--state-secret-file` or
/// SHARDGATE_STATE_SECRET), else derived from the cluster secret. Either way every node of a
/// cluster derives the same key, so a client's retry may land on any node.
pub fn state_key(
    file: Option<&std::path::Path>,
    cluster_secret: Option<&Secret>,
) -> anyhow::Result<[u8; 32]> {
    if let Some(own) = Secret::load(file, STATE_SECRET_ENV).context("requestState secret")? {
        return Ok(own.derive(REQUEST_STATE_LABEL));
    }
    match cluster_secret {
        Some(s) => Ok(s.derive(REQUEST_STATE_LABEL)),
        None => bail!(
            "no key for requestState: under mTLS give --state-secret-file or {STATE_SECRET_ENV} \
             (the same on every node), or a cluster secret to derive it from"
        ),
    }
}

/// Refuses a URL that carries a password (`scheme://user:password@…`, or a `password=` in its
/// query) unless it came from `env`: on the command line every user of the machine can read it.
pub fn url_from_environment_if_secret(flag: &str, env: &str, url: &str) -> anyhow::Result<()> {
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let user_password = authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'));
    let query_password = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
    let from_env = std::env::var(env).is_ok_and(|v| v == url);
    if (user_password || query_password) && !from_env {
        anyhow::bail!(
            "{flag} carries a password: set {env} instead, since a command line is readable by every user of the machine"
        );
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::url_from_environment_if_secret as check;

    #[test]
    fn a_password_on_the_command_line_is_refused() {
        let env = "SHARDGATE_TEST_URL_NEVER_SET";
        assert!(check("--store", env, "postgres://u:secret@db:5432/sg").is_err());
        assert!(check("--store", env, "postgres://db/sg?password=secret").is_err());
        assert!(check("--store", env, "postgres://u@db:5432/sg").is_ok());
        assert!(check("--store", env, "redis://a:1,b:2").is_ok());
        assert!(check("--store", env, "sqlite:/var/lib/sg/sessions.db").is_ok());
    }
}
