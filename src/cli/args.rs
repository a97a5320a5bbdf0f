//! The command line's arguments: the commands, their options and what several share.

use super::*;

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
    /// Whether the command may compute nodes or write files (`run`, `params` of nodes not yet computed, `push`,
    /// `gc`, `checkout`), as opposed to only reporting.
    pub fn runs_nodes(&self) -> bool {
        matches!(&self.command, Command::Run(a) if !a.dry_run)
            || matches!(self.command, Command::Params(_) | Command::Push(_) | Command::Gc(_) | Command::Checkout(_))
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
        self.overlay().words()
    }

    /// The settings a run records with what it computes, as a command line gives them (`--profile smoke --config
    /// x.toml --set a.b=1`; empty for the pipeline file's own): the same rule as [`spec::Pipeline::settings`],
    /// which `status`, `show` and `compare` match earlier runs against ([`crate::exec::earlier`]).
    pub fn settings(&self) -> String {
        spec::parse::settings_line(self.profile.as_deref(), &self.overlay())
    }

    /// The `polyflow run` command line that computes `nodes` with these options (file, profile, store when not
    /// the default, backend when not the CPU, `--config`, `--set`), quoted for a POSIX shell: what a hint tells
    /// the user to type, so that it computes what they were looking at.
    pub fn run_command(&self, nodes: &[&str]) -> String {
        self.command("run", nodes)
    }

    /// [`Self::run_command`] for another command on the same pipeline and options (`runs`, `show`, …).
    pub fn command(&self, verb: &str, nodes: &[&str]) -> String {
        let mut v = vec!["polyflow".to_string(), verb.to_string(), spec::source::display_path(&self.file)];
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
        v.iter().map(|a| crate::text::shell_word(a)).collect::<Vec<_>>().join(" ")
    }

    /// The shared cache's folder: `--cache` / `POLYFLOW_CACHE`, else the pipeline's `[cache]`; with whether to
    /// publish.
    pub fn cache_dir(&self, g: &Graph) -> Option<(std::path::PathBuf, bool)> {
        match (&self.cache, &g.pipeline.cache) {
            (Some(d), _) => Some((d.clone(), true)),
            (None, Some(c)) => Some((c.dir.clone(), c.publish)),
            (None, None) => None,
        }
    }

    /// The shared cache ([`Common::cache_dir`]), opened; with whether to publish.
    pub fn shared_cache(&self, g: &Graph, create: bool) -> Result<Option<SharedCache>, CliError> {
        let Some((dir, publish)) = self.cache_dir(g) else { return Ok(None) };
        Ok(Some((Arc::new(open_cache(&dir, create)?), publish)))
    }
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run what is stale among the targets (default: the nodes the file itself declares) and their inputs.
    Run(RunArgs),
    /// Print the plan (what would run and why) without running: same as `run --dry-run`.
    Plan(PlanCmd),
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
    /// Every run of one node on record (one per setting it was computed under), newest first: the settings it was
    /// made under, what differs from the node now, its time and metrics (`--json`).
    Runs(super::runs::RunsArgs),
    /// Copy a node's artifact (its current one, or an earlier run's with `--key`) out of the store into a folder.
    Checkout(super::checkout::CheckoutArgs),
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

impl Command {
    /// The store folder the command reads or writes, and its pipeline file, where a store above the working folder
    /// may stand in for a missing one ([`super::open::discover_store`]); `None` for commands without a store, and
    /// for `gc` and `verify`, which delete or move what they find: they use the store named, or none.
    pub(crate) fn store_of(&mut self) -> Option<(&mut PathBuf, Option<PathBuf>)> {
        fn common(c: &mut Common) -> (&mut PathBuf, Option<PathBuf>) {
            let file = c.file.clone();
            (&mut c.store, Some(file))
        }
        match self {
            Command::Run(a) => Some(common(&mut a.plan.common)),
            Command::Plan(a) => Some(common(&mut a.plan.common)),
            Command::Status(a) => Some(common(&mut a.common)),
            Command::Dag(a) => Some(common(&mut a.common)),
            Command::Report(a) => Some(common(&mut a.common)),
            Command::Show(a) => Some(common(&mut a.common)),
            Command::Compare(a) => Some(common(&mut a.common)),
            Command::Runs(a) => Some(common(&mut a.common)),
            Command::Checkout(a) => Some(common(&mut a.common)),
            Command::Push(a) => Some(common(&mut a.common)),
            Command::Params(a) => Some(common(&mut a.common)),
            _ => None,
        }
    }
}

