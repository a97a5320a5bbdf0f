//! polyflow's own GPU kernels for burn's CubeCL backends (`cuda`, `wgpu`): LayerNorm and softmax over the last
//! axis, one kernel launch per forward pass and for softmax's backward, three for LayerNorm's backward (the input
//! gradient, partial column sums of γ's and β's gradients over chunks of rows, and the sums of those).
//!
//! burn 0.21 composes LayerNorm from two mean reductions and element-wise steps, and softmax from a max and a sum
//! reduction around an exponential; under autodiff each step records a node whose backward adds more reductions
//! (the broadcasts' gradients). On a ViT-Ti training step on lavapipe this takes the launches from 713 to 513
//! (BENCHMARKS.md, "Kernel launches of a GPU training step"). Here each is one autodiff node over one kernel per pass, one cube per
//! row (`kernels`), registered as a custom operation of burn's fusion stream (`fusion`) with its backward
//! (`autodiff`).
//!
//! [`attention`] (the heads split from the packed projection and merged back, with their backward), [`linear`]
//! (one product over all tokens, the bias's gradient as column sums) and [`gelu_tanh`] (one kernel each way)
//! remove more of burn's launches, operations and intermediates the same way; on these backends the blocks take
//! their tokens as rows ([`token_rows`]), so no reshape surrounds the linear layers. The flat optimizer's [`pack`], [`unpack`] and [`squared_norm`] work on its flat
//! buffers. The column sums and the squared norm also stand in for burn 0.21's reductions over long axes, which
//! stop short on wgpu adapters with 65,535 cubes per axis ([`squared_norm`]).
//!
//! [`layer_norm`], [`softmax_last`], [`attention`] and [`gelu_tanh`] take this path when the backend is
//! `Cuda`/`Wgpu` or `Autodiff` of one (the build's `cuda`/`wgpu` features), the tensors are f32 (LayerNorm) or f32,
//! bf16 or f16 (softmax, attention and GELU, computed in f32 and rounded once to the tensors' type) and the path is enabled
//! ([`set_enabled`], on by default); otherwise burn's compositions run, which are also the reference these kernels are tested against
//! (`tests/wgpu.rs`). The results differ from the compositions' in float rounding only (another summation
//! order, a reciprocal), so training nodes on those backends have keys of their own (`TrainStage::version_for`).

use burn::nn::{LayerNorm, Linear};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{activation, backend::Backend, DType, FloatDType, Shape, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "gpu-kernels")]
mod autodiff;
#[cfg(feature = "gpu-kernels")]
mod fusion;
#[cfg(feature = "gpu-kernels")]
mod kernels;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernels on or off for this process (tests against burn's compositions, `bench-model --ab`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the kernels run where they apply.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The flat optimizer's update rule per element (`train::flat`), its constants in f32 as the composition
/// multiplies them. The gradient is first multiplied by the clip factor (a `[1]` tensor on the device) or by `gs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlatRule {
    /// `m' = m·momentum + g`, `w' = w − m'·lr`.
    Sgd {
        /// Momentum.
        momentum: f32,
        /// Learning rate.
        lr: f32,
    },
    /// `m' = m·β1 + g·(1−β1)`, `v' = v·β2 + g²·(1−β2)`, `u = (m'/c1)/(√(v'/c2) + ε)` (+ `w·wd`, times the mask
    /// where there is one), `w' = w − u·lr`.
    Adam {
        /// β1.
        b1: f32,
        /// β2.
        b2: f32,
        /// 1 − β1 (computed in f64, as the composition's scalar).
        omb1: f32,
        /// 1 − β2.
        omb2: f32,
        /// The bias corrections 1 − β1ᵗ.
        c1: f32,
        /// 1 − β2ᵗ.
        c2: f32,
        /// ε.
        eps: f32,
        /// Decoupled weight decay (0: none).
        wd: f32,
        /// Learning rate.
        lr: f32,
    },
}

/// The kernels of one backend: the forward passes return what the backward passes read. LayerNorm and the pack
/// take f32 tensors; softmax and the heads' split and merge f32, bf16 or f16 ones (f32 arithmetic, outputs of the
/// inputs' type).
#[cfg(feature = "gpu-kernels")]
pub trait GpuKernels: Backend {
    /// LayerNorm over the last axis.
    ///
    /// # Shapes
    /// `x: [..., D]`, `gamma`, `beta: [D]` → `[y: [..., D], mean: [rows], rstd: [rows]]` (`rows` = all but
    /// the last axis; `rstd` = 1/√(σ² + ε)).
    fn ln_forward(
        x: burn::tensor::ops::FloatTensor<Self>,
        gamma: burn::tensor::ops::FloatTensor<Self>,
        beta: burn::tensor::ops::FloatTensor<Self>,
        eps: f64,
        out: DType,
    ) -> [burn::tensor::ops::FloatTensor<Self>; 3];

