//! A shared artifact cache: a second store that many users, machines and Slurm jobs read and publish to at once
//! (`--cache DIR`, `POLYFLOW_CACHE`, or `[cache] dir = "…"` in a pipeline).
//!
//! A stale node whose key the cache holds is fetched (every blob's digest checked while it is copied) instead of
//! computed; what a run computes is published.
//!
//! **Layout of a folder cache** ([`DirCache`]) — no database, so any number of processes on any number of
//! machines can share it over NFS or Lustre:
//!
//! ```text
//! blobs/ab/<digest>     file contents, named by their blake3 digest (temp file, fsync, rename)
//! keys/ab/<key>.json    {manifest, node, published_at}: written last, by an atomic create-if-absent
//! tmp/                  temp files of writes in progress (left-overs are removed by `gc`)
//! damaged/              blobs a reader found not to match their digest, moved aside (re-published later)
//! ```
//!
//! **Publishing is whole or nothing.** Every blob is made durable first (idempotent: the same content has the
//! same name), then the key file appears in one step (a hard link of a complete temp file: it fails if the key
//! is already there, so there are never two or a torn one). A reader that finds a key therefore finds every blob
//! it names — unless a blob was damaged or removed since, which the fetch detects (digest) and reports as a
//! miss: the node is computed instead and published again.
//!
//! **An object store later** is one new type implementing [`ArtifactCache`]: blobs are objects `blobs/<digest>`
//! (content-addressed, so overwriting is harmless), the key entry an object `keys/<key>.json` written last with
//! a conditional put (`If-None-Match: *` on S3), `gc` a listing. Nothing else in the engine changes.

use super::fsafe::is_hex64;
use super::{BlobStore, FileEntry, Manifest, StoreError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a key entry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The artifact.
    pub manifest: Manifest,
    /// The node id that produced it (for people reading the cache; never trusted for anything).
    pub node: String,
    /// Seconds since the epoch.
    pub published_at: u64,
    /// How long computing it took where it was computed (ms), so that a store that fetched it still knows what
    /// recomputing it costs (`plan`'s estimate, `status`' last run). Absent in entries of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_ms: Option<u64>,
    /// The polyflow build that published it (`0.1.0 (2a4c43f1b2c3)`; see `build.rs`), so a difference between
    /// teammates' results can be traced to their releases. Absent in entries of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub polyflow: String,
}

/// How a published artifact was made, as its cache entry records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Made<'a> {
    /// How long computing it took (ms), where known.
    pub computed_ms: Option<u64>,
    /// The polyflow build that computed it (`""`: not known, a record of a polyflow that did not keep it).
    pub polyflow: &'a str,
}

/// A shared artifact cache.
pub trait ArtifactCache: Send + Sync + std::fmt::Debug {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// The entry published under `key`, if any (a cheap lookup: no blob is read).
    fn lookup(&self, key: &str) -> Result<Option<CacheEntry>, StoreError>;
    /// Why the entry under `key` is not used, where one is there but [`Self::lookup`] passes it over (malformed,
    /// or changed after it was published): for a note, since a run then computes the node.
    fn unusable(&self, _key: &str) -> Option<String> {
        None
    }
    /// Copies every blob of `m` into `into`, checking each digest as it is copied. A blob that is missing or does
    /// not match is a miss (`Err`): the damaged copy is moved aside so that the next publish replaces it.
    fn fetch(&self, m: &Manifest, into: &BlobStore) -> Result<(), StoreError>;
    /// Publishes `m` (its blobs read from `from`) under `key`, whole or not at all. `Ok(false)` when the key was
    /// already there (another publisher won; nothing is overwritten).
    fn publish(&self, key: &str, m: &Manifest, node: &str, made: Made<'_>, from: &BlobStore) -> Result<bool, StoreError>;
}

/// A cache in a folder (local disk or a shared file system).
#[derive(Debug, Clone)]
pub struct DirCache {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

/// Mode of cache files: everyone sharing the cache reads them (content is never rewritten in place).
const FILE_MODE: u32 = 0o644;
/// Mode of cache folders this process creates: group-writable and setgid, so a team's group can add to them
/// (make the cache's top folder belong to that group).
const DIR_MODE: u32 = 0o2775;

/// Creates `d` (and its parents) if needed; the folders it creates get [`DIR_MODE`].
fn shared_dir(d: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    if d.as_os_str().is_empty() || d.is_dir() {
        return Ok(());
    }
    if let Some(p) = d.parent() {
        shared_dir(p)?;
    }
    match std::fs::create_dir(d) {
        Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(DIR_MODE)).map_err(io(d)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(d, e)),
    }
}

/// Whether an entry read from the cache is well-formed ([`entry_problem`] finds nothing).
fn well_formed(e: &CacheEntry) -> bool {
    entry_problem(e).is_none()
}

/// What makes an entry read from the cache unusable, if anything: a digest that is not one ([`is_hex64`]: anything
/// read from a shared folder is checked before it becomes part of a path), a file name that is not a plain
/// relative one, or a file list that is not the one its artifact digest was computed from (an entry edited after
/// it was published: the digest downstream keys are made of would then name other contents).
fn entry_problem(e: &CacheEntry) -> Option<&'static str> {
    let bad_name = |name: &str| name.is_empty() || !Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if e.manifest.files.iter().any(|(name, f)| !is_hex64(&f.digest) || bad_name(name)) {
        return Some("it names a file outside its artifact or a digest that is not one");
    }
    if Manifest::new(&e.manifest.artifact_type, e.manifest.files.clone()).digest != e.manifest.digest {
        return Some(EDITED);
    }
    None
}

