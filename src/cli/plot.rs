//! SVG charts for `weir report`, drawn with plotters.

use plotters::prelude::*;
use std::path::Path;
use weir_sim::compare::{ModelFigures, Percentiles};

const WIDTH: u32 = 820;
const HEIGHT: u32 = 420;
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn label(f: &ModelFigures) -> String {
    format!("{}: {} ({})", f.job, f.model, f.schedule)
}

/// Latency percentiles (p50, p99, p99.9, max) of each model and schedule, one line each, on a
/// logarithmic axis.
pub fn latency(figures: &[ModelFigures], caption: &str, path: &Path) -> Result<(), String> {
    let measured: Vec<(&ModelFigures, &Percentiles)> = figures
        .iter()
        .filter_map(|f| Some((f, f.latency_ms.as_ref()?)))
        .collect();
    let points = |l: &Percentiles| {
        [l.p50, l.p99, l.p999, l.max]
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v.max(1) as f64))
            .collect::<Vec<_>>()
    };
    let top = measured
        .iter()
        .map(|(_, l)| l.max.max(1))
        .max()
        .unwrap_or(1) as f64;
    let bottom = measured
        .iter()
        .map(|(_, l)| l.p50.max(1))
        .min()
        .unwrap_or(1) as f64;
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.2f64..3.2f64, (bottom / 2.0..top * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            match x.round() as i64 {
                0 => "p50",
                1 => "p99",
                2 => "p99.9",
                3 => "max",
                _ => "",
            }
            .to_string()
        })
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (f, l)) in measured.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points(l), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label(f))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points(l)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// One horizontal bar per model and schedule: `value` of each, labelled in `unit`.
pub fn bars(
    figures: &[ModelFigures],
    title: &str,
    unit: &str,
    value: impl Fn(&ModelFigures) -> f64,
    path: &Path,
) -> Result<(), String> {
    let top = figures.iter().map(&value).fold(1.0f64, f64::max);
    let n = figures.len().max(1) as i32;
    // The last segment of a segmented range is the end value's own: stop one short of it.
    let root = SVGBackend::new(path, (WIDTH, 60 + 44 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..top * 1.15, (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = figures.iter().map(label).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(figures.iter().enumerate().map(|(i, f)| {
            let i = i as i32;
            let color = COLORS[i as usize % COLORS.len()];
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (value(f), SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
