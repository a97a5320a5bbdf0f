//! One node as one Slurm job: its directory in the store, the spec the coordinator writes, and what the job
//! (`polyflow exec-node DIR`) does with it.
//!
//! ```text
//! jobs/<key[..24]>/job.json      what to run: pipeline, profile, node id, expected key, env, input manifests
//!                  job.sh        the batch script given to sbatch
//!                  slurm.json    the job id (written by the coordinator right after sbatch)
//!                  stdout.log    the job's output
//!                  stderr.log
//!                  progress.json the last progress report
//!                  result.json   the artifact manifest (written last, atomically, after every blob is durable)
//!                  error.json    the stage's error, when it failed
//!                  tmp/          the job's temp files (blobs are renamed from here into blobs/)
//! ```
//!
//! A job writes blobs and files in its own directory only; the coordinator alone writes the index.

use crate::exec::assess::fingerprint;
use crate::exec::node::{execute, NodeJob};
use crate::graph;
use crate::stage::{FailureClass, InputArtifact, Progress, Registry, StageError};
use crate::store::{Manifest, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One input artifact as the job receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInput {
    /// Upstream node id.
    pub id: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its key.
    pub key: Option<String>,
}

/// What the coordinator asks a job to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The root pipeline file (absolute).
    pub pipeline: PathBuf,
    /// The profile.
    pub profile: Option<String>,
    /// Command-line overrides (`--config` files absolute, `--set` arguments).
    #[serde(default)]
    pub overlay: crate::spec::Overlay,
    /// Node id.
    pub node: String,
    /// The key the coordinator computed; the job refuses to run if its own differs.
    pub key: String,
    /// Environment (seed, backend, …).
    pub env: BTreeMap<String, String>,
    /// The store root (absolute, on a filesystem the cluster shares).
    pub store: PathBuf,
    /// CPU threads.
    pub threads: usize,
    /// GPUs requested (`--gres=gpu:N`): the job's stage gets devices `0..gpus`, Slurm numbering a job's GPUs from 0.
    #[serde(default)]
    pub gpus: u32,
    /// Slot → inputs.
    pub inputs: BTreeMap<String, Vec<JobInput>>,
}

/// The job id recorded by the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    /// Slurm job id.
    pub job_id: String,
    /// Node id.
    pub node: String,
    /// Key.
    pub key: String,
    /// Unix seconds.
    pub submitted_at: u64,
}

/// A finished job's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// The key it ran under.
    pub key: String,
    /// Its artifact.
    pub manifest: Manifest,
    /// Milliseconds the stage took.
    pub ms: u64,
}

/// A failed job's error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobError {
    /// The key it ran under.
    pub key: String,
    /// `true` for bad user input (exit code 2).
    pub input: bool,
    /// The stage's message.
    pub message: String,
}

/// The directory of the job for `key`.
pub fn job_dir(store_root: &Path, key: &str) -> PathBuf {
    crate::store::job_dir(store_root, key)
}

/// Writes `v` as JSON to `dir/name` atomically (temp file, fsync, rename).
pub fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> std::io::Result<()> {
    crate::store::write_atomic(&dir.join(name), &serde_json::to_vec_pretty(v).expect("json"), true)
}

/// Reads `dir/name` as JSON; `None` if absent or undecodable.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
}

/// The last `n` lines of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How a job ended (the front end prints it into the job's log and exits with its code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The node was computed; `result.json` holds its manifest.
    Done,
    /// The stage failed (`error.json` says why).
    Failed(String),
    /// Bad input, or the pipeline changed since submission (`error.json` says why, where the job folder had its
    /// `job.json`).
    BadInput(String),
}

