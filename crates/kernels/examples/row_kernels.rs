//! Time of the row-wise kernels on one thread at the ViT-Ti probe's shapes (BENCHMARKS.md): LayerNorm and its
//! backward over [4160, 192], the softmax and its backward over one example's 3 heads of [65, 65]. Best of 5.
//!
//! `cargo run --release -p polyflow-kernels --example row_kernels`

use polyflow_kernels::{layer_norm, layer_norm_backward, softmax_rows, softmax_rows_backward};
use std::time::Instant;

/// Microseconds per call of `f`, best of 5 rounds of `reps`.
fn time(reps: usize, f: &mut dyn FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (rows, d, n) = (4160usize, 192usize, 65usize);
    let x: Vec<f32> = (0..rows * d).map(|i| ((i * 7919) % 1013) as f32 / 487.0 - 1.0).collect();
    let dy: Vec<f32> = (0..rows * d).map(|i| ((i * 104_729) % 1009) as f32 / 500.0 - 1.0).collect();
    let (g, b) = (vec![1.1f32; d], vec![0.1f32; d]);
    let logits: Vec<f32> = (0..3 * n * n).map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 5.0).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a pool");
    pool.install(|| {
        let mut sink = 0.0f32;
        let ln = time(50, &mut || sink += layer_norm(&x, &g, &b, d, 1e-6).0[5]);
        let (_, mean, rstd) = layer_norm(&x, &g, &b, d, 1e-6);
        let ln_b = time(50, &mut || sink += layer_norm_backward(&x, &mean, &rstd, &g, &dy, d).0[5]);
        let mut p = logits.clone();
        let sm = time(2000, &mut || {
            p.copy_from_slice(&logits);
            softmax_rows(&mut p, n, 0.125);
        });
        let mut dp = logits.clone();
        let sm_b = time(2000, &mut || {
            dp.copy_from_slice(&logits);
            softmax_rows_backward(&p, &mut dp, n, 0.125);
        });
        println!(
            "layer_norm {ln:.0} µs, backward {ln_b:.0} µs ([{rows}, {d}]); softmax {sm:.2} µs, backward {sm_b:.2} µs (3 × [{n}, {n}]) ({sink})"
        );
    });
}
