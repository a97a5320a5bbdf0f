//! One shared optimizer over every parameter, as the paper's code does it: SGD with momentum (default) or
//! Adam/AdamW, global-norm gradient clipping, and a momentum buffer that keeps moving parameters whose task
//! was not sampled in this step (their gradient is zero, their momentum decays). The LR passed to
//! [`SharedOptimizer::step`] is the global schedule value times the sampled task's peak LR, applied after the
//! momentum trace (so it scales the whole buffer, as `optax.trace` → `scale_by_schedule` does).

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Optimizer choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum OptKind {
    /// SGD with (heavy-ball) momentum.
    Sgd {
        /// Momentum (paper: 0.9).
        momentum: f64,
    },
    /// Adam.
    Adam {
        /// β1.
        beta1: f64,
        /// β2.
        beta2: f64,
        /// ε.
        eps: f64,
        /// Decoupled weight decay (AdamW when > 0).
        weight_decay: f64,
    },
}

/// Per-parameter state on the host side of the graph (inner backend), in visit order.
pub struct SharedOptimizer<B: AutodiffBackend> {
    /// Kind.
    pub kind: OptKind,
    /// Global-norm clip (None = off).
    pub clip: Option<f64>,
    /// First moment / velocity per parameter (flattened).
    pub m: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    /// Second moment per parameter (Adam).
    pub v: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    /// Updates taken.
    pub t: usize,
    /// The state of the flat path ([`Self::step_deferred`], accelerators), which holds the moments instead of
    /// `m` and `v` while it is in use.
    pub flat: Option<super::flat::FlatState<B::InnerBackend>>,
    /// The half type and the parameters kept as half working copies on the flat path
    /// ([`Self::keep_half_copies`]); `None`: every parameter f32.
    pub half: Option<(burn::tensor::FloatDType, std::collections::HashSet<burn::module::ParamId>)>,
}

/// The squared global norm of the gradients: on the CPU summed in f64 on the host
/// ([`crate::model::fused::norm::squared_sum`]: burn-flex's f32 running sum drifts over large tensors), elsewhere
/// with the backend's ops.
struct SqNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
    host: f64,
}

impl<'a, B: AutodiffBackend> SqNorm<'a, B> {
    fn new(grads: &'a GradientsParams) -> Self {
        SqNorm { grads, total: None, host: 0.0 }
    }

