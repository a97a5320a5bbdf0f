//! The last results of a node that is not fresh: the artifact of one of its earlier runs, when the store still
//! holds it whole, and what changed since.
//!
//! Freshness never depends on this: a stale node stays stale and re-runs. It exists so that commands that present
//! results (`compare`, `show`) can show a node's earlier numbers, marked as outdated, instead of nothing while it
//! waits to re-run. Only metadata is checked here (as for freshness: sizes, no bytes read); readers still check
//! each blob's digest as they read it.
//!
//! **Which run.** Of the node's runs on record, those made under the same profile as the command at hand come
//! first, then those under its very settings (profile and overrides: the notes a run keeps,
//! [`super::RunOptions::notes`]), then the fewest differences from the node's settings now (its whole
//! fingerprint where its inputs are known, else its own parameters), then the latest. A run under another
//! profile is never presented as the node's earlier result ([`Earlier::Elsewhere`]): a smoke-profile number
//! must not pass for the full profile's. A run with other overrides can be (the file's run for a `--set`
//! what-if, or the other way round), and every presentation names the settings it was made under. Runs
//! recorded before notes were kept are presented, said to be of unrecorded settings.

use super::assess::{explain, Assessment};
use super::State;
use crate::fingerprint::{DirtyReason, Fingerprint, NodeRecord};
use crate::store::{BlobState, Index, Manifest, Store};

/// What the store holds of a stale node's earlier runs.
#[derive(Debug, Clone)]
pub enum Earlier {
    /// The chosen run's artifact, every blob present: the node's last results, computed under other settings.
    Kept {
        /// The run (its key, fingerprint, date).
        record: NodeRecord,
        /// Its artifact.
        manifest: Manifest,
        /// What changed between that run and the node's settings now.
        changed: Vec<DirtyReason>,
    },
    /// The chosen run's artifact is no longer whole: `gc` removed it (or its manifest), or a blob is damaged.
    Gone {
        /// The run.
        record: NodeRecord,
        /// The first file found missing or damaged (`None`: the manifest itself is gone).
        file: Option<String>,
        /// Damaged (fails its size check) rather than missing.
        damaged: bool,
    },
    /// The node's runs on record were all made under another profile: their results are not this command's
    /// node's, and are not shown.
    Elsewhere {
        /// The latest such run.
        record: NodeRecord,
    },
}

impl Earlier {
    /// The run.
    pub fn record(&self) -> &NodeRecord {
        match self {
            Earlier::Kept { record, .. } | Earlier::Gone { record, .. } | Earlier::Elsewhere { record } => record,
        }
    }
}

/// The note under which a run keeps the settings it was made under ([`super::RunOptions::notes`]): profile and
/// overrides as a command line gives them, empty for the pipeline file's own.
pub const SETTINGS: &str = "settings";
/// The note under which a run keeps its profile (empty for none).
pub const PROFILE: &str = "profile";

/// Whether run `r` kept note `key` equal to `want` (`None`: it did not record its settings).
fn same(r: &NodeRecord, key: &str, want: &str) -> Option<bool> {
    r.runner.contains_key(SETTINGS).then(|| r.runner.get(key).map(String::as_str).unwrap_or("") == want)
}

/// Whether run `r` was made under another profile than `profile`, and under other settings than `settings`
/// (both false for a run that did not record its settings): the first two criteria by which both this module and
/// `status` ([`super::assess`]'s nearest run) choose a node's earlier run, so that they choose the same one.
pub(crate) fn made_elsewhere(r: &NodeRecord, settings: &str, profile: &str) -> (bool, bool) {
    (same(r, PROFILE, profile) == Some(false), same(r, SETTINGS, settings) == Some(false))
}

