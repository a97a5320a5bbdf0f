//! What named pipelines compute now, for `gc` and `verify`: every profile's graph and the keys of its nodes.

use super::{env_of, CliError};
use crate::exec::assess::assess_all;
use crate::graph;
use crate::spec;
use crate::stage::Registry;
use crate::store::Store;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Calls `visit` with the graph of every pipeline of `files` under no profile and under each profile it declares.
pub(super) fn each_profile(
    files: &[PathBuf],
    overlay: &spec::Overlay,
    reg: &Registry,
    mut visit: impl FnMut(&crate::graph::Graph) -> Result<(), CliError>,
) -> Result<(), CliError> {
    for f in files {
        let base = spec::load_with(f, None, overlay)?;
        let profiles = std::iter::once(None).chain(base.profiles.iter().cloned().map(Some));
        for p in profiles {
            visit(&graph::build(spec::load_with(f, p.as_deref(), overlay)?, reg)?)?;
        }
    }
    Ok(())
}

/// The keys every profile of `files` computes now in the store at `store` (fresh nodes, and stale ones whose
/// inputs are fresh; seen from `cache`, a chain of nodes the cache holds counts as fetched, so its keys are
/// known too), and the nodes (`id` or `id (profile)`) whose key is not known yet: an input of theirs is stale,
/// so what they will compute is known only when it has run.
pub(super) fn current_keys(
    files: &[PathBuf],
    store: &Store,
    backend: &str,
    overlay: &spec::Overlay,
    cache: Option<&dyn crate::store::ArtifactCache>,
    reg: &Registry,
) -> Result<(BTreeSet<String>, Vec<String>), CliError> {
    let index = store.index_read()?;
    let mut keys = BTreeSet::new();
    let mut unknown = vec![];
    each_profile(files, overlay, reg, |g| {
        // Every node the files declare, their includes' too, as `gc` keeps them.
        let sel = g.topo_order();
        let env = env_of(g, backend);
        let states = match cache {
            Some(c) => crate::exec::assess::assess_cached(g, &sel, store, &index, &env, &|_| false, c),
            None => assess_all(g, &sel, store, &index, &env, &|_| false),
        };
        for (i, st) in states {
            match st.key {
                Some(k) => {
                    keys.insert(k);
                }
                None => unknown.push(match &g.pipeline.profile {
                    Some(p) => format!("{} ({p})", g.nodes[i].id),
                    None => g.nodes[i].id.clone(),
                }),
            }
        }
        Ok(())
    })?;
    Ok((keys, unknown))
}

/// `verify FILES…`: the pipelines whose artifacts alone are checked, with the backend and overrides that key
/// them.
pub type VerifyOnly<'a> = Option<(&'a [PathBuf], &'a str, &'a spec::Overlay)>;

/// The pipelines' names for messages: `p.toml` or `p.toml, q.toml`.
pub(super) fn names(files: &[PathBuf]) -> String {
    files.iter().map(|f| spec::source::display_path(f)).collect::<Vec<_>>().join(", ")
}

/// A verb's `s` after [`names`] of `files`: `p.toml uses`, `p.toml, q.toml use`.
pub(super) fn verb_s(files: &[PathBuf]) -> &'static str {
    if files.len() == 1 {
        "s"
    } else {
        ""
    }
}
