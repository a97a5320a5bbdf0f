//! Softmax over the last axis on the GPU, forward and backward: a cube per row, in f32 whatever the tensors'
//! float type, each output rounded once.

use super::{block_for, cube_max, cube_sum, empty_as, grid, pitched_rows, row_index, rows_of};
use burn::tensor::TensorMetadata;
use burn_cubecl::cubecl;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// Softmax of each row of `x` (`[rows, n]`, row `r` at `r·xp`) into packed `y`: `y = exp(x − max)/Σ exp(x − max)`. `F` is the tensors'
/// float type (f32, bf16, f16: the type is the launch's, [`StorageType`]); the arithmetic is f32 whatever `F` is,
/// each output rounded to `F` once, as PyTorch's autocast runs a softmax on bf16 scores (cast to f32, softmax, the
/// probabilities cast back for the product with v). The third pass recomputes `exp` rather than storing it: in
/// `F` a stored value would be rounded twice.
#[cube(launch)]
fn softmax_forward_kernel<F: Float>(
    x: &Tensor<F>,
    y: &mut Tensor<F>,
    rows: u32,
    n: u32,
    xp: u32,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let mut sh = SharedMemory::<f32>::new(block);
    let len = n as usize;
    let base = row * len;
    let xb = row * xp as usize;
    let t = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;

    // Every unit starts from the row's first value (no infinite constant: WGSL rejects them).
    let mut m = f32::cast_from(x[xb]);
    let mut j = t;
    while j < len {
        let v = f32::cast_from(x[xb + j]);
        if v > m {
            m = v;
        }
        j += step;
    }
    let m = cube_max(&mut sh, m);

    let mut s = f32::new(0.0);
    let mut j = t;
    while j < len {
        s += f32::exp(f32::cast_from(x[xb + j]) - m);
        j += step;
    }
    let s = cube_sum(&mut sh, s);

    let mut j = t;
    while j < len {
        y[base + j] = F::cast_from(f32::exp(f32::cast_from(x[xb + j]) - m) / s);
        j += step;
    }
}

/// Softmax's input gradient per row: `dx = y·(g − Σ g·y)`, in f32 whatever the tensors' float type `F`; `g`'s
/// and `y`'s rows `gp` and `yp` apart, `dx` packed.
#[cube(launch)]
fn softmax_backward_kernel<F: Float>(
    g: &Tensor<F>,
    y: &Tensor<F>,
    dx: &mut Tensor<F>,
    rows: u32,
    n: u32,
    gp: u32,
    yp: u32,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let mut sh = SharedMemory::<f32>::new(block);
    let len = n as usize;
    let base = row * len;
    let gb = row * gp as usize;
    let yb = row * yp as usize;
    let t = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;

    let mut s = f32::new(0.0);
    let mut j = t;
    while j < len {
        s += f32::cast_from(g[gb + j]) * f32::cast_from(y[yb + j]);
        j += step;
    }
    let s = cube_sum(&mut sh, s);

    let mut j = t;
    while j < len {
        let yv = f32::cast_from(y[yb + j]);
        dx[base + j] = F::cast_from(yv * (f32::cast_from(g[gb + j]) - s));
        j += step;
    }
}

/// Softmax of `x`'s rows (`GpuKernels::softmax_forward`).
pub(super) fn forward<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let (x, xp) = pitched_rows(x);
    let shape = x.shape();
    let (rows, n) = rows_of(&shape);
    let client = x.client.clone();
    let y = empty_as(&x, shape);
    let dtype = x.dtype;
    let block = block_for(&client, n);
    softmax_forward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(block as u32),
        x.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        xp as u32,
        block,
        dtype.into(),
    );
    y
}

/// Softmax's input gradient from the output's gradient `g` and the output `y` (`GpuKernels::softmax_backward`).
pub(super) fn backward<R: CubeRuntime>(g: CubeTensor<R>, y: CubeTensor<R>) -> CubeTensor<R> {
    // One float type for both (the kernel's): the gradient cast to the output's should they differ.
    let g = if g.dtype == y.dtype { g } else { burn_cubecl::kernel::cast(g, y.dtype) };
    let ((g, gp), (y, yp)) = (pitched_rows(g), pitched_rows(y));
    let shape = y.shape();
    let (rows, n) = rows_of(&shape);
    let client = y.client.clone();
    let dx = empty_as(&y, shape);
    let dtype = y.dtype;
    let block = block_for(&client, n);
    softmax_backward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(block as u32),
        g.into_tensor_arg(),
        y.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        rows as u32,
        n as u32,
        gp as u32,
        yp as u32,
        block,
        dtype.into(),
    );
    dx
}