    /// LayerNorm's gradients from the output's `g`.
    ///
    /// # Shapes
    /// `g`, `x: [..., D]`, `gamma: [D]`, `mean`, `rstd: [rows]` → `[dx: [..., D], dgamma: [D], dbeta: [D]]`
    fn ln_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        x: burn::tensor::ops::FloatTensor<Self>,
        gamma: burn::tensor::ops::FloatTensor<Self>,
        mean: burn::tensor::ops::FloatTensor<Self>,
        rstd: burn::tensor::ops::FloatTensor<Self>,
    ) -> [burn::tensor::ops::FloatTensor<Self>; 3];

    /// The 1-D `pieces` (f32, bf16 or f16, each converted exactly) laid out at `offsets` in a zero f32 buffer of
    /// `total` elements, copied `kernels`' group at a time (a launch per five pieces of one float type where
    /// burn's `slice_assign` launches one each).
    ///
    /// # Shapes
    /// `pieces[i]: [n_i]` → `[total]`
    fn pack(pieces: Vec<burn::tensor::ops::FloatTensor<Self>>, offsets: Vec<usize>, total: usize) -> burn::tensor::ops::FloatTensor<Self>;

    /// [`GpuKernels::pack`]'s inverse: a packed copy of each segment `(offset, length)` of the f32 `flat` as a
    /// tensor of `shapes[i]` (row-major; `shapes[i]` has `segs[i].1` elements) and float type `dtypes[i]` (f32,
    /// or bf16/f16 rounded as burn's cast rounds), five of one type per launch. `old[i]`, where given, is the
    /// tensor segment `i`'s copy replaces (the parameter before the update): its buffer takes the copy when
    /// nothing else holds it and it has the copy's shape, type and packed layout, so that replacing a parameter
    /// neither allocates nor releases one (on burn's fusion backend, a release is an operation of its stream);
    /// else it is released and the copy allocated.
    ///
    /// # Shapes
    /// `flat: [total]`, `old[i]: shapes[i]` → `[shapes[i]]`
    fn unpack(
        flat: burn::tensor::ops::FloatTensor<Self>,
        segs: Vec<(usize, usize)>,
        shapes: Vec<burn::tensor::Shape>,
        dtypes: Vec<DType>,
        old: Vec<Option<burn::tensor::ops::FloatTensor<Self>>>,
    ) -> Vec<burn::tensor::ops::FloatTensor<Self>>;

    /// The sums of `g`'s columns (over all rows: a bias's gradient), in a fixed order, without burn's reductions
    /// (which stop short on long axes on some wgpu adapters: [`squared_norm`]). `g` f32, bf16 or f16: the sums
    /// in f32, rounded once to `g`'s type (as PyTorch sums a bf16 bias's gradient).
    ///
    /// # Shapes
    /// `g: [rows, d]` → `[d]`
    fn col_sums(g: burn::tensor::ops::FloatTensor<Self>) -> burn::tensor::ops::FloatTensor<Self>;

    /// Partial sums of the squares of `g`'s elements, whose sum is `Σ g²` ([`squared_norm`]).
    ///
    /// # Shapes
    /// `g: [n]` → `[min(⌈n/256⌉, 1024)]`
    fn sq_partials(g: burn::tensor::ops::FloatTensor<Self>) -> burn::tensor::ops::FloatTensor<Self>;

    /// The attention's heads from the packed q | k | v projection, whose rows are `B` examples of `tokens` (`N`)
    /// tokens each, q multiplied by `scale`.
    ///
    /// # Shapes
    /// `qkv: [B, N, 3·D]` or `[B·N, 3·D]` → `[q·scale, k, v]`, each `[B, heads, N, D/heads]`
    fn qkv_split(
        qkv: burn::tensor::ops::FloatTensor<Self>,
        tokens: usize,
        heads: usize,
        scale: f64,
    ) -> [burn::tensor::ops::FloatTensor<Self>; 3];

    /// [`GpuKernels::qkv_split`]'s transpose (its backward): the gradients of `q·scale`, `k`, `v` laid out as the
    /// packed projection's gradient, of `shape` (the projection's: its rows the `B·N` tokens), `dq` multiplied by
    /// `scale`.
    ///
    /// # Shapes
    /// `dq`, `dk`, `dv: [B, H, N, hd]` → `shape`: `[B, N, 3·H·hd]` or `[B·N, 3·H·hd]`
    fn qkv_merge(
        dq: burn::tensor::ops::FloatTensor<Self>,
        dk: burn::tensor::ops::FloatTensor<Self>,
        dv: burn::tensor::ops::FloatTensor<Self>,
        scale: f64,
        shape: Shape,
    ) -> burn::tensor::ops::FloatTensor<Self>;

    /// The attention output's gradient, rows of `B` examples of `tokens` (`N`) tokens, split into its heads (the
    /// transpose of [`GpuKernels::heads_merge`]).
    ///
    /// # Shapes
    /// `g: [B, N, H·hd]` or `[B·N, H·hd]` → `[B, H, N, hd]`
    fn heads_split(g: burn::tensor::ops::FloatTensor<Self>, tokens: usize, heads: usize) -> burn::tensor::ops::FloatTensor<Self>;

    /// The attention's heads merged back into rows of tokens, of `shape` (packed).
    ///
    /// # Shapes
    /// `o: [B, H, N, hd]` → `shape`: `[B, N, H·hd]` or `[B·N, H·hd]`
    fn heads_merge(o: burn::tensor::ops::FloatTensor<Self>, shape: Shape) -> burn::tensor::ops::FloatTensor<Self>;

    /// GELU, tanh approximation, in f32 whatever the tensor's type (f32, bf16, f16), rounded once to it.
    ///
    /// # Shapes
    /// `x: [..., N]` → `[..., N]`
    fn gelu_tanh_forward(x: burn::tensor::ops::FloatTensor<Self>) -> burn::tensor::ops::FloatTensor<Self>;

    /// GELU's (tanh approximation) input gradient from the output's `g` and the input `x`.
    ///
    /// # Shapes
    /// `g`, `x: [..., N]` → `[..., N]`
    fn gelu_tanh_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        x: burn::tensor::ops::FloatTensor<Self>,
    ) -> burn::tensor::ops::FloatTensor<Self>;

    /// The attention's core from the packed projection `qkv` (rows of `B` examples of `tokens` tokens) as one
    /// operation: heads split with q scaled by `1/√hd`, `p = softmax(q·kᵀ)`, `o = p·v`, heads merged into rows
    /// (where its kernels, products and transposed views were six operations of burn's fusion stream). Returns
    /// the output and, when `state`, what the backward reads (`q·scale`, `k`, `v`, `p`); else the output alone.
    ///
    /// # Shapes
    /// `qkv: [B, N, 3·D]` or `[B·N, 3·D]` → `[out: qkv's leading axes × D, q, k, v: [B, H, N, hd], p: [B, H, N, N]]`
    fn attention_forward(
        qkv: burn::tensor::ops::FloatTensor<Self>,
        tokens: usize,
        heads: usize,
        state: bool,
    ) -> Vec<burn::tensor::ops::FloatTensor<Self>>;

    /// [`GpuKernels::attention_forward`]'s gradient from the output's `g` (of `q`'s type) as one operation: the
    /// packed projection's gradient, of `shape` (where the head split, four products with their transposed views,
    /// the softmax's backward and the merge were ten operations).
    ///
    /// # Shapes
    /// `g`: the output's shape; `q`, `k`, `v: [B, H, N, hd]`, `p: [B, H, N, N]` → `shape`
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        q: burn::tensor::ops::FloatTensor<Self>,
        k: burn::tensor::ops::FloatTensor<Self>,
        v: burn::tensor::ops::FloatTensor<Self>,
        p: burn::tensor::ops::FloatTensor<Self>,
        scale: f64,
        shape: Shape,
    ) -> burn::tensor::ops::FloatTensor<Self>;

    /// The storage buffers one kernel launch may bind on `device` (CubeCL's count: the device's limit less one).
    fn max_bindings(device: &Self::Device) -> u32;

    /// One flat optimizer update as one operation and one launch (where its element-wise composition was about
    /// 20 operations of burn's fusion stream): the gradient `g` times the clip factor `scale` (`[1]`) or `gs`, the
    /// moments and the weights updated by `rule`, AdamW's decay only where `mask` is 1 when there is one. Returns
    /// the new weights and moments (`[w', m']`, or `[w', m', v']` for Adam, whose `v` is given).
    ///
    /// # Shapes
    /// `w`, `g`, `m`, `v`, `mask: [n]`, `scale: [1]` → `[n]` each
    #[allow(clippy::too_many_arguments)]
    fn flat_update(
        w: burn::tensor::ops::FloatTensor<Self>,
        g: burn::tensor::ops::FloatTensor<Self>,
        m: burn::tensor::ops::FloatTensor<Self>,
        v: Option<burn::tensor::ops::FloatTensor<Self>>,
        scale: Option<burn::tensor::ops::FloatTensor<Self>>,
        mask: Option<burn::tensor::ops::FloatTensor<Self>>,
        rule: FlatRule,
        gs: f32,
    ) -> Vec<burn::tensor::ops::FloatTensor<Self>>;

    /// The gradients of a linear layer on rows, `y = x·w + bias`, from the output's `g`, those `want`ed
    /// (`[x, w, bias]`) only, as one operation: `dx = g·wᵀ`, `dw = xᵀ·g` (the products burn's autodiff takes for
    /// a product) and the bias's as [`GpuKernels::col_sums`] (where burn's transposed views, products and the
    /// bias node were five operations of burn's fusion stream).
    ///
    /// # Shapes
    /// `g: [rows, D_out]`, `x: [rows, D_in]`, `w: [D_in, D_out]` → `[dx: [rows, D_in], dw: [D_in, D_out], db: [D_out]]`
    fn linear_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        x: burn::tensor::ops::FloatTensor<Self>,
        w: burn::tensor::ops::FloatTensor<Self>,
        want: [bool; 3],
    ) -> [Option<burn::tensor::ops::FloatTensor<Self>>; 3];

    /// The mean over the batch of the classification loss of logits `z` against targets `t` (one launch where
    /// burn's composition was about ten operations, four of them reductions): softmax cross-entropy
    /// `−Σ_k t_k·log softmax(z)_k`, or with `sigmoid` binary cross-entropy `Σ_k softplus(z_k) − t_k·z_k`, in f32
    /// whatever `z`'s type, rounded once to it.
    ///
    /// # Shapes
    /// `z`, `t: [B, K]` → `[1]`
    fn loss_forward(
        z: burn::tensor::ops::FloatTensor<Self>,
        t: burn::tensor::ops::FloatTensor<Self>,
        sigmoid: bool,
    ) -> burn::tensor::ops::FloatTensor<Self>;

    /// [`GpuKernels::loss_forward`]'s gradient with respect to the logits, from the mean's gradient `g`, one
    /// launch: `g/B·(softmax(z)·Σ_k t_k − t)`, or `g/B·(σ(z) − t)`.
    ///
    /// # Shapes
    /// `g: [1]`, `z`, `t: [B, K]` → `[B, K]`
    fn loss_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        z: burn::tensor::ops::FloatTensor<Self>,
        t: burn::tensor::ops::FloatTensor<Self>,
        sigmoid: bool,
    ) -> burn::tensor::ops::FloatTensor<Self>;

    /// Softmax over the last axis.
    ///
    /// # Shapes
    /// `x: [..., N]` → `[..., N]`
    fn softmax_forward(x: burn::tensor::ops::FloatTensor<Self>) -> burn::tensor::ops::FloatTensor<Self>;

    /// Softmax's input gradient from the output's `g` and the output `y`.
    ///
    /// # Shapes
    /// `g`, `y: [..., N]` → `[..., N]`
    fn softmax_backward(
        g: burn::tensor::ops::FloatTensor<Self>,
        y: burn::tensor::ops::FloatTensor<Self>,
    ) -> burn::tensor::ops::FloatTensor<Self>;
}

