//! Execution: freshness assessment ([`assess`]) and the parallel executor ([`run()`]).
//!
//! The executor emits [`Event`]s through a sink and never prints.

pub mod assess;
pub mod event;
mod run;

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
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
