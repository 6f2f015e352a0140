//! `shardgate sessions`: the sessions every member holds in memory (owner, revision, principal,
//! upstreams with state, last activity), or with an id, that session in detail with its streams.
//! A member that does not answer is named as unreachable; the others are shown all the same.

use super::cluster::{self, Asked, Reply, Target};
use crate::credentials;
use anyhow::bail;
use serde::Serialize;
use shardgate_protocol::internal::{self, SessionDetail, SessionList, SessionSummary};
use shardgate_raft::NodeId;
use shardgate_raft::consensus::TransportError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A session id: show that session in detail, with its streams. Ids may start with `-`
    /// (they are URL-safe base64), so this takes one that does.
    #[arg(allow_hyphen_values = true)]
    pub id: Option<String>,
    /// Nodes' internal listeners to reach the cluster through, `host:port,…`. Default: the
    /// local cluster `shardgate up` runs.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// Sessions listed per member at most, the most recently active first.
    #[arg(long, default_value_t = internal::SESSIONS_LIMIT)]
    pub limit: usize,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sessions ID --json`: the members that hold the session (one, unless it is being handed
/// over), and those that could not say.
#[derive(Serialize)]
struct Found {
    holders: Vec<SessionDetail>,
    unreachable: Vec<Asked<()>>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::resolve(args.seeds, &args.credentials)?;
    let status = shardgate_statefulset::status(&target.client, &target.seeds).await?;
    let view = &status.membership;
    let now = unix_now();
    let Some(id) = args.id else {
        let path = format!("{}?limit={}", internal::SESSIONS_PATH, args.limit);
        let lists: Vec<Asked<SessionList>> = cluster::ask_each(&target.client, view, &path).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&lists)?);
        } else {
            print!("{}", render_list(&lists, now));
        }
        return Ok(());
    };
    let mut found = Found {
        holders: Vec::new(),
        unreachable: Vec::new(),
    };
    let path = internal::session_path(&id);
    for (m, answer) in cluster::ask_all::<SessionDetail>(&target.client, view, &path).await {
        match answer {
            Ok(detail) => found.holders.push(detail),
            Err(TransportError::Status { status: 404, .. }) => {}
            Err(e) => found.unreachable.push(Asked {
                id: m.id,
                reply: Reply::Unreachable(e.to_string()),
            }),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", render_detail(&found, now));
    }
    if found.holders.is_empty() {
        bail!("no member holds session {id}");
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` (Unix seconds) as seen from `now`: `4s ago`, `3m ago`, `2h ago`, `5d ago`.
fn ago(now: u64, t: u64) -> String {
    let s = now.saturating_sub(t);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(",")
    }
}

fn render_list(lists: &[Asked<SessionList>], now: u64) -> String {
    let row = |cells: [&str; 6]| {
        format!(
            "{:<32}  {:<8} {:<10}  {:<16} {:<16} {}\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        )
    };
    let mut out = row([
        "SESSION",
        "NODE",
        "VERSION",
        "PRINCIPAL",
        "UPSTREAMS",
        "LAST ACTIVE",
    ]);
    let mut notes = Vec::new();
    let mut total = 0;
    let mut sessions: Vec<(&NodeId, &SessionSummary)> = Vec::new();
    for asked in lists {
        match &asked.reply {
            Reply::Answer(list) => {
                total += list.total;
                sessions.extend(list.sessions.iter().map(|s| (&asked.id, s)));
                if list.sessions.len() < list.total {
                    notes.push(format!(
                        "{}: {} of its {} sessions shown (--limit)",
                        asked.id,
                        list.sessions.len(),
                        list.total
                    ));
                }
            }
            Reply::Unreachable(why) => notes.push(format!("{}: unreachable: {why}", asked.id)),
        }
    }
    sessions.sort_by_key(|(_, s)| std::cmp::Reverse(s.last_active));
    for (node, s) in sessions {
        out.push_str(&row([
            &s.id,
            &node.0,
            &s.protocol_version,
            &s.principal,
            &or_dash(&s.upstreams),
            &ago(now, s.last_active),
        ]));
    }
    let answered = lists
        .iter()
        .filter(|a| matches!(a.reply, Reply::Answer(_)))
        .count();
    out.push_str(&format!(
        "\n{total} sessions held by {answered} of {} members\n",
        lists.len()
    ));
    for note in notes {
        out.push_str(&format!("{note}\n"));
    }
    out
}

fn render_detail(found: &Found, now: u64) -> String {
    let mut out = String::new();
    for d in &found.holders {
        let s = &d.session;
        out.push_str(&format!(
            "session      {}\nnode         {}\nversion      {}\nprincipal    {}\nupstreams    {}\n\
             held since   {} (created here, or taken over from the store)\nlast active  {}\n\
             in flight    {} requests, {} waiting on the client{}\n\n",
            s.id,
            d.node,
            s.protocol_version,
            s.principal,
            or_dash(&s.upstreams),
            ago(now, s.held_since),
            ago(now, s.last_active),
            d.requests_in_flight,
            d.pending_client_requests,
            if d.leaving {
                "; being handed to another node"
            } else {
                ""
            },
        ));
        out.push_str(&format!(
            "{:<7} {:<14} {:<9} {:<10} {}\n",
            "STREAM", "LAST EVENT ID", "FINISHED", "LISTENING", "REPLAY BYTES"
        ));
        let yes = |b: bool| if b { "yes" } else { "no" };
        for st in &d.streams {
            let name = match st.id {
                0 => "0 (GET)".to_owned(),
                n => n.to_string(),
            };
            out.push_str(&format!(
                "{:<7} {:<14} {:<9} {:<10} {}\n",
                name,
                st.last_event_id,
                yes(st.finished),
                yes(st.listening),
                st.replay_bytes
            ));
        }
        out.push('\n');
    }
    for asked in &found.unreachable {
        if let Reply::Unreachable(why) = &asked.reply {
            out.push_str(&format!("{}: unreachable: {why}\n", asked.id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, last_active: u64) -> SessionSummary {
        SessionSummary {
            id: id.into(),
            protocol_version: "2025-11-25".into(),
            principal: "anonymous".into(),
            upstreams: vec!["builtin".into()],
            held_since: 900,
            last_active,
        }
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(ago(1000, 1000), "0s ago");
        assert_eq!(ago(1000, 941), "59s ago");
        assert_eq!(ago(10_000, 10_000 - 7200), "2h ago");
        assert_eq!(ago(1000, 2000), "0s ago", "a node's clock ahead of ours");
    }

    #[test]
    fn the_list_merges_members_newest_first_and_names_the_silent() {
        let lists = [
            Asked {
                id: NodeId::from("node-0"),
                reply: Reply::Answer(SessionList {
                    node: NodeId::from("node-0"),
                    total: 3,
                    sessions: vec![summary("old", 900), summary("new", 995)],
                }),
            },
            Asked {
                id: NodeId::from("node-1"),
                reply: Reply::Unreachable("timed out".into()),
            },
        ];
        let text = render_list(&lists, 1000);
        let rows: Vec<&str> = text.lines().skip(1).take(2).collect();
        assert!(
            rows[0].starts_with("new ") && rows[0].ends_with("5s ago"),
            "{text}"
        );
        assert!(
            rows[1].starts_with("old ") && rows[1].contains("node-0"),
            "{text}"
        );
        assert!(text.contains("3 sessions held by 1 of 2 members"), "{text}");
        assert!(text.contains("node-0: 2 of its 3 sessions shown"), "{text}");
        assert!(text.contains("node-1: unreachable: timed out"), "{text}");
    }
}
