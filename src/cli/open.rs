//! Opening what a command reads or writes: the store (read-only commands never create one), a shared cache,
//! the store's writer lock; the exit code of a run a signal stopped.

use super::*;

/// The store at `dir` for a command that only reads it (`status`, `plan`, `show`, `compare`, `report`, `verify`,
/// `gc`). A store that is not there is not created, so a mistyped `--store` or `POLYFLOW_STORE` leaves no folder
/// behind: the command reads an empty store in a temporary folder (returned with it, removed when dropped) and
/// says so on standard error.
pub fn read_store(dir: &std::path::Path) -> Result<(Store, Option<tempfile::TempDir>), CliError> {
    if Store::exists(dir) {
        return Ok((Store::open(dir)?, None));
    }
    // A file there is no store and never becomes one (`run` would fail on it): an error, not an empty store.
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::Other(
            format!("error: the store path {} is a file, not a folder (check `--store` or POLYFLOW_STORE)", dir.display()),
            exit::USAGE,
        ));
    }
    crate::cli::out::errln!(
        "note: there is no store at {} yet, so nothing is cached there (`polyflow run` creates it; check `--store` or POLYFLOW_STORE){}",
        dir.display(),
        store_above(dir)
            .map(|s| format!("; {} is one: run from its folder, or pass `--store {}`", s.display(), s.display()))
            .unwrap_or_default()
    );
    // Named by this process, so that one left behind by a command ended outright (SIGPIPE under `| head`, a
    // kill) is removed by the next that makes one.
    sweep_empty_stores();
    let empty = tempfile::Builder::new()
        .prefix(&format!("{EMPTY_STORE}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| {
            CliError::Other(
                format!(
                    "error: there is no store at {}, and no empty one to read can be made in {}: {e}\n  help: set TMPDIR to a folder you can write, or point --store at a store",
                    dir.display(),
                    std::env::temp_dir().display()
                ),
                exit::STORE,
            )
        })?;
    Ok((Store::open(empty.path())?, Some(empty)))
}

/// Where `dir` is a relative path that holds no store, the nearest folder above the working directory where that
/// path is one (`../.polyflow` for a command run from `pipelines/`), as a relative path: a command run from the
/// wrong folder would otherwise read an empty store, or `run` make a second one and compute everything again.
pub(super) fn store_above(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    if dir.is_absolute() || Store::exists(dir) {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let mut up = std::path::PathBuf::new();
    for a in cwd.ancestors().skip(1) {
        up.push("..");
        if Store::exists(&a.join(dir)) {
            return Some(up.join(dir));
        }
    }
    None
}

/// The store a command run from a subfolder of a project means, where it names none (`--store` and
/// `POLYFLOW_STORE` absent, the default `.polyflow` not in the working folder): the nearest `.polyflow` store in
/// a folder above, as git and DVC find their repository, but not beyond the project: the git repository holding
/// the working folder, or else the folder of the pipeline file (a command run in `src/` on `../pipeline.toml`).
/// Not from a folder git ignores (`target/`, a scratch folder: not part of the project), and not another user's
/// store. Said on standard error. `None` leaves the default (a run makes a new store there, and says where one is).
pub(super) fn discover_store(dir: &std::path::Path, pipeline: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let named = std::env::var_os("POLYFLOW_STORE").is_some()
        || std::env::args_os().any(|a| a.to_str().is_some_and(|a| a == "--store" || a.starts_with("--store=")));
    if named || dir != std::path::Path::new(".polyflow") || dir.exists() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let top = super::git::toplevel(&cwd);
    let in_git = top.is_some();
    let bound =
        top.or_else(|| pipeline.and_then(|p| cwd.join(p).parent().map(std::path::Path::to_path_buf)).and_then(|p| p.canonicalize().ok()))?;
    // The nearest store above (as `store_above` names it), then whether it may stand in: in the project, this
    // user's, and the working folder not one git ignores.
    let found = store_above(dir)?;
    let depth = found.components().filter(|c| matches!(c, std::path::Component::ParentDir)).count();
    let folder = cwd.ancestors().nth(depth)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mine = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(folder.join(dir)).is_ok_and(|m| m.uid() == me)
    };
    if !folder.starts_with(&bound) || !mine || (in_git && super::git::ignored(&cwd)) {
        return None;
    }
    crate::cli::out::errln!(
        "note: using the store at {} (the nearest above this folder, in {}; `--store .polyflow` makes one here)",
        found.display(),
        crate::spec::source::display_path(folder)
    );
    Some(found)
}

