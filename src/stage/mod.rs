//! The plug-in point of the engine: a [`Stage`] implements one node kind; a [`Registry`] maps kinds to stages.
//!
//! The engine (spec, graph, fingerprint, store, exec) only talks to stages through this trait, so it knows
//! nothing of burn, modalities or tables.

pub mod children;
mod ctx;
mod params;

pub use ctx::{ArtifactWriter, InputArtifact, Progress, StageCtx};
pub(crate) use params::choice_enum;
pub use params::{canonical_option_table, defaults, option_table_key, parse, parse_checked, sample, Mismatch, ParamSpec, ParamType};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What the pipeline's matrix expansion made, for [`Stage::expand_params`]: each node's variables and each
/// declaration's nodes.
pub struct MatrixFacts<'a> {
    /// Node id → its matrix variables as `{name}` placeholders write them (`seed` and `replicate` among them:
    /// `replicate` is the id suffix of a seed replicate, `.s1`, empty otherwise).
    pub vars: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    /// Matrix or seeds declaration (`cv`, `cv.0.1` for one entry's seed replicates) → its nodes, in expansion order.
    pub groups: &'a BTreeMap<String, Vec<String>>,
}

/// An input slot of a stage.
#[derive(Debug, Clone)]
pub struct InputSlot {
    /// Slot name (key in `inputs = { … }`).
    pub name: &'static str,
    /// Artifact types accepted.
    pub types: &'static [&'static str],
    /// Whether the slot takes several nodes.
    pub multiple: bool,
    /// Whether the slot may be left out.
    pub optional: bool,
}

/// The name of a slot that takes any name ([`InputSlot::any_name`]).
pub const ANY_SLOT: &str = "*";

impl InputSlot {
    /// A required slot taking one node.
    pub fn one(name: &'static str, types: &'static [&'static str]) -> Self {
        InputSlot { name, types, multiple: false, optional: false }
    }
    /// A required slot taking one or more nodes.
    pub fn many(name: &'static str, types: &'static [&'static str]) -> Self {
        InputSlot { name, types, multiple: true, optional: false }
    }
    /// Optional slots of any name the pipeline gives (a `command`'s `inputs = { data = "prep", model = "train" }`),
    /// each taking one or more nodes: a name of letters, digits, `_` and `-` (it names a folder).
    pub fn any_name(types: &'static [&'static str]) -> Self {
        InputSlot { name: ANY_SLOT, types, multiple: true, optional: true }
    }
    /// Marks the slot optional.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// What a node needs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// CPU slots taken from the `-j` pool (clamped to the pool size).
    pub cpu_slots: usize,
    /// Accelerators it holds (`--devices` slots locally; the default of `resources.gpus`).
    pub devices: u32,
}

impl Resources {
    /// One CPU slot.
    pub const LIGHT: Resources = Resources { cpu_slots: 1, devices: 0 };
    /// Every CPU slot (e.g. a training run that parallelises internally).
    pub const HEAVY: Resources = Resources { cpu_slots: usize::MAX, devices: 0 };
}

/// Class of a stage failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Bad user input (a corrupt data file, a label not in the class list): exit code 2.
    Input,
    /// The node's work failed: exit code 1.
    Failed,
    /// The store could not be written (a full disk, an I/O error): exit code 4. Nothing half-written is
    /// committed: the blobs already written stay unreferenced until `gc`.
    Store,
}

/// A problem [`Stage::preflight`] finds before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The parameter concerned.
    pub param: String,
    /// What is wrong and what to do.
    pub msg: String,
    /// Whether a value of `param` fixes it (the report then says how to set one); `false` for a problem of the
    /// installation, such as a build without video decoding, whose `msg` says what to do instead.
    pub by_param: bool,
    /// A problem only for computing the node here: none for a node whose artifact may come from elsewhere (a
    /// shared cache, a store that computed it before), e.g. a backend this build lacks, or a dataset folder
    /// that no longer holds its layout's files.
    pub local: bool,
}

impl Problem {
    /// A problem of the installation, not of a parameter's value (see [`Problem::by_param`]).
    pub fn installation(param: impl Into<String>, msg: impl Into<String>) -> Self {
        Problem { param: param.into(), msg: msg.into(), by_param: false, local: false }
    }

    /// This problem, as one for computing the node here only (see [`Problem::local`]).
    pub fn local(self) -> Self {
        Problem { local: true, ..self }
    }
}

impl From<(String, String)> for Problem {
    /// A problem a value of the parameter fixes: `(param, message)`.
    fn from((param, msg): (String, String)) -> Self {
        Problem { param, msg, by_param: true, local: false }
    }
}

/// A stage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    /// Class.
    pub class: FailureClass,
    /// Message, naming the file and what to do where it applies.
    pub message: String,
}

