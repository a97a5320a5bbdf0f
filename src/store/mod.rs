//! The artifact store: a sled index plus content-addressed blob files.
//!
//! Layout of a store root (default `.polyflow/`):
//!
//! ```text
//! index/          sled: artifacts (key → manifest), records (node id → last run), failures
//! blobs/ab/<hex>  file contents, named by their blake3 digest
//! tmp/            temp files of writes in progress (removed at the next run)
//! partial/<key>/  resumable scratch of a node in progress (removed when it commits)
//! jobs/<key>/     one Slurm job's spec, logs and result (see `exec::slurm::job`)
//! stat/           stat cache of external files' digests (see `fingerprint::files`; safe to delete)
//! damaged/        blobs found not to match their digest, moved aside (their artifacts are then stale)
//! writer.lock     advisory lock held by the one running `polyflow run`
//! index.wanted    written by a process waiting for the index: its holder closes it between two commits
//! show/<id>/      previews written by `polyflow show`
//! ```
//!
//! **Commit order.** Every blob of an artifact is written (temp file, fsync, rename) *before* its manifest is
//! inserted in the index, and the index is flushed before the node is reported done. An interrupted run
//! therefore leaves at most unreferenced blobs, never an index entry whose data is missing.
//!
//! **Trust.** Freshness is decided from metadata: a blob named in the index is trusted when it exists with the
//! recorded size ([`Store::check`]), so `status` does not read terabytes. Bytes are verified where they are used:
//! every reader checks the blake3 digest while it reads, and a blob that fails is moved to `damaged/` (its
//! artifact is stale from then on; the executor recomputes it and retries the reader once). `polyflow verify`
//! reads every blob ([`Store::verify`]).

mod blob;
pub mod cache;
pub mod fsafe;
mod index;
mod lock;

pub use blob::{BlobState, BlobStore, TeeHash};
pub use cache::{ArtifactCache, CacheEntry, DirCache, Made};
pub use index::{index_dir, FailRecord, Index, Wanted};
pub use lock::WriterLock;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Filesystem error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A blob is missing.
    #[error("blob {path} is missing")]
    Missing {
        /// Blob path.
        path: PathBuf,
    },
    /// A blob fails its checksum.
    #[error("blob {path} is corrupt (checksum mismatch)")]
    Corrupt {
        /// Blob path.
        path: PathBuf,
    },
    /// The sled index failed.
    #[error("store index: {0}")]
    Index(String),
    /// Another run holds the writer lock.
    #[error("the store is in use by another `polyflow run`: {holder}; `--wait` waits for it to finish")]
    Locked {
        /// Description of the holder.
        holder: String,
    },
    /// The store path names no place a store can be made (a file, a folder of other files, under a file, a link
    /// to nothing): a usage error, said with what to check.
    #[error("{}: {why}", path.display())]
    NotAStore {
        /// The store path as given.
        path: PathBuf,
        /// What is there, and what to do.
        why: String,
    },
    /// The store cannot be written by this user (a read-only copy, another user's store, a read-only mount).
    #[error(
        "the store {root} is not writable here ({why}): `status`, `plan`, `show`, `compare`, `report`, `verify` and a \
         dry `gc` read it as it is; to write it, {advice}"
    )]
    NotWritable {
        /// The store root.
        root: PathBuf,
        /// The cause, with the owner and mode of what refused.
        why: String,
        /// What to do ([`not_writable_advice`]).
        advice: String,
    },
}

/// Whether an I/O error means the place cannot be written by this user (permissions, a read-only mount).
pub fn is_not_writable(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem)
}

/// What to do about a store that refused a write with `e` at `path`: a read-only mount, one's own read-only
/// files, or another user's store.
pub fn not_writable_advice(root: &Path, path: &Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
        return "use a store of your own on a writable disk (`--store DIR`): this file system is mounted read-only".into();
    }
    let path = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    match std::fs::metadata(path).map(|m| m.uid()) {
        Ok(owner) if owner == me => format!("make its files writable again (`chmod -R u+w {}`)", root.display()),
        Ok(owner) => format!(
            "use a store of your own (`--store DIR`), or ask its owner (uid {owner}) to share it with your group \
             (`chgrp -R GROUP` and `chmod -R g+rwX` on it, `chmod g+s` on its folders: a group-writable store is shared, \
             see the README)"
        ),
        Err(_) => "use a store of your own (`--store DIR`)".into(),
    }
}

