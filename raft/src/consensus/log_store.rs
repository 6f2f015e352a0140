//! The durable Raft log and vote (openraft's `RaftLogStorage`), as plain files in `data_dir`.
//!
//! - `log`: append-only records `[len: u32 LE][FNV-1a 64 of payload: u64 LE][payload: JSON]`.
//!   A payload is a log entry or, as the first record after a purge, the id of the last purged
//!   entry. Appends are fsynced before openraft is told they are durable; a truncation cuts the
//!   file at the first removed entry; a purge rewrites the (small) remainder to a new file and
//!   renames it into place.
//! - `vote.json`: replaced atomically and fsynced, since a forgotten vote lets a node vote twice
//!   in one term.
//! - `committed.json`: replaced atomically without fsync; it only saves re-applying entries on
//!   restart, and an older value is safe.
//!
//! On reopen only a torn tail may be dropped. A crash mid-append leaves a partial record at the
//! end of the file, and that append was never acknowledged, so nothing Raft counted on is lost.
//! A bad record with a whole record anywhere after it is damage in the middle of the log:
//! dropping from there would silently lose acknowledged entries, so `open` refuses, naming the
//! file and the offset. A caveat: the pages of a single unacknowledged append could in
//! theory reach the disk out of order, leaving a whole later record behind a torn earlier one.
//! That looks exactly like damage, and we refuse rather than guess; an operator restores the
//! data dir or removes it, and the node rejoins empty.
//!
//! The entries also live in memory: membership changes are rare and tiny, and openraft purges
//! what snapshots cover.

use super::disk;
use super::lock;
use super::types::{Entry, LogId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const LOG: &str = "log";
const VOTE: &str = "vote.json";
const COMMITTED: &str = "committed.json";
const HEADER: usize = 12;

#[derive(Serialize)]
enum RecordRef<'a> {
    Purged(&'a LogId),
    Entry(&'a Entry),
}

#[derive(Deserialize)]
enum Record {
    Purged(LogId),
    Entry(Entry),
}

/// What readers (replication tasks) and the writer share.
#[derive(Default)]
struct Cache {
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

/// Reads entries for openraft's replication tasks while the store keeps writing.
#[derive(Clone)]
pub(crate) struct LogReader {
    cache: Arc<Mutex<Cache>>,
}

pub(crate) struct LogStore {
    dir: PathBuf,
    file: Arc<Mutex<File>>,
    cache: Arc<Mutex<Cache>>,
    /// File offset of each entry's record, for truncation.
    offsets: BTreeMap<u64, u64>,
    /// Length of the valid log file.
    end: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, dropping a torn tail left by a crash; fails with
    /// `InvalidData` if the log is damaged before its tail.
    pub(crate) async fn open(dir: &Path) -> io::Result<LogStore> {
        let dir = dir.to_owned();
        disk::blocking(move || load(dir)).await
    }

    /// Whether this node has never taken part in any cluster: no vote, no log.
    pub(crate) fn is_pristine(&self) -> bool {
        let cache = lock(&self.cache);
        self.vote.is_none() && cache.purged.is_none() && cache.entries.is_empty()
    }

    /// Replaces the log file with a purge marker followed by the entries that remain.
    async fn rewrite(&mut self, purged: LogId, kept: Vec<Entry>) -> io::Result<()> {
        let mut buf = Vec::new();
        encode(&mut buf, &RecordRef::Purged(&purged))?;
        let mut offsets = BTreeMap::new();
        for e in &kept {
            offsets.insert(e.log_id.index, buf.len() as u64);
            encode(&mut buf, &RecordRef::Entry(e))?;
        }
        let end = buf.len() as u64;
        let dir = self.dir.clone();
        let file = disk::blocking(move || {
            disk::replace(&dir, LOG, &buf, true)?;
            open_append(&dir.join(LOG))
        })
        .await?;
        *lock(&self.file) = file;
        self.offsets = offsets;
        self.end = end;
        Ok(())
    }
}

fn load(dir: PathBuf) -> io::Result<LogStore> {
    std::fs::create_dir_all(&dir)?;
    let vote_path = dir.join(VOTE);
    let vote = disk::read_if_exists(&vote_path)?
        .map(|b| disk::parse(&vote_path, &b))
        .transpose()?;
    let committed_path = dir.join(COMMITTED);
    let committed =
        disk::read_if_exists(&committed_path)?.and_then(|b| disk::parse(&committed_path, &b).ok());

    let path = dir.join(LOG);
    let bytes = disk::read_if_exists(&path)?.unwrap_or_default();
    let (records, valid) = decode(&bytes);
    if valid < bytes.len() && whole_record_after(&bytes, valid) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log {} is damaged at byte {valid} and has whole records after it; \
                 refusing to start (restore the data dir or remove this node's data dir so it \
                 rejoins empty)",
                path.display()
            ),
        ));
    }
    let file = open_append(&path)?;
    if valid < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            at = valid,
            dropped_bytes = bytes.len() - valid,
            "dropping a torn log tail"
        );
        file.set_len(valid as u64)?;
        file.sync_all()?;
    }
    disk::sync_dir(&dir)?;

    let mut cache = Cache::default();
    let mut offsets = BTreeMap::new();
    for (offset, record) in records {
        match record {
            Record::Purged(id) => {
                cache.entries.clear();
                offsets.clear();
                cache.purged = Some(id);
            }
            Record::Entry(e) => {
                let index = e.log_id.index;
                // A later record for the same index supersedes everything after it, as a
                // truncation followed by an append would.
                cache.entries.split_off(&index);
                offsets.split_off(&index);
                if cache.purged.is_none_or(|p| p.index < index) {
                    cache.entries.insert(index, e);
                    offsets.insert(index, offset);
                }
            }
        }
    }
    Ok(LogStore {
        dir,
        file: Arc::new(Mutex::new(file)),
        cache: Arc::new(Mutex::new(cache)),
        offsets,
        end: valid as u64,
        vote,
        committed,
    })
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn encode(out: &mut Vec<u8>, record: &RecordRef<'_>) -> io::Result<()> {
    let payload = serde_json::to_vec(record)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The records at the start of `bytes`, with their offsets, and the length of that valid prefix.
fn decode(bytes: &[u8]) -> (Vec<(u64, Record)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, next)) = record_at(bytes, at) {
        records.push((at as u64, record));
        at = next;
    }
    (records, at)
}

