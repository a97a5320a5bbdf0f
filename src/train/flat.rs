//! The shared optimizer's update on accelerators, over flat buffers: every parameter's gradient, moments and
//! weights side by side in one tensor each, so that the global norm is one reduction and the update one fused
//! element-wise pass, instead of about five kernel launches per parameter tensor (BENCHMARKS.md, "Kernel
//! launches of a GPU training step": 408 of a ViT-Ti step's 1,032 launches were the per-tensor optimizer).
//!
//! What remains per tensor: its gradient copied into the flat gradient, and its updated weights copied out of
//! the flat weights in its shape (up to [`COPY_MAX`] elements; larger ones are views); on the GPU backends one
//! kernel copies five of either per launch, and each direction is one operation of burn's fusion stream for all
//! parameters (a view and a reshape per parameter were two operations each: burn's fusion spends host time on
//! every operation, launched or not). The flat
//! weights are kept between updates, so the weights are not copied in again: nothing else may change the
//! parameters between two updates of one optimizer (training does not; [`SharedOptimizer::import`] starts over
//! from the model's values).
//!
//! The update per element is the per-tensor path's ([`SharedOptimizer::step`]), the same operations in the same
//! order on the CPU backend; the global norm and the clip factor are computed differently (one reduction over all
//! gradients, the factor `min(1, clip·(1/‖g‖))` in f32 on the device, where `step` sums per-tensor norms and
//! divides in f64 on the host), and a GPU compiler may contract multiplies and adds differently, so results can
//! differ in the last bits.
//! Parameters that never had a gradient keep their values and AdamW does not decay them, as on the per-tensor
//! path.
//!
//! Half working copies ([`SharedOptimizer::keep_half_copies`], bf16/f16 training on the GPU backends): the flat
//! weights are the f32 master weights, and the parameters named are set after each update to copies rounded to
//! the half type, written by the same unpack (apex's "O2" layout) — where autocast's layout keeps f32 parameters
//! and casts each of them in every forward pass and its gradient back in the backward (two operations of burn's
//! fusion stream per parameter and update). The products see the same values (the same rounding of the same
//! f32 weights), the pack reads the half gradients into the f32 flat gradient exactly as the cast did, so the
//! updates are the same bits; [`SharedOptimizer::masters`] gives the model its f32 weights back (checkpoints,
//! the trained model).

use super::optim::{OptKind, SharedOptimizer};
use crate::model::gpu_fused::FlatRule;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId, ParamMapper};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

/// The optimizer's state on the flat path. Segment `i` (parameter `i` in visit order) is `offset..offset + len`.
pub struct FlatState<B: Backend> {
    /// The parameters the segments belong to, in visit order.
    pub ids: Vec<ParamId>,
    /// Each parameter's `(offset, len)` in the flat buffers.
    pub segs: Vec<(usize, usize)>,
    /// Each parameter's shape.
    pub shapes: Vec<Shape>,
    /// Each parameter's float type in the model: f32, or the half type of its working copy
    /// ([`SharedOptimizer::keep_half_copies`]); the flat buffers are f32 whatever it is.
    pub dtypes: Vec<FloatDType>,
    /// The weights after the last update (what the parameters were set to).
    pub w: Tensor<B, 1>,
    /// First moment / velocity.
    pub m: Tensor<B, 1>,
    /// Second moment (Adam only).
    pub v: Option<Tensor<B, 1>>,
    /// Whether parameter `i` has had a gradient (the per-tensor path's `m[i].is_some()`).
    pub started: Vec<bool>,
    /// 1 on the elements of started parameters, 0 elsewhere; `None` while every parameter has started or AdamW
    /// is off (rebuilt when a parameter starts).
    mask: Option<Tensor<B, 1>>,
}

/// One parameter as the visitor finds it: its shape, its weights (only when the flat copy is built) and its
/// gradient if it has one, both as they are (any rank, any row pitch: [`pack`] takes them so).
struct Item<B: Backend> {
    id: ParamId,
    shape: Shape,
    w: Option<FloatTensor<B>>,
    g: Option<FloatTensor<B>>,
    device: B::Device,
}

/// `t`'s primitive: the rank left out, so that parameters of every rank go in one list.
fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

struct Gather<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    weights: bool,
    items: Vec<Item<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // Taken out, not cloned: the gradients are then released in visit order, where dropping the map would
        // release them in its hash order, another order every update. burn's fusion finds a stored execution plan
        // only for the same sequence of operations (releases included); a new order every update made it search
        // the whole update again each time (BENCHMARKS.md, "GPU, 2026-12-04": most of a ViT-Ti step's host time).
        let g = self.grads.remove::<B::InnerBackend, D>(param.id).map(prim);
        // The weights only when the flat copy has to be (re)built (otherwise they are the flat copy's).
        let w = param.val().inner();
        let shape = w.shape();
        let device = w.device();
        let w = self.weights.then(|| prim(w));
        self.items.push(Item { id: param.id, shape, w, g, device });
    }
}

