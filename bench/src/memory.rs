//! Resident memory of the processes under test, from `/proc/PID/status`, and the report of a
//! `--hold-streams` run built from its readings.
//!
//! `VmRSS` is what the process has in RAM now: the heap it touched and did not give back, its
//! stacks, the mapped pages of its binary. It is what a host pays for, and what an allocator
//! that keeps freed memory keeps high, which is why a run reads it once more after the streams
//! closed. Differences between readings are divided by the sessions or streams that caused
//! them, so one run gives bytes per session and per held stream.

use serde::Serialize;
use std::fmt::Write;

/// `/proc/PID/status` counts in kB of 1,024 bytes.
const KIB: u64 = 1024;

/// What `/proc/PID/status` says of a process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The executable's name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    /// The resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Parses the text of `/proc/PID/status`: its `Name:` and `VmRSS:` lines.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    let name = field("Name").ok_or("no Name line")?.to_owned();
    // A kernel thread has no VmRSS line: it has no memory of its own to measure.
    let rss = field("VmRSS").ok_or("no VmRSS line (a kernel thread?)")?;
    let kb = rss
        .strip_suffix("kB")
        .map(str::trim)
        .ok_or_else(|| format!("VmRSS is not in kB: '{rss}'"))?;
    let kb: u64 = kb
        .parse()
        .map_err(|_| format!("VmRSS is not a number: '{rss}'"))?;
    Ok(Status {
        name,
        rss_bytes: kb.saturating_mul(KIB),
    })
}

/// Reads one process's `status`.
pub fn read(pid: u32) -> Result<Status, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    parse_status(&text).map_err(|e| format!("/proc/{pid}/status: {e}"))
}

/// Every watched process's memory, and the generator's own, at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub pids: Vec<(u32, Result<Status, String>)>,
    pub own: Result<Status, String>,
}

pub fn sample(pids: &[u32]) -> Sample {
    Sample {
        pids: pids.iter().map(|pid| (*pid, read(*pid))).collect(),
        own: read(std::process::id()),
    }
}

/// The readings of a run, in its order.
#[derive(Clone, Debug)]
pub struct Readings {
    /// Before anything was opened.
    pub before: Sample,
    /// With the connections open, before any session.
    pub connected: Sample,
    /// With every session open.
    pub sessions: Sample,
    /// With every session's GET stream held open as well.
    pub held: Sample,
    /// After the streams closed (the sessions still open).
    pub closed: Sample,
}

/// What a `--hold-streams` run was asked to do.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HoldSettings {
    pub url: String,
    pub era: String,
    pub http: String,
    pub sessions: usize,
    pub connections: usize,
    pub timeout_s: f64,
    /// The pause before each reading after the first.
    pub settle_s: f64,
    pub cpu_pids: Vec<u32>,
}

/// The result of a `--hold-streams` run: `memory` is the part of interest, the settings say
/// how it was made.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryReport {
    pub settings: HoldSettings,
    pub memory: Memory,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Memory {
    pub connections: usize,
    pub sessions: usize,
    /// Streams held at once: one per session.
    pub streams: usize,
    /// Streams the server ended while they were held; the figures are short by as many.
    pub streams_ended_early: usize,
    pub processes: Vec<ProcessMemory>,
    /// The generator itself (this process), which shares the machine with what it measures.
    pub generator: ProcessMemory,
}

/// One process's resident set at each reading, in bytes, and what the differences come to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessMemory {
    pub pid: u32,
    pub name: String,
    pub rss_before: Option<u64>,
    pub rss_connected: Option<u64>,
    pub rss_sessions: Option<u64>,
    pub rss_held: Option<u64>,
    pub rss_closed: Option<u64>,
    /// (connected - before) / connections.
    pub bytes_per_connection: Option<f64>,
    /// (sessions - connected) / sessions.
    pub bytes_per_session: Option<f64>,
    /// (held - sessions) / streams.
    pub bytes_per_stream: Option<f64>,
    /// closed / sessions: 1.0 when closing the streams gave back all they took, held / sessions
    /// when it gave back nothing.
    pub after_close_ratio: Option<f64>,
    /// Why a reading is missing (the process ended, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Memory {
    /// The processes under test, each with no note.
    fn processes(&self) -> impl Iterator<Item = (&ProcessMemory, &'static str)> {
        self.processes.iter().map(|p| (p, ""))
    }
}

