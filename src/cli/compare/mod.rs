//! `compare`: one table of runs (like `dvc exp show`): per node, the parameters that differ between the named
//! nodes (`--all`: every one; with its inputs' ids and a single input's parameters, as `task.lr`) and the
//! metrics of its fresh artifact. Reads the store, runs nothing.

use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::assess_all;
use crate::exec::State;
use crate::graph::Graph;
use crate::stage::Registry;
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `compare` arguments.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    common: Common,
    /// Nodes to compare: ids, matrix declarations (`co_all` → `co_all.0`, `co_all.2`, …) or seed groups
    /// (`st.digits` → `st.digits.s0`, …).
    #[arg(required = true)]
    nodes: Vec<String>,
    /// Every parameter, not only those that differ between the nodes.
    #[arg(long)]
    all: bool,
    /// Sort the rows by this column (a metric or parameter; a unique suffix such as `t_digits.test.top1` is
    /// enough, and a task's `t_` may be left out: `digits.test.top1`), highest first.
    #[arg(long, value_name = "COLUMN")]
    sort: Option<String>,
    /// With `--sort`: lowest first.
    #[arg(long, requires = "sort")]
    ascending: bool,
    /// Only the metric columns containing these whole dot-separated names (repeatable), e.g. `--metric
    /// test.top1`, or `--metric digits.test.top1` (a task's `t_` may be left out; `digits` does not match
    /// `spoken_digits`).
    #[arg(long = "metric", value_name = "TEXT")]
    metric: Vec<String>,
    /// CSV on stdout (raw values; missing ones empty).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Whether the dot-separated names of `pattern` occur in `column` as consecutive whole names, each as is or
/// with a task's `t_` before it (`digits.test.top1` matches `tasks.t_digits.test.top1`, not
/// `tasks.t_spoken_digits.test.top1`).
fn segments_match(column: &str, pattern: &str) -> bool {
    let c: Vec<&str> = column.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    p.len() <= c.len()
        && (0..=c.len() - p.len()).any(|k| p.iter().enumerate().all(|(j, x)| c[k + j] == *x || c[k + j].strip_prefix("t_") == Some(x)))
}

/// The nodes `names` stand for, in order, each once: a node id, else the nodes of a matrix declaration or
/// seed group. Unknown names: exit 2 with a suggestion.
fn expand(g: &Graph, names: &[String]) -> Result<Vec<usize>, CliError> {
    let mut out: Vec<usize> = vec![];
    for n in names {
        let ids: Vec<usize> = match g.by_id.get(n) {
            Some(&i) => vec![i],
            None => match g.pipeline.groups.get(n) {
                Some(v) => v.iter().filter_map(|x| g.by_id.get(x).copied()).collect(),
                None => {
                    let cands = g.nodes.iter().map(|n| n.id.as_str()).chain(g.pipeline.groups.keys().map(|k| k.as_str()));
                    let hint = crate::spec::error::suggest(n, cands);
                    return Err(CliError::Other(format!("error: no node or matrix `{n}` in this pipeline\n  help: {hint}"), exit::USAGE));
                }
            },
        };
        for i in ids {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// `v` flattened to dotted keys: objects are walked, anything else (arrays included) is one leaf.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
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
fn numeric_leaves(v: &Value) -> BTreeMap<String, f64> {
    let mut all = BTreeMap::new();
    flatten("", v, &mut all);
    // A bare number (a `value` node's value) is the column `value`.
    all.into_iter().filter_map(|(k, v)| v.as_f64().map(|x| (if k.is_empty() { "value".to_string() } else { k }, x))).collect()
}

/// A value as a cell: strings bare, other JSON compact.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A metric as a cell: integers as such, else 4 decimals.
fn show_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.4}")
    }
}

/// One compared node.
struct Run {
    id: String,
    kind: &'static str,
    state: State,
    params: BTreeMap<String, Value>,
    metrics: BTreeMap<String, f64>,
}