/// `norm(x)` (LayerNorm over the last axis, `eps` being the one `norm` was built with): one kernel per pass on
/// the GPU backends, `norm.forward(x)` elsewhere.
///
/// # Shapes
/// `x: [..., D]` → `[..., D]`
pub fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    layer_norm_to(norm, x, eps, None)
}

/// [`layer_norm`] with its output in `out` (`None`: f32): on the GPU backends the kernel writes bf16/f16 itself,
/// each value rounded once from f32 (what casting the f32 output gives, autocast's input to the next product),
/// and its backward reads the gradient in that type, two operations of burn's fusion stream fewer than the cast
/// and its backward; elsewhere LayerNorm then the cast.
///
/// # Shapes
/// `x: [..., D]` → `[..., D]`
pub fn layer_norm_to<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: Tensor<B, D>, eps: f64, out: Option<FloatDType>) -> Tensor<B, D> {
    let out_dtype = out.unwrap_or(FloatDType::F32);
    #[cfg(feature = "gpu-kernels")]
    if let Some(y) = on_gpu::layer_norm(norm, &x, eps, out_dtype.into()) {
        return y;
    }
    let _ = eps;
    norm.forward(x).cast(out_dtype)
}

/// Softmax over the last axis: one kernel per pass on the GPU backends (f32 arithmetic whatever the float type,
/// one rounding to it), burn's composition elsewhere (which on bf16/f16 tensors computes in that type: callers
/// that want autocast's f32 softmax on the CPU cast first, as `Block::attention` does).
///
/// # Shapes
/// `x: [..., N]` → `[..., N]`
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "gpu-kernels")]
    if let Some(y) = on_gpu::softmax(&x) {
        return y;
    }
    activation::softmax(x, D - 1)
}

