//! Running one node's stage in this process: the same code path for a local thread and a Slurm job.

use crate::stage::{ArtifactWriter, InputArtifact, Progress, Stage, StageCtx, StageError};
use crate::store::{Manifest, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Everything needed to run one node, independent of where it runs.
pub struct NodeJob<'a> {
    /// Node id.
    pub id: &'a str,
    /// The stage.
    pub stage: &'a Arc<dyn Stage>,
    /// Canonical parameters.
    pub params: &'a serde_json::Value,
    /// Directory of the declaring file.
    pub base_dir: &'a Path,
    /// Environment (seed, backend, …).
    pub env: &'a BTreeMap<String, String>,
    /// Slot → verified input artifacts.
    pub inputs: BTreeMap<String, Vec<InputArtifact>>,
    /// CPU threads granted.
    pub threads: usize,
    /// Accelerator indices granted.
    pub devices: Vec<u32>,
    /// Private resumable scratch directory.
    pub scratch: std::path::PathBuf,
    /// Where a program's whole output is kept ([`StageCtx::output_log`]).
    pub output_log: Option<std::path::PathBuf>,
}

/// Runs the stage and returns its artifact's manifest (every blob already durable). Panics become failures.
pub fn execute(job: NodeJob<'_>, store: &Store, progress: &(dyn Fn(Progress) + Sync)) -> Result<Manifest, StageError> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut ctx = StageCtx {
            id: job.id,
            params: job.params,
            base_dir: job.base_dir,
            env: job.env,
            inputs: job.inputs,
            out: ArtifactWriter::new(store.clone()),
            progress,
            threads: job.threads,
            devices: job.devices.clone(),
            scratch: job.scratch.clone(),
            output_log: job.output_log.clone(),
        };
        job.stage.run(&mut ctx).map(|_| ctx.out.finish(job.stage.output()))
    }));
    match result {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(StageError::failed(format!("panicked: {msg}")))
        }
    }
}
