//! What a running stage sees: its parameters, verified input artifacts and a writer for its output.

use super::StageError;
use crate::store::{FileEntry, Manifest, Store};
use std::collections::BTreeMap;
use std::path::Path;

/// A progress report from a running stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Total steps.
    pub total: u64,
    /// Short status (e.g. `task=digits loss=0.31`).
    pub message: String,
    /// A message to keep, not a passing status: the run prints it once as a note of the node (e.g. "resuming
    /// from an interrupted run's checkpoint at update 920"); `done` and `total` are then not read.
    #[serde(default)]
    pub note: bool,
}

/// An input artifact, read with verification.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// Upstream node id.
    pub id: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// The cache key it was produced under, when known.
    pub key: Option<String>,
    store: Store,
}

impl InputArtifact {
    /// Wraps a manifest.
    pub fn new(id: String, manifest: Manifest, store: Store) -> Self {
        InputArtifact { id, manifest, key: None, store }
    }

    /// Reads file `name`, checking its checksum.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, StageError> {
        let f = self.manifest.files.get(name).ok_or_else(|| {
            StageError::failed(format!(
                "input `{}` has no file `{name}` (it has: {})",
                self.id,
                self.manifest.files.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        self.store.blobs.read(&f.digest).map_err(|e| match &e {
            crate::store::StoreError::Io { source, path } if crate::store::is_not_writable(source) => self.unreadable(name, path),
            _ => StageError::failed(format!("input `{}`: {e}; run again to recompute it", self.id)),
        })
    }

    /// A blob of this artifact that this user may not read: a store error (exit 4), not a node's failure, and
    /// nothing a re-run mends.
    fn unreadable(&self, name: &str, path: &Path) -> StageError {
        StageError::store(
            format!(
                "input `{}` file `{name}`: permission denied ({}); everyone who runs in a store must be able to read \
                 its files: its owner can `chmod -R g+rX` it (a shared store: see the README)",
                self.id,
                crate::store::owner_and_mode(path)
            ),
            false,
        )
    }

    /// Opens file `name` for random access, after checking its checksum by streaming it once (constant memory).
    pub fn open(&self, name: &str) -> Result<std::fs::File, StageError> {
        let f = self.manifest.files.get(name).ok_or_else(|| StageError::failed(format!("input `{}` has no file `{name}`", self.id)))?;
        let path = self.store.blobs.path(&f.digest);
        let fail = |m: String| {
            StageError::failed(format!("input `{}` file `{name}` ({}): {m}; run again to recompute it", self.id, path.display()))
        };
        let mut file = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                self.unreadable(name, &path)
            } else {
                fail(e.to_string())
            }
        })?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut file).map_err(|e| fail(e.to_string()))?;
        if h.finalize().to_hex().as_str() != f.digest {
            drop(file);
            let moved = self.store.blobs.quarantine(&f.digest);
            let to = moved.map(|p| format!(", moved to {}", p.display())).unwrap_or_default();
            return Err(fail(format!("checksum mismatch: the stored file is damaged{to}")));
        }
        Ok(file)
    }

    /// Opens file `name` for reading without checking its checksum: for displays (`show`) that must not read
    /// terabytes; `polyflow verify` checks every byte.
    pub fn open_unchecked(&self, name: &str) -> Result<std::fs::File, StageError> {
        let f = self.manifest.files.get(name).ok_or_else(|| StageError::failed(format!("input `{}` has no file `{name}`", self.id)))?;
        let path = self.store.blobs.path(&f.digest);
        std::fs::File::open(&path).map_err(|e| StageError::failed(format!("input `{}` file `{name}` ({}): {e}", self.id, path.display())))
    }

    /// Copies file `name` to `to` (constant memory; a copy-on-write clone where the file system makes one), after
    /// checking its checksum.
    pub fn copy_to(&self, name: &str, to: &Path) -> Result<(), StageError> {
        let mut from = self.open(name)?;
        use std::io::Seek;
        from.rewind().map_err(|e| StageError::failed(format!("input `{}` file `{name}`: {e}", self.id)))?;
        let mut out = std::fs::File::create(to).map_err(|e| StageError::failed(format!("{}: {e}", to.display())))?;
        std::io::copy(&mut from, &mut out)
            .map_err(|e| StageError::store(format!("{}: {e}", to.display()), crate::store::is_disk_full(&e)))?;
        Ok(())
    }

    /// Reads and parses a JSON file.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StageError> {
        let b = self.read(name)?;
        serde_json::from_slice(&b).map_err(|e| StageError::failed(format!("input `{}` file `{name}`: {e}", self.id)))
    }

    /// Whether the artifact has file `name`.
    pub fn has(&self, name: &str) -> bool {
        self.manifest.files.contains_key(name)
    }
}

