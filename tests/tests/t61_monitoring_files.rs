//! The operator-facing monitoring files in `deploy/` against the contract they are written to:
//! the Grafana dashboard is an importable model whose every panel queries something, the
//! dashboard and the Prometheus files name only series in the metrics catalog
//! (`docs/metrics.md`), every alert carries the labels and annotations an operator needs and is
//! shown firing by a unit test, and promtool accepts the rules, runs their unit tests and accepts
//! the scrape configuration. No process is started: the files are checked, not a running
//! cluster, so a series the binaries do not expose yet is still fine here as long as the catalog
//! lists it.

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

const DASHBOARD: &str = "deploy/grafana/shardgate.json";
const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
const CATALOG: &str = "docs/metrics.md";

/// Panel types Grafana ships with: anything else needs a plugin the operator may not have.
const BUILTIN_PANELS: &[&str] = &[
    "row",
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "state-timeline",
    "status-history",
    "heatmap",
    "histogram",
    "piechart",
    "text",
];

/// The suffixes a Prometheus histogram's series carry; the base name alone is no series.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// The workspace root: the monitoring files and the catalog live there, not in this crate.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> anyhow::Result<String> {
    let path = root().join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The catalog: each series' base name and its type (`counter`, `gauge` or `histogram`), from
/// the table rows of `docs/metrics.md` ("| `shardgate_…` | type | …").
fn catalog() -> anyhow::Result<BTreeMap<String, String>> {
    let text = read(CATALOG)?;
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `shardgate_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(kind)) = (cells.get(1), cells.get(2)) else {
            bail!("{CATALOG}: a row without a type: {line}");
        };
        let name = name.trim_matches('`');
        ensure!(
            matches!(*kind, "counter" | "gauge" | "histogram"),
            "{CATALOG}: {name} has type {kind:?}, not counter, gauge or histogram"
        );
        ensure!(
            series.insert(name.to_owned(), kind.to_string()).is_none(),
            "{CATALOG}: {name} is listed twice"
        );
    }
    ensure!(!series.is_empty(), "{CATALOG}: no catalog rows found");
    Ok(series)
}

/// Every `shardgate_…` name in `text`, in queries and in prose alike: a name an operator reads
/// in a description is one they will query. A name starts where no name character precedes it,
/// so `x_shardgate_y` is not taken for `shardgate_y`.
fn series_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("shardgate_") {
        if text[..at].chars().next_back().is_some_and(is_name_char) {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !is_name_char(c))
            .map_or(text.len(), |n| at + n);
        names.insert(text[at..end].to_owned());
    }
    names
}

/// Why `name` is not a series the catalog promises, if it is not: unknown, a histogram's bare
/// base name (Prometheus exposes only its `_bucket`, `_sum` and `_count`, so a query of the base
/// name is silently empty), or a histogram suffix on a counter or a gauge.
fn not_in_catalog(name: &str, catalog: &BTreeMap<String, String>) -> Option<String> {
    if let Some(kind) = catalog.get(name) {
        return (kind == "histogram").then(|| {
            format!("{name} is a histogram: query {name}_bucket, {name}_sum or {name}_count")
        });
    }
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = catalog.get(base)
        {
            return (kind != "histogram")
                .then(|| format!("{name}: {base} is a {kind}, which has no {suffix} series"));
        }
    }
    Some(format!("{name} is not in {CATALOG}"))
}

/// Every panel of the dashboard, rows' collapsed panels included.
fn panels(dashboard: &Value) -> anyhow::Result<Vec<&Value>> {
    fn walk<'a>(list: &'a [Value], out: &mut Vec<&'a Value>) {
        for panel in list {
            out.push(panel);
            if let Some(inner) = panel.get("panels").and_then(Value::as_array) {
                walk(inner, out);
            }
        }
    }
    let top = dashboard
        .get("panels")
        .and_then(Value::as_array)
        .context("the dashboard has no panels array")?;
    let mut all = Vec::new();
    walk(top, &mut all);
    Ok(all)
}

/// Whether `datasource` (a panel's or a target's) is the dashboard's `${datasource}` variable:
/// a hard-coded uid would point at a data source only the author's Grafana has.
fn uses_the_variable(datasource: Option<&Value>) -> bool {
    datasource
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
        .is_some_and(|uid| uid == "${datasource}")
}

