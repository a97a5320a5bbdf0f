//! Training curves as inline SVG, drawn from a training node's `steps.jsonl` (loss per task: each update's, faint,
//! and the mean of the task's last [`SMOOTH`] updates, bold) and `evals.jsonl` (the validation metric per task where evaluated; the test metric
//! when there is no validation).

use super::html::esc;
use serde_json::Value;
use std::collections::BTreeMap;

/// Colours of successive tasks.
pub const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

const W: f64 = 360.0;
const H: f64 = 240.0;
const L: f64 = 48.0;
const R: f64 = 12.0;
const T: f64 = 24.0;
const B: f64 = 30.0;

type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn lines(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok())
}

/// The loss curve's bold line is the mean of each task's last this many updates (fewer at the start).
pub const SMOOTH: usize = 20;

/// Loss per task over updates: (each update's, the mean of the task's last [`SMOOTH`] updates).
fn losses(steps: &str) -> (Series, Series) {
    let mut raw: Series = BTreeMap::new();
    for v in lines(steps) {
        let (Some(step), Some(loss)) = (v["step"].as_f64(), v["loss"].as_f64()) else { continue };
        if !loss.is_finite() {
            continue;
        }
        for t in v["tasks"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
            raw.entry(t.to_string()).or_default().push((step, loss));
        }
    }
    let smooth = raw
        .iter()
        .map(|(t, pts)| {
            let smooth = (0..pts.len())
                .map(|i| {
                    let lo = i.saturating_sub(SMOOTH - 1);
                    (pts[i].0, pts[lo..=i].iter().map(|q| q.1).sum::<f64>() / (i - lo + 1) as f64)
                })
                .collect();
            (t.clone(), smooth)
        })
        .collect();
    (raw, smooth)
}

/// The evaluated metric per task over updates: `(split, metric, series)`.
fn evals(evals: &str) -> (String, String, Series) {
    let all: Vec<Value> = lines(evals).collect();
    let split = if all.iter().any(|e| e["split"] == "val") { "val" } else { "test" };
    let metric = all
        .iter()
        .filter(|e| e["split"] == split)
        .find_map(|e| {
            let m = e["metrics"].as_object()?;
            Some(if m.contains_key("top1") { "top1".to_string() } else { m.keys().next()?.clone() })
        })
        .unwrap_or_else(|| "top1".into());
    let mut s: Series = BTreeMap::new();
    for e in all.iter().filter(|e| e["split"] == split) {
        if let (Some(t), Some(step), Some(v)) = (e["task"].as_str(), e["step"].as_f64(), e["metrics"][&metric].as_f64()) {
            s.entry(t.to_string()).or_default().push((step, v));
        }
    }
    (split.to_string(), metric, s)
}

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One panel: axes, min/max ticks, a polyline (and dots) per task.
/// The x range (updates) over several series, widened when it is a single point.
fn x_range<'a>(all: impl Iterator<Item = &'a Series>) -> (f64, f64) {
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _) in all.flat_map(|s| s.values().flatten()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if x0.is_finite() && x1 <= x0 {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (x0, x1)
    }
}

