//! `polyflow run`: lock the store, run what is stale, report and export.

use super::*;

pub(super) fn cmd_run(a: RunArgs, reg: &Registry, verbose: bool) -> Result<i32, CliError> {
    let RunArgs { plan: a, dry_run: _, wait, keep_jobs, no_publish, retries } = a;
    let g = load_graph(&a.common, reg)?;
    forced_nodes(&g, &a.nodes, &a.force)?;
    preflight(&g, &a.common, &a.nodes, &env_of(&g, &a.common.backend))?;
    pipeline_notes(&g);
    // A new store where one is above (a run from `pipelines/` of a project whose store is at its root): said, as
    // everything is then computed again.
    if let Some(above) = super::open::store_above(&a.common.store) {
        out::errln!(
            "{:>12} there is no store at {}: this run makes one and computes what it needs; {} is one (run from its folder, or pass `--store {}`)",
            "Note",
            a.common.store.display(),
            above.display(),
            above.display()
        );
    }
    let store = Store::open(&a.common.store)?;
    let executor = executor_kind(a.executor.as_deref());
    checks::note_capped_cpus(&g, &a.nodes, a.jobs, executor);
    // Ctrl-C / SIGTERM stop the run cleanly: it says what was running (not cached) and what stays cached, and
    // a Slurm coordinator cancels (or keeps) its jobs and records them. Installed before waiting for the store.
    // A hang-up (its terminal closed, an ssh session dropped) stops it as SIGTERM does: the programs of `command`
    // nodes run in process groups of their own, which the terminal's hang-up does not reach.
    let flag = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    let hook = |sig, f: &Arc<AtomicBool>| {
        signal_hook::flag::register(sig, f.clone())
            .map(|_| ())
            .map_err(|e| CliError::Other(format!("error: cannot install the signal handler: {e}"), exit::USAGE))
    };
    // A second signal while stopping ends the process at once (a second Ctrl-C is a hard stop), but not one within
    // half a second of the first: that is the same stop delivered twice (`timeout -s INT` signals the program and
    // then its process group; `kill -INT` of a job's group and its leader), which must not cut the summary off.
    for (sig, code) in [
        (signal_hook::consts::SIGINT, exit::INTERRUPTED),
        (signal_hook::consts::SIGTERM, exit::TERMINATED),
        (signal_hook::consts::SIGHUP, exit::HUNG_UP),
    ] {
        hard_stop_on_second(sig, code, flag.clone())
            .map_err(|e| CliError::Other(format!("error: cannot install the signal handler: {e}"), exit::USAGE))?;
    }
    hook(signal_hook::consts::SIGINT, &flag)?;
    hook(signal_hook::consts::SIGTERM, &term)?;
    hook(signal_hook::consts::SIGTERM, &flag)?;
    hook(signal_hook::consts::SIGHUP, &hup)?;
    hook(signal_hook::consts::SIGHUP, &flag)?;
    let _lock = lock_store(&store, wait, a.json, Some((&flag, &term, &hup)))?;
    let opts = RunOptions {
        targets: a.nodes,
        force: a.force,
        force_all: a.force_all,
        jobs: a.jobs,
        devices: a.devices,
        env: env_of(&g, &a.common.backend),
        executor,
        keep_jobs,
        retries,
        interrupt: vec![],
        cache: None,
        publish: false,
        notes: BTreeMap::from([
            (exec::earlier::SETTINGS.to_string(), a.common.settings()),
            (exec::earlier::PROFILE.to_string(), a.common.profile.clone().unwrap_or_default()),
        ]),
    };
    let mut opts = opts;
    // The git checkout the run is made on (notes, never in a key): `gc` keeps each live branch's latest runs.
    let dir = a.common.file.parent().unwrap_or(Path::new("."));
    if let Some((branch, commit)) = super::git::head(dir) {
        opts.notes.insert(super::git::COMMIT.to_string(), commit);
        // Exported files a run rewrites are outputs, not edits of what ran.
        let outputs: Vec<PathBuf> = g
            .nodes
            .iter()
            .flat_map(|n| n.stage.exports(&n.params).into_iter().map(|(_, rel)| super::checks::resolved(&n.base_dir.join(rel))))
            .collect();
        if super::git::dirty(dir, &outputs) {
            opts.notes.insert(super::git::DIRTY.to_string(), "true".to_string());
        }
        if let Some(b) = branch {
            opts.notes.insert(super::git::BRANCH.to_string(), b);
        }
    }
    if let Some((dir, publish)) = a.common.cache_dir(&g) {
        let publish = publish && !no_publish;
        if !publish && !dir.join("keys").is_dir() {
            // A run that only fetches makes no cache where there is none (a mistyped path, a cache not filled yet).
            out::errln!(
                "note: there is no shared cache at {}, and this run publishes nothing (`--no-publish` or the pipeline's \
                 `publish = false`): nothing is fetched, and no cache is made there",
                spec::source::display_path(&dir)
            );
        } else {
            opts.cache = Some(Arc::new(super::open::open_cache(&dir, true)?));
            opts.publish = publish;
        }
    }
    // A reader of the JSON lines that goes away stops the run as SIGTERM would, with a flag of its own: the
    // signal handlers' (a second signal ends the process at once) stays down until a signal comes.
    let pipe = Arc::new(AtomicBool::new(false));
    opts.interrupt = vec![flag, pipe.clone()];
    let rep = report::Reporter::new(a.json, verbose).stopping(Some(pipe));
    let sink = |e: &exec::Event| rep.event(e);
    let run = || -> Result<exec::RunSummary, CliError> {
        match exec::run(&g, &store, &opts, &sink) {
            Err(e @ exec::ExecError::Interrupted { .. }) if term.load(Ordering::SeqCst) || hup.load(Ordering::SeqCst) => {
                Err(CliError::Other(format!("{e}"), stop_code(&term, &hup)))
            }
            Err(e @ exec::ExecError::Interrupted { .. }) if out::closed() => {
                Err(CliError::Other(format!("standard output was closed by its reader: {e}"), exit::PIPE_CLOSED))
            }
            r => Ok(r?),
        }
    };
    let mut summary = run()?;
    // A damaged blob among the files to export: moved aside (its node is then stale) and computed again, before
    // any file is written, as a reader of an input does.
    let damaged = super::materialize::damaged_exports(&g, &store, &opts, &summary);
    if !damaged.is_empty() {
        for (id, file, digest) in &damaged {
            store.blobs.quarantine(digest);
            out::errln!("{:>12} `{file}` of `{id}` in the store does not match its checksum: moved into the store's damaged/, computing `{id}` again", "Damaged");
        }
        summary = run()?;
    }
    let overrides = a.common.overrides();
    // A run on a git branch records what its nodes' results are there (under its profile and `--config` files: a
    // paper run names its data so), so that `gc` on another branch keeps them; not a `--set` experiment's.
    if let (Some(branch), true) = (opts.notes.get(super::git::BRANCH), a.common.set.is_empty()) {
        let pin = super::gc::branch_pin(branch, &a.common.settings());
        if let Err(e) = store.index().and_then(|ix| ix.pin(&pin, &summary.keys)) {
            out::errln!("{:>12} could not record this branch's results for `gc` ({e})", "Note");
        }
    }
    let own = if overrides.is_empty() { BTreeSet::new() } else { export::same_without_overrides(&a.common, reg, &summary) };
    let made_with = (spec::source::display_path(&a.common.file), overrides.clone(), own);
    let (wrote, marked) = materialize(&g, &store, &opts, &summary, a.json, &made_with)?;
    if marked > 0 {
        // The Markdown, LaTeX and JSON exports say it too (CSV cannot).
        out::errln!("{:>12} the files written come from the pipeline with {}, not from the file as it is", "Note", overrides.join(" "));
    } else if wrote > 0 && !overrides.is_empty() {
        out::errln!("{:>12} the overrides change none of the files written: they are the pipeline file's own results", "Note");
    }
    // Failures that are the store's (4) or the user's input's (2) end the run as errors of that code, so that
    // `--json` gives the error line it gives for any exit 2 or 4; other failures are exit 1.
    let of = |class: FailureClass| summary.failed.iter().filter(|(_, c)| *c == class).map(|(id, _)| id.as_str()).collect::<Vec<_>>();
    let (store_failed, input_failed) = (of(FailureClass::Store), of(FailureClass::Input));
    // Where the failures were said: the text's `Failed` lines, or the JSON's `failed` events.
    let above = if a.json { "the `failed` events above" } else { "`Failed` above" };
    if !store_failed.is_empty() {
        Err(CliError::Other(
            format!("error: the store could not be written or read for {} (see {above})", store_failed.join(", ")),
            exit::STORE,
        ))
    } else if !input_failed.is_empty() {
        Err(CliError::Other(
            format!(
                "error: {} failed on {} input or settings (see {above}: fix the pipeline or the data)",
                input_failed.join(", "),
                if input_failed.len() == 1 { "its" } else { "their" }
            ),
            exit::USAGE,
        ))
    } else if summary.failed.is_empty() {
        Ok(exit::OK)
    } else {
        Ok(exit::NODE_FAILED)
    }
}