/// Collects the files of the artifact being produced. Each file is durable in the blob store as soon as it is
/// put; the index entry is written by the executor only after the stage returns successfully.
pub struct ArtifactWriter {
    store: Store,
    files: BTreeMap<String, FileEntry>,
}

impl ArtifactWriter {
    /// A writer into `store`.
    pub fn new(store: Store) -> Self {
        ArtifactWriter { store, files: BTreeMap::new() }
    }

    /// Adds file `name` with `bytes`.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), StageError> {
        let digest = self.store.blobs.put(bytes).map_err(|e| StageError::store(format!("writing `{name}`: {e}"), e.is_disk_full()))?;
        self.files.insert(name.to_string(), FileEntry { digest, size: bytes.len() as u64 });
        Ok(())
    }

    /// Adds file `name` from a stream (written with constant memory).
    pub fn put_reader(&mut self, name: &str, r: impl std::io::Read) -> Result<(), StageError> {
        let (digest, size) =
            self.store.blobs.put_reader(r).map_err(|e| StageError::store(format!("writing `{name}`: {e}"), e.is_disk_full()))?;
        self.files.insert(name.to_string(), FileEntry { digest, size });
        Ok(())
    }

    /// Adds file `name` by moving file `path` (on the store's disk) into the store: no copy, constant memory.
    pub fn put_moved(&mut self, name: &str, path: &Path) -> Result<(), StageError> {
        let (digest, size) =
            self.store.blobs.put_moved(path).map_err(|e| StageError::store(format!("writing `{name}`: {e}"), e.is_disk_full()))?;
        self.files.insert(name.to_string(), FileEntry { digest, size });
        Ok(())
    }

    /// Adds file `name` as a reference to `file` of an input artifact (no copy: same blob).
    pub fn link(&mut self, name: &str, input: &InputArtifact, file: &str) -> Result<(), StageError> {
        let f = input.manifest.files.get(file).ok_or_else(|| StageError::failed(format!("input `{}` has no file `{file}`", input.id)))?;
        self.files.insert(name.to_string(), f.clone());
        Ok(())
    }

    /// Adds a pretty JSON file.
    pub fn put_json<T: serde::Serialize>(&mut self, name: &str, v: &T) -> Result<(), StageError> {
        let b = serde_json::to_vec_pretty(v).map_err(|e| StageError::failed(e.to_string()))?;
        self.put(name, &b)
    }

    /// Finishes into a manifest of `artifact_type`.
    pub fn finish(self, artifact_type: &str) -> Manifest {
        Manifest::new(artifact_type, self.files)
    }
}

/// Everything a stage's `run` gets.
pub struct StageCtx<'a> {
    /// Node id.
    pub id: &'a str,
    /// Canonical parameters (defaults filled).
    pub params: &'a serde_json::Value,
    /// Directory of the declaring pipeline file (for relative data paths).
    pub base_dir: &'a Path,
    /// Environment (seed, backend, …).
    pub env: &'a BTreeMap<String, String>,
    /// Slot → input artifacts.
    pub inputs: BTreeMap<String, Vec<InputArtifact>>,
    /// The output being written.
    pub out: ArtifactWriter,
    /// Progress callback.
    pub progress: &'a (dyn Fn(Progress) + Sync),
    /// CPU threads granted.
    pub threads: usize,
    /// The accelerator indices granted, in order (`--devices` slots pinned by the local scheduler; `0..gpus` in a
    /// Slurm job, whose GPUs are numbered from 0). Empty when the node holds none.
    pub devices: Vec<u32>,
    /// A private directory that survives an interrupted run (for resumable checkpoints); keyed by the node's
    /// cache key and removed once the node's artifact is committed.
    pub scratch: std::path::PathBuf,
    /// Where a stage that runs a program keeps that program's whole output (each attempt's, replacing the
    /// last), which the engine names in the run's or the failure's record; `None` where the run's own log keeps it
    /// (a Slurm job's `stdout.log`).
    pub output_log: Option<std::path::PathBuf>,
}

impl StageCtx<'_> {
    /// Tells the user `message` once, as a note of this node (see [`Progress::note`]).
    pub fn note(&self, message: impl Into<String>) {
        (self.progress)(Progress { done: 0, total: 0, message: message.into(), note: true });
    }

    /// The seed of the pipeline.
    pub fn seed(&self) -> u64 {
        self.env.get("seed").and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The single input of `slot`.
    pub fn input(&self, slot: &str) -> Result<&InputArtifact, StageError> {
        self.inputs.get(slot).and_then(|v| v.first()).ok_or_else(|| StageError::failed(format!("missing input `{slot}`")))
    }
}
