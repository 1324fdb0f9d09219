//! The plot `herd simulate` writes: demand against ready capacity (and provisioned capacity,
//! starting instances included) over time, as hand-written SVG polylines.

use std::fmt::Write;

/// One plotted point: time, demand, ready capacity, provisioned capacity (trace units).
pub(crate) type Point = (f64, f64, f64, f64);

const W: f64 = 960.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 40.0;

/// Renders `points` (already downsampled) with a title and a unit for the y axis.
pub(crate) fn render(title: &str, unit: &str, points: &[Point]) -> String {
    let t0 = points.first().map_or(0.0, |p| p.0);
    let t1 = points.last().map_or(1.0, |p| p.0).max(t0 + 1.0);
    let ymax = nice(
        points
            .iter()
            .map(|p| p.1.max(p.2).max(p.3))
            .fold(1.0, f64::max),
    );
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / ymax) * (H - TOP - BOTTOM);
    let line = |pick: fn(&Point) -> f64| {
        let mut s = String::new();
        for p in points {
            let _ = write!(s, "{:.1},{:.1} ", x(p.0), y(pick(p)));
        }
        s
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Grid and axis labels.
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    let span = t1 - t0;
    let (div, tunit) = if span > 2.0 * 86_400.0 {
        (86_400.0, "d")
    } else if span > 2.0 * 3600.0 {
        (3600.0, "h")
    } else if span > 120.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    };
    for i in 0..=6 {
        let t = t0 + span * f64::from(i) / 6.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}{tunit}</text>"#,
            x(t),
            H - BOTTOM + 16.0,
            short((t - t0) / div)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        escape(unit)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#bbb" stroke-width="1" stroke-dasharray="4 3" points="{}"/>"##,
        line(|p| p.3)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#2a9d3f" stroke-width="1.5" points="{}"/>"##,
        line(|p| p.2)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#d62828" stroke-width="1.2" points="{}"/>"##,
        line(|p| p.1)
    );
    // Legend.
    let lx = LEFT;
    for (i, (color, label, dash)) in [
        ("#d62828", "demand", ""),
        ("#2a9d3f", "ready capacity", ""),
        (
            "#bbb",
            "provisioned (incl. starting)",
            r#" stroke-dasharray="4 3""#,
        ),
    ]
    .iter()
    .enumerate()
    {
        let ly = 34.0;
        #[allow(clippy::cast_precision_loss)]
        let lxx = lx + i as f64 * 130.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lxx:.1}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{label}</text>"#,
            lxx + 14.0,
            lxx + 18.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Rounds an axis maximum up to 1, 2 or 5 × a power of ten.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn short(v: f64) -> String {
    let v = (v * 1e6).round() / 1e6;
    let v = if v >= 10.0 { v.round() } else { v };
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_three_lines() {
        let pts: Vec<Point> = (0..10)
            .map(|i| (f64::from(i), f64::from(i * 10), 50.0, 60.0))
            .collect();
        let svg = render("step <spike>", "rps", &pts);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("step &lt;spike&gt;"));
        assert_eq!(nice(87.0), 100.0);
        assert_eq!(nice(130.0), 150.0);
        assert_eq!(nice(6000.0), 6000.0);
    }
}
