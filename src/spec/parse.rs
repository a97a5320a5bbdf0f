//! Loading a pipeline: TOML parsing with spans, includes, profiles and overrides, then expansion of each
//! declaration (`expand.rs`), with per-node overrides (`overrides.rs`) and variables (`vars.rs`).
//!
//! Format (see README.md for a tour):
//!
//! ```toml
//! include = ["../datasets/images.toml"]   # relative to this file
//! seed = 0                                # pipeline-wide seed, part of every key
//!
//! [node.train_digits]
//! kind = "train"
//! inputs = { data = "digits_prep" }        # named inputs → other node ids (string or list)
//! matrix = { lr = [0.01, 0.03] }           # optional: one node per value → ids train_digits.0.01, …
//! peak_lr = "{lr}"                         # `{var}` expands matrix variables; "{lr}" alone keeps the type
//!
//! [profile.smoke.kind.train]               # override every node of a kind under --profile smoke
//! steps = 5
//! [profile.smoke.node.train_digits]        # override one node (declaration or expanded id)
//! batch_size = 8
//! ```
//!
//! `seeds = N` on a node (or in a kind/node override) replicates it over seeds: expansion `s` gets the id suffix
//! `.s{s}` and runs with seed = pipeline seed + `s` (so `.s0` has the key the node had without replicates); `{seed}`
//! in its inputs and parameters is that seed (what `$POLYFLOW_SEED` says to a command), and `{replicate}` the id
//! suffix `.s{s}` (empty when `seeds = 1`, which adds no suffix), so `model = "{m}{replicate}"` pairs the
//! replicates of two declarations.

use super::error::{suggest, SpecError, SpecErrorKind as K};
use super::expand::{check_id, expand, id_label};
use super::overlay::{self, Overlay};
use super::overrides::apply_expanded_override;
use super::source::{SourceMap, Span};
use super::value::{table_from_toml, Entry, SValue, Value};
use super::vars::vars_table;
pub use super::vars::AsWritten;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A reference from one node's input slot to another node (or a matrix declaration).
#[derive(Debug, Clone)]
pub struct InputRef {
    /// The referenced id as written (after `{var}` substitution).
    pub target: String,
    /// Where it was written.
    pub span: Span,
}

/// One node after includes, profile overrides and matrix expansion.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique id.
    pub id: String,
    /// The declaration it came from (equals `id` without a matrix).
    pub decl: String,
    /// Span of the declaration header key.
    pub span: Span,
    /// Stage kind.
    pub kind: String,
    /// Span of the `kind` value.
    pub kind_span: Span,
    /// Input slots → referenced ids.
    pub inputs: BTreeMap<String, (Span, Vec<InputRef>)>,
    /// Parameters (every key except `kind`, `inputs`, `matrix`).
    pub params: BTreeMap<String, Entry>,
    /// Matrix variables of this expansion (with `seed` and `replicate`), as `{name}` placeholders write them.
    pub matrix: BTreeMap<String, String>,
    /// The same variables as typed values (`"{lr}"` alone becomes the float), for overrides of this node.
    pub values: BTreeMap<String, SValue>,
    /// Directory of the file that declared the node (relative paths in params resolve here; never hashed).
    pub base_dir: PathBuf,
    /// The node's `resources = { … }` table, for executors (never hashed: it does not change results).
    pub resources: Option<Entry>,
    /// Replicate index of a `seeds = N` declaration: the node runs with seed = pipeline seed + this (0 otherwise).
    pub seed_offset: u64,
    /// Parameters whose declared value names `{seed}` or `{replicate}`: each replicate has its own value by design.
    pub per_replicate: BTreeSet<String>,
    /// Input slots whose declared nodes name `{seed}` or `{replicate}` (`model = "m{replicate}"`): each replicate
    /// has its own inputs by design.
    pub per_replicate_inputs: BTreeSet<String>,
    /// `{name}` placeholders left in its parameters after substitution, naming no variable of it: (parameter,
    /// name, where).
    pub unknown_placeholders: Vec<(String, String, Span)>,
    /// The parameters whose placeholders were replaced, as written (before), with the variables they were replaced
    /// with: a kind that writes a parameter out over other nodes' variables (a table's rows from a matrix:
    /// `label = "lr {lr}"`) reads it from there ([`crate::stage::Stage::expand_params`]).
    pub written: AsWritten,
    /// The files its matrix runs over (`{ files = "raw/{sample}.csv" }`: `raw/a.csv`), relative to `base_dir`: their
    /// content is part of its key, whatever its kind reads.
    pub files: Vec<String>,
}

/// A resolved pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// All loaded files.
    pub sources: SourceMap,
    /// Nodes in declaration order.
    pub nodes: Vec<NodeSpec>,
    /// Pipeline seed (after profile override).
    pub seed: u64,
    /// The active profile.
    pub profile: Option<String>,
    /// All profile names declared anywhere.
    pub profiles: BTreeSet<String>,
    /// Matrix declarations → expanded ids.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The `[executor]` table (the root file's keys over included ones, then the profile's), for executors.
    pub executor: BTreeMap<String, Entry>,
    /// The `[cache]` table: a shared artifact cache (the including file's over included ones).
    pub cache: Option<CacheSpec>,
    /// The `[vars]` no declaration names as `{NAME}` (where each is declared), for a warning: their values are
    /// in no key, so setting them changes nothing.
    pub unused_vars: Vec<(String, Span)>,
    /// The names of the pipeline's `[vars]` (as set for this command).
    pub vars: BTreeSet<String>,
    /// The command-line overrides applied (`--config`, `--set`), so that jobs rebuild the same pipeline.
    pub overlay: Overlay,
    /// The overrides of every profile not in use, so that the graph builder checks them too (a typo in
    /// `[profile.paper…]` is an error today, not on the day someone runs the paper profile), and every kind
    /// override in use (the profile's, `--config`'s and `--set`'s: one of a kind no node has is applied to
    /// nothing, so its kind and parameters are checked here).
    pub dormant: Vec<DormantOverride>,
}

impl Pipeline {
    /// The settings this pipeline was built under, as a command line gives them (`--profile smoke --config
    /// x.toml --set a.b=1`; empty for the file's own): what a run records with what it computes, and what
    /// `status`, `show` and `compare` match an earlier run's against ([`crate::exec::earlier`]).
    pub fn settings(&self) -> String {
        settings_line(self.profile.as_deref(), &self.overlay)
    }

