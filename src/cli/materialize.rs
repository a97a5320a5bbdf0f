//! A run's exports copied into the project (checked writable first) and its tables printed.

use super::*;

/// Why `dest` cannot be written (replaced through a temporary file beside it) by this user, if it cannot: a
/// folder above it is a file; the folder it goes in (or, not there yet, the nearest folder above, where it would
/// be made) is not writable; or `dest` is another user's in a shared sticky folder (`/tmp`-like), which only they
/// may replace.
pub(super) fn export_blocker(dest: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let shown = |p: &Path| crate::spec::source::display_path(if p.as_os_str().is_empty() { Path::new(".") } else { p });
    let mut dir = dest.parent()?;
    loop {
        match std::fs::metadata(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Some(format!("but {} is a file, not a folder", shown(dir))),
            Err(_) => dir = dir.parent()?,
        }
    }
    let at = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let c = std::ffi::CString::new(at.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Some(format!("but {} cannot be written by this user", shown(at)));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (Ok(d), Ok(f)) = (std::fs::metadata(at), std::fs::symlink_metadata(dest)) else { return None };
    if me != 0 && d.mode() & libc::S_ISVTX != 0 && f.uid() != me && d.uid() != me {
        return Some(format!("but {} is another user's, in a shared folder where only its owner may replace it", shown(dest)));
    }
    None
}

/// Copies declared exports of the nodes the run left done into the project (atomically) and prints their
/// summary files (e.g. the rendered tables; with `json`, a `wrote` event per file instead of the tables). `made_with` is the pipeline file, the overrides the run used and
/// the nodes whose artifact the file alone gives too: the other nodes' exports say the overrides where their
/// format allows ([`export::mark`]), or, for a stage whose files are exported as written, the `Wrote` line does.
/// Returns the files written and how many of them were made with the overrides (marked, or said so).
pub(super) fn materialize(
    g: &Graph,
    store: &Store,
    opts: &RunOptions,
    summary: &exec::RunSummary,
    json: bool,
    made_with: &(String, Vec<String>, BTreeSet<String>),
) -> Result<(usize, usize), CliError> {
    let sel = g.select(&opts.targets)?;
    let wanted: Vec<usize> = sel
        .iter()
        .copied()
        .filter(|&i| !g.nodes[i].stage.exports(&g.nodes[i].params).is_empty() || g.nodes[i].stage.summary_file().is_some())
        .collect();
    // A destination that is a folder (a typo, an old layout) or in a folder this user cannot write is found
    // before any file is written: otherwise some of a table's files were updated and the rest not. The tables
    // are printed all the same: they are computed and cached.
    let mut refused = None;
    // Each destination once (a folder's files can land where another export goes), never a file the pipeline is
    // read from (a folder exported over the project's own files).
    let mut dests: BTreeMap<std::path::PathBuf, &str> = BTreeMap::new();
    let store_at = super::checks::resolved(&store.root);
    'check: for &i in &wanted {
        let n = &g.nodes[i];
        if !summary.artifacts.contains_key(&n.id) {
            continue;
        }
        let files = &summary.artifacts[&n.id].files;
        for (file, rel) in summary.artifacts[&n.id].exported_files(n.stage.exports(&n.params)) {
            let dest = n.base_dir.join(&rel);
            let shown = crate::spec::source::display_path(&dest);
            let at = super::checks::resolved(&dest);
            let why = if g.pipeline.sources.files.iter().any(|f| f.canonical == at) {
                Some("a file this pipeline is read from: nothing was exported (change `export`, and run again)".to_string())
            } else if at.starts_with(&store_at) {
                Some("inside the store: nothing was exported (export into the project, e.g. `results/`, and run again)".to_string())
            } else if let Some(other) = dests.insert(at, &n.id) {
                Some(format!("where an export of `{other}` goes too: nothing was exported (give each its own path, and run again)"))
            } else if let Err(why) = n.stage.export_allowed(&n.params, &n.base_dir, &dest) {
                Some(format!("but {why}; nothing was exported (change `export`, and run again)"))
            } else if !files.contains_key(&file) {
                let wrote: Vec<&str> = files.keys().map(String::as_str).take(10).collect();
                Some(format!(
                    "but its artifact has no `{file}` (it holds {}): nothing was exported (fix `export`, and run again; a program \
                     that writes it now is run again with `--force {}`)",
                    if wrote.is_empty() { "no file".to_string() } else { wrote.join(", ") },
                    n.id
                ))
            } else if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                Some(
                    "which is a folder: nothing was exported (the results are cached; move the folder, or change `export`, and run again)"
                        .to_string(),
                )
            } else {
                export_blocker(&dest)
                    .map(|why| format!("{why}: nothing was exported (the results are cached; fix that, or change `export`, and run again)"))
            };
            if let Some(why) = why {
                refused = Some(format!("error: `{}` exports to {shown}, {why}", n.id));
                break 'check;
            }
        }
    }
    if let Some(message) = refused {
        if !json {
            for &i in &wanted {
                let n = &g.nodes[i];
                let (Some(m), Some(f)) = (summary.artifacts.get(&n.id).cloned(), n.stage.summary_file()) else { continue };
                if let Ok(b) = crate::stage::InputArtifact::new(n.id.clone(), m, store.clone()).read(f) {
                    out::line(&String::from_utf8_lossy(&b));
                }
            }
        }
        return Err(CliError::Other(message, exit::USAGE));
    }
    let (mut wrote, mut marked, mut unchanged) = (0, 0, 0);
    for i in wanted {
        let n = &g.nodes[i];
        let Some(m) = summary.artifacts.get(&n.id).cloned() else { continue };
        let art = crate::stage::InputArtifact::new(n.id.clone(), m, store.clone());
        let overrides: &[String] = if made_with.2.contains(&n.id) { &[] } else { &made_with.1 };
        for (file, rel) in art.manifest.exported_files(n.stage.exports(&n.params)) {
            let dest = n.base_dir.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| CliError::Other(format!("error: {}: {e}", parent.display()), exit::STORE))?;
            }
            let with = if overrides.is_empty() {
                String::new()
            } else {
                format!(" (made with {}: not the pipeline file's own settings)", overrides.join(" "))
            };
            // As `>` would: through a symlink to its target, into a FIFO; a regular file replaced whole. A regular
            // file that holds these bytes already is left as it is (a run that computed nothing rewrites nothing).
            let same = if n.stage.export_marks() {
                let bytes = art.read(&file).map_err(|e| CliError::Other(format!("error: {e}"), exit::STORE))?;
                let before = bytes.len();
                let bytes = export::mark(&rel, bytes, &made_with.0, overrides);
                marked += usize::from(bytes.len() != before);
                if holds(&dest, &bytes) {
                    true
                } else {
                    super::out::write_through(&dest, &bytes)
                        .map_err(|e| CliError::Other(format!("error: {}: {e}", dest.display()), exit::STORE))?;
                    false
                }
            } else {
                // A program's file as it wrote it, streamed (a model's weights need not fit in memory); the line says
                // what the file cannot.
                marked += usize::from(!overrides.is_empty());
                if art.manifest.files.get(&file).is_some_and(|e| holds_blob(&dest, e)) {
                    true
                } else {
                    let mut from = art.open(&file).map_err(|e| CliError::Other(format!("error: {e}"), exit::STORE))?;
                    super::out::write_through_with(&dest, &mut |w| {
                        std::io::Seek::rewind(&mut from)?;
                        std::io::copy(&mut from, w).map(|_| ())
                    })
                    .map_err(|e| CliError::Other(format!("error: {}: {e}", dest.display()), exit::STORE))?;
                    false
                }
            };
            if same {
                unchanged += 1;
            } else {
                out::errln!("{:>12} {}{with}", "Wrote", crate::spec::source::display_path(&dest));
            }
            if json {
                let path = crate::spec::source::display_path(&dest);
                let made_with: Option<&[String]> = (!overrides.is_empty()).then_some(overrides);
                out::line(
                    &serde_json::json!({"event": "wrote", "id": n.id, "kind": n.stage.kind(), "path": path, "file": file, "made_with": made_with, "unchanged": same})
                        .to_string(),
                );
            }
            wrote += 1;
        }
        if let (false, Some(f)) = (json, n.stage.summary_file()) {
            if let Ok(b) = art.read(f) {
                // Everything ran: a reader gone by now loses only this copy of the table (the files are written).
                out::line(&String::from_utf8_lossy(&b));
            }
        }
    }
    if unchanged > 0 {
        out::errln!(
            "{:>12} {unchanged} exported file{} already held {} results: left as {}",
            "Unchanged",
            if unchanged == 1 { "" } else { "s" },
            if unchanged == 1 { "its" } else { "their" },
            if unchanged == 1 { "it was" } else { "they were" }
        );
    }
    Ok((wrote, marked))
}

