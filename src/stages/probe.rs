//! Linear probes: `features` (a frozen encoder's class-token features after the final norm, for a task's
//! splits, cached as their own artifact so several probes reuse them) and `probe` (a linear head trained on
//! them, with a small LR sweep chosen on val, or closed-form ridge; reports the task's metrics on test).
//!
//! Without a `model` input, `features` uses the freshly initialised model (the "initial model" row; at small
//! scale that is a seeded random init, not a pretrained ViT). A modality the encoder never saw gets a
//! tokenizer built from one it did ([`crate::model::transfer`]).

use super::modelspec::{geometry, load_task, model_config, model_params, ModelParams};
use crate::data::tensors::{decode, encode, Array, Labels, Named};
use crate::model::checkpoint::{from_safetensors, load_into, HostTensor};
use crate::model::device::{Backend, BackendJob};
use crate::model::import::{from_timm, Inflation};
use crate::model::transfer::transfer;
use crate::model::{Modality, ModelConfig, PolyVit};
use crate::stage::{
    choice_enum, parse, parse_checked, InputArtifact, InputSlot, ParamSpec, ParamType as T, Resources, Stage, StageCtx, StageError,
};
use crate::train::batch::SplitData;
use crate::train::metrics::{mean_ap, topk};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `features`.
pub struct FeaturesStage;

/// The parameters of a `features` node: the model's, and how a ViT checkpoint's 2D kernels are inflated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesParams {
    #[serde(flatten)]
    model: ModelParams,
    init_inflation: Inflation,
}

struct FeatJob<'a> {
    cfg: ModelConfig,
    weights: Option<BTreeMap<String, HostTensor>>,
    tok: usize,
    splits: Vec<&'a SplitData>,
    seed: u64,
    classes: usize,
}

impl BackendJob for FeatJob<'_> {
    type Output = Result<Vec<Vec<f32>>, String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = devices[0].clone();
        let mut model = PolyVit::<B::InnerBackend>::new(&self.cfg, self.seed, &device);
        if let Some(w) = &self.weights {
            model = load_into(model, w, true, &device).map_err(|e| e.to_string())?;
        }
        let mut out = vec![];
        for s in self.splits {
            let mut f = vec![];
            // batches of one shape on the GPU backends (the last one filled up, its extra rows dropped)
            for (chunk, n) in crate::train::run::eval_batches(s.len(), 256, crate::model::gpu_fused::gpu_backend::<B>()) {
                let (x, _) = s.gather(&chunk, self.classes);
                let sh = s.shape;
                let xt = Tensor::<B::InnerBackend, 5>::from_data(TensorData::new(x, [chunk.len(), sh[0], sh[1], sh[2], sh[3]]), &device);
                let mut feats =
                    model.features(self.tok, xt, &[]).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
                feats.truncate(feats.len() / chunk.len() * n); // [n, D]
                f.extend(feats);
            }
            out.push(f);
        }
        Ok(out)
    }
}

/// Whether the encoder of a trained model (`old`) can embed a task of modality `m` whose data has `shape`
/// (`[C, T, H, W]`): where the model has a tokenizer for `m`, it must have been built for the same input size
/// (its position embedding fits no other). A modality it lacks is built from another tokenizer, so fits.
fn task_fits_encoder(old: &ModelConfig, m: Modality, shape: [usize; 4], p: &crate::stages::modelspec::ModelParams) -> Result<(), String> {
    let Some(og) = old.geometry(m) else { return Ok(()) };
    let input = geometry(m, shape, p).input;
    if og.input == input {
        return Ok(());
    }
    Err(format!(
        "its {} tokenizer takes inputs {:?}, this task's data is {:?}: prepare the task's data at {:?}",
        m.name(),
        og.input,
        input,
        og.input
    ))
}

