//! Initialisation from a timm-named ViT checkpoint (safetensors), as the paper initialises from ViT-B/16:
//!
//! - `blocks.i` → shared block `i − L_adapt` if `i ≥ L_adapt`, else copied into adapter `i` of **every**
//!   tokenizer (all adapters start equal); `attn.qkv` stays fused (our attention is fused too);
//! - `patch_embed.proj` → every tokenizer's patch embedding: 2D as is; video tubelets inflated from 2D by the
//!   central-frame rule (kernel at `t // 2`, zeros elsewhere) or by averaging (`w / t` at every t);
//! - `cls_token` → every tokenizer's class token;
//! - `pos_embed` → the class position kept; the patch grid resized bilinearly (`scipy.ndimage.zoom`, order 1)
//!   to each tokenizer's grid (e.g. 14×14 → 24×24 image, → 50×8 audio), and for video the spatial grid tiled
//!   over time;
//! - `norm` → the shared final LayerNorm; `head` is not restored (heads keep their own init).

use super::checkpoint::HostTensor;
use super::config::{Modality, ModelConfig, Size};
use super::tokenizer::as_3d;
use std::collections::BTreeMap;

/// How a 2D patch kernel becomes a 3D tubelet kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inflation {
    /// The 2D kernel at temporal index `t // 2`, zeros elsewhere (the paper's default).
    Central,
    /// The 2D kernel divided by `t` at every temporal index (I3D inflation).
    Average,
}

fn t2(h: &HostTensor, name: &str) -> Result<HostTensor, String> {
    // torch Linear [out, in] → ours [in, out]
    if h.shape.len() != 2 {
        return Err(format!("`{name}` should be 2-D, is {:?}", h.shape));
    }
    let (o, i) = (h.shape[0], h.shape[1]);
    let mut data = vec![0.0; o * i];
    for r in 0..o {
        for c in 0..i {
            data[c * o + r] = h.data[r * i + c];
        }
    }
    Ok(HostTensor { shape: vec![i, o], data })
}

/// Bilinear resize of a `[gh, gw, D]` grid with `scipy.ndimage.zoom(order=1)` sampling
/// (output index `o` samples input coordinate `o · (in − 1) / (out − 1)`).
pub fn resize_grid(src: &[f32], gh: usize, gw: usize, d: usize, oh: usize, ow: usize) -> Vec<f32> {
    let coord = |o: usize, n_out: usize, n_in: usize| {
        if n_out <= 1 {
            0.0
        } else {
            o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64
        }
    };
    let mut out = vec![0.0f32; oh * ow * d];
    for y in 0..oh {
        let fy = coord(y, oh, gh);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(gh - 1);
        let wy = (fy - y0 as f64) as f32;
        for x in 0..ow {
            let fx = coord(x, ow, gw);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(gw - 1);
            let wx = (fx - x0 as f64) as f32;
            for c in 0..d {
                let at = |yy: usize, xx: usize| src[(yy * gw + xx) * d + c];
                let v = (1.0 - wy) * ((1.0 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1.0 - wx) * at(y1, x0) + wx * at(y1, x1));
                out[(y * ow + x) * d + c] = v;
            }
        }
    }
    out
}

/// What a timm ViT checkpoint is: the geometry read from its tensors' shapes (`weights.json` records it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VitInfo {
    /// Checkpoint naming scheme (`timm`).
    pub format: String,
    /// Hidden size D.
    pub dim: usize,
    /// Number of blocks L.
    pub depth: usize,
    /// MLP size.
    pub mlp: usize,
    /// Patch `[h, w]`.
    pub patch: [usize; 2],
    /// Input channels.
    pub channels: usize,
    /// Side of the square position grid it was trained with (14 for 224² at patch 16).
    pub grid: usize,
}

