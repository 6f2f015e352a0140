//! The result of a run: for people (a summary), for BENCHMARKS.md (a Markdown table) and for
//! programs (JSON with the full percentile set and the settings).

use crate::cpu::CpuReport;
use crate::mix::Op;
use crate::record::Tally;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The percentiles of the JSON's full set.
const PERCENTILES: [f64; 17] = [
    0.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9,
    99.99,
];

/// What the run was asked to do.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Settings {
    /// What was measured (`--label`): the line a plot of many runs draws this one on. `null`
    /// when not given.
    pub label: Option<String>,
    pub url: String,
    pub era: String,
    pub http: String,
    pub sessions: usize,
    pub connections: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_s: f64,
    pub mix: String,
    pub cpu_pids: Vec<u32>,
}

/// Latency in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
    /// The full set, `[percentile, ms]`, ending with 100 (the max).
    pub percentiles: Vec<(f64, f64)>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    /// `None` when nothing was recorded.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let at = |p: f64| ms(h.value_at_percentile(p));
        // The histogram's max is its bucket's highest value, as every percentile is: never
        // below one of them.
        let max = ms(h.max().max(h.value_at_percentile(100.0)));
        let mut percentiles: Vec<(f64, f64)> = PERCENTILES.iter().map(|p| (*p, at(*p))).collect();
        percentiles.push((100.0, max));
        Some(Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p99_9: at(99.9),
            max,
            percentiles,
        })
    }
}

/// Errors of one kind.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ErrorKindReport {
    pub count: u64,
    /// What the first one said.
    pub first: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, ErrorKindReport>,
}

/// One operation of the mix.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpReport {
    pub completed: u64,
    pub errors: u64,
    pub latency_ms: Option<Latency>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub settings: Settings,
    /// Requests due in the measured phase (fewer only when the run was interrupted).
    pub scheduled: u64,
    /// Measured requests answered successfully.
    pub completed: u64,
    pub errors: Errors,
    /// Requests per second asked for.
    pub offered_rate: f64,
    /// Measured requests completed per second, over the measured phase, stretched to the last
    /// answer if that came later.
    pub achieved_rate: f64,
    /// Seconds of that stretch.
    pub measured_s: f64,
    /// From each request's due time to its answer, successful requests only.
    pub latency_ms: Option<Latency>,
    /// From each request's due time to the moment its session started it: the part of the
    /// latency spent waiting for the session's previous request, or for the generator.
    pub start_lag_ms: Option<Latency>,
    pub by_op: BTreeMap<String, OpReport>,
    pub cpu: Option<CpuReport>,
    /// Whether the run was stopped before its end (Ctrl-C).
    pub interrupted: bool,
}

