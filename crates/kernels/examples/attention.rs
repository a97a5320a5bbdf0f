//! GFLOP/s of the attention's per-head products at the ViT-Ti probe's shapes (batch 64, 65 tokens, 3 heads of
//! 64; the fused block's operand layouts: `q | k | v` rows of `3·192` values), forward (`q·kᵀ`, `P·v`) and
//! backward (`dO·vᵀ`, `Pᵀ·dO`, `dS·k`, `dSᵀ·q`), examples in parallel on the rayon pool and each product on one
//! thread, as the block runs them. Interleaved rounds of the small-product path (`small.rs`) and of the blocked
//! path (`sgemm::small_products(false)`); prints each round's pair and the median ratio.
//!
//!   cargo run --release -p polyflow-kernels --example attention [ROUNDS]
//!   ONLY=0..5   one of the six products alone (in the order above)
//!   REPEAT=R    each product R times in a row (the later ones on operands already in L1/L2: the kernels' own
//!               speed, without the first reads from L3 or memory)

use polyflow_kernels::{matmul, sgemm, Mat};
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(15);
    let (b, n, h, hd) = (64usize, 65usize, 3usize, 64usize);
    let d = h * hd;
    let qkv: Vec<f32> = (0..b * n * 3 * d).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let dout: Vec<f32> = (0..b * n * d).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
    let probs: Vec<f32> = (0..b * h * n * n).map(|i| ((i * 31) % 997) as f32 * 1e-3).collect();
    let mut att = vec![0.0f32; b * n * d];
    let mut dqkv = vec![0.0f32; b * n * 3 * d];
    // ONLY=i (0..6): time one of the six products alone (for finding which is slow).
    let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
    let on = |i: usize| only.is_none_or(|o| o == i);
    // REPEAT=r: each product r times in a row (the later ones on operands in L1/L2).
    let repeat: usize = std::env::var("REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut run = || {
        att.par_chunks_mut(n * d)
            .zip(dqkv.par_chunks_mut(n * 3 * d))
            .zip(qkv.par_chunks(n * 3 * d).zip(dout.par_chunks(n * d)).zip(probs.par_chunks(h * n * n)))
            .for_each(|((o, g), ((rows, dov), pr))| {
                let mut s = vec![0.0f32; n * n];
                for (hi, p) in pr.chunks(n * n).enumerate().flat_map(|x| std::iter::repeat_n(x, repeat)) {
                    let off = hi * hd;
                    let q = Mat { data: &rows[off..], rs: 3 * d, cs: 1 };
                    let kk = Mat { data: &rows[d + off..], rs: 3 * d, cs: 1 };
                    let kt = Mat { data: &rows[d + off..], rs: 1, cs: 3 * d };
                    let v = Mat { data: &rows[2 * d + off..], rs: 3 * d, cs: 1 };
                    let vt = Mat { data: &rows[2 * d + off..], rs: 1, cs: 3 * d };
                    let dom = Mat { data: &dov[off..], rs: d, cs: 1 };
                    if on(0) {
                        matmul(n, n, hd, q, kt, &mut s, n, false, false)
                    }; // q·kᵀ
                    if on(1) {
                        matmul(n, hd, n, Mat::rows(p, n), v, &mut o[off..], d, false, false)
                    }; // P·v
                    if on(2) {
                        matmul(n, n, hd, dom, vt, &mut s, n, false, false)
                    }; // dO·vᵀ
                    if on(3) {
                        matmul(n, hd, n, Mat::t(p, n), dom, &mut g[2 * d + off..], 3 * d, false, false)
                    }; // Pᵀ·dO
                    if on(4) {
                        matmul(n, hd, n, Mat::rows(p, n), kk, &mut g[off..], 3 * d, false, false)
                    }; // dS·k
                    if on(5) {
                        matmul(n, hd, n, Mat::t(p, n), q, &mut g[d + off..], 3 * d, false, false)
                    }; // dSᵀ·q
                }
            })
    };
    let flops = (b * h) as f64 * 2.0 * (n * n * hd) as f64 * if only.is_some() { 1.0 } else { 6.0 } * repeat as f64;
    let mut time = |small: bool| {
        sgemm::small_products(small);
        let t = Instant::now();
        for _ in 0..10 {
            run();
        }
        10.0 * flops / t.elapsed().as_secs_f64() / 1e9
    };
    time(true);
    time(false);
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let (s, p) = if r % 2 == 0 {
            let s = time(true);
            (s, time(false))
        } else {
            let p = time(false);
            (time(true), p)
        };
        println!("round {r:2}: small {s:6.1}  blocked {p:6.1} GFLOP/s  ({:.2}x)", s / p);
        ratios.push(s / p);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median small / blocked: {:.2}x over {rounds} rounds ({} threads)", ratios[rounds / 2], rayon::current_num_threads());
}