/// The alerts of `alerts.yml`, each with the text of its rule (from its `- alert:` line to the
/// next rule or group). The file is YAML and this crate has no YAML parser; promtool parses it
/// for real in `t30`, and this split relies only on each rule starting with `- alert: NAME`.
fn alert_rules(rules: &str) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), String::new()));
        } else if trimmed.starts_with("- name:") || trimmed.starts_with("- record:") {
            alerts.push((String::new(), String::new()));
        } else if let Some((_, text)) = alerts.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    alerts
}

/// promtool from PATH. `scripts/install-test-peers` installs it (Debian's `prometheus`
/// package), so its absence is a broken setup to fix, not a reason to skip.
fn promtool() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .context(
            "promtool is not on PATH: run scripts/install-test-peers as root (it installs \
             Debian's prometheus package, which ships /usr/bin/promtool)",
        )
}

/// Runs promtool in the workspace root; its output on success, else an error with all of it.
fn run_promtool(args: &[&str]) -> anyhow::Result<String> {
    let promtool = promtool()?;
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("running {}", promtool.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "promtool {} failed ({}):\n{stdout}{stderr}",
        args.join(" "),
        out.status
    );
    Ok(format!("{stdout}{stderr}"))
}

#[test]
fn t10_dashboard_panels_have_titles_and_queries() -> anyhow::Result<()> {
    let text = read(DASHBOARD)?;
    let dashboard: Value =
        serde_json::from_str(&text).with_context(|| format!("{DASHBOARD} is not valid JSON"))?;

    let schema = dashboard
        .get("schemaVersion")
        .and_then(Value::as_u64)
        .context("no schemaVersion")?;
    ensure!(
        schema >= 36,
        "schemaVersion {schema}: older models lack the panel types used here"
    );
    let variables = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .context("no templating list")?;
    ensure!(
        variables.iter().any(|v| {
            v.get("name").and_then(Value::as_str) == Some("datasource")
                && v.get("type").and_then(Value::as_str) == Some("datasource")
                && v.get("query").and_then(Value::as_str) == Some("prometheus")
        }),
        "no `datasource` variable choosing a Prometheus data source"
    );

    let panels = panels(&dashboard)?;
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in &panels {
        let title = panel.get("title").and_then(Value::as_str).unwrap_or("");
        ensure!(!title.trim().is_empty(), "a panel without a title: {panel}");
        let kind = panel.get("type").and_then(Value::as_str).unwrap_or("");
        ensure!(
            BUILTIN_PANELS.contains(&kind),
            "{title:?}: panel type {kind:?} is not one Grafana ships with"
        );
        let id = panel
            .get("id")
            .and_then(Value::as_u64)
            .with_context(|| format!("{title:?}: no numeric id"))?;
        ensure!(ids.insert(id), "{title:?}: id {id} is used twice");
        let (x, w) = (
            panel.pointer("/gridPos/x").and_then(Value::as_u64),
            panel.pointer("/gridPos/w").and_then(Value::as_u64),
        );
        let (Some(x), Some(w)) = (x, w) else {
            bail!("{title:?}: no gridPos");
        };
        ensure!(x + w <= 24, "{title:?}: wider than the 24-column grid");
        if kind == "row" {
            continue;
        }
        ensure!(
            uses_the_variable(panel.get("datasource")),
            "{title:?}: its data source is not ${{datasource}}"
        );
        let targets = panel
            .get("targets")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("{title:?}: no targets"))?;
        for target in targets {
            let expr = target.get("expr").and_then(Value::as_str).unwrap_or("");
            ensure!(
                !expr.trim().is_empty(),
                "{title:?}: a target without an expr: {target}"
            );
            ensure!(
                uses_the_variable(target.get("datasource")),
                "{title:?}: the target {expr:?} has a data source other than ${{datasource}}"
            );
            queries += 1;
        }
    }
    println!("{DASHBOARD}: {} panels, {queries} queries", panels.len());
    Ok(())
}

#[test]
fn t20_dashboard_and_rules_use_only_catalog_series() -> anyhow::Result<()> {
    let catalog = catalog()?;
    let mut used = BTreeSet::new();
    let mut wrong = Vec::new();
    for file in [DASHBOARD, RULES, RULE_TESTS, PROMETHEUS] {
        let names = series_names(&read(file)?);
        ensure!(
            file == PROMETHEUS || !names.is_empty(),
            "{file} names no shardgate series: the scan or the file is broken"
        );
        for name in &names {
            if let Some(why) = not_in_catalog(name, &catalog) {
                wrong.push(format!("{file}: {why}"));
            }
            used.insert(name.clone());
        }
    }
    ensure!(
        wrong.is_empty(),
        "series the catalog does not promise:\n{}",
        wrong.join("\n")
    );
    println!(
        "{} names used, all among the catalog's {} series",
        used.len(),
        catalog.len()
    );
    Ok(())
}

