//! Crash safety and concurrency through the real binary: SIGKILL mid-node, two runs on one store, status
//! during a run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

fn pipeline(dir: &Path, sleep_ms: u64) {
    std::fs::write(
        dir.join("p.toml"),
        format!("[node.a]\nkind = \"value\"\nvalue = 1\n[node.slow]\nkind = \"value\"\nvalue = 2\nsleep_ms = {sleep_ms}\ninputs = {{ after = \"a\" }}\n[node.z]\nkind = \"value\"\nvalue = 3\ninputs = {{ after = \"slow\" }}\n"),
    )
    .unwrap();
}

fn polyflow(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(dir).output().unwrap()
}

fn status(dir: &Path) -> serde_json::Value {
    let out = polyflow(dir, &["status", "p.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn state_of(s: &serde_json::Value, id: &str) -> String {
    s.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap()["state"].as_str().unwrap().to_string()
}

/// Starts `run --json` and waits until node `id` has started.
fn start_until(dir: &Path, id: &str) -> std::process::Child {
    let mut child =
        Command::new(BIN).args(["run", "p.toml", "--json"]).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("run ended early").unwrap();
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["event"] == "started" && ev["id"] == id {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn sigkill_mid_node_never_leaves_a_false_fresh_node() {
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path(), 1500);
    let mut child = start_until(d.path(), "slow");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let s = status(d.path());
    assert_eq!(state_of(&s, "a"), "fresh");
    assert_eq!(state_of(&s, "slow"), "stale");
    assert_eq!(state_of(&s, "z"), "stale");
    let out = polyflow(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"event\":\"finished\",\"id\":\"slow\""));
    assert!(!text.contains("\"event\":\"finished\",\"id\":\"a\""), "a was already fresh");
    let s = status(d.path());
    for id in ["a", "slow", "z"] {
        assert_eq!(state_of(&s, id), "fresh");
    }
    assert_eq!(polyflow(d.path(), &["verify", "p.toml"]).status.code(), Some(0));
}

#[test]
fn second_run_on_the_same_store_exits_3_naming_the_holder_and_status_still_works() {
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path(), 2500);
    let mut child = start_until(d.path(), "slow");
    let second = polyflow(d.path(), &["run", "p.toml"]);
    assert_eq!(second.status.code(), Some(3));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another `polyflow run`") && err.contains("pid"), "{err}");
    // status reads the index while the run holds the writer lock.
    let t = Instant::now();
    let s = status(d.path());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(state_of(&s, "a"), "fresh");
    // --wait waits for the holder, then finds everything fresh.
    let waited = polyflow(d.path(), &["run", "p.toml", "--wait", "--json"]);
    assert_eq!(waited.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&waited.stdout).contains("\"event\":\"started\""));
    assert!(child.wait().unwrap().success());
    assert_eq!(polyflow(d.path(), &["verify"]).status.code(), Some(0));
}

#[test]
fn failing_node_exits_1_and_status_shows_failed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.ok]\nkind = \"value\"\n[node.bad]\nkind = \"value\"\nfail = true\n[node.after]\nkind = \"value\"\ninputs = { after = \"bad\" }\n").unwrap();
    let out = polyflow(d.path(), &["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let s = status(d.path());
    assert_eq!(state_of(&s, "ok"), "fresh");
    assert_eq!(state_of(&s, "bad"), "failed");
    let bad = s.as_array().unwrap().iter().find(|n| n["id"] == "bad").unwrap();
    assert!(bad["reason"].as_str().unwrap().contains("fails deliberately"));
}

/// `polyflow run p.toml --json` in `dir`, read up to the `started` event of node `id`: the child (its standard
/// error piped) and the rest of its event lines.
fn run_until_started(dir: &Path, id: &str) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child =
        Command::new(BIN).args(["run", "p.toml", "--json"]).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            // Ended before `id` started: its error says why.
            let out = child.wait_with_output().unwrap();
            panic!("run ended before `{id}` started: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["event"] == "started" && ev["id"] == id {
            return (child, lines);
        }
    }
}