/// Takes the parameters out of the model, leaving placeholders that [`Scatter`] replaces: the old value of each
/// (its inner tensor, moved out so that nothing else holds it) and its load/save mapper. On the GPU backends the
/// copies [`unpack`] writes then take the old values' buffers (no allocation per parameter, and no release
/// operation registered with burn's fusion for each: [`crate::model::gpu_fused::unpack`]).
struct Take<B: AutodiffBackend> {
    old: Vec<FloatTensor<B::InnerBackend>>,
    mappers: Vec<Box<dyn std::any::Any + Send>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Take<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let (shape, device) = (tensor.shape(), tensor.device());
        self.old.push(prim(tensor.inner()));
        self.mappers.push(Box::new(mapper));
        // Never read: `Scatter` sets every parameter before the model is used again.
        Param::uninitialized(id, |_, _| unreachable!("a parameter taken out for the update was read before being set"), device, true, shape)
    }
}

/// Sets each parameter to its segment of the flat weights in its float type `dtypes[i]`: its copy in `copies`
/// where there is one (the GPU backends: [`unpack`]), else a view reshaped (and cast to a half type); with the
/// mapper [`Take`] kept for it.
struct Scatter<'a, B: AutodiffBackend> {
    w: &'a Tensor<B::InnerBackend, 1>,
    segs: &'a [(usize, usize)],
    shapes: &'a [Shape],
    dtypes: &'a [FloatDType],
    copies: Vec<Option<FloatTensor<B::InnerBackend>>>,
    mappers: Vec<Box<dyn std::any::Any + Send>>,
    idx: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Scatter<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let i = self.idx;
        self.idx += 1;
        let (off, len) = self.segs[i];
        let dims: [usize; D] = self.shapes[i].dims();
        let mapper = std::mem::replace(&mut self.mappers[i], Box::new(()));
        let mapper =
            *mapper.downcast::<ParamMapper<Tensor<B, D>>>().unwrap_or_else(|_| panic!("the mapper `Take` kept for this parameter"));
        let w = match self.copies.get_mut(i).and_then(Option::take) {
            Some(copy) => {
                let w = Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(copy));
                assert_eq!(w.dims(), dims, "a parameter's copy has another shape than the parameter");
                assert_eq!(FloatDType::from(w.dtype()), self.dtypes[i], "a parameter's copy has another float type than asked");
                w
            }
            None => self.w.clone().narrow(0, off, len).reshape(dims).cast(self.dtypes[i]),
        };
        Param::from_mapped_value(param.id, Tensor::<B, D>::from_inner(w).require_grad(), mapper)
    }
}

/// The largest parameter (in elements) that the GPU backends copy out of the flat weights rather than view: a
/// view and its reshape are two operations of burn's fusion stream, host time whether or not they launch (about
/// 7 µs each on the fusion thread, BENCHMARKS.md), while a copy of 2^20 f32 (4 MiB read, 4 MiB written) is a
/// couple of microseconds of a current GPU's memory bandwidth. Larger segments (ViT-B's big matrices) stay views,
/// so that their copies do not add to a step that the GPU, not the host, bounds.
pub const COPY_MAX: usize = 1 << 20;

/// Copies of the segments of `flat` in their `shapes` and float types on the GPU backends (five of one type per
/// launch, one operation for all: [`crate::model::gpu_fused::unpack`]): the f32 ones no longer than
/// [`COPY_MAX`], and every half working copy (a view cannot change the type). `None` for the others and for
/// longer f32 segments (the caller views them); empty off the GPU backends.
fn unpack<B: Backend>(
    flat: &Tensor<B, 1>,
    segs: &[(usize, usize)],
    shapes: &[Shape],
    dtypes: &[FloatDType],
    old: Vec<FloatTensor<B>>,
) -> Vec<Option<FloatTensor<B>>> {
    let picked: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].1 <= COPY_MAX || dtypes[i] != FloatDType::F32).collect();
    let ps: Vec<(usize, usize)> = picked.iter().map(|&i| segs[i]).collect();
    let sh: Vec<Shape> = picked.iter().map(|&i| shapes[i].clone()).collect();
    let dt: Vec<DType> = picked.iter().map(|&i| dtypes[i].into()).collect();
    // The old values of the parameters copied, for their buffers; the others' are released here.
    let mut old: Vec<Option<FloatTensor<B>>> = old.into_iter().map(Some).collect();
    let old: Vec<Option<FloatTensor<B>>> = picked.iter().map(|&i| old.get_mut(i).and_then(Option::take)).collect();
    let Some(copies) = (!picked.is_empty()).then(|| crate::model::gpu_fused::unpack(flat, &ps, &sh, &dt, old)).flatten() else {
        return Vec::new();
    };
    let mut out: Vec<Option<FloatTensor<B>>> = vec![None; segs.len()];
    for (i, c) in picked.into_iter().zip(copies) {
        out[i] = Some(c);
    }
    out
}

