//! `compare`: one table of runs (like `dvc exp show`): per node, the parameters that differ between the named
//! nodes (`--all`: every one; with its inputs' ids and a single input's parameters, as `task.lr`) and the
//! metrics of its artifact. Reads the store, runs nothing.
//!
//! A stale node shows its last results — those of its nearest earlier run ([`crate::exec::earlier`]), each
//! value marked `*` with a footnote of what changed since — never mixed into fresh ones: `--json` and `--csv`
//! say `outdated`, and `--fresh-only` shows fresh values only. `--group` gives one row per seed group, each
//! metric the mean ± sample std over its fresh replicates.
//!
//! - [`values`]: reading metrics and where they come from.
//! - [`rows`]: rows per node or per seed group.
//! - [`columns`]: the columns shown and `--sort`.
//! - [`render`]: table, CSV, JSON and the notes.

mod columns;
mod render;
mod rows;
pub(super) mod values;

use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::assess_all;
use crate::exec::earlier::{earlier, Earlier};
use crate::exec::State;
use crate::fingerprint::DirtyReason;
use crate::graph::Graph;
use crate::stage::Registry;
use crate::store::StoreError;
use rows::Run;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use values::{flatten, Origin};

/// `compare` arguments.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub(crate) common: Common,
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
    pub json: bool,
    /// Only fresh values: a stale node shows none, not its nearest earlier run's (outdated) values.
    #[arg(long)]
    fresh_only: bool,
    /// One row per seed group (`st.digits` for `st.digits.s0`, `.s1`, …; nodes outside one stay rows of their
    /// own): each metric the mean ± sample std over the group's fresh replicates, with their count (`n=2 of 3`).
    /// Only a group without any fresh replicate shows its earlier runs' values, all marked outdated.
    #[arg(long)]
    group: bool,
    /// One row per setting of the other matrix keys, averaging over this matrix key's values and the seeds
    /// (repeatable; implies `--group`): the folds of a cross-validation, `--over fold`, give one row per `lr`
    /// (`cv.*.0.01`), each metric the mean ± sample std over its folds.
    #[arg(long = "over", value_name = "KEY")]
    over: Vec<String>,
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

/// The parameters node `i` is compared by: its own, each input slot's node ids and a single input's own
/// parameters under the slot's name (a `train` node's `task.lr`, `task.steps`: what tells two baselines apart),
/// and the seed it runs with. Its own as it uses them ([`crate::stage::Stage::effective`]: a preset's size in
/// place of `0`, an optimizer's settings only where it is the one chosen), so a column never shows a difference
/// that changes nothing.
fn params_of(g: &Graph, i: usize) -> BTreeMap<String, Value> {
    let n = &g.nodes[i];
    let mut params = BTreeMap::new();
    flatten("", &g.used_params(i), &mut params);
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
    // The matrix variables of its declaration (`matrix.lr`, `matrix.task`): what tells its expansions apart, even
    // where the values only appear inside a parameter (a command's argv); a column that repeats a parameter's
    // column is left out ([`columns::param_columns`]).
    for (var, val) in g.pipeline.nodes.get(i).map(|d| &d.matrix).into_iter().flatten() {
        // The replicate's suffix and seed index: the seed column tells replicates apart.
        if var == "replicate" || var == "seed" {
            continue;
        }
        let name = format!("{}{var}", columns::MATRIX);
        let v = serde_json::from_str::<Value>(val).ok().filter(|v| v.is_number() || v.is_boolean()).unwrap_or_else(|| json!(val));
        params.insert(name, v);
    }
    // Seed replicates share their parameters: the seed they run with tells them apart.
    let seed_key = if params.contains_key("seed") { "seed (replicate)" } else { "seed" };
    params.insert(seed_key.to_string(), json!(g.pipeline.seed + n.seed_offset));
    params
}

/// A reason as a footnote says it: "waits on `up`" followed up the graph to what changed there, "waits on up
/// (up: value changed 1 → 2)", at most a few nodes deep.
fn root_cause(g: &Graph, states: &BTreeMap<usize, crate::exec::assess::Assessment>, r: &DirtyReason, depth: usize) -> String {
    let DirtyReason::UpstreamPending { upstream } = r else { return r.to_string() };
    if depth > 4 {
        return r.to_string();
    }
    let why: Vec<String> = upstream
        .iter()
        .take(2)
        .filter_map(|id| {
            let u = g.nodes.iter().position(|n| &n.id == id)?;
            let first = states.get(&u)?.reasons.first()?;
            Some(format!("{id}: {}", root_cause(g, states, first, depth + 1)))
        })
        .collect();
    if why.is_empty() {
        r.to_string()
    } else {
        format!("{r} ({})", why.join("; "))
    }
}

