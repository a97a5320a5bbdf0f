//! Execution: freshness assessment ([`assess`]) and the parallel executor ([`run()`]).
//!
//! The executor emits [`Event`]s through a sink and never prints.

pub mod assess;
pub mod earlier;
pub mod event;
pub mod launch;
pub mod node;
mod run;
pub mod running;
pub mod slurm;

pub use event::{Event, PlanEntry, Sink, State};
pub use run::{cpu_slots, requests, run, RunOptions, RunSummary};

/// The note on a fetched node's record naming the shared cache it came from.
pub const FETCHED_FROM: &str = "fetched_from";
/// The note on a fetched node's record naming the polyflow build that published it.
pub const PUBLISHED_WITH: &str = "published_with";
/// The note on a computed node's record naming the polyflow build that computed it (`0.1.0 (2a4c43f1b2c3)`, as
/// `polyflow --version` says; of the run that coordinated a Slurm job), and that `push` publishes it with.
pub const BUILT_WITH: &str = "polyflow";

/// Errors that stop a run as a whole (node failures are reported as events instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The pipeline or a target is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The run was interrupted (Ctrl-C, SIGTERM): what was running is not cached (`kept` submitted jobs were left
    /// running for the next run to re-attach to), what finished is.
    #[error("{}", interrupted_message(*kept, running, rerun, *done))]
    Interrupted {
        /// Jobs left running.
        kept: usize,
        /// Nodes that were running when the run stopped.
        running: Vec<String>,
        /// Of those, forced re-runs of an artifact the store holds: it stays.
        rerun: Vec<String>,
        /// Nodes that finished in this run (cached).
        done: usize,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn interrupted_message(kept: usize, running: &[String], rerun: &[String], done: usize) -> String {
    let mut m = "interrupted".to_string();
    if kept > 0 {
        m.push_str(&format!(
            ": {} left running; the next `polyflow run` re-attaches to {}",
            crate::text::count(kept, "submitted job"),
            if kept == 1 { "it" } else { "them" }
        ));
    } else {
        // Forced re-runs of what the store holds keep that artifact; the others' work is not cached.
        let lost: Vec<&String> = running.iter().filter(|r| !rerun.iter().any(|x| *r == x || r.starts_with(&format!("{x} ")))).collect();
        if !lost.is_empty() {
            let (it, them) = if lost.len() == 1 { ("it", "it") } else { ("they", "them") };
            m.push_str(&format!(
                " while running {} (not cached: run again to compute {them}; a training node resumes from its last checkpoint if {it} wrote one)",
                lost.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !rerun.is_empty() {
            m.push_str(&format!(
                "{} the forced re-run of {} (the artifact the store holds stays)",
                if lost.is_empty() { " during" } else { ", and during" },
                rerun.join(", ")
            ));
        }
    }
    m.push_str(&format!(
        "; {} finished in this run and {} cached",
        crate::text::count(done, "node"),
        if done == 1 { "stays" } else { "stay" }
    ));
    m
}