/// Multi-head self-attention from the packed projection, `softmax(q·kᵀ/√hd)·v` with the heads merged back, as
/// one autodiff node on the GPU backends: the heads split by one kernel (q scaled there), burn's products, the
/// softmax kernel, the heads merged back by one kernel; and a backward of one kernel splitting the output's
/// gradient into heads, four products, the softmax's backward and one kernel laying the three gradients out as
/// the projection's. burn's composition (three head copies and a scaling forward; a zero tensor
/// and a `slice_assign` per head tensor, their sums, the scaling and two copies backward) takes 8 and 17 launches
/// per block where this node takes 5 and 7 (`None`: not a GPU backend, the kernels off, a float type other than
/// f32, bf16 and f16, heads that do not divide the width, or tensors past their 32-bit indices — the caller
/// composes it).
///
/// In bf16 or f16 (`qkv` of that type) the node runs as PyTorch's autocast runs the composition: the products in
/// the half type, the softmax computed in f32 from the half scores and its probabilities rounded once to the half
/// type, which is what the product with v reads and what the backward keeps. The composition instead keeps f32
/// probabilities for the softmax's backward and writes its scores, probabilities and their gradients once more
/// each for the casts (f32 copies of `[B, H, N, N]`): the node saves those passes and that memory; its gradients
/// differ from the composition's by the rounding of the kept probabilities.
///
/// `qkv`'s rows are `B` examples of `tokens` (`N`) tokens each: `[B, N, 3·D]`, or `[B·N, 3·D]` as the blocks
/// take them on the GPU backends ([`token_rows`]); the output has `qkv`'s leading axes.
///
/// # Shapes
/// `qkv: [B, N, 3·D]` → `[B, N, D]`; `[B·N, 3·D]` → `[B·N, D]`
pub fn attention<B: Backend, const R: usize>(qkv: Tensor<B, R>, tokens: usize, heads: usize) -> Option<Tensor<B, R>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::attention(qkv, tokens, heads);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (qkv, tokens, heads);
        None
    }
}

