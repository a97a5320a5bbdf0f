//! The kernels as autodiff operations: LayerNorm and softmax each one node of burn's graph whose backward
//! runs the matching backward kernel (instead of the ~20 nodes burn's compositions record); the attention's core
//! (heads split, products, softmax, heads merged) one node of one operation of burn's fusion stream each way; GELU
//! (tanh) one node; a linear layer on rows one node whose backward is one operation.

use super::GpuKernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};

/// LayerNorm's backward step: parents `x`, `γ`, `β`; state `x`, `γ`, the rows' means and reciprocal deviations.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: GpuKernels> Backward<B, 3> for LayerNormBackward {
    type State = [FloatTensor<B>; 4];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x, gamma, mean, rstd] = ops.state;
        let g = grads.consume::<B>(&ops.node);
        let d = B::ln_backward(g, x, gamma, mean, rstd);
        for (parent, grad) in ops.parents.into_iter().zip(d) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// LayerNorm over the last axis on `Autodiff<B>`, one node, its output of type `out` (its backward reads the
/// gradient in that type).
pub(super) fn layer_norm<B: GpuKernels>(
    x: FloatTensor<Autodiff<B>>,
    gamma: FloatTensor<Autodiff<B>>,
    beta: FloatTensor<Autodiff<B>>,
    eps: f64,
    out: burn::tensor::DType,
) -> FloatTensor<Autodiff<B>> {
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let [y, mean, rstd] = B::ln_forward(x.primitive.clone(), gamma.primitive.clone(), beta.primitive, eps, out);
    match LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive, mean, rstd], y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The backward step of a one-input element-wise node (softmax over the last axis, GELU): parent `x`; state one
/// tensor (softmax: its output; GELU: its input); the input gradient `grad(g, state)`, one kernel.
#[derive(Debug)]
struct UnaryBackward<B: GpuKernels>(fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>);

impl<B: GpuKernels> Backward<B, 1> for UnaryBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, (self.0)(g, ops.state));
        }
    }
}

