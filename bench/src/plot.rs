//! Latency against offered load: `shardgate bench plot` reads the JSON of several runs (one per
//! path and rate, as `scripts/bench-sweep` makes them), groups them by their label, and draws
//! p50 and p99 against the offered rate up to saturation, so that where each path stops
//! keeping up is seen at a glance; the same points as a Markdown table for BENCHMARKS.md.

use anyhow::{Context, anyhow, bail};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A run whose achieved rate is below this share of its offered rate did not keep up.
pub const KEPT_UP: f64 = 0.95;
/// Where the labels' font is looked for (Debian's `fonts-dejavu-core`).
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (1400, 850);
/// One colour per label, in the order of the labels (matplotlib's tab10, which tells lines
/// apart in print and for most colour vision).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];
/// The colour of the saturation marks: none of the lines'.
const MARK: RGBColor = RGBColor(214, 39, 40);
/// The legend's column, right of the chart.
const LEGEND_WIDTH: u32 = 300;

/// What a legend's line shows before its text.
enum Key {
    /// A p50 line of this colour.
    Solid(RGBColor),
    /// A p99 line.
    Dashed(RGBColor),
    /// The saturation cross.
    Mark,
    /// Nothing: the line continues the one above.
    Blank,
}

/// The few fields of a report's JSON (`report::Report`) a plot needs: read by name, so that
/// reports of builds without `--label` read too.
#[derive(Deserialize)]
struct RunJson {
    settings: SettingsJson,
    #[serde(default)]
    scheduled: u64,
    offered_rate: f64,
    achieved_rate: f64,
    errors: ErrorsJson,
    latency_ms: Option<LatencyJson>,
}

#[derive(Deserialize)]
struct SettingsJson {
    #[serde(default)]
    label: Option<String>,
    url: String,
}

#[derive(Deserialize)]
struct ErrorsJson {
    total: u64,
}

#[derive(Deserialize)]
struct LatencyJson {
    p50: f64,
    p99: f64,
}

/// One run, as a point of the plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The line it belongs to: the run's `--label`, or its URL when it has none.
    pub label: String,
    /// Requests per second asked for.
    pub offered: f64,
    /// Requests per second completed.
    pub achieved: f64,
    /// Requests due in the measured phase.
    pub scheduled: u64,
    pub errors: u64,
    /// Latency from the due time, ms; `None` when no request completed.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Point {
    /// Whether the path did not keep up with this rate: it completed less than [`KEPT_UP`] of
    /// what was offered, or some requests failed (a saturated server sheds load as errors
    /// before its achieved rate drops).
    pub fn saturated(&self) -> bool {
        self.achieved < KEPT_UP * self.offered || self.errors > 0
    }

    /// The share of the measured requests that failed, in percent.
    pub fn error_percent(&self) -> f64 {
        match self.scheduled {
            0 => 0.0,
            n => self.errors as f64 * 100.0 / n as f64,
        }
    }
}

/// Reads one report written by `shardgate bench --json`.
pub fn read(path: &Path) -> anyhow::Result<Point> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let run: RunJson = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the JSON of a bench run", path.display()))?;
    Ok(Point {
        label: run.settings.label.unwrap_or(run.settings.url),
        offered: run.offered_rate,
        achieved: run.achieved_rate,
        scheduled: run.scheduled,
        errors: run.errors.total,
        p50: run.latency_ms.as_ref().map(|l| l.p50),
        p99: run.latency_ms.as_ref().map(|l| l.p99),
    })
}

/// Reads every report named: files, and directories for each `*.json` directly inside them
/// (in name order), so that a sweep's directory can be given whole.
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for path in paths {
        if !path.is_dir() {
            points.push(read(path)?);
            continue;
        }
        let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", path.display()))?;
        inside.retain(|p| p.extension().is_some_and(|e| e == "json") && p.is_file());
        inside.sort();
        for p in inside {
            points.push(read(&p)?);
        }
    }
    if points.is_empty() {
        bail!("no bench run to plot");
    }
    Ok(points)
}

/// The points by label (in label order), each line's by offered rate.
pub fn lines(points: &[Point]) -> BTreeMap<&str, Vec<&Point>> {
    let mut by: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        by.entry(p.label.as_str()).or_default().push(p);
    }
    for line in by.values_mut() {
        line.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    }
    by
}

/// The points as a Markdown table: a line's rows together, by offered rate.
pub fn markdown(points: &[Point]) -> String {
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
    let mut out = crate::report::markdown_header(&[
        "path",
        "offered req/s",
        "achieved req/s",
        "errors",
        "p50 ms",
        "p99 ms",
        "saturated",
    ]);
    for (label, line) in lines(points) {
        for p in line {
            let errors = match p.errors {
                0 => "0".to_owned(),
                n => format!("{n} ({:.2}%)", p.error_percent()),
            };
            let _ = writeln!(
                out,
                "| {label} | {:.0} | {:.1} | {errors} | {} | {} | {} |",
                p.offered,
                p.achieved,
                ms(p.p50),
                ms(p.p99),
                if p.saturated() { "yes" } else { "" }
            );
        }
    }
    out
}

