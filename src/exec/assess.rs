//! Deciding freshness: compute each node's fingerprint from its inputs' digests and look the key up.

use super::event::State;
use crate::fingerprint::files::{self, Part};
use crate::fingerprint::{compare, DirtyReason, FileDigests, Fingerprint, InputDigest, NodeRecord};
use crate::graph::Graph;
use crate::store::{BlobState, FailRecord, Index, Manifest, Store};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Digests of the external files each node reads, computed at most once per node and command (through a stat
/// cache, so an unchanged dataset costs a `stat` per file and no reading).
pub struct Externals {
    files: FileDigests,
    memo: RefCell<BTreeMap<usize, External>>,
}

/// A node's external digest (`Err(message)` when its files cannot be read) and the parts it was made of.
pub type External = (Result<Option<String>, String>, Vec<Part>);

impl Externals {
    /// Externals digested through `files`.
    pub fn new(files: FileDigests) -> Self {
        Externals { files, memo: RefCell::new(BTreeMap::new()) }
    }

    /// Externals with the stat cache of `store`.
    pub fn of(store: &Store) -> Self {
        Externals::new(store.file_digests())
    }

    /// Node `i`'s external digest (`Err(message)` when its files cannot be read), and the folders and files it
    /// was made of.
    pub fn get(&self, g: &Graph, i: usize) -> External {
        if let Some(e) = self.memo.borrow().get(&i) {
            return e.clone();
        }
        let n = &g.nodes[i];
        let _ = files::take_parts();
        let mut e = n.stage.external_digest(&n.params, &n.base_dir, &self.files).map_err(|e| e.message);
        // The files its matrix runs over, whatever its kind reads of them: each file's node is keyed by its file.
        if !n.files.is_empty() {
            e = e.and_then(|own| {
                let mut h = blake3::Hasher::new();
                h.update(own.as_deref().unwrap_or("").as_bytes());
                for f in &n.files {
                    let d = self.files.tree(&n.base_dir.join(f)).map_err(|err| format!("the matrix's file `{f}`: {err}"))?;
                    h.update(b"\0file\0");
                    h.update(f.as_bytes());
                    h.update(b"\0");
                    h.update(d.as_bytes());
                }
                Ok(Some(h.finalize().to_hex().to_string()))
            });
        }
        let parts = files::take_parts();
        self.memo.borrow_mut().insert(i, (e.clone(), parts.clone()));
        (e, parts)
    }
}

/// The assessment of one node.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// State.
    pub state: State,
    /// Reasons it is stale or failed.
    pub reasons: Vec<DirtyReason>,
    /// Its fingerprint, if its inputs are all known.
    pub fingerprint: Option<Fingerprint>,
    /// Its key, if known.
    pub key: Option<String>,
    /// Its artifact, when fresh.
    pub manifest: Option<Manifest>,
    /// The last successful run of this id (for a stale node: its nearest run, the one [`Assessment::reasons`]
    /// compare with).
    pub record: Option<NodeRecord>,
    /// For a node not fresh (and not forced): its run on record nearest to its settings now — one made under the
    /// command's settings first, then the fewest differences, the latest among equals (see `nearest`) — whose
    /// artifact, if still in the store, holds
    /// the node's last results (`compare` and `show` present them as outdated; see [`super::earlier`]).
    /// `None` when it never ran or its fingerprint cannot be computed.
    pub nearest: Option<NodeRecord>,
    /// The last failure of this id.
    pub failure: Option<FailRecord>,
    /// Not fresh, not forced, and its key is in the shared cache: a run fetches it (its entry's artifact digest
    /// then keys the nodes downstream). Only [`assess_cached`] sets it.
    pub in_cache: Option<crate::store::cache::CacheEntry>,
}

/// The environment entries of `env` a stage depends on.
pub fn stage_env(keys: &[&str], env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    keys.iter().filter_map(|k| env.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
}

/// The run's environment as node `i` sees it: a replicate of a `seeds = N` node has seed = pipeline seed +
/// its replicate index (so replicate 0 keeps the key of an unreplicated node).
pub fn node_env(g: &Graph, i: usize, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let off = g.nodes[i].seed_offset;
    if off == 0 {
        return env.clone();
    }
    let mut e = env.clone();
    e.insert("seed".to_string(), (g.pipeline.seed + off).to_string());
    e
}

/// A node whose inputs are not all fresh: which, and what of its fingerprint is known without them.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The upstream ids not fresh yet.
    pub ids: Vec<String>,
    /// The node's own part of its fingerprint (kind, version, keyed parameters, environment, and its external
    /// files where they can be read); its inputs are the fresh ones only.
    pub own: Box<Fingerprint>,
    /// Whether `own` holds its external files' digest (they could be read).
    pub external_known: bool,
}

