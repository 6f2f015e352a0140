use super::*;
use crate::files::TempDir;

const HEX64: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn surrounding_whitespace_is_trimmed() {
    let secret = Secret::from_bytes(format!(" \t{HEX64}\r\n\n").into_bytes()).expect("secret");
    assert_eq!(secret.as_bytes(), HEX64.as_bytes());
}

#[test]
fn fewer_than_32_bytes_are_refused_after_trimming() {
    let err =
        Secret::from_bytes(format!("{}\n\n\n", &HEX64[..31]).into_bytes()).expect_err("too short");
    assert!(matches!(err, TrustError::SecretTooShort { got: 31, .. }));
    let message = err.to_string();
    assert!(message.contains("31 bytes"), "{message}");
    assert!(message.contains("at least 32"), "{message}");
    assert!(message.contains("openssl rand -hex 32"), "{message}");
    assert!(Secret::from_bytes(HEX64.as_bytes()[..32].to_vec()).is_ok());
}

#[test]
fn debug_does_not_show_the_secret() {
    let secret = Secret::from_bytes(HEX64.as_bytes().to_vec()).expect("secret");
    assert_eq!(format!("{secret:?}"), "Secret(redacted)");
}

#[test]
fn derive_is_deterministic_and_separates_labels_and_secrets() {
    let a = Secret::from_bytes(HEX64.as_bytes().to_vec()).expect("secret");
    let b = Secret::from_bytes(HEX64.replace('0', "1").into_bytes()).expect("secret");
    assert_eq!(a.derive("one"), a.derive("one"));
    assert_ne!(a.derive("one"), a.derive("two"));
    assert_ne!(a.derive("one"), b.derive("one"));
    assert_ne!(&a.derive("one")[..], a.as_bytes());
}

#[test]
fn generated_secrets_are_64_lowercase_hex_and_differ() {
    let a = Secret::generate();
    assert_eq!(a.as_bytes().len(), 64);
    assert!(
        a.as_bytes()
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    );
    assert_ne!(a.as_bytes(), Secret::generate().as_bytes());
}

#[test]
fn write_new_round_trips_through_from_file_with_mode_0600() {
    let dir = TempDir::new("secret");
    let path = dir.path().join("cluster.secret");
    let written = Secret::write_new(&path).expect("write");
    let read = Secret::from_file(&path).expect("read");
    assert_eq!(written.as_bytes(), read.as_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Overwriting replaces the secret and narrows a file that had been opened up.
    std::fs::write(&path, "x").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let again = Secret::write_new(&path).expect("overwrite");
    assert_eq!(
        Secret::from_file(&path).expect("read").as_bytes(),
        again.as_bytes()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_file_readable_by_others_still_loads() {
    let dir = TempDir::new("secret-mode");
    let path = dir.path().join("open.secret");
    std::fs::write(&path, format!("{HEX64}\n")).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let secret = Secret::from_file(&path).expect("loads with a warning");
    assert_eq!(secret.as_bytes(), HEX64.as_bytes());
}

#[test]
fn file_errors_name_the_path() {
    let dir = TempDir::new("secret-errors");
    let missing = dir.path().join("missing.secret");
    let err = Secret::from_file(&missing).expect_err("missing");
    assert!(matches!(err, TrustError::Read { .. }));
    assert!(err.to_string().contains("missing.secret"), "{err}");

    let short = dir.path().join("short.secret");
    std::fs::write(&short, "short\n").expect("write");
    let err = Secret::from_file(&short).expect_err("short");
    assert!(matches!(err, TrustError::SecretTooShort { got: 5, .. }));
    assert!(err.to_string().contains("short.secret"), "{err}");
}

#[test]
fn load_prefers_the_file_then_a_non_empty_variable() {
    let dir = TempDir::new("secret-load");
    let path = dir.path().join("file.secret");
    std::fs::write(&path, HEX64).expect("write");
    let from_env = HEX64.replace('f', "e");
    let env = |value: &str| {
        let value = OsString::from(value);
        move |name: &str| {
            assert_eq!(name, "SHARDGATE_TEST_SECRET");
            Some(value)
        }
    };

    let both = Secret::load_with(Some(&path), "SHARDGATE_TEST_SECRET", env(&from_env))
        .expect("load")
        .expect("some");
    assert_eq!(both.as_bytes(), HEX64.as_bytes());

    let only_env = Secret::load_with(None, "SHARDGATE_TEST_SECRET", env(&from_env))
        .expect("load")
        .expect("some");
    assert_eq!(only_env.as_bytes(), from_env.as_bytes());

    let empty = Secret::load_with(None, "SHARDGATE_TEST_SECRET", env("")).expect("load");
    assert!(empty.is_none());
    let unset = Secret::load_with(None, "SHARDGATE_TEST_SECRET", |_| None).expect("load");
    assert!(unset.is_none());

    let err = Secret::load_with(None, "SHARDGATE_TEST_SECRET", env("short")).expect_err("short");
    assert!(
        err.to_string()
            .contains("environment variable SHARDGATE_TEST_SECRET"),
        "{err}"
    );
}
