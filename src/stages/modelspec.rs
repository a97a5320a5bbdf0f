//! Shared by the model-bearing kinds: model parameters → [`ModelConfig`], tasks loaded from `task`
//! artifacts, and backend dispatch.

use super::task::TaskSpec;
use crate::model::{Geometry, HeadInit, Modality, ModelConfig, Size, TaskHead};
use crate::stage::{choice_enum, InputArtifact, ParamSpec, ParamType as T, StageError};
use crate::train::batch::SplitData;
use crate::train::run::TaskRun;
use serde::Deserialize;
use serde_json::json;

choice_enum! {
    /// A transformer size preset ([`Size::preset`]).
    pub enum SizePreset {
        /// CPU-sized: dim 64, depth 4.
        Micro = "micro",
        /// ViT-Ti.
        Ti = "Ti",
        /// ViT-S.
        S = "S",
        /// ViT-B.
        B = "B",
        /// ViT-L.
        L = "L",
    }
}

choice_enum! {
    /// The GELU form.
    pub enum Gelu {
        /// The tanh approximation (the paper's Flax code).
        Tanh = "tanh",
        /// The exact erf form.
        Erf = "erf",
    }
}

/// The model parameters of `train`, `cotrain` and `features` ([`model_params`]), flattened into each kind's
/// parameter struct.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Size preset.
    pub size: SizePreset,
    /// Hidden size override (0 = preset).
    pub dim: usize,
    /// Depth override (0 = preset).
    pub depth: usize,
    /// Heads override (0 = preset).
    pub heads: usize,
    /// MLP size override (0 = preset).
    pub mlp: usize,
    /// Modality-specific adapter blocks per tokenizer.
    pub l_adapt: usize,
    /// Image patch `[h, w]` (numbers, as the parameter's list type gives them).
    pub image_patch: Vec<f64>,
    /// Spectrogram patch `[time, mel]`.
    pub audio_patch: Vec<f64>,
    /// Video tubelet `[t, h, w]`.
    pub video_patch: Vec<f64>,
    /// Tokenizer input channels.
    pub channels: usize,
    /// GELU form.
    pub gelu: Gelu,
}

/// Parameters describing the model (train, cotrain, features).
pub fn model_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::opt("size", T::Choice(SizePreset::NAMES), json!("micro"), "size preset (micro is CPU-sized: dim 64, depth 4)"),
        ParamSpec::opt("dim", T::Int { min: 0, max: 65536 }, json!(0), "override the preset's hidden size (0 = preset)"),
        ParamSpec::opt("depth", T::Int { min: 0, max: 1024 }, json!(0), "override the preset's depth L"),
        ParamSpec::opt("heads", T::Int { min: 0, max: 1024 }, json!(0), "override the preset's heads"),
        ParamSpec::opt("mlp", T::Int { min: 0, max: 262144 }, json!(0), "override the preset's MLP size"),
        ParamSpec::opt("l_adapt", T::Int { min: 0, max: 1024 }, json!(0), "modality-specific adapter blocks per tokenizer"),
        ParamSpec::opt("image_patch", T::IntList { min: 1, max: 4096 }, json!([8, 8]), "image patch [h, w]"),
        ParamSpec::opt("audio_patch", T::IntList { min: 1, max: 4096 }, json!([8, 8]), "spectrogram patch [time, mel]"),
        ParamSpec::opt("video_patch", T::IntList { min: 1, max: 4096 }, json!([4, 8, 8]), "video tubelet [t, h, w]"),
        ParamSpec::opt("channels", T::Int { min: 1, max: 3 }, json!(3), "tokenizer input channels (grey data is tiled)"),
        ParamSpec::opt("gelu", T::Choice(Gelu::NAMES), json!("tanh"), "GELU form (the paper's Flax code uses tanh)"),
    ]
}

