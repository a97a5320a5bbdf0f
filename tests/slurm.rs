//! The Slurm executor against a real slurmctld/slurmd on localhost.
//!
//! `.ci/run` installs slurm-wlm and munge, starts a one-node cluster with `.ci/slurm-cluster.sh start`, exports
//! `SLURM_CONF` and `POLYFLOW_SLURM_TESTS=1`, runs these tests with `cargo test --test slurm -- --ignored`, and
//! stops the daemons afterwards. A plain `cargo test` lists them as ignored (a machine without Slurm cannot run
//! them); run on purpose, they fail without `POLYFLOW_SLURM_TESTS=1` or without a cluster.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One test at a time: the cluster has two CPUs.
static CLUSTER: Mutex<()> = Mutex::new(());

fn enabled() -> bool {
    assert!(
        std::env::var("POLYFLOW_SLURM_TESTS").is_ok_and(|v| v == "1"),
        "the Slurm tests need a running cluster: start one with .ci/slurm-cluster.sh start, source its env, and set POLYFLOW_SLURM_TESTS=1"
    );
    true
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_polyflow"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs polyflow with `--json`; returns (exit code, events).
fn run(dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(bin()).current_dir(dir).args(args).arg("--json").output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.code().unwrap_or(-1), events, String::from_utf8_lossy(&out.stderr).to_string())
}

