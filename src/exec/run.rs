//! The executor: runs stale nodes in dependency order, independent ones in parallel, and commits each
//! artifact (blobs first, then the index entry) as it finishes.

use super::assess::{decide, fingerprint, Assessment};
use super::event::{Event, NodeTiming, PlanEntry, Sink, State};
use super::launch::{Launch, Launcher, LocalLauncher, Msg};
use crate::fingerprint::{DirtyReason, NodeRecord};
use crate::graph::Graph;
use crate::spec::{ExecutorKind, NodeResources, OnInterrupt};
use crate::stage::{FailureClass, InputArtifact, StageError};
use crate::store::{FailRecord, Index, Manifest, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Target node ids (empty = all).
    pub targets: Vec<String>,
    /// Node ids to re-run even if fresh.
    pub force: Vec<String>,
    /// Re-run everything selected.
    pub force_all: bool,
    /// Parallel CPU slots (0 = number of cores).
    pub jobs: usize,
    /// Accelerator slots.
    pub devices: usize,
    /// Environment entries (seed, backend, …).
    pub env: BTreeMap<String, String>,
    /// Executor override (`--executor`); `None` = the pipeline's `[executor] kind`.
    pub executor: Option<ExecutorKind>,
    /// Leave submitted jobs running when interrupted (`--keep-jobs`), overriding `[executor] on_interrupt`.
    pub keep_jobs: bool,
    /// Set (e.g. by a Ctrl-C handler) to stop the run: jobs are cancelled or left as configured.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Outcome counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Nodes that ran.
    pub ran: Vec<String>,
    /// Nodes found fresh.
    pub fresh: Vec<String>,
    /// Nodes that failed, with their failure class.
    pub failed: Vec<(String, FailureClass)>,
    /// Nodes skipped because an upstream failed.
    pub skipped: Vec<String>,
}

/// Keeps the index open while commits arrive and closes it when idle, so `status` can read meanwhile.
struct IdleIndex<'a> {
    store: &'a Store,
    index: Option<Index>,
    last_use: Instant,
}

