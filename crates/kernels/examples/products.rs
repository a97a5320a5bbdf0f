//! GFLOP/s of the fused block's matrix products at the ViT-Ti probe's and ViT-B/16's shapes, f32 and bf16, on
//! the current rayon pool (`RAYON_NUM_THREADS`): forward (`x · w`), input gradient (`dy · wᵀ`) and weight
//! gradient (`xᵀ · dy`) of the MLP's first layer, and the second layer's weight gradient (`hᵀ · dz`); in bf16
//! also with `x` and `dy` given as bf16 bits, as the fused block passes them. Best of 5 rounds of 5 products
//! each. With the argument `f32`, the f32 products only.
//!
//!   cargo run --release -p polyflow-kernels --example products [f32]

use polyflow_kernels::{matmul_any, matmul_p, to_bf16_vec, Mat, Precision};
use std::time::Instant;

fn main() {
    // `products f32`: the f32 products only.
    let only_f32 = std::env::args().nth(1).is_some_and(|a| a == "f32");
    // (name, tokens of the batch, dim, mlp): Ti probe batch 64 × 65 tokens, B/16 batch 16 × 197 tokens.
    for (name, m, d, h) in [("ViT-Ti probe", 4160, 192, 768), ("ViT-B/16", 3152, 768, 3072)] {
        for prec in [Precision::F32, Precision::Bf16] {
            if only_f32 && prec != Precision::F32 {
                continue;
            }
            let x: Vec<f32> = (0..m * d).map(|i| (i % 13) as f32 * 0.01).collect();
            let w: Vec<f32> = (0..d * h).map(|i| (i % 7) as f32 * 0.01).collect();
            let dy: Vec<f32> = (0..m * h).map(|i| (i % 11) as f32 * 0.01).collect();
            let mut y = vec![0.0f32; m * h];
            let mut dx = vec![0.0f32; m * d];
            let mut dw = vec![0.0f32; d * h];
            let time = |f: &mut dyn FnMut()| {
                f();
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..5 {
                            f();
                        }
                        10.0 * (m * d * h) as f64 / t.elapsed().as_secs_f64() / 1e9
                    })
                    .fold(0.0, f64::max)
            };
            let fwd = time(&mut || matmul_p(prec, m, h, d, Mat::rows(&x, d), Mat::rows(&w, h), &mut y, h, false, true));
            let bwd_x = time(&mut || matmul_p(prec, m, d, h, Mat::rows(&dy, h), Mat::t(&w, h), &mut dx, d, false, true));
            let bwd_w = time(&mut || matmul_p(prec, d, h, m, Mat::t(&x, d), Mat::rows(&dy, h), &mut dw, h, false, true));
            // The second layer's weight gradient, `hᵀ·dz` ([h, m]·[m, d]; `dy` stands for h, `x` for dz).
            let bwd_w2 = time(&mut || matmul_p(prec, h, d, m, Mat::t(&dy, h), Mat::rows(&x, d), &mut dw, d, false, true));
            println!(
                "{name:<13} {prec:?}: x·w [{m},{d}]·[{d},{h}] {fwd:6.1}  dy·wᵀ {bwd_x:6.1}  xᵀ·dy {bwd_w:6.1}  hᵀ·dz {bwd_w2:6.1} GFLOP/s"
            );
            if prec == Precision::Bf16 {
                // As the fused block runs them: `x` and `dy` already in bf16 bits (converted once by their
                // producers), the weights f32 (the master copy).
                let (x16, dy16) = (to_bf16_vec(&x), to_bf16_vec(&dy));
                let fwd = time(&mut || matmul_any(prec, m, h, d, Mat::rows(&x16, d), Mat::rows(&w, h), &mut y, h, false, true));
                let bwd_x = time(&mut || matmul_any(prec, m, d, h, Mat::rows(&dy16, h), Mat::t(&w, h), &mut dx, d, false, true));
                let bwd_w = time(&mut || matmul_any(prec, d, h, m, Mat::t(&x16, d), Mat::rows(&dy16, h), &mut dw, h, false, true));
                println!("{name:<13} Bf16, x and dy as bits: x·w {fwd:6.1}  dy·wᵀ {bwd_x:6.1}  xᵀ·dy {bwd_w:6.1} GFLOP/s");
            }
        }
    }
}
