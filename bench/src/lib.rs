//! `shardgate bench`: an open-loop load generator for MCP over Streamable HTTP.
//!
//! A run offers a fixed rate of requests, spread evenly over N sessions of one era, whatever
//! the answers do (open loop), and measures each request's latency from the time it was *due*,
//! so that a generator, a connection or a session that falls behind shows up as latency
//! instead of hiding it (no coordinated omission). The parts, in the order a run uses them:
//!
//! - `schedule.rs`: when each request is due and which session sends it; the pacer thread
//!   that releases them on time;
//! - `mix.rs`: which operation each request is (`echo=8,counter=1,list=1`);
//! - `client.rs`: the connections (hyper's HTTP/1.1 or h2c connection API, no pool library);
//! - `session.rs`: the MCP of one session (handshake, headers of each era, judging answers);
//! - `record.rs`: histograms (hdrhistogram) and errors by kind;
//! - `cpu.rs`: CPU time of the processes under test and of the generator, from `/proc`;
//! - `report.rs`: the summary, the Markdown row and the JSON;
//! - `progress.rs`: the progress line on a terminal.
//!
//! `shardgate bench plot` reads the JSON of several runs instead of running one:
//!
//! - `plot.rs`: latency (p50, p99) against offered load, one line per `--label`, with the
//!   runs where a path saturated marked; as a PNG and as a Markdown table.
//!
//! `--hold-streams` offers no rate: it measures memory instead.
//!
//! - `hold.rs`: opens the sessions, then holds every session's GET stream open at once, and
//!   reads the memory of the processes under test after each step;
//! - `memory.rs`: their resident set size, from `/proc`, and the memory report.

pub mod client;
pub mod cpu;
pub mod hold;
pub mod memory;
pub mod mix;
pub mod plot;
pub mod progress;
pub mod record;
pub mod report;
pub mod schedule;
mod session;

pub use client::{HttpVersion, Trust};
pub use memory::MemoryReport;
pub use mix::{Mix, Op};
pub use report::Report;

use anyhow::{Context, bail};
use client::{Connections, Target};
use futures_util::{StreamExt, TryStreamExt};
use record::{Done, Failure, Recorder};
use schedule::Schedule;
use session::Session;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sessions opened at once before the run.
const OPEN_AT_ONCE: usize = 16;
/// The pause between the last session opened and the first request due.
const LEAD: Duration = Duration::from_millis(20);
/// HTTP/2 connections when not told: a few, as a client library would keep.
const H2_CONNECTIONS: usize = 4;

/// Which era of MCP the sessions speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25: `initialize`, then `Mcp-Session-Id` on every request.
    Session,
    /// 2026-07-28: self-contained requests, no handshake.
    Stateless,
}

impl FromStr for Era {
    type Err = String;

    fn from_str(text: &str) -> Result<Era, String> {
        match text.trim() {
            "session" => Ok(Era::Session),
            "stateless" => Ok(Era::Stateless),
            other => Err(format!("'{other}' is not an era: use session or stateless")),
        }
    }
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::Session => "session",
            Era::Stateless => "stateless",
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The endpoint, `http://host:port/path`.
    pub url: String,
    pub era: Era,
    pub sessions: usize,
    /// Requests per second over all sessions.
    pub rate: f64,
    /// The measured phase.
    pub duration: Duration,
    /// Before the measured phase, at the same rate; its answers are not counted.
    pub warmup: Duration,
    pub mix: Mix,
    pub http: HttpVersion,
    /// Connections; `None`: one per session over HTTP/1.1, a few over HTTP/2.
    pub connections: Option<usize>,
    /// A request without its answer this long after it was due has timed out.
    pub timeout: Duration,
    /// Processes whose CPU time is reported per request.
    pub cpu_pids: Vec<u32>,
    /// Show the progress line on stderr.
    pub progress: bool,
    /// Whom an `https://` endpoint is trusted as: a member (a node's session listener, with
    /// the cluster's credentials) or a server of a CA (a gateway).
    pub trust: Option<Trust>,
    /// A bearer token every request carries (a gateway that verifies tokens).
    pub bearer: Option<String>,
    /// What is measured (`node`, `gateway`, `nginx`), kept in the report's settings so that a
    /// plot of many runs can tell which line each belongs to.
    pub label: Option<String>,
}

