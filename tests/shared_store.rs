//! One store, several processes and users: readers while a run commits node after node, a store this user cannot
//! write, a store shared by a group, a wait for the store that is interrupted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

fn pf(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).current_dir(dir).env_remove("POLYFLOW_CACHE").output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// `n` value nodes that each sleep `ms`.
fn sleepers(n: usize, ms: u64) -> String {
    (0..n).map(|i| format!("[node.v{i}]\nkind = \"value\"\nvalue = {i}\nsleep_ms = {ms}\n")).collect()
}

/// Every file of the store with its bytes (a read must leave it as it was).
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// `polyflow ARGS` started in `dir`, its standard error discarded, its standard output piped or discarded.
fn spawn(dir: &Path, args: &[&str], piped: bool) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("POLYFLOW_CACHE")
        .stdout(if piped { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (up to 30 s) until `path` exists: the run started has made its store.
fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|u| u.split_whitespace().nth(1) == Some("0"))
}

/// A run that commits node after node (many short nodes, two at a time) used to hold the index from its first
/// commit to its last: `status` waited for the whole run. A reader now asks for it and gets it between commits.
#[test]
fn status_reads_while_a_run_commits_node_after_node() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), sleepers(120, 40)).unwrap();
    // 120 × 40 ms on 2 slots: the run lasts at least 2.4 s, however fast the machine.
    let mut run = spawn(d.path(), &["run", "p.toml", "--store", "s", "-j", "2"], false);
    wait_for(&d.path().join("s/index"));
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--store", "s", "--json"]);
    let still_running = run.try_wait().unwrap().is_none();
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fresh = rows.as_array().unwrap().iter().filter(|r| r["state"] == "fresh").count();
    assert!(still_running, "status returned only after the run ended ({fresh} of 120 fresh when it read)");
    assert!(fresh < 120, "status read a finished run");
    assert!(run.wait().unwrap().success());
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--store", "s"]);
    assert!(out.contains("120 of 120 nodes fresh"), "{out}");
}