impl Report {
    pub fn new(
        settings: Settings,
        scheduled: u64,
        tally: &Tally,
        measured_s: f64,
        cpu: Option<CpuReport>,
        interrupted: bool,
    ) -> Report {
        let completed = tally.completed();
        let by_kind: BTreeMap<String, ErrorKindReport> = tally
            .errors
            .iter()
            .map(|(kind, e)| {
                (
                    kind.to_string(),
                    ErrorKindReport {
                        count: e.count,
                        first: e.first.clone(),
                    },
                )
            })
            .collect();
        let by_op = Op::ALL
            .into_iter()
            .filter_map(|op| {
                let h = tally.by_op.get(op.index())?;
                let errors = tally.errors_by_op[op.index()];
                (h.len() + errors > 0).then(|| {
                    (
                        op.name().to_owned(),
                        OpReport {
                            completed: h.len(),
                            errors,
                            latency_ms: Latency::of(h),
                        },
                    )
                })
            })
            .collect();
        Report {
            offered_rate: settings.rate,
            achieved_rate: if measured_s > 0.0 {
                completed as f64 / measured_s
            } else {
                0.0
            },
            settings,
            scheduled,
            completed,
            errors: Errors {
                total: tally.failed(),
                by_kind,
            },
            measured_s,
            latency_ms: Latency::of(&tally.latency),
            start_lag_ms: Latency::of(&tally.send_lag),
            by_op,
            cpu,
            interrupted,
        }
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "shardgate bench: {} ({} era, {}, {} sessions on {} connections)",
            s.url, s.era, s.http, s.sessions, s.connections
        );
        let _ = writeln!(
            out,
            "mix {}; warm-up {} s, measured {} s, timeout {} s{}",
            s.mix,
            s.warmup_s,
            s.duration_s,
            s.timeout_s,
            if self.interrupted {
                "; INTERRUPTED"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "offered   {:.1} req/s   achieved {:.1} req/s",
            self.offered_rate, self.achieved_rate
        );
        let _ = writeln!(
            out,
            "scheduled {}   completed {}   errors {}",
            self.scheduled, self.completed, self.errors.total
        );
        match &self.latency_ms {
            Some(l) => {
                let _ = writeln!(out, "latency from the scheduled send time (ms):");
                let _ = writeln!(out, "  {}", line(l));
            }
            None => {
                let _ = writeln!(out, "latency: no request completed");
            }
        }
        for (name, op) in &self.by_op {
            let _ = writeln!(
                out,
                "  {name:<8} {:>8} ok {:>6} errors  {}",
                op.completed,
                op.errors,
                op.latency_ms.as_ref().map(short).unwrap_or_default()
            );
        }
        if let Some(lag) = &self.start_lag_ms {
            let _ = writeln!(
                out,
                "start lag (ms, due → started): p50 {:.3}  p99 {:.3}  max {:.3}",
                lag.p50, lag.p99, lag.max
            );
        }
        for (kind, e) in &self.errors.by_kind {
            let _ = writeln!(out, "error {kind}: {} (first: {})", e.count, e.first);
        }
        if let Some(cpu) = &self.cpu {
            let _ = writeln!(
                out,
                "CPU over the measured phase ({:.1} s, {} requests due), ms per 1,000 requests:",
                cpu.window_s, cpu.requests
            );
            for p in &cpu.processes {
                let _ = writeln!(out, "  {}", cpu_line(p));
            }
            if !cpu.processes.is_empty() {
                let _ = writeln!(out, "  total        {}", per_1000(cpu.total_ms_per_1000));
            }
            let _ = writeln!(out, "  {} (the generator)", cpu_line(&cpu.generator));
        }
        out
    }

    /// The Markdown table's header and separator lines.
    pub fn markdown_header() -> String {
        markdown_header(&[
            "era",
            "HTTP",
            "sessions",
            "conns",
            "mix",
            "offered/s",
            "achieved/s",
            "completed",
            "errors",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "CPU ms/1k req",
        ])
    }

    /// This run as a row of that table.
    pub fn markdown_row(&self) -> String {
        let s = &self.settings;
        let l = self.latency_ms.as_ref();
        let p = |f: fn(&Latency) -> f64| l.map_or("–".into(), |l| format!("{:.3}", f(l)));
        let cpu = self
            .cpu
            .as_ref()
            .and_then(|c| c.total_ms_per_1000)
            .map_or("–".into(), |v| format!("{v:.1}"));
        format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.era,
            s.http,
            s.sessions,
            s.connections,
            s.mix,
            self.offered_rate,
            self.achieved_rate,
            self.completed,
            self.errors.total,
            p(|l| l.p50),
            p(|l| l.p90),
            p(|l| l.p99),
            p(|l| l.p99_9),
            p(|l| l.max),
            cpu
        )
    }

    pub fn markdown(&self) -> String {
        Report::markdown_header() + &self.markdown_row()
    }

    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

fn line(l: &Latency) -> String {
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (min {:.3}, mean {:.3})",
        l.p50, l.p90, l.p99, l.p99_9, l.max, l.min, l.mean
    )
}

fn short(l: &Latency) -> String {
    format!("p50 {:.3}  p99 {:.3}  max {:.3}", l.p50, l.p99, l.max)
}

