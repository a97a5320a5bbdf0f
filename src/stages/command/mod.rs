//! `command`: an external program, DVC-style. It writes its outputs into `$POLYFLOW_OUT` and reads its inputs
//! from `$POLYFLOW_IN`; the files `deps` lists are hashed into its key by content.
//!
//! - [`params`]: its `params` (`$POLYFLOW_PARAMS`, `{params.NAME}`);
//! - [`deps`]: the files it depends on, as the key and the preflight read them;
//! - `run`: starting the program and storing what it wrote;
//! - `output`: its output forwarded, line by line, with the last lines kept for a failure;
//! - [`metrics`]: its `metrics.json` as tables and `compare` read it.

pub mod deps;
mod lint;
pub mod metrics;
mod output;
pub mod params;
mod run;

pub use deps::collect_files;
pub use metrics::parse_metrics;

use crate::fingerprint::FileDigests;
use crate::stage::{parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use deps::{hash_paths, normal_dep, unreadable_in};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// `command`: runs a program with `$POLYFLOW_OUT` (write outputs there), `$POLYFLOW_IN` (inputs, one folder per
/// slot and node), `$POLYFLOW_PARAMS` (its `params`, JSON), `$POLYFLOW_SCRATCH` (a folder kept across failed or
/// interrupted attempts of its key), `$POLYFLOW_SEED` and `$POLYFLOW_THREADS` set; `deps` files are hashed into the
/// key by content.
pub struct CommandStage;

/// The parameters of a `command` node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// argv of the program (`{params.NAME}` replaced by the value in `params`).
    pub run: Vec<String>,
    /// Files or folders hashed into the key.
    pub deps: Vec<String>,
    /// Values for the program ([`params`]): in `$POLYFLOW_PARAMS` and `{params.NAME}`.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Which files of its inputs' artifacts are copied into `$POLYFLOW_IN` (names or glob patterns, `*.json`);
    /// empty: all of them.
    #[serde(default)]
    pub input_files: Vec<String>,
    /// Output files copied into the project after a run: file (or folder: its files) in `$POLYFLOW_OUT` → path
    /// relative to the pipeline file (DVC's `outs` in the workspace). Not in the key.
    #[serde(default)]
    pub export: BTreeMap<String, String>,
}

/// The folder of a command's scratch that `$POLYFLOW_SCRATCH` names, kept across attempts of its key.
const KEPT: &str = "kept";

/// How much of a command's `metrics.json` `show` prints.
const METRICS_SHOWN: usize = 4000;

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
    fn input_ids_in_output(&self) -> bool {
        // The program finds its inputs in folders named by them.
        true
    }
    fn inputs(&self) -> Vec<InputSlot> {
        // `in`, or names of the pipeline's own: `inputs = { data = "prep", model = "train" }` gives
        // `$POLYFLOW_IN/data/prep/…` and `$POLYFLOW_IN/model/train/…`.
        vec![InputSlot::any_name(&["*"])]
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
                "input_files",
                T::StrList,
                json!([]),
                "which files of its inputs' artifacts are copied into $POLYFLOW_IN: names or glob patterns \
                 (`[\"metrics.json\"]`, `[\"*.json\"]`), not a sweep's checkpoints; empty: all (the key covers the inputs whole either way)",
            ),
            ParamSpec::added(
                "export",
                T::Table,
                json!({}),
                "output files copied into the project after a run, `{ \"metrics.json\" = \"results/metrics.json\" }` (file in \
                 $POLYFLOW_OUT = path relative to the pipeline file; a folder there is its files, each below the path; \
                 `{params.NAME}` replaced in both); not in the key",
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
        let sub = |t: &String| params::substitute(std::slice::from_ref(t), &p.params).map_or_else(|_| t.clone(), |v| v[0].clone());
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
        if let Some((pat, e)) = p.input_files.iter().find_map(|f| glob::Pattern::new(f).err().map(|e| (f, e))) {
            return Err(("input_files".to_string(), format!("`{pat}` is not a file name pattern: {e}")));
        }
        fn missing(param: &'static str) -> impl Fn(String) -> (String, String) {
            move |e| (param.to_string(), format!("{e}: add it to the node's `params = {{ NAME = VALUE }}`"))
        }
        params::substitute(&p.run, &p.params).map_err(missing("run"))?;
        let paths: Vec<String> = p.export.iter().flat_map(|(f, t)| [f.clone(), t.clone()]).collect();
        params::substitute(&paths, &p.params).map(|_| ()).map_err(missing("export"))
    }
    /// What a failed or interrupted attempt of this key left in `$POLYFLOW_SCRATCH` (the next attempt gets it).
    fn resume_point(&self, scratch: &Path) -> Option<String> {
        let n = walkdir::WalkDir::new(scratch.join(KEPT)).into_iter().flatten().filter(|e| e.file_type().is_file()).count();
        (n > 0).then(|| format!("$POLYFLOW_SCRATCH ({n} file{})", if n == 1 { "" } else { "s" }))
    }
    /// Every file or folder `deps` lists exists (it is hashed into the key, so without it the node has none).
    fn lints(&self, params: &serde_json::Value, base_dir: &Path, keyed: &[String]) -> Vec<(String, String)> {
        let Ok(p) = parse::<CommandParams>(params) else { return vec![] };
        let mut out = vec![];
        for f in lint::unkeyed_files(&p.run, &p.deps, keyed, base_dir) {
            out.push((
                "run".to_string(),
                format!("names `{f}`, which `deps` does not list: an edit of it will not make the node stale (add it to `deps`)"),
            ));
        }
        // The program: on PATH, or a file of the project.
        if let Some(prog) = p.run.first().filter(|p| !p.is_empty() && !p.contains('{')) {
            if prog.contains('/') {
                if !base_dir.join(prog).exists() {
                    out.push(("run".to_string(), format!("its program `{prog}` does not exist: the node will fail when it runs")));
                }
            } else if let Err(near) = lint::on_path(prog, &std::env::var_os("PATH").unwrap_or_default()) {
                let near = near.map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
                out.push((
                    "run".to_string(),
                    format!("its program `{prog}` is not on PATH here{near}: the node will fail when it runs here"),
                ));
            }
        }
        out
    }
    fn export_allowed(&self, params: &serde_json::Value, base_dir: &Path, dest: &Path) -> Result<(), String> {
        let deps = parse::<CommandParams>(params).map(|p| p.deps).unwrap_or_default();
        let folded = crate::spec::source::folded_absolute;
        let dest = folded(dest);
        match deps.iter().find(|d| dest.starts_with(folded(&base_dir.join(normal_dep(d))))) {
            Some(d) => Err(format!("its `deps` lists `{d}`, which holds that path: the node would be stale again after every run")),
            None => Ok(()),
        }
    }
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
            .map(|d| {
                // Where it was looked for, where that is not how it is written (a pipeline in another folder).
                let at = crate::spec::source::display_path(&base_dir.join(d));
                if at == deps::normal_dep(d) {
                    format!("`{d}`")
                } else {
                    format!("`{d}` ({at})")
                }
            })
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
                "lists {} not there: {}; paths in `deps` are relative to the pipeline file's folder",
                if missing.len() == 1 { "a file or folder" } else { "files or folders" },
                missing.join(", ")
            ),
            by_param: false,
            local: false,
        })
    }
    /// Its `metrics.json`, where it wrote one (what `compare` reads), pretty-printed up to `METRICS_SHOWN` (4,000) bytes.
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
        run::run(ctx)
    }
}