impl MemoryReport {
    pub fn new(settings: HoldSettings, readings: &Readings, streams_ended_early: usize) -> Self {
        let (connections, sessions) = (settings.connections, settings.sessions);
        let at = |i: usize, s: &Sample| s.pids.get(i).map(|(_, r)| r.clone());
        let processes = readings
            .before
            .pids
            .iter()
            .enumerate()
            .map(|(i, (pid, _))| {
                let [a, b, c, d, e] = [
                    &readings.before,
                    &readings.connected,
                    &readings.sessions,
                    &readings.held,
                    &readings.closed,
                ]
                .map(|s| at(i, s).unwrap_or_else(|| Err("not read".into())));
                process(*pid, [a, b, c, d, e], connections, sessions)
            })
            .collect();
        let own = [
            &readings.before,
            &readings.connected,
            &readings.sessions,
            &readings.held,
            &readings.closed,
        ]
        .map(|s| s.own.clone());
        MemoryReport {
            memory: Memory {
                connections,
                sessions,
                streams: sessions,
                streams_ended_early,
                processes,
                generator: process(std::process::id(), own, connections, sessions),
            },
            settings,
        }
    }

    /// The summary for people: the readings, then what they come to.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let m = &self.memory;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "shardgate bench --hold-streams: {} ({} era, {}, {} sessions on {} connections)",
            s.url, s.era, s.http, s.sessions, s.connections
        );
        let _ = writeln!(
            out,
            "RSS in MiB: before; with the connections; the sessions; their {} GET streams held; \
             after the streams closed, once the RSS stopped falling ({} s settle before each \
             but the first)",
            m.streams, s.settle_s
        );
        let _ = writeln!(
            out,
            "  {:<WHO$} {:>8} {:>9} {:>8} {:>8} {:>8}",
            "", "before", "connected", "sessions", "held", "closed"
        );
        for (p, note) in m.processes().chain([(&m.generator, " (generator)")]) {
            let _ = writeln!(out, "  {}", rss_line(p, note));
        }
        let _ = writeln!(
            out,
            "bytes per connection, per session, per held stream; the ratio of RSS after the streams closed to RSS before they opened:"
        );
        let _ = writeln!(
            out,
            "  {:<WHO$} {:>8} {:>9} {:>8} {:>8}",
            "", "conn", "session", "stream", "ratio"
        );
        for (p, note) in m.processes().chain([(&m.generator, " (generator)")]) {
            let _ = writeln!(out, "  {}", per_line(p, note));
        }
        if m.streams_ended_early > 0 {
            let _ = writeln!(
                out,
                "WARNING: the server ended {} of the {} streams while they were held: the held figures are short",
                m.streams_ended_early, m.streams
            );
        }
        out
    }

    /// The Markdown table's header and separator lines.
    pub fn markdown_header() -> String {
        crate::report::markdown_header(&[
            "process",
            "HTTP",
            "sessions",
            "conns",
            "RSS before MiB",
            "connected",
            "sessions",
            "held",
            "closed",
            "B/conn",
            "B/session",
            "B/stream",
            "closed/sessions",
        ])
    }

    /// One row per process under test.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = MemoryReport::markdown_header();
        for p in &self.memory.processes {
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name,
                p.pid,
                s.http,
                s.sessions,
                s.connections,
                mib(p.rss_before),
                mib(p.rss_connected),
                mib(p.rss_sessions),
                mib(p.rss_held),
                mib(p.rss_closed),
                bytes(p.bytes_per_connection),
                bytes(p.bytes_per_session),
                bytes(p.bytes_per_stream),
                ratio(p.after_close_ratio),
            );
        }
        out
    }

    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// One process's figures from its five readings.
fn process(
    pid: u32,
    readings: [Result<Status, String>; 5],
    connections: usize,
    sessions: usize,
) -> ProcessMemory {
    let name = readings
        .iter()
        .find_map(|r| r.as_ref().ok().map(|s| s.name.clone()))
        .unwrap_or_default();
    let error = readings.iter().find_map(|r| r.as_ref().err().cloned());
    let [before, connected, with_sessions, held, closed] =
        readings.map(|r| r.ok().map(|s| s.rss_bytes));
    let per = |from: Option<u64>, to: Option<u64>, count: usize| {
        let (from, to) = (from?, to?);
        (count > 0).then(|| (to as f64 - from as f64) / count as f64)
    };
    ProcessMemory {
        pid,
        name,
        rss_before: before,
        rss_connected: connected,
        rss_sessions: with_sessions,
        rss_held: held,
        rss_closed: closed,
        bytes_per_connection: per(before, connected, connections),
        bytes_per_session: per(connected, with_sessions, sessions),
        bytes_per_stream: per(with_sessions, held, sessions),
        after_close_ratio: match (with_sessions, closed) {
            (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
            _ => None,
        },
        error,
    }
}

/// Width of the process column of the summary.
const WHO: usize = 32;

fn who(p: &ProcessMemory, note: &str) -> String {
    format!("pid {} {}{note}", p.pid, p.name)
}

fn rss_line(p: &ProcessMemory, note: &str) -> String {
    let mut line = format!(
        "{:<WHO$} {:>8} {:>9} {:>8} {:>8} {:>8}",
        who(p, note),
        mib(p.rss_before),
        mib(p.rss_connected),
        mib(p.rss_sessions),
        mib(p.rss_held),
        mib(p.rss_closed),
    );
    if let Some(e) = &p.error {
        let _ = write!(line, "  (not measured: {e})");
    }
    line
}

fn per_line(p: &ProcessMemory, note: &str) -> String {
    format!(
        "{:<WHO$} {:>8} {:>9} {:>8} {:>8}",
        who(p, note),
        bytes(p.bytes_per_connection),
        bytes(p.bytes_per_session),
        bytes(p.bytes_per_stream),
        ratio(p.after_close_ratio),
    )
}

fn mib(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| {
        format!("{:.1}", v as f64 / (KIB * KIB) as f64)
    })
}

