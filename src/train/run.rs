//! The training loop, generic over the burn backend: one task per minibatch (or every task, for
//! `accumulate`), one shared optimizer, LR = global warmup+cosine × the sampled task's peak LR, global-norm
//! clipping, evaluation at intervals, resumable checkpoints.

use super::batch::{augment, next_indices, Augment, Cursor, SplitData};
use super::metrics::{loss, mean_ap, topk, Loss};
use super::optim::{LossScaler, OptKind, SharedOptimizer};
use super::prefetch::Prefetch;
use super::schedule::{run_plan, LrSchedule, Schedule};
use crate::model::block::{Arith, DropMasks};
use crate::model::checkpoint::{load_into, named_tensors, HostTensor};
use crate::model::{ModelConfig, PolyVit};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One task of a run, with its data in memory.
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// Name (the task node id).
    pub name: String,
    /// Loss.
    pub loss: Loss,
    /// Minibatch size.
    pub batch: usize,
    /// Step budget U_j.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps of this task (see [`crate::train::schedule::global_warmup`]).
    pub warmup: usize,
    /// Tasks of one warmup group share one warmup (Scenic's image tasks); `None` = its own.
    pub warmup_group: Option<String>,
    /// Augmentation.
    pub augment: Augment,
    /// Stochastic depth rate (paper: 0.3 for its audio tasks, else 0).
    pub droplayer: f64,
    /// Classes.
    pub classes: usize,
    /// Report mAP (multi-label / audio).
    pub map: bool,
    /// Train split.
    pub train: SplitData,
    /// Validation split.
    pub val: SplitData,
    /// Test split.
    pub test: SplitData,
}

/// Settings of a run that are not per task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model.
    pub model: ModelConfig,
    /// Task-sampling schedule.
    pub schedule: Schedule,
    /// Override of Σ U_j.
    pub total_steps: Option<usize>,
    /// Seed of the schedule's permutation / draws (Scenic: fixed 0).
    pub schedule_seed: u64,
    /// Optimizer.
    pub optimizer: OptKind,
    /// Global-norm clip.
    pub clip: Option<f64>,
    /// Scenic's final-step cosine wrap.
    pub wrap_last: bool,
    /// `accumulate`: mean (true) or sum of the task losses.
    pub accumulate_mean: bool,
    /// Evaluate on val every this many updates (0 = only at the end).
    pub eval_every: usize,
    /// Checkpoint every this many updates (0 = never). Not written to `config.json`: outside the key (it changes
    /// no bit of the result), so the artifact stays a function of the key.
    #[serde(skip)]
    pub checkpoint_every: usize,
    /// Seed of init, data order and augmentation.
    pub seed: u64,
    /// Batch size for evaluation.
    pub eval_batch: usize,
    /// Matrix products of the blocks on bf16 operands with f32 accumulation (training and the evaluations
    /// during it); weights, optimizer state and everything else stay f32. Written to `config.json` only when
    /// on (artifacts of f32 runs keep their bytes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bf16: bool,
    /// Matrix products of the blocks on f16 operands (autocast-style composition, for GPUs without bf16),
    /// with dynamic loss scaling ([`LossScaler`]); weights and optimizer state stay f32. Every update's
    /// gradient norm is read on the host (to skip overflowed updates), as PyTorch's `GradScaler` reads its
    /// overflow flag; losses are read as `deferred_reads` says. On accelerators the update runs over the flat
    /// buffers ([`SharedOptimizer::step_scaled_flat`]), on the CPU per tensor. Written only when on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f16: bool,
    /// The first loss scale of an f16 run (`None`: [`LossScaler::INIT`]). Written only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale_init: Option<f64>,
    /// Gradient accumulation: each task's batch goes through forward and backward in slices of at most this
    /// many examples, their gradients summed (each slice's loss weighted by its share of the batch) before
    /// the one optimizer step; the same update as the whole batch up to float rounding, with the activation
    /// memory of one slice. 0 (or ≥ the batch) = the whole batch at once. Written only when set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub micro_batch: usize,
    /// Data parallelism: each task's batch is cut into this many contiguous shards, one per replica of the
    /// model (replica `k` on the run's device `k mod devices`, its weights copied from the master before every
    /// update); their gradients, each shard's loss weighted by its share of the batch, are summed on the first
    /// device before the one optimizer step. The same update as one replica up to float rounding; every
    /// replica sees the same task (co-training stays one task per step). 0 or 1 = one replica. Written only
    /// when above 1.
    #[serde(default, skip_serializing_if = "at_most_one")]
    pub replicas: usize,
    /// Activation checkpointing: the blocks keep only their inputs for the backward pass and recompute their
    /// activations there (the fused CPU block; the same bits, about a third more arithmetic, far less memory).
    /// Written only when on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recompute: bool,
    /// When losses and gradient norms come back to the host. `None` (the CPU's path): every update, the loss
    /// before its backward pass, the clip factor computed on the host. `Some(n)` (accelerators): the clip
    /// factor is computed on the device ([`SharedOptimizer::step_deferred`]) and the pending updates' values
    /// are read every `n` updates and before each evaluation, checkpoint and the end, so the host queues the
    /// next updates while the device computes. The bits do not depend on `n`; a non-finite loss still stops
    /// the run with the update it happened at. Not serialized: the backend (part of keys) decides it.
    #[serde(skip)]
    pub deferred_reads: Option<usize>,
    /// bf16/f16 on the GPU backends keeps the blocks' product weights as f32 parameters cast in every forward
    /// pass (autocast's layout) instead of half working copies written by the flat optimizer
    /// ([`SharedOptimizer::keep_half_copies`], the default there). The same bits either way (`tests/wgpu.rs`);
    /// for comparisons. Not serialized.
    #[serde(skip)]
    pub f32_params: bool,
}

