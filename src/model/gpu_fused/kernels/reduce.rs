//! Reductions in a fixed grid, so that their summation order depends on the shape only: column sums (a bias's
//! gradient) in chunks of rows and then the chunks' sums, and partial sums of squares (the gradient norm).

use super::{chunk_end, cube_sum, empty, empty_as, pitched_rows, row_chunks, rows_of};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

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
pub(in super::super) fn sq_partials_len(n: usize) -> usize {
    n.div_ceil(SQ_UNITS as usize).clamp(1, 1024)
}

/// The column sums of `g`'s rows, of `g`'s float type (`GpuKernels::col_sums`).
pub(super) fn col_sums<R: CubeRuntime>(g: CubeTensor<R>) -> CubeTensor<R> {
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

/// Partial sums of squares of `g` (`GpuKernels::sq_partials`): [`sq_partials_len`] f32 values.
pub(super) fn sq_partials<R: CubeRuntime>(g: CubeTensor<R>) -> CubeTensor<R> {
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
