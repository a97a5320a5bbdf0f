//! `verify`: checks the store's blobs against their digests, or the shared cache's (`--cache`).

use super::current::{current_keys, names, verb_s, VerifyOnly};
use super::out::outln;
use super::{exit, CliError};
use crate::stage::Registry;
use crate::store::{BlobState, Store};
use crate::text::count;
use std::path::Path;

/// `verify --cache DIR`: checks every blob of every entry of the shared cache, or with pipelines named, of the
/// entries whose keys they compute now (their current keys need the store at `store_dir`).
pub fn verify_cache(dir: &Path, store_dir: &Path, only: VerifyOnly, json: bool, reg: &Registry) -> Result<i32, CliError> {
    let cache = super::open_cache(dir, false)?;
    let keys = match only {
        Some((files, backend, overlay)) => {
            if !Store::exists(store_dir) {
                return Err(CliError::Other(
                    format!(
                        "error: there is no store at {}: `verify --cache DIR {}` checks the entries those pipelines compute now, which only your store can tell; name it with `--store`, or leave out the pipelines to check the whole cache",
                        store_dir.display(),
                        names(files)
                    ),
                    exit::USAGE,
                ));
            }
            let store = Store::open(store_dir)?;
            Some(current_keys(files, &store, backend, overlay, Some(&cache), reg)?.0)
        }
        None => None,
    };
    let (n, entries, bad) = cache.verify(&|k| keys.as_ref().is_none_or(|keys| keys.contains(k)));
    for (key, node, name, what) in &bad {
        outln!("{:>12} {name} of `{node}` (cache entry {}) ({what})", "Damaged", &key[..16.min(key.len())]);
    }
    // Entries no run can use, named whatever pipelines were given (their keys are unknown or not to be trusted).
    let mut broken = 0;
    let (mut malformed, mut unreadable) = (vec![], vec![]);
    for (p, why) in cache.malformed() {
        broken += 1;
        outln!("{:>12} cache entry {}: {why}; not used (`polyflow gc --cache` removes it)", "Malformed", p.display());
        malformed.push(serde_json::json!({"path": p.display().to_string(), "why": why}));
    }
    for p in cache.unreadable() {
        broken += 1;
        outln!("{:>12} {}: this user cannot read it; not used here", "Unreadable", p.display());
        unreadable.push(p.display().to_string());
    }
    let of = match only {
        Some((files, ..)) => format!(" ({} that {} compute{} now)", count(entries, "entry"), names(files), verb_s(files)),
        None => String::new(),
    };
    let broken_note = if broken > 0 { format!(", {} malformed or unreadable", count(broken, "entry")) } else { String::new() };
    outln!("{:>12} {} checked in {}{of}, {} damaged{broken_note}", "Verified", count(n, "file"), dir.display(), bad.len());
    if json {
        let found: Vec<serde_json::Value> =
            bad.iter().map(|(key, node, name, what)| serde_json::json!({"key": key, "node": node, "file": name, "what": what})).collect();
        let v = serde_json::json!({
            "cache": dir.display().to_string(),
            "files": n,
            // With pipelines named: the entries they compute now.
            "entries": only.map(|_| entries),
            // As `verify --json` of a store: how many damaged, and each.
            "damaged": bad.len(),
            "found": found,
            "malformed": malformed,
            "unreadable": unreadable,
        });
        super::out::line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(if bad.is_empty() && broken == 0 { exit::OK } else { exit::STORE })
}
/// `verify`: checks every blob of every artifact, or with pipelines named, of the artifacts they use now (every
/// profile).
pub fn verify(store_dir: &Path, only: VerifyOnly, json: bool, reg: &Registry) -> Result<i32, CliError> {
    let (store, _empty) = super::read_store(store_dir)?;
    let (keys, unknown) = match only {
        Some((files, backend, overlay)) => {
            let (k, u) = current_keys(files, &store, backend, overlay, None, reg)?;
            (Some(k), u)
        }
        None => (None, vec![]),
    };
    let index = store.index_read()?;
    let mut artifacts = 0;
    let mut bad = 0;
    let mut unreadable = 0;
    let mut unmoved = 0;
    let mut n = 0;
    // For `--json`: each file found damaged, missing or unreadable.
    let mut found = vec![];
    let file_json =
        |k: &str, name: &str, state: &str| serde_json::json!({"key": k, "node": index.producer(k), "file": name, "state": state});
    // The node that computed an artifact, and its key (what `status --json` calls `key`).
    let whose = |k: &str| match index.producer(k) {
        Some(id) => format!("`{id}`'s artifact (key {})", &k[..16.min(k.len())]),
        None => format!("the artifact of key {}", &k[..16.min(k.len())]),
    };
    for (k, m) in index.artifacts() {
        if keys.as_ref().is_some_and(|keys| !keys.contains(&k)) {
            continue;
        }
        artifacts += 1;
        for (name, f) in &m.files {
            n += 1;
            match store.blobs.check(&f.digest, f.size) {
                BlobState::Ok => {}
                BlobState::Missing => {
                    bad += 1;
                    outln!("{:>12} {name} of {} (missing)", "Damaged", whose(&k));
                    found.push(file_json(&k, name, "missing"));
                }
                BlobState::Unreadable => {
                    unreadable += 1;
                    let path = store.blobs.path(&f.digest);
                    outln!("{:>12} {name} of {}: permission denied ({})", "Unreadable", whose(&k), crate::store::owner_and_mode(&path));
                    found.push(file_json(&k, name, "unreadable"));
                }
                BlobState::Corrupt => {
                    bad += 1;
                    // Moved aside, so the artifact is stale (missing) from now on, not trusted by its size.
                    let moved = store.blobs.quarantine(&f.digest);
                    let mut entry = file_json(&k, name, "corrupt");
                    entry["moved_to"] = serde_json::json!(moved.as_ref().map(|p| p.display().to_string()));
                    found.push(entry);
                    let to = match moved {
                        Some(p) => format!(", moved to {}", p.display()),
                        // A store this user cannot write: the blob stays, its node fresh by metadata until moved.
                        None => {
                            unmoved += 1;
                            ", not moved aside: this user cannot write the store; its node stays fresh until its owner runs `polyflow verify`".into()
                        }
                    };
                    outln!("{:>12} {name} of {} (checksum mismatch{to})", "Damaged", whose(&k));
                }
            }
        }
    }
    let of = match only {
        Some((files, ..)) if artifacts == 0 => {
            format!(
                " (none of the artifacts {} use{} now is in the store: `polyflow status` says what is stale)",
                names(files),
                verb_s(files)
            )
        }
        Some((files, ..)) => format!(" ({} that {} use{} now)", count(artifacts, "artifact"), names(files), verb_s(files)),
        None => String::new(),
    };
    outln!(
        "{:>12} {} checked{of}, {bad} damaged{}{}",
        "Verified",
        count(n, "file"),
        if bad > unmoved { " (their nodes are stale and re-run on the next `run`)" } else { "" },
        if unreadable > 0 {
            format!(", {unreadable} not readable by this user (not checked: their owner can make them readable, `chmod g+r` or `o+r`)")
        } else {
            String::new()
        }
    );
    if !unknown.is_empty() {
        // Their artifact of now is not known before their inputs are computed again: what the store holds of
        // them is of other inputs, and only a whole-store `verify` reads it.
        let shown = unknown.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
        let more = if unknown.len() > 6 { format!(" and {} more", unknown.len() - 6) } else { String::new() };
        outln!(
            "{:>12} {} not checked, as an input of theirs is stale (what they compute now is known once it has run; `polyflow verify` without pipelines checks every artifact): {shown}{more}",
            "Note",
            count(unknown.len(), "node")
        );
    }
    if json {
        let v = serde_json::json!({
            "files": n,
            "artifacts": artifacts,
            "damaged": bad,
            "unreadable": unreadable,
            // Each file damaged (`missing`, `corrupt` with where it was moved) or `unreadable`.
            "found": found,
            // With pipelines named: nodes whose artifact of now is not known (an input of theirs is stale).
            "not_checked": unknown,
        });
        super::out::line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(if bad + unreadable > 0 { exit::STORE } else { exit::OK })
}
