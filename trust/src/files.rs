//! File helpers shared by the secret and the development CA: writing a private file with mode
//! 0600 and noticing one that others can read.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `path`, replacing the file if it exists, readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created; an existing file keeps its old permissions
    // unless we narrow them, and we do so before the secret is written into it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes a file that need not be private (certificates).
pub(crate) fn write_public(path: &Path, contents: &[u8]) -> io::Result<()> {
    fs::write(path, contents)
}

/// Logs a warning when `path` is readable or writable by anyone but this process. Best effort:
/// a file we cannot stat was already reported by the read that failed, or reads fine and is not
/// our concern here.
pub(crate) fn warn_if_shared(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.mode() & 0o777;
            let ours = our_groups();
            if shared_beyond_us(mode, meta.gid(), &ours) {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "{what} is accessible to group or others; restrict it with chmod 600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}

/// The groups this process is in: its effective group and the supplementary ones.
#[cfg(unix)]
fn our_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.push(nix::unistd::getegid().as_raw());
    groups
}

/// Whether a file of `mode` and group `gid` lets anyone but this process at it. A group that
/// may only read, and is one of this process's own groups, is how Kubernetes gives a pod that
/// does not run as root its Secrets (owned by root, mode 0440, group the pod's `fsGroup`): that
/// shares the file with nobody else.
fn shared_beyond_us(mode: u32, gid: u32, ours: &[u32]) -> bool {
    let others = mode & 0o007 != 0;
    let group = mode & 0o070;
    let group_is_ours_reading = group & 0o030 == 0 && ours.contains(&gid);
    others || (group != 0 && !group_is_ours_reading)
}

/// A fresh directory under the system temp dir, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("random bytes");
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!(
            "shardgate-trust-{name}-{}-{suffix}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::shared_beyond_us;

    #[test]
    fn only_files_others_may_reach_are_shared() {
        let ours = [1000, 27];
        // Private, and Kubernetes' read-only Secret files under the pod's fsGroup.
        assert!(!shared_beyond_us(0o600, 0, &ours));
        assert!(!shared_beyond_us(0o400, 0, &ours));
        assert!(!shared_beyond_us(0o440, 1000, &ours));
        assert!(!shared_beyond_us(0o640, 27, &ours));
        // Another group, a group that may write, or anyone at all.
        assert!(shared_beyond_us(0o640, 50, &ours));
        assert!(shared_beyond_us(0o660, 1000, &ours));
        assert!(shared_beyond_us(0o604, 1000, &ours));
        assert!(shared_beyond_us(0o644, 1000, &ours));
    }
}
