//! Loading a pipeline: TOML parsing with spans, includes, profiles and matrix expansion.
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
use super::overlay::{self, Overlay};
use super::source::{SourceMap, Span};
use super::value::{named_list, spliced, table_from_toml, Entry, SValue, Value};
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

struct Decl {
    id: String,
    key_span: Span,
    table: BTreeMap<String, Entry>,
    base_dir: PathBuf,
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
const SEEDS: &str = "seeds";
const NODE_RESERVED: &[&str] = &["kind", "inputs", "matrix"];
/// Keys of a node table that are not stage parameters.
pub const NOT_PARAMS: &[&str] = &["kind", "inputs", "matrix", RESOURCES, SEEDS];
/// The largest pipeline file (or include) read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most nodes one declaration may expand to (matrix values × seeds).
const MAX_EXPANSION: usize = 100_000;

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

    fn load_file(&mut self, path: &Path, from: Option<Span>) -> Result<(), SpecError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.loaded.contains(&canonical) {
            return Ok(());
        }
        let fail = |sources: &SourceMap, msg: String, help: &str| match from {
            Some(span) => SpecError::at(sources, span, K::Io, msg).help(help),
            None => SpecError::nowhere(K::Io, msg).help(help),
        };
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
            if !self.knows(target) {
                return Err(SpecError::at(&self.sources, *span, K::DanglingReference, format!("override of unknown node `{target}`"))
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
                return Err(SpecError::at(&self.sources, span, K::DanglingReference, format!("override of unknown node `{target}`"))
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

/// Sets parameter `key` of node `node`'s `params` to `e`; a dotted key (`value.lr`, from `--set hp.value.lr=…`) sets
/// one entry of a table parameter at any depth, keeping its other entries. An error names the part that is not a
/// table.
fn set_param(sources: &SourceMap, node: &str, params: &mut BTreeMap<String, Entry>, key: &str, e: Entry) -> Result<(), SpecError> {
    let mut table = params;
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split gives one part at least");
    // `--set +NODE.TABLE.KEY=…` adds an entry; without the `+`, an entry of a table that the table lacks is taken
    // for a misspelling (as Hydra and DVC's `--set-param` do): a run under a misspelt name would run the program
    // with what it had, under a new key.
    let (adds, last) = match last.strip_prefix(super::overlay::ADDS) {
        Some(name) => (true, name),
        None => (false, last),
    };
    let unknown_entry = |here: &str, name: &str, has: Vec<&str>| {
        let there = if has.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has {}", has.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
        };
        // The argument as given, with the `+` (a group's `--set m.params.x=1` reaches each of its nodes).
        let given = sources.files.get(e.key_span.file).and_then(|f| f.display.strip_prefix("--set "));
        let arg = given.map_or_else(|| format!("{node}.{key}=…"), |g| g.trim_start().to_string());
        let fix = format!("to add it, put a `+` before the node: `--set +{arg}`");
        let mut help = match crate::spec::error::closest(name, has.iter().copied()) {
            Some(c) => format!("did you mean `{c}`? Or {fix}"),
            None => fix[..1].to_uppercase() + &fix[1..],
        };
        // `--set` reads dots as the path: an entry whose name holds one is set with its whole table.
        if let Some(dotted) = has.iter().find(|k| k.contains('.')) {
            let table = if here.is_empty() { name.to_string() } else { here.to_string() };
            let whole = format!(
                "an entry whose name holds a dot (`{dotted}`) is set with its whole table: `--set '{node}.{table}={{ \"{dotted}\" = … }}'`"
            );
            // What was meant is that entry (`export.p.json` read as the path `p` → `json`): the whole-table way alone.
            help =
                if dotted.starts_with(&format!("{name}.")) { whole[..1].to_uppercase() + &whole[1..] } else { format!("{help}; {whole}") };
        }
        SpecError::at(sources, e.key_span, K::UnknownKey, format!("`{node}.{here}` has no entry `{name}` ({there})")).help(help)
    };
    for (depth, part) in parts.iter().enumerate() {
        let here = parts[..=depth].join(".");
        // A table the node does not declare is made (a kind's table parameter left at its default, `{}`) when the
        // entry is added; the kind then says whether it takes such a parameter.
        if !table.contains_key(*part) {
            if !adds && depth > 0 {
                return Err(unknown_entry(&parts[..depth].join("."), part, table.keys().map(String::as_str).collect()));
            }
            if !adds {
                // A misspelt parameter (`parms`), or a table parameter the node leaves at its default, where every
                // entry is an addition.
                if let Some(c) = crate::spec::error::closest(part, table.keys().map(String::as_str)) {
                    return Err(SpecError::at(sources, e.key_span, K::UnknownKey, format!("`{node}` has no parameter `{part}`")).help(
                        format!(
                            "did you mean `{c}`? (`--set {node}.{c}.{}=…`)",
                            parts[1..].iter().chain([&last]).copied().collect::<Vec<_>>().join(".")
                        ),
                    ));
                }
                return Err(unknown_entry(part, last, vec![]));
            }
            let value = SValue { value: Value::Table(BTreeMap::new()), span: e.value.span };
            table.insert(part.to_string(), Entry { key_span: e.key_span, value });
        }
        match table.get_mut(*part) {
            Some(Entry { value: SValue { value: Value::Table(t), .. }, .. }) => table = t,
            other => {
                let found = other.map_or("absent".to_string(), |p| crate::text::a_or_an(p.value.value.type_name()));
                return Err(SpecError::at(
                    sources,
                    e.key_span,
                    K::WrongType,
                    format!("`{node}.{here}` is {found}, not a table: `{node}.{}` names no entry of it", super::overlay::unmarked(key)),
                )
                .help(format!("set `{here}` whole: `--set {node}.{here}=VALUE`")));
            }
        }
    }
    if !parts.is_empty() && !adds && !table.contains_key(last) {
        return Err(unknown_entry(&parts.join("."), last, table.keys().map(String::as_str).collect()));
    }
    // `+` adds what is not there (as Hydra's `+` does): on an entry the table has, what was meant is unclear (a
    // name thought new, holding a value the program already reads).
    if adds && table.contains_key(last) {
        // The argument as given (a group's `--set +cv.params.x=1` reaches each of its nodes), without its `+`.
        let given = sources.files.get(e.key_span.file).and_then(|f| f.display.strip_prefix("--set "));
        let lhs =
            given.and_then(|g| g.trim_start().strip_prefix(super::overlay::ADDS)).and_then(|g| g.split_once('=')).map(|(l, _)| l.trim());
        let plain = super::overlay::unmarked(key);
        let fix = format!("to set it, leave out the `+`: `--set {}=…`", lhs.map_or_else(|| format!("{node}.{plain}"), str::to_string));
        let owner = lhs.and_then(|l| l.rsplit_once('.')).map_or_else(
            || if parts.is_empty() { node.to_string() } else { format!("{node}.{}", parts.join(".")) },
            |(o, _)| o.to_string(),
        );
        let what = if parts.is_empty() {
            format!("`{owner}` has `{last}` already: a `+` adds a parameter the node leaves out")
        } else {
            format!("`{owner}` has an entry `{last}` already: a `+` adds one the table lacks")
        };
        return Err(SpecError::at(sources, e.key_span, K::UnknownKey, what).help(fix));
    }
    table.insert(last.to_string(), e);
    Ok(())
}

/// Applies an override of an expanded node's parameters (`--set co_all.0.s1.lr=…`, or each node of a group:
/// `group`).
fn apply_expanded_override(
    sources: &SourceMap,
    n: &mut NodeSpec,
    ov: &BTreeMap<String, Entry>,
    group: bool,
    pvars: &BTreeMap<String, Entry>,
) -> Result<(), SpecError> {
    for (k, e) in ov {
        // (An entry to add is marked in its name: `params.+lr`, `+lr`; see `set_param`.)
        let (marked, plain) = (k, super::overlay::unmarked(k));
        let k = &plain;
        let head = k.split('.').next().unwrap_or(k);
        if NODE_RESERVED.contains(&head) {
            return Err(SpecError::at(sources, e.key_span, K::UnknownKey, format!("`{head}` cannot be overridden per expanded node"))
                .help("override it on the declaration id instead"));
        }
        if k == RESOURCES {
            n.resources = Some(e.clone());
        } else if head == RESOURCES {
            // One entry of its resources (`--set train.0.1.resources.cpus=4`), the others kept.
            let empty = Entry { key_span: e.key_span, value: SValue { value: Value::Table(BTreeMap::new()), span: e.value.span } };
            let mut holder = BTreeMap::from([(RESOURCES.to_string(), n.resources.clone().unwrap_or(empty))]);
            set_param(sources, &n.id, &mut holder, marked, e.clone())?;
            n.resources = holder.remove(RESOURCES);
        } else {
            // Its own value now, with this node's variables substituted (`--set c.0.1.s1.run=[…, "{seed}"]`). One
            // that names the replicate differs by design only when the whole group is given it; one replicate's
            // own value is a difference of settings (`Graph::mixed_replicates`).
            let mut e = e.clone();
            if group && per_replicate_value(&e) {
                n.per_replicate.insert(head.to_string());
            } else if head == k {
                // (An entry of a table leaves what the rest of the table says of the replicate.)
                n.per_replicate.remove(k);
            }
            if head == k {
                n.unknown_placeholders.retain(|(p, _, _)| p != k);
            }
            let (vars, values) = with_pipeline_vars(&n.matrix, &n.values, pvars);
            let unknown = if head == k {
                substitute_param(head, &mut e, &vars, &values, &mut n.written)
            } else {
                // One entry of a parameter: the rest of it is written in already, so the parameter as written is
                // no longer known (its kind reads it as it is now).
                n.written.params.remove(head);
                substitute_param(head, &mut e, &vars, &values, &mut AsWritten::default())
            };
            n.unknown_placeholders.extend(unknown);
            set_param(sources, &n.id, &mut n.params, marked, e)?;
        }
    }
    Ok(())
}

/// A node's variables with the pipeline's `[vars]` added (its matrix's win): as placeholders write them, and typed.
fn with_pipeline_vars(
    vars: &BTreeMap<String, String>,
    values: &BTreeMap<String, SValue>,
    pvars: &BTreeMap<String, Entry>,
) -> (BTreeMap<String, String>, BTreeMap<String, SValue>) {
    let (mut vars, mut values) = (vars.clone(), values.clone());
    for (k, e) in pvars {
        if !vars.contains_key(k) {
            // A list in text is its values, space-separated (as a shell word list).
            let text = match &e.value.value {
                Value::Array(a) => a.iter().map(value_label).collect::<Vec<_>>().join(" "),
                _ => value_label(&e.value),
            };
            vars.insert(k.clone(), text);
            values.insert(k.clone(), e.value.clone());
        }
    }
    (vars, values)
}

/// The pipeline's list variable a value names alone (`"{samples}"` with `[vars] samples = ["a", "b"]`): its values.
fn list_var<'a>(v: &SValue, pvars: &'a BTreeMap<String, Entry>) -> Option<&'a Vec<SValue>> {
    named_list(v, |name| pvars.get(name).map(|e| &e.value))
}

/// `[vars]` (or a profile's, or a config file's): names of letters, digits and `_` (not `seed`, `replicate`),
/// each a string, number or boolean, or a list of them.
pub(super) fn vars_table(sources: &SourceMap, e: &Entry) -> Result<BTreeMap<String, Entry>, SpecError> {
    let Some(t) = e.value.as_table() else {
        return Err(SpecError::at(
            sources,
            e.value.span,
            K::WrongType,
            format!("expected a table `[vars]`, found {}", e.value.value.type_name()),
        )
        .help("write `[vars]` with `NAME = VALUE` lines, used as `{NAME}` in parameters and inputs"));
    };
    for (k, v) in t {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k == "seed" || k == "replicate" {
            return Err(SpecError::at(sources, v.key_span, K::UnknownKey, format!("`{k}` cannot name a pipeline variable"))
                .help("a variable's name is letters, digits and `_`; `seed` and `replicate` are every node's own"));
        }
        let scalar = |x: &SValue| matches!(x.value, Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_));
        let ok = match &v.value.value {
            Value::Array(a) => a.iter().all(scalar),
            _ => scalar(&v.value),
        };
        if !ok || v.value.non_finite().is_some() {
            return Err(SpecError::at(
                sources,
                v.value.span,
                K::WrongType,
                format!("`{k}`: a pipeline variable is a string, a finite number, a boolean or a list of them"),
            )
            .help(
                "it is written into parameters and inputs as `{NAME}` (a list alone as a matrix's values, `matrix = { s = \"{NAME}\" }`, \
                 or as arguments of `run`); a table is a parameter of the nodes that use it",
            ));
        }
    }
    Ok(t.clone())
}