/// The model parameters of a `features` node that a trained model's encoder (`old`) makes unused, for a task of
/// modality `m`: a value set away from its default that differs from the trained model's (the encoder is used as
/// it is; before, `depth = 2` re-ran the node to the same features and `show` reported depth 2). A patch or
/// channel count of a modality the model lacks is used (its new tokenizer is built with them). `Err((param,
/// message))`.
fn unused_with_encoder(p: &crate::stages::modelspec::ModelParams, old: &ModelConfig, m: Modality) -> Result<(), (String, String)> {
    let why = "the features come from the trained model's encoder as it is: remove it, or set the trained model's value";
    let d = crate::stages::modelspec::ModelParams::defaults();
    let resized = p.size != d.size || (p.dim, p.depth, p.heads, p.mlp) != (d.dim, d.depth, d.heads, d.mlp);
    let (s, o) = (p.size(), old.size);
    if resized && (s.dim, s.depth, s.heads, s.mlp) != (o.dim, o.depth, o.heads, o.mlp) {
        return Err((
            "size".into(),
            format!(
                "(with `dim`, `depth`, `heads`, `mlp`) gives width {}, {} blocks, {} heads, MLP {}; the trained model has width {}, {} blocks, \
                 {} heads, MLP {}: {why}",
                s.dim, s.depth, s.heads, s.mlp, o.dim, o.depth, o.heads, o.mlp
            ),
        ));
    }
    if p.l_adapt != d.l_adapt && p.l_adapt != old.l_adapt {
        return Err(("l_adapt".into(), format!("= {} is not the trained model's {}: {why}", p.l_adapt, old.l_adapt)));
    }
    let gelu_tanh = p.gelu == crate::stages::modelspec::Gelu::Tanh;
    if p.gelu != d.gelu && gelu_tanh != old.gelu_tanh {
        return Err(("gelu".into(), format!("= \"{}\" is not the trained model's GELU: {why}", p.gelu.name())));
    }
    if let Some(og) = old.geometry(m) {
        let pick = |ps: &crate::stages::modelspec::ModelParams| ps.patches().into_iter().find(|x| x.1 == m).map(|x| (x.0, x.2.clone()));
        let ((name, patch), (_, default)) = (pick(p).expect("every modality"), pick(&d).expect("every modality"));
        let mine: Vec<usize> = patch.iter().map(|&x| x as usize).collect();
        if patch != default && mine != og.patch {
            return Err((name.into(), format!("= {mine:?} is not the trained model's {} patch {:?}: {why}", m.name(), og.patch)));
        }
        if p.channels != d.channels && p.channels != og.channels {
            return Err(("channels".into(), format!("= {} is not the trained model's {}: {why}", p.channels, og.channels)));
        }
    }
    Ok(())
}

