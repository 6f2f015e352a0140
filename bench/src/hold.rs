//! `--hold-streams`: what a session and an idle GET stream cost the processes under test in
//! memory. No rate is offered; the run opens things and reads every process's RSS after each
//! step (`memory.rs`):
//!
//! 1. before anything;
//! 2. with the connections open;
//! 3. with `--sessions` session-era sessions open (`initialize`, `notifications/initialized`);
//! 4. with every session's standalone GET stream open at once, each read to its first event
//!    and then read on as an idle client would;
//! 5. after every stream closed, the sessions still open, once the RSS stopped falling.
//!
//! Each reading after the first follows a [`SETTLE`] pause; the last one then waits, for at
//! most [`GIVING_BACK`], until no process has given back more than a hundredth of its RSS for
//! a few seconds: an allocator that returns freed memory to the system in the background does
//! so over seconds. Over HTTP/1.1 a held stream takes
//! its connection for as long as it is open, so there is one connection per session, and the
//! stream goes on its session's; closing the stream closes that connection. Over HTTP/2 the
//! streams share the connections, each carrying at most the gateway's default of concurrent
//! streams per connection: when `--connections` is not given, enough are opened; fewer are
//! refused, naming how many are needed.
//!
//! A server allocates an HTTP/1.1 connection's buffers at its first request, so over HTTP/1.1
//! they count in the sessions' step, not the connections'. Freed memory is mostly kept by the
//! allocator and reused by the next run, so each run wants a freshly started server.

use crate::client::{Connections, HttpVersion, Target};
use crate::memory::{self, HoldSettings, MemoryReport, Readings, Sample};
use crate::session::Session;
use crate::{Era, H2_CONNECTIONS, OPEN_AT_ONCE, Options, open_sessions};
use anyhow::{Context, bail};
use shardgate_protocol::listener::ListenerLimits;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

/// The pause before each reading after the first: what the step started (tasks, handshakes,
/// store writes) has finished, and what it freed is freed.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How long the reading after the streams closed waits at most for the RSS to stop falling.
pub const GIVING_BACK: Duration = Duration::from_secs(30);
/// How long the RSS must hold still for the reading after the streams closed.
const STILL: Duration = Duration::from_secs(6);
/// HTTP/2 streams a gateway lets one client connection have open at once, by default
/// (`shardgate gateway --max-concurrent-streams`). A stream beyond it would wait, unopened.
const STREAMS_PER_H2_CONNECTION: usize = ListenerLimits::CLIENT.max_concurrent_streams as usize;
/// Descriptors needed besides the connections: stdio, the runtime's, the files read.
const SPARE_DESCRIPTORS: u64 = 64;

/// Runs the readings and reports. `stop` abandons the run (nothing is reported).
pub async fn run(opts: Options, stop: CancellationToken) -> anyhow::Result<MemoryReport> {
    check(&opts)?;
    let connections = connections(&opts).map_err(anyhow::Error::msg)?;
    raise_descriptors(connections as u64 + SPARE_DESCRIPTORS)?;
    for pid in &opts.cpu_pids {
        memory::read(*pid).map_err(anyhow::Error::msg)?;
    }
    let target = Target::resolve(&opts.url).await?;
    let conns = Connections::new(target, opts.http, connections, opts.trust.as_ref())?
        .with_bearer(opts.bearer.as_deref())?;
    let (readings, ended_early) = tokio::select! {
        measured = measure(&conns, connections, &opts) => measured?,
        _ = stop.cancelled() => bail!("interrupted"),
    };
    Ok(MemoryReport::new(
        settings(&opts, connections),
        &readings,
        ended_early,
    ))
}

/// What the mode cannot do, refused before anything is opened.
fn check(opts: &Options) -> anyhow::Result<()> {
    if opts.era != Era::Session {
        bail!(
            "--hold-streams measures sessions and their standalone GET streams, which only the \
             session era has: use --era session"
        );
    }
    if opts.cpu_pids.is_empty() {
        bail!("--hold-streams reads the memory of the processes named by --cpu-pid: name one");
    }
    if opts.sessions == 0 {
        bail!("--hold-streams needs at least one session");
    }
    if opts.timeout.is_zero() {
        bail!("the timeout must be above 0");
    }
    Ok(())
}