impl ModelParams {
    /// Each patch list has its modality's axes (image and audio 2, video 3), each a whole number of at least 1
    /// (the list type takes any number: `16.5` was truncated to 16 without a word). `Err((param, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (name, m, v) in self.patches() {
            let axes = if m == Modality::Video { 3 } else { 2 };
            if v.len() != axes {
                return Err((
                    name.into(),
                    format!("has {} numbers; it takes {axes} ({})", v.len(), if axes == 3 { "[t, h, w]" } else { "[h, w]" }),
                ));
            }
            if let Some(x) = v.iter().find(|x| x.fract() != 0.0 || **x < 1.0) {
                return Err((name.into(), format!("{x} is not a whole number of at least 1")));
            }
        }
        // The size as resolved (a preset's values where not overridden) holds together: found before anything
        // runs, not when the model is built.
        let s = self.size();
        if !s.dim.is_multiple_of(s.heads) {
            let at = if self.heads > 0 { "heads" } else { "dim" };
            return Err((
                at.into(),
                format!(
                    "dim {} is not divisible by heads {} (each head takes dim / heads of the width): pick heads dividing dim",
                    s.dim, s.heads
                ),
            ));
        }
        if self.l_adapt > s.depth {
            return Err(("l_adapt".into(), format!("{} exceeds the depth {}", self.l_adapt, s.depth)));
        }
        Ok(())
    }

    /// Each modality's patch parameter: (its name, the modality, its value).
    pub fn patches(&self) -> [(&'static str, Modality, &Vec<f64>); 3] {
        [
            ("image_patch", Modality::Image, &self.image_patch),
            ("audio_patch", Modality::Audio, &self.audio_patch),
            ("video_patch", Modality::Video, &self.video_patch),
        ]
    }

    /// The parameters at their declared defaults ([`model_params`]).
    pub fn defaults() -> ModelParams {
        let v: serde_json::Map<String, serde_json::Value> =
            model_params().into_iter().filter_map(|s| Some((s.name.to_string(), s.default?))).collect();
        serde_json::from_value(serde_json::Value::Object(v)).expect("the declared defaults parse")
    }

    /// The transformer size: the preset with the non-zero overrides.
    pub fn size(&self) -> Size {
        let mut s = Size::preset(self.size.name()).unwrap_or(Size { dim: 64, depth: 4, heads: 4, mlp: 128 });
        let o = |v: usize, preset: usize| if v > 0 { v } else { preset };
        s.dim = o(self.dim, s.dim);
        s.depth = o(self.depth, s.depth);
        s.heads = o(self.heads, s.heads);
        s.mlp = o(self.mlp, s.mlp);
        s
    }
}

/// Writes a size override equal to its preset's value as `0` ("the preset's") in a node's key parameters
/// ([`crate::stage::Stage::canonical_key`]): `dim = 64` on the micro preset is the same model as no `dim`.
pub fn canonical_size(keyed: &mut serde_json::Value) {
    let Some(preset) = keyed.get("size").and_then(|s| s.as_str()).and_then(Size::preset) else { return };
    for (k, n) in [("dim", preset.dim), ("depth", preset.depth), ("heads", preset.heads), ("mlp", preset.mlp)] {
        if keyed.get(k).and_then(|v| v.as_u64()) == Some(n as u64) {
            keyed[k] = json!(0);
        }
    }
}

/// Writes the preset's value in place of each size field that keys "the preset's" (`0` or left out), in key
/// parameters shown to a reader ([`crate::stage::Stage::shown_key`]).
pub fn shown_size(keyed: &mut serde_json::Value) {
    let Some(preset) = keyed.get("size").and_then(|s| s.as_str()).and_then(Size::preset) else { return };
    for (k, n) in [("dim", preset.dim), ("depth", preset.depth), ("heads", preset.heads), ("mlp", preset.mlp)] {
        if keyed.get(k).is_none_or(|v| v.as_u64() == Some(0)) {
            keyed[k] = json!(n);
        }
    }
}

/// `params` with the model size resolved: the preset's `dim`, `depth`, `heads`, `mlp` in place of the `0`s
/// that mean "the preset's".
pub fn effective_size(params: &serde_json::Value, m: &ModelParams) -> serde_json::Value {
    let mut v = params.clone();
    let s = m.size();
    for (k, n) in [("dim", s.dim), ("depth", s.depth), ("heads", s.heads), ("mlp", s.mlp)] {
        v[k] = json!(n);
    }
    // Patches as the whole numbers they are (the list type holds them as floats).
    for (k, _, p) in m.patches() {
        v[k] = json!(ints(p));
    }
    v
}

/// A patch list as integers (each number truncated, as the list type holds floats).
fn ints(v: &[f64]) -> Vec<usize> {
    v.iter().map(|&f| f as usize).collect()
}

/// A task loaded from a `task` artifact.
pub struct LoadedTask {
    /// Its spec.
    pub spec: TaskSpec,
    /// Its data.
    pub run: TaskRun,
    /// Per-example input shape `[C, T, H, W]`.
    pub shape: [usize; 4],
}

