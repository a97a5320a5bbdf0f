//! The sled index: artifact manifests by key, the last record per node id, every run's record per node id and
//! key (so a fresh node shows the run that made *its* artifact, and a stale one is compared with its nearest
//! run), failures, and which node last produced each key (so `gc` can name what it deletes).
//!
//! The index is opened briefly and closed when idle so that a long run never stops `status` from reading it
//! (sled takes an exclusive file lock while open). [`Index::open`] retries while another process holds it.

use super::{Manifest, StoreError};
use crate::fingerprint::NodeRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A failed attempt, remembered so `status` can show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRecord {
    /// Node id.
    pub id: String,
    /// Key of the failed attempt.
    pub key: String,
    /// The error text.
    pub error: String,
    /// Where it ran, when not in this process (e.g. `slurm_job`, `state`, `log`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub runner: std::collections::BTreeMap<String, String>,
}

/// An open index.
pub struct Index {
    db: sled::Db,
    artifacts: sled::Tree,
    records: sled::Tree,
    /// `id \0 key` → the record of the run of node `id` that produced `key`.
    runs: sled::Tree,
    failures: sled::Tree,
    producers: sled::Tree,
    /// Pins: a name (a checkout's, `branch:main`) → node id → the key its artifact had there, kept by `gc`.
    pins: sled::Tree,
    /// For [`Index::open_read_only`] on a full disk: the temporary copy opened instead (removed on drop, after
    /// the trees above: fields drop in order).
    _copy: Option<tempfile::TempDir>,
}

impl Index {
    /// Opens (creating) the index at `dir`, waiting up to `wait` while another process holds it.
    pub fn open(dir: &Path, wait: Duration) -> Result<Index, StoreError> {
        match Self::open_once(dir, wait) {
            // sled leaves an empty `snap.*.generating` file behind when it cannot write a snapshot (a full disk)
            // and then refuses to open ("Read corrupted data"): remove those and try once more.
            // Only after sled's own complaint (never on a lock wait: the holder may be writing that snapshot).
            Err(StoreError::Index(m)) if (m.contains("corrupted") || m.contains("No space left")) && remove_empty_snapshots(dir) > 0 => {
                Self::open_once(dir, wait).map_err(|e| if m.contains("No space left") { StoreError::Index(m) } else { e })
            }
            r => r,
        }
    }

    /// Opens the index for reading (`status`, `plan`, `verify`, `show`): as [`Index::open`], but on a full
    /// disk — where sled cannot open anything, since opening writes — a copy in memory (`/dev/shm`) or the
    /// temp folder is opened instead, so read-only commands keep working. Writes to that copy are lost.
    ///
    /// The same on a store this user cannot write (another user's, a read-only mount): the copy is taken under a
    /// shared lock on sled's own lock file, so no writer is half-way through it.
    pub fn open_read_only(dir: &Path, wait: Duration) -> Result<Index, StoreError> {
        let copy = |e: &StoreError, locked: bool| -> Result<Index, StoreError> {
            let shm = Path::new("/dev/shm");
            let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.map_err(|_| e.clone_msg())?;
            let lock = if locked { Some(shared_lock(&dir.join("db"), wait).map_err(|_| e.clone_msg())?) } else { None };
            copy_dir(dir, tmp.path()).map_err(|_| e.clone_msg())?;
            drop(lock);
            let mut ix = Self::open_once(tmp.path(), wait)?;
            ix._copy = Some(tmp);
            Ok(ix)
        };
        match Self::open(dir, wait) {
            Err(e) if e.is_disk_full() => {
                remove_empty_snapshots(dir);
                copy(&e, false)
            }
            Err(e @ (StoreError::Index(_) | StoreError::NotWritable { .. })) if not_writable(dir) => copy(&e, true),
            r => r,
        }
    }

