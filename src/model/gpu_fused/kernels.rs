//! The CubeCL kernels and their launches on burn's CubeCL backend (CUDA, wgpu): LayerNorm forward and backward,
//! softmax over the last axis forward and backward, each row of a tensor handled by one cube; the attention's
//! head split and its transpose, and the optimizer's gradient pack and weight unpack, one unit per element; partial
//! sums of squares (the gradient norm) and of columns (a bias's gradient) in a fixed grid; GELU (tanh) forward and
//! backward, one unit per element. LayerNorm and the pack take f32 tensors; softmax, GELU, the head split and
//! merge and the column sums any float type (f32, bf16, f16: the
//! launch's `#[define]`d type), computing in f32.
//!
//! Reductions inside a cube go through shared memory as a tree (no plane/warp operations: lavapipe, the Vulkan
//! driver CI runs, has none), so a cube has a power-of-two number of units; each unit strides over its row.

use super::GpuKernels;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use cubecl::prelude::*;

mod loss;

/// The sum of every unit's `v` in the cube (all units get it). `sh` holds `CUBE_DIM_X` floats, a power of two.
#[cube]
fn cube_sum(sh: &mut SharedMemory<f32>, v: f32) -> f32 {
    let t = UNIT_POS_X as usize;
    sh[t] = v;
    sync_cube();
    let mut s = (CUBE_DIM_X / 2) as usize;
    while s > 0 {
        if t < s {
            sh[t] = sh[t] + sh[t + s];
        }
        sync_cube();
        s /= 2;
    }
    let r = sh[0];
    sync_cube();
    r
}

/// The largest of every unit's `v` in the cube (all units get it).
#[cube]
fn cube_max(sh: &mut SharedMemory<f32>, v: f32) -> f32 {
    let t = UNIT_POS_X as usize;
    sh[t] = v;
    sync_cube();
    let mut s = (CUBE_DIM_X / 2) as usize;
    while s > 0 {
        if t < s {
            let o = sh[t + s];
            if o > sh[t] {
                sh[t] = o;
            }
        }
        sync_cube();
        s /= 2;
    }
    let r = sh[0];
    sync_cube();
    r
}

/// The row this cube handles (the grid is 2-D: Vulkan allows at most 65,535 cubes along an axis).
#[cube]
fn row_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

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

/// The end of the chunk of rows that starts at `start`: `start + chunk`, or `rows` for the last chunk.
#[cube]
fn chunk_end(start: usize, chunk: u32, rows: u32) -> usize {
    let mut end = start + chunk as usize;
    if end > rows as usize {
        end = rows as usize;
    }
    end
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

/// Partial column sums of `g` (`[rows, d]`, rows `gp` apart, of the float type `F`: f32, bf16 or f16): cube
/// `(cx, c)` sums rows `c·chunk .. (c+1)·chunk` for the columns its units own into row `c` of `out` (`[chunks, d]`,
/// f32), in row order, in f32.
#[cube(launch)]
fn col_partials_kernel<F: Float>(
    g: &Tensor<F>,
    out: &mut Tensor<f32>,
    rows: u32,
    d: u32,
    gp: u32,
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
    let mut s = f32::new(0.0);
    let mut r = start;
    while r < end {
        s += f32::cast_from(g[r * gp as usize + col]);
        r += 1;
    }
    out[c * n + col] = s;
}

/// The column sums of `p` (`[chunks, d]`, f32, from [`col_partials_kernel`]) into `out` (`[d]`, of the float type
/// `F`): unit `col` sums its column in order, in f32, and rounds the sum to `F` once.
#[cube(launch)]
fn col_sums_kernel<F: Float>(p: &Tensor<f32>, out: &mut Tensor<F>, chunks: u32, d: u32, #[define(F)] _dtype: StorageType) {
    let col = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let n = d as usize;
    if col >= n {
        terminate!();
    }
    let mut s = f32::new(0.0);
    let mut c = 0usize;
    while c < chunks as usize {
        s += p[c * n + col];
        c += 1;
    }
    out[col] = F::cast_from(s);
}

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

/// Where element `i` of a `[B, H, N, hd]` head tensor (contiguous) sits in the projection `[B, N, 3·H·hd]` whose
/// rows (tokens) are `row` apart (`3·H·hd` when packed): the q part's index (k's is `+ H·hd`, v's `+ 2·H·hd`).
#[cube]
fn packed_at(i: usize, n: usize, heads: usize, hd: usize, row: usize) -> usize {
    let e = i % hd;
    let r = i / hd;
    let t = r % n;
    let r = r / n;
    let h = r % heads;
    let b = r / heads;
    (b * n + t) * row + h * hd + e
}

/// The attention's heads from the packed projection: `qkv` (`[B, N, 3·D]`, its tokens `row` apart, the last axis
/// q | k | v, each `H` heads of `hd`) into `q·scale`, `k`, `v` as `[B, H, N, hd]`; unit `i` (a grid-stride loop) writes
/// element `i` of each. `F`: the tensors' float type; `q·scale` is computed in f32 and rounded once.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn qkv_split_kernel<F: Float>(
    qkv: &Tensor<F>,
    q: &mut Tensor<F>,
    k: &mut Tensor<F>,
    v: &mut Tensor<F>,
    n: u32,
    heads: u32,
    hd: u32,
    row: u32,
    total: u32,
    scale: f32,
    #[define(F)] _dtype: StorageType,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (n, heads, hd) = (n as usize, heads as usize, hd as usize);
    let d = heads * hd;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        let src = packed_at(i, n, heads, hd, row as usize);
        q[i] = F::cast_from(f32::cast_from(qkv[src]) * scale);
        k[i] = qkv[src + d];
        v[i] = qkv[src + 2 * d];
        i += step;
    }
}

