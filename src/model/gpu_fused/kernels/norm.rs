//! LayerNorm on the GPU: the forward (a cube per row: mean, variance around it, the normalised row, μ and 1/σ kept
//! for the backward) and the backward (the input's gradient a cube per row; γ's and β's gradients as column sums
//! in chunks of rows, then the chunks' sums), f32 statistics whatever the gradient's float type.

use super::{block_for, chunk_end, contiguous, cube_sum, empty, grid, pitched_rows, row_chunks, row_index, rows_of};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// LayerNorm of each row of `x` (`[rows, d]`, row `r` at `r·xp`: `pitched_rows`) into packed `y`:
/// `y = (x − μ)·r·γ + β` with `r = 1/√(σ² + ε)`, the variance taken around the mean (two passes, as burn's
/// composition); writes μ and r per row for the backward. `y` of the float type `F`: f32, or bf16/f16 rounded
/// once from the f32 value (what a cast of the f32 output gives: autocast's input to the next product).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ln_forward_kernel<F: Float>(
    x: &Tensor<f32>,
    gamma: &Tensor<f32>,
    beta: &Tensor<f32>,
    y: &mut Tensor<F>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    rows: u32,
    d: u32,
    xp: u32,
    eps: f32,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let mut sh = SharedMemory::<f32>::new(block);
    let n = d as usize;
    let base = row * n;
    let xb = row * xp as usize;
    let t = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;
    let count = f32::cast_from(d);

    let mut acc = f32::new(0.0);
    let mut j = t;
    while j < n {
        acc += x[xb + j];
        j += step;
    }
    let mu = cube_sum(&mut sh, acc) / count;

    let mut acc2 = f32::new(0.0);
    let mut j = t;
    while j < n {
        let c = x[xb + j] - mu;
        acc2 += c * c;
        j += step;
    }
    let var = cube_sum(&mut sh, acc2) / count;
    let r = f32::new(1.0) / f32::sqrt(var + eps);

    let mut j = t;
    while j < n {
        y[base + j] = F::cast_from((x[xb + j] - mu) * r * gamma[j] + beta[j]);
        j += step;
    }
    if t == 0 {
        mean[row] = mu;
        rstd[row] = r;
    }
}

/// LayerNorm's input gradient per row: with `x̂ = (x − μ)·r` and `h = g·γ`,
/// `dx = r·(h − mean(h) − x̂·mean(h·x̂))`; `g`'s and `x`'s rows `gp` and `xp` apart, `dx` packed. `g` of the
/// output's float type `F` (read exactly into f32).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ln_backward_kernel<F: Float>(
    g: &Tensor<F>,
    x: &Tensor<f32>,
    gamma: &Tensor<f32>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    rows: u32,
    d: u32,
    gp: u32,
    xp: u32,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let mut sh = SharedMemory::<f32>::new(block);
    let n = d as usize;
    let base = row * n;
    let gb = row * gp as usize;
    let xb = row * xp as usize;
    let t = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;
    let count = f32::cast_from(d);
    let mu = mean[row];
    let r = rstd[row];

    let mut sum_h = f32::new(0.0);
    let mut sum_hx = f32::new(0.0);
    let mut j = t;
    while j < n {
        let h = f32::cast_from(g[gb + j]) * gamma[j];
        sum_h += h;
        sum_hx += h * (x[xb + j] - mu) * r;
        j += step;
    }
    let a = cube_sum(&mut sh, sum_h) / count;
    let b = cube_sum(&mut sh, sum_hx) / count;

    let mut j = t;
    while j < n {
        let h = f32::cast_from(g[gb + j]) * gamma[j];
        let xh = (x[xb + j] - mu) * r;
        dx[base + j] = r * (h - a - xh * b);
        j += step;
    }
}

/// Partial sums of LayerNorm's parameter gradients: cube `(cx, c)` sums rows `c·chunk .. (c+1)·chunk` of
/// `g·x̂` (γ's gradient) and of `g` (β's) for the columns its units own, into row `c` of `dgamma`/`dbeta`
/// (`[chunks, d]`); `g`'s and `x`'s rows `gp` and `xp` apart, `g` of the float type `F`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ln_param_partials_kernel<F: Float>(
    g: &Tensor<F>,
    x: &Tensor<f32>,
    mean: &Tensor<f32>,
    rstd: &Tensor<f32>,
    dgamma: &mut Tensor<f32>,
    dbeta: &mut Tensor<f32>,
    rows: u32,
    d: u32,
    gp: u32,
    xp: u32,
    chunk: u32,
    #[define(F)] _dtype: StorageType,
) {
    let col = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let n = d as usize;
    if col >= n {
        terminate!();
    }
    let c = CUBE_POS_Y as usize;
    let start = c * chunk as usize;
    let end = chunk_end(start, chunk, rows);
    let mut sg = f32::new(0.0);
    let mut sb = f32::new(0.0);
    let mut r = start;
    while r < end {
        let gv = f32::cast_from(g[r * gp as usize + col]);
        sg += gv * (x[r * xp as usize + col] - mean[r]) * rstd[r];
        sb += gv;
        r += 1;
    }
    dgamma[c * n + col] = sg;
    dbeta[c * n + col] = sb;
}

