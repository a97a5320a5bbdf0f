//! `params` (parameter counts of model nodes) and `kinds` (the node kinds and their parameters).

use super::out::outln;
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::assess_all;
use crate::stage::{InputArtifact, Registry};
use crate::store::Store;
use crate::text::count;

/// `params`: parameter counts of every model-bearing node, computed from its config and its tasks' data
/// (the data and task nodes those need are brought up to date first; nothing is trained).
pub fn params(c: Common, json: bool, wait: bool, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    let sel = g.select(&[])?;
    let wanted: Vec<usize> = sel.iter().copied().filter(|&i| !g.nodes[i].stage.report_slots().is_empty()).collect();
    // First from declarations alone (nothing read or run: the paper profile works without any dataset on disk).
    let declared = crate::graph::declarations(&g, &sel);
    let mut out = serde_json::Map::new();
    let mut pending = vec![];
    for &i in &wanted {
        let n = &g.nodes[i];
        let mut inputs = std::collections::BTreeMap::new();
        let complete = n.stage.report_slots().iter().all(|slot| {
            let ups = n.inputs.get(*slot).cloned().unwrap_or_default();
            let ds: Vec<serde_json::Value> = ups.iter().filter_map(|u| declared.get(u).cloned()).collect();
            let ok = ds.len() == ups.len();
            inputs.insert(slot.to_string(), ds);
            ok
        });
        match complete.then(|| n.stage.report_declared(&n.params, &inputs)).flatten() {
            Some(Ok(r)) => {
                out.insert(n.id.clone(), r);
            }
            Some(Err(e)) => return Err(CliError::Other(format!("error: {}: {e}", n.id), exit::USAGE)),
            None => pending.push(i),
        }
    }
    // The rest from the artifacts of their report inputs (running those inputs if stale: e.g. counting classes).
    let mut targets = vec![];
    for &i in &pending {
        for slot in g.nodes[i].stage.report_slots() {
            for &u in g.nodes[i].inputs.get(*slot).into_iter().flatten() {
                targets.push(g.nodes[u].id.clone());
            }
        }
    }
    if !targets.is_empty() {
        let store = Store::open(&c.store)?;
        {
            // As `run`: a store held by another run is exit 3 at once, unless `--wait`.
            let _lock = super::lock_store(&store, wait, false, None)?;
            targets.sort();
            targets.dedup();
            crate::cli::out::errln!(
                "{:>12} class counts or input sizes of {} are not declared: reading them from the task nodes {} (computed where not fresh)",
                "Note",
                count(pending.len(), "model node"),
                targets.join(", ")
            );
            let opts = crate::exec::RunOptions { targets, env: env_of(&g, &c.backend), ..Default::default() };
            let rep = super::report::Reporter::new(false, false);
            // What runs is said (it writes to the store); fresh nodes are not listed.
            let sink = |e: &crate::exec::Event| {
                if matches!(e, crate::exec::Event::Failed { .. } | crate::exec::Event::Started { .. } | crate::exec::Event::Finished { .. })
                {
                    rep.event(e)
                }
            };
            let s = crate::exec::run(&g, &store, &opts, &sink)?;
            if !s.failed.is_empty() {
                return Ok(exit::NODE_FAILED);
            }
        }
        let index = store.index()?;
        let a = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
        for &i in &pending {
            let n = &g.nodes[i];
            let mut inputs = std::collections::BTreeMap::new();
            for slot in n.stage.report_slots() {
                let arts: Vec<InputArtifact> = n
                    .inputs
                    .get(*slot)
                    .into_iter()
                    .flatten()
                    .filter_map(|&u| {
                        a.get(&u).and_then(|s| s.manifest.clone()).map(|m| InputArtifact::new(g.nodes[u].id.clone(), m, store.clone()))
                    })
                    .collect();
                inputs.insert(slot.to_string(), arts);
            }
            match n.stage.report(&n.params, &inputs) {
                Some(Ok(r)) => {
                    out.insert(n.id.clone(), r);
                }
                Some(Err(e)) => return Err(CliError::Other(format!("error: {}: {e}", n.id), exit::USAGE)),
                None => {}
            }
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec!["node", "tokenizers", "adapters", "shared encoder", "heads", "total"]);
    for (id, r) in &out {
        let f = |k: &str| r.get(k).and_then(|v| v.as_u64()).map(crate::tables::group_digits).unwrap_or_default();
        t.add_row(vec![id.clone(), f("tokenizers"), f("adapters"), f("shared_encoder"), f("heads"), f("total")]);
    }
    outln!("{t}");
    Ok(exit::OK)
}

/// `kinds`.
pub fn kinds(reg: &Registry) -> Result<i32, CliError> {
    for s in reg.stages() {
        outln!("{} (v{}) → {}: {}", s.kind(), s.version(), s.output(), s.doc());
        for i in s.inputs() {
            let name = if i.name == crate::stage::ANY_SLOT { "<any name>" } else { i.name };
            outln!("    input  {:<16} {}{}", name, i.types.join("|"), if i.optional { " (optional)" } else { "" });
        }
        for p in s.params() {
            let d = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
            outln!("    param  {:<16} {}{d}", p.name, p.doc);
        }
    }
    outln!(
        "(vN: the kind's version; a node's can be later where a change touched only some of its settings or backends, \
         e.g. one dataset format: `show NODE` gives a node's)"
    );
    Ok(exit::OK)
}
