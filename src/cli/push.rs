//! `push`: publishes a store's fresh artifacts to a shared cache.

use super::out::outln;
use super::report::fmt_bytes;
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::assess_all;
use crate::exec::State;
use crate::stage::Registry;
use crate::text::count;

/// `push FILE [NODES] --cache DIR`: publishes every fresh artifact of the selected nodes that the shared cache
/// lacks, one after another (each whole or not at all, as a run's publications).
pub fn push(c: Common, nodes: Vec<String>, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    let Some((cache, _)) = c.shared_cache(&g, true)? else {
        return Err(CliError::Other(
            "error: no shared cache: name one with `--cache DIR` (or POLYFLOW_CACHE, or `[cache]`)".into(),
            exit::USAGE,
        ));
    };
    let (store, _empty) = super::read_store(&c.store)?;
    let sel = g.select(&nodes)?;
    let index = store.index_read()?;
    let a = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
    let (mut pushed, mut bytes, mut had, mut failed) = (0, 0u64, 0, 0);
    let mut not_fresh = vec![];
    for &i in &sel {
        let s = &a[&i];
        let (Some(key), Some(m), State::Fresh) = (s.key.as_ref(), s.manifest.as_ref(), s.state) else {
            not_fresh.push(g.nodes[i].id.clone());
            continue;
        };
        if cache.lookup(key)?.is_some() {
            had += 1;
            continue;
        }
        // What the record says of how it was made: the build that computed it (or published what this store
        // fetched), not this one.
        // (Its run under this key, also where the node's latest run is another's: a later `--set` experiment.)
        let kept = s.record.clone().filter(|r| &r.key == key).or_else(|| index.run_of(&g.nodes[i].id, key).ok().flatten());
        let record = kept.as_ref();
        let polyflow = record
            .and_then(|r| r.runner.get(crate::exec::BUILT_WITH).or_else(|| r.runner.get(crate::exec::PUBLISHED_WITH)))
            .map_or("", String::as_str);
        let made = crate::store::Made { computed_ms: record.map(|r| r.duration_ms), polyflow };
        match cache.publish(key, m, &g.nodes[i].id, made, &store.blobs) {
            Ok(true) => {
                pushed += 1;
                bytes += m.size();
                outln!("{:>12} {} ({})", "Published", g.nodes[i].id, fmt_bytes(m.size()));
            }
            // Another publisher (a teammate's push or run) put the same key there first.
            Ok(false) => had += 1,
            Err(e) => {
                failed += 1;
                crate::cli::out::errln!("{:>12} {}: {e}", "Failed", g.nodes[i].id);
            }
        }
    }
    let there = if had == 1 { "1 was there already".to_string() } else { format!("{had} were there already") };
    outln!("{:>12} {} ({}) to {}; {there}", "Pushed", count(pushed, "artifact"), fmt_bytes(bytes), cache.describe());
    if !not_fresh.is_empty() {
        let shown = not_fresh.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        let more = if not_fresh.len() > 8 { format!(" and {} more", not_fresh.len() - 8) } else { String::new() };
        let them = if not_fresh.len() == 1 { "it" } else { "them" };
        outln!("{:>12} {} not fresh, not pushed: {shown}{more} (`polyflow run` computes {them})", "Skipped", not_fresh.len());
    }
    Ok(if failed > 0 { exit::STORE } else { exit::OK })
}
