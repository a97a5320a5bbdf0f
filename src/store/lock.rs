//! One writer per store: an advisory lock on `writer.lock`, with the holder's description in `writer.info`.

use super::StoreError;
use fs4::fs_std::FileExt;
use std::path::Path;
use std::time::Duration;

/// Held while a `run` writes to the store; released on drop (or by the OS if the process dies).
pub struct WriterLock {
    file: std::fs::File,
}

impl WriterLock {
    /// Takes the writer lock; waits up to `wait` for another holder, then fails naming it.
    pub fn acquire(root: &Path, wait: Duration) -> Result<WriterLock, StoreError> {
        let path = root.join("writer.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let start = std::time::Instant::now();
        loop {
            match FileExt::try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) | Err(_) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let holder = std::fs::read_to_string(root.join("writer.info")).unwrap_or_else(|_| "another process".into());
                    return Err(StoreError::Locked { holder: holder.trim().to_string() });
                }
            }
        }
        let info = format!(
            "pid {} ({}) since unix time {}",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" "),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        );
        let _ = std::fs::write(root.join("writer.info"), info);
        Ok(WriterLock { file })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}