/// Whether a run of `cfg` on `B` keeps the blocks' product weights as half working copies of the flat optimizer's
/// f32 masters ([`SharedOptimizer::keep_half_copies`]): bf16/f16 on the GPU backends with polyflow's kernels (the
/// flat path; one rounding per update instead of a cast forward and back per weight and pass), unless
/// `f32_params`. Not under `accumulate`, whose update sums several tasks' gradients of the shared weights in one
/// backward pass (in the half type, where the casts sum them in f32).
pub fn half_copies<B: AutodiffBackend>(cfg: &RunConfig) -> bool {
    half_copies_with::<B>(cfg.bf16 || cfg.f16, cfg.deferred_reads.is_some(), cfg.f32_params, cfg.schedule == Schedule::Accumulate)
}

/// [`half_copies`] from its parts (also `bench-model`'s choice): half products, the flat optimizer's path (an
/// accelerator), not `f32_params`, not one backward pass over several tasks (`accumulate`), polyflow's kernels on
/// a GPU backend.
pub fn half_copies_with<B: AutodiffBackend>(half: bool, flat: bool, f32_params: bool, accumulate: bool) -> bool {
    half && flat && !f32_params && !accumulate && crate::model::gpu_fused::token_rows::<B>()
}

/// Updates between host reads on an accelerator ([`RunConfig::deferred_reads`]): `POLYFLOW_SYNC_EVERY`
/// (at least 1), else 16.
pub fn deferred_reads_from_env() -> usize {
    match std::env::var("POLYFLOW_SYNC_EVERY") {
        Err(_) => 16,
        Ok(v) => v.trim().parse::<usize>().map(|n| n.max(1)).unwrap_or_else(|_| {
            tracing::warn!("POLYFLOW_SYNC_EVERY={v:?} is not a number of updates: reading every 16");
            16
        }),
    }
}

/// A logged value of an update: read already, or a `[1]` tensor still on the device.
enum Value<B: Backend> {
    Host(f64),
    Device(Tensor<B, 1>),
}

/// An update whose log entry waits for its values ([`RunConfig::deferred_reads`]).
struct Pending<B: Backend> {
    step: usize,
    tasks: Vec<String>,
    lr: f64,
    loss: Value<B>,
    grad_norm: Value<B>,
    /// f16: the loss scale of the update and whether its gradients overflowed (the update skipped).
    scaled: Option<(f64, bool)>,
}

/// Reads the pending updates' values (one transfer for all of them), logs each update and reports its
/// progress, in order; a non-finite loss is an error naming its update and task.
fn flush<B: Backend>(
    pending: &mut Vec<Pending<B>>,
    steps: &mut Vec<StepLog>,
    total: usize,
    progress: &dyn Fn(usize, usize, String),
) -> Result<(), String> {
    let on_device: Vec<Tensor<B, 1>> = pending
        .iter()
        .flat_map(|p| [&p.loss, &p.grad_norm])
        .filter_map(|v| match v {
            Value::Device(t) => Some(t.clone()),
            Value::Host(_) => None,
        })
        .collect();
    let mut read = if on_device.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(on_device, 0).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| format!("reading losses: {e:?}"))?
    }
    .into_iter();
    let mut value = |v: &Value<B>| match v {
        Value::Host(x) => *x,
        Value::Device(_) => read.next().map_or(f64::NAN, f64::from),
    };
    for p in pending.drain(..) {
        let (loss, grad_norm) = (value(&p.loss), value(&p.grad_norm));
        if !loss.is_finite() {
            return Err(diverged(loss, p.step, &p.tasks[0]));
        }
        let skipped = p.scaled.is_some_and(|(_, s)| s);
        let note = if skipped { " (gradients overflowed: update skipped)" } else { "" };
        progress(p.step, total, format!("{} loss {loss:.3}{note}", p.tasks.join("+")));
        steps.push(StepLog { step: p.step, tasks: p.tasks, loss, lr: p.lr, grad_norm, loss_scale: p.scaled.map(|(s, _)| s), skipped });
    }
    Ok(())
}

