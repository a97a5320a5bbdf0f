//! Parameter accounting from a config alone (Table 2's #Params), per component.

use super::config::ModelConfig;
use serde::Serialize;

/// Parameter counts per component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Patch/tubelet embeddings, class tokens and positional embeddings of every modality.
    pub tokenizers: u64,
    /// Modality-specific adapter blocks.
    pub adapters: u64,
    /// Shared blocks plus the final LayerNorm.
    pub shared_encoder: u64,
    /// Task heads.
    pub heads: u64,
    /// Sum.
    pub total: u64,
}

/// Parameters of one pre-LN block: 2 LayerNorms, fused qkv, output projection, 2-layer MLP.
pub fn block_params(d: u64, mlp: u64) -> u64 {
    2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
}

/// Counts `cfg`'s parameters.
pub fn count(cfg: &ModelConfig) -> ParamCount {
    let d = cfg.size.dim as u64;
    let block = block_params(d, cfg.size.mlp as u64);
    let mut tokenizers = 0;
    let mut adapters = 0;
    for (_, g) in &cfg.geometry {
        let embed = g.patch_len() as u64 * d + d;
        let cls = d;
        let pos = (g.tokens() as u64 + 1) * d;
        tokenizers += embed + cls + pos;
        adapters += cfg.l_adapt as u64 * block;
    }
    let shared_encoder = (cfg.size.depth - cfg.l_adapt) as u64 * block + 2 * d;
    let heads = cfg.tasks.iter().map(|t| (d + 1) * t.classes as u64).sum();
    ParamCount { tokenizers, adapters, shared_encoder, heads, total: tokenizers + adapters + shared_encoder + heads }
}

#[cfg(test)]
mod tests {
    use super::super::config::*;
    use super::*;

    /// The paper's geometry: B/16, image 384², audio 800×128, video 32×224² with 4×16×16 tubelets, 9 heads.
    pub fn paper(l_adapt: usize) -> ModelConfig {
        let heads = [
            (1000, Modality::Image),
            (10, Modality::Image),
            (100, Modality::Image),
            (37, Modality::Image),
            (45, Modality::Image),
            (400, Modality::Video),
            (339, Modality::Video),
            (309, Modality::Audio),
            (527, Modality::Audio),
        ];
        ModelConfig {
            size: Size::preset("B").unwrap(),
            l_adapt,
            geometry: vec![
                (Modality::Image, Geometry { channels: 3, input: vec![384, 384], patch: vec![16, 16] }),
                (Modality::Audio, Geometry { channels: 3, input: vec![800, 128], patch: vec![16, 16] }),
                (Modality::Video, Geometry { channels: 3, input: vec![32, 224, 224], patch: vec![4, 16, 16] }),
            ],
            tasks: heads
                .iter()
                .enumerate()
                .map(|(i, (c, m))| TaskHead { name: format!("t{i}"), modality: *m, classes: *c, init: HeadInit::Zero })
                .collect(),
            gelu_tanh: true,
            ln_eps: 1e-6,
        }
    }

    #[test]
    fn paper_counts() {
        assert_eq!(block_params(768, 3072), 7_087_872);
        let c0 = count(&paper(0));
        assert_eq!(c0.total, 92_683_471);
        assert_eq!(c0.heads, 2_127_823);
        assert_eq!(c0.tokenizers, 1_034_496 + 899_328 + 3_565_824);
        assert_eq!(count(&paper(6)).total, 177_737_935);
        assert_eq!(paper(0).geometry(Modality::Video).unwrap().tokens() + 1, 1569);
    }
}