/// The pipeline variables node `i`'s parameters name (`[vars]`, not a matrix variable of the same name), as text,
/// with those parameters as written: what an explanation of a change of a variable needs ([`Fingerprint::vars`]).
fn pipeline_vars_of(g: &Graph, i: usize) -> (BTreeMap<String, String>, BTreeMap<String, serde_json::Value>) {
    let Some(spec) = g.pipeline.nodes.get(i) else { return Default::default() };
    // Only parameters in the key: a variable written into a `path` (never keyed) changes no result.
    let keyed = g.nodes[i].keyed.as_object();
    let text: Vec<(&String, String)> =
        spec.written.params.iter().filter(|(k, _)| keyed.is_some_and(|o| o.contains_key(*k))).map(|(k, v)| (k, v.to_string())).collect();
    let vars: BTreeMap<String, String> = spec
        .written
        .vars
        .iter()
        .filter(|(name, _)| g.pipeline.vars.contains(*name) && !spec.matrix.contains_key(*name))
        .filter(|(name, _)| text.iter().any(|(_, t)| t.contains(&format!("{{{name}}}"))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if vars.is_empty() {
        return Default::default();
    }
    let written = text
        .iter()
        .filter(|(_, t)| vars.keys().any(|name| t.contains(&format!("{{{name}}}"))))
        .map(|(k, _)| ((*k).clone(), spec.written.params[*k].clone()))
        .collect();
    (vars, written)
}

/// Builds node `i`'s fingerprint from the digests of its (fresh) inputs; [`Pending`] otherwise.
pub fn fingerprint(
    g: &Graph,
    i: usize,
    env: &BTreeMap<String, String>,
    externals: &Externals,
    digest_of: &dyn Fn(usize) -> Option<String>,
) -> Result<Result<Fingerprint, String>, Pending> {
    let n = &g.nodes[i];
    let mut inputs = BTreeMap::new();
    let mut pending = vec![];
    for (slot, ups) in &n.inputs {
        let mut v = vec![];
        for &u in ups {
            match digest_of(u) {
                Some(d) => v.push(InputDigest { id: g.nodes[u].id.clone(), digest: d }),
                None => pending.push(g.nodes[u].id.clone()),
            }
        }
        inputs.insert(slot.clone(), v);
    }
    let env = n.stage.env_for(&n.params, stage_env(n.stage.env_keys(), &node_env(g, i, env)));
    let (vars, written) = pipeline_vars_of(g, i);
    let own = |inputs, external, external_parts| Fingerprint {
        kind: n.stage.kind().to_string(),
        version: n.stage.version_for(&n.params, &env),
        params: n.keyed.clone(),
        inputs,
        env: env.clone(),
        external,
        external_parts,
        named: n.stage.id_in_output().then(|| n.id.clone()),
        input_ids: n.stage.input_ids_in_output(),
        vars: vars.clone(),
        written: written.clone(),
    };
    if !pending.is_empty() {
        pending.dedup();
        // Its own files are known without its inputs (an edited script is a change of its own, whatever they
        // turn out to be).
        let (own, external_known) = match externals.get(g, i) {
            (Ok(e), parts) => (own(inputs, e, parts), true),
            (Err(_), _) => (own(inputs, None, vec![]), false),
        };
        return Err(Pending { ids: pending, own: Box::new(own), external_known });
    }
    match externals.get(g, i) {
        (Ok(e), parts) => Ok(Ok(own(inputs, e, parts))),
        (Err(e), _) => Ok(Err(e)),
    }
}

/// The settings a command assesses under (as [`crate::spec::Pipeline::settings`] and its profile give them): of
/// a node's earlier runs, one made under them is preferred ([`super::earlier`] chooses by the same rule).
struct Settings {
    line: String,
    profile: String,
}

impl Settings {
    fn of(g: &Graph) -> Self {
        Settings { line: g.pipeline.settings(), profile: g.pipeline.profile.clone().unwrap_or_default() }
    }
}

/// Of node `id`'s runs on record (`last` and every run kept per key), the one nearest to `now(record)`: first one
/// made under the command's profile, then under its very settings (profile and overrides), then the one whose
/// fingerprint differs least (fewest reasons), the latest among equals. So a node last run under another profile
/// or `--set` is compared with the run of its own settings, `plan` estimates from that run's time, and `status
/// --why` explains from the run whose results `show` and `compare` present.
fn nearest(
    index: &Index,
    id: &str,
    last: Option<NodeRecord>,
    now: &dyn Fn(&NodeRecord) -> Fingerprint,
    s: &Settings,
) -> Option<NodeRecord> {
    let mut runs = index.runs_of(id);
    runs.extend(last);
    let distance = |r: &NodeRecord| {
        let now = now(r);
        if now.kind != r.fingerprint.kind {
            return usize::MAX;
        }
        distance(&compare(r, &now), &r.fingerprint.external_parts, &now.external_parts)
    };
    runs.into_iter().min_by_key(|r| (super::earlier::made_elsewhere(r, &s.line, &s.profile), distance(r), std::cmp::Reverse(r.finished_at)))
}

/// How far a run is from a node's settings now, given why they differ and the external files' parts of both: one
/// per reason, except that the one reason naming every changed source file counts each part (a `deps` entry, a
/// dataset's folder) that differs, so that the run of the same script with one data file changed is nearer than
/// an experiment's run of another script.
pub(crate) fn distance(reasons: &[DirtyReason], old: &[Part], new: &[Part]) -> usize {
    let external = reasons.iter().any(|x| matches!(x, DirtyReason::ExternalChanged { .. }));
    reasons.len() + if external { changed_parts(old, new).saturating_sub(1) } else { 0 }
}

/// How many parts (by path) differ between two listings of a node's external files: changed, added or gone.
fn changed_parts(old: &[Part], new: &[Part]) -> usize {
    let old: BTreeMap<&str, &str> = old.iter().map(|p| (p.path.as_str(), p.digest.as_str())).collect();
    let new: BTreeMap<&str, &str> = new.iter().map(|p| (p.path.as_str(), p.digest.as_str())).collect();
    old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().filter(|k| old.get(*k) != new.get(*k)).count()
}

/// Why `new` differs from run `old`, with the parameters of both as a reader reads them
/// ([`crate::stage::Stage::shown_key`]: `heads changed 4 → 2`, not `0 → 2`); the parameters as keyed where that
/// form would hide the change.
pub fn explain(stage: &dyn crate::stage::Stage, old: &NodeRecord, new: &Fingerprint) -> Vec<DirtyReason> {
    let (mut a, mut b) = (old.clone(), new.clone());
    stage.shown_key(&mut a.fingerprint.params);
    stage.shown_key(&mut b.params);
    if a.fingerprint.params == b.params && old.fingerprint.params != new.params {
        return compare(old, new);
    }
    compare(&a, &b)
}

/// When the parameters of run `r` differ from `fp`'s only in form (the ones of a version of polyflow that keyed a
/// spelt-out default as written: `flip = false` where the default is no flip), the reasons with that said once
/// instead of as changes the user never made; `None` otherwise.
fn rekeyed_only(stage: &dyn crate::stage::Stage, r: &NodeRecord, fp: &Fingerprint) -> Option<Vec<DirtyReason>> {
    if r.fingerprint.params == fp.params {
        return None;
    }
    let mut old = r.fingerprint.params.clone();
    stage.canonical_key(&mut old);
    if old != fp.params {
        return None;
    }
    let mut same = r.clone();
    same.fingerprint.params = old;
    let mut out = vec![DirtyReason::Other {
        detail: "no setting changed: this version of polyflow keys a value that spells out a default as that default \
                 (the node runs once under its new key)"
            .into(),
    }];
    // Whatever else changed too (its generic "key changed" is the sentence above).
    out.extend(explain(stage, &same, fp).into_iter().filter(|r| !matches!(r, DirtyReason::Other { detail } if detail == "key changed")));
    Some(out)
}

/// Decides node `i` given its fingerprint (or the pending upstream ids).
pub fn decide(
    g: &Graph,
    i: usize,
    fp: Result<Result<Fingerprint, String>, Pending>,
    store: &Store,
    index: &Index,
    forced: bool,
) -> Assessment {
    let id = &g.nodes[i].id;
    let settings = Settings::of(g);
    let record = index.record(id).ok().flatten();
    let failure = index.failure(id).ok().flatten();
    let mut a = Assessment {
        state: State::Stale,
        reasons: vec![],
        fingerprint: None,
        key: None,
        manifest: None,
        record,
        failure,
        nearest: None,
        in_cache: None,
    };
    let fp = match fp {
        // Forced: that is why it runs, whatever its inputs turn out to be (as the run then says).
        Err(Pending { .. }) if forced => {
            a.reasons.push(DirtyReason::Forced);
            return a;
        }
        Err(Pending { ids, own, external_known }) => {
            a.reasons.push(DirtyReason::UpstreamPending { upstream: ids });
            // Its own changes since its nearest run (parameters, version, environment, its source files) stand
            // whatever its inputs turn out to be: the inputs are left out of this comparison (and its files, where
            // they cannot be read; computing it says so).
            let mine = |r: &NodeRecord| {
                let mut f = Fingerprint { inputs: r.fingerprint.inputs.clone(), ..(*own).clone() };
                if !external_known {
                    f.external = r.fingerprint.external.clone();
                    f.external_parts = r.fingerprint.external_parts.clone();
                }
                f
            };
            if let Some(r) = nearest(index, id, a.record.take(), &mine, &settings) {
                let own = mine(&r);
                let same = own.key() == r.fingerprint.key();
                a.reasons.extend(explain(g.nodes[i].stage.as_ref(), &r, &own).into_iter().filter(|_| !same));
                name_changed_files(&mut a.reasons, store, &r, &own);
                a.nearest = Some(r.clone());
                a.record = Some(r);
            }
            // Its own damage is worth knowing too (it would re-run even if the upstream came back identical).
            if let Some(m) = a.record.as_ref().and_then(|r| index.artifact(&r.key).ok().flatten()) {
                match store.check(&m) {
                    Some((file, BlobState::Missing)) => a.reasons.push(DirtyReason::ArtifactMissing { file }),
                    Some((file, _)) => a.reasons.push(DirtyReason::ArtifactCorrupt { file }),
                    None => {}
                }
            }
            // A failure on record is not this node's state: it was an attempt under some key, and which key the
            // node has now is not known until its upstream is computed (a failure counts where keys match, below).
            return a;
        }
        Ok(Err(e)) => {
            a.reasons.push(DirtyReason::SourcesUnreadable { error: e.to_string() });
            return a;
        }
        Ok(Ok(fp)) => fp,
    };
    let key = fp.key();
    a.key = Some(key.clone());
    if forced {
        a.reasons.push(DirtyReason::Forced);
    } else if let Some(m) = index.artifact(&key).ok().flatten() {
        // The run that made this artifact (its time, date and settings), not the id's last run of other settings;
        // another node's when an identical one computed it. Also when its blobs are damaged: that run is what
        // computing it again takes, and nothing else changed since.
        if let Some(r) = index.run_for(id, &key) {
            a.record = Some(r);
        }
        match store.check(&m) {
            None => {
                a.state = State::Fresh;
                a.manifest = Some(m);
            }
            Some((file, BlobState::Missing)) => a.reasons.push(DirtyReason::ArtifactMissing { file }),
            Some((file, _)) => a.reasons.push(DirtyReason::ArtifactCorrupt { file }),
        }
        if a.state != State::Fresh {
            // The run of this very key is the nearest (its blobs are gone or damaged), unless it was not kept.
            a.nearest = nearest(index, id, a.record.clone(), &|_| fp.clone(), &settings);
        }
    } else if let Some(f) = a.failure.as_ref().filter(|f| f.key == key && !f.runner.contains_key(INTERRUPTED)) {
        a.state = State::Failed;
        a.reasons.push(DirtyReason::Failed { error: f.error.clone() });
        a.nearest = nearest(index, id, a.record.clone(), &|_| fp.clone(), &settings);
    } else if let Some(r) = nearest(index, id, a.record.take(), &|_| fp.clone(), &settings) {
        a.reasons.extend(rekeyed_only(g.nodes[i].stage.as_ref(), &r, &fp).unwrap_or_else(|| explain(g.nodes[i].stage.as_ref(), &r, &fp)));
        a.nearest = Some(r.clone());
        a.record = Some(r);
        name_changed_files(&mut a.reasons, store, a.record.as_ref().expect("set above"), &fp);
    } else if let Some(f) = a.failure.as_ref().filter(|f| !f.runner.contains_key(INTERRUPTED)) {
        // Never succeeded, but tried: said, with how (a fixed script reruns the sweep's failed nodes, which are
        // not "never run").
        let first = crate::text::cut(crate::text::failure_headline(&f.error, id), 120);
        a.reasons.push(DirtyReason::Other { detail: format!("never succeeded: its last attempt, with other settings, failed ({first})") });
    } else {
        a.reasons.push(DirtyReason::NeverRun);
    }
    // Stopped while computing this very key: said first (it is no failure, and not "never run").
    if let Some(f) = a.failure.as_ref().filter(|f| f.key == key && f.runner.contains_key(INTERRUPTED) && a.state != State::Fresh) {
        a.reasons.retain(|r| !matches!(r, DirtyReason::NeverRun));
        let after_ms = f.runner.get(INTERRUPTED).and_then(|ms| ms.parse().ok()).unwrap_or(0);
        a.reasons.insert(0, DirtyReason::Interrupted { after_ms });
    }
    a.fingerprint = Some(fp);
    a
}

/// The `runner` entry of a [`FailRecord`] that stands for a node stopped with its run (Ctrl-C, a signal), not
/// failed: its value is how long it had run, in milliseconds.
pub const INTERRUPTED: &str = "interrupted_after_ms";

/// Names in `reasons` the files that changed since run `r` (the first few), where the listings of both states
/// were kept.
pub fn name_changed_files(reasons: &mut [DirtyReason], store: &Store, r: &NodeRecord, now: &Fingerprint) {
    for reason in reasons {
        if let DirtyReason::ExternalChanged { files } = reason {
            *files = store.file_digests().explain(&r.fingerprint.external_parts, &now.external_parts, crate::fingerprint::CHANGES_SHOWN);
        }
    }
}

/// Assesses the selected nodes in topological order without running anything (`status`, `plan`).
pub fn assess_all(
    g: &Graph,
    sel: &[usize],
    store: &Store,
    index: &Index,
    env: &BTreeMap<String, String>,
    forced: &dyn Fn(usize) -> bool,
) -> BTreeMap<usize, Assessment> {
    assess_with(g, sel, store, index, env, &Externals::of(store), forced, None)
}

/// [`assess_all`] with the run's [`Externals`] (so the executor digests each node's files once), seen from
/// `cache` where one is given (as [`assess_cached`]).
#[allow(clippy::too_many_arguments)]
pub fn assess_with(
    g: &Graph,
    sel: &[usize],
    store: &Store,
    index: &Index,
    env: &BTreeMap<String, String>,
    externals: &Externals,
    forced: &dyn Fn(usize) -> bool,
    cache: Option<&dyn crate::store::cache::ArtifactCache>,
) -> BTreeMap<usize, Assessment> {
    assess_inner(g, sel, store, index, env, externals, forced, cache)
}

/// [`assess_all`] seen from a run that fetches from `cache`: a stale node the cache holds is marked
/// [`Assessment::in_cache`], and its entry's artifact digest keys the nodes downstream, so a whole chain a
/// teammate published shows as fetched, not just its first node.
pub fn assess_cached(
    g: &Graph,
    sel: &[usize],
    store: &Store,
    index: &Index,
    env: &BTreeMap<String, String>,
    forced: &dyn Fn(usize) -> bool,
    cache: &dyn crate::store::cache::ArtifactCache,
) -> BTreeMap<usize, Assessment> {
    assess_inner(g, sel, store, index, env, &Externals::of(store), forced, Some(cache))
}

#[allow(clippy::too_many_arguments)]
fn assess_inner(
    g: &Graph,
    sel: &[usize],
    store: &Store,
    index: &Index,
    env: &BTreeMap<String, String>,
    externals: &Externals,
    forced: &dyn Fn(usize) -> bool,
    cache: Option<&dyn crate::store::cache::ArtifactCache>,
) -> BTreeMap<usize, Assessment> {
    let mut out: BTreeMap<usize, Assessment> = BTreeMap::new();
    // Each node after its inputs (as `Graph::select` and `Graph::topo_order` give them): a node assessed before a
    // selected input would find no digest for it and read as stale, its key unknown.
    debug_assert!(in_topo_order(g, sel), "nodes to assess are in topological order");
    for &i in sel {
        let fp = {
            // A fresh upstream's artifact digest, or the digest of the cache entry a run would fetch.
            let lookup = |u: usize| {
                out.get(&u).and_then(|a| a.manifest.as_ref().or(a.in_cache.as_ref().map(|e| &e.manifest)).map(|m| m.digest.clone()))
            };
            fingerprint(g, i, env, externals, &lookup)
        };
        let mut a = decide(g, i, fp, store, index, forced(i));
        if let Some(cache) = cache.filter(|_| a.state != State::Fresh && !forced(i)) {
            a.in_cache = a.key.as_deref().and_then(|k| cache.lookup(k).ok().flatten());
        }
        out.insert(i, a);
    }
    out
}

/// Whether every node of `sel` comes after those of its inputs that `sel` holds.
fn in_topo_order(g: &Graph, sel: &[usize]) -> bool {
    let at: BTreeMap<usize, usize> = sel.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    sel.iter().enumerate().all(|(pos, &i)| g.nodes[i].inputs.values().flatten().all(|u| at.get(u).is_none_or(|&p| p < pos)))
}

/// Of `sel` (in order), the stale nodes of `assessed` that `cache` holds, as [`assess_cached`] finds them (down a
/// chain of fetches: a node waiting on one is keyed with the cached artifact's digest) without assessing again:
/// one lookup per stale node, a fingerprint only for those waiting on their inputs.
#[allow(clippy::too_many_arguments)]
pub fn fetchable(
    g: &Graph,
    sel: &[usize],
    assessed: &BTreeMap<usize, Assessment>,
    env: &BTreeMap<String, String>,
    externals: &Externals,
    forced: &dyn Fn(usize) -> bool,
    cache: &dyn crate::store::cache::ArtifactCache,
) -> std::collections::BTreeSet<usize> {
    let mut cached: BTreeMap<usize, String> = BTreeMap::new();
    for &i in sel {
        let Some(a) = assessed.get(&i) else { continue };
        if a.state == State::Fresh || forced(i) {
            continue;
        }
        let key = match &a.key {
            Some(k) => Some(k.clone()),
            None => {
                let lookup = |u: usize| {
                    assessed.get(&u).and_then(|x| x.manifest.as_ref()).map(|m| m.digest.clone()).or_else(|| cached.get(&u).cloned())
                };
                fingerprint(g, i, env, externals, &lookup).ok().and_then(|r| r.ok()).map(|f| f.key())
            }
        };
        if let Some(e) = key.and_then(|k| cache.lookup(&k).ok().flatten()) {
            cached.insert(i, e.manifest.digest);
        }
    }
    cached.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(params: serde_json::Value) -> NodeRecord {
        let fingerprint = Fingerprint {
            kind: "task".into(),
            version: 1,
            params,
            inputs: BTreeMap::new(),
            env: BTreeMap::new(),
            external: None,
            external_parts: vec![],
            named: None,
            input_ids: false,
            vars: BTreeMap::new(),
            written: BTreeMap::new(),
        };
        NodeRecord {
            id: "t".into(),
            key: fingerprint.key(),
            fingerprint,
            artifact: String::new(),
            duration_ms: 0,
            finished_at: 0,
            runner: BTreeMap::new(),
        }
    }

    /// A run keyed before a spelt-out default was keyed as the default is explained as that, not as an edit the
    /// user never made; a real edit still is one.
    #[test]
    fn a_rekeyed_default_is_said_as_such() {
        let reg = crate::stages::registry();
        let stage = reg.get("task").unwrap().as_ref();
        let old = record(serde_json::json!({ "steps": 10, "augment": { "flip": false } }));
        let now = record(serde_json::json!({ "steps": 10, "augment": {} })).fingerprint;
        let r = rekeyed_only(stage, &old, &now).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].to_string().starts_with("no setting changed"), "{}", r[0]);
        let edited = record(serde_json::json!({ "steps": 10, "augment": { "flip": true } })).fingerprint;
        assert_eq!(rekeyed_only(stage, &old, &edited), None);
        // A substantive change beside it: the parameters differ in substance, said as such.
        let more = record(serde_json::json!({ "steps": 20, "augment": {} })).fingerprint;
        let r = rekeyed_only(stage, &old, &more);
        assert_eq!(r, None, "steps changed: the parameters differ in substance");
    }
}
