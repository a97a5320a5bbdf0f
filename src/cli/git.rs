//! The git checkout a pipeline lives in, as runs record it and `gc` reads it: the branch and commit a run was made
//! on (notes on its record, never part of a key), and the branches that still exist, whose latest runs `gc`
//! keeps. Read with the `git` program when it is there; a folder outside a repository, or no git, gives nothing.

use std::collections::BTreeSet;
use std::path::Path;

/// The note under which a run keeps the branch it was made on (absent on a detached HEAD or outside git).
pub const BRANCH: &str = "git_branch";
/// The note under which a run keeps the commit checked out when it was made.
pub const COMMIT: &str = "git_commit";
/// The note a run has when tracked files differed from that commit as it started (`git status`; untracked files
/// are not looked at).
pub const DIRTY: &str = "git_dirty";

/// Runs `git -C dir ARGS` without taking git's optional locks; its output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The checkout of the repository holding `dir`: (branch, commit); the branch is `None` on a detached HEAD (a CI
/// checkout of a commit). `None` outside a repository, before its first commit, or without git.
pub fn head(dir: &Path) -> Option<(Option<String>, String)> {
    // (`--abbrev-ref` applies to the revisions after it.)
    let out = git(dir, &["rev-parse", "HEAD", "--abbrev-ref", "HEAD"])?;
    let mut lines = out.lines();
    let (commit, branch) = (lines.next()?.trim(), lines.next()?.trim());
    Some(((branch != "HEAD").then(|| branch.to_string()), commit.to_string()))
}

/// The top folder of the repository holding `dir` (`None` outside one, or without git).
pub fn toplevel(dir: &Path) -> Option<std::path::PathBuf> {
    let out = git(dir, &["rev-parse", "--show-toplevel"])?;
    let top = std::path::PathBuf::from(out.trim_end_matches('\n'));
    top.canonicalize().ok().or(Some(top))
}

/// Whether git ignores folder `dir` (a build or scratch folder of the repository holding it).
pub fn ignored(dir: &Path) -> bool {
    git(dir, &["check-ignore", "-q", "."]).is_some()
}

/// Whether tracked files of the repository holding `dir` differ from its HEAD (staged or not), leaving out those
/// at or under `outputs` (absolute paths: what runs write, such as exported results, are no edit of what ran);
/// `false` outside a repository or without git.
pub fn dirty(dir: &Path, outputs: &[std::path::PathBuf]) -> bool {
    let (Some(top), Some(status)) = (toplevel(dir), git(dir, &["status", "--porcelain", "-z", "--untracked-files=no"])) else {
        return false;
    };
    // `XY path` entries, NUL-separated; a rename's or copy's entry is followed by its source path.
    let mut entries = status.split('\0').filter(|e| !e.is_empty());
    while let Some(e) = entries.next() {
        let (xy, path) = (e.get(..2).unwrap_or(""), e.get(3..).unwrap_or(""));
        if xy.contains('R') || xy.contains('C') {
            entries.next();
        }
        if !outputs.iter().any(|o| top.join(path).starts_with(o)) {
            return true;
        }
    }
    false
}

/// The local branches of the repository holding `dir` (`None` outside one, or without git).
pub fn branches(dir: &Path) -> Option<BTreeSet<String>> {
    let out = git(dir, &["for-each-ref", "--format=%(refname:short)", "refs/heads"])?;
    Some(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository's branch and commit, and its branches; nothing outside one.
    #[test]
    fn head_and_branches_of_a_repository() {
        let d = tempfile::tempdir().unwrap();
        assert!(git(d.path(), &["--version"]).is_some(), "this test needs git (CI clones with it)");
        assert!(head(d.path()).is_none() && branches(d.path()).is_none(), "not a repository");
        let run = |args: &[&str]| assert!(git(d.path(), args).is_some(), "git {args:?}");
        run(&["init", "-q", "-b", "main"]);
        run(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one"]);
        run(&["branch", "feat"]);
        let (branch, commit) = head(d.path()).unwrap();
        assert_eq!(branch.as_deref(), Some("main"));
        assert_eq!(commit.len(), 40);
        assert_eq!(branches(d.path()).unwrap(), BTreeSet::from(["feat".to_string(), "main".to_string()]));
        run(&["checkout", "-q", "--detach"]);
        assert_eq!(head(d.path()).unwrap(), (None, commit), "a detached HEAD has no branch");
    }
}
