//! PolyViT: per-modality tokenizers (+ adapters), shared blocks, one shared final LayerNorm, one linear head
//! per task on the class token.

use super::block::{Arith, Block, DropMasks};
use super::config::{HeadInit, ModelConfig};
use super::init::{param, zeros, Init};
use super::tokenizer::Tokenizer;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{backend::Backend, Tensor};

/// The model. Tokenizers are in `cfg.modalities()` order; heads in `cfg.tasks` order.
#[derive(Module, Debug)]
pub struct PolyVit<B: Backend> {
    /// One per modality.
    pub tokenizers: Vec<Tokenizer<B>>,
    /// Shared blocks `L_adapt … L−1`.
    pub blocks: Vec<Block<B>>,
    /// Shared final LayerNorm (`encoder_norm`).
    pub norm: LayerNorm<B>,
    /// One linear head per task.
    pub heads: Vec<Linear<B>>,
    /// Total depth L (for the stochastic-depth ramp).
    pub depth: usize,
}

/// Which tokenizer and head a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Tokenizer index.
    pub tokenizer: usize,
    /// Head index.
    pub head: usize,
}

impl<B: Backend> PolyVit<B> {
    /// A freshly initialised model (host-side seeded init: identical on every backend).
    pub fn new(cfg: &ModelConfig, seed: u64, device: &B::Device) -> Self {
        let s = cfg.size;
        let mut init = Init::new(seed);
        let blk = |init: &mut Init| Block::new(s.dim, s.heads, s.mlp, cfg.ln_eps, cfg.gelu_tanh, init, device);
        let tokenizers = cfg
            .geometry
            .iter()
            .map(|(m, g)| {
                let mut ti = init.fork();
                let adapters = (0..cfg.l_adapt).map(|_| blk(&mut ti)).collect();
                Tokenizer::new(*m, g, s.dim, adapters, &mut ti, device)
            })
            .collect();
        let mut bi = init.fork();
        let blocks = (cfg.l_adapt..s.depth).map(|_| blk(&mut bi)).collect();
        let mut hi = init.fork();
        let heads = cfg
            .tasks
            .iter()
            .map(|t| {
                let w = match t.init {
                    HeadInit::Zero => vec![0.0; s.dim * t.classes],
                    HeadInit::LecunNormal => hi.lecun_normal(s.dim, s.dim * t.classes),
                };
                Linear { weight: param(w, [s.dim, t.classes], device), bias: Some(zeros([t.classes], device)) }
            })
            .collect();
        PolyVit { tokenizers, blocks, norm: LayerNormConfig::new(s.dim).with_epsilon(cfg.ln_eps).init(device), heads, depth: s.depth }
    }

    /// Sets the arithmetic of every block's (adapters included) matrix products ([`Arith`]). Weights stay f32 (in
    /// bf16/f16 on the GPU backends the flat optimizer may hand the products half working copies of them:
    /// [`PolyVit::product_params`]).
    pub fn set_arith(&mut self, arith: Arith) {
        for b in self.tokenizers.iter_mut().flat_map(|t| t.adapters.iter_mut()).chain(self.blocks.iter_mut()) {
            b.arith = arith;
        }
    }

    /// The parameters of every block's (adapters included) matrix products ([`Block::product_params`]): those
    /// that run in the half type under bf16/f16.
    pub fn product_params(&self) -> Vec<burn::module::ParamId> {
        self.tokenizers.iter().flat_map(|t| t.adapters.iter()).chain(self.blocks.iter()).flat_map(Block::product_params).collect()
    }

    /// Turns activation checkpointing of every block (adapters included) on or off: the fused CPU block then
    /// recomputes its activations in the backward pass instead of keeping them.
    pub fn set_recompute(&mut self, on: bool) {
        for b in self.tokenizers.iter_mut().flat_map(|t| t.adapters.iter_mut()).chain(self.blocks.iter_mut()) {
            b.recompute = on;
        }
    }

    /// Route of task `task` under `cfg`.
    pub fn route(cfg: &ModelConfig, task: usize) -> Route {
        let m = cfg.tasks[task].modality;
        Route { tokenizer: cfg.modalities().iter().position(|x| *x == m).expect("tokenizer for task"), head: task }
    }