/// Whether a parameter's value names the replicate (`{seed}`, `{replicate}`): each replicate has its own.
fn per_replicate_value(e: &Entry) -> bool {
    e.value.names_variable(&["seed", "replicate"])
}

/// Substitutes a node's variables into parameter `k`'s value; returns the placeholders left, which name no
/// variable of the node: (parameter, name, where), passed as written (a program may want braces) and warned of.
fn substitute_param(
    k: &str,
    e: &mut Entry,
    vars: &BTreeMap<String, String>,
    values: &BTreeMap<String, SValue>,
    written: &mut AsWritten,
) -> Vec<(String, String, Span)> {
    // "{lr}" alone keeps the variable's type (so a float stays a float), as the parameter's value and at any depth
    // of a table; a list parameter's elements stay text (`run = [..., "{seed}"]` is an argv).
    let mut found = vec![];
    e.value.placeholders(&mut found);
    let before = e.value.has_braces().then(|| e.value.to_json());
    if let Value::Array(a) = &mut e.value.value {
        // An element that is a list variable alone is its values, one element each (`run = ["agg", "{samples}"]`),
        // as text as the list's other elements are.
        if let Some(s) = spliced(a, |name| values.get(name), |y| SValue { value: Value::Str(value_label(y)), span: y.span }) {
            *a = s;
        }
        e.value.substitute(vars);
    } else {
        e.value.substitute_typed(vars, values);
    }
    match before {
        Some(b) if b != e.value.to_json() => {
            written.params.insert(k.to_string(), b);
            if written.vars.is_empty() {
                written.vars = vars.clone();
            }
        }
        _ => {
            written.params.remove(k);
        }
    }
    found.into_iter().filter(|(name, _)| !vars.contains_key(name)).map(|(name, span)| (k.to_string(), name, span)).collect()
}

