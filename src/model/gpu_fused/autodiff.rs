//! The kernels as autodiff operations: LayerNorm and softmax each one node of burn's graph whose backward
//! runs the matching backward kernel (instead of the ~20 nodes burn's compositions record).

use super::GpuKernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;

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

/// LayerNorm over the last axis on `Autodiff<B>`, one node.
pub(super) fn layer_norm<B: GpuKernels>(
    x: FloatTensor<Autodiff<B>>,
    gamma: FloatTensor<Autodiff<B>>,
    beta: FloatTensor<Autodiff<B>>,
    eps: f64,
) -> FloatTensor<Autodiff<B>> {
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let [y, mean, rstd] = B::ln_forward(x.primitive.clone(), gamma.primitive.clone(), beta.primitive, eps);
    match LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive, mean, rstd], y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// Softmax's backward step: parent `x`; state the output `y`.
#[derive(Debug)]
struct SoftmaxBackward;

impl<B: GpuKernels> Backward<B, 1> for SoftmaxBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::softmax_backward(g, ops.state));
        }
    }
}

/// Softmax over the last axis on `Autodiff<B>`, one node.
pub(super) fn softmax<B: GpuKernels>(x: FloatTensor<Autodiff<B>>) -> FloatTensor<Autodiff<B>> {
    let y = B::softmax_forward(x.primitive);
    match SoftmaxBackward.prepare::<NoCheckpointing>([x.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
