//! `status`, `plan` / `run --dry-run` and `dag`.

use super::report::{fmt_bytes, fmt_ms};
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::{assess_all, assess_cached, Assessment};
use crate::exec::State;
use crate::graph::Graph;
use crate::stage::Registry;
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
    let forced = super::forced_nodes(g, nodes, force)?;
    let (store, _empty) = super::read_store(&c.store)?;
    let index = store.index_read()?;
    let env = env_of(g, &c.backend);
    let forced = |i: usize| force_all || forced.contains(&i);
    // With a shared cache, what a run would fetch (and, through it, what is downstream) as a run sees it.
    let a = match c.shared_cache(g, false)? {
        Some((cache, _)) => assess_cached(g, &sel, &store, &index, &env, &forced, cache.as_ref()),
        None => assess_all(g, &sel, &store, &index, &env, &forced),
    };
    Ok((sel, a))
}

/// The time a plan would take, from each stale node's last recorded run.
struct Estimate {
    /// Sum of the known durations (one node after another).
    serial_ms: u64,
    /// The longest chain of known durations through the stale nodes (what parallel slots cannot shorten).
    critical_ms: u64,
    /// That chain, upstream first.
    path: Vec<usize>,
    /// Stale nodes with a recorded run.
    known: usize,
    /// Stale nodes never run (no recorded duration).
    unknown: Vec<usize>,
}

/// [`Estimate`] of running `stale` (nodes without a record count 0 along the critical path).
fn estimate(g: &Graph, stale: &[usize], last: &dyn Fn(usize) -> Option<u64>) -> Estimate {
    let set: std::collections::BTreeSet<usize> = stale.iter().copied().collect();
    let order: Vec<usize> = g.topo_order().into_iter().filter(|i| set.contains(i)).collect();
    // Per stale node: the longest chain ending at it, and the stale input it comes through.
    let mut best: std::collections::HashMap<usize, (u64, Option<usize>)> = std::collections::HashMap::new();
    for &i in &order {
        let prev = g.nodes[i].inputs.values().flatten().filter_map(|j| best.get(j).map(|b| (b.0, *j))).max_by_key(|p| p.0);
        best.insert(i, (prev.map_or(0, |p| p.0) + last(i).unwrap_or(0), prev.map(|p| p.1)));
    }
    let mut end = None;
    for &i in &order {
        if end.is_none_or(|e: usize| best[&i].0 > best[&e].0) {
            end = Some(i);
        }
    }
    let mut path = vec![];
    while let Some(i) = end {
        path.push(i);
        end = best[&i].1;
    }
    path.reverse();
    Estimate {
        serial_ms: stale.iter().filter_map(|&i| last(i)).sum(),
        critical_ms: path.last().map_or(0, |i| best[i].0),
        path,
        known: stale.iter().filter(|&&i| last(i).is_some()).count(),
        unknown: stale.iter().copied().filter(|&i| last(i).is_none()).collect(),
    }
}

/// How long running `stale` takes on `jobs` CPU slots and `devices` accelerators, simulating the local
/// executor: whenever a node ends, the ready nodes are scanned in topological order and each one whose
/// request (`need`: cores, accelerators, clamped as the executor clamps them) fits the free slots starts; each
/// takes its last recorded time (`last`; none counts 0).
fn scheduled(
    g: &Graph,
    stale: &[usize],
    last: &dyn Fn(usize) -> Option<u64>,
    need: &dyn Fn(usize) -> (usize, u32),
    jobs: usize,
    devices: usize,
) -> u64 {
    use std::collections::{BTreeSet, HashMap};
    let set: BTreeSet<usize> = stale.iter().copied().collect();
    let order: Vec<usize> = g.topo_order().into_iter().filter(|i| set.contains(i)).collect();
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ready = BTreeSet::new();
    for (pos, &i) in order.iter().enumerate() {
        let ups: BTreeSet<usize> = g.nodes[i].inputs.values().flatten().copied().filter(|j| set.contains(j)).collect();
        for &u in &ups {
            dependents.entry(u).or_default().push(pos);
        }
        waiting.insert(pos, ups.len());
        if ups.is_empty() {
            ready.insert(pos);
        }
    }
    let (mut free_cpu, mut free_dev, mut t) = (jobs.max(1), devices, 0u64);
    let mut running: Vec<(u64, usize, usize, usize)> = vec![];
    loop {
        let mut started = vec![];
        for &pos in &ready {
            if free_cpu == 0 {
                break;
            }
            let i = order[pos];
            let (cpu, dev) = need(i);
            let (cpu, dev) = (cpu.clamp(1, jobs.max(1)), (dev as usize).min(devices));
            if cpu <= free_cpu && dev <= free_dev {
                free_cpu -= cpu;
                free_dev -= dev;
                running.push((t + last(i).unwrap_or(0), pos, cpu, dev));
                started.push(pos);
            }
        }
        started.iter().for_each(|p| {
            ready.remove(p);
        });
        let Some(end) = running.iter().map(|r| r.0).min() else { break };
        t = end;
        for (_, pos, cpu, dev) in running.iter().filter(|r| r.0 == end) {
            free_cpu += cpu;
            free_dev += dev;
            for &d in dependents.get(&order[*pos]).into_iter().flatten() {
                let w = waiting.get_mut(&d).expect("every stale node has a count");
                *w -= 1;
                if *w == 0 {
                    ready.insert(d);
                }
            }
        }
        running.retain(|r| r.0 != end);
    }
    t
}

/// A rendered cell whose inputs would re-run: (table node, row label, column label, the nodes it reads that
/// would run).
type CellChange = (usize, String, String, Vec<String>);

