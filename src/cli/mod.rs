//! The `polyflow` command line: argument parsing, one function per command, reporters, exit codes.

mod compare;
pub mod exit;
mod export;
mod knobs;
mod maintain;
mod out;
pub mod report;
mod show;
mod status;

use crate::exec::{self, RunOptions};
use crate::graph::{self, Graph};
use crate::spec::ExecutorKind;
use crate::spec::{self, SpecError};
use crate::stage::{FailureClass, Problem, Registry};
use crate::store::{Store, StoreError};
use clap::{Args, Parser, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Declare an ML study in TOML; regenerate its result tables incrementally.
#[derive(Parser, Debug)]
#[command(name = "polyflow", version = env!("POLYFLOW_BUILD"), about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// More output (`-v`: dirty reasons and timings; `-vv`: debug logs). `RUST_LOG` also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Cli {
    /// Whether the command may compute nodes or change the store (`run`, `params` of nodes not yet computed,
    /// `push`, `gc`), as opposed to only reporting.
    pub fn runs_nodes(&self) -> bool {
        matches!(&self.command, Command::Run(a) if !a.dry_run)
            || matches!(self.command, Command::Params(_) | Command::Push(_) | Command::Gc(_))
    }
}

/// Options shared by every command that reads a pipeline.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The pipeline file.
    pub file: PathBuf,
    /// Profile to apply (`[profile.NAME]` in the pipeline), e.g. smoke, small, paper.
    #[arg(short, long)]
    pub profile: Option<String>,
    /// Store directory.
    #[arg(long, env = "POLYFLOW_STORE", default_value = ".polyflow")]
    pub store: PathBuf,
    /// Training backend recorded in keys of backend-dependent nodes: `flex` (CPU, also called `cpu`), `cuda` or `wgpu`.
    #[arg(long, env = "POLYFLOW_BACKEND", default_value = "flex", value_parser = crate::model::device::Backend::canonical)]
    pub backend: String,
    /// A TOML file of overrides (`[node.ID]`, `[kind.KIND]`, `seed`), e.g. where your datasets live;
    /// repeatable, applied in order after the profile.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Override one parameter: `--set NODE.PARAM=VALUE` (e.g. `--set imagenet.path=/data/imagenet`), or
    /// `--set seed=N`; repeatable, applied last. Same effect on keys as the same edit in the file.
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    pub set: Vec<String>,
    /// A shared artifact cache folder (e.g. on the cluster's shared file system): stale nodes it holds are
    /// fetched instead of computed, and what runs compute is published there. Wins over `[cache] dir`.
    #[arg(long, env = "POLYFLOW_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// A shared cache and whether to publish to it.
pub type SharedCache = (Arc<dyn crate::store::ArtifactCache>, bool);

impl Common {
    /// The command-line overrides.
    pub fn overlay(&self) -> spec::Overlay {
        spec::Overlay { configs: self.config.clone(), sets: self.set.clone() }
    }

    /// The `--config` and `--set` options as typed, in order (for saying what a result was made with).
    pub fn overrides(&self) -> Vec<String> {
        self.config
            .iter()
            .map(|c| format!("--config {}", spec::source::display_path(c)))
            .chain(self.set.iter().map(|s| format!("--set {s}")))
            .collect()
    }

    /// The settings a run records with what it computes, as a command line gives them (`--profile smoke --config
    /// x.toml --set a.b=1`; empty for the pipeline file's own): `compare` and `show` present an earlier run's
    /// results only when they were made under the settings of the command at hand ([`crate::exec::earlier`]).
    pub fn settings(&self) -> String {
        let mut v: Vec<String> = self.profile.iter().map(|p| format!("--profile {p}")).collect();
        v.extend(self.overrides());
        v.join(" ")
    }

