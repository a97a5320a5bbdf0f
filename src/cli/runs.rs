//! `runs FILE NODE`: every run of a node the store keeps a record of (one per distinct key: each setting it was
//! computed under), newest first, with the settings it was made under, what differs from the node's settings
//! now, how long it took and its metrics where its artifact is still whole — what DVC's `exp show` lists, for
//! one node or for every node of a declaration (a sweep's values and seeds).

use super::compare::values::{changed, number, read_metrics, Metrics};
use super::report::fmt_ms;
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::{assess_all, explain, name_changed_files};
use crate::exec::earlier::settings_of;
use crate::fingerprint::{Fingerprint, NodeRecord};
use crate::stage::Registry;
use crate::store::BlobState;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// `runs` arguments.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The node, or a matrix declaration or seed group (each of its nodes, with a `node` column).
    node: String,
    /// Only the metric columns containing these whole dot-separated names (repeatable), e.g. `--metric acc` or
    /// `--metric test.top1`.
    #[arg(long = "metric", value_name = "TEXT")]
    metric: Vec<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One recorded run, as listed.
struct Row {
    record: NodeRecord,
    /// The node's settings now are this run's (its artifact is the node's result, if fresh).
    current: bool,
    /// What differs from the node's settings now (short).
    differs: Vec<String>,
    /// Its metrics; `Err(why)` when its artifact is no longer whole.
    metrics: Result<Option<Metrics>, String>,
}

/// Whether metric `name` contains `want` as whole dot-separated names (`test.top1` in `t_digits.test.top1`).
fn matches(name: &str, want: &str) -> bool {
    format!(".{name}.").contains(&format!(".{want}."))
}

/// The runs on record of node `n` (assessed as `s`), newest first; the node's last run first among those of the
/// same second (dates are kept in seconds).
fn rows_of(
    n: &crate::graph::GNode,
    s: &crate::exec::assess::Assessment,
    index: &crate::store::Index,
    store: &crate::store::Store,
) -> Vec<Row> {
    let mut records = index.runs_of(&n.id);
    let last = index.record(&n.id).ok().flatten().map(|r| r.key);
    records.sort_by_key(|r| std::cmp::Reverse((r.finished_at, last.as_deref() == Some(r.key.as_str()))));
    records
        .into_iter()
        .map(|r| {
            let current = s.key.as_deref() == Some(r.key.as_str());
            let differs = if current {
                vec![]
            } else {
                match &s.fingerprint {
                    Some(fp) => {
                        let mut reasons = explain(n.stage.as_ref(), &r, fp);
                        name_changed_files(&mut reasons, store, &r, fp);
                        changed(&reasons)
                    }
                    // Inputs not computed yet: its own settings against the run's, and that the inputs are to come.
                    None => {
                        let own = Fingerprint { params: n.keyed.clone(), ..r.fingerprint.clone() };
                        let mut v = if own.key() == r.fingerprint.key() { vec![] } else { changed(&explain(n.stage.as_ref(), &r, &own)) };
                        v.push("its inputs are not computed yet".to_string());
                        v
                    }
                }
            };
            let metrics = match index.artifact(&r.key).ok().flatten() {
                None => Err("removed (gc)".to_string()),
                Some(m) => match store.check(&m) {
                    Some((file, BlobState::Missing)) => Err(format!("{file} removed")),
                    Some((file, _)) => Err(format!("{file} damaged")),
                    None => read_metrics(store, &m).map_err(|e| e.to_string()),
                },
            };
            Row { record: r, current, differs, metrics }
        })
        .collect()
}