    /// `Σ g²` over every gradient visited; +inf past f32's range, as the sum in f32 would be on the other
    /// backends (a loss-scaled update whose squared norm overflows f32 is skipped there: [`Self::unscaled`]).
    fn value(self) -> f64 {
        let host = if self.host > f64::from(f32::MAX) { f64::INFINITY } else { self.host };
        host + self.total.map(|t| t.into_scalar().elem::<f64>()).unwrap_or(0.0)
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SqNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            if let Some(s) = crate::model::fused::norm::squared_sum(&g) {
                self.host += s;
                return;
            }
            let s = g.powf_scalar(2.0).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Update<'a, B: AutodiffBackend> {
    opt: &'a mut SharedOptimizer<B>,
    grads: &'a GradientsParams,
    lr: f64,
    /// The clip factor (and the loss scale's inverse) applied to every gradient.
    scale: f64,
    idx: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Update<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let i = self.idx;
        self.idx += 1;
        if self.opt.m.len() <= i {
            self.opt.m.resize(i + 1, None);
            self.opt.v.resize(i + 1, None);
        }
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let grad: Option<Tensor<B::InnerBackend, 1>> = self.grads.get::<B::InnerBackend, D>(id).map(|g| g.reshape([n]) * self.scale);
        if grad.is_none() && self.opt.m[i].is_none() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let w = tensor.inner().reshape([n]);
        let new = match self.opt.kind {
            OptKind::Sgd { momentum } => {
                let vel = match (self.opt.m[i].take(), grad) {
                    (Some(m), Some(g)) => m * momentum + g,
                    (Some(m), None) => m * momentum,
                    (None, Some(g)) => g,
                    (None, None) => unreachable!(),
                };
                self.opt.m[i] = Some(vel.clone());
                w - vel * self.lr
            }
            OptKind::Adam { beta1, beta2, eps, weight_decay } => {
                let g = grad.unwrap_or_else(|| w.zeros_like());
                let m = match self.opt.m[i].take() {
                    Some(m) => m * beta1 + g.clone() * (1.0 - beta1),
                    None => g.clone() * (1.0 - beta1),
                };
                let v = match self.opt.v[i].take() {
                    Some(v) => v * beta2 + g.powf_scalar(2.0) * (1.0 - beta2),
                    None => g.powf_scalar(2.0) * (1.0 - beta2),
                };
                let t = self.opt.t as i32;
                let mh = m.clone() / (1.0 - beta1.powi(t));
                let vh = v.clone() / (1.0 - beta2.powi(t));
                self.opt.m[i] = Some(m);
                self.opt.v[i] = Some(v);
                let upd = mh / (vh.sqrt() + eps);
                let upd = if weight_decay > 0.0 { upd + w.clone() * weight_decay } else { upd };
                w - upd * self.lr
            }
        };
        let t = Tensor::<B, D>::from_inner(new.reshape(dims)).require_grad();
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Dynamic loss scaling for `precision = "f16"` (the defaults of PyTorch's `GradScaler`): the loss is
/// multiplied by [`LossScaler::scale`] before the backward pass, so that small gradients stay representable in
/// f16, and the gradients are divided by it again before clipping and the update
/// ([`SharedOptimizer::step_scaled`]). An update whose scaled gradients overflowed (a non-finite norm) is
/// skipped and the scale halved; after [`LossScaler::GROWTH_INTERVAL`] applied updates in a row it doubles.
/// Scales are powers of two, so scaling and unscaling are exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale (a power of two).
    pub scale: f64,
    /// Applied updates since the last change of the scale.
    pub good: usize,
}

impl LossScaler {
    /// The first scale (PyTorch: 2¹⁶). This, the growth interval and the 2⁻²⁴ floor shape f16 training's
    /// results: a change must give `precision = "f16"` nodes another version (`TrainStage::version_for`).
    pub const INIT: f64 = 65536.0;
    /// Applied updates in a row after which the scale doubles (PyTorch: 2000).
    pub const GROWTH_INTERVAL: usize = 2000;

    /// A scaler starting at `init` (rounded down to a power of two, from 1 to 2⁶⁴).
    pub fn new(init: f64) -> Self {
        let init = if init.is_nan() { Self::INIT } else { init.clamp(1.0, 2f64.powi(64)) };
        LossScaler { scale: 2f64.powi(init.log2().floor() as i32), good: 0 }
    }

    /// After an update: `applied` is false when its gradients overflowed. Halves the scale then (never below
    /// 2⁻²⁴, f16's smallest subnormal), doubles it after [`Self::GROWTH_INTERVAL`] applied updates in a row.
    pub fn update(&mut self, applied: bool) {
        if !applied {
            self.scale = (self.scale / 2.0).max(2f64.powi(-24));
            self.good = 0;
            return;
        }
        self.good += 1;
        if self.good == Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good = 0;
        }
    }
}

impl<B: AutodiffBackend> SharedOptimizer<B> {
    /// A fresh optimizer.
    pub fn new(kind: OptKind, clip: Option<f64>) -> Self {
        SharedOptimizer { kind, clip, m: vec![], v: vec![], t: 0, flat: None, half: None }
    }

    /// One update with learning rate `lr`; returns the model and the pre-clip global gradient norm.
    pub fn step<M: AutodiffModule<B>>(&mut self, model: M, grads: &GradientsParams, lr: f64) -> (M, f64) {
        self.unflatten();
        let mut sq = SqNorm::<B>::new(grads);
        model.visit(&mut sq);
        let norm = sq.value().sqrt();
        let scale = match self.clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        self.t += 1;
        let mut u = Update { opt: self, grads, lr, scale, idx: 0 };
        (model.map(&mut u), norm)
    }