    /// The `polyflow run` command line that computes `nodes` with these options (file, profile, store when not
    /// the default, backend when not the CPU, `--config`, `--set`), quoted for a POSIX shell: what a hint tells
    /// the user to type, so that it computes what they were looking at.
    pub fn run_command(&self, nodes: &[&str]) -> String {
        let mut v = vec!["polyflow".to_string(), "run".to_string(), spec::source::display_path(&self.file)];
        if let Some(p) = &self.profile {
            v.extend(["--profile".to_string(), p.clone()]);
        }
        if self.store != std::path::Path::new(".polyflow") {
            v.extend(["--store".to_string(), spec::source::display_path(&self.store)]);
        }
        if self.backend != "flex" {
            v.extend(["--backend".to_string(), self.backend.clone()]);
        }
        for c in &self.config {
            v.extend(["--config".to_string(), spec::source::display_path(c)]);
        }
        for s in &self.set {
            v.extend(["--set".to_string(), s.clone()]);
        }
        v.extend(nodes.iter().map(|n| n.to_string()));
        v.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// The shared cache: `--cache` / `POLYFLOW_CACHE`, else the pipeline's `[cache]`; with whether to publish.
    pub fn shared_cache(&self, g: &Graph, create: bool) -> Result<Option<SharedCache>, CliError> {
        let (dir, publish) = match (&self.cache, &g.pipeline.cache) {
            (Some(d), _) => (d.clone(), true),
            (None, Some(c)) => (c.dir.clone(), c.publish),
            (None, None) => return Ok(None),
        };
        Ok(Some((Arc::new(open_cache(&dir, create)?), publish)))
    }
}

/// `a` as one POSIX shell word: as is when it holds only characters no shell treats specially, else in single
/// quotes (a quote inside as `'\''`).
pub fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run what is stale among the targets (default: the nodes the file itself declares) and their inputs.
    Run(RunArgs),
    /// Print the plan (what would run and why) without running: same as `run --dry-run`.
    Plan(PlanArgs),
    /// Show each node's state (fresh / stale / failed), why, size and last duration.
    Status(StatusArgs),
    /// Print the graph as Graphviz DOT or Mermaid.
    Dag(DagArgs),
    /// Write one self-contained HTML page: every table (cells linked to their provenance), training curves,
    /// the DAG coloured by state, run times.
    Report(HtmlReportArgs),
    /// Describe a node's artifact (files, shapes, class counts) and write previews.
    Show(ShowArgs),
    /// One table of runs: the parameters that differ between the nodes and their metrics (`--csv`, `--json`).
    Compare(compare::CompareArgs),
    /// Publish to the shared cache (`--cache DIR`) the fresh artifacts of the pipeline that it lacks (a store
    /// filled before the team had a cache; `run` publishes only what it computes).
    Push(PushArgs),
    /// Delete artifacts that no named pipeline references (dry unless --yes).
    Gc(GcArgs),
    /// Check every blob an artifact of the store references against its checksum (blobs no artifact references
    /// are garbage, which `gc` removes)
    Verify(VerifyArgs),
    /// Parameter counts of every model-bearing node, from parameters alone.
    Params(ParamsArgs),
    /// List node kinds with their inputs and parameters.
    Kinds,
    /// Train-step and inference throughput of a ViT on random data (for BENCHMARKS.md).
    BenchModel(crate::bench::model::BenchArgs),
    /// Log-mel filterbank throughput on a folder of clips (for BENCHMARKS.md).
    BenchFbank(crate::bench::fbank::FbankBenchArgs),
    /// Images per second of the encoded-image input pipeline (decode, Inception crop, flip) on a folder.
    BenchLoader(crate::bench::loader::LoaderArgs),
    /// Clips per second of video decoding on a folder of video files (needs the `video` feature).
    #[cfg(feature = "video")]
    BenchVideo(crate::bench::video::VideoArgs),
    /// Clips per second of video decoding: this build has no video decoder (build with `--features video`).
    #[cfg(not(feature = "video"))]
    BenchVideo {
        /// Ignored: the command only says what it needs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Internal: run one submitted node inside a Slurm job (the directory holds its job.json).
    #[command(hide = true)]
    ExecNode {
        /// The job directory (`STORE/jobs/<key>`).
        dir: PathBuf,
    },
}

/// `run` arguments: `plan`'s and those of a run that runs.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan with each node's reason and run nothing (as `plan`).
    #[arg(long)]
    dry_run: bool,
    /// Wait for another run holding the store instead of exiting with code 3.
    #[arg(long)]
    wait: bool,
    /// On Ctrl-C, leave submitted Slurm jobs running (the next `run` re-attaches) instead of cancelling them.
    #[arg(long)]
    keep_jobs: bool,
    /// Fetch from the shared cache but publish nothing to it.
    #[arg(long)]
    no_publish: bool,
}

