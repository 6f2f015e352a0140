//! The membership state machine (openraft's `RaftStateMachine`) and its snapshots.
//!
//! Applied state lives in memory and is published on a `watch` channel; durability comes from the
//! log plus the snapshot file `snapshot.json` (the whole [`Membership`], cluster id included, is
//! a few hundred bytes, so a snapshot is simply its JSON). On restart the state starts from the snapshot and openraft
//! re-applies the committed entries after it.

use super::command::{self, Command};
use super::disk;
use super::lock;
use super::types::{Entry, LogId, StorageError, TypeConfig};
use crate::Membership;
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const SNAPSHOT: &str = "snapshot.json";

type Meta = SnapshotMeta<u64, BasicNode>;

/// What openraft needs to know besides the membership itself.
#[derive(Clone, Default)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    membership: Membership,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    membership: Membership,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Result<Snapshot<TypeConfig>, serde_json::Error> {
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(serde_json::to_vec(&self.membership)?)),
        })
    }

    fn read_error(&self, e: &serde_json::Error) -> StorageError {
        StorageIOError::read_snapshot(Some(self.meta.signature()), e).into()
    }
}

/// The current snapshot, on disk and cached; shared with snapshot builders, which run
/// concurrently with the state machine.
struct Snapshots {
    dir: PathBuf,
    current: Mutex<Option<StoredSnapshot>>,
}

impl Snapshots {
    /// Makes `snapshot` durable unless a newer one is already current.
    async fn save(self: &Arc<Self>, snapshot: StoredSnapshot) -> io::Result<()> {
        let this = self.clone();
        disk::blocking(move || {
            let mut current = lock(&this.current);
            if let Some(c) = current.as_ref()
                && c.meta.last_log_id > snapshot.meta.last_log_id
            {
                return Ok(());
            }
            let bytes = serde_json::to_vec(&snapshot)?;
            disk::replace(&this.dir, SNAPSHOT, &bytes, true)?;
            *current = Some(snapshot);
            Ok(())
        })
        .await
    }
}

pub(crate) struct StateMachineStore {
    applied: Applied,
    snapshots: Arc<Snapshots>,
    published: Arc<watch::Sender<Membership>>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, starting from its last snapshot.
    pub(crate) async fn open(dir: &Path) -> io::Result<StateMachineStore> {
        let dir = dir.to_owned();
        disk::blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(SNAPSHOT);
            let current: Option<StoredSnapshot> = disk::read_if_exists(&path)?
                .map(|b| disk::parse(&path, &b))
                .transpose()?;
            let applied = current
                .as_ref()
                .map(|s| Applied {
                    last_applied: s.meta.last_log_id,
                    last_membership: s.meta.last_membership.clone(),
                    membership: s.membership.clone(),
                })
                .unwrap_or_default();
            let (published, _) = watch::channel(applied.membership.clone());
            Ok(StateMachineStore {
                applied,
                snapshots: Arc::new(Snapshots {
                    dir,
                    current: Mutex::new(current),
                }),
                published: Arc::new(published),
            })
        })
        .await
    }

    /// Where applied membership is published; what `Consensus::watch` subscribes to.
    pub(crate) fn publisher(&self) -> Arc<watch::Sender<Membership>> {
        self.published.clone()
    }

    pub(crate) fn has_snapshot(&self) -> bool {
        lock(&self.snapshots.current).is_some()
    }

    fn publish(&self) {
        let membership = &self.applied.membership;
        self.published.send_if_modified(|current| {
            let changed = current != membership;
            if changed {
                current.clone_from(membership);
            }
            changed
        });
    }
}

/// Builds a snapshot from a copy of the applied state taken when openraft asked for it.
pub(crate) struct SnapshotBuilder {
    applied: Applied,
    snapshots: Arc<Snapshots>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match &self.applied.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_owned(),
        };
        let stored = StoredSnapshot {
            meta: Meta {
                last_log_id: self.applied.last_applied,
                last_membership: self.applied.last_membership.clone(),
                snapshot_id,
            },
            membership: self.applied.membership.clone(),
        };
        let snapshot = stored.to_snapshot().map_err(|e| stored.read_error(&e))?;
        let signature = stored.meta.signature();
        self.snapshots
            .save(stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Membership>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let applied = &mut self.applied;
            applied.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => {
                    if command::apply(&mut applied.membership, cmd) {
                        log_change(cmd, &applied.membership);
                    }
                }
                EntryPayload::Membership(m) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            replies.push(applied.membership.clone());
        }
        self.publish();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            applied: self.applied.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let membership: Membership = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            membership: membership.clone(),
        };
        self.snapshots
            .save(stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            membership,
        };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = lock(&self.snapshots.current).clone();
        match current {
            Some(s) => s.to_snapshot().map(Some).map_err(|e| s.read_error(&e)),
            None => Ok(None),
        }
    }
}

fn log_change(cmd: &Command, membership: &Membership) {
    tracing::info!(epoch = membership.epoch, command = ?cmd, "membership changed");
}
