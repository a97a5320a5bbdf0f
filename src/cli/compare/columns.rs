//! Which columns a comparison shows (the parameters that differ, the metrics asked for) and the `--sort` order.

use super::rows::Row;
use super::values::show;
use crate::cli::{exit, CliError};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Whether the dot-separated names of `pattern` occur in `column` as consecutive whole names, each as is or
/// with a task's `t_` before it (`digits.test.top1` matches `tasks.t_digits.test.top1`, not
/// `tasks.t_spoken_digits.test.top1`).
pub fn segments_match(column: &str, pattern: &str) -> bool {
    let c: Vec<&str> = column.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    p.len() <= c.len()
        && (0..=c.len() - p.len()).any(|k| p.iter().enumerate().all(|(j, x)| c[k + j] == *x || c[k + j].strip_prefix("t_") == Some(x)))
}

/// Parameter columns: every key any row has, kept when `all` or when its values differ (a missing key differs
/// from any value).
pub fn param_columns(rows: &[Row], all: bool) -> Vec<String> {
    let keys: BTreeSet<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    let cols: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            all || {
                let first = rows[0].params.get(k);
                rows.iter().any(|r| r.params.get(k) != first)
            }
        })
        .collect();
    // A matrix variable whose values a parameter's column already shows, row for row (`mlp = "{mlp}"`), is
    // left out.
    let same = |a: &String, b: &String| rows.iter().all(|r| r.params.get(a) == r.params.get(b));
    let cols: Vec<String> =
        cols.iter().filter(|m| !m.starts_with(MATRIX) || !cols.iter().any(|c| !c.starts_with(MATRIX) && same(m, c))).cloned().collect();
    // A parameter every row wrote alike with placeholders (a command's `run = [..., "--lr", "{lr}"]`) differs only
    // through the variables the matrix columns show: left out, unless `all`.
    let alike = |k: &String| rows[0].written.get(k).is_some_and(|w| rows.iter().all(|r| r.written.get(k) == Some(w)));
    if all || !cols.iter().any(|c| c.starts_with(MATRIX)) {
        return cols;
    }
    cols.iter().filter(|k| k.starts_with(MATRIX) || !alike(k)).cloned().collect()
}

/// The prefix of a matrix variable's column (`matrix.lr`).
pub const MATRIX: &str = "matrix.";

/// Metric columns: every metric any row has, only those matching one of `patterns` when some are given (a
/// pattern that matches none is noted on stderr; when none matches anything, a misspelling is likely: an error,
/// as for `--sort`).
pub fn metric_columns(rows: &[Row], patterns: &[String]) -> Result<Vec<String>, CliError> {
    let all: BTreeSet<String> = rows.iter().flat_map(|r| r.metrics.keys().cloned()).collect();
    let cols: Vec<String> = all.iter().filter(|k| patterns.is_empty() || patterns.iter().any(|m| segments_match(k, m))).cloned().collect();
    let unmatched: Vec<&String> = patterns.iter().filter(|m| !cols.iter().any(|k| segments_match(k, m))).collect();
    if cols.is_empty() && !unmatched.is_empty() && !all.is_empty() {
        let m = unmatched[0];
        let hint = crate::spec::error::suggest(m, all.iter().map(String::as_str));
        return Err(CliError::Other(format!("error: --metric: `{m}` matches no metric of these nodes\n  help: {hint}"), exit::USAGE));
    }
    for m in unmatched {
        let hint = if all.is_empty() {
            "they report none: a command writes its numbers as JSON into $POLYFLOW_OUT/metrics.json".to_string()
        } else {
            crate::spec::error::suggest(m, all.iter().map(String::as_str))
        };
        crate::cli::out::errln!("note: --metric `{m}` matches no metric of these nodes ({hint})");
    }
    Ok(cols)
}