    fn open_once(dir: &Path, wait: Duration) -> Result<Index, StoreError> {
        let start = Instant::now();
        // After a short wait, a `want` file asks the holder (a run committing node after node) to close the index
        // between two commits ([`Wanted::now`]); removed once this process has it.
        let mut asker = Asker::new(dir);
        loop {
            match sled::Config::new().path(dir).cache_capacity(8 << 20).open() {
                Ok(db) => {
                    drop(asker);
                    let t = |n: &str| db.open_tree(n).map_err(|e| StoreError::Index(e.to_string()));
                    return Ok(Index {
                        artifacts: t("artifacts")?,
                        records: t("records")?,
                        runs: t("runs")?,
                        failures: t("failures")?,
                        producers: t("producers")?,
                        pins: t("pins")?,
                        db,
                        _copy: None,
                    });
                }
                Err(sled::Error::Io(e)) if start.elapsed() < wait && is_lock_error(&e) => {
                    asker.ask();
                    std::thread::sleep(Duration::from_millis(15));
                }
                // Its files not writable by this user (a writer's open needs write access): said with the owner
                // and what to do, as for the writer lock.
                Err(sled::Error::Io(e)) if super::is_not_writable(&e) => {
                    let root = dir.parent().unwrap_or(dir);
                    let what = if dir.join("db").exists() { dir.join("db") } else { dir.to_path_buf() };
                    return Err(StoreError::NotWritable {
                        root: root.to_path_buf(),
                        why: format!("its index {}: {e}; {}", dir.display(), super::owner_and_mode(&what)),
                        advice: super::not_writable_advice(root, &what, &e),
                    });
                }
                Err(e) => return Err(StoreError::Index(format!("cannot open index {}: {e}", dir.display()))),
            }
        }
    }

    /// The manifest stored under `key`.
    pub fn artifact(&self, key: &str) -> Result<Option<Manifest>, StoreError> {
        self.get(&self.artifacts, key)
    }

    /// The last successful record of node `id`.
    pub fn record(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.get(&self.records, id)
    }

    /// The record of node `id`'s run that produced `key` (`None` for runs committed before these were kept).
    pub fn run_of(&self, id: &str, key: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.get(&self.runs, &run_key(id, key))
    }

    /// The run that made `key`'s artifact, as node `id`'s: its own run of `key`, or, when another node with
    /// the same key computed the artifact (two identical declarations: `id` became fresh without running), that
    /// node's run under `id`'s name with `runner.same_as` naming the node that ran.
    pub fn run_for(&self, id: &str, key: &str) -> Option<NodeRecord> {
        if let Some(r) = self.run_of(id, key).ok().flatten() {
            return Some(r);
        }
        let by = self.producer(key).filter(|p| p != id)?;
        let mut r = self.run_of(&by, key).ok().flatten()?;
        r.id = id.to_string();
        r.runner.insert("same_as".into(), by);
        Some(r)
    }

    /// Keeps `record` (one [`Index::run_for`] derived from another node's run) as its node's run of its key, so
    /// that after an edit the node is compared with the settings it was fresh under, not reported "never run".
    /// Not flushed: an explanation, written again by the next run if lost.
    pub fn adopt(&self, record: &NodeRecord) -> Result<(), StoreError> {
        self.runs
            .insert(run_key(&record.id, &record.key).as_bytes(), serde_json::to_vec(record).expect("json"))
            .map_err(|e| StoreError::Index(e.to_string()))?;
        Ok(())
    }

    /// The records of node `id`'s runs, one per key it produced (whatever profile or overrides gave it).
    pub fn runs_of(&self, id: &str) -> Vec<NodeRecord> {
        let prefix = run_key(id, "");
        self.runs.scan_prefix(prefix.as_bytes()).flatten().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect()
    }

