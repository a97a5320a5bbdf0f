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
        let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| {
            if super::is_not_writable(&e) {
                let what = if path.exists() { path.clone() } else { root.to_path_buf() };
                StoreError::NotWritable {
                    root: root.to_path_buf(),
                    why: format!("{e}; {}", super::owner_and_mode(&what)),
                    advice: super::not_writable_advice(root, &what, &e),
                }
            } else {
                StoreError::io(&path, e)
            }
        })?;
        let start = std::time::Instant::now();
        loop {
            match FileExt::try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) | Err(_) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    // The holder's description is replaced atomically (below), so it is never half-written; it can
                    // be absent while the holder is starting up.
                    let holder = std::fs::read_to_string(root.join("writer.info")).unwrap_or_default();
                    let holder = match holder.trim() {
                        "" => "another process (starting up)".to_string(),
                        h => readable(h),
                    };
                    return Err(StoreError::Locked { holder });
                }
            }
        }
        let info = format!(
            "pid {} ({}) since unix time {}",
            std::process::id(),
            std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
            crate::text::now_secs()
        );
        // Written aside and renamed over the old description: a refused process reads the old or the new one,
        // never an empty or partial file.
        let tmp = root.join(format!("writer.info.{}", std::process::id()));
        if std::fs::write(&tmp, info).is_ok() {
            let _ = std::fs::rename(&tmp, root.join("writer.info"));
        }
        Ok(WriterLock { file })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

/// The holder's description with its start time as how long ago (`pid 42 (polyflow run p.toml), started 3 min
/// 5 s ago`).
fn readable(holder: &str) -> String {
    const SINCE: &str = " since unix time ";
    let Some((head, t)) = holder.split_once(SINCE) else { return holder.to_string() };
    let Ok(t) = t.trim().parse::<u64>() else { return holder.to_string() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(t);
    let s = now.saturating_sub(t);
    let ago = match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    };
    format!("{head}, started {ago} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_holder_and_never_an_empty_one() {
        let d = tempfile::tempdir().unwrap();
        let held = WriterLock::acquire(d.path(), Duration::ZERO).unwrap();
        let info = std::fs::read_to_string(d.path().join("writer.info")).unwrap();
        assert!(info.starts_with(&format!("pid {}", std::process::id())), "{info}");
        let Err(StoreError::Locked { holder }) = WriterLock::acquire(d.path(), Duration::ZERO) else { panic!("not refused") };
        assert_eq!(holder, readable(info.trim()));
        assert!(holder.contains(", started 0 s ago") || holder.contains(", started 1 s ago"), "{holder}");
        // A holder that has not described itself yet is still named as something.
        std::fs::write(d.path().join("writer.info"), "").unwrap();
        let Err(StoreError::Locked { holder }) = WriterLock::acquire(d.path(), Duration::ZERO) else { panic!("not refused") };
        assert_eq!(holder, "another process (starting up)");
        drop(held);
        assert!(WriterLock::acquire(d.path(), Duration::ZERO).is_ok());
        assert!(!std::fs::read_dir(d.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("writer.info.")));
    }

    #[test]
    fn the_holders_start_reads_as_how_long_ago() {
        let now = crate::text::now_secs();
        let h = readable(&format!("pid 42 (polyflow run p.toml) since unix time {}", now - 185));
        assert!(h == "pid 42 (polyflow run p.toml), started 3 min 5 s ago" || h.ends_with("3 min 6 s ago"), "{h}");
        assert_eq!(readable("pid 1 (x)"), "pid 1 (x)");
    }
}
