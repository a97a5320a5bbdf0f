//! `task`: one task's hyperparameters (reused unchanged by its single-task baseline and every co-training run,
//! as in the paper), bundled with its data. The artifact links the data blobs (no copy) and adds `task.json`,
//! so changing one task's LR re-runs exactly what trains on that task.

use crate::data::tensors::Meta;
use crate::stage::{choice_enum, parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use crate::train::batch::Augment;
use crate::train::metrics::Loss;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// The contents of `task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Task name (the node id).
    pub name: String,
    /// `image`, `audio` or `video`.
    pub modality: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Multi-label.
    pub multilabel: bool,
    /// Loss.
    pub loss: Loss,
    /// Minibatch size.
    pub batch_size: usize,
    /// Step budget U_j.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Warmup group: tasks of one group share one warmup in co-training (empty = the task's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warmup_group: String,
    /// With `augment.inception_crop`: the crop window sampler (`tf_generate_random_crop`), so models trained with
    /// another sampler are not taken for these (absent otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crop_sampler: String,
    /// Augmentation.
    pub augment: Augment,
    /// Stochastic depth rate.
    pub droplayer: f64,
    /// Head init: `zero` or `lecun_normal`.
    pub head_init: String,
    /// Report mAP.
    pub map: bool,
}

/// `task`.
pub struct TaskStage;

choice_enum! {
    /// A task's `loss` parameter.
    enum LossChoice {
        /// The paper's choice: sigmoid for images and multi-label data, softmax otherwise.
        Auto = "auto",
        /// Softmax cross-entropy.
        Softmax = "softmax",
        /// Sigmoid binary cross-entropy.
        Sigmoid = "sigmoid",
    }
}

choice_enum! {
    /// A task's `head_init` parameter.
    enum HeadChoice {
        /// Zero for audio and video, LeCun-normal for images (the paper).
        Auto = "auto",
        /// Zero.
        Zero = "zero",
        /// LeCun-normal.
        LecunNormal = "lecun_normal",
    }
}

/// The parameters of a `task` node (see [`TaskStage::params`] for each one's meaning).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParams {
    steps: usize,
    batch_size: usize,
    lr: f64,
    warmup: usize,
    warmup_group: String,
    loss: LossChoice,
    head_init: HeadChoice,
    augment: Augment,
    droplayer: f64,
    map: bool,
}

/// A task's spec from its parameters and its data's modality, classes and label kind.
fn task_spec(name: &str, p: &TaskParams, modality: &str, classes: Vec<String>, multilabel: bool) -> TaskSpec {
    let loss = match p.loss {
        LossChoice::Softmax => Loss::Softmax,
        LossChoice::Sigmoid => Loss::Sigmoid,
        LossChoice::Auto if modality == "image" || multilabel => Loss::Sigmoid,
        LossChoice::Auto => Loss::Softmax,
    };
    let head_init = match p.head_init {
        HeadChoice::Auto if modality == "image" => HeadChoice::LecunNormal,
        HeadChoice::Auto => HeadChoice::Zero,
        other => other,
    };
    TaskSpec {
        name: name.to_string(),
        modality: modality.to_string(),
        classes,
        multilabel,
        loss,
        batch_size: p.batch_size,
        steps: p.steps,
        lr: p.lr,
        warmup: p.warmup,
        warmup_group: p.warmup_group.clone(),
        augment: p.augment,
        crop_sampler: if p.augment.inception_crop { "tf_generate_random_crop".into() } else { String::new() },
        droplayer: p.droplayer,
        head_init: head_init.name().to_string(),
        map: p.map || multilabel,
    }
}

