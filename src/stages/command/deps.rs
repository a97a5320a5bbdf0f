//! The files a `command` node depends on (`deps`): how they are named, hashed into its key and checked
//! before anything runs; and the walk over what its program wrote.

use crate::fingerprint::FileDigests;
use crate::stage::StageError;
use std::path::{Path, PathBuf};

/// What cannot be read below `path` (itself, a file, a folder, a symlink's target), at most 3, each with why:
/// the stat and access checks of a walk, no file read.
pub(super) fn unreadable_in(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = vec![];
    for e in walkdir::WalkDir::new(path).follow_links(true) {
        let problem = match e {
            Err(e) => {
                let at = e.path().map(crate::spec::source::display_path).unwrap_or_default();
                match e.io_error().map(|io| io.kind()) {
                    Some(std::io::ErrorKind::NotFound) => Some(format!("{at}: a symlink whose target does not exist")),
                    _ => Some(format!("{at}: {}", e.io_error().map_or_else(|| e.to_string(), |io| io.to_string()))),
                }
            }
            Ok(e) if e.file_type().is_file() => {
                let c = std::ffi::CString::new(e.path().as_os_str().as_bytes()).ok();
                // SAFETY: access(2) on a NUL-terminated path; it only reads the string.
                let readable = c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::R_OK) } == 0);
                (!readable).then(|| format!("{}: permission denied", crate::spec::source::display_path(e.path())))
            }
            Ok(_) => None,
        };
        out.extend(problem);
        if out.len() >= 3 {
            break;
        }
    }
    out
}

/// A `deps` entry as its path means it: `./data/` is `data`, `a//b` is `a/b` (`.` for the pipeline's own
/// folder); `..` is kept (it is not `x/..` undone: a link can make them differ). A plain path is unchanged, so keys
/// made before this rule stay.
pub(super) fn normal_dep(d: &str) -> String {
    let p = Path::new(d);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    let s = out.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".to_string()
    } else {
        s
    }
}

/// Digest of `deps` (files or folders relative to `base`): each dependency's name, a NUL byte and its content
/// digest (see [`crate::fingerprint::files`]).
pub(super) fn hash_paths(base: &Path, deps: &[String], files: &FileDigests) -> Result<String, StageError> {
    let mut h = blake3::Hasher::new();
    for d in deps {
        let d = &normal_dep(d);
        let p = base.join(d);
        let digest = files.tree(&p).map_err(|e| StageError::input(format!("dependency `{d}`: {e}")))?;
        h.update(d.as_bytes());
        h.update(&[0]);
        h.update(digest.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

/// All regular files below `p` (or `p` itself), symlinks followed.
pub fn collect_files(p: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut linked = vec![];
    collect_files_linked(p, false, &mut linked)?;
    out.extend(linked.into_iter().map(|(f, _)| f));
    Ok(())
}

/// [`collect_files`], each file with whether it is reached through a symlink (itself one, or in a linked folder)
/// or has other hard links: such a file is someone else's too, never to be moved into the store.
pub(super) fn collect_files_linked(p: &Path, via_link: bool, out: &mut Vec<(std::path::PathBuf, bool)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // Errors name the file (a dangling link, a loop of links).
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let own = std::fs::symlink_metadata(p).map_err(named)?;
    let via_link = via_link || own.file_type().is_symlink();
    let meta = std::fs::metadata(p).map_err(named)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            collect_files_linked(&e?.path(), via_link, out)?;
        }
    } else if meta.is_file() {
        out.push((p.to_path_buf(), via_link || meta.nlink() > 1));
    } else {
        // Reading a FIFO would wait forever, a device never end, a socket fail: none is a result.
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file: only files and folders are results (remove it before the program exits)",
            p.display(),
            crate::store::fsafe::kind_of(meta.file_type())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normal_dep;
    use crate::stage::Stage;
    use crate::stages::command::CommandStage;
    use serde_json::json;

    #[test]
    fn deps_respelt_are_the_same_path() {
        for (a, b) in [("./data/", "data"), ("data//x", "data/x"), ("./", "."), ("../d", "../d"), ("a/./b", "a/b"), ("/abs/", "/abs")] {
            assert_eq!(normal_dep(a), b, "{a}");
        }
        let mut k = json!({"deps": ["./train.py", "data/"], "run": ["x"]});
        CommandStage.canonical_key(&mut k);
        assert_eq!(k["deps"], json!(["train.py", "data"]));
    }
}