/// [`qkv_split_kernel`]'s transpose: the gradients of `q·scale`, `k`, `v` (`[B, H, N, hd]`, contiguous) into the
/// packed projection's (`[B, N, 3·D]`), `dq` multiplied by `scale` (in f32, rounded once to `F`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn qkv_merge_kernel<F: Float>(
    dq: &Tensor<F>,
    dk: &Tensor<F>,
    dv: &Tensor<F>,
    out: &mut Tensor<F>,
    n: u32,
    heads: u32,
    hd: u32,
    total: u32,
    scale: f32,
    #[define(F)] _dtype: StorageType,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (n, heads, hd) = (n as usize, heads as usize, hd as usize);
    let d = heads * hd;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        let dst = packed_at(i, n, heads, hd, 3 * heads * hd);
        out[dst] = F::cast_from(f32::cast_from(dq[i]) * scale);
        out[dst + d] = dk[i];
        out[dst + 2 * d] = dv[i];
        i += step;
    }
}

/// The attention's heads of `g` (`[B·N, H·hd]`, its tokens `row` apart) as `[B, H, N, hd]` (packed): unit `i` (a
/// grid-stride loop) writes element `i`. The attention output's gradient, split as [`qkv_split_kernel`] splits one
/// third of the projection.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn heads_split_kernel<F: Float>(
    g: &Tensor<F>,
    out: &mut Tensor<F>,
    n: u32,
    heads: u32,
    hd: u32,
    row: u32,
    total: u32,
    #[define(F)] _dtype: StorageType,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        out[i] = g[packed_at(i, n as usize, heads as usize, hd as usize, row as usize)];
        i += step;
    }
}

/// [`heads_split_kernel`]'s transpose: `o` (`[B, H, N, hd]`, rows of `hd` `op` apart) merged into packed `out`
/// (`[B·N, H·hd]`): unit `i` moves element `i` of `o`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn heads_merge_kernel<F: Float>(
    o: &Tensor<F>,
    out: &mut Tensor<F>,
    n: u32,
    heads: u32,
    hd: u32,
    op: u32,
    total: u32,
    #[define(F)] _dtype: StorageType,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (n, heads, hd) = (n as usize, heads as usize, hd as usize);
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < total as usize {
        out[packed_at(i, n, heads, hd, heads * hd)] = o[(i / hd) * op as usize + i % hd];
        i += step;
    }
}

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

/// Units per cube and cubes (at most 32,768, a grid-stride loop covering the rest) for one unit per element.
fn elementwise(total: usize) -> (CubeCount, CubeDim) {
    let units = 256usize;
    (CubeCount::Static(total.div_ceil(units).clamp(1, 32_768) as u32, 1, 1), CubeDim::new_1d(units as u32))
}

/// Tensors one [`pack_kernel`] launch copies: with the output and CubeCL's metadata buffer, 7 storage buffers,
/// within WebGPU's default limit of 8 per shader stage.
pub(super) const PACK_GROUP: usize = 5;

