//! Generic node kinds that know nothing of ML: `value` (a JSON value, for wiring and tests) and `command`
//! (an external program, DVC-style).

use crate::fingerprint::FileDigests;
use crate::stage::{parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `value`: writes its `value` parameter as `value.json`. Optional `sleep_ms` and `fail` help test pipelines.
pub struct ValueStage;

/// The parameters of a `value` node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueParams {
    /// The value written to `value.json`.
    pub value: serde_json::Value,
    /// Free text (part of the key only).
    pub comment: String,
    /// Sleep this long before finishing.
    pub sleep_ms: u64,
    /// Fail deliberately.
    pub fail: bool,
}

/// The parameters of a `command` node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// argv of the program (`{params.NAME}` replaced by the value in `params`).
    pub run: Vec<String>,
    /// Files or folders hashed into the key.
    pub deps: Vec<String>,
    /// Values for the program ([`super::command_params`]): in `$POLYFLOW_PARAMS` and `{params.NAME}`.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Output files copied into the project after a run: file in `$POLYFLOW_OUT` → path relative to the pipeline
    /// file (DVC's `outs` in the workspace). Not in the key.
    #[serde(default)]
    pub export: BTreeMap<String, String>,
}

impl Stage for ValueStage {
    fn kind(&self) -> &'static str {
        "value"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "a constant JSON value (wiring, tests, benchmarks)"
    }
    fn output(&self) -> &'static str {
        "json"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("after", &["*"]).optional()]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("value", T::Any, json!(null), "the value written to value.json"),
            ParamSpec::opt("comment", T::Str, json!(""), "free text; part of the key but not of the output"),
            ParamSpec::opt("sleep_ms", T::Int { min: 0, max: 86_400_000 }, json!(0), "sleep this long before finishing"),
            ParamSpec::opt("fail", T::Bool, json!(false), "fail deliberately"),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<ValueParams>(params, &self.params()).map(|_| ())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: ValueParams = parse(ctx.params)?;
        let ms = p.sleep_ms;
        let steps = (ms / 100).max(1);
        for s in 0..steps {
            std::thread::sleep(std::time::Duration::from_millis(ms / steps));
            (ctx.progress)(crate::stage::Progress { done: s + 1, total: steps, message: String::new(), note: false });
        }
        if p.fail {
            return Err(StageError::failed(format!("node `{}` fails deliberately (fail = true)", ctx.id)));
        }
        ctx.out.put_json("value.json", &p.value)
    }
}

/// `command`: runs a program with `$POLYFLOW_OUT` (write outputs there), `$POLYFLOW_IN` (inputs, one folder per
/// slot and node), `$POLYFLOW_PARAMS` (its `params`, JSON), `$POLYFLOW_SCRATCH` (a folder kept across failed or
/// interrupted attempts of its key), `$POLYFLOW_SEED` and `$POLYFLOW_THREADS` set; `deps` files are hashed into the
/// key by content.
pub struct CommandStage;

/// Digest of `deps` (files or folders relative to `base`): each dependency's name, a NUL byte and its content
/// digest (see [`crate::fingerprint::files`]).
/// What cannot be read below `path` (itself, a file, a folder, a symlink's target), at most 3, each with why:
/// the stat and access checks of a walk, no file read.
fn unreadable_in(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = vec![];
    for e in walkdir::WalkDir::new(path).follow_links(true) {
        let problem = match e {
            Err(e) => {
                let at = e.path().map(crate::spec::source::display_path).unwrap_or_default();
                match e.io_error().map(|io| io.kind()) {
                    Some(std::io::ErrorKind::NotFound) => Some(format!("{at}: a symlink whose target does not exist")),
                    _ => Some(format!("{at}: {}", e.io_error().map_or_else(|| e.to_string(), |io| io.to_string()))),
                }
            }
            Ok(e) if e.file_type().is_file() => {
                let c = std::ffi::CString::new(e.path().as_os_str().as_bytes()).ok();
                // SAFETY: access(2) on a NUL-terminated path; it only reads the string.
                let readable = c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::R_OK) } == 0);
                (!readable).then(|| format!("{}: permission denied", crate::spec::source::display_path(e.path())))
            }
            Ok(_) => None,
        };
        out.extend(problem);
        if out.len() >= 3 {
            break;
        }
    }
    out
}