/// The node of `x` whose `forward` gives its output and the state `grad` reads (kept when `x` is tracked). `x`'s
/// primitive is moved into `forward`, not cloned: a clone alive would make burn's fusion keep it and release it
/// apart.
fn unary<B: GpuKernels>(
    x: FloatTensor<Autodiff<B>>,
    forward: impl FnOnce(FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>),
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B>> {
    let (y, state) = forward(x.primitive);
    match UnaryBackward(grad).prepare::<NoCheckpointing>([x.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// Softmax over the last axis on `Autodiff<B>`, one node (its backward reads the output).
pub(super) fn softmax<B: GpuKernels>(x: FloatTensor<Autodiff<B>>) -> FloatTensor<Autodiff<B>> {
    let forward = |x| {
        let y = B::softmax_forward(x);
        (y.clone(), y)
    };
    unary(x, forward, B::softmax_backward)
}

/// GELU (tanh approximation) on `Autodiff<B>`, one node (its backward reads the input).
pub(super) fn gelu_tanh<B: GpuKernels>(x: FloatTensor<Autodiff<B>>) -> FloatTensor<Autodiff<B>> {
    unary(x, |x: FloatTensor<B>| (B::gelu_tanh_forward(x.clone()), x), B::gelu_tanh_backward)
}

/// The attention's backward step: parent the packed projection; state `q·scale`, `k`, `v`, the probabilities
/// `p`, `scale` and the projection's shape.
#[derive(Debug)]
struct AttentionBackward;

/// What the attention's backward reads: `[q·scale, k, v, p]`, `scale`, the packed projection's shape.
type AttentionState<B> = ([FloatTensor<B>; 4], f64, Shape);

impl<B: GpuKernels> Backward<B, 1> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ([q, k, v, p], scale, shape) = ops.state;
        // [B, N, D] or [B·N, D], of the node's output type (burn's autodiff hands a half output its gradient in that type;
        // the cast keeps the products on one type should that ever change).
        let g = grads.consume::<B>(&ops.node);
        let g = if g.dtype() == q.dtype() { g } else { B::float_cast(g, q.dtype().into()) };
        let [parent] = ops.parents;
        let Some(node) = parent else { return };
        grads.register::<B>(node.id, B::attention_backward(g, q, k, v, p, scale, shape));
    }
}

/// The attention's core on `B` as polyflow's kernels and the backend's products, what
/// [`GpuKernels::attention_forward`] runs (on the fusion backend inside one operation): the output and, when
/// `state`, `[q·scale, k, v, p]`.
///
/// # Shapes
/// `qkv: [B, N, 3·D]` (or `[B·N, 3·D]`) → `[B, N, D]` (or `[B·N, D]`), then `[B, H, N, hd]` × 3 and `[B, H, N, N]`
pub(super) fn attention_core<B: GpuKernels>(qkv: FloatTensor<B>, n: usize, heads: usize, state: bool) -> Vec<FloatTensor<B>> {
    let shape = qkv.shape();
    let d3 = shape[shape.num_dims() - 1];
    let hd = d3 / 3 / heads;
    let mut out_dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    *out_dims.last_mut().expect("a last axis") = d3 / 3;
    let [q, k, v] = B::qkv_split(qkv, n, heads, scale_of(hd)); // [B, H, N, hd] each
    let scores = B::float_matmul(q.clone(), B::float_swap_dims(k.clone(), 2, 3)); // [B, H, N, N]
    let p = B::softmax_forward(scores);
    let o = B::float_matmul(p.clone(), v.clone()); // [B, H, N, hd]
    let out = B::heads_merge(o, Shape::from(out_dims)); // [B, N, D] or [B·N, D]
    if state {
        vec![out, q, k, v, p]
    } else {
        vec![out]
    }
}

/// [`attention_core`]'s gradient on `B`, what [`GpuKernels::attention_backward`] runs.
///
/// # Shapes
/// `g`: the output's shape; `q`, `k`, `v: [B, H, N, hd]`, `p: [B, H, N, N]` → `shape`
pub(super) fn attention_core_backward<B: GpuKernels>(
    g: FloatTensor<B>,
    [q, k, v, p]: [FloatTensor<B>; 4],
    scale: f64,
    shape: Shape,
) -> FloatTensor<B> {
    let [b, h, n, hd] = q.shape().dims::<4>();
    // The heads split out by one kernel into a packed [B, H, N, hd], which both products read as it is.
    let gh = B::heads_split(g, n, h);
    debug_assert_eq!(gh.shape().dims::<4>(), [b, h, n, hd]);
    let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), gh.clone()); // pᵀ·g: [B, H, N, hd]
    let dp = B::float_matmul(gh, B::float_swap_dims(v, 2, 3)); // g·vᵀ: [B, H, N, N]
    let ds = B::softmax_backward(dp, p); // the scores' gradient
    let dq = B::float_matmul(ds.clone(), k); // of q·scale: [B, H, N, hd]
    let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), q); // dsᵀ·(q·scale)
    B::qkv_merge(dq, dk, dv, scale, shape)
}

/// `1/√hd`, the scale of the scores.
fn scale_of(hd: usize) -> f64 {
    1.0 / (hd as f64).sqrt()
}

/// The attention's forward pass on `B` (one operation: [`GpuKernels::attention_forward`]): the output and what
/// the backward reads. `qkv`'s rows are `B` examples of `n` tokens; the output has its leading axes.
///
/// # Shapes
/// `qkv: [B, N, 3·D]` (or `[B·N, 3·D]`) → `([B, N, D]` (or `[B·N, D]`), `[[B, H, N, hd]; 3] + [B, H, N, N]`)
pub(super) fn attention_forward<B: GpuKernels>(qkv: FloatTensor<B>, n: usize, heads: usize) -> (FloatTensor<B>, AttentionState<B>) {
    let shape = qkv.shape();
    let hd = shape[shape.num_dims() - 1] / 3 / heads;
    let mut outs = B::attention_forward(qkv, n, heads, true).into_iter();
    let mut next = move || outs.next().expect("the output and four tensors of state");
    let (out, q, k, v, p) = (next(), next(), next(), next(), next());
    (out, ([q, k, v, p], scale_of(hd), shape))
}

/// The attention's output alone on `B` (inference: [`GpuKernels::attention_forward`] without its state).
pub(super) fn attention_output<B: GpuKernels>(qkv: FloatTensor<B>, n: usize, heads: usize) -> FloatTensor<B> {
    B::attention_forward(qkv, n, heads, false).into_iter().next().expect("the output")
}

