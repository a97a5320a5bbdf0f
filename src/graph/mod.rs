//! The validated DAG: a [`Pipeline`] checked against the [`Registry`] and turned into a petgraph graph.
//!
//! Checks done here, each reported at the file:line:col that caused it: unknown kind, unknown parameter
//! (with the closest suggestion), wrong type or out-of-range value, missing required parameter, unknown or
//! missing input slot, dangling reference, input of the wrong artifact type, and cycles (printed).

use crate::spec::error::suggest;
use crate::spec::{Pipeline, SpecError, SpecErrorKind as K};
use crate::stage::{Mismatch, Registry, Stage};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A validated node.
pub struct GNode {
    /// Node id.
    pub id: String,
    /// The stage implementing its kind.
    pub stage: Arc<dyn Stage>,
    /// Canonical parameters with defaults filled.
    pub params: serde_json::Value,
    /// The parameters its key covers: `params` without the `Path` ones (where a dataset or checkpoint is), whose
    /// content the key covers instead ([`crate::stage::Stage::external_digest`]): data moved to another disk, or
    /// mounted elsewhere on a teammate's machine, keeps its key. Computed once, here.
    pub keyed: serde_json::Value,
    /// Slot → upstream node indices.
    pub inputs: BTreeMap<String, Vec<usize>>,
    /// Directory of the declaring file.
    pub base_dir: std::path::PathBuf,
    /// Where the node is declared (`file:line:col`), for messages.
    pub location: String,
    /// Its `resources = { … }` (not part of its key).
    pub resources: crate::spec::NodeResources,
    /// Replicate index of a `seeds = N` node: it runs with seed = pipeline seed + this.
    pub seed_offset: u64,
    /// The files its matrix runs over, relative to `base_dir`: hashed into its key (see
    /// [`crate::spec::files_matrix`]).
    pub files: Vec<String>,
    /// The parameters its kind wrote out once the graph was built ([`Stage::expand_params`]: a table's rows from a
    /// matrix), whose `{name}` placeholders it read: none of them is passed as written.
    pub written_out: BTreeSet<String>,
}

/// A validated pipeline graph.
pub struct Graph {
    /// Nodes, indexed like the petgraph node weights.
    pub nodes: Vec<GNode>,
    /// Edges upstream → downstream.
    pub dag: DiGraph<usize, ()>,
    /// Id → index.
    pub by_id: HashMap<String, usize>,
    /// The pipeline it came from.
    pub pipeline: Pipeline,
    /// The parsed `[executor]` table.
    pub executor: crate::spec::ExecutorSpec,
}

/// Checks the overrides of the profiles not in use: every key a parameter of the kind, every value of its type
/// (values with a `{…}` template are checked once expanded, when the profile is used).
fn check_dormant(p: &Pipeline, reg: &Registry) -> Result<(), SpecError> {
    let src = &p.sources;
    for d in &p.dormant {
        let Some(kind) = &d.kind else { continue };
        // Where it is written: a profile's table, or a `--config` file or `--set` (no profile).
        let whose = if d.profile.is_empty() { "override".to_string() } else { format!("profile `{}`", d.profile) };
        let Some(stage) = reg.get(kind) else {
            return Err(SpecError::at(src, d.span, K::UnknownKind, format!("{whose}: unknown node kind `{kind}`"))
                .help(format!("{} (`polyflow kinds` lists them)", suggest(kind, reg.kinds()))));
        };
        let specs = stage.params();
        for (k, e) in &d.entries {
            // Its resources are read as a node's are (`cpus = 0`, a misspelt key), whether the profile is used or not.
            if k == crate::spec::parse::RESOURCES {
                crate::spec::resources::parse_resources(src, Some(e))?;
                continue;
            }
            if crate::spec::NOT_PARAMS.contains(&k.as_str()) {
                continue;
            }
            let Some(spec) = specs.iter().find(|s| s.name == k) else {
                return Err(SpecError::at(src, e.key_span, K::UnknownKey, format!("{whose}: unknown parameter `{k}` for kind `{kind}`"))
                    .help(suggest(k, specs.iter().map(|s| s.name))));
            };
            let v = e.value.to_json();
            if v.as_str().is_some_and(|s| s.contains('{')) {
                continue;
            }
            match spec.ty.check(&v) {
                Ok(_) => {}
                Err(Mismatch::Type(exp)) => {
                    return Err(SpecError::at(
                        src,
                        e.value.span,
                        K::WrongType,
                        format!("{whose}: `{k}` must be {exp}, found {}", e.value.value.describe()),
                    )
                    .help(spec.doc.to_string()))
                }
                Err(Mismatch::Range(why)) => {
                    return Err(SpecError::at(src, e.value.span, K::OutOfRange, format!("{whose}: `{k}`: {why}")).help(spec.doc.to_string()))
                }
            }
        }
    }
    Ok(())
}