/// Copies `n` elements of `a` (of the float type `F`), rows of `w` elements `p` apart (packed: `p = w`), to f32
/// `out[o ..]` in order (exact: f32 holds every bf16 and f16 value): a grid-stride loop along x.
#[cube]
fn copy_rows<F: Float>(a: &Tensor<F>, out: &mut Tensor<f32>, o: u32, n: u32, w: u32, p: u32) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let (w, p) = (w as usize, p as usize);
    while i < n as usize {
        out[o as usize + i] = f32::cast_from(a[(i / w) * p + i % w]);
        i += step;
    }
}

/// Copies each `a_k` (`n_k` elements in rows of `w_k`, `p_k` apart; all five of the float type `F`) to f32
/// `out[o_k ..]`; cube row `CUBE_POS_Y` = k.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn pack_kernel<F: Float>(
    a0: &Tensor<F>,
    a1: &Tensor<F>,
    a2: &Tensor<F>,
    a3: &Tensor<F>,
    a4: &Tensor<F>,
    out: &mut Tensor<f32>,
    o0: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    n0: u32,
    n1: u32,
    n2: u32,
    n3: u32,
    n4: u32,
    w0: u32,
    w1: u32,
    w2: u32,
    w3: u32,
    w4: u32,
    p0: u32,
    p1: u32,
    p2: u32,
    p3: u32,
    p4: u32,
    #[define(F)] _dtype: StorageType,
) {
    let k = CUBE_POS_Y;
    if k == 0 {
        copy_rows(a0, out, o0, n0, w0, p0);
    } else if k == 1 {
        copy_rows(a1, out, o1, n1, w1, p1);
    } else if k == 2 {
        copy_rows(a2, out, o2, n2, w2, p2);
    } else if k == 3 {
        copy_rows(a3, out, o3, n3, w3, p3);
    } else {
        copy_rows(a4, out, o4, n4, w4, p4);
    }
}

/// Copies f32 `flat[o .. o + n]` to `b` of the float type `F` (each value rounded to `F` as burn's cast rounds it,
/// CubeCL's conversion): a grid-stride loop along x.
#[cube]
fn copy_out<F: Float>(flat: &Tensor<f32>, b: &mut Tensor<F>, o: u32, n: u32) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < n as usize {
        b[i] = F::cast_from(flat[o as usize + i]);
        i += step;
    }
}

/// Copies `flat[o_k .. o_k + n_k]` to each `b_k` (all five of the float type `F`); cube row `CUBE_POS_Y` = k
/// ([`pack_kernel`]'s inverse).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn unpack_kernel<F: Float>(
    flat: &Tensor<f32>,
    b0: &mut Tensor<F>,
    b1: &mut Tensor<F>,
    b2: &mut Tensor<F>,
    b3: &mut Tensor<F>,
    b4: &mut Tensor<F>,
    o0: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    n0: u32,
    n1: u32,
    n2: u32,
    n3: u32,
    n4: u32,
    #[define(F)] _dtype: StorageType,
) {
    let k = CUBE_POS_Y;
    if k == 0 {
        copy_out(flat, b0, o0, n0);
    } else if k == 1 {
        copy_out(flat, b1, o1, n1);
    } else if k == 2 {
        copy_out(flat, b2, o2, n2);
    } else if k == 3 {
        copy_out(flat, b3, o3, n3);
    } else {
        copy_out(flat, b4, o4, n4);
    }
}

/// The flat optimizer's AdamW update, one unit per element (a grid-stride loop), in the composition's order
/// (`train::flat`): `g·scale[0]` (or `g·gs`), the moments, the bias-corrected step, the decay (`·mask[i]` where
/// there is a mask), the weights.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adam_kernel(
    w: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    scale: &Tensor<f32>,
    mask: &Tensor<f32>,
    w_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    n: u32,
    gs: f32,
    b1: f32,
    b2: f32,
    omb1: f32,
    omb2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    wd: f32,
    lr: f32,
    #[comptime] has_scale: bool,
    #[comptime] has_mask: bool,
    #[comptime] decay: bool,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < n as usize {
        let mut gi = g[i] * gs;
        if has_scale {
            gi = g[i] * scale[0];
        }
        let mi = m[i] * b1 + gi * omb1;
        let vi = v[i] * b2 + gi * gi * omb2;
        let mut u = (mi / c1) / (f32::sqrt(vi / c2) + eps);
        if decay {
            if has_mask {
                u += w[i] * wd * mask[i];
            } else {
                u += w[i] * wd;
            }
        }
        w_out[i] = w[i] - u * lr;
        m_out[i] = mi;
        v_out[i] = vi;
        i += step;
    }
}

