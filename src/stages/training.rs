//! `train` (one task) and `cotrain` (several tasks, any modalities): produce a `model` artifact —
//! `model.safetensors`, `config.json`, `metrics.json`, `steps.jsonl`, `evals.jsonl`, `curves.svg`.
//!
//! Resumable: every `checkpoint_every` updates the weights, optimizer state, step and data-stream positions go
//! to the node's scratch directory in the store; a killed run resumes there and ends with exactly the
//! weights and metrics of an uninterrupted run.

use super::modelspec::{load_task, model_config, model_params, Gelu, LoadedTask, ModelParams};
use crate::model::checkpoint::{from_safetensors, to_safetensors, HostTensor};
use crate::model::count::count;
use crate::model::device::{Backend, BackendJob};
use crate::model::import::{fits, from_timm, Inflation, VitInfo};
use crate::model::ModelConfig;
use crate::stage::{
    choice_enum, parse, parse_checked, InputArtifact, InputSlot, ParamSpec, ParamType as T, Problem, Progress, Resources, Stage, StageCtx,
    StageError,
};
use crate::train::batch::Cursor;
use crate::train::optim::OptKind;
use crate::train::run::{run, Outcome, Resume, RunConfig, TaskRun};
use crate::train::schedule::{Schedule, SCHEDULES};
use burn::tensor::backend::AutodiffBackend;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `train` (`multi = false`) and `cotrain` (`multi = true`).
pub struct TrainStage {
    /// Co-training over several tasks.
    pub multi: bool,
}

choice_enum! {
    /// The shared optimizer.
    enum Optimizer {
        /// SGD with momentum (the paper).
        Sgd = "sgd",
        /// Adam.
        Adam = "adam",
        /// Adam with decoupled weight decay.
        AdamW = "adamw",
    }
}

choice_enum! {
    /// How the `accumulate` schedule combines the task gradients.
    enum Accumulate {
        /// Their sum.
        Sum = "sum",
        /// Their mean.
        Mean = "mean",
    }
}

choice_enum! {
    /// The arithmetic of the blocks' matrix products.
    enum Precision {
        /// f32 throughout.
        F32 = "f32",
        /// bf16 operands with f32 master weights and optimizer state: on the CPU the fused block's products
        /// accumulate in f32; elsewhere the block runs as PyTorch's autocast (products and GELU in bf16).
        Bf16 = "bf16",
        /// f16 operands with dynamic loss scaling, f32 master weights and optimizer state: the autocast-style
        /// composition (never the fused CPU block), for GPUs without bf16 (V100, T4).
        F16 = "f16",
    }
}

/// The optimisation parameters of `train` and `cotrain` ([`optim_params`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimParams {
    optimizer: Optimizer,
    momentum: f64,
    weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    clip: f64,
    wrap_last: bool,
    /// Σ U_j override (0 = Σ U_j).
    total_steps: usize,
    eval_every: usize,
    checkpoint_every: usize,
    init_inflation: Inflation,
    /// Added after nodes were cached ([`ParamSpec::added`]): absent at its default.
    #[serde(default = "f32_precision")]
    precision: Precision,
    /// Gradient accumulation slice (0 = the whole batch); added later, absent at its default.
    #[serde(default)]
    micro_batch: usize,
    /// Data-parallel replicas (one per GPU); added later, absent at its default.
    #[serde(default = "one")]
    gpus: usize,
    /// Activation checkpointing; added later, absent at its default (off).
    #[serde(default)]
    activation_checkpointing: bool,
}

/// The settings of a model-bearing node (`train`, `cotrain`, `probe`) that decide its arithmetic and devices, read
/// from its parameters as they are (a probe's have no `precision`: absent is the default). A value that does not
/// parse reads as the default here: `validate` reports it before anything runs.
#[derive(Deserialize, Default)]
struct Arithmetic {
    #[serde(default)]
    precision: Option<Precision>,
    #[serde(default)]
    gelu: Option<Gelu>,
    #[serde(default)]
    gpus: Option<usize>,
    #[serde(default)]
    activation_checkpointing: bool,
}

impl Arithmetic {
    fn of(params: &Value) -> Self {
        Self::deserialize(params).unwrap_or_default()
    }
    fn precision(&self) -> Precision {
        self.precision.unwrap_or(Precision::F32)
    }
}

/// Whether a model-bearing node with `params` under `env` (its key's entries) runs off the fused CPU block: on
/// another backend than `flex`, with a setting the fused kernels do not have ([`never_fused`]), or with the
/// fused block turned off (`POLYFLOW_FUSED_CPU=0`, the `cpu_block` entry: burn's composition rounds
/// differently, so its artifacts must not stand in for the fused block's under one key, nor the other way
/// round). A function of the key's inputs alone.
pub(crate) fn off_fused_cpu(params: &Value, env: &BTreeMap<String, String>) -> bool {
    Backend::from_env(env).is_ok_and(|b| b != Backend::Flex) || never_fused(params) || env.contains_key(crate::model::device::CPU_BLOCK)
}

/// Settings the fused CPU block does not implement: the erf GELU, f16.
fn never_fused(params: &Value) -> bool {
    let a = Arithmetic::of(params);
    a.gelu == Some(Gelu::Erf) || a.precision() == Precision::F16
}

/// The key's environment of a model-bearing node: the `cpu_block` entry (`POLYFLOW_FUSED_CPU=0`) only where
/// the fused block would otherwise run, so nodes that never use it keep one key either way.
/// The `bf16_kernel` entry (AMX) only on bf16 nodes the fused block runs: the others never use its bf16 products.
pub(crate) fn env_for_block(params: &Value, mut env: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if never_fused(params) {
        env.remove(crate::model::device::CPU_BLOCK);
    }
    if Arithmetic::of(params).precision() != Precision::Bf16 || off_fused_cpu(params, &env) {
        env.remove(crate::model::device::BF16_KERNEL);
    }
    env
}