/// `path`'s owner and mode (or its nearest existing folder's), for an error that says why it could not be written
/// (`owner uid 1001, group gid 1001, mode 2755`).
pub fn owner_and_mode(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let path = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    match std::fs::metadata(path) {
        Ok(m) => format!("{}: owner uid {}, group gid {}, mode {:o}", path.display(), m.uid(), m.gid(), m.mode() & 0o7777),
        Err(e) => format!("{}: {e}", path.display()),
    }
}

impl StoreError {
    /// Io error helper.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_path_buf(), source }
    }

    /// A copy of a message-only error (the I/O source is not `Clone`).
    pub fn clone_msg(&self) -> StoreError {
        match self {
            StoreError::Index(m) => StoreError::Index(m.clone()),
            e => StoreError::Index(e.to_string()),
        }
    }

    /// Whether the error is a full disk (or quota).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => is_disk_full(source),
            StoreError::Index(m) => m.contains("No space left") || m.contains("Disk quota exceeded"),
            _ => false,
        }
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) || e.raw_os_error() == Some(28)
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Blob digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// An artifact: named files plus its type; its digest covers the type and every file digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Artifact type (e.g. `dataset`, `model`, `table`).
    pub artifact_type: String,
    /// File name → blob.
    pub files: BTreeMap<String, FileEntry>,
    /// Content digest of the artifact.
    pub digest: String,
}

impl Manifest {
    /// Builds a manifest and computes its digest.
    pub fn new(artifact_type: &str, files: BTreeMap<String, FileEntry>) -> Manifest {
        let body = serde_json::json!({"type": artifact_type, "files": files});
        let digest = blake3::hash(&serde_json::to_vec(&body).expect("json")).to_hex().to_string();
        Manifest { artifact_type: artifact_type.to_string(), files, digest }
    }

    /// Total size.
    pub fn size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// `exports` ((name in the artifact, destination)) with each name that is a folder of the artifact (no file
    /// of that name, files below it) written out as its files, each to the same place below the destination
    /// (`("plots", "out/plots")` → `("plots/a.png", "out/plots/a.png")`, …). Names that are neither stay as
    /// given (the caller says that the artifact lacks them).
    pub fn exported_files(&self, exports: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut out = vec![];
        for (name, to) in exports {
            let prefix = format!("{}/", name.trim_end_matches('/'));
            if self.files.contains_key(&name) || !self.files.keys().any(|f| f.starts_with(&prefix)) {
                out.push((name, to));
                continue;
            }
            let to = to.trim_end_matches('/').to_string();
            out.extend(self.files.keys().filter_map(|f| f.strip_prefix(&prefix).map(|rest| (f.clone(), format!("{to}/{rest}")))));
        }
        out
    }
}

/// Scratch folder of the node computed under `key` in the store at `root`.
pub fn partial_dir(root: &Path, key: &str) -> PathBuf {
    root.join("partial").join(&key[..24.min(key.len())])
}

/// The scratch folders in the store at `root` ([`partial_dir`]), sorted.
pub fn partial_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("partial")) else { return vec![] };
    let mut out: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    out.sort();
    out
}

/// Whether `dir`, one of [`partial_dirs`], is the scratch folder of the node computed under `key`.
pub fn is_partial_of(dir: &Path, key: &str) -> bool {
    dir.file_name().is_some_and(|n| key.starts_with(&*n.to_string_lossy()))
}

/// Content digests of external files with the stat cache of the store at `root` (nothing is created until
/// a digest is recorded).
pub fn file_digests(root: &Path) -> crate::fingerprint::FileDigests {
    crate::fingerprint::FileDigests::cached(root.join("stat"))
}

/// The folder holding one folder per Slurm job in the store at `root`.
pub fn jobs_root(root: &Path) -> PathBuf {
    root.join("jobs")
}

/// Folder of the Slurm job computing `key` in the store at `root` (its spec, logs and result).
pub fn job_dir(root: &Path, key: &str) -> PathBuf {
    jobs_root(root).join(&key[..24.min(key.len())])
}