fn ids(events: &[Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = events.iter().filter(|e| e["event"] == kind).map(|e| e["id"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn notes(events: &[Value], id: &str) -> Vec<String> {
    events.iter().filter(|e| e["event"] == "note" && e["id"] == id).map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

fn digests(events: &[Value]) -> BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| (e["id"].as_str().unwrap().to_string(), e["artifact"].as_str().unwrap().to_string()))
        .collect()
}

fn job_id(note: &str) -> Option<String> {
    let rest = note.split("Slurm job ").nth(1)?;
    Some(rest.chars().take_while(|c| c.is_ascii_digit()).collect())
}

fn squeue_state(job: &str) -> String {
    let out = Command::new("squeue").args(["-h", "--states=all", "-o", "%T", "-j", job]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A `polyflow run --json` in the background whose events can be awaited.
struct Bg {
    child: Child,
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Bg {
    fn start(dir: &Path, args: &[&str]) -> Bg {
        let mut child =
            Command::new(bin()).current_dir(dir).args(args).arg("--json").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Bg { child, rx, seen: vec![] }
    }

    /// Waits (up to 60 s) for an event matching `f`.
    fn wait_for(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        if let Some(v) = self.seen.iter().find(|v| f(v)) {
            return v.clone();
        }
        while t0.elapsed() < Duration::from_secs(60) {
            if let Ok(v) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(v.clone());
                if f(&v) {
                    return v;
                }
            }
        }
        panic!("no {what} within 60 s; events: {:?}", self.seen);
    }

    fn finish(mut self) -> (i32, Vec<Value>) {
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        while let Ok(v) = self.rx.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(v);
        }
        (code, self.seen)
    }
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn slurm_run_gives_the_local_digests_and_a_second_run_submits_nothing() {
    if !enabled() {
        return;
    }
    let _g = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let p = repo().join("tests/pipelines/slurm.toml");
    let p = p.to_str().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (code, ev_local, err) = run(local.path(), &["run", p, "--profile", "smoke"]);
    assert_eq!(code, 0, "{err}");
    let cluster = tempfile::tempdir().unwrap();
    let (code, ev_slurm, err) = run(cluster.path(), &["run", p, "--profile", "smoke", "--executor", "slurm"]);
    assert_eq!(code, 0, "{err}");
    let (dl, ds) = (digests(&ev_local), digests(&ev_slurm));
    assert!(dl.len() >= 8 && dl.contains_key("co_image_audio") && dl.contains_key("st_digits"), "{dl:?}");
    assert_eq!(dl, ds, "the Slurm run's artifacts differ from the local run's");
    // Every node ran as its own Slurm job, and the record says which.
    for id in ds.keys() {
        let n = notes(&ev_slurm, id);
        assert!(n.iter().any(|m| m.starts_with("submitted as Slurm job")), "{id}: {n:?}");
    }
    let (code, out, _) = {
        let o = Command::new(bin()).current_dir(cluster.path()).args(["show", p, "--profile", "smoke", "co_image_audio"]).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), ())
    };
    assert_eq!(code, Some(0));
    assert!(out.contains("ran as: Slurm job") && out.contains("(COMPLETED)") && out.contains("stderr.log"), "{out}");
    // A second run: everything fresh, nothing submitted.
    let (code, ev2, err) = run(cluster.path(), &["run", p, "--profile", "smoke", "--executor", "slurm"]);
    assert_eq!(code, 0, "{err}");
    assert!(ids(&ev2, "started").is_empty() && ids(&ev2, "note").is_empty(), "{ev2:?}");
    assert_eq!(ids(&ev2, "fresh").len(), ds.len());
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

const HEAD: &str = "[executor]\nkind = \"slurm\"\npoll = 0.2\n\n";

/// A test's cluster turn, a temp project and its pipeline `name` (with the Slurm `[executor]` table prepended);
/// `None` when the Slurm tests are not enabled.
fn setup(name: &str, nodes: &str) -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir, String)> {
    if !enabled() {
        return None;
    }
    let guard = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), name, &format!("{HEAD}{nodes}"));
    Some((guard, d, f))
}

/// `polyflow status FILE --json`, as node id → entry.
fn status(dir: &Path, f: &str) -> BTreeMap<String, Value> {
    let o = Command::new(bin()).current_dir(dir).args(["status", f, "--json"]).output().unwrap();
    let st: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    st.into_iter().map(|n| (n["id"].as_str().unwrap().to_string(), n)).collect()
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn a_failing_job_fails_its_node_skips_dependents_and_independent_branches_finish() {
    let Some((_g, d, f)) = setup(
        "f.toml",
        "[node.bad]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo going down >&2; exit 3\"]\n\n\
             [node.after_bad]\nkind = \"command\"\ninputs = { in = \"bad\" }\nrun = [\"sh\", \"-c\", \"echo x > $POLYFLOW_OUT/x\"]\n\n\
             [node.good]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo good > $POLYFLOW_OUT/g\"]\n\n\
             [node.after_good]\nkind = \"command\"\ninputs = { in = \"good\" }\nrun = [\"sh\", \"-c\", \"echo more > $POLYFLOW_OUT/m\"]\n",
    ) else {
        return;
    };
    // Options Slurm refuses (no such partition) end the run before anything is submitted, exit 2, once, naming
    // the nodes that ask for them and sbatch's message.
    let text = std::fs::read_to_string(d.path().join(&f)).unwrap();
    let misplaced = "\n[node.misplaced]\nkind = \"command\"\nrun = [\"true\"]\nresources = { partition = \"nowhere\" }\n";
    std::fs::write(d.path().join(&f), text.clone() + misplaced).unwrap();
    let (code, ev, err) = run(d.path(), &["run", &f]);
    assert_eq!(code, 2, "{err}");
    assert!(ids(&ev, "started").is_empty() && ids(&ev, "note").is_empty(), "{ev:?}");
    let last = ev.last().unwrap();
    let refused = last["message"].as_str().unwrap();
    assert!(last["event"] == "error" && refused.contains("nothing was submitted") && refused.contains("`misplaced`"), "{last}");
    assert!(refused.contains("partition") && !refused.contains("`good`"), "{refused}");
    // Without it, a failing job fails its node; the rest goes on.
    std::fs::write(d.path().join(&f), text).unwrap();
    let (code, ev, _) = run(d.path(), &["run", &f]);
    assert_eq!(code, 1);
    assert_eq!(ids(&ev, "failed"), vec!["bad"]);
    assert_eq!(ids(&ev, "skipped"), vec!["after_bad"]);
    assert_eq!(ids(&ev, "finished"), vec!["after_good", "good"]);
    let err = ev.iter().find(|e| e["event"] == "failed" && e["id"] == "bad").unwrap()["error"].as_str().unwrap().to_string();
    assert!(err.contains("exited with code 3") && err.contains("FAILED") && err.contains("stderr.log"), "{err}");
    // `status` shows the failure with Slurm's state; after_bad was never submitted.
    let st = status(d.path(), &f);
    let bad = &st["bad"];
    assert_eq!(bad["state"], "failed");
    assert!(bad["reason"].as_str().unwrap().contains("Slurm job"), "{bad}");
    assert!(notes(&ev, "after_bad").is_empty());
    // The log's path ends the first line: `(Slurm job N FAILED, …; log: PATH)`, the program's last lines after it.
    let log = std::fs::read_to_string(err.split("log: ").nth(1).unwrap().split(')').next().unwrap()).unwrap();
    assert!(log.contains("going down"), "{log}");
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn scancel_fails_the_node_keeps_the_store_intact_and_a_rerun_completes() {
    let Some((_g, d, f)) = setup(
        "c.toml",
        "[node.slow]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 4; echo done > $POLYFLOW_OUT/x\"]\n\n\
             [node.after]\nkind = \"command\"\ninputs = { in = \"slow\" }\nrun = [\"sh\", \"-c\", \"echo after > $POLYFLOW_OUT/y\"]\n",
    ) else {
        return;
    };
    let mut bg = Bg::start(d.path(), &["run", &f]);
    let note = bg.wait_for("submission of slow", |e| e["event"] == "note" && e["id"] == "slow");
    let job = job_id(note["message"].as_str().unwrap()).unwrap();
    let t0 = Instant::now();
    while squeue_state(&job) != "RUNNING" && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // While it runs, `status` says so (the store is readable during the run).
    let slow = &status(d.path(), &f)["slow"];
    assert_eq!(slow["job"], format!("Slurm job {job} (RUNNING)"), "{slow}");
    assert!(Command::new("scancel").arg(&job).status().unwrap().success());
    let (code, ev) = bg.finish();
    assert_eq!(code, 1);
    let err = ev.iter().find(|e| e["event"] == "failed" && e["id"] == "slow").expect("slow failed")["error"].as_str().unwrap().to_string();
    assert!(err.contains(&format!("Slurm job {job} CANCELLED")), "{err}");
    assert_eq!(ids(&ev, "skipped"), vec!["after"]);
    // Never fresh, store intact.
    assert_eq!(status(d.path(), &f)["slow"]["state"], "failed");
    assert_eq!(Command::new(bin()).current_dir(d.path()).args(["verify"]).status().unwrap().code(), Some(0));
    // A re-run resubmits and completes.
    let (code, ev, err) = run(d.path(), &["run", &f]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&ev, "finished"), vec!["after", "slow"]);
    assert!(notes(&ev, "slow").iter().any(|m| m.starts_with("submitted as")));
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn a_killed_coordinator_is_neither_duplicated_nor_trusted() {
    let Some((_g, d, f)) = setup("k.toml", "[node.quick]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo q > $POLYFLOW_OUT/q\"]\n\n\
             [node.slow]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 4; echo s > $POLYFLOW_OUT/s\"]\n\n\
             [node.doomed]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 6; echo d > $POLYFLOW_OUT/d\"]\n\n\
             [node.after]\nkind = \"command\"\ninputs = { in = [\"quick\", \"slow\"] }\nrun = [\"sh\", \"-c\", \"echo a > $POLYFLOW_OUT/a\"]\n") else {
        return;
    };
    let mut bg = Bg::start(d.path(), &["run", &f]);
    bg.wait_for("quick finished", |e| e["event"] == "finished" && e["id"] == "quick");
    let slow_note = bg.wait_for("slow submitted", |e| e["event"] == "note" && e["id"] == "slow");
    let doomed_note = bg.wait_for("doomed submitted", |e| e["event"] == "note" && e["id"] == "doomed");
    let slow_job = job_id(slow_note["message"].as_str().unwrap()).unwrap();
    let doomed_job = job_id(doomed_note["message"].as_str().unwrap()).unwrap();
    // SIGKILL: no chance to cancel anything.
    bg.child.kill().unwrap();
    let _ = bg.finish();
    // The doomed job dies without its coordinator knowing (as if preempted or killed by an admin).
    assert!(Command::new("scancel").arg(&doomed_job).status().unwrap().success());
    let t0 = Instant::now();
    while !squeue_state(&doomed_job).starts_with("CANCELLED") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, ev, err) = run(d.path(), &["run", &f]);
    assert_eq!(code, 0, "{err}");
    // Finished work is not redone.
    assert_eq!(ids(&ev, "fresh"), vec!["quick"]);
    // The running job is re-attached to (or its result taken if it ended meanwhile), not submitted twice.
    let n = notes(&ev, "slow");
    assert!(n.iter().any(|m| m.contains(&format!("Slurm job {slow_job}")) && !m.starts_with("submitted")), "{n:?}");
    // The cancelled job's unfinished work is not trusted: it is submitted again.
    let n = notes(&ev, "doomed");
    assert!(n.iter().any(|m| m.starts_with("submitted as") && !m.contains(&format!("job {doomed_job} "))), "{n:?}");
    assert_eq!(ids(&ev, "finished"), vec!["after", "doomed", "slow"]);
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn ctrl_c_cancels_the_jobs_or_with_keep_jobs_leaves_them_for_the_next_run() {
    let Some((_g, d, f)) =
        setup("i.toml", "[node.slow]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 3; echo s > $POLYFLOW_OUT/s\"]\n")
    else {
        return;
    };
    let interrupt = |bg: &mut Bg| -> String {
        let note = bg.wait_for("slow submitted", |e| e["event"] == "note" && e["id"] == "slow");
        let job = job_id(note["message"].as_str().unwrap()).unwrap();
        assert!(Command::new("kill").args(["-INT", &bg.child.id().to_string()]).status().unwrap().success());
        job
    };
    // Ctrl-C: the job is cancelled, the node recorded as failed, exit code 130.
    let mut bg = Bg::start(d.path(), &["run", &f]);
    let job = interrupt(&mut bg);
    let (code, _) = bg.finish();
    assert_eq!(code, 130);
    let t0 = Instant::now();
    while !squeue_state(&job).starts_with("CANCELLED") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(squeue_state(&job).starts_with("CANCELLED"), "{}", squeue_state(&job));
    let slow = &status(d.path(), &f)["slow"];
    assert!(slow["reason"].as_str().unwrap().contains("interrupted"), "{slow}");
    // --keep-jobs: the job runs on; the next run re-attaches to it (or takes its result) instead of resubmitting.
    let mut bg = Bg::start(d.path(), &["run", &f, "--keep-jobs"]);
    let job = interrupt(&mut bg);
    let (code, _) = bg.finish();
    assert_eq!(code, 130);
    assert!(!squeue_state(&job).starts_with("CANCELLED"));
    // `gc` meanwhile leaves the scratch folder the job works in alone (a command's scratch is removed otherwise).
    let gc = Command::new(bin()).current_dir(d.path()).args(["gc", &f, "--yes"]).output().unwrap();
    assert_eq!(gc.status.code(), Some(0), "{}", String::from_utf8_lossy(&gc.stderr));
    let (code, ev, err) = run(d.path(), &["run", &f]);
    assert_eq!(code, 0, "{err}");
    let n = notes(&ev, "slow");
    assert!(n.iter().any(|m| m.contains(&format!("Slurm job {job}")) && !m.starts_with("submitted")), "{n:?}");
    assert_eq!(ids(&ev, "finished"), vec!["slow"]);
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn a_job_of_earlier_settings_left_running_is_named_with_its_scancel() {
    let Some((_g, d, f)) =
        setup("l.toml", "[node.long]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 30; echo s > $POLYFLOW_OUT/s\"]\n")
    else {
        return;
    };
    // Interrupted with --keep-jobs, then edited: the kept job computes settings nobody will collect.
    let mut bg = Bg::start(d.path(), &["run", &f, "--keep-jobs"]);
    let note = bg.wait_for("long submitted", |e| e["event"] == "note" && e["id"] == "long");
    let job = job_id(note["message"].as_str().unwrap()).unwrap();
    assert!(Command::new("kill").args(["-INT", &bg.child.id().to_string()]).status().unwrap().success());
    assert_eq!(bg.finish().0, 130);
    let text = std::fs::read_to_string(d.path().join(&f)).unwrap();
    std::fs::write(d.path().join(&f), text.replace("sleep 30", "sleep 1")).unwrap();
    let st = status(d.path(), &f);
    let left = st["long"]["leftover_jobs"][0].as_str().unwrap_or_default().to_string();
    assert!(left.contains(&format!("Slurm job {job}")) && left.contains(&format!("scancel {job}")), "{:?}", st["long"]);
    // A local run of the old settings is told it duplicates the job; a run of the new ones, that it is left over.
    let (code, ev, err) = run(d.path(), &["run", &f, "--executor", "local"]);
    assert_eq!(code, 0, "{err}");
    assert!(notes(&ev, "long").iter().any(|m| m.contains(&format!("scancel {job}"))), "{ev:?}");
    let _ = Command::new("scancel").arg(&job).status();
}

#[test]
#[ignore = "needs a Slurm cluster: POLYFLOW_SLURM_TESTS=1 cargo test --test slurm -- --ignored (.ci/run does)"]
fn a_failed_job_with_retries_left_is_submitted_again_and_resumes_from_its_scratch() {
    let Some((_g, d, f)) = setup(
        "r.toml",
        "[node.flaky]\nkind = \"command\"\nresources = { retries = 1 }\n\
         run = [\"sh\", \"-c\", \"if [ -e $POLYFLOW_SCRATCH/tried ]; then echo ok > $POLYFLOW_OUT/x; else touch $POLYFLOW_SCRATCH/tried; exit 5; fi\"]\n",
    ) else {
        return;
    };
    let (code, ev, err) = run(d.path(), &["run", &f]);
    assert_eq!(code, 0, "{err}");
    let retrying: Vec<&Value> = ev.iter().filter(|e| e["event"] == "retrying").collect();
    assert_eq!(retrying.len(), 1, "{ev:?}");
    assert!(retrying[0]["error"].as_str().unwrap().contains("exited with code 5"), "{}", retrying[0]);
    // Two jobs: the failed one and the one that finished.
    let jobs: BTreeSet<String> = notes(&ev, "flaky").iter().filter_map(|n| job_id(n)).collect();
    assert_eq!(jobs.len(), 2, "{ev:?}");
    assert_eq!(ids(&ev, "finished"), vec!["flaky"]);
    assert_eq!(status(d.path(), &f)["flaky"]["state"], "fresh");
}
