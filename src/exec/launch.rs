//! How the coordinator starts a node: a [`Launcher`] runs it in this process ([`LocalLauncher`]) or hands it to
//! a cluster scheduler ([`super::slurm::SlurmLauncher`]). Results come back as [`Msg`]s on one channel; the
//! coordinator alone commits them to the index.

use super::node::{execute, NodeJob};
use super::ExecError;
use crate::spec::NodeResources;
use crate::stage::{InputArtifact, Progress, Stage, StageError};
use crate::store::{Manifest, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

/// A node ready to run, with everything resolved.
pub struct Launch {
    /// Node index in the graph.
    pub node: usize,
    /// Node id.
    pub id: String,
    /// Its cache key.
    pub key: String,
    /// The stage.
    pub stage: Arc<dyn Stage>,
    /// Canonical parameters.
    pub params: serde_json::Value,
    /// Directory of the declaring file.
    pub base_dir: PathBuf,
    /// Full environment.
    pub env: BTreeMap<String, String>,
    /// Slot → input artifacts.
    pub inputs: BTreeMap<String, Vec<InputArtifact>>,
    /// Resolved resources (`cpus` always set).
    pub resources: NodeResources,
    /// The accelerator indices the node is pinned to (empty when it holds none; a scheduler's job numbers its
    /// own from 0).
    pub devices: Vec<u32>,
    /// Resumable scratch directory.
    pub scratch: PathBuf,
    /// Re-run on request (`--force`): never take an earlier attempt's result.
    pub forced: bool,
}

/// Where a node ran, kept with its record (e.g. `slurm_job`, `state`, `log`).
pub type RunnerNotes = BTreeMap<String, String>;

/// A message from a running node.
pub enum Msg {
    /// Progress.
    Progress(usize, Progress),
    /// Something worth telling (a submission, a re-attachment).
    Note(usize, String),
    /// It ended: its manifest or error, milliseconds, and where it ran.
    Done(usize, Result<Manifest, StageError>, u64, RunnerNotes),
    /// Its artifact could not be fetched from the shared cache (why): compute it instead.
    FetchFailed(usize, String),
}

/// What a node that may run asks of a launcher: its id, where it is declared (`file:line:col`), its resources.
pub type Ask = (String, String, crate::spec::NodeResources);

/// Starts nodes and reports their ends.
pub trait Launcher {
    /// Whether the coordinator must keep within its CPU and device slots (a scheduler keeps its own).
    fn limited(&self) -> bool;
    /// Starts a node; its end arrives later as [`Msg::Done`].
    fn start(&mut self, l: Launch, tx: &Sender<Msg>) -> Result<(), ExecError>;
    /// Called often by the coordinator: poll whatever must be polled.
    fn tick(&mut self, tx: &Sender<Msg>) -> Result<(), ExecError>;
    /// The coordinator is interrupted: cancel (or, with `keep`, leave) what runs. Returns the nodes it cancelled.
    fn interrupt(&mut self, keep: bool) -> Vec<(usize, RunnerNotes)>;
    /// Whether work it started outlives the coordinator (submitted jobs), so `keep` can leave it running.
    fn keeps_jobs(&self) -> bool {
        false
    }
    /// Whether node `node` is work of its own that outlives the coordinator (a submitted job it watches).
    fn holds(&self, _node: usize) -> bool {
        false
    }
    /// Checks, before anything starts, that the nodes that will run can be started as asked: (id, where it is
    /// declared, what it asks for). An error (what is wrong, what to do: the executor's configuration or
    /// environment, e.g. a Slurm partition that does not exist) ends the run before anything is started. A
    /// launcher checks what it was not asked here when such a node starts.
    fn check(&mut self, _nodes: &[Ask]) -> Result<(), (String, String)> {
        Ok(())
    }
}

/// Runs each node on its own thread of this process, inside its own rayon pool of as many threads as the
/// node's CPU slots. One pool per node, not one shared pool: a kernel's parallel loop must never steal work of
/// another node (burn's kernels hold locks while they wait on their rayon jobs: two nodes sharing one pool
/// deadlocked on `table2`).
pub struct LocalLauncher {
    store: Store,
}

impl LocalLauncher {
    /// A launcher writing into `store`.
    pub fn new(store: Store) -> Self {
        LocalLauncher { store }
    }
}

impl Launcher for LocalLauncher {
    fn limited(&self) -> bool {
        true
    }

    fn start(&mut self, l: Launch, tx: &Sender<Msg>) -> Result<(), ExecError> {
        let (tx, store) = (tx.clone(), self.store.clone());
        let threads = l.resources.cpus.unwrap_or(1).max(1) as usize;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |k| format!("polyflow-{}-{k}", l.node))
            .build()
            .map_err(|e| ExecError::Other(e.to_string()))?;
        let name = format!("polyflow-node-{}", l.node);
        let attempt_log = crate::store::attempt_log(&store.root, &l.key);
        let (done_log, failed_log) = (crate::store::output_log(&store.root, &l.key), crate::store::failed_log(&store.root, &l.key));
        let spawn = std::thread::Builder::new().name(name).spawn(move || {
            pool.install(|| {
                let start = Instant::now();
                let i = l.node;
                let txp = tx.clone();
                let progress = move |p: Progress| {
                    let _ = txp.send(if p.note { Msg::Note(i, p.message) } else { Msg::Progress(i, p) });
                };
                let job = NodeJob {
                    id: &l.id,
                    stage: &l.stage,
                    params: &l.params,
                    base_dir: &l.base_dir,
                    env: &l.env,
                    inputs: l.inputs,
                    threads,
                    devices: l.devices.clone(),
                    scratch: l.scratch.clone(),
                    output_log: Some(attempt_log.clone()),
                };
                let result = execute(job, &store, &progress);
                // A program's output, where it wrote any: named in the run's (or the failure's) record, each kept
                // apart (a failed forced re-run leaves the log of the run that made the artifact).
                let mut notes = RunnerNotes::new();
                if std::fs::metadata(&attempt_log).is_ok_and(|m| m.len() > 0) {
                    let log = if result.is_ok() { &done_log } else { &failed_log };
                    let kept = if std::fs::rename(&attempt_log, log).is_ok() { log } else { &attempt_log };
                    notes.insert(crate::store::OUTPUT_NOTE.to_string(), kept.display().to_string());
                } else {
                    let _ = std::fs::remove_file(&attempt_log);
                }
                let _ = tx.send(Msg::Done(i, result, start.elapsed().as_millis() as u64, notes));
            })
        });
        spawn.map(|_| ()).map_err(|e| ExecError::Other(format!("cannot start a thread: {e}")))
    }

    fn tick(&mut self, _tx: &Sender<Msg>) -> Result<(), ExecError> {
        Ok(())
    }

    fn interrupt(&mut self, _keep: bool) -> Vec<(usize, RunnerNotes)> {
        vec![]
    }
}
