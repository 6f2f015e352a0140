//! The cluster id: which cluster this node belongs to, so that no request from another one is
//! ever acted on.
//!
//! The founder generates the id (128 random bits as 32 lowercase hex) and commits it as the
//! cluster's first command (`Found`); every other node learns it from the cluster, from the
//! envelope of the leader's first append or snapshot or from its join reply. Either way the id
//! is made durable in `cluster-id.json` before it is acted on, and a node that has one keeps it
//! for good: the file is never rewritten with another id.
//!
//! Every RPC carries the sender's id in its envelope; [`admission`] decides what a node does
//! with it.

use super::disk;
use super::error::ConsensusError;
use super::rpc;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FILE: &str = "cluster-id.json";

/// This node's cluster id: set once (loaded, founded or adopted), then read on every RPC.
pub(crate) struct ClusterId {
    dir: PathBuf,
    id: OnceLock<String>,
    /// Serializes adoption, so that two first appends racing cannot leave one id on disk and
    /// another in memory.
    adopting: tokio::sync::Mutex<()>,
}

impl ClusterId {
    /// Loads the id kept in `dir`, if any; a damaged file is an error, not a pristine node.
    pub(crate) async fn load(dir: &Path) -> io::Result<ClusterId> {
        let path = dir.join(FILE);
        let stored = disk::blocking(move || {
            let Some(bytes) = disk::read_if_exists(&path)? else {
                return Ok(None);
            };
            let id: String = disk::parse(&path, &bytes)?;
            if !valid(&id) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {id:?} is not a cluster id", path.display()),
                ));
            }
            Ok(Some(id))
        })
        .await?;
        Ok(ClusterId {
            dir: dir.to_owned(),
            id: stored.map(OnceLock::from).unwrap_or_default(),
            adopting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn get(&self) -> Option<&str> {
        self.id.get().map(String::as_str)
    }

    /// Generates and keeps the id of a cluster this node is founding.
    pub(crate) async fn found(&self) -> Result<String, ConsensusError> {
        let id = generate().map_err(|e| ConsensusError::Failed(format!("cluster id: {e}")))?;
        self.adopt(&id, "the founder").await?;
        Ok(id)
    }

    /// Makes `id` this node's cluster id, durable before it is used; `from` names where it came
    /// from, for the error when this node already belongs to another cluster.
    pub(crate) async fn adopt(&self, id: &str, from: &str) -> Result<(), ConsensusError> {
        let _one_at_a_time = self.adopting.lock().await;
        if let Some(ours) = self.get() {
            return if ours == id {
                Ok(())
            } else {
                Err(foreign(ours, Some(id), from))
            };
        }
        if !valid(id) {
            return Err(ConsensusError::Failed(format!(
                "{from} names {id:?}, which is not a cluster id"
            )));
        }
        let (dir, owned) = (self.dir.clone(), id.to_owned());
        disk::blocking(move || disk::replace(&dir, FILE, &serde_json::to_vec(&owned)?, true))
            .await
            .map_err(|source| ConsensusError::Storage {
                path: self.dir.join(FILE),
                source,
            })?;
        // Only this task sets the id (under `adopting`), so the cell is still empty.
        let _ = self.id.set(id.to_owned());
        tracing::info!(cluster = id, from, "cluster id kept");
        Ok(())
    }

    /// Applies [`admission`] to an RPC whose envelope names `theirs`.
    pub(crate) async fn admit(
        &self,
        name: &str,
        theirs: Option<&str>,
    ) -> Result<(), ConsensusError> {
        match admission(self.get(), theirs, name) {
            Admission::Accept => Ok(()),
            Admission::Adopt => match theirs {
                Some(id) => self.adopt(id, &format!("the sender of this {name}")).await,
                None => Ok(()),
            },
            Admission::Refuse => {
                let ours = self.get().unwrap_or_default();
                Err(foreign(ours, theirs, &format!("the sender of this {name}")))
            }
        }
    }
}

/// What a node does with an RPC, given its own cluster id and the one in the envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Accept,
    /// Keep the sender's id, then serve: the first append or snapshot a pristine node receives
    /// comes from the leader of the cluster it is joining.
    Adopt,
    Refuse,
}

/// The admission rule. A node that knows its cluster refuses every request naming another one.
/// It also refuses requests naming none, except a join (a pristine node asking in) and a probe
/// (a pristine node looking for a cluster): only a pristine node lacks an id, and it sends
/// nothing else. Probes are answered whatever they name: they change nothing, and their reply
/// carries this node's id, so the prober (a starting node, the failure detector) is the one to
/// see that another cluster answered.
pub(crate) fn admission(ours: Option<&str>, theirs: Option<&str>, name: &str) -> Admission {
    match (ours, theirs) {
        _ if name == rpc::PROBE => Admission::Accept,
        (Some(ours), Some(theirs)) if ours == theirs => Admission::Accept,
        (Some(_), None) if name == rpc::JOIN => Admission::Accept,
        (Some(_), _) => Admission::Refuse,
        (None, Some(_)) if name == rpc::APPEND || name == rpc::SNAPSHOT => Admission::Adopt,
        (None, _) => Admission::Accept,
    }
}