/// One panel over updates `x0..x1`: axes, end ticks, a polyline (and dots when few) per task. `faint`: each
/// point's own value behind a smoothed `series` (same tasks, same points), drawn thin and named in the dots'
/// hover text.
fn panel(
    title: &str,
    series: &Series,
    faint: Option<&Series>,
    colors: &BTreeMap<String, &str>,
    class: &str,
    y0: Option<f64>,
    (x0, x1): (f64, f64),
) -> String {
    let (mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in series.values().chain(faint.into_iter().flat_map(|f| f.values())).flatten() {
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let mut s = format!(
        "<svg class=\"curve {class}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{}</title>",
        esc(title)
    );
    s.push_str(&format!("<text x=\"{}\" y=\"16\" text-anchor=\"middle\" class=\"ctitle\">{}</text>", W / 2.0, esc(title)));
    s.push_str(&format!("<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>", W - L - R, H - T - B));
    if !ymin.is_finite() {
        s.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data</text></svg>", W / 2.0, H / 2.0));
        return s;
    }
    if let Some(z) = y0 {
        ymin = ymin.min(z);
    }
    if ymax <= ymin {
        // One value (or a flat curve): a band around it, not a unit range above it (an accuracy axis to 1.33).
        let pad = if ymin == 0.0 { 0.5 } else { ymin.abs() * 0.05 };
        (ymin, ymax) = (ymin - pad, ymax + pad);
    }
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y - ymin) / (ymax - ymin) * (H - T - B);
    // Ticks: the ends of each axis.
    for (x, anchor) in [(x0, "start"), (x1, "end")] {
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"tick\">{x:.0}</text>", px(x), H - B + 14.0));
    }
    for y in [ymin, ymax] {
        s.push_str(&format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>", L - 4.0, py(y) + 4.0, num(y)));
    }
    s.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">update</text>", L + (W - L - R) / 2.0, H - 4.0));
    for (task, p) in faint.into_iter().flatten() {
        let c = colors.get(task).copied().unwrap_or("#333");
        let path: Vec<String> = p.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s.push_str(&format!(
            "<polyline class=\"raw\" data-task=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-opacity=\"0.3\" stroke-width=\"1\" points=\"{}\"/>",
            esc(task),
            path.join(" ")
        ));
    }
    for (task, p) in series {
        let c = colors.get(task).copied().unwrap_or("#333");
        let path: Vec<String> = p.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        s.push_str(&format!(
            "<polyline class=\"series\" data-task=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            esc(task),
            path.join(" "),
            esc(task)
        ));
        // Dots with their values on hover: every point of a short series; about 40 of a long one, invisible.
        {
            let own = faint.and_then(|f| f.get(task));
            let every = p.len().div_ceil(40).max(1);
            let shown = if every == 1 { "" } else { " fill-opacity=\"0\"" };
            for (k, &(x, y)) in p.iter().enumerate().filter(|(k, _)| k % every == 0 || *k + 1 == p.len()) {
                let what = match own.and_then(|o| o.get(k)) {
                    Some(&(_, v)) => format!("{} at update {x:.0} (mean of its last {} updates: {})", num(v), (k + 1).min(SMOOTH), num(y)),
                    None => format!("{} at update {x:.0}", num(y)),
                };
                s.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{c}\"{shown}><title>{}: {what}</title></circle>",
                    px(x),
                    py(y),
                    esc(task),
                ));
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// The two panels and a legend, from the node's `steps.jsonl` and `evals.jsonl` text.
pub fn figure(steps: &str, evals_text: &str) -> String {
    let (raw, loss) = losses(steps);
    let (split, metric, ev) = evals(evals_text);
    let mut colors: BTreeMap<String, &str> = BTreeMap::new();
    for t in loss.keys().chain(ev.keys()) {
        let n = colors.len();
        colors.entry(t.clone()).or_insert(PALETTE[n % PALETTE.len()]);
    }
    let mut s = String::from("<div class=\"curves\">");
    let xr = x_range([&loss, &ev].into_iter());
    let title = format!("training loss (bold: mean of {SMOOTH} updates)");
    s.push_str(&panel(&title, &loss, Some(&raw), &colors, "loss", Some(0.0), xr));
    s.push_str(&panel(&format!("{split} {metric}"), &ev, None, &colors, "eval", None, xr));
    s.push_str("<ul class=\"legend\">");
    for (t, c) in &colors {
        s.push_str(&format!("<li><span class=\"swatch\" style=\"background:{c}\"></span>{}</li>", esc(t)));
    }
    s.push_str("</ul></div>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_line_per_task_and_the_eval_metric() {
        let steps = "{\"step\":1,\"tasks\":[\"a\"],\"loss\":2.0,\"lr\":0.1,\"grad_norm\":1}\n{\"step\":2,\"tasks\":[\"b\"],\"loss\":1.0,\"lr\":0.1,\"grad_norm\":1}\n{\"step\":3,\"tasks\":[\"a\"],\"loss\":1.0,\"lr\":0.1,\"grad_norm\":1}\n";
        let evals = "{\"step\":3,\"task\":\"a\",\"split\":\"val\",\"metrics\":{\"top1\":0.5}}\n{\"step\":3,\"task\":\"a\",\"split\":\"test\",\"metrics\":{\"top1\":0.4}}\n";
        let f = figure(steps, evals);
        // Loss: each update's (faint) and the running mean (bold) per task; the eval metric.
        assert_eq!(f.matches("<polyline class=\"series\"").count(), 3, "{f}");
        assert_eq!(f.matches("<polyline class=\"raw\"").count(), 2, "{f}");
        // The hover text gives the update's own loss, then the mean drawn: task a's second update is 1.00 (mean 1.50).
        assert!(f.contains("a: 1.00 at update 3 (mean of its last 2 updates: 1.50)"), "{f}");
        assert!(f.contains("bold: mean of 20 updates"), "{f}");
        // A long run: hover points on about 40 of its updates, the last one among them, each with both values.
        let long: String = (1..=500).map(|k| format!("{{\"step\":{k},\"tasks\":[\"a\"],\"loss\":1.0}}\n")).collect();
        let g = figure(&long, "");
        let dots = g.matches("fill-opacity=\"0\"><title>a: 1.00 at update").count();
        assert!((40..=42).contains(&dots), "{dots}");
        assert!(g.contains("at update 500 (mean of its last 20 updates: 1.00)"));
        assert!(f.contains("val top1") && f.contains("data-task=\"b\""), "{f}");
        // Nothing to draw: an empty panel, not a failure.
        assert!(figure("", "").contains("no data"));
    }
}
