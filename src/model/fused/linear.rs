//! The linear layers outside the blocks on the CPU (the tokenizers' patch embedding, the task heads) as one
//! autodiff node on [`kernels`]' matrix product, forward and backward.
//!
//! burn's `linear` on `flex` multiplies with the `gemm` crate, which splits the sum over `k` into blocks sized
//! from the CPU's L1 cache (at least 512 terms): a video tubelet's 768 inputs, or a weight gradient's sum over
//! all `B·N` tokens, were then added in another order on a CPU with another L1 (32 KiB 8-way on Zen 3/4, 48 KiB
//! 12-way on Zen 5 and recent Xeons), and trained other bits. [`kernels`]' product sums in an order of its own on
//! every x86-64 CPU with AVX2 + FMA or AVX-512F (the same bits). Its bias gradient is [`kernels::col_sum`]
//! (a fixed chunk order), and the row-broadcast bias add burn composes (a strided pass on one thread) is the
//! product's starting value.

use super::{cast, contiguous, enabled, flex, kernels, slice, Ad};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;
use kernels::{Mat, Precision::F32};
use std::any::TypeId;
use std::sync::Arc;

/// What the backward pass reads: the input as rows and the weight.
struct Inner {
    /// `[m, k]`, contiguous.
    x: FlexTensor,
    /// `[k, n]`, contiguous.
    w: FlexTensor,
    m: usize,
    k: usize,
    n: usize,
}

/// Autodiff state of one linear node.
#[derive(Clone)]
struct State(Arc<Inner>);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinearState([{}, {}] · [{}, {}])", self.0.m, self.0.k, self.0.k, self.0.n)
    }
}

/// The backward step: parents are `x`, `w`, `bias`; each gradient is computed only if its parent is tracked
/// (a tokenizer's input, the data, is not).
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state.0;
        let (m, k, n) = (st.m, st.k, st.n);
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let dy = slice(&dy); // [m, n]
        let [px, pw, pb] = &ops.parents;
        if let Some(node) = px {
            // dx = dy · wᵀ: [m, n] · [n, k], written into a new buffer (no zero-filling pass first)
            let (a, b) = (Mat::rows(dy, n), Mat::t(slice(&st.w), n));
            // SAFETY: a product that does not accumulate writes every value of its m × k view (row stride k).
            let dx = unsafe { kernels::written(m * k, |c| kernels::matmul_any_into(F32, m, k, n, a, b, c, k, true)) };
            grads.register::<Flex>(node.id, flex(dx, st.x.layout().shape().to_vec()));
        }
        if let Some(node) = pw {
            // dw = xᵀ · dy: [k, m] · [m, n]
            let (a, b) = (Mat::t(slice(&st.x), k), Mat::rows(dy, n));
            // SAFETY: as dx's, for the k × n view (row stride n).
            let dw = unsafe { kernels::written(k * n, |c| kernels::matmul_any_into(F32, k, n, m, a, b, c, n, true)) };
            grads.register::<Flex>(node.id, flex(dw, vec![k, n]));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, flex(kernels::col_sum(dy, n), vec![n]));
        }
    }
}

/// `x·w + bias` over the last axis on the CPU path, or `None` where it does not apply: a backend other than
/// `Flex` and `Autodiff<Flex>`, a float type other than f32, or the fused CPU path turned off
/// ([`super::set_enabled`], `POLYFLOW_FUSED_CPU=0`: burn's `linear` then, as the blocks run burn's composition).
///
/// # Shapes
/// `x: [..., k]`, `w: [k, n]`, `bias: [n]` → `[..., n]`
pub fn try_linear<B: Backend, const D: usize>(x: &Tensor<B, D>, w: &Tensor<B, 2>, bias: &Tensor<B, 1>) -> Option<Tensor<B, D>> {
    let autodiff = TypeId::of::<B>() == TypeId::of::<Ad>();
    if D < 2 || !(autodiff || TypeId::of::<B>() == TypeId::of::<Flex>()) || !enabled() {
        return None;
    }
    if [x.dtype(), w.dtype(), bias.dtype()].iter().any(|t| *t != DType::F32) {
        return None;
    }
    let dims = x.dims();
    let [k, n] = w.dims();
    assert_eq!(dims[D - 1], k, "linear: an input of {} features for a weight of {k}", dims[D - 1]);
    let m = dims[..D - 1].iter().product::<usize>();
    let mut out_shape = dims.to_vec();
    out_shape[D - 1] = n;
    let prims = [x.clone().into_primitive().tensor(), w.clone().into_primitive().tensor(), bias.clone().into_primitive().tensor()];
    if autodiff {
        let prims: Vec<FloatTensor<Ad>> = prims.into_iter().map(|p| cast(p).expect("Autodiff<Flex> primitive")).collect();
        let out = linear_autodiff(prims, m, k, n, out_shape);
        cast(Tensor::<Ad, D>::from_primitive(TensorPrimitive::Float(out)))
    } else {
        let [x, w, b] = prims.map(|p| contiguous(cast::<_, FlexTensor>(p).expect("Flex primitive")));
        let y = forward(&x, &w, &b, m, k, n, out_shape);
        cast(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)))
    }
}

