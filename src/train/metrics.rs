//! Losses (in burn) and metrics (on the host).

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
    match kind {
        Loss::Softmax => (activation::log_softmax(logits, 1) * targets).sum_dim(1).mean().neg(),
        Loss::Sigmoid => {
            // softplus(z) − y·z, stable: max(z, 0) − y·z + log(1 + e^{−|z|})
            let z = logits;
            let l = z.clone().clamp_min(0.0) - z.clone() * targets + (z.abs().neg().exp() + 1.0).log();
            l.sum_dim(1).mean()
        }
    }
}

/// Top-k accuracy of logits `[B·K]` against targets (argmax of the target row; all-zero rows ignored).
pub fn topk(logits: &[f32], targets: &[f32], k_cls: usize, k: usize) -> f64 {
    let (mut hit, mut n) = (0usize, 0usize);
    for (l, t) in logits.chunks_exact(k_cls).zip(targets.chunks_exact(k_cls)) {
        let Some(truth) = t.iter().enumerate().filter(|(_, v)| **v > 0.0).max_by(|a, b| a.1.partial_cmp(b.1).unwrap()).map(|(i, _)| i)
        else {
            continue;
        };
        n += 1;
        let above = l.iter().filter(|&&v| v > l[truth]).count();
        if above < k {
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
    #[test]
    fn metrics() {
        let l = [0.1, 0.9, 0.0, 0.8, 0.1, 0.1];
        let t = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(topk(&l, &t, 3, 1), 0.5);
        assert_eq!(topk(&l, &t, 3, 2), 1.0);
        // AP: perfectly ranked class → 1.
        assert!((mean_ap(&[0.9, 0.1, 0.8, 0.2], &[1.0, 0.0, 1.0, 0.0], 1) - 1.0).abs() < 1e-12);
        assert!((mean_ap(&[0.1, 0.9], &[1.0, 0.0], 1) - 0.5).abs() < 1e-12);
    }
}