/// The cells of the selected nodes (tables, via [`crate::stage::Stage::cells`]) that read a node not fresh.
fn changed_cells(g: &Graph, sel: &[usize], a: &BTreeMap<usize, Assessment>) -> Vec<CellChange> {
    let mut out = vec![];
    for &t in sel {
        let n = &g.nodes[t];
        let inputs: BTreeMap<String, Vec<String>> =
            n.inputs.iter().map(|(slot, v)| (slot.clone(), v.iter().map(|&j| g.nodes[j].id.clone()).collect())).collect();
        for (row, col, reads) in n.stage.cells(&n.params, &inputs, &|node, other| reads_from(g, node, other), &|id| kind_of(g, id)) {
            let rerun: Vec<String> =
                // (One the shared cache has is fetched, not computed: its value is the cached one.)
                reads
                    .into_iter()
                    .filter(|id| g.by_id.get(id).and_then(|j| a.get(j)).is_some_and(|s| s.state != State::Fresh && s.in_cache.is_none()))
                    .collect();
            if !rerun.is_empty() {
                out.push((t, row, col, rerun));
            }
        }
    }
    out
}

/// The rows and columns a stale table gains and loses against the run it is compared with (its nearest run on
/// record): `rows 's4' added, 's1' removed; columns …`. `None` where they are the same, or there is no such run.
fn reshaped(g: &Graph, t: usize, a: &Assessment) -> Option<String> {
    let n = &g.nodes[t];
    let r = a.record.as_ref()?;
    let labels = |params: &serde_json::Value, inputs: &BTreeMap<String, Vec<String>>| {
        let cells = n.stage.cells(params, inputs, &|node, other| reads_from(g, node, other), &|id| kind_of(g, id));
        let mut rows: Vec<String> = vec![];
        let mut cols: Vec<String> = vec![];
        for (row, col, _) in cells {
            if !rows.contains(&row) {
                rows.push(row);
            }
            if !cols.contains(&col) {
                cols.push(col);
            }
        }
        (rows, cols)
    };
    let now_inputs = n.inputs.iter().map(|(slot, v)| (slot.clone(), v.iter().map(|&j| g.nodes[j].id.clone()).collect())).collect();
    let old_inputs = r.fingerprint.inputs.iter().map(|(slot, v)| (slot.clone(), v.iter().map(|d| d.id.clone()).collect())).collect();
    let (rows, cols) = labels(&n.params, &now_inputs);
    let (old_rows, old_cols) = labels(&r.fingerprint.params, &old_inputs);
    if rows.is_empty() || old_rows.is_empty() {
        return None;
    }
    let diff = |what: &str, now: &[String], old: &[String]| {
        let quote = |v: Vec<&String>| v.iter().map(|x| format!("'{x}'")).collect::<Vec<_>>().join(", ");
        let added: Vec<&String> = now.iter().filter(|x| !old.contains(x)).collect();
        let removed: Vec<&String> = old.iter().filter(|x| !now.contains(x)).collect();
        let mut parts = vec![];
        if !added.is_empty() {
            parts.push(format!("{} added", quote(added)));
        }
        if !removed.is_empty() {
            parts.push(format!("{} removed", quote(removed)));
        }
        (!parts.is_empty()).then(|| format!("{what} {}", parts.join(", ")))
    };
    let said: Vec<String> = [diff("rows", &rows, &old_rows), diff("columns", &cols, &old_cols)].into_iter().flatten().collect();
    (!said.is_empty()).then(|| said.join("; "))
}

/// The kind of node `id` (`None` for ids that are not nodes).
fn kind_of(g: &Graph, id: &str) -> Option<&'static str> {
    g.by_id.get(id).map(|&i| g.nodes[i].stage.kind())
}

/// Whether node `other` is node `node` or upstream of it (false for ids that are not nodes).
fn reads_from(g: &Graph, node: &str, other: &str) -> bool {
    let (Some(&from), Some(&to)) = (g.by_id.get(node), g.by_id.get(other)) else { return false };
    from == to
        || petgraph::algo::has_path_connecting(&g.dag, petgraph::graph::NodeIndex::new(to), petgraph::graph::NodeIndex::new(from), None)
}

/// `a, b, c and 2 more`.
fn some_ids(ids: &[String]) -> String {
    if ids.len() <= 4 {
        ids.join(", ")
    } else {
        format!("{} and {} more", ids[..3].join(", "), ids.len() - 3)
    }
}