/// Whether the blocks take their tokens as rows, `[B·N, D]` ([`crate::model::block::Block::forward_rows`]): on
/// the GPU backends with the kernels on. Every step of a block is row-wise there (LayerNorm, the products, the
/// attention node reading its heads from the rows), so the `[B, N, D]` view only cost a reshape before and after
/// each linear layer and those reshapes' own backward: 16 operations of burn's fusion stream per block and
/// update, each prepared by its host thread (`benches/host_work.sh`).
pub fn token_rows<B: Backend>() -> bool {
    enabled() && gpu_backend::<B>()
}

/// GELU, tanh approximation (`x·σ(2z)`, `z = √(2/π)·(x + 0.044715·x³)`), as one autodiff node on the GPU backends:
/// one kernel forward and one backward, which keeps only `x` for the backward, where burn's composition
/// (`block::gelu_tanh`) records seven operations and their backward, and keeps their intermediates. In f32
/// whatever the type (f32, bf16, f16), rounded once to it: what PyTorch's GELU kernel does on bf16 tensors, with no
/// casts around it. `Err(x)` on the other backends, with the kernels off, or for other types or sizes (the caller
/// composes it).
///
/// # Shapes
/// `x: [..., N]` → `[..., N]`
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::gelu_tanh(x);
    #[cfg(not(feature = "gpu-kernels"))]
    Err(x)
}

/// The row pitch of a tensor laid out as rows of its last axis at a constant distance `pitch ≥ n` apart (packed
/// rows: `pitch = n`), in elements; `None` for any other layout. CUDA's allocations pad rows to a pitch
/// (CubeCL's "optimized" layout), so the outputs of burn's products there often come this way.
#[cfg_attr(not(feature = "gpu-kernels"), allow(dead_code))]
pub(crate) fn row_pitch(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let r = shape.len();
    let n = *shape.last()?;
    if n > 1 && strides[r - 1] != 1 {
        return None;
    }
    // the innermost axis before the last that has more than one index sets the pitch
    let Some(i) = (0..r - 1).rev().find(|&i| shape[i] > 1) else {
        return Some(n); // one row
    };
    let pitch = strides[i];
    if pitch < n {
        return None;
    }
    let mut expect = pitch;
    for k in (0..=i).rev() {
        if shape[k] > 1 && strides[k] != expect {
            return None;
        }
        expect *= shape[k];
    }
    Some(pitch)
}

