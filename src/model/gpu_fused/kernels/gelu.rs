//! GELU (tanh approximation) on the GPU, forward and backward, one unit per element, in f32 whatever the
//! tensors' float type, each output rounded once.

use super::{elementwise, empty_as, pitched_rows, rows_of};
use burn::tensor::TensorMetadata;
use burn_cubecl::cubecl;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// `σ(2z)` of GELU's tanh approximation at `v`, `z = √(2/π)·(v + 0.044715·v³)` (`0.5·(1 + tanh z)`).
#[cube]
fn gelu_gate(v: f32) -> f32 {
    // 2·√(2/π) = 1.5957691216 (1.5957692 in f32)
    let z2 = f32::new(1.595_769_2) * (v + f32::new(0.044_715) * v * v * v);
    f32::new(1.0) / (f32::new(1.0) + f32::exp(f32::new(0.0) - z2))
}

/// GELU, tanh approximation, of each element of `x` (`[rows, n]`, rows `xp` apart) into packed `y`:
/// `x·σ(2z)` with `z = √(2/π)·(x + 0.044715·x³)` (= `0.5·x·(1 + tanh z)`, the form `block::gelu_tanh` composes),
/// in f32 whatever `F` is, rounded once to `F`; unit `i` (a grid-stride loop) writes element `i`.
#[cube(launch)]
fn gelu_forward_kernel<F: Float>(x: &Tensor<F>, y: &mut Tensor<F>, n: u32, xp: u32, total: u32, #[define(F)] _dtype: StorageType) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (n, xp) = (n as usize, xp as usize);
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        let v = f32::cast_from(x[(i / n) * xp + i % n]);
        y[i] = F::cast_from(v * gelu_gate(v));
        i += step;
    }
}

/// GELU's (tanh approximation) input gradient from the output's `g` and the input `x` (`[rows, n]`, rows `gp` and
/// `xp` apart) into packed `dx`: `g·(σ(2z) + x·σ(2z)·(1 − σ(2z))·2z′)`, `2z′ = 2·√(2/π)·(1 + 3·0.044715·x²)`, in
/// f32, rounded once to `F`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gelu_backward_kernel<F: Float>(
    g: &Tensor<F>,
    x: &Tensor<F>,
    dx: &mut Tensor<F>,
    n: u32,
    gp: u32,
    xp: u32,
    total: u32,
    #[define(F)] _dtype: StorageType,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (n, gp, xp) = (n as usize, gp as usize, xp as usize);
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        let (r, c) = (i / n, i % n);
        let v = f32::cast_from(x[r * xp + c]);
        let s = gelu_gate(v);
        let dz2 = f32::new(1.595_769_2) * (f32::new(1.0) + f32::new(0.134_145) * v * v);
        let d = s + v * s * (f32::new(1.0) - s) * dz2;
        dx[i] = F::cast_from(f32::cast_from(g[r * gp + c]) * d);
        i += step;
    }
}

/// GELU (tanh) of every element of `x` (`GpuKernels::gelu_tanh_forward`).
pub(super) fn forward<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    // Read at its pitch: the input is a product's output (fc1's), padded rows on CUDA.
    let (x, xp) = pitched_rows(x);
    let shape = x.shape();
    let (_, n) = rows_of(&shape);
    let total = shape.num_elements();
    let y = empty_as(&x, shape);
    let dtype = x.dtype;
    let (count, dim) = elementwise(total);
    gelu_forward_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        x.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        n as u32,
        xp as u32,
        total as u32,
        dtype.into(),
    );
    y
}

/// GELU's input gradient from the output's `g` and the input `x` (`GpuKernels::gelu_tanh_backward`).
pub(super) fn backward<R: CubeRuntime>(g: CubeTensor<R>, x: CubeTensor<R>) -> CubeTensor<R> {
    // One float type for both (the kernel's): the gradient cast to the input's should they differ.
    let g = if g.dtype == x.dtype { g } else { burn_cubecl::kernel::cast(g, x.dtype) };
    let ((g, gp), (x, xp)) = (pitched_rows(g), pitched_rows(x));
    let shape = x.shape();
    let (_, n) = rows_of(&shape);
    let total = shape.num_elements();
    let dx = empty_as(&x, shape);
    let dtype = x.dtype;
    let (count, dim) = elementwise(total);
    gelu_backward_kernel::launch::<R>(
        &x.client.clone(),
        count,
        dim,
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        n as u32,
        gp as u32,
        xp as u32,
        total as u32,
        dtype.into(),
    );
    dx
}