    /// Records under pin `name` the key each node of `keys` (node id → key) has there, over what the pin held for
    /// those nodes (its other nodes stay); flushed. A caller names what a pin stands for (a git branch) and
    /// decides which pins `gc` keeps.
    pub fn pin(&self, name: &str, keys: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let e = |e: sled::Error| StoreError::Index(e.to_string());
        let mut all: BTreeMap<String, String> =
            self.pins.get(name.as_bytes()).map_err(e)?.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default();
        all.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.pins.insert(name.as_bytes(), serde_json::to_vec(&all).expect("json")).map_err(e)?;
        self.flush()
    }

    /// Every pin: name → node id → key.
    pub fn pins(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.pins
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((String::from_utf8(k.to_vec()).ok()?, serde_json::from_slice(&v).ok()?)))
            .collect()
    }

    /// Removes pin `name`.
    pub fn unpin(&self, name: &str) -> Result<(), StoreError> {
        self.pins.remove(name.as_bytes()).map_err(|e| StoreError::Index(e.to_string()))?;
        Ok(())
    }

    /// The records of every node's runs on record (one per node and key).
    pub fn all_runs(&self) -> Vec<NodeRecord> {
        self.runs.iter().flatten().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect()
    }

    /// The last failure of node `id`.
    pub fn failure(&self, id: &str) -> Result<Option<FailRecord>, StoreError> {
        self.get(&self.failures, id)
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
        match tree.get(key.as_bytes()).map_err(|e| StoreError::Index(e.to_string()))? {
            None => Ok(None),
            // An undecodable entry is treated as absent (the node re-runs); never as fresh.
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
        }
    }

    /// Commits a finished node in one sled transaction (all of it or none, even if the process dies half-way):
    /// the artifact manifest, the node's record and its run, the key's producer, and clears its failure; flushed.
    /// Call only after every blob of the manifest is durable.
    pub fn commit(&self, key: &str, manifest: &Manifest, record: &NodeRecord) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, Transactional};
        let man = serde_json::to_vec(manifest).expect("json");
        let rec = serde_json::to_vec(record).expect("json");
        let run = run_key(&record.id, key);
        (&self.artifacts, &self.records, &self.runs, &self.producers, &self.failures)
            .transaction(|(artifacts, records, runs, producers, failures)| {
                artifacts.insert(key.as_bytes(), man.as_slice())?;
                records.insert(record.id.as_bytes(), rec.as_slice())?;
                runs.insert(run.as_bytes(), rec.as_slice())?;
                producers.insert(key.as_bytes(), record.id.as_bytes())?;
                failures.remove(record.id.as_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Records a failure of node `id`.
    pub fn fail(&self, rec: &FailRecord) -> Result<(), StoreError> {
        let e = |e: sled::Error| StoreError::Index(e.to_string());
        self.failures.insert(rec.id.as_bytes(), serde_json::to_vec(rec).expect("json")).map_err(e)?;
        self.db.flush().map_err(e)?;
        Ok(())
    }

    /// Removes the artifact entry of `key` (e.g. found corrupt), its producer and that node's run of it, in one
    /// transaction.
    pub fn forget_artifact(&self, key: &str) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, Transactional};
        let run = self.producer(key).map(|id| run_key(&id, key));
        (&self.artifacts, &self.runs, &self.producers)
            .transaction(|(artifacts, runs, producers)| {
                if let Some(run) = &run {
                    runs.remove(run.as_bytes())?;
                }
                artifacts.remove(key.as_bytes())?;
                producers.remove(key.as_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        Ok(())
    }

    /// The node id that last produced `key` (`None` for artifacts committed before this was recorded).
    pub fn producer(&self, key: &str) -> Option<String> {
        self.producers.get(key.as_bytes()).ok().flatten().and_then(|v| String::from_utf8(v.to_vec()).ok())
    }

    /// All (key, manifest) pairs.
    pub fn artifacts(&self) -> Vec<(String, Manifest)> {
        self.artifacts
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((String::from_utf8(k.to_vec()).ok()?, serde_json::from_slice(&v).ok()?)))
            .collect()
    }

    /// All node records.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.records.iter().flatten().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect()
    }

    /// Flushes to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| StoreError::Index(e.to_string()))?;
        Ok(())
    }
}

