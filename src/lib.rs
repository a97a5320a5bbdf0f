//! # polyflow
//!
//! Declare a whole experiment study in TOML and regenerate its result tables incrementally.
//!
//! ## Module map
//!
//! Engine (knows nothing of burn, modalities or tables):
//! - [`spec`]: TOML → spanned, resolved node specs (includes, profiles, matrix expansion).
//! - [`graph`]: specs checked against the [`stage::Registry`] → petgraph DAG; target selection.
//! - [`fingerprint`]: cache keys (blake3 of canonical params + input *content* digests + env) and
//!   [`fingerprint::DirtyReason`]s that explain staleness.
//! - [`store`]: sled index + content-addressed blobs; atomic commit; writer lock; verify.
//! - [`exec`]: freshness assessment and the parallel executor; emits [`exec::Event`]s. Nodes start through
//!   a launcher: in this process ([`exec::launch::LocalLauncher`]) or as Slurm jobs ([`exec::slurm`]).
//! - [`stage`]: the trait node kinds implement, and the registry.
//! - [`text`]: small text and clock helpers every layer shares.
//!
//! Node kinds and their domains:
//! - [`stages`]: the built-in kinds (generic `value`/`command`, and the PolyViT study's kinds).
//!
//! Front end: [`cli`] (clap commands and reporters) and [`report`] (the HTML report page). Nothing in the library
//! imports [`cli`].
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod data;
pub mod exec;
pub mod fingerprint;
pub mod graph;
pub mod model;
pub mod report;
pub mod spec;
pub mod stage;
pub mod stages;
pub mod store;
pub mod tables;
pub mod text;
pub mod train;
