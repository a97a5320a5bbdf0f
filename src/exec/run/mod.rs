//! The scheduler: runs stale nodes in dependency order, independent ones in parallel, and commits each
//! artifact (blobs first, then the index entry) as it finishes.
//!
//! # Steps
//!
//! | step | what it does |
//! |---|---|
//! | [`Scheduler::plan`] | assesses every selected node once (fingerprint from its inputs' digests, key lookup, blobs present with their sizes) and emits the plan; fresh nodes are done at once |
//! | [`Scheduler::dispatch_ready`] | in topological order, each ready node (a count of unfinished inputs per waiting node, decremented as inputs finish, so a step costs what changed, not the size of the graph) that fits the free CPU/device slots is re-decided with its inputs' *actual* digests (early cutoff: an upstream that re-ran to identical bytes leaves it fresh) and, if still stale, handed to the [`Launcher`] |
//! | [`Scheduler::commit`] | a node's result: its blobs are already durable; the index entry (artifact then record) is written, its scratch removed |
//! | [`Scheduler::fail`] | a node's failure is recorded (its dependents are skipped), unless it failed because an input blob was damaged (that input is recomputed and the node retried once) or its work failed with attempts left (`retries`: it starts again) |
//! | [`Scheduler::interrupt`] | Ctrl-C / SIGTERM: what runs is cancelled (or left to a scheduler with `keep`) and recorded as such |
//!
//! Each node is fingerprinted from scratch at most once per run: the external files it reads are digested
//! once ([`Externals`]); dispatch only recombines digests and looks the key up again (another node with the same
//! key may have produced it meanwhile).

mod fetch;
mod settle;

use super::assess::{decide, fingerprint, Assessment, Externals};
use super::event::{Event, NodeTiming, Outcome, PlanEntry, Sink, State};
use super::launch::{Launch, Launcher, LocalLauncher, Msg, RunnerNotes};
use crate::fingerprint::{DirtyReason, NodeRecord};
use crate::graph::Graph;
use crate::spec::{ExecutorKind, NodeResources, OnInterrupt};
use crate::stage::{FailureClass, InputArtifact, StageError};
use crate::store::{ArtifactCache, FailRecord, Index, Manifest, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Attempts after a failed one for nodes whose `resources` set no `retries` (`--retries`), over the
    /// `[executor]` table's.
    pub retries: Option<u32>,
    /// Flags that stop the run when any is set (e.g. by a Ctrl-C handler, or when the events' reader has gone):
    /// jobs are cancelled or left as configured.
    pub interrupt: Vec<Arc<AtomicBool>>,
    /// A shared artifact cache: stale nodes whose key it holds are fetched, not computed.
    pub cache: Option<Arc<dyn ArtifactCache>>,
    /// Publish what this run computes to `cache`.
    pub publish: bool,
    /// Kept with the record of every node this run computes (e.g. the command line's profile and overrides:
    /// what settings made an artifact, so that explanations can tell its results from other settings').
    pub notes: BTreeMap<String, String>,
}

/// Outcome of a run.
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
    /// Nodes fetched from the shared cache.
    pub fetched: Vec<String>,
    /// The artifact of every selected node that is done (fresh or ran), by node id.
    pub artifacts: BTreeMap<String, Manifest>,
    /// The key of each of those nodes' artifacts, by node id.
    pub keys: BTreeMap<String, String>,
}

/// Keeps the index open while commits arrive and closes it when idle, so `status` can read meanwhile.
struct IdleIndex<'a> {
    store: &'a Store,
    index: Option<Index>,
    last_use: Instant,
    /// Where another process asks for the index.
    wanted: crate::store::Wanted,
}

impl IdleIndex<'_> {
    fn get(&mut self) -> Result<&Index, StoreError> {
        if self.index.is_none() {
            self.index = Some(self.store.index()?);
        }
        self.last_use = Instant::now();
        Ok(self.index.as_ref().unwrap())
    }
    /// Closes the index when it has not been used for a while (progress messages do not count), or at once when
    /// another process waits for it (`status` while nodes commit one after another).
    fn close_if_idle(&mut self) {
        if self.index.is_some() && (self.last_use.elapsed() > Duration::from_millis(250) || self.wanted.now()) {
            self.index = None;
        }
    }
    fn flush(&self) -> Result<(), StoreError> {
        match &self.index {
            Some(ix) => ix.flush(),
            None => Ok(()),
        }
    }
}