/// A failed index transaction as a store error: its storage error's text (as a single write's error reads, so a
/// full disk is recognised as one); the transactions here never abort of their own accord.
fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Index(e.to_string()),
        sled::transaction::TransactionError::Abort(()) => StoreError::Index("index transaction aborted".into()),
    }
}

/// The `runs` tree's key of node `id`'s run under `key` (node ids hold no NUL).
fn run_key(id: &str, key: &str) -> String {
    format!("{id}\0{key}")
}

/// Removes the empty `snap.*.generating` files an interrupted snapshot write left; returns how many.
fn remove_empty_snapshots(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("snap.") && name.ends_with(".generating") && e.metadata().is_ok_and(|m| m.len() == 0)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Copies the files of a sled folder (flat but for sub-folders, copied recursively), skipping unfinished
/// snapshots.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".generating") {
            continue;
        }
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(&name))?;
        } else {
            std::fs::copy(e.path(), to.join(&name))?;
        }
    }
    // The copy is this process's to write (sled opens its files read-write): `std::fs::copy` kept the modes of a
    // read-only store (`chmod -R a-w`).
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(to)?.flatten() {
        let mode = if e.file_type()?.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The files by which a process waiting for the index asks its holder to close it ([`Wanted::now`]):
/// `index.wanted` in the store root, else (a reader that may not write the store) one named after the index's
/// path in `/dev/shm` (or `/tmp`), which every process on the machine agrees on.
fn want_paths(dir: &Path) -> [PathBuf; 2] {
    let shm = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
    let tag = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    [dir.with_extension("wanted"), shm.join(format!("polyflow-{}.wanted", &tag[..16]))]
}

/// Where processes waiting for one index ask for it, named once for a holder that asks often (a run, after
/// every message).
#[derive(Debug, Clone)]
pub struct Wanted([PathBuf; 2]);

impl Wanted {
    /// The request files of the index at `dir`.
    pub fn new(dir: &Path) -> Wanted {
        Wanted(want_paths(dir))
    }

    /// Whether another process has been waiting for the index in the last second: its holder closes it at the next
    /// chance (a run between two commits), so that `status` does not wait for a whole run. Only a live request
    /// counts: written in the last second by a process that lives (and is not this one), so a file left by a
    /// killed reader, or touched by hand, costs a run nothing.
    pub fn now(&self) -> bool {
        self.0.iter().any(|want| {
            want_age(want).is_some_and(|a| a < Duration::from_secs(1))
                && std::fs::read_to_string(want)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
        })
    }
}

fn want_age(want: &Path) -> Option<Duration> {
    std::fs::metadata(want).and_then(|m| m.modified()).ok().map(|t| t.elapsed().unwrap_or_default())
}

/// A process waiting for the index: after 100 ms it writes a `want` file ([`want_paths`]), again every half
/// second (its age tells a live request from one left behind), and removes it on drop.
struct Asker {
    paths: [PathBuf; 2],
    written: Option<usize>,
    start: Instant,
}

impl Asker {
    fn new(dir: &Path) -> Asker {
        Asker { paths: want_paths(dir), written: None, start: Instant::now() }
    }

    fn ask(&mut self) {
        if self.start.elapsed() < Duration::from_millis(100) {
            return;
        }
        let fresh = |p: &Path| want_age(p).is_some_and(|a| a < Duration::from_millis(500));
        let me = std::process::id().to_string();
        match self.written {
            Some(k) if !fresh(&self.paths[k]) => {
                let _ = std::fs::write(&self.paths[k], &me);
            }
            Some(_) => {}
            // Another waiter's live request asks for both.
            None if self.paths.iter().any(|p| fresh(p)) => {}
            None => self.written = (0..2).find(|&k| std::fs::write(&self.paths[k], &me).is_ok()),
        }
    }
}

impl Drop for Asker {
    fn drop(&mut self) {
        if let Some(k) = self.written {
            let _ = std::fs::remove_file(&self.paths[k]);
        }
    }
}

/// Whether `dir` (an index folder) cannot be written by this user: sled opens its files for writing.
fn not_writable(dir: &Path) -> bool {
    let probe = |p: &Path| std::fs::OpenOptions::new().append(true).open(p).err().is_some_and(|e| super::is_not_writable(&e));
    probe(&dir.join("db")) || probe(&dir.join("conf")) || {
        // Sled writes new snapshot files into the folder.
        let ro = std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly());
        ro || tempfile::tempfile_in(dir).err().is_some_and(|e| super::is_not_writable(&e))
    }
}