/// The folder of a command's scratch that `$POLYFLOW_SCRATCH` names, kept across attempts of its key.
const KEPT: &str = "kept";

/// How much of a command's `metrics.json` `show` prints.
const METRICS_SHOWN: usize = 4000;

/// A `deps` entry as its path means it: `./data/` is `data`, `a//b` is `a/b` (`.` for the pipeline's own
/// folder); `..` is kept (it is not `x/..` undone: a link can make them differ). A plain path is unchanged, so keys
/// made before this rule stay.
fn normal_dep(d: &str) -> String {
    let p = Path::new(d);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    let s = out.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".to_string()
    } else {
        s
    }
}

fn hash_paths(base: &Path, deps: &[String], files: &FileDigests) -> Result<String, StageError> {
    let mut h = blake3::Hasher::new();
    for d in deps {
        let d = &normal_dep(d);
        let p = base.join(d);
        let digest = files.tree(&p).map_err(|e| StageError::input(format!("dependency `{d}`: {e}")))?;
        h.update(d.as_bytes());
        h.update(&[0]);
        h.update(digest.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
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

/// All regular files below `p` (or `p` itself), symlinks followed.
pub fn collect_files(p: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut linked = vec![];
    collect_files_linked(p, false, &mut linked)?;
    out.extend(linked.into_iter().map(|(f, _)| f));
    Ok(())
}

/// [`collect_files`], each file with whether it is reached through a symlink (itself one, or in a linked folder)
/// or has other hard links: such a file is someone else's too, never to be moved into the store.
fn collect_files_linked(p: &Path, via_link: bool, out: &mut Vec<(std::path::PathBuf, bool)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // Errors name the file (a dangling link, a loop of links).
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let own = std::fs::symlink_metadata(p).map_err(named)?;
    let via_link = via_link || own.file_type().is_symlink();
    let meta = std::fs::metadata(p).map_err(named)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            collect_files_linked(&e?.path(), via_link, out)?;
        }
    } else if meta.is_file() {
        out.push((p.to_path_buf(), via_link || meta.nlink() > 1));
    } else {
        // Reading a FIFO would wait forever, a device never end, a socket fail: none is a result.
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file: only files and folders are results (remove it before the program exits)",
            p.display(),
            crate::store::fsafe::kind_of(meta.file_type())
        )));
    }
    Ok(())
}

