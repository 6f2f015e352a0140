//! CPU time of the processes under test and of the generator, from `/proc/PID/stat`, read at
//! the start and the end of the measured phase.
//!
//! A process's `stat` totals the user and system time of all its threads (`utime`, `stime`),
//! so one read per process covers a multi-threaded server. The times are in clock ticks of
//! `USER_HZ`, which is part of Linux's ABI: 100 on every architecture, whatever the kernel's
//! own tick rate. Ten milliseconds of resolution is plenty over a measured phase of seconds.

use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second of `/proc`'s times.
const USER_HZ: u64 = 100;

/// What `/proc/PID/stat` says of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The executable's name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    /// User plus system time of all its threads, in milliseconds.
    pub cpu_ms: u64,
}

/// Parses the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    // `pid (comm) state ppid …`: the name may hold spaces and parentheses itself, so it ends
    // at the last `)`.
    let open = text.find('(').ok_or("no '(' before the process name")?;
    let close = text.rfind(')').ok_or("no ')' after the process name")?;
    if close < open {
        return Err("the process name is not enclosed".into());
    }
    let name = text[open + 1..close].to_owned();
    // After the name: state (field 3), ppid (4), … utime (14), stime (15).
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let raw = fields
            .get(n - 3)
            .ok_or_else(|| format!("field {n} is missing"))?;
        raw.parse()
            .map_err(|_| format!("field {n} is not a number: '{raw}'"))
    };
    let ticks = field(14)?.saturating_add(field(15)?);
    Ok(Stat {
        name,
        cpu_ms: ticks.saturating_mul(1000) / USER_HZ,
    })
}

/// Reads one process's `stat`.
pub fn read(pid: u32) -> Result<Stat, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    parse_stat(&text).map_err(|e| format!("/proc/{pid}/stat: {e}"))
}

/// Every watched process's CPU time, and the generator's own, at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub pids: Vec<(u32, Result<Stat, String>)>,
    pub own: Result<Stat, String>,
}

pub fn sample(pids: &[u32]) -> Sample {
    Sample {
        at: Instant::now(),
        pids: pids.iter().map(|pid| (*pid, read(*pid))).collect(),
        own: read(std::process::id()),
    }
}

/// CPU time over the measured phase, per process and per 1,000 requests.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CpuReport {
    /// Seconds between the two readings.
    pub window_s: f64,
    /// The requests the times are divided by: those due in the measured phase.
    pub requests: u64,
    pub processes: Vec<ProcessCpu>,
    /// Over the processes that could be read at both ends.
    pub total_ms: u64,
    pub total_ms_per_1000: Option<f64>,
    /// The generator itself (this process), which shares the machine with what it measures.
    pub generator: ProcessCpu,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessCpu {
    pub pid: u32,
    pub name: String,
    pub cpu_ms: Option<u64>,
    pub ms_per_1000: Option<f64>,
    /// Cores' worth of CPU it used over the window.
    pub cores: Option<f64>,
    /// Why it could not be measured (the process ended, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CpuReport {
    pub fn between(start: &Sample, end: &Sample, requests: u64) -> CpuReport {
        let window_s = end.at.saturating_duration_since(start.at).as_secs_f64();
        let processes: Vec<ProcessCpu> = start
            .pids
            .iter()
            .zip(&end.pids)
            .map(|((pid, a), (_, b))| process(*pid, a, b, window_s, requests))
            .collect();
        let total_ms = processes.iter().filter_map(|p| p.cpu_ms).sum();
        CpuReport {
            window_s,
            requests,
            total_ms,
            total_ms_per_1000: per_1000(total_ms, requests),
            generator: process(std::process::id(), &start.own, &end.own, window_s, requests),
            processes,
        }
    }
}

fn per_1000(ms: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| ms as f64 * 1000.0 / requests as f64)
}

fn process(
    pid: u32,
    start: &Result<Stat, String>,
    end: &Result<Stat, String>,
    window_s: f64,
    requests: u64,
) -> ProcessCpu {
    match (start, end) {
        (Ok(a), Ok(b)) => {
            let ms = b.cpu_ms.saturating_sub(a.cpu_ms);
            ProcessCpu {
                pid,
                name: b.name.clone(),
                cpu_ms: Some(ms),
                ms_per_1000: per_1000(ms, requests),
                cores: (window_s > 0.0).then(|| ms as f64 / 1000.0 / window_s),
                error: None,
            }
        }
        (Err(e), _) | (_, Err(e)) => ProcessCpu {
            pid,
            name: start
                .as_ref()
                .or(end.as_ref())
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            cpu_ms: None,
            ms_per_1000: None,
            cores: None,
            error: Some(e.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const STAT: &str = "4242 (shard gate) (x)) S 1 4242 4242 0 -1 4194560 2087 0 0 0 \
        1234 567 0 0 20 0 9 0 123456 987654321 4321 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17664 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn utime_and_stime_are_read_past_any_name() {
        let stat = parse_stat(STAT).expect("parses");
        assert_eq!(stat.name, "shard gate) (x)");
        // (1234 + 567) ticks of 10 ms.
        assert_eq!(stat.cpu_ms, 18_010);
    }

    #[test]
    fn broken_stat_lines_are_errors() {
        assert!(parse_stat("").is_err());
        assert!(
            parse_stat("12 (name) S 1 2 3")
                .expect_err("short")
                .contains("field 14")
        );
        let bad = STAT.replace(" 1234 ", " x ");
        assert!(parse_stat(&bad).expect_err("bad").contains("not a number"));
    }

    #[test]
    fn this_process_can_be_read() {
        let own = read(std::process::id()).expect("own stat");
        assert!(!own.name.is_empty());
    }

    #[test]
    fn cpu_is_divided_per_1000_requests() {
        let t = Instant::now();
        let stat = |ms| {
            Ok(Stat {
                name: "shardgate".into(),
                cpu_ms: ms,
            })
        };
        let start = Sample {
            at: t,
            pids: vec![(1, stat(1000)), (2, stat(500)), (3, stat(7))],
            own: stat(100),
        };
        let end = Sample {
            at: t + Duration::from_secs(2),
            pids: vec![(1, stat(1600)), (2, stat(700)), (3, Err("gone".into()))],
            own: stat(400),
        };
        let r = CpuReport::between(&start, &end, 2000);
        assert_eq!(r.processes[0].cpu_ms, Some(600));
        assert_eq!(r.processes[0].ms_per_1000, Some(300.0));
        assert_eq!(r.processes[0].cores, Some(0.3));
        assert_eq!(r.processes[2].error.as_deref(), Some("gone"));
        assert_eq!(r.total_ms, 800);
        assert_eq!(r.total_ms_per_1000, Some(400.0));
        assert_eq!(r.generator.cpu_ms, Some(300));
        assert_eq!(CpuReport::between(&start, &end, 0).total_ms_per_1000, None);
    }
}
