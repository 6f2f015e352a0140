//! Small file helpers shared by the log store, the state machine and the cluster id.
//!
//! Writes that Raft relies on (the vote, log appends, snapshots) are fsynced before they are
//! acknowledged; files that are replaced whole go through a temporary file and a rename so a crash
//! leaves either the old or the new content, never a mix. The blocking calls run on tokio's
//! blocking pool so an fsync never stalls the runtime's workers.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Runs blocking file I/O off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Replaces `dir/name` with `bytes` atomically; `durable` also fsyncs the file and the directory.
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a rename or a file creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The content of `path`, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses JSON read from disk, reporting which file is damaged.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

const OWNER: &str = "node-id.json";

/// Binds `dir` to node `id` on first use and refuses a dir that belongs to another node: a
/// volume attached to the wrong pod would otherwise vote with another node's term and log.
pub(crate) fn claim(dir: &Path, id: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = dir.join(OWNER);
    match read_if_exists(&path)? {
        Some(bytes) => {
            let owner: String = parse(&path, &bytes)?;
            if owner == id {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the data dir belongs to {owner}, not {id}"),
                ))
            }
        }
        None => replace(dir, OWNER, &serde_json::to_vec(id)?, true),
    }
}