/// `Σ g²` as a `[1]` tensor: polyflow's kernel on the GPU backends (burn's `sum` over all of a large tensor is
/// wrong on wgpu: [`crate::model::gpu_fused::squared_norm`]), `sum` elsewhere.
fn squared_norm<B: Backend>(g: &Tensor<B, 1>) -> Tensor<B, 1> {
    crate::model::gpu_fused::squared_norm(g).unwrap_or_else(|| g.clone().powf_scalar(2.0).sum())
}

/// `pieces` (f32, or half gradients of half working copies: converted exactly) laid out at `segs` in a zero f32
/// buffer of `total` elements (a missing piece stays zero). On cuda and wgpu one of polyflow's kernels copies five
/// pieces of one type per launch (`model::gpu_fused::pack`; the same values).
fn pack<B: Backend>(pieces: Vec<Option<FloatTensor<B>>>, segs: &[(usize, usize)], total: usize, device: &B::Device) -> Tensor<B, 1> {
    let pieces = match crate::model::gpu_fused::pack(pieces, segs, total) {
        Ok(buf) => return buf,
        Err(pieces) => pieces,
    };
    let mut buf = Tensor::<B, 1>::zeros([total], device);
    for (p, &(off, len)) in pieces.into_iter().zip(segs) {
        if let Some(p) = p {
            let p = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(p, Shape::new([len]))));
            buf = buf.slice_assign(off..off + len, p.cast(FloatDType::F32));
        }
    }
    buf
}

/// The gradients of one flat update, gathered: `[total]`, zero where a parameter has none and in the padding;
/// which parameters have one, in visit order.
struct Gathered<B: Backend> {
    g: Tensor<B, 1>,
    has_grad: Vec<bool>,
}

impl<B: AutodiffBackend> SharedOptimizer<B> {
    /// [`Self::step`] for accelerators: nothing is read back to the host (a read waits for every queued kernel,
    /// so the host could not prepare the next update while the device works), the clip factor
    /// `min(1, clip / ‖g‖)` is computed on the device in f32, and the update runs over flat buffers (module
    /// docs). Returns the model and the pre-clip norm as a `[1]` tensor to be read later (`None` when no
    /// parameter has a gradient: norm 0). Takes `grads`: they are released in the model's parameter order, the
    /// same every update, so that a fusing backend runs each update from the plan it stored for the first.
    pub fn step_deferred<M: AutodiffModule<B>>(
        &mut self,
        model: M,
        grads: GradientsParams,
        lr: f64,
    ) -> (M, Option<Tensor<B::InnerBackend, 1>>) {
        let Some(Gathered { g, has_grad }) = self.gather_flat(&model, grads) else {
            return (model, None);
        };
        // No gradient at all: no norm (0), no clipping; the momentum still moves, as on the per-tensor path.
        let norm = has_grad.iter().any(|&h| h).then(|| squared_norm(&g).sqrt());
        let scale = match (self.clip, &norm) {
            // ‖g‖ = 0 gives +inf, clamped to 1. A NaN norm (NaN gradients) gives a factor the backend's clamp decides
            // (CUDA's `fminf` returns 1); the NaN gradients carry through either way and the next loss read stops the run.
            (Some(c), Some(n)) => GradScale::Device(n.clone().recip().mul_scalar(c).clamp_max(1.0)),
            _ => GradScale::Host(1.0),
        };
        (self.apply_flat(model, g, scale, &has_grad, lr), norm)
    }

    /// [`Self::step_scaled`] over the flat buffers (`precision = "f16"` on accelerators): the gradients of a loss
    /// multiplied by `loss_scale` are gathered as [`Self::step_deferred`] gathers them, their squared norm is one
    /// reduction read on the host (the one read an f16 update needs: an overflowed update is skipped before the
    /// next one, as PyTorch's `GradScaler` does), and the clip factor and `1/loss_scale` are one multiplication
    /// of the flat gradient before the same fused update. Returns the model, the unscaled pre-clip norm (+inf
    /// after an overflow) and whether the update was applied: after an overflow nothing changes, weights,
    /// moments and the update count included.
    pub fn step_scaled_flat<M: AutodiffModule<B>>(&mut self, model: M, grads: GradientsParams, lr: f64, loss_scale: f64) -> (M, f64, bool) {
        use burn::tensor::ElementConversion;
        let Some(Gathered { g, has_grad }) = self.gather_flat(&model, grads) else {
            return (model, 0.0, true);
        };
        let sq: f64 = if has_grad.iter().any(|&h| h) { squared_norm(&g).into_scalar().elem() } else { 0.0 };
        let Some((norm, factor)) = self.unscaled(sq, loss_scale) else {
            return (model, f64::INFINITY, false);
        };
        (self.apply_flat(model, g, GradScale::Host(factor), &has_grad, lr), norm, true)
    }