/// [`Stage::follow_env`] of the model-bearing nodes (the inverse of `env_for_block`): the fused CPU block on or
/// off as the key's `cpu_block` entry says, and bf16 products off AMX unless its `bf16_kernel` entry names AMX.
/// `Err` when this machine cannot: the key names AMX and the products here do not run on it (the bits would differ
/// from the key's).
pub fn follow_key_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if env.get("backend").map(String::as_str) != Some("flex") {
        return Ok(());
    }
    crate::model::fused::set_enabled(!env.contains_key(crate::model::device::CPU_BLOCK));
    use crate::model::fused::kernels::bf16::{avoid_amx, kernel, Kernel};
    match env.get(crate::model::device::BF16_KERNEL) {
        None if avoid_amx() == Kernel::Amx => {
            Err("this process already runs its bf16 products on AMX, which the key does not name".to_string())
        }
        Some(want) if kernel() != Kernel::Amx => Err(format!(
            "the node's key names {} = {want} (its bf16 products ran on AMX where it was submitted), but on this \
             machine they run on {}, whose sums round otherwise; run it on CPUs with AMX-BF16 (e.g. a Slurm constraint), \
             or submit with POLYFLOW_BF16=avx512 so that its key names no AMX",
            crate::model::device::BF16_KERNEL,
            kernel().name()
        )),
        _ => Ok(()),
    }
}

fn one() -> usize {
    1
}

impl OptimParams {
    /// The options set here that only the fused CPU block implements: `(parameter, as written, its off value)`.
    /// (`precision = "bf16"` is not one: every backend runs it, the fused block with its own kernels.)
    fn fused_only(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut v = vec![];
        if self.activation_checkpointing {
            v.push(("activation_checkpointing", "activation_checkpointing = true", "activation_checkpointing = false"));
        }
        v
    }
}

fn f32_precision() -> Precision {
    Precision::F32
}

/// `params` as a training node uses them: the size resolved, and the settings of optimizers not chosen left out.
fn effective(params: &Value, model: &ModelParams, optim: &OptimParams) -> Value {
    let mut v = crate::stages::modelspec::effective_size(params, model);
    if let Some(o) = v.as_object_mut() {
        if optim.optimizer != Optimizer::Sgd {
            o.remove("momentum");
        }
        if optim.optimizer != Optimizer::AdamW {
            o.remove("weight_decay");
        }
    }
    v
}

/// The parameters of a `train` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainParams {
    #[serde(flatten)]
    model: ModelParams,
    #[serde(flatten)]
    optim: OptimParams,
}

/// The parameters of a `cotrain` node: those of `train` and the task schedule. (Not a flattened
/// [`TrainParams`]: a flattened struct that itself flattens refuses the keys it does not know.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CotrainParams {
    #[serde(flatten)]
    model: ModelParams,
    #[serde(flatten)]
    optim: OptimParams,
    schedule: Schedule,
    schedule_seed: u64,
    accumulate: Accumulate,
}

impl From<TrainParams> for CotrainParams {
    /// A single-task run: every update trains its one task (`weighted`, seed 0, summed).
    fn from(p: TrainParams) -> Self {
        CotrainParams { model: p.model, optim: p.optim, schedule: Schedule::Weighted, schedule_seed: 0, accumulate: Accumulate::Sum }
    }
}

fn optim_params(multi: bool) -> Vec<ParamSpec> {
    let mut v = vec![
        ParamSpec::opt("optimizer", T::Choice(Optimizer::NAMES), json!("sgd"), "one shared optimizer (paper: SGD, momentum 0.9)"),
        ParamSpec::opt("momentum", T::Float { min: 0.0, max: 1.0 }, json!(0.9), "SGD momentum"),
        ParamSpec::opt("weight_decay", T::Float { min: 0.0, max: 10.0 }, json!(0.0), "AdamW decoupled weight decay"),
        ParamSpec::opt("clip", T::Float { min: 0.0, max: 1e9 }, json!(1.0), "global gradient-norm clip (0 = off)"),
        ParamSpec::opt("wrap_last", T::Bool, json!(true), "Scenic's cosine wrap: the last update uses the full peak LR"),
        ParamSpec::opt("total_steps", T::Int { min: 0, max: 1_000_000_000 }, json!(0), "override Σ U_j (0 = Σ U_j): the budgets are scaled to it (every task keeps ≥ 1 update while it allows) and the warmup by the same factor"),
        ParamSpec::opt("eval_every", T::Int { min: 0, max: 1_000_000_000 }, json!(0), "evaluate on val every N updates (0 = at the end)"),
        ParamSpec::opt(
            "checkpoint_every",
            T::Int { min: 0, max: 1_000_000_000 },
            json!(0),
            "resumable checkpoint every N updates (0 = off); not in the key: it changes no bit of the result",
        )
        .unkeyed(),
        ParamSpec::opt(
            "init_inflation",
            T::Choice(&["central", "average"]),
            json!("central"),
            "2D → 3D kernel inflation when initialising video from a ViT",
        ),
        ParamSpec::added(
            "precision",
            T::Choice(Precision::NAMES),
            json!("f32"),
            "matrix products of the blocks: f32, bf16 operands with f32 master weights (every backend), or f16 operands with dynamic loss scaling (off the fused CPU block: for GPUs without bf16)",
        ),
        ParamSpec::added(
            "micro_batch",
            T::Int { min: 0, max: 1_000_000 },
            json!(0),
            "gradient accumulation: forward/backward in slices of this many examples, one optimizer step per batch (0 = whole batch)",
        ),
        ParamSpec::added(
            "gpus",
            T::Int { min: 1, max: 1024 },
            json!(1),
            "data parallelism: the batch cut into this many shards, one model replica per GPU, gradients summed before one optimizer step (on the CPU backend the replicas take turns on the CPU)",
        ),
        ParamSpec::added(
            "activation_checkpointing",
            T::Bool,
            json!(false),
            "keep only each block's input for the backward pass and recompute its activations there (fused CPU block: same bits, ~1/3 more arithmetic, far less memory)",
        ),
    ];
    if multi {
        v.push(ParamSpec::opt(
            "schedule",
            T::Choice(SCHEDULES),
            json!("weighted"),
            "task sampling: task_by_task, alternating, uniform, weighted, accumulate",
        ));
        v.push(ParamSpec::opt(
            "schedule_seed",
            T::Int { min: 0, max: i64::MAX },
            json!(0),
            "seed of the schedule's permutation (Scenic: 0)",
        ));
        v.push(ParamSpec::opt(
            "accumulate",
            T::Choice(Accumulate::NAMES),
            json!("sum"),
            "accumulate: combine the task gradients by sum or mean",
        ));
    }
    v
}

fn opt_kind(p: &OptimParams) -> OptKind {
    match p.optimizer {
        Optimizer::Sgd => OptKind::Sgd { momentum: p.momentum },
        Optimizer::Adam => OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        Optimizer::AdamW => OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: p.weight_decay },
    }
}

struct Job<'a> {
    cfg: &'a RunConfig,
    tasks: Vec<TaskRun>,
    init: Option<BTreeMap<String, HostTensor>>,
    resume: Option<Resume>,
    progress: &'a (dyn Fn(Progress) + Sync),
    scratch: &'a Path,
}

