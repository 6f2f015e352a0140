//! `shardgate up`: the local StatefulSet (`shardgate-statefulset`), until Ctrl-C.

pub type Args = shardgate_statefulset::Options;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(config) = &args.config {
        // Fail here, once, rather than in every node.
        shardgate_node::config::NodeFile::load(config)?;
    }
    shardgate_statefulset::run(args, super::shutdown_on_signal()).await
}