    /// Each expanded node's outermost declaration (`st` for `st.digits.s0`: the shortest group id holding it), for
    /// counting or drawing by declaration; a node of no group is absent.
    pub fn declaration_of(&self) -> std::collections::HashMap<&str, &str> {
        let mut decl: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (gid, ids) in &self.groups {
            for id in ids {
                let e = decl.entry(id.as_str()).or_insert(gid.as_str());
                if gid.len() < e.len() {
                    *e = gid.as_str();
                }
            }
        }
        decl
    }
}

/// `[cache]`: a shared artifact cache folder (see `store::cache`); `--cache` and `POLYFLOW_CACHE` win over it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSpec {
    /// The folder, resolved against the declaring file's folder.
    pub dir: PathBuf,
    /// Publish what runs compute (`publish = false`: only fetch).
    pub publish: bool,
}

/// One `[profile.NAME.node.ID]` or `[profile.NAME.kind.KIND]` table of a profile not in use.
#[derive(Debug, Clone)]
pub struct DormantOverride {
    /// The profile (empty for a `--config` or `--set` override).
    pub profile: String,
    /// The kind whose parameters the keys must be (the node's kind for a node override); `None` when the node's
    /// declaration has no usable `kind` (reported elsewhere).
    pub kind: Option<String>,
    /// Span of the table's header key.
    pub span: Span,
    /// The overrides.
    pub entries: BTreeMap<String, Entry>,
}

/// One `[node.ID]` table as declared (the including file's over an included one of the same id).
pub(super) struct Decl {
    /// The declared id.
    pub(super) id: String,
    /// Span of its header key.
    pub(super) key_span: Span,
    /// Its keys.
    pub(super) table: BTreeMap<String, Entry>,
    /// The declaring file's folder.
    pub(super) base_dir: PathBuf,
}