impl BackendJob for Job<'_> {
    type Output = Result<Outcome, String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let progress = |done: usize, total: usize, message: String| {
            (self.progress)(Progress { done: done as u64, total: total as u64, message, note: false })
        };
        let scratch = self.scratch;
        let mut save = |r: &Resume| {
            if let Err(e) = save_resume(scratch, r) {
                tracing::warn!("cannot write resumable checkpoint: {e}");
            }
        };
        run::<B>(self.cfg, &self.tasks, self.init.as_ref(), self.resume, &devices, &progress, &mut save)
    }
}

fn save_resume(dir: &Path, r: &Resume) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut t = r.weights.clone();
    for (k, v) in &r.opt {
        t.insert(k.clone(), HostTensor { shape: vec![v.len()], data: v.clone() });
    }
    let mut meta = json!({"step": r.step, "opt_t": r.opt_t, "cursors": r.cursors, "steps": r.steps, "evals": r.evals});
    if let Some(s) = &r.loss_scale {
        meta["loss_scale"] = json!(s);
    }
    // Tensors first, then the JSON that makes them count (each on disk before its rename).
    crate::store::write_atomic(&dir.join("resume.safetensors"), &to_safetensors(&t), true)?;
    crate::store::write_atomic(&dir.join("resume.json"), &serde_json::to_vec(&meta)?, true)
}

fn load_resume(dir: &Path) -> Option<Resume> {
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("resume.json")).ok()?).ok()?;
    let t = from_safetensors(&std::fs::read(dir.join("resume.safetensors")).ok()?).ok()?;
    let mut weights = BTreeMap::new();
    let mut opt = vec![];
    for (k, v) in t {
        if k.starts_with("opt.") {
            opt.push((k, v.data))
        } else {
            weights.insert(k, v);
        }
    }
    Some(Resume {
        step: meta["step"].as_u64()? as usize,
        weights,
        opt,
        opt_t: meta["opt_t"].as_u64()? as usize,
        cursors: serde_json::from_value::<Vec<Cursor>>(meta["cursors"].clone()).ok()?,
        steps: serde_json::from_value(meta["steps"].clone()).ok()?,
        evals: serde_json::from_value(meta["evals"].clone()).ok()?,
        loss_scale: match meta.get("loss_scale") {
            Some(s) => Some(serde_json::from_value(s.clone()).ok()?),
            None => None,
        },
    })
}

impl TrainStage {
    fn slot(&self) -> &'static str {
        if self.multi {
            "tasks"
        } else {
            "task"
        }
    }

    fn tasks(&self, inputs: &BTreeMap<String, Vec<InputArtifact>>) -> Result<Vec<LoadedTask>, StageError> {
        inputs.get(self.slot()).into_iter().flatten().map(load_task).collect()
    }

    /// The node's parameters: [`CotrainParams`] for `cotrain`, [`TrainParams`] (as a single-task schedule) for
    /// `train`.
    fn read(&self, params: &Value) -> Result<CotrainParams, StageError> {
        if self.multi {
            parse(params)
        } else {
            parse::<TrainParams>(params).map(CotrainParams::from)
        }
    }
}

/// The run's backend is compiled into this polyflow; else a problem of the installation (a rebuild fixes it, or
/// another `--backend`; no parameter does), for the nodes that compute on it (`train`, `cotrain`, `features`).
pub fn backend_built(env: &BTreeMap<String, String>) -> Result<(), Problem> {
    let Ok(backend) = Backend::from_env(env) else { return Ok(()) };
    let built = crate::model::device::available();
    if built.contains(&backend.name()) {
        return Ok(());
    }
    Err(Problem::installation(
        "backend",
        format!(
            "`{}` (--backend or POLYFLOW_BACKEND) is not in this build (available: {}): build with `cargo install --path . --features {}`, or pick an available backend",
            backend.name(),
            built.join(", "),
            backend.name()
        ),
    )
    .local())
}

