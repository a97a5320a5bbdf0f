//! Events emitted by the engine. The engine never prints: reporters (in `cli::report`) render these.

use serde::Serialize;

/// The state of a node as decided before or during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its artifact is in the store under its current key and verifies.
    Fresh,
    /// It must run.
    Stale,
    /// Its last attempt failed (and it must run again).
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Fresh => "fresh",
            State::Stale => "stale",
            State::Failed => "failed",
        })
    }
}

/// One planned node.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    /// Node id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: State,
    /// Why it is stale (empty when fresh).
    pub reasons: Vec<String>,
}

/// A per-node timing in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTiming {
    /// Node id.
    pub id: String,
    /// Outcome: `ran`, `fresh`, `fetched`, `failed`, `skipped`.
    pub outcome: &'static str,
    /// Milliseconds (0 unless it ran).
    pub ms: u64,
}

/// Something that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan, before anything runs.
    Plan {
        /// Selected nodes in topological order.
        nodes: Vec<PlanEntry>,
    },
    /// A node was found fresh (at plan time, or after its inputs were rebuilt identically).
    Fresh {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
    },
    /// A node started.
    Started {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Why it runs.
        reasons: Vec<String>,
        /// The accelerator indices it is pinned to (`--devices` slots; absent when it holds none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        devices: Vec<u32>,
    },
    /// Progress of a running node.
    Progress {
        /// Node id.
        id: String,
        /// Steps done.
        done: u64,
        /// Total steps.
        total: u64,
        /// Status text.
        message: String,
    },
    /// A node finished and its artifact is committed.
    Finished {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Milliseconds.
        ms: u64,
        /// Artifact digest.
        artifact: String,
        /// Artifact size in bytes.
        size: u64,
    },
    /// A node's artifact was fetched from the shared cache (its blobs verified) instead of computed.
    Fetched {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Milliseconds the copy took.
        ms: u64,
        /// Artifact digest (the same as where it was computed).
        artifact: String,
        /// Artifact size in bytes.
        size: u64,
        /// The cache.
        from: String,
    },
    /// A node failed.
    Failed {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Where the node is declared (`file:line:col`).
        at: String,
        /// Error text.
        error: String,
    },
    /// Something worth telling about a running node (e.g. `submitted as Slurm job 12`).
    Note {
        /// Node id.
        id: String,
        /// The message.
        message: String,
    },
    /// A node was not run because an upstream node failed.
    Skipped {
        /// Node id.
        id: String,
        /// The upstream node whose failure it waited on (directly or through other skipped nodes).
        because: String,
    },
    /// The end of a run.
    Summary {
        /// Nodes that ran.
        ran: usize,
        /// Nodes that were fresh.
        fresh: usize,
        /// Nodes fetched from the shared cache.
        fetched: usize,
        /// Nodes that failed.
        failed: usize,
        /// Nodes skipped.
        skipped: usize,
        /// Wall time.
        ms: u64,
        /// Per-node outcomes.
        nodes: Vec<NodeTiming>,
    },
}

/// Where events go.
pub type Sink<'a> = &'a (dyn Fn(&Event) + Sync);