/// A store this user cannot write (another user's, a read-only copy): the read commands read it as it is and
/// change nothing in it (a dry `gc` too); `run` and `gc --yes` say why they cannot write it and what to do, with
/// exit 4. As root, the
/// commands run as `nobody` (root ignores permissions).
#[test]
fn a_store_this_user_cannot_write_is_read_as_it_is() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.path().join("p.toml"), sleepers(3, 0)).unwrap();
    std::fs::write(d.path().join("q.toml"), "[node.other]\nkind = \"value\"\nvalue = 9\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s"]).0, 0);
    let root = is_root();
    let as_reader_in = |tmp: &Path, args: &[&str]| -> (i32, String, String) {
        let mut c = if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        let o = c.args(args).current_dir(d.path()).env("TMPDIR", tmp).env_remove("POLYFLOW_CACHE").output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
    };
    let as_reader = |args: &[&str]| as_reader_in(Path::new("/tmp"), args);
    if !root {
        Command::new("chmod").args(["-R", "a-w", "s"]).current_dir(d.path()).status().unwrap();
    }
    let before = snapshot(&d.path().join("s"));
    let (code, out, err) = as_reader(&["status", "p.toml", "--store", "s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 of 3 nodes fresh"), "{out}");
    let (code, out, err) = as_reader(&["plan", "p.toml", "--store", "s"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = as_reader(&["verify", "--store", "s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 files checked, 0 damaged"), "{out}");
    let (code, out, err) = as_reader(&["report", "p.toml", "--store", "s", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("</html>"));
    // `show` writes its previews into the reader's own folder under $TMPDIR: a link another user planted at its
    // name is not written through (a fresh private folder is used, with a warning).
    let tmpd = d.path().join("tmpd");
    let victim = d.path().join("victim");
    for p in [&tmpd, &victim] {
        std::fs::create_dir(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let uid = if root { "65534".to_string() } else { String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap() };
    std::os::unix::fs::symlink(&victim, tmpd.join(format!("polyflow-{}", uid.trim()))).unwrap();
    let (code, out, err) = as_reader_in(&tmpd, &["show", "p.toml", "--store", "s", "v1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("is not a private folder of this user"), "{err}");
    assert!(out.contains(&format!("previews: {}/polyflow-{}-", tmpd.display(), uid.trim())), "{out}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "written through the planted link");
    let fresh = std::fs::read_dir(&tmpd)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("polyflow-{}-", uid.trim())));
    let mode = fresh.unwrap().metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the fresh folder is open to others: {mode:o}");
    // A dry gc deletes nothing: it reads.
    let (code, out, err) = as_reader(&["gc", "p.toml", "--store", "s"]);
    assert_eq!(code, 0, "{out}{err}");
    for args in [&["run", "q.toml", "--store", "s"][..], &["gc", "q.toml", "--store", "s", "--yes"]] {
        let (code, out, err) = as_reader(args);
        assert_eq!(code, 4, "{args:?}: {out}{err}");
        // Another user's store: a store of one's own, or the owner shares it; one's own read-only copy: chmod.
        let advice = if root { "--store DIR" } else { "chmod -R u+w" };
        assert!(err.contains("is not writable here") && err.contains(advice), "{args:?}: {err}");
    }
    assert_eq!(snapshot(&d.path().join("s")), before, "a read changed the store");
    if !root {
        Command::new("chmod").args(["-R", "u+w", "s"]).current_dir(d.path()).status().unwrap();
    }
}

/// A store whose root folder is group-writable is shared by its group: what polyflow creates in it is
/// group-writable whatever the user's umask, and blobs are readable as the umask allows (they were `0600`).
#[test]
fn a_group_writable_store_stays_group_writable() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), sleepers(2, 0)).unwrap();
    std::fs::create_dir(d.path().join("s")).unwrap();
    std::fs::set_permissions(d.path().join("s"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let o = Command::new("sh")
        .args(["-c", &format!("umask 022 && {BIN} run p.toml --store s && {BIN} run p.toml --store t")])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let walk = |root: &Path| -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
            }
            out.push(p);
        }
        out
    };
    for p in walk(&d.path().join("s")) {
        assert_eq!(mode(&p) & 0o060, 0o060, "{} is {:o}", p.display(), mode(&p));
    }
    // A store of one's own keeps the umask (here 022): blobs readable by all, writable by none but the owner.
    let blobs: Vec<_> = walk(&d.path().join("t/blobs")).into_iter().filter(|p| p.is_file()).collect();
    assert!(!blobs.is_empty());
    for p in blobs {
        assert_eq!(mode(&p), 0o644, "{}", p.display());
    }
}

/// `status` says what another process's run is computing; `run --wait --json` stopped while it waits for that run
/// ends as an interrupted run does: exit 130, and a closing `error` line.
#[test]
fn a_wait_for_the_store_that_is_interrupted_ends_with_an_error_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"command\"\nrun = [\"sleep\", \"3\"]\n").unwrap();
    let mut holder = spawn(d.path(), &["run", "p.toml", "--store", "s"], false);
    wait_for(&d.path().join("s/writer.info"));
    // `status` in another process names what the run is computing.
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--store", "s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in flight: running for") && out.contains(&format!("pid {}", holder.id())), "{out}");
    let waiter = spawn(d.path(), &["run", "p.toml", "--store", "s", "--wait", "--json"], true);
    std::thread::sleep(Duration::from_millis(700));
    Command::new("kill").args(["-INT", &waiter.id().to_string()]).status().unwrap();
    let o = waiter.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{out}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!((last["event"].as_str(), last["exit"].as_i64()), (Some("error"), Some(130)), "{out}");
    assert!(out.contains("\"waiting\""), "{out}");
    assert!(holder.wait().unwrap().success());
}
