//! `polyflow report`: the HTML page, written through links as `>` would.

use super::*;

/// `report`: the HTML page of the pipeline as `status` sees the store (nothing runs).
pub(super) fn cmd_report(a: HtmlReportArgs, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&a.common, reg)?;
    let sel = g.select(&[])?;
    let (store, _empty) = read_store(&a.common.store)?;
    let states = {
        let index = store.index_read()?;
        exec::assess::assess_all(&g, &sel, &store, &index, &env_of(&g, &a.common.backend), &|_| false)
    };
    let page = crate::report::render(
        &g,
        &sel,
        &states,
        &store,
        &spec::source::display_path(&a.common.file),
        &a.common.overrides(),
        &a.common.run_command(&[]),
    );
    if a.output == std::path::Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(page.as_bytes()).map_err(|e| CliError::Other(format!("error: stdout: {e}"), exit::STORE))?;
        return Ok(exit::OK);
    }
    write_through(&a.output, page.as_bytes()).map_err(|e| CliError::Other(format!("error: {}: {e}", a.output.display()), exit::STORE))?;
    crate::cli::out::errln!("{:>12} {}", "Wrote", spec::source::display_path(&a.output));
    Ok(exit::OK)
}

/// Writes `bytes` to `path` as a user means it: a regular file (or a new one) is replaced whole through a
/// temporary file beside it and a rename, so a reader never sees half a page; a symlink is followed (its target
/// is replaced, the link kept); anything else (a device, a pipe) is written to directly, never replaced.
pub(super) fn write_through(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut target = path.to_path_buf();
    // Follow links, as `>` does (a bounded number of hops: a loop is the OS's error when written).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&target)?;
                target = target.parent().map(|p| p.join(&to)).unwrap_or(to);
            }
            _ => break,
        }
    }
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&target)?;
            f.write_all(bytes)?;
            f.flush()
        }
        _ => crate::store::write_atomic(&target, bytes, true),
    }
}