/// The earlier results of node `n` assessed as `a`, under the command's `settings` and `profile` (what its
/// runs keep under the notes [`SETTINGS`] and [`PROFILE`]; e.g. `--profile smoke --set a.b=1` and `smoke`, empty
/// for the file's own). Its keyed parameters now are compared with a run's where its inputs are not known yet.
/// `None` when it is fresh or never ran.
pub fn earlier(store: &Store, index: &Index, n: &crate::graph::GNode, a: &Assessment, settings: &str, profile: &str) -> Option<Earlier> {
    let (id, stage, keyed) = (n.id.as_str(), n.stage.as_ref(), &n.keyed);
    if a.state == State::Fresh {
        return None;
    }
    let mut runs = index.runs_of(id);
    runs.extend(a.nearest.clone());
    runs.extend(a.record.clone());
    // What changed since run `r`: its whole fingerprint where the node's is known, else its own parameters (and
    // the inputs it waits on, from the assessment).
    let changes = |r: &NodeRecord| -> Vec<DirtyReason> {
        match &a.fingerprint {
            Some(fp) => explain(stage, r, fp),
            None => {
                let own = Fingerprint { params: keyed.clone(), ..r.fingerprint.clone() };
                let mut v: Vec<DirtyReason> =
                    a.reasons.iter().filter(|x| matches!(x, DirtyReason::UpstreamPending { .. })).cloned().collect();
                // (Its own settings unchanged: no reason of its own, not compare's "key changed".)
                if own.key() != r.fingerprint.key() {
                    v.extend(explain(stage, r, &own));
                }
                v
            }
        }
    };
    let rank = |r: &NodeRecord| {
        let (other_profile, other_settings) = made_elsewhere(r, settings, profile);
        let now = a.fingerprint.as_ref().map_or(&[][..], |f| f.external_parts.as_slice());
        let far = super::assess::distance(&changes(r), &r.fingerprint.external_parts, now);
        (other_profile, other_settings, far, std::cmp::Reverse(r.finished_at))
    };
    let record = runs.into_iter().min_by_key(rank)?;
    match same(&record, PROFILE, profile) {
        Some(false) => Some(Earlier::Elsewhere { record }),
        _ => {
            let Some(manifest) = index.artifact(&record.key).ok().flatten() else {
                return Some(Earlier::Gone { record, file: None, damaged: false });
            };
            Some(match store.check(&manifest) {
                None => {
                    let mut changed = changes(&record);
                    // Which files changed, where the listings of both states were kept (as `status` names them).
                    if let Some(fp) = &a.fingerprint {
                        for reason in &mut changed {
                            if let DirtyReason::ExternalChanged { files } = reason {
                                *files = store.file_digests().explain(
                                    &record.fingerprint.external_parts,
                                    &fp.external_parts,
                                    crate::fingerprint::CHANGES_SHOWN,
                                );
                            }
                        }
                    }
                    Earlier::Kept { changed, record, manifest }
                }
                Some((file, state)) => Earlier::Gone { record, file: Some(file), damaged: state != BlobState::Missing },
            })
        }
    }
}

/// For a node whose reasons compare it with a run made under other settings than the command's own `settings`
/// (after a `--set lr=0.2` experiment, `plan --set lr=0.3` compares with that run: `lr changed 0.2 → 0.3`), the
/// words that say so (`since its run under --set …`), so that the old value is not taken for the file's; nothing
/// where that run is the file's own.
pub fn compared_with(a: &Assessment, settings: &str) -> Option<String> {
    let r = a.record.as_ref()?;
    let own = |x: &DirtyReason| !matches!(x, DirtyReason::NeverRun | DirtyReason::Forced | DirtyReason::UpstreamPending { .. });
    // Compared with the file's own run, the old value is the file's, as a reader takes it: nothing to say.
    let experiment = r.runner.get(SETTINGS).is_some_and(|s| !s.is_empty());
    (experiment && same(r, SETTINGS, settings) == Some(false) && a.reasons.iter().any(own))
        .then(|| format!("since its run under {}", settings_of(r)))
}

/// A run's settings as a command line gives them (`--profile smoke --set a.b=1`), "the pipeline file's own" when
/// none, "not recorded" for runs from before they were kept.
pub fn settings_of(r: &NodeRecord) -> String {
    match r.runner.get(SETTINGS).map(String::as_str) {
        None => "settings not recorded".into(),
        Some("") => "the pipeline file's own settings".into(),
        Some(s) => s.to_string(),
    }
}
