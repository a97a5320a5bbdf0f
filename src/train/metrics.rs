//! Losses (burn's compositions, or one node of polyflow's kernels on the GPU backends) and metrics (on the host).

use burn::tensor::{activation, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Loss of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy (video, VGGSound in the paper).
    Softmax,
    /// Sigmoid binary cross-entropy on one-hot or multi-hot targets, summed over classes (the paper's image
    /// tasks and AudioSet).
    Sigmoid,
}

/// Mean over the batch of the per-example loss.
///
/// # Shapes
/// `logits, targets: [B, K]` → `[1]`
pub fn loss<B: Backend>(kind: Loss, logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    // On the GPU backends one node of polyflow's kernels (`gpu_fused::classification_loss`); elsewhere burn's
    // composition below, whose bits the CPU keeps.
    let (logits, targets) = match crate::model::gpu_fused::classification_loss(logits, targets, kind == Loss::Sigmoid) {
        Ok(l) => return l,
        Err(inputs) => inputs,
    };
    match kind {
        Loss::Softmax => (activation::log_softmax(logits, 1) * targets).sum_dim(1).mean().neg(),
        Loss::Sigmoid => {
            // softplus(z) − y·z, stable: max(z, 0) − y·z + log(1 + e^{−|z|})
            let z = logits;
            let l = z.clone().clamp_min(0.0) - z.clone() * targets + (z.clone().abs().neg().exp() + 1.0).log();
            (l + kink_correction(z)).sum_dim(1).mean()
        }
    }
}

/// Zero in value, and −½ in gradient where `z` is exactly 0: burn's autodiff takes the subgradient 1 of
/// `max(z, 0)` and 0 of `|z|` there, so the composed sigmoid loss's gradient would be `1 − t` where the loss's
/// derivative is `σ(0) − t = ½ − t` (what PyTorch's `BCEWithLogits` gives). Logits are exactly 0 for a
/// zero-initialized head's first update (the paper's audio and video heads: a multi-label audio task's first
/// step). Elsewhere it adds zeros to the loss and to the gradient, which moves no bit.
///
/// # Shapes
/// `z: [B, K]` → `[B, K]`
fn kink_correction<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    let at_zero = z.clone().detach().equal_elem(0.0).float(); // constant: 1 where z = 0
    z * at_zero * -0.5
}