/// A packed copy of each segment `(offset, length)` of the f32 `flat` as a tensor of `shapes[i]` (row-major) and
/// float type `dtypes[i]` (f32, bf16 or f16: the flat optimizer's half working copies, rounded as burn's cast
/// rounds), five per launch on the GPU backends (the flat optimizer's parameters after an update, in their
/// shapes: one operation of burn's fusion stream for all of them where a view and a reshape per parameter were
/// two each); `None` for the other backends (the caller then slices, and `old` is dropped). `old` is empty or
/// has one entry per segment: the tensor the copy replaces, whose buffer the copy takes where nothing else holds
/// it (`GpuKernels::unpack`: no allocation, and no release registered with burn's fusion per parameter).
///
/// # Shapes
/// `flat: [total]`, `old[i]: shapes[i]` → `[shapes[i]]`
pub fn unpack<B: Backend>(
    flat: &Tensor<B, 1>,
    segs: &[(usize, usize)],
    shapes: &[Shape],
    dtypes: &[DType],
    old: Vec<Option<FloatTensor<B>>>,
) -> Option<Vec<FloatTensor<B>>> {
    assert!(segs.len() == shapes.len() && segs.len() == dtypes.len(), "one shape and one float type per segment");
    assert!(old.is_empty() || old.len() == segs.len(), "one old tensor (or none) per segment");
    for (s, sh) in segs.iter().zip(shapes) {
        assert_eq!(s.1, sh.num_elements(), "a shape's size differs from its segment's");
    }
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::unpack(flat, segs, shapes, dtypes, old);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (flat, old);
        None
    }
}

/// One flat optimizer update (`GpuKernels::flat_update`) on the GPU backends: `[w', m']` (SGD) or
/// `[w', m', v']` (Adam) from the weights, the gradient (times the clip factor `scale` or `gs`) and the moments,
/// AdamW's decay only where `mask` is 1. `None` elsewhere, with the kernels off, past the kernels' 32-bit
/// indices, or on an adapter that binds fewer storage buffers than the kernel reads (the caller composes).
///
/// # Shapes
/// `w`, `g`, `m`, `v`, `mask: [n]`, `scale: [1]` → `[n]` each
#[allow(clippy::too_many_arguments)]
pub fn flat_update<B: Backend>(
    w: &Tensor<B, 1>,
    g: &Tensor<B, 1>,
    m: Tensor<B, 1>,
    v: Option<Tensor<B, 1>>,
    scale: Option<&Tensor<B, 1>>,
    mask: Option<&Tensor<B, 1>>,
    rule: FlatRule,
    gs: f32,
) -> Option<Vec<Tensor<B, 1>>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::flat_update(w, g, m, v, scale, mask, rule, gs);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (w, g, m, v, scale, mask, rule, gs);
        None
    }
}

/// `Σ g²` over the elements of `g` as a `[1]` tensor on the GPU backends: one kernel writes at most 1,024 partial
/// sums, burn's `sum` adds them. burn 0.21's own `sum` over all elements of a large tensor is wrong on wgpu:
/// on lavapipe it stops at 262,132 elements of a 1-D tensor (65,533 cubes of 4, under Vulkan's 65,535 cubes per
/// axis) and at 1,048,512 of a 2-D one, whatever the tensor's size (`tests/wgpu.rs`), which made the flat
/// optimizer's gradient norm, and its clipping, wrong for every model of more parameters than that. `None` for
/// the other backends and types (the caller uses `sum`).
///
/// # Shapes
/// `g: [n]` → `[1]`
pub fn squared_norm<B: Backend>(g: &Tensor<B, 1>) -> Option<Tensor<B, 1>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::squared_norm(g);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = g;
        None
    }
}

/// Whether `B` is one of this build's GPU backends (`Cuda`, `Wgpu`) or `Autodiff` of one.
pub fn gpu_backend<B: Backend>() -> bool {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::gpu_backend::<B>();
    #[cfg(not(feature = "gpu-kernels"))]
    false
}