fn per_1000(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn cpu_line(p: &crate::cpu::ProcessCpu) -> String {
    match &p.error {
        Some(e) => format!("pid {} {}: not measured ({e})", p.pid, p.name),
        None => format!(
            "pid {} {:<10} {} ({} ms, {:.2} cores)",
            p.pid,
            p.name,
            per_1000(p.ms_per_1000),
            p.cpu_ms.unwrap_or_default(),
            p.cores.unwrap_or_default()
        ),
    }
}

/// A Markdown table's header line for `cols`, and its separator line.
pub fn markdown_header(cols: &[&str]) -> String {
    format!(
        "| {} |\n|{}|\n",
        cols.join(" | "),
        vec!["---"; cols.len()].join("|")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Done, Failure, Recorder};
    use std::time::{Duration, Instant};

    fn settings() -> Settings {
        Settings {
            label: None,
            url: "http://127.0.0.1:8080/mcp".into(),
            era: "session".into(),
            http: "HTTP/1.1".into(),
            sessions: 2,
            connections: 2,
            rate: 100.0,
            duration_s: 1.0,
            warmup_s: 0.0,
            timeout_s: 10.0,
            mix: "echo=1,list=1".into(),
            cpu_pids: vec![],
        }
    }

    fn report() -> Report {
        let r = Recorder::new(2).expect("recorder");
        let t = Instant::now();
        for i in 1..=99u64 {
            let op = if i % 2 == 0 { Op::Echo } else { Op::List };
            r.record(
                0,
                true,
                &Done {
                    op,
                    due: t,
                    sent: Some(t),
                    at: t + Duration::from_micros(i * 100),
                    outcome: Ok(()),
                },
            );
        }
        let timeout = Done {
            op: Op::Echo,
            due: t,
            sent: None,
            at: t,
            outcome: Err(Failure::timeout()),
        };
        r.record(1, true, &timeout);
        Report::new(
            settings(),
            100,
            &r.total().expect("total"),
            1.0,
            None,
            false,
        )
    }

    #[test]
    fn percentiles_come_out_in_order_in_milliseconds() {
        let r = report();
        let l = r.latency_ms.clone().expect("latency");
        assert_eq!(l.min, 0.1);
        // The histogram keeps 3 significant figures.
        assert!((l.max - 9.9).abs() < 0.01, "{}", l.max);
        assert!((l.p50 - 5.0).abs() < 0.01, "{}", l.p50);
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
        assert!(l.percentiles.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(l.percentiles.last(), Some(&(100.0, l.max)));
        assert_eq!((r.scheduled, r.completed, r.errors.total), (100, 99, 1));
        assert_eq!(r.by_op["echo"].completed, 49);
        assert_eq!(r.by_op["echo"].errors, 1);
        assert_eq!(r.by_op["list"].completed, 50);
        assert_eq!(r.achieved_rate, 99.0);
    }

    #[test]
    fn the_summary_names_rates_percentiles_and_errors() {
        let text = report().summary();
        assert!(
            text.contains("offered   100.0 req/s   achieved 99.0 req/s"),
            "{text}"
        );
        assert!(
            text.contains("scheduled 100   completed 99   errors 1"),
            "{text}"
        );
        assert!(text.contains("p99.9 "), "{text}");
        assert!(text.contains("error timeout: 1"), "{text}");
    }

    #[test]
    fn the_markdown_row_fits_its_header() {
        let r = report();
        let md = r.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 3);
        let cells = |l: &str| l.matches('|').count();
        assert_eq!(cells(lines[0]), cells(lines[1]));
        assert_eq!(cells(lines[0]), cells(lines[2]));
        assert!(
            lines[2].starts_with(
                "| session | HTTP/1.1 | 2 | 2 | echo=1,list=1 | 100 | 99.0 | 99 | 1 |"
            ),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn the_json_has_the_settings_and_the_named_percentiles() {
        let v: serde_json::Value =
            serde_json::from_str(&report().json().expect("json")).expect("parses");
        assert_eq!(v["settings"]["rate"], 100.0);
        assert_eq!(v["settings"]["mix"], "echo=1,list=1");
        assert!(v["latency_ms"]["p99.9"].is_number());
        assert_eq!(v["errors"]["by_kind"]["timeout"]["count"], 1);
        assert_eq!(v["latency_ms"]["percentiles"][0][0], 0.0);
    }
}
