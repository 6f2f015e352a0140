//! The run as a picture: `timeline.png`, the latency of the calls that got their value and the
//! calls that did not, over the run, with every fault and change drawn as a band across both.

use crate::history::{History, kind};
use anyhow::{Context, anyhow};
use plotters::prelude::*;
use std::path::Path;

/// The width of one point of the curves.
const BUCKET_MS: u64 = 250;
const SIZE: (u32, u32) = (1600, 900);

/// The colour of a fault's band.
fn colour(kind_of: &str) -> RGBColor {
    match kind_of {
        kind::KILL => RGBColor(214, 39, 40),
        kind::GATEWAY_KILL => RGBColor(148, 103, 189),
        kind::FREEZE => RGBColor(31, 119, 180),
        kind::SCALE_UP | kind::SCALE_DOWN => RGBColor(44, 160, 44),
        kind::PARTITION => RGBColor(140, 86, 75),
        kind::SLOW_LINK => RGBColor(227, 119, 194),
        kind::UPSTREAM_KILL => RGBColor(188, 189, 34),
        _ => RGBColor(255, 127, 14),
    }
}

/// Per bucket of [`BUCKET_MS`]: the median and the highest latency of the calls that got their
/// value, and how many calls got none.
struct Buckets {
    median: Vec<(f64, f64)>,
    max: Vec<(f64, f64)>,
    failed: Vec<(f64, u32)>,
}

fn buckets(history: &History, end_ms: u64) -> Buckets {
    let n = usize::try_from(end_ms / BUCKET_MS + 1).unwrap_or(0);
    let mut took: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut failed = vec![0u32; n];
    for call in history.calls.iter().filter(|c| !c.healing) {
        let Some(i) = usize::try_from(call.sent_ms / BUCKET_MS)
            .ok()
            .filter(|&i| i < n)
        else {
            continue;
        };
        match call.outcome.value() {
            Some(_) => took[i].push(call.done_ms.saturating_sub(call.sent_ms)),
            None => failed[i] += 1,
        }
    }
    let at = |i: usize| (i as u64 * BUCKET_MS) as f64 / 1000.0;
    let mut out = Buckets {
        median: Vec::new(),
        max: Vec::new(),
        failed: Vec::new(),
    };
    for (i, mut t) in took.into_iter().enumerate() {
        out.failed.push((at(i), failed[i]));
        if t.is_empty() {
            continue;
        }
        t.sort_unstable();
        // At least a millisecond: the scale is logarithmic.
        out.median.push((at(i), t[t.len() / 2].max(1) as f64));
        out.max.push((at(i), t[t.len() - 1].max(1) as f64));
    }
    out
}

/// Draws the timeline of `history` (a run of `duration_s` seconds) to `path`.
pub fn draw(history: &History, duration_s: f64, path: &Path) -> anyhow::Result<()> {
    shardgate_bench::plot::font()?;
    let end_ms = history
        .calls
        .iter()
        .filter(|c| !c.healing)
        .map(|c| c.done_ms)
        .chain(history.faults.iter().map(|f| f.until_ms))
        .max()
        .unwrap_or(0)
        .max((duration_s * 1000.0) as u64);
    let end_s = end_ms as f64 / 1000.0;
    let b = buckets(history, end_ms);
    let top_ms = b.max.iter().map(|p| p.1).fold(10.0, f64::max) * 1.5;
    let top_failed = b.failed.iter().map(|p| p.1).max().unwrap_or(0).max(1) + 1;
    let plot = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the timeline: {e}");

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot)?;
    let (upper, lower) = root.split_vertically(SIZE.1 * 3 / 5);
    let bands = |y0: f64, y1: f64| {
        history.faults.iter().map(move |f| {
            let (a, z) = (f.at_ms as f64 / 1000.0, f.until_ms as f64 / 1000.0);
            // An instant fault (a kill) still shows: a band of at least a quarter second.
            let z = z.max(a + 0.25);
            Rectangle::new([(a, y0), (z, y1)], colour(&f.kind).mix(0.25).filled())
        })
    };

    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "Calls that got their value: latency per quarter second (median, highest)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, (1f64..top_ms).log_scale())
        .map_err(plot)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc("latency, ms")
        .draw()
        .map_err(plot)?;
    chart.draw_series(bands(1.0, top_ms)).map_err(plot)?;
    chart
        .draw_series(LineSeries::new(
            b.max.iter().copied(),
            RGBColor(160, 160, 160),
        ))
        .map_err(plot)?
        .label("highest")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(160, 160, 160)));
    chart
        .draw_series(LineSeries::new(b.median.iter().copied(), BLUE))
        .map_err(plot)?
        .label("median")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    for (name, kinds) in [
        ("node kill -9", &[kind::KILL][..]),
        ("gateway kill -9", &[kind::GATEWAY_KILL][..]),
        ("freeze", &[kind::FREEZE][..]),
        ("scale up / down", &[kind::SCALE_UP, kind::SCALE_DOWN][..]),
        ("partition", &[kind::PARTITION][..]),
        ("slow link", &[kind::SLOW_LINK][..]),
        ("stdio upstream kill -9", &[kind::UPSTREAM_KILL][..]),
        (
            "store fault",
            &[kind::STORE_RESTART, kind::REDIS_PRIMARY_KILL][..],
        ),
    ] {
        if history
            .faults
            .iter()
            .any(|f| kinds.contains(&f.kind.as_str()))
        {
            let c = colour(kinds[0]);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(plot)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 20, y + 6)], c.mix(0.4).filled())
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot)?;

    let mut chart = ChartBuilder::on(&lower)
        .caption(
            "Calls without a value (errors, interruptions, given up) per quarter second",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, 0u32..top_failed)
        .map_err(plot)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc("calls")
        .draw()
        .map_err(plot)?;
    chart
        .draw_series(history.faults.iter().map(|f| {
            let (a, z) = (f.at_ms as f64 / 1000.0, f.until_ms as f64 / 1000.0);
            let z = z.max(a + 0.25);
            Rectangle::new(
                [(a, 0), (z, top_failed)],
                colour(&f.kind).mix(0.25).filled(),
            )
        }))
        .map_err(plot)?;
    let width = BUCKET_MS as f64 / 1000.0;
    chart
        .draw_series(
            b.failed
                .iter()
                .filter(|p| p.1 > 0)
                .map(|&(x, n)| Rectangle::new([(x, 0), (x + width, n)], RED.filled())),
        )
        .map_err(plot)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
