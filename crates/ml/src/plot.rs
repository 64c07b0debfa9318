//! The loss curve as a self-contained SVG image: training loss per step, with the held-out loss
//! before and after as dashed reference lines. SVG needs no font or image library, and every
//! browser and editor shows it.

use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 48.0;

/// Renders `losses` (one per step) with optional held-out reference lines.
pub fn loss_curve_svg(
    title: &str,
    losses: &[f64],
    eval_before: Option<f64>,
    eval_after: Option<f64>,
) -> String {
    let references: Vec<f64> = [eval_before, eval_after].into_iter().flatten().collect();
    let values = losses
        .iter()
        .chain(&references)
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(hi - 1e-6), hi)
    } else {
        (0.0, 1.0)
    };
    let x =
        |i: usize| MARGIN + (WIDTH - 2.0 * MARGIN) * i as f64 / (losses.len().max(2) - 1) as f64;
    let y = |v: f64| HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * (v - lo) / (hi - lo);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN}\" y=\"24\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    let axis_bottom = HEIGHT - MARGIN;
    let _ = writeln!(
        svg,
        "<path d=\"M{MARGIN} {MARGIN} V{axis_bottom} H{}\" stroke=\"black\" fill=\"none\"/>",
        WIDTH - MARGIN
    );
    let _ = writeln!(svg, "<text x=\"4\" y=\"{}\">{hi:.3}</text>", MARGIN + 4.0);
    let _ = writeln!(svg, "<text x=\"4\" y=\"{}\">{lo:.3}</text>", axis_bottom);
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\">step {}</text>",
        WIDTH - MARGIN - 40.0,
        HEIGHT - 16.0,
        losses.len()
    );
    let points: Vec<String> = losses
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>",
        points.join(" ")
    );
    for (label, value, colour) in [
        ("held-out before", eval_before, "#d62728"),
        ("held-out after", eval_after, "#2ca02c"),
    ] {
        if let Some(v) = value {
            let (right, line_y) = (WIDTH - MARGIN, y(v));
            let (label_x, label_y) = (right - 150.0, line_y - 4.0);
            let _ = writeln!(
                svg,
                "<line x1=\"{MARGIN}\" x2=\"{right}\" y1=\"{line_y:.1}\" y2=\"{line_y:.1}\" stroke=\"{colour}\" stroke-dasharray=\"6 4\"/>\
                 <text x=\"{label_x}\" y=\"{label_y:.1}\" fill=\"{colour}\">{label} {v:.3}</text>"
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
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
    fn draws_one_point_per_step_and_the_reference_lines() {
        let svg = loss_curve_svg("LoRA <r=8>", &[3.0, 2.5, 2.0, 1.5], Some(3.2), Some(1.4));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("LoRA &lt;r=8&gt;"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 4);
        assert!(svg.contains("held-out before 3.200") && svg.contains("held-out after 1.400"));
    }
}
