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
//!
//! One file per concern: [`norm`] (LayerNorm), [`softmax`], [`heads`] (the attention's layouts), [`gelu`],
//! [`reduce`] (column sums, sums of squares), [`flat`] (the flat optimizer's pack, unpack and updates), [`loss`];
//! here the helpers they share and the [`GpuKernels`] implementation that launches them.

use super::GpuKernels;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use cubecl::prelude::*;

mod flat;
mod gelu;
mod heads;
mod loss;
mod norm;
mod reduce;
mod softmax;

pub(super) use reduce::sq_partials_len;

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

/// The end of the chunk of rows that starts at `start`: `start + chunk`, or `rows` for the last chunk.
#[cube]
fn chunk_end(start: usize, chunk: u32, rows: u32) -> usize {
    let mut end = start + chunk as usize;
    if end > rows as usize {
        end = rows as usize;
    }
    end
}

/// Units per cube and cubes (at most 32,768, a grid-stride loop covering the rest) for one unit per element.
fn elementwise(total: usize) -> (CubeCount, CubeDim) {
    let units = 256usize;
    (CubeCount::Static(total.div_ceil(units).clamp(1, 32_768) as u32, 1, 1), CubeDim::new_1d(units as u32))
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

impl<R: CubeRuntime, BT: BoolElement> GpuKernels for CubeBackend<R, f32, i32, BT> {
    fn ln_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64, out: DType) -> [FloatTensor<Self>; 3] {
        norm::forward(x, gamma, beta, eps, out)
    }

    fn ln_backward(
        g: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        norm::backward(g, x, gamma, mean, rstd)
    }

    fn pack(pieces: Vec<FloatTensor<Self>>, offsets: Vec<usize>, total: usize) -> FloatTensor<Self> {
        let device = pieces.first().expect("at least one piece").device.clone();
        flat::pack(pieces, offsets, Self::float_zeros(Shape::new([total]), &device, burn::tensor::FloatDType::F32))
    }

    fn unpack(
        flat: FloatTensor<Self>,
        segs: Vec<(usize, usize)>,
        shapes: Vec<Shape>,
        dtypes: Vec<DType>,
        old: Vec<Option<FloatTensor<Self>>>,
    ) -> Vec<FloatTensor<Self>> {
        flat::unpack(flat, segs, shapes, dtypes, old)
    }

    fn col_sums(g: FloatTensor<Self>) -> FloatTensor<Self> {
        reduce::col_sums(g)
    }

    fn sq_partials(g: FloatTensor<Self>) -> FloatTensor<Self> {
        reduce::sq_partials(g)
    }

    fn qkv_split(qkv: FloatTensor<Self>, tokens: usize, heads: usize, scale: f64) -> [FloatTensor<Self>; 3] {
        heads::qkv_split(qkv, tokens, heads, scale)
    }

    fn qkv_merge(dq: FloatTensor<Self>, dk: FloatTensor<Self>, dv: FloatTensor<Self>, scale: f64, shape: Shape) -> FloatTensor<Self> {
        heads::qkv_merge(dq, dk, dv, scale, shape)
    }

    fn heads_split(g: FloatTensor<Self>, tokens: usize, heads: usize) -> FloatTensor<Self> {
        heads::heads_split(g, tokens, heads)
    }

    fn heads_merge(o: FloatTensor<Self>, shape: Shape) -> FloatTensor<Self> {
        heads::heads_merge(o, shape)
    }

    fn gelu_tanh_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::forward(x)
    }

    fn gelu_tanh_backward(g: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::backward(g, x)
    }

    fn loss_forward(z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        loss::forward(z, t, sigmoid)
    }

    fn loss_backward(g: FloatTensor<Self>, z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        loss::backward(g, z, t, sigmoid)
    }

    fn softmax_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax::forward(x)
    }

    fn softmax_backward(g: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax::backward(g, y)
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
        flat::update(w, g, m, v, scale, mask, rule, gs)
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
