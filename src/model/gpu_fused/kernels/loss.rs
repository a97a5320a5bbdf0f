//! The classification losses as kernels: the batch's mean loss in one launch (one cube, a unit per example row),
//! and the logits' gradient in one launch (a cube per row), for softmax cross-entropy and sigmoid binary
//! cross-entropy (`train::metrics::loss`), in f32 whatever the tensors' float type.

use super::{block_for, cube_max, cube_sum, empty_as, grid, pitched_rows, row_index, rows_of};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// The mean over the `rows` examples of the loss of logits `z` against targets `t` (`[rows, k]`, rows `zp`
/// and `tp` apart), into `out[0]`. Softmax: `Σ_j t_j·(lse − z_j)` with `lse = m + log Σ exp(z − m)`, one pass
/// per row (the running maximum rescales the sum). Sigmoid: `Σ_j max(z_j, 0) − t_j·z_j + log(1 + e^{−|z_j|})`.
/// Unit `u` takes rows `u`, `u + units`, …; the units' sums meet in a tree, so the order is fixed by `rows`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn loss_forward_kernel<F: Float>(
    z: &Tensor<F>,
    t: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    k: u32,
    zp: u32,
    tp: u32,
    #[comptime] sigmoid: bool,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let mut sh = SharedMemory::<f32>::new(block);
    let u = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;
    let len = k as usize;
    let mut acc = f32::new(0.0);
    let mut r = u;
    while r < rows as usize {
        let zb = r * zp as usize;
        let tb = r * tp as usize;
        if sigmoid {
            let mut s = f32::new(0.0);
            for j in 0..len {
                let v = f32::cast_from(z[zb + j]);
                let mut pos = f32::new(0.0);
                if v > pos {
                    pos = v;
                }
                s += pos - f32::cast_from(t[tb + j]) * v + f32::ln(f32::new(1.0) + f32::exp(f32::new(0.0) - f32::abs(v)));
            }
            acc += s;
        } else {
            // The row's first value starts the running maximum (no infinite constant: WGSL rejects them).
            let mut m = f32::cast_from(z[zb]);
            let mut s = f32::new(0.0);
            let mut st = f32::new(0.0);
            let mut stz = f32::new(0.0);
            for j in 0..len {
                let v = f32::cast_from(z[zb + j]);
                let tv = f32::cast_from(t[tb + j]);
                if v > m {
                    s *= f32::exp(m - v);
                    m = v;
                }
                s += f32::exp(v - m);
                st += tv;
                stz += tv * v;
            }
            acc += (m + f32::ln(s)) * st - stz;
        }
        r += units;
    }
    let total = cube_sum(&mut sh, acc);
    if u == 0 {
        out[0] = F::cast_from(total / f32::cast_from(rows));
    }
}

/// The logits' gradient of [`loss_forward_kernel`]'s mean scaled by `g[0]`, one cube per row: softmax
/// `g/rows·(softmax(z)·Σ t − t)`, sigmoid `g/rows·(σ(z) − t)` (the loss's true derivative everywhere, at
/// `z = 0` too, where the kinks of `max` and `|·|` meet: `σ(0) − t`, as PyTorch's `BCEWithLogits` gives).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn loss_backward_kernel<F: Float>(
    g: &Tensor<F>,
    z: &Tensor<F>,
    t: &Tensor<F>,
    dz: &mut Tensor<F>,
    rows: u32,
    k: u32,
    zp: u32,
    tp: u32,
    #[comptime] sigmoid: bool,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = row_index();
    if row >= rows as usize {
        terminate!();
    }
    let mut sh = SharedMemory::<f32>::new(block);
    let len = k as usize;
    let base = row * len;
    let zb = row * zp as usize;
    let tb = row * tp as usize;
    let u = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;
    let gf = f32::cast_from(g[0]) / f32::cast_from(rows);
    if sigmoid {
        let mut j = u;
        while j < len {
            let v = f32::cast_from(z[zb + j]);
            let s = f32::new(1.0) / (f32::new(1.0) + f32::exp(f32::new(0.0) - v));
            dz[base + j] = F::cast_from(gf * (s - f32::cast_from(t[tb + j])));
            j += step;
        }
    } else {
        let mut m = f32::cast_from(z[zb]);
        let mut j = u;
        while j < len {
            let v = f32::cast_from(z[zb + j]);
            if v > m {
                m = v;
            }
            j += step;
        }
        let m = cube_max(&mut sh, m);
        let mut s = f32::new(0.0);
        let mut st = f32::new(0.0);
        let mut j = u;
        while j < len {
            s += f32::exp(f32::cast_from(z[zb + j]) - m);
            st += f32::cast_from(t[tb + j]);
            j += step;
        }
        let s = cube_sum(&mut sh, s);
        let st = cube_sum(&mut sh, st);
        let mut j = u;
        while j < len {
            let p = f32::exp(f32::cast_from(z[zb + j]) - m) / s;
            dz[base + j] = F::cast_from(gf * (p * st - f32::cast_from(t[tb + j])));
            j += step;
        }
    }
}

/// The mean loss of the logits `z` against `t` (`t` cast to `z`'s float type should they differ).
///
/// # Shapes
/// `z`, `t: [B, K]` → `[1]`
pub(in super::super) fn forward<R: CubeRuntime>(z: CubeTensor<R>, t: CubeTensor<R>, sigmoid: bool) -> CubeTensor<R> {
    let t = if t.dtype == z.dtype { t } else { burn_cubecl::kernel::cast(t, z.dtype) };
    let ((z, zp), (t, tp)) = (pitched_rows(z), pitched_rows(t));
    let (rows, k) = rows_of(&z.shape());
    let client = z.client.clone();
    let out = empty_as(&z, Shape::new([1]));
    let dtype = z.dtype;
    let block = block_for(&client, rows);
    loss_forward_kernel::launch::<R>(
        &client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(block as u32),
        z.into_tensor_arg(),
        t.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        k as u32,
        zp as u32,
        tp as u32,
        sigmoid,
        block,
        dtype.into(),
    );
    out
}

/// The logits' gradient of [`forward`]'s mean from its gradient `g`.
///
/// # Shapes
/// `g: [1]`, `z`, `t: [B, K]` → `[B, K]`
pub(in super::super) fn backward<R: CubeRuntime>(g: CubeTensor<R>, z: CubeTensor<R>, t: CubeTensor<R>, sigmoid: bool) -> CubeTensor<R> {
    let cast = |x: CubeTensor<R>| if x.dtype == z.dtype { x } else { burn_cubecl::kernel::cast(x, z.dtype) };
    let (g, t) = (cast(g), cast(t));
    let ((z, zp), (t, tp)) = (pitched_rows(z), pitched_rows(t));
    let shape = z.shape();
    let (rows, k) = rows_of(&shape);
    let client = z.client.clone();
    let dz = empty_as(&z, shape);
    let dtype = z.dtype;
    let block = block_for(&client, k);
    loss_backward_kernel::launch::<R>(
        &client,
        grid(rows),
        CubeDim::new_1d(block as u32),
        g.into_tensor_arg(),
        z.into_tensor_arg(),
        t.into_tensor_arg(),
        dz.clone().into_tensor_arg(),
        rows as u32,
        k as u32,
        zp as u32,
        tp as u32,
        sigmoid,
        block,
        dtype.into(),
    );
    dz
}