impl Stage for TrainStage {
    fn resume_point(&self, scratch: &Path) -> Option<String> {
        // The checkpoint's step, from its small JSON (the tensors are read by the run itself).
        let meta: Value = serde_json::from_slice(&std::fs::read(scratch.join("resume.json")).ok()?).ok()?;
        scratch.join("resume.safetensors").is_file().then(|| format!("update {}", meta["step"].as_u64().unwrap_or(0)))
    }
    fn kind(&self) -> &'static str {
        if self.multi {
            "cotrain"
        } else {
            "train"
        }
    }
    fn version(&self) -> u32 {
        // 2: SIMD/multi-threaded CPU kernels and tanh-GELU as x·σ(2z) change the float rounding.
        // 3: the fused CPU block (src/model/fused) and its own matrix product change the float rounding.
        // 4 (cotrain): `accumulate` warms up for the same share of its updates as the other schedules.
        // 5 (cotrain) / 4: the sigmoid loss's gradient at logits exactly 0 is σ(0) − t (`train::metrics::loss`;
        // it was 1 − t: a zero-initialized head's first update on a multi-label task). No other bit moves.
        // 6 (cotrain) / 5: the CPU's bits no longer depend on the CPU model: burn-flex's reductions, softmax and
        // LayerNorm in order (its `simd` feature off: it summed in as many lanes as the CPU had, AVX-512 or AVX2),
        // the linear layers outside the blocks on polyflow's product (`model::fused::linear`: the `gemm` crate
        // split its sums by the L1 cache's size), the final LayerNorm on the class tokens only, and the clip's
        // global norm summed in f64 (`model::fused::norm`: flex's f32 running sum drifted over large gradients).
        // 7 (cotrain) / 6: augmentation draws from a generator seeded by a mix of (seed, task, step)
        // (`train::batch::augment_seed`; seed replicates shared their draws, reordered), and a model from scratch
        // initialises q, k and v as three [D, D] Xavier kernels (`Init::xavier_uniform_parts`; one [D, 3D] before).
        // 8 (cotrain) / 7: `config.json` no longer holds `checkpoint_every` (outside the key: it changes no bit).
        // (+1 off the fused CPU block only: see `version_for`.)
        if self.multi {
            8
        } else {
            7
        }
    }
    fn version_for(&self, params: &Value, env: &BTreeMap<String, String>) -> u32 {
        // One more off the fused CPU block (another backend, or the erf GELU): CUDA with fusion and autotune,
        // the clip factor computed on the device, bf16 as autocast and inference through the backend's
        // attention change the rounding there. One more with `precision = "bf16"` on the fused CPU block: its
        // per-head attention products moved to bf16. The default CPU path (f32) keeps its keys and bits.
        // One more again for bf16 off the fused block: its evaluations run the explicit autocast-style attention
        // (before: the backend's attention on bf16 q, k, v, scaled after q·kᵀ, softmax in bf16).
        // One more on an accelerator: the flat optimizer update (`train::flat`) sums the global norm in another
        // order (f16 took it later, with the next bump).
        // One more on an accelerator: LayerNorm and softmax as polyflow's GPU kernels (`model::gpu_fused`).
        // One more on an accelerator: linear layers as one product over all tokens (`gpu_fused::linear`; before,
        // burn's batched product and a sum over the batch for the weights' gradients), and the attention's core as
        // one autodiff node (`gpu_fused::attention`), and LayerNorm's γ/β chunk sums in one kernel (another order).
        // One more on an accelerator in bf16 or f16: the attention node there too (the backward's softmax reads
        // the probabilities rounded to the half type). f16 on an accelerator takes the flat update as well now
        // (`SharedOptimizer::step_scaled_flat`; the norm summed in one reduction).
        // One more on an accelerator: evaluations fill their last batch up to the others' size
        // (`train::run::eval_batches`: one shape of every product, no partial batch tuned on its own); the same
        // bump retires what CUDA computed before polyflow's kernels allocated packed outputs (they wrote packed
        // rows into pitched tensors there: wrong values, `model::gpu_fused::kernels`).
        // One more on an accelerator: the flat update's gradient norm from polyflow's kernel (another summation
        // order; and burn's `sum` had counted only the first 262,132 gradients on wgpu, a wrong clip beyond:
        // `model::gpu_fused::squared_norm`), and in f32 the linear layers' bias gradients as polyflow's column
        // sums (`gpu_fused::linear_rows`).
        // One more on an accelerator: in bf16/f16 the linear layers' bias gradients as polyflow's column sums too
        // (summed in f32, rounded once to the half type; before, burn's reductions in the half type).
        // One more on an accelerator: the blocks on their tokens as rows (`Block::forward_rows`, the same values)
        // and the final LayerNorm on the class tokens only, whose γ/β gradients are then summed over fewer rows
        // (another order).
        // One more on an accelerator: the tanh GELU as polyflow's kernel (another rounding; in bf16/f16 from and to
        // the half type with no casts around it).
        // One more on an accelerator: a linear layer's input and weight gradients, and the attention core's
        // products both ways, as the backend's own products inside one operation each
        // (`GpuKernels::linear_backward`, `GpuKernels::attention_forward`/`attention_backward`; before, burn's
        // fused products, which may take another kernel), and the flat update as one kernel of polyflow's
        // (`gpu_fused::flat_update`; a GPU compiler may contract its multiplies and adds otherwise than burn's
        // fused composition). f32 inference keeps burn's attention, so features keep
        // their version. (Half working copies in bf16/f16, `SharedOptimizer::keep_half_copies`, and LayerNorm
        // writing the half type, `gpu_fused::layer_norm_to`, give the casts' bits and move nothing.)
        // (The loss as one node of polyflow's kernels on an accelerator, `gpu_fused::classification_loss`, another
        // summation order, and the heads as the linear node came with the base version's bump for the sigmoid's
        // gradient at 0, which every backend takes.)
        let off = off_fused_cpu(params, env);
        let precision = Arithmetic::of(params).precision();
        let bf16 = precision == Precision::Bf16;
        let half = precision != Precision::F32;
        let device = Backend::from_env(env).is_ok_and(Backend::holds_device);
        self.version() + u32::from(off || bf16) + u32::from(off && bf16) + 9 * u32::from(device) + u32::from(device && half)
    }
    fn doc(&self) -> &'static str {
        if self.multi {
            "co-train one PolyViT on several tasks (one task per minibatch, one shared optimizer)"
        } else {
            "train a single-task ViT baseline"
        }
    }
    fn output(&self) -> &'static str {
        "model"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        let main = if self.multi { InputSlot::many("tasks", &["task"]) } else { InputSlot::one("task", &["task"]) };
        vec![main, InputSlot::one("init", &["model", "weights"]).optional()]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = model_params();
        v.extend(optim_params(self.multi));
        v
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &crate::model::device::MODEL_ENV_KEYS
    }
    fn shown_key(&self, keyed: &mut Value) {
        super::modelspec::shown_size(keyed);
    }
    fn canonical_key(&self, keyed: &mut Value) {
        super::modelspec::canonical_size(keyed);
        // The settings of an optimizer not chosen change nothing: keyed at their defaults (the `effective` values
        // leave them out).
        let opt = keyed.get("optimizer").and_then(|o| o.as_str()).map(str::to_string);
        if opt.as_deref() != Some(Optimizer::Sgd.name()) {
            keyed["momentum"] = json!(0.9);
        }
        if opt.as_deref() != Some(Optimizer::AdamW.name()) {
            keyed["weight_decay"] = json!(0.0);
        }
    }
    fn env_for(&self, params: &Value, env: BTreeMap<String, String>) -> BTreeMap<String, String> {
        env_for_block(params, env)
    }
    fn follow_env(&self, _params: &Value, env: &BTreeMap<String, String>) -> Result<(), String> {
        follow_key_env(env)
    }
    fn resources(&self, params: &Value, env: &BTreeMap<String, String>) -> Resources {
        // One CPU slot, so that training nodes run side by side on the cores (`resources = { cpus = N }` gives
        // one node N threads for its kernels); on CUDA each holds one device per data-parallel replica (`gpus`).
        // An unknown backend holds none: `run` reports it.
        let replicas = Arithmetic::of(params).gpus.unwrap_or(1).max(1) as u32;
        Resources { cpu_slots: 1, devices: if Backend::from_env(env).is_ok_and(Backend::holds_device) { replicas } else { 0 } }
    }
    fn validate(&self, params: &Value) -> Result<(), (String, String)> {
        let specs = self.params();
        let (model, optim) = if self.multi {
            parse_checked::<CotrainParams>(params, &specs).map(|p| (p.model, p.optim))?
        } else {
            parse_checked::<TrainParams>(params, &specs).map(|p| (p.model, p.optim))?
        };
        model.check()?;
        match optim.fused_only().first() {
            Some((param, what, off)) if model.gelu == Gelu::Erf => Err((
                param.to_string(),
                format!("{what} runs in the fused CPU block, which has the tanh GELU only: set gelu = \"tanh\" or {off}"),
            )),
            Some((param, what, off)) if optim.precision == Precision::F16 => Err((
                param.to_string(),
                format!("{what} runs in the fused CPU block, which has no f16: set precision = \"bf16\" or \"f32\", or {off}"),
            )),
            _ => Ok(()),
        }
    }
    fn preflight_env(&self, params: &Value, env: &BTreeMap<String, String>) -> Result<(), Problem> {
        // An unknown backend or a precision that does not parse: `run` and `validate` report them.
        let arithmetic = Arithmetic::of(params);
        if let (Ok(backend), Some(precision)) = (Backend::from_env(env), arithmetic.precision) {
            // The report puts the parameter's name first: "`precision` = \"bf16\" is not available on …".
            backend
                .supports_precision(precision.name())
                .map_err(|m| Problem::from(("precision".to_string(), m.strip_prefix("precision ").unwrap_or(&m).to_string())))?;
        }
        if arithmetic.activation_checkpointing {
            let why = match Backend::from_env(env) {
                Ok(b) if b != Backend::Flex => Some(format!("runs on the CPU (flex) backend only in this version, not on `{b}`")),
                _ if env.contains_key(crate::model::device::CPU_BLOCK) => {
                    Some("needs the fused CPU block, which POLYFLOW_FUSED_CPU=0 turns off".to_string())
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(Problem::from((
                    "activation_checkpointing".to_string(),
                    format!("= true {why}: set activation_checkpointing = false, or run on the CPU with the fused block"),
                )));
            }
        }
        backend_built(env)
    }
    fn outline(&self, params: &Value, inputs: &BTreeMap<String, Vec<(String, Value)>>) -> Option<String> {
        let p = self.read(params).ok()?;
        let tasks = inputs.get(self.slot())?;
        let field = |t: &Value, k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let budgets: Vec<usize> = tasks.iter().map(|(_, t)| field(t, "steps")).collect();
        let total_steps = (p.optim.total_steps > 0).then_some(p.optim.total_steps);
        let groups: Vec<(usize, Option<&str>)> = tasks
            .iter()
            .map(|(_, t)| (field(t, "warmup"), t.get("warmup_group").and_then(Value::as_str).filter(|g| !g.is_empty())))
            .collect();
        let (updates, warmup) = crate::train::schedule::run_plan(p.schedule, &budgets, &groups, total_steps, p.schedule_seed);
        let total = updates.len();
        let mut counts = vec![0usize; tasks.len()];
        updates.iter().flatten().for_each(|&j| counts[j] += 1);
        let thousands = |n: usize| crate::tables::group_digits(n as u64);
        let kind = if self.multi { format!("{}, ", serde_json::to_value(p.schedule).ok()?.as_str()?) } else { String::new() };
        let mut text = format!(
            "schedule: {kind}{} updates, one global warmup of {} then a cosine to 0{}; the LR of an update is that schedule × the peak LR of its task",
            thousands(total),
            thousands(warmup),
            if p.optim.wrap_last { " (the last update at the full peak, Scenic's wrap)" } else { "" },
        );
        for (j, (id, t)) in tasks.iter().enumerate() {
            let share = 100.0 * counts[j] as f64 / total.max(1) as f64;
            text.push_str(&format!(
                "\n  {id}: {} updates ({share:.1} %), batch {}, peak LR {}, warmup {}{}",
                thousands(counts[j]),
                field(t, "batch_size"),
                t.get("lr").cloned().unwrap_or(Value::Null),
                thousands(field(t, "warmup")),
                t.get("warmup_group")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                    .map(|g| format!(" (group `{g}`: its largest counts once)"))
                    .unwrap_or_default(),
            ));
        }
        Some(text)
    }
    fn effective(&self, params: &Value, _inputs: &BTreeMap<String, Vec<(String, Value)>>) -> Option<Value> {
        if self.multi {
            parse::<CotrainParams>(params).ok().map(|p| effective(params, &p.model, &p.optim))
        } else {
            parse::<TrainParams>(params).ok().map(|p| effective(params, &p.model, &p.optim))
        }
    }
    fn report_slots(&self) -> &'static [&'static str] {
        if self.multi {
            &["tasks"]
        } else {
            &["task"]
        }
    }
    fn report(&self, params: &Value, inputs: &BTreeMap<String, Vec<InputArtifact>>) -> Option<Result<Value, StageError>> {
        Some((|| {
            let p = self.read(params)?;
            let tasks = self.tasks(inputs)?;
            let refs: Vec<_> = tasks.iter().map(|t| (&t.spec, t.shape)).collect();
            let cfg = model_config(&p.model, &refs)?;
            Ok(serde_json::to_value(count(&cfg)).unwrap_or_default())
        })())
    }
    fn report_declared(&self, params: &Value, inputs: &BTreeMap<String, Vec<Value>>) -> Option<Result<Value, StageError>> {
        let tasks = inputs.get(self.slot())?;
        // A task whose class count is not declared: the heads' sizes are known once its data is read.
        if tasks.iter().any(|t| t["spec"]["classes"].as_array().is_none_or(Vec::is_empty)) {
            return None;
        }
        Some(self.read(params).and_then(|p| declared_count(&p.model, tasks)))
    }
    fn declare(&self, params: &Value, _base: &Path, inputs: &BTreeMap<String, Vec<Value>>) -> Option<Value> {
        // The model it will train (`{"model": ModelConfig}`), from its tasks' declarations: lets a node that
        // starts from it (`init`, a `features` node's `model`) be checked before this one trains for hours.
        let (tasks, p) = (inputs.get(self.slot())?, self.read(params).ok()?);
        Some(json!({"model": declared_config(&p.model, tasks).ok()?}))
    }
    fn check_declared(&self, params: &Value, inputs: &BTreeMap<String, Vec<Value>>) -> Result<(), Problem> {
        // Parameters that do not parse are validation's to report.
        let (Some(tasks), Ok(p)) = (inputs.get(self.slot()), self.read(params)) else { return Ok(()) };
        // A size that does not hold together (width not divisible by the heads) is the parameters' fault, not the
        // tasks'.
        let cfg = declared_config(&p.model, tasks).map_err(|e| {
            let at = if e.message.contains("divisible by heads") { "heads" } else { self.slot() };
            Problem::installation(at, e.message)
        })?;
        check_init_fits(&cfg, inputs)
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p = self.read(ctx.params)?;
        let backend = Backend::from_env(ctx.env).map_err(StageError::input)?;
        let (m, o) = (&p.model, &p.optim);
        if let Some((_, what, off)) = o.fused_only().first().filter(|_| backend != Backend::Flex) {
            return Err(StageError::input(format!(
                "{what} runs on the CPU (flex) backend only in this version, not on `{backend}`: use --backend flex or {off}"
            )));
        }
        if o.activation_checkpointing && backend == Backend::Flex && !crate::model::fused::enabled() {
            return Err(StageError::input(
                "activation_checkpointing = true needs the fused CPU block, which POLYFLOW_FUSED_CPU=0 turned off: \
                 set activation_checkpointing = false, or run with the fused block"
                    .to_string(),
            ));
        }
        if o.precision == Precision::Bf16 {
            backend.supports_precision("bf16").map_err(StageError::input)?;
        }
        let tasks = self.tasks(&ctx.inputs)?;
        let refs: Vec<_> = tasks.iter().map(|t| (&t.spec, t.shape)).collect();
        let model = model_config(m, &refs)?;
        let cfg = RunConfig {
            model: model.clone(),
            schedule: p.schedule,
            total_steps: (o.total_steps > 0).then_some(o.total_steps),
            schedule_seed: p.schedule_seed,
            optimizer: opt_kind(o),
            clip: (o.clip > 0.0).then_some(o.clip),
            wrap_last: o.wrap_last,
            accumulate_mean: p.accumulate == Accumulate::Mean,
            eval_every: o.eval_every,
            checkpoint_every: o.checkpoint_every,
            seed: ctx.seed(),
            eval_batch: 256,
            bf16: o.precision == Precision::Bf16,
            f16: o.precision == Precision::F16,
            loss_scale_init: None,
            micro_batch: o.micro_batch,
            replicas: o.gpus,
            recompute: o.activation_checkpointing,
            // The CPU reads every update (its bits as before); accelerators queue updates ahead.
            deferred_reads: (backend != Backend::Flex).then(crate::train::run::deferred_reads_from_env),
            f32_params: false,
        };
        // The fused CPU block's bf16 products (off it, burn's casts run instead).
        if cfg.bf16 && !off_fused_cpu(ctx.params, ctx.env) {
            let kernel = crate::model::fused::kernels::bf16::kernel();
            use crate::model::fused::kernels::bf16::Kernel;
            if matches!(kernel, Kernel::EmulatedAvx2 | Kernel::EmulatedPortable) {
                tracing::warn!(
                    "precision = \"bf16\": the bf16 products run as an emulation ({}; no AVX512-BF16 on this CPU, or POLYFLOW_BF16=emulate): the same bits, slower than f32",
                    kernel.name()
                );
            }
        }
        if cfg.f16 && backend == Backend::Flex {
            tracing::warn!(
                "precision = \"f16\" on the CPU runs burn's composition in f16, far slower than f32 or bf16 here: it is meant for GPUs without bf16"
            );
        }
        let init = match ctx.inputs.get("init").and_then(|v| v.first()) {
            None => None,
            Some(a) if a.has("model.safetensors") => Some(encoder_of(a, &model)?),
            Some(a) => {
                let timm = from_safetensors(&a.read("weights.safetensors")?).map_err(StageError::input)?;
                Some(from_timm(&timm, &model, o.init_inflation).map_err(|e| StageError::input(format!("init from `{}`: {e}", a.id)))?)
            }
        };
        let resume = load_resume(&ctx.scratch);
        if let Some(r) = &resume {
            ctx.note(format!("resuming from an interrupted run's checkpoint at update {} (the same bits as an uninterrupted run)", r.step));
        } else if ctx.scratch.join("resume.json").exists() {
            ctx.note(format!(
                "an interrupted run's checkpoint in {} cannot be read (damaged or cut short): training from the start",
                ctx.scratch.display()
            ));
        }
        let job = Job {
            cfg: &cfg,
            tasks: tasks.iter().map(|t| t.run.clone()).collect(),
            init,
            resume,
            progress: ctx.progress,
            scratch: &ctx.scratch,
        };
        let out = backend.dispatch_on(job, &ctx.devices).map_err(StageError::input)?.map_err(StageError::failed)?;
        // Which pretrained checkpoint it started from (its node and content digest), for `show` and provenance.
        let pretrained = ctx
            .inputs
            .get("init")
            .and_then(|v| v.first())
            .filter(|a| !a.has("model.safetensors"))
            // Content only: the `weights` node's id is not in the key, so it is not in the bytes either (models
            // written before this name it as `node`; `describe` reads both).
            .map(|a| json!({"artifact": a.manifest.digest, "checkpoint_digest": a.manifest.files.get("weights.safetensors").map(|f| &f.digest)}));
        write_model(ctx, &cfg, &tasks, &out, pretrained)
    }
    fn describe(&self, a: &InputArtifact, _out: &Path) -> Result<String, StageError> {
        let m: Value = a.json("metrics.json")?;
        let mut text = serde_json::to_string_pretty(&m).unwrap_or_default();
        if let Some(p) = a.json::<Value>("config.json").ok().and_then(|c| c.get("pretrained").cloned()) {
            let digest = p["checkpoint_digest"].as_str().unwrap_or("?");
            let from = p["node"].as_str().map_or_else(|| "a pretrained checkpoint".to_string(), |n| format!("`{n}`"));
            text = format!("initialised from {from} (checkpoint blake3 {})\n{text}", &digest[..16.min(digest.len())]);
        }
        Ok(text)
    }
}