/// `l(x)` = `x·W + b` over the last axis. On the GPU backends the leading axes are first flattened into one, as
/// PyTorch's `F.linear` does: burn 0.21's `linear` multiplies a `[B, N, D_in]` input by the weight broadcast to
/// `[1, D_in, D_out]` (a batched product) and, under autodiff, computes the weight's gradient as `B` products
/// `[D_in, N]·[N, D_out]` written to a `[B, D_in, D_out]` tensor then summed over `B` (a reduction launch and, for
/// ViT-B's MLP at batch 64, 600 MB of intermediate), and the bias's as two reductions. Flattened, the weight's
/// gradient is one product `[D_in, B·N]·[B·N, D_out]` and the bias's polyflow's column sums (two launches of no
/// autotuned shape, in f32, bf16 or f16: `GpuKernels::col_sums`). The layer is one autodiff node there:
/// forward burn's product and bias add (fused into one launch), backward one operation of burn's fusion stream
/// for all three gradients (`GpuKernels::linear_backward`). On the CPU (`Flex`, f32, with a bias, the fused CPU
/// path on) one node on polyflow's own product ([`super::fused::linear::try_linear`]: the same bits on every x86-64
/// CPU with AVX2 + FMA). Elsewhere, and with the kernels off ([`set_enabled`]), burn's `linear` as it is: the same
/// values up to float rounding. A 2-D `x` (rows) takes the same node on the GPU backends, with no reshape.
///
/// # Shapes
/// `x: [..., D_in]`, `w: [D_in, D_out]`, `bias: [D_out]` → `[..., D_out]`
pub fn linear_rows<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    // The CPU: one node on polyflow's product, the same bits on every x86-64 CPU with AVX2 + FMA.
    if let Some(y) = bias.as_ref().and_then(|b| super::fused::linear::try_linear(&x, &w, b)) {
        return y;
    }
    if D < 2 || !enabled() || !gpu_backend::<B>() {
        return burn::tensor::module::linear(x, w, bias);
    }
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let d_out = w.dims()[1];
    // Rows already (the blocks' tokens on these backends, [`token_rows`]): no reshape, each of which is an
    // operation of burn's fusion stream, and one more in the backward.
    let x2: Tensor<B, 2> = if D == 2 { Tensor::from_primitive(x.into_primitive()) } else { x.reshape([rows, dims[D - 1]]) };
    let y = match bias {
        // One type for all three (f32, or bf16/f16 under autocast): the product and the bias add one node whose
        // backward is one operation ([`GpuKernels::linear_backward`]), its bias gradient polyflow's column sums.
        Some(b) if x2.dtype() == w.dtype() && w.dtype() == b.dtype() && matches!(b.dtype(), DType::F32 | DType::BF16 | DType::F16) => {
            linear_node(x2, w, b).expect("a GPU backend takes the linear node")
        }
        _ => linear_product(x2, w, bias),
    };
    if D == 2 {
        return Tensor::from_primitive(y.into_primitive());
    }
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// `x·w` and the bias added as two nodes (mixed float types, no bias, the kernels' indices exceeded).
///
/// # Shapes
/// `x: [rows, D_in]`, `w: [D_in, D_out]`, `bias: [D_out]` → `[rows, D_out]`
fn linear_product<B: Backend>(x2: Tensor<B, 2>, w: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
    let y = x2.matmul(w); // [rows, D_out]
    match bias {
        // The bias's gradient as polyflow's column sums (burn's reduction over the rows stops short past 65,532
        // rows on some wgpu adapters, and each new row count is a shape its autotune tunes again). Moved, not
        // cloned, into the node: a clone alive would make burn's fusion keep the inputs and release them apart.
        // In bf16/f16 (autocast's linear) too: the sums in f32, rounded once to the half type.
        Some(b) if y.dtype() == b.dtype() && matches!(b.dtype(), DType::F32 | DType::BF16 | DType::F16) => {
            bias_add(y, b).expect("a GPU backend takes the bias-add node")
        }
        Some(b) => y + b.unsqueeze(),
        None => y,
    }
}

/// `x·w + bias` as one autodiff node ([`GpuKernels::linear_backward`]) for the GPU backends, one float type for
/// all three with the kernels on (the caller checks; `None` for any other backend).
///
/// # Shapes
/// `x: [rows, D_in]`, `w: [D_in, D_out]`, `bias: [D_out]` → `[rows, D_out]`
fn linear_node<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, bias: Tensor<B, 1>) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::linear(x, w, bias);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (x, w, bias);
        None
    }
}

/// `y + bias` over `y`'s rows as one autodiff node whose backward sums the gradient's columns with polyflow's
/// kernels, for the GPU backends in f32, bf16 or f16 (one type for both) with the kernels on (the caller checks;
/// `None` for any other backend).
///
/// # Shapes
/// `y: [rows, d]`, `bias: [d]` → `[rows, d]`
fn bias_add<B: Backend>(y: Tensor<B, 2>, bias: Tensor<B, 1>) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::bias_add(y, bias);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (y, bias);
        None
    }
}