/// The whole record starting at byte `at`, and where the next one would start.
fn record_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let start = at.checked_add(HEADER)?;
    let (len, sum) = bytes.get(at..start)?.split_at(4);
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    let end = start.checked_add(len)?;
    let payload = bytes.get(start..end)?;
    if fnv1a(payload) != sum {
        return None;
    }
    let record = serde_json::from_slice(payload).ok()?;
    Some((record, end))
}

/// Whether a whole record starts at any offset after the bad one at `bad`, which makes it mid-log
/// damage rather than a torn tail. Every offset is tried, since the bad record's length field
/// cannot be trusted to say where the next one starts. Cheap enough for a log that snapshots
/// every hundred entries: a payload is hashed only where a length fits in the file, which in JSON
/// text happens almost only at real headers, and parsed only when its checksum matches.
fn whole_record_after(bytes: &[u8], bad: usize) -> bool {
    (bad + 1..bytes.len()).any(|at| record_at(bytes, at).is_some())
}

/// A checksum to tell a torn record from a whole one; not a defence against tampering.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_range<RB: RangeBounds<u64>>(cache: &Mutex<Cache>, range: RB) -> Vec<Entry> {
    lock(cache)
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.cache, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.cache, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = lock(&self.cache);
        let last = cache.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: cache.purged,
            last_log_id: last.or(cache.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            cache: self.cache.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        let dir = self.dir.clone();
        disk::blocking(move || disk::replace(&dir, VOTE, &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed = committed;
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        let dir = self.dir.clone();
        if let Err(e) = disk::blocking(move || disk::replace(&dir, COMMITTED, &bytes, false)).await
        {
            // Advisory only: a node that restarts with an older committed id re-learns it.
            tracing::warn!(error = %e, "could not record the committed log id");
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in &entries {
            offsets.push((e.log_id.index, self.end + buf.len() as u64));
            encode(&mut buf, &RecordRef::Entry(e))
                .map_err(|err| StorageIOError::write_log_entry(e.log_id, &err))?;
        }
        let len = buf.len() as u64;
        let file = self.file.clone();
        let written = disk::blocking(move || {
            let mut file = lock(&file);
            file.write_all(&buf)?;
            file.sync_data()
        })
        .await;
        if let Err(e) = written {
            let error = StorageIOError::write_logs(&e).into();
            callback.log_io_completed(Err(e));
            return Err(error);
        }
        self.end += len;
        self.offsets.extend(offsets);
        let mut cache = lock(&self.cache);
        for e in entries {
            cache.entries.insert(e.log_id.index, e);
        }
        drop(cache);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        let Some((_, &offset)) = self.offsets.range(index..).next() else {
            return Ok(());
        };
        let file = self.file.clone();
        disk::blocking(move || {
            let file = lock(&file);
            file.set_len(offset)?;
            file.sync_data()
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        self.offsets.split_off(&index);
        self.end = offset;
        lock(&self.cache).entries.split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let kept: Vec<Entry> = {
            let cache = lock(&self.cache);
            let after = (Bound::Excluded(log_id.index), Bound::Unbounded);
            cache.entries.range(after).map(|(_, e)| e.clone()).collect()
        };
        self.rewrite(log_id, kept)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut cache = lock(&self.cache);
        cache.purged = Some(log_id);
        cache.entries.retain(|&i, _| i > log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
