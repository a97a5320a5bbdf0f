//! `show NODE`: a node's parameters, the values it uses, its inputs and its artifact; for a node that is not
//! fresh, the last results it has (its nearest earlier run's artifact), under a heading that says they are
//! outdated and what changed since.

use super::report::fmt_bytes;
use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::{assess_all, Assessment};
use crate::exec::earlier::{earlier, Earlier};
use crate::exec::State;
use crate::graph;
use crate::stage::{InputArtifact, Registry};
use crate::store::{Manifest, Store};
use std::collections::BTreeMap;

/// `show NODE`.
pub fn show(c: Common, node: &str, reg: &Registry) -> Result<i32, CliError> {
    let g = load_graph(&c, reg)?;
    // A node, or a declaration (`st.digits`): each of its nodes in turn, from one assessment.
    let Some(ids) = g.resolve(node) else {
        return Err(CliError::Other(format!("error: no node `{node}`\n  help: {}", g.suggest(node)), exit::USAGE));
    };
    let (store, _empty) = super::read_store(&c.store)?;
    let names: Vec<String> = ids.iter().map(|&j| g.nodes[j].id.clone()).collect();
    let sel = g.select(&names)?;
    let (a, earlier) = {
        let index = store.index_read()?;
        let a = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
        let settings = c.settings();
        let profile = c.profile.as_deref().unwrap_or("");
        let earlier: BTreeMap<usize, Earlier> =
            ids.iter().filter_map(|&i| earlier(&store, &index, &g.nodes[i], &a[&i], &settings, profile).map(|e| (i, e))).collect();
        (a, earlier)
    };
    for (k, &i) in ids.iter().enumerate() {
        if k > 0 {
            println!();
        }
        show_one(&c, &g, &store, &a, earlier.get(&i), i)?;
    }
    Ok(exit::OK)
}

/// `show` of node `i`, `a` the assessment of it and its inputs; `earlier`: when not fresh, what the store holds of
/// its nearest earlier run.
fn show_one(
    c: &Common,
    g: &graph::Graph,
    store: &Store,
    a: &BTreeMap<usize, Assessment>,
    earlier: Option<&Earlier>,
    i: usize,
) -> Result<(), CliError> {
    let n = &g.nodes[i];
    let s = &a[&i];
    // The version in the node's key (a stage may give some settings or backends one more).
    let version = s.fingerprint.as_ref().map_or(n.stage.version(), |f| f.version);
    println!("node:   {} ({}, v{})", n.id, n.stage.kind(), version);
    println!("state:  {}", s.state);
    for r in &s.reasons {
        println!("  - {r}");
        // A failure's message in full (the reason shows its first line): e.g. a program's last lines of output.
        if let (crate::fingerprint::DirtyReason::Failed { error }, true) = (r, s.state == State::Failed) {
            for line in error.lines().skip(1) {
                println!("    {line}");
            }
        }
    }
    println!("params: {}", serde_json::to_string(&n.params).unwrap_or_default());
    // The ids and parameters of its inputs (for what only they tell: a schedule, a trained model's size).
    let inputs = g.input_params(i);
    if let Some(eff) = n.stage.effective(&n.params, &inputs).filter(|e| *e != n.params) {
        println!("uses:   {}", serde_json::to_string(&eff).unwrap_or_default());
    }
    // The seed it runs with (a replicate's is the pipeline seed + its index), when its kind keys one.
    let env = crate::exec::assess::node_env(g, i, &env_of(g, &c.backend));
    if n.stage.env_keys().contains(&"seed") {
        println!("seed:   {}", env.get("seed").map(String::as_str).unwrap_or("?"));
    }
    // Its inputs, with the digest of each input artifact it is keyed by, else each input's own state (a node
    // waiting on one stale input has fresh ones too).
    for (slot, ups) in &n.inputs {
        let digests = s.fingerprint.as_ref().and_then(|f| f.inputs.get(slot));
        let short = |d: &str| d[..d.len().min(12)].to_string();
        let shown: Vec<String> = ups
            .iter()
            .enumerate()
            .map(|(k, &u)| match (digests.and_then(|d| d.get(k)), a.get(&u)) {
                (Some(d), _) => format!("{} ({})", g.nodes[u].id, short(&d.digest)),
                (None, Some(up)) if up.state == State::Fresh => match &up.manifest {
                    Some(m) => format!("{} (fresh, {})", g.nodes[u].id, short(&m.digest)),
                    None => format!("{} (fresh)", g.nodes[u].id),
                },
                (None, Some(up)) => format!("{} ({})", g.nodes[u].id, up.state),
                (None, None) => format!("{} (not fresh)", g.nodes[u].id),
            })
            .collect();
        println!("input:  {slot}: {}", shown.join(", "));
    }
    // When the artifact shown was computed, and how long it took.
    if let Some(r) = s.record.as_ref().filter(|r| s.manifest.is_some() && Some(&r.key) == s.key.as_ref()) {
        // Fresh through an identical node's artifact: that node ran.
        let mut by = r.runner.get("same_as").map(|p| format!(" (as `{p}`, which has the same key)")).unwrap_or_default();
        // The settings it was made under, when not the file's own (or not recorded, from before they were kept).
        if let Some(set) = r.runner.get(crate::exec::earlier::SETTINGS).filter(|s| !s.is_empty()) {
            by.push_str(&format!(", with {set}"));
        }
        match r.runner.get(crate::exec::FETCHED_FROM) {
            // Fetched: when, from where, and what computing it took where it was computed (with which build).
            Some(from) => {
                let build = r.runner.get(crate::exec::PUBLISHED_WITH).map(|b| format!(", by polyflow {b}")).unwrap_or_default();
                println!(
                    "fetched: {} from the shared cache {from}{by}; computing it took {} where it was computed{build}",
                    crate::report::html::utc(r.finished_at),
                    super::report::fmt_ms(r.duration_ms)
                );
            }
            None => {
                let build = r.runner.get(crate::exec::BUILT_WITH).map(|b| format!(", by polyflow {b}")).unwrap_or_default();
                println!("ran:    {}, took {}{by}{build}", crate::report::html::utc(r.finished_at), super::report::fmt_ms(r.duration_ms))
            }
        }
        // The checkout it was made (or fetched) on.
        let on = if r.runner.contains_key(crate::exec::FETCHED_FROM) { "fetched on" } else { "on" };
        if let Some(commit) = r.runner.get(super::git::COMMIT) {
            let short = commit.get(..12).unwrap_or(commit);
            // Edits of tracked files not committed then: the commit alone does not give what ran.
            let dirty = if r.runner.contains_key(super::git::DIRTY) { " (with uncommitted changes)" } else { "" };
            match r.runner.get(super::git::BRANCH) {
                Some(branch) => println!("{:<8}branch {branch}, commit {short}{dirty}", format!("{on}:")),
                None => println!("{:<8}commit {short}{dirty}", format!("{on}:")),
            }
        }
    }
    if let Some(text) = n.stage.outline(&n.params, &inputs) {
        println!("{text}");
    }
    if let Some(k) = &s.key {
        println!("key:    {k}");
    }
    print_runner(store, &n.id, &g.executor.job_prefix, s);
    let Some(m) = &s.manifest else {
        if s.failure.as_ref().is_some_and(|f| Some(&f.key) == s.key.as_ref()) {
            // Said above: the failure with these very settings. Running it again as it is fails again, unless
            // what failed was outside (a full disk, a file since fixed).
            println!("no artifact: its last run with these settings failed (above); fix the cause, then `{}`", c.run_command(&[&n.id]));
        } else {
            println!("no fresh artifact: run `{}` first", c.run_command(&[&n.id]));
        }
        return show_earlier(store, n, earlier);
    };
    print_artifact(store, n, m, &store.root.join("show").join(&n.id))
}