/// The encoder of a trained `model` artifact mapped onto `model`: shared blocks and final norm as they are, each
/// modality's tokenizer (and adapters) moved to that modality's index in `model`, tokenizers of modalities
/// `model` lacks and every task head dropped (a new task starts from a fresh head, as in MBT-style transfer).
fn encoder_of(a: &InputArtifact, model: &crate::model::ModelConfig) -> Result<BTreeMap<String, HostTensor>, StageError> {
    let conf: Value = a.json("config.json")?;
    let old: crate::model::ModelConfig =
        serde_json::from_value(conf["model"].clone()).map_err(|e| StageError::failed(format!("`{}` config.json: {e}", a.id)))?;
    crate::model::transfer::encoder_fits(&old, model)
        .map_err(|e| StageError::input(format!("init from the trained model `{}`: {e}", a.id)))?;
    let w = from_safetensors(&a.read("model.safetensors")?).map_err(StageError::failed)?;
    let mut out = BTreeMap::new();
    for (k, v) in w {
        if k.starts_with("heads.") {
            continue;
        }
        let k2 = match k.strip_prefix("tokenizers.") {
            Some(rest) => {
                let (i, tail) = rest.split_once('.').unwrap_or((rest, ""));
                let m = old.geometry.get(i.parse::<usize>().unwrap_or(usize::MAX)).map(|g| g.0);
                match m.and_then(|m| model.geometry.iter().position(|(k, _)| *k == m)) {
                    Some(ni) => format!("tokenizers.{ni}.{tail}"),
                    None => continue,
                }
            }
            None => k,
        };
        out.insert(k2, v);
    }
    Ok(out)
}