/// The connections to open: one per session over HTTP/1.1, enough for every stream at once
/// over HTTP/2 and HTTP/3 (the gateway's stream limit holds for both).
fn connections(opts: &Options) -> Result<usize, String> {
    let sessions = opts.sessions.max(1);
    match (opts.http, opts.connections) {
        (HttpVersion::Http1, Some(c)) if c < sessions => Err(format!(
            "--hold-streams over HTTP/1.1 needs one connection per session (a held stream takes \
             its connection): --connections {c} is fewer than --sessions {sessions}; leave \
             --connections out"
        )),
        (HttpVersion::Http1, _) => Ok(sessions),
        (HttpVersion::Http2 | HttpVersion::Http3, connections) => {
            let needed = sessions.div_ceil(STREAMS_PER_H2_CONNECTION);
            match connections {
                Some(c) if c < needed => Err(format!(
                    "--hold-streams over HTTP/2: {sessions} streams at most \
                     {STREAMS_PER_H2_CONNECTION} to a connection (the gateway's default \
                     --max-concurrent-streams) need {needed} connections, not {c}: use \
                     --connections {needed} or more, or leave it out"
                )),
                Some(c) => Ok(c),
                None => Ok(needed.max(sessions.min(H2_CONNECTIONS))),
            }
        }
    }
}

/// Raises this process's soft limit of open descriptors to its hard limit (every connection
/// is one, and over HTTP/1.1 there is one per session); fails when even that is too low.
fn raise_descriptors(needed: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open files limit")?;
    let soft = match soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        true => hard,
        false => soft,
    };
    if soft < needed {
        bail!(
            "--hold-streams needs {needed} open files (its connections and \
             {SPARE_DESCRIPTORS} more) but may open only {soft} (hard limit {hard}): raise the \
             limit (`ulimit -Hn`, systemd's LimitNOFILE), or hold fewer sessions"
        );
    }
    Ok(())
}

fn settings(opts: &Options, connections: usize) -> HoldSettings {
    HoldSettings {
        url: opts.url.clone(),
        era: opts.era.to_string(),
        http: opts.http.to_string(),
        sessions: opts.sessions,
        connections,
        timeout_s: opts.timeout.as_secs_f64(),
        settle_s: SETTLE.as_secs_f64(),
        cpu_pids: opts.cpu_pids.clone(),
    }
}

/// The five readings, and how many streams the server ended while they were held.
async fn measure(
    conns: &Connections,
    connections: usize,
    opts: &Options,
) -> anyhow::Result<(Readings, usize)> {
    let pids = &opts.cpu_pids;
    let before = memory::sample(pids);
    step(opts, format_args!("opening {connections} connections"));
    conns.open_all().await?;
    let connected = settled(pids).await;
    step(opts, format_args!("opening {} sessions", opts.sessions));
    let sessions = open_sessions(conns, opts).await?;
    let with_sessions = settled(pids).await;
    step(opts, format_args!("holding {} GET streams", sessions.len()));
    let (held, ended_early) = hold_streams(conns, &sessions, opts).await?;
    step(opts, format_args!("streams closed"));
    let closed = given_back(pids).await;
    let readings = Readings {
        before,
        connected,
        sessions: with_sessions,
        held,
        closed,
    };
    Ok((readings, ended_early))
}

/// A reading after the [`SETTLE`] pause.
async fn settled(pids: &[u32]) -> Sample {
    tokio::time::sleep(SETTLE).await;
    memory::sample(pids)
}

/// A reading after the [`SETTLE`] pause, once no process's RSS has fallen by more than a
/// hundredth for [`STILL`] (or [`GIVING_BACK`] has passed): an allocator that gives memory
/// back from a background thread does it in steps, seconds apart.
async fn given_back(pids: &[u32]) -> Sample {
    let deadline = Instant::now() + GIVING_BACK;
    let mut last = settled(pids).await;
    let mut reference = last.clone();
    let mut fell_at = Instant::now();
    while Instant::now() < deadline && fell_at.elapsed() < STILL {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = memory::sample(pids);
        let fell = reference
            .pids
            .iter()
            .zip(&last.pids)
            .any(|((_, before), (_, after))| match (before, after) {
                (Ok(before), Ok(after)) => after.rss_bytes * 100 < before.rss_bytes * 99,
                _ => false,
            });
        if fell {
            reference = last.clone();
            fell_at = Instant::now();
        }
    }
    last
}

/// Where the run is, on stderr, when a progress line was asked for: opening thousands of
/// sessions and streams takes a while.
fn step(opts: &Options, what: std::fmt::Arguments<'_>) {
    if opts.progress {
        eprintln!("hold-streams: {what}");
    }
}

