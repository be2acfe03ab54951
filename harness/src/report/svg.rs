//! Chart geometry as plain data: scales, ticks, polyline points and legend rows, computed here so
//! that `reports/templates/macros.html.j2` only has to place shapes. Nothing in this file knows
//! about runs or cells; [`super::charts`] turns a run into [`ChartSpec`]s.

use serde::Serialize;

/// Colour-blind-safe palette (Okabe–Ito), most distinct first; yellow is left out (unreadable on
/// white).
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// Dash patterns for series that share a colour.
const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10; values ≤ 0 are dropped (they have no place on a log axis).
    Log,
}

/// One data point; `lo`/`hi` draw a whisker (e.g. median ± MAD).
#[derive(Debug, Clone)]
pub struct DataPoint {
    pub x: f64,
    pub y: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Tooltip (SVG `<title>`).
    pub title: String,
    /// Draw a warning ring: the point disagrees with what it should be (a formula).
    pub alert: bool,
}

#[derive(Debug, Clone)]
pub struct SeriesData {
    pub label: String,
    pub color: usize,
    pub dash: usize,
    /// Join the points with a line (formulas, curves) or only mark them (measurements).
    pub line: bool,
    pub markers: bool,
    /// Draw it faded: its numbers are not what the chart measures (vCPUs that took turns).
    pub muted: bool,
    pub points: Vec<DataPoint>,
}

