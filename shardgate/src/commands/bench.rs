//! `shardgate bench --url URL --sessions N --rate R --duration D`: open-loop MCP load at a
//! fixed rate against a gateway (or any MCP endpoint), with latency from each request's
//! scheduled send time. Prints a summary, or a Markdown table row, and writes JSON on request;
//! the work is in `shardgate-bench`. With `--hold-streams` it measures memory instead: bytes
//! per session and per held GET stream of the processes named by `--cpu-pid`.
//!
//! `shardgate bench plot --out FILE.png RUN.json...` runs nothing: it draws latency against
//! offered load from the JSON of earlier runs (one line per `--label`), and prints them as a
//! Markdown table.

use super::parse_duration;
use anyhow::Context;
use shardgate_bench::{Era, HttpVersion, Mix, Options, Trust};
use shardgate_trust::TlsFiles;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Without one, a run against --url.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The MCP endpoint: a gateway's `/mcp`, `up`'s, or (`https://`, with --credentials) a
    /// node's session listener, measured straight.
    #[arg(long, default_value = "http://127.0.0.1:8080/mcp")]
    pub url: String,
    /// Sessions (session era) or clients (stateless era) the load is spread over.
    #[arg(long, default_value_t = 50)]
    pub sessions: usize,
    /// Requests per second offered, over all sessions together, whatever the answers do.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// The measured phase: `10s`, `2m`, `500ms`, or seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured phase, at the same rate; its answers are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// `session` (2025-11-25: initialize, Mcp-Session-Id) or `stateless` (2026-07-28).
    #[arg(long, default_value = "session")]
    pub era: Era,
    /// Weights of the operations: echo, counter, list (tools/list), and in the session era
    /// stream (a GET stream read to its first event) and resume (a GET with Last-Event-ID
    /// replaying the session's last call).
    #[arg(long, default_value = "echo=8,counter=1,list=1")]
    pub mix: Mix,
    /// HTTP version: 1 (HTTP/1.1), 2 (HTTP/2: prior knowledge over cleartext, ALPN over TLS) or
    /// 3 (HTTP/3 over QUIC, `https://` only).
    #[arg(long, default_value = "1")]
    pub http: HttpVersion,
    /// Connections. Default: one per session over HTTP/1.1 (never more than the sessions),
    /// 4 over HTTP/2.
    #[arg(long)]
    pub connections: Option<usize>,
    /// A request without its answer this long after its scheduled send time is a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A process under test whose CPU time per request to report (repeatable): a gateway's,
    /// a node's.
    #[arg(long = "cpu-pid")]
    pub cpu_pids: Vec<u32>,
    /// Write the report as JSON to this file (every percentile, and the settings).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print a Markdown table (header and this run's row) instead of the summary, which
    /// then goes to stderr.
    #[arg(long)]
    pub markdown: bool,
    /// No progress line, and no summary on stderr with --markdown.
    #[arg(long)]
    pub quiet: bool,
    /// A directory with the cluster's `ca.pem`, `cert.pem` and `key.pem` (the one `shardgate
    /// up` prints as `credentials`): an `https://` endpoint is dialled with them, as a member.
    #[arg(long, value_name = "DIR", conflicts_with = "ca")]
    pub credentials: Option<PathBuf>,
    /// A CA certificate (PEM) to trust an `https://` endpoint by, without a client
    /// certificate: a gateway's (`shardgate up --tls` prints it as `edge-ca`).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A bearer token every request carries, for a gateway that verifies tokens.
    #[arg(long, env = "SHARDGATE_BENCH_BEARER", hide_env_values = true)]
    pub bearer: Option<String>,
    /// A name for what is measured (`node`, `gateway`, `nginx`), kept in the JSON's settings:
    /// `bench plot` draws the runs of one label as one line.
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Measure memory instead of offering a rate (session era): the RSS of every --cpu-pid
    /// process before, with --sessions sessions open, with each one's GET stream held open
    /// at once, and after the streams closed; bytes per session and per held stream. Over
    /// HTTP/1.1 one connection per session; over HTTP/2 enough for 256 streams each.
    #[arg(long, conflicts_with_all = ["rate", "duration", "warmup", "mix", "label"])]
    pub hold_streams: bool,
}

/// What `bench` does instead of a run.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Draw p50 and p99 latency against offered rate from the JSON (--json) of several runs,
    /// one line per --label, saturated runs marked; print them as a Markdown table.
    Plot(PlotArgs),
}

/// What `bench plot` draws, and where.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// The PNG to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// Reports of runs (`shardgate bench --json`), or directories of them: every `*.json`
    /// directly inside.
    #[arg(required = true, value_name = "RUN.json")]
    pub runs: Vec<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Plot(plot)) = args.command {
        return run_plot(&plot);
    }
    let show = Show {
        json: args.json.clone(),
        markdown: args.markdown,
        quiet: args.quiet,
    };
    let hold_streams = args.hold_streams;
    let opts = Options {
        url: args.url,
        era: args.era,
        sessions: args.sessions,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        mix: args.mix,
        http: args.http,
        connections: args.connections,
        timeout: args.timeout,
        cpu_pids: args.cpu_pids,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        trust: match (args.credentials, args.ca) {
            (Some(dir), _) => Some(Trust::Member(TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            })),
            (None, Some(ca)) => Some(Trust::Ca(ca)),
            (None, None) => None,
        },
        bearer: args.bearer,
        label: args.label,
    };
    // Ctrl-C ends the run early: what was due until then is still awaited and reported (a
    // memory run is abandoned: its readings would be of half-opened things). A second one
    // quits at once.
    let stop = CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            match hold_streams {
                true => eprintln!("\nstopping (Ctrl-C again to quit now)"),
                false => eprintln!(
                    "\nstopping: awaiting the requests already due (Ctrl-C again to quit now)"
                ),
            }
            interrupt.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    if hold_streams {
        let report = shardgate_bench::hold::run(opts, stop).await?;
        return show.print(&report.json()?, &report.markdown(), &report.summary());
    }
    let report = shardgate_bench::run(opts, stop).await?;
    show.print(&report.json()?, &report.markdown(), &report.summary())
}

/// `bench plot`: the PNG, then the table on stdout (for a results file).
fn run_plot(args: &PlotArgs) -> anyhow::Result<()> {
    let points = shardgate_bench::plot::read_all(&args.runs)?;
    shardgate_bench::plot::draw(&points, &args.out)
        .with_context(|| format!("cannot draw {}", args.out.display()))?;
    eprintln!(
        "bench plot: {} runs drawn to {}",
        points.len(),
        args.out.display()
    );
    print!("{}", shardgate_bench::plot::markdown(&points));
    Ok(())
}

/// Where a report goes, as the flags ask, whichever mode made it.
struct Show {
    json: Option<PathBuf>,
    markdown: bool,
    quiet: bool,
}

impl Show {
    fn print(&self, json: &str, markdown: &str, summary: &str) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if self.markdown {
            print!("{markdown}");
            if !self.quiet {
                eprint!("{summary}");
            }
        } else {
            print!("{summary}");
        }
        Ok(())
    }
}
