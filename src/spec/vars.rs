//! Pipeline variables (`[vars]`) and placeholder substitution: `{NAME}` in parameters, typed when alone, list
//! variables spliced into lists, and the parameters as written before substitution ([`AsWritten`]).

use super::error::{SpecError, SpecErrorKind as K};
use super::source::{SourceMap, Span};
use super::value::{named_list, spliced, Entry, SValue, Value};
use std::collections::BTreeMap;

/// A node's variables with the pipeline's `[vars]` added (its matrix's win): as placeholders write them, and typed.
pub(super) fn with_pipeline_vars(
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
pub(super) fn list_var<'a>(v: &SValue, pvars: &'a BTreeMap<String, Entry>) -> Option<&'a Vec<SValue>> {
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
pub(super) fn per_replicate_value(e: &Entry) -> bool {
    e.value.names_variable(&["seed", "replicate"])
}

/// Substitutes a node's variables into parameter `k`'s value; returns the placeholders left, which name no
/// variable of the node: (parameter, name, where), passed as written (a program may want braces) and warned of.
pub(super) fn substitute_param(
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
                written.set_at = values.iter().map(|(name, v)| (name.clone(), v.span)).collect();
            }
        }
        _ => {
            written.params.remove(k);
        }
    }
    found.into_iter().filter(|(name, _)| !vars.contains_key(name)).map(|(name, span)| (k.to_string(), name, span)).collect()
}

/// A node's parameters whose placeholders were replaced, as written, with the variables replaced (see
/// [`super::NodeSpec::written`]).
#[derive(Debug, Clone, Default)]
pub struct AsWritten {
    /// Parameter → its value as written (JSON), for those the replacement changed.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The variables (the node's matrix variables, `seed`, `replicate`, the pipeline's `[vars]`), as `{name}`
    /// writes them; empty where no parameter is kept.
    pub vars: BTreeMap<String, String>,
    /// Where each of those variables got its value (a `[vars]` line, a matrix, `--set vars.x=…`), for errors.
    pub set_at: BTreeMap<String, Span>,
}

impl AsWritten {
    /// For an error on parameter `k`'s value where placeholders wrote it, what they were: `` (written `"{n}"`,
    /// `{n}` being `abc`, set at p.toml:2:5) ``; empty for a value written as it is.
    pub fn note(&self, sources: &SourceMap, k: &str) -> String {
        let Some(w) = self.params.get(k) else { return String::new() };
        let text = w.to_string();
        let mut named: Vec<String> = vec![];
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            if let Some(v) = self.vars.get(name).filter(|_| !named.iter().any(|n| n.starts_with(&format!("`{{{name}}}`")))) {
                let at = self.set_at.get(name).map(|s| format!(", set at {}", sources.locate(*s))).unwrap_or_default();
                named.push(format!("`{{{name}}}` being `{v}`{at}"));
            }
            rest = &after[close + 1..];
        }
        if named.is_empty() {
            return String::new();
        }
        format!(" (written `{text}`, {})", named.join(", "))
    }
}

/// A value as text: a placeholder's replacement, an id's label.
pub(super) fn value_label(v: &SValue) -> String {
    match &v.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => super::value::float_text(*f),
        Value::Bool(b) => b.to_string(),
        _ => serde_json::to_string(&v.to_json()).unwrap_or_default(),
    }
}