/// `runs FILE NODE`: one node's runs, or those of every node of a declaration or group (`train` of a sweep: its
/// matrix values and seeds, each with its runs), as DVC's `exp show` lists a project's experiments.
pub fn runs(a: RunsArgs, reg: &Registry) -> Result<i32, CliError> {
    let c = &a.common;
    let g = load_graph(c, reg)?;
    let members: Vec<usize> = match (g.by_id.get(&a.node), g.resolve(&a.node)) {
        (Some(&i), _) => vec![i],
        (None, Some(ids)) => ids,
        (None, None) => return Err(CliError::Other(format!("error: no node `{}`\n  help: {}", a.node, g.suggest(&a.node)), exit::USAGE)),
    };
    let (store, _empty) = super::read_store(&c.store)?;
    let index = store.index_read()?;
    let sel = g.select(std::slice::from_ref(&a.node))?;
    let states = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
    // In the pipeline's order (a sweep's values as declared, then their seeds).
    let members: Vec<usize> = sel.iter().copied().filter(|i| members.contains(i)).collect();
    let per_node: Vec<(usize, Vec<Row>)> = members.iter().map(|&i| (i, rows_of(&g.nodes[i], &states[&i], &index, &store))).collect();
    let all_rows = || per_node.iter().flat_map(|(_, rows)| rows.iter());
    let names: BTreeSet<String> = all_rows()
        .filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref()))
        .flat_map(|m| m.values.keys().cloned())
        .filter(|k| a.metric.is_empty() || a.metric.iter().any(|w| matches(k, w)))
        .collect();
    if let Some(w) = a.metric.iter().find(|w| !names.iter().any(|k| matches(k, w))) {
        let all: BTreeSet<&String> =
            all_rows().filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref())).flat_map(|m| m.values.keys()).collect();
        let have: Vec<&str> = all.iter().map(|s| s.as_str()).take(12).collect();
        return Err(CliError::Other(
            format!(
                "error: --metric {w}: no metric of `{}`'s runs has it as a whole name\n  help: its runs report: {}",
                a.node,
                if have.is_empty() { "no metric".to_string() } else { have.join(", ") }
            ),
            exit::USAGE,
        ));
    }
    let single = g.by_id.contains_key(&a.node);
    if a.json {
        let node_json = |i: usize, rows: &[Row]| {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let metrics = match &r.metrics {
                        Ok(Some(m)) => Value::Object(
                            m.values
                                .iter()
                                .filter(|(k, _)| names.contains(*k))
                                .map(|(k, &x)| (k.clone(), number(x, m.integers.contains(k))))
                                .collect(),
                        ),
                        Ok(None) => Value::Null,
                        Err(_) => Value::Null,
                    };
                    json!({
                        "key": r.record.key,
                        "finished_at": r.record.finished_at,
                        "duration_ms": r.record.duration_ms,
                        "settings": settings_of(&r.record),
                        "current": r.current,
                        "differs": r.differs,
                        "artifact": r.metrics.as_ref().err().map_or("kept".to_string(), |e| e.clone()),
                        "metrics": metrics,
                        // What made it: the build (or the one that published what was fetched) and the checkout.
                        "polyflow": r.record.runner.get(crate::exec::BUILT_WITH).or_else(|| r.record.runner.get(crate::exec::PUBLISHED_WITH)),
                        "git_commit": r.record.runner.get(super::git::COMMIT),
                        "git_dirty": r.record.runner.contains_key(super::git::DIRTY),
                    })
                })
                .collect();
            json!({"node": g.nodes[i].id, "state": states[&i].state.to_string(), "runs": list})
        };
        let out = if single {
            let (i, rows) = &per_node[0];
            node_json(*i, rows)
        } else {
            json!({"group": a.node, "nodes": per_node.iter().map(|(i, rows)| node_json(*i, rows)).collect::<Vec<_>>()})
        };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(exit::OK);
    }
    let count = all_rows().count();
    if count == 0 {
        let what = if single { format!("`{}` has", a.node) } else { format!("no node of `{}` has", a.node) };
        println!("{what} no run on record in {}", crate::spec::source::display_path(&c.store));
        return Ok(exit::OK);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = if single { vec![] } else { vec!["node".to_string()] };
    header.extend(["finished (UTC)".to_string(), "settings".into(), "took".into(), "differs from the node now".into()]);
    header.extend(names.iter().cloned());
    t.set_header(header);
    // Each metric column written as `compare` writes it: lined up, with the digits its values need.
    let formats: Vec<super::compare::values::NumFormat> = names
        .iter()
        .map(|k| {
            let of = all_rows().filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref()));
            let vals: Vec<f64> = of.clone().filter_map(|m| m.values.get(k).copied()).collect();
            super::compare::values::NumFormat::of(vals, of.clone().all(|m| !m.values.contains_key(k) || m.integers.contains(k)))
        })
        .collect();
    for (i, rows) in &per_node {
        for r in rows {
            let differs = if r.current { format!("nothing ({})", states[i].state) } else { r.differs.join("; ") };
            let mut cells = if single { vec![] } else { vec![Cell::new(&g.nodes[*i].id)] };
            cells.extend([
                Cell::new(crate::report::html::utc(r.record.finished_at)),
                Cell::new(crate::text::cut(&settings_of(&r.record), 60)),
                Cell::new(fmt_ms(r.record.duration_ms)),
                Cell::new(differs),
            ]);
            for (k, f) in names.iter().zip(&formats) {
                cells.push(Cell::new(match &r.metrics {
                    Ok(Some(m)) => m.values.get(k).map(|&x| f.show(x)).unwrap_or_default(),
                    Ok(None) => String::new(),
                    Err(e) => e.clone(),
                }));
            }
            t.add_row(cells);
        }
    }
    super::out::fit(&mut t);
    if single {
        println!("runs of `{}` on record ({count}, newest first; one per distinct key):", a.node);
    } else {
        println!(
            "runs of the {} nodes of `{}` on record ({count}; each node's newest first, one per distinct key):",
            per_node.len(),
            a.node
        );
    }
    println!("{t}");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn metric_names_match_by_whole_dotted_parts() {
        assert!(matches("t_digits.test.top1", "test.top1"));
        assert!(matches("acc", "acc"));
        assert!(!matches("t_spoken_digits.test.top1", "digits.test.top1"));
        assert!(!matches("accuracy", "acc"));
    }
}
