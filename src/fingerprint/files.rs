//! Content digests of external files and folders (dataset folders, `command` deps), with a stat cache.
//!
//! Keys hold content digests, never paths or times. What this module saves is *reading* the bytes again: like
//! git's index, a cache remembers for each file its `(size, mtime, ctime, inode)` and blake3 digest, and an
//! unchanged stat means an unchanged digest. `status` of a 150 GB dataset then costs one `stat` per file.
//!
//! **Racy entries.** A file modified within the timestamp granularity of the moment its stat was recorded could
//! keep the same stat with other bytes. An entry is trusted only when the file's mtime and ctime are at least
//! [`RACY_NS`] older than the moment its record was taken; younger entries are re-hashed (once: the new record
//! is taken later). ctime cannot be set by users, so `touch -d` back to an old mtime is still seen.
//!
//! **Records.** One file per folder (or file) hashed, in the cache folder, named by the blake3 of its absolute
//! path: a header (when it was taken, a signature of every path and stat, the folder's digest) and one entry per
//! file. When the signature of the current stats equals the record's and no entry is racy, the folder's digest
//! is taken from the header alone (the entries are neither read nor sorted). Records are written to a temp file and renamed, carry
//! a checksum (a torn or garbled record is ignored, never trusted) and are best-effort: a full disk or a
//! read-only store only costs re-hashing.
//!
//! **The digest of a folder** is blake3 over `polyflow folder` and a NUL byte, then, for each regular file below
//! it in byte order of its path relative to the folder (`/`-separated; a name that is not UTF-8 as a NUL and the
//! hex of its bytes): the path, a NUL byte and the file's own 32-byte blake3 digest; an empty folder below it
//! (which a layout may read as an empty split or class) enters as its path and a `/`, a NUL byte and the blake3
//! of `polyflow empty folder`, so that creating or removing one changes the digest. A file given directly has
//! the blake3 of its bytes. Anything else in a folder (a FIFO, a device, a symlink loop) is an error. A list of
//! files (a manifest's, [`FileDigests::list`]) is digested the same way under its own domain.
//!
//! **Naming what changed.** The records hold the digests of the latest state only. So that `status` can name
//! the files that changed since a node ran, each listing of at most [`LISTING_MAX`] files is also kept under
//! its digest (`listings/<digest>`); every digest taken on a thread is noted as a [`Part`] ([`take_parts`]), and
//! [`FileDigests::explain`] compares the listings of two sets of parts. Larger folders are named as changed,
//! without their files.

use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Folders of up to this many files keep their listing under its digest, to name what changed later.
pub const LISTING_MAX: usize = 20_000;

/// One folder, file or list a digest was made of, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// The path as digested (explanation only).
    pub path: String,
    /// Its digest.
    pub digest: String,
}

thread_local! {
    /// The digests taken on this thread since the last [`take_parts`].
    static PARTS: std::cell::RefCell<Vec<Part>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The folders, files and lists digested on this thread since the last call, in order.
pub fn take_parts() -> Vec<Part> {
    PARTS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

fn note(path: &Path, digest: &str) {
    PARTS.with(|p| p.borrow_mut().push(Part { path: path.display().to_string(), digest: digest.to_string() }));
}

/// Files whose mtime or ctime is this close to (or after) the moment their record was taken are re-hashed.
pub const RACY_NS: i64 = 2_000_000_000;

const MAGIC: &[u8; 8] = b"PFSTAT2\n";
/// The first bytes hashed into a folder's digest.
const TREE_DOMAIN: &[u8] = b"polyflow folder\0";
/// The first bytes hashed into a list's digest ([`FileDigests::list`]).
const LIST_DOMAIN: &[u8] = b"polyflow files\0";

/// A file that could not be listed or read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The path.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError { path: path.to_path_buf(), source }
}

/// What a file's stat says about its identity (never hashed into a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
}

impl Stat {
    fn of(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
        }
    }

    /// Whether a record taken at `recorded_ns` may vouch for this stat (see the module docs on racy entries).
    pub fn settled_at(&self, recorded_ns: i64) -> bool {
        self.mtime_ns.max(self.ctime_ns).saturating_add(RACY_NS) <= recorded_ns
    }
}

/// One file of a listing: its path relative to the root and its stat.
#[derive(Debug, Clone)]
struct Listed {
    rel: String,
    path: PathBuf,
    stat: Stat,
}

/// One cached entry.
#[derive(Debug, Clone)]
struct Entry {
    stat: Stat,
    digest: [u8; 32],
}

/// A decoded record.
struct Record {
    recorded_ns: i64,
    entries: HashMap<String, Entry>,
}

/// Counters of what the last call did (tests and benchmarks read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Files listed (stat'ed).
    pub listed: usize,
    /// Files whose bytes were read.
    pub hashed: usize,
}

