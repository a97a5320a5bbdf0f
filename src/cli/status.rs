//! `status`, `plan` / `run --dry-run` and `dag`.

use super::report::{fmt_bytes, fmt_ms};
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::{assess_all, Assessment};
use crate::exec::State;
use crate::graph::Graph;
use crate::stage::Registry;
use crate::store::Store;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Color, ContentArrangement, Table};
use std::collections::BTreeMap;

fn assess(
    g: &Graph,
    c: &Common,
    nodes: &[String],
    force: &[String],
    force_all: bool,
) -> Result<(Vec<usize>, BTreeMap<usize, Assessment>), CliError> {
    let sel = g.select(nodes)?;
    for f in force {
        if !g.by_id.contains_key(f) {
            let hint = crate::spec::error::suggest(f, g.nodes.iter().map(|n| n.id.as_str()));
            return Err(CliError::Other(format!("error: --force: no node `{f}`\n  help: {hint}"), exit::USAGE));
        }
    }
    let store = Store::open(&c.store)?;
    let index = store.index_read()?;
    let env = env_of(g, &c.backend);
    let forced: Vec<usize> = force.iter().map(|f| g.by_id[f]).collect();
    let a = assess_all(g, &sel, &store, &index, &env, &|i| force_all || forced.contains(&i));
    Ok((sel, a))
}

/// `plan`: what would run and why.
pub fn plan(c: Common, nodes: Vec<String>, force: Vec<String>, force_all: bool, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    super::preflight(&g, &nodes)?;
    let (sel, a) = assess(&g, &c, &nodes, &force, force_all)?;
    let mut n_run = 0;
    for &i in &sel {
        let s = &a[&i];
        if s.state == State::Fresh {
            println!("{:>12} {}", "Fresh", g.nodes[i].id);
        } else {
            n_run += 1;
            let why: Vec<String> = s.reasons.iter().map(|r| r.to_string()).collect();
            println!("{:>12} {} ({}): {}", "Would run", g.nodes[i].id, g.nodes[i].stage.kind(), why.join("; "));
        }
    }
    println!("{:>12} {} of {} nodes would run", "Plan", n_run, sel.len());
    Ok(exit::OK)
}

/// Nodes not fresh whose job (for their current key) Slurm still has pending or running: node → `Slurm job N (STATE)`.
/// One `squeue` call, made only when such job directories exist.
fn in_flight(store_root: &std::path::Path, sel: &[usize], a: &BTreeMap<usize, crate::exec::assess::Assessment>) -> BTreeMap<usize, String> {
    use crate::exec::slurm::{job, sched};
    let subs: Vec<(usize, job::Submission)> = sel
        .iter()
        .filter(|i| a[i].state != State::Fresh)
        .filter_map(|&i| {
            let key = a[&i].key.as_ref()?;
            job::read_json::<job::Submission>(&job::job_dir(store_root, key), "slurm.json").filter(|s| &s.key == key).map(|s| (i, s))
        })
        .collect();
    if subs.is_empty() {
        return BTreeMap::new();
    }
    let ids: Vec<&str> = subs.iter().map(|(_, s)| s.job_id.as_str()).collect();
    let states = sched::squeue(&ids).unwrap_or_default();
    subs.iter()
        .filter_map(|(i, s)| {
            states.get(&s.job_id).filter(|st| !st.terminal()).map(|st| (*i, format!("Slurm job {} ({})", s.job_id, st.state)))
        })
        .collect()
}

/// Prints node `i`'s reasons at `depth`, then, for each upstream it waits on, that node and its reasons (each
/// node once), so `--why` reaches the parameter or file that changed.
fn explain_reasons(g: &Graph, a: &BTreeMap<usize, Assessment>, i: usize, depth: usize, seen: &mut std::collections::BTreeSet<usize>) {
    let pad = "    ".repeat(depth - 1);
    for r in &a[&i].reasons {
        println!("{pad}  - {r}");
        let crate::fingerprint::DirtyReason::UpstreamPending { upstream } = r else { continue };
        for u in upstream {
            let Some(&j) = g.by_id.get(u) else { continue };
            let Some(s) = a.get(&j) else { continue };
            if seen.insert(j) {
                println!("{pad}    {} ({}): {}", u, g.nodes[j].stage.kind(), s.state);
                explain_reasons(g, a, j, depth + 1, seen);
            }
        }
    }
}

