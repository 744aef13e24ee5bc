//! `--plot FILE.svg`: latency percentiles (left) and deliveries/s (right) against N, one
//! series per level and system, log-log. plotters with its SVG backend only.

use std::path::Path;

use plotters::prelude::*;

use super::stats::RunResult;

/// One latency line of the plot: its label, how to read it from a result, its style.
type LatencySeries = (&'static str, fn(&RunResult) -> f64, ShapeStyle);

/// Enough for both levels against three baselines.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// (level, system) pairs in first-seen order.
fn series(results: &[RunResult]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in results {
        let k = (r.level.clone(), r.system.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Per N: the paced run (else saturated) for latency, the saturated run (else paced) for
/// throughput — the same choice as the JSON summary.
fn pick<'a>(
    results: &'a [RunResult],
    level: &str,
    system: &str,
    latency: bool,
) -> Vec<(usize, &'a RunResult)> {
    let mut ns: Vec<usize> = results
        .iter()
        .filter(|r| r.level == level && r.system == system)
        .map(|r| r.subscribers)
        .collect();
    ns.sort_unstable();
    ns.dedup();
    let (first, second) = if latency {
        ("paced", "saturated")
    } else {
        ("saturated", "paced")
    };
    ns.into_iter()
        .filter_map(|n| {
            let of = |mode: &str| {
                results.iter().find(|r| {
                    r.level == level && r.system == system && r.subscribers == n && r.mode == mode
                })
            };
            of(first).or_else(|| of(second)).map(|r| (n, r))
        })
        .collect()
}

pub fn draw(path: &Path, results: &[RunResult]) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    if results.is_empty() {
        return Err("no results".into());
    }
    let nmax = results.iter().map(|r| r.subscribers).max().unwrap_or(1) as f64;
    let x_range = (0.7..nmax * 1.5).log_scale();
    let lat: Vec<f64> = results
        .iter()
        .flat_map(|r| [r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max])
        .filter(|v| *v > 0.0)
        .collect();
    let lmin = lat.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 1.5;
    let lmax = lat.iter().copied().fold(0.0, f64::max).max(1.0) * 1.5;
    let thr: Vec<f64> = results
        .iter()
        .map(|r| r.deliveries_per_s)
        .filter(|v| *v > 0.0)
        .collect();
    let tmin = thr.iter().copied().fold(f64::INFINITY, f64::min).min(10.0) / 1.5;
    let tmax = thr.iter().copied().fold(0.0, f64::max).max(100.0) * 1.5;

    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(700);
    let all = series(results);

    let mut c = ChartBuilder::on(&left)
        .caption(
            "publish-to-receive latency (paced runs)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.clone(), (lmin..lmax).log_scale())
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("subscribers N")
        .y_desc("ms")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (level, system)) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = pick(results, level, system, true);
        let styles: [LatencySeries; 3] = [
            ("p50", |r| r.latency_ms.p50, color.stroke_width(2)),
            ("p99", |r| r.latency_ms.p99, color.mix(0.7).stroke_width(1)),
            ("max", |r| r.latency_ms.max, color.mix(0.35).stroke_width(1)),
        ];
        for (name, f, style) in styles {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .map(|(n, r)| (*n as f64, f(r)))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            c.draw_series(LineSeries::new(line.clone(), style))
                .map_err(|x| e(&x))?
                .label(format!("{level}/{system} {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            c.draw_series(line.iter().map(|&p| Circle::new(p, 3, style.filled())))
                .map_err(|x| e(&x))?;
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;

    let mut c = ChartBuilder::on(&right)
        .caption("deliveries/s (saturated runs)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, (tmin..tmax).log_scale())
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("subscribers N")
        .y_desc("deliveries/s")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (level, system)) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let line: Vec<(f64, f64)> = pick(results, level, system, false)
            .iter()
            .map(|(n, r)| (*n as f64, r.deliveries_per_s))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        c.draw_series(LineSeries::new(line.clone(), style))
            .map_err(|x| e(&x))?
            .label(format!("{level}/{system}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        c.draw_series(line.iter().map(|&p| Circle::new(p, 3, style.filled())))
            .map_err(|x| e(&x))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
