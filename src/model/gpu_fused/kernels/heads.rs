//! The attention's layout changes on the GPU, one unit per element: the packed projection `[B, N, 3·D]` split
//! into q (scaled), k and v as `[B, H, N, hd]` and its transpose for the gradients, and the heads' outputs
//! merged back into rows of `D` and split again for theirs.

use super::{elementwise, empty_as, pitched_rows, rows_of};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

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

/// `[q·scale, k, v]` (`[B, H, N, hd]`) from the packed projection (`GpuKernels::qkv_split`).
pub(super) fn qkv_split<R: CubeRuntime>(qkv: CubeTensor<R>, tokens: usize, heads: usize, scale: f64) -> [CubeTensor<R>; 3] {
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

/// The packed projection's gradient from q's, k's and v's (`GpuKernels::qkv_merge`).
pub(super) fn qkv_merge<R: CubeRuntime>(
    dq: CubeTensor<R>,
    dk: CubeTensor<R>,
    dv: CubeTensor<R>,
    scale: f64,
    shape: Shape,
) -> CubeTensor<R> {
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

/// Rows of `D` split into heads, `[B, H, N, hd]` (`GpuKernels::heads_split`).
pub(super) fn heads_split<R: CubeRuntime>(g: CubeTensor<R>, tokens: usize, heads: usize) -> CubeTensor<R> {
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

/// The heads' outputs `[B, H, N, hd]` merged into rows of `H·hd` (`GpuKernels::heads_merge`).
pub(super) fn heads_merge<R: CubeRuntime>(o: CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
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