/// The column sums of both partial-sum tensors (`[chunks, d]`) from [`ln_param_partials_kernel`]: γ's and β's
/// gradients (`[d]`) in one launch (burn's reduction would take one each); unit `col` sums its column in order.
#[cube(launch)]
fn ln_param_sums_kernel(pg: &Tensor<f32>, pb: &Tensor<f32>, dgamma: &mut Tensor<f32>, dbeta: &mut Tensor<f32>, chunks: u32, d: u32) {
    let col = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let n = d as usize;
    if col >= n {
        terminate!();
    }
    let mut sg = f32::new(0.0);
    let mut sb = f32::new(0.0);
    let mut c = 0usize;
    while c < chunks as usize {
        sg += pg[c * n + col];
        sb += pb[c * n + col];
        c += 1;
    }
    dgamma[col] = sg;
    dbeta[col] = sb;
}

/// LayerNorm of `x`'s rows (`GpuKernels::ln_forward`): `[y, mean, rstd]`, `y` of the float type `out`.
pub(super) fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    eps: f64,
    out: DType,
) -> [CubeTensor<R>; 3] {
    let ((x, xp), gamma, beta) = (pitched_rows(x), into_contiguous(gamma), into_contiguous(beta));
    let shape = x.shape();
    let (rows, d) = rows_of(&shape);
    let y = contiguous(empty_device_contiguous_dtype::<R>(x.client.clone(), x.device.clone(), shape, out));
    let mean = empty(&x, Shape::new([rows]));
    let rstd = empty(&x, Shape::new([rows]));
    let client = x.client.clone();
    let block = block_for(&client, d);
    ln_forward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(block as u32),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        rows as u32,
        d as u32,
        xp as u32,
        eps as f32,
        block,
        out.into(),
    );
    [y, mean, rstd]
}

/// LayerNorm's backward (`GpuKernels::ln_backward`): `[dx, dgamma, dbeta]` from the output's gradient `g`.
pub(super) fn backward<R: CubeRuntime>(
    g: CubeTensor<R>,
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    mean: CubeTensor<R>,
    rstd: CubeTensor<R>,
) -> [CubeTensor<R>; 3] {
    let ((g, gp), (x, xp), gamma) = (pitched_rows(g), pitched_rows(x), into_contiguous(gamma));
    let shape = x.shape();
    let (rows, d) = rows_of(&shape);
    let client = x.client.clone();
    let dx = empty(&x, shape);
    let block = block_for(&client, d);
    let gt = g.dtype;
    ln_backward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(block as u32),
        g.clone().into_tensor_arg(),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        rows as u32,
        d as u32,
        gp as u32,
        xp as u32,
        block,
        gt.into(),
    );
    // γ's and β's gradients: column sums over the rows, in chunks of rows (enough cubes to fill a GPU),
    // then the chunks' sums (one launch for both).
    let (chunks, chunk) = row_chunks(rows);
    let pg = empty(&x, Shape::new([chunks, d]));
    let pb = empty(&x, Shape::new([chunks, d]));
    let (dgamma, dbeta) = (empty(&x, Shape::new([d])), empty(&x, Shape::new([d])));
    let units = 64usize;
    ln_param_partials_kernel::launch::<R>(
        &client,
        CubeCount::Static(d.div_ceil(units) as u32, chunks as u32, 1),
        CubeDim::new_1d(units as u32),
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        rstd.into_tensor_arg(),
        pg.clone().into_tensor_arg(),
        pb.clone().into_tensor_arg(),
        rows as u32,
        d as u32,
        gp as u32,
        xp as u32,
        chunk as u32,
        gt.into(),
    );
    ln_param_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(d.div_ceil(units) as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        pg.into_tensor_arg(),
        pb.into_tensor_arg(),
        dgamma.clone().into_tensor_arg(),
        dbeta.clone().into_tensor_arg(),
        chunks as u32,
        d as u32,
    );
    [dx, dgamma, dbeta]
}
