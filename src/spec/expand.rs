//! Matrix and seed expansion of one declaration into nodes, with their ids (`train.0.01.s1`) and checks on them.

use super::error::{SpecError, SpecErrorKind as K};
use super::overrides::set_param;
use super::parse::{Decl, InputRef, NodeSpec, MAX_EXPANSION, NODE_RESERVED, RESOURCES, SEEDS};
use super::source::{SourceMap, Span};
use super::value::{named_list, spliced, Entry, SValue, Value};
use super::vars::{list_var, per_replicate_value, substitute_param, value_label, with_pipeline_vars, AsWritten};
use std::collections::{BTreeMap, BTreeSet};

/// Checks a declared node id: letters, digits, `_`, `-`; not `vars`; not too long.
pub(super) fn check_id(sources: &SourceMap, id: &str, span: Span) -> Result<(), SpecError> {
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

/// Checks that an id fits a file name ([`MAX_ID_BYTES`]).
pub(super) fn check_id_length(sources: &SourceMap, id: &str, span: Span) -> Result<(), SpecError> {
    if id.len() <= MAX_ID_BYTES {
        return Ok(());
    }
    let shown: String = id.chars().take(40).collect();
    Err(SpecError::at(sources, span, K::OutOfRange, format!("node id `{shown}…` is {} bytes long, over {MAX_ID_BYTES}", id.len()))
        .help("node ids name files: shorten the id, or the matrix values it is made of"))
}

/// A matrix value's label as a part of a node id: NFC-composed, letters, digits, combining marks and `_-.` kept,
/// anything else `_`.
pub fn id_label(label: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    let mapped: String =
        label.nfc().map(|c| if c.is_alphanumeric() || is_combining_mark(c) || "_-.".contains(c) { c } else { '_' }).collect();
    // No empty part between dots (`""`, `".."`, `".jpg"` would make ids `m.`, `m...`, `m..jpg`): `_` stands in.
    mapped.split('.').map(|p| if p.is_empty() { "_" } else { p }).collect::<Vec<_>>().join(".")
}

/// Expands one declaration (its kind and node overrides applied) into its nodes: one per matrix combination and
/// seed replicate.
pub(super) fn expand(
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
