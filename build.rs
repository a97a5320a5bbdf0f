//! Names the build: `POLYFLOW_BUILD` is the package version and, in a git checkout, the commit it was built from
//! (`0.1.0 (2a4c43f1b2c3)`, `+dirty` with uncommitted changes), for `--version` and the entries a run publishes to
//! a shared cache. Without git (a source tarball) it is the version alone.

use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let build = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            // `--no-optional-locks`: a plain `git status` refreshes and rewrites `.git/index`, which is watched
            // below, so every build would have made the next one run this script and rebuild the crate again.
            let dirty = git(&["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{version} ({commit}{})", if dirty { "+dirty" } else { "" })
        }
        _ => version,
    };
    println!("cargo:rustc-env=POLYFLOW_BUILD={build}");
    // A new commit (the branch's ref file moves, `.git/HEAD` does not), a checkout, or a change staged names a new
    // build.
    let mut watched = vec![".git/HEAD".to_string(), ".git/index".to_string(), ".git/packed-refs".to_string()];
    if let Some(r) = std::fs::read_to_string(".git/HEAD").ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string())) {
        watched.push(format!(".git/{r}"));
    }
    for p in watched {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