impl IdleIndex<'_> {
    fn get(&mut self) -> Result<&Index, StoreError> {
        if self.index.is_none() {
            self.index = Some(self.store.index()?);
        }
        self.last_use = Instant::now();
        Ok(self.index.as_ref().unwrap())
    }
    /// Closes the index when it has not been used for a while (progress messages do not count).
    fn close_if_idle(&mut self) {
        if self.index.is_some() && self.last_use.elapsed() > Duration::from_millis(250) {
            self.index = None;
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs the selected part of `g`. The caller holds the store's writer lock.
pub fn run(g: &Graph, store: &Store, opts: &RunOptions, sink: Sink<'_>) -> Result<RunSummary, super::ExecError> {
    let t0 = Instant::now();
    let sel = g.select(&opts.targets)?;
    for f in &opts.force {
        if !g.by_id.contains_key(f) {
            return Err(
                crate::spec::SpecError::nowhere(crate::spec::SpecErrorKind::UnknownTarget, format!("--force: no node `{f}`")).into()
            );
        }
    }
    store.blobs.clean_tmp();
    let jobs = if opts.jobs == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { opts.jobs };
    let forced: BTreeSet<usize> =
        if opts.force_all { sel.iter().copied().collect() } else { opts.force.iter().map(|f| g.by_id[f]).collect() };
    let mut idx = IdleIndex { store, index: None, last_use: Instant::now() };

    // Plan.
    let mut assessed: BTreeMap<usize, Assessment> = {
        let index = idx.get()?;
        super::assess::assess_all(g, &sel, store, index, &opts.env, &|i| forced.contains(&i))
    };
    sink(&Event::Plan {
        nodes: sel
            .iter()
            .map(|&i| {
                let a = &assessed[&i];
                PlanEntry {
                    id: g.nodes[i].id.clone(),
                    kind: g.nodes[i].stage.kind().into(),
                    state: a.state,
                    reasons: a.reasons.iter().map(|r| r.to_string()).collect(),
                }
            })
            .collect(),
    });

    let kind = opts.executor.unwrap_or(g.executor.kind);
    let mut launcher: Box<dyn Launcher> = match kind {
        ExecutorKind::Local => Box::new(LocalLauncher::new(store.clone())),
        ExecutorKind::Slurm => Box::new(super::slurm::SlurmLauncher::new(g, store)?),
    };
    let keep = opts.keep_jobs || g.executor.on_interrupt == OnInterrupt::Keep;
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut done: BTreeMap<usize, Manifest> = BTreeMap::new();
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut summary = RunSummary::default();
    let mut timings: Vec<NodeTiming> = vec![];
    let mut running: BTreeMap<usize, (usize, bool, Instant)> = BTreeMap::new(); // node → (cpu slots, device, started)
    let mut free_cpu = jobs;
    let mut free_dev = opts.devices;
    let selected: BTreeSet<usize> = sel.iter().copied().collect();
    let mut waiting: Vec<usize> = sel.clone();

    // Nodes fresh at plan time.
    waiting.retain(|&i| {
        if assessed[&i].state == State::Fresh {
            done.insert(i, assessed[&i].manifest.clone().unwrap());
            summary.fresh.push(g.nodes[i].id.clone());
            timings.push(NodeTiming { id: g.nodes[i].id.clone(), outcome: "fresh", ms: 0 });
            sink(&Event::Fresh { id: g.nodes[i].id.clone(), kind: g.nodes[i].stage.kind().into() });
            false
        } else {
            true
        }
    });

    loop {
        // Dispatch every ready node that fits the free slots, in topological order.
        let mut k = 0;
        while k < waiting.len() {
            let i = waiting[k];
            let ups: Vec<usize> = g.nodes[i].inputs.values().flatten().copied().collect();
            if let Some(&bad) = ups.iter().find(|u| failed.contains(u)) {
                waiting.remove(k);
                failed.insert(i);
                summary.skipped.push(g.nodes[i].id.clone());
                timings.push(NodeTiming { id: g.nodes[i].id.clone(), outcome: "skipped", ms: 0 });
                sink(&Event::Skipped { id: g.nodes[i].id.clone(), because: g.nodes[bad].id.clone() });
                continue;
            }
            if !ups.iter().all(|u| done.contains_key(u) || !selected.contains(u)) {
                k += 1;
                continue;
            }
            // Re-decide with the real input digests (early cutoff: identical upstream bytes → fresh).
            let res = g.nodes[i].stage.resources(&g.nodes[i].params, &opts.env);
            let want = g.nodes[i].resources.over(&g.executor.defaults);
            let cpus_req = want.cpus.map(|c| c as usize).unwrap_or_else(|| res.cpu_slots.clamp(1, jobs));
            let gpus = want.gpus.unwrap_or(u32::from(res.device));
            // Locally a node holds slots of `-j` / `--devices` (cores clamped to the pool); a scheduler keeps its
            // own accounting and gets the cores asked for.
            let limited = launcher.limited();
            let (cpu, dev) = if limited { (cpus_req.clamp(1, jobs), gpus > 0 && opts.devices > 0) } else { (0, false) };
            let threads = if limited { cpu } else { cpus_req };
            if cpu > free_cpu || (dev && free_dev == 0) {
                k += 1;
                continue;
            }
            // Always re-check the index: another node with the same key (e.g. a matrix entry identical to a
            // separately declared node) may have produced it meanwhile.
            let a = {
                let fp = fingerprint(g, i, &opts.env, &|u| done.get(&u).map(|m| m.digest.clone()));
                let index = idx.get()?;
                decide(g, i, fp, store, index, forced.contains(&i))
            };
            if a.state == State::Fresh {
                assessed.insert(i, a.clone());
                waiting.remove(k);
                done.insert(i, a.manifest.clone().unwrap());
                summary.fresh.push(g.nodes[i].id.clone());
                timings.push(NodeTiming { id: g.nodes[i].id.clone(), outcome: "fresh", ms: 0 });
                sink(&Event::Fresh { id: g.nodes[i].id.clone(), kind: g.nodes[i].stage.kind().into() });
                continue;
            }
            waiting.remove(k);
            free_cpu -= cpu;
            if dev {
                free_dev -= 1;
            }
            let Some(fp) = a.fingerprint.clone() else {
                // Fingerprinting failed (e.g. unreadable sources): report as a failure of this node.
                let msg = a.reasons.first().map(|r| r.to_string()).unwrap_or_default();
                tx.send(Msg::Done(i, Err(StageError::input(msg)), 0, Default::default())).ok();
                running.insert(i, (cpu, dev, Instant::now()));
                assessed.insert(i, a);
                continue;
            };
            let reasons: Vec<String> =
                a.reasons.iter().filter(|r| !matches!(r, DirtyReason::UpstreamPending { .. })).map(|r| r.to_string()).collect();
            let reasons = if reasons.is_empty() { vec!["inputs changed".to_string()] } else { reasons };
            sink(&Event::Started { id: g.nodes[i].id.clone(), kind: g.nodes[i].stage.kind().into(), reasons });
            let mut inputs: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
            for (slot, ups) in &g.nodes[i].inputs {
                inputs.insert(
                    slot.clone(),
                    ups.iter()
                        .map(|&u| {
                            let mut a = InputArtifact::new(g.nodes[u].id.clone(), done[&u].clone(), store.clone());
                            a.key = assessed.get(&u).and_then(|x| x.key.clone());
                            a
                        })
                        .collect(),
                );
            }
            let node = &g.nodes[i];
            let mut full_env = opts.env.clone();
            full_env.extend(fp.env.clone());
            let key = fp.key();
            let resources = NodeResources { cpus: Some(threads as u32), gpus: Some(gpus), ..want };
            running.insert(i, (cpu, dev, Instant::now()));
            assessed.insert(i, Assessment { fingerprint: Some(fp), ..a });
            launcher.start(
                Launch {
                    node: i,
                    id: node.id.clone(),
                    scratch: store.root.join("partial").join(&key[..24]),
                    key,
                    stage: node.stage.clone(),
                    params: node.params.clone(),
                    base_dir: node.base_dir.clone(),
                    env: full_env,
                    inputs,
                    resources,
                    forced: forced.contains(&i),
                },
                &tx,
            )?;
        }
        if running.is_empty() {
            break;
        }
        if opts.interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
            for (i, runner) in launcher.interrupt(keep) {
                let a = &assessed[&i];
                let error = "cancelled: the coordinating `polyflow run` was interrupted; run again to resubmit".to_string();
                if let Some(key) = &a.key {
                    idx.get()?.fail(&FailRecord { id: g.nodes[i].id.clone(), key: key.clone(), error, runner })?;
                }
            }
            if let Some(ix) = &idx.index {
                ix.flush()?;
            }
            let names: Vec<String> = running.keys().map(|&i| g.nodes[i].id.clone()).collect();
            let kept = if keep && !names.is_empty() && launcher.keeps_jobs() { running.len() } else { 0 };
            return Err(super::ExecError::Interrupted { kept, running: names, done: summary.ran.len() });
        }
        launcher.tick(&tx)?;
        idx.close_if_idle();
        let msg = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Progress(i, p) => sink(&Event::Progress { id: g.nodes[i].id.clone(), done: p.done, total: p.total, message: p.message }),
            Msg::Note(i, message) => sink(&Event::Note { id: g.nodes[i].id.clone(), message }),
            Msg::Done(i, result, ms, runner) => {
                let (cpu, dev, _) = running.remove(&i).unwrap();
                free_cpu += cpu;
                if dev {
                    free_dev += 1;
                }
                let id = g.nodes[i].id.clone();
                let kind = g.nodes[i].stage.kind().to_string();
                let a = &assessed[&i];
                match result {
                    Ok(manifest) => {
                        let fp = a.fingerprint.clone().unwrap();
                        let key = fp.key();
                        let record = NodeRecord {
                            id: id.clone(),
                            key: key.clone(),
                            fingerprint: fp,
                            artifact: manifest.digest.clone(),
                            duration_ms: ms,
                            finished_at: now_secs(),
                            runner,
                        };
                        idx.get()?.commit(&key, &manifest, &record)?;
                        let _ = std::fs::remove_dir_all(store.root.join("partial").join(&key[..24]));
                        sink(&Event::Finished { id: id.clone(), kind, ms, artifact: manifest.digest.clone(), size: manifest.size() });
                        done.insert(i, manifest);
                        summary.ran.push(id.clone());
                        timings.push(NodeTiming { id, outcome: "ran", ms });
                    }
                    Err(e) => {
                        if let Some(key) = &a.key {
                            idx.get()?.fail(&FailRecord { id: id.clone(), key: key.clone(), error: e.message.clone(), runner })?;
                        }
                        sink(&Event::Failed { id: id.clone(), kind, at: g.nodes[i].location.clone(), error: e.message.clone() });
                        failed.insert(i);
                        summary.failed.push((id.clone(), e.class));
                        timings.push(NodeTiming { id, outcome: "failed", ms });
                    }
                }
            }
        }
    }
    if let Some(ix) = &idx.index {
        ix.flush()?;
    }
    sink(&Event::Summary {
        ran: summary.ran.len(),
        fresh: summary.fresh.len(),
        failed: summary.failed.len(),
        skipped: summary.skipped.len(),
        ms: t0.elapsed().as_millis() as u64,
        nodes: timings,
    });
    Ok(summary)
}