    /// [`Self::step`] on gradients of a loss multiplied by `loss_scale` ([`LossScaler`]): they are divided by it
    /// (in the same multiplication as the clip factor) before the update. Returns the model, the unscaled
    /// pre-clip norm (+inf when the scaled gradients overflowed) and whether the update was applied: after an
    /// overflow (non-finite norm) nothing changes, weights, moments and the update count included. With a power-of-two scale
    /// and no overflow, the same bits as [`Self::step`] on the unscaled gradients (unit test).
    pub fn step_scaled<M: AutodiffModule<B>>(&mut self, model: M, grads: &GradientsParams, lr: f64, loss_scale: f64) -> (M, f64, bool) {
        self.unflatten();
        let mut sq = SqNorm::<B>::new(grads);
        model.visit(&mut sq);
        let sq = sq.value();
        let Some((norm, factor)) = self.unscaled(sq, loss_scale) else {
            return (model, f64::INFINITY, false);
        };
        self.t += 1;
        let mut u = Update { opt: self, grads, lr, scale: factor, idx: 0 };
        (model.map(&mut u), norm, true)
    }

    /// From the squared norm `sq` of gradients of a loss multiplied by `loss_scale`: the unscaled pre-clip norm and
    /// the factor the gradients are multiplied by (the clip factor over `loss_scale`); `None` after an overflow (a
    /// non-finite norm: inf, or NaN from inf − inf in the overflowed gradients), logged as +inf and skipped.
    pub(super) fn unscaled(&self, sq: f64, loss_scale: f64) -> Option<(f64, f64)> {
        let norm = sq.sqrt() / loss_scale;
        if !norm.is_finite() {
            return None;
        }
        let clip = match self.clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        Some((norm, clip / loss_scale))
    }

    /// [`Self::unflatten`] for tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn unflatten_for_test(&mut self) {
        self.unflatten();
    }

    /// Moves the flat path's moments back to the per-tensor ones (`m`, `v`), if the flat path was in use.
    fn unflatten(&mut self) {
        let Some(flat) = self.flat.take() else {
            return;
        };
        assert!(
            flat.dtypes.iter().all(|d| *d == burn::tensor::FloatDType::F32),
            "the per-tensor update cannot follow half working copies (their f32 masters are the flat weights)"
        );
        let adam = matches!(self.kind, OptKind::Adam { .. });
        let dev = flat.m.device();
        let (mut m, mut v) = (vec![], vec![]);
        for i in 0..flat.segs.len() {
            let (mi, vi) = match flat.export(i, adam) {
                Some((mi, vi)) => (Some(mi), vi),
                None => (None, None),
            };
            let t = |d: Vec<f32>| {
                let n = d.len();
                Tensor::from_data(TensorData::new(d, [n]), &dev)
            };
            m.push(mi.map(t));
            v.push(vi.map(t));
        }
        self.m = m;
        self.v = v;
    }

