//! Events emitted by the engine. The engine never prints: reporters (in `cli::report`) render these.

use crate::fingerprint::DirtyReason;
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
    /// Why it is stale, in words (`lr changed 0.002 → 0.003; …`; empty when fresh), as `plan` and `status` write it.
    pub reason: String,
    /// Why it is stale, each reason as `plan --json` and `status --json` give it (`{"reason": "param_changed", …}`).
    pub reasons: Vec<DirtyReason>,
    /// Stale, and the shared cache holds what it would compute (directly, or down a chain of fetches): a run
    /// fetches it unless the fetch fails.
    pub in_cache: bool,
}

/// What became of a node in a run (`--json`: `ran`, `fresh`, `fetched`, `failed`, `skipped`, `interrupted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Computed by this run.
    Ran,
    /// Already in the store.
    Fresh,
    /// Copied from the shared cache.
    Fetched,
    /// Its computation failed.
    Failed,
    /// Not run: an input failed.
    Skipped,
    /// Stopped by a signal.
    Interrupted,
    /// Never started: the run was stopped first.
    NotStarted,
}

/// A per-node timing in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTiming {
    /// Node id.
    pub id: String,
    /// What became of it.
    pub outcome: Outcome,
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
        /// Found fresh once its inputs were computed (the plan was to run it; they came out as before), not at
        /// plan time.
        after_inputs: bool,
    },
    /// A node started.
    Started {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Why it runs, in words.
        reason: String,
        /// Why it runs, as structured reasons (those of the plan, less the inputs it waited on).
        reasons: Vec<DirtyReason>,
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
        /// The node's cache key (`status --json`'s `key`).
        key: String,
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
        /// The node's cache key.
        key: String,
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
        /// Milliseconds it ran before failing.
        ms: u64,
        /// Error text.
        error: String,
    },
    /// A node's attempt failed and it starts again (`resources = { retries = N }`, `run --retries N`): the
    /// failure is not the node's end, and is not recorded as its failure.
    Retrying {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// The attempts it may have in all (`retries` + 1).
        attempts: u32,
        /// Milliseconds the failed attempt ran.
        ms: u64,
        /// The failed attempt's error text.
        error: String,
    },
    /// A node that was running when the run was stopped (Ctrl-C, SIGTERM, its output's reader gone): not
    /// cached; with `kept`, its Slurm job was left running for the next `run` to re-attach to.
    Interrupted {
        /// Node id.
        id: String,
        /// Kind.
        kind: String,
        /// Whether its Slurm job keeps running (`--keep-jobs`).
        kept: bool,
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
        /// Kind.
        kind: String,
        /// The upstream node whose failure it waited on (directly or through other skipped nodes).
        because: String,
    },
    /// The end of a run.
    Summary {
        /// Nodes that ran.
        ran: usize,
        /// Nodes that were fresh.
        fresh: usize,
        /// Of them, nodes the plan was to run found fresh once their inputs were computed: the inputs came out
        /// as before (early cutoff).
        fresh_after_inputs: usize,
        /// Nodes fetched from the shared cache.
        fetched: usize,
        /// Artifacts this run added to the shared cache (a key already there is not counted).
        published: usize,
        /// The shared cache this run publishes to, if any.
        published_to: Option<String>,
        /// Nodes that failed.
        failed: usize,
        /// Nodes skipped.
        skipped: usize,
        /// Nodes stopped while running (the run was interrupted; 0 otherwise).
        interrupted: usize,
        /// Nodes of the plan the run never started (it was interrupted first; 0 otherwise).
        not_started: usize,
        /// Wall time.
        ms: u64,
        /// Per-node outcomes, in plan order.
        nodes: Vec<NodeTiming>,
    },
}

/// Where events go.
pub type Sink<'a> = &'a (dyn Fn(&Event) + Sync);