/// When the first stop signal came (milliseconds of `CLOCK_MONOTONIC`), 0 before one.
static FIRST_STOP_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long after the first stop signal a second one ends the process at once.
const HARD_STOP_AFTER_MS: u64 = 500;

/// `CLOCK_MONOTONIC` in milliseconds (`clock_gettime` is async-signal-safe).
fn monotonic_ms() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000 + 1
}

/// Signal `sig` ends the process with `code` when `stopping` is already set (registered before the handler that sets
/// it) and the first stop signal came at least [`HARD_STOP_AFTER_MS`] before; the first one's time is recorded.
fn hard_stop_on_second(sig: i32, code: i32, stopping: Arc<AtomicBool>) -> std::io::Result<()> {
    let action = move || {
        let now = monotonic_ms();
        if !stopping.load(Ordering::SeqCst) {
            let _ = FIRST_STOP_MS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        let first = FIRST_STOP_MS.load(Ordering::SeqCst);
        if first != 0 && now.saturating_sub(first) >= HARD_STOP_AFTER_MS {
            signal_hook::low_level::exit(code);
        }
    };
    // SAFETY: the action only reads the clock, loads and stores atomics and calls `_exit`: all async-signal-safe.
    unsafe { signal_hook::low_level::register(sig, action) }.map(|_| ())
}