/// The last results of a node that is not fresh: its nearest earlier run's artifact, under a heading that
/// says they are outdated and what changed since; or that the store no longer holds them.
fn show_earlier(store: &Store, n: &graph::GNode, earlier: Option<&Earlier>) -> Result<(), CliError> {
    let Some(e) = earlier else { return Ok(()) };
    let r = e.record();
    let ran = format!("ran {}, took {}", crate::report::html::utc(r.finished_at), super::report::fmt_ms(r.duration_ms));
    match e {
        Earlier::Kept { manifest, changed, .. } => {
            let why: Vec<String> = changed.iter().map(|r| r.to_string()).collect();
            println!();
            println!(
                "outdated results: those of its nearest earlier run ({ran}, {}; key {}), not of its settings now",
                crate::exec::earlier::settings_of(r),
                &r.key[..r.key.len().min(16)]
            );
            println!("  changed since: {}", if why.is_empty() { "(unknown)".to_string() } else { why.join("; ") });
            // Beside (not over) the fresh preview of the node.
            print_artifact(store, n, manifest, &store.root.join("show").join(&n.id).join("outdated"))
        }
        Earlier::Elsewhere { .. } => {
            println!(
                "no earlier results shown: its runs on record were made under another profile (the latest: {ran}, {})",
                crate::exec::earlier::settings_of(r)
            );
            Ok(())
        }
        Earlier::Gone { file, damaged, .. } => {
            let what = file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
            let state = if *damaged { "is damaged" } else { "is no longer in the store (removed by `gc`, or by hand)" };
            println!("no earlier results either: the artifact{what} of its nearest earlier run ({ran}) {state}");
            Ok(())
        }
    }
}

