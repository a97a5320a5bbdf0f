//! File-system checks for folders other people can write (a group-shared store, a team's shared cache): what
//! the store walks, removes or reads must be its own plain folders and regular files. A symbolic link planted
//! where a folder of the store belongs (`tmp/`, `damaged/`, a blob shard) would otherwise lead a clean-up to
//! delete files elsewhere, and a blob that is a link, a FIFO or a device would copy a file from elsewhere into
//! the store, hang a reader, or fill the disk.

use std::fs::File;
use std::path::Path;

/// Whether `p` is a folder itself, not a symbolic link to one.
pub fn real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// What kind of file `ft` is, in words (for messages).
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "a regular file"
    }
}

/// Opens `p` for reading only if it is a regular file itself: not a symbolic link (`O_NOFOLLOW`), and not a
/// FIFO or device (opened without blocking, then checked). Returns the file and its size.
pub fn open_regular(p: &Path) -> std::io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p).map_err(|e| {
        // `O_NOFOLLOW` on a link fails with ELOOP, which would read as "too many levels of symbolic links".
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other("not a regular file but a symbolic link (refused: it could point anywhere)")
        } else {
            e
        }
    })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(format!("not a regular file but {}", kind_of(m.file_type()))));
    }
    Ok((f, m.len()))
}

/// Whether `s` is a blake3 digest as the store writes it: 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` in shard folder `shard` is a blob's name: a digest ([`is_hex64`]) starting with the shard's two.
pub fn is_blob_name(shard: &str, name: &str) -> bool {
    is_hex64(name) && name.starts_with(shard)
}

/// The regular files of blob folder `dir` (`dir/ab/<hex>`): only real shard folders, only files with blob
/// names; anything else there is left alone. Returns (digest, size, modified time).
pub fn blob_files(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for sub in rd.flatten() {
        let shard = sub.file_name().to_string_lossy().to_string();
        if shard.len() != 2 || !sub.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let Ok(m) = std::fs::symlink_metadata(f.path()) else { continue };
            if is_blob_name(&shard, &name) && m.is_file() {
                out.push((name, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The entries of a real folder `dir` that are regular files or links themselves (never what a link points to;
/// removing a link removes the link), for clean-ups. A `dir` that is a link, or missing, has none.
pub fn own_files(dir: &Path) -> Vec<(std::path::PathBuf, std::fs::Metadata)> {
    if !real_dir(dir) {
        return vec![];
    }
    let mut out = vec![];
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = std::fs::symlink_metadata(f.path()) {
            if !m.is_dir() {
                out.push((f.path(), m));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_and_special_files_are_refused_and_never_walked_into() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious.txt"), "keep").unwrap();
        let secret = outside.join("secret");
        std::fs::write(&secret, "s").unwrap();
        // A link where a folder belongs has no files; a link file is listed as itself.
        symlink(&outside, t.path().join("tmp")).unwrap();
        assert!(!real_dir(&t.path().join("tmp")) && own_files(&t.path().join("tmp")).is_empty());
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&secret, real.join("l")).unwrap();
        let files = own_files(&real);
        assert_eq!(files.len(), 1);
        assert!(files[0].1.file_type().is_symlink());
        // Opening: a link, a folder and a FIFO are refused at once (no hang), with what they are.
        let err = open_regular(&real.join("l")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(open_regular(&outside).unwrap_err().to_string().contains("a folder"));
        let fifo = real.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_regular(&fifo).unwrap_err().to_string().contains("a FIFO"));
        assert_eq!(open_regular(&secret).unwrap().1, 1);
        // Blob folders: only real shards, only blob names.
        let blobs = t.path().join("blobs");
        let d = "ab".to_string() + &"0".repeat(62);
        std::fs::create_dir_all(blobs.join("ab")).unwrap();
        std::fs::write(blobs.join("ab").join(&d), "x").unwrap();
        std::fs::write(blobs.join("ab").join("README.md"), "x").unwrap();
        symlink(&outside, blobs.join("pr")).unwrap();
        symlink(&secret, blobs.join("ab").join("ab".to_string() + &"1".repeat(62))).unwrap();
        let listed: Vec<String> = blob_files(&blobs).into_iter().map(|b| b.0).collect();
        assert_eq!(listed, [d]);
        assert!(outside.join("precious.txt").exists());
    }
}