/// Sorts `rows` by column `s` (exact, else a unique suffix; a task's `t_` may be left out; `param:`/`metric:`
/// before it picks one of a parameter and a metric of the same name, as the header shows them; bare, the metric),
/// highest first unless `ascending`; a metric by its value (a group's mean); rows without the column last.
pub fn sort(rows: &mut [Row], s: &str, ascending: bool, pcols: &[String], mcols: &[String]) -> Result<(), CliError> {
    let (only, name) = match s.split_once(':') {
        Some(("param", n)) => (Some(false), n),
        Some(("metric", n)) => (Some(true), n),
        _ => (None, s),
    };
    // (name, is a metric), of the kind asked for.
    let cols: Vec<(&String, bool)> =
        mcols.iter().map(|c| (c, true)).chain(pcols.iter().map(|c| (c, false))).filter(|(_, m)| only.is_none_or(|o| o == *m)).collect();
    // As the header names them: a name both a parameter and a metric with its prefix.
    let shown = |(c, m): &(&String, bool)| {
        if mcols.contains(c) && pcols.contains(c) {
            format!("{}:{c}", if *m { "metric" } else { "param" })
        } else {
            c.to_string()
        }
    };
    // A bare name both a parameter and a metric is the metric (a `value` node's parameter `value` is its metric).
    let mut exact: Vec<&(&String, bool)> = cols.iter().filter(|(c, _)| c.as_str() == name).collect();
    if exact.len() == 2 {
        exact.retain(|(_, m)| *m);
    }
    let found = if exact.is_empty() {
        cols.iter().filter(|(c, _)| c.ends_with(&format!(".{name}")) || c.ends_with(&format!(".t_{name}"))).collect()
    } else {
        exact
    };
    let (col, is_metric) = match found.as_slice() {
        [c] => (c.0.clone(), c.1),
        [] => {
            let mut names: Vec<String> = cols.iter().map(shown).collect();
            names.dedup();
            let hint = crate::spec::error::suggest(s, names.iter().map(String::as_str));
            return Err(CliError::Other(format!("error: --sort: no column `{s}`\n  help: {hint}"), exit::USAGE));
        }
        many => {
            let v: Vec<String> = many.iter().map(|c| shown(c)).collect();
            return Err(CliError::Other(
                format!("error: --sort: `{s}` names several columns: {}\n  help: write one of them", v.join(", ")),
                exit::USAGE,
            ));
        }
    };
    let val = |r: &Row| -> Option<Value> {
        if is_metric {
            r.metrics.get(&col).map(|x| json!(x.mean))
        } else {
            r.params.get(&col).cloned()
        }
    };
    let cmp = |x: &Value, y: &Value| match (x.as_f64(), y.as_f64()) {
        (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
        _ => show(x).cmp(&show(y)),
    };
    rows.sort_by(|x, y| match (val(x), val(y)) {
        (Some(p), Some(q)) => {
            let o = cmp(&p, &q);
            if ascending {
                o
            } else {
                o.reverse()
            }
        }
        // Missing values last, whichever the direction.
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name both a parameter and a metric is the metric bare, and either with the prefix its header shows.
    #[test]
    fn sort_takes_the_headers_prefixes() {
        use super::super::rows::Stat;
        let row = |id: &str, p: i64, m: f64| Row {
            id: id.into(),
            kind: "value",
            state: "fresh".into(),
            outdated: false,
            params: [("value".to_string(), json!(p))].into(),
            metrics: [("value".to_string(), Stat { mean: m, std: None, n: 1 })].into(),
            integers: Default::default(),
            members: None,
            written: Default::default(),
        };
        let mut rows = vec![row("a", 1, 20.0), row("b", 2, 10.0)];
        let cols = ["value".to_string()];
        let ids = |r: &[Row]| r.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        sort(&mut rows, "param:value", false, &cols, &cols).unwrap();
        assert_eq!(ids(&rows), ["b", "a"]);
        sort(&mut rows, "metric:value", false, &cols, &cols).unwrap();
        assert_eq!(ids(&rows), ["a", "b"]);
        // Bare: the metric.
        sort(&mut rows, "param:value", false, &cols, &cols).unwrap();
        sort(&mut rows, "value", false, &cols, &cols).unwrap();
        assert_eq!(ids(&rows), ["a", "b"]);
        let e = sort(&mut rows, "valu", false, &cols, &cols).unwrap_err().to_string();
        assert!(e.contains("metric:value, param:value"), "{e}");
    }

    #[test]
    fn metric_patterns_match_whole_names() {
        assert!(segments_match("tasks.t_digits.test.top1", "digits.test.top1"));
        assert!(segments_match("tasks.t_digits.test.top1", "t_digits.test.top1"));
        assert!(segments_match("tasks.t_digits.test.top1", "test.top1"));
        assert!(!segments_match("tasks.t_spoken_digits.test.top1", "digits.test.top1"));
        assert!(!segments_match("tasks.t_digits.test.top5", "test.top1"));
        assert!(!segments_match("loss", "test.loss"));
    }
}
