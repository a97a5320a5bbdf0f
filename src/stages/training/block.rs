//! Which kernels a model-bearing node runs on (the fused CPU block or burn's composition, AMX or not), as its
//! key's environment says, and whether this build has its backend.

use super::params::{Arithmetic, Precision};
use crate::model::device::Backend;
use crate::stage::Problem;
use crate::stages::modelspec::Gelu;
use serde_json::Value;
use std::collections::BTreeMap;

/// Whether a model-bearing node with `params` under `env` (its key's entries) runs off the fused CPU block: on
/// another backend than `flex`, with a setting the fused kernels do not have ([`never_fused`]), or with the
/// fused block turned off (`POLYFLOW_FUSED_CPU=0`, the `cpu_block` entry: burn's composition rounds
/// differently, so its artifacts must not stand in for the fused block's under one key, nor the other way
/// round). A function of the key's inputs alone.
pub(crate) fn off_fused_cpu(params: &Value, env: &BTreeMap<String, String>) -> bool {
    Backend::from_env(env).is_ok_and(|b| b != Backend::Flex) || never_fused(params) || env.contains_key(crate::model::device::CPU_BLOCK)
}

/// Settings the fused CPU block does not implement: the erf GELU, f16.
pub(super) fn never_fused(params: &Value) -> bool {
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

/// [`crate::stage::Stage::follow_env`] of the model-bearing nodes (the inverse of `env_for_block`): the fused CPU block on or
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
