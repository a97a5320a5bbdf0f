//! The CPU backend's reductions give the same bits on every x86-64 machine: burn-flex sums in order, one value
//! after another, as its scalar code does, not in as many SIMD lanes as the CPU has (its `simd` feature picks
//! AVX-512 or AVX2 at run time: an AVX-512 machine and an AVX2-only one then trained different bits, and the
//! committed results of one failed to reproduce on the other). The sums below are of values whose order changes
//! the rounding (each test checks that 8 lanes, as on AVX2, would give other bits); with the `simd` feature on,
//! the first two tests failed on an AVX2 machine (2026-12-05).

use burn::backend::Flex;
use burn::tensor::{activation::softmax, Tensor, TensorData};

/// `n` values of mixed magnitudes and signs (a deterministic sequence), so that summing them in another order
/// rounds differently.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let scale = [1e-3f32, 1.0, 1e3][(s >> 20) as usize % 3];
            (u - 0.5) * scale
        })
        .collect()
}

fn tensor<const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn bits(t: Tensor<Flex, 1>) -> Vec<u32> {
    t.into_data().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// The sum, in order, as a sequential loop gives it.
fn in_order(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |s, x| s + x)
}

/// The sum in 8 lanes (lane `l` sums every 8th value from `l`), then the lanes in order.
fn in_8_lanes(v: &[f32]) -> f32 {
    (0..8).map(|l| in_order(&v.iter().skip(l).step_by(8).copied().collect::<Vec<_>>())).fold(0.0, |s, x| s + x)
}

#[test]
fn a_whole_tensor_sums_in_order() {
    for n in [17, 100, 1000, 4099] {
        let v = values(n, n as u64);
        // The check is only worth something if another order gives other bits (8 lanes, as on AVX2).
        assert_ne!(in_8_lanes(&v).to_bits(), in_order(&v).to_bits(), "{n}: values whose order does not matter");
        assert_eq!(bits(tensor(&v, [n]).sum()), vec![in_order(&v).to_bits()], "sum of {n}");
        assert_eq!(bits(tensor(&v, [n]).mean()), vec![(in_order(&v) / n as f32).to_bits()], "mean of {n}");
    }
}

#[test]
fn rows_sum_in_order() {
    let (rows, len) = (7, 515);
    let v = values(rows * len, 3);
    let want: Vec<u32> = v.chunks(len).map(|r| in_order(r).to_bits()).collect();
    assert!(v.chunks(len).any(|r| in_8_lanes(r) != in_order(r)), "rows whose order does not matter");
    assert_eq!(bits(tensor(&v, [rows, len]).sum_dim(1).reshape([rows])), want, "last axis");
    // The same rows stored transposed (the reduced axis is then the first one of the view).
    let t = tensor(&v, [rows, len]).transpose();
    assert_eq!(bits(t.sum_dim(0).reshape([rows])), want, "first axis of a transposed view");
}

/// Softmax over rows: the maximum, then `e^(x − max)` summed in order, then each value times the reciprocal
/// of the sum (burn-flex's scalar row kernel).
#[test]
fn softmax_sums_each_row_in_order() {
    let (rows, len) = (5, 203);
    // In [-4, 4], so that many terms of each row's sum count.
    let v: Vec<f32> = values(rows * len, 9).into_iter().map(|x| x.clamp(-0.5, 0.5) * 8.0).collect();
    let got = bits(softmax(tensor(&v, [rows, len]), 1).reshape([rows * len]));
    let mut want = Vec::with_capacity(rows * len);
    let mut order_matters = false;
    for r in v.chunks(len) {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = r.iter().map(|x| (x - max).exp()).collect();
        order_matters |= in_8_lanes(&e) != in_order(&e);
        let inv = 1.0 / in_order(&e);
        want.extend(e.iter().map(|x| (x * inv).to_bits()));
    }
    assert!(order_matters, "rows whose order does not matter");
    assert_eq!(got, want);
}
