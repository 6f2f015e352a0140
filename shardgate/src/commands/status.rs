//! `shardgate status`: members, states, epoch, leader and voters, as one node sees them, and
//! what each member says it holds: its sessions, its part in Raft, its store. A member that does
//! not answer is shown as unreachable; the rest of the cluster is shown all the same.

use super::cluster::{self, Asked, Reply, Target, state_name};
use crate::credentials;
use serde::Serialize;
use shardgate_protocol::internal::{self, NodeReport};
use shardgate_raft::consensus::Status;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes' internal listeners to ask, `host:port,…`; the first that answers gives the
    /// view, and every member in it is asked for its report. Default: the local cluster
    /// `shardgate up` runs.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json`: the status of the node asked, and every member's report beside it.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    status: &'a Status,
    reports: &'a [Asked<NodeReport>],
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::resolve(args.seeds, &args.credentials)?;
    let status = shardgate_statefulset::status(&target.client, &target.seeds).await?;
    let reports =
        cluster::ask_each(&target.client, &status.membership, internal::REPORT_PATH).await;
    if args.json {
        let shown = Shown {
            status: &status,
            reports: &reports,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", render(&status, &reports));
    }
    Ok(())
}

fn render(s: &Status, reports: &[Asked<NodeReport>]) -> String {
    let names = |ids: &[shardgate_raft::NodeId]| {
        ids.iter()
            .map(|i| i.0.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        "cluster {}\nepoch {}  leader {}  term {}  (asked {}{})\nvoters   {}\nlearners {}\n\n",
        s.membership.cluster.as_deref().unwrap_or("-"),
        s.membership.epoch,
        s.leader.as_ref().map_or("none", |l| l.0.as_str()),
        s.term,
        s.id,
        if s.serving {
            ""
        } else {
            ", which is not serving"
        },
        names(&s.voters),
        if s.learners.is_empty() {
            "-".to_owned()
        } else {
            names(&s.learners)
        },
    );
    let row = |cells: [&str; 8]| {
        format!(
            "{:<10} {:<9} {:>6}  {:<11} {:>8}  {:<24} {:<22} {}\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        )
    };
    out.push_str(&row([
        "MEMBER", "STATE", "WEIGHT", "ROLE", "SESSIONS", "STORE", "SESSION", "INTERNAL",
    ]));
    let mut silent = Vec::new();
    for m in &s.membership.members {
        let report = reports.iter().find(|r| r.id == m.id).map(|r| &r.reply);
        let (role, sessions, store) = match report {
            Some(Reply::Answer(r)) => (
                r.raft.as_ref().map_or("-", |raft| raft.role.as_str()),
                r.sessions.to_string(),
                match &r.store {
                    Some(st) if st.healthy => format!("{}, healthy", st.kind),
                    Some(st) => format!("{}, UNHEALTHY", st.kind),
                    None => "memory only".to_owned(),
                },
            ),
            Some(Reply::Unreachable(why)) => {
                silent.push(format!("{}: {why}", m.id));
                ("-", "-".to_owned(), "unreachable".to_owned())
            }
            None => ("-", "-".to_owned(), "-".to_owned()),
        };
        out.push_str(&row([
            &m.id.0,
            state_name(m.state),
            &m.weight.to_string(),
            role,
            &sessions,
            &store,
            &m.session_addr,
            &m.addr,
        ]));
    }
    if !silent.is_empty() {
        out.push_str("\nunreachable:\n");
        for line in silent {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_protocol::internal::{RaftReport, StoreReport};
    use shardgate_raft::consensus::Role;
    use shardgate_raft::{Member, MemberState, Membership, NodeId};

    fn member(i: usize, state: MemberState) -> Member {
        Member {
            id: NodeId(format!("node-{i}")),
            addr: format!("127.0.0.1:{}", 7000 + i),
            session_addr: format!("127.0.0.1:{}", 8000 + i),
            state,
            weight: 1,
        }
    }

    #[test]
    fn every_member_is_shown_with_what_it_said_or_as_unreachable() {
        let status = Status {
            id: NodeId::from("node-0"),
            leader: Some(NodeId::from("node-0")),
            term: 3,
            voters: vec![NodeId::from("node-0"), NodeId::from("node-1")],
            learners: Vec::new(),
            membership: Membership {
                epoch: 9,
                members: vec![member(0, MemberState::Active), member(1, MemberState::Down)],
                ..Membership::default()
            },
            serving: true,
        };
        let reports = [
            Asked {
                id: NodeId::from("node-0"),
                reply: Reply::Answer(NodeReport {
                    id: NodeId::from("node-0"),
                    sessions: 42,
                    stateless_calls: 0,
                    epoch: 9,
                    serving: true,
                    raft: Some(RaftReport {
                        role: Role::Leader,
                        term: 3,
                        leader: Some(NodeId::from("node-0")),
                    }),
                    store: Some(StoreReport {
                        kind: "sqlite".into(),
                        healthy: true,
                    }),
                }),
            },
            Asked {
                id: NodeId::from("node-1"),
                reply: Reply::Unreachable("refused: connection refused".into()),
            },
        ];
        let text = render(&status, &reports);
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(id))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            line("node-0")[..7],
            [
                "node-0", "active", "1", "leader", "42", "sqlite,", "healthy"
            ],
            "{text}"
        );
        assert_eq!(
            line("node-1")[..6],
            ["node-1", "down", "1", "-", "-", "unreachable"]
        );
        assert!(
            text.contains("  node-1: refused: connection refused\n"),
            "{text}"
        );
    }
}