/// `plan` arguments, which `run` shares: what to run, and where.
#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    common: Common,
    /// Target nodes (or matrix / seeds declarations); default: the nodes the file itself declares (not those only
    /// its includes declare) and everything they need.
    nodes: Vec<String>,
    /// Re-run this node even if fresh (repeatable).
    #[arg(long)]
    force: Vec<String>,
    /// Re-run every selected node.
    #[arg(long)]
    force_all: bool,
    /// Parallel CPU slots (default: number of cores).
    #[arg(short, long, default_value_t = 0)]
    jobs: usize,
    /// Accelerators of this machine, numbered 0..N: a node on a GPU backend holds one per replica (`gpus`), pinned
    /// to devices no other running node holds (a node asking for more than N gets all N). 0 = hold none.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// JSON on stdout: a run's events as lines; a plan (`plan`, `run --dry-run`) as one object.
    #[arg(long)]
    json: bool,
    /// Where stale nodes run: `local` (threads of this process) or `slurm` (one sbatch job per node);
    /// default: the pipeline's `[executor] kind`, else local.
    #[arg(long, value_parser = ["local", "slurm"])]
    executor: Option<String>,
}

/// `status` arguments.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Only these nodes (and what they need).
    nodes: Vec<String>,
    /// JSON array of {id, kind, state, reason, reasons, size, last_ms}.
    #[arg(long)]
    json: bool,
    /// Explain one node in full.
    #[arg(long)]
    why: Option<String>,
    /// List only the nodes that are not fresh (stale or failed); the last line still counts them all.
    #[arg(long)]
    stale: bool,
}

/// `push` arguments.
#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    common: Common,
    /// Only these nodes (and what they need); default: every node of the file.
    nodes: Vec<String>,
}

/// `dag` arguments.
#[derive(Args, Debug)]
pub struct DagArgs {
    #[command(flatten)]
    common: Common,
    /// Output format.
    #[arg(long, value_parser = ["dot", "mermaid"], default_value = "dot")]
    format: String,
}

/// `report` arguments.
#[derive(Args, Debug)]
pub struct HtmlReportArgs {
    #[command(flatten)]
    common: Common,
    /// The HTML file to write (`-`: standard output; a symlink is written through).
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
}

/// `show` arguments.
#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    common: Common,
    /// Node id.
    node: String,
}

/// `gc` arguments.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Pipelines whose artifacts are kept (all their profiles).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Store directory.
    #[arg(long, env = "POLYFLOW_STORE", default_value = ".polyflow")]
    store: PathBuf,
    /// Training backend recorded in keys.
    #[arg(long, env = "POLYFLOW_BACKEND", default_value = "flex", value_parser = crate::model::device::Backend::canonical)]
    backend: String,
    /// Really delete (otherwise only list).
    #[arg(long)]
    yes: bool,
    /// Wait for a run holding the store instead of exiting with code 3.
    #[arg(long)]
    wait: bool,
    /// The `--config` files of the runs to keep: what the pipelines compute with them is kept. They replace the
    /// file's settings as in a run, so what the pipelines compute without them is not kept (in any profile).
    #[arg(long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// The `--set` overrides of the runs to keep (replacing, not adding to, the file's settings: see `--config`).
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    set: Vec<String>,
    /// Collect the shared cache DIR instead of the store: entries older than `--keep-days` that the named
    /// pipelines do not compute now are deleted, then blobs no entry names (older than an hour: a publish in
    /// progress writes its blobs before its entry).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// With `--cache`: keep every entry published in the last N days.
    #[arg(long, default_value_t = 30)]
    keep_days: u64,
    /// Refused with a word on why: `gc` covers every profile.
    #[arg(short = 'p', long = "profile", hide = true)]
    profile: Option<String>,
}

/// `verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Pipelines: check only the artifacts they use now (every profile; with `--cache`, the cache entries they
    /// would fetch). Without any, every artifact is checked.
    files: Vec<PathBuf>,
    /// Store directory.
    #[arg(long, env = "POLYFLOW_STORE", default_value = ".polyflow")]
    store: PathBuf,
    /// Training backend recorded in keys (with pipelines named).
    #[arg(long, env = "POLYFLOW_BACKEND", default_value = "flex", value_parser = crate::model::device::Backend::canonical)]
    backend: String,
    /// The `--config` files your runs used (with pipelines named).
    #[arg(long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// The `--set` overrides your runs used (with pipelines named).
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    set: Vec<String>,
    /// Check the shared cache DIR instead of the store (damaged blobs are moved aside: their entries are
    /// fetched by nobody until a run publishes them again).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Refused with a word on why: `verify` covers every profile.
    #[arg(short = 'p', long = "profile", hide = true)]
    profile: Option<String>,
}

/// `params` arguments.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    #[command(flatten)]
    common: Common,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Where task nodes must be computed first: wait for a run holding the store instead of exiting with code 3.
    #[arg(long)]
    wait: bool,
}