fn bytes(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tshardgate\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Pid:\t4242\nPPid:\t1\nVmPeak:\t  123456 kB\nVmSize:\t  120000 kB\nVmHWM:\t   20480 kB\n\
        VmRSS:\t   16384 kB\nRssAnon:\t    8192 kB\nThreads:\t9\n";

    #[test]
    fn vm_rss_is_read_in_bytes_and_not_mistaken_for_its_neighbours() {
        let s = parse_status(STATUS).expect("parses");
        assert_eq!(s.name, "shardgate");
        assert_eq!(s.rss_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn broken_status_texts_are_errors() {
        assert!(parse_status("").is_err());
        let kernel = "Name:\tkthreadd\nState:\tS (sleeping)\nPid:\t2\n";
        assert!(
            parse_status(kernel)
                .expect_err("no VmRSS")
                .contains("VmRSS")
        );
        let pages = STATUS.replace("16384 kB", "16384 pages");
        assert!(parse_status(&pages).expect_err("unit").contains("kB"));
        let junk = STATUS.replace("16384 kB", "x kB");
        assert!(
            parse_status(&junk)
                .expect_err("number")
                .contains("not a number")
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let own = read(std::process::id()).expect("own status");
        assert!(own.rss_bytes > 0);
    }

    fn status(mib: u64) -> Result<Status, String> {
        Ok(Status {
            name: "shardgate".into(),
            rss_bytes: mib * 1024 * 1024,
        })
    }

    fn at(pids: Vec<(u32, Result<Status, String>)>) -> Sample {
        Sample {
            pids,
            own: status(5),
        }
    }

    fn report() -> MemoryReport {
        let settings = HoldSettings {
            url: "http://127.0.0.1:8080/mcp".into(),
            era: "session".into(),
            http: "HTTP/1.1".into(),
            sessions: 1024,
            connections: 1024,
            timeout_s: 10.0,
            settle_s: 2.0,
            cpu_pids: vec![1, 2],
        };
        let readings = Readings {
            before: at(vec![(1, status(16)), (2, status(20))]),
            connected: at(vec![(1, status(17)), (2, status(20))]),
            sessions: at(vec![(1, status(18)), (2, status(22))]),
            held: at(vec![(1, status(46)), (2, status(23))]),
            closed: at(vec![(1, status(45)), (2, Err("gone".into()))]),
        };
        MemoryReport::new(settings, &readings, 0)
    }

    #[test]
    fn differences_are_divided_by_what_caused_them() {
        let r = report();
        let gw = &r.memory.processes[0];
        assert_eq!(gw.bytes_per_connection, Some(1024.0));
        assert_eq!(gw.bytes_per_session, Some(1024.0));
        assert_eq!(gw.bytes_per_stream, Some(28.0 * 1024.0));
        assert_eq!(gw.after_close_ratio, Some(2.5));
        assert_eq!(gw.error, None);
        let node = &r.memory.processes[1];
        assert_eq!(node.bytes_per_session, Some(2048.0));
        assert_eq!(node.rss_closed, None);
        assert_eq!(node.after_close_ratio, None);
        assert_eq!(node.error.as_deref(), Some("gone"));
        assert_eq!(r.memory.generator.bytes_per_stream, Some(0.0));
    }

    #[test]
    fn the_summary_markdown_and_json_carry_the_figures() {
        let r = report();
        let text = r.summary();
        assert!(text.contains("1024 sessions on 1024 connections"), "{text}");
        assert!(text.contains("28672"), "{text}");
        assert!(text.contains("not measured: gone"), "{text}");
        let md = r.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4);
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])), "{md}");
        let v: serde_json::Value = serde_json::from_str(&r.json().expect("json")).expect("parses");
        assert_eq!(v["memory"]["processes"][0]["bytes_per_stream"], 28672.0);
        assert_eq!(v["memory"]["processes"][0]["rss_before"], 16 * 1024 * 1024);
        assert_eq!(v["settings"]["sessions"], 1024);
    }
}
