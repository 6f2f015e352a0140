//! The report of a run, as JSON and as Markdown: what was injected, what the clients saw, how
//! long sessions took to answer again after each unplanned fault, what each change moved, and
//! which invariants held.

use crate::Options;
use crate::check::Verdict;
use crate::history::{Call, Fault, History, kind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub scenario: String,
    pub seed: u64,
    pub duration_s: f64,
    pub nodes: usize,
    pub gateways: usize,
    pub sessions: usize,
    pub calls: usize,
    /// Calls by outcome (`value`, `interrupted`, `HTTP 503`, …).
    pub outcomes: BTreeMap<String, usize>,
    /// The same for the calls through a stdio upstream; empty without one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_outcomes: BTreeMap<String, usize>,
    /// Latency of the calls that got their value, in ms.
    pub latency: Spread,
    pub holders: Holders,
    pub faults: Vec<Fault>,
    /// Per unplanned fault: from the fault to each affected session's next value.
    pub recovery: Vec<Recovery>,
    /// The same, pooled over every fault of a kind (`kill -9`, `gateway kill -9`, `freeze`).
    pub recovery_by_kind: BTreeMap<String, Spread>,
    pub verdicts: Vec<Verdict>,
    pub violations: usize,
    /// The timeline's file, next to the report, when it could be drawn.
    pub timeline: Option<String>,
}

/// What the GET holders saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Holders {
    pub sessions: usize,
    /// Progress notifications heard on the standalone streams.
    pub events: usize,
    /// Calls whose notifications went on those streams, and how many were answered.
    pub calls: usize,
    pub answered: usize,
    /// Times a stream was opened again with `Last-Event-ID`.
    pub resumed: usize,
    /// Times a stream could not be opened again, and why (the first few).
    pub refused: usize,
    pub refused_first: Vec<String>,
}