impl Stage for CommandStage {
    fn kind(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "an external command writing files into $POLYFLOW_OUT"
    }
    fn output(&self) -> &'static str {
        "files"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("in", &["*"]).optional()]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("run", T::StrList, "argv of the program, e.g. [\"sh\", \"-c\", \"echo hi > $POLYFLOW_OUT/x\"]"),
            ParamSpec::opt("deps", T::StrList, json!([]), "files or folders (relative to the pipeline file) hashed into the key"),
            ParamSpec::added(
                "params",
                T::Table,
                json!({}),
                "values for the program, in the key: in the JSON file $POLYFLOW_PARAMS names, and `{params.NAME}` in `run` \
                 is replaced by one (`--set NODE.params.NAME=VALUE` sets one)",
            ),
            ParamSpec::added(
                "export",
                T::Table,
                json!({}),
                "output files copied into the project after a run, `{ \"metrics.json\" = \"results/metrics.json\" }` (file in \
                 $POLYFLOW_OUT = path relative to the pipeline file; `{params.NAME}` replaced in both); not in the key",
            )
            .unkeyed(),
        ]
    }
    /// The seed is in its key: the program is given it (`$POLYFLOW_SEED`), so replicates (`seeds = 3`) are runs of
    /// their own.
    fn env_keys(&self) -> &'static [&'static str] {
        &["seed"]
    }
    fn external_digest(&self, params: &serde_json::Value, base_dir: &Path, files: &FileDigests) -> Result<Option<String>, StageError> {
        let deps = parse::<CommandParams>(params)?.deps;
        if deps.is_empty() {
            return Ok(None);
        }
        hash_paths(base_dir, &deps, files).map(Some)
    }
    /// `deps` entries keyed as their paths mean them (`./data/` is `data`): a respelling is no change.
    fn canonical_key(&self, keyed: &mut serde_json::Value) {
        for d in keyed.get_mut("deps").and_then(serde_json::Value::as_array_mut).into_iter().flatten() {
            if let Some(s) = d.as_str() {
                *d = serde_json::Value::String(normal_dep(s));
            }
        }
    }
    fn exports(&self, params: &serde_json::Value) -> Vec<(String, String)> {
        // Parameters that do not parse export nothing (validation reports them).
        let Ok(p) = parse::<CommandParams>(params) else { return vec![] };
        let sub =
            |t: &String| super::command_params::substitute(std::slice::from_ref(t), &p.params).map_or_else(|_| t.clone(), |v| v[0].clone());
        p.export.iter().map(|(file, to)| (sub(file), sub(to))).collect()
    }
    fn export_marks(&self) -> bool {
        false
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        let p = parse_checked::<CommandParams>(params, &self.params())?;
        if let Some((file, to)) = p.export.iter().find(|(f, t)| f.is_empty() || t.is_empty() || f.starts_with('/') || f.contains("..")) {
            return Err((
                "export".to_string(),
                format!(
                    "`{file:?} = {to:?}`: each entry names a file the program writes, as a path below $POLYFLOW_OUT \
                     (`metrics.json`, `sub/x.txt`), and where to copy it"
                ),
            ));
        }
        fn missing(param: &'static str) -> impl Fn(String) -> (String, String) {
            move |e| (param.to_string(), format!("{e}: add it to the node's `params = {{ NAME = VALUE }}`"))
        }
        super::command_params::substitute(&p.run, &p.params).map_err(missing("run"))?;
        let paths: Vec<String> = p.export.iter().flat_map(|(f, t)| [f.clone(), t.clone()]).collect();
        super::command_params::substitute(&paths, &p.params).map(|_| ()).map_err(missing("export"))
    }
    /// What a failed or interrupted attempt of this key left in `$POLYFLOW_SCRATCH` (the next attempt gets it).
    fn resume_point(&self, scratch: &Path) -> Option<String> {
        let n = walkdir::WalkDir::new(scratch.join(KEPT)).into_iter().flatten().filter(|e| e.file_type().is_file()).count();
        (n > 0).then(|| format!("$POLYFLOW_SCRATCH ({n} file{})", if n == 1 { "" } else { "s" }))
    }
    /// Every file or folder `deps` lists exists (it is hashed into the key, so without it the node has none).
    fn preflight(&self, params: &serde_json::Value, base_dir: &Path) -> Result<(), crate::stage::Problem> {
        let deps = parse::<CommandParams>(params).map(|p| p.deps).unwrap_or_default();
        // An export into what `deps` lists changes the node's own key after every run.
        let folded = crate::spec::source::folded_absolute;
        for (_, to) in self.exports(params) {
            let dest = folded(&base_dir.join(&to));
            if let Some(d) = deps.iter().find(|d| dest.starts_with(folded(&base_dir.join(normal_dep(d))))) {
                return Err(crate::stage::Problem {
                    param: "export".to_string(),
                    msg: format!("writes `{to}` into `{d}`, which `deps` lists: the node would be stale again after every run"),
                    by_param: true,
                    local: false,
                });
            }
        }
        let missing: Vec<String> = deps
            .iter()
            .filter(|d| std::fs::metadata(base_dir.join(d)).is_err())
            .map(|d| format!("`{d}` ({})", crate::spec::source::display_path(&base_dir.join(d))))
            .collect();
        if missing.is_empty() {
            // Everything they hold must be readable too: it is all hashed into the key.
            let unreadable: Vec<String> = deps.iter().flat_map(|d| unreadable_in(&base_dir.join(d))).take(3).collect();
            if unreadable.is_empty() {
                return Ok(());
            }
            return Err(crate::stage::Problem {
                param: "deps".to_string(),
                msg: format!("lists what cannot be read, and all of it is hashed into the key: {}", unreadable.join("; ")),
                by_param: false,
                local: false,
            });
        }
        Err(crate::stage::Problem {
            param: "deps".to_string(),
            msg: format!(
                "lists {} that cannot be read: {}; paths in `deps` are relative to the pipeline file's folder",
                if missing.len() == 1 { "a file" } else { "files" },
                missing.join(", ")
            ),
            by_param: false,
            local: false,
        })
    }
    /// Its `metrics.json`, where it wrote one (what `compare` reads), pretty-printed up to [`METRICS_SHOWN`] bytes.
    fn describe(&self, a: &crate::stage::InputArtifact, _out: &Path) -> Result<String, StageError> {
        if !a.manifest.files.contains_key("metrics.json") {
            return Ok(String::new());
        }
        let bytes = a.read("metrics.json")?;
        Ok(match parse_metrics(&bytes) {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                match text.char_indices().nth(METRICS_SHOWN) {
                    Some((cut, _)) => format!("metrics.json:\n{}\n… ({} bytes in all)", &text[..cut], text.len()),
                    None => format!("metrics.json:\n{text}"),
                }
            }
            Err(e) => format!("metrics.json: not JSON ({e}), so `compare` reads no metric from it"),
        })
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p = parse::<CommandParams>(ctx.params)?;
        let argv =
            super::command_params::substitute(&p.run, &p.params).map_err(|e| StageError::input(format!("node `{}`: {e}", ctx.id)))?;
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
        for (slot, arts) in &ctx.inputs {
            for a in arts {
                let d = in_dir.join(slot).join(&a.id);
                std::fs::create_dir_all(&d).map_err(|e| StageError::failed(e.to_string()))?;
                for name in a.manifest.files.keys() {
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
        let tail = OutputTail::follow(reader, format!("[{}] ", ctx.id));
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
                what.push_str(&format!("\nits last {} line(s) of output:\n  {}", last.len(), last.join("\n  ")));
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
}

/// A `metrics.json` as tables, `compare` and `show` read it: JSON, where the bare `NaN`, `Infinity` and
/// `-Infinity` that Python's `json.dump` writes by default (a diverged run's loss) are read as `null` (no
/// number), and a leading UTF-8 byte-order mark is let be.
pub(crate) fn parse_metrics(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Outside strings only.
            let (mut out, mut i, mut in_str, mut esc) = (Vec::with_capacity(bytes.len()), 0, false, false);
            while i < bytes.len() {
                let b = bytes[i];
                if in_str {
                    out.push(b);
                    match (esc, b) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                let rest = &bytes[i..];
                if let Some(t) = [&b"-Infinity"[..], b"Infinity", b"NaN"].into_iter().find(|t| rest.starts_with(t)) {
                    out.extend_from_slice(b"null");
                    i += t.len();
                    continue;
                }
                in_str = b == b'"';
                out.push(b);
                i += 1;
            }
            serde_json::from_slice(&out).map_err(|_| e)
        }
    }
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

/// A program's output as forwarded: whole lines (ended by `\n` or `\r`, a `\r\n` as one end), each with its node's
/// prefix, so that nothing else (another node's output, polyflow's own lines) lands within a line; a line still
/// unfinished when nothing more came for [`Prefixed::WAIT`] (a prompt, the end of the output) is written with a
/// line end of its own, as is one past [`Prefixed::LONGEST`] bytes.
struct Prefixed {
    prefix: Vec<u8>,
    pending: Vec<u8>,
    after_cr: bool,
}

impl Prefixed {
    /// How long an unfinished line waits for its end.
    const WAIT: std::time::Duration = std::time::Duration::from_millis(200);
    /// The longest line held back.
    const LONGEST: usize = 1 << 16;

    fn new(prefix: String) -> Prefixed {
        Prefixed { prefix: prefix.into_bytes(), pending: vec![], after_cr: false }
    }

    /// Appends to `out` what `bytes` complete.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            // The `\n` of a `\r\n`: the line was written with its `\r`.
            if b == b'\n' && self.after_cr && self.pending.is_empty() {
                out.push(b);
                self.after_cr = false;
                continue;
            }
            self.pending.push(b);
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                out.extend_from_slice(&self.prefix);
                out.append(&mut self.pending);
            } else if self.pending.len() >= Self::LONGEST {
                self.cut(out);
            }
        }
    }

    /// Appends to `out` the unfinished line, ended.
    fn cut(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.pending);
            out.push(b'\n');
        }
        self.after_cr = false;
    }
}