#[test]
fn sigint_and_sigterm_say_what_stopped_and_what_stays_cached() {
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let d = tempfile::tempdir().unwrap();
        pipeline(d.path(), 20_000);
        let (child, lines) = run_until_started(d.path(), "slow");
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        // Stopped a while after it started: the summary says how long it ran.
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {err}");
        // The events close what they opened: `slow` interrupted, `z` never started, then a summary.
        let rest: Vec<serde_json::Value> = rest
            .join()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] != "progress")
            .collect();
        let kinds: Vec<&str> = rest.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["interrupted", "summary", "error"], "{sig}: {rest:?}");
        assert_eq!((&rest[0]["id"], &rest[0]["kept"]), (&serde_json::json!("slow"), &serde_json::json!(false)));
        assert_eq!((&rest[1]["ran"], &rest[1]["interrupted"]), (&serde_json::json!(1), &serde_json::json!(1)), "{sig}");
        // `z`, which waited on `slow`, is counted and listed as never started.
        assert_eq!(rest[1]["not_started"], 1, "{sig}");
        assert!(rest[1]["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "z" && n["outcome"] == "not_started"), "{sig}");
        let slow = rest[1]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "slow").unwrap();
        assert!(slow["outcome"] == "interrupted" && slow["ms"].as_u64().unwrap() >= 250, "{sig}: {slow}");
        assert_eq!(rest[2]["exit"], code);
        assert!(t0.elapsed() < Duration::from_secs(10), "{sig}: stopped without waiting for the 20 s node");
        assert!(
            err.contains("interrupted while running slow (not cached") && err.contains("1 node finished in this run and stays cached"),
            "{sig}: {err}"
        );
        let s = status(d.path());
        assert_eq!((state_of(&s, "a"), state_of(&s, "slow")), ("fresh".to_string(), "stale".to_string()));
    }
}

#[test]
fn a_reader_that_stops_early_stops_the_run_cleanly_with_141() {
    // `polyflow run --json | head -2`: the run stops as on SIGTERM (no panic, nothing half-cached), exit 141.
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path(), 20_000);
    let (child, lines) = run_until_started(d.path(), "slow");
    let t0 = Instant::now();
    drop(lines);
    // The next event (a progress line of `slow` within a second) finds the pipe closed.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15), "stopped without waiting for the 20 s node");
    assert!(!err.contains("panicked") && err.contains("standard output was closed by its reader"), "{err}");
    let s = status(d.path());
    assert_eq!((state_of(&s, "a"), state_of(&s, "slow")), ("fresh".to_string(), "stale".to_string()));
}