/// `run` arguments: `plan`'s and those of a run that runs.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub(crate) plan: PlanArgs,
    /// Print the plan with each node's reason and run nothing (as `plan`; `-n` as in make and Snakemake).
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Wait for another run holding the store instead of exiting with code 3.
    #[arg(long)]
    pub(crate) wait: bool,
    /// On Ctrl-C, leave submitted Slurm jobs running (the next `run` re-attaches) instead of cancelling them.
    #[arg(long)]
    pub(crate) keep_jobs: bool,
    /// Fetch from the shared cache but publish nothing to it.
    #[arg(long)]
    pub(crate) no_publish: bool,
    /// Start a node whose work failed again, up to N more times (a node's own `resources = { retries = … }`
    /// wins; over `[executor] retries`). Bad input and a full disk are not retried.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=crate::spec::resources::MAX_RETRIES as i64))]
    pub(crate) retries: Option<u32>,
}

/// `plan` arguments, which `run` shares: what to run, and where.
#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Target nodes (or matrix / seeds declarations); default: the nodes the file itself declares (not those only
    /// its includes declare) and everything they need.
    pub(crate) nodes: Vec<String>,
    /// Re-run this node even if fresh (repeatable).
    #[arg(long)]
    pub(crate) force: Vec<String>,
    /// Re-run every selected node.
    #[arg(long)]
    pub(crate) force_all: bool,
    /// Parallel CPU slots (default: number of cores).
    #[arg(short, long, default_value_t = 0)]
    pub(crate) jobs: usize,
    /// Accelerators of this machine, numbered 0..N: a node on a GPU backend holds one per replica (`gpus`), pinned
    /// to devices no other running node holds (a node asking for more than N gets all N). 0 = hold none.
    #[arg(long, default_value_t = 1)]
    pub(crate) devices: usize,
    /// JSON on stdout: a run's events as lines; a plan (`plan`, `run --dry-run`) as one object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where stale nodes run: `local` (threads of this process) or `slurm` (one sbatch job per node);
    /// default: the pipeline's `[executor] kind`, else local.
    #[arg(long, value_parser = ["local", "slurm"])]
    pub(crate) executor: Option<String>,
}

/// `plan` arguments: a run's, and how it exits.
#[derive(Args, Debug)]
pub struct PlanCmd {
    #[command(flatten)]
    pub(crate) plan: PlanArgs,
    /// Exit 1 when a node would run or be fetched, or a fresh node's exported file (a table's `results/…`) is not
    /// there or not what the node holds (as `git diff --exit-code`), 0 when everything is fresh: for CI that fails
    /// a check whose results are not the committed ones.
    #[arg(long)]
    pub(crate) exit_code: bool,
    /// As `run --no-publish`: the plan of a run that only fetches from the shared cache (said on its `Cache` line).
    #[arg(long)]
    pub(crate) no_publish: bool,
}

/// `status` arguments.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Only these nodes (and what they need).
    pub(crate) nodes: Vec<String>,
    /// JSON array of {id, kind, state, key, reason, reasons, size, last_ms, in_cache, job, leftover_jobs,
    /// outdated_exports} (the README describes each).
    #[arg(long)]
    pub(crate) json: bool,
    /// Explain one node in full.
    #[arg(long)]
    pub(crate) why: Option<String>,
    /// List only the nodes that are not fresh (stale or failed); the last line still counts them all.
    #[arg(long)]
    pub(crate) stale: bool,
}

/// `push` arguments.
#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Only these nodes (and what they need); default: the nodes the file itself declares and what they need, as
    /// `run` (name an included file's other nodes to push them).
    pub(crate) nodes: Vec<String>,
}

/// `dag` arguments.
#[derive(Args, Debug)]
pub struct DagArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Only these nodes (or matrix / seeds declarations) and what they need; default: the nodes the file itself
    /// declares and what they need.
    pub(crate) nodes: Vec<String>,
    /// Output format.
    #[arg(long, value_parser = ["dot", "mermaid"], default_value = "dot")]
    pub(crate) format: String,
}

