//! Fused CPU kernels for the transformer block on burn's `flex` backend.
//!
//! burn composes a block out of ~40 tensor ops, most of them single-threaded element-wise passes and
//! strided copies (reshapes and permutes around attention); on the 2-core machines this project runs on
//! they took more time than the matrix products (BENCHMARKS.md). Here the whole block is one autodiff
//! operation with a hand-written backward ([`block`]), on row-parallel kernels ([`kernels`]).
//!
//! [`try_block`] takes that path when the backend is `Flex` or `Autodiff<Flex>`, the tensors are `f32`, the
//! block uses the tanh GELU and has biases, and the path is enabled ([`set_enabled`], or the environment
//! variable `POLYFLOW_FUSED_CPU=0` to turn it off). Otherwise the block runs burn's composition
//! ([`crate::model::block::Block`]), which is also the reference the fused block is tested against.

pub mod block;
pub mod linear;
pub mod norm;
/// The CPU kernels (crate `polyflow-kernels`).
pub use polyflow_kernels as kernels;
/// The x86-64 matrix product (`polyflow_kernels::sgemm`).
pub use polyflow_kernels::sgemm;

use super::block::{Arith, Block, DropMasks};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

type Ad = Autodiff<Flex>;

/// 0: not decided yet (read the environment), 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Turns the fused CPU block on or off for this process (A/B benchmarks, reference tests).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// The environment variable that turns the fused CPU block off (`0`).
pub const SWITCH_VAR: &str = "POLYFLOW_FUSED_CPU";

/// The values of [`SWITCH_VAR`]: off, on (any other value: on). The list the CLI's check of the knobs names.
pub const SWITCH_VALUES: [&str; 2] = ["0", "1"];

/// Whether the fused CPU block is used where it applies (default: yes unless `POLYFLOW_FUSED_CPU=0`).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var(SWITCH_VAR).map(|v| v != SWITCH_VALUES[0]).unwrap_or(true);
            set_enabled(on);
            on
        }
    }
}

/// Whether blocks of backend `B` can checkpoint their activations (`activation_checkpointing = true`): the fused
/// CPU block does it. `Err` says why not.
pub fn recompute_supported<B: Backend>(gelu_tanh: bool) -> Result<(), String> {
    fused_supported::<B>(gelu_tanh, "activation_checkpointing = true", "leave it off on this backend")
}

/// Whether the fused CPU block will run for backend `B`: `Err` names `what` needs it and why it will not run.
fn fused_supported<B: Backend>(gelu_tanh: bool, what: &str, instead: &str) -> Result<(), String> {
    let flex = TypeId::of::<B>() == TypeId::of::<Ad>() || TypeId::of::<B>() == TypeId::of::<Flex>();
    if !flex {
        return Err(format!("{what} runs on the CPU (flex) backend only in this version; {instead}"));
    }
    if !gelu_tanh {
        return Err(format!("{what} needs the tanh GELU (gelu = \"tanh\"): the erf GELU runs outside the fused CPU block"));
    }
    if !enabled() {
        return Err(format!("{what} needs the fused CPU block, which POLYFLOW_FUSED_CPU=0 turned off"));
    }
    Ok(())
}

/// Moves `a` into type `T` when they are the same type.
pub(crate) fn cast<A: 'static, T: 'static>(a: A) -> Option<T> {
    (Box::new(a) as Box<dyn Any>).downcast::<T>().ok().map(|b| *b)
}

/// A contiguous `f32` flex tensor (copied only if it was a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