    /// The flat state (built from the parameters on first use) checked against `model`, and `grads` packed into
    /// one flat gradient; `None` when the model has no parameters.
    fn gather_flat<M: AutodiffModule<B>>(&mut self, model: &M, mut grads: GradientsParams) -> Option<Gathered<B::InnerBackend>> {
        let fresh = self.flat.is_none();
        let mut gather = Gather::<B> { grads: &mut grads, weights: fresh, items: vec![] };
        model.visit(&mut gather);
        let items = gather.items;
        // Gradients of tensors that are not the model's parameters (none in training) go before the update.
        drop(grads);
        let device = items.first()?.device.clone();
        if fresh {
            self.flat = Some(self.build_flat(&items, &device));
        }
        let flat = self.flat.as_ref().expect("built above");
        assert!(
            flat.ids.len() == items.len()
                && flat.ids.iter().zip(&flat.shapes).zip(&items).all(|((id, s), it)| *id == it.id && *s == it.shape),
            "the model's parameters changed under the optimizer (another model, or parameters added or removed)"
        );
        let total = flat.w.shape().num_elements();
        let has_grad: Vec<bool> = items.iter().map(|it| it.g.is_some()).collect();
        let g = pack(items.into_iter().map(|it| it.g).collect(), &flat.segs, total, &device);
        Some(Gathered { g, has_grad })
    }

    /// One update of the flat moments and weights from the flat gradient `g` times `scale` (the clip factor and
    /// the loss scale's inverse), the parameters set to views (or copies) of the new weights. On the GPU backends
    /// one kernel does it all ([`crate::model::gpu_fused::flat_update`]: the same operations per element in the
    /// same order), elsewhere burn's element-wise composition.
    fn apply_flat<M: AutodiffModule<B>>(
        &mut self,
        model: M,
        g: Tensor<B::InnerBackend, 1>,
        scale: GradScale<B::InnerBackend>,
        has_grad: &[bool],
        lr: f64,
    ) -> M {
        let flat = self.flat.as_mut().expect("gathered first");
        let device = g.device();
        let total = g.shape().num_elements();
        let newly = has_grad.iter().zip(&flat.started).any(|(&h, &s)| h && !s);
        for (s, h) in flat.started.iter_mut().zip(has_grad) {
            *s |= *h;
        }
        self.t += 1;
        // The flat weights are aliased by the parameters' views: the update writes new ones. The moments are moved
        // out, so that the backend may update them in place (a second reference would make it allocate).
        let w = flat.w.clone();
        if let OptKind::Adam { weight_decay, .. } = self.kind {
            if weight_decay > 0.0 && (newly || (flat.mask.is_none() && flat.started.iter().any(|s| !s))) {
                flat.mask = mask(&flat.segs, &flat.started, total, &device);
            }
        }
        let t = self.t as i32;
        let rule = match self.kind {
            OptKind::Sgd { momentum } => FlatRule::Sgd { momentum: momentum as f32, lr: lr as f32 },
            OptKind::Adam { beta1, beta2, eps, weight_decay } => FlatRule::Adam {
                b1: beta1 as f32,
                b2: beta2 as f32,
                omb1: (1.0 - beta1) as f32,
                omb2: (1.0 - beta2) as f32,
                c1: (1.0 - beta1.powi(t)) as f32,
                c2: (1.0 - beta2.powi(t)) as f32,
                eps: eps as f32,
                wd: weight_decay as f32,
                lr: lr as f32,
            },
        };
        let (factor, gs) = match &scale {
            GradScale::Device(f) => (Some(f), 1.0),
            GradScale::Host(s) => (None, *s as f32),
        };
        let kernel = crate::model::gpu_fused::flat_update(&w, &g, flat.m.clone(), flat.v.clone(), factor, flat.mask.as_ref(), rule, gs);
        if let Some(mut outs) = kernel {
            if outs.len() == 3 {
                flat.v = outs.pop();
            }
            flat.m = outs.pop().expect("the first moment");
            let new_w = outs.pop().expect("the weights");
            return self.scatter(model, new_w);
        }
        let g = match scale {
            GradScale::Device(f) => g * f.expand([total]),
            GradScale::Host(1.0) => g,
            GradScale::Host(s) => g * s,
        };
        let flat = self.flat.as_mut().expect("gathered first");
        let m = std::mem::replace(&mut flat.m, Tensor::empty([1], &device));
        let new_w = match self.kind {
            OptKind::Sgd { momentum } => {
                // Per tensor: `m·momentum + g`, or `g` on the first gradient (0·momentum + g is g exactly).
                let vel = m * momentum + g;
                flat.m = vel.clone();
                w - vel * lr
            }
            OptKind::Adam { beta1, beta2, eps, weight_decay } => {
                let m = m * beta1 + g.clone() * (1.0 - beta1);
                let v = flat.v.take().expect("Adam's state has a second moment") * beta2 + g.powf_scalar(2.0) * (1.0 - beta2);
                let t = self.t as i32;
                let mh = m.clone() / (1.0 - beta1.powi(t));
                let vh = v.clone() / (1.0 - beta2.powi(t));
                flat.m = m;
                flat.v = Some(v);
                let upd = mh / (vh.sqrt() + eps);
                let upd = if weight_decay > 0.0 {
                    match &flat.mask {
                        // Not started: no decay (the per-tensor path leaves such a parameter alone).
                        Some(mk) => upd + w.clone() * weight_decay * mk.clone(),
                        None => upd + w.clone() * weight_decay,
                    }
                } else {
                    upd
                };
                w - upd * lr
            }
        };
        self.scatter(model, new_w)
    }