impl Options {
    /// The connections the run opens. Over HTTP/1.1 each carries one exchange at a time and a
    /// session makes one at a time, so more connections than sessions would sit idle.
    pub fn connections(&self) -> usize {
        let sessions = self.sessions.max(1);
        match (self.http, self.connections) {
            (HttpVersion::Http1, Some(c)) => c.clamp(1, sessions),
            (HttpVersion::Http1, None) => sessions,
            (HttpVersion::Http2 | HttpVersion::Http3, Some(c)) => c.max(1),
            (HttpVersion::Http2 | HttpVersion::Http3, None) => sessions.min(H2_CONNECTIONS),
        }
    }

    fn settings(&self) -> report::Settings {
        report::Settings {
            label: self.label.clone(),
            url: self.url.clone(),
            era: self.era.to_string(),
            http: self.http.to_string(),
            sessions: self.sessions,
            connections: self.connections(),
            rate: self.rate,
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
            mix: self.mix.to_string(),
            cpu_pids: self.cpu_pids.clone(),
        }
    }
}

/// What every session's task shares.
struct Shared {
    conns: Connections,
    recorder: Recorder,
    schedule: Schedule,
    mix: Mix,
    t0: Instant,
    timeout: Duration,
}

/// Runs the load and reports. `stop` ends it early (what was due so far is still awaited and
/// reported, marked interrupted).
pub async fn run(opts: Options, stop: CancellationToken) -> anyhow::Result<Report> {
    opts.mix.check_era(opts.era).map_err(anyhow::Error::msg)?;
    let schedule = Schedule::new(opts.rate, opts.sessions, opts.warmup, opts.duration)
        .map_err(anyhow::Error::msg)?;
    if opts.timeout.is_zero() {
        bail!("the timeout must be above 0");
    }
    for pid in &opts.cpu_pids {
        cpu::read(*pid).map_err(anyhow::Error::msg)?;
    }
    let target = Target::resolve(&opts.url).await?;
    let conns = Connections::new(target, opts.http, opts.connections(), opts.trust.as_ref())?
        .with_bearer(opts.bearer.as_deref())?;
    tokio::select! {
        opened = conns.open_all() => opened?,
        _ = stop.cancelled() => bail!("interrupted"),
    }
    let sessions = tokio::select! {
        opened = open_sessions(&conns, &opts) => opened?,
        _ = stop.cancelled() => bail!("interrupted while opening the sessions"),
    };

    let shared = Arc::new(Shared {
        conns,
        recorder: Recorder::new(opts.sessions)?,
        schedule,
        mix: opts.mix.clone(),
        t0: Instant::now() + LEAD,
        timeout: opts.timeout,
    });
    let t0 = shared.t0;
    let (queues, inboxes): (Vec<_>, Vec<_>) = sessions.iter().map(|_| unbounded_channel()).unzip();
    let mut tasks = JoinSet::new();
    for (session, inbox) in sessions.into_iter().zip(inboxes) {
        tasks.spawn(drive(session, inbox, shared.clone()));
    }
    let pacer = schedule::start(schedule, t0, queues, stop.clone())
        .context("cannot start the pacer thread")?;
    let cpu = tokio::spawn(sample_cpu(
        opts.cpu_pids.clone(),
        t0 + opts.warmup,
        t0 + opts.warmup + opts.duration,
        stop.clone(),
    ));
    let finished = CancellationToken::new();
    let progress = opts.progress.then(|| {
        tokio::spawn(progress::show(
            shared.recorder.live.clone(),
            t0,
            opts.warmup,
            opts.warmup + opts.duration,
            finished.clone(),
        ))
    });

    let released = pacer.await.context("the pacer thread failed")?;
    while let Some(done) = tasks.join_next().await {
        done.context("a session's task failed")?;
    }
    let stopped_at = Instant::now();
    finished.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let (start, end) = cpu.await.context("the CPU sampler failed")?;

    let interrupted = released < schedule.end();
    let scheduled = released
        .min(schedule.end())
        .saturating_sub(schedule.first_measured());
    let tally = shared.recorder.total()?;
    let phase_start = t0 + opts.warmup;
    let phase_end = match interrupted {
        true => stopped_at.min(t0 + opts.warmup + opts.duration),
        false => t0 + opts.warmup + opts.duration,
    };
    let measured_s = phase_end
        .max(tally.last.unwrap_or(phase_end))
        .saturating_duration_since(phase_start)
        .as_secs_f64();
    let cpu = cpu::CpuReport::between(&start, &end, scheduled);
    Ok(Report::new(
        opts.settings(),
        scheduled,
        &tally,
        measured_s,
        Some(cpu),
        interrupted,
    ))
}