/// Opens every session's GET stream, a few at a time, keeps them all open until a reading
/// was taken with all of them held, then closes them all at once. The reading, and how many
/// streams the server ended before that.
async fn hold_streams(
    conns: &Connections,
    sessions: &[Session],
    opts: &Options,
) -> anyhow::Result<(Sample, usize)> {
    let opening = Semaphore::new(OPEN_AT_ONCE);
    let release = CancellationToken::new();
    let (opened_tx, mut opened) = unbounded_channel();
    // `join_all` takes every future now, so the channel closes once they have all ended.
    let streams = futures_util::future::join_all(
        sessions
            .iter()
            .map(|session| hold_one(session, conns, opts, &opening, &release, opened_tx.clone())),
    );
    drop(opened_tx);
    let reading = async {
        let all = all_opened(&mut opened, sessions.len()).await;
        let sample = match all {
            Ok(()) => Ok(settled(&opts.cpu_pids).await),
            Err(e) => Err(e),
        };
        release.cancel();
        sample
    };
    let (still_open, sample) = tokio::join!(streams, reading);
    let ended_early = still_open.iter().filter(|open| !**open).count();
    Ok((sample?, ended_early))
}

/// One session's stream: opened when a turn to open is free, then read until `release`.
/// False when the server ended it first.
async fn hold_one(
    session: &Session,
    conns: &Connections,
    opts: &Options,
    opening: &Semaphore,
    release: &CancellationToken,
    opened: UnboundedSender<anyhow::Result<()>>,
) -> bool {
    let held = {
        let Ok(_turn) = opening.acquire().await else {
            return true;
        };
        if release.is_cancelled() {
            return true;
        }
        session
            .hold_stream(conns, Instant::now() + opts.timeout)
            .await
            .with_context(|| {
                format!(
                    "cannot hold session {}'s GET stream{}",
                    session.index,
                    stall_hint(opts.http)
                )
            })
    };
    match held {
        Ok(mut stream) => {
            let _ = opened.send(Ok(()));
            stream.idle(release).await
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            true
        }
    }
}

/// Over HTTP/2 and HTTP/3, a stream beyond the gateway's limit of streams per connection waits unopened
/// until it times out: when the gateway was given a lower limit than its default, say so.
fn stall_hint(version: HttpVersion) -> String {
    match version {
        HttpVersion::Http1 => String::new(),
        HttpVersion::Http2 | HttpVersion::Http3 => format!(
            " (if it timed out: a gateway allowing fewer than {STREAMS_PER_H2_CONNECTION} streams \
             per connection holds the rest back; give more --connections)"
        ),
    }
}

/// Waits for word that each of `count` streams opened; the first failure instead.
async fn all_opened(
    opened: &mut UnboundedReceiver<anyhow::Result<()>>,
    count: usize,
) -> anyhow::Result<()> {
    for _ in 0..count {
        opened
            .recv()
            .await
            .context("a stream's task ended without word")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run's options, with a process to read the memory of.
    fn options(http: HttpVersion, sessions: usize, connections: Option<usize>) -> Options {
        Options {
            cpu_pids: vec![1],
            ..crate::tests::options(http, sessions, connections)
        }
    }

    #[test]
    fn http1_holds_a_connection_per_session_and_refuses_fewer() {
        use HttpVersion::Http1;
        assert_eq!(connections(&options(Http1, 2000, None)), Ok(2000));
        assert_eq!(connections(&options(Http1, 2000, Some(5000))), Ok(2000));
        let refused = connections(&options(Http1, 2000, Some(100))).expect_err("too few");
        assert!(refused.contains("one connection per session"), "{refused}");
    }

    #[test]
    fn http2_opens_enough_connections_for_every_stream_and_refuses_fewer() {
        use HttpVersion::Http2;
        assert_eq!(STREAMS_PER_H2_CONNECTION, 256);
        assert_eq!(connections(&options(Http2, 2, None)), Ok(2));
        assert_eq!(connections(&options(Http2, 2000, None)), Ok(8));
        assert_eq!(connections(&options(Http2, 10_000, None)), Ok(40));
        assert_eq!(connections(&options(Http2, 10_000, Some(40))), Ok(40));
        assert_eq!(connections(&options(Http2, 10_001, Some(64))), Ok(64));
        let refused = connections(&options(Http2, 10_000, Some(39))).expect_err("too few");
        assert!(refused.contains("need 40 connections"), "{refused}");
    }

    #[test]
    fn the_stateless_era_and_no_process_are_refused() {
        let mut stateless = options(HttpVersion::Http1, 10, None);
        stateless.era = Era::Stateless;
        let e = check(&stateless).expect_err("stateless");
        assert!(e.to_string().contains("--era session"), "{e}");
        let mut nobody = options(HttpVersion::Http1, 10, None);
        nobody.cpu_pids.clear();
        let e = check(&nobody).expect_err("no pid");
        assert!(e.to_string().contains("--cpu-pid"), "{e}");
        assert!(check(&options(HttpVersion::Http2, 10, None)).is_ok());
    }

    #[test]
    fn the_descriptor_limit_is_raised_or_the_shortfall_named() {
        assert!(raise_descriptors(16).is_ok());
        let e = raise_descriptors(u64::MAX).expect_err("beyond any limit");
        assert!(e.to_string().contains("open files"), "{e}");
    }
}
