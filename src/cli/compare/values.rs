//! A compared node's metrics: the numeric leaves of its artifact's `metrics.json` (a `value` node: its
//! `value.json`), and where they come from — its fresh artifact, or the nearest earlier run's (outdated).

use crate::store::{Manifest, Store, StoreError};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where a node's metric values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Its fresh artifact.
    Fresh,
    /// The artifact of its nearest earlier run: the node is stale (or failed), these are its last results.
    Outdated {
        /// What changed since that run (footnotes shorten it: [`changed`]).
        changed: Vec<String>,
        /// When that run finished (unix seconds).
        finished_at: u64,
        /// That run's key.
        key: String,
        /// The settings it was made under (a command line's `--profile`, `--config`, `--set`).
        settings: String,
    },
    /// Its earlier runs were made under other settings (another profile, other overrides): not shown.
    Elsewhere {
        /// The settings of the latest of them.
        settings: String,
    },
    /// Its nearest earlier run's artifact is no longer whole in the store (`gc` removed it, or it is damaged).
    Gone {
        /// When that run finished (unix seconds).
        finished_at: u64,
        /// The file found missing or damaged (`None`: the whole manifest is gone).
        file: Option<String>,
        /// Damaged rather than removed.
        damaged: bool,
    },
    /// No values: it never ran, its artifact has no metrics, or `--fresh-only`.
    Absent,
}

impl Origin {
    /// Whether the values are an earlier run's.
    pub fn outdated(&self) -> bool {
        matches!(self, Origin::Outdated { .. })
    }
}

/// At most this many reasons are named in a footnote (the rest counted; JSON has them all).
const REASONS_SHOWN: usize = 3;
/// At most this many characters of one reason.
const REASON_CHARS: usize = 90;

/// What changed, as a short list for a footnote: each cut to [`REASON_CHARS`], at most [`REASONS_SHOWN`] and a
/// count of the rest.
pub fn changed<T: ToString>(reasons: &[T]) -> Vec<String> {
    let cut = |s: String| match s.char_indices().nth(REASON_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    };
    let mut out: Vec<String> = reasons.iter().take(REASONS_SHOWN).map(|r| cut(r.to_string())).collect();
    if reasons.len() > REASONS_SHOWN {
        out.push(format!("{} more", reasons.len() - REASONS_SHOWN));
    }
    out
}

/// The metrics of artifact `m`: `None` when it has no `metrics.json` (nor `value.json`); an unparsable file
/// has no metrics. A missing or damaged blob is an error (the store moves a damaged one aside).
pub fn read_metrics(store: &Store, m: &Manifest) -> Result<Option<BTreeMap<String, f64>>, StoreError> {
    let Some(f) = m.files.get("metrics.json").or_else(|| m.files.get("value.json")) else {
        return Ok(None);
    };
    let bytes = store.blobs.read(&f.digest)?;
    Ok(Some(serde_json::from_slice::<Value>(&bytes).map(|v| numeric_leaves(&v)).unwrap_or_default()))
}

/// `v` flattened to dotted keys: objects are walked, anything else (arrays included) is one leaf.
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// The numeric leaves of `v` (arrays not walked), dotted.
pub fn numeric_leaves(v: &Value) -> BTreeMap<String, f64> {
    let mut all = BTreeMap::new();
    flatten("", v, &mut all);
    // A bare number (a `value` node's value) is the column `value`.
    all.into_iter().filter_map(|(k, v)| v.as_f64().map(|x| (if k.is_empty() { "value".to_string() } else { k }, x))).collect()
}

/// A value as a cell: strings bare, other JSON compact.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A metric as a cell: integers as such, else 4 decimals.
pub fn show_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::DirtyReason;
    use serde_json::json;

    #[test]
    fn flatten_dots_objects_and_keeps_arrays() {
        let v = json!({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": {}});
        let mut m = BTreeMap::new();
        flatten("", &v, &mut m);
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["a.b", "a.c.d", "e", "f"]);
        assert_eq!(numeric_leaves(&json!({"tasks": {"d": {"test": {"top1": 0.5}}}, "s": "x", "n": 3})).len(), 2);
        assert_eq!(show_num(3.0), "3");
        assert_eq!(show_num(0.123456), "0.1235");
    }

    #[test]
    fn changed_names_a_few_reasons_and_counts_the_rest() {
        let p = |k: &str| DirtyReason::ParamChanged { param: k.into(), old: json!(1), new: json!(2) };
        assert_eq!(changed(&[p("lr")]), ["lr changed 1 → 2"]);
        let many = changed(&[p("a"), p("b"), p("c"), p("d"), p("e")]);
        assert_eq!(many.len(), 4);
        assert_eq!(many[3], "2 more");
        let long = changed(&[DirtyReason::Other { detail: "x".repeat(200) }]);
        assert!(long[0].chars().count() == REASON_CHARS + 1 && long[0].ends_with('…'), "{long:?}");
    }
}