/// The name prefix of the empty stores read commands open where there is none: `polyflow-empty-store-PID-…`.
pub(super) const EMPTY_STORE: &str = "polyflow-empty-store-";

/// Removes the empty stores (of [`read_store`]) in the temporary folder whose process has ended, this user's.
pub(super) fn sweep_empty_stores() {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(EMPTY_STORE)).and_then(|r| r.split('-').next()?.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 checks for existence only.
        let ended = pid > 0 && unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ended && e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The shared cache in folder `dir`. A folder that is not there is an error for commands that only read the
/// cache (`create = false`: an unmounted or mistyped path is not an empty cache), and for `run` and `push` a new
/// cache, announced on standard error (it may be a mistyped path too).
///
/// A folder without the cache's `keys/` (an empty mount point) is no cache either: read commands never write
/// into it.
pub fn open_cache(dir: &std::path::Path, create: bool) -> Result<crate::store::DirCache, CliError> {
    if !dir.join("keys").is_dir() {
        let what = if dir.is_dir() { "an empty folder, or not a cache" } else { "no such folder" };
        if !create {
            return Err(CliError::Other(
                format!(
                    "error: there is no shared cache at {} ({what}: check `--cache`, POLYFLOW_CACHE or the pipeline's `[cache] dir`, and that its file system is mounted); this command does not create one",
                    dir.display()
                ),
                exit::USAGE,
            ));
        }
        crate::cli::out::errln!(
            "note: there was no shared cache at {} ({what}): starting an empty one there (check the path if you meant an existing one)",
            dir.display()
        );
    }
    Ok(crate::store::DirCache::open(dir)?)
}

/// Takes the store's writer lock: at once, or with `wait` as long as another run holds it, saying so first
/// (on stderr, and as a `{"event": "waiting", "holder": …}` line with `json`) so that a wait is never silent.
///
/// `stop`: the run's (interrupt, terminate, hang-up) flags, set by SIGINT/SIGTERM/SIGHUP; a stop while waiting
/// ends the command as an interrupted run does (exit 130, 143 or 129, with `--json` an `error` line), having
/// started nothing.
pub(crate) fn lock_store(
    store: &Store,
    wait: bool,
    json: bool,
    stop: Option<(&AtomicBool, &AtomicBool, &AtomicBool)>,
) -> Result<crate::store::WriterLock, CliError> {
    match store.lock(std::time::Duration::ZERO) {
        Err(StoreError::Locked { holder }) if wait => {
            out::errln!("{:>12} for the run holding the store to finish: {holder}", "Waiting");
            if json {
                out::line(&serde_json::json!({"event": "waiting", "holder": holder}).to_string());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(7 * 24 * 3600);
            loop {
                match store.lock(std::time::Duration::from_millis(200)) {
                    Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {}
                    r => return Ok(r?),
                }
                if let Some((interrupt, term, hup)) = stop {
                    if interrupt.load(Ordering::SeqCst) {
                        let code = stop_code(term, hup);
                        return Err(CliError::Other("stopped while waiting for the store: nothing ran".into(), code));
                    }
                }
            }
        }
        r => Ok(r?),
    }
}

/// The exit code of a run stopped by a signal: SIGHUP's, SIGTERM's, else Ctrl-C's.
pub(super) fn stop_code(term: &AtomicBool, hup: &AtomicBool) -> i32 {
    if hup.load(Ordering::SeqCst) {
        exit::HUNG_UP
    } else if term.load(Ordering::SeqCst) {
        exit::TERMINATED
    } else {
        exit::INTERRUPTED
    }
}
