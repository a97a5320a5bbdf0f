//! `train` (one task) and `cotrain` (several tasks, any modalities): produce a `model` artifact —
//! `model.safetensors`, `config.json`, `metrics.json`, `steps.jsonl`, `evals.jsonl`, `curves.svg`.
//!
//! Resumable: every `checkpoint_every` updates the weights, optimizer state, step and data-stream positions go
//! to the node's scratch directory in the store; a killed run resumes there and ends with exactly the
//! weights and metrics of an uninterrupted run.

mod artifact;
mod block;
mod declared;
mod params;
mod resume;

pub use block::{backend_built, follow_key_env};
pub(crate) use block::{env_for_block, off_fused_cpu};
pub use declared::{check_init_fits, declared_config, declared_count};

use artifact::{encoder_of, write_model};
use params::{effective, opt_kind, optim_params, Accumulate, Arithmetic, CotrainParams, Optimizer, Precision, TrainParams};
use resume::{load_resume, Job};

use super::modelspec::{load_task, model_config, model_params, Gelu, LoadedTask};
use crate::model::checkpoint::from_safetensors;
use crate::model::count::count;
use crate::model::device::Backend;
use crate::model::import::from_timm;
use crate::stage::{parse, parse_checked, InputArtifact, InputSlot, ParamSpec, Problem, Resources, Stage, StageCtx, StageError};
use crate::train::run::RunConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `train` (`multi = false`) and `cotrain` (`multi = true`).
pub struct TrainStage {
    /// Co-training over several tasks.
    pub multi: bool,
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
        super::resume::save_resume(d.path(), &r).unwrap();
        let back = super::resume::load_resume(d.path()).expect("a checkpoint");
        assert_eq!(back.loss_scale, Some(scaler));
        assert_eq!(back.steps, r.steps, "the skipped update's infinite norm comes back");
        let f32_run = crate::train::run::Resume { step: 1, ..Default::default() };
        super::resume::save_resume(d.path(), &f32_run).unwrap();
        assert!(!std::fs::read_to_string(d.path().join("resume.json")).unwrap().contains("loss_scale"));
        assert_eq!(super::resume::load_resume(d.path()).unwrap().loss_scale, None);
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
