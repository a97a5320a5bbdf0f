//! Cache keys and the explanations of why a node is dirty.
//!
//! # What goes into a key
//!
//! | part | why |
//! |---|---|
//! | stage kind and `Stage::version` | a stage whose meaning changes bumps its version |
//! | canonical parameters (defaults filled, sorted keys, canonical JSON) | the node's declared settings |
//! | content digests of every input artifact, per slot, in order | *not* the upstream keys: an upstream re-run that produces identical bytes leaves downstream fresh (early cutoff) |
//! | the environment entries the stage declares (seed, backend, precision) | they change results |
//! | a digest of external files the stage reads (e.g. a dataset folder) | content, never paths or mtimes ([`files`]: a stat cache avoids re-reading unchanged files) |
//!
//! Never hashed: absolute paths, mtimes, durations; node ids of inputs only for kinds that see them (a `command`'s
//! `$POLYFLOW_IN/<slot>/<id>/`), else kept only to explain.
//! The key is blake3 over the canonical JSON of [`Fingerprint::hashed`]; [`compare`] exists only to explain.

pub mod files;
mod reason;

pub use files::FileDigests;
pub use reason::{compare, DirtyReason, CHANGES_SHOWN};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One input artifact as seen by a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDigest {
    /// Upstream node id (explanation only, not hashed).
    pub id: String,
    /// Content digest of the upstream artifact.
    pub digest: String,
}

/// Everything that determines a node's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Stage kind.
    pub kind: String,
    /// Stage version.
    pub version: u32,
    /// Canonical parameters.
    pub params: serde_json::Value,
    /// Slot → input digests.
    pub inputs: BTreeMap<String, Vec<InputDigest>>,
    /// Environment entries the stage depends on.
    pub env: BTreeMap<String, String>,
    /// Digest of external files read by the stage, if any.
    pub external: Option<String>,
    /// The folders and files that digest was made of, with their own digests (explanations only, not hashed:
    /// they let `status` name the files that changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_parts: Vec<files::Part>,
    /// The node's id, for kinds whose output holds it ([`crate::stage::Stage::id_in_output`]: a task's name, which
    /// metrics are reported under); hashed only then, so a renamed node of such a kind gets a key of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<String>,
    /// Whether its inputs' node ids are hashed too, for kinds whose output may depend on them
    /// ([`crate::stage::Stage::input_ids_in_output`]: a `command` finds its inputs in folders named by them), so that
    /// renaming an input node gives such a node a key of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_ids: bool,
    /// The pipeline's `[vars]` its parameters name, as `{NAME}` writes them (explanations only, not hashed:
    /// `status` says `vars.thr changed 3 → 4` rather than how each parameter written with it changed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Those parameters as written, before `{NAME}` was replaced (explanations only): one written the same way
    /// before and now changed through the variables alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written: BTreeMap<String, serde_json::Value>,
}

impl Fingerprint {
    /// The part of the fingerprint that is hashed (input ids dropped, unless [`Self::input_ids`]).
    pub fn hashed(&self) -> serde_json::Value {
        let inputs: BTreeMap<&String, Vec<&str>> =
            self.inputs.iter().map(|(k, v)| (k, v.iter().map(|d| d.digest.as_str()).collect())).collect();
        let mut v = serde_json::json!({
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "inputs": inputs,
            "env": self.env,
            "external": self.external,
        });
        if let Some(id) = &self.named {
            v["id"] = serde_json::json!(id);
        }
        if self.input_ids {
            let ids: BTreeMap<&String, Vec<&str>> =
                self.inputs.iter().map(|(k, v)| (k, v.iter().map(|d| d.id.as_str()).collect())).collect();
            v["input_ids"] = serde_json::json!(ids);
        }
        v
    }

    /// The cache key: blake3 hex of the canonical JSON of [`Self::hashed`].
    pub fn key(&self) -> String {
        let bytes = serde_json::to_vec(&self.hashed()).expect("json");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// The last successful run of a node id, remembered to explain staleness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: String,
    /// Key it ran under.
    pub key: String,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Digest of the artifact it produced.
    pub artifact: String,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
    /// Unix time (seconds) of completion.
    pub finished_at: u64,
    /// Where it ran, when not in this process (e.g. `slurm_job`, `state`, `log`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runner: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(p: serde_json::Value, id: &str) -> Fingerprint {
        let mut inputs = BTreeMap::new();
        inputs.insert("data".to_string(), vec![InputDigest { id: id.into(), digest: "abc".into() }]);
        Fingerprint {
            kind: "k".into(),
            version: 1,
            params: p,
            inputs,
            env: BTreeMap::new(),
            external: None,
            external_parts: vec![],
            named: None,
            input_ids: false,
            vars: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    #[test]
    fn key_ignores_input_ids_but_not_params() {
        let a = fp(serde_json::json!({"lr": 0.1}), "x");
        assert_eq!(a.key(), fp(serde_json::json!({"lr": 0.1}), "y").key());
        assert_ne!(a.key(), fp(serde_json::json!({"lr": 0.2}), "x").key());
    }

    /// The variables a node's parameters were written with, and those parameters as written, explain a change
    /// and are never in the key (the parameters after substitution are).
    #[test]
    fn key_ignores_vars_and_parameters_as_written() {
        let a = fp(serde_json::json!({"run": "t=3"}), "x");
        let mut b = a.clone();
        b.vars.insert("t".into(), "3".into());
        b.written.insert("run".into(), serde_json::json!("t={t}"));
        assert_eq!(a.key(), b.key());
    }
}
