//! The Slurm executor: each stale node becomes one `sbatch` job that runs `polyflow exec-node DIR` against
//! the shared store; the coordinating `polyflow run` submits nodes as their inputs become ready, polls Slurm,
//! verifies each finished job's artifact and commits it to the index (jobs never touch the index).
//!
//! Crash safety: the job writes its blobs (temp file → rename), then `result.json` last; the coordinator
//! trusts a result only when Slurm says `COMPLETED` (or has forgotten the job) *and* every blob verifies.
//! Job ids are recorded in the store (`jobs/<key>/slurm.json`), so a later run re-attaches to jobs still
//! pending or running instead of submitting them twice, and takes the results of jobs that finished meanwhile.

pub mod flight;
pub mod job;
pub mod sched;

use super::launch::{Ask, Launch, Launcher, Msg, RunnerNotes};
use super::ExecError;
use crate::graph::Graph;
use crate::stage::StageError;
use crate::store::Store;
use job::{job_dir, read_json, write_json, JobError, JobInput, JobResult, JobSpec, Submission};
use sched::JobState;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

struct Watched {
    node: usize,
    id: String,
    key: String,
    job_id: String,
    dir: PathBuf,
    since: Instant,
    progress_seen: Option<SystemTime>,
    /// The state (and reason) last told, so that a change is told once: `PENDING: Priority` → `RUNNING`.
    told: String,
}

/// Submits nodes to Slurm and watches them.
pub struct SlurmLauncher {
    store: Store,
    pipeline: PathBuf,
    profile: Option<String>,
    overlay: crate::spec::Overlay,
    exe: PathBuf,
    prefix: String,
    poll: Duration,
    last_poll: Instant,
    watched: Vec<Watched>,
    failing_since: Option<Instant>,
    /// When Slurm's failing to answer was last warned of.
    warned: Option<Instant>,
    /// Option sets Slurm accepted (`sbatch --test-only`).
    checked: Vec<Vec<String>>,
    /// Option sets Slurm refused, with the message.
    refused: Vec<(Vec<String>, String)>,
    /// Where each node is declared, for messages.
    locations: std::collections::HashMap<String, String>,
}

