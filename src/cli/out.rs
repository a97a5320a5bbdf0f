//! Standard output for the commands that compute or write (`run`, `gc`, `push`, `params`), which keep SIGPIPE
//! ignored so that a reader going away cannot end them between two steps of their work (`main.rs`). A line
//! written after the reader has gone (`polyflow run … --json | head -3`) is dropped instead of panicking, and
//! the closing is remembered: `run` then stops as on SIGTERM (what finished stays cached) and exits with
//! [`super::exit::PIPE_CLOSED`]; the others finish their work quietly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output failed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Set by a command whose standard output is one JSON document (`gc --json`, `verify --json`): its text lines
/// ([`outln!`]) go to standard error.
static TEXT_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// From now on, [`outln!`]'s lines go to standard error: standard output is the command's JSON alone.
pub fn text_on_stderr() {
    TEXT_ON_STDERR.store(true, Ordering::Relaxed);
}

/// A text line of a command's report: [`line`], or on standard error after [`text_on_stderr`] (`true` then).
pub fn text(s: &str) -> bool {
    if TEXT_ON_STDERR.load(Ordering::Relaxed) {
        err_line(s);
        return true;
    }
    line(s)
}

/// Writes `s` and a newline to standard output (flushed, so that a reader sees each line as it comes).
/// Returns `false` when standard output is closed (this write failed, or an earlier one did).
pub fn line(s: &str) -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = std::io::stdout().lock();
    let ok = writeln!(out, "{s}").and_then(|()| out.flush()).is_ok();
    if !ok {
        CLOSED.store(true, Ordering::Relaxed);
    }
    ok
}

/// Whether a write to standard output has failed (its reader went away).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Writes `s` and a newline to standard error, dropping it when standard error is closed (`run … 2>&1 | head`:
/// `eprintln!` would panic there, SIGPIPE being ignored).
pub fn err_line(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{s}");
}

/// `eprintln!` through [`err_line`]: a closed standard error drops the line.
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::cli::out::err_line(&format!($($t)*))
    };
}
pub(crate) use errln;

/// `println!` through [`text`]: a closed standard output drops the line (and a JSON command's go to stderr).
macro_rules! outln {
    () => {
        $crate::cli::out::text("")
    };
    ($($t:tt)*) => {
        $crate::cli::out::text(&format!($($t)*))
    };
}
pub(crate) use outln;

/// Whether standard output may be coloured: a terminal, no `NO_COLOR` (<https://no-color.org>), not `TERM=dumb`.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Fits a table to the terminal it is printed on: where the terminal reports no width (0 columns, as some CI
/// and container terminals do, which squeezed a table to a character a column), `COLUMNS` if set, else no
/// wrapping at all.
pub fn fit(t: &mut comfy_table::Table) {
    if t.width().is_some_and(|w| w > 0) {
        return;
    }
    match std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<u16>().ok()).filter(|&c| c > 0) {
        Some(c) => {
            t.set_width(c);
        }
        None => {
            t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
        }
    }
}

/// A log event's text, written as one piece when the logger is done with it, through
/// [`crate::stage::children::write_output`]: to standard error, or above `run`'s progress bars while they are
/// drawn (a line written beside them was erased by their next redraw).
#[derive(Default)]
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            crate::stage::children::write_output(&self.0);
        }
    }
}

/// Writes `bytes` to `path` as a user means it: a regular file (or a new one) is replaced whole through a
/// temporary file beside it and a rename, so a reader never sees half a page; a symlink is followed (its target
/// is replaced, the link kept); anything else (a device, a pipe) is written to directly, never replaced.
pub fn write_through(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_through_with(path, &mut |w| w.write_all(bytes))
}

/// [`write_through`] with the content streamed by `write` (a large file never held in memory).
pub fn write_through_with(
    path: &std::path::Path,
    write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
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
            write(&mut f)?;
            f.flush()
        }
        _ => crate::store::write_atomic_with(&target, true, |f| write(f)),
    }
}