/// Computes content digests of external files and folders, reusing a stat cache when it has one.
#[derive(Debug, Clone, Default)]
pub struct FileDigests {
    cache: Option<PathBuf>,
    last: std::sync::Arc<std::sync::Mutex<Work>>,
}

impl FileDigests {
    /// Digests kept in `cache_dir` (created on first write).
    pub fn cached(cache_dir: PathBuf) -> Self {
        FileDigests { cache: Some(cache_dir), last: Default::default() }
    }

    /// No cache: every call reads every byte.
    pub fn uncached() -> Self {
        FileDigests::default()
    }

    /// What the last [`Self::tree`] or [`Self::file`] call did.
    pub fn last_work(&self) -> Work {
        *self.last.lock().unwrap()
    }

    /// Digest of the regular files below folder `root` (symlinks followed), or of `root` itself when it is a
    /// file — see the module docs for the exact definition.
    pub fn tree(&self, root: &Path) -> Result<String, FileError> {
        let meta = std::fs::metadata(root).map_err(err(root))?;
        let d = self.digest(root, meta.is_dir()).map(hex)?;
        note(root, &d);
        Ok(d)
    }

    /// [`Self::tree`] of the visible files only: hidden files and folders below `root` (a name starting with
    /// `.`: `.DS_Store`, `._x.jpg` of macOS, `.ipynb_checkpoints`, `.cache`) are left out, as for readers that
    /// never read them (dataset layouts); `root` itself may be hidden. A folder without hidden entries has the
    /// same digest as [`Self::tree`] gives.
    pub fn visible_tree(&self, root: &Path) -> Result<String, FileError> {
        let meta = std::fs::metadata(root).map_err(err(root))?;
        let d = if meta.is_dir() {
            self.digest_listing(walk(root, Hidden::Skip)?, TREE_DOMAIN, &format!("{}-visible", record_name(root))).map(hex)?
        } else {
            self.digest(root, false).map(hex)?
        };
        note(root, &d);
        Ok(d)
    }

    /// blake3 digest of the bytes of file `path`.
    pub fn file(&self, path: &Path) -> Result<String, FileError> {
        let d = self.digest(path, false).map(hex)?;
        note(path, &d);
        Ok(d)
    }

    /// What changed between the digests `old` and `new` of the same inputs, file by file where both listings
    /// were kept: `path modified`, `path added`, `path removed` (at most `shown`, then how many more), or the part
    /// named as a whole. Empty when nothing is known.
    pub fn explain(&self, old: &[Part], new: &[Part], shown: usize) -> Vec<String> {
        // Records from before parts were kept have none: nothing is known.
        if old.is_empty() {
            return vec![];
        }
        let mut lines = vec![];
        for (i, n) in new.iter().enumerate() {
            // By path; else the part at the same position when its path is gone from the new parts (a dataset moved
            // elsewhere: paths are not keyed), never one that is still read under its own path.
            let by_path = old.iter().find(|o| o.path == n.path);
            let moved = || old.get(i).filter(|o| old.len() == new.len() && !new.iter().any(|x| x.path == o.path));
            let Some(o) = by_path.or_else(moved) else {
                lines.push(format!("{} (newly read)", n.path));
                continue;
            };
            if o.digest == n.digest {
                // Read under another name with the same content (a renamed `deps` file): said, as the name may
                // count (a script run by it), and else the change would name nothing.
                if o.path != n.path {
                    lines.push(format!("{} → {} (same content)", o.path, n.path));
                }
                continue;
            }
            match (self.listing(&o.digest), self.listing(&n.digest)) {
                (Some(a), Some(b)) => {
                    // A list's entries outside its folder are absolute paths already.
                    let name = |rel: &str| match rel {
                        "" => n.path.clone(),
                        r if r.starts_with('/') => shown_name(r),
                        r => format!("{}/{}", n.path.trim_end_matches('/'), shown_name(r)),
                    };
                    for (rel, d) in &b {
                        match a.get(rel) {
                            Some(x) if x == d => {}
                            Some(_) => lines.push(format!("{} modified", name(rel))),
                            None => lines.push(format!("{} added", name(rel))),
                        }
                    }
                    lines.extend(a.keys().filter(|r| !b.contains_key(*r)).map(|rel| format!("{} removed", name(rel))));
                }
                _ => lines.push(format!("{} modified", n.path)),
            }
        }
        lines.extend(old.iter().skip(new.len()).map(|o| format!("{} (no longer read)", o.path)));
        // As a reader writes paths relative to where they are: `deps = ["./data"]` read from `.` is `data`, not
        // `././data`.
        for l in &mut lines {
            while l.contains("/./") {
                *l = l.replace("/./", "/");
            }
            while let Some(rest) = l.strip_prefix("./") {
                *l = rest.to_string();
            }
        }
        if lines.len() > shown {
            let more = lines.len() - shown;
            lines.truncate(shown);
            lines.push(format!("{more} more"));
        }
        lines
    }