/// Whether a checkpoint of geometry `info` can initialise the model `cfg`: the same width, depth and MLP size,
/// and every tokenizer's spatial patch and channels as the checkpoint's patch embedding (the position grid is
/// resized, so any input size fits). `Err` says what differs and what to change.
pub fn fits(info: &VitInfo, cfg: &ModelConfig) -> Result<(), String> {
    let s = cfg.size;
    if (info.dim, info.depth, info.mlp) != (s.dim, s.depth, s.mlp) {
        let preset = ["Ti", "S", "B", "L"]
            .into_iter()
            .find(|n| Size::preset(n).is_some_and(|p| (p.dim, p.depth, p.mlp) == (info.dim, info.depth, info.mlp)));
        let mut todo = match preset {
            Some(n) => format!("set `size = \"{n}\"` (and no `dim`, `depth`, `mlp` overrides)"),
            None => format!("set `dim = {}`, `depth = {}`, `mlp = {}`", info.dim, info.depth, info.mlp),
        };
        // The heads must divide the width; a checkpoint does not record them (ViTs use 64 dimensions per head).
        if preset.is_none() && !info.dim.is_multiple_of(s.heads.max(1)) {
            let why = if info.dim.is_multiple_of(64) {
                format!("ViTs use 64 dimensions per head: `heads = {}`", info.dim / 64)
            } else {
                format!("e.g. `heads = {}`", (1..=s.heads).rev().find(|h| info.dim.is_multiple_of(*h)).unwrap_or(1))
            };
            todo.push_str(&format!(" and `heads` to a divisor of {} (the checkpoint does not record it; {why})", info.dim));
        }
        return Err(format!(
            "the checkpoint is a ViT of width {}, {} blocks, MLP {} (`patch_embed.proj.weight` [{}, …], `blocks.0` … `blocks.{}`), \
             the model width {}, {} blocks, MLP {}: if it is the wrong file, point the `weights` node's `path` at the \
             intended checkpoint; to start from this one, {todo}",
            info.dim,
            info.depth,
            info.mlp,
            info.dim,
            info.depth.saturating_sub(1),
            s.dim,
            s.depth,
            s.mlp
        ));
    }
    for (m, geo) in &cfg.geometry {
        let (_, patch) = as_3d(*m, geo);
        if patch[1..] != info.patch || geo.channels != info.channels {
            let [ph, pw] = info.patch;
            let set = match m {
                Modality::Video => format!("`video_patch = [{}, {ph}, {pw}]`", patch[0]),
                _ => format!("`{}_patch = [{ph}, {pw}]`", m.name()),
            };
            let set = if geo.channels == info.channels { set } else { format!("{set}, `channels = {}`", info.channels) };
            return Err(format!(
                "the {} tokenizer's patch is {:?}×{} channels, the checkpoint's {ph}×{pw}×{}: set {set}",
                m.name(),
                &patch[1..],
                geo.channels,
                info.channels
            ));
        }
    }
    Ok(())
}

