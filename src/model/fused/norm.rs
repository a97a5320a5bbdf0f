//! The squared norm of a CPU tensor for the optimizer's global-norm clipping, summed in f64.
//!
//! burn-flex's `sum` adds f32 values one after another (its `simd` feature is off so that every CPU gives the same
//! bits, `tests/cpu_bits.rs`): over a large gradient the running f32 sum drifts (2.5 × 10⁻⁵ relative on a million
//! squares, against wgpu's partial sums in `tests/wgpu.rs`). Here each square is exact in f64 and the sums of
//! fixed chunks of 2¹⁶ values are added in chunk order: the same bits on any number of threads.

use super::{cast, contiguous, slice};
use burn::backend::Flex;
use burn::tensor::{backend::Backend, DType, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::any::TypeId;

/// Values per chunk (a fixed split: the result does not depend on the thread count).
const CHUNK: usize = 1 << 16;

/// `Σ g²` of an f32 `Flex` tensor in f64, or `None` for other backends and float types (the caller sums with
/// the backend's own ops).
///
/// # Shapes
/// `g: [..]` → a scalar
pub fn squared_sum<B: Backend, const D: usize>(g: &Tensor<B, D>) -> Option<f64> {
    if TypeId::of::<B>() != TypeId::of::<Flex>() || g.dtype() != DType::F32 {
        return None;
    }
    let t: FlexTensor = cast(g.clone().into_primitive().tensor())?;
    let t = contiguous(t);
    Some(squared_sum_of(slice(&t)))
}

/// `Σ x²` in f64, in fixed chunks added in order.
fn squared_sum_of(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().fold(0.0f64, |s, &v| s + f64::from(v) * f64::from(v))).collect();
    partial.into_iter().fold(0.0, |s, p| s + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Close to the exact sum where the f32 running sum is not, and the same bits on one thread and on several.
    #[test]
    fn sums_squares_in_f64_in_a_fixed_order() {
        let n: usize = 1_000_003;
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 1000.0).collect();
        let exact: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let t = Tensor::<Flex, 1>::from_data(TensorData::new(v.clone(), [n]), &Default::default());
        let ours = squared_sum(&t).expect("an f32 Flex tensor");
        assert!((ours - exact).abs() <= 1e-10 * exact, "{ours} vs {exact}");
        let f32_running = v.iter().fold(0.0f32, |s, x| s + x * x) as f64;
        assert!((f32_running - exact).abs() > 1e-7 * exact, "values where the f32 running sum drifts");
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| squared_sum(&t).unwrap());
        assert_eq!(one.to_bits(), ours.to_bits());
        // A strided view (a transpose) is read in its logical order.
        let m = Tensor::<Flex, 2>::from_data(TensorData::new(v[..1000 * 1000].to_vec(), [1000, 1000]), &Default::default());
        let s = squared_sum(&m.transpose()).unwrap();
        assert!((s - v[..1_000_000].iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>()).abs() <= 1e-9 * s);
    }
}