/// Median, p99 and max of a set of times, in ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub median: u64,
    pub p99: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut ms: Vec<u64>) -> Spread {
        ms.sort_unstable();
        let at = |q: f64| {
            let i = ((ms.len() as f64 * q).ceil() as usize).saturating_sub(1);
            ms.get(i.min(ms.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Spread {
            count: ms.len(),
            median: at(0.5),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(0),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    pub fault: String,
    pub at_ms: u64,
    /// Sessions with a call after the fault (before the next one) that got no value or took
    /// over a second, and that got a value again before the next fault.
    pub affected: usize,
    /// From the fault to each affected session's next value.
    pub to_value: Spread,
}

impl Report {
    pub fn new(opts: &Options, history: &History, verdicts: Vec<Verdict>) -> Report {
        let by_outcome = |calls: &[Call]| {
            let mut outcomes = BTreeMap::new();
            for call in calls {
                *outcomes.entry(call.outcome.label()).or_insert(0) += 1;
            }
            outcomes
        };
        let latency = Spread::of(
            history
                .calls
                .iter()
                .filter(|c| c.outcome.value().is_some() && !c.healing)
                .map(|c| c.done_ms.saturating_sub(c.sent_ms))
                .collect(),
        );
        let violations = verdicts.iter().map(|v| v.violations).sum();
        let (recovery, pooled) = recovery(history);
        let recovery_by_kind = pooled
            .into_iter()
            .map(|(kind, times)| (kind, Spread::of(times)))
            .collect();
        let listened = &history.listened;
        let holders = Holders {
            sessions: listened.sessions.len(),
            events: listened.heard.len(),
            calls: listened.calls.len(),
            answered: listened.calls.iter().filter(|c| c.answered).count(),
            resumed: listened.resumed,
            refused: listened.refused.len(),
            refused_first: listened.refused.iter().take(5).cloned().collect(),
        };
        Report {
            command: opts.command.clone(),
            scenario: opts.scenario.clone(),
            seed: opts.seed,
            duration_s: opts.duration.as_secs_f64(),
            nodes: opts.nodes,
            gateways: opts.gateways,
            sessions: history.sessions.len(),
            calls: history.calls.len(),
            outcomes: by_outcome(&history.calls),
            upstream_outcomes: by_outcome(&history.upstream_calls),
            latency,
            holders,
            faults: history.faults.clone(),
            recovery,
            recovery_by_kind,
            verdicts,
            violations,
            timeline: None,
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Chaos run: {} (seed {})\n", self.scenario, self.seed);
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        let _ = writeln!(
            md,
            "{:.0} s, {} nodes at the start and {} gateways{}, {} sessions calling `counter` \
             one call after another, {} calls.\n",
            self.duration_s,
            self.nodes,
            self.gateways,
            if self.gateways > 1 {
                " behind `up`'s front"
            } else {
                ""
            },
            self.sessions,
            self.calls
        );
        if let Some(png) = &self.timeline {
            let _ = writeln!(
                md,
                "![Latency and calls without a value over the run, faults as bands]({png})\n"
            );
        }
        let _ = writeln!(md, "## Invariants\n");
        let _ = writeln!(
            md,
            "| invariant | checked | violations | first counter-example |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for v in &self.verdicts {
            if let Some(why) = &v.not_checked {
                let why = why.replace('|', "\\|");
                let _ = writeln!(md, "| {} | **not checked**: {why} | – | – |", v.invariant);
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                v.invariant,
                v.checked,
                v.violations,
                v.first.as_deref().unwrap_or("–").replace('|', "\\|")
            );
        }
        let count = |kind: &str| self.faults.iter().filter(|f| f.kind == kind).count();
        let leaders = self
            .faults
            .iter()
            .filter(|f| f.kind == kind::KILL && f.target.ends_with("(leader)"))
            .count();
        let _ = writeln!(md, "\n## Faults and changes\n");
        let _ = writeln!(
            md,
            "{} kill -9 of nodes ({} of the Raft leader), {} kill -9 of gateways, {} freezes, \
             {} scale-ups, {} scale-downs, {} store restarts, {} Redis primary kills, {} \
             partitions, {} slow links, {} kill -9 of stdio upstream processes.\n",
            count(kind::KILL),
            leaders,
            count(kind::GATEWAY_KILL),
            count(kind::FREEZE),
            count(kind::SCALE_UP),
            count(kind::SCALE_DOWN),
            count(kind::STORE_RESTART),
            count(kind::REDIS_PRIMARY_KILL),
            count(kind::PARTITION),
            count(kind::SLOW_LINK),
            count(kind::UPSTREAM_KILL)
        );
        let _ = writeln!(
            md,
            "| at | until | kind | target | planned | sessions moved (ideal) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for f in &self.faults {
            let moved = f.moved.map_or("–".to_owned(), |m| {
                format!(
                    "{} of {} ({:.0}%; ideal {:.0}%)",
                    m.sessions,
                    m.of,
                    100.0 * m.sessions as f64 / m.of.max(1) as f64,
                    100.0 * m.ideal
                )
            });
            let _ = writeln!(
                md,
                "| {:.1} s | {:.1} s | {} | {} | {} | {} |",
                f.at_ms as f64 / 1000.0,
                f.until_ms as f64 / 1000.0,
                f.kind,
                f.target,
                if f.planned { "yes" } else { "no" },
                moved
            );
        }
        let _ = writeln!(md, "\n## What the clients saw\n");
        let _ = writeln!(md, "| outcome | calls |");
        let _ = writeln!(md, "|---|---|");
        for (label, n) in &self.outcomes {
            let _ = writeln!(md, "| {label} | {n} |");
        }
        if !self.upstream_outcomes.is_empty() {
            let _ = writeln!(md, "\nCalls of the stdio upstream's `echo`:\n");
            let _ = writeln!(md, "| outcome | calls |");
            let _ = writeln!(md, "|---|---|");
            for (label, n) in &self.upstream_outcomes {
                let _ = writeln!(md, "| {label} | {n} |");
            }
        }
        let _ = writeln!(
            md,
            "\nLatency of answered calls: median {} ms, p99 {} ms, max {} ms ({} calls).\n",
            self.latency.median, self.latency.p99, self.latency.max, self.latency.count
        );
        let h = &self.holders;
        if h.sessions > 0 {
            let _ = writeln!(
                md,
                "GET holders: {} sessions kept their standalone stream open, resuming with \
                 `Last-Event-ID`; {} progress notifications heard, from {} calls of which {} \
                 were answered; the streams were opened again with `Last-Event-ID` {} times, \
                 and could not be {} times.\n",
                h.sessions, h.events, h.calls, h.answered, h.resumed, h.refused
            );
            for why in &h.refused_first {
                let _ = writeln!(md, "- {why}");
            }
            if !h.refused_first.is_empty() {
                let _ = writeln!(md);
            }
        }
        let _ = writeln!(md, "## Recovery after unplanned faults\n");
        let _ = writeln!(
            md,
            "From the fault to each affected session's next value: sessions with a call after \
             the fault (before the next one) that got no value or took over a second.\n"
        );
        let _ = writeln!(
            md,
            "| kind of fault | affected sessions, all faults | median | p99 | max |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for (kind, t) in &self.recovery_by_kind {
            let _ = writeln!(
                md,
                "| {kind} | {} | {} ms | {} ms | {} ms |",
                t.count, t.median, t.p99, t.max
            );
        }
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| fault | at | affected sessions | median | p99 | max |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for r in &self.recovery {
            let _ = writeln!(
                md,
                "| {} | {:.1} s | {} | {} ms | {} ms | {} ms |",
                r.fault,
                r.at_ms as f64 / 1000.0,
                r.affected,
                r.to_value.median,
                r.to_value.p99,
                r.to_value.max
            );
        }
        let _ = writeln!(md, "\n{} violations", self.violations);
        md
    }
}

/// A call slower than this was held up by a fault, not by the load.
const STALL_MS: u64 = 1000;

/// For each unplanned fault: the sessions with a call after it (until the next fault) that
/// failed or stalled, and how long after the fault each got its next value.
fn recovery(history: &History) -> (Vec<Recovery>, BTreeMap<String, Vec<u64>>) {
    // Each session's calls in the order they were sent, once, rather than per fault.
    let mut by_session: Vec<Vec<&Call>> = vec![Vec::new(); history.sessions.len()];
    for call in &history.calls {
        if let Some(calls) = by_session.get_mut(call.session) {
            calls.push(call);
        }
    }
    for calls in &mut by_session {
        calls.sort_by_key(|c| c.sent_ms);
    }
    let mut out = Vec::new();
    let mut pooled: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, fault) in history.faults.iter().enumerate() {
        if fault.planned {
            continue;
        }
        let end = history
            .faults
            .get(k + 1)
            .map_or(u64::MAX, |next| next.at_ms);
        let mut times = Vec::new();
        for calls in &by_session {
            let from = calls.partition_point(|c| c.sent_ms < fault.at_ms);
            let to = calls.partition_point(|c| c.sent_ms < end);
            let window = &calls[from..to.max(from)];
            let hit = |c: &&&Call| {
                c.outcome.value().is_none() || c.done_ms.saturating_sub(c.sent_ms) > STALL_MS
            };
            let Some(first) = window.iter().position(|c| hit(&c)) else {
                continue;
            };
            if let Some(next) = window[first..].iter().find(|c| c.outcome.value().is_some()) {
                times.push(next.done_ms.saturating_sub(fault.at_ms));
            }
        }
        pooled.entry(fault.kind.clone()).or_default().extend(&times);
        out.push(Recovery {
            fault: format!("{} {}", fault.kind, fault.target),
            at_ms: fault.at_ms,
            affected: times.len(),
            to_value: Spread::of(times),
        });
    }
    (out, pooled)
}
