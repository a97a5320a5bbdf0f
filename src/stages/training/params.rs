//! The parameters of `train` and `cotrain` as typed settings: the optimizer, the arithmetic, the schedule.

use crate::model::import::Inflation;
use crate::stage::{choice_enum, ParamSpec, ParamType as T};
use crate::stages::modelspec::{Gelu, ModelParams};
use crate::train::optim::OptKind;
use crate::train::schedule::{Schedule, SCHEDULES};
use serde::Deserialize;
use serde_json::{json, Value};

choice_enum! {
    /// The shared optimizer.
    pub(super) enum Optimizer {
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
    pub(super) enum Accumulate {
        /// Their sum.
        Sum = "sum",
        /// Their mean.
        Mean = "mean",
    }
}

choice_enum! {
    /// The arithmetic of the blocks' matrix products.
    pub(super) enum Precision {
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
pub(super) struct OptimParams {
    pub(super) optimizer: Optimizer,
    pub(super) momentum: f64,
    pub(super) weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub(super) clip: f64,
    pub(super) wrap_last: bool,
    /// Σ U_j override (0 = Σ U_j).
    pub(super) total_steps: usize,
    pub(super) eval_every: usize,
    pub(super) checkpoint_every: usize,
    pub(super) init_inflation: Inflation,
    /// Added after nodes were cached ([`ParamSpec::added`]): absent at its default.
    #[serde(default = "f32_precision")]
    pub(super) precision: Precision,
    /// Gradient accumulation slice (0 = the whole batch); added later, absent at its default.
    #[serde(default)]
    pub(super) micro_batch: usize,
    /// Data-parallel replicas (one per GPU); added later, absent at its default.
    #[serde(default = "one")]
    pub(super) gpus: usize,
    /// Activation checkpointing; added later, absent at its default (off).
    #[serde(default)]
    pub(super) activation_checkpointing: bool,
}

/// The settings of a model-bearing node (`train`, `cotrain`, `probe`) that decide its arithmetic and devices, read
/// from its parameters as they are (a probe's have no `precision`: absent is the default). A value that does not
/// parse reads as the default here: `validate` reports it before anything runs.
#[derive(Deserialize, Default)]
pub(super) struct Arithmetic {
    #[serde(default)]
    pub(super) precision: Option<Precision>,
    #[serde(default)]
    pub(super) gelu: Option<Gelu>,
    #[serde(default)]
    pub(super) gpus: Option<usize>,
    #[serde(default)]
    pub(super) activation_checkpointing: bool,
}

impl Arithmetic {
    pub(super) fn of(params: &Value) -> Self {
        Self::deserialize(params).unwrap_or_default()
    }
    pub(super) fn precision(&self) -> Precision {
        self.precision.unwrap_or(Precision::F32)
    }
}

pub(super) fn one() -> usize {
    1
}

impl OptimParams {
    /// The options set here that only the fused CPU block implements: `(parameter, as written, its off value)`.
    /// (`precision = "bf16"` is not one: every backend runs it, the fused block with its own kernels.)
    pub(super) fn fused_only(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut v = vec![];
        if self.activation_checkpointing {
            v.push(("activation_checkpointing", "activation_checkpointing = true", "activation_checkpointing = false"));
        }
        v
    }
}

pub(super) fn f32_precision() -> Precision {
    Precision::F32
}

/// `params` as a training node uses them: the size resolved, and the settings of optimizers not chosen left out.
pub(super) fn effective(params: &Value, model: &ModelParams, optim: &OptimParams) -> Value {
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
pub(super) struct TrainParams {
    #[serde(flatten)]
    pub(super) model: ModelParams,
    #[serde(flatten)]
    pub(super) optim: OptimParams,
}

/// The parameters of a `cotrain` node: those of `train` and the task schedule. (Not a flattened
/// [`TrainParams`]: a flattened struct that itself flattens refuses the keys it does not know.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CotrainParams {
    #[serde(flatten)]
    pub(super) model: ModelParams,
    #[serde(flatten)]
    pub(super) optim: OptimParams,
    pub(super) schedule: Schedule,
    pub(super) schedule_seed: u64,
    pub(super) accumulate: Accumulate,
}

impl From<TrainParams> for CotrainParams {
    /// A single-task run: every update trains its one task (`weighted`, seed 0, summed).
    fn from(p: TrainParams) -> Self {
        CotrainParams { model: p.model, optim: p.optim, schedule: Schedule::Weighted, schedule_seed: 0, accumulate: Accumulate::Sum }
    }
}

pub(super) fn optim_params(multi: bool) -> Vec<ParamSpec> {
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

pub(super) fn opt_kind(p: &OptimParams) -> OptKind {
    match p.optimizer {
        Optimizer::Sgd => OptKind::Sgd { momentum: p.momentum },
        Optimizer::Adam => OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        Optimizer::AdamW => OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: p.weight_decay },
    }
}