/// A node's parameters whose placeholders were replaced, as written, with the variables replaced (see
/// [`NodeSpec::written`]).
#[derive(Debug, Clone, Default)]
pub struct AsWritten {
    /// Parameter → its value as written (JSON), for those the replacement changed.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The variables (the node's matrix variables, `seed`, `replicate`, the pipeline's `[vars]`), as `{name}`
    /// writes them; empty where no parameter is kept.
    pub vars: BTreeMap<String, String>,
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

fn check_id(sources: &SourceMap, id: &str, span: Span) -> Result<(), SpecError> {
    let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    if !ok {
        return Err(SpecError::at(sources, span, K::WrongType, format!("invalid node id `{id}`"))
            .help("use letters, digits, `_` and `-` (dots are reserved for matrix expansions)"));
    }
    // `--set vars.NAME=…` sets a pipeline variable: a node `vars` could not be set so.
    if id == "vars" {
        return Err(SpecError::at(sources, span, K::WrongType, "`vars` cannot be a node id: it names the pipeline's variables")
            .help("give the node another id (`--set vars.NAME=…` sets the variable NAME of `[vars]`)"));
    }
    check_id_length(sources, id, span)
}

/// The longest node id, in bytes: ids name files (`show/<id>/`, a job's logs), and a file name has at most 255.
pub const MAX_ID_BYTES: usize = 200;

fn check_id_length(sources: &SourceMap, id: &str, span: Span) -> Result<(), SpecError> {
    if id.len() <= MAX_ID_BYTES {
        return Ok(());
    }
    let shown: String = id.chars().take(40).collect();
    Err(SpecError::at(sources, span, K::OutOfRange, format!("node id `{shown}…` is {} bytes long, over {MAX_ID_BYTES}", id.len()))
        .help("node ids name files: shorten the id, or the matrix values it is made of"))
}

/// A matrix value's label as a part of a node id: NFC-composed, letters, digits, combining marks and `_-.` kept,
/// anything else `_`.
pub(crate) fn id_label(label: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    let mapped: String =
        label.nfc().map(|c| if c.is_alphanumeric() || is_combining_mark(c) || "_-.".contains(c) { c } else { '_' }).collect();
    // No empty part between dots (`""`, `".."`, `".jpg"` would make ids `m.`, `m...`, `m..jpg`): `_` stands in.
    mapped.split('.').map(|p| if p.is_empty() { "_" } else { p }).collect::<Vec<_>>().join(".")
}

fn value_label(v: &SValue) -> String {
    match &v.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => super::value::float_text(*f),
        Value::Bool(b) => b.to_string(),
        _ => serde_json::to_string(&v.to_json()).unwrap_or_default(),
    }
}