/// Parameter counts of the model that `params` builds for tasks known only by their declarations
/// (`{"spec": TaskSpec, "shape": [C, T, H, W]}`), e.g. the paper's nine tasks before any data exists.
pub fn declared_count(params: &ModelParams, tasks: &[Value]) -> Result<Value, StageError> {
    Ok(serde_json::to_value(count(&declared_config(params, tasks)?)).unwrap_or_default())
}

/// The model `params` builds for tasks known only by their declarations (see [`declared_count`]).
pub fn declared_config(params: &ModelParams, tasks: &[Value]) -> Result<ModelConfig, StageError> {
    let mut specs = vec![];
    for (i, d) in tasks.iter().enumerate() {
        let mut spec: crate::stages::task::TaskSpec =
            serde_json::from_value(d["spec"].clone()).map_err(|e| StageError::failed(format!("task declaration: {e}")))?;
        if spec.name.is_empty() {
            // Named by its node where the declaration says it (see `graph::declared_inputs`).
            spec.name = d["node"].as_str().map_or_else(|| format!("task{i}"), String::from);
        }
        let shape: [usize; 4] = serde_json::from_value(d["shape"].clone()).map_err(|e| StageError::failed(format!("task shape: {e}")))?;
        specs.push((spec, shape));
    }
    let refs: Vec<_> = specs.iter().map(|(s, sh)| (s, *sh)).collect();
    model_config(params, &refs)
}

