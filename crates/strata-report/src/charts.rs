//! The report's charts: inline SVG drawn with plotters' SVG backend (text stays text,
//! sized by the browser; no font files are read).

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;

/// Series colours (models, or before/after): Tableau 10's first four, readable on white
/// and apart for the common colour-vision deficiencies.
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const MUTED: RGBColor = RGBColor(170, 170, 170);
const THRESHOLD: RGBColor = RGBColor(214, 39, 40);

/// One estimate on an interval chart.
#[derive(Debug, Clone)]
pub struct Point {
    /// The row it is drawn on (a group, a disparity).
    pub row: usize,
    /// Which series (model): its colour and its offset within the row.
    pub series: usize,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
    /// Drawn grey (a group too small to judge).
    pub muted: bool,
}

/// A horizontal interval chart: a row per label, a dot per series with its interval
/// bar, and red ticks at thresholds (a gate's, on its row).
pub struct IntervalChart<'a> {
    pub x_label: &'a str,
    pub rows: &'a [String],
    pub series: usize,
    pub points: &'a [Point],
    /// (row, threshold)
    pub ticks: &'a [(usize, f64)],
}

fn chart_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> ReportError {
    ReportError::Chart(e.to_string())
}

const ROW_HEIGHT: u32 = 26;
const WIDTH: u32 = 720;

/// The range the x axis shows: [0, 1] for values inside it, else padded to the data.
fn x_range(points: &[Point], ticks: &[(usize, f64)]) -> (f64, f64) {
    let mut lo: f64 = 0.0;
    let mut hi: f64 = 1.0;
    for p in points {
        let (a, b) = p.interval.unwrap_or((p.value, p.value));
        lo = lo.min(a.min(p.value));
        hi = hi.max(b.max(p.value));
    }
    for (_, t) in ticks {
        lo = lo.min(*t);
        hi = hi.max(*t);
    }
    if lo < 0.0 || hi > 1.0 {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        (0.0, 1.0)
    }
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart with a row per label (the first on top, at y = n - 1) over `x`: the frame,
/// the x axis, the row labels; `draw` adds the series.
fn rows_chart(
    rows: &[String],
    (lo, hi): (f64, f64),
    x_label: &str,
    draw: impl FnOnce(&mut Chart<'_, '_>, usize) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let n = rows.len().max(1);
    let height = 50 + ROW_HEIGHT * n as u32;
    let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(4) as u32;
    let label_width = (longest * 7 + 16).clamp(60, 320);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_top(8)
            .margin_right(16)
            .x_label_area_size(36)
            .y_label_area_size(label_width)
            .build_cartesian_2d(lo..hi, -0.5..(n as f64 - 0.5))
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .x_desc(x_label)
            .label_style(("sans-serif", 12))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(chart_err)?;
        draw(&mut chart, n)?;
        let style = ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (row, label) in rows.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(lo, (n - 1 - row) as f64));
            root.draw(&Text::new(label.clone(), (x - 8, y), style.clone()))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    Ok(out)
}

/// A short vertical red line on a row: a threshold or a target.
fn tick(chart: &mut Chart<'_, '_>, x: f64, y: f64, half: f64) -> Result<(), ReportError> {
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(x, y - half), (x, y + half)],
            THRESHOLD.stroke_width(3),
        )))
        .map_err(chart_err)?;
    Ok(())
}

impl IntervalChart<'_> {
    pub fn svg(&self) -> Result<String, ReportError> {
        rows_chart(
            self.rows,
            x_range(self.points, self.ticks),
            self.x_label,
            |chart, n| {
                // a row's series side by side around its centre
                let y_of = |row: usize, series: usize| {
                    let spread = 0.5 / self.series.max(1) as f64;
                    let offset = (series as f64 - (self.series as f64 - 1.0) / 2.0) * spread;
                    (n - 1 - row) as f64 - offset
                };
                for (row, t) in self.ticks {
                    tick(chart, *t, (n - 1 - row) as f64, 0.45)?;
                }
                for p in self.points {
                    let colour = if p.muted {
                        MUTED
                    } else {
                        PALETTE[p.series % PALETTE.len()]
                    };
                    let y = y_of(p.row, p.series);
                    if let Some((a, b)) = p.interval {
                        chart
                            .draw_series(std::iter::once(ErrorBar::new_horizontal(
                                y,
                                a,
                                p.value,
                                b,
                                colour.stroke_width(2),
                                8,
                            )))
                            .map_err(chart_err)?;
                    }
                    chart
                        .draw_series(std::iter::once(Circle::new(
                            (p.value, y),
                            4,
                            colour.filled(),
                        )))
                        .map_err(chart_err)?;
                }
                Ok(())
            },
        )
    }
}

/// Representation bars: per stratum, the share before and after curation, and the
/// target as a red tick.
pub struct ShareChart<'a> {
    pub rows: &'a [String],
    pub before: &'a [f64],
    pub after: &'a [f64],
    pub target: &'a [Option<f64>],
}

impl ShareChart<'_> {
    pub fn svg(&self) -> Result<String, ReportError> {
        let hi = self
            .before
            .iter()
            .chain(self.after)
            .copied()
            .chain(self.target.iter().flatten().copied())
            .fold(0.0f64, f64::max)
            .max(0.01)
            * 1.1;
        rows_chart(
            self.rows,
            (0.0, hi.min(1.0)),
            "share of the training split",
            |chart, n| {
                for row in 0..self.rows.len() {
                    let y = (n - 1 - row) as f64;
                    for (k, (v, colour)) in [
                        (self.before[row], PALETTE[0]),
                        (self.after[row], PALETTE[1]),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let top = y + 0.3 - 0.3 * k as f64;
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(0.0, top), (v, top - 0.28)],
                                colour.filled(),
                            )))
                            .map_err(chart_err)?;
                    }
                    if let Some(t) = self.target[row] {
                        tick(chart, t, y, 0.4)?;
                    }
                }
                Ok(())
            },
        )
    }
}