    /// Deletes the kept listings (module docs) of digests not in `keep` (those the recorded runs were made
    /// from: what `status` compares with); returns how many and their bytes. With `dry`, only counts.
    pub fn prune_listings(&self, keep: &std::collections::BTreeSet<String>, dry: bool) -> (usize, u64) {
        let Some(dir) = self.cache.as_ref().map(|c| c.join("listings")) else { return (0, 0) };
        let Ok(rd) = std::fs::read_dir(&dir) else { return (0, 0) };
        let (mut n, mut bytes) = (0, 0);
        for e in rd.flatten() {
            if keep.contains(e.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            n += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry {
                let _ = std::fs::remove_file(e.path());
            }
        }
        (n, bytes)
    }

    /// The listing kept under `digest` (relative path → file digest).
    fn listing(&self, digest: &str) -> Option<std::collections::BTreeMap<String, [u8; 32]>> {
        let bytes = std::fs::read(self.cache.as_ref()?.join("listings").join(digest)).ok()?;
        let r = decode(&bytes)?;
        Some(r.entries.into_iter().map(|(k, e)| (k, e.digest)).collect())
    }

    /// Digest of the files `paths` that exist (a manifest's list of examples, wherever they are), recorded
    /// under `key` (the manifest): blake3 over `polyflow files` and a NUL byte, then for each file that exists,
    /// in byte order of its path (relative to `key`'s folder where below it, else as given): the path, a NUL
    /// byte and the file's 32-byte blake3 digest. A file that
    /// is absent is left out, so its appearing changes the digest. Anything but a regular file is an error.
    pub fn list(&self, key: &Path, paths: &[PathBuf]) -> Result<String, FileError> {
        // Paths below the manifest's folder enter as relative paths, so that a dataset moved elsewhere keeps its
        // digest, as a folder does.
        let base = key.parent().unwrap_or(Path::new(""));
        // A `stat` per file, in parallel (a manifest of a million clips on a network file system).
        let stats: Vec<Option<Listed>> = paths
            .par_iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) if m.is_file() => Ok(Some(Listed { rel: rel_to(base, p), path: p.clone(), stat: Stat::of(&m) })),
                Ok(_) => Err(FileError { path: p.clone(), source: std::io::Error::other("not a regular file") }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(FileError { path: p.clone(), source: e }),
            })
            .collect::<Result<_, _>>()?;
        let mut listing: Vec<Listed> = stats.into_iter().flatten().collect();
        listing.sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
        listing.dedup_by(|a, b| a.rel == b.rel);
        let record = format!("{}-list", record_name(key));
        let d = self.digest_listing(listing, LIST_DOMAIN, &record).map(hex)?;
        note(base, &d);
        Ok(d)
    }

    fn digest(&self, root: &Path, folder: bool) -> Result<[u8; 32], FileError> {
        let listing = if folder { walk(root, Hidden::Keep)? } else { vec![single(root)?] };
        self.digest_listing(listing, if folder { TREE_DOMAIN } else { b"" }, &record_name(root))
    }

    /// The digest of `listing` with its record `record` in the cache: over `domain` and each entry's path and
    /// digest, or with an empty `domain` the one file's own digest.
    fn digest_listing(&self, mut listing: Vec<Listed>, domain: &[u8], record: &str) -> Result<[u8; 32], FileError> {
        let now = now_ns();
        let folder = !domain.is_empty();
        let signature = signature(&listing);
        let newest = listing.iter().map(|l| l.stat.mtime_ns.max(l.stat.ctime_ns)).max().unwrap_or(i64::MIN);
        let record_path = self.cache.as_ref().map(|c| c.join(record));
        // The common case: nothing changed since the record was taken. Only its header is read.
        if let Some(h) = record_path.as_deref().and_then(read_header) {
            if h.signature == signature && newest.saturating_add(RACY_NS) <= h.recorded_ns {
                *self.last.lock().unwrap() = Work { listed: listing.len(), hashed: 0 };
                return Ok(h.digest);
            }
        }
        listing.par_sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
        let old = record_path.as_deref().and_then(|p| std::fs::read(p).ok()).and_then(|b| decode(&b));
        let known = |l: &Listed| {
            let e = old.as_ref()?.entries.get(&l.rel)?;
            (e.stat == l.stat && l.stat.settled_at(old.as_ref()?.recorded_ns)).then_some(e.digest)
        };
        let digests: Vec<([u8; 32], bool)> = listing
            .par_iter()
            .map(|l| match known(l) {
                _ if l.rel.ends_with('/') => Ok((*blake3::hash(b"polyflow empty folder").as_bytes(), false)),
                Some(d) => Ok((d, false)),
                None => hash_file(&l.path).map(|d| (d, true)),
            })
            .collect::<Result<_, _>>()?;
        let hashed = digests.iter().filter(|d| d.1).count();
        *self.last.lock().unwrap() = Work { listed: listing.len(), hashed };
        let digest = if folder {
            let mut h = blake3::Hasher::new();
            // A folder's digest never equals a file's (an empty folder is not an empty file), nor a list's.
            h.update(domain);
            for (l, (d, _)) in listing.iter().zip(&digests) {
                h.update(l.rel.as_bytes());
                h.update(&[0]);
                h.update(d);
            }
            *h.finalize().as_bytes()
        } else {
            digests[0].0
        };
        if let Some(p) = record_path {
            // Best-effort: a full disk or a read-only store only costs re-hashing next time.
            let bytes = encode(now, &signature, &digest, &listing, &digests);
            let _ = write_record(&p, &bytes);
            // And the listing under its digest, to name what changed later (module docs).
            let kept = self.cache.as_ref().map(|c| c.join("listings").join(hex(digest)));
            if let Some(k) = kept.filter(|k| listing.len() <= LISTING_MAX && !k.exists()) {
                let _ = write_record(&k, &bytes);
            }
        }
        Ok(digest)
    }
}

