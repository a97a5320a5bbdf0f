//! Building a tokenizer for a modality a model never saw from one it did (the paper's linear-probe rules,
//! `initialize_from_polyvit_train_state`), on host tensors:
//!
//! - 2D → 2D (image ↔ audio): kernel copied; positional grid resized bilinearly;
//! - 2D → 3D: kernel placed at temporal index `t // 2` of a zero tubelet kernel; the 2D positional grid
//!   (resized to the frame grid) tiled over time;
//! - 3D → 2D: kernel summed over time; positional embedding averaged over the temporal slots, then resized.
//!
//! The class token and the adapter blocks are copied.

use super::checkpoint::HostTensor;
use super::config::{Geometry, Modality};
use super::import::resize_grid;
use super::tokenizer::as_3d;
use std::collections::BTreeMap;

/// Whether the encoder of a trained model `old` can start model `new` (shared blocks, the final norm, and the
/// tokenizers of the modalities both have, loaded by name): the same width, depth, heads, MLP and `L_adapt`, and
/// for each modality both have the same patch, channels and input size (its position embedding). `Err` says
/// what differs and what to set. Without this a deeper model loaded the shallower one's blocks and left the
/// rest at their initialisation without a word.
pub fn encoder_fits(old: &super::ModelConfig, new: &super::ModelConfig) -> Result<(), String> {
    let (o, n) = (old.size, new.size);
    if (o.dim, o.depth, o.heads, o.mlp) != (n.dim, n.depth, n.heads, n.mlp) {
        return Err(format!(
            "it is a ViT of width {}, {} blocks, {} heads, MLP {}; this model has width {}, {} blocks, {} heads, MLP {}: \
             give it the same `size` (or `dim`, `depth`, `heads`, `mlp`)",
            o.dim, o.depth, o.heads, o.mlp, n.dim, n.depth, n.heads, n.mlp
        ));
    }
    if old.l_adapt != new.l_adapt {
        return Err(format!(
            "it has {} adapter blocks per modality, this model {}: set `l_adapt = {}`",
            old.l_adapt, new.l_adapt, old.l_adapt
        ));
    }
    for (m, g) in &new.geometry {
        let Some(og) = old.geometry(*m) else { continue };
        if og.patch != g.patch {
            return Err(format!(
                "its {} tokenizer has patch {:?}, this model's {:?}: set `{}_patch = {:?}`",
                m.name(),
                og.patch,
                g.patch,
                m.name(),
                og.patch
            ));
        }
        if og.channels != g.channels {
            return Err(format!(
                "its {} tokenizer takes {} channels, this model's {}: set `channels = {}`",
                m.name(),
                og.channels,
                g.channels,
                og.channels
            ));
        }
        if og.input != g.input {
            return Err(format!(
                "its {} tokenizer was built for inputs {:?}, this model's are {:?} (its position embedding would not \
                 fit): prepare this task's data at the same size",
                m.name(),
                og.input,
                g.input
            ));
        }
    }
    Ok(())
}

