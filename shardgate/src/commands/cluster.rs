//! Talking to a running cluster from the command line: `status`, `sessions`, `drain` and
//! `scale`. Any node answers for the cluster's view; each seed is tried in turn. What each member
//! holds is asked of each member ([`ask_all`]). Every request is authenticated with the cluster
//! credentials, found by [`Target::resolve`].

use crate::credentials::ClusterCredentials;
use anyhow::{Context, bail};
use http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::internal::{self, NodeReport};
use shardgate_raft::consensus::TransportError;
use shardgate_raft::{Member, MemberState, Membership, NodeId};
use shardgate_statefulset::{local, status};
use std::time::Duration;

/// How long one node gets to answer. A member that takes longer to report what it holds is
/// shown as unreachable, and the others are shown all the same.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often `drain` and `scale` look at the cluster while they wait.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One member's answer, as `--json` shows it: `{"id": …, "answer": …}`, or
/// `{"id": …, "unreachable": "why"}` for a member that did not answer.
#[derive(Debug, Serialize)]
pub struct Asked<T> {
    pub id: NodeId,
    #[serde(flatten)]
    pub reply: Reply<T>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Answer(T),
    Unreachable(String),
}

/// Asks every member of `view` for `path` at once, each within [`ASK_TIMEOUT`]; the answers
/// in the view's order.
pub async fn ask_all<T: DeserializeOwned>(
    client: &ClusterClient,
    view: &Membership,
    path: &str,
) -> Vec<(Member, Result<T, TransportError>)> {
    let asks = view.members.iter().map(|m| async move {
        let answer = client.get_json(&m.addr, path, ASK_TIMEOUT).await;
        (m.clone(), answer)
    });
    futures_util::future::join_all(asks).await
}

/// Every member's answer to `path`, or why it has none.
pub async fn ask_each<T: DeserializeOwned>(
    client: &ClusterClient,
    view: &Membership,
    path: &str,
) -> Vec<Asked<T>> {
    ask_all(client, view, path)
        .await
        .into_iter()
        .map(|(m, answer)| Asked {
            id: m.id,
            reply: match answer {
                Ok(report) => Reply::Answer(report),
                Err(e) => Reply::Unreachable(e.to_string()),
            },
        })
        .collect()
}

/// A line for each step a waiting command sees, printed only when it differs from the last:
/// text, or with `--json` one JSON object per line (`{"epoch": …, "members": [{"id", "state",
/// "sessions"?}]}`), and the command's other lines as objects too.
#[derive(Default)]
pub struct Progress {
    last: String,
    json: bool,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        Progress {
            last: String::new(),
            json,
        }
    }

    /// Prints the step `view` is at, with what each draining member still holds.
    pub fn step(&mut self, view: &Membership, draining: &[(NodeId, usize)]) {
        let line = match self.json {
            true => step_json(view, draining).to_string(),
            false => describe(view, draining),
        };
        if line != self.last {
            println!("{line}");
            self.last = line;
        }
    }

    /// Takes `view` as the step already seen: only what differs from it is printed.
    pub fn seen(&mut self, view: &Membership) {
        self.last = match self.json {
            true => step_json(view, &[]).to_string(),
            false => describe(view, &[]),
        };
    }

    /// Prints `text`, or `object` with `--json`.
    pub fn say(&self, text: &str, object: serde_json::Value) {
        match self.json {
            true => println!("{object}"),
            false => println!("{text}"),
        }
    }
}

/// A step as `--json` prints it.
fn step_json(view: &Membership, draining: &[(NodeId, usize)]) -> serde_json::Value {
    let members: Vec<serde_json::Value> = view
        .members
        .iter()
        .map(|m| {
            let mut member = serde_json::json!({"id": m.id, "state": state_name(m.state)});
            if let Some((_, n)) = draining.iter().find(|(id, _)| *id == m.id) {
                member["sessions"] = (*n).into();
            }
            member
        })
        .collect();
    serde_json::json!({"epoch": view.epoch, "members": members})
}

/// One line of a view: its epoch, each member's state, and the sessions each draining member
/// still holds where it said (`draining`, from [`draining_sessions`]).
pub fn describe(view: &Membership, draining: &[(NodeId, usize)]) -> String {
    let members: Vec<String> = view
        .members
        .iter()
        .map(|m| {
            let state = state_name(m.state);
            match draining.iter().find(|(id, _)| *id == m.id) {
                Some((_, n)) => format!("{} {state} ({n} sessions)", m.id),
                None => format!("{} {state}", m.id),
            }
        })
        .collect();
    format!("epoch {}: {}", view.epoch, members.join(", "))
}

/// How many sessions each `Draining` member of `view` still holds, of those that answer.
pub async fn draining_sessions(client: &ClusterClient, view: &Membership) -> Vec<(NodeId, usize)> {
    let draining = Membership {
        members: view
            .members
            .iter()
            .filter(|m| m.state == MemberState::Draining)
            .cloned()
            .collect(),
        ..view.clone()
    };
    ask_all::<NodeReport>(client, &draining, internal::REPORT_PATH)
        .await
        .into_iter()
        .filter_map(|(m, r)| Some((m.id, r.ok()?.sessions)))
        .collect()
}