/// Whether two ids show two different clusters; a node without one belongs to none yet.
pub(crate) fn conflicts(ours: Option<&str>, theirs: Option<&str>) -> bool {
    matches!((ours, theirs), (Some(a), Some(b)) if a != b)
}

pub(crate) fn foreign(ours: &str, theirs: Option<&str>, from: &str) -> ConsensusError {
    ConsensusError::ForeignCluster {
        ours: ours.to_owned(),
        theirs: theirs.map(str::to_owned),
        from: from.to_owned(),
    }
}

/// 128 random bits as 32 lowercase hex: no two clusters share an id by chance.
fn generate() -> Result<String, getrandom::Error> {
    let mut bits = [0u8; 16];
    getrandom::fill(&mut bits)?;
    Ok(bits.iter().map(|b| format!("{b:02x}")).collect())
}

fn valid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::rpc::{APPEND, JOIN, LEAVE, PROBE, PROPOSE, RPC_NAMES, SNAPSHOT, VOTE};
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn generated_ids_are_32_lowercase_hex_and_differ() {
        let (a, b) = (generate().expect("random"), generate().expect("random"));
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        for bad in [
            "",
            "0123",
            &A.to_uppercase(),
            &format!("{A}0"),
            "g123456789abcdef0123456789abcdef",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }

    #[test]
    fn a_node_with_an_id_serves_only_its_own_cluster() {
        for name in RPC_NAMES {
            assert_eq!(
                admission(Some(A), Some(A), name),
                Admission::Accept,
                "{name}"
            );
        }
        for name in [APPEND, VOTE, SNAPSHOT, JOIN, LEAVE, PROPOSE] {
            assert_eq!(
                admission(Some(A), Some(B), name),
                Admission::Refuse,
                "{name}"
            );
        }
        for name in [APPEND, VOTE, SNAPSHOT, LEAVE, PROPOSE] {
            assert_eq!(admission(Some(A), None, name), Admission::Refuse, "{name}");
        }
    }

    #[test]
    fn pristine_nodes_may_join_and_anyone_may_probe() {
        assert_eq!(admission(Some(A), None, JOIN), Admission::Accept);
        assert_eq!(admission(Some(A), None, PROBE), Admission::Accept);
        assert_eq!(admission(Some(A), Some(B), PROBE), Admission::Accept);
    }

    #[test]
    fn a_node_without_an_id_adopts_the_leaders_from_an_append_or_snapshot() {
        assert_eq!(admission(None, Some(A), APPEND), Admission::Adopt);
        assert_eq!(admission(None, Some(A), SNAPSHOT), Admission::Adopt);
        for name in [VOTE, JOIN, LEAVE, PROPOSE, PROBE] {
            assert_eq!(admission(None, Some(A), name), Admission::Accept, "{name}");
        }
        for name in RPC_NAMES {
            assert_eq!(admission(None, None, name), Admission::Accept, "{name}");
        }
    }

    #[test]
    fn only_two_known_different_ids_conflict() {
        assert!(conflicts(Some(A), Some(B)));
        assert!(!conflicts(Some(A), Some(A)));
        assert!(!conflicts(Some(A), None));
        assert!(!conflicts(None, Some(B)));
    }

    #[tokio::test]
    async fn an_id_is_kept_on_disk_and_never_replaced() {
        let dir = std::env::temp_dir().join(format!("shardgate-cluster-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");

        let pristine = ClusterId::load(&dir).await.expect("load");
        assert_eq!(pristine.get(), None);
        pristine.adopt(A, "a test").await.expect("adopt");
        pristine
            .adopt(A, "a test")
            .await
            .expect("the same id again");
        let other = pristine.adopt(B, "a test").await;
        assert!(
            matches!(&other, Err(ConsensusError::ForeignCluster { theirs: Some(t), .. }) if t == B),
            "{other:?}"
        );
        assert!(pristine.adopt("not-an-id", "a test").await.is_err());

        let reloaded = ClusterId::load(&dir).await.expect("reload");
        assert_eq!(reloaded.get(), Some(A));
        assert!(
            reloaded.found().await.is_err(),
            "a node with an id founds nothing"
        );

        std::fs::write(dir.join(FILE), b"\"NOPE\"").expect("write");
        assert!(
            ClusterId::load(&dir).await.is_err(),
            "a damaged id is not a missing one"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