impl Stage for FeaturesStage {
    fn kind(&self) -> &'static str {
        "features"
    }
    fn version(&self) -> u32 {
        // 2: features.json keeps only what probes need (no training hyperparameters).
        // 3: SIMD/multi-threaded CPU kernels and tanh-GELU as x·σ(2z) change the float rounding.
        // 4: the fused CPU block (src/model/fused) and its own matrix product change the float rounding.
        // 5: the same bits on every x86-64 CPU with AVX2 + FMA (burn-flex's sums in order, the tokenizers' linear
        // layers on polyflow's product, the final LayerNorm on the class tokens only: see `TrainStage::version`).
        // 6: a model from scratch initialises q, k and v as three [D, D] Xavier kernels (the initial model's
        // features; see `TrainStage::version`).
        // 7: `source` names the model by its artifact's digest, not by its node's id (which is not in the key: a
        // renamed node gave other bytes under the same key).
        // (+1 off the fused CPU block only: see `version_for`.)
        7
    }
    fn preflight_env(&self, _params: &Value, env: &BTreeMap<String, String>) -> Result<(), crate::stage::Problem> {
        super::training::backend_built(env)
    }
    fn version_for(&self, params: &Value, env: &BTreeMap<String, String>) -> u32 {
        // One more off the fused CPU block (another backend, or the erf GELU): fusion and autotune on CUDA and
        // inference through the backend's attention change the rounding there; the CPU's fused path keeps
        // its keys and bits. One more on an accelerator: LayerNorm and softmax as polyflow's GPU kernels
        // (`model::gpu_fused`). One more there: linear layers as one product over all tokens (`gpu_fused::linear`).
        // One more there: the last batch filled up to the others' size (`train::run::eval_batches`), and CUDA's
        // features from before the kernels' packed outputs (wrong values there) retired with it. One more there:
        // the tanh GELU as polyflow's kernel (another rounding).
        let device = Backend::from_env(env).is_ok_and(Backend::holds_device);
        self.version() + u32::from(super::training::off_fused_cpu(params, env)) + 4 * u32::from(device)
    }
    fn doc(&self) -> &'static str {
        "frozen-encoder class-token features of a task's splits (from a model, or the initial model)"
    }
    fn output(&self) -> &'static str {
        "features"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![
            InputSlot::one("task", &["task"]),
            InputSlot::one("model", &["model"]).optional(),
            InputSlot::one("init", &["weights"]).optional(),
        ]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = model_params();
        v.push(ParamSpec::opt(
            "init_inflation",
            T::Choice(&["central", "average"]),
            json!("central"),
            "2D → 3D kernel inflation when the initial model comes from a ViT checkpoint (`init`)",
        ));
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
    }
    fn env_for(&self, params: &Value, env: BTreeMap<String, String>) -> BTreeMap<String, String> {
        super::training::env_for_block(params, env)
    }
    fn follow_env(&self, _params: &Value, env: &BTreeMap<String, String>) -> Result<(), String> {
        super::training::follow_key_env(env)
    }
    fn effective(&self, params: &Value, inputs: &BTreeMap<String, Vec<(String, Value)>>) -> Option<Value> {
        let own = parse::<FeaturesParams>(params).ok()?;
        // With a trained model, the sizes are that model's (this node's own are not used).
        let m = trained_model(inputs).map_or(own.model, |(_, m)| m);
        Some(crate::stages::modelspec::effective_size(params, &m))
    }
    fn outline(&self, _params: &Value, inputs: &BTreeMap<String, Vec<(String, Value)>>) -> Option<String> {
        // With a trained model, its encoder is what embeds (this node's own size settings are not used).
        let (id, m) = trained_model(inputs)?;
        let s = m.size();
        Some(format!(
            "embeds with the encoder of `{id}` (width {}, {} blocks, {} heads, MLP {}, l_adapt {}): this node's own model size settings are not used",
            s.dim, s.depth, s.heads, s.mlp, m.l_adapt
        ))
    }
    fn resources(&self, _params: &Value, env: &BTreeMap<String, String>) -> Resources {
        // One CPU slot, so that training nodes run side by side on the cores (`resources = { cpus = N }` gives
        // one node N threads for its kernels); on CUDA each holds the device slot. An unknown backend holds
        // none: `run` reports it.
        Resources { cpu_slots: 1, devices: u32::from(Backend::from_env(env).is_ok_and(Backend::holds_device)) }
    }
    fn validate(&self, params: &Value) -> Result<(), (String, String)> {
        parse_checked::<FeaturesParams>(params, &self.params()).and_then(|p| p.model.check())
    }
    fn check_declared(&self, params: &Value, inputs: &BTreeMap<String, Vec<Value>>) -> Result<(), crate::stage::Problem> {
        // The checkpoint is the initial model only without a trained `model` input (whose encoder is used).
        let (Some(task), Ok(p)) = (inputs.get("task"), parse::<FeaturesParams>(params)) else { return Ok(()) };
        if let Some(m) = inputs.get("model").and_then(|m| m.first()) {
            // The trained model's encoder (declared by its training node): its tokenizer for this task's
            // modality must take this task's input size.
            let (Ok(old), Some(t)) = (serde_json::from_value::<ModelConfig>(m["model"].clone()), task.first()) else { return Ok(()) };
            let (Some(modality), Ok(shape)) =
                (t["spec"]["modality"].as_str().and_then(Modality::parse), serde_json::from_value::<[usize; 4]>(t["shape"].clone()))
            else {
                return Ok(());
            };
            unused_with_encoder(&p.model, &old, modality).map_err(|(param, msg)| crate::stage::Problem::installation(param, msg))?;
            return task_fits_encoder(&old, modality, shape, &p.model)
                .map_err(|e| crate::stage::Problem::installation("model", format!("(the trained model) does not fit this task: {e}")));
        }
        let cfg = super::training::declared_config(&p.model, task).map_err(|e| crate::stage::Problem::installation("task", e.message))?;
        super::training::check_init_fits(&cfg, inputs)
    }
    fn describe(&self, a: &InputArtifact, _out: &std::path::Path) -> Result<String, StageError> {
        let info: Value = a.json("features.json")?;
        Ok(serde_json::to_string_pretty(&info).unwrap_or_default())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: FeaturesParams = parse(ctx.params)?;
        let backend = Backend::from_env(ctx.env).map_err(StageError::input)?;
        let task = load_task(ctx.input("task")?)?;
        let m = Modality::parse(&task.spec.modality).ok_or_else(|| StageError::input("unknown modality"))?;
        let (mut cfg, weights, note) = match ctx.inputs.get("model").and_then(|v| v.first()) {
            None => {
                let mut cfg = model_config(&p.model, &[(&task.spec, task.shape)])?;
                cfg.tasks.clear();
                match ctx.inputs.get("init").and_then(|v| v.first()) {
                    // The paper's "initial model": the pretrained ViT, mapped onto this tokenizer.
                    Some(a) => {
                        let timm = from_safetensors(&a.read("weights.safetensors")?).map_err(StageError::input)?;
                        let w = from_timm(&timm, &cfg, p.init_inflation)
                            .map_err(|e| StageError::input(format!("init from `{}`: {e}", a.id)))?;
                        // Content only (no node id: a renamed node keeps its key, so it must keep its bytes).
                        (cfg, Some(w), format!("initial model: pretrained weights (artifact {})", short(&a.manifest.digest)))
                    }
                    None => (cfg, None, "initial model (seeded random init)".to_string()),
                }
            }
            Some(a) => {
                let conf: Value = a.json("config.json")?;
                let old: ModelConfig = serde_json::from_value(conf["model"].clone())
                    .map_err(|e| StageError::failed(format!("`{}` config.json: {e}", a.id)))?;
                unused_with_encoder(&p.model, &old, m)
                    .map_err(|(param, msg)| StageError::input(format!("`{param}` {msg} (`{}`)", a.id)))?;
                task_fits_encoder(&old, m, task.shape, &p.model)
                    .map_err(|e| StageError::input(format!("the trained model `{}` does not fit this task: {e}", a.id)))?;
                let w = from_safetensors(&a.read("model.safetensors")?).map_err(StageError::failed)?;
                let mut cfg = old.clone();
                cfg.tasks.clear();
                let mut note = format!("encoder of a trained model (artifact {})", short(&a.manifest.digest));
                if cfg.geometry(m).is_none() {
                    cfg.geometry.push((m, geometry(m, task.shape, &p.model)));
                    cfg.geometry.sort_by_key(|(k, _)| *k);
                }
                // Renumber tokenizers to the new order.
                let new_idx = |mm: Modality| cfg.geometry.iter().position(|(k, _)| *k == mm).unwrap();
                let mut w2: BTreeMap<String, HostTensor> = BTreeMap::new();
                for (k, v) in &w {
                    if k.starts_with("heads.") {
                        continue;
                    }
                    let k2 = match k.strip_prefix("tokenizers.") {
                        Some(rest) => {
                            let (i, tail) = rest.split_once('.').unwrap_or((rest, ""));
                            let oi: usize = i.parse().unwrap_or(0);
                            format!("tokenizers.{}.{tail}", new_idx(old.geometry[oi].0))
                        }
                        None => k.clone(),
                    };
                    w2.insert(k2, v.clone());
                }
                if old.geometry(m).is_none() {
                    let src = [Modality::Image, Modality::Video, Modality::Audio]
                        .into_iter()
                        .find(|s| old.geometry(*s).is_some())
                        .ok_or_else(|| StageError::input("model has no tokenizer"))?;
                    let t = transfer(&w2, new_idx(src), src, old.geometry(src).unwrap(), new_idx(m), m, cfg.geometry(m).unwrap())
                        .map_err(StageError::input)?;
                    w2.extend(t);
                    note.push_str(&format!("; {} tokenizer built from its {} tokenizer", m.name(), src.name()));
                }
                (cfg, Some(w2), note)
            }
        };
        cfg.tasks.clear();
        let tok = cfg.geometry.iter().position(|(k, _)| *k == m).unwrap();
        let splits = vec![&task.run.train, &task.run.val, &task.run.test];
        let feats = backend
            .dispatch_on(
                FeatJob { cfg: cfg.clone(), weights, tok, splits: splits.clone(), seed: ctx.seed(), classes: task.run.classes },
                &ctx.devices,
            )
            .map_err(StageError::input)?
            .map_err(StageError::failed)?;
        let d = cfg.size.dim;
        for ((name, s), f) in ["train", "val", "test"].iter().zip(&splits).zip(feats) {
            let mut arrays = BTreeMap::new();
            arrays.insert("x".to_string(), Named { shape: vec![s.len(), d], data: Array::F32(f) });
            arrays.insert("y".to_string(), s.y.named());
            ctx.out.put(&format!("{name}.safetensors"), &encode(&arrays))?;
        }
        // Only what a probe needs: no training hyperparameters, so a changed LR rebuilds identical features and
        // every probe downstream stays fresh.
        let t = &task.spec;
        let info = json!({"task": {"name": t.name, "modality": t.modality, "classes": t.classes, "multilabel": t.multilabel, "map": t.map}, "dim": d, "source": note});
        ctx.out.put_json("features.json", &info)
    }
}

