//! Running a `command` node's program: its folders and environment, its output followed, what it wrote stored.

use super::deps::collect_files_linked;
use super::output::OutputTail;
use super::{parse_metrics, CommandParams, KEPT};
use crate::stage::{parse, StageCtx, StageError};
use std::path::{Path, PathBuf};

/// Runs the program of the node `ctx` holds and stores what it wrote into `$POLYFLOW_OUT`.
pub(super) fn run(ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
    let p = parse::<CommandParams>(ctx.params)?;
    let argv = super::params::substitute(&p.run, &p.params).map_err(|e| StageError::input(format!("node `{}`: {e}", ctx.id)))?;
    if argv.is_empty() {
        return Err(StageError::input(format!("node `{}`: `run` is empty", ctx.id)));
    }
    // In the node's scratch folder in the store (removed when the node commits; an interrupted run's is
    // cleared by the next run of the node, or by `gc`), not in /tmp, where a killed run would leave it.
    // Absolute: the program runs in the pipeline file's folder, not in polyflow's.
    let work =
        std::path::absolute(ctx.scratch.join("command")).map_err(|e| StageError::failed(format!("{}: {e}", ctx.scratch.display())))?;
    // The scratch folder is the store's: failing to make it is a store error (exit 4), as a full disk is.
    let io = |e: std::io::Error| {
        if crate::store::is_not_writable(&e) {
            StageError::store(format!("{}: {e} ({})", work.display(), crate::store::owner_and_mode(&ctx.scratch)), false)
        } else {
            StageError::store(format!("{}: {e}", work.display()), crate::store::is_disk_full(&e))
        }
    };
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(io)?;
    }
    let out_dir = work.join("out");
    let in_dir = work.join("in");
    std::fs::create_dir_all(&out_dir).map_err(io)?;
    std::fs::create_dir_all(&in_dir).map_err(io)?;
    // The program's own folder across attempts of this key (DVC's `persist`): what a failed or interrupted
    // attempt left there (a training script's checkpoint) is there for the next; removed with the scratch
    // folder once the node commits.
    let keep = std::path::absolute(ctx.scratch.join(KEPT)).map_err(io)?;
    std::fs::create_dir_all(&keep).map_err(io)?;
    let params_file = work.join("params.json");
    let params_json = serde_json::to_vec_pretty(&p.params).expect("a JSON map serializes");
    std::fs::write(&params_file, params_json).map_err(io)?;
    // `input_files`: the files the program reads (a sweep's metrics, not its checkpoints); each input must hold one.
    let wanted: Vec<glob::Pattern> = p.input_files.iter().filter_map(|f| glob::Pattern::new(f).ok()).collect();
    let taken = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w.matches(name));
    // Checked for every input before any file is copied.
    if let Some(a) = ctx.inputs.values().flatten().find(|a| !a.manifest.files.is_empty() && !a.manifest.files.keys().any(|n| taken(n))) {
        let held: Vec<&str> = a.manifest.files.keys().map(String::as_str).take(10).collect();
        return Err(StageError::input(format!(
            "node `{}`: input `{}` has no file `input_files` takes ({}); it holds {}",
            ctx.id,
            a.id,
            p.input_files.join(", "),
            held.join(", ")
        )));
    }
    for (slot, arts) in &ctx.inputs {
        for a in arts {
            let d = in_dir.join(slot).join(&a.id);
            std::fs::create_dir_all(&d).map_err(|e| StageError::failed(e.to_string()))?;
            for name in a.manifest.files.keys().filter(|n| taken(n)) {
                // Names keep their folders (`sub/x.txt` from `$POLYFLOW_OUT/sub/x.txt`).
                let to = d.join(name);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| StageError::failed(format!("{}: {e}", parent.display())))?;
                }
                // Streamed (constant memory; a copy-on-write clone where the file system makes one): a program
                // may change its inputs in place, so never the store's own blob.
                a.copy_to(name, &to)?;
            }
        }
    }
    // Its standard output goes to polyflow's standard error: standard output is `--json`'s event stream.
    let mut cmd = std::process::Command::new(&argv[0]);
    // Python writes to a pipe in 8 KiB blocks: a training script's progress would show only when it ends (or
    // not at all, killed). Unbuffered as in a terminal, unless the user's environment says otherwise.
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        cmd.env("PYTHONUNBUFFERED", "1");
    }
    // An imported module's bytecode cache (`__pycache__/`) written into a folder that `deps` lists would change
    // that folder's digest: the node would be stale again after every run. Not written, unless the user's
    // environment says otherwise.
    if std::env::var_os("PYTHONDONTWRITEBYTECODE").is_none() {
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    }
    // The CPU threads the node holds (`resources.cpus`, 1 by default: its slots of `-j`), for the usual
    // thread pools (OpenMP, and through it NumPy's BLAS, PyTorch's intra-op pool): without it each of the
    // nodes run side by side starts one thread per core. The user's own setting of any of them wins for all
    // (MKL and OpenBLAS follow OMP_NUM_THREADS when theirs is unset).
    let pools = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"];
    if pools.iter().all(|v| std::env::var_os(v).is_none()) {
        for var in pools {
            cmd.env(var, ctx.threads.max(1).to_string());
        }
    }
    // Standard output and error into one pipe, as `2>&1` does: their lines reach the tail in the order the
    // program wrote them (two pipes read by two threads could put a traceback's last line before the
    // output printed just ahead of it).
    let (reader, writer) = std::io::pipe().map_err(|e| StageError::failed(format!("node `{}`: cannot make a pipe: {e}", ctx.id)))?;
    let writer2 = writer.try_clone().map_err(|e| StageError::failed(format!("node `{}`: cannot make a pipe: {e}", ctx.id)))?;
    let program = crate::stage::children::spawn(
        cmd.args(&argv[1..])
            .current_dir(ctx.base_dir)
            .env("POLYFLOW_OUT", relative_to(&out_dir, ctx.base_dir))
            .env("POLYFLOW_IN", relative_to(&in_dir, ctx.base_dir))
            .env("POLYFLOW_SEED", ctx.seed().to_string())
            .env("POLYFLOW_PARAMS", relative_to(&params_file, ctx.base_dir))
            .env("POLYFLOW_SCRATCH", relative_to(&keep, ctx.base_dir))
            .env("POLYFLOW_THREADS", ctx.threads.max(1).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(writer2),
    );
    // The command holds this process's ends of the pipe: closed now, so that the reader sees the end when
    // the program (and whatever it started) has closed its own.
    drop(cmd);
    let program = program.map_err(|e| StageError::input(format!("node `{}`: cannot start `{}`: {e}", ctx.id, argv[0])))?;
    // Its whole output kept in the store where the run has a place for it (the attempt's log, moved to the run's
    // or the failure's as it ends): the failure record keeps only the last lines, and a training script's log is
    // worth reading after it succeeded too.
    let log = ctx.output_log.as_ref().and_then(|p| {
        let made = p.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::File::create(p));
        made.map_err(|e| ctx.note(format!("its output is not kept ({}: {e})", p.display()))).ok()
    });
    let tail = OutputTail::follow(reader, format!("[{}] ", ctx.id), log);
    let ended = program.wait().map_err(|e| StageError::failed(format!("node `{}`: waiting for `{}`: {e}", ctx.id, argv[0])))?;
    let status = ended.status;
    let last = tail.finish();
    if ended.leftovers {
        ctx.note(format!(
            "`{}` ended leaving processes it started running; they were killed (SIGKILL): a node's work ends \
             with its program, so wait for what it starts (`wait` in a shell)",
            argv[0]
        ));
    }
    if !status.success() {
        // A command does not resume: its copy of the inputs and partial outputs go now.
        let full = disk_full(&out_dir);
        let _ = std::fs::remove_dir_all(&work);
        // "exited with code 3" / "was killed by signal 9 (SIGKILL)", not Rust's "exit status: 3".
        let how = {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
                _ => format!("ended with {status}"),
            }
        };
        let mut what = format!("node `{}`: `{}` {how}", ctx.id, argv.join(" "));
        if !last.is_empty() {
            // Kept with the failure, so `polyflow show` tells a teammate what the program said, later.
            let lines = if last.len() == 1 { "line".to_string() } else { format!("{} lines", last.len()) };
            what.push_str(&format!("\nits last {lines} of output:\n  {}", last.join("\n  ")));
        }
        // Its outputs go to the store's disk: a program that failed while that disk is full failed writing
        // its artifact (exit 4, with how to free space), not on its own.
        if full {
            return Err(StageError::store(what, true));
        }
        return Err(StageError::failed(what));
    }
    let mut files = vec![];
    // Named as the program knows them (`$POLYFLOW_OUT/f`), not by the scratch folder's path.
    collect_files_linked(&out_dir, false, &mut files)
        .map_err(|e| StageError::failed(e.to_string().replace(&out_dir.display().to_string(), "$POLYFLOW_OUT")))?;
    // A file `export` names is an output the node declares (Snakemake's missing output): without it the run
    // failed, and is not cached as done (it would be fresh, its export failing on every run until `--force`).
    let exported: Vec<(String, String)> = {
        use crate::stage::Stage;
        super::CommandStage.exports(ctx.params)
    };
    // (A folder it names is exported as the files below it: it must hold one at least.)
    let missing: Vec<String> = exported
        .iter()
        .filter(|(name, _)| !files.iter().any(|(f, _)| f.strip_prefix(&out_dir).is_ok_and(|n| n.starts_with(name))))
        .map(|(name, to)| format!("`$POLYFLOW_OUT/{name}` (exported to {to})"))
        .collect();
    if !missing.is_empty() {
        let _ = std::fs::remove_dir_all(&work);
        return Err(StageError::failed(format!(
            "node `{}`: its program ({}) ended well without writing {}, which `export` names: have the program write \
             it, or take it out of `export`",
            ctx.id,
            crate::text::cut(&format!("`{}`", argv.join(" ")), 80),
            missing.join(", ")
        )));
    }
    // Not a failure (a step may only check something), but a program that wrote its results elsewhere, or
    // into a relative `out/` of its own, would otherwise be cached as done with nothing.
    if files.is_empty() {
        ctx.note(format!(
            "`{}` wrote no file into $POLYFLOW_OUT: its artifact is empty, and what it wrote elsewhere is not cached",
            argv[0]
        ));
    }
    // Artifact file names are text (the index, `show`, `$POLYFLOW_IN` of the nodes downstream): a name that is
    // not UTF-8 would be rewritten, and two such names could become one.
    if let Some((f, _)) = files.iter().find(|(f, _)| f.strip_prefix(&out_dir).is_ok_and(|n| n.to_str().is_none())) {
        let name = f.strip_prefix(&out_dir).unwrap_or(f).as_os_str().as_encoded_bytes().escape_ascii().to_string();
        return Err(StageError::failed(format!(
            "node `{}`: `{}` wrote `$POLYFLOW_OUT/{name}`, whose name is not UTF-8 text: artifact file names must be; \
             have the program name its outputs in UTF-8",
            ctx.id, argv[0]
        )));
    }
    // A `metrics.json` that is not JSON: said now, not found out later by a table (which refuses it) or
    // `compare` (which reads no metric from it). Kept: the node's other outputs may be hours of work.
    if let Some((f, _)) = files.iter().find(|(f, _)| f.strip_prefix(&out_dir).is_ok_and(|n| n == Path::new("metrics.json"))) {
        let parsed = std::fs::read(f).map_err(|e| e.to_string()).and_then(|b| parse_metrics(&b).map_err(|e| e.to_string()));
        match parsed {
            Err(e) => ctx.note(format!(
                "`{}` wrote a metrics.json that is not JSON ({e}): tables refuse it and `compare` reads no metric from it; \
                 fix how the program writes it (`--force {}` reruns the node)",
                argv[0], ctx.id
            )),
            Ok(v) if !v.is_object() => ctx.note(format!(
                "`{}` wrote a metrics.json that is not a JSON object: tables and `compare` read numbers by name from an object",
                argv[0]
            )),
            Ok(_) => {}
        }
    }
    // The files reached through links first: a link to a sibling output (`latest -> model_10`) is read
    // before its target is moved into the store.
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (f, shared) in files {
        let name = f.strip_prefix(&out_dir).unwrap().to_string_lossy().to_string();
        // Moved into the store, not read into memory: a program's output may be larger than memory. A file
        // reached through a symlink or with other hard links is the user's too: copied, never moved.
        if shared {
            let r = std::fs::File::open(&f).map_err(|e| StageError::failed(format!("{}: {e}", f.display())))?;
            ctx.out.put_reader(&name, r)?;
        } else {
            ctx.out.put_moved(&name, &f)?;
        }
    }
    Ok(())
}