fn flex(v: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// The block's twelve parameter tensors in [`block::Params`] order, or `None` if a bias is absent.
fn param_tensors<B: Backend>(blk: &Block<B>) -> Option<Vec<Tensor<B, 2>>> {
    let v1 = |t: Tensor<B, 1>| t.unsqueeze::<2>();
    Some(vec![
        v1(blk.norm1.gamma.val()),
        v1(blk.norm1.beta.as_ref()?.val()),
        blk.qkv.weight.val(),
        v1(blk.qkv.bias.as_ref()?.val()),
        blk.proj.weight.val(),
        v1(blk.proj.bias.as_ref()?.val()),
        v1(blk.norm2.gamma.val()),
        v1(blk.norm2.beta.as_ref()?.val()),
        blk.fc1.weight.val(),
        v1(blk.fc1.bias.as_ref()?.val()),
        blk.fc2.weight.val(),
        v1(blk.fc2.bias.as_ref()?.val()),
    ])
}

fn keep_values<B: Backend>(keep: Option<&DropMasks<B>>) -> Option<(Vec<f32>, Vec<f32>)> {
    let v = |t: &Tensor<B, 3>| t.clone().into_data().convert::<f32>().to_vec::<f32>().expect("f32 masks");
    keep.map(|(a, m)| (v(a), v(m)))
}

/// Everything the backward pass needs, shared by reference count.
struct Inner {
    x: FlexTensor,
    params: Vec<FlexTensor>,
    dims: block::Dims,
    keep: Option<(Vec<f32>, Vec<f32>)>,
    /// The activations, or empty when they are recomputed in the backward pass (activation checkpointing).
    saved: block::Saved,
    /// Whether `saved` is recomputed in the backward pass.
    recompute: bool,
}

impl Inner {
    /// Runs the block on `tensors` (`x` then the twelve parameters): the output `[B, N, D]` and the state
    /// (with the activations when `save`).
    fn forward(tensors: Vec<FlexTensor>, dims: block::Dims, keep: Option<(Vec<f32>, Vec<f32>)>, save: bool) -> (FlexTensor, Inner) {
        let mut t = tensors.into_iter().map(contiguous);
        let x = t.next().expect("x");
        let mut st = Inner { x, params: t.collect(), dims, keep, saved: Default::default(), recompute: false };
        let (y, saved) = block::forward(slice(&st.x), &st.params(), dims, st.keep(), save);
        st.saved = saved.unwrap_or_default();
        (flex(y, vec![dims.b, dims.n, dims.d]), st)
    }

    fn params(&self) -> block::Params<'_> {
        let s = |i: usize| slice(&self.params[i]);
        block::Params {
            ln1: (s(0), s(1)),
            qkv: (s(2), s(3)),
            proj: (s(4), s(5)),
            ln2: (s(6), s(7)),
            fc1: (s(8), s(9)),
            fc2: (s(10), s(11)),
        }
    }
    fn keep(&self) -> Option<(&[f32], &[f32])> {
        self.keep.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice()))
    }
}

/// Autodiff state of one fused block.
#[derive(Clone)]
struct State(Arc<Inner>);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusedBlockState({:?})", self.0.dims)
    }
}

/// The fused block's backward step: parents are `x` then the twelve parameters.
#[derive(Debug)]
struct FusedBlockBackward;

impl Backward<Flex, 13> for FusedBlockBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 13>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state.0;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let x = slice(&st.x);
        // Checkpointed: the forward pass again, with the same kernels on the same input (the same bits).
        let recomputed = st.recompute.then(|| {
            #[cfg(test)]
            tests::RECOMPUTES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            block::forward(x, &st.params(), st.dims, st.keep(), true).1.expect("saved activations")
        });
        let saved = recomputed.as_ref().unwrap_or(&st.saved);
        let (dx, pg) = block::backward(x, &st.params(), st.dims, st.keep(), saved, slice(&dy));
        let mut grads_in = std::iter::once((dx, st.x.layout().shape().to_vec()))
            .chain(pg.into_iter().zip(&st.params).map(|(g, p)| (g, p.layout().shape().to_vec())));
        for parent in ops.parents.iter() {
            let (g, shape) = grads_in.next().expect("13 gradients");
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex(g, shape));
            }
        }
    }
}

