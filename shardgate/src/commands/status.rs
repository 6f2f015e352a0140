//! `shardgate status`: members, states, epoch, leader and voters, as one node sees them.

use super::cluster::Target;
use crate::credentials;
use shardgate_raft::consensus::Status;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes' internal listeners to ask, `host:port,…`; the first that answers is shown.
    /// Default: the local cluster `shardgate up` runs.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::resolve(args.seeds, &args.credentials)?;
    let status = shardgate_statefulset::status(&target.client, &target.seeds).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn render(s: &Status) -> String {
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
    out.push_str(&format!(
        "{:<10} {:<9} {:>6}  {:<22} {}\n",
        "MEMBER", "STATE", "WEIGHT", "SESSION", "INTERNAL"
    ));
    for m in &s.membership.members {
        let state = format!("{:?}", m.state).to_lowercase();
        out.push_str(&format!(
            "{:<10} {:<9} {:>6}  {:<22} {}\n",
            m.id.0, state, m.weight, m.session_addr, m.addr
        ));
    }
    out
}
