//! What in a `command` node's settings looks like a mistake without being an error, said before it runs: a
//! project file its `run` names that nothing keys (an edit of the script would not make the node stale), and a
//! program not found on `PATH` here.

use super::deps::normal_dep;
use crate::spec::source::folded_absolute;
use std::path::Path;

/// The project files `run` names (an argument, or a word of a `sh -c "…"` script) that neither `deps` nor
/// `keyed` (files already in the key: a files matrix's) covers: relative paths to files that exist under
/// `base_dir`, in the order named, each once.
pub(super) fn unkeyed_files(run: &[String], deps: &[String], keyed: &[String], base_dir: &Path) -> Vec<String> {
    let covers: Vec<std::path::PathBuf> =
        deps.iter().map(|d| normal_dep(d)).chain(keyed.iter().cloned()).map(|d| folded_absolute(&base_dir.join(d))).collect();
    let mut out: Vec<String> = vec![];
    for arg in run {
        let words = std::iter::once(arg.as_str()).chain(arg.split_whitespace());
        for w in words {
            let w = w.trim_matches(|c: char| "'\"();`".contains(c));
            if w.is_empty() || w.starts_with('-') || w.starts_with('$') || Path::new(w).is_absolute() || w.contains('\n') {
                continue;
            }
            let at = base_dir.join(w);
            if !at.is_file() {
                continue;
            }
            let abs = folded_absolute(&at);
            // Only what is in the project (a path up and out of it is someone else's file).
            if !abs.starts_with(folded_absolute(base_dir)) || covers.iter().any(|c| abs.starts_with(c)) {
                continue;
            }
            let shown = normal_dep(w);
            if !out.contains(&shown) {
                out.push(shown);
            }
        }
    }
    out
}

/// Where `program` (a command's first word without a `/`) is found on `path` (`$PATH`): `Ok(())`, or `Err` with the
/// nearest name there when none is (`pythn3` → `python3`).
pub(super) fn on_path(program: &str, path: &std::ffi::OsStr) -> Result<(), Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(path).collect();
    let runnable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if dirs.iter().any(|d| runnable(&d.join(program))) {
        return Ok(());
    }
    let names: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|r| r.flatten().filter_map(|e| e.file_name().into_string().ok()))
        .collect();
    Err(crate::spec::error::closest(program, names.iter().map(String::as_str)).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_project_files_run_names_that_nothing_keys() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("scripts")).unwrap();
        for f in ["scripts/a.py", "scripts/b.py", "data.csv", "raw.csv"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let run: Vec<String> =
            ["sh", "-c", "python3 ./scripts/a.py data.csv > $POLYFLOW_OUT/x; cat 'scripts/b.py'", "raw.csv", "--out", "missing.py"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let got = unkeyed_files(&run, &["data.csv".into()], &["raw.csv".into()], d.path());
        assert_eq!(got, ["scripts/a.py", "scripts/b.py"]);
        // A folder in `deps` covers what is below it.
        assert!(unkeyed_files(&run, &["./scripts/".into(), "data.csv".into()], &["raw.csv".into()], d.path()).is_empty());
    }

    #[test]
    fn a_program_not_on_path_is_named_with_the_nearest() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("python3");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(on_path("python3", d.path().as_os_str()), Ok(()));
        assert_eq!(on_path("pythn3", d.path().as_os_str()), Err(Some("python3".into())));
    }
}