/// Publications to the shared cache in flight at once.
const MAX_PUBLISHING: usize = 4;

/// A node that holds slots.
struct Running {
    cpu: usize,
    /// Accelerator indices it holds.
    dev: Vec<u32>,
    /// A copy from the shared cache (no `started` event was emitted for it).
    fetch: bool,
    /// When it started (seconds since the Unix epoch), for `status` in another process.
    since: u64,
    /// When it started, for how long it ran when stopped.
    t: std::time::Instant,
}

/// The state of one run.
struct Scheduler<'a> {
    g: &'a Graph,
    store: &'a Store,
    opts: &'a RunOptions,
    sink: Sink<'a>,
    idx: IdleIndex<'a>,
    externals: Externals,
    launcher: Box<dyn Launcher>,
    tx: mpsc::Sender<Msg>,
    jobs: usize,
    free_cpu: usize,
    /// Accelerator indices not held by a running node (`0..--devices`).
    free_dev: BTreeSet<u32>,
    /// Selected nodes, by topological position.
    order: BTreeMap<usize, usize>,
    forced: BTreeSet<usize>,
    assessed: BTreeMap<usize, Assessment>,
    /// Selected node → selected nodes that read it.
    dependents: HashMap<usize, Vec<usize>>,
    /// Waiting node → how many of its (distinct, selected) inputs are not done yet.
    pending: HashMap<usize, usize>,
    /// Waiting nodes whose inputs are all done, by topological position.
    ready: BTreeSet<(usize, usize)>,
    running: BTreeMap<usize, Running>,
    done: BTreeMap<usize, Manifest>,
    /// The key each done node's artifact has.
    done_keys: BTreeMap<usize, String>,
    failed: BTreeSet<usize>,
    /// Nodes already retried after a damaged input.
    retried: BTreeSet<usize>,
    /// Failed attempts of nodes that may retry (`retries`), by node.
    attempts: HashMap<usize, u32>,
    /// The settings this run is made under (`Pipeline::settings`), made once: a reason compared with a run of other
    /// settings says which.
    settings: String,
    /// Nodes whose fetch from the cache failed (computed instead).
    no_fetch: BTreeSet<usize>,
    /// Publications to the shared cache in progress (joined before the run returns; failures are told then).
    /// Publications in flight: each ends `Ok(true)` when it added the entry, `Ok(false)` when it was there.
    publishing: Vec<(usize, std::thread::JoinHandle<Result<bool, String>>)>,
    /// Artifacts this run added to the shared cache.
    published: usize,
    /// What is in flight changed since `running.json` was last written ([`Scheduler::write_running`]).
    running_changed: bool,
    /// When `running.json` was last written.
    running_written: Option<Instant>,
    summary: RunSummary,
    timings: Vec<NodeTiming>,
    /// Nodes of the plan to run found fresh once their inputs were computed (the same inputs as before).
    cut_off: usize,
}

/// What node `i` asks of the executor with `jobs` CPU slots: (cores, accelerators). Its `resources` (or the
/// executor's defaults) first, else what its kind needs; the kind's accelerators are a floor: `resources.gpus`
/// below them would leave a data-parallel node's replicas taking turns on fewer GPUs than it has, silently.
pub fn requests(g: &Graph, i: usize, env: &BTreeMap<String, String>, jobs: usize) -> (usize, u32) {
    let node = &g.nodes[i];
    let res = node.stage.resources(&node.params, env);
    let want = node.resources.over(&g.executor.defaults);
    (want.cpus.map(|c| c as usize).unwrap_or_else(|| res.cpu_slots.clamp(1, jobs)), want.gpus.unwrap_or(0).max(res.devices))
}