/// Where parameter `k`, unknown to node `n`'s kind, belongs instead: one of `n`'s inputs whose kind has it
/// (a task's `lr` set on the training node that reads the task), else the kinds that have it. `None` when no
/// kind has it (a typo: the nearest name is suggested).
fn param_elsewhere(p: &Pipeline, n: &crate::spec::NodeSpec, k: &str, reg: &Registry) -> Option<String> {
    // A variable of its matrix: set through the matrix, not as a parameter.
    if k != "seed" && k != "replicate" && n.matrix.contains_key(k) {
        return Some(format!(
            "`{k}` is a variable of `{}`'s matrix, not a parameter: change its values with `--set '{}.matrix={{ {k} = [...], … }}'` (or in the file), and use `{{{k}}}` where the node needs it",
            n.decl, n.decl
        ));
    }
    let has = |kind: &str| reg.get(kind).is_some_and(|s| s.params().iter().any(|x| x.name == k));
    let inputs: Vec<(String, String)> = n
        .inputs
        .values()
        .flat_map(|(_, refs)| refs)
        .filter_map(|r| {
            let up = p.nodes.iter().find(|m| m.id == r.target || m.decl == r.target)?;
            has(&up.kind).then(|| (r.target.clone(), up.kind.clone()))
        })
        .collect();
    if let Some((id, kind)) = inputs.first() {
        let which = match inputs.len() {
            1 => format!("its input `{id}` (kind `{kind}`)"),
            2..=3 => format!(
                "its inputs {} (kind `{kind}`, each its own)",
                inputs.iter().map(|i| format!("`{}`", i.0)).collect::<Vec<_>>().join(", ")
            ),
            more => format!("its inputs `{id}` and {} more (kind `{kind}`, each its own)", more - 1),
        };
        return Some(format!(
            "`{k}` is a parameter of {which}, not of `{}` nodes: set it there (`--set {id}.{k}=…` or `[node.{id}] {k} = …`)",
            n.kind
        ));
    }
    let kinds: Vec<&str> = reg.kinds().filter(|kind| has(kind)).collect();
    (!kinds.is_empty()).then(|| {
        format!(
            "`{k}` is a parameter of kind{} {}, not of `{}`",
            if kinds.len() == 1 { "" } else { "s" },
            kinds.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", "),
            n.kind
        )
    })
}