/// One split of a task artifact, read from its shards: f32 caches as stored, u8 caches through their value
/// map (the same floats). Memory holds the labels only.
fn split(a: &InputArtifact, name: &str) -> Result<SplitData, StageError> {
    let r = super::datautil::open_split(a, name)?;
    if r.shape.is_empty() && r.name == "bytes" {
        // Encoded images: decoded per batch at the size and value map `image_prep` recorded.
        let meta: crate::data::tensors::Meta = a.json("meta.json")?;
        let (Some(map), &[3, 1, h, w]) = (meta.values, &meta.shape[..]) else {
            return Err(StageError::input(format!("`{}`: encoded images need image_prep's size and value map (3 channels)", a.id)));
        };
        return Ok(SplitData::encoded(r, h, w, [map.affine(0), map.affine(1), map.affine(2)]));
    }
    if r.shape.len() != 4 {
        return Err(StageError::input(format!("`{}`: expected x [N, C, T, H, W], got [N] + {:?}", a.id, r.shape)));
    }
    let shape = [r.shape[0], r.shape[1], r.shape[2], r.shape[3]];
    let meta: crate::data::tensors::Meta = a.json("meta.json")?;
    let window = meta.window.unwrap_or(0);
    let lut = match r.dtype {
        safetensors::Dtype::F32 => None,
        safetensors::Dtype::U8 => {
            let Some(map) = meta.values else {
                return Err(StageError::input(format!(
                    "`{}`: u8 task data without a value map: preprocess it (image_prep, video_prep)",
                    a.id
                )));
            };
            Some(map.lut(shape[0]))
        }
        _ => return Err(StageError::input(format!("`{}`: task data must be preprocessed f32 or u8 tensors", a.id))),
    };
    Ok(SplitData::stored(r, shape, lut)
        .with_time_window(window)
        .with_clip_window(meta.clip_window.unwrap_or(0))
        .with_spatial_crop(meta.crop.unwrap_or(0)))
}

/// Loads a task artifact.
pub fn load_task(a: &InputArtifact) -> Result<LoadedTask, StageError> {
    let spec: TaskSpec = a.json("task.json")?;
    let train = split(a, "train")?;
    let val = split(a, "val")?;
    let test = split(a, "test")?;
    let shape = train.shape;
    let run = TaskRun {
        name: spec.name.clone(),
        loss: spec.loss,
        batch: spec.batch_size,
        steps: spec.steps,
        lr: spec.lr,
        warmup: spec.warmup,
        warmup_group: (!spec.warmup_group.is_empty()).then(|| spec.warmup_group.clone()),
        augment: spec.augment,
        droplayer: spec.droplayer,
        classes: spec.classes.len(),
        map: spec.map,
        train,
        val,
        test,
    };
    Ok(LoadedTask { spec, run, shape })
}

/// The geometry a modality's data implies, with the patch from parameters.
pub fn geometry(m: Modality, shape: [usize; 4], p: &ModelParams) -> Geometry {
    let channels = p.channels;
    match m {
        Modality::Video => Geometry { channels, input: vec![shape[1], shape[2], shape[3]], patch: ints(&p.video_patch) },
        Modality::Image => Geometry { channels, input: vec![shape[2], shape[3]], patch: ints(&p.image_patch) },
        Modality::Audio => Geometry { channels, input: vec![shape[2], shape[3]], patch: ints(&p.audio_patch) },
    }
}

/// Builds the model config for `tasks` (one tokenizer per modality present; all tasks of a modality must
/// share one input geometry, as the paper's five image tasks share 384²).
pub fn model_config(p: &ModelParams, tasks: &[(&TaskSpec, [usize; 4])]) -> Result<ModelConfig, StageError> {
    let mut geoms: Vec<(Modality, Geometry)> = vec![];
    let mut heads = vec![];
    for (spec, shape) in tasks {
        let m = Modality::parse(&spec.modality).ok_or_else(|| StageError::input(format!("unknown modality `{}`", spec.modality)))?;
        let g = geometry(m, *shape, p);
        match geoms.iter().find(|(k, _)| *k == m) {
            Some((_, g0)) if g0 != &g => {
                return Err(StageError::input(format!("task `{}` has {} input {:?} but another {} task has {:?}: tasks of one modality share one tokenizer and need the same input size (resize them in preprocessing)", spec.name, m.name(), g.input, m.name(), g0.input)))
            }
            Some(_) => {}
            None => geoms.push((m, g)),
        }
        heads.push(TaskHead {
            name: spec.name.clone(),
            modality: m,
            classes: spec.classes.len(),
            init: if spec.head_init == "zero" { HeadInit::Zero } else { HeadInit::LecunNormal },
        });
    }
    geoms.sort_by_key(|(m, _)| *m);
    let cfg =
        ModelConfig { size: p.size(), l_adapt: p.l_adapt, geometry: geoms, tasks: heads, gelu_tanh: p.gelu != Gelu::Erf, ln_eps: 1e-6 };
    cfg.check().map_err(StageError::input)?;
    Ok(cfg)
}
