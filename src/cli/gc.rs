//! `gc`: removes from the store what no pipeline computes now, and with `--cache`, from the shared cache what
//! no pipeline of the store computes now (see `GcArgs`).

use super::current::{current_keys, each_profile};
use super::out::outln;
use super::report::fmt_bytes;
use super::{env_of, exit, CliError};
use crate::exec::assess::assess_all;
use crate::exec::State;
use crate::spec;
use crate::stage::Registry;
use crate::store::Store;
use crate::text::count;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Slurm job directories (`jobs/<key>`) of keys not kept whose job Slurm does not report pending or running:
/// one `squeue` for all of them (each alone only when that one fails).
fn stale_job_dirs(store: &Store, keep_keys: &BTreeSet<String>) -> Vec<PathBuf> {
    use crate::exec::slurm::{job, sched};
    let Ok(rd) = std::fs::read_dir(crate::store::jobs_root(&store.root)) else { return vec![] };
    let mut out = vec![];
    let mut jobs: Vec<(PathBuf, String)> = vec![];
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if keep_keys.iter().any(|k| k.starts_with(&name)) {
            continue;
        }
        match job::read_json::<job::Submission>(&e.path(), "slurm.json") {
            Some(sub) => jobs.push((e.path(), sub.job_id)),
            None => out.push(e.path()),
        }
    }
    let ids: Vec<&str> = jobs.iter().map(|(_, id)| id.as_str()).collect();
    let states = sched::squeue(&ids).ok();
    for (dir, id) in &jobs {
        let state = match &states {
            Some(m) => m.get(id).cloned(),
            None => sched::squeue(&[id]).ok().and_then(|m| m.get(id).cloned()),
        };
        if state.is_none_or(|st| st.terminal()) {
            out.push(dir.clone());
        }
    }
    out.sort();
    out
}

/// Programs' output logs (`logs/<key>.log`, a failed or interrupted attempt's too) of keys not in `keep`, with
/// their sizes.
fn stale_logs(store: &Store, keep: &BTreeSet<String>) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(crate::store::logs_root(&store.root)) else { return vec![] };
    let mut out: Vec<(PathBuf, u64)> = rd
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = crate::store::log_key(&name);
            !keep.iter().any(|k| k.starts_with(stem))
        })
        .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    out.sort();
    out
}

/// Whether a Slurm job still in flight (as `squeue` says) computes the key whose scratch folder is `dir`.
fn job_in_flight(store: &Store, dir: &Path) -> bool {
    use crate::exec::slurm::{job, sched};
    let Some(name) = dir.file_name() else { return false };
    let Some(sub) = job::read_json::<job::Submission>(&crate::store::jobs_root(&store.root).join(name), "slurm.json") else {
        return false;
    };
    sched::squeue(&[sub.job_id.as_str()]).ok().and_then(|m| m.get(&sub.job_id).cloned()).is_some_and(|st| !st.terminal())
}

/// Scratch folders (`partial/`) of interrupted runs that are not under a key in `resumable` (one a node of the
/// pipelines would be computed under now, with a checkpoint its kind resumes from).
fn partial_dirs_outside(store: &Store, resumable: &BTreeSet<String>) -> Vec<PathBuf> {
    use crate::store::{is_partial_of, partial_dirs};
    partial_dirs(&store.root).into_iter().filter(|d| !resumable.iter().any(|k| is_partial_of(d, k))).collect()
}

/// Past this many artifacts to remove, `gc` counts them by declaration (the largest first) unless `-v`.
const LISTED: usize = 20;

/// Bytes of the files below `dir`.
fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir).into_iter().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// How `gc` collects.
pub struct GcHow {
    /// Really delete (otherwise list).
    pub yes: bool,
    /// Wait for a run holding the store.
    pub wait: bool,
    /// Name every artifact removed.
    pub verbose: bool,
    /// Keep every recorded run of the pipelines' nodes.
    pub all_runs: bool,
    /// Do not keep other git branches' latest runs.
    pub this_branch: bool,
    /// One JSON object on stdout (the text on stderr).
    pub json: bool,
}