    /// Class-token features after the final norm (what heads and linear probes read).
    /// `masks[l]` are the stochastic-depth masks of layer `l` (global index; empty = off).
    ///
    /// # Shapes
    /// `x: [B, C, T, H, W]` → `[B, D]`
    pub fn features(&self, tokenizer: usize, x: Tensor<B, 5>, masks: &[Option<DropMasks<B>>]) -> Tensor<B, 2> {
        let tok = &self.tokenizers[tokenizer];
        let n_adapt = tok.adapters.len();
        let mut h = tok.forward(x, masks); // [B, N+1, D]
        if let (true, Some(eps)) = (super::gpu_fused::token_rows::<B>(), self.blocks.first().map(|b| b.eps)) {
            // GPU backends: the blocks on the tokens as rows (no reshape around each linear layer), and the final
            // norm on the class tokens only (LayerNorm acts on each row alone: their values are the same).
            let [b, n, d] = h.dims();
            let mut rows = h.reshape([b * n, d]); // [B·(N+1), D]
            for (i, blk) in self.blocks.iter().enumerate() {
                rows = blk.forward_rows(rows, b, masks.get(n_adapt + i).and_then(|m| m.as_ref()));
            }
            let cls = rows.reshape([b, n * d]).narrow(1, 0, d); // [B, D], rows (N+1)·D apart
            return super::gpu_fused::layer_norm(&self.norm, cls, eps);
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            h = blk.forward(h, masks.get(n_adapt + i).and_then(|m| m.as_ref()));
        }
        // The final norm on the class tokens only (LayerNorm acts on each row alone: their values are the same;
        // on the CPU burn composes it of row-broadcast passes on one thread: perf found them in a ViT-Ti step
        // when it ran over all tokens). The GPU kernels take ε from the caller (burn's LayerNorm keeps its own private): the
        // final norm is built with the blocks' ε (`cfg.ln_eps`, both in `new`), so theirs is its.
        let [b, _, d] = h.dims();
        let cls = h.narrow(1, 0, 1).reshape([b, d]); // [B, D]
        match self.blocks.first() {
            Some(blk) => super::gpu_fused::layer_norm(&self.norm, cls, blk.eps),
            None => self.norm.forward(cls),
        }
    }

    /// Logits of one task.
    ///
    /// # Shapes
    /// `x: [B, C, T, H, W]` → `[B, classes]`
    pub fn forward(&self, route: Route, x: Tensor<B, 5>, masks: &[Option<DropMasks<B>>]) -> Tensor<B, 2> {
        // On the GPU backends the linear node (`gpu_fused::linear`: its backward one operation); burn's `linear` on the CPU.
        super::gpu_fused::linear(&self.heads[route.head], self.features(route.tokenizer, x, masks))
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::*;
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;

    type B = Autodiff<Flex>;

    pub fn tiny() -> ModelConfig {
        ModelConfig {
            size: Size { dim: 16, depth: 2, heads: 2, mlp: 32 },
            l_adapt: 0,
            geometry: vec![
                (Modality::Image, Geometry { channels: 3, input: vec![8, 8], patch: vec![4, 4] }),
                (Modality::Audio, Geometry { channels: 1, input: vec![8, 16], patch: vec![4, 8] }),
                (Modality::Video, Geometry { channels: 3, input: vec![4, 8, 8], patch: vec![2, 4, 4] }),
            ],
            tasks: vec![
                TaskHead { name: "img".into(), modality: Modality::Image, classes: 5, init: HeadInit::LecunNormal },
                TaskHead { name: "img2".into(), modality: Modality::Image, classes: 3, init: HeadInit::LecunNormal },
                TaskHead { name: "aud".into(), modality: Modality::Audio, classes: 4, init: HeadInit::Zero },
                TaskHead { name: "vid".into(), modality: Modality::Video, classes: 2, init: HeadInit::Zero },
            ],
            gelu_tanh: true,
            ln_eps: 1e-6,
        }
    }

    #[test]
    fn shapes_per_modality_and_param_count() {
        let cfg = tiny();
        let dev = Default::default();
        let m = PolyVit::<Flex>::new(&cfg, 0, &dev);
        assert_eq!(m.num_params() as u64, super::super::count::count(&cfg).total);
        let img = Tensor::<Flex, 5>::zeros([2, 1, 1, 8, 8], &dev);
        assert_eq!(m.forward(PolyVit::<Flex>::route(&cfg, 0), img, &[]).dims(), [2, 5]);
        let aud = Tensor::<Flex, 5>::zeros([3, 1, 1, 8, 16], &dev);
        assert_eq!(m.forward(PolyVit::<Flex>::route(&cfg, 2), aud, &[]).dims(), [3, 4]);
        let vid = Tensor::<Flex, 5>::zeros([2, 3, 4, 8, 8], &dev);
        assert_eq!(m.forward(PolyVit::<Flex>::route(&cfg, 3), vid, &[]).dims(), [2, 2]);
    }

    #[test]
    fn gradients_reach_shared_layers_own_tokenizer_and_own_head_only() {
        let _one = crate::train::run::autodiff_guard();
        let cfg = tiny();
        let dev = Default::default();
        let m = PolyVit::<B>::new(&cfg, 0, &dev);
        let x = Tensor::<B, 5>::random([2, 1, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        let loss = m.forward(PolyVit::<B>::route(&cfg, 0), x, &[]).sum();
        let g = loss.backward();
        let has = |p: &burn::module::Param<Tensor<B, 2>>| p.grad(&g).is_some();
        assert!(has(&m.blocks[0].qkv.weight) && has(&m.blocks[1].fc2.weight));
        assert!(has(&m.tokenizers[0].embed.weight));
        assert!(has(&m.heads[0].weight));
        assert!(!has(&m.heads[1].weight), "another image task's head");
        assert!(!has(&m.heads[2].weight) && !has(&m.tokenizers[1].embed.weight), "audio parts");
        assert!(!has(&m.tokenizers[2].embed.weight), "video tokenizer");
        let _ = m.valid();
    }
}