/// `report` arguments.
#[derive(Args, Debug)]
pub struct HtmlReportArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The HTML file to write (`-`: standard output; a symlink is written through).
    #[arg(short, long, default_value = "report.html")]
    pub(crate) output: PathBuf,
}

/// `show` arguments.
#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Node id.
    pub(crate) node: String,
}

/// `gc` arguments.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Pipelines whose artifacts are kept (all their profiles).
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Store directory.
    #[arg(long, env = "POLYFLOW_STORE", default_value = ".polyflow")]
    pub(crate) store: PathBuf,
    /// Training backend recorded in keys.
    #[arg(long, env = "POLYFLOW_BACKEND", default_value = "flex", value_parser = crate::model::device::Backend::canonical)]
    pub(crate) backend: String,
    /// Really delete (otherwise only list).
    #[arg(long)]
    pub(crate) yes: bool,
    /// Wait for a run holding the store instead of exiting with code 3.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Keep the artifact of every run on record of these pipelines' nodes (each setting a node was computed
    /// under: `--set` experiments, other `--config`s; what `polyflow runs` lists), not only what the pipelines
    /// compute now and each node's latest run.
    #[arg(long, conflicts_with = "cache")]
    pub(crate) all_runs: bool,
    /// Collect what only other git branches' runs found or made too. By default, in a git repository, what the last
    /// run on each other branch that still exists found or made is kept (switching back finds it fresh): of any
    /// pipeline run with this store, not only the named ones.
    #[arg(long, conflicts_with = "cache")]
    pub(crate) this_branch: bool,
    /// The `--config` files of the runs to keep: what the pipelines compute with them is kept. They replace the
    /// file's settings as in a run, so what the pipelines compute without them is not kept (in any profile).
    #[arg(long = "config", value_name = "FILE")]
    pub(crate) config: Vec<PathBuf>,
    /// The `--set` overrides of the runs to keep (replacing, not adding to, the file's settings: see `--config`).
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    pub(crate) set: Vec<String>,
    /// Collect the shared cache DIR instead of the store: entries older than `--keep-days` that the named
    /// pipelines do not compute now are deleted, then blobs no entry names (older than an hour: a publish in
    /// progress writes its blobs before its entry).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    /// With `--cache`: keep every entry published in the last N days.
    #[arg(long, default_value_t = 30, requires = "cache")]
    pub(crate) keep_days: u64,
    /// One JSON object on stdout: what is (or would be) removed (the text goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Refused with a word on why: `gc` covers every profile.
    #[arg(short = 'p', long = "profile", hide = true)]
    pub(crate) profile: Option<String>,
}

/// `verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Pipelines: check only the artifacts they use now (every profile; with `--cache`, the cache entries they
    /// would fetch). Without any, every artifact is checked.
    pub(crate) files: Vec<PathBuf>,
    /// Store directory.
    #[arg(long, env = "POLYFLOW_STORE", default_value = ".polyflow")]
    pub(crate) store: PathBuf,
    /// Training backend recorded in keys (with pipelines named).
    #[arg(long, env = "POLYFLOW_BACKEND", default_value = "flex", value_parser = crate::model::device::Backend::canonical)]
    pub(crate) backend: String,
    /// The `--config` files your runs used (with pipelines named).
    #[arg(long = "config", value_name = "FILE")]
    pub(crate) config: Vec<PathBuf>,
    /// The `--set` overrides your runs used (with pipelines named).
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    pub(crate) set: Vec<String>,
    /// Check the shared cache DIR instead of the store (damaged blobs are moved aside: their entries are
    /// fetched by nobody until a run publishes them again).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    /// One JSON object on stdout: what was checked and every damaged, missing or unreadable file (the text goes
    /// to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Refused with a word on why: `verify` covers every profile.
    #[arg(short = 'p', long = "profile", hide = true)]
    pub(crate) profile: Option<String>,
}

/// `params` arguments.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// JSON output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where task nodes must be computed first: wait for a run holding the store instead of exiting with code 3.
    #[arg(long)]
    pub(crate) wait: bool,
}