#[test]
fn t25_every_alert_has_severity_annotations_and_a_test() -> anyhow::Result<()> {
    let rules = read(RULES)?;
    let tests = read(RULE_TESTS)?;
    let alerts = alert_rules(&rules);
    ensure!(!alerts.is_empty(), "{RULES}: no alerts found");

    // The alerts some unit test expects to fire: an `alertname:` whose `exp_alerts` lists one.
    let mut shown_firing = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim());
        } else if line.starts_with("- eval_time:") {
            current = None;
        } else if line.starts_with("- exp_labels:")
            && let Some(name) = current
        {
            shown_firing.insert(name.to_owned());
        }
    }

    let mut names = BTreeSet::new();
    for (name, rule) in &alerts {
        ensure!(
            names.insert(name.as_str()),
            "{RULES}: {name} is defined twice"
        );
        let field = |key: &str| {
            rule.lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"'))
        };
        let severity = field("severity:");
        ensure!(
            matches!(severity, Some("critical" | "warning")),
            "{RULES}: {name} has severity {severity:?}, not critical or warning"
        );
        for key in ["summary:", "description:", "runbook:"] {
            let value = field(key).unwrap_or("");
            // A block scalar (`|`, `>`) would make the runbook more than the one line an
            // operator reads in the notification.
            ensure!(
                !value.is_empty() && !value.starts_with(['|', '>']),
                "{RULES}: {name} needs a one-line `{key}` annotation"
            );
        }
        ensure!(
            shown_firing.contains(name),
            "{RULE_TESTS}: no test shows {name} firing"
        );
    }
    let unknown: Vec<&String> = shown_firing
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    ensure!(
        unknown.is_empty(),
        "{RULE_TESTS} expects alerts {RULES} does not define: {unknown:?}"
    );
    println!("{} alerts, each with a test that fires it", alerts.len());
    Ok(())
}

#[test]
fn t30_promtool_accepts_the_rules_and_the_config() -> anyhow::Result<()> {
    println!("{}", run_promtool(&["check", "rules", RULES])?);
    // Checks the rule files the configuration loads, too.
    println!("{}", run_promtool(&["check", "config", PROMETHEUS])?);
    Ok(())
}

#[test]
fn t40_alert_unit_tests_pass() -> anyhow::Result<()> {
    println!("{}", run_promtool(&["test", "rules", RULE_TESTS])?);
    Ok(())
}

#[test]
fn t50_name_scan_and_catalog_lookup_behave() -> anyhow::Result<()> {
    // The checks above pass vacuously if the scan finds nothing or the lookup accepts
    // everything, so both are pinned on known inputs here.
    let names = series_names(
        "rate(shardgate_node_takeover_seconds_bucket[5m]) x_shardgate_not_a_name \
         `shardgate_gateway_members`{state=\"down\"} shardgate-gateway",
    );
    let expected: BTreeSet<String> = [
        "shardgate_gateway_members",
        "shardgate_node_takeover_seconds_bucket",
    ]
    .map(String::from)
    .into();
    ensure!(names == expected, "scanned {names:?}");

    let catalog: BTreeMap<String, String> = [
        ("shardgate_node_takeover_seconds", "histogram"),
        ("shardgate_gateway_requests_total", "counter"),
        ("shardgate_node_sessions", "gauge"),
    ]
    .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
    .into();
    for good in [
        "shardgate_node_takeover_seconds_bucket",
        "shardgate_node_takeover_seconds_count",
        "shardgate_gateway_requests_total",
        "shardgate_node_sessions",
    ] {
        ensure!(
            not_in_catalog(good, &catalog).is_none(),
            "{good} refused: {:?}",
            not_in_catalog(good, &catalog)
        );
    }
    for bad in [
        "shardgate_node_takeover_seconds",
        "shardgate_node_sessions_bucket",
        "shardgate_node_no_such_series",
    ] {
        ensure!(not_in_catalog(bad, &catalog).is_some(), "{bad} accepted");
    }
    Ok(())
}