/// Artifact `m` of node `n`: its files and blob paths, then what its stage describes of it (previews written
/// under `out_dir`).
fn print_artifact(store: &Store, n: &graph::GNode, m: &Manifest, out_dir: &std::path::Path) -> Result<(), CliError> {
    println!("artifact {} ({}, {})", &m.digest[..16], m.artifact_type, fmt_bytes(m.size()));
    for (name, f) in &m.files {
        println!("  {name:<28} {:>10}  {}", fmt_bytes(f.size), store.blobs.path(&f.digest).display());
    }
    // A store this user cannot write (another's, a read-only mount): the previews go to a folder of the user's.
    let fallback;
    let out_dir = match std::fs::create_dir_all(out_dir) {
        Ok(()) => out_dir,
        Err(e) if crate::store::is_not_writable(&e) => {
            let rel = out_dir.strip_prefix(&store.root).unwrap_or(out_dir);
            fallback = private_tmp()?.join(rel);
            std::fs::create_dir_all(&fallback).map_err(|e| CliError::Other(format!("{}: {e}", fallback.display()), exit::STORE))?;
            println!("previews: {} (the store is not writable here)", fallback.display());
            &fallback
        }
        Err(e) => return Err(CliError::Other(format!("{}: {e}", out_dir.display()), exit::STORE)),
    };
    let art = InputArtifact::new(n.id.clone(), m.clone(), store.clone());
    let described = n.stage.describe(&art, out_dir);
    // Kinds without previews (a model, a table) leave no empty folder behind (removing a folder with files fails).
    let _ = std::fs::remove_dir(out_dir);
    match described {
        Ok(text) if !text.is_empty() => println!("{text}"),
        Ok(_) => {}
        Err(e) => return Err(CliError::Other(format!("error: {e}"), exit::NODE_FAILED)),
    }
    Ok(())
}

/// This user's own folder for previews, `$TMPDIR/polyflow-UID` (made 0700). `$TMPDIR` is everyone's: a folder of
/// that name another user made, one writable by others, or a link planted there would have previews written
/// through links into this user's files; then a fresh folder of the user's is used instead (kept: it holds the
/// previews).
fn private_tmp() -> Result<std::path::PathBuf, CliError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = unsafe { libc::getuid() };
    let base = std::env::temp_dir().join(format!("polyflow-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&base);
    let ours = std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0);
    if ours {
        return Ok(base);
    }
    let fresh = tempfile::Builder::new()
        .prefix(&format!("polyflow-{uid}-"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| {
            CliError::Other(
                format!(
                    "error: the store is not writable here, and no folder for previews can be made in {} either: {e}\n  help: set TMPDIR to a folder you can write",
                    std::env::temp_dir().display()
                ),
                exit::STORE,
            )
        })?;
    crate::cli::out::errln!(
        "{:>12} {} is not a private folder of this user (another's, a link, or writable by others): previews go to {} instead",
        "Warning",
        base.display(),
        fresh.path().display()
    );
    Ok(fresh.keep())
}

/// Where the node last ran, when not in-process (a Slurm job: id, state, logs), a job still in flight, and jobs
/// of earlier settings left running.
fn print_runner(store: &Store, id: &str, prefix: &str, s: &Assessment) {
    let line = |what: &str, r: &std::collections::BTreeMap<String, String>| {
        if let Some(job) = r.get("slurm_job") {
            println!("{what} Slurm job {job} ({})", r.get("state").map(String::as_str).unwrap_or("?"));
            for k in ["stdout", "stderr"] {
                if let Some(p) = r.get(k) {
                    println!("  {k}: {p}");
                }
            }
        }
        // A program's whole output (a local run's), while the store keeps it.
        if let Some(p) = r.get(crate::store::OUTPUT_NOTE) {
            match std::fs::metadata(p) {
                Ok(m) => println!("output: {p} ({})", fmt_bytes(m.len())),
                Err(_) => println!("output: {p} (removed since)"),
            }
        }
    };
    if let Some(r) = s.record.as_ref().filter(|r| Some(&r.key) == s.key.as_ref()) {
        line("ran as:", &r.runner);
    } else if let Some(f) = &s.failure {
        // A failure of other settings than the node's now is history, said as such.
        let what = if Some(&f.key) == s.key.as_ref() { "failed as:" } else { "failed as (earlier settings):" };
        line(what, &f.runner);
    }
    let ids = std::collections::BTreeSet::from([id.to_string()]);
    let jobs = match crate::exec::slurm::flight::in_flight(&store.root, Some(&ids), prefix) {
        Ok(mut j) => j.remove(id).unwrap_or_default(),
        Err(e) => {
            println!("job:    {}", crate::exec::slurm::flight::unknown(&e));
            vec![]
        }
    };
    for f in jobs {
        let submitted = crate::report::html::utc(f.sub.submitted_at);
        if !f.is_leftover(s.key.as_deref()) {
            if s.manifest.is_none() {
                println!("job:    {}, submitted {submitted}", f.describe());
                println!("  stdout: {}", f.dir.join("stdout.log").display());
                println!("  stderr: {}", f.dir.join("stderr.log").display());
            }
        } else {
            println!("job:    {} (submitted {submitted})", crate::exec::slurm::flight::leftover(&f));
        }
    }
}
