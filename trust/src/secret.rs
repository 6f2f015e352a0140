//! The cluster secret: bytes shared by every gateway, node and operator CLI of one cluster, read
//! from a file or an environment variable, from which independent sub-keys are derived.
//!
//! The bytes are used as they are (after trimming surrounding whitespace), not hex-decoded: a
//! secret made with `openssl rand -hex 32` is 64 bytes of key material, which is fine for
//! HMAC-SHA256. Nothing signs with the raw secret; each use derives its own key with
//! [`Secret::derive`] and a label, so a key leaked from one use says nothing about the others.

use crate::error::TrustError;
use crate::files;
use ring::hmac;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;

/// The fewest bytes a secret may have: as many as the HMAC-SHA256 output, so the secret is never
/// the weaker link.
pub const MIN_SECRET_LEN: usize = 32;

/// The label of the key that seals the MRTR `requestState`.
pub const REQUEST_STATE_LABEL: &str = "shardgate requestState v1";

/// The cluster secret. `Debug` does not print it and there is no `Display`, so it does not end
/// up in logs by accident.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// A secret from bytes, with surrounding ASCII whitespace (a file's final newline) trimmed.
    /// Refuses fewer than [`MIN_SECRET_LEN`] bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Secret, TrustError> {
        Self::parse(&bytes, || "the given bytes".to_owned())
    }

    /// Reads a secret file. Warns (does not fail) when the file is readable by group or others.
    pub fn from_file(path: &Path) -> Result<Secret, TrustError> {
        let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
            what: "cluster secret",
            path: path.to_owned(),
            source,
        })?;
        files::warn_if_shared(path, "cluster secret file");
        Self::parse(&bytes, || format!("file {}", path.display()))
    }

    /// Where a process finds its secret: the file when one is given, otherwise the environment
    /// variable `env_var` when it is set and not empty, otherwise none. When both are given the
    /// file wins, since a path on the command line is the more deliberate choice and the
    /// environment is inherited from who knows where.
    pub fn load(file: Option<&Path>, env_var: &str) -> Result<Option<Secret>, TrustError> {
        Self::load_with(file, env_var, |name| std::env::var_os(name))
    }

    fn load_with(
        file: Option<&Path>,
        env_var: &str,
        lookup: impl FnOnce(&str) -> Option<OsString>,
    ) -> Result<Option<Secret>, TrustError> {
        if let Some(path) = file {
            return Self::from_file(path).map(Some);
        }
        match lookup(env_var) {
            Some(value) if !value.is_empty() => {
                let bytes = value.into_encoded_bytes();
                Self::parse(&bytes, || format!("environment variable {env_var}")).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A new random secret: 32 random bytes as 64 lowercase hex characters, so that it survives
    /// being written to a file and read back.
    pub fn generate() -> Secret {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let mut hex = Vec::with_capacity(64);
        crate::push_hex(&mut hex, &random);
        Secret(hex)
    }

    /// Generates a secret and writes it to `path` (replacing any file there) with mode 0600.
    pub fn write_new(path: &Path) -> Result<Secret, TrustError> {
        let secret = Self::generate();
        let mut contents = secret.0.clone();
        contents.push(b'\n');
        files::write_private(path, &contents).map_err(|source| TrustError::Write {
            what: "cluster secret",
            path: path.to_owned(),
            source,
        })?;
        Ok(secret)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An independent 32-byte sub-key: HMAC-SHA256 keyed by the secret over `label`. Different
    /// labels give unrelated keys.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            label.as_bytes(),
        );
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }

    fn parse(bytes: &[u8], origin: impl FnOnce() -> String) -> Result<Secret, TrustError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(TrustError::SecretTooShort {
                origin: origin(),
                got: trimmed.len(),
            });
        }
        Ok(Secret(trimmed.to_vec()))
    }
}

#[cfg(test)]
mod tests;
