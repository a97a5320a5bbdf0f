//! Overrides of an expanded node's parameters (`--set co_all.0.s1.lr=…`, a profile's node table): setting one
//! entry of a (nested) table parameter, `+` additions, and the errors that name what the node has.

use super::error::{SpecError, SpecErrorKind as K};
use super::parse::{NodeSpec, NODE_RESERVED, RESOURCES};
use super::source::SourceMap;
use super::value::{Entry, SValue, Value};
use super::vars::{per_replicate_value, substitute_param, with_pipeline_vars, AsWritten};
use std::collections::BTreeMap;

/// Sets parameter `key` of node `node`'s `params` to `e`; a dotted key (`value.lr`, from `--set hp.value.lr=…`) sets
/// one entry of a table parameter at any depth, keeping its other entries. An error names the part that is not a
/// table.
pub(super) fn set_param(
    sources: &SourceMap,
    node: &str,
    params: &mut BTreeMap<String, Entry>,
    key: &str,
    e: Entry,
) -> Result<(), SpecError> {
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
pub(super) fn apply_expanded_override(
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
                .help(format!("set it on the declaration `{}`: `--set {}.{k}=…`", n.decl, n.decl)));
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
