//! Benchmarks behind the `polyflow bench-*` commands (the CLI only parses their arguments and reports errors).

pub mod fbank;
pub mod loader;
pub mod model;
#[cfg(feature = "video")]
pub mod video;