/// The flat optimizer's SGD-with-momentum update, one unit per element: `m' = m·momentum + g·scale[0]` (or
/// `·gs`), `w' = w − m'·lr`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn sgd_kernel(
    w: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    scale: &Tensor<f32>,
    w_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    n: u32,
    gs: f32,
    momentum: f32,
    lr: f32,
    #[comptime] has_scale: bool,
) {
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while i < n as usize {
        let mut gi = g[i] * gs;
        if has_scale {
            gi = g[i] * scale[0];
        }
        let mi = m[i] * momentum + gi;
        w_out[i] = w[i] - mi * lr;
        m_out[i] = mi;
        i += step;
    }
}

/// Partial sums of squares of `g` (`n` elements, packed): cube `c` sums `g[i]²` over `i = c·256 + u (mod the
/// grid's units)` in a grid-stride loop and writes `out[c]` (one cube of 256 units per partial; a fixed grid,
/// so the summation order, and the result, depend on `n` only).
#[cube(launch)]
fn sq_partials_kernel(g: &Tensor<f32>, out: &mut Tensor<f32>, n: u32) {
    let mut sh = SharedMemory::<f32>::new(SQ_UNITS as usize);
    let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let mut s = f32::new(0.0);
    while i < n as usize {
        let v = g[i];
        s += v * v;
        i += step;
    }
    let s = cube_sum(&mut sh, s);
    if UNIT_POS_X == 0 {
        out[CUBE_POS_X as usize] = s;
    }
}

/// Units per cube of [`sq_partials_kernel`].
const SQ_UNITS: u32 = 256;

/// How many partial sums [`sq_partials_kernel`] writes for `n` elements: one per 256 elements, at most 1,024
/// (few enough for any reduction after it; the grid stays far within every API's cube count).
pub(super) fn sq_partials_len(n: usize) -> usize {
    n.div_ceil(SQ_UNITS as usize).clamp(1, 1024)
}

/// Units per cube for rows of `len`: the largest power of two ≤ `len`, within 32..=256 and the device's limit.
fn block_for<R: CubeRuntime>(client: &ComputeClient<R>, len: usize) -> usize {
    let max = (client.properties().hardware.max_cube_dim.0 as usize).clamp(1, 256);
    let pow2 = |v: usize| if v <= 1 { 1 } else { 1 << (usize::BITS - 1 - v.leading_zeros()) };
    pow2(len.clamp(32, 256)).min(pow2(max))
}

/// How column sums over `rows` rows are split: `(chunks, rows per chunk)`, about 8 rows a chunk and at most 1,024
/// chunks (enough cubes to fill a GPU, few enough partial sums for the second pass).
fn row_chunks(rows: usize) -> (usize, usize) {
    let chunk = rows.div_ceil(rows.div_ceil(8).clamp(1, 1024)).max(1);
    (rows.div_ceil(chunk).max(1), chunk)
}

/// A 2-D grid of `count` cubes (at most 32,768 along x).
fn grid(count: usize) -> CubeCount {
    let x = count.clamp(1, 32_768);
    CubeCount::Static(x as u32, count.div_ceil(x).max(1) as u32, 1)
}

/// `(rows, last)`: the number of rows of the last axis and its length.
pub(super) fn rows_of(shape: &Shape) -> (usize, usize) {
    let last = shape[shape.num_dims() - 1];
    (shape.num_elements() / last.max(1), last)
}

/// `t` with the distance between its rows (of the last axis), for the row kernels: as it is when its rows are
/// evenly spaced ([`super::row_pitch`]: a product's padded output on CUDA is read in place), else a packed copy.
fn pitched_rows<R: CubeRuntime>(t: CubeTensor<R>) -> (CubeTensor<R>, usize) {
    let shape = t.shape();
    let dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    let (rows, n) = rows_of(&shape);
    match super::row_pitch(&dims, t.meta.strides()) {
        Some(p) if rows.saturating_mul(p) <= u32::MAX as usize => (t, p),
        _ => (into_contiguous(t), n),
    }
}

/// An f32 tensor of `shape` on `like`'s device, contiguous ([`empty_as`]).
fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    contiguous(empty_device_contiguous_dtype::<R>(like.client.clone(), like.device.clone(), shape, DType::F32))
}

