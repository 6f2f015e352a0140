//! The stores against openraft's storage contract, plus what the contract does not cover:
//! everything surviving a reopen, a torn append dropped, and mid-log damage refused.

use super::*;
use crate::consensus::state_machine::StateMachineStore;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::{StoreBuilder, Suite, blank_ent, log_id};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shardgate-log-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new();
        let log = LogStore::open(&dir.0)
            .await
            .map_err(|e| StorageIOError::read(&e))?;
        let sm = StateMachineStore::open(&dir.0)
            .await
            .map_err(|e| StorageIOError::read(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn satisfies_the_openraft_storage_contract() {
    Suite::test_all(Builder).expect("storage suite");
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|i| blank_ent::<TypeConfig>(term, 0, i))
        .collect()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let all = log.try_get_log_entries(..).await.expect("read");
    all.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn vote_log_and_committed_survive_a_reopen() {
    let dir = TempDir::new();
    let vote = Vote::new_committed(3, 1);
    {
        let mut log = LogStore::open(&dir.0).await.expect("open");
        assert!(log.is_pristine());
        log.save_vote(&vote).await.expect("vote");
        log.blocking_append(entries(2, 1..=8))
            .await
            .expect("append");
        log.truncate(log_id(2, 0, 7)).await.expect("truncate");
        log.blocking_append(entries(3, 7..=9))
            .await
            .expect("append");
        log.purge(log_id(2, 0, 3)).await.expect("purge");
        log.blocking_append(entries(3, 10..=10))
            .await
            .expect("append");
        log.save_committed(Some(log_id(3, 0, 9)))
            .await
            .expect("committed");
    }
    let mut log = LogStore::open(&dir.0).await.expect("reopen");
    assert!(!log.is_pristine());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("c"),
        Some(log_id(3, 0, 9))
    );
    assert_eq!(indexes(&mut log).await, (4..=10).collect::<Vec<_>>());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 0, 3)));
    assert_eq!(state.last_log_id, Some(log_id(3, 0, 10)));
    let seventh = log.try_get_log_entries(7..8).await.expect("read");
    assert_eq!(
        seventh[0].log_id,
        log_id(3, 0, 7),
        "the truncated entry was replaced"
    );
}

/// A log of entries 1..=3 in `dir`: its path, its bytes, and the offset of each record.
async fn three_records(dir: &TempDir) -> (PathBuf, Vec<u8>, Vec<usize>) {
    {
        let mut log = LogStore::open(&dir.0).await.expect("open");
        log.blocking_append(entries(1, 1..=3))
            .await
            .expect("append");
    }
    let path = dir.0.join(LOG);
    let bytes = std::fs::read(&path).expect("log");
    let (records, end) = decode(&bytes);
    assert_eq!(end, bytes.len());
    let offsets = records.iter().map(|(at, _)| *at as usize).collect();
    (path, bytes, offsets)
}

/// Writes `damaged` over the log and checks that opening refuses, naming the file and `at`, and
/// leaves the file as it was.
async fn assert_refused(dir: &TempDir, path: &Path, damaged: Vec<u8>, at: usize) {
    std::fs::write(path, &damaged).expect("write");
    let Err(e) = LogStore::open(&dir.0).await else {
        panic!("a log damaged at byte {at} was opened");
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let message = e.to_string();
    assert!(
        message.contains(&format!("raft log {} ", path.display())),
        "{message}"
    );
    assert!(message.contains(&format!("at byte {at} ")), "{message}");
    assert_eq!(std::fs::read(path).expect("log"), damaged, "left untouched");
}

#[tokio::test]
async fn a_torn_append_is_dropped_on_reopen() {
    let dir = TempDir::new();
    let (path, _, _) = three_records(&dir).await;
    // A crash mid-append: a header promising more bytes than were written, then garbage.
    let mut file = OpenOptions::new().append(true).open(&path).expect("log");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'{'])
        .expect("garbage");
    drop(file);

    let mut log = LogStore::open(&dir.0).await.expect("reopen");
    assert_eq!(indexes(&mut log).await, [1, 2, 3]);
    log.blocking_append(entries(1, 4..=4))
        .await
        .expect("append");
    let mut log = LogStore::open(&dir.0).await.expect("reopen again");
    assert_eq!(indexes(&mut log).await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_record_cut_mid_payload_is_dropped_on_reopen() {
    let dir = TempDir::new();
    let (path, bytes, offsets) = three_records(&dir).await;
    std::fs::write(&path, &bytes[..offsets[2] + HEADER + 3]).expect("write");

    let mut log = LogStore::open(&dir.0).await.expect("reopen");
    assert_eq!(indexes(&mut log).await, [1, 2]);
    let len = std::fs::metadata(&path).expect("log").len();
    assert_eq!(len, offsets[2] as u64, "the torn record is cut off");
}

#[tokio::test]
async fn a_damaged_last_record_is_dropped_on_reopen() {
    let dir = TempDir::new();
    let (path, mut bytes, _) = three_records(&dir).await;
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).expect("write");

    let mut log = LogStore::open(&dir.0).await.expect("reopen");
    assert_eq!(indexes(&mut log).await, [1, 2]);
}

#[tokio::test]
async fn a_damaged_payload_mid_log_refuses_to_start() {
    let dir = TempDir::new();
    let (path, bytes, offsets) = three_records(&dir).await;
    for record in [0, 1] {
        let mut damaged = bytes.clone();
        damaged[offsets[record] + HEADER + 2] ^= 0xff;
        assert_refused(&dir, &path, damaged, offsets[record]).await;
    }
}

#[tokio::test]
async fn a_bad_length_mid_log_refuses_to_start() {
    let dir = TempDir::new();
    let (path, bytes, offsets) = three_records(&dir).await;
    let at = offsets[1];
    let len = u32::from_le_bytes(std::array::from_fn(|i| bytes[at + i]));
    // Shorter, longer (into the next record) and past the end of the file.
    for bad in [len - 1, len + 1, len + HEADER as u32, u32::MAX] {
        let mut damaged = bytes.clone();
        damaged[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        assert_refused(&dir, &path, damaged, at).await;
    }
}
