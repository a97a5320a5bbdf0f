//! Training curves as SVG (plotters): per-task loss over updates, and the val metric where evaluated.

use crate::train::run::Outcome;
use plotters::prelude::*;

/// An SVG with one loss line per task (moving average over 20 of its updates) and val top-1 points.
pub fn curves(out: &Outcome, tasks: &[String]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let areas = root.split_evenly((1, 2));
        let total = out.steps.len().max(1) as f64;
        let max_loss = out.steps.iter().map(|s| s.loss).filter(|l| l.is_finite()).fold(1e-6, f64::max);
        if let Ok(mut chart) = ChartBuilder::on(&areas[0])
            .caption("training loss", ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..total, 0.0..max_loss)
        {
            let _ = chart.configure_mesh().x_desc("update").draw();
            for (k, t) in tasks.iter().enumerate() {
                let pts: Vec<(f64, f64)> = out.steps.iter().filter(|s| s.tasks.contains(t)).map(|s| (s.step as f64, s.loss)).collect();
                let smooth: Vec<(f64, f64)> = pts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let lo = i.saturating_sub(19);
                        (p.0, pts[lo..=i].iter().map(|q| q.1).sum::<f64>() / (i - lo + 1) as f64)
                    })
                    .collect();
                let color = Palette99::pick(k).to_rgba();
                if let Ok(s) = chart.draw_series(LineSeries::new(smooth, color.stroke_width(2))) {
                    s.label(t.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color));
                }
            }
            let _ = chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw();
        }
        if let Ok(mut chart) = ChartBuilder::on(&areas[1])
            .caption("val top-1", ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..total, 0.0..1.0)
        {
            let _ = chart.configure_mesh().x_desc("update").draw();
            for (k, t) in tasks.iter().enumerate() {
                let pts: Vec<(f64, f64)> = out
                    .evals
                    .iter()
                    .filter(|e| &e.task == t && e.split == "val")
                    .filter_map(|e| e.metrics.get("top1").map(|v| (e.step as f64, *v)))
                    .collect();
                let color = Palette99::pick(k).to_rgba();
                let _ = chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)));
                let _ = chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())));
            }
        }
        let _ = root.present();
    }
    svg
}