/// The batch's mean classification loss of `logits` against `targets` as one autodiff node on the GPU backends
/// (one launch forward and one backward, where burn's composition records about ten operations, four of them
/// reductions, and their backward): softmax cross-entropy, or with `sigmoid` binary cross-entropy on logits,
/// summed over the classes. `Err` hands the inputs back where the node does not apply (the CPU, the kernels
/// off, float types other than f32/bf16/f16 or differing, targets that require a gradient, tensors past the
/// kernels' 32-bit indices): the caller composes the loss with burn's operations, as `train::metrics::loss` does.
///
/// # Shapes
/// `logits`, `targets: [B, K]` → `[1]`
#[allow(clippy::type_complexity)]
pub fn classification_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    sigmoid: bool,
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::loss(logits, targets, sigmoid);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = sigmoid;
        Err((logits, targets))
    }
}

/// [`linear_rows`] with `l`'s weight and bias (what `l.forward(x)` computes).
///
/// # Shapes
/// `x: [..., D_in]` → `[..., D_out]`
pub fn linear<B: Backend, const D: usize>(l: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    linear_rows(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()))
}

/// `pieces` (tensors of any rank, taken in row-major order) laid out at `segs` (`(offset, length)`, one per
/// piece) in a zero buffer of `total` elements, a missing piece left zero: one launch per five pieces on the GPU
/// backends (not their autodiff), each piece read as rows of its last axis where they are (CUDA pads the rows of
/// a product's output, a weight's gradient among them: flattening one would copy it). The pieces are moved in:
/// burn's fusion then releases each with the operation that reads it last, where a piece dropped after the
/// operation would be a release operation of its own (one per gradient and update). `Err` hands them back
/// elsewhere or with nothing to copy (the caller then uses `slice_assign`).
///
/// # Shapes
/// `pieces[i]: [..]` with `segs[i].1` elements → `[total]`
#[allow(clippy::type_complexity)]
pub fn pack<B: Backend>(
    pieces: Vec<Option<FloatTensor<B>>>,
    segs: &[(usize, usize)],
    total: usize,
) -> Result<Tensor<B, 1>, Vec<Option<FloatTensor<B>>>> {
    assert_eq!(pieces.len(), segs.len(), "one segment per piece");
    for (p, s) in pieces.iter().zip(segs) {
        if let Some(p) = p {
            assert_eq!(burn::tensor::TensorMetadata::shape(p).num_elements(), s.1, "a piece's length differs from its segment's");
        }
    }
    #[cfg(feature = "gpu-kernels")]
    return on_gpu::pack(pieces, segs, total);
    #[cfg(not(feature = "gpu-kernels"))]
    {
        let _ = (segs, total);
        Err(pieces)
    }
}

/// The dispatch from a generic backend to the concrete GPU backends this build has.
#[cfg(feature = "gpu-kernels")]
mod on_gpu;

#[cfg(test)]
mod tests {
    use super::row_pitch;

    /// Rows evenly spaced are read in place, packed or padded (CUDA's pitched layout); anything else — a
    /// transposed or broadcast tensor, a strided last axis, rows closer than their length, outer axes not in
    /// step with the rows — is refused (the kernels then take a packed copy).
    #[test]
    fn row_pitch_accepts_evenly_spaced_rows_only() {
        assert_eq!(row_pitch(&[4, 65], &[65, 1]), Some(65), "packed");
        assert_eq!(row_pitch(&[2, 3, 65, 65], &[3 * 65 * 128, 65 * 128, 128, 1]), Some(128), "CUDA's pitch");
        assert_eq!(row_pitch(&[4, 192], &[256, 1]), Some(256));
        assert_eq!(row_pitch(&[1, 1, 7], &[99, 5, 1]), Some(7), "one row: the outer strides do not matter");
        assert_eq!(row_pitch(&[3, 1, 7], &[8, 99, 1]), Some(8), "an axis of one index does not matter");
        assert_eq!(row_pitch(&[5], &[1]), Some(5));
        assert_eq!(row_pitch(&[4, 8], &[1, 4]), None, "transposed");
        assert_eq!(row_pitch(&[4, 8], &[0, 1]), None, "broadcast rows");
        assert_eq!(row_pitch(&[4, 8], &[16, 2]), None, "strided last axis");
        assert_eq!(row_pitch(&[4, 8], &[4, 1]), None, "overlapping rows");
        assert_eq!(row_pitch(&[2, 3, 8], &[3 * 16 + 4, 16, 1]), None, "outer axis out of step");
        assert_eq!(row_pitch(&[3, 2, 8], &[8, 24, 1]), None, "outer axes swapped");
    }
}
