//! Inline-SVG charts for the report: scatter, grouped horizontal bars and
//! line charts, each a self-contained `<svg class="chart">` with axes, ticks
//! and a legend. No scripts, fonts or images are fetched: the file renders
//! offline. Every data mark carries `class="mark"` so a test can count them.

use std::fmt::Write;

/// Colours for series, in order (colour-blind-safe Okabe–Ito palette).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// HTML/XML text escaping.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A linear map from data [d0, d1] to pixels [r0, r1].
#[derive(Debug, Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        let t = if span.abs() < 1e-300 {
            0.5
        } else {
            (v - self.d0) / span
        };
        self.r0 + t * (self.r1 - self.r0)
    }
}

/// A data range padded so points do not sit on the frame; never empty.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 0.0 { lo.abs() * 0.05 } else { 0.5 };
        return (lo - d, hi + d);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// About `n` round tick values covering [lo, hi].
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return vec![lo];
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// Frame geometry shared by the x/y charts.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn new(w: f64, h: f64) -> Frame {
        Frame {
            w,
            h,
            left: 56.0,
            right: 12.0,
            top: 28.0,
            bottom: 40.0,
        }
    }
    fn x_scale(&self, (lo, hi): (f64, f64)) -> Scale {
        Scale {
            d0: lo,
            d1: hi,
            r0: self.left,
            r1: self.w - self.right,
        }
    }
    fn y_scale(&self, (lo, hi): (f64, f64)) -> Scale {
        Scale {
            d0: lo,
            d1: hi,
            r0: self.h - self.bottom,
            r1: self.top,
        }
    }
}

fn open(s: &mut String, id: &str, f: &Frame, title: &str) {
    let _ = write!(
        s,
        r##"<svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/><text x="{cx}" y="17" text-anchor="middle" class="title">{t}</text>"##,
        id = esc(id),
        w = f.w,
        h = f.h,
        t = esc(title),
        cx = f.w / 2.0,
    );
}

/// Axes with ticks, grid lines and labels.
fn axes(s: &mut String, f: &Frame, xs: Scale, ys: Scale, xlabel: &str, ylabel: &str) {
    let (x0, x1, y0, y1) = (f.left, f.w - f.right, f.h - f.bottom, f.top);
    for t in ticks(xs.d0, xs.d1, 5) {
        let x = xs.at(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#eeeeee"/><text x="{x:.1}" y="{ty}" text-anchor="middle" class="tick">{l}</text>"##,
            ty = y0 + 14.0,
            l = tick_label(t)
        );
    }
    for t in ticks(ys.d0, ys.d1, 5) {
        let y = ys.at(t);
        let _ = write!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#eeeeee"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{l}</text>"##,
            tx = x0 - 4.0,
            ty = y + 4.0,
            l = tick_label(t)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{x0}" y="{y1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#444444"/><text x="{cx:.1}" y="{ly}" text-anchor="middle" class="label">{xl}</text><text x="12" y="{cy:.1}" text-anchor="middle" class="label" transform="rotate(-90 12 {cy:.1})">{yl}</text>"##,
        w = x1 - x0,
        h = y0 - y1,
        cx = (x0 + x1) / 2.0,
        ly = f.h - 6.0,
        cy = (y0 + y1) / 2.0,
        xl = esc(xlabel),
        yl = esc(ylabel),
    );
}

fn legend(s: &mut String, f: &Frame, names: &[(String, &str)]) {
    let mut x = f.left + 6.0;
    let y = f.top + 12.0;
    for (name, c) in names {
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{ry:.1}" width="10" height="10" fill="{c}"/><text x="{tx:.1}" y="{y:.1}" class="legend">{n}</text>"#,
            ry = y - 9.0,
            tx = x + 13.0,
            n = esc(name)
        );
        x += 22.0 + 6.5 * name.chars().count() as f64;
    }
}

/// A scatter plot; `diagonal` draws y = x (predicted vs actual).
#[allow(clippy::too_many_arguments)]
pub fn scatter(
    id: &str,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    points: &[(f64, f64)],
    diagonal: bool,
    w: f64,
    h: f64,
) -> String {
    let f = Frame::new(w, h);
    let mut xr = padded(points.iter().map(|p| p.0));
    let mut yr = padded(points.iter().map(|p| p.1));
    if diagonal {
        let lo = xr.0.min(yr.0);
        let hi = xr.1.max(yr.1);
        xr = (lo, hi);
        yr = (lo, hi);
    }
    let (xs, ys) = (f.x_scale(xr), f.y_scale(yr));
    let mut s = String::new();
    open(&mut s, id, &f, title);
    axes(&mut s, &f, xs, ys, xlabel, ylabel);
    if diagonal {
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999999" stroke-dasharray="4 3"/>"##,
            xs.at(xr.0),
            ys.at(xr.0),
            xs.at(xr.1),
            ys.at(xr.1)
        );
    }
    for (x, y) in points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
    {
        let _ = write!(
            s,
            r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3.2" fill="{}" fill-opacity="0.75"><title>{} / {}</title></circle>"#,
            xs.at(*x),
            ys.at(*y),
            color(0),
            tick_label(*x),
            tick_label(*y)
        );
    }
    s.push_str("</svg>");
    s
}