/// Multi-head self-attention from the packed projection on `Autodiff<B>`, one node.
pub(super) fn attention<B: GpuKernels>(qkv: FloatTensor<Autodiff<B>>, n: usize, heads: usize) -> FloatTensor<Autodiff<B>> {
    let (out, state) = attention_forward::<B>(qkv.primitive, n, heads);
    match AttentionBackward.prepare::<NoCheckpointing>([qkv.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The bias add's backward step: parents `y` (`[rows, d]`) and the bias (`[d]`); no state.
#[derive(Debug)]
struct BiasAddBackward;

impl<B: GpuKernels> Backward<B, 2> for BiasAddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let [y, bias] = ops.parents;
        if let Some(node) = bias {
            grads.register::<B>(node.id, B::col_sums(g.clone()));
        }
        if let Some(node) = y {
            grads.register::<B>(node.id, g);
        }
    }
}

/// `y + bias` over the rows of `y` on `B` (burn's broadcast add, which its fusion can still take into the product
/// before it).
///
/// # Shapes
/// `y: [rows, d]`, `bias: [d]` → `[rows, d]`
pub(super) fn bias_add_forward<B: GpuKernels>(y: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let d = bias.shape()[0];
    B::float_add(y, B::float_reshape(bias, Shape::new([1, d])))
}

/// `y + bias` on `Autodiff<B>`, one node whose backward sums the gradient's columns with polyflow's kernels.
pub(super) fn bias_add<B: GpuKernels>(y: FloatTensor<Autodiff<B>>, bias: FloatTensor<Autodiff<B>>) -> FloatTensor<Autodiff<B>> {
    let out = bias_add_forward::<B>(y.primitive, bias.primitive);
    BiasAddBackward.prepare::<NoCheckpointing>([y.node, bias.node]).compute_bound().stateless(out)
}

/// The linear layer's backward step: parents `x`, `w`, the bias; state `x` and `w` (what the products read).
#[derive(Debug)]
struct LinearBackward;

impl<B: GpuKernels> Backward<B, 3> for LinearBackward {
    type State = [FloatTensor<B>; 2];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let [x, w] = ops.state;
        let want = [ops.parents[0].is_some(), ops.parents[1].is_some(), ops.parents[2].is_some()];
        let d = B::linear_backward(g, x, w, want);
        for (parent, grad) in ops.parents.into_iter().zip(d) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `x·w + bias` on `Autodiff<B>`, one node: forward burn's product and broadcast add (which burn's fusion runs
/// as one launch), backward one operation ([`GpuKernels::linear_backward`]).
///
/// # Shapes
/// `x: [rows, D_in]`, `w: [D_in, D_out]`, `bias: [D_out]` → `[rows, D_out]`
pub(super) fn linear<B: GpuKernels>(
    x: FloatTensor<Autodiff<B>>,
    w: FloatTensor<Autodiff<B>>,
    bias: FloatTensor<Autodiff<B>>,
) -> FloatTensor<Autodiff<B>> {
    let nodes = [x.node, w.node, bias.node];
    match LinearBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = linear_forward::<B>(x.primitive.clone(), w.primitive.clone(), bias.primitive);
            prep.finish([x.primitive, w.primitive], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(linear_forward::<B>(x.primitive, w.primitive, bias.primitive)),
    }
}

/// `x·w + bias` on `B` as burn's product and broadcast add, which burn's fusion runs as one launch.
///
/// # Shapes
/// `x: [rows, D_in]`, `w: [D_in, D_out]`, `bias: [D_out]` → `[rows, D_out]`
pub(super) fn linear_forward<B: GpuKernels>(x: FloatTensor<B>, w: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    bias_add_forward::<B>(B::float_matmul(x, w), bias)
}

/// The loss's backward step: parent the logits (the targets are data, never tracked: the caller checks); state
/// the logits, the targets and the loss's kind.
#[derive(Debug)]
struct LossBackward;

impl<B: GpuKernels> Backward<B, 1> for LossBackward {
    type State = ([FloatTensor<B>; 2], bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let ([z, t], sigmoid) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::loss_backward(g, z, t, sigmoid));
        }
    }
}

/// The batch's mean classification loss on `Autodiff<B>`, one node of one operation each way
/// ([`GpuKernels::loss_forward`], [`GpuKernels::loss_backward`]); `t` gets no gradient.
///
/// # Shapes
/// `z`, `t: [B, K]` → `[1]`
pub(super) fn loss<B: GpuKernels>(z: FloatTensor<Autodiff<B>>, t: FloatTensor<Autodiff<B>>, sigmoid: bool) -> FloatTensor<Autodiff<B>> {
    match LossBackward.prepare::<NoCheckpointing>([z.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let l = B::loss_forward(z.primitive.clone(), t.primitive.clone(), sigmoid);
            prep.finish(([z.primitive, t.primitive], sigmoid), l)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::loss_forward(z.primitive, t.primitive, sigmoid)),
    }
}