/// Whether the disk holding `dir` is full for us: less than 1 MiB free, or (a quota, which free space does not
/// show) a small write there fails as a full disk would.
fn disk_full(dir: &Path) -> bool {
    if fs4::available_space(dir).is_ok_and(|free| free < 1 << 20) {
        return true;
    }
    let probe = dir.join(".polyflow-space-probe");
    let written = std::fs::write(&probe, vec![0u8; 64 << 10]);
    let _ = std::fs::remove_file(&probe);
    written.is_err_and(|e| crate::store::is_disk_full(&e))
}

/// ` (SIGKILL)` for the signals a program is usually stopped by, else nothing.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL: out of memory, or killed)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV: the program crashed)",
        libc::SIGABRT => " (SIGABRT: the program aborted)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGHUP => " (SIGHUP)",
        _ => "",
    }
}

/// `path` (absolute) as seen from folder `from`, where the program runs: relative when both are on one root, so
/// a program that writes its output folder's name into a file writes the same bytes on every machine whose
/// project and store lie alike (`../.polyflow/partial/…`), not a home directory's absolute path.
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    // Physical paths (symlinks resolved), since the system resolves `..` physically.
    let (Ok(target), Ok(from)) = (std::fs::canonicalize(path), std::fs::canonicalize(from)) else { return path.to_path_buf() };
    let (p, f): (Vec<_>, Vec<_>) = (target.components().collect(), from.components().collect());
    let common = p.iter().zip(&f).take_while(|(a, b)| a == b).count();
    // Only the root in common: the absolute path says more than a climb to it.
    if common <= 1 {
        return path.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out
}