/// Opens every session, a few at a time.
async fn open_sessions(conns: &Connections, opts: &Options) -> anyhow::Result<Vec<Session>> {
    futures_util::stream::iter(0..opts.sessions)
        .map(|i| async move {
            let mut session = Session::new(i, opts.era);
            session
                .open(conns, &opts.mix, Instant::now() + opts.timeout)
                .await
                .with_context(|| format!("cannot open session {i} at {}", opts.url))?;
            Ok::<_, anyhow::Error>(session)
        })
        .buffered(OPEN_AT_ONCE)
        .try_collect()
        .await
}

/// A session's task: each request it is handed, one after another, recorded.
async fn drive(mut session: Session, mut inbox: UnboundedReceiver<u64>, run: Arc<Shared>) {
    while let Some(n) = inbox.recv().await {
        let due = run.t0 + run.schedule.at(n);
        let deadline = due + run.timeout;
        let op = run.mix.op_for(session.index, run.schedule.turn_of(n));
        let started = Instant::now();
        let done = if started >= deadline {
            // Its time ran out while it waited: it counts, unsent, as a timeout.
            Done {
                op,
                due,
                sent: None,
                at: started,
                outcome: Err(Failure::timeout()),
            }
        } else {
            run.recorder.live.sent.fetch_add(1, Ordering::Relaxed);
            let (at, outcome) = session.perform(&run.conns, op, deadline).await;
            Done {
                op,
                due,
                sent: Some(started),
                at,
                outcome,
            }
        };
        run.recorder
            .record(session.index, run.schedule.is_measured(n), &done);
    }
}

/// CPU readings at the start and the end of the measured phase (or when stopped).
async fn sample_cpu(
    pids: Vec<u32>,
    start: Instant,
    end: Instant,
    stop: CancellationToken,
) -> (cpu::Sample, cpu::Sample) {
    tokio::select! {
        _ = tokio::time::sleep_until(start.into()) => {}
        _ = stop.cancelled() => {}
    }
    let first = cpu::sample(&pids);
    tokio::select! {
        _ = tokio::time::sleep_until(end.into()) => {}
        _ = stop.cancelled() => {}
    }
    (first, cpu::sample(&pids))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options of a session-era run at 100 req/s; the hold mode's tests use them too.
    pub(crate) fn options(
        http: HttpVersion,
        sessions: usize,
        connections: Option<usize>,
    ) -> Options {
        Options {
            url: "http://127.0.0.1:8080/mcp".into(),
            era: Era::Session,
            sessions,
            rate: 100.0,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            mix: Mix::default(),
            http,
            connections,
            timeout: Duration::from_secs(1),
            cpu_pids: Vec::new(),
            progress: false,
            trust: None,
            bearer: None,
            label: None,
        }
    }

    #[test]
    fn connections_default_by_version_and_http1_never_has_idle_ones() {
        use HttpVersion::{Http1, Http2};
        assert_eq!(options(Http1, 50, None).connections(), 50);
        assert_eq!(options(Http1, 50, Some(10)).connections(), 10);
        assert_eq!(options(Http1, 5, Some(10)).connections(), 5);
        assert_eq!(options(Http2, 50, None).connections(), 4);
        assert_eq!(options(Http2, 2, None).connections(), 2);
        assert_eq!(options(Http2, 50, Some(8)).connections(), 8);
        assert_eq!(options(Http2, 50, Some(0)).connections(), 1);
    }

    #[test]
    fn eras_parse_strictly() {
        assert_eq!("session".parse(), Ok(Era::Session));
        assert_eq!("stateless".parse(), Ok(Era::Stateless));
        assert!("legacy".parse::<Era>().is_err());
    }
}