/// Why an entry whose file list does not give its artifact digest is not used. Also what an entry of a later
/// polyflow whose manifest holds fields this one does not know would look like: `gc --cache` leaves such entries
/// (and their blobs) until they are older than `--keep-days`.
pub const EDITED: &str = "its file list is not the one its artifact digest was made from: it was changed after it was published";

/// Digests named by the entry at `path`, read whatever its form (hex digests only), for `gc --cache` to keep.
pub fn named_digests(path: &Path) -> Vec<String> {
    let Ok(v) = std::fs::read(path).map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default()) else { return vec![] };
    let Some(files) = v["manifest"]["files"].as_object() else { return vec![] };
    files.values().filter_map(|f| f["digest"].as_str()).filter(|d| is_hex64(d)).map(str::to_string).collect()
}

/// A damaged blob of a cache entry, as [`DirCache::verify`] finds it: (key, node, file name, what was found and
/// done).
pub type Damage = (String, String, String, &'static str);

impl DirCache {
    /// Opens (creating) the cache folder `root`.
    pub fn open(root: &Path) -> Result<DirCache, StoreError> {
        for sub in ["blobs", "keys", "tmp"] {
            shared_dir(&root.join(sub))?;
        }
        Ok(DirCache { root: root.to_path_buf() })
    }

    /// The cache folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs").join(&digest[..2.min(digest.len())]).join(digest)
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.root.join("keys").join(&key[..2.min(key.len())]).join(format!("{key}.json"))
    }

    /// A temp file in the cache, readable by everyone who shares it (temp files are created 0600: a blob or
    /// entry left so would be unreadable to the rest of the team).
    fn tmp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let d = self.root.join("tmp");
        let f = tempfile::NamedTempFile::new_in(&d).map_err(io(&d))?;
        f.as_file().set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).map_err(io(f.path()))?;
        Ok(f)
    }

    /// Moves a damaged blob aside (a unique name: several readers may find it at once).
    fn quarantine(&self, digest: &str) -> bool {
        let dir = self.root.join("damaged");
        if shared_dir(&dir).is_ok() {
            let to = dir.join(format!("{digest}.{}.{}", std::process::id(), crate::text::now_secs()));
            return std::fs::rename(self.blob_path(digest), to).is_ok();
        }
        false
    }

    /// Entries that decode but cannot be used (a file name outside the artifact, a digest that is not one, a
    /// key name that is not a key): (path, what is wrong). A run treats them as misses and replaces them when it
    /// publishes that key; `gc --cache` removes them; `verify --cache` names them.
    pub fn malformed(&self) -> Vec<(PathBuf, &'static str)> {
        let mut out = vec![];
        let Ok(rd) = std::fs::read_dir(self.root.join("keys")) else { return out };
        for sub in rd.flatten() {
            for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                // A link or anything but a file is no entry a publisher writes (never read through).
                if !std::fs::symlink_metadata(f.path()).is_ok_and(|m| m.is_file()) {
                    out.push((f.path(), "it is not a regular file"));
                    continue;
                }
                // Read, but not an entry: garbage no run can use (one this user cannot read is `unreadable`).
                let Ok(bytes) = std::fs::read(f.path()) else { continue };
                let Ok(e) = serde_json::from_slice::<CacheEntry>(&bytes) else {
                    out.push((f.path(), "it is not a cache entry (not its JSON)"));
                    continue;
                };
                if !name.strip_suffix(".json").is_some_and(is_hex64) {
                    out.push((f.path(), "its file name is not a key"));
                } else if let Some(why) = entry_problem(&e) {
                    out.push((f.path(), why));
                }
            }
        }
        out.sort();
        out
    }

    /// Every key entry: (key, entry, path of its file). Unreadable and malformed entries are skipped (see
    /// [`Self::unreadable`], [`Self::malformed`]).
    pub fn entries(&self) -> Vec<(String, CacheEntry, PathBuf)> {
        let mut out = vec![];
        let Ok(rd) = std::fs::read_dir(self.root.join("keys")) else { return out };
        for sub in rd.flatten() {
            for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                let Some(key) = name.strip_suffix(".json") else { continue };
                if let Some(e) = std::fs::read(f.path()).ok().and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok()) {
                    if is_hex64(key) && well_formed(&e) {
                        out.push((key.to_string(), e, f.path()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Key-entry files (and folders) this user cannot read: `gc` deletes no blob while there are any, since it
    /// cannot know which blobs they name.
    pub fn unreadable(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        let keys = self.root.join("keys");
        let Ok(rd) = std::fs::read_dir(&keys) else { return vec![keys] };
        for sub in rd.flatten() {
            let Ok(inner) = std::fs::read_dir(sub.path()) else {
                out.push(sub.path());
                continue;
            };
            for f in inner.flatten() {
                // Malformed files are [`Self::malformed`]'s (removable); here only those this user cannot read,
                // which may be entries naming blobs.
                let regular = std::fs::symlink_metadata(f.path()).is_ok_and(|m| m.is_file());
                if regular && std::fs::read(f.path()).is_err() {
                    out.push(f.path());
                }
            }
        }
        out
    }

    /// Every blob: (digest, size, age). Only regular files with blob names in real shard folders (`gc`
    /// removes what this lists: a link or a stranger's file planted in `blobs/` is never followed or deleted).
    pub fn blobs(&self) -> Vec<(String, u64, Duration)> {
        super::fsafe::blob_files(&self.root.join("blobs"))
            .into_iter()
            .map(|(d, size, t)| (d, size, t.and_then(|t| t.elapsed().ok()).unwrap_or_default()))
            .collect()
    }

    /// Checks every blob of every entry whose key `wanted` accepts (reading it all); damaged ones are moved aside
    /// where the cache can be written. Returns (files checked, entries checked, damaged: (key, node, file name,
    /// what was found and done)).
    pub fn verify(&self, wanted: &dyn Fn(&str) -> bool) -> (usize, usize, Vec<Damage>) {
        let mut n = 0;
        let mut entries = 0;
        let mut bad = vec![];
        for (key, e, _) in self.entries() {
            if !wanted(&key) {
                continue;
            }
            entries += 1;
            for (name, f) in &e.manifest.files {
                n += 1;
                match self.blob_ok(&f.digest, f.size) {
                    Some(true) => {}
                    // The blob is its name's bytes; the entry says another size: the entry is wrong, and the blob
                    // stays for the entries that name it rightly.
                    Some(false) if self.blob_intact(&f.digest) => {
                        bad.push((
                            key.clone(),
                            e.node.clone(),
                            name.clone(),
                            "the entry says another size than its intact blob has: a malformed entry, not used; the blob is left in place",
                        ));
                    }
                    // Read and wrong: moved aside. Missing or unreadable (a transient error): reported only.
                    Some(false) => {
                        let what = if self.quarantine(&f.digest) {
                            "wrong size or checksum, moved aside"
                        } else {
                            "wrong size or checksum; left in place: it cannot be moved (a read-only cache?)"
                        };
                        bad.push((key.clone(), e.node.clone(), name.clone(), what));
                    }
                    None => bad.push((key.clone(), e.node.clone(), name.clone(), "missing or unreadable")),
                }
            }
        }
        (n, entries, bad)
    }

    /// Whether blob `digest` is a regular file whose bytes hash to its name, whatever size an entry says.
    fn blob_intact(&self, digest: &str) -> bool {
        let Ok((f, _)) = super::fsafe::open_regular(&self.blob_path(digest)) else { return false };
        let mut h = blake3::Hasher::new();
        h.update_reader(f).is_ok() && h.finalize().to_hex().as_str() == digest
    }

    /// `Some(true)`: intact; `Some(false)`: read, and of the wrong size or digest; `None`: could not be read.
    fn blob_ok(&self, digest: &str, size: u64) -> Option<bool> {
        let f = std::fs::File::open(self.blob_path(digest)).ok()?;
        if f.metadata().ok()?.len() != size {
            return Some(false);
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(f).ok()?;
        Some(h.finalize().to_hex().as_str() == digest)
    }

    /// Removes a key entry (e.g. `gc`).
    pub fn remove_entry(&self, path: &Path) -> Result<(), StoreError> {
        std::fs::remove_file(path).map_err(io(path))
    }

    /// Removes a blob (e.g. `gc`).
    pub fn remove_blob(&self, digest: &str) -> Result<(), StoreError> {
        let p = self.blob_path(digest);
        std::fs::remove_file(&p).map_err(io(&p))
    }

    /// Temp files and damaged blobs older than `age` (interrupted publishes, readers' quarantine).
    pub fn leftovers(&self, age: Duration) -> Vec<PathBuf> {
        let mut out = vec![];
        // Only the files of real folders: a `tmp` or `damaged` that is a link is not followed.
        for sub in ["tmp", "damaged"] {
            for (f, m) in super::fsafe::own_files(&self.root.join(sub)) {
                if m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a >= age) {
                    out.push(f);
                }
            }
        }
        out.sort();
        out
    }

    /// Whether blob `f` is in the cache as a regular file of its size (a link or a wrong size is not it).
    fn blob_there(&self, f: &FileEntry) -> bool {
        std::fs::symlink_metadata(self.blob_path(&f.digest)).is_ok_and(|m| m.is_file() && m.len() == f.size)
    }

    /// Writes one blob from `src` (temp file in the cache, fsync, rename); skipped when a blob of that size is
    /// already there (content-addressed: the same name is the same content; `verify` finds a damaged one).
    fn put_blob(&self, f: &FileEntry, src: &Path) -> Result<(), StoreError> {
        let dest = self.blob_path(&f.digest);
        if self.blob_there(f) {
            return Ok(());
        }
        let mut tmp = self.tmp_file()?;
        let mut input = std::fs::File::open(src).map_err(io(src))?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = input.read(&mut buf).map_err(io(src))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            tmp.write_all(&buf[..k]).map_err(io(tmp.path()))?;
        }
        if h.finalize().to_hex().as_str() != f.digest {
            return Err(StoreError::Corrupt { path: src.to_path_buf() });
        }
        tmp.as_file().sync_all().map_err(io(&dest))?;
        if let Some(parent) = dest.parent() {
            shared_dir(parent)?;
        }
        tmp.persist(&dest).map_err(|e| StoreError::io(&dest, e.error))?;
        Ok(())
    }
}

impl ArtifactCache for DirCache {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn lookup(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        if !is_hex64(key) {
            return Ok(None);
        }
        let p = self.key_path(key);
        match std::fs::read(&p) {
            // An undecodable or malformed entry is a miss, never a hit.
            Ok(b) => Ok(serde_json::from_slice::<CacheEntry>(&b).ok().filter(well_formed)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&p, e)),
        }
    }

    fn unusable(&self, key: &str) -> Option<String> {
        if !is_hex64(key) {
            return None;
        }
        let p = self.key_path(key);
        let bytes = std::fs::read(&p).ok()?;
        let why = match serde_json::from_slice::<CacheEntry>(&bytes) {
            Err(_) => "it is not a cache entry (not its JSON)",
            Ok(e) => entry_problem(&e)?,
        };
        Some(format!("its entry {} is not used: {why}", p.display()))
    }

    fn fetch(&self, m: &Manifest, into: &BlobStore) -> Result<(), StoreError> {
        for f in m.files.values() {
            if into.present(&f.digest, f.size) == super::BlobState::Ok {
                continue;
            }
            let path = self.blob_path(&f.digest);
            // A regular file only: a link (to a file this user may read and the team may not), a FIFO or a
            // device is refused at once, and moved aside.
            let (file, len) = match super::fsafe::open_regular(&path) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::Other => {
                    self.quarantine(&f.digest);
                    return Err(StoreError::io(&path, e));
                }
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            if len != f.size {
                // The blob may be intact and the entry wrong: one whose bytes are its name stays for the entries
                // that name it rightly.
                if self.blob_intact(&f.digest) {
                    return Err(StoreError::io(
                        &path,
                        std::io::Error::other(format!(
                            "intact ({len} bytes), but the cache entry says {} bytes: a malformed entry, not used (a run that computes the node publishes it anew)",
                            f.size
                        )),
                    ));
                }
                self.quarantine(&f.digest);
                return Err(StoreError::Corrupt { path });
            }
            // Hashed while copied into the local store, and kept only if it is exactly the blob named.
            if !into.put_expected(file, &f.digest, f.size)? {
                self.quarantine(&f.digest);
                return Err(StoreError::Corrupt { path });
            }
        }
        Ok(())
    }

    fn publish(&self, key: &str, m: &Manifest, node: &str, made: Made<'_>, from: &BlobStore) -> Result<bool, StoreError> {
        if let Some(old) = self.lookup(key)? {
            // Already published: restore any blob of that entry a reader moved aside, from our copy. An entry
            // whose blob can be had from nowhere (a size no blob has: a buggy or tampered entry) is dead; ours
            // replaces it.
            let mut dead = false;
            for f in old.manifest.files.values() {
                if self.blob_there(f) {
                    continue;
                }
                if from.present(&f.digest, f.size) == super::BlobState::Ok {
                    self.put_blob(f, &from.path(&f.digest))?;
                } else {
                    dead = true;
                }
            }
            if !dead {
                return Ok(false);
            }
        }
        for f in m.files.values() {
            self.put_blob(f, &from.path(&f.digest))?;
            // A blob that was already there is "new" again for `gc`'s grace period, which covers this publish.
            let _ = std::fs::File::options()
                .write(true)
                .open(self.blob_path(&f.digest))
                .and_then(|b| b.set_modified(std::time::SystemTime::now()));
        }
        let entry = CacheEntry {
            manifest: m.clone(),
            node: node.to_string(),
            published_at: crate::text::now_secs(),
            computed_ms: made.computed_ms,
            polyflow: made.polyflow.to_string(),
        };
        let mut tmp = self.tmp_file()?;
        tmp.write_all(&serde_json::to_vec_pretty(&entry).expect("json")).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        let dest = self.key_path(key);
        if let Some(parent) = dest.parent() {
            shared_dir(parent)?;
        }
        // Create-if-absent in one step: a hard link fails when the key exists (another publisher won). An entry
        // there that no run can use (malformed, or dead as above) is replaced in one step (a rename over it).
        match std::fs::hard_link(tmp.path(), &dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let usable = self.lookup(key)?.is_some_and(|e| e.manifest.files.values().all(|f| self.blob_there(f)));
                if usable {
                    return Ok(false);
                }
                tmp.persist(&dest).map_err(|e| StoreError::io(&dest, e.error))?;
                Ok(true)
            }
            Err(e) => Err(StoreError::io(&dest, e)),
        }
        // The temp file is removed when `tmp` drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::collections::BTreeMap;

    fn artifact(s: &Store, text: &[u8]) -> Manifest {
        let d = s.blobs.put(text).unwrap();
        Manifest::new("text", BTreeMap::from([("a.txt".to_string(), FileEntry { digest: d, size: text.len() as u64 })]))
    }

    #[test]
    fn publish_then_fetch_into_another_store_and_first_publisher_wins() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (Store::open(&t.path().join("a")).unwrap(), Store::open(&t.path().join("b")).unwrap());
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let k1 = "1".repeat(64);
        let m = artifact(&a, b"hello");
        assert!(c.lookup(&k1).unwrap().is_none());
        assert!(c.publish(&k1, &m, "n", Made::default(), &a.blobs).unwrap());
        assert!(!c.publish(&k1, &artifact(&a, b"other"), "n", Made::default(), &a.blobs).unwrap(), "never overwritten");
        let e = c.lookup(&k1).unwrap().unwrap();
        assert_eq!(e.manifest, m);
        c.fetch(&e.manifest, &b.blobs).unwrap();
        assert_eq!(b.blobs.read(&m.files["a.txt"].digest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(t.path().join("cache/tmp")).unwrap().count(), 0, "no temp file left");
    }

    /// An entry whose file list was changed after publishing (another blob of the cache put in one file's place,
    /// the artifact digest left as it was) is never fetched: downstream keys would name contents it no longer has.
    /// A run is told why; `verify --cache` and `gc --cache` name it.
    #[test]
    fn an_entry_edited_after_publishing_is_not_used() {
        let t = tempfile::tempdir().unwrap();
        let a = Store::open(&t.path().join("a")).unwrap();
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let (k1, k2) = ("1".repeat(64), "2".repeat(64));
        c.publish(&k1, &artifact(&a, b"acc 0.5"), "n", Made::default(), &a.blobs).unwrap();
        let other = artifact(&a, b"acc 0.99");
        c.publish(&k2, &other, "m", Made::default(), &a.blobs).unwrap();
        let p = c.key_path(&k1);
        let mut e: CacheEntry = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert!(c.unusable(&k1).is_none(), "an entry as published is used");
        e.manifest.files = other.files.clone();
        std::fs::write(&p, serde_json::to_vec(&e).unwrap()).unwrap();
        assert!(c.lookup(&k1).unwrap().is_none());
        assert!(c.unusable(&k1).unwrap().contains("changed after it was published"), "{:?}", c.unusable(&k1));
        let bad = c.malformed();
        assert_eq!(bad.len(), 1);
        assert!(bad[0].0.ends_with(format!("{k1}.json")) && bad[0].1.contains("artifact digest"));
        assert!(c.lookup(&k2).unwrap().is_some(), "the other entry is untouched");
    }

    #[test]
    fn malformed_keys_and_entries_are_misses() {
        let t = tempfile::tempdir().unwrap();
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        assert!(c.lookup("../../etc/passwd").unwrap().is_none());
        let key = "3".repeat(64);
        let bad = CacheEntry {
            manifest: Manifest::new("t", BTreeMap::from([("../x".into(), FileEntry { digest: "é/..".into(), size: 1 })])),
            node: "n".into(),
            published_at: 0,
            computed_ms: None,
            polyflow: String::new(),
        };
        let p = c.key_path(&key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, serde_json::to_vec(&bad).unwrap()).unwrap();
        assert!(c.lookup(&key).unwrap().is_none(), "a digest that is not hex never becomes a path");
        assert!(c.entries().is_empty());
        assert_eq!(c.malformed().len(), 1, "named, for verify and gc");
        // Garbage and a link where entries belong are malformed too (removable), not unreadable (which stops gc
        // from deleting any blob).
        std::fs::write(p.with_file_name(format!("{}.json", "6".repeat(64))), "{not json").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.with_file_name(format!("{}.json", "7".repeat(64)))).unwrap();
        assert_eq!(c.malformed().len(), 3);
        assert!(c.unreadable().is_empty());
        for (f, _) in c.malformed().into_iter().filter(|(f, _)| !f.ends_with(format!("{key}.json"))) {
            std::fs::remove_file(f).unwrap();
        }
        // A publisher of that key replaces it (before, the malformed entry blocked the key for good).
        let a = Store::open(&t.path().join("a")).unwrap();
        let m = artifact(&a, b"good");
        assert!(c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap());
        assert_eq!(c.lookup(&key).unwrap().unwrap().manifest, m);
        assert!(c.malformed().is_empty());
    }

    /// A blob planted as a link (to a file this user may read), a FIFO or a folder is refused at once, moved
    /// aside, and nothing of it enters the store; an entry with a wrong size leaves the intact blob alone, and the
    /// next publisher replaces the entry.
    #[test]
    fn fetch_takes_regular_blobs_of_the_named_size_only() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (Store::open(&t.path().join("a")).unwrap(), Store::open(&t.path().join("b")).unwrap());
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let m = artifact(&a, b"hello");
        let key = "5".repeat(64);
        c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap();
        let blob = c.blob_path(&m.files["a.txt"].digest);
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"TOPSECRET").unwrap();
        std::fs::remove_file(&blob).unwrap();
        symlink(&secret, &blob).unwrap();
        let err = c.fetch(&m, &b.blobs).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(b.blobs.list().is_empty(), "nothing copied into the store");
        assert!(std::fs::symlink_metadata(&blob).is_err() && secret.exists(), "the link moved aside, its target kept");
        // Restored by the next publisher; then a FIFO there does not hang the fetch.
        assert!(!c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap());
        std::fs::remove_file(&blob).unwrap();
        let cs = std::ffi::CString::new(blob.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(cs.as_ptr(), 0o644) }, 0);
        assert!(c.fetch(&m, &b.blobs).unwrap_err().to_string().contains("FIFO"));
        assert!(!c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap());
        // An entry that says another size no longer matches its artifact digest: not used, named as malformed, and
        // the intact blob stays.
        let mut wrong = c.lookup(&key).unwrap().unwrap();
        wrong.manifest.files.get_mut("a.txt").unwrap().size = 999_999;
        std::fs::write(c.key_path(&key), serde_json::to_vec(&wrong).unwrap()).unwrap();
        assert!(c.lookup(&key).unwrap().is_none());
        assert!(c.unusable(&key).is_some_and(|w| w.contains("artifact digest")));
        // A fetch of such a manifest (taken before the entry changed) names the entry's fault.
        let err = c.fetch(&wrong.manifest, &b.blobs).unwrap_err().to_string();
        assert!(err.contains("malformed entry"), "{err}");
        assert!(blob.exists(), "the intact blob is not moved aside");
        assert!(b.blobs.list().is_empty());
        // `verify` names it, and leaves the blob.
        let (_, _, bad) = c.verify(&|_| true);
        assert!(bad.is_empty() && c.malformed().len() == 1 && blob.exists(), "{bad:?}");
        // A publisher replaces it.
        assert!(c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap());
        c.fetch(&c.lookup(&key).unwrap().unwrap().manifest, &b.blobs).unwrap();
        assert_eq!(b.blobs.read(&m.files["a.txt"].digest).unwrap(), b"hello");
    }

    /// `gc`'s listings never follow a link planted where a folder of the cache belongs.
    #[test]
    fn leftovers_and_blobs_stay_inside_the_cache() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("important.txt"), "x").unwrap();
        std::fs::remove_dir(t.path().join("cache/tmp")).unwrap();
        symlink(&victim, t.path().join("cache/tmp")).unwrap();
        symlink(&victim, t.path().join("cache/damaged")).unwrap();
        symlink(&victim, t.path().join("cache/blobs/im")).unwrap();
        assert!(c.leftovers(Duration::ZERO).is_empty());
        assert!(c.blobs().is_empty());
    }

    #[test]
    fn cache_files_are_readable_by_the_team() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let a = Store::open(&t.path().join("a")).unwrap();
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let m = artifact(&a, b"hello");
        let key = "4".repeat(64);
        c.publish(&key, &m, "n", Made::default(), &a.blobs).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&c.key_path(&key)), FILE_MODE);
        assert_eq!(mode(&c.blob_path(&m.files["a.txt"].digest)), FILE_MODE);
        assert_eq!(mode(&t.path().join("cache/keys")), DIR_MODE);
    }

    #[test]
    fn a_damaged_cache_blob_is_refused_moved_aside_and_republished() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (Store::open(&t.path().join("a")).unwrap(), Store::open(&t.path().join("b")).unwrap());
        let c = DirCache::open(&t.path().join("cache")).unwrap();
        let (k1, k2) = ("1".repeat(64), "2".repeat(64));
        let m = artifact(&a, b"hello");
        c.publish(&k1, &m, "n", Made::default(), &a.blobs).unwrap();
        let digest = &m.files["a.txt"].digest;
        std::fs::write(c.blob_path(digest), b"hellp").unwrap();
        assert!(matches!(c.fetch(&m, &b.blobs), Err(StoreError::Corrupt { .. })));
        assert_eq!(b.blobs.present(digest, 5), crate::store::BlobState::Missing, "nothing damaged kept");
        assert!(!c.blob_path(digest).exists(), "moved aside");
        // The next publisher of that key (or of any artifact with that blob) restores it.
        assert!(!c.publish(&k1, &m, "n", Made::default(), &a.blobs).unwrap());
        c.fetch(&m, &b.blobs).unwrap();
        c.publish(&k2, &m, "n", Made::default(), &a.blobs).unwrap();
        assert_eq!(c.verify(&|_| true), (2, 2, vec![]));
    }
}
