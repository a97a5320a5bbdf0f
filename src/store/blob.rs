//! Content-addressed blob files: `blobs/ab/<blake3 hex>`, written atomically and verified on read.

use super::StoreError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A directory of content-addressed blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// The result of checking one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Present with the right size and checksum.
    Ok,
    /// The file does not exist.
    Missing,
    /// Size or checksum mismatch.
    Corrupt,
    /// There with the right size, but this user may not read it (permissions): not damage, nothing to re-run.
    Unreadable,
}

impl BlobStore {
    /// Blob store under `root` (`root/blobs`, temp files in `root/tmp`).
    pub fn new(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        std::fs::create_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        Ok(BlobStore { dir, tmp })
    }

    /// The same store writing its temp files into `tmp` instead (on the same filesystem, so renames stay
    /// atomic): a Slurm job uses its own, which no other run's clean-up touches.
    pub fn with_tmp(mut self, tmp: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(tmp).map_err(|e| StoreError::io(tmp, e))?;
        self.tmp = tmp.to_path_buf();
        Ok(self)
    }

    /// Path of blob `digest`.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(&digest[..2.min(digest.len())]).join(digest)
    }

    /// Puts a synced file into place as blob `digest`: `place` moves it to the path given (a temp file's
    /// persist, a rename), after its shard folder exists; the folder is synced after. Every writer ends here.
    fn install(&self, digest: &str, place: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), StoreError> {
        let to = self.path(digest);
        let parent = to.parent().expect("blob parent");
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        place(&to).map_err(|e| StoreError::io(&to, e))?;
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A temp file for a new blob ([`super::temp_file_in`]).
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        super::temp_file_in(&self.tmp).map_err(|e| StoreError::io(&self.tmp, e))
    }

    /// Writes `bytes` (temp file, fsync, rename, fsync dir) and returns the blake3 digest.
    /// A blob that already exists intact is not rewritten.
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        if self.check(&digest, bytes.len() as u64) == BlobState::Ok {
            return Ok(digest);
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes).map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| StoreError::io(tmp.path(), e))?;
        self.install(&digest, |to| tmp.persist(to).map(|_| ()).map_err(|e| e.error))?;
        Ok(digest)
    }

    /// Writes a blob from a stream (constant memory: hashed while copied to a temp file, fsynced, renamed);
    /// returns its digest and size.
    pub fn put_reader(&self, mut r: impl std::io::Read) -> Result<(String, u64), StoreError> {
        let mut tmp = self.temp_file()?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(StoreError::io(&self.tmp, e)),
                };
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(|e| StoreError::io(&self.tmp, e))?;
                size += n as u64;
            }
            w.flush().map_err(|e| StoreError::io(&self.tmp, e))?;
        }
        let digest = hasher.finalize().to_hex().to_string();
        if self.check(&digest, size) == BlobState::Ok {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(|e| StoreError::io(tmp.path(), e))?;
        self.install(&digest, |to| tmp.persist(to).map(|_| ()).map_err(|e| e.error))?;
        Ok((digest, size))
    }

    /// Writes a blob from a stream that should hold blob `digest` of `size` bytes (a copy from a shared cache):
    /// at most `size + 1` bytes are read, and the blob is installed only if they are exactly those. Returns
    /// whether it was (`false`: nothing kept).
    pub fn put_expected(&self, r: impl std::io::Read, digest: &str, size: u64) -> Result<bool, StoreError> {
        if self.check(digest, size) == BlobState::Ok {
            return Ok(true);
        }
        let mut tmp = self.temp_file()?;
        let mut hasher = blake3::Hasher::new();
        let copied = {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            let mut tee = TeeHash { w: &mut w, h: &mut hasher };
            let n = std::io::copy(&mut r.take(size.saturating_add(1)), &mut tee).map_err(|e| StoreError::io(&self.tmp, e))?;
            w.flush().map_err(|e| StoreError::io(&self.tmp, e))?;
            n
        };
        if copied != size || hasher.finalize().to_hex().as_str() != digest {
            return Ok(false);
        }
        tmp.as_file().sync_all().map_err(|e| StoreError::io(tmp.path(), e))?;
        self.install(digest, |to| tmp.persist(to).map(|_| ()).map_err(|e| e.error))?;
        Ok(true)
    }

    /// Takes file `path` (on the store's disk, e.g. a program's output in the store's scratch folder) as a blob
    /// without copying it: hashed by streaming (constant memory), fsynced, renamed into place. Falls back to a
    /// streamed copy where a rename cannot move it (another disk). Returns its digest and size.
    pub fn put_moved(&self, path: &Path) -> Result<(String, u64), StoreError> {
        use std::os::unix::fs::MetadataExt;
        // Only a regular file of one name is moved: a symlink, or a file with other hard links, is copied.
        let own = std::fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
        if !own.file_type().is_file() || own.nlink() > 1 {
            let f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
            return self.put_reader(f);
        }
        let mut f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut hasher = blake3::Hasher::new();
        let size = hasher.update_reader(&mut f).map_err(|e| StoreError::io(path, e))?.count();
        let digest = hasher.finalize().to_hex().to_string();
        if self.check(&digest, size) == BlobState::Ok {
            return Ok((digest, size));
        }
        f.sync_all().map_err(|e| StoreError::io(path, e))?;
        drop(f);
        if self.install(&digest, |to| std::fs::rename(path, to)).is_err() {
            // Another disk (or a rename refused): a streamed copy.
            let f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
            return self.put_reader(f);
        }
        Ok((digest, size))
    }

    /// Reads blob `digest` and checks its checksum.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::Missing { path: path.clone() }
            } else {
                StoreError::io(&path, e)
            }
        })?;
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            self.quarantine(digest);
            return Err(StoreError::Corrupt { path });
        }
        Ok(bytes)
    }

    /// Checks presence and size only, from metadata: what decides freshness. The store's own record vouches for
    /// the bytes (every blob is fsynced before its index entry is written); readers verify the checksum as they
    /// read ([`Self::read`], `InputArtifact::open`) and `polyflow verify` reads everything.
    pub fn present(&self, digest: &str, size: u64) -> BlobState {
        match std::fs::metadata(self.path(digest)) {
            // Moved aside by a reader that found it damaged: damaged, not lost.
            Err(_) if self.dir.parent().is_some_and(|r| r.join("damaged").join(digest).exists()) => BlobState::Corrupt,
            Err(_) => BlobState::Missing,
            Ok(m) if m.len() != size => BlobState::Corrupt,
            Ok(_) => BlobState::Ok,
        }
    }

    /// Moves a blob whose bytes do not match its digest into `damaged/` (kept for inspection; `gc` removes it),
    /// so that every artifact using it is stale from now on and is recomputed by the next run. Returns where it
    /// went.
    pub fn quarantine(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.parent()?.join("damaged");
        std::fs::create_dir_all(&dir).ok()?;
        let to = dir.join(digest);
        std::fs::rename(self.path(digest), &to).ok()?;
        Some(to)
    }

    /// Blobs moved aside by [`Self::quarantine`]: (path, size). Only the files of a real `damaged/` folder (a
    /// link there is not followed: `gc` removes what this lists).
    pub fn damaged(&self) -> Vec<(PathBuf, u64)> {
        let Some(dir) = self.dir.parent().map(|r| r.join("damaged")) else { return vec![] };
        super::fsafe::own_files(&dir).into_iter().map(|(p, m)| (p, m.len())).collect()
    }

    /// Checks presence, size and checksum of a blob without keeping its bytes (reads it all).
    pub fn check(&self, digest: &str, size: u64) -> BlobState {
        let path = self.path(digest);
        let Ok(meta) = std::fs::metadata(&path) else {
            return BlobState::Missing;
        };
        if meta.len() != size {
            return BlobState::Corrupt;
        }
        let mut hasher = blake3::Hasher::new();
        // Read through a buffer, not mmap: a mapped blob would count in the resident set of every run.
        match std::fs::File::open(&path).and_then(|f| hasher.update_reader(f).map(|_| ())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return BlobState::Unreadable,
            Err(_) => return BlobState::Missing,
        }
        if hasher.finalize().to_hex().as_str() == digest {
            BlobState::Ok
        } else {
            BlobState::Corrupt
        }
    }

    /// Every blob on disk: (digest, size). Only regular files with blob names in real shard folders: `gc`
    /// removes what this lists, so a link or a stranger's file in `blobs/` is never followed or deleted.
    pub fn list(&self) -> Vec<(String, u64)> {
        super::fsafe::blob_files(&self.dir).into_iter().map(|(d, size, _)| (d, size)).collect()
    }

    /// Deletes one blob.
    pub fn remove(&self, digest: &str) -> Result<(), StoreError> {
        let p = self.path(digest);
        std::fs::remove_file(&p).map_err(|e| StoreError::io(&p, e))
    }

    /// Removes leftover temp files of interrupted writes: only polyflow's own (`.tmp…`, the names
    /// [`super::temp_file_in`] gives), and only in a real folder (a `tmp` that is a link is not emptied).
    pub fn clean_tmp(&self) {
        for (f, _) in super::fsafe::own_files(&self.tmp) {
            if f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".tmp")) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// A writer that hashes what passes through it.
pub struct TeeHash<'a, W: Write + ?Sized> {
    /// Where the bytes go.
    pub w: &'a mut W,
    /// What hashes them.
    pub h: &'a mut blake3::Hasher,
}

impl<W: Write + ?Sized> Write for TeeHash<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
