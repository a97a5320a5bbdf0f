//! Modality tokenizers: non-overlapping patch (2D) or tubelet (3D) embedding, a class token, a learned
//! positional embedding, then `L_adapt` modality-specific blocks.
//!
//! Every input is handled as 5D `[B, C, T, H, W]`; images and spectrograms have `T = 1` (a spectrogram is
//! `[B, C, 1, time, mel]`, time first). Patches are flattened in `(c, t, h, w)` order, the order of a PyTorch
//! conv kernel `[D, C, t, h, w]`, so a conv weight loads by reshaping. Tokens are ordered time-major
//! `(t, h, w)`, as in ViViT.

use super::block::{Block, DropMasks};
use super::config::{Geometry, Modality};
use super::init::{param, zeros, Init};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// One modality's tokenizer.
#[derive(Module, Debug)]
pub struct Tokenizer<B: Backend> {
    /// Patch embedding as a linear map `[C·t·h·w, D]` (equivalent to a conv with kernel = stride).
    pub embed: Linear<B>,
    /// Class token `[1, 1, D]`.
    pub cls: Param<Tensor<B, 3>>,
    /// Positional embedding `[1, N + 1, D]` (the class token has one too).
    pub pos: Param<Tensor<B, 3>>,
    /// Modality-specific blocks.
    pub adapters: Vec<Block<B>>,
    /// Input channels.
    pub channels: usize,
    /// Patch along time (1 for 2D modalities).
    pub pt: usize,
    /// Patch along height (or spectrogram time).
    pub ph: usize,
    /// Patch along width (or mel).
    pub pw: usize,
}

/// `(input [T, H, W], patch [t, h, w])` of a geometry, 2D ones lifted to 3D.
pub fn as_3d(m: Modality, g: &Geometry) -> ([usize; 3], [usize; 3]) {
    if m == Modality::Video {
        ([g.input[0], g.input[1], g.input[2]], [g.patch[0], g.patch[1], g.patch[2]])
    } else {
        ([1, g.input[0], g.input[1]], [1, g.patch[0], g.patch[1]])
    }
}

impl<B: Backend> Tokenizer<B> {
    /// A fresh tokenizer: LeCun-normal patch kernel (Flax conv default), zero bias, zero class token,
    /// N(0, 0.02) positional embedding.
    pub fn new(m: Modality, g: &Geometry, dim: usize, adapters: Vec<Block<B>>, init: &mut Init, device: &B::Device) -> Self {
        let (_, p) = as_3d(m, g);
        let plen = g.patch_len();
        Tokenizer {
            embed: Linear { weight: param(init.lecun_normal(plen, plen * dim), [plen, dim], device), bias: Some(zeros([dim], device)) },
            cls: zeros([1, 1, dim], device),
            pos: param(init.normal(0.02, (g.tokens() + 1) * dim), [1, g.tokens() + 1, dim], device),
            adapters,
            channels: g.channels,
            pt: p[0],
            ph: p[1],
            pw: p[2],
        }
    }

    /// Patches of a batch.
    ///
    /// # Shapes
    /// `x: [B, C, T, H, W]` → `[B, (T/t)(H/h)(W/w), C·t·h·w]`
    pub fn patchify(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        let [b, c, t, h, w] = x.dims();
        let x = if c == 1 && self.channels > 1 { x.repeat_dim(1, self.channels) } else { x }; // grey → C channels
        let c = self.channels;
        let (gt, gh, gw) = (t / self.pt, h / self.ph, w / self.pw);
        let x: Tensor<B, 8> = x.reshape([b, c, gt, self.pt, gh, self.ph, gw, self.pw]);
        let x = x.permute([0, 2, 4, 6, 1, 3, 5, 7]); // [B, gt, gh, gw, C, t, h, w]
        x.reshape([b, gt * gh * gw, c * self.pt * self.ph * self.pw])
    }

    /// Tokens with class token and positions, through the adapters.
    ///
    /// # Shapes
    /// `x: [B, C, T, H, W]` → `[B, N + 1, D]`
    pub fn forward(&self, x: Tensor<B, 5>, masks: &[Option<DropMasks<B>>]) -> Tensor<B, 3> {
        let tokens = super::gpu_fused::linear(&self.embed, self.patchify(x)); // [B, N, D]
        let [b, _, d] = tokens.dims();
        let cls = self.cls.val().expand([b as i64, 1, d as i64]); // [B, 1, D]
        let n1 = tokens.dims()[1] + 1;
        // The positions added as one row per example ([B, (N+1)·D] + [1, (N+1)·D]): burn's CPU backend broadcasts
        // that shape with a fast path, where the 3-d broadcast went through its generic strided iterator (perf:
        // 1.5 % of inference). The same sums.
        let x = Tensor::cat(vec![cls, tokens], 1).reshape([b, n1 * d]) + self.pos.val().reshape([1, n1 * d]);
        let mut x: Tensor<B, 3> = x.reshape([b, n1, d]); // [B, N+1, D]
        for (i, blk) in self.adapters.iter().enumerate() {
            x = blk.forward(x, masks.get(i).and_then(|m| m.as_ref()));
        }
        x
    }
}
