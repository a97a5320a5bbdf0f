//! `runs FILE NODE`: every run of a node the store keeps a record of (one per distinct key: each setting it was
//! computed under), newest first, with the settings it was made under, what differs from the node's settings
//! now, how long it took and its metrics where its artifact is still whole — what DVC's `exp show` lists, for
//! one node.

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
    /// The node.
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

/// `runs FILE NODE`.
pub fn runs(a: RunsArgs, reg: &Registry) -> Result<i32, CliError> {
    let c = &a.common;
    let g = load_graph(c, reg)?;
    let Some(&i) = g.by_id.get(&a.node) else {
        let help = match g.resolve(&a.node) {
            Some(ids) => format!("`{}` stands for {} nodes: name one, e.g. `{}`", a.node, ids.len(), g.nodes[ids[0]].id),
            None => g.suggest(&a.node),
        };
        return Err(CliError::Other(format!("error: no node `{}`\n  help: {help}", a.node), exit::USAGE));
    };
    let (store, _empty) = super::read_store(&c.store)?;
    let index = store.index_read()?;
    let sel = g.select(std::slice::from_ref(&a.node))?;
    let states = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
    let (n, s) = (&g.nodes[i], &states[&i]);
    let mut records = index.runs_of(&n.id);
    // Newest first; the node's last run first among those of the same second (dates are kept in seconds).
    let last = index.record(&n.id).ok().flatten().map(|r| r.key);
    records.sort_by_key(|r| std::cmp::Reverse((r.finished_at, last.as_deref() == Some(r.key.as_str()))));
    let rows: Vec<Row> = records
        .into_iter()
        .map(|r| {
            let current = s.key.as_deref() == Some(r.key.as_str());
            let differs = if current {
                vec![]
            } else {
                match &s.fingerprint {
                    Some(fp) => {
                        let mut reasons = explain(n.stage.as_ref(), &r, fp);
                        name_changed_files(&mut reasons, &store, &r, fp);
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
                    None => read_metrics(&store, &m).map_err(|e| e.to_string()),
                },
            };
            Row { record: r, current, differs, metrics }
        })
        .collect();
    let names: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref()))
        .flat_map(|m| m.values.keys().cloned())
        .filter(|k| a.metric.is_empty() || a.metric.iter().any(|w| matches(k, w)))
        .collect();
    if let Some(w) = a.metric.iter().find(|w| !names.iter().any(|k| matches(k, w))) {
        let all: BTreeSet<&String> =
            rows.iter().filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref())).flat_map(|m| m.values.keys()).collect();
        let have: Vec<&str> = all.iter().map(|s| s.as_str()).take(12).collect();
        return Err(CliError::Other(
            format!(
                "error: --metric {w}: no metric of `{}`'s runs has it as a whole name\n  help: its runs report: {}",
                n.id,
                if have.is_empty() { "no metric".to_string() } else { have.join(", ") }
            ),
            exit::USAGE,
        ));
    }
    if a.json {
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
        let out = json!({"node": n.id, "state": s.state.to_string(), "runs": list});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        println!("`{}` has no run on record in {}", n.id, crate::spec::source::display_path(&c.store));
        return Ok(exit::OK);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec!["finished (UTC)".to_string(), "settings".into(), "took".into(), "differs from the node now".into()];
    header.extend(names.iter().cloned());
    t.set_header(header);
    // Each metric column written as `compare` writes it: lined up, with the digits its values need.
    let formats: Vec<super::compare::values::NumFormat> = names
        .iter()
        .map(|k| {
            let of = rows.iter().filter_map(|r| r.metrics.as_ref().ok().and_then(|m| m.as_ref()));
            let vals: Vec<f64> = of.clone().filter_map(|m| m.values.get(k).copied()).collect();
            super::compare::values::NumFormat::of(vals, of.clone().all(|m| !m.values.contains_key(k) || m.integers.contains(k)))
        })
        .collect();
    for r in &rows {
        let differs = if r.current { format!("nothing ({})", s.state) } else { r.differs.join("; ") };
        let mut cells = vec![
            Cell::new(crate::report::html::utc(r.record.finished_at)),
            Cell::new(crate::text::cut(&settings_of(&r.record), 60)),
            Cell::new(fmt_ms(r.record.duration_ms)),
            Cell::new(differs),
        ];
        for (k, f) in names.iter().zip(&formats) {
            cells.push(Cell::new(match &r.metrics {
                Ok(Some(m)) => m.values.get(k).map(|&x| f.show(x)).unwrap_or_default(),
                Ok(None) => String::new(),
                Err(e) => e.clone(),
            }));
        }
        t.add_row(cells);
    }
    super::out::fit(&mut t);
    println!("runs of `{}` on record ({}, newest first; one per distinct key):", n.id, rows.len());
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
