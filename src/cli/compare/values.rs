//! A compared node's metrics: the numeric leaves of its artifact's `metrics.json` (a `value` node: its
//! `value.json`), and where they come from — its fresh artifact, or the nearest earlier run's (outdated).

use crate::store::{Manifest, Store, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
    let mut out: Vec<String> = reasons.iter().take(REASONS_SHOWN).map(|r| crate::text::cut(&r.to_string(), REASON_CHARS)).collect();
    if reasons.len() > REASONS_SHOWN {
        out.push(format!("{} more", reasons.len() - REASONS_SHOWN));
    }
    out
}

/// A node's metrics: the numeric leaves, and which of them its file holds as integers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Dotted name → value.
    pub values: BTreeMap<String, f64>,
    /// The names whose JSON is an integer (`3`, not `3.0`).
    pub integers: BTreeSet<String>,
}

/// The metrics of artifact `m`: `None` when it has no `metrics.json` (nor `value.json`); an unparsable file
/// has no metrics. A missing or damaged blob is an error (the store moves a damaged one aside).
pub fn read_metrics(store: &Store, m: &Manifest) -> Result<Option<Metrics>, StoreError> {
    let Some(f) = m.files.get("metrics.json").or_else(|| m.files.get("value.json")) else {
        return Ok(None);
    };
    let bytes = store.blobs.read(&f.digest)?;
    Ok(Some(crate::stages::command::parse_metrics(&bytes).map(|v| metrics_of(&v)).unwrap_or_default()))
}

/// The numeric leaves of `v` and which are integers.
pub fn metrics_of(v: &Value) -> Metrics {
    let mut all = BTreeMap::new();
    flatten("", v, &mut all);
    let mut m = Metrics::default();
    for (k, x) in all {
        let Some(f) = x.as_f64() else { continue };
        // A bare number (a `value` node's value) is the column `value`.
        let k = if k.is_empty() { "value".to_string() } else { k };
        if x.is_i64() || x.is_u64() {
            m.integers.insert(k.clone());
        }
        m.values.insert(k, f);
    }
    m
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

/// A metric as JSON: as the node's file has it — an integer there (a count: `3`) as an integer, any other
/// number as a float, even when whole (an accuracy of `1.0`).
pub fn number(x: f64, integer: bool) -> Value {
    if integer && x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
        Value::from(x as i64)
    } else {
        serde_json::json!(x)
    }
}

/// A value as a cell: strings bare, other JSON compact.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// How a metric column's numbers are written, chosen from all of its values so that they line up and none
/// loses its digits: a column of whole numbers (counts, steps) as integers; otherwise a fixed number of
/// decimals, 4 or enough for three significant digits of its smallest non-zero value (a loss of 0.00023 is
/// `0.000230`, not `0.0002`); scientific beyond 8 decimals (a learning rate of 3e-10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumFormat {
    /// Whole numbers.
    Integer,
    /// This many decimals.
    Fixed(usize),
    /// `1.234e-05`.
    Scientific,
}

impl NumFormat {
    /// The format for a column of `values` (non-finite ones are written as Rust writes them, whatever the format);
    /// `integers`: the files hold them as integers, so whole ones may be written so (else `1.0` stays `1.0000`).
    pub fn of(values: impl IntoIterator<Item = f64>, integers: bool) -> Self {
        let finite: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if integers && finite.iter().all(|x| x.fract() == 0.0 && x.abs() < 1e15) {
            return NumFormat::Integer;
        }
        let smallest = finite.iter().map(|x| x.abs()).filter(|&x| x > 0.0).fold(f64::INFINITY, f64::min);
        // Decimals for three significant digits of the smallest value: 0.9 → 3 (at least 4), 0.00023 → 6.
        let decimals = if smallest.is_finite() { (2.0 - smallest.log10().floor()).max(4.0) as usize } else { 4 };
        if decimals > 8 {
            NumFormat::Scientific
        } else {
            NumFormat::Fixed(decimals)
        }
    }

    /// `x` in this format.
    pub fn show(self, x: f64) -> String {
        match self {
            _ if !x.is_finite() => x.to_string(),
            // A zero is a zero in any column (not `0.000e0`).
            NumFormat::Scientific if x == 0.0 => "0".into(),
            NumFormat::Integer => format!("{}", x as i64),
            NumFormat::Fixed(d) => format!("{x:.d$}"),
            NumFormat::Scientific => scientific(x),
        }
    }
}

/// `x` as `1.234e-05` / `2.000e+00`: the exponent signed and of two digits at least, as C's and Python's `%.3e`
/// write it, so a column's exponents line up (Rust's `{:.3e}` writes `2.000e0` beside `3.000e-10`).
fn scientific(x: f64) -> String {
    let s = format!("{x:.3e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
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
        let m = metrics_of(&json!({"tasks": {"d": {"test": {"top1": 0.5, "all": 1.0}}}, "s": "x", "n": 3}));
        assert_eq!(m.values.len(), 3);
        assert_eq!(m.integers.iter().collect::<Vec<_>>(), ["n"], "1.0 is a float in the file, 3 an integer");
        assert_eq!(
            (number(3.0, true).to_string(), number(0.5, false).to_string(), number(148170.0, true).to_string()),
            ("3".into(), "0.5".into(), "148170".into())
        );
        assert_eq!(number(1.0, false).to_string(), "1.0", "an accuracy of 1.0 stays a float");
    }

    #[test]
    fn a_columns_numbers_share_one_format_that_keeps_their_digits() {
        let f = |v: &[f64]| NumFormat::of(v.iter().copied(), true);
        assert_eq!(f(&[3.0, 120.0]), NumFormat::Integer);
        assert_eq!(NumFormat::of([1.0, 1.0], false), NumFormat::Fixed(4), "whole floats (accuracies of 1.0) keep decimals");
        assert_eq!(f(&[0.5, 1.0, 0.0]), NumFormat::Fixed(4), "an accuracy of exactly 1 among others");
        assert_eq!(NumFormat::Fixed(4).show(1.0), "1.0000");
        assert_eq!(NumFormat::Fixed(4).show(0.123456), "0.1235");
        assert_eq!(f(&[0.00023, 2.5]), NumFormat::Fixed(6));
        assert_eq!(NumFormat::Fixed(6).show(0.00023), "0.000230");
        assert_eq!(f(&[0.001, 0.5]), NumFormat::Fixed(5));
        assert_eq!(f(&[3e-10, 1e-9]), NumFormat::Scientific);
        assert_eq!(NumFormat::Scientific.show(3e-10), "3.000e-10");
        assert_eq!(NumFormat::Scientific.show(2.0), "2.000e+00", "exponents line up in a column");
        assert_eq!(NumFormat::Scientific.show(-1.5e-3), "-1.500e-03");
        assert_eq!(NumFormat::Scientific.show(1.23456e120), "1.235e+120");
        assert_eq!(NumFormat::Scientific.show(0.0), "0");
        assert_eq!(f(&[f64::NAN, 2.0]), NumFormat::Integer);
        assert_eq!(NumFormat::Fixed(4).show(f64::NAN), "NaN");
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
