//! The model a training node will build, from its tasks' declarations: counted and checked before any data exists.

use crate::model::count::count;
use crate::model::import::{fits, VitInfo};
use crate::model::ModelConfig;
use crate::stage::{Problem, StageError};
use crate::stages::modelspec::{model_config, ModelParams};
use serde_json::Value;
use std::collections::BTreeMap;

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