    /// The flat weights set to `new_w` and the parameters to their segments of it.
    fn scatter<M: AutodiffModule<B>>(&mut self, model: M, new_w: Tensor<B::InnerBackend, 1>) -> M {
        let flat = self.flat.as_mut().expect("gathered first");
        flat.w = new_w.clone();
        // The old parameters out first, so that the copies can take their buffers.
        let mut take = Take::<B> { old: Vec::new(), mappers: Vec::new() };
        let model = model.map(&mut take);
        assert_eq!(take.old.len(), flat.segs.len(), "the model has the parameters the flat state was built for");
        // On the GPU backends the segments burn's `slice` would copy one launch each, copied five per launch.
        let copies = unpack(&new_w, &flat.segs, &flat.shapes, &flat.dtypes, take.old);
        let (segs, shapes, dtypes) = (&flat.segs, &flat.shapes, &flat.dtypes);
        let mut scatter = Scatter::<B> { w: &new_w, segs, shapes, dtypes, copies, mappers: take.mappers, idx: 0 };
        model.map(&mut scatter)
    }

    /// Half working copies ("O2"; module docs): from the next flat update on ([`Self::step_deferred`],
    /// [`Self::step_scaled_flat`]), the parameters `ids` are set to copies of their f32 master weights rounded to
    /// `dtype` (bf16 or f16) instead of f32 views, so that a model whose products run in `dtype` (autocast's
    /// casts) finds its weights already in it. Their gradients then come in `dtype` and are converted exactly
    /// into the f32 flat gradient: the same updates as with f32 parameters, as long as each parameter's gradient
    /// is one product's (a parameter used twice in one graph would have its gradients summed in `dtype`; sum
    /// gradients of several backward passes in f32: [`grads_in_f32`]). The model's parameters must be f32 when
    /// the flat state is built (the first flat update, or the first after [`Self::import`]). The per-tensor
    /// path ([`Self::step`]) refuses to follow half working copies; [`Self::masters`] gives the model back its f32
    /// weights.
    pub fn keep_half_copies(&mut self, ids: Vec<ParamId>, dtype: FloatDType) {
        assert!(matches!(dtype, FloatDType::BF16 | FloatDType::F16), "half working copies are bf16 or f16, not {dtype:?}");
        assert!(self.flat.is_none(), "half working copies are chosen before the first flat update");
        self.half = Some((dtype, ids.into_iter().collect()));
    }

    /// `model` with its f32 master weights (views of the flat weights) in place of its half working copies; the
    /// model as it is when there are none. What checkpoints and the trained model hold.
    pub fn masters<M: AutodiffModule<B>>(&self, model: M) -> M {
        let Some(flat) = self.flat.as_ref().filter(|f| f.dtypes.iter().any(|d| *d != FloatDType::F32)) else {
            return model;
        };
        let f32s = vec![FloatDType::F32; flat.segs.len()];
        let mut take = Take::<B> { old: Vec::new(), mappers: Vec::new() };
        let model = model.map(&mut take);
        let (segs, shapes) = (&flat.segs, &flat.shapes);
        let mut scatter = Scatter::<B> { w: &flat.w, segs, shapes, dtypes: &f32s, copies: vec![], mappers: take.mappers, idx: 0 };
        model.map(&mut scatter)
    }

    /// The flat state from the parameters' current values and the per-tensor moments (empty, or imported
    /// from a checkpoint), each segment padded to [`ALIGN`] elements.
    fn build_flat(
        &mut self,
        items: &[Item<B::InnerBackend>],
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> FlatState<B::InnerBackend> {
        let mut segs = Vec::with_capacity(items.len());
        let mut off = 0;
        for it in items {
            let len = it.shape.num_elements();
            segs.push((off, len));
            off += len.div_ceil(ALIGN) * ALIGN;
        }
        let total = off.max(ALIGN);
        let state = |v: &mut Vec<Option<Tensor<B::InnerBackend, 1>>>| {
            v.resize(items.len(), None);
            std::mem::take(v).into_iter().map(|t| t.map(prim)).collect::<Vec<_>>()
        };
        let (m, v) = (state(&mut self.m), state(&mut self.v));
        let started = m.iter().map(Option::is_some).collect();
        let adam = matches!(self.kind, OptKind::Adam { .. });
        let dtypes = items
            .iter()
            .map(|it| match &self.half {
                Some((h, ids)) if ids.contains(&it.id) => *h,
                _ => FloatDType::F32,
            })
            .collect();
        for it in items {
            let d = it.w.as_ref().map(|w| w.dtype());
            assert!(d.is_none_or(|d| d == DType::F32), "the flat master weights are built from f32 parameters, got {d:?}");
        }
        FlatState {
            ids: items.iter().map(|it| it.id).collect(),
            dtypes,
            w: pack(items.iter().map(|it| it.w.clone()).collect(), &segs, total, device),
            m: pack(m, &segs, total, device),
            v: adam.then(|| pack(v, &segs, total, device)),
            segs,
            shapes: items.iter().map(|it| it.shape.clone()).collect(),
            started,
            mask: None,
        }
    }
}

/// `grads` with every gradient in f32: those of half working copies ([`SharedOptimizer::keep_half_copies`])
/// converted exactly, so that the gradients of several backward passes (micro-batches, replicas) are summed in
/// f32 as they are with f32 parameters; f32 ones as they are.
pub fn grads_in_f32<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, mut grads: GradientsParams) -> GradientsParams {
    struct ToF32<'a> {
        grads: &'a mut GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for ToF32<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.cast(FloatDType::F32));
            }
        }
    }
    model.visit(&mut ToF32 { grads: &mut grads });
    grads
}