/// The `-j` the executor runs with: `jobs`, or the machine's cores for 0.
pub fn cpu_slots(jobs: usize) -> usize {
    if jobs == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        jobs
    }
}

/// Runs the selected part of `g`. The caller holds the store's writer lock.
pub fn run(g: &Graph, store: &Store, opts: &RunOptions, sink: Sink<'_>) -> Result<RunSummary, super::ExecError> {
    let t0 = Instant::now();
    // However the run ends, `running.json` no longer names this process's nodes.
    struct Cleared<'a>(&'a std::path::Path);
    impl Drop for Cleared<'_> {
        fn drop(&mut self) {
            super::running::clear(self.0);
        }
    }
    let _cleared = Cleared(&store.root);
    let sel = g.select(&opts.targets)?;
    // A node, or every node of a declaration (`st.digits`).
    let mut forced = vec![];
    for f in &opts.force {
        match g.resolve(f) {
            Some(ids) => forced.extend(ids),
            None => {
                return Err(crate::spec::SpecError::nowhere(crate::spec::SpecErrorKind::UnknownTarget, format!("--force: no node `{f}`"))
                    .help(g.suggest(f))
                    .into())
            }
        }
    }
    store.blobs.clean_tmp();
    let jobs = cpu_slots(opts.jobs);
    let launcher: Box<dyn Launcher> = match opts.executor.unwrap_or(g.executor.kind) {
        ExecutorKind::Local => Box::new(LocalLauncher::new(store.clone())),
        ExecutorKind::Slurm => Box::new(super::slurm::SlurmLauncher::new(g, store)?),
    };
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut s = Scheduler {
        g,
        store,
        opts,
        sink,
        idx: IdleIndex {
            store,
            index: None,
            last_use: Instant::now(),
            wanted: crate::store::Wanted::new(&crate::store::index_dir(&store.root)),
        },
        externals: Externals::of(store),
        launcher,
        tx,
        jobs,
        free_cpu: jobs,
        free_dev: (0..opts.devices as u32).collect(),
        order: sel.iter().enumerate().map(|(k, &i)| (i, k)).collect(),
        forced: if opts.force_all { sel.iter().copied().collect() } else { forced.into_iter().collect() },
        assessed: BTreeMap::new(),
        dependents: HashMap::new(),
        pending: HashMap::new(),
        ready: BTreeSet::new(),
        running: BTreeMap::new(),
        done: BTreeMap::new(),
        done_keys: BTreeMap::new(),
        failed: BTreeSet::new(),
        retried: BTreeSet::new(),
        attempts: HashMap::new(),
        settings: g.pipeline.settings(),
        no_fetch: BTreeSet::new(),
        publishing: vec![],
        published: 0,
        running_changed: false,
        running_written: None,
        summary: RunSummary::default(),
        timings: vec![],
        cut_off: 0,
    };
    s.plan(&sel)?;
    let stopping = || opts.interrupt.iter().any(|f| f.load(Ordering::SeqCst));
    loop {
        // Before starting anything more: a stop raised while the last message was handled starts nothing new.
        if stopping() {
            return Err(s.interrupt(t0)?);
        }
        s.dispatch_ready()?;
        if s.running.is_empty() {
            break;
        }
        s.launcher.tick(&s.tx)?;
        s.idx.close_if_idle();
        s.write_running();
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Msg::Progress(i, p)) => {
                (s.sink)(&Event::Progress { id: g.nodes[i].id.clone(), done: p.done, total: p.total, message: p.message })
            }
            Ok(Msg::Note(i, message)) => (s.sink)(&Event::Note { id: g.nodes[i].id.clone(), message }),
            Ok(Msg::Done(i, result, ms, runner)) => {
                // A node that failed while the run is being stopped was stopped with it: it was interrupted, and is
                // not recorded as a failure of its own.
                if result.is_err() && stopping() {
                    return Err(s.interrupt(t0)?);
                }
                s.release(i);
                match result {
                    Ok(manifest) => s.commit(i, manifest, ms, runner)?,
                    Err(e) => s.fail(i, e, ms, runner)?,
                }
            }
            Ok(Msg::FetchFailed(i, why)) => {
                s.release(i);
                let message = format!("not taken from the shared cache ({why}): computing it");
                (s.sink)(&Event::Note { id: g.nodes[i].id.clone(), message });
                s.no_fetch.insert(i);
                s.requeue(i);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    s.idx.flush()?;
    for (i, h) in std::mem::take(&mut s.publishing) {
        s.joined(i, h);
    }
    s.emit_summary(t0, 0);
    let mut summary = std::mem::take(&mut s.summary);
    summary.artifacts = s.done.iter().map(|(&i, m)| (g.nodes[i].id.clone(), m.clone())).collect();
    summary.keys = s.done_keys.iter().map(|(&i, k)| (g.nodes[i].id.clone(), k.clone())).collect();
    Ok(summary)
}

