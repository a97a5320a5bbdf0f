//! The flat optimizer on the GPU: gradients packed into one f32 vector and weights unpacked from one (five
//! tensors of one float type per launch), and the AdamW and SGD-with-momentum updates, one unit per element, in
//! the CPU composition's order (`train::flat`).

use super::{contiguous, empty, pitched_rows, rows_of};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// Tensors one [`pack_kernel`] launch copies: with the output and CubeCL's metadata buffer, 7 storage buffers,
/// within WebGPU's default limit of 8 per shader stage.
const PACK_GROUP: usize = 5;

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

/// Copies `pieces` into f32 `out` at `offsets` (`GpuKernels::pack`; `out` made by the caller, zeroed).
pub(super) fn pack<R: CubeRuntime>(pieces: Vec<CubeTensor<R>>, offsets: Vec<usize>, out: CubeTensor<R>) -> CubeTensor<R> {
    let client = pieces.first().expect("at least one piece").client.clone();
    // Each piece as rows of its last axis (a gradient of a matrix whose rows CUDA padded is read in place).
    let pieces: Vec<(CubeTensor<R>, usize)> = pieces.into_iter().map(pitched_rows).collect();
    // One kernel per float type (five pieces of one type per launch).
    for (dtype, pieces, offsets) in by_dtype(pieces, offsets, |p| p.0.dtype) {
        pack_group(&client, &out, &pieces, &offsets, dtype);
    }
    out
}

/// `flat`'s segments as tensors of `shapes` and `dtypes`, in `old`'s buffers where free (`GpuKernels::unpack`).
pub(super) fn unpack<R: CubeRuntime>(
    flat: CubeTensor<R>,
    segs: Vec<(usize, usize)>,
    shapes: Vec<Shape>,
    dtypes: Vec<DType>,
    old: Vec<Option<CubeTensor<R>>>,
) -> Vec<CubeTensor<R>> {
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

/// One launch of the flat update `rule` (`GpuKernels::flat_update`): `[w', m']`, and `v'` for AdamW.
#[allow(clippy::too_many_arguments)]
pub(super) fn update<R: CubeRuntime>(
    w: CubeTensor<R>,
    g: CubeTensor<R>,
    m: CubeTensor<R>,
    v: Option<CubeTensor<R>>,
    scale: Option<CubeTensor<R>>,
    mask: Option<CubeTensor<R>>,
    rule: super::super::FlatRule,
    gs: f32,
) -> Vec<CubeTensor<R>> {
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
        super::super::FlatRule::Sgd { momentum, lr } => {
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
        super::super::FlatRule::Adam { b1, b2, omb1, omb2, c1, c2, eps, wd, lr } => {
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