    /// State as host vectors (for checkpoints), in the per-tensor format on either path.
    pub fn export(&self) -> Vec<(String, Vec<f32>)> {
        if let Some(flat) = &self.flat {
            let adam = matches!(self.kind, OptKind::Adam { .. });
            let (mut ms, mut vs) = (vec![], vec![]);
            for i in 0..flat.segs.len() {
                if let Some((m, v)) = flat.export(i, adam) {
                    ms.push((format!("opt.m.{i}"), m));
                    vs.extend(v.map(|v| (format!("opt.v.{i}"), v)));
                }
            }
            return ms.into_iter().chain(vs).collect();
        }
        let mut out = vec![];
        for (name, v) in [("m", &self.m), ("v", &self.v)] {
            for (i, t) in v.iter().enumerate() {
                if let Some(t) = t {
                    out.push((format!("opt.{name}.{i}"), t.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32")));
                }
            }
        }
        out
    }

    /// Restores state exported by [`Self::export`].
    pub fn import(&mut self, items: &[(String, Vec<f32>)], t: usize, device: &B::Device) {
        self.t = t;
        // The flat path starts over from these moments and the model's weights at its next update.
        self.flat = None;
        for (name, data) in items {
            let parts: Vec<&str> = name.split('.').collect();
            let (Some(kind), Some(Ok(i))) = (parts.get(1), parts.get(2).map(|s| s.parse::<usize>())) else {
                continue;
            };
            let v = if *kind == "m" { &mut self.m } else { &mut self.v };
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            v[i] = Some(Tensor::from_data(TensorData::new(data.clone(), [data.len()]), device));
        }
    }
}

use burn::tensor::ElementConversion;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::block::Block;
    use crate::model::init::Init;
    use burn::backend::{Autodiff, Flex};

    type A = Autodiff<Flex>;

    fn weights(b: &Block<A>) -> Vec<Vec<f32>> {
        let mut v = vec![];
        for l in [&b.qkv, &b.proj, &b.fc1, &b.fc2] {
            v.push(l.weight.val().into_data().to_vec::<f32>().unwrap());
            v.push(l.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap());
        }
        v
    }

    /// The gradients of `scale · Σ y²` of the block on a fixed input.
    fn grads(blk: &Block<A>, scale: f64) -> GradientsParams {
        let v: Vec<f32> = (0..80).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let x = Tensor::<A, 3>::from_data(TensorData::new(v, [2, 5, 8]), &Default::default());
        let y = blk.forward_composed(x, None);
        GradientsParams::from_grads(((y.clone() * y).sum() * scale).backward(), blk)
    }

    #[test]
    fn scaled_steps_give_the_unscaled_bits_and_overflow_skips_the_update() {
        let _one = crate::train::run::autodiff_guard();
        let adam = OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        for clip in [None, Some(0.01)] {
            let blk = Block::<A>::new(8, 2, 16, 1e-6, true, &mut Init::new(3), &Default::default());
            let g1 = grads(&blk, 1.0);
            let g2 = grads(&blk, 1024.0);
            let (mut o1, mut o2) = (SharedOptimizer::<A>::new(adam, clip), SharedOptimizer::<A>::new(adam, clip));
            let (a, n1) = o1.step(blk.clone(), &g1, 0.1);
            let (b, n2, applied) = o2.step_scaled(blk.clone(), &g2, 0.1, 1024.0);
            assert!(applied);
            assert_eq!(n1.to_bits(), n2.to_bits(), "the unscaled norm");
            if clip.is_some() {
                assert!(n1 > 0.01, "clipping is active: {n1}");
            }
            assert_eq!(weights(&a), weights(&b), "clip {clip:?}: the same update bits");
            assert_eq!(o1.export(), o2.export(), "the same moments");
            assert_eq!(o2.t, 1);

            // Gradients that overflow: nothing changes.
            let before = weights(&b);
            let g3 = grads(&b, 1e38);
            let (c, n3, applied) = o2.step_scaled(b, &g3, 0.1, 1.0);
            assert!(!applied && !n3.is_finite(), "{n3}");
            assert_eq!(weights(&c), before);
            assert_eq!(o2.t, 1, "a skipped update is not counted");
            assert_eq!(o1.export(), o2.export(), "the moments are untouched");
        }
    }

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScaler::new(100_000.0);
        assert_eq!(s.scale, 65536.0, "rounded down to a power of two");
        s.update(false);
        s.update(false);
        assert_eq!((s.scale, s.good), (16384.0, 0));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, 16384.0);
        s.update(true);
        assert_eq!((s.scale, s.good), (32768.0, 0));
        s.update(true);
        s.update(false);
        assert_eq!((s.scale, s.good), (16384.0, 0), "an overflow restarts the count");
        let mut tiny = LossScaler::new(1.0);
        (0..40).for_each(|_| tiny.update(false));
        assert_eq!(tiny.scale, 2f64.powi(-24));
    }
}