/// One bar series: a name, and one value per category.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// Horizontal grouped bars: one group per category, one bar per series.
pub fn grouped_bars(
    id: &str,
    title: &str,
    categories: &[String],
    series: &[Series],
    w: f64,
) -> String {
    let bar_h = 9.0;
    let group_h = bar_h * series.len() as f64 + 8.0;
    let h = 28.0 + 22.0 + group_h * categories.len() as f64 + 30.0;
    let mut f = Frame::new(w, h);
    f.left = 12.0
        + 7.0
            * categories
                .iter()
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(4) as f64;
    f.left = f.left.max(60.0);
    f.top = 44.0;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    let xs = f.x_scale((0.0, max * 1.08));
    let mut s = String::new();
    open(&mut s, id, &f, title);
    for t in ticks(0.0, max * 1.08, 5) {
        let x = xs.at(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#eeeeee"/><text x="{x:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"##,
            f.top,
            h - f.bottom,
            h - f.bottom + 14.0,
            tick_label(t)
        );
    }
    for (ci, cat) in categories.iter().enumerate() {
        let gy = f.top + ci as f64 * group_h + 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            f.left - 4.0,
            gy + group_h / 2.0,
            esc(cat)
        );
        for (si, ser) in series.iter().enumerate() {
            let v = ser.values.get(ci).copied().unwrap_or(0.0).max(0.0);
            let y = gy + si as f64 * bar_h;
            let _ = write!(
                s,
                r#"<rect class="mark" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} = {:.4}</title></rect>"#,
                f.left,
                (xs.at(v) - f.left).max(0.0),
                bar_h - 1.5,
                color(si),
                esc(&ser.name),
                esc(cat),
                v
            );
        }
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{}" x2="{l}" y2="{}" stroke="#444444"/>"##,
        f.top,
        h - f.bottom,
        l = f.left
    );
    let names: Vec<(String, &str)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), color(i)))
        .collect();
    let mut lf = Frame::new(w, h);
    lf.top = 20.0;
    legend(&mut s, &lf, &names);
    s.push_str("</svg>");
    s
}

/// Line chart over a shared x; NaN values break a line.
#[allow(clippy::too_many_arguments)]
pub fn lines(
    id: &str,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    x: &[f64],
    series: &[Series],
    w: f64,
    h: f64,
) -> String {
    let f = Frame::new(w, h);
    let xs = f.x_scale(padded(x.iter().copied()));
    let ys = f.y_scale(padded(series.iter().flat_map(|s| s.values.iter().copied())));
    let mut s = String::new();
    open(&mut s, id, &f, title);
    axes(&mut s, &f, xs, ys, xlabel, ylabel);
    for (si, ser) in series.iter().enumerate() {
        let mut d = String::new();
        let mut pen_down = false;
        for (xv, yv) in x.iter().zip(&ser.values) {
            if yv.is_finite() {
                let _ = write!(
                    d,
                    "{}{:.1},{:.1} ",
                    if pen_down { "L" } else { "M" },
                    xs.at(*xv),
                    ys.at(*yv)
                );
                pen_down = true;
            } else {
                pen_down = false;
            }
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path class="mark" d="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"#,
                d.trim_end(),
                color(si),
                esc(&ser.name)
            );
        }
    }
    let names: Vec<(String, &str)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), color(i)))
        .collect();
    legend(&mut s, &f, &names);
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(t
            .iter()
            .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-9));
        let t = ticks(2.93, 3.41, 5);
        assert!(
            t.len() >= 3 && t[0] >= 2.93 && *t.last().unwrap() <= 3.41,
            "{t:?}"
        );
    }

    #[test]
    fn charts_have_marks_and_escape_text() {
        let s = scatter(
            "s",
            "a<b",
            "x",
            "y",
            &[(1.0, 2.0), (2.0, 3.0)],
            true,
            300.0,
            200.0,
        );
        assert_eq!(s.matches("class=\"mark\"").count(), 2);
        assert!(s.contains("a&lt;b") && !s.contains("a<b"));
        let b = grouped_bars(
            "b",
            "w",
            &["web".into(), "code".into()],
            &[Series {
                name: "opt".into(),
                values: vec![0.7, 0.3],
            }],
            400.0,
        );
        assert_eq!(b.matches("class=\"mark\"").count(), 2);
        let l = lines(
            "l",
            "t",
            "step",
            "w",
            &[0.0, 1.0, 2.0],
            &[Series {
                name: "a".into(),
                values: vec![0.1, f64::NAN, 0.3],
            }],
            300.0,
            200.0,
        );
        // The NaN breaks the line into two pen-down segments.
        assert_eq!(l.matches('M').count(), 2, "{l}");
    }
}