/// The pin under which a run on git branch `branch` with `settings` (its profile and `--config` files, as a command
/// line gives them; empty for the file's own) records its nodes' keys: each setting's results are the branch's.
pub(super) fn branch_pin(branch: &str, settings: &str) -> String {
    if settings.is_empty() {
        format!("{BRANCH_PIN}{branch}")
    } else {
        format!("{BRANCH_PIN}{branch}\0{settings}")
    }
}

/// The prefix of [`branch_pin`]s.
const BRANCH_PIN: &str = "branch:";

/// Adds to `keep` the keys pinned by the last runs of the pipelines' own settings on each other branch of the
/// repository at `dir` that still exists (where the store `has` the artifact), and returns how many that added,
/// the branches, and the pins of branches that no longer exist (`gc --yes` removes them). Nothing outside a
/// git repository (then every branch's pin is reported as unknown: the third value lists none, the fourth is
/// true).
fn other_branches_pinned(
    pins: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    dir: &Path,
    current: Option<&str>,
    has: &dyn Fn(&str) -> bool,
    keep: &mut BTreeSet<String>,
) -> (usize, BTreeSet<String>, Vec<String>, bool) {
    let branch_of = |name: &str| name.strip_prefix(BRANCH_PIN).map(|b| b.split('\0').next().unwrap_or(b).to_string());
    let Some(live) = super::git::branches(dir) else {
        return (0, BTreeSet::new(), vec![], pins.keys().any(|n| n.starts_with(BRANCH_PIN)));
    };
    let (mut added, mut from, mut gone) = (0, BTreeSet::new(), vec![]);
    for (name, keys) in pins {
        let Some(b) = branch_of(name) else { continue };
        if !live.contains(&b) {
            gone.push(name.clone());
            continue;
        }
        if current == Some(b.as_str()) {
            continue;
        }
        for k in keys.values() {
            if has(k) && keep.insert(k.clone()) {
                added += 1;
                from.insert(b.clone());
            }
        }
    }
    (added, from, gone, false)
}