/// `p` relative to `base` where it is below it (`/`-separated), else as given; names that are not UTF-8 as
/// [`name_of`] writes them.
fn rel_to(base: &Path, p: &Path) -> String {
    match p.strip_prefix(base) {
        Ok(r) if !base.as_os_str().is_empty() => r.iter().map(name_of).collect::<Vec<_>>().join("/"),
        _ => name_of(p.as_os_str()),
    }
}

/// A listing's path as shown: a name that is not UTF-8, kept as a NUL byte and the hex of its bytes, shown as
/// its bytes with the others escaped (`b\xff.txt`).
fn shown_name(rel: &str) -> String {
    rel.split('/')
        .map(|part| match part.strip_prefix('\0') {
            Some(h) if h.len() % 2 == 0 => {
                let bytes: Option<Vec<u8>> = (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect();
                bytes.map(|b| b.escape_ascii().to_string()).unwrap_or_else(|| part.escape_default().to_string())
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn hex(d: [u8; 32]) -> String {
    blake3::Hash::from(d).to_hex().to_string()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn record_name(root: &Path) -> String {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex()[..32].to_string()
}

fn single(path: &Path) -> Result<Listed, FileError> {
    let m = std::fs::metadata(path).map_err(err(path))?;
    Ok(Listed { rel: String::new(), path: path.to_path_buf(), stat: Stat::of(&m) })
}

/// Whether a walk lists hidden files and folders (names starting with `.`) below its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hidden {
    Keep,
    Skip,
}

/// Every regular file below `root`, in no particular order. Folders are read level by level, each level's
/// folders in parallel (a `stat` per file is the whole cost of an unchanged dataset).
fn walk(root: &Path, hidden: Hidden) -> Result<Vec<Listed>, FileError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root).map_err(err(root))?;
    let mut files = vec![];
    let mut frontier: Vec<Folder> = vec![(root.to_path_buf(), String::new(), vec![(m.dev(), m.ino())])];
    while !frontier.is_empty() {
        let level: Vec<Level> = frontier.par_iter().map(|(dir, rel, up)| read_level(dir, rel, up, hidden)).collect::<Result<_, _>>()?;
        let read = std::mem::take(&mut frontier);
        for ((dir, rel, _), (f, d)) in read.into_iter().zip(level) {
            // An empty folder below the root is an entry of its own (see the module docs): a zero stat, so that
            // only its appearing or going changes anything.
            if f.is_empty() && d.is_empty() && !rel.is_empty() {
                files.push(Listed { rel: format!("{rel}/"), path: dir, stat: Stat { size: 0, mtime_ns: 0, ctime_ns: 0, ino: 0 } });
            }
            files.extend(f);
            frontier.extend(d);
        }
    }
    Ok(files)
}

/// A folder to read: its path, its path relative to the root, and the (device, inode) of it and every folder
/// above it (a symlink back to one of them would be walked forever).
type Folder = (PathBuf, String, Vec<(u64, u64)>);
type Level = (Vec<Listed>, Vec<Folder>);

/// A name as it enters the digest: the name itself, or for a name that is not UTF-8, a NUL (which no file name
/// contains) and the hex of its bytes, so two such names never collide.
fn name_of(name: &std::ffi::OsStr) -> String {
    match name.to_str() {
        Some(s) => s.to_string(),
        None => format!("\0{}", name.as_encoded_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

fn read_level(dir: &Path, rel: &str, up: &[(u64, u64)], hidden: Hidden) -> Result<Level, FileError> {
    use std::os::unix::fs::MetadataExt;
    let mut files = vec![];
    let mut dirs = vec![];
    for e in std::fs::read_dir(dir).map_err(err(dir))? {
        let e = e.map_err(err(dir))?;
        if hidden == Hidden::Skip && e.file_name().as_encoded_bytes().first() == Some(&b'.') {
            continue;
        }
        let path = e.path();
        let name = name_of(&e.file_name());
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let ft = e.file_type().map_err(err(&path))?;
        // Symlinks are followed (a dataset folder of links to the real files is common).
        let meta = match if ft.is_symlink() { std::fs::metadata(&path) } else { e.metadata() } {
            Ok(m) => m,
            Err(x) if ft.is_symlink() && x.kind() == std::io::ErrorKind::NotFound => {
                let to = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
                let what = std::io::Error::other(format!("a symlink to {to}, which does not exist: restore it or remove the link"));
                return Err(FileError { path, source: what });
            }
            Err(x) => return Err(FileError { path, source: x }),
        };
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if up.contains(&id) {
                let what = std::io::Error::other("a symlink back to a folder above it (a loop): remove the link");
                return Err(FileError { path, source: what });
            }
            let mut chain = up.to_vec();
            chain.push(id);
            dirs.push((path, child, chain));
        } else if meta.is_file() {
            files.push(Listed { rel: child, path, stat: Stat::of(&meta) });
        } else {
            // A FIFO would block the hash forever, a device never end: name it instead.
            let what = std::io::Error::other("not a regular file or folder (a FIFO, socket or device?): remove it from the folder");
            return Err(FileError { path, source: what });
        }
    }
    Ok((files, dirs))
}

fn hash_file(path: &Path) -> Result<[u8; 32], FileError> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).map_err(err(path))?;
    h.update_reader(f).map_err(err(path))?;
    Ok(*h.finalize().as_bytes())
}

/// A digest of every (path, stat) of a listing, independent of its order (so the common case needs no sort):
/// the lane-wise wrapping sum of each entry's blake3.
fn signature(listing: &[Listed]) -> [u8; 32] {
    let sum = listing
        .par_iter()
        .map(|l| {
            let mut h = blake3::Hasher::new();
            h.update(l.rel.as_bytes());
            h.update(&[0]);
            let mut b = [0u8; 32];
            for (k, v) in [l.stat.size, l.stat.mtime_ns as u64, l.stat.ctime_ns as u64, l.stat.ino].into_iter().enumerate() {
                b[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            h.update(&b);
            lanes(h.finalize().as_bytes())
        })
        .reduce(|| [0u64; 4], |a, b| [0, 1, 2, 3].map(|k| a[k].wrapping_add(b[k])));
    let mut out = [0u8; 32];
    for (k, v) in sum.iter().enumerate() {
        out[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn lanes(b: &[u8; 32]) -> [u64; 4] {
    [0, 1, 2, 3].map(|k| u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().unwrap()))
}

/// The fixed-size start of a record.
struct Header {
    recorded_ns: i64,
    signature: [u8; 32],
    digest: [u8; 32],
    n: u64,
    body_sum: [u8; 32],
}

/// `MAGIC`, header (`recorded_ns`, signature, digest, entry count, checksum of the body), checksum of the header,
/// then the body: per entry `len u32, rel, size, mtime, ctime, ino, digest [32]`; integers little-endian.
const HEADER_LEN: usize = 8 + 32 + 32 + 8 + 32;

fn encode(recorded_ns: i64, signature: &[u8; 32], digest: &[u8; 32], listing: &[Listed], digests: &[([u8; 32], bool)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(listing.len() * 96);
    for (l, (d, _)) in listing.iter().zip(digests) {
        body.extend_from_slice(&(l.rel.len() as u32).to_le_bytes());
        body.extend_from_slice(l.rel.as_bytes());
        for v in [l.stat.size, l.stat.mtime_ns as u64, l.stat.ctime_ns as u64, l.stat.ino] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(d);
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&recorded_ns.to_le_bytes());
    header.extend_from_slice(signature);
    header.extend_from_slice(digest);
    header.extend_from_slice(&(listing.len() as u64).to_le_bytes());
    header.extend_from_slice(blake3::hash(&body).as_bytes());
    let mut out = Vec::with_capacity(8 + HEADER_LEN + 32 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header);
    out.extend_from_slice(blake3::hash(&header).as_bytes());
    out.extend_from_slice(&body);
    out
}

fn parse_header(bytes: &[u8]) -> Option<Header> {
    let mut r = Reader(bytes);
    if r.take(8)? != MAGIC {
        return None;
    }
    let header = r.take(HEADER_LEN)?;
    if blake3::hash(header).as_bytes() != r.take(32)? {
        return None;
    }
    let mut h = Reader(header);
    Some(Header { recorded_ns: h.u64()? as i64, signature: h.hash()?, digest: h.hash()?, n: h.u64()?, body_sum: h.hash()? })
}

/// Reads and checks only the header of the record at `path`.
fn read_header(path: &Path) -> Option<Header> {
    use std::io::Read;
    let mut buf = [0u8; 8 + HEADER_LEN + 32];
    std::fs::File::open(path).ok()?.read_exact(&mut buf).ok()?;
    parse_header(&buf)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.0.len() >= n).then(|| {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        })
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32).map(|b| b.try_into().unwrap())
    }
}

/// Decodes a record; `None` for anything torn, garbled or of another version (then it is simply not used).
fn decode(bytes: &[u8]) -> Option<Record> {
    let h = parse_header(bytes)?;
    let mut r = Reader(bytes.get(8 + HEADER_LEN + 32..)?);
    if blake3::hash(r.0).as_bytes() != &h.body_sum {
        return None;
    }
    let mut entries = HashMap::with_capacity((h.n as usize).min(r.0.len() / 68));
    for _ in 0..h.n {
        let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let rel = std::str::from_utf8(r.take(len)?).ok()?.to_string();
        let stat = Stat { size: r.u64()?, mtime_ns: r.u64()? as i64, ctime_ns: r.u64()? as i64, ino: r.u64()? };
        entries.insert(rel, Entry { stat, digest: r.hash()? });
    }
    Some(Record { recorded_ns: h.recorded_ns, entries })
}

fn write_record(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    crate::store::write_atomic(path, bytes, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    fn setup() -> (tempfile::TempDir, PathBuf, FileDigests) {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(data.join("a/b")).unwrap();
        std::fs::write(data.join("x.txt"), b"one").unwrap();
        std::fs::write(data.join("a/b/y.txt"), b"two").unwrap();
        let fd = FileDigests::cached(d.path().join("cache"));
        (d, data, fd)
    }

    #[test]
    fn names_that_are_not_utf8_are_shown_escaped() {
        assert_eq!(super::shown_name("data/\u{0}62ff2e747874"), "data/b\\xff.txt");
        assert_eq!(super::shown_name("a/b.txt"), "a/b.txt");
    }

    #[test]
    fn digest_is_content_only_and_matches_the_uncached_one() {
        let (d, data, fd) = setup();
        let a = fd.tree(&data).unwrap();
        assert_eq!(a, FileDigests::uncached().tree(&data).unwrap());
        // Another folder with the same content (other inodes, times) has the same digest.
        let copy = d.path().join("copy");
        std::fs::create_dir_all(copy.join("a/b")).unwrap();
        std::fs::write(copy.join("x.txt"), b"one").unwrap();
        std::fs::write(copy.join("a/b/y.txt"), b"two").unwrap();
        assert_eq!(fd.tree(&copy).unwrap(), a);
        std::fs::rename(copy.join("x.txt"), copy.join("z.txt")).unwrap();
        assert_ne!(fd.tree(&copy).unwrap(), a, "names are content");
        assert_eq!(fd.file(&data.join("x.txt")).unwrap(), blake3::hash(b"one").to_hex().to_string());
    }

    #[test]
    fn an_empty_folder_counts_and_a_folder_of_files_is_its_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("train/cat")).unwrap();
        std::fs::write(d.path().join("train/cat/a.png"), b"x").unwrap();
        let fd = FileDigests::uncached();
        let before = fd.visible_tree(d.path()).unwrap();
        // An empty `val/` (read by a layout as an empty split) changes the digest; gone again, it is as before.
        std::fs::create_dir(d.path().join("val")).unwrap();
        let with_val = fd.visible_tree(d.path()).unwrap();
        assert_ne!(with_val, before);
        // A folder holding only hidden files is empty to a layout.
        std::fs::write(d.path().join("val/.DS_Store"), b"x").unwrap();
        assert_eq!(fd.visible_tree(d.path()).unwrap(), with_val);
        std::fs::remove_dir_all(d.path().join("val")).unwrap();
        assert_eq!(fd.visible_tree(d.path()).unwrap(), before);
        // A folder with files in it is only its files, as it always was (keys of such datasets do not move).
        let mut h = blake3::Hasher::new();
        h.update(TREE_DOMAIN);
        h.update(b"train/cat/a.png\0");
        h.update(blake3::hash(b"x").as_bytes());
        assert_eq!(before, h.finalize().to_hex().to_string());
    }

    #[test]
    fn a_dangling_symlink_is_named_with_its_target() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.png"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent/x.png", d.path().join("b.png")).unwrap();
        let e = FileDigests::uncached().visible_tree(d.path()).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("a symlink to /nonexistent/x.png, which does not exist"), "{e}");
    }

    #[test]
    fn the_visible_tree_leaves_hidden_entries_out() {
        let (_d, data, fd) = setup();
        let (all, visible) = (fd.tree(&data).unwrap(), fd.visible_tree(&data).unwrap());
        assert_eq!(all, visible, "no hidden entries: the same digest");
        std::fs::write(data.join(".DS_Store"), b"Bud1").unwrap();
        std::fs::create_dir_all(data.join("a/.cache")).unwrap();
        std::fs::write(data.join("a/.cache/x"), b"x").unwrap();
        assert_ne!(fd.tree(&data).unwrap(), all);
        assert_eq!(fd.visible_tree(&data).unwrap(), visible);
        std::fs::write(data.join("a/seen.txt"), b"seen").unwrap();
        assert_ne!(fd.visible_tree(&data).unwrap(), visible, "a visible file counts");
    }

    #[test]
    fn settled_files_are_not_read_again_and_changes_are_seen() {
        let (_d, data, fd) = setup();
        age(&data.join("x.txt"), 60);
        age(&data.join("a/b/y.txt"), 60);
        // ctime is now: the first record is racy for both files, the second is taken later… still within
        // RACY_NS of the ctime, so wait it out once.
        let first = fd.tree(&data).unwrap();
        assert_eq!(fd.last_work().hashed, 2);
        std::thread::sleep(Duration::from_nanos(RACY_NS as u64 + 50_000_000));
        assert_eq!(fd.tree(&data).unwrap(), first);
        assert_eq!(fd.last_work(), Work { listed: 2, hashed: 2 }, "racy entries are re-hashed once");
        assert_eq!(fd.tree(&data).unwrap(), first);
        assert_eq!(fd.last_work(), Work { listed: 2, hashed: 0 }, "settled entries are trusted");
        // Same size, mtime put back: ctime still moves, so the file is read again.
        std::fs::write(data.join("x.txt"), b"ONE").unwrap();
        age(&data.join("x.txt"), 60);
        let changed = fd.tree(&data).unwrap();
        assert_ne!(changed, first);
        assert_eq!(fd.last_work().hashed, 1, "only the changed file is read");
    }

    #[test]
    fn a_list_covers_exactly_its_files_wherever_they_are() {
        let (d, data, fd) = setup();
        let manifest = d.path().join("m.csv");
        std::fs::write(&manifest, b"x.txt\n../elsewhere.txt\n").unwrap();
        let far = d.path().join("elsewhere.txt");
        std::fs::write(&far, b"far").unwrap();
        let absent = d.path().join("absent.txt");
        let list = vec![manifest.clone(), data.join("x.txt"), far.clone(), absent.clone()];
        let a = fd.list(&manifest, &list).unwrap();
        assert_eq!(a, FileDigests::uncached().list(&manifest, &list).unwrap());
        assert_ne!(a, fd.tree(&data).unwrap(), "a list's digest is not a folder's");
        // A file outside the list changes nothing; a listed one anywhere does, and so does an absent one appearing.
        std::fs::write(data.join("a/b/y.txt"), b"TWO").unwrap();
        assert_eq!(fd.list(&manifest, &list).unwrap(), a);
        std::fs::write(&far, b"FAR").unwrap();
        let b = fd.list(&manifest, &list).unwrap();
        assert_ne!(b, a);
        std::fs::write(&absent, b"here").unwrap();
        assert_ne!(fd.list(&manifest, &list).unwrap(), b);
        // A folder in the list is an error naming it.
        let e = fd.list(&manifest, std::slice::from_ref(&data)).unwrap_err();
        assert_eq!(e.path, data);
    }

    #[test]
    fn what_changed_is_named_from_the_kept_listings() {
        let (d, data, fd) = setup();
        let _ = take_parts();
        fd.tree(&data).unwrap();
        let before = take_parts();
        assert_eq!(before.len(), 1);
        std::fs::write(data.join("x.txt"), b"ONE!").unwrap();
        std::fs::remove_file(data.join("a/b/y.txt")).unwrap();
        for i in 0..6 {
            std::fs::write(data.join(format!("n{i}.txt")), b"new").unwrap();
        }
        fd.tree(&data).unwrap();
        let after = take_parts();
        let p = data.display();
        // `a/b/` lost its only file: an empty folder now, which counts (a layout may read it as an empty class).
        assert_eq!(
            fd.explain(&before, &after, 3),
            [format!("{p}/a/b/ added"), format!("{p}/n0.txt added"), format!("{p}/n1.txt added"), "6 more".into()]
        );
        let all = fd.explain(&before, &after, 100);
        assert!(all.contains(&format!("{p}/x.txt modified")) && all.contains(&format!("{p}/a/b/y.txt removed")), "{all:?}");
        assert!(fd.explain(&after, &after, 3).is_empty());
        // Without a kept listing (another cache, or a folder over LISTING_MAX files) the folder is named whole.
        let other = FileDigests::cached(d.path().join("other"));
        assert_eq!(other.explain(&before, &after, 3), [format!("{p} modified")]);
    }

    #[test]
    fn racy_rule() {
        let s = Stat { size: 1, mtime_ns: 10 * RACY_NS, ctime_ns: 10 * RACY_NS, ino: 1 };
        assert!(!s.settled_at(10 * RACY_NS), "modified at the moment of the record");
        assert!(!s.settled_at(11 * RACY_NS - 1), "within the granularity window");
        assert!(s.settled_at(11 * RACY_NS));
        let late_ctime = Stat { ctime_ns: 20 * RACY_NS, ..s };
        assert!(!late_ctime.settled_at(15 * RACY_NS), "ctime counts as well as mtime");
    }

    #[test]
    fn a_garbled_record_is_ignored_not_trusted() {
        let (d, data, fd) = setup();
        let good = fd.tree(&data).unwrap();
        let cache = d.path().join("cache");
        let rec = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.path()).find(|p| p.is_file()).unwrap();
        let mut b = std::fs::read(&rec).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&rec, &b).unwrap();
        assert!(decode(&b).is_none());
        std::fs::write(&rec, &b[..n / 2]).unwrap();
        assert!(decode(&b[..n / 2]).is_none());
        assert_eq!(fd.tree(&data).unwrap(), good);
        assert_eq!(fd.last_work().hashed, 2);
    }

    #[test]
    fn a_fifo_in_a_dataset_is_an_error_not_a_hang() {
        let (_d, data, fd) = setup();
        let fifo = data.join("a/pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = fd.tree(&data).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn loops_names_and_domains() {
        use std::os::unix::ffi::OsStrExt;
        let (d, data, fd) = setup();
        // An empty folder is not an empty file.
        let (empty_dir, empty_file) = (d.path().join("e"), d.path().join("f"));
        std::fs::create_dir(&empty_dir).unwrap();
        std::fs::write(&empty_file, b"").unwrap();
        assert_ne!(fd.tree(&empty_dir).unwrap(), fd.tree(&empty_file).unwrap());
        // Two names that are not UTF-8 and differ only there: their contents swapped is another digest.
        let (x, y) = (std::ffi::OsStr::from_bytes(b"n\xff"), std::ffi::OsStr::from_bytes(b"n\xfe"));
        std::fs::write(data.join(x), b"1").unwrap();
        std::fs::write(data.join(y), b"2").unwrap();
        let before = fd.tree(&data).unwrap();
        std::fs::write(data.join(x), b"2").unwrap();
        std::fs::write(data.join(y), b"1").unwrap();
        assert_ne!(fd.tree(&data).unwrap(), before);
        // A symlink to a folder above is a loop, named.
        std::os::unix::fs::symlink(&data, data.join("a/b/up")).unwrap();
        let e = fd.tree(&data).unwrap_err();
        assert!(e.to_string().contains("loop"), "{e}");
    }

    #[test]
    fn missing_root_names_the_path() {
        let fd = FileDigests::uncached();
        let e = fd.tree(Path::new("/nonexistent/polyflow-data")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/polyflow-data:"), "{e}");
    }

    #[test]
    fn parts_match_by_path_and_a_moved_one_by_position() {
        let part = |p: &str, d: &str| Part { path: p.into(), digest: d.into() };
        let f = FileDigests::uncached();
        // deps ["a", "b"] → ["b", "c"]: b unchanged is not "modified"; c is newly read.
        let got = f.explain(&[part("a", "1"), part("b", "2")], &[part("b", "2"), part("c", "3")], 5);
        assert_eq!(got, ["c (newly read)"]);
        // One folder moved (its old path gone): compared with the part it was (no listing kept: named whole).
        let got = f.explain(&[part("/old/d", "1")], &[part("/new/d", "2")], 5);
        assert!(!got.iter().any(|l| l.contains("newly read")), "{got:?}");
        // A file renamed with the same content (deps ["in1.txt"] → ["in2.txt"]): said, not a change naming nothing.
        assert_eq!(f.explain(&[part("in1.txt", "1")], &[part("in2.txt", "1")], 5), ["in1.txt → in2.txt (same content)"]);
    }
}