/// Validates `p` against `reg` and builds the DAG.
pub fn build(p: Pipeline, reg: &Registry) -> Result<Graph, SpecError> {
    check_dormant(&p, reg)?;
    let src = &p.sources;
    let mut by_id = HashMap::new();
    for (i, n) in p.nodes.iter().enumerate() {
        by_id.insert(n.id.clone(), i);
    }
    // Every node's id and kind, for the checks of references in parameters (`Stage::check_refs`).
    let kinds: BTreeMap<&str, &str> = p.nodes.iter().map(|n| (n.id.as_str(), n.kind.as_str())).collect();
    // Every node's matrix variables and every declaration's nodes, for parameters written over them
    // (`Stage::expand_params`).
    let facts = crate::stage::MatrixFacts { vars: p.nodes.iter().map(|n| (n.id.as_str(), &n.matrix)).collect(), groups: &p.groups };
    let mut nodes = Vec::with_capacity(p.nodes.len());
    for n in &p.nodes {
        let Some(stage) = reg.get(&n.kind) else {
            return Err(SpecError::at(src, n.kind_span, K::UnknownKind, format!("unknown node kind `{}`", n.kind))
                .help(format!("{} (`polyflow kinds` lists them)", suggest(&n.kind, reg.kinds()))));
        };
        let specs = stage.params();
        let mut params = serde_json::Map::new();
        for (k, e) in &n.params {
            let Some(spec) = specs.iter().find(|s| s.name == k) else {
                return Err(SpecError::at(src, e.key_span, K::UnknownKey, format!("unknown parameter `{k}` for kind `{}`", n.kind))
                    .help(param_elsewhere(&p, n, k, reg).unwrap_or_else(|| suggest(k, specs.iter().map(|s| s.name)))));
            };
            if let Some(bad) = e.value.non_finite() {
                return Err(SpecError::at(
                    src,
                    bad.span,
                    K::OutOfRange,
                    format!(
                        "`{k}`: `{}` is not a value a parameter can take",
                        match bad.value {
                            crate::spec::value::Value::Float(f) if f.is_nan() => "nan",
                            crate::spec::value::Value::Float(f) if f < 0.0 => "-inf",
                            _ => "inf",
                        }
                    ),
                )
                .help(
                    "keys are hashed from JSON, and programs read their parameters as JSON, which has no infinity or NaN: \
                     write a large finite number (`1e308`), or a string (`\"inf\"`, which Python's `float()` reads)",
                ));
            }
            match spec.ty.check(&e.value.to_json()) {
                Ok(v) => {
                    let v = match (&spec.ty, &src.files[e.value.span.file].overlay_dir, v.as_str()) {
                        // A relative path given on the command line or in a config file means "from there".
                        (crate::stage::ParamType::Path, Some(dir), Some(s)) if std::path::Path::new(s).is_relative() => {
                            serde_json::Value::String(dir.join(s).to_string_lossy().into_owned())
                        }
                        _ => v,
                    };
                    params.insert(k.clone(), v);
                }
                Err(Mismatch::Type(exp)) => {
                    return Err(SpecError::at(
                        src,
                        e.value.span,
                        K::WrongType,
                        format!("`{k}` must be {exp}, found {}{}", e.value.value.describe(), n.written.note(src, k)),
                    )
                    .help(spec.doc.to_string()))
                }
                Err(Mismatch::Range(why)) => {
                    return Err(SpecError::at(src, e.value.span, K::OutOfRange, format!("`{k}`: {why}{}", n.written.note(src, k)))
                        .help(spec.doc.to_string()))
                }
            }
        }
        for spec in &specs {
            if !params.contains_key(spec.name) {
                match &spec.default {
                    Some(d) => {
                        params.insert(spec.name.to_string(), d.clone());
                    }
                    None => {
                        return Err(SpecError::at(
                            src,
                            n.span,
                            K::Missing,
                            format!("node `{}` misses required parameter `{}`", n.id, spec.name),
                        )
                        .help(format!("add `{} = ...`: {}", spec.name, spec.doc)))
                    }
                }
            }
        }
        // Parameters added to a kind later are left out at their default (`ParamSpec::added`).
        for spec in specs.iter().filter(|s| !s.keyed_default) {
            if params.get(spec.name) == spec.default.as_ref() {
                params.remove(spec.name);
            }
        }
        let mut params = serde_json::Value::Object(params);
        // Inputs.
        let slots = stage.inputs();
        let mut inputs = BTreeMap::new();
        for (slot, (slot_span, refs)) in &n.inputs {
            // (The catch-all slot's own name `*` is no name of an input.)
            let named = slots.iter().find(|s| s.name == slot && s.name != crate::stage::ANY_SLOT);
            let any = slots.iter().find(|s| s.name == crate::stage::ANY_SLOT);
            if named.is_none()
                && any.is_some()
                && (slot.is_empty() || !slot.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                return Err(SpecError::at(src, *slot_span, K::UnknownKey, format!("`{slot}` cannot name an input of `{}`", n.kind))
                    .help("an input's name is a folder name: letters, digits, `_` and `-` (`inputs = { data = \"prep\" }`)"));
            }
            let Some(sd) = named.or(any) else {
                let names: Vec<&str> = slots.iter().map(|s| s.name).collect();
                return Err(SpecError::at(src, *slot_span, K::UnknownKey, format!("kind `{}` has no input slot `{slot}`", n.kind))
                    .help(if names.is_empty() { "this kind takes no inputs".into() } else { suggest(slot, names.iter().copied()) }));
            };
            let mut idx = vec![];
            for r in refs {
                let targets: Vec<&String> = if let Some(g) = p.groups.get(&r.target) {
                    g.iter().collect()
                } else if let Some(prefix) = r.target.strip_suffix(".*") {
                    p.groups.get(prefix).map(|g| g.iter().collect()).unwrap_or_default()
                } else {
                    vec![&r.target]
                };
                if targets.is_empty() {
                    return Err(SpecError::at(src, r.span, K::DanglingReference, format!("`{}` matches no node", r.target)));
                }
                for t in targets {
                    let Some(&j) = by_id.get(t) else {
                        return Err(SpecError::at(
                            src,
                            r.span,
                            K::DanglingReference,
                            format!("input `{slot}` refers to unknown node `{t}`"),
                        )
                        .help(suggest(t, p.nodes.iter().map(|n| n.id.as_str()))));
                    };
                    let up = &p.nodes[j];
                    if let Some(up_stage) = reg.get(&up.kind) {
                        if !sd.types.contains(&up_stage.output()) && !sd.types.contains(&"*") {
                            return Err(SpecError::at(
                                src,
                                r.span,
                                K::InputType,
                                format!(
                                    "input `{slot}` of `{}` takes {} artifacts, but `{t}` ({}) produces `{}`",
                                    n.id,
                                    sd.types.join(" or "),
                                    up.kind,
                                    up_stage.output()
                                ),
                            )
                            .help("connect a node of a fitting kind"));
                        }
                    }
                    // Listed twice (`["a", "a"]`, or a group and a node of it): one input, or a mistake for another.
                    if idx.contains(&j) {
                        return Err(SpecError::at(src, r.span, K::DuplicateId, format!("input `{slot}` of `{}` names `{t}` twice", n.id))
                            .help("list each node once (a group such as a matrix declaration names all its nodes)"));
                    }
                    idx.push(j);
                }
            }
            if !sd.multiple && idx.len() != 1 {
                return Err(SpecError::at(
                    src,
                    *slot_span,
                    K::WrongType,
                    format!("input `{slot}` takes exactly one node, got {}", idx.len()),
                )
                .help("give a single node id"));
            }
            inputs.insert(slot.clone(), idx);
        }
        for sd in &slots {
            if !sd.optional && !inputs.contains_key(sd.name) {
                return Err(SpecError::at(src, n.span, K::Missing, format!("node `{}` misses input `{}`", n.id, sd.name)).help(format!(
                    "add `inputs = {{ {} = \"NODE\" }}` (accepts {})",
                    sd.name,
                    sd.types.join(", ")
                )));
            }
        }
        // Cross-field checks after the inputs are wired: a wrong kind of input is the first thing to fix.
        if let Err((key, msg)) = stage.validate(&params) {
            let span = span_at(&n.params, &key).unwrap_or(n.span);
            let e = SpecError::at(src, span, K::OutOfRange, format!("`{}`: {msg}", param_of(&key)));
            // What the parameter is, as `polyflow kinds` says it.
            return Err(match specs.iter().find(|s| s.name == param_of(&key)) {
                Some(spec) => e.help(format!("`{}`: {}", spec.name, spec.doc)),
                None => e,
            });
        }
        let ids: BTreeMap<String, Vec<String>> = inputs
            .iter()
            .map(|(slot, idx): (&String, &Vec<usize>)| (slot.clone(), idx.iter().map(|&j| p.nodes[j].id.clone()).collect()))
            .collect();
        if let Err((key, msg, help)) = stage.check_refs(&params, &ids, &kinds) {
            let span = span_at(&n.params, &key).unwrap_or(n.span);
            return Err(SpecError::at(src, span, K::DanglingReference, format!("`{}`: {msg}", param_of(&key))).help(help));
        }
        let before = params.clone();
        if let Err((key, msg, help)) = stage.expand_params(&mut params, &n.written, &ids, &facts) {
            let span = span_at(&n.params, &key).unwrap_or(n.span);
            return Err(SpecError::at(src, span, K::DanglingReference, format!("`{}`: {msg}", param_of(&key))).help(help));
        }
        let written_out: BTreeSet<String> = match (before.as_object(), params.as_object()) {
            (Some(b), Some(a)) => a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect(),
            _ => BTreeSet::new(),
        };
        // Only what it reads of what is wired to it: its edges, its key.
        if let Some(used) = stage.used_inputs(&params, &ids) {
            for (slot, idx) in inputs.iter_mut() {
                let keep = used.get(slot).cloned().unwrap_or_default();
                idx.retain(|&j| keep.contains(&p.nodes[j].id));
            }
        }
        let mut keyed = params.clone();
        if let Some(m) = keyed.as_object_mut() {
            specs.iter().filter(|s| matches!(s.ty, crate::stage::ParamType::Path)).for_each(|s| {
                m.remove(s.name);
            });
            // Parameters outside the key enter it at their default, whatever their value (keys made while they were
            // keyed, at their default, stay valid).
            for s in specs.iter().filter(|s| !s.keyed) {
                match (&s.default, m.contains_key(s.name)) {
                    (Some(d), true) => {
                        m.insert(s.name.to_string(), d.clone());
                    }
                    _ => {
                        m.remove(s.name);
                    }
                }
            }
        }
        stage.canonical_key(&mut keyed);
        nodes.push(GNode {
            id: n.id.clone(),
            stage: stage.clone(),
            keyed,
            params,
            inputs,
            base_dir: n.base_dir.clone(),
            location: src.locate(n.span).to_string(),
            resources: crate::spec::resources::parse_resources(src, n.resources.as_ref())?,
            seed_offset: n.seed_offset,
            files: n.files.clone(),
            written_out,
        });
    }
    let mut dag = DiGraph::with_capacity(nodes.len(), nodes.len());
    for i in 0..nodes.len() {
        dag.add_node(i);
    }
    for (i, n) in nodes.iter().enumerate() {
        for ups in n.inputs.values() {
            for &u in ups {
                dag.add_edge(NodeIndex::new(u), NodeIndex::new(i), ());
            }
        }
    }
    if let Some(cycle) = find_cycle(&dag) {
        let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].id.as_str()).collect();
        let first = &p.nodes[cycle[0]];
        return Err(SpecError::at(src, first.span, K::Cycle, format!("cycle: {} → {}", names.join(" → "), names[0]))
            .help("remove one of these input references"));
    }
    let executor = crate::spec::resources::parse_executor(&p.sources, &p.executor)?;
    Ok(Graph { nodes, dag, by_id, pipeline: p, executor })
}