/// `plan`: what would run and why, each node's last recorded time and an estimate of the whole, and the
/// table cells that may change. Runs nothing and writes no index entry. Returns how many nodes would run or be
/// fetched, and fresh nodes' exported files it would write.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    c: Common,
    nodes: Vec<String>,
    force: Vec<String>,
    force_all: bool,
    (jobs, devices, executor): (usize, usize, Option<crate::spec::resources::ExecutorKind>),
    (json, no_publish): (bool, bool),
    verbose: bool,
    reg: &Registry,
) -> Result<usize, CliError> {
    let g = load_graph(&c, reg)?;
    super::preflight(&g, &c, &nodes, &super::env_of(&g, &c.backend))?;
    super::pipeline_notes(&g);
    super::checks::note_capped_cpus(&g, &nodes, jobs, executor);
    // No store yet: `assess` reads an empty one (`read_store`), so a plan leaves no store behind.
    let (sel, a) = assess(&g, &c, &nodes, &force, force_all)?;
    unreadable_sources(&g, &sel, &a)?;
    // What would be computed; what the shared cache holds is fetched instead (`fetch`).
    let stale: Vec<usize> = sel.iter().copied().filter(|i| a[i].state != State::Fresh && a[i].in_cache.is_none()).collect();
    // A stale node whose key an earlier stale node has (a matrix entry identical to a declared node): a run computes
    // it once, and the other is then fresh. Not for forced nodes (each is run).
    let mut first_of_key: BTreeMap<&str, usize> = BTreeMap::new();
    let mut same_as: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in &stale {
        let forced = a[&i].reasons.iter().any(|r| matches!(r, crate::fingerprint::DirtyReason::Forced));
        if let (Some(k), false) = (a[&i].key.as_deref(), forced) {
            match first_of_key.get(k) {
                Some(&j) => {
                    same_as.insert(i, j);
                }
                None => {
                    first_of_key.insert(k, i);
                }
            }
        }
    }
    let stale: Vec<usize> = stale.into_iter().filter(|i| !same_as.contains_key(i)).collect();
    let fetch: Vec<usize> = sel.iter().copied().filter(|i| a[i].in_cache.is_some()).collect();
    let own = |i: usize| a[&i].record.as_ref().map(|r| r.duration_ms);
    // A node without a run of its own (a new seed, a new matrix value): the median of its declaration's runs.
    let mut by_decl: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (&j, s) in a.iter() {
        if let Some(r) = &s.record {
            by_decl.entry(g.pipeline.nodes[j].decl.as_str()).or_default().push(r.duration_ms);
        }
    }
    for v in by_decl.values_mut() {
        v.sort_unstable();
    }
    let sibling = |i: usize| by_decl.get(g.pipeline.nodes[i].decl.as_str()).map(|v| v[v.len() / 2]);
    let last = |i: usize| own(i).or_else(|| sibling(i));
    let est = estimate(&g, &stale, &last);
    // Locally, the run's `-j` and `--devices` bound what runs at once; a cluster schedules as it can.
    let env = super::env_of(&g, &c.backend);
    let local = executor.unwrap_or(g.executor.kind) == crate::spec::resources::ExecutorKind::Local;
    let jobs = crate::exec::cpu_slots(jobs);
    let need = |i: usize| crate::exec::requests(&g, i, &env, jobs);
    let sched = local.then(|| scheduled(&g, &stale, &last, &need, jobs, devices));
    let cells = changed_cells(&g, &sel, &a);
    // Slurm jobs still in flight: of a node's current key (a Slurm run re-attaches to it), of earlier settings.
    let (flying, leftover, here) = in_flight(&c.store, &g, &sel, &a);
    // (A node in flight is working in its scratch folder: that is no interrupted run's.)
    let resume = |i: usize| resume_point(&g, &a, &c.store, i).filter(|_| !flying.contains_key(&i)).map(|(p, _)| p);
    let settings = c.settings();
    let reasons = |i: usize| {
        let mut r: Vec<String> = a[&i].reasons.iter().map(|r| r.to_string()).collect();
        if let Some(p) = resume(i) {
            r.push(format!("resumes from an interrupted run's checkpoint at {p}"));
        }
        let since = crate::exec::earlier::compared_with(&a[&i], &settings).map(|s| format!(" ({s})")).unwrap_or_default();
        r.join("; ") + &since
    };
    let ids = |v: &[usize]| v.iter().map(|&i| g.nodes[i].id.clone()).collect::<Vec<_>>();
    // Stale tables whose rows or columns are not those of their last run: their cells change, whatever runs.
    let reshapes: Vec<(usize, String)> = stale.iter().filter_map(|&t| reshaped(&g, t, &a[&t]).map(|d| (t, d))).collect();
    // Stale tables none of whose cells read a node that would run (a title or caption changed).
    let rerendered: Vec<usize> = stale
        .iter()
        .copied()
        .filter(|&t| !cells.iter().any(|c| c.0 == t) && !reshapes.iter().any(|r| r.0 == t))
        .filter(|&t| {
            let n = &g.nodes[t];
            let inputs = n.inputs.iter().map(|(s, v)| (s.clone(), v.iter().map(|&j| g.nodes[j].id.clone()).collect())).collect();
            !n.stage.cells(&n.params, &inputs, &|node, other| reads_from(&g, node, other), &|id| kind_of(&g, id)).is_empty()
        })
        .collect();
    // The shared cache a run would use: (folder, whether it publishes, where it is set).
    let cache_line = match (&c.cache, &g.pipeline.cache) {
        (Some(d), _) => Some((d.clone(), !no_publish, "--cache or POLYFLOW_CACHE")),
        (None, Some(spec)) => Some((spec.dir.clone(), spec.publish && !no_publish, "the pipeline's `[cache]`")),
        (None, None) => None,
    };
    // Fresh nodes' exported files that a run would write (not there, or not what the node holds): with overrides a
    // run marks what it writes, so a what-if says nothing of them.
    let any_fresh = sel.iter().any(|i| a[i].state == State::Fresh);
    let rewrites = if any_fresh && c.config.is_empty() && c.set.is_empty() { outdated_exports(&g, &c, &sel, &a) } else { vec![] };
    if json {
        let v = serde_json::json!({
            "selected": sel.len(),
            "would_run": stale.len(),
            // Stale nodes a run does not compute: their key is another stale node's (node → that node).
            "same_key_as": same_as.iter().map(|(&i, &j)| (g.nodes[i].id.clone(), serde_json::Value::from(g.nodes[j].id.clone()))).collect::<serde_json::Map<_, _>>(),
            "would_fetch": ids(&fetch),
            // Each of them as `stale` gives a node, with what computing it took where it was computed.
            "fetch": fetch.iter().map(|&i| serde_json::json!({
                "id": g.nodes[i].id,
                "kind": g.nodes[i].stage.kind(),
                "reason": reasons(i),
                "reasons": a[&i].reasons,
                "computed_ms": a[&i].in_cache.as_ref().and_then(|e| e.computed_ms),
            })).collect::<Vec<_>>(),
            "fresh": sel.iter().filter(|i| a[i].state == State::Fresh).map(|&i| &g.nodes[i].id).collect::<Vec<_>>(),
            "stale": stale.iter().map(|&i| serde_json::json!({
                "id": g.nodes[i].id,
                "kind": g.nodes[i].stage.kind(),
                "state": a[&i].state,
                "reason": reasons(i),
                "reasons": a[&i].reasons,
                "last_ms": own(i),
                "job": flying.get(&i),
                "leftover_jobs": leftover.get(&i).cloned().unwrap_or_default(),
                "resumes_from": resume(i),
            })).collect::<Vec<_>>(),
            "reshaped_tables": reshapes.iter().map(|(t, d)| (g.nodes[*t].id.clone(), serde_json::Value::from(d.clone()))).collect::<serde_json::Map<_, _>>(),
            "cells": cells.iter().map(|(t, row, col, rerun)| serde_json::json!({
                "table": g.nodes[*t].id, "row": row, "column": col, "would_run": rerun,
            })).collect::<Vec<_>>(),
            "rerendered_tables": ids(&rerendered),
            "cache": cache_line.as_ref().map(|(dir, publish, _)| serde_json::json!({"dir": dir, "publish": publish})),
            // Fresh nodes' exported files a run would write: not there (`missing`), or not what the node holds.
            "outdated_exports": rewrites.iter().map(|(id, path, missing)| serde_json::json!({"id": id, "path": path, "missing": missing})).collect::<Vec<_>>(),
            "estimate": {
                "serial_ms": est.serial_ms,
                // With the local executor: the nodes placed on `jobs` slots and `devices` as a run places them.
                "scheduled_ms": sched.filter(|_| est.known > 0),
                "jobs": jobs,
                "devices": devices,
                // Unknown (null) when no stale node has a recorded run, as the text says.
                "critical_path_ms": (est.known > 0).then_some(est.critical_ms),
                "critical_path": (est.known > 0).then(|| ids(&est.path)),
                "known": est.known,
                "unknown": ids(&est.unknown),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(stale.len() + fetch.len() + rewrites.len());
    }
    for &i in &sel {
        if a[&i].state == State::Fresh {
            // Fresh nodes are listed with `-v` only (a what-if of a few nodes in a study of hundreds).
            if verbose {
                println!("{:>12} {}", "Fresh", g.nodes[i].id);
            }
        } else if let Some(&j) = same_as.get(&i) {
            println!(
                "{:>12} {} ({}): {} [same key as {}: computed once, by it]",
                "Would reuse",
                g.nodes[i].id,
                g.nodes[i].stage.kind(),
                reasons(i),
                g.nodes[j].id
            );
        } else if let Some(e) = &a[&i].in_cache {
            let took = e.computed_ms.map(|ms| format!(", computed in {}", fmt_ms(ms))).unwrap_or_default();
            println!("{:>12} {} ({}): {} [in the shared cache{took}]", "Would fetch", g.nodes[i].id, g.nodes[i].stage.kind(), reasons(i));
        } else {
            let t = match (own(i), sibling(i)) {
                (Some(ms), _) => format!("last run took {}", fmt_ms(ms)),
                (None, Some(ms)) => format!("no run of its own: about {}, as its declaration's runs", fmt_ms(ms)),
                (None, None) => "no recorded run: time unknown".into(),
            };
            // A Slurm job outlives its run (the next Slurm run re-attaches to it); a local run holds the store, so
            // this run would wait for it (`--wait`) and then find the node as it left it.
            let job = match flying.get(&i) {
                Some(j) if here.contains(&i) => format!(" [in flight: {j}; a run waits for that one with `--wait`]"),
                Some(j) => format!(" [in flight as {j}: a Slurm run re-attaches to it]"),
                None => String::new(),
            };
            println!("{:>12} {} ({}): {} [{t}]{job}", "Would run", g.nodes[i].id, g.nodes[i].stage.kind(), reasons(i));
        }
        for l in leftover.get(&i).into_iter().flatten() {
            println!("{:>12} {}: {l}", "Note", g.nodes[i].id);
        }
    }
    for (id, path, missing) in rewrites.iter().take(if verbose { usize::MAX } else { EXPORTS_LISTED }) {
        let why = if *missing { "not there" } else { "not what it holds now (an earlier run's, or edited)" };
        println!("{:>12} {path}, which `{id}` exports: {why}", "Would write");
    }
    if rewrites.len() > EXPORTS_LISTED && !verbose {
        println!("{:>12} and {} more (`-v` lists them)", "", crate::text::count(rewrites.len() - EXPORTS_LISTED, "exported file"));
    }
    let fetched = if fetch.is_empty() { String::new() } else { format!(", {} would be fetched from the shared cache", fetch.len()) };
    let written = match rewrites.len() {
        0 => String::new(),
        1 => ", 1 exported file would be written".to_string(),
        n => format!(", {n} exported files would be written"),
    };
    let fresh = sel.len() - stale.len() - fetch.len() - same_as.len();
    let listed = if fresh > 0 && !verbose { format!(" ({fresh} fresh: `-v` lists them)") } else { String::new() };
    let reused = match same_as.len() {
        0 => String::new(),
        n => format!(", {n} would be the result of another with the same key"),
    };
    println!("{:>12} {} of {} nodes would run{reused}{fetched}{written}{listed}", "Plan", stale.len(), sel.len());
    // Where a run's results go besides this store: a pipeline file's `[cache]` is otherwise easily missed.
    if let Some((dir, publish, from)) = &cache_line {
        let publishes = if *publish { " and publishes what it computes there (`run --no-publish` only fetches)" } else { "" };
        println!("{:>12} {} ({from}): a run fetches from it{publishes}", "Cache", crate::spec::source::display_path(dir));
    }
    if !stale.is_empty() {
        if est.known == 0 {
            println!("{:>12} unknown: none of these nodes has a recorded run", "Estimate");
        } else {
            let of = if est.unknown.is_empty() {
                String::new()
            } else {
                if est.known == 1 {
                    " (the 1 node with a recorded run, its own or its declaration's)".to_string()
                } else {
                    format!(" (the {} nodes with a recorded run, their own or their declaration's)", est.known)
                }
            };
            let placed = match sched {
                Some(ms) => format!(
                    "about {} on -j {jobs}{} (each node's last run's time, placed as a run places them){of}; ",
                    fmt_ms(ms),
                    match devices {
                        0 => String::new(),
                        1 => " and 1 device".into(),
                        n => format!(" and {n} devices"),
                    }
                ),
                None => format!("as the cluster schedules them{of}: "),
            };
            println!(
                "{:>12} {placed}{} one after another, {} along the critical path {}",
                "Estimate",
                fmt_ms(est.serial_ms),
                fmt_ms(est.critical_ms),
                ids(&est.path).join(" → "),
            );
        }
        if !est.unknown.is_empty() {
            let n = est.unknown.len();
            println!(
                "{:>12} {n} node{} without a successful run on record, time unknown: {}",
                "",
                if n == 1 { "" } else { "s" },
                some_ids(&ids(&est.unknown))
            );
        }
    }
    if !cells.is_empty() {
        println!("{:>12} that may change (a node that re-runs can still produce the same bytes):", "Cells");
        for (t, row, col, rerun) in &cells {
            println!("{:>12} {}: row '{row}' × '{col}' ({} would run)", "", g.nodes[*t].id, some_ids(rerun));
        }
    }
    for (t, d) in &reshapes {
        println!("{:>12} of {} change: {d} since its last run", "Cells", g.nodes[*t].id);
    }
    for &t in &rerendered {
        println!("{:>12} unchanged: {} only re-renders (none of its cells reads a node that would run)", "Cells", g.nodes[t].id);
    }
    Ok(stale.len() + fetch.len() + rewrites.len())
}

/// Nodes whose files cannot be digested (a dangling symlink in a dataset folder, a file this user cannot read):
/// a run would fail on them, so `plan` says so as it says of a missing input, with exit 2.
fn unreadable_sources(g: &Graph, sel: &[usize], a: &BTreeMap<usize, Assessment>) -> Result<(), CliError> {
    let found: Vec<(usize, &str)> = sel
        .iter()
        .filter_map(|&i| {
            a[&i].reasons.iter().find_map(|r| match r {
                crate::fingerprint::DirtyReason::SourcesUnreadable { error } => Some((i, error.as_str())),
                _ => None,
            })
        })
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let at = |i: usize| g.pipeline.sources.locate(g.pipeline.nodes[i].span);
    let listed = found
        .iter()
        .map(|&(i, e)| {
            let l = at(i);
            serde_json::json!({
                "node": g.nodes[i].id, "nodes": [g.nodes[i].id], "kind": g.nodes[i].stage.kind(), "param": null,
                "message": format!("its files cannot be read: {e}"), "set": null,
                "at": {"file": l.file, "line": l.line, "col": l.col},
            })
        })
        .collect();
    let lines: Vec<String> = found
        .iter()
        .map(|&(i, e)| format!("  - `{}` ({}, {}): its files cannot be read: {e}", g.nodes[i].id, g.nodes[i].stage.kind(), at(i)))
        .collect();
    Err(super::checks::problems_found(&lines, listed))
}

/// What [`in_flight`] finds: node → what computes its current key; node → lines for jobs of earlier settings; the
/// nodes of the first map a run of this machine computes.
type InFlight = (BTreeMap<usize, String>, BTreeMap<usize, Vec<String>>, std::collections::BTreeSet<usize>);

/// The Slurm jobs of the selected nodes that have not ended: node → `Slurm job N (STATE)` of a node not fresh
/// whose job computes its current key (a Slurm run re-attaches to it), and node → a line for each job of
/// earlier settings left running (`--keep-jobs`). One `squeue` call, made only when the store records
/// submissions of these nodes. Third: the nodes of the first map a run of this machine is computing (not a Slurm
/// job).
fn in_flight(store_root: &std::path::Path, g: &Graph, sel: &[usize], a: &BTreeMap<usize, crate::exec::assess::Assessment>) -> InFlight {
    use crate::exec::slurm::flight;
    let ids: std::collections::BTreeSet<String> = sel.iter().map(|&i| g.nodes[i].id.clone()).collect();
    let jobs = match flight::in_flight(store_root, Some(&ids), &g.executor.job_prefix) {
        Ok(j) => j,
        Err(e) => {
            crate::cli::out::errln!("note: {}", flight::unknown(&e));
            BTreeMap::new()
        }
    };
    let (mut current, mut left) = (BTreeMap::new(), BTreeMap::<usize, Vec<String>>::new());
    let mut here = std::collections::BTreeSet::new();
    // A run in another process: the nodes it is computing or fetching now.
    let local = crate::exec::running::read(store_root);
    if local.is_none() {
        // A run that names no nodes (a polyflow from before `running.json`): at least that it runs.
        if let Some(h) = crate::exec::running::holder(store_root) {
            crate::cli::out::errln!("note: a run holds the store ({h}) without naming the nodes it is computing (a polyflow from before 2026-12-06, or one starting up): those show as stale");
        }
    }
    for &i in sel {
        if let Some((r, f)) = local.as_ref().and_then(|r| r.nodes.get(&g.nodes[i].id).map(|f| (r, f))) {
            if a[&i].state != State::Fresh {
                current.insert(i, crate::exec::running::describe(f, r.pid));
                here.insert(i);
            }
        }
        for f in jobs.get(&g.nodes[i].id).into_iter().flatten() {
            let key = a[&i].key.as_deref();
            if f.is_leftover(key) {
                left.entry(i).or_default().push(flight::leftover(f));
            } else if key.is_none() {
                current.insert(i, format!("{} (its settings are known once its inputs are)", f.describe()));
                here.remove(&i);
            } else if a[&i].state != State::Fresh {
                current.insert(i, f.describe());
                here.remove(&i);
            }
        }
    }
    (current, left, here)
}

/// Prints node `i`'s reasons at `depth`, then, for each upstream it waits on, that node and its reasons (each
/// node once), so `--why` reaches the parameter or file that changed.
fn explain_reasons(g: &Graph, a: &BTreeMap<usize, Assessment>, i: usize, depth: usize, seen: &mut std::collections::BTreeSet<usize>) {
    // Indented by depth up to a point: a chain of a thousand nodes must not print a thousand widening lines.
    let pad = "    ".repeat((depth - 1).min(MAX_INDENT));
    for r in &a[&i].reasons {
        println!("{pad}  - {r}");
        let crate::fingerprint::DirtyReason::UpstreamPending { .. } = r else { continue };
        // The upstream nodes not explained yet, marked at once: a chain below one of them does not explain a
        // sibling (a node every link of a comb also waits on) inside itself.
        let ups: Vec<usize> = upstream_of(g, a, r).into_iter().filter(|&j| seen.insert(j)).collect();
        for j in ups {
            let s = &a[&j];
            let (chain, also) = follow_chain(g, a, j, seen);
            let last = *chain.last().unwrap_or(&j);
            if chain.len() > CHAIN_SHOWN {
                let how = if also { "each waiting on the next and on nodes explained here" } else { "each waiting only on the next" };
                println!(
                    "{pad}    {} ({}): {} … {} ({} nodes, {how})",
                    g.nodes[j].id,
                    g.nodes[j].stage.kind(),
                    s.state,
                    g.nodes[last].id,
                    chain.len()
                );
                println!("{pad}    {} ({}): {}", g.nodes[last].id, g.nodes[last].stage.kind(), a[&last].state);
                explain_reasons(g, a, last, depth + 1, seen);
                continue;
            }
            // Short: each as before (the chain's later nodes are explained in turn).
            for k in &chain[1..] {
                seen.remove(k);
            }
            println!("{pad}    {} ({}): {}", g.nodes[j].id, g.nodes[j].stage.kind(), s.state);
            explain_reasons(g, a, j, depth + 1, seen);
        }
    }
}

/// The selected nodes an `upstream_pending` reason names.
fn upstream_of(g: &Graph, a: &BTreeMap<usize, Assessment>, r: &crate::fingerprint::DirtyReason) -> Vec<usize> {
    let crate::fingerprint::DirtyReason::UpstreamPending { upstream } = r else { return vec![] };
    upstream.iter().filter_map(|u| g.by_id.get(u).copied()).filter(|j| a.contains_key(j)).collect()
}

/// From `j`, the chain of nodes whose only reason is waiting, on exactly one node not yet explained: `j` and
/// the nodes after it, marked explained; and whether some link also waits on nodes explained already.
fn follow_chain(g: &Graph, a: &BTreeMap<usize, Assessment>, j: usize, seen: &mut std::collections::BTreeSet<usize>) -> (Vec<usize>, bool) {
    let (mut chain, mut also, mut last) = (vec![j], false, j);
    while let [r @ crate::fingerprint::DirtyReason::UpstreamPending { .. }] = a[&last].reasons.as_slice() {
        let ups = upstream_of(g, a, r);
        let new: Vec<usize> = ups.iter().copied().filter(|k| !seen.contains(k)).collect();
        let [k] = new.as_slice() else { break };
        also |= ups.len() > 1;
        seen.insert(*k);
        chain.push(*k);
        last = *k;
    }
    (chain, also)
}

/// The deepest indentation of `status --why` (deeper levels stay at it).
const MAX_INDENT: usize = 8;
/// A chain of nodes each waiting on the next, longer than this, is told as one line.
const CHAIN_SHOWN: usize = 3;
/// The deepest nesting of `status --why --json` (JSON readers have recursion limits): below it, `more`.
const MAX_JSON_DEPTH: usize = 32;

/// `status --why --json` of node `i`: its state, reasons, key and last failure, and for each upstream node it
/// waits on the same, nested (each node once, as in the text); a long chain of nodes each waiting on the next is
/// one entry whose `chain` lists them (the last explained), and below [`MAX_JSON_DEPTH`] levels `more` lists
/// the nodes not explained (`status --why` of one of them goes on).
fn why_json(
    g: &Graph,
    a: &BTreeMap<usize, Assessment>,
    i: usize,
    seen: &mut std::collections::BTreeSet<usize>,
    depth: usize,
) -> serde_json::Value {
    let s = &a[&i];
    let mut waits = vec![];
    let mut more = vec![];
    for r in &s.reasons {
        let ups: Vec<usize> = upstream_of(g, a, r).into_iter().filter(|&j| seen.insert(j)).collect();
        for j in ups {
            if depth >= MAX_JSON_DEPTH {
                more.push(g.nodes[j].id.clone());
                continue;
            }
            let (chain, _) = follow_chain(g, a, j, seen);
            if chain.len() > CHAIN_SHOWN {
                let last = *chain.last().unwrap_or(&j);
                let mut v = why_json(g, a, last, seen, depth + 1);
                v["chain"] = serde_json::json!(chain.iter().map(|&k| &g.nodes[k].id).collect::<Vec<_>>());
                waits.push(v);
            } else {
                for k in &chain[1..] {
                    seen.remove(k);
                }
                waits.push(why_json(g, a, j, seen, depth + 1));
            }
        }
    }
    let mut v = serde_json::json!({
        "id": g.nodes[i].id,
        "kind": g.nodes[i].stage.kind(),
        "state": s.state,
        "reasons": s.reasons,
        "key": s.key,
        "last_failure": s.failure.as_ref().map(|f| &f.error),
        "last_failure_key": s.failure.as_ref().map(|f| &f.key),
        "waits_on": waits,
    });
    if !more.is_empty() {
        v["more"] = serde_json::json!(more);
    }
    v
}

/// Where node `i` would resume from: a stale node (not in flight) whose interrupted run left a checkpoint its
/// kind resumes from (`update 1200`), with the checkpoint's size.
fn resume_point(g: &Graph, a: &BTreeMap<usize, Assessment>, store: &std::path::Path, i: usize) -> Option<(String, u64)> {
    let key = a[&i].key.as_deref().filter(|_| a[&i].state != State::Fresh)?;
    let dir = crate::store::partial_dir(store, key);
    let point = g.nodes[i].stage.resume_point(&dir)?;
    let size =
        walkdir::WalkDir::new(&dir).into_iter().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum();
    Some((point, size))
}

/// `status`.
pub fn status(c: Common, nodes: Vec<String>, json: bool, why: Option<String>, only_stale: bool, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    super::pipeline_notes(&g);
    let (sel, a) = assess(&g, &c, &nodes, &[], false)?;
    let (running, leftover, _) = in_flight(&c.store, &g, &sel, &a);
    // Stale nodes the shared cache holds: a run fetches them instead of computing them.
    let in_cache: std::collections::BTreeSet<usize> = sel.iter().copied().filter(|i| a[i].in_cache.is_some()).collect();
    // A stale node (not in flight) whose interrupted run left a checkpoint its kind resumes from.
    let resumes = |i: usize| -> Option<String> {
        let (point, size) = resume_point(&g, &a, &c.store, i).filter(|_| !running.contains_key(&i))?;
        Some(format!("an interrupted run's checkpoint at {point} is kept ({}): a run resumes from it", fmt_bytes(size)))
    };
    let reasons_of = |i: usize| -> Vec<String> {
        let mut r: Vec<String> = a[&i].reasons.iter().map(|r| r.to_string()).collect();
        if let Some(j) = running.get(&i) {
            r.insert(0, format!("in flight: {j}"));
        }
        if in_cache.contains(&i) {
            r.push("in the shared cache: a run fetches it".to_string());
        }
        r.extend(leftover.get(&i).into_iter().flatten().cloned());
        if let Some(c) = resumes(i) {
            r.push(c);
        }
        r
    };
    let reason = |i: usize| reasons_of(i).join("; ");
    if let Some(w) = why {
        // A node, or every replicate of a declaration (`st.digits`), one after another.
        let Some(ids) = g.resolve(&w) else {
            return Err(CliError::Other(format!("error: --why: no node `{w}`\n  help: {}", g.suggest(&w)), exit::USAGE));
        };
        if let Some(i) = ids.iter().copied().find(|i| !a.contains_key(i)) {
            return Err(CliError::Other(
                format!("error: `{}` is not among the selected nodes\n  help: drop the NODES arguments, or add it to them", g.nodes[i].id),
                exit::USAGE,
            ));
        }
        if json {
            let v: Vec<serde_json::Value> =
                ids.iter().map(|&i| why_json(&g, &a, i, &mut std::collections::BTreeSet::from([i]), 0)).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            return Ok(exit::OK);
        }
        for i in ids {
            let w = &g.nodes[i].id;
            let s = &a[&i];
            println!("{} ({}): {}", w, g.nodes[i].stage.kind(), s.state);
            // Each reason; a node waiting on stale upstream nodes is explained down to the root causes.
            let mut seen = std::collections::BTreeSet::from([i]);
            explain_reasons(&g, &a, i, 1, &mut seen);
            if let Some(k) = &s.key {
                println!("  key: {k}");
            }
            // A failure under other settings (an earlier edit, a `--set` experiment, another pipeline file naming
            // the node) is not this node's state: said apart, and not at all once it is fresh.
            match &s.failure {
                // (A node stopped with its run says so among its reasons.)
                Some(f) if f.runner.contains_key(crate::exec::assess::INTERRUPTED) => {}
                Some(f) if s.key.as_deref() == Some(f.key.as_str()) => println!("  last failure: {}", f.error),
                Some(f) if s.state != State::Fresh => {
                    println!("  last failure, under other settings (key {}): {}", &f.key[..12.min(f.key.len())], f.error)
                }
                _ => {}
            }
            if let Some(r) = resumes(i) {
                println!("  {r}");
            }
            if let Some(j) = running.get(&i) {
                println!("  in flight: {j}");
            }
            for l in leftover.get(&i).into_iter().flatten() {
                println!("  {l}");
            }
        }
        return Ok(exit::OK);
    }
    // The rows listed: with `--stale`, the nodes not fresh.
    let listed: Vec<usize> = sel.iter().copied().filter(|i| !only_stale || a[i].state != State::Fresh).collect();
    if json {
        // Exported files that are not the fresh node's artifact (as the text's notes say), per node.
        let differ = if c.config.is_empty() && c.set.is_empty() { outdated_exports(&g, &c, &sel, &a) } else { vec![] };
        let arr: Vec<serde_json::Value> = listed
            .iter()
            .map(|&i| {
                let s = &a[&i];
                let exports: Vec<serde_json::Value> = differ
                    .iter()
                    .filter(|(id, _, _)| *id == g.nodes[i].id)
                    .map(|(_, path, missing)| serde_json::json!({"path": path, "missing": missing}))
                    .collect();
                serde_json::json!({
                    "outdated_exports": exports,
                    "id": g.nodes[i].id,
                    "kind": g.nodes[i].stage.kind(),
                    "state": s.state,
                    "reason": reason(i),
                    "reasons": s.reasons,
                    "job": running.get(&i),
                    "leftover_jobs": leftover.get(&i).cloned().unwrap_or_default(),
                    "key": s.key,
                    "size": s.manifest.as_ref().map(|m| m.size()),
                    "last_ms": s.record.as_ref().map(|r| r.duration_ms),
                    "in_cache": s.in_cache.is_some(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    super::out::fit(&mut t);
    let colour = super::out::colour();
    t.set_header(vec!["id", "kind", "state", "reason", "size", "last run"]);
    for &i in &listed {
        let s = &a[&i];
        let color = match s.state {
            State::Fresh => Color::Green,
            State::Stale => Color::Yellow,
            State::Failed => Color::Red,
        };
        t.add_row(vec![
            Cell::new(&g.nodes[i].id),
            Cell::new(g.nodes[i].stage.kind()),
            if colour { Cell::new(s.state.to_string()).fg(color) } else { Cell::new(s.state.to_string()) },
            // One line per reason in the table (a failure's program output is for `show` and `--why`).
            // A long reason (a table's caption changed, a command's argv) is cut: `--why` has it whole.
            // A failure's text without the id its row already shows (`last run failed: node `x`: …`).
            Cell::new(cut_reason(
                &reasons_of(i)
                    .iter()
                    .map(|r| {
                        short_quotes(&r.lines().next().unwrap_or("").replacen(
                            &format!("failed: node `{}`: ", g.nodes[i].id),
                            "failed: ",
                            1,
                        ))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                &g.nodes[i].id,
            )),
            Cell::new(s.manifest.as_ref().map(|m| fmt_bytes(m.size())).unwrap_or_default()),
            Cell::new(s.record.as_ref().map(|r| fmt_ms(r.duration_ms)).unwrap_or_default()),
        ]);
    }
    let fresh = sel.iter().filter(|i| a[i].state == State::Fresh).count();
    if !listed.is_empty() {
        println!("{t}");
    }
    // A fresh node's exported files that are not what it holds (an earlier setting's table, an edit by hand): only
    // a run rewrites them, and a reader of `results/` would read other numbers than the store's.
    if c.config.is_empty() && c.set.is_empty() {
        let differ = outdated_exports(&g, &c, &sel, &a);
        for (id, path, missing) in differ.iter().take(EXPORTS_LISTED) {
            if *missing {
                super::out::errln!("note: {path}, which `{id}` exports, is not there: `polyflow run` writes it");
            } else {
                super::out::errln!("note: {path} is not what `{id}` holds now (an earlier run's, or edited): `polyflow run` rewrites it");
            }
        }
        if differ.len() > EXPORTS_LISTED {
            super::out::errln!("note: and {} more exported files out of date", differ.len() - EXPORTS_LISTED);
        }
    }
    let hidden = if only_stale && fresh > 0 { " (those not listed: --stale)".to_string() } else { String::new() };
    println!(
        "{fresh} of {} nodes fresh{hidden}{}",
        sel.len(),
        g.pipeline.profile.as_ref().map(|p| format!(" (profile {p})")).unwrap_or_default()
    );
    Ok(exit::OK)
}

/// How many out-of-date exported files `status` names.
const EXPORTS_LISTED: usize = 5;

/// The exported files of the fresh selected nodes (a table's `results/…`) whose content differs from the node's
/// artifact, or which are not there: (node id, path as shown, not there). A file a run exported with overrides
/// carries them and counts as different, as it is not the file's own result.
fn outdated_exports(g: &Graph, c: &Common, sel: &[usize], a: &BTreeMap<usize, Assessment>) -> Vec<(String, String, bool)> {
    // No store: nothing is fresh (and its note was said once already).
    if !crate::store::Store::exists(&c.store) {
        return vec![];
    }
    let Ok((store, _empty)) = super::read_store(&c.store) else { return vec![] };
    let mut out = vec![];
    for &i in sel {
        let (n, s) = (&g.nodes[i], &a[&i]);
        let (State::Fresh, Some(m)) = (s.state, s.manifest.as_ref()) else { continue };
        let exports = m.exported_files(n.stage.exports(&n.params));
        if exports.is_empty() {
            continue;
        }
        for (file, rel) in exports {
            let dest = n.base_dir.join(&rel);
            let Some(want) = m.files.get(&file) else { continue };
            // The size, then the content's digest through the store's stat cache: an unchanged exported file (a
            // model's weights too) is not read again.
            let meta = std::fs::metadata(&dest);
            let same =
                meta.as_ref().is_ok_and(|d| d.len() == want.size) && store.file_digests().file(&dest).is_ok_and(|d| d == want.digest);
            if !same {
                out.push((n.id.clone(), crate::spec::source::display_path(&dest), meta.is_err()));
            }
        }
    }
    out
}

/// The most characters of one quoted piece (`…`) of a reason in the `status` table: a command's argv, a long
/// value, cut in the middle so that the reason's own words after it (`exited with code 3`) stay in the row.
const QUOTED_CHARS: usize = 60;

/// `text` with each backquoted piece longer than [`QUOTED_CHARS`] cut in the middle.
fn short_quotes(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    // Odd parts are between backquotes (an unmatched last one is left as is).
    let quoted = |k: usize| k % 2 == 1 && k + 1 < parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(k, p)| if quoted(k) { crate::text::cut_middle(p, QUOTED_CHARS) } else { p.to_string() })
        .collect::<Vec<_>>()
        .join("`")
}

/// The most characters of reasons a row of the `status` table shows.
const REASON_CHARS: usize = 240;

/// `text` cut to [`REASON_CHARS`], ending with where the rest is.
fn cut_reason(text: &str, id: &str) -> String {
    if text.chars().count() <= REASON_CHARS {
        return text.to_string();
    }
    let head: String = text.chars().take(REASON_CHARS).collect();
    format!("{head}… (all: `status --why {id}`)")
}

/// `dag [NODES]`: the graph of the targets and what they need, each node labelled with its state.
pub fn dag(c: Common, nodes: &[String], format: &str, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    let sel = g.select(nodes)?;
    let states: BTreeMap<usize, State> = match assess(&g, &c, nodes, &[], false) {
        Ok((_, a)) => a.into_iter().map(|(i, s)| (i, s.state)).collect(),
        Err(_) => BTreeMap::new(),
    };
    let label = |i: usize| states.get(&i).map(|s| format!(" ({s})")).unwrap_or_default();
    let out = if format == "mermaid" { crate::graph::to_mermaid(&g, &sel, &label) } else { crate::graph::to_dot(&g, &sel, &label) };
    print!("{out}");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::short_quotes;

    #[test]
    fn long_quoted_pieces_are_cut_in_the_middle_and_the_words_after_them_kept() {
        let argv = format!("sh -c {}", "x".repeat(200));
        let short = short_quotes(&format!("last run failed: `{argv}` exited with code 3"));
        assert!(short.starts_with("last run failed: `sh -c x") && short.ends_with("xx` exited with code 3"), "{short}");
        assert!(short.chars().count() < 100, "{short}");
        assert_eq!(short_quotes("a `b` c `unmatched"), "a `b` c `unmatched");
    }
}
