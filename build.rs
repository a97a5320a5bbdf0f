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
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{version} ({commit}{})", if dirty { "+dirty" } else { "" })
        }
        _ => version,
    };
    println!("cargo:rustc-env=POLYFLOW_BUILD={build}");
    // A new commit (or checkout) names a new build.
    for p in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
