//! Execution: freshness assessment ([`assess`]) and the parallel executor ([`run()`]).
//!
//! The executor emits [`Event`]s through a sink and never prints.

pub mod assess;
pub mod event;
pub mod launch;
pub mod node;
mod run;
pub mod slurm;

pub use event::{Event, PlanEntry, Sink, State};
pub use run::{run, RunOptions, RunSummary};

/// Errors that stop a run as a whole (node failures are reported as events instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The pipeline or a target is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The run was interrupted (Ctrl-C); `kept` jobs were left running for the next run to re-attach.
    #[error("interrupted{}", if *kept > 0 { format!(": {kept} submitted job(s) left running; the next `polyflow run` re-attaches to them") } else { String::new() })]
    Interrupted {
        /// Jobs left running.
        kept: usize,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
