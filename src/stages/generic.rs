//! Generic node kinds that know nothing of ML: `value` (a JSON value, for wiring and tests) and `command`
//! (an external program, DVC-style).

use crate::stage::{InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde_json::json;
use std::path::Path;

/// `value`: writes its `value` parameter as `value.json`. Optional `sleep_ms` and `fail` help test pipelines.
pub struct ValueStage;

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
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let ms = ctx.params["sleep_ms"].as_u64().unwrap_or(0);
        let steps = (ms / 100).max(1);
        for s in 0..steps {
            std::thread::sleep(std::time::Duration::from_millis(ms / steps));
            (ctx.progress)(crate::stage::Progress { done: s + 1, total: steps, message: String::new() });
        }
        if ctx.params["fail"].as_bool() == Some(true) {
            return Err(StageError::failed(format!("node `{}` fails deliberately (fail = true)", ctx.id)));
        }
        let v = ctx.params["value"].clone();
        ctx.out.put_json("value.json", &v)
    }
}

/// `command`: runs a program with `$POLYFLOW_OUT` (write outputs there) and `$POLYFLOW_IN` (inputs, one
/// folder per slot and node) set; `deps` files are hashed into the key by content.
pub struct CommandStage;

fn hash_paths(base: &Path, deps: &[String]) -> Result<String, StageError> {
    let mut h = blake3::Hasher::new();
    for d in deps {
        let p = base.join(d);
        let mut files = vec![];
        collect_files(&p, &mut files).map_err(|e| StageError::input(format!("dependency `{}`: {e}", p.display())))?;
        files.sort();
        for f in files {
            let rel = f.strip_prefix(base).unwrap_or(&f).to_string_lossy().to_string();
            h.update(rel.as_bytes());
            h.update(&[0]);
            std::fs::File::open(&f)
                .and_then(|file| h.update_reader(file).map(|_| ()))
                .map_err(|e| StageError::input(format!("{}: {e}", f.display())))?;
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// All regular files below `p` (or `p` itself).
pub fn collect_files(p: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(p)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            collect_files(&e?.path(), out)?;
        }
    } else {
        out.push(p.to_path_buf());
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
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn external_digest(&self, params: &serde_json::Value, base_dir: &Path) -> Result<Option<String>, StageError> {
        let deps: Vec<String> = serde_json::from_value(params["deps"].clone()).unwrap_or_default();
        if deps.is_empty() {
            return Ok(None);
        }
        hash_paths(base_dir, &deps).map(Some)
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let argv: Vec<String> = serde_json::from_value(ctx.params["run"].clone()).unwrap_or_default();
        if argv.is_empty() {
            return Err(StageError::input(format!("node `{}`: `run` is empty", ctx.id)));
        }
        let work = tempfile::tempdir().map_err(|e| StageError::failed(e.to_string()))?;
        let out_dir = work.path().join("out");
        let in_dir = work.path().join("in");
        std::fs::create_dir_all(&out_dir).map_err(|e| StageError::failed(e.to_string()))?;
        for (slot, arts) in &ctx.inputs {
            for a in arts {
                let d = in_dir.join(slot).join(&a.id);
                std::fs::create_dir_all(&d).map_err(|e| StageError::failed(e.to_string()))?;
                for name in a.manifest.files.keys() {
                    std::fs::write(d.join(name), a.read(name)?).map_err(|e| StageError::failed(e.to_string()))?;
                }
            }
        }
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(ctx.base_dir)
            .env("POLYFLOW_OUT", &out_dir)
            .env("POLYFLOW_IN", &in_dir)
            .env("POLYFLOW_SEED", ctx.seed().to_string())
            .status()
            .map_err(|e| StageError::input(format!("node `{}`: cannot start `{}`: {e}", ctx.id, argv[0])))?;
        if !status.success() {
            return Err(StageError::failed(format!("node `{}`: `{}` exited with {status}", ctx.id, argv.join(" "))));
        }
        let mut files = vec![];
        collect_files(&out_dir, &mut files).map_err(|e| StageError::failed(e.to_string()))?;
        files.sort();
        for f in files {
            let name = f.strip_prefix(&out_dir).unwrap().to_string_lossy().to_string();
            let bytes = std::fs::read(&f).map_err(|e| StageError::failed(e.to_string()))?;
            ctx.out.put(&name, &bytes)?;
        }
        Ok(())
    }
}