/// `status`.
pub fn status(c: Common, nodes: Vec<String>, json: bool, why: Option<String>, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    let (sel, a) = assess(&g, &c, &nodes, &[], false)?;
    let running = in_flight(&c.store, &sel, &a);
    let reason = |i: usize| {
        let mut r: Vec<String> = a[&i].reasons.iter().map(|r| r.to_string()).collect();
        if let Some(j) = running.get(&i) {
            r.insert(0, format!("in flight as {j}"));
        }
        r.join("; ")
    };
    if let Some(w) = why {
        let Some(&i) = g.by_id.get(&w) else {
            let hint = crate::spec::error::suggest(&w, g.nodes.iter().map(|n| n.id.as_str()));
            return Err(CliError::Other(format!("error: --why: no node `{w}`\n  help: {hint}"), exit::USAGE));
        };
        let Some(s) = a.get(&i) else {
            return Err(CliError::Other(format!("error: `{w}` is not selected"), exit::USAGE));
        };
        println!("{} ({}): {}", w, g.nodes[i].stage.kind(), s.state);
        // Each reason; a node waiting on stale upstream nodes is explained down to the root causes.
        let mut seen = std::collections::BTreeSet::from([i]);
        explain_reasons(&g, &a, i, 1, &mut seen);
        if let Some(k) = &s.key {
            println!("  key: {k}");
        }
        if let Some(f) = &s.failure {
            println!("  last failure: {}", f.error);
        }
        if let Some(j) = running.get(&i) {
            println!("  in flight as {j}");
        }
        return Ok(exit::OK);
    }
    if json {
        let arr: Vec<serde_json::Value> = sel
            .iter()
            .map(|&i| {
                let s = &a[&i];
                serde_json::json!({
                    "id": g.nodes[i].id,
                    "kind": g.nodes[i].stage.kind(),
                    "state": s.state,
                    "reason": reason(i),
                    "reasons": s.reasons,
                    "job": running.get(&i),
                    "key": s.key,
                    "size": s.manifest.as_ref().map(|m| m.size()),
                    "last_ms": s.record.as_ref().map(|r| r.duration_ms),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(vec!["id", "kind", "state", "reason", "size", "last run"]);
    for &i in &sel {
        let s = &a[&i];
        let color = match s.state {
            State::Fresh => Color::Green,
            State::Stale => Color::Yellow,
            State::Failed => Color::Red,
        };
        t.add_row(vec![
            Cell::new(&g.nodes[i].id),
            Cell::new(g.nodes[i].stage.kind()),
            Cell::new(s.state.to_string()).fg(color),
            Cell::new(reason(i)),
            Cell::new(s.manifest.as_ref().map(|m| fmt_bytes(m.size())).unwrap_or_default()),
            Cell::new(s.record.as_ref().map(|r| fmt_ms(r.duration_ms)).unwrap_or_default()),
        ]);
    }
    println!("{t}");
    let fresh = sel.iter().filter(|i| a[i].state == State::Fresh).count();
    println!("{fresh} of {} nodes fresh{}", sel.len(), g.pipeline.profile.as_ref().map(|p| format!(" (profile {p})")).unwrap_or_default());
    Ok(exit::OK)
}

/// `dag`.
pub fn dag(c: Common, format: &str, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    let sel = g.select(&[])?;
    let states: BTreeMap<usize, State> = match assess(&g, &c, &[], &[], false) {
        Ok((_, a)) => a.into_iter().map(|(i, s)| (i, s.state)).collect(),
        Err(_) => BTreeMap::new(),
    };
    let label = |i: usize| states.get(&i).map(|s| format!(" ({s})")).unwrap_or_default();
    let out = if format == "mermaid" { crate::graph::to_mermaid(&g, &sel, &label) } else { crate::graph::to_dot(&g, &sel, &label) };
    print!("{out}");
    Ok(exit::OK)
}