/// What a chart shows, before layout.
#[derive(Debug, Clone)]
pub struct ChartSpec {
    pub id: String,
    pub title: String,
    /// Always shown: `kvm`, `tcg`, `metal` (or several, joined).
    pub accel: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    /// Start the linear y axis at zero (latencies, ops/s) rather than at the data's minimum.
    pub y_from_zero: bool,
    pub series: Vec<SeriesData>,
    /// A line under the chart: what was left out, how points were pooled.
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub id: String,
    pub title: String,
    /// The title as drawn: one line, or two when it would run into the accelerator badge
    /// (broken at a ` · `, each line cut with `…` only if it still does not fit).
    pub title_lines: Vec<TextLine>,
    /// Baseline of the `y vs x` line under the title.
    pub subtitle_y: f64,
    pub accel: String,
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub series: Vec<SeriesGeom>,
    pub legend: Vec<LegendItem>,
    pub note: String,
    /// True when no series had a drawable point (the template says so instead of drawing axes).
    pub empty: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextLine {
    pub y: f64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub right: f64,
    pub bottom: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub pos: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesGeom {
    pub color: &'static str,
    pub dash: &'static str,
    pub muted: bool,
    /// `x,y x,y …` for a `<polyline>`; empty when the series is markers only.
    pub points: String,
    pub markers: Vec<Marker>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub x: f64,
    pub y: f64,
    pub y_lo: Option<f64>,
    pub y_hi: Option<f64>,
    pub title: String,
    pub alert: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegendItem {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub color: &'static str,
    pub dash: &'static str,
    pub muted: bool,
    pub line: bool,
    pub marker: bool,
}

const WIDTH: f64 = 420.0;
const MARGIN_LEFT: f64 = 58.0;
const MARGIN_RIGHT: f64 = 14.0;
/// Title and subtitle lines start at 15 and are this far apart; the plot starts 11 below the
/// last (40 with a one-line title).
const LINE: f64 = 14.0;
const TEXT_X: f64 = 8.0;
/// Space kept between the title and the accelerator badge.
const BADGE_GAP: f64 = 12.0;
const PLOT_H: f64 = 190.0;
const AXIS_LABEL_SPACE: f64 = 42.0;
const LEGEND_ROW: f64 = 15.0;
/// Legend columns: two when labels are short enough to share the plot's width.
fn legend_cols(series: &[SeriesData]) -> usize {
    if series.iter().all(|s| s.label.chars().count() <= 28) {
        2
    } else {
        1
    }
}

/// An axis: the value domain and how it maps into pixels.
#[derive(Debug, Clone, Copy)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Axis {
    fn map(&self, v: f64) -> Option<f64> {
        let (v, lo, hi) = match self.scale {
            Scale::Linear => (v, self.lo, self.hi),
            Scale::Log if v > 0.0 => (v.log10(), self.lo.log10(), self.hi.log10()),
            Scale::Log => return None,
        };
        if !v.is_finite() {
            return None;
        }
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        Some(round1(self.px_lo + t * (self.px_hi - self.px_lo)))
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A generous estimate of how wide `text` draws at `px` in the report's sans-serif fonts
/// (DejaVu Sans is the widest of them: about 0.62 em a character, 0.7 bold). Over-estimating
/// only breaks a title a little early; under-estimating lets it run into the badge.
pub fn text_width(text: &str, px: f64, bold: bool) -> f64 {
    let em = if bold { 0.7 } else { 0.62 };
    text.chars().count() as f64 * px * em
}

/// Cut `text` to `width` px at `px`, ending in `…` when cut.
fn fit(text: &str, width: f64, px: f64, bold: bool) -> String {
    if text_width(text, px, bold) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        if text_width(&format!("{out}{c}…"), px, bold) > width {
            break;
        }
        out.push(c);
    }
    format!("{}…", out.trim_end())
}

/// The title's lines: all on the first when it fits beside the badge; else as many ` · `
/// parts as fit there and the rest on a second line of the full width.
fn title_lines(title: &str, badge: &str) -> Vec<String> {
    let (px, badge_px) = (12.0, 11.0);
    let first_width = WIDTH - 2.0 * TEXT_X - text_width(badge, badge_px, true) - BADGE_GAP;
    if text_width(title, px, true) <= first_width {
        return vec![title.to_string()];
    }
    let parts: Vec<&str> = title.split(" · ").collect();
    let mut n = parts.len();
    while n > 1 && text_width(&parts[..n].join(" · "), px, true) > first_width {
        n -= 1;
    }
    let first = fit(&parts[..n].join(" · "), first_width, px, true);
    let rest = parts[n..].join(" · ");
    if rest.is_empty() {
        return vec![first];
    }
    vec![first, fit(&rest, WIDTH - 2.0 * TEXT_X, px, true)]
}

/// Lay a chart out. Points that cannot be placed (NaN, ≤ 0 on a log axis) are dropped.
pub fn layout(spec: &ChartSpec) -> Chart {
    let usable = |s: Scale, v: f64| v.is_finite() && (s == Scale::Linear || v > 0.0);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for s in &spec.series {
        for p in &s.points {
            if usable(spec.x_scale, p.x) && usable(spec.y_scale, p.y) {
                xs.push(p.x);
                ys.push(p.y);
                ys.extend(p.hi.filter(|v| usable(spec.y_scale, *v)));
                ys.extend(p.lo.filter(|v| usable(spec.y_scale, *v)));
            }
        }
    }
    let cols = legend_cols(&spec.series);
    let legend_rows = spec.series.len().div_ceil(cols);
    let title_lines: Vec<TextLine> = title_lines(&spec.title, &format!("accel: {}", spec.accel))
        .into_iter()
        .enumerate()
        .map(|(i, text)| TextLine {
            y: 15.0 + i as f64 * LINE,
            text,
        })
        .collect();
    let subtitle_y = 15.0 + title_lines.len() as f64 * LINE;
    let top = subtitle_y + 11.0;
    let plot = Rect {
        x: MARGIN_LEFT,
        y: top,
        w: WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
        h: PLOT_H,
        right: WIDTH - MARGIN_RIGHT,
        bottom: top + PLOT_H,
    };
    let height = plot.bottom + AXIS_LABEL_SPACE + legend_rows as f64 * LEGEND_ROW + 6.0;
    let legend = spec
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendItem {
            x: plot.x + (i % cols) as f64 * (plot.w / cols as f64),
            y: plot.bottom + AXIS_LABEL_SPACE + (i / cols) as f64 * LEGEND_ROW,
            label: s.label.clone(),
            color: PALETTE[s.color % PALETTE.len()],
            dash: DASHES[s.dash % DASHES.len()],
            muted: s.muted,
            line: s.line,
            marker: s.markers,
        })
        .collect();
    let mut chart = Chart {
        id: spec.id.clone(),
        title: spec.title.clone(),
        title_lines,
        subtitle_y,
        accel: spec.accel.clone(),
        width: WIDTH,
        height,
        plot,
        x_label: spec.x_label.clone(),
        y_label: spec.y_label.clone(),
        x_ticks: Vec::new(),
        y_ticks: Vec::new(),
        series: Vec::new(),
        legend,
        note: spec.note.clone(),
        empty: xs.is_empty(),
    };
    if xs.is_empty() {
        return chart;
    }
    // Counts (layers, containers at once, threads) never fall between two integers.
    let (x_lo, x_hi, mut x_ticks) = domain(spec.x_scale, &xs, false);
    if xs.iter().all(|x| x.fract() == 0.0) {
        x_ticks.retain(|t| t.fract() == 0.0);
    }
    let (y_lo, y_hi, y_ticks) = domain(spec.y_scale, &ys, spec.y_from_zero);
    let xa = Axis {
        scale: spec.x_scale,
        lo: x_lo,
        hi: x_hi,
        px_lo: plot.x,
        px_hi: plot.right,
    };
    let ya = Axis {
        scale: spec.y_scale,
        lo: y_lo,
        hi: y_hi,
        px_lo: plot.bottom,
        px_hi: plot.y,
    };
    chart.x_ticks = place(&xa, x_ticks);
    chart.y_ticks = place(&ya, y_ticks);
    for s in &spec.series {
        let mut markers = Vec::new();
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for p in &s.points {
            let (Some(x), Some(y)) = (xa.map(p.x), ya.map(p.y)) else {
                continue;
            };
            pts.push((x, y));
            if s.markers {
                let (mut y_lo, mut y_hi) =
                    (p.lo.and_then(|v| ya.map(v)), p.hi.and_then(|v| ya.map(v)));
                // A whisker shorter than the marker is invisible: leave it out of the file.
                if let (Some(lo), Some(hi)) = (y_lo, y_hi) {
                    if (lo - hi).abs() < 6.0 {
                        (y_lo, y_hi) = (None, None);
                    }
                }
                markers.push(Marker {
                    x,
                    y,
                    y_lo,
                    y_hi,
                    title: p.title.clone(),
                    alert: p.alert,
                });
            }
        }
        let points = if s.line {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.iter()
                .map(|(x, y)| format!("{x},{y}"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            String::new()
        };
        chart.series.push(SeriesGeom {
            color: PALETTE[s.color % PALETTE.len()],
            dash: DASHES[s.dash % DASHES.len()],
            muted: s.muted,
            points,
            markers,
        });
    }
    chart
}

fn place(axis: &Axis, ticks: Vec<f64>) -> Vec<Tick> {
    ticks
        .into_iter()
        .filter_map(|v| {
            axis.map(v).map(|pos| Tick {
                pos,
                label: fmt_tick(v),
            })
        })
        .collect()
}

/// Domain and tick values for an axis over `values` (not empty).
fn domain(scale: Scale, values: &[f64], from_zero: bool) -> (f64, f64, Vec<f64>) {
    let mut lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match scale {
        Scale::Log => {
            // The tightest 1-2-5 bounds around the data: a decade's worth of empty axis on each
            // side would squeeze a sweep of 30..10,000 into the middle of the plot.
            let (lo, hi) = (step_at_most(lo), step_at_least(hi.max(lo)));
            let hi = if hi > lo { hi } else { lo * 2.0 };
            let mut ticks: Vec<f64> = Vec::new();
            let mut k = lo.log10().floor() as i32;
            while 10f64.powi(k) <= hi * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let v = m * 10f64.powi(k);
                    if v >= lo * 0.9999 && v <= hi * 1.0001 {
                        ticks.push(v);
                    }
                }
                k += 1;
            }
            // Many decades: the decades and the ends, so labels do not crowd.
            if ticks.len() > 7 {
                let decade = |v: f64| (v.log10() - v.log10().round()).abs() < 1e-9;
                let n = ticks.len();
                ticks = ticks
                    .into_iter()
                    .enumerate()
                    .filter(|(i, v)| *i == 0 || *i == n - 1 || decade(*v))
                    .map(|(_, v)| v)
                    .collect();
            }
            (lo, hi, ticks)
        }
        Scale::Linear => {
            if from_zero {
                lo = lo.min(0.0);
            }
            if hi <= lo {
                // One distinct value: give it room on both sides.
                let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
                lo -= if from_zero && lo == 0.0 { 0.0 } else { pad };
                hi += pad;
            }
            let step = nice_step((hi - lo) / 5.0);
            let lo = (lo / step).floor() * step;
            let hi = (hi / step).ceil() * step;
            let n = ((hi - lo) / step).round() as usize;
            let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
            (lo, hi, ticks)
        }
    }
}

/// The largest 1, 2 or 5 × 10^k that is at most `v` (> 0).
fn step_at_most(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    let f = v / mag;
    let m = if f >= 5.0 {
        5.0
    } else if f >= 2.0 {
        2.0
    } else {
        1.0
    };
    m * mag
}

/// The smallest 1, 2 or 5 × 10^k that is at least `v` (> 0).
fn step_at_least(v: f64) -> f64 {
    nice_step(v)
}

/// 1, 2 or 5 × 10^k, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Short tick labels: 0.5, 20, 1.5k, 2M.
pub fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    let (val, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    // Small values (a log axis of milliseconds that starts at 0.0002) keep two significant
    // digits rather than rounding to 0.
    let decimals = if val != 0.0 && val.abs() < 0.01 {
        (-val.abs().log10()).ceil() as usize + 1
    } else {
        2
    };
    let s = format!("{val:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s == "-0" { "0" } else { s };
    format!("{s}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(series: Vec<SeriesData>, y_scale: Scale) -> ChartSpec {
        ChartSpec {
            id: "c".into(),
            title: "t".into(),
            accel: "tcg".into(),
            x_label: "layers".into(),
            y_label: "µs".into(),
            x_scale: Scale::Linear,
            y_scale,
            y_from_zero: true,
            series,
            note: String::new(),
        }
    }

    fn pts(v: &[(f64, f64)]) -> Vec<DataPoint> {
        v.iter()
            .map(|&(x, y)| DataPoint {
                x,
                y,
                lo: None,
                hi: None,
                title: String::new(),
                alert: false,
            })
            .collect()
    }

    #[test]
    fn nice_steps_and_labels() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(100.0), 100.0);
        assert_eq!(fmt_tick(1500.0), "1.5k");
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(2_000_000.0), "2M");
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(0.0002), "0.0002");
        assert_eq!(fmt_tick(0.005), "0.005");
    }

    #[test]
    fn log_axis_spans_decades_and_drops_nonpositive() {
        let s = SeriesData {
            label: "a".into(),
            color: 0,
            dash: 0,
            line: true,
            markers: true,
            muted: false,
            points: pts(&[(1.0, 2.0), (10.0, 0.0), (50.0, 202.0)]),
        };
        let c = layout(&spec(vec![s], Scale::Log));
        assert!(!c.empty);
        let labels: Vec<_> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        // 2..202 sits in 2..500: many 1-2-5 steps, so the decades and the ends.
        assert_eq!(labels, ["2", "10", "100", "500"]);
        assert_eq!(
            c.series[0].markers.len(),
            2,
            "y = 0 has no place on a log axis"
        );
        // Higher values sit higher on the page (smaller y).
        assert!(c.series[0].markers[1].y < c.series[0].markers[0].y);
    }

    #[test]
    fn log_axis_hugs_the_data() {
        // A table-size sweep of 30..10,030 entries: 20..20k, not a decade of blank either side.
        let (lo, hi, ticks) = domain(Scale::Log, &[30.0, 2030.0, 10030.0], false);
        assert_eq!((lo, hi), (20.0, 20_000.0));
        let labels: Vec<String> = ticks.into_iter().map(fmt_tick).collect();
        assert_eq!(labels, ["20", "100", "1k", "10k", "20k"]);
        // J = 1..16: every 1-2-5 step fits.
        let (_, _, ticks) = domain(Scale::Log, &[1.0, 4.0, 16.0], false);
        assert_eq!(ticks, [1.0, 2.0, 5.0, 10.0, 20.0]);
        // One value still gets an axis.
        let (lo, hi, _) = domain(Scale::Log, &[5.0], false);
        assert!(lo <= 5.0 && hi > 5.0, "{lo}..{hi}");
    }

    #[test]
    fn points_stay_inside_the_plot() {
        let s = SeriesData {
            label: "a".into(),
            color: 0,
            dash: 0,
            line: true,
            markers: false,
            muted: false,
            points: pts(&[(1.0, 3.0), (10.0, 7.0), (50.0, 123.0)]),
        };
        let c = layout(&spec(vec![s], Scale::Linear));
        for pair in c.series[0].points.split(' ') {
            let (x, y) = pair.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(x >= c.plot.x && x <= c.plot.right, "{x}");
            assert!(y >= c.plot.y && y <= c.plot.bottom, "{y}");
        }
        assert_eq!(c.y_ticks[0].label, "0");
    }

    #[test]
    fn a_long_title_breaks_before_the_badge() {
        let mut sp = spec(Vec::new(), Scale::Linear);
        sp.accel = "tcg+vm:hyper-v".into();
        sp.title = "debian-6.12 · 2s1c2t-numa2 · btrfs · user-spin · throughput".into();
        let c = layout(&sp);
        assert_eq!(c.title_lines.len(), 2, "{:?}", c.title_lines);
        let badge = text_width("accel: tcg+vm:hyper-v", 11.0, true);
        for (i, l) in c.title_lines.iter().enumerate() {
            let room = if i == 0 {
                WIDTH - 2.0 * TEXT_X - badge - BADGE_GAP
            } else {
                WIDTH - 2.0 * TEXT_X
            };
            assert!(text_width(&l.text, 12.0, true) <= room, "{l:?}");
        }
        assert!(c.subtitle_y > c.title_lines[1].y && c.plot.y > c.subtitle_y);
        sp.title = "debian-6.1 · 1s2c1t".into();
        let short = layout(&sp);
        assert_eq!(short.title_lines.len(), 1);
        assert_eq!(short.plot.y, 40.0, "a short title keeps the old geometry");
    }

    #[test]
    fn empty_chart_is_marked() {
        let c = layout(&spec(Vec::new(), Scale::Linear));
        assert!(c.empty);
    }
}