/// The block on the fused CPU path, or `None` where it does not apply (see the module docs).
///
/// # Shapes
/// `x: [B, N, D]` → `[B, N, D]`
pub fn try_block<B: Backend>(blk: &Block<B>, x: &Tensor<B, 3>, keep: Option<&DropMasks<B>>) -> Option<Tensor<B, 3>> {
    let autodiff = TypeId::of::<B>() == TypeId::of::<Ad>();
    if !(autodiff || TypeId::of::<B>() == TypeId::of::<Flex>()) || !blk.gelu_tanh || blk.arith == Arith::F16 || !enabled() {
        return None;
    }
    let [b, n, d] = x.dims();
    if d % blk.heads != 0 || x.dtype() != DType::F32 {
        return None;
    }
    let params = param_tensors(blk)?;
    if params.iter().any(|p| p.dtype() != DType::F32) {
        return None;
    }
    let mlp = params[8].dims()[1];
    let prec = if blk.arith == Arith::Bf16 { kernels::Precision::Bf16 } else { kernels::Precision::F32 };
    let dims = block::Dims { b, n, d, h: blk.heads, mlp, eps: blk.eps as f32, prec };
    let keep = keep_values(keep);
    let prims: Vec<FloatTensor<B>> =
        std::iter::once(x.clone().into_primitive().tensor()).chain(params.into_iter().map(|p| p.into_primitive().tensor())).collect();
    if autodiff {
        let prims: Vec<FloatTensor<Ad>> = prims.into_iter().map(|p| cast(p).expect("Autodiff<Flex> primitive")).collect();
        let out = fused_autodiff(prims, dims, keep, blk.recompute);
        cast(Tensor::<Ad, 3>::from_primitive(TensorPrimitive::Float(out)))
    } else {
        let prims: Vec<FlexTensor> = prims.into_iter().map(|p| cast(p).expect("Flex primitive")).collect();
        let (out, _) = Inner::forward(prims, dims, keep, false);
        cast(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(out)))
    }
}