/// The span of `path` in a node's parameters: a parameter name, then array indices or table keys, `.`-separated
/// (`rows.2.nodes.0`); the deepest part found.
fn span_at(params: &BTreeMap<String, crate::spec::value::Entry>, path: &str) -> Option<crate::spec::source::Span> {
    use crate::spec::value::Value;
    let mut parts = path.split('.');
    let mut v = &params.get(parts.next()?)?.value;
    for part in parts {
        let next = match &v.value {
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            Value::Table(t) => t.get(part).map(|e| &e.value),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => break,
        }
    }
    Some(v.span)
}

/// The parameter a path into the parameters starts with.
fn param_of(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

fn find_cycle(dag: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    for scc in petgraph::algo::tarjan_scc(dag) {
        if scc.len() > 1 || dag.contains_edge(scc[0], scc[0]) {
            // Walk the cycle inside the SCC.
            let set: std::collections::HashSet<_> = scc.iter().copied().collect();
            let start = *scc.iter().min().unwrap();
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = dag.neighbors(cur).filter(|n| set.contains(n)).min().unwrap();
                if next == start || path.contains(&next) {
                    break;
                }
                path.push(next);
                cur = next;
            }
            return Some(path.into_iter().map(|n| n.index()).collect());
        }
    }
    None
}