/// The geometry of timm ViT tensors `src`, from the patch embedding, the position grid, the block count and the
/// first MLP (the shapes of the rest are checked when the `weights` node reads the file).
fn info_of(src: &BTreeMap<String, HostTensor>) -> Result<VitInfo, String> {
    let get = |k: &str| src.get(k).ok_or_else(|| format!("timm checkpoint lacks `{k}`"));
    let pw = get("patch_embed.proj.weight")?; // [D, C, ph, pw]
    let &[dim, channels, ph, pwid] = pw.shape.as_slice() else {
        return Err(format!("`patch_embed.proj.weight` is {:?}, expected [D, C, ph, pw]", pw.shape));
    };
    let pos = get("pos_embed")?; // [1, 1 + g*g, D]
    let n_pos = pos.shape.get(1).copied().unwrap_or(0).saturating_sub(1);
    let grid = (n_pos as f64).sqrt() as usize;
    if grid * grid != n_pos || n_pos == 0 || pos.shape.len() != 3 || pos.shape[2] != dim {
        return Err(format!("`pos_embed` is {:?}, expected [1, 1 + g², {dim}] (a class token and a square grid)", pos.shape));
    }
    let depth = (0..).take_while(|i| src.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
    let mlp = get("blocks.0.mlp.fc1.weight")?.shape.first().copied().unwrap_or(0);
    Ok(VitInfo { format: "timm".into(), dim, depth, mlp, patch: [ph, pwid], channels, grid })
}

/// Maps a timm ViT state dict onto `cfg`'s parameter names. Returns our named tensors (heads excluded).
pub fn from_timm(
    src: &BTreeMap<String, HostTensor>,
    cfg: &ModelConfig,
    inflation: Inflation,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let get = |k: &str| src.get(k).ok_or_else(|| format!("timm checkpoint lacks `{k}`"));
    let d = cfg.size.dim;
    let info = info_of(src)?;
    fits(&info, cfg)?;
    let mut out = BTreeMap::new();
    let pw = get("patch_embed.proj.weight")?; // [D, C, ph, pw]
    let (c_in, kh, kw) = (info.channels, info.patch[0], info.patch[1]);
    let pos = get("pos_embed")?; // [1, 1 + g*g, D]
    let g = info.grid;
    for (ti, (m, geo)) in cfg.geometry.iter().enumerate() {
        let (input, patch) = as_3d(*m, geo);
        let pt = patch[0];
        let plen = c_in * pt * kh * kw;
        // Ours: [plen, D] with patch order (c, t, h, w).
        let mut w = vec![0.0f32; plen * d];
        for o in 0..d {
            for c in 0..c_in {
                for t in 0..pt {
                    let scale = match (*m, inflation) {
                        (Modality::Video, Inflation::Central) => {
                            if t == pt / 2 {
                                1.0
                            } else {
                                0.0
                            }
                        }
                        (Modality::Video, Inflation::Average) => 1.0 / pt as f32,
                        _ => 1.0,
                    };
                    for y in 0..kh {
                        for x in 0..kw {
                            let src_i = ((o * c_in + c) * kh + y) * kw + x;
                            let row = ((c * pt + t) * kh + y) * kw + x;
                            w[row * d + o] = pw.data[src_i] * scale;
                        }
                    }
                }
            }
        }
        let p = format!("tokenizers.{ti}");
        out.insert(format!("{p}.embed.weight"), HostTensor { shape: vec![plen, d], data: w });
        out.insert(format!("{p}.embed.bias"), get("patch_embed.proj.bias")?.clone());
        out.insert(format!("{p}.cls"), HostTensor { shape: vec![1, 1, d], data: get("cls_token")?.data.clone() });
        let (gt, gh, gw) = (input[0] / patch[0], input[1] / patch[1], input[2] / patch[2]);
        let grid = resize_grid(&pos.data[d..], g, g, d, gh, gw);
        let mut data = pos.data[..d].to_vec();
        for _ in 0..gt {
            data.extend_from_slice(&grid); // temporal tiling (gt = 1 for 2D)
        }
        out.insert(format!("{p}.pos"), HostTensor { shape: vec![1, 1 + gt * gh * gw, d], data });
    }
    for i in 0..cfg.size.depth {
        let targets: Vec<String> = if i >= cfg.l_adapt {
            vec![format!("blocks.{}", i - cfg.l_adapt)]
        } else {
            (0..cfg.geometry.len()).map(|t| format!("tokenizers.{t}.adapters.{i}")).collect()
        };
        let s = format!("blocks.{i}");
        for tgt in targets {
            for (ours, theirs) in [("norm1", "norm1"), ("norm2", "norm2")] {
                out.insert(format!("{tgt}.{ours}.gamma"), get(&format!("{s}.{theirs}.weight"))?.clone());
                out.insert(format!("{tgt}.{ours}.beta"), get(&format!("{s}.{theirs}.bias"))?.clone());
            }
            for (ours, theirs) in [("qkv", "attn.qkv"), ("proj", "attn.proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")] {
                let wname = format!("{s}.{theirs}.weight");
                out.insert(format!("{tgt}.{ours}.weight"), t2(get(&wname)?, &wname)?);
                out.insert(format!("{tgt}.{ours}.bias"), get(&format!("{s}.{theirs}.bias"))?.clone());
            }
        }
    }
    out.insert("norm.gamma".into(), get("norm.weight")?.clone());
    out.insert("norm.beta".into(), get("norm.bias")?.clone());
    Ok(out)
}

/// The timm head (`head.weight [C, D]`, `head.bias`) as our head `idx`, if present.
pub fn timm_head(src: &BTreeMap<String, HostTensor>, idx: usize) -> Result<Option<(String, HostTensor, String, HostTensor)>, String> {
    match (src.get("head.weight"), src.get("head.bias")) {
        (Some(w), Some(b)) => Ok(Some((format!("heads.{idx}.weight"), t2(w, "head.weight")?, format!("heads.{idx}.bias"), b.clone()))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn resize_identity_and_corners() {
        let src: Vec<f32> = (0..4).map(|x| x as f32).collect(); // 2×2×1
        assert_eq!(resize_grid(&src, 2, 2, 1, 2, 2), src);
        let up = resize_grid(&src, 2, 2, 1, 3, 3);
        assert_eq!(up[0], 0.0);
        assert_eq!(up[8], 3.0);
        assert_eq!(up[4], 1.5);
    }
}