/// `compare`.
pub fn compare(a: CompareArgs, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&a.common, reg)?;
    let nodes = expand(&g, &a.nodes)?;
    // `--over` names matrix keys of the nodes compared.
    let keys: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|&i| g.pipeline.nodes.get(i))
        .flat_map(|s| s.matrix.keys().map(String::as_str))
        .filter(|k| *k != "seed" && *k != "replicate")
        .collect();
    if let Some(k) = a.over.iter().find(|k| !keys.contains(k.as_str())) {
        let have = if keys.is_empty() {
            "they have none".to_string()
        } else {
            keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        };
        return Err(CliError::Other(
            format!(
                "error: --over {k}: `{k}` is not a matrix key of the nodes compared ({have})\n  help: {}",
                crate::spec::error::suggest(k, keys.iter().copied())
            ),
            exit::USAGE,
        ));
    }
    let ids: Vec<String> = nodes.iter().map(|&i| g.nodes[i].id.clone()).collect();
    let sel = g.select(&ids)?;
    let (store, _empty) = super::read_store(&a.common.store)?;
    let (states, earlier_runs) = {
        let index = store.index_read()?;
        let states = assess_all(&g, &sel, &store, &index, &env_of(&g, &a.common.backend), &|_| false);
        let earlier_runs: BTreeMap<usize, Earlier> = if a.fresh_only {
            BTreeMap::new()
        } else {
            let settings = a.common.settings();
            let profile = a.common.profile.as_deref().unwrap_or("");
            nodes.iter().filter_map(|&i| earlier(&store, &index, &g.nodes[i], &states[&i], &settings, profile).map(|e| (i, e))).collect()
        };
        (states, earlier_runs)
    };
    let mut runs = vec![];
    for &i in &nodes {
        let n = &g.nodes[i];
        let st = &states[&i];
        let mut state = st.state;
        let mut metrics = values::Metrics::default();
        let mut origin = Origin::Absent;
        if let (State::Fresh, Some(m)) = (st.state, &st.manifest) {
            match values::read_metrics(&store, m) {
                Ok(v) => {
                    metrics = v.unwrap_or_default();
                    origin = Origin::Fresh;
                }
                // A damaged blob (now moved aside) makes this node stale, not the comparison fail.
                Err(e @ (StoreError::Corrupt { .. } | StoreError::Missing { .. })) => {
                    crate::cli::out::errln!("note: `{}`: {e}; it is stale now (`{}` recomputes it)", n.id, a.common.run_command(&[&n.id]));
                    state = State::Stale;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Not fresh: its nearest earlier run's values, if the store still has them.
        match earlier_runs.get(&i) {
            Some(Earlier::Kept { record, manifest, changed, .. }) if state != State::Fresh => {
                match values::read_metrics(&store, manifest) {
                    Ok(Some(v)) => {
                        metrics = v;
                        origin = Origin::Outdated {
                            changed: changed.iter().map(|c| root_cause(&g, &states, c, 0)).collect(),
                            finished_at: record.finished_at,
                            key: record.key.clone(),
                            settings: crate::exec::earlier::settings_of(record),
                        };
                    }
                    Ok(None) => {}
                    Err(e @ (StoreError::Corrupt { .. } | StoreError::Missing { .. })) => {
                        let damaged = matches!(e, StoreError::Corrupt { .. });
                        origin = Origin::Gone { finished_at: record.finished_at, file: None, damaged };
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(Earlier::Gone { record, file, damaged }) => {
                origin = Origin::Gone { finished_at: record.finished_at, file: file.clone(), damaged: *damaged };
            }
            Some(Earlier::Elsewhere { record }) if state != State::Fresh => {
                origin = Origin::Elsewhere { settings: crate::exec::earlier::settings_of(record) };
            }
            _ => {}
        }
        let group = if !a.over.is_empty() {
            rows::over_group(&g, i, &a.over)
        } else if a.group {
            rows::seed_group(&g, i)
        } else {
            None
        };
        let values::Metrics { values: metrics, integers } = metrics;
        let spec = &g.pipeline.nodes[i];
        let by_design = spec.per_replicate.iter().chain(&spec.per_replicate_inputs).cloned().collect();
        let mut written = BTreeMap::new();
        for (k, v) in &spec.written.params {
            values::flatten(k, v, &mut written);
        }
        runs.push(Run {
            id: n.id.clone(),
            group,
            kind: n.stage.kind(),
            state,
            params: params_of(&g, i),
            metrics,
            integers,
            origin,
            by_design,
            written,
        });
    }
    let grouped = a.group || !a.over.is_empty();
    let mut rows = if grouped {
        let (rows, mixed) = rows::grouped(&runs);
        for m in mixed {
            // (Under `--over`, the members differ by design in what the averaged keys change.)
            if !m.params.is_empty() && a.over.is_empty() {
                let p: Vec<String> = m.params.iter().map(|p| format!("`{p}`")).collect();
                crate::cli::out::errln!(
                    "note: the replicates of `{}` differ in {} besides their seed: --group averages them as seeds of one setting",
                    m.group,
                    p.join(", ")
                );
            }
            if m.earlier {
                crate::cli::out::errln!(
                    "note: the earlier runs of `{}`'s replicates were made with different settings: their values are not averaged (without --group each is shown)",
                    m.group
                );
            }
        }
        rows
    } else {
        runs.iter().map(rows::single).collect()
    };
    let pcols = columns::param_columns(&rows, a.all);
    let mcols = columns::metric_columns(&rows, &a.metric)?;
    if let Some(s) = &a.sort {
        columns::sort(&mut rows, s, a.ascending, &pcols, &mcols)?;
    }
    // Every node compared not fresh: the names as given (`train` of a sweep), not each of its nodes.
    let given: Vec<&str> = a.nodes.iter().map(String::as_str).collect();
    let run_command = |ids: &[&str]| a.common.run_command(if ids.len() == runs.len() { &given } else { ids });
    let view = render::View {
        rows: &rows,
        runs: &runs,
        pcols: &pcols,
        mcols: &mcols,
        grouped,
        over: &a.over,
        all: a.all,
        run_command: &run_command,
    };
    if a.json || a.csv {
        let out = if a.json { serde_json::to_string_pretty(&view.json()).unwrap_or_default() + "\n" } else { view.csv()? };
        print!("{out}");
        for n in view.notes() {
            crate::cli::out::errln!("{n}");
        }
        return Ok(exit::OK);
    }
    print!("{}", view.table());
    Ok(exit::OK)
}
