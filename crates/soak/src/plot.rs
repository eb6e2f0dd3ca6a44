//! A small hand-written SVG line chart: panels stacked over one time axis, with
//! vertical markers (warm-up end, churn end).

use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 190.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 30.0;
const GAP: f64 = 40.0;
const BOTTOM: f64 = 45.0;

/// One line.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One chart with its own y axis.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// A dashed vertical line across every panel.
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// The SVG document: `panels` from top to bottom over x values in `x_range`.
pub fn render(panels: &[Panel], markers: &[Marker], x_label: &str, x_range: (f64, f64)) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) - GAP + BOTTOM;
    let plot_width = WIDTH - LEFT - RIGHT;
    let (x_min, x_max) = (x_range.0, x_range.1.max(x_range.0 + 1e-9));
    let x_pos = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_width;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, panel) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL_HEIGHT + GAP);
        let bottom = top + PANEL_HEIGHT;
        let values = panel
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|(_, y)| *y));
        let y_max = values.fold(0.0f64, f64::max);
        // Headroom, so a line near a round value does not run along the frame.
        let (ticks, y_top) = nice_ticks(y_max * 1.08);
        let y_pos = |y: f64| bottom - y / y_top * PANEL_HEIGHT;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            top - 8.0,
            escape(&panel.title)
        );
        for tick in &ticks {
            let y = y_pos(*tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_width,
                LEFT - 6.0,
                y + 4.0,
                format_number(*tick)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="#888"/>"##
        );
        for marker in markers {
            let x = x_pos(marker.x);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#999" stroke-dasharray="4 3"/>"##
            );
            if index == 0 {
                // Near the right edge the label goes to the left of its line.
                let (label_x, anchor) = if x > LEFT + plot_width - 90.0 {
                    (x - 3.0, "end")
                } else {
                    (x + 3.0, "start")
                };
                let _ = writeln!(
                    svg,
                    r##"<text x="{label_x:.1}" y="{:.1}" font-size="10" fill="#666" text-anchor="{anchor}">{}</text>"##,
                    top + 12.0,
                    escape(&marker.label)
                );
            }
        }
        for (number, series) in panel.series.iter().enumerate() {
            let path: Vec<String> = series
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", x_pos(*x), y_pos(*y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"/>"#,
                path.join(" "),
                series.color
            );
            let legend_y = top + 16.0 + number as f64 * 18.0;
            let legend_x = LEFT + plot_width + 12.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                legend_x + 18.0,
                series.color,
                legend_x + 24.0,
                legend_y + 4.0,
                escape(&series.label)
            );
        }
    }
    let axis_y = height - BOTTOM;
    let (x_ticks, _) = nice_ticks(x_max - x_min);
    let x_step = x_ticks.get(1).copied().unwrap_or(1.0);
    let mut tick = (x_min / x_step).ceil() * x_step;
    while tick <= x_max + 1e-9 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_pos(tick),
            axis_y + 16.0,
            format_number(tick + 0.0)
        );
        tick += x_step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_width / 2.0,
        axis_y + 34.0,
        escape(x_label)
    );
    svg.push_str("</svg>\n");
    svg
}

/// Tick values from 0 and the axis top: steps of 1, 2 or 5 × 10^k, about five of them.
fn nice_ticks(max: f64) -> (Vec<f64>, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude);
    let count = (max / step).ceil().max(1.0) as usize;
    let ticks: Vec<f64> = (0..=count).map(|i| i as f64 * step).collect();
    (ticks, count as f64 * step)
}

fn format_number(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        let (ticks, top) = nice_ticks(87.0);
        assert_eq!(ticks, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(top, 100.0);
        assert_eq!(nice_ticks(0.0).1, 1.0);
    }

    #[test]
    fn renders_every_series_and_marker() {
        let panel = Panel {
            title: "RSS <MiB>".into(),
            series: vec![Series {
                label: "app".into(),
                color: "#1f77b4",
                points: vec![(0.0, 10.0), (1.0, 12.0)],
            }],
        };
        let marker = Marker {
            x: 0.5,
            label: "warm-up end".into(),
        };
        let svg = render(&[panel], &[marker], "minutes", (0.0, 1.0));
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("RSS &lt;MiB&gt;"));
        assert!(svg.contains("warm-up end"));
    }
}