/// A tensor of `shape` on `like`'s device, of `like`'s float type, contiguous: the kernels index their outputs
/// as packed rows. burn's `empty_device_dtype` asks CubeCL for its "optimized" layout, which on CUDA pads every
/// row to a pitch (rows of 192 f32, 768 bytes, get 1,024: ViT-Ti's width, and the softmax's 65 or 197 columns
/// too), so a kernel writing packed rows there would leave values where the tensor's strides do not look
/// (wgpu lays every tensor out packed, which is why tests there could not see it).
fn empty_as<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    contiguous(empty_device_contiguous_dtype::<R>(like.client.clone(), like.device.clone(), shape, like.dtype))
}

/// `t`, checked to be laid out as packed rows (the kernels' indexing).
fn contiguous<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    assert!(t.is_contiguous(), "polyflow's GPU kernels need packed outputs; got strides {:?}", t.meta.strides());
    t
}

/// `items` (with their `extra`, one each) grouped by float type in the order each type first appears, each
/// group in `items`' order: the pack kernels copy tensors of one type per launch.
fn by_dtype<T, E>(items: Vec<T>, extra: Vec<E>, dtype: impl Fn(&T) -> DType) -> Vec<(DType, Vec<T>, Vec<E>)> {
    let mut groups: Vec<(DType, Vec<T>, Vec<E>)> = Vec::new();
    for (t, e) in items.into_iter().zip(extra) {
        let d = dtype(&t);
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => {
                g.1.push(t);
                g.2.push(e);
            }
            None => groups.push((d, vec![t], vec![e])),
        }
    }
    groups
}

/// [`pack_kernel`] launches copying `pieces` (each with its row pitch; all of float type `dtype`) to f32 `out`
/// at `offsets`, five per launch.
fn pack_group<R: CubeRuntime>(
    client: &ComputeClient<R>,
    out: &CubeTensor<R>,
    pieces: &[(CubeTensor<R>, usize)],
    offsets: &[usize],
    dtype: DType,
) {
    for (group, offs) in pieces.chunks(PACK_GROUP).zip(offsets.chunks(PACK_GROUP)) {
        // Unused slots: the group's first tensor, copying nothing (length 0).
        let slot = |k: usize| group.get(k).unwrap_or(&group[0]).0.clone();
        let len = |k: usize| group.get(k).map_or(0, |t| t.0.shape().num_elements()) as u32;
        let width = |k: usize| group.get(k).map_or(1, |t| rows_of(&t.0.shape()).1.max(1)) as u32;
        let pitch = |k: usize| group.get(k).map_or(1, |t| t.1.max(1)) as u32;
        let off = |k: usize| offs.get(k).copied().unwrap_or(0) as u32;
        let longest = (0..PACK_GROUP).map(len).max().unwrap_or(0) as usize;
        let units = 256usize;
        let cubes_x = longest.div_ceil(units).clamp(1, 4096);
        pack_kernel::launch::<R>(
            client,
            CubeCount::Static(cubes_x as u32, PACK_GROUP as u32, 1),
            CubeDim::new_1d(units as u32),
            slot(0).into_tensor_arg(),
            slot(1).into_tensor_arg(),
            slot(2).into_tensor_arg(),
            slot(3).into_tensor_arg(),
            slot(4).into_tensor_arg(),
            out.clone().into_tensor_arg(),
            off(0),
            off(1),
            off(2),
            off(3),
            off(4),
            len(0),
            len(1),
            len(2),
            len(3),
            len(4),
            width(0),
            width(1),
            width(2),
            width(3),
            width(4),
            pitch(0),
            pitch(1),
            pitch(2),
            pitch(3),
            pitch(4),
            dtype.into(),
        );
    }
}

