//! A full disk, for real: the store lives on a small tmpfs mounted for the test (needs root, so the test is
//! ignored by a plain `cargo test`; `.ci/run` runs it with `POLYFLOW_DISK_TESTS=1 … -- --ignored`, and run that
//! way without the means to mount it fails instead of passing silently).

use std::path::{Path, PathBuf};
use std::process::Command;

fn pf(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_polyflow")).args(args).current_dir(dir).env("RUST_LOG", "off").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Tmpfs {
        assert_eq!(
            std::env::var("POLYFLOW_DISK_TESTS").as_deref(),
            Ok("1"),
            "set POLYFLOW_DISK_TESTS=1 (as root: the test mounts a tmpfs) to run the full-disk tests"
        );
        let d = tempfile::tempdir().unwrap();
        let mnt = d.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(&mnt).status().unwrap();
        assert!(st.success(), "cannot mount a tmpfs (the full-disk tests need root)");
        Tmpfs(mnt, d)
    }

    /// Fills the disk until `leave` bytes are free (0: completely).
    fn fill(&self, leave: u64) {
        let free = |p: &Path| {
            let o = Command::new("df").args(["-B1", "--output=avail"]).arg(p).output().unwrap();
            String::from_utf8_lossy(&o.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
        };
        let avail = free(&self.0);
        let n = avail.saturating_sub(leave);
        let mut f = std::fs::File::create(self.0.join(format!("fill-{leave}"))).unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut written = 0;
        while written < n {
            let k = chunk.len().min((n - written) as usize);
            if std::io::Write::write_all(&mut f, &chunk[..k]).is_err() {
                break;
            }
            written += k as u64;
        }
    }

    fn free_all(&self) {
        for e in std::fs::read_dir(&self.0).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("fill-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

const P: &str = "[node.a]\nkind = \"value\"\nvalue = 1\n[node.b]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"head -c 3000000 /dev/urandom > $POLYFLOW_OUT/big\"]\n";

#[test]
#[ignore = "mounts a tmpfs (root): run with POLYFLOW_DISK_TESTS=1 cargo test --test diskfull -- --ignored"]
fn a_full_disk_fails_with_exit_4_damages_nothing_and_read_only_commands_work() {
    let fs = Tmpfs::mount(8);
    let d = &fs.0;
    std::fs::write(d.join("p.toml"), P).unwrap();
    assert_eq!(pf(d, &["run", "p.toml", "a"]).0, 0);
    // 3 MB of output with about 2 MB free: the blob cannot be written.
    fs.fill(2 << 20);
    let (code, out) = pf(d, &["run", "p.toml"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("disk holding the store is full"), "{out}");
    // Completely full: status, plan and verify still read the store (and nothing is falsely fresh).
    fs.fill(0);
    let (code, out) = pf(d, &["status", "p.toml", "--json"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let state = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap()["state"].as_str().unwrap().to_string();
    assert_eq!((state("a").as_str(), state("b").as_str()), ("fresh", "failed"), "b's failed attempt is recorded, never fresh");
    let (code, out) = pf(d, &["plan", "p.toml"]);
    assert!(code == 0 && out.contains("1 of 2 nodes would run"), "{out}");
    let (code, out) = pf(d, &["verify"]);
    assert!(code == 0 && out.contains("0 damaged"), "{out}");
    let (code, out) = pf(d, &["run", "p.toml"]);
    assert_eq!(code, 4, "{out}");
    // Space again: the store opens (no leftover of the failed attempts stops it) and b runs once.
    fs.free_all();
    let (code, out) = pf(d, &["run", "p.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Finished b"), "{out}");
    let (code, out) = pf(d, &["run", "p.toml"]);
    assert!(code == 0 && !out.contains("Running"), "{out}");
    assert_eq!(pf(d, &["verify"]).0, 0);
}
