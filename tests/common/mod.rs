//! Helpers shared by integration tests.

use polyflow::model::checkpoint::{to_safetensors, HostTensor};
use std::collections::BTreeMap;
use std::path::Path;

/// timm-named ViT weights: `dim`, `depth`, MLP `mlp`, `patch`² RGB patches, a `grid`² position grid.
pub fn timm_vit(path: &Path, dim: usize, depth: usize, mlp: usize, patch: usize, grid: usize) {
    let mut w = BTreeMap::new();
    let mut seed = 1u64;
    let mut t = |n: String, shape: Vec<usize>| {
        let len = shape.iter().product();
        let data = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        w.insert(n, HostTensor { shape, data });
    };
    t("patch_embed.proj.weight".into(), vec![dim, 3, patch, patch]);
    t("patch_embed.proj.bias".into(), vec![dim]);
    t("cls_token".into(), vec![1, 1, dim]);
    t("pos_embed".into(), vec![1, 1 + grid * grid, dim]);
    for i in 0..depth {
        for n in ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias"] {
            t(format!("blocks.{i}.{n}"), vec![dim]);
        }
        t(format!("blocks.{i}.attn.qkv.weight"), vec![3 * dim, dim]);
        t(format!("blocks.{i}.attn.qkv.bias"), vec![3 * dim]);
        t(format!("blocks.{i}.attn.proj.weight"), vec![dim, dim]);
        t(format!("blocks.{i}.mlp.fc1.weight"), vec![mlp, dim]);
        t(format!("blocks.{i}.mlp.fc1.bias"), vec![mlp]);
        t(format!("blocks.{i}.mlp.fc2.weight"), vec![dim, mlp]);
    }
    t("norm.weight".into(), vec![dim]);
    t("norm.bias".into(), vec![dim]);
    std::fs::write(path, to_safetensors(&w)).unwrap();
}
