//! A stdio upstream beside the builtin, for the `upstreams` scenario: the nodes federate the
//! builtin (prefix [`BUILTIN`]) with a small line-delimited JSON-RPC server run by `python3`
//! (prefix [`STDIO`]), one process per session on the node that owns it. Each process writes a
//! file named by its pid into a directory the harness watches, so that the harness can kill one
//! with SIGKILL; the node answers a call that was under way with an error and starts a new
//! process, with the session's `initialize` replayed, for the next.

use crate::rng::Rng;
use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

/// The builtin's federation prefix in this cluster.
pub const BUILTIN: &str = "local";
/// The stdio upstream's federation prefix.
pub const STDIO: &str = "py";
/// The server: plain JSON-RPC lines, no SDK; its `echo` tool answers the text it was given.
const SERVER: &str = include_str!("../../tests/python/raw_stdio_server.py");
/// The server's file name, by which its processes are told from others with a reused pid.
const SCRIPT: &str = "chaos_stdio_server.py";

/// The stdio upstream of a run: where its processes say who they are.
pub struct Stdio {
    pids: PathBuf,
}

impl Stdio {
    /// Writes the server and the nodes' configuration into `dir`; returns the upstream and the
    /// configuration file for `up --config`.
    pub fn prepare(dir: &Path) -> anyhow::Result<(Stdio, PathBuf)> {
        let python = which("python3").context("the upstreams scenario needs python3 on PATH")?;
        let script = dir.join(SCRIPT);
        std::fs::write(&script, SERVER)
            .with_context(|| format!("cannot write {}", script.display()))?;
        let pids = dir.join("stdio-pids");
        let _ = std::fs::remove_dir_all(&pids);
        std::fs::create_dir_all(&pids)
            .with_context(|| format!("cannot create {}", pids.display()))?;
        // JSON strings are TOML basic strings.
        let quoted = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
        let config = format!(
            "[[upstream]]\nname = \"{BUILTIN}\"\n[upstream.builtin]\n\n\
             [[upstream]]\nname = \"{STDIO}\"\n[upstream.stdio]\ncommand = {}\n\
             args = [{}, \"--pid-dir\", {}]\n",
            quoted(&python),
            quoted(&script),
            quoted(&pids),
        );
        let file = dir.join("upstreams.toml");
        std::fs::write(&file, config)
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok((Stdio { pids }, file))
    }

    /// The server processes running now.
    fn running(&self) -> anyhow::Result<Vec<i32>> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.pids)? {
            let name = entry?.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(SCRIPT) {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// SIGKILL of one server process picked at random; what it hit, for the report.
    pub fn kill_one(&self, victims: &mut Rng) -> anyhow::Result<String> {
        let running = self.running()?;
        let Some(&pid) = running.get(victims.below(running.len().max(1) as u64) as usize) else {
            return Ok("none running".into());
        };
        // It may have ended since it was listed (its session ended, or its node died).
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => Ok(format!("process {pid} ({} running)", running.len())),
            Err(e) => Ok(format!("process {pid} was gone ({e})")),
        }
    }
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