/// `probe`.
pub struct ProbeStage;

choice_enum! {
    /// How a probe fits its linear head.
    enum Method {
        /// Adam with an LR sweep chosen on val.
        Adam = "adam",
        /// Closed-form ridge regression with a regulariser sweep.
        Ridge = "ridge",
    }
}

/// The parameters of a `probe` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeParams {
    method: Method,
    lrs: Vec<f64>,
    lambdas: Vec<f64>,
    epochs: usize,
    batch_size: usize,
}

/// The task facts a probe reads from `features.json`.
#[derive(serde::Deserialize)]
struct ProbeTask {
    name: String,
    classes: Vec<String>,
    multilabel: bool,
    map: bool,
}

struct Data {
    x: Vec<f32>,
    y: Labels,
    n: usize,
}

impl Data {
    /// The examples `idx` of features of width `d`.
    fn select(&self, idx: &[usize], d: usize) -> Data {
        Data { x: idx.iter().flat_map(|&i| self.x[i * d..(i + 1) * d].iter().copied()).collect(), y: self.y.select(idx), n: idx.len() }
    }
}

fn targets(y: &Labels, k: usize) -> Vec<f32> {
    let n = y.len();
    let mut t = vec![0f32; n * k];
    match y {
        Labels::Single(v) => v.iter().enumerate().for_each(|(i, &c)| t[i * k + c as usize] = 1.0),
        Labels::Multi(v, kk) => v.iter().enumerate().for_each(|(i, &b)| t[(i / kk) * k + i % kk] = b as f32),
    }
    t
}