/// The folder of the programs' output logs in the store at `root`.
pub fn logs_root(root: &Path) -> PathBuf {
    root.join("logs")
}

/// Where the output of the program computing `key` (a `command` node's) is kept in the store at `root`: that
/// of the latest run that made its artifact. A failed attempt's goes to [`failed_log`], so a forced re-run that
/// fails leaves the log of the run that made the artifact.
pub fn output_log(root: &Path, key: &str) -> PathBuf {
    logs_root(root).join(format!("{}.log", &key[..24.min(key.len())]))
}

/// The output of the latest failed attempt at `key` (see [`output_log`]).
pub fn failed_log(root: &Path, key: &str) -> PathBuf {
    logs_root(root).join(format!("{}.failed.log", &key[..24.min(key.len())]))
}

/// Where an attempt at `key` writes its output while it runs: moved to [`output_log`] or [`failed_log`] (a failed
/// or interrupted attempt's) as it ends.
pub fn attempt_log(root: &Path, key: &str) -> PathBuf {
    logs_root(root).join(format!("{}.running.log", &key[..24.min(key.len())]))
}

/// The key prefix a file of the logs folder is of (`<key>.log`, `<key>.failed.log`, `<key>.running.log`).
pub fn log_key(file_name: &str) -> &str {
    let stem = file_name.strip_suffix(".log").unwrap_or(file_name);
    stem.strip_suffix(".failed").or_else(|| stem.strip_suffix(".running")).unwrap_or(stem)
}

/// The entry of a run's or a failure's record ([`crate::fingerprint::NodeRecord::runner`]) naming its output log.
pub const OUTPUT_NOTE: &str = "output";

/// A temp file in `dir` to be renamed into place in the store, with the mode the umask gives any new file
/// (`0666 & !umask`): tempfile's own `0600` made what polyflow wrote unreadable to the rest of a group sharing a
/// store, while a program's outputs followed the umask.
pub fn temp_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new().permissions(std::fs::Permissions::from_mode(0o666)).tempfile_in(dir)
}

/// Replaces `path` with `bytes` whole: written to a temporary file beside it (a unique `.polyflow-*.tmp` name, the
/// mode the umask gives), flushed to disk first when `durable` (so that a crash never leaves the new name over
/// unwritten data), then renamed over it; a reader sees the old file or the new one, never half of one. The
/// temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    write_atomic_with(path, durable, |f| std::io::Write::write_all(f, bytes))
}