/// A command failure with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid pipeline or usage.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other, with exit code.
    #[error("{0}")]
    Other(String, i32),
    /// Problems found before running (exit 2): the message, and each problem as `{node, kind, at, param,
    /// message, set}` for `--json`.
    #[error("{0}")]
    Problems(String, Vec<serde_json::Value>),
}

impl CliError {
    /// The documented exit code.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Spec(_) => exit::USAGE,
            CliError::Store(StoreError::Locked { .. }) => exit::LOCKED,
            CliError::Store(StoreError::NotAStore { .. }) => exit::USAGE,
            CliError::Store(_) => exit::STORE,
            CliError::Other(_, c) => *c,
            CliError::Problems(..) => exit::USAGE,
        }
    }

    /// The `{"event": "error", …}` line of `--json`: `exit` and `message`, with what a script can act on where
    /// known: a pipeline error's place (`at`: `file`, `line`, `col`) and `help`, the problems found before running.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"event": "error", "exit": self.code(), "message": format!("{self:#}")});
        match self {
            CliError::Spec(e) => {
                if let Some(l) = &e.location {
                    v["at"] = serde_json::json!({"file": l.file, "line": l.line, "col": l.col});
                }
                if let Some(h) = &e.help {
                    v["help"] = serde_json::json!(h);
                }
            }
            CliError::Problems(_, p) => v["problems"] = serde_json::json!(p),
            _ => {}
        }
        v
    }
}

impl From<exec::ExecError> for CliError {
    fn from(e: exec::ExecError) -> Self {
        match e {
            exec::ExecError::Spec(s) => CliError::Spec(s),
            exec::ExecError::Store(s) => CliError::Store(s),
            e @ exec::ExecError::Interrupted { .. } => CliError::Other(format!("{e}"), exit::INTERRUPTED),
            exec::ExecError::Other(s) => CliError::Other(s, exit::NODE_FAILED),
        }
    }
}

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
        "note: there is no store at {} yet, so nothing is cached there (`polyflow run` creates it; check `--store` or POLYFLOW_STORE)",
        dir.display()
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

/// The name prefix of the empty stores read commands open where there is none: `polyflow-empty-store-PID-…`.
const EMPTY_STORE: &str = "polyflow-empty-store-";

