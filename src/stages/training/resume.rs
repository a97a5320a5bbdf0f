//! The resumable checkpoint in a training node's scratch folder, and the job that trains on a backend's devices.

use crate::model::checkpoint::{from_safetensors, to_safetensors, HostTensor};
use crate::model::device::BackendJob;
use crate::stage::Progress;
use crate::train::batch::Cursor;
use crate::train::run::{run, Outcome, Resume, RunConfig, TaskRun};
use burn::tensor::backend::AutodiffBackend;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) struct Job<'a> {
    pub(super) cfg: &'a RunConfig,
    pub(super) tasks: Vec<TaskRun>,
    pub(super) init: Option<BTreeMap<String, HostTensor>>,
    pub(super) resume: Option<Resume>,
    pub(super) progress: &'a (dyn Fn(Progress) + Sync),
    pub(super) scratch: &'a Path,
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

pub(super) fn save_resume(dir: &Path, r: &Resume) -> std::io::Result<()> {
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

pub(super) fn load_resume(dir: &Path) -> Option<Resume> {
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