impl StageError {
    /// A bad-input error.
    pub fn input(message: impl Into<String>) -> Self {
        StageError { class: FailureClass::Input, message: message.into() }
    }
    /// A work failure.
    pub fn failed(message: impl Into<String>) -> Self {
        StageError { class: FailureClass::Failed, message: message.into() }
    }
    /// The store could not be written; a full disk gets a hint on how to free space.
    pub fn store(message: impl Into<String>, full: bool) -> Self {
        let mut message = message.into();
        if full {
            message.push_str(
                "; the disk holding the store is full: free space (`polyflow gc FILE --yes` deletes what no pipeline uses) and run again",
            );
        }
        StageError { class: FailureClass::Store, message }
    }
}

/// One node kind.
pub trait Stage: Send + Sync + 'static {
    /// The `kind = "..."` name.
    fn kind(&self) -> &'static str;
    /// Bump when the stage's output for the same inputs changes meaning.
    fn version(&self) -> u32;
    /// The version that enters the key of a node with `params` under `env` (its [`Self::env_keys`] entries):
    /// [`Self::version`] unless a change touched only some settings or backends, whose nodes alone must
    /// recompute (the others keep their keys).
    fn version_for(&self, _params: &serde_json::Value, _env: &std::collections::BTreeMap<String, String>) -> u32 {
        self.version()
    }
    /// The environment entries that enter the key of a node with `params`: `env` (its [`Self::env_keys`]
    /// entries that are set) unless some of them cannot change what these settings compute.
    fn env_for(
        &self,
        _params: &serde_json::Value,
        env: std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        env
    }
    /// Makes this process compute what a key environment names — `env`, this node's [`Self::env_for`] entries —
    /// in a process that did not make the key (a Slurm compute node, whose CPU may choose otherwise): `Err` with
    /// what to do when this machine cannot.
    fn follow_env(&self, _params: &serde_json::Value, _env: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        Ok(())
    }
    /// One-line description.
    fn doc(&self) -> &'static str;
    /// Type of the artifact it produces.
    fn output(&self) -> &'static str;
    /// Input slots.
    fn inputs(&self) -> Vec<InputSlot>;
    /// Parameters.
    fn params(&self) -> Vec<ParamSpec>;
    /// Environment entries (from `seed`, `backend`, …) that go into its key.
    fn env_keys(&self) -> &'static [&'static str] {
        &["seed"]
    }
    /// Resources it needs, given its parameters and the run's environment (e.g. `backend`).
    fn resources(&self, _params: &serde_json::Value, _env: &BTreeMap<String, String>) -> Resources {
        Resources::LIGHT
    }
    /// Cross-field checks after types are checked: `Err((param, message))`.
    fn validate(&self, _params: &serde_json::Value) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Writes a value that means what the default means as the default, in the parameters that enter the key
    /// (`keyed`: checked, defaults filled, [`Stage::validate`] passed), so that spelling a default out does not
    /// re-run the node: e.g. `dim = 64` on a preset whose width is 64 is `dim = 0`, an option table's entry at
    /// its default is left out (see [`option_table_key`]). Only what the parameters alone tell; the
    /// node runs on its parameters as written.
    fn canonical_key(&self, _keyed: &mut serde_json::Value) {}
    /// Whether the node's id is part of what it computes (a task's name, which the models trained on it report
    /// their metrics under): then the id is in its key, so a renamed node is recomputed rather than given the
    /// artifact of the old name. Every other kind's output must not depend on its id, nor on its inputs' ids unless
    /// [`Stage::input_ids_in_output`] says so.
    fn id_in_output(&self) -> bool {
        false
    }
    /// Whether what the node computes may depend on its inputs' node ids (a `command` program reads its inputs from
    /// `$POLYFLOW_IN/<slot>/<id>/`): then they are in its key, so renaming an input node re-runs it rather than
    /// keeping an artifact its program, run now, would not find its files to make.
    fn input_ids_in_output(&self) -> bool {
        false
    }
    /// Writes the key parameters as a reader reads them, for explanations only (`status`, `plan`, `compare`): e.g.
    /// the preset's width in place of the `0` that keys "the preset's", so a change reads `heads changed 4 → 2`,
    /// not `0 → 2`. The hash never sees this form.
    fn shown_key(&self, _keyed: &mut serde_json::Value) {}
    /// Checks of the parameters against the pipeline's nodes, once its graph is built: `inputs` holds the ids
    /// of the nodes of each input slot, `nodes` maps every node id of the pipeline to its kind (e.g. a table's
    /// rows name nodes among its inputs, its columns task nodes of the pipeline). `Err((path, message, help))`, where
    /// `path` is a parameter or a path into it (`rows.2.nodes.0`), so the error points at what is wrong, and
    /// `help` says what to do.
    fn check_refs(
        &self,
        _params: &serde_json::Value,
        _inputs: &BTreeMap<String, Vec<String>>,
        _nodes: &BTreeMap<&str, &str>,
    ) -> Result<(), (String, String, String)> {
        Ok(())
    }
    /// Parameters that stand for several, written out once the graph is built, against the pipeline's matrices (a
    /// table's `{ matrix = "cv", over = ["fold"] }` row: one row per setting of `cv`'s other variables). `inputs`
    /// holds the ids of each input slot; `matrix` each node's variables and each declaration's nodes; `written` the
    /// node's parameters whose `{name}` placeholders the pipeline replaced, as written, with the variables it
    /// replaced (where another node's variables are to be written in, as a row's label: `{{x}}` then read once).
    /// What it writes is what the node's key and every later hook ([`Stage::used_inputs`], [`Stage::cells`], the
    /// run) see; called after [`Stage::check_refs`]. Errors as there: `(path, message, help)` with `path` into the
    /// parameters as written.
    fn expand_params(
        &self,
        _params: &mut serde_json::Value,
        _written: &crate::spec::AsWritten,
        _inputs: &BTreeMap<String, Vec<String>>,
        _matrix: &MatrixFacts<'_>,
    ) -> Result<(), (String, String, String)> {
        Ok(())
    }
    /// The inputs the node reads of those wired to it (`inputs`: the ids of each slot), where it reads fewer
    /// (a table reads the runs its rows name, of `runs = ["sweep"]`): the node then depends on these alone, so
    /// that neither a change nor a failure of another can make it stale or skip it. `None`: all of them.
    fn used_inputs(&self, _params: &serde_json::Value, _inputs: &BTreeMap<String, Vec<String>>) -> Option<BTreeMap<String, Vec<String>>> {
        None
    }
    /// Digest of external files the node reads (dataset folders), through `files` (content digests with a stat
    /// cache: unchanged files are not read again). Content only, never paths or mtimes.
    fn external_digest(
        &self,
        _params: &serde_json::Value,
        _base_dir: &Path,
        _files: &crate::fingerprint::FileDigests,
    ) -> Result<Option<String>, StageError> {
        Ok(None)
    }
    /// Cheap checks of what the node will read, done before anything runs or is written (e.g. a dataset path
    /// that is not configured or does not exist): the [`Problem`] names the parameter concerned.
    fn preflight(&self, _params: &serde_json::Value, _base_dir: &Path) -> Result<(), Problem> {
        Ok(())
    }
    /// Checks of the parameters against the run's environment (from [`Stage::env_keys`]' sources: `backend`, …),
    /// done with [`Stage::preflight`] before anything runs (e.g. a precision the chosen backend cannot compute
    /// in, or a backend this build lacks).
    fn preflight_env(&self, _params: &serde_json::Value, _env: &BTreeMap<String, String>) -> Result<(), Problem> {
        Ok(())
    }
    /// What in the node's parameters looks like a mistake without being an error, said as a warning before anything
    /// runs: `(parameter, message)` (a script its command names that no `deps` entry keys). `keyed`: files its key
    /// covers apart from its parameters (a files matrix's), relative to `base_dir`.
    fn lints(&self, _params: &serde_json::Value, _base_dir: &Path, _keyed: &[String]) -> Vec<(String, String)> {
        vec![]
    }
    /// What the node's artifact will be, from its parameters and its inputs' declarations alone, with no data
    /// read (e.g. a dataset's declared class count, a preprocessing node's tensor shape) or at most a file's
    /// header (a checkpoint's geometry, its paths relative to `base_dir`): lets [`Stage::report_declared`] and
    /// [`Stage::check_declared`] work before anything ran. `None` where only running can tell. `inputs` holds a
    /// declaration for every input of every slot.
    fn declare(
        &self,
        _params: &serde_json::Value,
        _base_dir: &Path,
        _inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        None
    }
    /// Checks of the parameters against what the inputs will be (their [`Stage::declare`] values, every input of
    /// every slot declared), done with [`Stage::preflight`] before anything runs: e.g. a pretrained checkpoint
    /// whose width or patch size does not fit the model, found before hours of ingestion rather than after.
    fn check_declared(&self, _params: &serde_json::Value, _inputs: &BTreeMap<String, Vec<serde_json::Value>>) -> Result<(), Problem> {
        Ok(())
    }
    /// What the node will do that only its inputs' parameters tell (e.g. a co-training run's schedule from its
    /// tasks' budgets, warmups and learning rates), for `show` before anything runs. `inputs` holds the id and
    /// resolved parameters of the nodes of each input slot. `None`: nothing to add.
    fn outline(&self, _params: &serde_json::Value, _inputs: &BTreeMap<String, Vec<(String, serde_json::Value)>>) -> Option<String> {
        None
    }
    /// The values the node actually uses, where they differ from its canonical parameters (presets resolved,
    /// settings of options not chosen left out, or values an input decides), for `show`; `None` when they are the
    /// parameters as declared. `inputs` as for [`Stage::outline`].
    fn effective(
        &self,
        _params: &serde_json::Value,
        _inputs: &BTreeMap<String, Vec<(String, serde_json::Value)>>,
    ) -> Option<serde_json::Value> {
        None
    }
    /// The cells a node of this kind renders, each with the upstream node ids its value is read from:
    /// (row label, column label, node ids), given its parameters and the ids of its inputs per slot. Lets
    /// `plan` say which cells a change may alter before anything runs. `reads_from(node, other)` tells whether
    /// `other` is `node` or upstream of it (a cell of task T reads only the nodes that trained or probed T);
    /// `kind_of(node)` is the node's kind. Empty for kinds that render no cells.
    fn cells(
        &self,
        _params: &serde_json::Value,
        _inputs: &BTreeMap<String, Vec<String>>,
        _reads_from: &dyn Fn(&str, &str) -> bool,
        _kind_of: &dyn Fn(&str) -> Option<&'static str>,
    ) -> Vec<(String, String, Vec<String>)> {
        vec![]
    }
    /// Does the work, writing the artifact's files through `ctx.out`.
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError>;
    /// Human-readable description of a produced artifact for `polyflow show`; may write previews into `out_dir`.
    fn describe(&self, _artifact: &InputArtifact, _out_dir: &Path) -> Result<String, StageError> {
        Ok(String::new())
    }
    /// Files of the artifact to copy into the project after a run: (file in the artifact, path relative to the
    /// declaring pipeline file). E.g. a table's Markdown into `results/`.
    fn exports(&self, _params: &serde_json::Value) -> Vec<(String, String)> {
        vec![]
    }
    /// Whether the node may export a file to `dest` (a path below `base_dir`, as a folder's export writes it out):
    /// `Err(why)` where it must not (a file its own key reads, which would make it stale after every run; `why`
    /// follows "but"). Asked
    /// for each file before any is written.
    fn export_allowed(&self, _params: &serde_json::Value, _base_dir: &Path, _dest: &Path) -> Result<(), String> {
        Ok(())
    }
    /// Whether an exported file made under command-line overrides says so in its text (a table's Markdown, LaTeX
    /// and JSON do: it cannot pass for the pipeline file's own result). `false`: the files are exported byte for
    /// byte (a program's own outputs, whose format polyflow does not know), and the run says which were made
    /// with overrides.
    fn export_marks(&self) -> bool {
        true
    }
    /// Where the next run would continue from, when an interrupted run's scratch folder (the store's `partial/`,
    /// kept under the node's key) lets it (a training run's readable checkpoint: `update 1200`), so `status` can
    /// say so.
    fn resume_point(&self, _scratch: &Path) -> Option<String> {
        None
    }
    /// A file of the artifact to print after a run (e.g. the rendered table).
    fn summary_file(&self) -> Option<&'static str> {
        None
    }
    /// Input slots whose artifacts [`Stage::report`] needs (e.g. the tasks of a model, not its training).
    fn report_slots(&self) -> &'static [&'static str] {
        &[]
    }
    /// A report computed without running the node (e.g. parameter counts), for `polyflow params`; gets the
    /// artifacts of [`Stage::report_slots`]. `None` if the kind has no such report.
    fn report(
        &self,
        _params: &serde_json::Value,
        _inputs: &BTreeMap<String, Vec<InputArtifact>>,
    ) -> Option<Result<serde_json::Value, StageError>> {
        None
    }
    /// [`Stage::report`] from the inputs' [`Stage::declare`] values instead of their artifacts (nothing run).
    fn report_declared(
        &self,
        _params: &serde_json::Value,
        _inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<Result<serde_json::Value, StageError>> {
        None
    }
}

/// Kind name → stage.
#[derive(Clone, Default)]
pub struct Registry {
    stages: BTreeMap<&'static str, Arc<dyn Stage>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers a stage (replacing one of the same kind).
    pub fn register(&mut self, stage: impl Stage) -> &mut Self {
        self.stages.insert(stage.kind(), Arc::new(stage));
        self
    }
    /// The stage of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.stages.get(kind)
    }
    /// All kind names.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + Clone + '_ {
        self.stages.keys().copied()
    }
    /// All stages.
    pub fn stages(&self) -> impl Iterator<Item = &Arc<dyn Stage>> {
        self.stages.values()
    }
}
