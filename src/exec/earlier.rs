//! The last results of a node that is not fresh: the artifact of its nearest earlier run
//! ([`Assessment::nearest`]), when the store still holds it whole.
//!
//! Freshness never depends on this: a stale node stays stale and re-runs. It exists so that commands that present
//! results (`compare`, `show`, `report`) can show a node's earlier numbers, marked as outdated, instead of
//! nothing while it waits to re-run. Only metadata is checked here (as for freshness: sizes, no bytes read);
//! readers still check each blob's digest as they read it.

use super::assess::Assessment;
use super::State;
use crate::fingerprint::NodeRecord;
use crate::store::{BlobState, Index, Manifest, Store};

/// What the store holds of a stale node's nearest earlier run.
#[derive(Debug, Clone)]
pub enum Earlier {
    /// Its artifact, every blob present: the node's last results, computed under other settings.
    Kept {
        /// The run (its key, fingerprint, date).
        record: NodeRecord,
        /// Its artifact.
        manifest: Manifest,
    },
    /// Its artifact is no longer whole: `gc` removed it (or its manifest), or a blob is damaged.
    Gone {
        /// The run.
        record: NodeRecord,
        /// The first file found missing or damaged (`None`: the manifest itself is gone).
        file: Option<String>,
        /// Damaged (fails its size check) rather than missing.
        damaged: bool,
    },
}

impl Earlier {
    /// The run.
    pub fn record(&self) -> &NodeRecord {
        match self {
            Earlier::Kept { record, .. } | Earlier::Gone { record, .. } => record,
        }
    }
}

/// The earlier results of the node assessed as `a`: `None` when it is fresh (its own artifact is its results)
/// or has no run on record to fall back to.
pub fn earlier(store: &Store, index: &Index, a: &Assessment) -> Option<Earlier> {
    if a.state == State::Fresh {
        return None;
    }
    let record = a.nearest.clone()?;
    let Some(manifest) = index.artifact(&record.key).ok().flatten() else {
        return Some(Earlier::Gone { record, file: None, damaged: false });
    };
    Some(match store.check(&manifest) {
        None => Earlier::Kept { record, manifest },
        Some((file, state)) => Earlier::Gone { record, file: Some(file), damaged: state != BlobState::Missing },
    })
}