/// Whether process `pid` runs (a zombie waiting to be reaped does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// The pid a command node's program writes into `file` once it has started (within 30 s).
fn pid_written(file: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        match std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            Some(pid) => return pid,
            None => assert!(t0.elapsed() < Duration::from_secs(30), "the command did not start"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_a_command_nodes_program_and_exits_130() {
    let d = tempfile::tempdir().unwrap();
    // The program says its pid, prints to its standard output, and sleeps the first time only.
    let script =
        "echo $$ > pid; echo hello-from-command; if [ -e again ]; then echo 1 > \"$POLYFLOW_OUT/x\"; else touch again; sleep 30; fi";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    // A terminal's Ctrl-C: SIGINT to the foreground process group, which polyflow leads here.
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(BIN)
            .args(["run", "p.toml", "--json"])
            .current_dir(d.path())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let t0 = Instant::now();
    let sh = pid_written(&d.path().join("pid"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap().success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "it waited for the 30 s program");
    assert!(err.contains("interrupted while running c (not cached"), "{err}");
    // The program went with the run, and its output went to standard error: standard output is JSON only.
    let t = Instant::now();
    while running(sh) {
        assert!(t.elapsed() < Duration::from_secs(5), "the command's program outlived the run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(err.contains("[c] hello-from-command"), "{err}");
    for line in stdout.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
    // Not a failure of the node's own: stale, said to be interrupted (not "never run"), and the next run computes
    // it and leaves no scratch behind.
    let st = status(d.path());
    assert_eq!(state_of(&st, "c"), "stale");
    let reason = st.as_array().unwrap().iter().find(|n| n["id"] == "c").unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("interrupted after ") && reason.contains("its run was stopped before it finished"), "{reason}");
    let reasons = &st.as_array().unwrap().iter().find(|n| n["id"] == "c").unwrap()["reasons"];
    assert!(reasons[0]["reason"] == "interrupted" && reasons[0]["after_ms"].as_u64().is_some_and(|ms| ms >= 100), "{reasons}");
    let out = polyflow(d.path(), &["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(state_of(&status(d.path()), "c"), "fresh");
    let partial = d.path().join(".polyflow/partial");
    assert!(!partial.exists() || std::fs::read_dir(&partial).unwrap().next().is_none(), "scratch left in {}", partial.display());
}

/// A hang-up (a closed terminal, a dropped ssh session) stops a run as SIGTERM does: the programs of `command`
/// nodes, which run in process groups of their own that the terminal's hang-up does not reach, are stopped with
/// it, down to what they started, instead of running on unattended; exit 129.
#[test]
fn a_hang_up_stops_a_command_nodes_programs_and_exits_129() {
    let d = tempfile::tempdir().unwrap();
    // The shell starts a program of its own and waits for it.
    let script = "sleep 30 & echo $! > pid; wait";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let child =
        Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let sleep = pid_written(&d.path().join("pid"));
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(129), "{err}");
    assert!(err.contains("interrupted while running c (not cached"), "{err}");
    let t = Instant::now();
    while running(sleep) {
        assert!(t.elapsed() < Duration::from_secs(5), "the command's own program outlived the run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state_of(&status(d.path()), "c"), "stale");
}

/// polyflow killed outright (`kill -9`, the OOM killer) does not leave its programs' children running: the
/// guardian of each program's process group stops the group (before, only the direct child was signalled, and
/// a shell's `python train.py` ran on, holding its GPU).
#[test]
fn sigkill_of_polyflow_stops_a_commands_grandchildren() {
    let d = tempfile::tempdir().unwrap();
    // A shell whose child sleeps (a training script run by a wrapper) and says its pid.
    let script = "sleep 60 & echo $! > pid; wait";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let mut child =
        Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let sleeper = pid_written(&d.path().join("pid"));
    assert!(running(sleeper));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let t = Instant::now();
    while running(sleeper) {
        assert!(t.elapsed() < Duration::from_secs(15), "the command's grandchild outlived a killed polyflow");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program's own SIGUSR1 sent to its process group (a "checkpoint now" signal) reaches the program and is
/// the program's: the guardian, which hears polyflow's death as SIGUSR1, stops nothing while polyflow lives.
#[test]
fn a_sigusr1_to_the_group_is_the_programs() {
    let d = tempfile::tempdir().unwrap();
    let script = "trap 'echo got > usr1' USR1; echo $$ > pid; i=0; while [ $i -lt 40 ] && [ ! -e usr1 ]; do sleep 0.05; i=$((i+1)); done; echo 1 > $POLYFLOW_OUT/x";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let child =
        Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let sh = pid_written(&d.path().join("pid"));
    // The group's id: the guardian's pid, the shell's parent.
    let stat = std::fs::read_to_string(format!("/proc/{sh}/stat")).unwrap();
    let pgid: i32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(Command::new("kill").args(["-USR1", "--", &format!("-{pgid}")]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(d.path().join("usr1")).unwrap().trim(), "got");
}

/// What a program left running in its group when it ended (a shell's `cmd &`) is stopped, with a note, before
/// its outputs are moved into the store: it would write on into a stored blob (`verify` found it damaged later).
#[test]
fn what_a_program_leaves_running_is_stopped_before_its_outputs_are_stored() {
    let d = tempfile::tempdir().unwrap();
    let script = "echo early > $POLYFLOW_OUT/o; (exec >/dev/null 2>&1; exec 3>>$POLYFLOW_OUT/o; echo $$ > late.pid; sleep 2; echo LATE >&3) & while [ ! -s late.pid ]; do sleep 0.01; done; exit 0";
    std::fs::write(d.path().join("p.toml"), format!("[node.late]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let out = polyflow(d.path(), &["run", "p.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ended leaving processes it started running; they were killed"), "{err}");
    std::thread::sleep(Duration::from_millis(2500));
    let out = polyflow(d.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Killed at once: a leftover's TERM trap writes nothing into the stored outputs.
    let trap = "sh -c 'trap \"echo t > $POLYFLOW_OUT/onterm\" TERM; echo $$ > trap.pid; while :; do sleep 0.05; done' & while [ ! -s trap.pid ]; do sleep 0.01; done; echo 1 > $POLYFLOW_OUT/o";
    std::fs::write(d.path().join("p.toml"), format!("[node.trap]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {trap:?}]\n")).unwrap();
    let out = polyflow(d.path(), &["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = polyflow(d.path(), &["show", "p.toml", "trap"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    // Among its files (the parameters above name it too): `o` only.
    assert!(shown.lines().any(|l| l.trim_start().starts_with("o ")), "{shown}");
    assert!(!shown.lines().any(|l| l.trim_start().starts_with("onterm")), "{shown}");
    // A program that waits for what it starts gets no note.
    std::fs::write(
        d.path().join("p.toml"),
        "[node.w]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 0.1 & wait; echo 1 > $POLYFLOW_OUT/o\"]\n",
    )
    .unwrap();
    let out = polyflow(d.path(), &["run", "p.toml"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("leaving processes"));
}

/// Every line a program writes is forwarded before its node is reported finished, however slowly polyflow's
/// standard error is read (before, what was still queued when the run ended was lost); the program waits for
/// the reader instead of polyflow's memory growing.
#[test]
fn a_slow_reader_gets_every_line_of_a_programs_output_before_done() {
    let d = tempfile::tempdir().unwrap();
    let script = "i=0; while [ $i -lt 30000 ]; do echo line $i; i=$((i+1)); done; echo 1 > $POLYFLOW_OUT/o";
    std::fs::write(d.path().join("p.toml"), format!("[node.chatty]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let mut child =
        Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Not read at first: 30,000 lines (about 600 KB) fill polyflow's stderr pipe (64 KiB), its bounded read-ahead
    // (16 chunks of at most 8 KiB) and the program's pipe (64 KiB), so the program waits: the run is not over.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the run ended with nobody reading its output: it was held in memory");
    let lines: Vec<String> = BufReader::new(child.stderr.take().unwrap()).lines().map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let forwarded: Vec<&String> = lines.iter().filter(|l| l.starts_with("[chatty] line ")).collect();
    assert_eq!(forwarded.len(), 30000);
    assert_eq!(forwarded.last().unwrap().as_str(), "[chatty] line 29999");
    let finished = lines.iter().position(|l| l.contains("Finished chatty")).unwrap();
    let last = lines.iter().position(|l| l == "[chatty] line 29999").unwrap();
    assert!(last < finished, "output after `Finished`:\n{}", lines.join("\n"));
}

/// A process that left the program's group (`setsid`, a daemon's double fork) is adopted by the guardian and
/// stopped with the rest: when the program ends, and when polyflow is killed outright.
#[test]
fn a_setsid_process_is_stopped_too() {
    let d = tempfile::tempdir().unwrap();
    let left = "setsid sh -c 'echo $$ > esc.pid; exec sleep 60' & while [ ! -s esc.pid ]; do sleep 0.01; done; echo 1 > $POLYFLOW_OUT/o";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {left:?}]\n")).unwrap();
    let out = polyflow(d.path(), &["run", "p.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ended leaving processes it started running"), "{err}");
    let escaped = pid_written(&d.path().join("esc.pid"));
    let t = Instant::now();
    while running(escaped) {
        assert!(t.elapsed() < Duration::from_secs(5), "a setsid process outlived its node");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed outright: the guardian stops it as it stops the group.
    std::fs::remove_file(d.path().join("esc.pid")).unwrap();
    let waits = "setsid sh -c 'echo $$ > esc.pid; exec sleep 60' & wait";
    std::fs::write(d.path().join("p.toml"), format!("[node.k]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {waits:?}]\n")).unwrap();
    let mut child =
        Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let escaped = pid_written(&d.path().join("esc.pid"));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while running(escaped) {
        assert!(t.elapsed() < Duration::from_secs(15), "a setsid process outlived a killed polyflow");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A forced re-run stopped by Ctrl-C leaves the artifact the store holds under its key, and the message says so
/// rather than "not cached".
#[test]
fn an_interrupted_forced_rerun_keeps_the_artifact_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"if [ -f slow ]; then sleep 20; fi; echo x > $POLYFLOW_OUT/x\"]\n",
    )
    .unwrap();
    let ok = Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    std::fs::write(d.path().join("slow"), "").unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "p.toml", "--force", "c", "--json"])
        .current_dir(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["event"] == "started" && ev["id"] == "c" {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted during the forced re-run of c (the artifact the store holds stays)") && !err.contains("not cached"),
        "{err}"
    );
    assert_eq!(state_of(&status(d.path()), "c"), "fresh");
}
