//! The PolyViT model in burn (no engine code here).
//!
//! - [`config`]: sizes, modality geometry, tasks (serializable: part of cache keys).
//! - [`block`], [`tokenizer`], [`polyvit`]: the network.
//! - [`count`]: parameter accounting from a config alone.
//! - [`init`]: seeded host-side initialisers (same weights on every backend).
//! - [`checkpoint`]: safetensors checkpoints by module path; [`import`]: timm ViT weights.
//! - [`device`]: the one place that names backends; [`fused`]: the block as fused CPU kernels on `flex`;
//!   [`gpu_cache`]: where CUDA kernels and autotune results persist; [`gpu_fused`]: LayerNorm and softmax as
//!   single GPU kernels on `cuda`/`wgpu`.

pub mod block;
pub mod checkpoint;
pub mod config;
pub mod count;
pub mod device;
pub mod fused;
pub mod gpu_cache;
pub mod gpu_fused;
pub mod import;
pub mod init;
pub mod polyvit;
pub mod tokenizer;
pub mod transfer;

pub use config::{Geometry, HeadInit, Modality, ModelConfig, Size, TaskHead};
pub use polyvit::{PolyVit, Route};