fn logits(x: &[f32], w: &[f32], b: &[f32], d: usize, k: usize) -> Vec<f32> {
    let n = x.len() / d;
    let mut out = vec![0f32; n * k];
    for i in 0..n {
        for c in 0..k {
            let mut s = b[c];
            for j in 0..d {
                s += x[i * d + j] * w[j * k + c];
            }
            out[i * k + c] = s;
        }
    }
    out
}

/// Trains a linear head with Adam; softmax CE (sigmoid BCE when multi-label).
#[allow(clippy::too_many_arguments)]
fn train_adam(tr: &Data, d: usize, k: usize, lr: f64, epochs: usize, batch: usize, multilabel: bool, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let (mut w, mut b) = (vec![0f32; d * k], vec![0f32; k]);
    let (mut mw, mut vw, mut mb, mut vb) = (vec![0f32; d * k], vec![0f32; d * k], vec![0f32; k], vec![0f32; k]);
    let t_all = targets(&tr.y, k);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..tr.n).collect();
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut step = 0;
    for _ in 0..epochs {
        idx.shuffle(&mut rng);
        for chunk in idx.chunks(batch) {
            step += 1;
            let (mut gw, mut gb) = (vec![0f32; d * k], vec![0f32; k]);
            for &i in chunk {
                let xi = &tr.x[i * d..(i + 1) * d];
                let z = logits(xi, &w, &b, d, k);
                let ti = &t_all[i * k..(i + 1) * k];
                let g: Vec<f32> = if multilabel {
                    z.iter().zip(ti).map(|(z, t)| 1.0 / (1.0 + (-z).exp()) - t).collect()
                } else {
                    let m = z.iter().cloned().fold(f32::MIN, f32::max);
                    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
                    let s: f32 = e.iter().sum();
                    e.iter().zip(ti).map(|(e, t)| e / s - t).collect()
                };
                for j in 0..d {
                    for c in 0..k {
                        gw[j * k + c] += xi[j] * g[c];
                    }
                }
                gb.iter_mut().zip(&g).for_each(|(a, g)| *a += g);
            }
            let nb = chunk.len() as f32;
            let lr_t = lr as f32 * (1.0 - b2.powi(step)).sqrt() / (1.0 - b1.powi(step));
            for (p, (g, (m, v))) in w
                .iter_mut()
                .chain(b.iter_mut())
                .zip(gw.iter().chain(gb.iter()).zip(mw.iter_mut().chain(mb.iter_mut()).zip(vw.iter_mut().chain(vb.iter_mut()))))
            {
                let g = g / nb;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr_t * *m / (v.sqrt() + eps);
            }
        }
    }
    (w, b)
}