/// The error of a run whose loss became `v` at update `step` (task `task`).
fn diverged(v: f64, step: usize, task: &str) -> String {
    format!("loss became {v} at update {step} (task {task}): lower the learning rate")
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn at_most_one(v: &usize) -> bool {
    *v <= 1
}

/// The contiguous shards `(start, len)` of a batch of `b` examples over `n` replicas: the first `b mod n` one
/// longer; empty shards (a batch smaller than the replicas) are left out.
pub fn shards(b: usize, n: usize) -> Vec<(usize, usize)> {
    let n = n.max(1);
    let mut start = 0;
    (0..n)
        .map(|k| {
            let len = b / n + usize::from(k < b % n);
            start += len;
            (start - len, len)
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// A per-update log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based update.
    pub step: usize,
    /// Task(s) of the update.
    pub tasks: Vec<String>,
    /// Loss.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Pre-clip global gradient norm (f16: unscaled; infinite, written `null`, for a skipped update).
    #[serde(deserialize_with = "null_is_infinite")]
    pub grad_norm: f64,
    /// f16: the loss scale of this update. Written only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16: the update's scaled gradients overflowed, so it was skipped (and the scale halved). Written only
    /// when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A logged number that JSON wrote as `null` (serde_json's form of a non-finite float) reads back infinite.
fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// An evaluation result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    /// Update after which it ran.
    pub step: usize,
    /// Task.
    pub task: String,
    /// `val` or `test`.
    pub split: String,
    /// Metric → value.
    pub metrics: BTreeMap<String, f64>,
}

/// Everything needed to resume.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Updates done.
    pub step: usize,
    /// Model weights.
    pub weights: BTreeMap<String, HostTensor>,
    /// Optimizer state.
    pub opt: Vec<(String, Vec<f32>)>,
    /// Optimizer step count.
    pub opt_t: usize,
    /// f16: the loss scaler's state.
    pub loss_scale: Option<LossScaler>,
    /// Data stream positions per task.
    pub cursors: Vec<Cursor>,
    /// Logs so far.
    pub steps: Vec<StepLog>,
    /// Evaluations so far.
    pub evals: Vec<EvalLog>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final weights.
    pub weights: BTreeMap<String, HostTensor>,
    /// Per-update logs.
    pub steps: Vec<StepLog>,
    /// Evaluations (val at intervals, val and test at the end).
    pub evals: Vec<EvalLog>,
    /// Updates per task actually taken.
    pub steps_per_task: Vec<usize>,
}

fn to_tensor<B: Backend>(x: Vec<f32>, b: usize, shape: [usize; 4], device: &B::Device) -> Tensor<B, 5> {
    Tensor::from_data(TensorData::new(x, [b, shape[0], shape[1], shape[2], shape[3]]), device)
}

/// The batches of an evaluation over `len` examples, `bs` at a time: each batch's example indices and how many
/// of them are real. With `fixed` (the GPU backends) every batch has `min(bs, len)` rows, the last one filled
/// up with copies of its last example whose outputs the caller drops: a partial batch would be a new shape
/// there, and every new shape of a product is tuned again at first use (seconds per candidate kernel with a
/// cold cache). Elsewhere the last batch is partial, as before.
pub fn eval_batches(len: usize, bs: usize, fixed: bool) -> Vec<(Vec<usize>, usize)> {
    let bs = bs.max(1);
    let rows = if fixed { bs.min(len) } else { 0 };
    let idx: Vec<usize> = (0..len).collect();
    idx.chunks(bs)
        .map(|chunk| {
            let n = chunk.len();
            (chunk.iter().copied().chain(std::iter::repeat_n(chunk[n - 1], rows.saturating_sub(n))).collect(), n)
        })
        .collect()
}

/// Evaluates `task` on `split` with the inference model, `bs` examples at a time (on the GPU backends every batch
/// of the same size: [`eval_batches`]).
pub fn evaluate<B: Backend>(
    model: &PolyVit<B>,
    cfg: &ModelConfig,
    ti: usize,
    t: &TaskRun,
    split: &SplitData,
    bs: usize,
    device: &B::Device,
) -> BTreeMap<String, f64> {
    evaluate_batched(model, cfg, ti, t, split, bs, crate::model::gpu_fused::gpu_backend::<B>(), device)
}

/// [`evaluate`] with the batches' layout chosen by the caller: `fixed` fills the last batch up to `bs` rows
/// ([`eval_batches`]); the metrics are those of the real examples either way.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_batched<B: Backend>(
    model: &PolyVit<B>,
    cfg: &ModelConfig,
    ti: usize,
    t: &TaskRun,
    split: &SplitData,
    bs: usize,
    fixed: bool,
    device: &B::Device,
) -> BTreeMap<String, f64> {
    let route = PolyVit::<B>::route(cfg, ti);
    let mut logits = Vec::with_capacity(split.len() * t.classes);
    let mut targets = Vec::with_capacity(split.len() * t.classes);
    for (padded, n) in eval_batches(split.len(), bs, fixed) {
        let (x, mut tg) = split.gather(&padded, t.classes);
        let out = model.forward(route, to_tensor::<B>(x, padded.len(), split.shape, device), &[]); // [rows, classes]
        let mut out = out.into_data().convert::<f32>().into_vec::<f32>().expect("f32");
        out.truncate(n * t.classes);
        tg.truncate(n * t.classes);
        logits.extend(out);
        targets.extend(tg);
    }
    let mut m = BTreeMap::new();
    m.insert("top1".to_string(), topk(&logits, &targets, t.classes, 1));
    if t.classes > 5 {
        m.insert("top5".to_string(), topk(&logits, &targets, t.classes, 5));
    }
    if t.map {
        m.insert("map".to_string(), mean_ap(&logits, &targets, t.classes));
    }
    m
}

fn drop_masks<B: Backend>(
    rate: f64,
    depth: usize,
    b: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
    device: &B::Device,
) -> Vec<Option<DropMasks<B>>> {
    if rate <= 0.0 {
        return vec![];
    }
    (0..depth)
        .map(|l| {
            let p = if depth > 1 { l as f64 / (depth - 1) as f64 * rate } else { 0.0 };
            let mut mk = || {
                let v: Vec<f32> = (0..b).map(|_| if rng.random_bool(1.0 - p) { 1.0 } else { 0.0 }).collect();
                Tensor::<B, 3>::from_data(TensorData::new(v, [b, 1, 1]), device)
            };
            Some((mk(), mk()))
        })
        .collect()
}

/// `Err` naming the device's missing type when `cfg` computes in bf16 or f16 and a device cannot (e.g. a Vulkan
/// adapter without 16-bit float arithmetic, a GPU without bf16): asked of the backend before anything trains,
/// where the kernels would otherwise fail to compile deep inside a step.
fn half_supported<B: AutodiffBackend>(cfg: &RunConfig, devices: &[B::Device]) -> Result<(), String> {
    let (dtype, name) = match (cfg.bf16, cfg.f16) {
        (true, _) => (burn::tensor::DType::BF16, "bf16"),
        (_, true) => (burn::tensor::DType::F16, "f16"),
        _ => return Ok(()),
    };
    match devices.iter().find(|d| !B::supports_dtype(d, dtype)) {
        Some(d) => Err(format!(
            "precision = \"{name}\" is not supported by the device {d:?}: the backend reports no {name} arithmetic there \
             (a GPU or driver without it); use precision = \"f32\" on it, or another device or backend"
        )),
        None => Ok(()),
    }
}

/// The longest axis burn 0.21's reductions along an axis cover on every adapter: on Mesa's lavapipe (Vulkan, at
/// most 65,535 cubes per axis) `sum_dim` over a longer axis stops after 65,532 elements (`tests/wgpu.rs`).
pub const SAFE_REDUCE_LEN: usize = 65_532;

/// What the device's `sum_dim` makes of `rows` ones along an axis (`rows` where the backend counts them all).
pub fn reduce_count<B: Backend>(rows: usize, device: &B::Device) -> f64 {
    use burn::tensor::ElementConversion;
    Tensor::<B, 2>::ones([rows, 1], device).sum_dim(0).into_scalar().elem()
}

/// Checks, before training on a GPU backend with polyflow's GPU kernels off (`gpu_fused::set_enabled`), that
/// the device's reductions cover the rows of a training slice (examples of a slice × tokens, the rows a linear
/// layer's bias gradient is summed over) when they are more than [`SAFE_REDUCE_LEN`]: a sum of that many ones
/// must give their count. There the bias gradients are burn's reductions, which on an adapter where they stop
/// short would silently be partial sums, so training is refused with what to set instead. With the kernels on
/// (`kernels`: [`run`] passes `gpu_fused::enabled()`, on by default) the bias gradients are polyflow's column
/// sums in every precision (`gpu_fused::linear_rows`) and nothing is checked. (With the kernels off the flat
/// optimizer's gradient norm is burn's `sum` too, short past 262,132 parameters on lavapipe: that mode is for
/// comparing kernels with compositions, `bench-model --ab`/`--no-fused`, whose timings do not depend on it.)
pub fn reductions_cover<B: AutodiffBackend>(cfg: &RunConfig, tasks: &[TaskRun], device: &B::Device, kernels: bool) -> Result<(), String> {
    if !crate::model::gpu_fused::gpu_backend::<B>() || kernels {
        return Ok(());
    }
    let replicas = cfg.replicas.max(1);
    let mut worst: Option<(usize, &str, usize)> = None; // (rows, task, tokens)
    for (j, t) in tasks.iter().enumerate() {
        let Some(geometry) = cfg.model.tasks.get(j).and_then(|tc| cfg.model.geometry(tc.modality)) else { continue };
        let tokens = geometry.tokens() + 1;
        let slice = if cfg.micro_batch > 0 { cfg.micro_batch.min(t.batch.div_ceil(replicas)) } else { t.batch.div_ceil(replicas) };
        let rows = slice * tokens;
        if worst.is_none_or(|w| rows > w.0) {
            worst = Some((rows, &t.name, tokens));
        }
    }
    let Some((rows, task, tokens)) = worst.filter(|w| w.0 > SAFE_REDUCE_LEN) else {
        return Ok(());
    };
    let counted = reduce_count::<B::InnerBackend>(rows, device);
    if counted == rows as f64 {
        return Ok(());
    }
    let fits = (SAFE_REDUCE_LEN / tokens).max(1);
    Err(format!(
        "task {task}: a training slice of {rows} rows ({tokens} tokens per example) is more than this device's reductions \
         cover (a sum over {rows} rows counted {counted}: burn 0.21 on this adapter stops at {SAFE_REDUCE_LEN}), so its \
         bias gradients would be partial sums; set micro_batch = {fits} (or less) on the training node, keep polyflow's GPU \
         kernels on (whose bias gradients are polyflow's own sums), or train on another backend"
    ))
}

/// Trains on `devices` (at least one; the first holds the master weights and the optimizer, and evaluates;
/// data-parallel replicas are placed on them in turn). `init`: weights to start from (ignored when resuming).
/// `checkpoint` receives resumable state every `checkpoint_every` updates. `progress(step, total, message)`.
pub fn run<B: AutodiffBackend>(
    cfg: &RunConfig,
    tasks: &[TaskRun],
    init: Option<&BTreeMap<String, HostTensor>>,
    resume: Option<Resume>,
    devices: &[B::Device],
    progress: &dyn Fn(usize, usize, String),
    checkpoint: &mut dyn FnMut(&Resume),
) -> Result<Outcome, String> {
    let device = devices.first().ok_or("training needs at least one device")?;
    let replicas = cfg.replicas.max(1);
    cfg.model.check()?;
    if cfg.recompute {
        crate::model::fused::recompute_supported::<B>(cfg.model.gelu_tanh)?;
    }
    half_supported::<B>(cfg, devices)?;
    for d in devices {
        reductions_cover::<B>(cfg, tasks, d, crate::model::gpu_fused::enabled())?;
    }
    let budgets: Vec<usize> = tasks.iter().map(|t| t.steps).collect();
    let warmups: Vec<(usize, Option<&str>)> = tasks.iter().map(|t| (t.warmup, t.warmup_group.as_deref())).collect();
    // A run shorter than Σ U_j (accumulate, `total_steps`) keeps the warmup's share of it.
    let (updates, warmup) = run_plan(cfg.schedule, &budgets, &warmups, cfg.total_steps, cfg.schedule_seed);
    let total = updates.len();
    let lr_sched = LrSchedule { total, warmup, wrap_last: cfg.wrap_last };
    let mut model = PolyVit::<B>::new(&cfg.model, cfg.seed, device);
    let mut opt = SharedOptimizer::<B>::new(cfg.optimizer, cfg.clip);
    let arith = match (cfg.bf16, cfg.f16) {
        (false, false) => Arith::F32,
        (true, false) => Arith::Bf16,
        (false, true) => Arith::F16,
        (true, true) => return Err("bf16 and f16 at once: choose one precision".into()),
    };
    if cfg.f16 && cfg.recompute {
        return Err("activation checkpointing runs in the fused CPU block, which has no f16".into());
    }
    let mut state = Resume {
        cursors: vec![Cursor::default(); tasks.len()],
        loss_scale: cfg.f16.then(|| LossScaler::new(cfg.loss_scale_init.unwrap_or(LossScaler::INIT))),
        ..Default::default()
    };
    if let Some(r) = resume {
        model = load_into(model, &r.weights, false, device).map_err(|e| format!("resume checkpoint: {e}"))?;
        opt.import(&r.opt, r.opt_t, device);
        if cfg.f16 && r.loss_scale.is_none() {
            return Err("resume checkpoint: an f16 run's checkpoint without its loss scale".into());
        }
        state = r;
    } else if let Some(w) = init {
        model = load_into(model, w, true, device).map_err(|e| format!("init checkpoint: {e}"))?;
    }
    model.set_arith(arith);
    model.set_recompute(cfg.recompute);
    let half_copies = half_copies::<B>(cfg);
    if let (true, Some(h)) = (half_copies, arith.half()) {
        opt.keep_half_copies(model.product_params(), h);
    }
    let mut per_task = vec![0usize; tasks.len()];
    for u in &updates[..state.step] {
        u.iter().for_each(|&j| per_task[j] += 1);
    }
    let depth = cfg.model.size.depth;
    // f16 reads every update's gradient norm (an overflowed update must be skipped before the next one);
    // its losses are read as the other precisions' are.
    let deferred = cfg.deferred_reads.is_some();
    let read_every = cfg.deferred_reads.unwrap_or(1).max(1);
    // f16: the loss is multiplied by the scale before each backward pass, the gradients divided by it again.
    let scale_loss = |l: Tensor<B, 1>, state: &Resume| match state.loss_scale {
        Some(s) => l * s.scale,
        None => l,
    };
    let mut pending: Vec<Pending<B::InnerBackend>> = Vec::new();
    let start = state.step;
    // The batches of the coming updates, prepared as jobs of this thread's pool while it trains: the update plan
    // and every stream's cursor are known in advance, so they are the same batches, in the same order. A failure
    // while reading (a damaged disk panics in the reader) comes back as that batch's error.
    let mut ahead = state.cursors.clone();
    let order: Vec<(usize, usize)> =
        updates.iter().enumerate().skip(start).flat_map(|(s, us)| us.iter().map(move |&j| (s + 1, j))).collect();
    let jobs = order.into_iter().map(|(step, j)| {
        let idx = next_indices(&mut ahead[j], tasks[j].train.len(), tasks[j].batch, cfg.seed, j);
        let t = &tasks[j];
        move || batch(t, &idx, cfg.seed, j, step as u64)
    });
    let mut prefetch = Prefetch::new(jobs, PREFETCH);
    let model = rayon::in_place_scope_fifo(|sc| -> Result<PolyVit<B>, String> {
        let mut model = model;
        for (s, us) in updates.iter().enumerate().skip(state.step) {
            let step = s + 1;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xd509 ^ (step as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let one_at_a_time = autodiff_guard();
            let sliced = replicas > 1 || (cfg.micro_batch > 0 && us.iter().any(|&j| tasks[j].batch > cfg.micro_batch));
            let mut total_loss: Option<Tensor<B, 1>> = None;
            let mut accum = GradientsAccumulator::<PolyVit<B>>::new();
            // The slices' losses, read once every backward pass is under way (in order: the same sum).
            let mut slice_losses: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
            // Replicas 1.. of this update: the master's weights on their devices (replica 0 is the master).
            let forks: Vec<(PolyVit<B>, &B::Device)> = (1..replicas)
                .map(|k| {
                    let d = &devices[k % devices.len()];
                    (model.clone().fork(d), d)
                })
                .collect();
            // accumulate = mean: every task's loss weighted by 1/T.
            let task_weight = if us.len() > 1 && cfg.accumulate_mean { 1.0 / us.len() as f64 } else { 1.0 };
            for &j in us {
                let t = &tasks[j];
                // The checkpointed cursor advances as the loader's did.
                let idx = next_indices(&mut state.cursors[j], t.train.len(), t.batch, cfg.seed, j);
                let (x, tg) = prefetch
                    .next(sc)
                    .ok_or_else(|| "the batch loader stopped".to_string())?
                    .map_err(|why| format!("reading a batch of task {}: {why}", t.name))?;
                let b = idx.len();
                let xb = to_tensor::<B>(x, b, t.train.shape, device);
                let tb = Tensor::<B, 2>::from_data(TensorData::new(tg, [b, t.classes]), device);
                // Drawn for the whole batch (the same masks whatever the slicing).
                let masks = drop_masks::<B>(t.droplayer, depth, b, &mut rng, device);
                let route = PolyVit::<B>::route(&cfg.model, j);
                per_task[j] += 1;
                if !sliced {
                    let l = loss(t.loss, model.forward(route, xb, &masks), tb);
                    total_loss = Some(match total_loss {
                        Some(a) => a + l,
                        None => l,
                    });
                    continue;
                }
                for (k, (s0, n)) in shards(b, replicas).into_iter().enumerate() {
                    let (m, dev) = if k == 0 { (&model, device) } else { (&forks[k - 1].0, forks[k - 1].1) };
                    let step_len = if cfg.micro_batch > 0 { cfg.micro_batch } else { n };
                    for start in (s0..s0 + n).step_by(step_len) {
                        let len = step_len.min(s0 + n - start);
                        let part = |m: &Tensor<B, 3>| m.clone().narrow(0, start, len).to_device(dev);
                        let mk: Vec<Option<DropMasks<B>>> = masks.iter().map(|m| m.as_ref().map(|(a, c)| (part(a), part(c)))).collect();
                        let logits = m.forward(route, xb.clone().narrow(0, start, len).to_device(dev), &mk);
                        let target = tb.clone().narrow(0, start, len).to_device(dev);
                        let l = loss(t.loss, logits, target) * (task_weight * len as f64 / b as f64);
                        slice_losses.push(l.clone().inner().to_device(device));
                        let grads = GradientsParams::from_grads(scale_loss(l, &state).backward(), m);
                        // Half working copies' gradients are summed in f32, as f32 parameters' are.
                        let grads = if half_copies { super::flat::grads_in_f32(m, grads) } else { grads };
                        // A replica's gradients come to the master's device to be summed there.
                        accum.accumulate(&model, if k == 0 { grads } else { grads.to_device(device, m) });
                    }
                }
            }
            let first = &tasks[us[0]].name;
            let (loss_val, grads) = if sliced {
                drop(forks);
                if deferred {
                    let sum = slice_losses.into_iter().reduce(|a, l| a + l).expect("an update has at least one slice");
                    (Value::Device(sum), accum.grads())
                } else {
                    // The slices' backward passes have run; a non-finite loss stops before the optimizer step.
                    let v = slice_losses.into_iter().fold(0.0f64, |a, l| a + l.into_scalar().elem::<f64>());
                    if !v.is_finite() {
                        return Err(diverged(v, step, first));
                    }
                    (Value::Host(v), accum.grads())
                }
            } else {
                let mut l = total_loss.expect("an update has at least one task");
                if us.len() > 1 && cfg.accumulate_mean {
                    l = l / us.len() as f64;
                }
                let v = if deferred {
                    Value::Device(l.clone().inner())
                } else {
                    let v: f64 = l.clone().into_scalar().elem();
                    if !v.is_finite() {
                        return Err(diverged(v, step, first)); // before a backward pass that would be wasted
                    }
                    Value::Host(v)
                };
                (v, GradientsParams::from_grads(scale_loss(l, &state).backward(), &model))
            };
            // LR of the update: schedule × peak LR of the sampled task (accumulate: the mean of the peaks).
            let peak = us.iter().map(|&j| tasks[j].lr).sum::<f64>() / us.len() as f64;
            let lr = lr_sched.at(step) * peak;
            let mut scaled = None;
            let grad_norm = if let Some(scaler) = state.loss_scale.as_mut() {
                // On accelerators over the flat buffers (one read of the norm per update), else per tensor.
                let (m, gn, applied) = if deferred {
                    opt.step_scaled_flat(model, grads, lr, scaler.scale)
                } else {
                    opt.step_scaled(model, &grads, lr, scaler.scale)
                };
                model = m;
                scaled = Some((scaler.scale, !applied));
                scaler.update(applied);
                Value::Host(gn)
            } else if deferred {
                let (m, gn) = opt.step_deferred(model, grads, lr);
                model = m;
                gn.map_or(Value::Host(0.0), Value::Device)
            } else {
                let (m, gn) = opt.step(model, &grads, lr);
                model = m;
                Value::Host(gn)
            };
            drop(one_at_a_time);
            let names: Vec<String> = us.iter().map(|&j| tasks[j].name.clone()).collect();
            pending.push(Pending { step, tasks: names, lr, loss: loss_val, grad_norm, scaled });
            state.step = step;
            let eval_now = cfg.eval_every > 0 && step % cfg.eval_every == 0 && step < total;
            let checkpoint_now = cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && step < total;
            if pending.len() >= read_every || eval_now || checkpoint_now || step == total {
                flush(&mut pending, &mut state.steps, total, progress)?;
            }
            if eval_now {
                let inf = model.valid();
                for (j, t) in tasks.iter().enumerate().filter(|(_, t)| !t.val.is_empty()) {
                    let m = evaluate(&inf, &cfg.model, j, t, &t.val, cfg.eval_batch, device);
                    state.evals.push(EvalLog { step, task: t.name.clone(), split: "val".into(), metrics: m });
                }
            }
            if checkpoint_now {
                state.weights = named_tensors(&opt.masters(model.clone()));
                state.opt = opt.export();
                state.opt_t = opt.t;
                checkpoint(&state);
            }
        }
        Ok(model)
    })?;
    // The f32 master weights in place of half working copies: the trained model, and its evaluations.
    let model = opt.masters(model);
    let inf = model.valid();
    for (j, t) in tasks.iter().enumerate() {
        for (name, split) in [("val", &t.val), ("test", &t.test)] {
            if split.is_empty() {
                continue;
            }
            let m = evaluate(&inf, &cfg.model, j, t, split, cfg.eval_batch, device);
            state.evals.push(EvalLog { step: total, task: t.name.clone(), split: name.into(), metrics: m });
        }
    }
    Ok(Outcome { weights: named_tensors(&model), steps: state.steps, evals: state.evals, steps_per_task: per_task })
}

use burn::tensor::ElementConversion;

/// Batches prepared ahead of the training loop.
const PREFETCH: usize = 2;

/// The training batch of task `t` at update `step`: examples `idx` (its stream's next indices), gathered
/// (encoded images cropped and flipped from the original as they are decoded) and augmented; noise from
/// `(seed, task, step)`.
fn batch(t: &TaskRun, idx: &[usize], seed: u64, j: usize, step: u64) -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut tg, done) = t.train.gather_train(idx, t.classes, &t.augment, seed, j, step);
    let mut aug = t.augment;
    if done.crop_flip {
        (aug.inception_crop, aug.flip) = (false, false);
    }
    if done.scale_jitter {
        aug.scale_jitter = [0.0, 0.0];
    }
    augment(&aug, &mut x, &mut tg, t.train.shape, t.classes, seed, j, step);
    (x, tg)
}