/// Removes the empty stores (of [`read_store`]) in the temporary folder whose process has ended, this user's.
fn sweep_empty_stores() {
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

/// Loads and validates a pipeline.
pub fn load_graph(c: &Common, reg: &Registry) -> Result<Graph, CliError> {
    let p = spec::load_with(&c.file, c.profile.as_deref(), &c.overlay())?;
    Ok(graph::build(p, reg)?)
}

/// Warns of each `{name}` a declaration's parameters hold that names none of its variables (a misspelt `{lr}`):
/// it is passed to the node as written. Once per declaration, parameter and name.
fn note_placeholders(g: &Graph) {
    // Per (declaration, parameter, name): the nodes with it, where it is written, their variables.
    type Found = (Vec<String>, crate::spec::source::Span, Vec<String>);
    let mut found: BTreeMap<(String, String, String), Found> = BTreeMap::new();
    for n in &g.pipeline.nodes {
        for (param, name, span) in &n.unknown_placeholders {
            let e = found.entry((n.decl.clone(), param.clone(), name.clone())).or_insert_with(|| {
                let mut vars: Vec<String> = n.matrix.keys().map(|k| format!("{{{k}}}")).collect();
                vars.sort();
                (vec![], *span, vars)
            });
            e.0.push(n.id.clone());
        }
    }
    for ((decl, param, name), (nodes, span, vars)) in found {
        // The declaration when every node of it has the placeholder, else the nodes (an override of one of them).
        let all = g.pipeline.nodes.iter().filter(|n| n.decl == decl).count();
        let whose =
            if nodes.len() == all { format!("`{decl}`") } else { nodes.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ") };
        crate::cli::out::errln!(
            "{:>12} `{{{name}}}` in `{param}` of {whose} ({}) names no variable of it, so it is passed as written; its variables: {}",
            "Warning",
            g.pipeline.sources.locate(span),
            vars.join(", ")
        );
    }
}

/// Says on stderr what in the pipeline is likely a mistake, before `run`, `plan` or `status` goes on: placeholders naming
/// no variable, and seed groups with replicates of different settings (an override of one replicate), whose
/// tables' cells average them as if they were seeds of one setting.
pub fn pipeline_notes(g: &Graph) {
    note_placeholders(g);
    for (group, params) in g.mixed_replicates() {
        crate::cli::out::errln!(
            "{:>12} the replicates of `{group}` differ in {} (an override of one of them?): a table averages them into one cell as seeds of one setting",
            "Note",
            params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Checks what the selected nodes will read (e.g. every dataset path) and their parameters against the run's
/// environment `env` (e.g. a precision the backend lacks) before the store is opened or anything runs: every
/// problem is listed with the option that fixes it, and nothing is written (exit 2).
pub fn preflight(g: &Graph, c: &Common, targets: &[String], env: &BTreeMap<String, String>) -> Result<(), CliError> {
    /// A problem as `preflight` lists it: the node that has it, or the declaration whose expansions (`nodes`)
    /// share it (`shared`: the declaration and the problem's text).
    struct Listed {
        who: String,
        shared: Option<(String, String)>,
        nodes: Vec<String>,
        kind: &'static str,
        at: String,
        param: String,
        msg: String,
        set: Option<String>,
    }
    let mut problems: Vec<Listed> = vec![];
    let computed = computed_elsewhere(g, c, env);
    let sel = g.select(targets)?;
    // What the inputs will be, from declarations (a checkpoint's geometry is read from its header): a model the
    // checkpoint does not fit is found here, not after ingestion.
    let decls = graph::declarations(g, &sel);
    for i in sel {
        let n = &g.nodes[i];
        let declared = || match graph::declared_inputs(g, i, &decls) {
            Some(inputs) => n.stage.check_declared(&n.params, &inputs),
            None => Ok(()),
        };
        let checked =
            n.stage.preflight(&n.params, &n.base_dir).and_then(|()| n.stage.preflight_env(&n.params, env)).and_then(|()| declared());
        // A backend this build lacks matters only to a node that computes here: not to one the shared cache may
        // hold, or that this store computed on that backend before (a laptop fetching a GPU machine's results).
        if matches!(&checked, Err(p) if p.local) && computed(i) {
            continue;
        }
        if let Err(Problem { param, msg, by_param, .. }) = checked {
            let set = by_param.then(|| format!("--set {}.{param}=...", n.id));
            // Where the parameter is written (the node's header when it is not: a default, or a derived value).
            let spec = &g.pipeline.nodes[i];
            let at = spec.params.get(&param).map_or_else(|| n.location.to_string(), |e| g.pipeline.sources.locate(e.key_span).to_string());
            // The same problem in every expansion of a declaration (a matrix, replicates), where no value of the
            // node's own fixes it, is listed once, counted.
            let shared = (!by_param && spec.decl != n.id).then(|| (spec.decl.clone(), format!("`{param}` {msg}")));
            if let Some(p) = problems.iter_mut().find(|p: &&mut Listed| shared.is_some() && p.shared == shared) {
                p.nodes.push(n.id.clone());
                continue;
            }
            let who = shared.as_ref().map_or_else(|| n.id.clone(), |(d, _)| d.clone());
            problems.push(Listed { who, shared, nodes: vec![n.id.clone()], kind: n.stage.kind(), at, param, msg, set });
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    // One JSON entry per problem as the text lists it: `node` is the declaration of a shared one, `nodes` its
    // expansions.
    let listed = problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "node": p.who, "nodes": p.nodes, "kind": p.kind, "at": p.at, "param": p.param, "message": p.msg, "set": p.set,
            })
        })
        .collect();
    let problems: Vec<String> = problems
        .iter()
        .map(|p| {
            let count = if p.nodes.len() > 1 { format!("{} nodes, ", p.nodes.len()) } else { String::new() };
            let mut text = format!("  - `{}` ({count}{}, {}): `{}` {}", p.who, p.kind, p.at, p.param, p.msg);
            if let Some(set) = &p.set {
                text += &format!("\n    set it with `{set}` or `[node.{}] {} = ...` in a `--config` file", p.who, p.param);
            }
            text
        })
        .collect();
    Err(CliError::Problems(
        format!("error: {} problem(s) found before running; nothing was run or written:\n{}", problems.len(), problems.join("\n")),
        listed,
    ))
}

/// Whether node `i`'s result may come from elsewhere than a computation here: a shared cache is configured, or
/// the store recorded a run of the node on the run's backend.
fn computed_elsewhere<'a>(g: &'a Graph, c: &Common, env: &BTreeMap<String, String>) -> impl Fn(usize) -> bool + 'a {
    let cache = c.cache.is_some() || g.pipeline.cache.is_some();
    let backend = env.get("backend").cloned().unwrap_or_default();
    let index = Store::exists(&c.store).then(|| Store::open(&c.store).ok()).flatten().and_then(|s| s.index_read().ok());
    move |i: usize| {
        cache
            || index.as_ref().is_some_and(|x| {
                x.record(&g.nodes[i].id).ok().flatten().is_some_and(|r| r.fingerprint.env.get("backend") == Some(&backend))
            })
    }
}

/// The environment recorded in keys.
pub fn env_of(g: &Graph, backend: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("seed".to_string(), g.pipeline.seed.to_string());
    // The canonical name (`cpu` → `flex`), so one backend always gives one key.
    env.insert("backend".to_string(), crate::model::device::Backend::canonical(backend).unwrap_or_else(|_| backend.to_string()));
    // Reserved, always "f32" (it has been in every training key since the first version); a training node's
    // arithmetic is its `precision` parameter.
    env.insert("precision".to_string(), "f32".to_string());
    // Only when set: burn's composition instead of the fused CPU block rounds differently, so its nodes have
    // their own keys, and `status` names the variable that made them (default keys carry no such entry).
    if env["backend"] == "flex" && !crate::model::fused::enabled() {
        env.insert(CPU_BLOCK.to_string(), "composed (POLYFLOW_FUSED_CPU=0)".to_string());
    }
    // Only on CPUs whose bf16 products run on AMX, which rounds their sums otherwise than `vdpbf16ps` and the
    // emulation: the fused block's bf16 nodes get keys of their own there (`env_for_block` keeps the entry on those
    // alone), so a shared store or cache never hands one kind of machine's bf16 bits to the other as fresh.
    {
        use crate::model::fused::kernels::bf16::{kernel, Kernel};
        if env["backend"] == "flex" && kernel() == Kernel::Amx {
            env.insert(BF16_KERNEL.to_string(), Kernel::Amx.name().to_string());
        }
    }
    env
}

/// The environment entry of bf16 nodes trained where the products run on AMX (see [`crate::model::fused`]'s kernels).
pub const BF16_KERNEL: &str = "bf16_kernel";

/// The environment entry that marks runs with the fused CPU block turned off (`POLYFLOW_FUSED_CPU=0`).
pub const CPU_BLOCK: &str = "cpu_block";

/// Runs the parsed command with the given registry; returns the exit code.
pub fn run(cli: Cli, reg: &Registry) -> i32 {
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Decoders' own logs stay out (symphonia's "probe reach EOF"): polyflow reports the file and what to do.
    // `RUST_LOG` replaces this filter.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},symphonia=off")));
    // Colours on a terminal only, never into a file or pipe, and never with NO_COLOR set.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A standard error gone (`run … 2>&1 | head`) drops log lines: no complaint of its own, which would panic there.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
    for w in knobs::unknown_values(|k| std::env::var(k).ok()) {
        tracing::warn!("{w}");
    }
    let verbose = cli.verbose > 0;
    // Machine output asked for: an error is also a JSON line on stdout, so a consumer gets JSON either way.
    let json = match &cli.command {
        Command::Run(a) => a.plan.json,
        Command::Plan(a) => a.json,
        Command::Status(a) => a.json,
        Command::Params(a) => a.json,
        Command::Compare(a) => a.json,
        _ => false,
    };
    let result = match cli.command {
        Command::Run(a) if a.dry_run => plan(a.plan, verbose, reg),
        Command::Run(a) => cmd_run(a, reg, verbose),
        Command::Plan(a) => plan(a, verbose, reg),
        Command::Status(a) => status::status(a.common, a.nodes, a.json, a.why, a.stale, reg),
        Command::Dag(a) => status::dag(a.common, &a.format, reg),
        Command::Report(a) => cmd_report(a, reg),
        Command::Show(a) => show::show(a.common, &a.node, reg),
        Command::Compare(a) => compare::compare(a, reg),
        Command::Push(a) => maintain::push(a.common, a.nodes, reg),
        Command::Gc(GcArgs { profile: Some(p), .. }) | Command::Verify(VerifyArgs { profile: Some(p), .. }) => Err(CliError::Other(
            format!(
                "error: `gc` and `verify` take no --profile: they cover every profile of the pipelines named (what `--profile {p}` computes among them); leave it out"
            ),
            exit::USAGE,
        )),
        Command::Gc(a) => {
            let overlay = spec::Overlay { configs: a.config.clone(), sets: a.set.clone() };
            match &a.cache {
                Some(dir) => maintain::gc_cache(&a.files, &a.store, dir, a.keep_days, &a.backend, &overlay, a.yes, reg),
                None => maintain::gc(&a.files, &a.store, &a.backend, &overlay, (a.yes, a.wait, verbose), reg),
            }
        }
        Command::Verify(a) => {
            let overlay = spec::Overlay { configs: a.config.clone(), sets: a.set.clone() };
            let only = (!a.files.is_empty()).then_some((&a.files[..], &a.backend[..], &overlay));
            match &a.cache {
                Some(dir) => maintain::verify_cache(dir, &a.store, only, reg),
                None => maintain::verify(&a.store, only, reg),
            }
        }
        Command::Params(a) => maintain::params(a.common, a.json, a.wait, reg),
        Command::Kinds => maintain::kinds(reg),
        Command::BenchModel(a) => {
            crate::bench::model::bench_model(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        Command::BenchFbank(a) => {
            crate::bench::fbank::bench_fbank(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        #[cfg(feature = "video")]
        Command::BenchVideo(a) => {
            crate::bench::video::bench_video(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        #[cfg(not(feature = "video"))]
        Command::BenchVideo { .. } => Err(CliError::Other(
            "error: `bench-video` decodes video files, and this build has no video decoder: build with `--features video` \
             (FFmpeg's development libraries; see the README)"
                .into(),
            exit::USAGE,
        )),
        Command::BenchLoader(a) => {
            crate::bench::loader::bench_loader(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        Command::ExecNode { dir } => Ok(exec::slurm::job::run_job(&dir, reg)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A store's errors name a path first (`.polyflow/index: …`): marked as errors as the others are.
            match &e {
                CliError::Store(_) => out::err_line(&format!("error: {e:#}")),
                _ => out::err_line(&format!("{e:#}")),
            }
            if json {
                out::line(&e.json().to_string());
            }
            e.code()
        }
    }
}

/// `report`: the HTML page of the pipeline as `status` sees the store (nothing runs).
fn cmd_report(a: HtmlReportArgs, reg: &Registry) -> Result<i32, CliError> {
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
fn write_through(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
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
        _ => {
            let tmp = target.with_extension("polyflow-tmp");
            std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &target)).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
    }
}

fn plan(a: PlanArgs, verbose: bool, reg: &Registry) -> Result<i32, CliError> {
    let executor = executor_kind(a.executor.as_deref());
    status::plan(a.common, a.nodes, a.force, a.force_all, (a.jobs, a.devices, executor), a.json, verbose, reg)
}

/// `--executor`, if given.
fn executor_kind(e: Option<&str>) -> Option<ExecutorKind> {
    e.map(|e| if e == "slurm" { ExecutorKind::Slurm } else { ExecutorKind::Local })
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
fn stop_code(term: &AtomicBool, hup: &AtomicBool) -> i32 {
    if hup.load(Ordering::SeqCst) {
        exit::HUNG_UP
    } else if term.load(Ordering::SeqCst) {
        exit::TERMINATED
    } else {
        exit::INTERRUPTED
    }
}

/// `--force` nodes must be among those the run selects (its targets and what they need): one outside is
/// forced to nothing, which said nothing before. Returns the forced nodes.
pub fn forced_nodes(g: &Graph, targets: &[String], force: &[String]) -> Result<Vec<usize>, CliError> {
    let sel = g.select(targets)?;
    let mut forced = vec![];
    for f in force {
        let Some(ids) = g.resolve(f) else {
            return Err(CliError::Other(format!("error: --force: no node `{f}`\n  help: {}", g.suggest(f)), exit::USAGE));
        };
        if !ids.iter().any(|i| sel.contains(i)) {
            return Err(CliError::Other(
                format!(
                    "error: --force: `{f}` is not among the nodes this run selects (its targets {} and what they need)\n  help: add `{f}` to the targets (after the pipeline file), or name no targets to select every node",
                    targets.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
                ),
                exit::USAGE,
            ));
        }
        forced.extend(ids);
    }
    Ok(forced)
}

fn cmd_run(a: RunArgs, reg: &Registry, verbose: bool) -> Result<i32, CliError> {
    let RunArgs { plan: a, dry_run: _, wait, keep_jobs, no_publish } = a;
    let g = load_graph(&a.common, reg)?;
    forced_nodes(&g, &a.nodes, &a.force)?;
    preflight(&g, &a.common, &a.nodes, &env_of(&g, &a.common.backend))?;
    pipeline_notes(&g);
    let store = Store::open(&a.common.store)?;
    let executor = executor_kind(a.executor.as_deref());
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
    // A second signal while stopping ends the process at once (a second Ctrl-C is a hard stop).
    for (sig, code) in [
        (signal_hook::consts::SIGINT, exit::INTERRUPTED),
        (signal_hook::consts::SIGTERM, exit::TERMINATED),
        (signal_hook::consts::SIGHUP, exit::HUNG_UP),
    ] {
        signal_hook::flag::register_conditional_shutdown(sig, code, flag.clone())
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
        interrupt: vec![],
        cache: None,
        publish: false,
        notes: BTreeMap::from([
            (exec::earlier::SETTINGS.to_string(), a.common.settings()),
            (exec::earlier::PROFILE.to_string(), a.common.profile.clone().unwrap_or_default()),
        ]),
    };
    let mut opts = opts;
    if let Some((cache, publish)) = a.common.shared_cache(&g, true)? {
        opts.cache = Some(cache);
        opts.publish = publish && !no_publish;
    }
    // A reader of the JSON lines that goes away stops the run as SIGTERM would, with a flag of its own: the
    // signal handlers' (a second signal ends the process at once) stays down until a signal comes.
    let pipe = Arc::new(AtomicBool::new(false));
    opts.interrupt = vec![flag, pipe.clone()];
    let rep = report::Reporter::new(a.json, verbose).stopping(Some(pipe));
    let sink = |e: &exec::Event| rep.event(e);
    let summary = match exec::run(&g, &store, &opts, &sink) {
        Err(e @ exec::ExecError::Interrupted { .. }) if term.load(Ordering::SeqCst) || hup.load(Ordering::SeqCst) => {
            return Err(CliError::Other(format!("{e}"), stop_code(&term, &hup)));
        }
        Err(e @ exec::ExecError::Interrupted { .. }) if out::closed() => {
            return Err(CliError::Other(format!("standard output was closed by its reader: {e}"), exit::PIPE_CLOSED));
        }
        r => r?,
    };
    let overrides = a.common.overrides();
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
    if !store_failed.is_empty() {
        Err(CliError::Other(
            format!("error: the store could not be written or read for {} (see `Failed` above)", store_failed.join(", ")),
            exit::STORE,
        ))
    } else if !input_failed.is_empty() {
        Err(CliError::Other(
            format!(
                "error: {} failed on {} input or settings (see `Failed` above: fix the pipeline or the data)",
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

/// Why `dest` cannot be written (replaced through a temporary file beside it) by this user, if it cannot: a
/// folder above it is a file; the folder it goes in (or, not there yet, the nearest folder above, where it would
/// be made) is not writable; or `dest` is another user's in a shared sticky folder (`/tmp`-like), which only they
/// may replace.
fn export_blocker(dest: &Path) -> Option<String> {
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
/// format allows ([`export::mark`]). Returns the files written and how many of them were marked.
fn materialize(
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
    'check: for &i in &wanted {
        let n = &g.nodes[i];
        if !summary.artifacts.contains_key(&n.id) {
            continue;
        }
        for (_, rel) in n.stage.exports(&n.params) {
            let dest = n.base_dir.join(&rel);
            let shown = crate::spec::source::display_path(&dest);
            let why = if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
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
    let (mut wrote, mut marked) = (0, 0);
    for i in wanted {
        let n = &g.nodes[i];
        let Some(m) = summary.artifacts.get(&n.id).cloned() else { continue };
        let art = crate::stage::InputArtifact::new(n.id.clone(), m, store.clone());
        for (file, rel) in n.stage.exports(&n.params) {
            let dest = n.base_dir.join(&rel);
            let bytes = art.read(&file).map_err(|e| CliError::Other(format!("error: {e}"), exit::STORE))?;
            let overrides: &[String] = if made_with.2.contains(&n.id) { &[] } else { &made_with.1 };
            let before = bytes.len();
            let bytes = export::mark(&rel, bytes, &made_with.0, overrides);
            marked += usize::from(bytes.len() != before);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| CliError::Other(format!("error: {}: {e}", parent.display()), exit::STORE))?;
            }
            let tmp = dest.with_extension("polyflow-tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &dest))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
                .map_err(|e| CliError::Other(format!("error: {}: {e}", dest.display()), exit::STORE))?;
            out::errln!("{:>12} {}", "Wrote", crate::spec::source::display_path(&dest));
            if json {
                let path = crate::spec::source::display_path(&dest);
                out::line(
                    &serde_json::json!({"event": "wrote", "id": n.id, "kind": n.stage.kind(), "path": path, "file": file}).to_string(),
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
    Ok((wrote, marked))
}