/// What the flat gradient is multiplied by before an update: the clip factor as a `[1]` tensor on the device
/// ([`SharedOptimizer::step_deferred`]), or a factor known on the host (the loss scale's inverse times the clip
/// factor, [`SharedOptimizer::step_scaled_flat`]; 1 for none).
enum GradScale<B: Backend> {
    Device(Tensor<B, 1>),
    Host(f64),
}

/// Segment padding of the flat buffers, in elements: 128 f32 = 512 bytes, CUDA's memory alignment in CubeCL.
pub const ALIGN: usize = 128;

/// The decay mask: 1 on started parameters' elements, 0 elsewhere; `None` when every parameter has started.
fn mask<B: Backend>(segs: &[(usize, usize)], started: &[bool], total: usize, device: &B::Device) -> Option<Tensor<B, 1>> {
    if started.iter().all(|&s| s) {
        return None;
    }
    let mut host = vec![0f32; total];
    for (&(off, len), _) in segs.iter().zip(started).filter(|(_, &s)| s) {
        host[off..off + len].fill(1.0);
    }
    Some(Tensor::from_data(TensorData::new(host, [total]), device))
}

impl<B: Backend> FlatState<B> {
    /// Parameter `i`'s moments as host vectors (`None` before its first gradient), for checkpoints in the
    /// per-tensor format.
    pub fn export(&self, i: usize, adam: bool) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
        if !self.started[i] {
            return None;
        }
        let (off, len) = self.segs[i];
        let host = |t: &Tensor<B, 1>| t.clone().narrow(0, off, len).into_data().convert::<f32>().into_vec::<f32>().expect("f32");
        Some((host(&self.m), self.v.as_ref().filter(|_| adam).map(host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::block::Block;
    use crate::model::init::Init;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::ElementConversion;

    type A = Autodiff<Flex>;

    fn params(b: &Block<A>) -> Vec<Vec<f32>> {
        let mut v = vec![b.norm1.gamma.val().into_data().to_vec::<f32>().unwrap()];
        for l in [&b.qkv, &b.proj, &b.fc1, &b.fc2] {
            v.push(l.weight.val().into_data().to_vec::<f32>().unwrap());
            v.push(l.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap());
        }
        v
    }

    /// The gradients of the mean of `y²` of the block on a fixed input, without fc2's bias gradient when `drop_fc2_bias`
    /// (a parameter that has not had a gradient yet, as the head of a task not sampled yet).
    fn grads(blk: &Block<A>, drop_fc2_bias: bool) -> GradientsParams {
        let mut g = scaled_grads(blk, 1.0);
        if drop_fc2_bias {
            g.remove::<Flex, 1>(blk.fc2.bias.as_ref().unwrap().id);
        }
        g
    }

    fn close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: tensors");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.len(), y.len(), "{what}: elements");
            let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= tol * scale, "{what}: {p} vs {q}");
            }
        }
    }

    /// The flat update takes the per-tensor path's updates (SGD with momentum, Adam, AdamW; clipping on and off)
    /// up to the norm's summation order: weights and exported moments within 1e-5, the same checkpoint names.
    /// A parameter without a gradient for the first two updates is left alone (AdamW does not decay it) and then
    /// starts as on the per-tensor path. A flat optimizer exported and imported into a new one continues with
    /// the same bits as the uninterrupted one (a resumed run).
    #[test]
    fn flat_updates_follow_the_per_tensor_ones() {
        let _one = crate::train::run::autodiff_guard();
        let kinds = [
            OptKind::Sgd { momentum: 0.9 },
            OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 },
        ];
        for kind in kinds {
            for clip in [None, Some(0.05)] {
                let what = format!("{kind:?} clip {clip:?}");
                let blk = Block::<A>::new(8, 2, 16, 1e-6, true, &mut Init::new(3), &Default::default());
                let b0 = blk.fc2.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap();
                let (mut host, mut flat) = (SharedOptimizer::<A>::new(kind, clip), SharedOptimizer::<A>::new(kind, clip));
                let (mut a, mut b) = (blk.clone(), blk);
                let mut resumed: Option<(SharedOptimizer<A>, Block<A>)> = None;
                for step in 0..5 {
                    // fc2's bias: no gradient before update 2 (not started), none again at update 3 (started).
                    let drop = step < 2 || step == 3;
                    let (na, _) = host.step(a.clone(), &grads(&a, drop), 0.05);
                    let (nb, norm) = flat.step_deferred(b.clone(), grads(&b, drop), 0.05);
                    a = na;
                    b = nb;
                    let norm = norm.expect("a norm").into_scalar().elem::<f64>();
                    assert!(norm.is_finite() && (clip.is_none() || step > 0 || norm > 0.05), "{what}: norm {norm}, clipping active");
                    if step < 2 {
                        let bias = b.fc2.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap();
                        assert_eq!(bias, b0, "{what}: no gradient yet, the parameter is untouched");
                    }
                    let (mut pa, mut pb) = (params(&a), params(&b));
                    if clip.is_some() && matches!(kind, OptKind::Adam { .. }) {
                        // The key part of the qkv bias has no gradient but rounding noise (softmax ignores a shift
                        // of the scores), which Adam scales up to steps of about the LR: a clip factor that differs
                        // in its last bit moves it anywhere within that. Its middle third is left out here.
                        let d = pa[2].len() / 3;
                        pa[2].drain(d..2 * d);
                        pb[2].drain(d..2 * d);
                    }
                    close(&pa, &pb, 1e-5, &format!("{what} update {step}"));
                    let (eh, ef) = (host.export(), flat.export());
                    assert_eq!(
                        eh.iter().map(|(n, v)| (n, v.len())).collect::<Vec<_>>(),
                        ef.iter().map(|(n, v)| (n, v.len())).collect::<Vec<_>>(),
                        "{what}"
                    );
                    close(
                        &eh.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
                        &ef.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
                        1e-5,
                        &what,
                    );
                    if step == 2 {
                        let mut o = SharedOptimizer::<A>::new(kind, clip);
                        o.import(&ef, flat.t, &Default::default());
                        resumed = Some((o, b.clone()));
                    }
                    if let Some((o, r)) = resumed.as_mut().filter(|_| step > 2) {
                        let (nr, _) = o.step_deferred(r.clone(), grads(r, drop), 0.05);
                        *r = nr;
                        assert_eq!(params(r), params(&b), "{what} update {step}: resumed from a checkpoint");
                    }
                }
                assert!(resumed.is_some());
            }
        }
    }

    /// The gradients of `scale` × the mean of `y²` (a loss-scaled backward pass, as f16 training runs it).
    fn scaled_grads(blk: &Block<A>, scale: f64) -> GradientsParams {
        let v: Vec<f32> = (0..80).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let x = Tensor::<A, 3>::from_data(TensorData::new(v, [2, 5, 8]), &Default::default());
        let y = blk.forward_composed(x, None);
        GradientsParams::from_grads(((y.clone() * y).mean() * scale).backward(), blk)
    }

    /// The flat loss-scaled update (f16 on accelerators) takes the per-tensor `step_scaled`'s updates within 1e-5
    /// and reports the same unscaled norm; an overflowed update (gradients past f32) is skipped on both paths:
    /// +inf, not applied, weights, moments and the update count unchanged.
    #[test]
    fn flat_loss_scaled_updates_follow_the_per_tensor_ones_and_skip_overflows() {
        let _one = crate::train::run::autodiff_guard();
        let kind = OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
        for clip in [None, Some(0.05)] {
            let blk = Block::<A>::new(8, 2, 16, 1e-6, true, &mut Init::new(5), &Default::default());
            let (mut host, mut flat) = (SharedOptimizer::<A>::new(kind, clip), SharedOptimizer::<A>::new(kind, clip));
            let (mut a, mut b) = (blk.clone(), blk);
            for (step, scale) in [1024.0, 1e38, 2048.0, 1e38, 512.0].into_iter().enumerate() {
                let what = format!("clip {clip:?} update {step} scale {scale}");
                let (before, t, state) = (params(&b), flat.t, flat.export());
                let (na, norm_a, applied_a) = host.step_scaled(a.clone(), &scaled_grads(&a, scale), 0.05, scale);
                let (nb, norm_b, applied_b) = flat.step_scaled_flat(b.clone(), scaled_grads(&b, scale), 0.05, scale);
                a = na;
                b = nb;
                assert_eq!(applied_a, applied_b, "{what}");
                if scale > 1e30 {
                    assert!(!applied_b && norm_b == f64::INFINITY && norm_a == f64::INFINITY, "{what}: an overflow");
                    assert_eq!(params(&b), before, "{what}: skipped, weights unchanged");
                    assert_eq!((flat.t, flat.export()), (t, state), "{what}: skipped, moments and count unchanged");
                    continue;
                }
                assert!(applied_b && norm_b.is_finite(), "{what}");
                assert!((norm_a - norm_b).abs() <= 1e-5 * norm_a, "{what}: norm {norm_a} vs {norm_b}");
                let (mut pa, mut pb) = (params(&a), params(&b));
                if clip.is_some() {
                    // The qkv bias's key part: rounding noise scaled up by Adam (see the test above).
                    let d = pa[2].len() / 3;
                    pa[2].drain(d..2 * d);
                    pb[2].drain(d..2 * d);
                }
                close(&pa, &pb, 1e-5, &what);
            }
            assert_eq!(flat.t, 3);
        }
    }

    /// Half working copies (`keep_half_copies`): with the block's products in bf16 or f16, a flat optimizer that
    /// keeps the products' weights as half copies of its f32 masters takes, bit for bit, the updates of one whose
    /// parameters stay f32 and are cast in every forward pass (autocast's layout): the same forward outputs, the
    /// same masters (`masters`), the same moments; the copies are the masters rounded by burn's cast, LayerNorm
    /// stays f32, and `grads_in_f32` gives the cast path's f32 gradients. The per-tensor path refuses to follow.
    #[test]
    fn half_working_copies_take_the_casts_updates_bit_for_bit() {
        use crate::model::block::Arith;
        let _one = crate::train::run::autodiff_guard();
        let kind = OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
        let bits =
            |t: Tensor<A, 3>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let x = || {
            let v: Vec<f32> = (0..80).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            Tensor::<A, 3>::from_data(TensorData::new(v, [2, 5, 8]), &Default::default())
        };
        for (arith, h) in [(Arith::Bf16, FloatDType::BF16), (Arith::F16, FloatDType::F16)] {
            let mut blk = Block::<A>::new(8, 2, 16, 1e-6, true, &mut Init::new(6), &Default::default());
            blk.arith = arith;
            let (mut cast, mut copies) = (SharedOptimizer::<A>::new(kind, Some(0.05)), SharedOptimizer::<A>::new(kind, Some(0.05)));
            copies.keep_half_copies(blk.product_params(), h);
            let (mut a, mut b) = (blk.clone(), blk);
            for step in 0..4 {
                let what = format!("{arith:?} update {step}");
                assert_eq!(bits(a.forward_composed(x(), None)), bits(b.forward_composed(x(), None)), "{what}: outputs");
                if step > 0 {
                    let (ga, gb) = (scaled_grads(&a, 1.0), grads_in_f32(&b, scaled_grads(&b, 1.0)));
                    let (wa, wb) = (ga.get::<Flex, 2>(a.fc1.weight.id).unwrap(), gb.get::<Flex, 2>(b.fc1.weight.id).unwrap());
                    let (ba, bb) = (
                        ga.get::<Flex, 1>(a.qkv.bias.as_ref().unwrap().id).unwrap(),
                        gb.get::<Flex, 1>(b.qkv.bias.as_ref().unwrap().id).unwrap(),
                    );
                    assert_eq!((wb.dtype(), bb.dtype()), (DType::F32, DType::F32), "{what}");
                    assert_eq!(wa.into_data(), wb.into_data(), "{what}: fc1's weight gradient");
                    assert_eq!(ba.into_data(), bb.into_data(), "{what}: qkv's bias gradient");
                }
                let (na, _) = cast.step_deferred(a.clone(), scaled_grads(&a, 1.0), 0.05);
                let (nb, _) = copies.step_deferred(b.clone(), scaled_grads(&b, 1.0), 0.05);
                (a, b) = (na, nb);
                let hd: DType = h.into();
                assert_eq!((b.qkv.weight.val().dtype(), b.fc2.bias.as_ref().unwrap().val().dtype()), (hd, hd), "{what}");
                assert_eq!((a.qkv.weight.val().dtype(), b.norm1.gamma.val().dtype()), (DType::F32, DType::F32), "{what}");
                assert_eq!(
                    b.fc1.weight.val().into_data(),
                    a.fc1.weight.val().cast(h).into_data(),
                    "{what}: the copy is the master rounded"
                );
                assert_eq!(params(&copies.masters(b.clone())), params(&a), "{what}: masters");
                assert_eq!(copies.export(), cast.export(), "{what}: moments");
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copies.step(b.clone(), &scaled_grads(&b, 1.0), 0.05)));
            assert!(r.is_err(), "the per-tensor path followed half working copies");
        }
    }

    /// Switching paths keeps the moments: per-tensor updates after flat ones take the flat state back.
    #[test]
    fn the_per_tensor_path_takes_the_flat_moments_back() {
        let _one = crate::train::run::autodiff_guard();
        let kind = OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let blk = Block::<A>::new(8, 2, 16, 1e-6, true, &mut Init::new(4), &Default::default());
        let mut o = SharedOptimizer::<A>::new(kind, None);
        let g = grads(&blk, false);
        let (b, _) = o.step_deferred(blk, g, 0.1);
        let before = o.export();
        o.unflatten_for_test();
        assert!(o.flat.is_none());
        assert_eq!(o.export(), before);
        let _ = o.step(b.clone(), &grads(&b, false), 0.1);
        assert_eq!(o.t, 2);
    }
}