fn expand(
    sources: &SourceMap,
    d: &Decl,
    kind_over: &[(String, Span, BTreeMap<String, Entry>)],
    node_over: Option<&BTreeMap<String, Entry>>,
    seed: u64,
    pvars: &BTreeMap<String, Entry>,
) -> Result<Vec<NodeSpec>, SpecError> {
    let type_err = |v: &SValue, exp: &str| {
        SpecError::at(sources, v.span, K::WrongType, format!("expected {exp}, found {}", v.value.type_name()))
            .help(format!("write {exp} here"))
    };
    let Some(kind_e) = d.table.get("kind") else {
        return Err(SpecError::at(sources, d.key_span, K::Missing, format!("node `{}` has no `kind`", d.id))
            .help("add `kind = \"...\"` (see `polyflow kinds`)"));
    };
    let Some(kind) = kind_e.value.as_str() else {
        return Err(type_err(&kind_e.value, "a string"));
    };
    // `seeds = N`: declaration < kind override < node override, like a parameter, but an expansion axis.
    let mut seeds_e = d.table.get(SEEDS);
    for (kname, _span, ov) in kind_over {
        if kname == kind {
            seeds_e = ov.get(SEEDS).or(seeds_e);
        }
    }
    seeds_e = node_over.and_then(|o| o.get(SEEDS)).or(seeds_e);
    // `seeds = "{n}"`: a pipeline variable's number.
    let seeds_var: Option<Entry> = seeds_e.and_then(|e| {
        let name = e.value.as_str()?.strip_prefix('{')?.strip_suffix('}')?;
        pvars.get(name).map(|v| Entry { key_span: e.key_span, value: SValue { value: v.value.value.clone(), span: e.value.span } })
    });
    let seeds_e = seeds_var.as_ref().or(seeds_e);
    let seeds = match seeds_e {
        None => 1,
        Some(e) => match e.value.value {
            Value::Int(n) if (1..=1000).contains(&n) => n as u64,
            Value::Float(f) if f.fract() == 0.0 && (1.0..=1000.0).contains(&f) => f as u64,
            _ => return Err(type_err(&e.value, "a replicate count from 1 to 1000, e.g. `seeds = 3`")),
        },
    };
    // Matrix: cartesian product over keys (sorted), values kept in order.
    // (name parts, placeholder values, parameter values) of each combination.
    type Combo = (Vec<String>, BTreeMap<String, String>, BTreeMap<String, SValue>);
    let mut combos: Vec<Combo> = vec![(vec![], BTreeMap::new(), BTreeMap::new())];
    // Matrix key → the files pattern it runs over (`raw/{sample}.csv`).
    let mut patterns: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = d.table.get("matrix") {
        let Some(mt) = m.value.as_table() else {
            return Err(type_err(&m.value, "a table of lists, e.g. `{ lr = [0.1, 0.3] }`"));
        };
        if mt.is_empty() {
            return Err(
                SpecError::at(sources, m.value.span, K::OutOfRange, "empty matrix").help("give at least one key with a list of values")
            );
        }
        // Each key's values: a list, or the files a `{ files = "data/{KEY}.csv" }` pattern matches.
        let mut listed: BTreeMap<&String, Vec<SValue>> = BTreeMap::new();
        for (k, e) in mt {
            if let Some((pattern, vals)) = super::files_matrix::values(sources, k, e, &d.base_dir)? {
                listed.insert(k, vals);
                patterns.insert(k.clone(), pattern);
            } else if let Some(vals) = list_var(&e.value, pvars) {
                // `sample = "{samples}"`: a list variable's values.
                listed.insert(k, vals.clone());
            } else if let Value::Array(vals) = &e.value.value {
                if let Some(s) = spliced(vals, |name| pvars.get(name).map(|e| &e.value), SValue::clone) {
                    listed.insert(k, s);
                }
            }
        }
        let mut count = seeds as usize;
        for (k, e) in mt {
            match (listed.get(k), &e.value.value) {
                (Some(vals), _) | (None, Value::Array(vals)) => count = count.saturating_mul(vals.len().max(1)),
                _ => {}
            }
        }
        if count > MAX_EXPANSION {
            return Err(SpecError::at(
                sources,
                m.value.span,
                K::OutOfRange,
                format!("this matrix expands to {count} nodes, over {MAX_EXPANSION}"),
            )
            .help("split the study into several declarations or pipelines"));
        }
        for (k, e) in mt {
            let vals = match (listed.get(k), &e.value.value) {
                (Some(vals), _) | (None, Value::Array(vals)) => vals,
                _ => return Err(type_err(&e.value, "a list of values, or `{ files = \"data/{KEY}.csv\" }`")),
            };
            if vals.is_empty() {
                return Err(SpecError::at(sources, e.value.span, K::OutOfRange, format!("matrix key `{k}` has no values"))
                    .help("list at least one value"));
            }
            // No node's id or parameter may be NaN or an infinity (`1e400` reads as one): said at the value.
            if let Some(bad) = vals.iter().find_map(SValue::non_finite) {
                return Err(SpecError::at(sources, bad.span, K::OutOfRange, format!("matrix key `{k}`: a value is not a finite number"))
                    .help("keys are hashed from JSON, which has no infinity or NaN: write a finite number, or a string (`\"inf\"`)"));
            }
            // The pipeline's `[vars]` in a matrix value (`lr = ["{base}", 0.2]`): the value is the variable's.
            let (pv_text, pv_values) = with_pipeline_vars(&BTreeMap::new(), &BTreeMap::new(), pvars);
            let vals: Vec<SValue> = vals
                .iter()
                .map(|v| {
                    let mut v = v.clone();
                    v.substitute_typed(&pv_text, &pv_values);
                    v
                })
                .collect();
            let mut next = vec![];
            for (labels, vars, values) in &combos {
                for v in &vals {
                    let mut labels = labels.clone();
                    let mut vars = vars.clone();
                    let mut values = values.clone();
                    let label = value_label(v);
                    // Letters, digits and combining marks of any script stay (`lang = ["日本語", "中文", "हिन्दी"]` are
                    // three ids; `é` typed as `e` + U+0301 is the composed `é`); others become `_`.
                    labels.push(id_label(&label));
                    vars.insert(k.clone(), label);
                    values.insert(k.clone(), v.clone());
                    next.push((labels, vars, values));
                }
            }
            combos = next;
        }
    }
    // Replicates: `{seed}` is the seed the replicate runs with (the pipeline's seed + its index, what
    // `$POLYFLOW_SEED` says), `{replicate}` the id suffix (`.s1`; empty without replicates).
    let mut next = vec![];
    for (labels, vars, values) in &combos {
        for s in 0..seeds {
            let (mut labels, mut vars, mut values) = (labels.clone(), vars.clone(), values.clone());
            if seeds > 1 {
                labels.push(format!("s{s}"));
            }
            vars.insert("seed".to_string(), (seed + s).to_string());
            vars.insert("replicate".to_string(), if seeds > 1 { format!(".s{s}") } else { String::new() });
            values.insert("seed".to_string(), SValue { value: Value::Int((seed + s) as i64), span: d.key_span });
            next.push((labels, vars, values, s));
        }
    }
    let mut out = vec![];
    for (labels, vars, values, seed_offset) in next {
        let id = if labels.is_empty() { d.id.clone() } else { format!("{}.{}", d.id, labels.join(".")) };
        check_id_length(sources, &id, d.table.get("matrix").map_or(d.key_span, |m| m.value.span))?;
        let mut params = BTreeMap::new();
        // Precedence: declaration < profile kind override < profile node override.
        for (k, e) in &d.table {
            if NODE_RESERVED.contains(&k.as_str()) {
                continue;
            }
            params.insert(k.clone(), e.clone());
        }
        for (kname, _span, ov) in kind_over {
            if kname == kind {
                for (k, e) in ov {
                    params.insert(k.clone(), e.clone());
                }
            }
        }
        for (k, e) in node_over.into_iter().flatten() {
            set_param(sources, &d.id, &mut params, k, e.clone())?;
        }
        let mut resources = params.remove(RESOURCES);
        params.remove(SEEDS);
        // Parameters each replicate has its own value of by design (`run = […, "--seed", "{seed}"]`).
        let per_replicate: BTreeSet<String> = params.iter().filter(|(_, e)| per_replicate_value(e)).map(|(k, _)| k.clone()).collect();
        let mut unknown_placeholders = vec![];
        // The pipeline's `[vars]` are placeholders too (a matrix variable of the same name wins), but not the
        // node's matrix: tables and `compare` read that.
        let (all_vars, all_values) = with_pipeline_vars(&vars, &values, pvars);
        // Its resources too (`cpus = "{ncpu}"`, `time = "{hours}:00:00"`), typed where alone.
        if let Some(r) = resources.as_mut() {
            r.value.substitute_typed(&all_vars, &all_values);
        }
        let mut written = AsWritten::default();
        for (k, e) in params.iter_mut() {
            unknown_placeholders.extend(substitute_param(k, e, &all_vars, &all_values, &mut written));
        }
        let mut inputs = BTreeMap::new();
        let mut per_replicate_inputs = BTreeSet::new();
        if let Some(ie) = d.table.get("inputs") {
            let Some(it) = ie.value.as_table() else {
                return Err(type_err(&ie.value, "a table `{ slot = \"node\" }`"));
            };
            // A matrix value as node ids spell it (`sub/c` of a files matrix is `clean.sub_c`): an input names
            // nodes. (`{seed}` and `{replicate}` are written as they are.)
            let id_vars: BTreeMap<String, String> =
                all_vars.iter().map(|(k, v)| (k.clone(), if k == "seed" || k == "replicate" { v.clone() } else { id_label(v) })).collect();
            for (slot, se) in it {
                if se.value.names_variable(&["seed", "replicate"]) {
                    per_replicate_inputs.insert(slot.clone());
                }
                let mut sv = se.value.clone();
                // A list variable alone is its ids (`in = "{ids}"`, `in = ["{ids}", "c"]`).
                if let Some(l) = named_list(&sv, |name| all_values.get(name)) {
                    sv.value = Value::Array(l.clone());
                } else if let Value::Array(a) = &sv.value {
                    if let Some(s) = spliced(a, |name| all_values.get(name), SValue::clone) {
                        sv.value = Value::Array(s);
                    }
                }
                sv.substitute(&id_vars);
                let refs = match &sv.value {
                    Value::Str(s) => vec![InputRef { target: s.clone(), span: sv.span }],
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(|s| InputRef { target: s.to_string(), span: x.span })
                                .ok_or_else(|| type_err(x, "a node id string"))
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(type_err(&sv, "a node id or a list of node ids")),
                };
                // A placeholder left after substitution names no variable (node ids hold no braces).
                if let Some(r) = refs.iter().find(|r| r.target.contains('{') && r.target.contains('}')) {
                    let mut known: Vec<&str> = all_vars.keys().map(String::as_str).collect();
                    known.sort();
                    return Err(SpecError::at(
                        sources,
                        r.span,
                        K::DanglingReference,
                        format!("`{}` holds braces, which no node id does: a placeholder there names no variable of `{}`", r.target, d.id),
                    )
                    .help(format!(
                        "`{{name}}` is replaced by a variable's value (`{{{{name}}}}` is a literal `{{name}}`, which no id holds); its variables: {}",
                        known.iter().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ")
                    )));
                }
                inputs.insert(slot.clone(), (se.key_span, refs));
            }
        }
        let files = patterns.iter().filter_map(|(k, p)| vars.get(k).map(|v| p.replace(&format!("{{{k}}}"), v))).collect();
        out.push(NodeSpec {
            id,
            decl: d.id.clone(),
            span: d.key_span,
            kind: kind.to_string(),
            kind_span: kind_e.value.span,
            inputs,
            params,
            matrix: vars,
            values,
            base_dir: d.base_dir.clone(),
            resources,
            seed_offset,
            per_replicate,
            per_replicate_inputs,
            unknown_placeholders,
            written,
            files,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