#[derive(Default)]
struct Loader {
    sources: SourceMap,
    decls: Vec<Decl>,
    decl_index: BTreeMap<String, usize>,
    seed: Option<(u64, Span)>,
    /// profile → (node overrides, kind overrides, seed)
    profiles: BTreeMap<String, ProfileDecl>,
    loaded: BTreeSet<PathBuf>,
    executor: BTreeMap<String, Entry>,
    cache: Option<CacheSpec>,
    /// `[vars]`: the pipeline's own variables (the including file's over included ones).
    vars: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct ProfileDecl {
    nodes: Vec<(String, Span, BTreeMap<String, Entry>)>,
    kinds: Vec<(String, Span, BTreeMap<String, Entry>)>,
    seed: Option<u64>,
    executor: BTreeMap<String, Entry>,
    vars: BTreeMap<String, Entry>,
}

const TOP_KEYS: &[&str] = &["include", "seed", "node", "profile", "description", "executor", "cache", "vars"];
/// The per-node key that executors read and keys never include.
pub(crate) const RESOURCES: &str = "resources";
/// The per-node key that replicates a node over seeds (an expansion axis, never a parameter).
pub(super) const SEEDS: &str = "seeds";
/// Keys of a declaration that no override of one expanded node may set.
pub(super) const NODE_RESERVED: &[&str] = &["kind", "inputs", "matrix"];
/// Keys of a node table that are not stage parameters.
pub const NOT_PARAMS: &[&str] = &["kind", "inputs", "matrix", RESOURCES, SEEDS];
/// The largest pipeline file (or include) read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most nodes one declaration may expand to (matrix values × seeds).
pub(super) const MAX_EXPANSION: usize = 100_000;

/// Settings as a command line gives them: `--profile P` (when one is active), then the overrides
/// ([`Overlay::words`]), joined by spaces; empty for the file's own.
pub fn settings_line(profile: Option<&str>, overlay: &Overlay) -> String {
    let mut v: Vec<String> = profile.iter().map(|p| format!("--profile {p}")).collect();
    v.extend(overlay.words());
    v.join(" ")
}

/// Loads `path` and everything it includes, applies `profile`, expands matrices.
pub fn load(path: &Path, profile: Option<&str>) -> Result<Pipeline, SpecError> {
    load_with(path, profile, &Overlay::default())
}

/// Loads `path` and everything it includes, applies `profile`, then the command-line `overlay`
/// (`--config` files and `--set` overrides), and expands matrices.
pub fn load_with(path: &Path, profile: Option<&str>, overlay: &Overlay) -> Result<Pipeline, SpecError> {
    let mut l = Loader::default();
    l.load_file(path, None)?;
    let p = l.finish(profile, overlay)?;
    if p.nodes.is_empty() {
        // Almost always a wrong or emptied file: refuse before any store is opened or created.
        return Err(SpecError::at(
            &p.sources,
            Span { file: 0, start: 0, end: 0 },
            K::Missing,
            format!("pipeline `{}` declares no nodes", path.display()),
        )
        .help("declare nodes with [node.ID] tables, or include = [\"other.toml\"] files that do"));
    }
    Ok(p)
}

/// Parses pipeline text (for tests); includes resolve against `dir`.
pub fn load_str(name: &str, text: &str, dir: &Path, profile: Option<&str>) -> Result<Pipeline, SpecError> {
    let mut l = Loader::default();
    let file = l.sources.add(&dir.join(name), text.to_string());
    l.parse_file(file, dir)?;
    l.finish(profile, &Overlay::default())
}

impl Loader {
    /// Sets pipeline variable `k` (a profile's or the command line's value): one the pipeline declares, unless
    /// added (`--set +vars.k=…`).
    fn set_var(&mut self, k: &str, e: Entry, adds: bool) -> Result<(), SpecError> {
        match (self.vars.contains_key(k), adds) {
            (true, false) | (false, true) => {
                self.vars.insert(k.to_string(), e);
                Ok(())
            }
            (false, false) => Err(SpecError::at(&self.sources, e.key_span, K::UnknownKey, format!("the pipeline has no variable `{k}`"))
                .help(match crate::spec::error::closest(k, self.vars.keys().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`? Or, to add one, `--set +vars.{k}=…`"),
                    None => format!(
                        "its `[vars]` declare {}; to add one, `--set +vars.{k}=…`",
                        if self.vars.is_empty() {
                            "none".to_string()
                        } else {
                            self.vars.keys().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
                        }
                    ),
                })),
            (true, true) => Err(SpecError::at(
                &self.sources,
                e.key_span,
                K::UnknownKey,
                format!("the pipeline has a variable `{k}` already: a `+` adds one it lacks"),
            )
            .help(format!("to set it, leave out the `+`: `--set vars.{k}=…`"))),
        }
    }

    /// Sets entries of declaration `i`'s matrix (`--set train.matrix.lr=[0.3]`): a value list it has replaced,
    /// one it lacks added only with a `+` (`--set +train.matrix.wd=[0, 0.1]`), the others kept.
    fn set_matrix_entry(&mut self, i: usize, ov: BTreeMap<String, Entry>) -> Result<(), SpecError> {
        let id = self.decls[i].id.clone();
        for (k, e) in ov {
            let (name, adds) = match k.strip_prefix(super::overlay::ADDS) {
                Some(n) => (n.to_string(), true),
                None => (k.clone(), false),
            };
            let Some(Entry { value: SValue { value: Value::Table(m), .. }, .. }) = self.decls[i].table.get_mut("matrix") else {
                return Err(SpecError::at(&self.sources, e.key_span, K::UnknownKey, format!("`{id}` has no matrix"))
                    .help(format!("give it one whole: `--set '{id}.matrix={{ {name} = [...] }}'`")));
            };
            match (m.contains_key(&name), adds) {
                (true, false) | (false, true) => {
                    m.insert(name, e);
                }
                (false, false) => {
                    let has: Vec<String> = m.keys().map(|k| format!("`{k}`")).collect();
                    let near = crate::spec::error::closest(&name, m.keys().map(String::as_str));
                    return Err(SpecError::at(
                        &self.sources,
                        e.key_span,
                        K::UnknownKey,
                        format!("the matrix of `{id}` has no entry `{name}` (it has {})", has.join(", ")),
                    )
                    .help(match near {
                        Some(c) => format!("did you mean `{c}`? Or, to add one, `--set +{id}.matrix.{name}=[...]`"),
                        None => format!("to add one, `--set +{id}.matrix.{name}=[...]`"),
                    }));
                }
                (true, true) => {
                    return Err(SpecError::at(
                        &self.sources,
                        e.key_span,
                        K::UnknownKey,
                        format!("the matrix of `{id}` has an entry `{name}` already: a `+` adds one it lacks"),
                    )
                    .help(format!("to set it, leave out the `+`: `--set {id}.matrix.{name}=…`")));
                }
            }
        }
        Ok(())
    }

    fn load_file(&mut self, path: &Path, from: Option<Span>) -> Result<(), SpecError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.loaded.contains(&canonical) {
            return Ok(());
        }
        let fail = |sources: &SourceMap, msg: String, help: &str| match from {
            Some(span) => SpecError::at(sources, span, K::Io, msg).help(help),
            None => SpecError::nowhere(K::Io, msg).help(help),
        };
        // An include is a pipeline file: `NAME.toml`. Another file (`~/.aws/credentials`, a `.env`) is never read, so
        // no line of it is quoted in an error (a CI log of `plan` on a pull request).
        // (What it resolves to as well: a `x.toml` that links to `~/.aws/credentials` is no pipeline file.)
        if from.is_some() && [path, canonical.as_path()].iter().any(|p| p.extension().is_none_or(|e| e != "toml")) {
            return Err(fail(
                &self.sources,
                format!("`{}` is not a `.toml` file: an include is a pipeline file", path.display()),
                "include pipeline files only (NAME.toml); rename the file if it is one",
            ));
        }
        // Only regular files of a sane size: `include = ["/dev/zero"]` must not hang or exhaust memory.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(fail(
                    &self.sources,
                    format!("`{}` is not a regular file", path.display()),
                    "pipeline files and includes are TOML files",
                ));
            }
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                let msg =
                    format!("`{}` is {} bytes, over the {} MiB a pipeline file may have", path.display(), m.len(), MAX_FILE_BYTES >> 20);
                return Err(fail(&self.sources, msg, "is this the right file? Pipelines are small TOML files"));
            }
            _ => {}
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("cannot read pipeline file `{}`: {e}", path.display());
                let help = if from.is_some() {
                    "include paths are relative to the file that includes them"
                } else {
                    "check the path of the pipeline file"
                };
                return Err(fail(&self.sources, msg, help));
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Point at the first bad byte: the valid prefix is the same in the lossy text.
                let at = e.utf8_error().valid_up_to();
                let bad = e.as_bytes()[at];
                let file = self.sources.add(path, String::from_utf8_lossy(e.as_bytes()).into_owned());
                let span = Span { file, start: at, end: at + 1 };
                return Err(SpecError::at(&self.sources, span, K::Syntax, format!("not UTF-8 text (byte 0x{bad:02x})"))
                    .help("pipeline files are UTF-8 TOML: re-save the file as UTF-8"));
            }
        };
        self.loaded.insert(canonical);
        let file = self.sources.add(path, text);
        // A bare file name's folder is the working directory (`Path::parent` gives "" for it).
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        self.parse_file(file, &dir)
    }

    fn parse_file(&mut self, file: usize, dir: &Path) -> Result<(), SpecError> {
        let text = self.sources.files[file].text.clone();
        let doc = match toml::de::DeTable::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                return Err(super::unclosed::syntax_error(&self.sources, file, &text, &e));
            }
        };
        let top = table_from_toml(doc.get_ref(), file)
            .map_err(|(m, span)| SpecError::at(&self.sources, span, K::OutOfRange, m).help("write a smaller number"))?;
        for (k, e) in &top {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(SpecError::at(&self.sources, e.key_span, K::UnknownKey, format!("unknown top-level key `{k}`"))
                    .help(suggest(k, TOP_KEYS.iter().copied())));
            }
        }
        if let Some(e) = top.get("seed") {
            let seed = match e.value.value {
                Value::Int(i) if i >= 0 => i as u64,
                _ => return Err(self.type_err(&e.value, "a non-negative integer")),
            };
            if let Some((old, sp)) = self.seed {
                if old != seed {
                    let other = self.sources.locate(sp);
                    return Err(SpecError::at(
                        &self.sources,
                        e.value.span,
                        K::DuplicateId,
                        format!("seed = {seed} conflicts with seed = {old} at {other}"),
                    )
                    .help("declare the pipeline seed once"));
                }
            }
            self.seed = Some((seed, e.value.span));
        }
        if let Some(e) = top.get("include") {
            let Value::Array(items) = &e.value.value else {
                return Err(self.type_err(&e.value, "an array of file paths"));
            };
            for item in items {
                let Some(rel) = item.as_str() else {
                    return Err(self.type_err(item, "a file path string"));
                };
                self.load_file(&dir.join(rel), Some(item.span))?;
            }
        }
        if let Some(e) = top.get("vars") {
            let t = vars_table(&self.sources, e)?;
            // Included files were loaded above, so the including file's values win.
            self.vars.extend(t);
        }
        if let Some(e) = top.get("executor") {
            let Some(t) = e.value.as_table() else {
                return Err(self.type_err(&e.value, "a table `[executor]`"));
            };
            // Included files were loaded above, so the including file's keys win.
            self.executor.extend(t.clone());
        }
        if let Some(e) = top.get("cache") {
            let Some(t) = e.value.as_table() else {
                return Err(self.type_err(&e.value, "a table `[cache]`"));
            };
            let mut spec = CacheSpec { dir: PathBuf::new(), publish: true };
            for (k, v) in t {
                match (k.as_str(), &v.value.value) {
                    ("dir", Value::Str(d)) => spec.dir = dir.join(d),
                    ("publish", Value::Bool(b)) => spec.publish = *b,
                    ("dir", _) => return Err(self.type_err(&v.value, "a string (the cache folder)")),
                    ("publish", _) => return Err(self.type_err(&v.value, "a boolean")),
                    _ => {
                        return Err(SpecError::at(&self.sources, v.key_span, K::UnknownKey, format!("unknown key `{k}` in [cache]"))
                            .help(suggest(k, ["dir", "publish"])))
                    }
                }
            }
            if spec.dir.as_os_str().is_empty() {
                return Err(SpecError::at(&self.sources, e.key_span, K::Missing, "[cache] needs `dir`".to_string())
                    .help("add dir = \"/shared/polyflow-cache\" (relative to this file)"));
            }
            // Included files are loaded first: the including file's table wins.
            self.cache = Some(spec);
        }
        if let Some(e) = top.get("node") {
            let Some(nodes) = e.value.as_table() else {
                return Err(self.type_err(&e.value, "a table of nodes `[node.ID]`"));
            };
            for (id, ne) in nodes {
                let Some(table) = ne.value.as_table() else {
                    return Err(self.type_err(&ne.value, "a table (write `[node.ID]` with `kind = ...`)"));
                };
                check_id(&self.sources, id, ne.key_span)?;
                self.add_decl(Decl { id: id.clone(), key_span: ne.key_span, table: table.clone(), base_dir: dir.to_path_buf() })?;
            }
        }
        if let Some(e) = top.get("profile") {
            let Some(profiles) = e.value.as_table() else {
                return Err(self.type_err(&e.value, "a table `[profile.NAME]`"));
            };
            for (name, pe) in profiles {
                let Some(pt) = pe.value.as_table() else {
                    return Err(self.type_err(&pe.value, "a table"));
                };
                let mut decl = std::mem::take(self.profiles.entry(name.clone()).or_default());
                for (k, e) in pt {
                    match k.as_str() {
                        "seed" => match e.value.value {
                            Value::Int(i) if i >= 0 => decl.seed = Some(i as u64),
                            _ => return Err(self.type_err(&e.value, "a non-negative integer")),
                        },
                        "executor" => {
                            let Some(t) = e.value.as_table() else {
                                return Err(self.type_err(&e.value, "a table `[profile.NAME.executor]`"));
                            };
                            decl.executor.extend(t.clone());
                        }
                        "vars" => decl.vars.extend(vars_table(&self.sources, e)?),
                        "node" | "kind" => {
                            let Some(t) = e.value.as_table() else {
                                return Err(self.type_err(&e.value, "a table"));
                            };
                            for (target, oe) in t {
                                let Some(ot) = oe.value.as_table() else {
                                    return Err(self.type_err(&oe.value, "a table of overrides"));
                                };
                                let item = (target.clone(), oe.key_span, ot.clone());
                                if k == "node" {
                                    decl.nodes.push(item)
                                } else {
                                    decl.kinds.push(item)
                                }
                            }
                        }
                        _ => {
                            return Err(SpecError::at(
                                &self.sources,
                                e.key_span,
                                K::UnknownKey,
                                format!("unknown key `{k}` in profile `{name}`"),
                            )
                            .help(suggest(k, ["seed", "node", "kind", "executor", "vars"])))
                        }
                    }
                }
                self.profiles.insert(name.clone(), decl);
            }
        }
        Ok(())
    }

    fn type_err(&self, v: &SValue, expected: &str) -> SpecError {
        SpecError::at(&self.sources, v.span, K::WrongType, format!("expected {expected}, found {}", v.value.type_name()))
            .help(format!("write {expected} here"))
    }

    fn add_decl(&mut self, d: Decl) -> Result<(), SpecError> {
        if let Some(&i) = self.decl_index.get(&d.id) {
            let old = &self.decls[i];
            let same = decl_json(old) == decl_json(&d);
            if same {
                return Ok(());
            }
            let other = self.sources.locate(old.key_span);
            return Err(SpecError::at(
                &self.sources,
                d.key_span,
                K::DuplicateId,
                format!("node `{}` is declared twice, differently (first at {other})", d.id),
            )
            .help("rename one of them, or make both declarations identical"));
        }
        self.decl_index.insert(d.id.clone(), self.decls.len());
        self.decls.push(d);
        Ok(())
    }

    fn finish(mut self, profile: Option<&str>, overlay: &Overlay) -> Result<Pipeline, SpecError> {
        let profiles: BTreeSet<String> = self.profiles.keys().cloned().collect();
        // Every profile's node overrides must name a declared node, active or not (typos never go unnoticed).
        for (pname, decl) in &self.profiles {
            for (target, span, _) in &decl.nodes {
                if !self.knows(target) {
                    return Err(SpecError::at(
                        &self.sources,
                        *span,
                        K::DanglingReference,
                        format!("profile `{pname}` overrides unknown node `{target}`"),
                    )
                    .help(suggest(target, self.decls.iter().map(|d| d.id.as_str()))));
                }
            }
        }
        let mut dormant = vec![];
        for (pname, decl) in self.profiles.iter().filter(|(n, _)| Some(n.as_str()) != profile) {
            for (target, span, entries) in &decl.nodes {
                let d = self.decls.iter().find(|d| d.id == *target || target.starts_with(&format!("{}.", d.id)));
                let kind = d.and_then(|d| d.table.get("kind")).and_then(|e| e.value.as_str()).map(str::to_string);
                dormant.push(DormantOverride { profile: pname.clone(), kind, span: *span, entries: entries.clone() });
            }
            for (kind, span, entries) in &decl.kinds {
                dormant.push(DormantOverride { profile: pname.clone(), kind: Some(kind.clone()), span: *span, entries: entries.clone() });
            }
        }
        let mut seed = self.seed.map(|s| s.0).unwrap_or(0);
        let mut node_over: Vec<(String, Span, BTreeMap<String, Entry>)> = vec![];
        let mut kind_over: Vec<(String, Span, BTreeMap<String, Entry>)> = vec![];
        if let Some(p) = profile {
            let Some(decl) = self.profiles.remove(p) else {
                let list: Vec<&str> = profiles.iter().map(|s| s.as_str()).collect();
                return Err(SpecError::nowhere(K::UnknownProfile, format!("no profile `{p}` in this pipeline")).help(if list.is_empty() {
                    "this pipeline declares no profiles".to_string()
                } else {
                    suggest(p, list.iter().copied())
                }));
            };
            if let Some(s) = decl.seed {
                seed = s;
            }
            node_over = decl.nodes;
            kind_over = decl.kinds;
            // Checked as a profile not in use is: a kind override of a kind no node has is otherwise never
            // looked at, so a misspelt kind would do nothing, silently.
            for (kind, span, entries) in &kind_over {
                dormant.push(DormantOverride { profile: p.to_string(), kind: Some(kind.clone()), span: *span, entries: entries.clone() });
            }
            self.executor.extend(decl.executor);
            // A profile's values of the pipeline's variables (each one the pipeline declares).
            for (k, e) in decl.vars {
                self.set_var(&k, e, false)?;
            }
        }
        // Command-line overrides come last, so they win over the file and the profile.
        let mut extra = overlay::parse(&mut self.sources, overlay)?;
        for item in &mut extra.nodes {
            self.nest_set(item);
        }
        for (target, span, entries) in &extra.nodes {
            // What a node is stays the pipeline's: `--set a.kind=…` made the file's parameters the error.
            if let Some(e) = entries.get("kind") {
                return Err(SpecError::at(&self.sources, e.key_span, K::UnknownKey, format!("`kind` of `{target}` cannot be overridden"))
                    .help("a node's kind is what it is: change it in the pipeline file"));
            }
            // `--set a.inputs.after=c` reads as node `a.inputs`: say how inputs are overridden.
            if let Some(node) = target.strip_suffix(".inputs").filter(|n| self.knows(n)) {
                return Err(SpecError::at(
                    &self.sources,
                    *span,
                    K::DanglingReference,
                    format!("`{target}` is no node: inputs are one value"),
                )
                .help(format!(
                    "override the whole table (its other slots too): `--set '{node}.inputs={{ {} }}'`",
                    entries.iter().map(|(k, e)| format!("{k} = {}", e.value.to_json())).collect::<Vec<_>>().join(", ")
                )));
            }
            // A declaration's matrix entry (`train.matrix.lr`): the declaration says whether it has a matrix.
            let matrix_of =
                target.strip_suffix(".matrix").filter(|d| self.decl_index.contains_key(*d) && !self.decl_index.contains_key(target));
            if !self.knows(target) && matrix_of.is_none() {
                return Err(SpecError::at(
                    &self.sources,
                    *span,
                    K::DanglingReference,
                    format!("override of unknown node {}", node_names(target, |h| self.knows(h))),
                )
                .help(suggest(target, self.decls.iter().map(|d| d.id.as_str()))));
            }
        }
        if let Some(s) = extra.seed {
            seed = s;
        }
        for (k, e, adds) in extra.vars {
            self.set_var(&k, e, adds)?;
        }
        node_over.extend(extra.nodes);
        for (kind, span, entries) in &extra.kinds {
            dormant.push(DormantOverride { profile: String::new(), kind: Some(kind.clone()), span: *span, entries: entries.clone() });
        }
        kind_over.extend(extra.kinds);
        // Declaration-level node overrides (before matrix expansion).
        let mut expanded_over = vec![];
        let mut decl_over: BTreeMap<String, BTreeMap<String, Entry>> = BTreeMap::new();
        for (target, span, ov) in node_over {
            // `+` adds a parameter; a node's own keys (`seeds`, `kind`, …) are set without it.
            if let Some((k, e)) = ov.iter().find(|(k, _)| k.starts_with(super::overlay::ADDS) && NOT_PARAMS.contains(&&k[1..])) {
                let plain = &k[1..];
                return Err(SpecError::at(
                    &self.sources,
                    e.key_span,
                    K::UnknownKey,
                    format!("`{plain}` is a key of every node, not a parameter to add: a `+` adds a parameter the node leaves out"),
                )
                .help(format!("leave out the `+`: `--set {target}.{plain}=…`")));
            }
            // One entry of a declaration's matrix (`--set train.matrix.lr=[0.3]`): that value list replaced, or added
            // with a `+`, the others kept.
            if let Some(i) = target
                .strip_suffix(".matrix")
                .filter(|_| !self.decl_index.contains_key(&target))
                .and_then(|d| self.decl_index.get(d).copied())
            {
                self.set_matrix_entry(i, ov)?;
                continue;
            }
            if let Some(&i) = self.decl_index.get(&target) {
                for (k, e) in ov {
                    if NODE_RESERVED.contains(&k.as_str()) {
                        self.decls[i].table.insert(k, e);
                    } else {
                        decl_over.entry(target.clone()).or_default().insert(k, e);
                    }
                }
            } else {
                expanded_over.push((target, span, ov));
            }
        }
        let mut nodes = vec![];
        let mut groups = BTreeMap::new();
        for d in &self.decls {
            let expanded = expand(&self.sources, d, &kind_over, decl_over.get(&d.id), seed, &self.vars)?;
            if d.table.contains_key("matrix") || expanded.len() > 1 || expanded.first().is_some_and(|n| n.id != d.id) {
                groups.insert(d.id.clone(), expanded.iter().map(|n| n.id.clone()).collect());
            }
            // Each leading part of a matrix's values is a group too (keys in order): `train.0.01` for every `wd`
            // and seed of `lr = 0.01` in `matrix = { lr = […], wd = […] }`.
            for n in &expanded {
                let labels: Vec<String> =
                    n.matrix.iter().filter(|(k, _)| k.as_str() != "seed" && k.as_str() != "replicate").map(|(_, v)| id_label(v)).collect();
                for j in 1..labels.len() {
                    let base = format!("{}.{}", d.id, labels[..j].join("."));
                    let members: &mut Vec<String> = groups.entry(base).or_default();
                    members.push(n.id.clone());
                }
            }
            // The replicates of one matrix expansion are a group too: `st.digits` → `st.digits.s0`, `st.digits.s1`, …
            for n in &expanded {
                let suffix = n.matrix.get("replicate").map(|s| s.as_str()).unwrap_or("");
                if let Some(base) = n.id.strip_suffix(suffix).filter(|b| !suffix.is_empty() && *b != d.id) {
                    groups.entry(base.to_string()).or_insert_with(Vec::new).push(n.id.clone());
                }
            }
            nodes.extend(expanded);
        }
        let mut seen = BTreeMap::new();
        for (k, n) in nodes.iter().enumerate() {
            if let Some(sp) = seen.insert(n.id.clone(), n.span) {
                let first = nodes[..k].iter().find(|m| m.id == n.id).expect("seen before");
                // Two values of one matrix (`"a b"` and `"a_b"`, `1.5` and `"1.5"`): named, as renaming helps not.
                let values = |m: &NodeSpec| {
                    let v: Vec<String> = m
                        .matrix
                        .iter()
                        .filter(|(k, _)| k.as_str() != "seed" && k.as_str() != "replicate")
                        .map(|(k, _)| format!("{k} = {}", m.values.get(k).map(|v| v.to_json().to_string()).unwrap_or_default()))
                        .collect();
                    v.join(", ")
                };
                let (msg, help) = if first.decl == n.decl && !n.matrix.is_empty() {
                    (
                        format!("the matrix of `{}` gives node id `{}` twice: for {} and for {}", n.decl, n.id, values(first), values(n)),
                        "an id keeps letters, digits, `_`, `-` and `.` of each value (others become `_`): make the values differ there"
                            .to_string(),
                    )
                } else {
                    (
                        format!("node id `{}` is produced twice (also at {})", n.id, self.sources.locate(sp)),
                        "matrix expansions append `.VALUE` to the id: rename the declaration that collides".to_string(),
                    )
                };
                return Err(SpecError::at(&self.sources, n.span, K::DuplicateId, msg).help(help));
            }
        }
        // A group named as a node is (a matrix prefix `t.0.1` of `lr = "0.1"`, the node `t.0.1` of `lr = "0"`,
        // `wd = "1"`): the node, everywhere (targets, inputs, `--set`), never one here and the group there.
        groups.retain(|name, _| !seen.contains_key(name));
        for (target, span, ov) in expanded_over {
            // A node id, else a group of expanded nodes (a matrix value's seed replicates, `co_all.2` →
            // `co_all.2.s0` …): an override of a group applies to every node of it, as everywhere else a
            // group name stands for its nodes.
            let (mut target, mut ov) = (target, ov);
            // `--set train.0.1.params.lr=…`: an entry of table `params` of the expanded node (or group) `train.0.1`.
            if !seen.contains_key(&target) && !groups.contains_key(&target) && ov.len() == 1 {
                // A node or a group of them; the declaration itself only for a parameter it declares (`m.7.value`
                // is matrix value 7 of `m`, unknown, not a table `7`).
                let known = |t: &str, rest: &str| {
                    let head = rest.split('.').next().unwrap_or(rest);
                    match self.decl_index.get(t) {
                        Some(&d) => self.decls[d].table.contains_key(head),
                        None => seen.contains_key(t) || groups.contains_key(t),
                    }
                };
                if let Some(dot) = target.match_indices('.').map(|(i, _)| i).rev().find(|&i| known(&target[..i], &target[i + 1..])) {
                    let path = target[dot + 1..].to_string();
                    let (param, e) = ov.pop_first().expect("one entry");
                    ov = BTreeMap::from([(format!("{path}.{param}"), e)]);
                    target.truncate(dot);
                }
            }
            let (members, group): (Vec<String>, bool) = match groups.get(&target) {
                Some(ids) if !seen.contains_key(&target) => (ids.clone(), true),
                _ => (vec![target.clone()], false),
            };
            if !members.iter().all(|m| seen.contains_key(m)) {
                let ids: Vec<&str> = seen.keys().chain(groups.keys()).map(|s| s.as_str()).collect();
                return Err(SpecError::at(
                    &self.sources,
                    span,
                    K::DanglingReference,
                    format!("override of unknown node {}", node_names(&target, |h| seen.contains_key(h) || groups.contains_key(h))),
                )
                .help(suggest(&target, ids.iter().copied())));
            }
            for n in nodes.iter_mut().filter(|n| members.contains(&n.id)) {
                apply_expanded_override(&self.sources, n, &ov, group, &self.vars)?;
            }
        }
        // A variable no declaration names: setting it changes nothing (a misspelt `{split_sed}` is warned of where
        // it is written; this is the other side).
        // (Named as a placeholder, not `${k}` or an escaped `{{k}}`: in a declaration, or in a parameter a
        // profile, a config file or `--set` gave a node.)
        let mut named = BTreeSet::new();
        let mut found = vec![];
        for d in &self.decls {
            SValue { value: Value::Table(d.table.clone()), span: d.key_span }.placeholders(&mut found);
        }
        named.extend(found.into_iter().map(|(name, _)| name));
        for n in &nodes {
            for w in n.written.params.values() {
                let text = w.to_string();
                named.extend(self.vars.keys().filter(|k| crate::spec::value::placeholder_names(&text).contains(&k.as_str())).cloned());
            }
        }
        let unused_vars = self.vars.iter().filter(|(k, _)| !named.contains(*k)).map(|(k, e)| (k.clone(), e.key_span)).collect();
        Ok(Pipeline {
            sources: self.sources,
            vars: self.vars.keys().cloned().collect(),
            unused_vars,
            nodes,
            seed,
            profile: profile.map(|s| s.to_string()),
            profiles,
            groups,
            executor: self.executor,
            cache: self.cache,
            overlay: overlay.clone(),
            dormant,
        })
    }

    /// `--set hp.value.lr=0.3`, read as parameter `lr` of node `hp.value`, where no such node is but `hp` is a
    /// declaration (without a matrix or seeds, whose expanded ids are resolved later): rewritten as the nested
    /// parameter `value.lr` of `hp` (one entry of the table set, the others kept, as the same edit in the file;
    /// [`set_param`]). Deeper paths too (`hp.a.b.c=1`). A table it does not have is made; its kind then says
    /// whether it takes such a parameter.
    fn nest_set(&self, item: &mut (String, Span, BTreeMap<String, Entry>)) {
        let (target, span, entries) = item;
        if self.decl_index.contains_key(target.as_str()) || entries.len() != 1 {
            return;
        }
        let mut cut = target.len();
        while let Some(dot) = target[..cut].rfind('.') {
            cut = dot;
            let (node, path) = (&target[..dot], &target[dot + 1..]);
            let Some(&i) = self.decl_index.get(node) else { continue };
            let d = &self.decls[i];
            let head = path.split('.').next().unwrap_or(path);
            // (`resources` is set as a parameter of the declaration is: one entry, the others kept.)
            if !d.table.contains_key("matrix") && !d.table.contains_key(SEEDS) && (!NOT_PARAMS.contains(&head) || head == RESOURCES) {
                let (param, e) = entries.pop_first().expect("one entry");
                *entries = BTreeMap::from([(format!("{path}.{param}"), e)]);
                *span = Span { end: span.start + dot, ..*span };
                *target = node.to_string();
            }
            return;
        }
    }

    /// Whether `target` names a declaration or (by prefix) an expansion of a matrix declaration.
    fn knows(&self, target: &str) -> bool {
        self.decl_index.contains_key(target)
            || self
                .decls
                .iter()
                .any(|d| target.starts_with(&format!("{}.", d.id)) && (d.table.contains_key("matrix") || d.table.contains_key(SEEDS)))
    }
}

/// Keys whose text is relative to the declaring file's folder: a `path` (a dataset's, a checkpoint's), a
/// command's `deps` and `run` (it runs in that folder).
const FOLDER_RELATIVE: [&str; 3] = ["path", "deps", "run"];

/// A declaration as compared with another of the same id: its table, with a relative `path` resolved against its
/// folder (`./data` and `data` are one folder), and its folder itself where the table holds keys relative to it
/// (the same text in two folders names two places).
fn decl_json(d: &Decl) -> serde_json::Value {
    let mut v = SValue { value: Value::Table(d.table.clone()), span: d.key_span }.to_json();
    if let Some(m) = v.as_object_mut() {
        if let Some(serde_json::Value::String(p)) = m.get("path") {
            let resolved = lexical(&d.base_dir.join(p));
            m.insert("path".into(), serde_json::json!(resolved.to_string_lossy()));
        }
        if FOLDER_RELATIVE.iter().any(|k| *k != "path" && m.contains_key(*k)) {
            m.insert("\u{0}folder".into(), serde_json::json!(lexical(&d.base_dir).to_string_lossy()));
        }
    }
    v
}

/// `p` with `.` removed and `..` applied, without touching the disk.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The node an override's path `a.b.c` (`--set a.b.c.lr=…`) may name, as an error says it: `` `a.b.c` `` where a
/// shorter head is a node (`m.7` of matrix `m`), else every head, `` `a.b.c` or `a.b` or `a` `` (ids hold dots:
/// `--set cc.params.off=1` may be a misspelt `c` as well as a node `cc.params`).
fn node_names(target: &str, known: impl Fn(&str) -> bool) -> String {
    let shorter: Vec<&str> = target.match_indices('.').map(|(i, _)| &target[..i]).collect();
    if shorter.iter().any(|h| known(h)) {
        return format!("`{target}`");
    }
    std::iter::once(target).chain(shorter.into_iter().rev()).map(|h| format!("`{h}`")).collect::<Vec<_>>().join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_override_target_names_each_node_it_may_mean() {
        assert_eq!(node_names("cc.params", |_| false), "`cc.params` or `cc`");
        assert_eq!(node_names("m.7", |h| h == "m"), "`m.7`");
        assert_eq!(node_names("x", |_| false), "`x`");
    }
    use crate::spec::MAX_ID_BYTES;

    fn load_t(text: &str, profile: Option<&str>) -> Result<Pipeline, SpecError> {
        load_str("t.toml", text, Path::new("."), profile)
    }

    #[test]
    fn ids_too_long_for_a_file_name_are_refused_where_written() {
        let long = "a".repeat(MAX_ID_BYTES + 1);
        let e = load_t(&format!("[node.{long}]\nkind = \"value\"\nvalue = 1\n"), None).unwrap_err().to_string();
        assert!(e.contains("201 bytes long, over 200") && e.contains("t.toml:1:"), "{e}");
        let e = load_t(&format!("[node.m]\nkind = \"value\"\nmatrix = {{ x = [\"{}\"] }}\nvalue = 1\n", "b".repeat(199)), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("201 bytes long") && e.contains("t.toml:3:"), "{e}");
        assert!(load_t(&format!("[node.{}]\nkind = \"value\"\nvalue = 1\n", "a".repeat(MAX_ID_BYTES)), None).is_ok());
    }

    #[test]
    fn matrix_expands_with_stable_ids() {
        let p = load_t("[node.a]\nkind = \"value\"\nmatrix = { s = [\"x\", \"y\"], n = [1, 2] }\nv = \"{s}-{n}\"\nn = \"{n}\"\n", None)
            .unwrap();
        let ids: Vec<_> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a.1.x", "a.1.y", "a.2.x", "a.2.y"]);
        assert_eq!(p.nodes[1].params["v"].value.to_json(), serde_json::json!("y-1"));
        assert_eq!(p.nodes[1].params["n"].value.to_json(), serde_json::json!(1));
    }

    /// Combining marks are part of a script's words: two Hindi words differing in a vowel sign are two ids, and
    /// `é` typed decomposed is the composed `é`.
    #[test]
    fn combining_marks_stay_in_ids() {
        let p = load_t("[node.a]\nkind = \"value\"\nmatrix = { w = [\"हिन्दी\", \"हिन्दू\", \"e\u{301}\", \"a b\"] }\n", None).unwrap();
        let ids: Vec<_> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a.हिन्दी", "a.हिन्दू", "a.é", "a.a_b"]);
    }

    #[test]
    fn a_whole_float_keeps_its_point_in_ids_and_text() {
        let p = load_t("[node.a]\nkind = \"value\"\nmatrix = { lr = [1.0, 1, 0.5] }\nv = \"lr={lr}\"\n", None).unwrap();
        let ids: Vec<_> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a.1.0", "a.1", "a.0.5"]);
        assert_eq!(p.nodes[0].params["v"].value.to_json(), serde_json::json!("lr=1.0"));
        assert_eq!(p.nodes[1].params["v"].value.to_json(), serde_json::json!("lr=1"));
    }

    #[test]
    fn a_placeholder_of_no_variable_in_an_input_is_named() {
        let e = load_t(
            "[node.x_1]\nkind = \"value\"\n[node.a]\nkind = \"value\"\nmatrix = { d = [1] }\ninputs = { after = \"x_{dd}\" }\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`x_{dd}` holds braces, which no node id does: a placeholder there names no variable of `a`"), "{text}");
        assert!(e.help.as_deref().is_some_and(|h| h.contains("{d}")), "{e:?}");
    }

    #[test]
    fn profiles_override_kind_then_node() {
        let t = "[node.a]\nkind = \"value\"\nx = 1\n[profile.s.kind.value]\nx = 2\n[profile.s.node.a]\ny = 3\n";
        let p = load_t(t, Some("s")).unwrap();
        assert_eq!(p.nodes[0].params["x"].value.to_json(), serde_json::json!(2));
        assert_eq!(p.nodes[0].params["y"].value.to_json(), serde_json::json!(3));
        let p = load_t(t, None).unwrap();
        assert_eq!(p.nodes[0].params["x"].value.to_json(), serde_json::json!(1));
        assert!(load_t(t, Some("nope")).is_err());
    }

    #[test]
    fn seeds_replicate_nodes_with_offsets_and_pair_them() {
        let t = "[node.a]\nkind = \"value\"\nseeds = 3\nmatrix = { t = [\"x\", \"y\"] }\nv = \"{t}\"\n\
                 [node.b]\nkind = \"value\"\nseeds = 3\ninputs = { after = \"a.x{replicate}\" }\n\
                 [node.c]\nkind = \"value\"\ninputs = { after = \"a.y{replicate}\" }\n";
        let p = load_t(t, None).unwrap();
        let ids: Vec<_> = p.nodes.iter().map(|n| (n.id.as_str(), n.seed_offset)).collect();
        assert_eq!(&ids[..3], &[("a.x.s0", 0), ("a.x.s1", 1), ("a.x.s2", 2)]);
        assert!(!p.nodes[0].params.contains_key("seeds"), "seeds is an expansion axis, never a parameter");
        // Replicates pair up; `seeds = 1` (here: none) adds no suffix and `{replicate}` is empty.
        let b1 = p.nodes.iter().find(|n| n.id == "b.s1").unwrap();
        assert_eq!(b1.inputs["after"].1[0].target, "a.x.s1");
        assert_eq!(p.nodes.iter().find(|n| n.id == "c").unwrap().inputs["after"].1[0].target, "a.y");
        // The replicates of one expansion are a group.
        assert_eq!(p.groups["a.y"], ["a.y.s0", "a.y.s1", "a.y.s2"]);
        // A profile (or kind) override of `seeds` applies before expansion.
        let p = load_t(&format!("{t}[profile.one.kind.value]\nseeds = 1\n"), Some("one")).unwrap();
        assert!(p.nodes.iter().any(|n| n.id == "a.x") && p.nodes.iter().all(|n| n.seed_offset == 0));
        assert!(load_t("[node.a]\nkind = \"value\"\nseeds = 0\n", None).is_err());
    }

    #[test]
    fn seed_is_the_seed_a_replicate_runs_with_and_unknown_placeholders_are_kept() {
        let t = "seed = 7\n[node.a]\nkind = \"command\"\nseeds = 2\nmatrix = { lr = [0.1] }\n\
                 run = [\"sh\", \"-c\", \"echo ${HOME} {{x}} '{print $1}' {lrr}\", \"{seed}\", \"{lr}\"]\nv = \"{seed}\"\nw = 1\n";
        let p = load_t(t, None).unwrap();
        let a1 = p.nodes.iter().find(|n| n.id == "a.0.1.s1").unwrap();
        assert_eq!(a1.seed_offset, 1);
        // `{seed}` alone keeps its type: the integer 8 = 7 + 1, what `$POLYFLOW_SEED` says.
        assert!(matches!(a1.params["v"].value.value, Value::Int(8)));
        let Value::Array(run) = &a1.params["run"].value.value else { panic!() };
        assert!(matches!(&run[3].value, Value::Str(s) if s == "8"));
        assert!(matches!(&run[4].value, Value::Str(s) if s == "0.1"));
        // Each replicate has its own `run` and `v` by design, not `w`.
        assert_eq!(a1.per_replicate, ["run".to_string(), "v".to_string()].into_iter().collect());
        // `{lrr}` names no variable: kept, and named (not `${HOME}`, `{{x}}` or an awk program).
        let Value::Str(line) = &run[2].value else { panic!() };
        assert!(line.ends_with(" {lrr}"), "{line}");
        let names: Vec<(&str, &str)> = a1.unknown_placeholders.iter().map(|(k, n, _)| (k.as_str(), n.as_str())).collect();
        assert_eq!(names, [("run", "lrr")]);
    }

    #[test]
    fn a_doubled_placeholder_of_a_variable_is_a_literal_one() {
        let t = "[node.a]\nkind = \"command\"\nseeds = 2\nrun = [\"echo\", \"{{seed}}={seed}\", \"{{x}}\"]\nw = \"{{seed}}\"\n";
        let p = load_t(t, None).unwrap();
        let a1 = p.nodes.iter().find(|n| n.id == "a.s1").unwrap();
        assert_eq!(a1.params["run"].value.to_json(), serde_json::json!(["echo", "{seed}=1", "{{x}}"]));
        assert_eq!(a1.params["w"].value.to_json(), serde_json::json!("{seed}"));
        // Not named as a placeholder of no variable, and `w` is the same for every replicate.
        assert!(a1.unknown_placeholders.is_empty(), "{:?}", a1.unknown_placeholders);
        assert_eq!(a1.per_replicate, ["run".to_string()].into_iter().collect());
    }

    #[test]
    fn each_leading_part_of_a_matrix_is_a_group() {
        let p = load_t("[node.t]\nkind = \"value\"\nmatrix = { lr = [0.01, 0.1], wd = [0, 1] }\nseeds = 2\nvalue = 1\n", None).unwrap();
        assert_eq!(p.groups["t.0.01"], ["t.0.01.0.s0", "t.0.01.0.s1", "t.0.01.1.s0", "t.0.01.1.s1"]);
        assert_eq!(p.groups["t.0.1.1"], ["t.0.1.1.s0", "t.0.1.1.s1"]);
        assert_eq!(p.groups["t"].len(), 8);
    }

    #[test]
    fn matrix_values_make_no_empty_id_parts() {
        let p = load_t("[node.m]\nkind = \"value\"\nmatrix = { x = [\"\", \"..\", \".jpg\", \"a.\"] }\n", None).unwrap();
        let ids: Vec<_> = p.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["m._", "m._._._", "m._.jpg", "m.a._"]);
        // Two values one id: both named.
        let e = load_t("[node.m]\nkind = \"value\"\nmatrix = { x = [\"a b\", \"a_b\"] }\n", None).unwrap_err().to_string();
        assert!(e.contains("gives node id `m.a_b` twice: for x = \"a b\" and for x = \"a_b\""), "{e}");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = load_t("[node.a]\nkind = \n", None).unwrap_err();
        assert_eq!(e.location.unwrap().line, 2);
    }
}