/// `compare`.
pub fn compare(a: CompareArgs, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&a.common, reg)?;
    let nodes = expand(&g, &a.nodes)?;
    let ids: Vec<String> = nodes.iter().map(|&i| g.nodes[i].id.clone()).collect();
    let sel = g.select(&ids)?;
    let (store, _empty) = super::read_store(&a.common.store)?;
    let states = {
        let index = store.index_read()?;
        assess_all(&g, &sel, &store, &index, &env_of(&g, &a.common.backend), &|_| false)
    };
    let mut runs = vec![];
    for &i in &nodes {
        let n = &g.nodes[i];
        let mut params = BTreeMap::new();
        flatten("", &n.params, &mut params);
        // What it was computed from: each input slot's node ids, and a single input's own parameters under the
        // slot's name (a `train` node's `task.lr`, `task.steps`: what tells two baselines apart).
        // (The node's own parameters win a name they share.)
        let mut from = BTreeMap::new();
        for (slot, ups) in &n.inputs {
            let ids: Vec<Value> = ups.iter().map(|&u| json!(g.nodes[u].id)).collect();
            match ups.as_slice() {
                [u] => {
                    from.insert(slot.clone(), ids[0].clone());
                    flatten(slot, &g.nodes[*u].params, &mut from);
                }
                _ => {
                    from.insert(slot.clone(), Value::Array(ids));
                }
            }
        }
        for (k, v) in from {
            params.entry(k).or_insert(v);
        }
        // Seed replicates share their parameters: the seed they run with tells them apart.
        let seed_key = if params.contains_key("seed") { "seed (replicate)" } else { "seed" };
        params.insert(seed_key.to_string(), json!(g.pipeline.seed + n.seed_offset));
        let st = &states[&i];
        let mut state = st.state;
        let mut metrics = BTreeMap::new();
        if st.state == State::Fresh {
            if let Some(m) = &st.manifest {
                // `metrics.json` (training, probes); a `value` node's value stands for its metrics.
                if let Some(f) = m.files.get("metrics.json").or_else(|| m.files.get("value.json")) {
                    match store.blobs.read(&f.digest) {
                        Ok(bytes) => {
                            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                                metrics = numeric_leaves(&v);
                            }
                        }
                        // A damaged blob (now moved aside) makes this node stale, not the comparison fail.
                        Err(e @ (crate::store::StoreError::Corrupt { .. } | crate::store::StoreError::Missing { .. })) => {
                            eprintln!("note: `{}`: {e}; it is stale now (`{}` recomputes it)", n.id, a.common.run_command(&[&n.id]));
                            state = State::Stale;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        runs.push(Run { id: n.id.clone(), kind: n.stage.kind(), state, params, metrics });
    }
    // Parameter columns: every key any node has, kept when `--all` or when its values differ (a missing key
    // differs from any value).
    let keys: BTreeSet<String> = runs.iter().flat_map(|r| r.params.keys().cloned()).collect();
    let pcols: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            a.all || {
                let first = runs[0].params.get(k);
                runs.iter().any(|r| r.params.get(k) != first)
            }
        })
        .collect();
    let kind_differs = runs.iter().any(|r| r.kind != runs[0].kind);
    let mcols: Vec<String> = runs
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.metric.is_empty() || a.metric.iter().any(|m| segments_match(k, m)))
        .collect();
    for m in &a.metric {
        if !mcols.iter().any(|k| segments_match(k, m)) {
            let all: BTreeSet<String> = runs.iter().flat_map(|r| r.metrics.keys().cloned()).collect();
            let hint = crate::spec::error::suggest(m, all.iter().map(String::as_str));
            eprintln!("note: --metric `{m}` matches no metric of these nodes ({hint})");
        }
    }
    if let Some(s) = &a.sort {
        let cols: Vec<&String> = mcols.iter().chain(pcols.iter()).collect();
        let exact = cols.iter().find(|c| c.as_str() == s.as_str()).map(|c| c.to_string());
        let col = match exact {
            Some(c) => c,
            None => {
                let suf: Vec<&&String> = cols.iter().filter(|c| c.ends_with(&format!(".{s}")) || c.ends_with(&format!(".t_{s}"))).collect();
                match suf.as_slice() {
                    [c] => c.to_string(),
                    [] => {
                        let hint = crate::spec::error::suggest(s, cols.iter().map(|c| c.as_str()));
                        return Err(CliError::Other(format!("error: --sort: no column `{s}`\n  help: {hint}"), exit::USAGE));
                    }
                    many => {
                        let v: Vec<&str> = many.iter().map(|c| c.as_str()).collect();
                        return Err(CliError::Other(format!("error: --sort: `{s}` names several columns: {}", v.join(", ")), exit::USAGE));
                    }
                }
            }
        };
        // Missing values last, whichever the direction.
        // A metric when a metric has that name (a `value` node's parameter `value` is also its metric).
        let is_metric = mcols.contains(&col);
        let val = |r: &Run| -> Option<Value> {
            if is_metric {
                r.metrics.get(&col).map(|x| json!(x))
            } else {
                r.params.get(&col).cloned()
            }
        };
        let cmp = |x: &Value, y: &Value| match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
            _ => show(x).cmp(&show(y)),
        };
        runs.sort_by(|x, y| match (val(x), val(y)) {
            (Some(p), Some(q)) => {
                let o = cmp(&p, &q);
                if a.ascending {
                    o
                } else {
                    o.reverse()
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    let stale: Vec<&str> = runs.iter().filter(|r| r.state != State::Fresh).map(|r| r.id.as_str()).collect();
    let stale_note = (!stale.is_empty()).then(|| {
        format!(
            "{} of {} nodes not fresh (no metrics): {} (`{}` computes them)",
            stale.len(),
            runs.len(),
            stale.join(", "),
            a.common.run_command(&stale)
        )
    });
    if a.json {
        let nodes: Vec<Value> = runs
            .iter()
            .map(|r| {
                let p: Map<String, Value> = pcols.iter().filter_map(|k| r.params.get(k).map(|v| (k.clone(), v.clone()))).collect();
                let m: Map<String, Value> = mcols.iter().filter_map(|k| r.metrics.get(k).map(|v| (k.clone(), json!(v)))).collect();
                json!({"id": r.id, "kind": r.kind, "state": r.state, "params": p, "metrics": m})
            })
            .collect();
        let v = json!({"params": pcols, "metrics": mcols, "nodes": nodes, "stale": stale});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        if let Some(n) = &stale_note {
            eprintln!("{n}");
        }
        return Ok(exit::OK);
    }
    let mut header = vec!["node".to_string()];
    if kind_differs {
        header.push("kind".into());
    }
    header.push("state".into());
    // A name that is both a parameter and a metric (a `value` node's `value`) says which each column is.
    let both = |k: &String| pcols.contains(k) && mcols.contains(k) || k == "node" || k == "state" || k == "kind";
    header.extend(pcols.iter().map(|k| if both(k) { format!("param:{k}") } else { k.clone() }));
    header.extend(mcols.iter().map(|k| if both(k) { format!("metric:{k}") } else { k.clone() }));
    let row = |r: &Run, raw: bool| -> Vec<String> {
        let mut v = vec![r.id.clone()];
        if kind_differs {
            v.push(r.kind.to_string());
        }
        v.push(r.state.to_string());
        let missing = if raw { "" } else { "—" };
        v.extend(pcols.iter().map(|k| r.params.get(k).map(show).unwrap_or_else(|| missing.into())));
        v.extend(
            mcols
                .iter()
                .map(|k| r.metrics.get(k).map(|&x| if raw { format!("{x}") } else { show_num(x) }).unwrap_or_else(|| missing.into())),
        );
        v
    };
    if a.csv {
        let mut w = csv::Writer::from_writer(vec![]);
        let mut rec = |v: &[String]| w.write_record(v).map_err(|e| CliError::Other(format!("error: csv: {e}"), exit::STORE));
        rec(&header)?;
        for r in &runs {
            rec(&row(r, true))?;
        }
        let out = w.into_inner().map_err(|e| CliError::Other(format!("error: csv: {e}"), exit::STORE))?;
        print!("{}", String::from_utf8_lossy(&out));
        if let Some(n) = &stale_note {
            eprintln!("{n}");
        }
        return Ok(exit::OK);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.clone());
    for r in &runs {
        t.add_row(row(r, false));
    }
    let first_metric = header.len() - mcols.len();
    for c in first_metric..header.len() {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{t}");
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let params = if a.all {
        plural(pcols.len(), "parameter", "parameters")
    } else {
        format!("{} (`--all` shows the ones they share too)", plural(pcols.len(), "parameter that differs", "parameters that differ"))
    };
    println!("{}, {params}, {}", plural(runs.len(), "node", "nodes"), plural(mcols.len(), "metric", "metrics"));
    if let Some(n) = &stale_note {
        println!("{n}");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_patterns_match_whole_names() {
        assert!(segments_match("tasks.t_digits.test.top1", "digits.test.top1"));
        assert!(segments_match("tasks.t_digits.test.top1", "t_digits.test.top1"));
        assert!(segments_match("tasks.t_digits.test.top1", "test.top1"));
        assert!(!segments_match("tasks.t_spoken_digits.test.top1", "digits.test.top1"));
        assert!(!segments_match("tasks.t_digits.test.top5", "test.top1"));
        assert!(!segments_match("loss", "test.loss"));
    }

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
}
