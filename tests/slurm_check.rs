//! The Slurm executor's check before submitting, against a stand-in `sbatch` on PATH (no cluster needed): a
//! refused option set ends the run once with exit 2 and submits nothing; a missing client is named as such.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

/// A stand-in `sbatch` in `dir/bin`: `--test-only` refuses the partition `nowhere` as Slurm does and accepts
/// the rest; a real submission is recorded in `dir/submitted` (and fails, so nothing waits on it).
fn fake_sbatch(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *--test-only*)\n    case \"$*\" in *--partition=nowhere*) echo 'sbatch: error: invalid partition specified: nowhere' >&2; exit 1;; esac\n    echo 'sbatch: Job 1 to start at now' >&2; exit 0;;\nesac\necho \"$*\" >> {}\nexit 3\n",
        dir.join("submitted").display()
    );
    let f = bin.join("sbatch");
    std::fs::write(&f, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run(dir: &Path, path: &Path) -> (i32, String, String) {
    let out = Command::new(BIN).args(["run", "p.toml", "--json"]).env("PATH", path).current_dir(dir).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

const NODES: &str = "[node.a]\nkind = \"command\"\nrun = [\"true\"]\n[node.b]\nkind = \"command\"\nrun = [\"false\"]\n";

#[test]
fn options_slurm_refuses_end_the_run_once_before_anything_is_submitted() {
    let d = tempfile::tempdir().unwrap();
    let bin = fake_sbatch(d.path());
    std::fs::write(d.path().join("p.toml"), format!("[executor]\nkind = \"slurm\"\npartition = \"nowhere\"\n{NODES}")).unwrap();
    let (code, out, err) = run(d.path(), &bin);
    assert_eq!(code, 2, "{err}");
    assert!(!d.path().join("submitted").exists(), "nothing submitted");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let m = last["message"].as_str().unwrap();
    assert!(last["event"] == "error" && m.contains("nothing was submitted") && m.contains("invalid partition specified: nowhere"), "{m}");
    assert!(m.contains("`a` (p.toml:4:7), `b` (p.toml:7:7)") && err.matches("invalid partition").count() == 1, "once, naming both: {err}");
    assert!(last["help"].as_str().is_some_and(|h| h.contains("--partition=nowhere")), "{last}");
    assert!(!out.contains("\"started\""), "{out}");
    // Accepted options go on to a submission (which the stand-in fails: each node fails, exit 1).
    std::fs::write(d.path().join("p.toml"), format!("[executor]\nkind = \"slurm\"\npartition = \"debug\"\n{NODES}")).unwrap();
    let (code, _, err) = run(d.path(), &bin);
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("submitted")).unwrap().lines().count(), 2);
    // No Slurm client at all: said as such, once, exit 2.
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(d.path().join("p.toml"), format!("[executor]\nkind = \"slurm\"\n{NODES}")).unwrap();
    std::fs::remove_dir_all(d.path().join(".polyflow")).unwrap();
    let (code, out, err) = run(d.path(), &empty);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(code == 2 && last["help"].as_str().is_some_and(|h| h.contains("set up Slurm's client")), "{out}{err}");
}