impl Graph {
    /// The id and parameters of each input of node `i`, by slot: what [`crate::stage::Stage::outline`] and
    /// [`crate::stage::Stage::effective`] read.
    pub fn input_params(&self, i: usize) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
        self.nodes[i]
            .inputs
            .iter()
            .map(|(slot, ups)| (slot.clone(), ups.iter().map(|&u| (self.nodes[u].id.clone(), self.nodes[u].params.clone())).collect()))
            .collect()
    }

    /// Node `i`'s parameters as it uses them ([`crate::stage::Stage::effective`]: a preset's size in place of `0`,
    /// only the chosen optimizer's settings), else as declared.
    pub fn used_params(&self, i: usize) -> serde_json::Value {
        let n = &self.nodes[i];
        n.stage.effective(&n.params, &self.input_params(i)).unwrap_or_else(|| n.params.clone())
    }

    /// The nodes `name` stands for: a node id, or a matrix or seeds declaration (`st.digits`: every replicate);
    /// `None` if neither.
    pub fn resolve(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(&i) = self.by_id.get(name) {
            return Some(vec![i]);
        }
        self.pipeline.groups.get(name).map(|g| g.iter().filter_map(|x| self.by_id.get(x).copied()).collect())
    }

    /// "did you mean …" for a `name` that [`Graph::resolve`] does not know, among node ids and declarations.
    pub fn suggest(&self, name: &str) -> String {
        suggest(name, self.nodes.iter().map(|n| n.id.as_str()).chain(self.pipeline.groups.keys().map(String::as_str)))
    }

    /// Indices of `targets` and everything they need, in topological order (all nodes if `targets` is empty).
    pub fn select(&self, targets: &[String]) -> Result<Vec<usize>, SpecError> {
        let mut wanted = vec![false; self.nodes.len()];
        // Default targets: the nodes the root file declares (so `run table1.toml` runs Table 1 and what it
        // needs, not everything its includes declare); a file that only includes selects everything.
        let roots: Vec<String> = self.pipeline.nodes.iter().filter(|n| n.span.file == 0).map(|n| n.id.clone()).collect();
        let targets: &[String] = if targets.is_empty() { &roots } else { targets };
        if targets.is_empty() {
            wanted.iter_mut().for_each(|w| *w = true);
        } else {
            let mut stack = vec![];
            for t in targets {
                let ids: Vec<usize> = match self.by_id.get(t) {
                    Some(&i) => vec![i],
                    None => match self.pipeline.groups.get(t) {
                        Some(g) => g.iter().map(|x| self.by_id[x]).collect(),
                        None => {
                            return Err(
                                SpecError::nowhere(K::UnknownTarget, format!("no node `{t}` in this pipeline")).help(self.suggest(t))
                            )
                        }
                    },
                };
                stack.extend(ids);
            }
            while let Some(i) = stack.pop() {
                if !wanted[i] {
                    wanted[i] = true;
                    stack.extend(self.nodes[i].inputs.values().flatten().copied());
                }
            }
        }
        Ok(self.topo_order().into_iter().filter(|&i| wanted[i]).collect())
    }

    /// Seed groups whose replicates differ in more than their seed (e.g. `--set st.digits.s1.clip=0.5`), with
    /// the parameters that differ: a table averages such replicates into one cell as if they were seeds of one
    /// setting, so commands say so.
    pub fn mixed_replicates(&self) -> Vec<(String, Vec<String>)> {
        let mut out = vec![];
        for (name, ids) in &self.pipeline.groups {
            let members: Vec<usize> = ids.iter().filter_map(|x| self.by_id.get(x).copied()).collect();
            // A seed group: its nodes are one matrix entry's replicates (the same matrix values but the replicate).
            let entry = |i: usize| {
                let mut m = self.pipeline.nodes[i].matrix.clone();
                m.remove("seed");
                m.remove("replicate").filter(|r| !r.is_empty()).map(|_| m)
            };
            let first_entry = members.first().and_then(|&i| entry(i));
            if members.len() < 2 || first_entry.is_none() || !members.iter().all(|&i| entry(i) == first_entry) {
                continue;
            }
            let first = &self.nodes[members[0]].keyed;
            let mut differ: BTreeSet<String> = BTreeSet::new();
            for &i in &members[1..] {
                let other = &self.nodes[i].keyed;
                let keys: BTreeSet<&String> =
                    first.as_object().into_iter().flatten().chain(other.as_object().into_iter().flatten()).map(|(k, _)| k).collect();
                differ.extend(keys.into_iter().filter(|k| first.get(k.as_str()) != other.get(k.as_str())).cloned());
            }
            // A parameter that names the replicate's seed or suffix (`value = "{seed}"`, `run = [.., "{seed}"]`)
            // differs by design.
            differ.retain(|k| !members.iter().all(|&i| self.pipeline.nodes[i].per_replicate.contains(k)));
            if !differ.is_empty() {
                out.push((name.clone(), differ.into_iter().collect()));
            }
        }
        out
    }

    /// Every node index in a stable topological order: among the nodes whose inputs are placed, the one declared
    /// first (then replicate `s0` before `s1`), so listings follow the pipeline file, not the graph's internals.
    pub fn topo_order(&self) -> Vec<usize> {
        use std::cmp::Reverse;
        let n = self.nodes.len();
        let mut missing: Vec<usize> = (0..n).map(|i| self.dag.neighbors_directed(NodeIndex::new(i), petgraph::Incoming).count()).collect();
        // Where each node is declared (file, offset), then its index (replicates share a declaration).
        let at = |i: usize| {
            let sp = self.pipeline.nodes[i].span;
            Reverse((sp.file, sp.start, i))
        };
        let mut ready: std::collections::BinaryHeap<Reverse<(usize, usize, usize)>> = (0..n).filter(|&i| missing[i] == 0).map(at).collect();
        let mut out = Vec::with_capacity(n);
        while let Some(Reverse((_, _, i))) = ready.pop() {
            out.push(i);
            for d in self.dag.neighbors(NodeIndex::new(i)) {
                missing[d.index()] -= 1;
                if missing[d.index()] == 0 {
                    ready.push(at(d.index()));
                }
            }
        }
        debug_assert_eq!(out.len(), n, "the graph is acyclic (checked at build)");
        out
    }

    /// Direct downstream nodes of `i`.
    pub fn dependents(&self, i: usize) -> Vec<usize> {
        self.dag.neighbors(NodeIndex::new(i)).map(|n| n.index()).collect()
    }
}