/// Copies tokenizer `src_idx` (modality `sm`, geometry `sg`) of `weights` into tokenizer `dst_idx` for
/// modality `dm` with geometry `dg`, under names `tokenizers.{dst_idx}.…` of the returned map.
pub fn transfer(
    weights: &BTreeMap<String, HostTensor>,
    src_idx: usize,
    sm: Modality,
    sg: &Geometry,
    dst_idx: usize,
    dm: Modality,
    dg: &Geometry,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let (_, sp) = as_3d(sm, sg);
    let (di, dp) = as_3d(dm, dg);
    if sp[1..] != dp[1..] || sg.channels != dg.channels {
        return Err(format!("cannot build a {} tokenizer with patch {:?}×{}ch from a {} tokenizer with patch {:?}×{}ch: spatial patch and channels must match", dm.name(), dp, dg.channels, sm.name(), sp, sg.channels));
    }
    let sname = |k: &str| format!("tokenizers.{src_idx}.{k}");
    let get = |k: &str| weights.get(&sname(k)).ok_or_else(|| format!("checkpoint lacks `{}`", sname(k)));
    let w = get("embed.weight")?; // [c·st·h·w, D]
    let d = w.shape[1];
    let (c, st, ph, pw) = (sg.channels, sp[0], sp[1], sp[2]);
    let dt = dp[0];
    let plane = ph * pw;
    // To 2D kernel [c, h, w, D]: sum over source time.
    let mut k2 = vec![0f32; c * plane * d];
    for ci in 0..c {
        for t in 0..st {
            for p in 0..plane {
                for o in 0..d {
                    k2[(ci * plane + p) * d + o] += w.data[((ci * st + t) * plane + p) * d + o];
                }
            }
        }
    }
    // To the target time extent: central frame.
    let mut kd = vec![0f32; c * dt * plane * d];
    for ci in 0..c {
        for p in 0..plane {
            for o in 0..d {
                kd[((ci * dt + dt / 2) * plane + p) * d + o] = k2[(ci * plane + p) * d + o];
            }
        }
    }
    let mut out = BTreeMap::new();
    let dname = |k: &str| format!("tokenizers.{dst_idx}.{k}");
    out.insert(dname("embed.weight"), HostTensor { shape: vec![c * dt * plane, d], data: kd });
    out.insert(dname("embed.bias"), get("embed.bias")?.clone());
    out.insert(dname("cls"), get("cls")?.clone());
    // Positional embedding: average the source's temporal slots → 2D grid → resize → tile.
    let pos = get("pos")?;
    let (si, _) = as_3d(sm, sg);
    let (sgt, sgh, sgw) = (si[0] / sp[0], si[1] / sp[1], si[2] / sp[2]);
    let (dgt, dgh, dgw) = (di[0] / dp[0], di[1] / dp[1], di[2] / dp[2]);
    let mut grid = vec![0f32; sgh * sgw * d];
    for t in 0..sgt {
        let frame = &pos.data[d + t * sgh * sgw * d..][..sgh * sgw * d];
        for (g, p) in grid.iter_mut().zip(frame) {
            *g += p / sgt as f32;
        }
    }
    let resized = resize_grid(&grid, sgh, sgw, d, dgh, dgw);
    let mut pd = pos.data[..d].to_vec();
    for _ in 0..dgt {
        pd.extend_from_slice(&resized);
    }
    out.insert(dname("pos"), HostTensor { shape: vec![1, 1 + dgt * dgh * dgw, d], data: pd });
    let prefix = format!("tokenizers.{src_idx}.adapters.");
    for (k, v) in weights {
        if let Some(rest) = k.strip_prefix(&prefix) {
            out.insert(format!("tokenizers.{dst_idx}.adapters.{rest}"), v.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod fit_tests {
    use super::encoder_fits;
    use crate::model::ModelConfig;

    fn cfg(depth: usize, l_adapt: usize, input: [usize; 2]) -> ModelConfig {
        serde_json::from_value(serde_json::json!({
            "size": {"dim": 8, "depth": depth, "heads": 2, "mlp": 16}, "l_adapt": l_adapt,
            "geometry": [["image", {"channels": 3, "input": input, "patch": [2, 2]}]],
            "tasks": [], "gelu_tanh": true, "ln_eps": 1e-6
        }))
        .unwrap()
    }

    #[test]
    fn a_trained_encoder_fits_only_a_model_of_its_shape() {
        assert_eq!(encoder_fits(&cfg(2, 0, [4, 4]), &cfg(2, 0, [4, 4])), Ok(()));
        assert!(encoder_fits(&cfg(1, 0, [4, 4]), &cfg(2, 0, [4, 4])).unwrap_err().contains("1 blocks"));
        assert!(encoder_fits(&cfg(2, 1, [4, 4]), &cfg(2, 0, [4, 4])).unwrap_err().contains("set `l_adapt = 1`"));
        assert!(encoder_fits(&cfg(2, 0, [8, 8]), &cfg(2, 0, [4, 4])).unwrap_err().contains("position embedding"));
        let mut grey = cfg(2, 0, [4, 4]);
        grey.geometry[0].1.channels = 1;
        assert!(encoder_fits(&cfg(2, 0, [4, 4]), &grey).unwrap_err().contains("takes 3 channels, this model's 1: set `channels = 3`"));
        // A modality the trained model never saw is no obstacle (its tokenizer starts fresh).
        let mut audio = cfg(2, 0, [4, 4]);
        audio.geometry[0].0 = crate::model::Modality::Audio;
        assert_eq!(encoder_fits(&cfg(2, 0, [8, 8]), &audio), Ok(()));
    }
}