/// Loads the labels' font once, for every plot of the process (the chaos timeline's too);
/// says why not when there is none.
pub fn font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or_else(|| format!("no font for the labels (looked for {FONTS:?})"))?;
            register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| "the labels' font cannot be read".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A latency tick of the logarithmic axis, without the float noise of its powers of ten.
fn ms_tick(v: &f64) -> String {
    let text = match *v {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.3}"),
    };
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    }
}

/// Draws p50 (solid) and p99 (dashed) latency against offered rate to `path` (a PNG), one
/// colour per label, a cross on every saturated run, and that run's achieved rate next to it.
/// The latency axis is logarithmic.
pub fn draw(points: &[Point], path: &Path) -> anyhow::Result<()> {
    font()?;
    let lines = lines(points);
    let latencies = points.iter().flat_map(|p| [p.p50, p.p99]).flatten();
    let (lo, hi) = latencies
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(None, |range: Option<(f64, f64)>, v| match range {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
        .ok_or_else(|| anyhow!("no run completed a request: there is no latency to draw"))?;
    // The bottom just below the power of ten under the lowest point, so that the axis starts
    // with a labelled tick; room above the highest; two decades at least.
    let lo = 10f64.powf(lo.log10().floor()) * 0.9;
    let hi = (hi * 1.5).max(lo * 100.0);
    let right = points.iter().map(|p| p.offered).fold(0.0, f64::max) * 1.08;
    let right = if right > 0.0 { right } else { 1.0 };
    let plot = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the plot: {e}");

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot)?;
    let area = root
        .margin(10, 0, 0, 0)
        .titled(
            "Latency against offered load (open loop)",
            ("sans-serif", 26),
        )
        .map_err(plot)?;
    // The legend beside the chart, not on it: wherever it sat on the chart, some sweep's
    // lines would run under it.
    let (area, side) = area.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..right, (lo..hi).log_scale())
        .map_err(plot)?;
    chart
        .configure_mesh()
        .x_desc("offered load, requests per second")
        .y_desc("latency from the scheduled send time, ms (log)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&ms_tick)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot)?;

    let mut legend = Vec::new();
    for (i, (label, line)) in lines.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let p50: Vec<(f64, f64)> = line
            .iter()
            .filter_map(|p| Some((p.offered, p.p50?)))
            .collect();
        let p99: Vec<(f64, f64)> = line
            .iter()
            .filter_map(|p| Some((p.offered, p.p99?)))
            .collect();
        chart
            .draw_series(LineSeries::new(p50.iter().copied(), c.stroke_width(2)).point_size(3))
            .map_err(plot)?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.iter().copied(),
                8,
                5,
                c.stroke_width(2),
            ))
            .map_err(plot)?;
        chart
            .draw_series(p99.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(plot)?;
        legend.push((Key::Solid(c), format!("{label} p50")));
        legend.push((Key::Dashed(c), format!("{label} p99")));
    }

    // The saturated runs: a cross on each of its two points (at the top when nothing
    // completed), and what it achieved.
    let saturated: Vec<&Point> = points.iter().filter(|p| p.saturated()).collect();
    let at = |v: Option<f64>| v.unwrap_or(hi / 1.2);
    chart
        .draw_series(saturated.iter().flat_map(|p| {
            [p.p50, p.p99]
                .into_iter()
                .map(|v| Cross::new((p.offered, at(v)), 7, MARK.stroke_width(3)))
        }))
        .map_err(plot)?;
    chart
        .draw_series(saturated.iter().map(|p| {
            let mut note = format!("{} achieved {:.0}/s", p.label, p.achieved);
            if p.errors > 0 {
                let _ = write!(note, ", {:.1}% errors", p.error_percent());
            }
            // Above the cross, on the side with room: the left half's to its right, the right
            // half's (the chart's edge) to its left.
            let (h, dx) = match p.offered < right / 2.0 {
                true => (HPos::Left, 10),
                false => (HPos::Right, -10),
            };
            let style = ("sans-serif", 15)
                .into_font()
                .color(&MARK)
                .pos(Pos::new(h, VPos::Bottom));
            EmptyElement::at((p.offered, at(p.p99))) + Text::new(note, (dx, -8), style)
        }))
        .map_err(plot)?;
    if !saturated.is_empty() {
        legend.push((Key::Mark, "saturated: achieved below".to_owned()));
        legend.push((
            Key::Blank,
            format!("{:.0}% of offered, or errors", KEPT_UP * 100.0),
        ));
    }

    let text = ("sans-serif", 17)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (x0, x1) = (10, 46);
    for (row, (key, name)) in (0i32..).zip(&legend) {
        let y = 60 + 28 * row;
        match *key {
            Key::Solid(c) => {
                side.draw(&PathElement::new(vec![(x0, y), (x1, y)], c.stroke_width(3)))
            }
            Key::Dashed(c) => side.draw(&DashedPathElement::new(
                vec![(x0, y), (x1, y)],
                8,
                5,
                c.stroke_width(3),
            )),
            Key::Mark => side.draw(&Cross::new(((x0 + x1) / 2, y), 7, MARK.stroke_width(3))),
            Key::Blank => Ok(()),
        }
        .map_err(plot)?;
        side.draw(&Text::new(name.as_str(), (x1 + 12, y), text.clone()))
            .map_err(plot)?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report;
    use crate::mix::Op;
    use crate::record::{Done, Recorder};
    use crate::report::Settings;
    use std::time::{Duration, Instant};

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "shardgate-bench-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A real report of `completed` answers of 1 to 3 ms out of `rate` due over a second.
    fn report(label: Option<&str>, rate: u64, completed: u64) -> Report {
        let r = Recorder::new(1).expect("recorder");
        let t = Instant::now();
        for i in 0..completed {
            r.record(
                0,
                true,
                &Done {
                    op: Op::Echo,
                    due: t,
                    sent: Some(t),
                    at: t + Duration::from_micros(1000 + i % 2000),
                    outcome: Ok(()),
                },
            );
        }
        let settings = Settings {
            label: label.map(str::to_owned),
            url: "http://127.0.0.1:8080/mcp".into(),
            era: "session".into(),
            http: "HTTP/1.1".into(),
            sessions: 1,
            connections: 1,
            rate: rate as f64,
            duration_s: 1.0,
            warmup_s: 0.0,
            timeout_s: 10.0,
            mix: "echo=1".into(),
            cpu_pids: vec![],
        };
        Report::new(settings, rate, &r.total().expect("total"), 1.0, None, false)
    }

    fn write(dir: &Path, name: &str, report: &Report) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, report.json().expect("json")).expect("write");
        path
    }

    #[test]
    fn two_reports_make_a_png() {
        let dir = TempDir::new("plot");
        let runs = [
            write(&dir.0, "a.json", &report(Some("gateway"), 1000, 1000)),
            write(&dir.0, "b.json", &report(Some("gateway"), 2000, 1500)),
        ];
        let points = read_all(&runs).expect("read");
        let png = dir.0.join("latency.png");
        draw(&points, &png).expect("draw");
        let bytes = std::fs::read(&png).expect("the PNG is there");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }

    #[test]
    fn a_directory_reads_as_its_json_files_and_a_report_without_label_by_its_url() {
        let dir = TempDir::new("read");
        write(&dir.0, "node-2000.json", &report(Some("node"), 2000, 2000));
        write(&dir.0, "old.json", &report(None, 1000, 1000));
        std::fs::write(dir.0.join("notes.txt"), "not a run").expect("write");
        let points = read_all(std::slice::from_ref(&dir.0)).expect("read");
        let labels: Vec<&str> = points.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["node", "http://127.0.0.1:8080/mcp"]);
        assert_eq!(points[0].offered, 2000.0);
        assert!(points[0].p50.is_some_and(|v| (1.0..=3.0).contains(&v)));
        assert!(read_all(&[dir.0.join("notes.txt")]).is_err());
    }

    fn point(label: &str, offered: f64, achieved: f64, errors: u64) -> Point {
        Point {
            label: label.into(),
            offered,
            achieved,
            scheduled: offered as u64,
            errors,
            p50: Some(1.0),
            p99: Some(2.0),
        }
    }

    #[test]
    fn latency_ticks_read_plainly() {
        let ticks: Vec<String> = [0.1, 0.2 + 0.1, 1.0, 2.5, 10.0, 1000.0]
            .iter()
            .map(ms_tick)
            .collect();
        assert_eq!(ticks, ["0.1", "0.3", "1", "2.5", "10", "1000"]);
    }

    #[test]
    fn saturation_is_falling_behind_or_failing() {
        assert!(!point("a", 1000.0, 960.0, 0).saturated());
        assert!(point("a", 1000.0, 940.0, 0).saturated());
        assert!(point("a", 1000.0, 1000.0, 1).saturated());
    }

    #[test]
    fn the_table_groups_by_label_and_sorts_by_rate() {
        let md = markdown(&[
            point("nginx", 2000.0, 2000.0, 0),
            point("gateway", 4000.0, 3000.0, 40),
            point("gateway", 2000.0, 2000.0, 0),
        ]);
        let rows: Vec<&str> = md.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| gateway | 2000 | 2000.0 | 0 | 1.000 | 2.000 |  |",
                "| gateway | 4000 | 3000.0 | 40 (1.00%) | 1.000 | 2.000 | yes |",
                "| nginx | 2000 | 2000.0 | 0 | 1.000 | 2.000 |  |",
            ]
        );
    }
}
