//! Parameter initialisers computed on the host from a seeded ChaCha RNG, so a model's initial weights are the
//! same on every backend (CPU or CUDA) for the same seed. Matches the Flax/Scenic initialisers of the paper.

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded host RNG for initialisation.
pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        Init { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Xavier-uniform `[fan_in, fan_out]`.
    pub fn xavier_uniform(&mut self, fan_in: usize, fan_out: usize) -> Vec<f32> {
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        (0..fan_in * fan_out).map(|_| self.rng.random_range(-limit..limit) as f32).collect()
    }

    /// Xavier-uniform for `parts` projections of `fan_in → fan_out` each, side by side in one
    /// `[fan_in, parts · fan_out]` kernel: the fused qkv, whose q, k and v Flax initialises as three `[D, D]`
    /// kernels (limit √(6 / 2D), not the √(6 / 4D) of one `[D, 3D]` kernel).
    pub fn xavier_uniform_parts(&mut self, fan_in: usize, fan_out: usize, parts: usize) -> Vec<f32> {
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        (0..fan_in * fan_out * parts).map(|_| self.rng.random_range(-limit..limit) as f32).collect()
    }

    /// LeCun normal (Flax: truncated normal at ±2σ, variance 1/fan_in).
    pub fn lecun_normal(&mut self, fan_in: usize, n: usize) -> Vec<f32> {
        // std of a standard normal truncated to [-2, 2] is 0.87962566103423978.
        let std = (1.0 / fan_in as f64).sqrt() / 0.879_625_661_034_239_8;
        (0..n)
            .map(|_| loop {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                if z.abs() <= 2.0 {
                    break (z * std) as f32;
                }
            })
            .collect()
    }

    /// Normal with standard deviation `std`.
    pub fn normal(&mut self, std: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                (z * std) as f32
            })
            .collect()
    }

    /// A sub-seed (for per-component streams).
    pub fn fork(&mut self) -> Init {
        Init::new(self.rng.random())
    }
}

/// A parameter tensor from host values.
pub fn param<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Zeros.
pub fn zeros<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}