/// Top-k accuracy of logits `[B·K]` against targets: an example is a hit when one of its `k` highest logits is a
/// positive class (one-hot: the class; multi-label: any of its labels, Scenic's `prec@1` for k = 1). Equal logits
/// rank by class index, as `argmax` and `topk` break ties, so a constant row (an untrained zero head) is a hit for
/// class 0 only, not for every class. Rows without a positive are ignored.
pub fn topk(logits: &[f32], targets: &[f32], k_cls: usize, k: usize) -> f64 {
    let (mut hit, mut n) = (0usize, 0usize);
    for (l, t) in logits.chunks_exact(k_cls).zip(targets.chunks_exact(k_cls)) {
        if !t.iter().any(|v| *v > 0.0) {
            continue;
        }
        n += 1;
        // A row with a NaN logit (a diverged model) is a miss, never a hit: NaN compares false both ways.
        if l.iter().any(|v| v.is_nan()) {
            continue;
        }
        // Class c is among the top k when fewer than k classes rank above it (higher logit, or equal and earlier).
        let ranks_above = |c: usize| l.iter().enumerate().filter(|&(j, &v)| v > l[c] || (v == l[c] && j < c)).count();
        if (0..k_cls).any(|c| t[c] > 0.0 && ranks_above(c) < k) {
            hit += 1;
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        hit as f64 / n as f64
    }
}

/// Mean average precision over classes (sklearn's `average_precision_score` per class on raw logits, then
/// the mean over classes with at least one positive).
pub fn mean_ap(logits: &[f32], targets: &[f32], k_cls: usize) -> f64 {
    let n = logits.len() / k_cls;
    let mut aps = vec![];
    for c in 0..k_cls {
        let mut pairs: Vec<(f32, bool)> = (0..n).map(|i| (logits[i * k_cls + c], targets[i * k_cls + c] > 0.5)).collect();
        let pos = pairs.iter().filter(|p| p.1).count();
        if pos == 0 {
            continue;
        }
        pairs.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let (mut tp, mut ap, mut i) = (0usize, 0.0, 0);
        while i < pairs.len() {
            // Ties share one threshold, as sklearn does.
            let mut j = i;
            let mut new_tp = 0;
            while j < pairs.len() && pairs[j].0 == pairs[i].0 {
                new_tp += usize::from(pairs[j].1);
                j += 1;
            }
            tp += new_tp;
            if new_tp > 0 {
                ap += (new_tp as f64 / pos as f64) * (tp as f64 / j as f64);
            }
            i = j;
        }
        aps.push(ap);
    }
    if aps.is_empty() {
        f64::NAN
    } else {
        aps.iter().sum::<f64>() / aps.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    /// The sigmoid loss's gradient at logits exactly 0 is `(σ(0) − t)/B`; at every other logit the loss and its
    /// gradient have the bits of the composition without the correction.
    #[test]
    fn sigmoid_loss_gradient_at_zero_logits_and_bits_elsewhere() {
        let _one = crate::train::run::autodiff_guard();
        type A = Autodiff<Flex>;
        let dev = Default::default();
        let (b, k) = (3, 4);
        let t: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let targets = || Tensor::<A, 2>::from_data(TensorData::new(t.clone(), [b, k]), &dev);
        let z = Tensor::<A, 2>::zeros([b, k], &dev).require_grad();
        let l = loss(Loss::Sigmoid, z.clone(), targets());
        assert!((l.clone().into_scalar() - k as f32 * std::f32::consts::LN_2).abs() < 1e-6);
        let dz = z.grad(&l.backward()).unwrap().into_data().to_vec::<f32>().unwrap();
        let want: Vec<f32> = t.iter().map(|t| (0.5 - t) / b as f32).collect();
        assert!(dz.iter().zip(&want).all(|(a, w)| (a - w).abs() <= 1e-7), "{dz:?} vs {want:?}");
        // Nonzero logits (one exact 0 among them, then a −0 too): the uncorrected composition's bits everywhere else.
        let zs: Vec<f32> = (0..b * k).map(|i| (i as f32 - 5.0) * 0.7).collect();
        let plain = |z: Tensor<A, 2>| {
            let l = z.clone().clamp_min(0.0) - z.clone() * targets() + (z.abs().neg().exp() + 1.0).log();
            l.sum_dim(1).mean()
        };
        let mut zs2 = zs.clone();
        zs2[7] = -0.0;
        for zs in [zs, zs2] {
            let run = |corrected: bool| {
                let z = Tensor::<A, 2>::from_data(TensorData::new(zs.clone(), [b, k]), &dev).require_grad();
                let l = if corrected { loss(Loss::Sigmoid, z.clone(), targets()) } else { plain(z.clone()) };
                let v = l.clone().into_scalar();
                (v, z.grad(&l.backward()).unwrap().into_data().to_vec::<f32>().unwrap())
            };
            let ((lc, gc), (lp, gp)) = (run(true), run(false));
            assert_eq!(lc.to_bits(), lp.to_bits());
            for (i, (a, p)) in gc.iter().zip(&gp).enumerate() {
                if zs[i] == 0.0 {
                    assert!((a - (p - 0.5 / b as f32)).abs() <= 1e-7, "the logit {i} at ±0: {a} vs {p} − ½/B");
                } else {
                    assert_eq!(a.to_bits(), p.to_bits(), "logit {i}");
                }
            }
        }
    }
    #[test]
    fn metrics() {
        let l = [0.1, 0.9, 0.0, 0.8, 0.1, 0.1];
        let t = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(topk(&l, &t, 3, 1), 0.5);
        // The second row's class 2 ties class 1 at 0.1 and ranks after it, as argmax/topk order them: third.
        assert_eq!(topk(&l, &t, 3, 2), 0.5);
        assert_eq!(topk(&l, &t, 3, 3), 1.0);
        // A constant row (an untrained zero head) is no hit for every class, only for the first.
        let zero = [0.0f32; 8];
        let one_hot = |c: usize| (0..4).map(|i| f32::from(i == c)).collect::<Vec<_>>();
        assert_eq!(topk(&zero, &[one_hot(0), one_hot(3)].concat(), 4, 1), 0.5);
        // Multi-label: a hit when the top prediction is any positive (Scenic's prec@1), not one chosen label.
        let ml = [0.9, 0.1, 0.5, 0.2];
        assert_eq!(topk(&ml, &[1.0, 0.0, 1.0, 0.0], 4, 1), 1.0);
        assert_eq!(topk(&ml, &[0.0, 1.0, 1.0, 0.0], 4, 1), 0.0);
        assert_eq!(topk(&ml, &[0.0, 1.0, 1.0, 0.0], 4, 2), 1.0);
        assert_eq!(topk(&[f32::NAN; 4], &one_hot(2), 4, 1), 0.0, "a diverged row is a miss");
        // AP: perfectly ranked class → 1.
        assert!((mean_ap(&[0.9, 0.1, 0.8, 0.2], &[1.0, 0.0, 1.0, 0.0], 1) - 1.0).abs() < 1e-12);
        assert!((mean_ap(&[0.1, 0.9], &[1.0, 0.0], 1) - 0.5).abs() < 1e-12);
    }
}