/// Closed-form ridge regression onto one-hot targets (bias unregularised via centring).
fn ridge(tr: &Data, d: usize, k: usize, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let n = tr.n;
    let t = targets(&tr.y, k);
    let mx: Vec<f64> = (0..d).map(|j| (0..n).map(|i| tr.x[i * d + j] as f64).sum::<f64>() / n as f64).collect();
    let mt: Vec<f64> = (0..k).map(|c| (0..n).map(|i| t[i * k + c] as f64).sum::<f64>() / n as f64).collect();
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d * k];
    for i in 0..n {
        for p in 0..d {
            let xp = tr.x[i * d + p] as f64 - mx[p];
            for q in 0..d {
                a[p * d + q] += xp * (tr.x[i * d + q] as f64 - mx[q]);
            }
            for c in 0..k {
                rhs[p * k + c] += xp * (t[i * k + c] as f64 - mt[c]);
            }
        }
    }
    (0..d).for_each(|p| a[p * d + p] += lambda);
    // Cholesky solve.
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum();
            l[i * d + j] = if i == j { (a[i * d + i] - s).max(1e-12).sqrt() } else { (a[i * d + j] - s) / l[j * d + j] };
        }
    }
    let mut w = vec![0f32; d * k];
    for c in 0..k {
        let mut y = vec![0f64; d];
        for i in 0..d {
            y[i] = (rhs[i * k + c] - (0..i).map(|m| l[i * d + m] * y[m]).sum::<f64>()) / l[i * d + i];
        }
        let mut x = vec![0f64; d];
        for i in (0..d).rev() {
            x[i] = (y[i] - (i + 1..d).map(|m| l[m * d + i] * x[m]).sum::<f64>()) / l[i * d + i];
        }
        (0..d).for_each(|i| w[i * k + c] = x[i] as f32);
    }
    let b: Vec<f32> = (0..k).map(|c| (mt[c] - (0..d).map(|j| mx[j] * w[j * k + c] as f64).sum::<f64>()) as f32).collect();
    (w, b)
}

fn score(data: &Data, w: &[f32], b: &[f32], d: usize, k: usize, map: bool) -> BTreeMap<String, f64> {
    let z = logits(&data.x, w, b, d, k);
    let t = targets(&data.y, k);
    let mut m = BTreeMap::new();
    m.insert("top1".to_string(), topk(&z, &t, k, 1));
    if k > 5 {
        m.insert("top5".to_string(), topk(&z, &t, k, 5));
    }
    if map {
        m.insert("map".to_string(), mean_ap(&z, &t, k));
    }
    m
}