impl Stage for TaskStage {
    fn kind(&self) -> &'static str {
        "task"
    }
    fn id_in_output(&self) -> bool {
        // `task.json` names the task by its node id, and models report their metrics under it.
        true
    }
    fn version(&self) -> u32 {
        1
    }
    fn version_for(&self, params: &serde_json::Value, _env: &std::collections::BTreeMap<String, String>) -> u32 {
        // 2, only for tasks with `inception_crop`: the crop's window sampler became TF's `GenerateRandomCrop`
        // line for line (other windows than before) and `task.json` names it, so these tasks and the models
        // trained on them recompute; other tasks keep their keys and artifacts.
        // Parameters that do not parse keep the kind's version (validation reports them).
        if parse::<TaskParams>(params).is_ok_and(|p| p.augment.inception_crop) {
            2
        } else {
            self.version()
        }
    }
    fn doc(&self) -> &'static str {
        "a task: its data plus its hyperparameters (steps U_j, batch, peak LR, loss, head init, augmentation)"
    }
    fn output(&self) -> &'static str {
        "task"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("data", &["tensors"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("steps", T::Int { min: 1, max: 100_000_000 }, "step budget U_j of the single-task baseline"),
            ParamSpec::opt("batch_size", T::Int { min: 1, max: 65536 }, json!(32), "minibatch size"),
            ParamSpec::opt("lr", T::Float { min: 0.0, max: 100.0 }, json!(0.03), "peak learning rate"),
            ParamSpec::opt(
                "warmup",
                T::Int { min: 0, max: 100_000_000 },
                json!(0),
                "warmup steps; co-training warms up for the sum over tasks, a warmup_group counting once",
            ),
            ParamSpec::opt(
                "warmup_group",
                T::Str,
                json!(""),
                "tasks naming one group share one warmup (its largest) when co-trained: Scenic's image tasks share 500 steps",
            ),
            ParamSpec::opt(
                "loss",
                T::Choice(LossChoice::NAMES),
                json!("auto"),
                "auto = the paper's choice: sigmoid for images and multi-label, softmax otherwise",
            ),
            ParamSpec::opt(
                "head_init",
                T::Choice(HeadChoice::NAMES),
                json!("auto"),
                "auto = zero for audio/video, LeCun-normal for images (the paper)",
            ),
            ParamSpec::opt(
                "augment",
                T::Table,
                json!({}),
                "crop_pad, flip, inception_crop, scale_jitter = [lo, hi], color, grayscale (probabilities), freq_masks, freq_mask_width, time_masks, time_mask_width, mixup",
            ),
            ParamSpec::opt(
                "droplayer",
                T::Float { min: 0.0, max: 1.0 },
                json!(0.0),
                "stochastic depth rate (paper: 0.3 for its audio tasks)",
            ),
            ParamSpec::opt("map", T::Bool, json!(false), "also report mAP (always for multi-label data)"),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        let p: TaskParams = parse_checked(params, &self.params()).map_err(|(k, e)| {
            if k == "augment" {
                (k, format!("bad augmentation option: {e}"))
            } else {
                (k, e)
            }
        })?;
        p.augment.check().map_err(|e| ("augment".into(), e))
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn canonical_key(&self, keyed: &mut serde_json::Value) {
        crate::stage::canonical_option_table::<crate::train::batch::Augment>(keyed, "augment");
    }
    fn declare(
        &self,
        params: &serde_json::Value,
        _base: &std::path::Path,
        inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // Only the shape and class count are declared: class names are placeholders until the data is read, and
        // `classes` is empty where the dataset does not declare its count (the geometry is still known).
        let d = inputs.get("data")?.first()?;
        let n = d["classes"].as_u64()? as usize;
        let classes: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        // Parameters that do not parse declare nothing (validation reports them).
        let spec = task_spec("", &parse(params).ok()?, d["modality"].as_str()?, classes, d["multilabel"].as_bool()?);
        Some(json!({"spec": spec, "shape": d["shape"].clone()}))
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: TaskParams = parse(ctx.params)?;
        let data = ctx.input("data")?.clone();
        let meta: Meta = data.json("meta.json")?;
        let spec = task_spec(ctx.id, &p, &meta.modality, meta.classes.clone(), meta.multilabel);
        for f in data.manifest.files.keys().cloned().collect::<Vec<_>>() {
            ctx.out.link(&f, &data, &f)?;
        }
        ctx.out.put_json("task.json", &spec)
    }
    fn describe(&self, a: &crate::stage::InputArtifact, out: &std::path::Path) -> Result<String, StageError> {
        let spec: TaskSpec = a.json("task.json")?;
        Ok(format!("{}\n{}", serde_json::to_string_pretty(&spec).unwrap_or_default(), super::datautil::describe(a, out)?))
    }
}
