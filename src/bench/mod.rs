//! Benchmarks behind `polyflow bench-*` commands that are not about the model (those are in `cli::bench`).

pub mod loader;
#[cfg(feature = "video")]
pub mod video;