/// Whether `dest` is a regular file (a symlink's target) holding `bytes`.
/// The blobs of the files a run is about to export that do not match their digests (a store restored from a CI
/// cache, a bad disk): (node, file, digest). Only those a destination does not hold already are read (a run that
/// changes nothing reads no blob; a table's files, which are small and marked, always).
pub(super) fn damaged_exports(g: &Graph, store: &Store, opts: &RunOptions, summary: &exec::RunSummary) -> Vec<(String, String, String)> {
    let Ok(sel) = g.select(&opts.targets) else { return vec![] };
    let mut out = vec![];
    for i in sel {
        let n = &g.nodes[i];
        let Some(m) = summary.artifacts.get(&n.id) else { continue };
        for (file, rel) in m.exported_files(n.stage.exports(&n.params)) {
            let Some(e) = m.files.get(&file) else { continue };
            if !n.stage.export_marks() && holds_blob(&n.base_dir.join(&rel), e) {
                continue;
            }
            if store.blobs.check(&e.digest, e.size) == crate::store::BlobState::Corrupt {
                out.push((n.id.clone(), file, e.digest.clone()));
            }
        }
    }
    out
}

fn holds(dest: &Path, bytes: &[u8]) -> bool {
    std::fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) && std::fs::read(dest).is_ok_and(|b| b == bytes)
}

/// Whether `dest` is a regular file (a symlink's target) holding the blob `e` (its size, then its digest).
fn holds_blob(dest: &Path, e: &crate::store::FileEntry) -> bool {
    if !std::fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == e.size) {
        return false;
    }
    let mut h = blake3::Hasher::new();
    std::fs::File::open(dest).and_then(|mut f| std::io::copy(&mut f, &mut h)).is_ok() && h.finalize().to_hex().as_str() == e.digest
}