/// Whether what an `init` input declares fits `cfg`, the model built from the declared tasks: a `weights` node's
/// checkpoint (`{"vit": VitInfo}`) or the encoder of a training node's model (`{"model": ModelConfig}`, as
/// [`crate::model::transfer::encoder_fits`] checks it when the node runs). A [`Problem`] of `init` where it does
/// not fit; no check where nothing is declared.
pub fn check_init_fits(cfg: &ModelConfig, inputs: &BTreeMap<String, Vec<Value>>) -> Result<(), Problem> {
    let Some(d) = inputs.get("init").and_then(|v| v.first()) else { return Ok(()) };
    if let Ok(info) = serde_json::from_value::<VitInfo>(d["vit"].clone()) {
        return fits(&info, cfg)
            .map_err(|e| Problem::installation("init", format!("(the pretrained checkpoint) does not fit the model: {e}")));
    }
    match serde_json::from_value::<ModelConfig>(d["model"].clone()) {
        Ok(old) => crate::model::transfer::encoder_fits(&old, cfg)
            .map_err(|e| Problem::installation("init", format!("(the trained model) does not fit this model: {e}"))),
        Err(_) => Ok(()),
    }
}

fn write_model(
    ctx: &mut StageCtx<'_>,
    cfg: &RunConfig,
    tasks: &[LoadedTask],
    out: &Outcome,
    pretrained: Option<Value>,
) -> Result<(), StageError> {
    ctx.out.put("model.safetensors", &to_safetensors(&out.weights))?;
    let mut conf = json!({"model": cfg.model, "run": cfg});
    if let Some(p) = pretrained {
        conf["pretrained"] = p;
    }
    ctx.out.put_json("config.json", &conf)?;
    let mut per = serde_json::Map::new();
    for (j, t) in tasks.iter().enumerate() {
        let mut e = serde_json::Map::new();
        for ev in out.evals.iter().filter(|e| e.task == t.spec.name && (e.step == out.steps.len().max(1) || e.split == "test")) {
            e.insert(ev.split.clone(), json!(ev.metrics));
        }
        e.insert("steps".into(), json!(out.steps_per_task[j]));
        per.insert(t.spec.name.clone(), Value::Object(e));
    }
    let c = count(&cfg.model);
    ctx.out.put_json(
        "metrics.json",
        &json!({"tasks": per, "models": 1, "params": c.total, "param_counts": c, "schedule": cfg.schedule, "updates": out.steps.len()}),
    )?;
    let jsonl = |v: Vec<String>| v.join("\n") + "\n";
    ctx.out.put("steps.jsonl", jsonl(out.steps.iter().map(|s| serde_json::to_string(s).unwrap()).collect()).as_bytes())?;
    ctx.out.put("evals.jsonl", jsonl(out.evals.iter().map(|s| serde_json::to_string(s).unwrap()).collect()).as_bytes())?;
    let svg = super::plot::curves(out, &tasks.iter().map(|t| t.spec.name.clone()).collect::<Vec<_>>());
    ctx.out.put("curves.svg", svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::TrainStage;
    use crate::stage::Stage;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// On CUDA a training node holds one device per replica (the default of its `resources.gpus`, hence
    /// `--gres=gpu:N` on Slurm); on the CPU it holds none, however many replicas.
    #[test]
    fn a_node_holds_a_device_per_replica_on_cuda_only() {
        let env = |b: &str| BTreeMap::from([("backend".to_string(), b.to_string())]);
        for multi in [false, true] {
            let s = TrainStage { multi };
            assert_eq!(s.resources(&json!({}), &env("cuda")).devices, 1);
            assert_eq!(s.resources(&json!({"gpus": 4}), &env("cuda")).devices, 4);
            assert_eq!(s.resources(&json!({"gpus": 4}), &env("flex")).devices, 0);
            assert_eq!(s.resources(&json!({"gpus": 4}), &env("tpu")).devices, 0);
        }
    }

    /// Activation checkpointing off the fused CPU block (another backend, `POLYFLOW_FUSED_CPU=0`) is a settings
    /// problem found before anything runs, named by its parameter.
    #[test]
    fn checkpointing_off_the_fused_block_is_refused_before_running() {
        let s = TrainStage { multi: false };
        let p = json!({"activation_checkpointing": true});
        let flex = BTreeMap::from([("backend".to_string(), "flex".to_string())]);
        assert!(s.preflight_env(&p, &flex).is_ok());
        let mut off = flex.clone();
        off.insert(crate::model::device::CPU_BLOCK.to_string(), "composed".to_string());
        let e = s.preflight_env(&p, &off).unwrap_err();
        assert!(e.param == "activation_checkpointing" && e.msg.contains("POLYFLOW_FUSED_CPU=0"), "{e:?}");
        assert!(s.preflight_env(&json!({}), &off).is_ok());
        let wgpu = BTreeMap::from([("backend".to_string(), "wgpu".to_string())]);
        let e = s.preflight_env(&p, &wgpu).unwrap_err();
        assert!(e.msg.contains("not on `wgpu`"), "{e:?}");
    }

    /// The `cpu_block` entry (`POLYFLOW_FUSED_CPU=0`) stays in the keys of nodes the fused block would run,
    /// and leaves those that never use it (erf GELU, f16), which keep one key either way.
    #[test]
    fn the_cpu_block_entry_only_keys_nodes_the_fused_block_runs() {
        let env = BTreeMap::from([
            ("backend".to_string(), "flex".to_string()),
            (crate::model::device::CPU_BLOCK.to_string(), "composed".to_string()),
        ]);
        let stages: [Box<dyn Stage>; 2] = [Box::new(TrainStage { multi: false }), Box::new(crate::stages::probe::FeaturesStage)];
        for s in &stages {
            let kept = |p| s.env_for(&p, env.clone()).contains_key(crate::model::device::CPU_BLOCK);
            assert!(kept(json!({})) && kept(json!({"precision": "bf16"})), "{}", s.kind());
            assert!(!kept(json!({"gelu": "erf"})) && !kept(json!({"precision": "f16"})), "{}", s.kind());
        }
    }

    /// The `bf16_kernel` entry (set on AMX machines) keys only bf16 nodes of the fused CPU block: f32, f16, the erf
    /// GELU, another backend and burn's composition keep the keys they have on every other machine.
    #[test]
    fn the_bf16_kernel_entry_only_keys_bf16_nodes_of_the_fused_block() {
        let env = |extra: &[(&str, &str)]| {
            let mut e = BTreeMap::from([
                ("backend".to_string(), "flex".to_string()),
                (crate::model::device::BF16_KERNEL.to_string(), "AMX-BF16".to_string()),
            ]);
            e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            e
        };
        let stages: [Box<dyn Stage>; 2] = [Box::new(TrainStage { multi: true }), Box::new(crate::stages::probe::FeaturesStage)];
        for s in &stages {
            assert!(s.env_keys().contains(&crate::model::device::BF16_KERNEL), "{}", s.kind());
            let kept = |p: serde_json::Value, e: BTreeMap<String, String>| s.env_for(&p, e).contains_key(crate::model::device::BF16_KERNEL);
            assert!(kept(json!({"precision": "bf16"}), env(&[])), "{}", s.kind());
            for p in [json!({}), json!({"precision": "f32"}), json!({"precision": "f16"}), json!({"precision": "bf16", "gelu": "erf"})] {
                assert!(!kept(p.clone(), env(&[])), "{} {p}", s.kind());
            }
            assert!(!kept(json!({"precision": "bf16"}), env(&[(crate::model::device::CPU_BLOCK, "composed")])), "{}", s.kind());
            assert!(!kept(json!({"precision": "bf16"}), env(&[("backend", "cuda")])), "{}", s.kind());
        }
    }

    /// A checkpoint's file keeps an f16 run's loss scaler (and f32 runs write none).
    #[test]
    fn checkpoints_keep_the_loss_scaler() {
        let d = tempfile::tempdir().unwrap();
        let steps = vec![crate::train::run::StepLog {
            step: 1,
            tasks: vec!["a".into()],
            loss: 2.0,
            lr: 0.1,
            grad_norm: f64::INFINITY,
            loss_scale: Some(65536.0),
            skipped: true,
        }];
        let scaler = crate::train::optim::LossScaler { scale: 32768.0, good: 7 };
        let r = crate::train::run::Resume { step: 1, opt_t: 0, steps, loss_scale: Some(scaler), ..Default::default() };
        super::save_resume(d.path(), &r).unwrap();
        let back = super::load_resume(d.path()).expect("a checkpoint");
        assert_eq!(back.loss_scale, Some(scaler));
        assert_eq!(back.steps, r.steps, "the skipped update's infinite norm comes back");
        let f32_run = crate::train::run::Resume { step: 1, ..Default::default() };
        super::save_resume(d.path(), &f32_run).unwrap();
        assert!(!std::fs::read_to_string(d.path().join("resume.json")).unwrap().contains("loss_scale"));
        assert_eq!(super::load_resume(d.path()).unwrap().loss_scale, None);
    }

    /// The version in the key moves only off the fused CPU block (another backend, or the erf GELU): the
    /// default CPU path keeps its keys; training and features alike.
    #[test]
    fn versions_move_only_off_the_fused_cpu_block() {
        let env = |b: &str| BTreeMap::from([("backend".to_string(), b.to_string())]);
        let stages: [Box<dyn Stage>; 3] =
            [Box::new(TrainStage { multi: false }), Box::new(TrainStage { multi: true }), Box::new(crate::stages::probe::FeaturesStage)];
        for s in &stages {
            let v = s.version();
            assert_eq!(s.version_for(&json!({}), &env("flex")), v, "{}", s.kind());
            assert_eq!(s.version_for(&json!({"gelu": "tanh"}), &BTreeMap::new()), v, "{}", s.kind());
            assert_eq!(s.version_for(&json!({"gelu": "erf"}), &env("flex")), v + 1, "{}", s.kind());
        }
        assert_eq!(stages[2].version_for(&json!({}), &env("cuda")), stages[2].version() + 5, "features: no optimizer");
        for multi in [false, true] {
            let s = TrainStage { multi };
            let v = s.version();
            assert_eq!(s.version_for(&json!({"precision": "f32"}), &env("flex")), v);
            assert_eq!(s.version_for(&json!({"precision": "bf16"}), &env("flex")), v + 1);
            // On an accelerator one more for the flat optimizer update, except f16 (the per-tensor update), and
            // one more for the GPU LayerNorm and softmax kernels, one more for the flattened linear layers, one
            // more for evaluation batches of one size, one more for the gradient norm from polyflow's kernel, one
            // more for the half bias gradients as polyflow's column sums, one more for the
            // blocks on token rows, one more for the GELU kernel, one more for the linear layers' backward operation.
            assert_eq!(s.version_for(&json!({}), &env("cuda")), v + 10);
            assert_eq!(s.version_for(&json!({}), &env("wgpu")), v + 10);
            assert_eq!(s.version_for(&json!({"precision": "f16"}), &env("cuda")), v + 11);
            assert_eq!(s.version_for(&json!({"precision": "bf16"}), &env("cuda")), v + 12);
            assert_eq!(s.version_for(&json!({"precision": "bf16", "gelu": "erf"}), &env("flex")), v + 2);
            assert_eq!(s.version_for(&json!({"precision": "f16"}), &env("flex")), v + 1, "f16 runs off the fused block");
        }
    }
}
