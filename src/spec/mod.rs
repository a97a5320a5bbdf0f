//! Pipeline specification: TOML files → a resolved list of [`NodeSpec`]s.
//!
//! This layer knows only TOML, spans, includes, profiles and matrices. It does not know which node kinds
//! exist or what their parameters mean: that is checked against the stage registry by [`crate::graph`].

pub mod error;
mod expand;
pub mod files_matrix;
pub mod overlay;
mod overrides;
pub mod parse;
pub mod resources;
pub mod source;
mod unclosed;
pub mod value;
mod vars;

pub use error::{SpecError, SpecErrorKind};
pub use expand::{id_label, MAX_ID_BYTES};
pub use overlay::Overlay;
pub use parse::{load, load_str, load_with, AsWritten, CacheSpec, DormantOverride, InputRef, NodeSpec, Pipeline, NOT_PARAMS};
pub use resources::{ExecutorKind, ExecutorSpec, NodeResources, OnInterrupt};
pub use source::{SourceMap, Span};
pub use value::{Entry, SValue, Value};