/// `gc FILES...`: keeps every artifact whose key a named pipeline (any profile, every node declared) computes now,
/// the last record of every node id of those pipelines (with `all_runs`, every run on record of them) and, in a git
/// repository, what the last runs on other live branches found or made (not with `this_branch`); deletes the rest.
pub fn gc(
    files: &[PathBuf],
    store_dir: &Path,
    backend: &str,
    overlay: &spec::Overlay,
    how: GcHow,
    reg: &Registry,
) -> Result<i32, CliError> {
    let GcHow { yes, wait, verbose, all_runs, this_branch, json } = how;
    if store_dir.exists() && !store_dir.is_dir() {
        return Err(CliError::Other(
            format!("error: the store path {} is a file, not a folder (check `--store` or POLYFLOW_STORE)", store_dir.display()),
            exit::USAGE,
        ));
    }
    if !Store::exists(store_dir) {
        // A store above is only named: gc deletes, so it takes the store named, never one found.
        crate::cli::out::errln!(
            "note: there is no store at {} (check `--store` or POLYFLOW_STORE): nothing to collect{}",
            store_dir.display(),
            super::open::store_above(store_dir)
                .map(|s| format!("; {} is one: pass `--store {}` to collect it", s.display(), s.display()))
                .unwrap_or_default()
        );
        if json {
            let v = serde_json::json!({"removed": false, "artifacts": [], "blobs": 0, "orphan_blobs": 0, "damaged_blobs": [], "scratch": [], "job_dirs": [], "logs": [], "bytes": 0});
            super::out::line(&serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        return Ok(exit::OK);
    }
    let store = Store::open(store_dir)?;
    // A dry run deletes nothing: it reads the store as `status` does, also while a run holds it or where this
    // user cannot write it.
    let (lock, index) = if yes {
        (Some(super::lock_store(&store, wait, false, None)?), store.index()?)
    } else {
        let lock = match store.lock(std::time::Duration::ZERO) {
            Ok(l) => Some(l),
            Err(crate::store::StoreError::Locked { holder }) => {
                crate::cli::out::errln!(
                    "note: a run holds the store ({holder}): what it is writing now shows below as unreferenced (`gc --yes` needs the store to itself: it stops, or waits with `--wait`)"
                );
                None
            }
            Err(_) => None,
        };
        (lock, store.index_read()?)
    };
    let mut keep_keys = BTreeSet::new();
    // Keys the nodes would be computed under now (stale ones whose inputs are fresh) whose scratch holds a
    // checkpoint their kind resumes from (a training run's): that scratch stays. A command's is started afresh.
    let mut resumable = BTreeSet::new();
    let mut current_logs = BTreeSet::new();
    // Stale nodes whose key is not known until their upstream is computed: any resumable scratch may be theirs.
    let mut unknown = 0;
    let mut unknown_kinds: std::collections::BTreeMap<&'static str, std::sync::Arc<dyn crate::stage::Stage>> = Default::default();
    let mut ids = BTreeSet::new();
    // Each node's outermost declaration (`st` for `st.digits.s0`), to count what is removed by declaration.
    let mut decl_of: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    each_profile(files, overlay, reg, |g| {
        for (id, d) in g.pipeline.declaration_of() {
            decl_of.entry(id.to_string()).or_insert_with(|| d.to_string());
        }
        // Every node the files declare, their includes' too (not only what a run of the file targets).
        let sel = g.topo_order();
        for (i, s) in assess_all(g, &sel, &store, &index, &env_of(g, backend), &|_| false) {
            ids.insert(g.nodes[i].id.clone());
            if s.state == State::Fresh {
                keep_keys.insert(s.key.unwrap());
            } else if let Some(k) = s.key {
                if g.nodes[i].stage.resume_point(&crate::store::partial_dir(&store.root, &k)).is_some() {
                    resumable.insert(k.clone());
                }
                // Its output log is of an attempt at what it computes now (one running, or interrupted).
                current_logs.insert(k);
            } else {
                unknown += 1;
                unknown_kinds.entry(g.nodes[i].stage.kind()).or_insert_with(|| g.nodes[i].stage.clone());
            }
        }
        Ok(())
    })?;
    // A scratch folder a Slurm job still in flight works in (`run --keep-jobs`) stays, whatever its kind.
    let maybe = |dir: &Path| unknown_kinds.values().any(|st| st.resume_point(dir).is_some()) || job_in_flight(&store, dir);
    let (kept, drop_partial): (Vec<PathBuf>, Vec<PathBuf>) = partial_dirs_outside(&store, &resumable).into_iter().partition(|d| maybe(d));
    if unknown > 0 {
        let kept = kept.len();
        if kept > 0 {
            outln!(
                "{:>12} {} of interrupted runs: the keys of {} are not known until their inputs are computed, and a run \
                 may resume from them (run `gc` again after a run)",
                "Keeping",
                count(kept, "scratch folder"),
                count(unknown, "node")
            );
        }
    }
    // Seen while a run holds the store (a dry `gc`): a scratch folder written since the first node it is computing
    // started is one of those nodes', which `--yes` (waiting for the store) would find gone or committed.
    let running = if lock.is_none() { crate::exec::running::read(&store.root) } else { None };
    let run_started = running.and_then(|r| r.nodes.values().map(|f| f.since).min());
    let since_start = |d: &Path| {
        let modified = std::fs::metadata(d).and_then(|m| m.modified()).ok();
        let secs = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|t| t.as_secs());
        run_started.zip(secs).is_some_and(|(s, m)| m >= s)
    };
    for d in &drop_partial {
        let whose = if since_start(d) {
            "the scratch folder of a node the run holding the store is computing now (listed as a run would leave it: it goes once that node commits)"
        } else {
            "an interrupted run's, which no node of these pipelines would resume from"
        };
        outln!("{:>12} scratch {} ({}): {whose}", if yes { "Removing" } else { "Would remove" }, d.display(), fmt_bytes(dir_size(d)));
    }
    let records = index.records();
    for r in &records {
        if ids.contains(&r.id) {
            keep_keys.insert(r.key.clone());
        }
    }
    if all_runs {
        for id in &ids {
            keep_keys.extend(index.runs_of(id).into_iter().map(|r| r.key));
        }
    }
    let dir = files.first().and_then(|f| f.parent()).unwrap_or(Path::new("."));
    let current_branch = super::git::head(dir).and_then(|(b, _)| b);
    let mut gone_pins = vec![];
    if !this_branch {
        let has = |k: &str| index.artifact(k).ok().flatten().is_some();
        let (kept, branches, gone, no_git) = other_branches_pinned(&index.pins(), dir, current_branch.as_deref(), &has, &mut keep_keys);
        gone_pins = gone;
        if kept > 0 {
            outln!(
                "{:>12} {kept} artifact{} of other branches' last runs ({}): a checkout of one finds them fresh \
                 (`--this-branch` collects them)",
                "Keeping",
                if kept == 1 { "" } else { "s" },
                branches.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        if no_git {
            crate::cli::out::errln!(
                "note: runs in this store were made on git branches, but {} is in no git repository (or git is missing): \
                 other branches' results are not kept apart from the rest",
                crate::spec::source::display_path(dir)
            );
        }
    }
    // Listings of external files kept to name what changed: those the recorded runs were made from stay.
    let parts: BTreeSet<String> = records.iter().flat_map(|r| r.fingerprint.external_parts.iter().map(|p| p.digest.clone())).collect();
    let (listings, listing_bytes) = store.file_digests().prune_listings(&parts, !yes);
    if listings > 0 {
        outln!(
            "{:>12} {listings} listings of external files no recorded run was made from ({})",
            if yes { "Removed" } else { "Would remove" },
            fmt_bytes(listing_bytes)
        );
    }
    let all = index.artifacts();
    let mut keep_blobs = BTreeSet::new();
    let mut drop_keys = vec![];
    for (k, m) in &all {
        if keep_keys.contains(k) {
            keep_blobs.extend(m.files.values().map(|f| f.digest.clone()));
        } else {
            drop_keys.push((k.clone(), m.size()));
        }
    }
    let drop_blobs: Vec<(String, u64)> = store.blobs.list().into_iter().filter(|(d, _)| !keep_blobs.contains(d)).collect();
    let drop_jobs = stale_job_dirs(&store, &keep_keys);
    for d in &drop_jobs {
        outln!("{:>12} job directory {}", if yes { "Removing" } else { "Would remove" }, d.display());
    }
    // Programs' output logs: those of kept artifacts, and of the nodes' last failures, stay.
    let mut log_keys = keep_keys.clone();
    log_keys.extend(current_logs);
    log_keys.extend(ids.iter().filter_map(|id| index.failure(id).ok().flatten()).map(|f| f.key));
    let drop_logs = stale_logs(&store, &log_keys);
    for (p, size) in &drop_logs {
        outln!("{:>12} output log {} ({})", if yes { "Removing" } else { "Would remove" }, p.display(), fmt_bytes(*size));
    }
    let damaged = store.blobs.damaged();
    for (p, size) in &damaged {
        outln!(
            "{:>12} damaged blob {} ({}), moved aside when found",
            if yes { "Removing" } else { "Would remove" },
            p.display(),
            fmt_bytes(*size)
        );
    }
    let freed: u64 = drop_blobs.iter().map(|b| b.1).sum::<u64>()
        + damaged.iter().map(|d| d.1).sum::<u64>()
        + drop_partial.iter().map(|d| dir_size(d)).sum::<u64>()
        + drop_logs.iter().map(|l| l.1).sum::<u64>();
    // Each artifact named with its node; past a screenful, counted by declaration instead (`-v`: each).
    let mut by_node: std::collections::BTreeMap<String, (usize, u64)> = std::collections::BTreeMap::new();
    let many = drop_keys.len() > LISTED && !verbose;
    // For `--json`: each artifact removed, with its node and why.
    let mut listed = vec![];
    for (k, size) in &drop_keys {
        // Name the node; every dropped key is one no named pipeline computes now.
        // A run made on another branch says so (one that is gone, or any with `--this-branch`).
        let on = |id: &str| {
            let r = index.run_of(id, k).ok().flatten()?;
            r.runner.get(super::git::BRANCH).filter(|b| current_branch.as_ref() != Some(*b)).cloned()
        };
        let what = match index.producer(k) {
            Some(id) if ids.contains(&id) => match on(&id) {
                Some(b) => format!("node `{id}` as run on branch `{b}`"),
                None => format!("an earlier version of node `{id}`"),
            },
            // A node only a run with overrides declared (`--set 'sw.matrix.lr=[0.3]'` makes `sw.0.3`): said so.
            Some(id) => match index.run_of(&id, k).ok().flatten().and_then(|r| r.runner.get(crate::exec::earlier::SETTINGS).cloned()) {
                Some(set) if !set.is_empty() => format!("node `{id}` of a run with {set}, not in these pipelines"),
                _ => format!("node `{id}`, no longer in these pipelines"),
            },
            None => "no longer referenced by any of these pipelines".to_string(),
        };
        listed.push(serde_json::json!({"key": k, "node": index.producer(k), "size": size, "why": what}));
        if many {
            // Counted by declaration: `v.1` … `v.29` are `v`.
            let what = match index.producer(k) {
                Some(id) => {
                    let d = decl_of.get(&id).cloned().unwrap_or(id.clone());
                    let node = if d == id { format!("node `{id}`") } else { format!("the nodes of `{d}`") };
                    if ids.contains(&id) {
                        format!("earlier versions of {node}")
                    } else {
                        format!("{node}, no longer in these pipelines")
                    }
                }
                None => what,
            };
            let e = by_node.entry(what).or_default();
            e.0 += 1;
            e.1 += size;
        } else {
            outln!("{:>12} artifact {} ({}): {what}", if yes { "Removing" } else { "Would remove" }, &k[..16], fmt_bytes(*size));
        }
    }
    if many {
        // The largest first.
        let mut v: Vec<(String, (usize, u64))> = by_node.into_iter().collect();
        v.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
        for (what, (n, size)) in v.iter().take(LISTED) {
            outln!("{:>12} {} ({}): {what}", if yes { "Removing" } else { "Would remove" }, count(*n, "artifact"), fmt_bytes(*size));
        }
        if v.len() > LISTED {
            let (n, size) = v[LISTED..].iter().fold((0, 0), |(n, s), (_, (a, b))| (n + a, s + b));
            outln!("{:>12} {n} more of {} ({}): `-v` lists every one", "…", count(v.len() - LISTED, "other declaration"), fmt_bytes(size));
        }
    }
    // Blobs no artifact of the index names at all (a run interrupted between writing its files and committing
    // them): not covered by the lines above.
    let named: BTreeSet<&String> = all.iter().flat_map(|(_, m)| m.files.values().map(|f| &f.digest)).collect();
    let orphans: Vec<&(String, u64)> = drop_blobs.iter().filter(|(d, _)| !named.contains(d)).collect();
    if !orphans.is_empty() {
        outln!(
            "{:>12} {} no artifact names ({}), left by interrupted runs, e.g. {}",
            if yes { "Removing" } else { "Would remove" },
            count(orphans.len(), "blob"),
            fmt_bytes(orphans.iter().map(|b| b.1).sum()),
            store.blobs.path(&orphans[0].0).display()
        );
    }
    outln!(
        "{:>12} {}, {}{}, {} in all",
        if yes { "Removed" } else { "Would free" },
        count(drop_keys.len(), "artifact"),
        count(drop_blobs.len() + damaged.len(), "blob"),
        if damaged.is_empty() { String::new() } else { format!(" ({} damaged)", damaged.len()) },
        fmt_bytes(freed)
    );
    let paths = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    let report = serde_json::json!({
        "removed": yes,
        "artifacts": listed,
        "blobs": drop_blobs.len() + damaged.len(),
        "orphan_blobs": orphans.len(),
        "damaged_blobs": paths(&damaged.iter().map(|d| d.0.clone()).collect::<Vec<_>>()),
        "scratch": paths(&drop_partial),
        "job_dirs": paths(&drop_jobs),
        "logs": paths(&drop_logs.iter().map(|l| l.0.clone()).collect::<Vec<_>>()),
        "bytes": freed,
    });
    if yes {
        for (k, _) in &drop_keys {
            index.forget_artifact(k)?;
        }
        // What deleted branches' last runs computed goes with the rest; their record of it too.
        for p in &gone_pins {
            index.unpin(p)?;
        }
        index.flush()?;
        for (d, _) in &drop_blobs {
            store.blobs.remove(d)?;
        }
        // Shard folders left empty (a later blob of that prefix makes its folder again).
        for (d, _) in &drop_blobs {
            if let Some(shard) = store.blobs.path(d).parent() {
                let _ = std::fs::remove_dir(shard);
            }
        }
        for d in drop_jobs.iter().chain(&drop_partial) {
            std::fs::remove_dir_all(d).map_err(|e| CliError::Other(format!("error: {}: {e}", d.display()), exit::STORE))?;
        }
        for (p, _) in damaged.iter().chain(&drop_logs) {
            std::fs::remove_file(p).map_err(|e| CliError::Other(format!("error: {}: {e}", p.display()), exit::STORE))?;
        }
    } else if !drop_keys.is_empty()
        || !drop_blobs.is_empty()
        || !drop_jobs.is_empty()
        || !damaged.is_empty()
        || !drop_partial.is_empty()
        || !drop_logs.is_empty()
    {
        outln!("run again with --yes to delete");
    }
    if json {
        super::out::line(&serde_json::to_string_pretty(&report).unwrap_or_default());
    }
    Ok(exit::OK)
}

/// `gc --cache DIR FILES…`: collects the shared cache (see `GcArgs::cache`).
#[allow(clippy::too_many_arguments)]
pub fn gc_cache(
    files: &[PathBuf],
    store_dir: &Path,
    dir: &Path,
    keep_days: u64,
    backend: &str,
    overlay: &spec::Overlay,
    (yes, json): (bool, bool),
    reg: &Registry,
) -> Result<i32, CliError> {
    if !Store::exists(store_dir) {
        // The entries kept are those the pipelines compute now, which only a store can tell.
        return Err(CliError::Other(
            format!(
                "error: there is no store at {}: `gc --cache` keeps what your store's pipelines compute now; name it with `--store`",
                store_dir.display()
            ),
            exit::USAGE,
        ));
    }
    let store = Store::open(store_dir)?;
    let cache = super::open_cache(dir, false)?;
    let keep = current_keys(files, &store, backend, overlay, Some(&cache), reg)?.0;
    let now = crate::text::now_secs();
    let verb = if yes { "Removing" } else { "Would remove" };
    let mut kept_blobs = BTreeSet::new();
    let mut dropped = 0;
    let mut refused = Refused::default();
    // For `--json`: each entry removed, and each malformed one.
    let (mut entries, mut malformed) = (vec![], vec![]);
    for (key, e, path) in cache.entries() {
        let young = now.saturating_sub(e.published_at) < keep_days * 86_400;
        if keep.contains(&key) || young {
            kept_blobs.extend(e.manifest.files.values().map(|f| f.digest.clone()));
            continue;
        }
        dropped += 1;
        entries.push(serde_json::json!({"key": key, "node": e.node, "size": e.manifest.size(), "published_at": e.published_at}));
        let e_files: Vec<String> = e.manifest.files.values().map(|f| f.digest.clone()).collect();
        outln!(
            "{verb:>12} cache entry {} ({}): node `{}`, published {} days ago",
            &key[..16],
            fmt_bytes(e.manifest.size()),
            e.node,
            now.saturating_sub(e.published_at) / 86_400
        );
        if yes {
            // Gone already (another gc): fine. An entry that stays keeps its blobs.
            if let Err(e) = cache.remove_entry(&path) {
                if refused.note(e) {
                    kept_blobs.extend(e_files);
                }
            }
        }
    }
    // Entries no run can use (a file name outside its artifact, a digest that is not one): they name no blob
    // to trust, so they keep none.
    for (path, why) in cache.malformed() {
        // One whose file list does not give its digest may be a later polyflow's (fields this one does not know):
        // left, with its blobs, while it is younger than `--keep-days`; a publish of its key replaces it.
        let young = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < std::time::Duration::from_secs(keep_days * 86_400));
        if why == crate::store::cache::EDITED && young {
            kept_blobs.extend(crate::store::cache::named_digests(&path));
            outln!(
                "{:>12} cache entry {} ({why}; or published by a later polyflow): not used here, kept until older than --keep-days",
                "Keeping",
                path.display()
            );
            continue;
        }
        dropped += 1;
        malformed.push(serde_json::json!({"path": path.display().to_string(), "why": why}));
        outln!("{verb:>12} malformed cache entry {} ({why})", path.display());
        if yes {
            if let Err(e) = cache.remove_entry(&path) {
                refused.note(e);
            }
        }
    }
    let grace = std::time::Duration::from_secs(3600);
    let mut freed = 0;
    let mut blobs = 0;
    let unreadable = cache.unreadable();
    for p in &unreadable {
        outln!("{:>12} {} cannot be read: no blob is deleted (it may name some)", "Warning", p.display());
    }
    let blob_list = if unreadable.is_empty() { cache.blobs() } else { vec![] };
    let (mut young, mut young_bytes) = (0, 0);
    for (d, size, age) in blob_list {
        if kept_blobs.contains(&d) {
            continue;
        }
        if age < grace {
            // Possibly a publish writing its blobs before its entry: never deleted yet.
            young += 1;
            young_bytes += size;
            continue;
        }
        blobs += 1;
        freed += size;
        if yes {
            if let Err(e) = cache.remove_blob(&d) {
                refused.note(e);
            }
        }
    }
    for p in cache.leftovers(grace) {
        outln!("{verb:>12} {}", p.display());
        if yes {
            if let Err(e) = std::fs::remove_file(&p) {
                refused.note(crate::store::StoreError::io(&p, e));
            }
        }
    }
    let report = |complete: bool| {
        if json {
            let v = serde_json::json!({
                "removed": yes && complete,
                "entries": entries,
                "malformed": malformed,
                "blobs": blobs,
                "bytes": freed,
                "held_back_blobs": young,
                "refused": refused.count,
                "unreadable": unreadable.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            });
            super::out::line(&serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    };
    if refused.count > 0 {
        // Said, never counted as removed: a read-only cache (or another user's files) keeps them.
        outln!(
            "{:>12} {} of these could not be removed, e.g. {} (the cache's files must be writable by whoever collects it)",
            "Refused",
            refused.count,
            refused.first
        );
        outln!(
            "{:>12} {}, {}, {} were to go; not all did",
            "Partly",
            count(dropped, "cache entry"),
            count(blobs, "blob"),
            fmt_bytes(freed)
        );
        report(false);
        return Ok(exit::STORE);
    }
    outln!(
        "{:>12} {}, {}, {}",
        if yes { "Removed" } else { "Would free" },
        count(dropped, "cache entry"),
        count(blobs, "blob"),
        fmt_bytes(freed)
    );
    if young > 0 {
        outln!(
            "{:>12} {} ({}) no entry names, written less than an hour ago: kept, as a publish writes its blobs before its entry; a gc after that hour removes {}",
            "Held back",
            count(young, "blob"),
            fmt_bytes(young_bytes),
            if young == 1 { "it" } else { "them" }
        );
    }
    if !yes && (dropped > 0 || blobs > 0) {
        outln!("run again with --yes to delete");
    }
    report(true);
    Ok(exit::OK)
}

/// Removals that failed, other than of files already gone (another `gc`): how many, and the first error.
#[derive(Default)]
struct Refused {
    count: usize,
    first: String,
}

impl Refused {
    /// Notes a failed removal; `false` when the file was gone already (not a refusal).
    fn note(&mut self, e: crate::store::StoreError) -> bool {
        if let crate::store::StoreError::Io { source, .. } = &e {
            if source.kind() == std::io::ErrorKind::NotFound {
                return false;
            }
        }
        if self.count == 0 {
            self.first = e.to_string();
        }
        self.count += 1;
        true
    }
}