/// [`write_atomic`] with the content written by `write` into the temporary file (streamed: a large file is never
/// held in memory).
pub fn write_atomic_with(path: &Path, durable: bool, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".polyflow-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A store (or cache) whose root folder is group-writable is shared by its group: from then on this process
/// creates what it creates group-writable too (its umask's group bits cleared, so the index, blobs, scratch
/// folders and a `command` node's outputs are `g+rw` whatever the user's umask; with the root's setgid bit, new
/// folders keep its group). A member with umask `022` made folders others of the group could not write.
/// Returns whether the store is shared.
pub fn share_with_group(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let shared = std::fs::metadata(root).is_ok_and(|m| m.permissions().mode() & 0o020 != 0);
    if shared {
        // SAFETY: umask only sets the process's file-creation mask; read and written back at once.
        unsafe {
            let old = libc::umask(0o022);
            libc::umask(old & !0o070);
        }
    }
    shared
}

/// A store root.
#[derive(Debug, Clone)]
pub struct Store {
    /// Root directory.
    pub root: PathBuf,
    /// Blob files.
    pub blobs: BlobStore,
}

impl Store {
    /// Opens (creating) a store at `root`. A store whose root folder is group-writable is shared with its group
    /// ([`share_with_group`]).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let not_a_store = |why: &str| StoreError::NotAStore { path: root.to_path_buf(), why: why.to_string() };
        if std::fs::metadata(root).is_ok_and(|m| !m.is_dir()) {
            return Err(not_a_store("is a file, not a folder: a store is a folder (check `--store` or POLYFLOW_STORE)"));
        }
        let new = !Store::exists(root);
        if new {
            if let Some(why) = Self::not_a_new_store(root) {
                return Err(not_a_store(&why));
            }
        }
        std::fs::create_dir_all(root).map_err(|e| match e.kind() {
            // Said as what to fix: `sfile/sub`, a link to nothing.
            std::io::ErrorKind::NotADirectory => not_a_store("a folder above it is a file (check `--store` or POLYFLOW_STORE)"),
            std::io::ErrorKind::AlreadyExists if std::fs::symlink_metadata(root).is_ok() => {
                not_a_store("is a link to nothing (check `--store` or POLYFLOW_STORE)")
            }
            // A place no folder can be made (`/proc/x`, a read-only mount, another user's folder): the path to fix.
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                not_a_store(&format!("no store can be made there ({e}): check `--store` or POLYFLOW_STORE"))
            }
            _ => StoreError::io(root, e),
        })?;
        share_with_group(root);
        // A new store keeps itself out of git (as `.pytest_cache` does): `git add .` after a run adds no blobs.
        let ignore = root.join(".gitignore");
        if new && !ignore.exists() {
            let _ = std::fs::write(&ignore, "# polyflow's store: content-addressed artifacts, not for git (see polyflow's README)\n*\n");
        }
        // Absolute, so that paths into the store handed to programs that run elsewhere (a `command` node's
        // `$POLYFLOW_OUT`, run in its pipeline file's folder; a Slurm job) name the same place.
        let root = std::path::absolute(root).map_err(|e| StoreError::io(root, e))?;
        Ok(Store { blobs: BlobStore::new(&root)?, root })
    }

    /// What a store folder holds (its own names, and the shared cache's `keys`).
    const STORE_PARTS: [&str; 14] = [
        "blobs",
        "damaged",
        "index",
        "jobs",
        "keys",
        "logs",
        "outdated",
        "partial",
        "running.json",
        "show",
        "stat",
        "tmp",
        "writer.info",
        "writer.lock",
    ];

    /// Why a store cannot be made in the existing folder `root` (none holds a store's index yet): it holds files of
    /// its own (`--store .`, `--store results`), which would be mixed with the store's, or a store's `index` that is
    /// no folder. Hidden entries (`.gitignore`) are let be.
    fn not_a_new_store(root: &Path) -> Option<String> {
        let entries = std::fs::read_dir(root).ok()?;
        let mut others = vec![];
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Hidden files (`.gitignore`) are let be; a repository's `.git` is not: its root is no store's folder.
            if name.starts_with('.') && name != ".git" {
                continue;
            }
            let folder = !matches!(name.as_ref(), "running.json" | "writer.info" | "writer.lock");
            if Self::STORE_PARTS.contains(&name.as_ref()) && folder && !std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()) {
                return Some(format!(
                    "holds a `{name}` that is not a store's (a folder): it is not a store, and a store needs a folder of its own (check `--store` or POLYFLOW_STORE)"
                ));
            }
            if !Self::STORE_PARTS.contains(&name.as_ref()) {
                others.push(name.into_owned());
            }
        }
        others.sort();
        (!others.is_empty()).then(|| {
        let shown: Vec<String> = others.iter().take(3).map(|n| format!("`{n}`")).collect();
        let more = if others.len() > 3 { format!(" and {} more", others.len() - 3) } else { String::new() };
        format!(
            "is a folder of other files ({}{more}), not a store: a store needs a folder of its own, new or empty (check `--store` or POLYFLOW_STORE)",
            shown.join(", ")
        )
    })
    }

    /// Whether `root` holds a store (its index), without creating anything.
    pub fn exists(root: &Path) -> bool {
        index_dir(root).is_dir()
    }

    /// Opens the index, waiting up to 60 s while another process holds it briefly.
    pub fn index(&self) -> Result<Index, StoreError> {
        Index::open(&index_dir(&self.root), std::time::Duration::from_secs(60))
    }

    /// Opens the index for reading; works on a full disk too (see [`Index::open_read_only`]).
    pub fn index_read(&self) -> Result<Index, StoreError> {
        Index::open_read_only(&index_dir(&self.root), std::time::Duration::from_secs(60))
    }

    /// Checks that every file of a manifest is present with its size (metadata only, see **Trust** above);
    /// returns the first bad file and its state.
    pub fn check(&self, m: &Manifest) -> Option<(String, BlobState)> {
        for (name, f) in &m.files {
            match self.blobs.present(&f.digest, f.size) {
                BlobState::Ok => {}
                bad => return Some((name.clone(), bad)),
            }
        }
        None
    }

    /// Reads every file of a manifest and checks its digest; returns the first bad file and its state.
    pub fn verify(&self, m: &Manifest) -> Option<(String, BlobState)> {
        for (name, f) in &m.files {
            match self.blobs.check(&f.digest, f.size) {
                BlobState::Ok => {}
                bad => return Some((name.clone(), bad)),
            }
        }
        None
    }

    /// Content digests of external files, with this store's stat cache.
    pub fn file_digests(&self) -> crate::fingerprint::FileDigests {
        file_digests(&self.root)
    }

    /// Scratch folder of the node being computed under `key` (resumable; removed when it commits).
    pub fn partial_dir(&self, key: &str) -> PathBuf {
        partial_dir(&self.root, key)
    }

    /// Takes the writer lock.
    pub fn lock(&self, wait: std::time::Duration) -> Result<WriterLock, StoreError> {
        WriterLock::acquire(&self.root, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_roundtrip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let dg = s.blobs.put(b"hello").unwrap();
        assert_eq!(s.blobs.read(&dg).unwrap(), b"hello");
        assert_eq!(s.blobs.check(&dg, 5), BlobState::Ok);
        std::fs::write(s.blobs.path(&dg), b"hellp").unwrap();
        assert_eq!(s.blobs.check(&dg, 5), BlobState::Corrupt);
        assert_eq!(s.blobs.present(&dg, 5), BlobState::Ok, "freshness reads metadata only");
        // A reader that finds the damage moves the blob aside: from then on it is absent, and said damaged.
        assert!(matches!(s.blobs.read(&dg), Err(StoreError::Corrupt { .. })));
        assert!(!s.blobs.path(&dg).exists());
        assert_eq!(s.blobs.present(&dg, 5), BlobState::Corrupt);
        assert_eq!(s.blobs.damaged().len(), 1);
        assert_eq!(s.blobs.present(&s.blobs.put(b"hello").unwrap(), 4), BlobState::Corrupt, "a wrong size is damage");
    }

    /// A `tmp`, `damaged` or shard folder that is a link elsewhere is never emptied or listed for `gc`, and only
    /// polyflow's own temp files are removed from a real `tmp`.
    #[test]
    fn clean_ups_stay_inside_the_store() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("s");
        let s = Store::open(&root).unwrap();
        let victim = d.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("important.txt"), "x").unwrap();
        std::fs::write(root.join("tmp/.tmpAbC123"), "leftover").unwrap();
        std::fs::write(root.join("tmp/notes.txt"), "someone's").unwrap();
        s.blobs.clean_tmp();
        assert!(!root.join("tmp/.tmpAbC123").exists() && root.join("tmp/notes.txt").exists());
        symlink(&victim, root.join("damaged")).unwrap();
        symlink(&victim, root.join("blobs/im")).unwrap();
        assert!(s.blobs.damaged().is_empty() && s.blobs.list().is_empty());
        std::fs::remove_dir_all(root.join("tmp")).unwrap();
        symlink(&victim, root.join("tmp")).unwrap();
        std::fs::write(victim.join(".tmpXyZ"), "x").unwrap();
        Store::open(&root).unwrap().blobs.clean_tmp();
        assert!(victim.join("important.txt").exists() && victim.join(".tmpXyZ").exists());
    }

    /// A blob polyflow writes has the mode the umask gives any new file, as a program's outputs do (it was
    /// `0600`: unreadable to the rest of a group sharing the store).
    #[test]
    fn blobs_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).map(|m| u32::from_str_radix(m.trim(), 8).unwrap()).unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let mode = |dg: &str| std::fs::metadata(s.blobs.path(dg)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.blobs.put(b"a").unwrap()), 0o666 & !umask);
        assert_eq!(mode(&s.blobs.put_reader(&b"b"[..]).unwrap().0), 0o666 & !umask);
    }

    #[test]
    fn index_reopens_after_drop() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        {
            let _i = s.index().unwrap();
        }
        let _j = s.index().unwrap();
    }
}