/// A program's standard output and error, forwarded as they come to polyflow's standard error (standard output
/// is `--json`'s event stream), each line prefixed with its node's id (nodes run side by side), while the last
/// [`OutputTail::KEEP`] lines (ended by `\n` or `\r`, at most [`OutputTail::MAX_LINE`] bytes each) are kept for the
/// failure record. Memory stays bounded: a program that writes faster than polyflow's standard error is read
/// waits for it, as it would writing to a terminal.
struct OutputTail {
    state: std::sync::Arc<(std::sync::Mutex<TailState>, std::sync::Condvar)>,
}

/// What the forwarding thread shares with [`OutputTail::finish`].
#[derive(Default)]
struct TailState {
    /// The last lines.
    kept: std::collections::VecDeque<String>,
    /// The output has ended and all of it was forwarded.
    done: bool,
    /// Since when the forwarding thread has had nothing to write (none while it is writing).
    idle_since: Option<std::time::Instant>,
}

impl OutputTail {
    /// Lines kept.
    const KEEP: usize = 20;
    /// Bytes kept of one line.
    const MAX_LINE: usize = 500;
    /// Chunks read ahead of what was forwarded (of at most 8 KiB each).
    const AHEAD: usize = 16;
    /// How long [`OutputTail::finish`] waits for an output that stays open but silent (a process that left the
    /// program's group holds it).
    const SILENT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Follows `output` (the program's standard output and error, one pipe) on a thread of its own; what is
    /// forwarded has `prefix` at the start of every line (after each `\n` or `\r`, so a redrawn progress bar keeps
    /// it).
    fn follow(output: std::io::PipeReader, prefix: String) -> OutputTail {
        let state = std::sync::Arc::new((std::sync::Mutex::new(TailState::default()), std::sync::Condvar::new()));
        // Bounded: the reader waits while the forwarding is behind, and so the program does.
        let (chunks_tx, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::AHEAD);
        // Read as it comes, on a thread of its own, so that a line left unfinished is cut after a while.
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut r, mut buf) = (output, [0u8; 8192]);
            while let Ok(k) = r.read(&mut buf) {
                if k == 0 || chunks_tx.send(buf[..k].to_vec()).is_err() {
                    break;
                }
            }
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            // Forwarded line by line, prefixed (a progress bar redrawn with `\r` shows live), while lines, ended by
            // `\n` or `\r` and cut at MAX_LINE bytes, go to the tail.
            let (mut fwd, mut out, mut line) = (Prefixed::new(prefix), Vec::new(), Vec::new());
            let keep = |line: &mut Vec<u8>| {
                if !line.is_empty() {
                    let mut st = shared.0.lock().unwrap();
                    st.kept.push_back(String::from_utf8_lossy(line).into_owned());
                    if st.kept.len() > OutputTail::KEEP {
                        st.kept.pop_front();
                    }
                    line.clear();
                }
            };
            loop {
                out.clear();
                {
                    let mut st = shared.0.lock().unwrap();
                    if st.idle_since.is_none() {
                        st.idle_since = Some(std::time::Instant::now());
                        shared.1.notify_all();
                    }
                }
                let next = chunks.recv_timeout(Prefixed::WAIT);
                if next.is_ok() {
                    shared.0.lock().unwrap().idle_since = None;
                }
                let done = match next {
                    Ok(chunk) => {
                        fwd.push(&chunk, &mut out);
                        for &b in &chunk {
                            if b == b'\n' || b == b'\r' {
                                keep(&mut line);
                            } else if line.len() < OutputTail::MAX_LINE {
                                line.push(b);
                            }
                        }
                        false
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        fwd.cut(&mut out);
                        false
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        fwd.cut(&mut out);
                        true
                    }
                };
                if !out.is_empty() {
                    crate::stage::children::write_output(&out);
                }
                if done {
                    break;
                }
            }
            keep(&mut line);
            shared.0.lock().unwrap().done = true;
            shared.1.notify_all();
        });
        OutputTail { state }
    }

    /// The last lines, once the output has ended and all of it was forwarded (however slowly polyflow's standard
    /// error is read), or once it has stayed open and silent for [`OutputTail::SILENT`] (a process that left the
    /// program's group may hold it; what it writes later goes on being forwarded).
    fn finish(self) -> Vec<String> {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        loop {
            if st.done || st.idle_since.is_some_and(|t| t.elapsed() >= Self::SILENT) {
                return st.kept.iter().cloned().collect();
            }
            // Woken when the output ends or falls silent; checked again at least every 100 ms.
            st = cvar.wait_timeout(st, std::time::Duration::from_millis(100)).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{normal_dep, CommandStage, Prefixed};
    use crate::stage::Stage;
    use serde_json::json;

    /// What `chunks` give, each followed by a cut where `cut_after` says so.
    fn forwarded(chunks: &[(&str, bool)]) -> String {
        let (mut p, mut out) = (Prefixed::new("[a] ".into()), vec![]);
        for (c, cut) in chunks {
            p.push(c.as_bytes(), &mut out);
            if *cut {
                p.cut(&mut out);
            }
        }
        p.cut(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn python_json_reads_with_nan_as_null() {
        let v = super::parse_metrics(
            b"\xef\xbb\xbf{\"loss\": NaN, \"a\": -Infinity, \"b\": Infinity, \"s\": \"NaN \\\" Infinity\", \"acc\": 0.5}",
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"loss": null, "a": null, "b": null, "s": "NaN \" Infinity", "acc": 0.5}));
        assert!(super::parse_metrics(b"{\"acc\": .1}").is_err());
    }

    #[test]
    fn lines_are_prefixed_whole() {
        // Lines split across reads, a progress bar redrawn with `\r`, a CRLF line, blank lines.
        assert_eq!(forwarded(&[("one\ntw", false), ("o\n\n", false)]), "[a] one\n[a] two\n[a] \n");
        assert_eq!(forwarded(&[("1%\r50%\r", false), ("100%\r\n", false)]), "[a] 1%\r[a] 50%\r[a] 100%\r\n");
        assert_eq!(forwarded(&[("x\r", false), ("\ny\r\n", false)]), "[a] x\r\n[a] y\r\n");
        // An unfinished line, cut when nothing more came, goes on under the prefix; the end of the output ends it.
        assert_eq!(forwarded(&[("part1 ", true), ("part2\nlast", false)]), "[a] part1 \n[a] part2\n[a] last\n");
        // Nothing at all: nothing.
        assert_eq!(forwarded(&[("", true)]), "");
    }

    #[test]
    fn a_very_long_line_is_not_held_back_whole() {
        let long = "x".repeat(Prefixed::LONGEST + 10);
        let out = forwarded(&[(&long, false)]);
        assert_eq!(out.matches("[a] ").count(), 2);
        assert_eq!(out.len(), long.len() + 2 * 4 + 2);
    }

    #[test]
    fn deps_respelt_are_the_same_path() {
        for (a, b) in [("./data/", "data"), ("data//x", "data/x"), ("./", "."), ("../d", "../d"), ("a/./b", "a/b"), ("/abs/", "/abs")] {
            assert_eq!(normal_dep(a), b, "{a}");
        }
        let mut k = json!({"deps": ["./train.py", "data/"], "run": ["x"]});
        CommandStage.canonical_key(&mut k);
        assert_eq!(k["deps"], json!(["train.py", "data"]));
    }
}