/// [`unpack_kernel`] launches copying `flat`'s `segs` into `outs` (packed, all of float type `dtype`), five per
/// launch.
fn unpack_group<R: CubeRuntime>(
    client: &ComputeClient<R>,
    flat: &CubeTensor<R>,
    outs: &[CubeTensor<R>],
    segs: &[(usize, usize)],
    dtype: DType,
) {
    for (group, segs) in outs.chunks(PACK_GROUP).zip(segs.chunks(PACK_GROUP)) {
        // Unused slots: a one-element scratch tensor each, written nothing (length 0; WebGPU refuses one buffer
        // bound twice for writing).
        let scratch = || contiguous(empty_device_contiguous_dtype::<R>(client.clone(), flat.device.clone(), Shape::new([1]), dtype));
        let slot = |k: usize| group.get(k).cloned().unwrap_or_else(scratch);
        let off = |k: usize| segs.get(k).map_or(0, |s| s.0) as u32;
        let len = |k: usize| segs.get(k).map_or(0, |s| s.1) as u32;
        let longest = segs.iter().map(|s| s.1).max().unwrap_or(0);
        let units = 256usize;
        let cubes_x = longest.div_ceil(units).clamp(1, 4096);
        unpack_kernel::launch::<R>(
            client,
            CubeCount::Static(cubes_x as u32, PACK_GROUP as u32, 1),
            CubeDim::new_1d(units as u32),
            flat.clone().into_tensor_arg(),
            slot(0).into_tensor_arg(),
            slot(1).into_tensor_arg(),
            slot(2).into_tensor_arg(),
            slot(3).into_tensor_arg(),
            slot(4).into_tensor_arg(),
            off(0),
            off(1),
            off(2),
            off(3),
            off(4),
            len(0),
            len(1),
            len(2),
            len(3),
            len(4),
            dtype.into(),
        );
    }
}