/// A member state as the commands print it: `active`, `draining`, `down`.
pub fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Active => "active",
        MemberState::Draining => "draining",
        MemberState::Down => "down",
    }
}

/// The nodes to ask and the client to ask them with.
pub struct Target {
    pub seeds: Vec<String>,
    pub client: ClusterClient,
}

impl Target {
    /// Credentials from the flags or the environment; else those of the local cluster the
    /// seeds point into (or, without seeds, the only local cluster running).
    pub fn resolve(seeds: Vec<String>, flags: &ClusterCredentials) -> anyhow::Result<Target> {
        let (seeds, flags) = if flags.given() {
            (seeds, flags.clone())
        } else {
            match local::find(&seeds) {
                Some(entry) => {
                    let seeds = if seeds.is_empty() {
                        entry.seeds.clone()
                    } else {
                        seeds
                    };
                    (seeds, ClusterCredentials::of(&entry))
                }
                None if seeds.is_empty() => bail!(
                    "no local cluster is running here: give --seeds host:port of a node's \
                     internal listener, and cluster credentials"
                ),
                None => (seeds, flags.clone()),
            }
        };
        let loaded = flags.load()?;
        let client =
            ClusterClient::new(&loaded.credentials, ASK_TIMEOUT).map_err(anyhow::Error::msg)?;
        Ok(Target { seeds, client })
    }
}

/// Asks node `id` (found through the seeds) to drain and leave; waits until it has, printing
/// each step it sees: the node's state, and the sessions it still holds.
pub async fn drain(
    target: &Target,
    id: &str,
    within: Duration,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let Target { seeds, client } = target;
    let current = status(client, seeds).await?;
    let member = current
        .membership
        .members
        .iter()
        .find(|m| m.id.0 == id)
        .with_context(|| format!("{id} is not a member"))?;
    client
        .call(
            Method::POST,
            &member.addr,
            internal::DRAIN_PATH,
            Vec::new(),
            ASK_TIMEOUT,
        )
        .await
        .with_context(|| format!("{id} refused to drain"))?;
    progress.say(
        &format!("asked {id} to drain"),
        serde_json::json!({"asked_to_drain": id}),
    );
    let deadline = tokio::time::Instant::now() + within;
    // Ask the others: the draining node stops answering once it has left.
    let others: Vec<String> = current
        .membership
        .members
        .iter()
        .filter(|m| m.id.0 != id)
        .map(|m| m.addr.clone())
        .chain(seeds.iter().cloned())
        .collect();
    // Steps are changes from the view the drain was asked under.
    progress.seen(&current.membership);
    while tokio::time::Instant::now() < deadline {
        if let Ok(now) = status(client, &others).await {
            let view = &now.membership;
            if !view.members.iter().any(|m| m.id.0 == id) {
                return Ok(());
            }
            progress.step(view, &draining_sessions(client, view).await);
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
    bail!("{id} has not left within {within:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: &[MemberState]) -> Membership {
        Membership {
            epoch: 7,
            members: states
                .iter()
                .enumerate()
                .map(|(i, state)| Member {
                    id: NodeId(format!("node-{i}")),
                    addr: format!("127.0.0.1:{}", 7000 + i),
                    session_addr: format!("127.0.0.1:{}", 8000 + i),
                    state: *state,
                    weight: 1,
                })
                .collect(),
            ..Membership::default()
        }
    }

    #[test]
    fn a_step_names_every_member_and_what_a_draining_one_holds() {
        use MemberState::*;
        let v = view(&[Active, Draining, Down]);
        assert_eq!(
            describe(&v, &[(NodeId::from("node-1"), 12)]),
            "epoch 7: node-0 active, node-1 draining (12 sessions), node-2 down"
        );
        assert_eq!(
            describe(&v, &[]),
            "epoch 7: node-0 active, node-1 draining, node-2 down",
            "a draining member that does not answer is shown without a count"
        );
        assert_eq!(
            step_json(&v, &[(NodeId::from("node-1"), 12)]),
            serde_json::json!({"epoch": 7, "members": [
                {"id": "node-0", "state": "active"},
                {"id": "node-1", "state": "draining", "sessions": 12},
                {"id": "node-2", "state": "down"},
            ]})
        );
    }

    #[test]
    fn a_reply_names_its_member_beside_the_answer() {
        let asked = Asked {
            id: NodeId::from("node-2"),
            reply: Reply::<u32>::Unreachable("refused".into()),
        };
        assert_eq!(
            serde_json::to_value(&asked).ok(),
            Some(serde_json::json!({"id": "node-2", "unreachable": "refused"}))
        );
        let asked = Asked {
            id: NodeId::from("node-0"),
            reply: Reply::Answer(3),
        };
        assert_eq!(
            serde_json::to_value(&asked).ok(),
            Some(serde_json::json!({"id": "node-0", "answer": 3}))
        );
    }
}