impl SlurmLauncher {
    /// A launcher for graph `g` over `store` (which must live on a filesystem the cluster shares).
    pub fn new(g: &Graph, store: &Store) -> Result<Self, ExecError> {
        let root = store.root.canonicalize().map_err(|e| ExecError::Other(format!("{}: {e}", store.root.display())))?;
        let store = Store::open(&root)?;
        let pipeline =
            g.pipeline.sources.files.first().map(|f| f.canonical.clone()).ok_or_else(|| ExecError::Other("empty pipeline".into()))?;
        let exe = std::env::var_os("POLYFLOW_EXE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .ok_or_else(|| ExecError::Other("cannot find the polyflow executable for the jobs".into()))?;
        Ok(SlurmLauncher {
            store,
            pipeline,
            profile: g.pipeline.profile.clone(),
            overlay: g.pipeline.overlay.absolute(),
            exe,
            prefix: g.executor.job_prefix.clone(),
            poll: Duration::from_secs_f64(g.executor.poll_s),
            last_poll: Instant::now() - Duration::from_secs(3600),
            watched: vec![],
            failing_since: None,
            warned: None,
            checked: vec![],
            refused: vec![],
            locations: g.nodes.iter().map(|n| (n.id.clone(), n.location.clone())).collect(),
        })
    }

    fn notes(w: &Watched, state: &str) -> RunnerNotes {
        let mut n = RunnerNotes::new();
        n.insert("executor".into(), "slurm".into());
        n.insert("slurm_job".into(), w.job_id.clone());
        n.insert("state".into(), state.to_string());
        n.insert("stdout".into(), w.dir.join("stdout.log").display().to_string());
        n.insert("stderr".into(), w.dir.join("stderr.log").display().to_string());
        n
    }

    /// The verified result of a job directory, if it holds one for `key`.
    fn result(&self, dir: &std::path::Path, key: &str) -> Result<JobResult, String> {
        let Some(r) = read_json::<JobResult>(dir, "result.json") else {
            return Err(format!("the job left no result ({} missing)", dir.join("result.json").display()));
        };
        if r.key != key {
            return Err(format!("{} belongs to another key", dir.join("result.json").display()));
        }
        if let Some((file, state)) = self.store.check(&r.manifest) {
            return Err(format!("the job's artifact file `{file}` is {state:?} in the store; run again to recompute it"));
        }
        Ok(r)
    }

    /// Turns a job that has ended into its `Done` message.
    fn finish(&self, w: &Watched, st: Option<JobState>) -> Msg {
        let state = st.as_ref().map(|s| s.state.clone()).unwrap_or_else(|| "UNKNOWN".into());
        let notes = Self::notes(w, &state);
        let log = w.dir.join("stderr.log");
        let fallback_ms = w.since.elapsed().as_millis() as u64;
        let word = state.split_whitespace().next().unwrap_or("");
        // COMPLETED, or forgotten by Slurm with a complete result: take it if every blob verifies.
        if word == "COMPLETED" || st.is_none() {
            return match self.result(&w.dir, &w.key) {
                Ok(r) => Msg::Done(w.node, Ok(r.manifest), r.ms, notes),
                Err(e) => {
                    let how = if st.is_none() {
                        format!("Slurm job {} is no longer known to Slurm and", w.job_id)
                    } else {
                        format!("Slurm job {} COMPLETED but", w.job_id)
                    };
                    Msg::Done(w.node, Err(StageError::failed(format!("{how} {e}; log: {}", log.display()))), fallback_ms, notes)
                }
            };
        }
        let st = st.unwrap();
        let exit = st.exit_code.as_deref().map(|c| format!(", exit code {c}")).unwrap_or_default();
        let reason = if st.reason != "None" && !st.reason.is_empty() { format!(", reason {}", st.reason) } else { String::new() };
        let head = format!("Slurm job {} {word}{exit}{reason}", w.job_id);
        // The job's state goes on the message's first line (what `status` shows), before any detail lines.
        let with_head = |m: &str| {
            let (first, rest) = m.split_once('\n').map_or((m, ""), |(a, b)| (a, b));
            let rest = if rest.is_empty() { String::new() } else { format!("\n{rest}") };
            format!("{first} ({head}; log: {}){rest}", log.display())
        };
        let err = match read_json::<JobError>(&w.dir, "error.json").filter(|e| e.key == w.key && word == "FAILED") {
            Some(e) if e.input => StageError::input(with_head(&e.message)),
            Some(e) => StageError::failed(with_head(&e.message)),
            None => {
                let t = job::tail(&log, 5);
                let t = if t.is_empty() { String::new() } else { format!("; last lines of the log:\n{t}") };
                // What to do depends on why: a job that ran out of time or memory does so again if resubmitted as is.
                let todo = match word {
                    "TIMEOUT" => "it ran out of its time limit: raise the node's `resources.time` (or `[executor] time`), then run again",
                    "OUT_OF_MEMORY" => "it ran out of memory: raise the node's `resources.mem` (or `[executor] mem`), then run again",
                    "CANCELLED" => "it was cancelled; run again to resubmit",
                    _ if st.exit_code.as_deref().is_some_and(|c| c.starts_with("127:")) => {
                        "its command was not found on the compute node: the polyflow executable must be at the same path there (`POLYFLOW_EXE` sets it)"
                    }
                    _ => "run again to resubmit",
                };
                StageError::failed(format!("{head}: the node did not finish; {todo} (log: {}){t}", log.display()))
            }
        };
        Msg::Done(w.node, Err(err), fallback_ms, notes)
    }

    fn submit(&mut self, l: &Launch, dir: &std::path::Path) -> Result<String, ExecError> {
        let io = |e: std::io::Error| ExecError::Other(format!("{}: {e}", dir.display()));
        // A fresh directory: results of an earlier attempt must not be mistaken for this one's. That attempt's
        // folder (its logs: why it was cancelled, timed out or failed) is kept beside it as `<dir>.<job id>`
        // until `gc` collects it.
        let earlier = read_json::<Submission>(dir, "slurm.json").map(|s| s.job_id);
        let kept = earlier.map(|j| dir.with_file_name(format!("{}.{j}", dir.file_name().unwrap_or_default().to_string_lossy())));
        if let Some(to) = kept.as_ref().filter(|to| !to.exists()) {
            let _ = std::fs::rename(dir, to);
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(io)?;
        let spec = JobSpec {
            pipeline: self.pipeline.clone(),
            profile: self.profile.clone(),
            overlay: self.overlay.clone(),
            node: l.id.clone(),
            key: l.key.clone(),
            env: l.env.clone(),
            store: self.store.root.clone(),
            threads: l.resources.cpus.unwrap_or(1) as usize,
            gpus: l.resources.gpus.unwrap_or(0),
            inputs: l
                .inputs
                .iter()
                .map(|(slot, v)| {
                    (
                        slot.clone(),
                        v.iter().map(|a| JobInput { id: a.id.clone(), manifest: a.manifest.clone(), key: a.key.clone() }).collect(),
                    )
                })
                .collect(),
        };
        write_json(dir, "job.json", &spec).map_err(io)?;
        let script = format!(
            "#!/bin/sh\n# polyflow node `{}` (key {}), submitted by `polyflow run`.\nexec {} exec-node {}\n",
            l.id,
            &l.key[..16],
            crate::text::shell_word(&self.exe.to_string_lossy()),
            crate::text::shell_word(&dir.to_string_lossy())
        );
        std::fs::write(dir.join("job.sh"), script).map_err(io)?;
        let cwd = std::env::current_dir().map_err(io)?;
        let args = sbatch_args(&format!("{}-{}", self.prefix, l.id), &l.resources, dir, &cwd);
        let job_id = sched::sbatch(&args, &dir.join("job.sh")).map_err(|e| ExecError::Other(format!("submitting node `{}`: {e}", l.id)))?;
        let sub = Submission { job_id: job_id.clone(), node: l.id.clone(), key: l.key.clone(), submitted_at: crate::text::now_secs() };
        write_json(dir, "slurm.json", &sub).map_err(io)?;
        Ok(job_id)
    }
}

impl Launcher for SlurmLauncher {
    fn keeps_jobs(&self) -> bool {
        true
    }

    fn holds(&self, node: usize) -> bool {
        self.watched.iter().any(|w| w.node == node)
    }

    fn limited(&self) -> bool {
        false
    }

    fn check(&mut self, nodes: &[Ask]) -> Result<(), (String, String)> {
        // Each distinct set of options once (usually the executor's defaults and a few nodes' own), asked of
        // Slurm without submitting (`--test-only`): a partition that does not exist, an option sbatch does not
        // know or a time above the partition's limit end the run here, once, instead of failing every node.
        let mut groups: Vec<(Vec<String>, Vec<&Ask>)> = vec![];
        for n in nodes {
            let args = options(&n.2);
            match groups.iter_mut().find(|(a, _)| *a == args) {
                Some((_, v)) => v.push(n),
                None => groups.push((args, vec![n])),
            }
        }
        for (args, who) in &groups {
            if self.checked.contains(args) {
                continue;
            }
            if let Err(e) = sched::test_only(args).map_err(|e| e.trim().to_string()) {
                // Only what resubmitting would meet again ends the run: wrong options, a client not set up. A
                // controller briefly unreachable (or a refusal of another kind) is left to the submission.
                if !lasting(&e) {
                    tracing::warn!("sbatch --test-only: {e} (submitting anyway)");
                    self.checked.push(args.clone());
                    continue;
                }
                let named: Vec<String> = who.iter().take(3).map(|(id, at, _)| format!("`{id}` ({at})")).collect();
                let more = if who.len() > 3 { format!(" and {} more", who.len() - 3) } else { String::new() };
                // Slurm's client itself (not on PATH, no configuration) or the options the pipeline gives.
                let client = e.contains("not found: the Slurm executor") || e.contains("configuration source");
                let help = if client {
                    "set up Slurm's client here: `sbatch` on PATH, and SLURM_CONF naming the cluster's slurm.conf where it is not in /etc/slurm".to_string()
                } else {
                    format!("fix the `[executor]` table or those nodes' `resources` (the options polyflow passed: {})", args.join(" "))
                };
                return Err((format!("nothing was submitted: Slurm refuses the jobs of {}{more}: {e}", named.join(", ")), help));
            }
            self.checked.push(args.clone());
        }
        Ok(())
    }

    fn start(&mut self, l: Launch, tx: &Sender<Msg>) -> Result<(), ExecError> {
        let dir = job_dir(&self.store.root, &l.key);
        // A job submitted earlier for this very key (by a run that was killed or left its jobs running)?
        if let Some(prev) = read_json::<Submission>(&dir, "slurm.json").filter(|s| s.key == l.key) {
            let st = sched::squeue(&[&prev.job_id]).ok().and_then(|m| m.get(&prev.job_id).cloned()).or_else(|| sched::sacct(&prev.job_id));
            let w = Watched {
                node: l.node,
                id: l.id.clone(),
                key: l.key.clone(),
                job_id: prev.job_id.clone(),
                dir: dir.clone(),
                since: Instant::now(),
                progress_seen: None,
                told: String::new(),
            };
            match &st {
                Some(s) if l.forced && !s.terminal() => {
                    // Forced: the earlier job's output is not wanted; stop it before its directory is reused.
                    let _ = sched::scancel(&[&prev.job_id]);
                    let _ = tx.send(Msg::Note(l.node, format!("cancelled earlier Slurm job {} (forced re-run)", prev.job_id)));
                }
                _ if l.forced => {}
                Some(s) if !s.terminal() => {
                    let _ = tx.send(Msg::Note(l.node, format!("re-attached to Slurm job {} ({})", prev.job_id, s.state)));
                    self.watched.push(w);
                    return Ok(());
                }
                // Ended while no run watched it: take its result if Slurm says COMPLETED (or has forgotten
                // the job) and every blob verifies; otherwise fall through and submit again.
                _ if st.as_ref().is_none_or(|s| s.state == "COMPLETED") => {
                    if let Msg::Done(i, Ok(m), ms, notes) = self.finish(&w, st.clone()) {
                        let _ =
                            tx.send(Msg::Note(l.node, format!("Slurm job {} finished while no run watched it: result taken", prev.job_id)));
                        let _ = tx.send(Msg::Done(i, Ok(m), ms, notes));
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        // Options not checked before the run (a node whose key was not known then): checked now, once per set;
        // a node Slurm refuses fails on its settings (exit 2), without a submission.
        let args = options(&l.resources);
        let refused = match self.refused.iter().find(|(a, _)| *a == args) {
            Some((_, why)) => Some(why.clone()),
            None => {
                let ask = (l.id.clone(), self.locations.get(&l.id).cloned().unwrap_or_default(), l.resources.clone());
                let why = self.check(std::slice::from_ref(&ask)).err().map(|(e, help)| format!("{e}\n  help: {help}"));
                if let Some(w) = &why {
                    self.refused.push((args, w.clone()));
                }
                why
            }
        };
        if let Some(why) = refused {
            let _ = tx.send(Msg::Done(
                l.node,
                Err(StageError::input(why.replace("nothing was submitted: ", "not submitted: "))),
                0,
                RunnerNotes::new(),
            ));
            return Ok(());
        }
        let job_id = match self.submit(&l, &dir) {
            Ok(j) => j,
            Err(e) => {
                // Not submitted: this node fails (and its dependents are skipped); other branches go on.
                let _ = tx.send(Msg::Done(l.node, Err(StageError::failed(e.to_string())), 0, RunnerNotes::new()));
                return Ok(());
            }
        };
        let _ = tx.send(Msg::Note(l.node, format!("submitted as Slurm job {job_id} (log {})", dir.join("stderr.log").display())));
        self.watched.push(Watched {
            node: l.node,
            id: l.id,
            key: l.key,
            job_id,
            dir,
            since: Instant::now(),
            progress_seen: None,
            told: String::new(),
        });
        Ok(())
    }

    fn tick(&mut self, tx: &Sender<Msg>) -> Result<(), ExecError> {
        if self.watched.is_empty() || self.last_poll.elapsed() < self.poll {
            return Ok(());
        }
        self.last_poll = Instant::now();
        for w in &mut self.watched {
            let p = w.dir.join("progress.json");
            if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified()) {
                if w.progress_seen != Some(t) {
                    w.progress_seen = Some(t);
                    if let Some(pr) = read_json(&w.dir, "progress.json") {
                        let _ = tx.send(Msg::Progress(w.node, pr));
                    }
                }
            }
        }
        let ids: Vec<&str> = self.watched.iter().map(|w| w.job_id.as_str()).collect();
        let states = match sched::squeue(&ids) {
            Ok(s) => {
                self.failing_since = None;
                self.warned = None;
                s
            }
            // A busy or restarting slurmctld: keep polling for a while (the jobs run on meanwhile).
            Err(e) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                // Once, then once a minute, not at every poll.
                if self.warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!("squeue: {e} (polling on for up to 5 minutes)");
                    self.warned = Some(Instant::now());
                }
                if since.elapsed() > Duration::from_secs(300) {
                    return Err(ExecError::Other(format!(
                        "Slurm has not answered for 5 minutes ({e}); the submitted jobs keep running and the next `polyflow run` re-attaches to them"
                    )));
                }
                return Ok(());
            }
        };
        let mut ended = vec![];
        for (k, w) in self.watched.iter_mut().enumerate() {
            match states.get(&w.job_id) {
                Some(s) if !s.terminal() => {
                    // Why it waits, where that is not the queue's usual (`ReqNodeNotAvail`, `JobHeldUser`,
                    // `QOSMaxJobsPerUserLimit`, …), and that it started after such a wait: each change told once.
                    let usual = matches!(s.reason.as_str(), "" | "None" | "Priority" | "Resources");
                    let now = s.describe();
                    if now != w.told && (!usual || !w.told.is_empty()) {
                        let _ = tx.send(Msg::Note(w.node, format!("Slurm job {}: {now}", w.job_id)));
                        w.told = now;
                    }
                }
                // Ended: scontrol adds the exit code.
                Some(s) => ended.push((k, Some(sched::scontrol(&w.job_id).unwrap_or_else(|| s.clone())))),
                None => ended.push((k, sched::scontrol(&w.job_id).or_else(|| sched::sacct(&w.job_id)))),
            }
        }
        for (k, st) in ended.into_iter().rev() {
            if st.as_ref().is_some_and(|s| !s.terminal()) {
                continue;
            }
            let w = self.watched.remove(k);
            tracing::debug!("slurm job {} of {} ended: {:?}", w.job_id, w.id, st);
            let _ = tx.send(self.finish(&w, st));
        }
        Ok(())
    }

    fn interrupt(&mut self, keep: bool) -> Vec<(usize, RunnerNotes)> {
        if keep {
            return vec![];
        }
        let ids: Vec<&str> = self.watched.iter().map(|w| w.job_id.as_str()).collect();
        // A failed `scancel` leaves the jobs running: each is named so, with the command that stops it.
        let failed = sched::scancel(&ids).err();
        self.watched
            .drain(..)
            .map(|w| match &failed {
                None => (w.node, Self::notes(&w, "CANCELLED")),
                Some(e) => {
                    let mut n = Self::notes(&w, "UNKNOWN (scancel failed)");
                    n.insert("scancel_error".into(), e.trim().to_string());
                    (w.node, n)
                }
            })
            .collect()
    }
}

/// Whether an sbatch refusal is one that submitting again would meet again: an option it does not know, a
/// partition, account, QOS or GPU type the cluster lacks, a time limit above the partition's, or a Slurm client
/// that is not there or not configured.
fn lasting(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    [
        "unrecognized option",
        "invalid option",
        "invalid partition",
        "invalid account",
        "invalid qos",
        "invalid generic resource",
        "invalid gres",
        "time limit is invalid",
        "invalid time",
        "invalid feature",
        "not found: the slurm executor",
        "configuration source",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// The `sbatch` options of a node's job: its name, log files, working directory, then [`options`].
fn sbatch_args(name: &str, r: &crate::spec::NodeResources, dir: &std::path::Path, cwd: &std::path::Path) -> Vec<String> {
    let mut args = vec![
        format!("--job-name={name}"),
        format!("--output={}", dir.join("stdout.log").display()),
        format!("--error={}", dir.join("stderr.log").display()),
        format!("--chdir={}", cwd.display()),
    ];
    args.extend(options(r));
    args
}

/// What a node's job asks of Slurm: one task with the node's cores, `--gres=gpu:N` for its GPUs, memory, time,
/// partition, then the pipeline's extra options.
fn options(r: &crate::spec::NodeResources) -> Vec<String> {
    let mut args = vec!["--ntasks=1".to_string(), format!("--cpus-per-task={}", r.cpus.unwrap_or(1))];
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        args.push(format!("--gres=gpu:{g}"));
    }
    if let Some(m) = &r.mem {
        args.push(format!("--mem={m}"));
    }
    if let Some(t) = &r.time {
        args.push(format!("--time={t}"));
    }
    if let Some(p) = &r.partition {
        args.push(format!("--partition={p}"));
    }
    args.extend(r.sbatch.iter().cloned());
    args
}

#[cfg(test)]
mod args_tests {
    use super::sbatch_args;
    use crate::spec::NodeResources;
    use std::path::Path;

    #[test]
    fn gpus_become_gres_and_none_ask_for_no_gpu() {
        let r = NodeResources {
            cpus: Some(4),
            gpus: Some(2),
            mem: Some("16G".into()),
            sbatch: vec!["--qos=high".into()],
            ..Default::default()
        };
        let a = sbatch_args("pf-train", &r, Path::new("/s/j"), Path::new("/w"));
        assert_eq!(
            a[..6],
            ["--job-name=pf-train", "--output=/s/j/stdout.log", "--error=/s/j/stderr.log", "--chdir=/w", "--ntasks=1", "--cpus-per-task=4"]
        );
        assert_eq!(a[6..], ["--gres=gpu:2", "--mem=16G", "--qos=high"]);
        let none = sbatch_args("pf-x", &NodeResources { gpus: Some(0), ..Default::default() }, Path::new("/s"), Path::new("/w"));
        assert!(!none.iter().any(|x| x.starts_with("--gres")), "{none:?}");
    }
}