/// A shared lock on `path` (sled's lock file), waiting up to `wait` while a writer holds it; released on drop.
fn shared_lock(path: &Path, wait: Duration) -> std::io::Result<std::fs::File> {
    use fs4::fs_std::FileExt;
    let f = std::fs::File::open(path)?;
    let start = Instant::now();
    let mut asker = Asker::new(path.parent().unwrap_or(path));
    loop {
        match FileExt::try_lock_shared(&f) {
            Ok(true) => return Ok(f),
            Ok(false) | Err(_) if start.elapsed() < wait => {
                asker.ask();
                std::thread::sleep(Duration::from_millis(15))
            }
            Ok(false) => return Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "the index stays locked")),
            Err(e) => return Err(e),
        }
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    let s = e.to_string();
    e.kind() == std::io::ErrorKind::WouldBlock || s.contains("lock") || s.contains("Resource temporarily unavailable")
}

/// Where the index lives inside a store root.
pub fn index_dir(root: &Path) -> PathBuf {
    root.join("index")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;
    use std::collections::BTreeMap;

    fn record(id: &str) -> NodeRecord {
        let fingerprint = Fingerprint {
            kind: "task".into(),
            version: 1,
            params: serde_json::json!({}),
            inputs: BTreeMap::new(),
            env: BTreeMap::new(),
            external: None,
            external_parts: vec![],
            named: None,
            input_ids: false,
            vars: BTreeMap::new(),
            written: BTreeMap::new(),
        };
        NodeRecord {
            id: id.into(),
            key: fingerprint.key(),
            fingerprint,
            artifact: String::new(),
            duration_ms: 0,
            finished_at: 0,
            runner: BTreeMap::new(),
        }
    }

    /// A commit writes every tree (and clears the node's failure); forgetting the artifact takes back the
    /// manifest, its producer and that run, and keeps the node's last record; both survive reopening.
    #[test]
    fn commit_and_forget_touch_every_tree() {
        let d = tempfile::tempdir().unwrap();
        let rec = record("a");
        let key = rec.key.clone();
        let man = Manifest::new("dataset", BTreeMap::new());
        {
            let ix = Index::open(d.path(), Duration::from_secs(1)).unwrap();
            let fail = FailRecord { id: "a".into(), key: key.clone(), error: "boom".into(), runner: BTreeMap::new() };
            ix.fail(&fail).unwrap();
            ix.commit(&key, &man, &rec).unwrap();
        }
        let ix = Index::open(d.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(ix.artifact(&key).unwrap().unwrap().digest, man.digest);
        assert_eq!(ix.record("a").unwrap().unwrap().key, key);
        assert!(ix.run_of("a", &key).unwrap().is_some());
        assert_eq!(ix.producer(&key).as_deref(), Some("a"));
        assert!(ix.failure("a").unwrap().is_none(), "a commit clears the failure");
        ix.forget_artifact(&key).unwrap();
        drop(ix);
        let ix = Index::open(d.path(), Duration::from_secs(1)).unwrap();
        assert!(ix.artifact(&key).unwrap().is_none());
        assert!(ix.producer(&key).is_none());
        assert!(ix.run_of("a", &key).unwrap().is_none());
        assert!(ix.record("a").unwrap().is_some(), "the node's last record stays (status explains from it)");
    }
}
