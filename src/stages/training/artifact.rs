//! A `model` artifact: its encoder read back as a starting point, and the files a training node writes.

use crate::model::checkpoint::{from_safetensors, to_safetensors, HostTensor};
use crate::model::count::count;
use crate::stage::{InputArtifact, StageCtx, StageError};
use crate::stages::modelspec::LoadedTask;
use crate::train::run::{Outcome, RunConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The encoder of a trained `model` artifact mapped onto `model`: shared blocks and final norm as they are, each
/// modality's tokenizer (and adapters) moved to that modality's index in `model`, tokenizers of modalities
/// `model` lacks and every task head dropped (a new task starts from a fresh head, as in MBT-style transfer).
pub(super) fn encoder_of(a: &InputArtifact, model: &crate::model::ModelConfig) -> Result<BTreeMap<String, HostTensor>, StageError> {
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

pub(super) fn write_model(
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
    let svg = crate::stages::plot::curves(out, &tasks.iter().map(|t| t.spec.name.clone()).collect::<Vec<_>>());
    ctx.out.put("curves.svg", svg.as_bytes())
}