/// Each selected node's [`crate::stage::Stage::declare`] value, computed in topological order from its
/// parameters and its inputs' declarations (a node with an undeclared input has none). Reads no data (at most a
/// file's header).
pub fn declarations(g: &Graph, sel: &[usize]) -> HashMap<usize, serde_json::Value> {
    let mut out: HashMap<usize, serde_json::Value> = HashMap::new();
    for &i in sel {
        let n = &g.nodes[i];
        if let Some(d) = declared_inputs(g, i, &out).and_then(|inputs| n.stage.declare(&n.params, &n.base_dir, &inputs)) {
            out.insert(i, d);
        }
    }
    out
}

/// The declarations of node `i`'s inputs per slot, from `decls` ([`declarations`]), each object naming the
/// input node under `"node"` (for messages); `None` unless every input of every slot is declared.
pub fn declared_inputs(g: &Graph, i: usize, decls: &HashMap<usize, serde_json::Value>) -> Option<BTreeMap<String, Vec<serde_json::Value>>> {
    let named = |u: &usize| {
        let mut d = decls.get(u)?.clone();
        if let Some(o) = d.as_object_mut() {
            o.entry("node").or_insert_with(|| serde_json::Value::String(g.nodes[*u].id.clone()));
        }
        Some(d)
    };
    g.nodes[i].inputs.iter().map(|(slot, ups)| Some((slot.clone(), ups.iter().map(named).collect::<Option<Vec<_>>>()?))).collect()
}

mod render;
pub use render::{to_dot, to_mermaid};