/// One training update (forward passes, backward pass, optimizer step) at a time in this process. burn
/// 0.21's autodiff bookkeeping is shared by all threads; measured here, two training nodes updating at the
/// same time made the `accumulate` schedule's weights (several forward passes in one graph) depend on timing
/// — four different results in four concurrent runs, with burn's composed block as well as the fused one —
/// while lone runs were bit-identical. Locking only the backward pass was not enough (smoke profile: three
/// different results in three runs). Data loading and evaluation still overlap. (burn's issue #5573 explains
/// it: every `backward()` sweeps the autodiff graphs of all threads and can free steps another thread is
/// still building, losing or corrupting a gradient silently.)
static UPDATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds `UPDATE`: whatever builds an autodiff graph and calls `backward()` outside the training loop in
/// this process (unit tests that run side by side) takes it for the graph's whole life.
pub fn autodiff_guard() -> std::sync::MutexGuard<'static, ()> {
    UPDATE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{eval_batches, shards};

    /// Evaluation batches cover every example once, in order; on the GPU backends (`fixed`) each has the
    /// first batch's size, the last one filled up with its last example; on the CPU the last one is partial.
    #[test]
    fn evaluation_batches_are_of_one_size_on_gpus_and_cover_the_split() {
        for (len, bs) in [(10, 4), (8, 4), (3, 4), (1, 1), (0, 4), (257, 256)] {
            for fixed in [false, true] {
                let b = eval_batches(len, bs, fixed);
                let real: Vec<usize> = b.iter().flat_map(|(idx, n)| idx[..*n].iter().copied()).collect();
                assert_eq!(real, (0..len).collect::<Vec<_>>(), "{len} {bs} {fixed}");
                for (idx, n) in &b {
                    let want = if fixed { bs.min(len) } else { *n };
                    assert_eq!(idx.len(), want, "{len} {bs} {fixed}");
                    assert!(idx[*n..].iter().all(|&i| i == idx[*n - 1]), "filled up with the last real example");
                }
            }
        }
        assert_eq!(eval_batches(10, 4, true).last().unwrap(), &(vec![8, 9, 9, 9], 2));
        assert_eq!(eval_batches(10, 4, false).last().unwrap(), &(vec![8, 9], 2));
    }

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shards(8, 1), vec![(0, 8)]);
        assert_eq!(shards(8, 2), vec![(0, 4), (4, 4)]);
        assert_eq!(shards(8, 3), vec![(0, 3), (3, 3), (6, 2)]);
        // More replicas than examples: the empty shards are left out.
        assert_eq!(shards(2, 4), vec![(0, 1), (1, 1)]);
        assert_eq!(shards(5, 0), vec![(0, 5)]);
    }
}