/// The tracked (or untracked) autodiff op: forward on the inner tensors, state for the backward pass.
fn fused_autodiff(prims: Vec<FloatTensor<Ad>>, dims: block::Dims, keep: Option<(Vec<f32>, Vec<f32>)>, recompute: bool) -> FloatTensor<Ad> {
    let nodes: [_; 13] = std::array::from_fn(|i| prims[i].node.clone());
    let inner: Vec<FlexTensor> = prims.into_iter().map(|p| p.primitive).collect();
    match FusedBlockBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, mut st) = Inner::forward(inner, dims, keep, !recompute);
            st.recompute = recompute;
            prep.finish(State(Arc::new(st)), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(Inner::forward(inner, dims, keep, false).0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::init::Init;
    use burn::module::Module;
    use burn::tensor::Distribution;

    fn close(a: Vec<f32>, b: Vec<f32>, tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: fused {x} vs composed {y} (scale {scale})");
        }
    }

    fn vals<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Values and the gradients of the input and all twelve parameters equal burn's composition.
    fn check(with_masks: bool) {
        let _one = crate::train::run::autodiff_guard();
        let dev = Default::default();
        let mut init = Init::new(7);
        let blk = Block::<Ad>::new(48, 3, 96, 1e-6, true, &mut init, &dev);
        // Non-trivial LayerNorm affine and biases, so their gradients are exercised.
        let blk = blk.map(&mut crate::model::fused::tests::Perturb);
        let x = Tensor::<Ad, 3>::random([4, 17, 48], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Ad, 3>::random([4, 17, 48], Distribution::Normal(0.0, 1.0), &dev);
        let masks = with_masks.then(|| {
            let m = |v: [f32; 4]| Tensor::<Ad, 3>::from_data(TensorData::new(v.to_vec(), [4, 1, 1]), &dev);
            (m([1.0, 0.0, 1.0, 1.0]), m([0.0, 1.0, 1.0, 0.0]))
        });
        let run = |fused: bool| {
            let xr = x.clone().detach().require_grad();
            let y = if fused {
                try_block(&blk, &xr, masks.as_ref()).expect("fused path applies")
            } else {
                blk.forward_composed(xr.clone(), masks.as_ref())
            };
            let g = (y.clone() * w.clone()).sum().backward();
            let mut out = vec![vals(y), vals(xr.grad(&g).unwrap())];
            for t in [&blk.norm1.gamma, &blk.norm2.gamma] {
                out.push(vals(t.grad(&g).unwrap()));
            }
            for t in [&blk.norm1.beta, &blk.norm2.beta] {
                out.push(vals(t.as_ref().unwrap().grad(&g).unwrap()));
            }
            for l in [&blk.qkv, &blk.proj, &blk.fc1, &blk.fc2] {
                out.push(vals(l.weight.grad(&g).unwrap()));
                out.push(vals(l.bias.as_ref().unwrap().grad(&g).unwrap()));
            }
            out
        };
        let (f, c) = (run(true), run(false));
        let names = ["y", "dx", "dγ1", "dγ2", "dβ1", "dβ2", "dWqkv", "dbqkv", "dWproj", "dbproj", "dW1", "db1", "dW2", "db2"];
        for ((a, b), name) in f.into_iter().zip(c).zip(names) {
            close(a, b, 1e-4, name);
        }
    }

    /// Adds a deterministic ripple to every parameter (LayerNorm γ = 1, β = 0 would hide mistakes).
    struct Perturb;
    impl burn::module::ModuleMapper<Ad> for Perturb {
        fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<Ad, D>>) -> burn::module::Param<Tensor<Ad, D>> {
            let (id, t, mapper) = param.consume();
            let n = t.shape().num_elements();
            let ripple: Vec<f32> = (0..n).map(|i| 0.05 * ((i as f32) * 0.37).sin()).collect();
            let r = Tensor::<Ad, 1>::from_data(TensorData::new(ripple, [n]), &t.device()).reshape(t.shape());
            burn::module::Param::from_mapped_value(id, (t + r).detach().require_grad(), mapper)
        }
    }

    /// Backward passes that recomputed their block's activations (activation checkpointing).
    pub(super) static RECOMPUTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// With activation checkpointing the block keeps no activations, recomputes them in the backward pass, and
    /// gives the same bits: output and the gradients of the input and all twelve parameters, masks on.
    #[test]
    fn checkpointed_block_gives_the_same_bits() {
        let _one = crate::train::run::autodiff_guard();
        let dev = Default::default();
        let blk = Block::<Ad>::new(48, 3, 96, 1e-6, true, &mut Init::new(11), &dev).map(&mut Perturb);
        let x = Tensor::<Ad, 3>::random([4, 17, 48], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Ad, 3>::random([4, 17, 48], Distribution::Normal(0.0, 1.0), &dev);
        let m = |v: [f32; 4]| Tensor::<Ad, 3>::from_data(TensorData::new(v.to_vec(), [4, 1, 1]), &dev);
        let masks = (m([1.0, 0.0, 1.0, 1.0]), m([0.0, 1.0, 1.0, 0.0]));
        let run = |recompute: bool| {
            let mut b = blk.clone();
            b.recompute = recompute;
            let xr = x.clone().detach().require_grad();
            let y = try_block(&b, &xr, Some(&masks)).expect("fused path applies");
            let g = (y.clone() * w.clone()).sum().backward();
            let mut out = vec![vals(y), vals(xr.grad(&g).unwrap())];
            for l in [&b.qkv, &b.proj, &b.fc1, &b.fc2] {
                out.push(vals(l.weight.grad(&g).unwrap()));
                out.push(vals(l.bias.as_ref().unwrap().grad(&g).unwrap()));
            }
            for t in [&b.norm1.gamma, &b.norm2.gamma] {
                out.push(vals(t.grad(&g).unwrap()));
            }
            out
        };
        let kept = run(false);
        let before = RECOMPUTES.load(std::sync::atomic::Ordering::Relaxed);
        let recomputed = run(true);
        assert!(RECOMPUTES.load(std::sync::atomic::Ordering::Relaxed) > before, "the backward pass did not recompute");
        for (i, (a, b)) in kept.iter().zip(&recomputed).enumerate() {
            assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "output {i}");
        }
    }

    #[test]
    fn fused_block_equals_burns_composition_values_and_gradients() {
        check(false);
    }

    #[test]
    fn fused_block_equals_composition_with_stochastic_depth_masks() {
        check(true);
    }

    #[test]
    fn fused_inference_on_flex_equals_composition() {
        let dev = Default::default();
        let blk = Block::<Flex>::new(32, 4, 64, 1e-6, true, &mut Init::new(3), &dev);
        let x = Tensor::<Flex, 3>::random([3, 9, 32], Distribution::Normal(0.0, 1.0), &dev);
        close(vals(try_block(&blk, &x, None).unwrap()), vals(blk.forward_composed(x, None)), 1e-4, "y");
    }

    #[test]
    fn erf_gelu_block_falls_back_to_the_composition() {
        let dev = Default::default();
        let blk = Block::<Flex>::new(32, 4, 64, 1e-6, false, &mut Init::new(3), &dev);
        let x = Tensor::<Flex, 3>::zeros([1, 2, 32], &dev);
        assert!(try_block(&blk, &x, None).is_none());
    }
}