/// Runs the job in `dir` (inside a Slurm allocation); a node's notes go to `log` (the job's log, which
/// `polyflow status` names).
pub fn run_job(dir: &Path, reg: &Registry, log: &(dyn Fn(String) + Sync)) -> JobOutcome {
    let Some(spec) = read_json::<JobSpec>(dir, "job.json") else {
        return JobOutcome::BadInput(format!("{}: missing or unreadable job.json", dir.join("job.json").display()));
    };
    let fail = |input: bool, message: String| {
        let _ = write_json(dir, "error.json", &JobError { key: spec.key.clone(), input, message: message.clone() });
        if input {
            JobOutcome::BadInput(message)
        } else {
            JobOutcome::Failed(message)
        }
    };
    let g = match crate::spec::load_with(&spec.pipeline, spec.profile.as_deref(), &spec.overlay).and_then(|p| graph::build(p, reg)) {
        Ok(g) => g,
        Err(e) => return fail(true, format!("the pipeline no longer loads: {e}")),
    };
    let Some(&i) = g.by_id.get(&spec.node) else {
        return fail(true, format!("node `{}` is no longer in {}", spec.node, spec.pipeline.display()));
    };
    // The pipeline may have been edited since submission: run only what the coordinator asked for.
    let digest = |u: usize| spec.inputs.values().flatten().find(|x| x.id == g.nodes[u].id).map(|x| x.manifest.digest.clone());
    let externals = crate::exec::assess::Externals::new(crate::store::file_digests(&spec.store));
    let fp = match fingerprint(&g, i, &spec.env, &externals, &digest) {
        Ok(Ok(fp)) => fp,
        Ok(Err(m)) => return fail(true, m),
        Err(pending) => return fail(true, format!("inputs missing from job.json: {}", pending.ids.join(", "))),
    };
    let key = fp.key();
    if key != spec.key {
        return fail(
            true,
            format!(
                "node `{}` changed since it was submitted (its key is now {}, not {}); run `polyflow run` again",
                spec.node,
                &key[..12],
                &spec.key[..12]
            ),
        );
    }
    // Compute what the key names (the coordinator's machine made it, and this one may choose otherwise).
    if let Err(m) = g.nodes[i].stage.follow_env(&g.nodes[i].params, &fp.env) {
        return fail(false, format!("node `{}`: {m}", spec.node));
    }
    let mut store = match Store::open(&spec.store) {
        Ok(s) => s,
        Err(e) => return fail(false, e.to_string()),
    };
    store.blobs = match store.blobs.clone().with_tmp(&dir.join("tmp")) {
        Ok(b) => b,
        Err(e) => return fail(false, e.to_string()),
    };
    let inputs: BTreeMap<String, Vec<InputArtifact>> = spec
        .inputs
        .iter()
        .map(|(slot, v)| {
            let arts = v
                .iter()
                .map(|x| {
                    let mut a = InputArtifact::new(x.id.clone(), x.manifest.clone(), store.clone());
                    a.key = x.key.clone();
                    a
                })
                .collect();
            (slot.clone(), arts)
        })
        .collect();
    let n = &g.nodes[i];
    let last = std::sync::Mutex::new(Instant::now() - Duration::from_secs(10));
    let progress = |p: Progress| {
        if p.note {
            log(format!("note: {}: {}", n.id, p.message));
            return;
        }
        let mut l = last.lock().unwrap();
        if l.elapsed() >= Duration::from_millis(500) || p.done == p.total {
            *l = Instant::now();
            let _ = write_json(dir, "progress.json", &p);
        }
    };
    let job = NodeJob {
        id: &n.id,
        stage: &n.stage,
        params: &n.params,
        base_dir: &n.base_dir,
        env: &spec.env,
        inputs,
        threads: spec.threads.max(1),
        devices: (0..spec.gpus).collect(),
        scratch: crate::store::partial_dir(&spec.store, &spec.key),
        // The job's `stdout.log` keeps it.
        output_log: None,
    };
    let t0 = Instant::now();
    // Stay within the allocation: rayon (burn's kernels) would otherwise start one thread per core of the
    // compute node, not per core the job was given.
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(spec.threads.max(1)).build() {
        Ok(p) => p,
        Err(e) => return fail(false, format!("thread pool: {e}")),
    };
    match pool.install(|| execute(job, &store, &progress)) {
        Ok(manifest) => {
            let r = JobResult { key: spec.key.clone(), manifest, ms: t0.elapsed().as_millis() as u64 };
            match write_json(dir, "result.json", &r) {
                Ok(()) => JobOutcome::Done,
                Err(e) => fail(false, format!("{}: {e}", dir.join("result.json").display())),
            }
        }
        Err(StageError { class, message }) => fail(class == FailureClass::Input, message),
    }
}