impl<R: CubeRuntime, BT: BoolElement> GpuKernels for CubeBackend<R, f32, i32, BT> {
    fn ln_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64, out: DType) -> [FloatTensor<Self>; 3] {
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

    fn ln_backward(
        g: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
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

    fn pack(pieces: Vec<FloatTensor<Self>>, offsets: Vec<usize>, total: usize) -> FloatTensor<Self> {
        let first = pieces.first().expect("at least one piece").clone();
        let (client, device) = (first.client.clone(), first.device.clone());
        let out = Self::float_zeros(Shape::new([total]), &device, burn::tensor::FloatDType::F32);
        // Each piece as rows of its last axis (a gradient of a matrix whose rows CUDA padded is read in place).
        let pieces: Vec<(CubeTensor<R>, usize)> = pieces.into_iter().map(pitched_rows).collect();
        // One kernel per float type (five pieces of one type per launch).
        for (dtype, pieces, offsets) in by_dtype(pieces, offsets, |p| p.0.dtype) {
            pack_group(&client, &out, &pieces, &offsets, dtype);
        }
        out
    }

    fn unpack(
        flat: FloatTensor<Self>,
        segs: Vec<(usize, usize)>,
        shapes: Vec<Shape>,
        dtypes: Vec<DType>,
        old: Vec<Option<FloatTensor<Self>>>,
    ) -> Vec<FloatTensor<Self>> {
        assert_eq!((segs.len(), shapes.len()), (dtypes.len(), dtypes.len()), "one shape and one float type per segment");
        let flat = into_contiguous(flat);
        let client = flat.client.clone();
        let mut old = old.into_iter();
        // Packed (`empty`), so that the kernel's element `i` is the tensor's `i`-th in row-major order; an old
        // tensor's buffer where nothing else holds it (no view, no clone: `can_mut`) and it is laid out so.
        let outs: Vec<CubeTensor<R>> = shapes
            .into_iter()
            .zip(&dtypes)
            .map(|(s, d)| match old.next().flatten() {
                Some(t) if t.can_mut() && t.dtype == *d && t.shape() == s && t.is_contiguous() && t.is_contiguous_buffer() => t,
                _ => contiguous(empty_device_contiguous_dtype::<R>(client.clone(), flat.device.clone(), s, *d)),
            })
            .collect();
        let indexed: Vec<(usize, DType)> = dtypes.into_iter().enumerate().collect();
        for (dtype, group, segs) in by_dtype(indexed, segs, |p| p.1) {
            let group: Vec<CubeTensor<R>> = group.iter().map(|(i, _)| outs[*i].clone()).collect();
            unpack_group(&client, &flat, &group, &segs, dtype);
        }
        outs
    }

    fn col_sums(g: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, gp) = pitched_rows(g);
        let (rows, d) = rows_of(&g.shape());
        let client = g.client.clone();
        // Chunks of rows as LayerNorm's γ/β gradients take them: enough cubes to fill a GPU, at most 1,024.
        let (chunks, chunk) = row_chunks(rows);
        let partial = empty(&g, Shape::new([chunks, d]));
        let out = empty_as(&g, Shape::new([d]));
        let dtype = g.dtype;
        let units = 64usize;
        col_partials_kernel::launch::<R>(
            &client,
            CubeCount::Static(d.div_ceil(units) as u32, chunks as u32, 1),
            CubeDim::new_1d(units as u32),
            g.into_tensor_arg(),
            partial.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            gp as u32,
            chunk as u32,
            dtype.into(),
        );
        col_sums_kernel::launch::<R>(
            &client,
            CubeCount::Static(d.div_ceil(units) as u32, 1, 1),
            CubeDim::new_1d(units as u32),
            partial.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            chunks as u32,
            d as u32,
            dtype.into(),
        );
        out
    }

    fn sq_partials(g: FloatTensor<Self>) -> FloatTensor<Self> {
        let g = into_contiguous(g);
        let n = g.shape().num_elements();
        let parts = sq_partials_len(n);
        let out = empty(&g, Shape::new([parts]));
        sq_partials_kernel::launch::<R>(
            &g.client.clone(),
            CubeCount::Static(parts as u32, 1, 1),
            CubeDim::new_1d(SQ_UNITS),
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
        );
        out
    }

    fn qkv_split(qkv: FloatTensor<Self>, tokens: usize, heads: usize, scale: f64) -> [FloatTensor<Self>; 3] {
        // Tokens read at their pitch (CUDA pads a product's rows of 3·D: 576 floats to 640 at ViT-Ti's width).
        let (qkv, row) = pitched_rows(qkv);
        let (rows, d3) = rows_of(&qkv.shape());
        let (b, n) = (rows / tokens, tokens);
        let hd = d3 / 3 / heads;
        let shape = Shape::new([b, heads, n, hd]);
        let (q, k, v) = (empty_as(&qkv, shape.clone()), empty_as(&qkv, shape.clone()), empty_as(&qkv, shape.clone()));
        let dtype = qkv.dtype;
        let total = shape.num_elements();
        let (count, dim) = elementwise(total);
        qkv_split_kernel::launch::<R>(
            &qkv.client.clone(),
            count,
            dim,
            qkv.into_tensor_arg(),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            n as u32,
            heads as u32,
            hd as u32,
            row as u32,
            total as u32,
            scale as f32,
            dtype.into(),
        );
        [q, k, v]
    }

    fn qkv_merge(dq: FloatTensor<Self>, dk: FloatTensor<Self>, dv: FloatTensor<Self>, scale: f64, shape: Shape) -> FloatTensor<Self> {
        let like = |t: CubeTensor<R>| if t.dtype == dq.dtype { t } else { burn_cubecl::kernel::cast(t, dq.dtype) };
        let (dk, dv) = (like(dk), like(dv));
        let (dq, dk, dv) = (into_contiguous(dq), into_contiguous(dk), into_contiguous(dv));
        let [b, heads, n, hd] = dq.shape().dims::<4>();
        assert_eq!(shape.num_elements(), b * n * 3 * heads * hd, "the packed projection's shape: {shape:?}");
        let out = empty_as(&dq, shape); // packed rows of 3·H·hd, whatever the leading axes
        let dtype = dq.dtype;
        let total = b * heads * n * hd;
        let (count, dim) = elementwise(total);
        qkv_merge_kernel::launch::<R>(
            &dq.client.clone(),
            count,
            dim,
            dq.into_tensor_arg(),
            dk.into_tensor_arg(),
            dv.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
            heads as u32,
            hd as u32,
            total as u32,
            scale as f32,
            dtype.into(),
        );
        out
    }

    fn heads_split(g: FloatTensor<Self>, tokens: usize, heads: usize) -> FloatTensor<Self> {
        let (g, row) = pitched_rows(g);
        let (rows, d) = rows_of(&g.shape());
        let shape = Shape::new([rows / tokens, heads, tokens, d / heads]);
        let out = empty_as(&g, shape.clone());
        let dtype = g.dtype;
        let total = shape.num_elements();
        let (count, dim) = elementwise(total);
        heads_split_kernel::launch::<R>(
            &g.client.clone(),
            count,
            dim,
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            tokens as u32,
            heads as u32,
            (d / heads) as u32,
            row as u32,
            total as u32,
            dtype.into(),
        );
        out
    }

    fn heads_merge(o: FloatTensor<Self>, shape: Shape) -> FloatTensor<Self> {
        // A product's output: its rows of hd may be padded on CUDA, read in place.
        let (o, op) = pitched_rows(o);
        let [b, heads, n, hd] = o.shape().dims::<4>();
        assert_eq!(shape.num_elements(), b * n * heads * hd, "the merged heads' shape: {shape:?}");
        let out = empty_as(&o, shape); // packed rows of H·hd, whatever the leading axes
        let dtype = o.dtype;
        let total = b * heads * n * hd;
        let (count, dim) = elementwise(total);
        heads_merge_kernel::launch::<R>(
            &o.client.clone(),
            count,
            dim,
            o.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
            heads as u32,
            hd as u32,
            op as u32,
            total as u32,
            dtype.into(),
        );
        out
    }

    fn gelu_tanh_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
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

    fn gelu_tanh_backward(g: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
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

    fn loss_forward(z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        loss::forward(z, t, sigmoid)
    }

    fn loss_backward(g: FloatTensor<Self>, z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        loss::backward(g, z, t, sigmoid)
    }

    fn softmax_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
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

    fn softmax_backward(g: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
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

    fn attention_forward(qkv: FloatTensor<Self>, tokens: usize, heads: usize, state: bool) -> Vec<FloatTensor<Self>> {
        super::autodiff::attention_core::<Self>(qkv, tokens, heads, state)
    }

    fn attention_backward(
        g: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        shape: Shape,
    ) -> FloatTensor<Self> {
        super::autodiff::attention_core_backward::<Self>(g, [q, k, v, p], scale, shape)
    }

    fn max_bindings(device: &Self::Device) -> u32 {
        R::client(device).properties().hardware.max_bindings
    }

    fn flat_update(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: Option<FloatTensor<Self>>,
        scale: Option<FloatTensor<Self>>,
        mask: Option<FloatTensor<Self>>,
        rule: super::FlatRule,
        gs: f32,
    ) -> Vec<FloatTensor<Self>> {
        let (w, g, m) = (into_contiguous(w), into_contiguous(g), into_contiguous(m));
        let n = w.shape().num_elements();
        let client = w.client.clone();
        let out = |t: &CubeTensor<R>| empty(t, t.shape());
        let (w_out, m_out) = (out(&w), out(&m));
        // Unused tensor slots: `g` again (read-only; nothing reads it there).
        let has_scale = scale.is_some();
        let scale = scale.map(into_contiguous).unwrap_or_else(|| g.clone());
        let (count, dim) = (CubeCount::Static(n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1), CubeDim::new_1d(256));
        match rule {
            super::FlatRule::Sgd { momentum, lr } => {
                sgd_kernel::launch::<R>(
                    &client,
                    count,
                    dim,
                    w.into_tensor_arg(),
                    g.into_tensor_arg(),
                    m.into_tensor_arg(),
                    scale.into_tensor_arg(),
                    w_out.clone().into_tensor_arg(),
                    m_out.clone().into_tensor_arg(),
                    n as u32,
                    gs,
                    momentum,
                    lr,
                    has_scale,
                );
                vec![w_out, m_out]
            }
            super::FlatRule::Adam { b1, b2, omb1, omb2, c1, c2, eps, wd, lr } => {
                let v = into_contiguous(v.expect("Adam's second moment"));
                let v_out = out(&v);
                let has_mask = mask.is_some();
                let mask = mask.map(into_contiguous).unwrap_or_else(|| g.clone());
                adam_kernel::launch::<R>(
                    &client,
                    count,
                    dim,
                    w.into_tensor_arg(),
                    g.into_tensor_arg(),
                    m.into_tensor_arg(),
                    v.into_tensor_arg(),
                    scale.into_tensor_arg(),
                    mask.into_tensor_arg(),
                    w_out.clone().into_tensor_arg(),
                    m_out.clone().into_tensor_arg(),
                    v_out.clone().into_tensor_arg(),
                    n as u32,
                    gs,
                    b1,
                    b2,
                    omb1,
                    omb2,
                    c1,
                    c2,
                    eps,
                    wd,
                    lr,
                    has_scale,
                    has_mask,
                    wd > 0.0,
                );
                vec![w_out, m_out, v_out]
            }
        }
    }

    fn linear_backward(
        g: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        want: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        let [want_x, want_w, want_b] = want;
        let dx = want_x.then(|| Self::float_matmul(g.clone(), Self::float_swap_dims(w, 0, 1))); // g·wᵀ: [rows, D_in]
        let dw = want_w.then(|| Self::float_matmul(Self::float_swap_dims(x, 0, 1), g.clone())); // xᵀ·g: [D_in, D_out]
        let db = want_b.then(|| Self::col_sums(g)); // [D_out]
        [dx, dw, db]
    }
}