/// Reasons in words, as `plan` and `status` write them.
fn words(reasons: &[DirtyReason]) -> String {
    reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")
}

impl Scheduler<'_> {
    fn id(&self, i: usize) -> String {
        self.g.nodes[i].id.clone()
    }

    /// Whether each started node holds a slot of `-j`: always locally; with a scheduler (Slurm) only where `-j`
    /// was given, as a cap on the jobs submitted at once (a QOS's `MaxSubmitJobs`, a fair share of the queue).
    fn slotted(&self) -> bool {
        self.launcher.limited() || self.opts.jobs > 0
    }

    fn kind(&self, i: usize) -> String {
        self.g.nodes[i].stage.kind().to_string()
    }

    /// Assesses every selected node once, emits the plan and marks the fresh ones done.
    fn plan(&mut self, sel: &[usize]) -> Result<(), super::ExecError> {
        let forced = &self.forced;
        let (assessed, fetchable) = {
            let index = self.idx.get()?;
            let (env, ext) = (&self.opts.env, &self.externals);
            let assessed = super::assess::assess_with(self.g, sel, self.store, index, env, ext, &|i| forced.contains(&i), None);
            // What the shared cache holds, as `plan` sees it (down a chain a teammate published), for the plan's
            // counts only: the run decides on its own assessment, each node's fetch made and checked as it comes.
            let fetchable: BTreeSet<usize> = match &self.opts.cache {
                Some(c) => super::assess::fetchable(self.g, sel, &assessed, env, ext, &|i| forced.contains(&i), c.as_ref()),
                None => BTreeSet::new(),
            };
            (assessed, fetchable)
        };
        self.assessed = assessed;
        let nodes = sel
            .iter()
            .map(|&i| {
                let a = &self.assessed[&i];
                PlanEntry {
                    id: self.id(i),
                    kind: self.kind(i),
                    state: a.state,
                    reason: words(&a.reasons),
                    reasons: a.reasons.clone(),
                    in_cache: fetchable.contains(&i),
                }
            })
            .collect();
        (self.sink)(&Event::Plan { nodes });
        // What the nodes that will run ask for, checked by the launcher before any starts: those stale under a
        // known key, without a shared cache that may hand them over (a laptop fetching a cluster's results needs
        // no Slurm). The launcher checks the others as they start.
        let asks: Vec<super::launch::Ask> = sel
            .iter()
            .filter(|&&i| self.assessed[&i].state != State::Fresh && self.assessed[&i].key.is_some() && self.opts.cache.is_none())
            .map(|&i| {
                let n = &self.g.nodes[i];
                let (cpus, gpus) = requests(self.g, i, &self.opts.env, self.jobs);
                let want = n.resources.over(&self.g.executor.defaults);
                (n.id.clone(), n.location.clone(), NodeResources { cpus: Some(cpus as u32), gpus: Some(gpus), ..want })
            })
            .collect();
        if !asks.is_empty() {
            self.launcher.check(&asks).map_err(|(e, help)| {
                super::ExecError::Spec(crate::spec::SpecError::nowhere(crate::spec::SpecErrorKind::OutOfRange, e).help(help))
            })?;
        }
        self.note_jobs_in_flight(sel);
        for &i in sel {
            for u in self.ups(i) {
                self.dependents.entry(u).or_default().push(i);
            }
        }
        for &i in sel {
            if self.assessed[&i].state == State::Fresh {
                let m = self.assessed[&i].manifest.clone().unwrap();
                self.mark_fresh(i, m, false);
            } else {
                self.enqueue(i);
            }
        }
        Ok(())
    }

    /// Notes the Slurm jobs of selected nodes that an interrupted run left running: those of earlier settings,
    /// which nothing will collect, and — for a run that does not submit to Slurm — those computing a node's
    /// current key, which this run would compute a second time.
    fn note_jobs_in_flight(&mut self, sel: &[usize]) {
        let ids: BTreeSet<String> = sel.iter().map(|&i| self.id(i)).collect();
        let slurm = self.launcher.keeps_jobs();
        let jobs = match super::slurm::flight::in_flight(&self.store.root, Some(&ids), &self.g.executor.job_prefix) {
            Ok(j) => j,
            Err(e) => {
                // A Slurm run finds out as it polls; a local one is told once.
                if !slurm {
                    if let Some(&i) = sel.first() {
                        (self.sink)(&Event::Note { id: self.id(i), message: super::slurm::flight::unknown(&e) });
                    }
                }
                return;
            }
        };
        for &i in sel {
            for f in jobs.get(&self.g.nodes[i].id).into_iter().flatten() {
                let a = &self.assessed[&i];
                let message = match a.key.as_deref() {
                    key if f.is_leftover(key) => super::slurm::flight::leftover(f),
                    Some(_) if !slurm && a.state != State::Fresh => format!(
                        "{} computes this very key (left running by an interrupted run): this run computes it too; `--executor slurm` re-attaches to the job instead, or `scancel {}` stops it",
                        f.describe(),
                        f.sub.job_id
                    ),
                    _ => continue,
                };
                (self.sink)(&Event::Note { id: self.id(i), message });
            }
        }
    }

    /// Node `i`'s distinct selected inputs.
    fn ups(&self, i: usize) -> BTreeSet<usize> {
        self.g.nodes[i].inputs.values().flatten().copied().filter(|u| self.order.contains_key(u)).collect()
    }

    /// Makes node `i` wait for its inputs that are not done (ready at once if none).
    fn enqueue(&mut self, i: usize) {
        let n = self.ups(i).into_iter().filter(|u| !self.done.contains_key(u)).count();
        self.pending.insert(i, n);
        if n == 0 {
            self.ready.insert((self.order[&i], i));
        }
    }

    /// Node `i` is done (fresh or ran): its waiting dependents have one input less to wait for.
    fn mark_done(&mut self, i: usize, m: Manifest, key: Option<String>) {
        self.done.insert(i, m);
        if let Some(k) = key {
            self.done_keys.insert(i, k);
        }
        for &d in self.dependents.get(&i).into_iter().flatten() {
            if let Some(n) = self.pending.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    self.ready.insert((self.order[&d], d));
                }
            }
        }
    }

    /// Skips every waiting node downstream of the failed node `i`, in topological order.
    fn skip_dependents(&mut self, i: usize) {
        // Position → node; each is skipped because of `i` (the node that failed, not the skipped node between).
        let mut hit: BTreeMap<usize, usize> = BTreeMap::new();
        let mut stack = vec![i];
        while let Some(f) = stack.pop() {
            for &d in self.dependents.get(&f).into_iter().flatten() {
                let pos = self.order[&d];
                if self.pending.contains_key(&d) && !hit.contains_key(&pos) {
                    hit.insert(pos, d);
                    stack.push(d);
                }
            }
        }
        for (pos, d) in hit {
            self.pending.remove(&d);
            self.ready.remove(&(pos, d));
            self.failed.insert(d);
            self.summary.skipped.push(self.id(d));
            self.timings.push(NodeTiming { id: self.id(d), outcome: Outcome::Skipped, ms: 0 });
            (self.sink)(&Event::Skipped { id: self.id(d), kind: self.kind(d), because: self.id(i) });
        }
    }

    fn mark_fresh(&mut self, i: usize, m: Manifest, after_inputs: bool) {
        // Fresh through an identical node's artifact: that run becomes this node's too (best effort: only
        // explanations depend on it).
        if let Some(r) = self.assessed[&i].record.clone().filter(|r| r.runner.contains_key("same_as")) {
            if let Ok(idx) = self.idx.get() {
                if idx.run_of(&r.id, &r.key).ok().flatten().is_none() {
                    if let Err(e) = idx.adopt(&r) {
                        tracing::warn!("could not record `{}`'s run: {e}", r.id);
                    }
                }
            }
        }
        let key = self.assessed[&i].key.clone();
        self.mark_done(i, m, key);
        self.summary.fresh.push(self.id(i));
        self.timings.push(NodeTiming { id: self.id(i), outcome: Outcome::Fresh, ms: 0 });
        (self.sink)(&Event::Fresh { id: self.id(i), kind: self.kind(i), after_inputs });
    }

    /// Starts every ready node that fits the free slots, in topological order (a node found fresh may make
    /// others ready: they are taken in the same call).
    fn dispatch_ready(&mut self) -> Result<(), super::ExecError> {
        let mut from = (0, 0);
        while let Some(&(pos, i)) = self.ready.range(from..).next() {
            // Every node holds at least one slot of a limited launcher: with none free, nothing can start (and a
            // scan of thousands of ready nodes per message would make a run quadratic again).
            if self.slotted() && self.free_cpu == 0 {
                break;
            }
            from = (pos, i + 1);
            match self.try_start(i)? {
                Started::NoRoom => {}
                Started::Fresh | Started::Yes => {
                    self.ready.remove(&(pos, i));
                    self.pending.remove(&i);
                    // A node made ready by a fresh one comes later in topological order: the scan reaches it.
                }
            }
        }
        Ok(())
    }

    /// Re-decides node `i` with its inputs' actual digests and starts it if it is still stale and fits.
    fn try_start(&mut self, i: usize) -> Result<Started, super::ExecError> {
        let (g, opts) = (self.g, self.opts);
        let node = &g.nodes[i];
        let want = node.resources.over(&g.executor.defaults);
        let (cpus_req, gpus) = requests(g, i, &opts.env, self.jobs);
        // Locally a node holds slots of `-j` and accelerators of `--devices` (cores clamped to the pool, devices to
        // the machine's: a node asking for more GPUs than there are gets them all); a scheduler keeps its own
        // accounting and gets the cores asked for.
        let limited = self.launcher.limited();
        // A scheduler's jobs hold one slot each where `-j` was given: at most that many queued at once.
        let (cpu, ndev) =
            if limited { (cpus_req.clamp(1, self.jobs), (gpus as usize).min(opts.devices)) } else { (usize::from(opts.jobs > 0), 0) };
        // A node holding accelerators without a `cpus` of its own prepares their input (whatever its kind does on
        // the host) on its share of the cores, `-j` × its devices / `--devices` (as a PyTorch user sizes `num_workers`), while
        // holding the slots its kind asks for: the cores feed the devices, and CPU-only nodes still get slots.
        let share = if want.cpus.is_none() && ndev > 0 && opts.devices > 0 { self.jobs * ndev / opts.devices } else { 0 };
        let threads = if limited { cpu.max(share) } else { cpus_req };
        // With a shared cache, devices are checked after the lookup below (a fetched node needs none); without
        // one, before the work of deciding.
        if cpu > self.free_cpu || (ndev > self.free_dev.len() && opts.cache.is_none()) {
            return Ok(Started::NoRoom);
        }
        // Always look the key up again: another node with the same key (a matrix entry identical to a separately
        // declared node) may have produced it meanwhile.
        let a = {
            let done = &self.done;
            let fp = fingerprint(g, i, &opts.env, &self.externals, &|u| done.get(&u).map(|m| m.digest.clone()));
            let index = self.idx.get()?;
            decide(g, i, fp, self.store, index, self.forced.contains(&i))
        };
        if a.state == State::Fresh {
            let m = a.manifest.clone().unwrap();
            self.assessed.insert(i, a);
            self.cut_off += 1;
            self.mark_fresh(i, m, true);
            return Ok(Started::Fresh);
        }
        // Another node with the same key (a matrix entry identical to a declared node) is being computed: wait
        // for it (it would share the scratch folder; its result makes this one fresh).
        if let Some(k) = &a.key {
            if self.running.keys().any(|r| self.assessed.get(r).and_then(|x| x.key.as_ref()) == Some(k)) {
                return Ok(Started::NoRoom);
            }
        }
        if let Some(started) = self.try_fetch(i, &a)? {
            return Ok(started);
        }
        // Devices only now: a node the shared cache has needs none to be fetched.
        if ndev > self.free_dev.len() {
            return Ok(Started::NoRoom);
        }
        self.free_cpu -= cpu;
        // The lowest free indices: each node is pinned to devices no other running node holds.
        let devices: Vec<u32> = self.free_dev.iter().take(ndev).copied().collect();
        devices.iter().for_each(|d| {
            self.free_dev.remove(d);
        });
        self.running
            .insert(i, Running { cpu, dev: devices.clone(), fetch: false, since: crate::text::now_secs(), t: std::time::Instant::now() });
        self.note_running();
        let Some(fp) = a.fingerprint.clone() else {
            // Fingerprinting failed (e.g. unreadable sources): report as a failure of this node.
            let msg = a.reasons.first().map(|r| r.to_string()).unwrap_or_default();
            self.tx.send(Msg::Done(i, Err(StageError::input(msg)), 0, Default::default())).ok();
            self.assessed.insert(i, a);
            return Ok(Started::Yes);
        };
        let reasons: Vec<DirtyReason> = a.reasons.iter().filter(|r| !matches!(r, DirtyReason::UpstreamPending { .. })).cloned().collect();
        let reasons = if reasons.is_empty() { vec![DirtyReason::Other { detail: "inputs changed".into() }] } else { reasons };
        // Another attempt after a failed one: said first (`attempt 2 of 3; never run`). Compared with a run of other
        // settings: said last.
        let mut said = words(&reasons);
        if let Some(since) = super::earlier::compared_with(&a, &self.settings) {
            said = format!("{said} ({since})");
        }
        let reason = match self.attempts.get(&i) {
            Some(&failed) => format!("attempt {} of {}; {said}", failed + 1, self.retries(i) + 1),
            None => said,
        };
        (self.sink)(&Event::Started { id: self.id(i), kind: self.kind(i), reason, reasons, devices: devices.clone() });
        let mut inputs: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
        for (slot, ups) in &node.inputs {
            let arts = ups
                .iter()
                .map(|&u| {
                    let mut a = InputArtifact::new(self.id(u), self.done[&u].clone(), self.store.clone());
                    a.key = self.assessed.get(&u).and_then(|x| x.key.clone());
                    a
                })
                .collect();
            inputs.insert(slot.clone(), arts);
        }
        let mut env = opts.env.clone();
        env.extend(fp.env.clone());
        let key = fp.key();
        let resources = NodeResources { cpus: Some(threads as u32), gpus: Some(gpus), ..want };
        self.assessed.insert(i, Assessment { fingerprint: Some(fp), ..a });
        let launch = Launch {
            node: i,
            id: node.id.clone(),
            scratch: self.store.partial_dir(&key),
            key,
            stage: node.stage.clone(),
            params: node.params.clone(),
            base_dir: node.base_dir.clone(),
            env,
            inputs,
            resources,
            devices,
            forced: self.forced.contains(&i),
        };
        self.launcher.start(launch, &self.tx)?;
        Ok(Started::Yes)
    }
}

/// What [`Scheduler::try_start`] did.
enum Started {
    /// Not enough free slots: it keeps waiting.
    NoRoom,
    /// Its key was found (early cutoff or a duplicate key): done without running.
    Fresh,
    /// Handed to the launcher.
    Yes,
}