/// `x·w + b` on contiguous tensors, the result in `shape`.
fn forward(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, m: usize, k: usize, n: usize, shape: Vec<usize>) -> FlexTensor {
    flex(kernels::linear(slice(x), slice(w), slice(b), m, k, n, kernels::Precision::F32), shape)
}

/// The tracked (or untracked) autodiff node.
fn linear_autodiff(prims: Vec<FloatTensor<Ad>>, m: usize, k: usize, n: usize, shape: Vec<usize>) -> FloatTensor<Ad> {
    let nodes: [_; 3] = std::array::from_fn(|i| prims[i].node.clone());
    let [x, w, b]: [FlexTensor; 3] = prims.into_iter().map(|p| contiguous(p.primitive)).collect::<Vec<_>>().try_into().expect("three");
    match LinearBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = forward(&x, &w, &b, m, k, n, shape);
            prep.finish(State(Arc::new(Inner { x, w, m, k, n })), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x, &w, &b, m, k, n, shape)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn vals<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Values and the three gradients equal burn's `linear` to float rounding, for a 3-D input whose sums
    /// exceed the `gemm` crate's smallest block (k = 768, m = 600); with an untracked input (the data) the weight
    /// and the bias still get their gradients (the backward skips only the input's).
    #[test]
    fn equals_burns_linear_with_its_gradients() {
        let _one = crate::train::run::autodiff_guard();
        let dev = Default::default();
        let (b, t, k, n) = (4, 150, 768, 10);
        let x = Tensor::<Ad, 3>::random([b, t, k], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Ad, 2>::random([k, n], Distribution::Normal(0.0, 0.05), &dev);
        let bias = Tensor::<Ad, 1>::random([n], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<Ad, 3>::random([b, t, n], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let (x, w, bias) = (x.clone().detach().require_grad(), w.clone().detach().require_grad(), bias.clone().detach().require_grad());
            let y = if ours {
                try_linear(&x, &w, &bias).expect("the CPU path applies")
            } else {
                burn::tensor::module::linear(x.clone(), w.clone(), Some(bias.clone()))
            };
            let g = (y.clone() * r.clone()).sum().backward();
            [vals(y), vals(x.grad(&g).unwrap()), vals(w.grad(&g).unwrap()), vals(bias.grad(&g).unwrap())]
        };
        let (ours, burns) = (run(true), run(false));
        for ((a, c), what) in ours.into_iter().zip(burns).zip(["y", "dx", "dw", "db"]) {
            assert_eq!(a.len(), c.len(), "{what}");
            let scale = c.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            for (i, (p, q)) in a.iter().zip(&c).enumerate() {
                assert!((p - q).abs() <= 1e-5 * scale, "{what}[{i}]: {p} vs burn's {q} (scale {scale})");
            }
        }
        // An untracked input (the data): the backward computes no dx, the weight and the bias get theirs.
        let (w2, b2) = (w.clone().detach().require_grad(), bias.clone().detach().require_grad());
        let g = try_linear(&x.clone().detach(), &w2, &b2).unwrap().sum().backward();
        assert!(w2.grad(&g).is_some() && b2.grad(&g).is_some());
        // Without autodiff: the same values as the tracked forward.
        let plain = try_linear(&x.clone().inner(), &w.clone().inner(), &bias.clone().inner()).unwrap();
        let tracked = try_linear(&x, &w, &bias).unwrap();
        assert_eq!(vals(plain), vals(tracked));
    }
}