impl Stage for ProbeStage {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        // 2: top-k ranks equal logits by class index and multi-label top-1 is any positive (`train::metrics::topk`);
        // features without a val split choose the hyperparameter on a seeded 10 % of train.
        2
    }
    fn doc(&self) -> &'static str {
        "train a linear head on cached features (Adam with an LR sweep chosen on val, or ridge)"
    }
    fn output(&self) -> &'static str {
        "metrics"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("features", &["features"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("method", T::Choice(Method::NAMES), json!("adam"), "linear head: Adam sweep or closed-form ridge"),
            ParamSpec::opt("lrs", T::FloatList, json!([0.001, 0.003, 0.01]), "Adam learning rates swept (best on val)"),
            ParamSpec::opt("lambdas", T::FloatList, json!([0.1, 1.0, 10.0]), "ridge regularisers swept (best on val)"),
            ParamSpec::opt("epochs", T::Int { min: 1, max: 10000 }, json!(20), "Adam epochs"),
            ParamSpec::opt("batch_size", T::Int { min: 1, max: 65536 }, json!(64), "Adam minibatch"),
        ]
    }
    fn validate(&self, params: &Value) -> Result<(), (String, String)> {
        parse_checked::<ProbeParams>(params, &self.params()).map(|_| ())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: ProbeParams = parse(ctx.params)?;
        let a = ctx.input("features")?.clone();
        let info: Value = a.json("features.json")?;
        let spec: ProbeTask = serde_json::from_value(info["task"].clone()).map_err(|e| StageError::failed(e.to_string()))?;
        let d = info["dim"].as_u64().unwrap_or(0) as usize;
        let k = spec.classes.len();
        let load = |s: &str| -> Result<Data, StageError> {
            let arr = decode(&a.read(&format!("{s}.safetensors"))?).map_err(StageError::failed)?;
            let Array::F32(x) = arr["x"].data.clone() else { return Err(StageError::failed("features must be f32")) };
            let y = Labels::from_named(&arr["y"]).map_err(StageError::failed)?;
            Ok(Data { n: y.len(), x, y })
        };
        let (full, va, te) = (load("train")?, load("val")?, load("test")?);
        // A dataset without a val split (the paper trains video and audio tasks on all of their train table):
        // the hyperparameter is chosen on a seeded 10 % of train, fitted on the rest, and the chosen one is fitted
        // again on all of train. Never on train itself (that picks the least regularised) nor on test.
        let own_val = va.n == 0 && full.n >= 10;
        let carved = own_val.then(|| {
            let (kept, held) = crate::data::tensors::carve(full.n, 0.1, ctx.seed() ^ 0x7a1);
            (full.select(&kept, d), full.select(&held, d))
        });
        let (tr, va) = match &carved {
            Some((kept, held)) => (kept, held),
            None => (&full, &va),
        };
        let key_metric = if spec.multilabel { "map" } else { "top1" };
        let mut best: Option<(f64, f64, Vec<f32>, Vec<f32>)> = None;
        let mut sweep = vec![];
        let candidates = match p.method {
            Method::Ridge => &p.lambdas,
            Method::Adam => &p.lrs,
        };
        for &h in candidates {
            let (w, b) = match p.method {
                Method::Ridge => ridge(tr, d, k, h),
                Method::Adam => train_adam(tr, d, k, h, p.epochs, p.batch_size, spec.multilabel, ctx.seed()),
            };
            let v = *score(if va.n > 0 { va } else { tr }, &w, &b, d, k, spec.map).get(key_metric).unwrap_or(&f64::NAN);
            sweep.push(json!({"hyper": h, "val": v}));
            if best.as_ref().is_none_or(|bb| v > bb.0) {
                best = Some((v, h, w, b));
            }
        }
        let (_, h, w, b) = best.ok_or_else(|| StageError::input("empty sweep: give at least one value in `lrs` / `lambdas`"))?;
        let val = score(va, &w, &b, d, k, spec.map);
        let (w, b) = if own_val {
            match p.method {
                Method::Ridge => ridge(&full, d, k, h),
                Method::Adam => train_adam(&full, d, k, h, p.epochs, p.batch_size, spec.multilabel, ctx.seed()),
            }
        } else {
            (w, b)
        };
        let test = score(&te, &w, &b, d, k, spec.map);
        let mut tasks = serde_json::Map::new();
        tasks.insert(spec.name.clone(), json!({"val": val, "test": test}));
        let mut probe = json!({"method": p.method, "chosen": h, "sweep": sweep, "source": info["source"]});
        if own_val {
            probe["chosen_on"] = json!("a seeded 10 % of train (the features have no val split); fitted again on all of train");
        }
        ctx.out.put_json("metrics.json", &json!({"tasks": tasks, "probe": probe}))
    }
    fn describe(&self, a: &InputArtifact, _out: &std::path::Path) -> Result<String, StageError> {
        let m: Value = a.json("metrics.json")?;
        Ok(serde_json::to_string_pretty(&m).unwrap_or_default())
    }
}

/// The id and model settings of the trained model a `features` node embeds with (its `model` input), from that
/// training node's parameters; `None` without one.
fn trained_model(inputs: &BTreeMap<String, Vec<(String, Value)>>) -> Option<(&str, crate::stages::modelspec::ModelParams)> {
    let (id, up) = inputs.get("model")?.first()?;
    let model = serde_json::from_value(Value::Object(
        up.as_object()?
            .iter()
            .filter(|(k, _)| model_params().iter().any(|s| s.name == k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
    .ok()?;
    Some((id, model))
}

/// The first 12 characters of a digest, as artifacts name one another.
fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}
