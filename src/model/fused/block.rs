//! The pre-LN ViT block (LayerNorm → fused-QKV attention → residual, LayerNorm → tanh-GELU MLP → residual)
//! forward and backward on host slices, with the activations the backward pass needs.
//!
//! The same function as [`crate::model::block::Block::forward`] with `gelu_tanh = true` (unit test in
//! `super`), written as whole-block kernels: one pass per LayerNorm/GELU, attention per (example, head)
//! straight out of the fused `qkv` rows (no reshapes or permuted copies), rows in parallel.

use super::kernels::{self as k, Mat};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Block geometry: `b` examples of `n` tokens of width `d`, `h` heads, MLP width `mlp`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Examples.
    pub b: usize,
    /// Tokens per example.
    pub n: usize,
    /// Width.
    pub d: usize,
    /// Heads.
    pub h: usize,
    /// MLP width.
    pub mlp: usize,
    /// LayerNorm ε.
    pub eps: f32,
    /// Arithmetic of the matrix products: projections, MLP and the per-head attention products (as PyTorch's
    /// autocast; at 65 tokens the attention products in bf16 still took a bf16 training step ~4 % less CPU
    /// time than in f32, conversions included: perf, Zen 4). LayerNorm, softmax, GELU and residuals are
    /// computed in f32; in bf16 the layers' inputs are kept in bf16 (`Input`).
    pub prec: k::Precision,
}

impl Dims {
    fn rows(&self) -> usize {
        self.b * self.n
    }
    fn hd(&self) -> usize {
        self.d / self.h
    }
}

/// The block's parameters, row-major, burn's `Linear` layout (`w: [in, out]`).
#[derive(Clone, Copy)]
pub struct Params<'a> {
    /// LayerNorm 1 scale, shift `[d]`.
    pub ln1: (&'a [f32], &'a [f32]),
    /// QKV `[d, 3d]`, `[3d]`.
    pub qkv: (&'a [f32], &'a [f32]),
    /// Output projection `[d, d]`, `[d]`.
    pub proj: (&'a [f32], &'a [f32]),
    /// LayerNorm 2 scale, shift `[d]`.
    pub ln2: (&'a [f32], &'a [f32]),
    /// MLP in `[d, mlp]`, `[mlp]`.
    pub fc1: (&'a [f32], &'a [f32]),
    /// MLP out `[mlp, d]`, `[d]`.
    pub fc2: (&'a [f32], &'a [f32]),
}

/// Activations kept for the backward pass.
#[derive(Debug, Default)]
pub struct Saved {
    mean1: Vec<f32>,
    rstd1: Vec<f32>,
    xn1: Input,
    qkv: Input,
    probs: Vec<f32>,
    att: Input,
    x1: Vec<f32>,
    mean2: Vec<f32>,
    rstd2: Vec<f32>,
    xn2: Input,
    pre: Vec<f32>,
    act: Input,
}

/// The input of a projection or MLP layer (`[rows, width]`), or the `qkv` rows the attention products read:
/// f32, or, when the products run in bf16, its bf16 bits, written so by the kernel that produces it
/// (LayerNorm, GELU; the attention output and `qkv` are converted after the products that make them) and kept
/// so for the backward pass, as autocast keeps a bf16 layer's input. The same bits as converting the f32
/// values at each product, half the memory, and one conversion instead of one per product.
#[derive(Debug)]
enum Input {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
}

impl Default for Input {
    fn default() -> Self {
        Input::F32(Vec::new())
    }
}

impl Input {
    /// `v` as the input of layers at precision `prec`.
    fn new(v: Vec<f32>, prec: k::Precision) -> Self {
        match prec {
            k::Precision::F32 => Input::F32(v),
            k::Precision::Bf16 => Input::Bf16(k::to_bf16_vec(&v)),
        }
    }

    /// `x · w + b` for this input `[m, kk]` (see [`k::linear`]).
    fn linear(&self, (w, b): (&[f32], &[f32]), m: usize, kk: usize, n: usize, prec: k::Precision) -> Vec<f32> {
        match self {
            Input::F32(x) => k::linear(x, w, b, m, kk, n, prec),
            Input::Bf16(x) => k::linear16(x, w, b, m, kk, n),
        }
    }

    /// Backward of [`Input::linear`] (see [`k::linear_backward`]).
    fn linear_backward(&self, w: &[f32], dy: &[f32], m: usize, kk: usize, n: usize, prec: k::Precision) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        match self {
            Input::F32(x) => k::linear_backward(x, w, dy, m, kk, n, prec),
            Input::Bf16(x) => k::linear_backward16(x, w, dy, m, kk, n),
        }
    }
}

/// LayerNorm of `x` as the input of layers at precision `prec`, with its mean and 1/std.
fn layer_norm(x: &[f32], (g, b): (&[f32], &[f32]), d: usize, eps: f32, prec: k::Precision) -> (Input, Vec<f32>, Vec<f32>) {
    match prec {
        k::Precision::F32 => {
            let (y, mean, rstd) = k::layer_norm(x, g, b, d, eps);
            (Input::F32(y), mean, rstd)
        }
        k::Precision::Bf16 => {
            let (y, mean, rstd) = k::layer_norm_bf16(x, g, b, d, eps);
            (Input::Bf16(y), mean, rstd)
        }
    }
}

/// Gradients of the parameters, in [`Params`] order: `[ln1 γ, ln1 β, qkv w, qkv b, proj w, proj b,
/// ln2 γ, ln2 β, fc1 w, fc1 b, fc2 w, fc2 b]`.
pub type ParamGrads = [Vec<f32>; 12];

/// Scales every row of example `i` of `x: [b·n, d]` by `keep[i]` (stochastic depth).
fn scale_examples(x: &mut [f32], keep: &[f32], per_example: usize) {
    x.par_chunks_mut(per_example).zip(keep).for_each(|(c, &s)| {
        if s != 1.0 {
            c.iter_mut().for_each(|v| *v *= s);
        }
    });
}

/// `x` with every example scaled by its stochastic-depth mask, copied only when there are masks.
fn masked<'a>(x: &'a [f32], keep: Option<&[f32]>, per_example: usize) -> std::borrow::Cow<'a, [f32]> {
    match keep {
        Some(k) => {
            let mut v = x.to_vec();
            scale_examples(&mut v, k, per_example);
            std::borrow::Cow::Owned(v)
        }
        None => std::borrow::Cow::Borrowed(x),
    }
}

/// Forward. `x: [b·n, d]` → `[b·n, d]`; `keep` are the per-example stochastic-depth masks of the attention
/// and MLP branches. Returns the output and, when `save`, the activations for [`backward`].
pub fn forward(x: &[f32], p: &Params, dm: Dims, keep: Option<(&[f32], &[f32])>, save: bool) -> (Vec<f32>, Option<Saved>) {
    let (m, d, n) = (dm.rows(), dm.d, dm.n);
    let (xn1, mean1, rstd1) = layer_norm(x, p.ln1, d, dm.eps, dm.prec);
    let qkv = Input::new(xn1.linear(p.qkv, m, d, 3 * d, dm.prec), dm.prec); // [M, 3D]: (example, token) × (q|k|v, head, hd)
    let (att, probs) = match &qkv {
        Input::F32(rows) => attention(rows, dm, save),
        Input::Bf16(rows) => attention(rows, dm, save),
    };
    let att = Input::new(att, dm.prec);
    let mut a = att.linear(p.proj, m, d, d, dm.prec);
    if let Some((k0, _)) = keep {
        scale_examples(&mut a, k0, n * d);
    }
    // x1 = x + a, into `a`'s memory (the same sums).
    a.par_iter_mut().zip(x.par_iter()).for_each(|(v, u)| *v += u); // v + u = u + v exactly
    let x1 = a;
    let (xn2, mean2, rstd2) = layer_norm(&x1, p.ln2, d, dm.eps, dm.prec);
    let mut pre = xn2.linear(p.fc1, m, d, dm.mlp, dm.prec); // [M, MLP]
    let act = match dm.prec {
        k::Precision::Bf16 => {
            let act = Input::Bf16(k::gelu_tanh_bf16(&pre));
            if !save {
                pre = Vec::new(); // not kept: freed before the last layer
            }
            act
        }
        k::Precision::F32 if save => Input::F32(k::gelu_tanh(&pre)),
        k::Precision::F32 => {
            k::gelu_tanh_in_place(&mut pre); // not kept: activated where it is
            Input::F32(std::mem::take(&mut pre))
        }
    };
    let mut y = act.linear(p.fc2, m, dm.mlp, d, dm.prec);
    if let Some((_, k1)) = keep {
        scale_examples(&mut y, k1, n * d);
    }
    y.par_iter_mut().zip(x1.par_iter()).for_each(|(v, r)| *v += r);
    let saved = if save { Some(Saved { mean1, rstd1, xn1, qkv, probs, att, x1, mean2, rstd2, xn2, pre, act }) } else { None };
    (y, saved)
}

/// Multi-head attention of every example: `qkv: [b·n, 3d]` (q | k | v, heads side by side; f32, or bf16 bits
/// converted once for every product that reads them) → the heads' outputs `[b·n, d]` and, when `save`, the
/// probabilities `[b, h, n, n]` for [`attention_backward`].
fn attention<T: k::bf16::Elem>(qkv: &[T], dm: Dims, save: bool) -> (Vec<f32>, Vec<f32>) {
    let (m, d, n, h, hd) = (dm.rows(), dm.d, dm.n, dm.h, dm.hd());
    let scale = 1.0 / (hd as f32).sqrt();
    assert_eq!(h * hd, d, "attention: {h} heads do not divide the width {d}");
    // Every example's rows present (each writes its part of the uninitialised outputs below).
    assert_eq!(qkv.len(), m * 3 * d, "attention: qkv of {} values for {m} rows of 3·{d}", qkv.len());
    // One example's heads: writes every value of `o` ([N, D], heads side by side: h·hd = d columns) and of `pr`,
    // its [H, N, N] probabilities (kept for the backward pass), or one head's [N, N] at a time (inference).
    // Products into the outputs' uninitialised buffers: nothing is zero-filled first.
    let heads = |o: &mut [MaybeUninit<f32>], pr: &mut [MaybeUninit<f32>], rows: &[T]| {
        for hi in 0..h {
            let p = if pr.len() == n * n { &mut pr[..] } else { &mut pr[hi * n * n..(hi + 1) * n * n] };
            let q = Mat { data: &rows[hi * hd..], rs: 3 * d, cs: 1 };
            let kt = Mat { data: &rows[d + hi * hd..], rs: 1, cs: 3 * d };
            // [N, N] = q kᵀ
            k::matmul_any_into(dm.prec, n, n, hd, q, kt, p, n, false);
            // SAFETY: the product wrote all N·N values (row stride N).
            let p = unsafe { k::assume_written(p) };
            k::softmax_rows(p, n, scale); // softmax(q kᵀ / √hd)
            let v = Mat { data: &rows[2 * d + hi * hd..], rs: 3 * d, cs: 1 };
            k::matmul_any_into(dm.prec, n, hd, n, Mat::rows(&p[..], n), v, &mut o[hi * hd..], d, false);
            // [N, hd]
        }
    };
    // [B, H, N, N] when saved.
    let mut probs = Vec::new();
    // SAFETY: `heads` writes every value of each example's rows (and of its probabilities, when saved).
    let att = unsafe {
        k::written(m * d, |att| {
            if save {
                probs = k::written(dm.b * h * n * n, |probs| {
                    k::split(att.par_chunks_mut(n * d).zip(probs.par_chunks_mut(h * n * n)).zip(qkv.par_chunks(n * 3 * d)))
                        .for_each(|((o, pr), rows)| heads(o, pr, rows))
                });
            } else {
                k::split(att.par_chunks_mut(n * d).zip(qkv.par_chunks(n * 3 * d)))
                    .for_each_init(|| vec![MaybeUninit::uninit(); n * n], |pr, (o, rows)| heads(o, pr, rows));
            }
        })
    };
    (att, probs)
}

/// Backward of [`attention`] for `datt: [b·n, d]` (f32, or bf16 bits when `qkv` is): returns `dqkv: [b·n, 3d]`.
fn attention_backward<T: k::bf16::Elem>(qkv: &[T], datt: &[T], probs: &[f32], dm: Dims) -> Vec<f32> {
    let (m, d, n, h, hd) = (dm.rows(), dm.d, dm.n, dm.h, dm.hd());
    let scale = 1.0 / (hd as f32).sqrt();
    assert_eq!(h * hd, d, "attention: {h} heads do not divide the width {d}");
    // Every example's inputs present (each writes its rows of the uninitialised output below).
    assert!(
        qkv.len() == m * 3 * d && datt.len() == m * d && probs.len() == dm.b * h * n * n,
        "attention_backward: qkv {}, dO {}, probabilities {} values for {m} rows",
        qkv.len(),
        datt.len(),
        probs.len()
    );
    // Each example's dq | dk | dv: every head writes its hd columns of each (h·hd = d), products into the
    // uninitialised buffer.
    let fill = |dqkv: &mut [MaybeUninit<f32>]| {
        k::split(dqkv.par_chunks_mut(n * 3 * d).zip(datt.par_chunks(n * d)).zip(qkv.par_chunks(n * 3 * d).zip(probs.par_chunks(h * n * n))))
            .for_each(|((g, dout), (rows, pr))| {
                let mut dp = vec![0.0f32; n * n];
                for (hi, p) in pr.chunks(n * n).enumerate() {
                    let o = hi * hd;
                    let dov = Mat { data: &dout[o..], rs: d, cs: 1 };
                    let vt = Mat { data: &rows[2 * d + o..], rs: 1, cs: 3 * d };
                    k::matmul_any(dm.prec, n, n, hd, dov, vt, &mut dp, n, false, false); // dP = dO vᵀ
                    k::matmul_any_into(dm.prec, n, hd, n, Mat::t(p, n), dov, &mut g[2 * d + o..], 3 * d, false); // dv = Pᵀ dO
                    k::softmax_rows_backward(p, &mut dp, n, scale); // dS, times the 1/√hd scale
                    let kk = Mat { data: &rows[d + o..], rs: 3 * d, cs: 1 };
                    k::matmul_any_into(dm.prec, n, hd, n, Mat::rows(&dp[..], n), kk, &mut g[o..], 3 * d, false); // dq = dS k
                    let q = Mat { data: &rows[o..], rs: 3 * d, cs: 1 };
                    k::matmul_any_into(dm.prec, n, hd, n, Mat::t(&dp[..], n), q, &mut g[d + o..], 3 * d, false);
                    // dk = dSᵀ q
                }
            })
    };
    // SAFETY: `fill` writes every value (above).
    unsafe { k::written(m * 3 * d, fill) }
}

/// Backward of [`forward`] for `dy: [b·n, d]`: returns `dx` and the parameter gradients.
pub fn backward(x: &[f32], p: &Params, dm: Dims, keep: Option<(&[f32], &[f32])>, s: &Saved, dy: &[f32]) -> (Vec<f32>, ParamGrads) {
    let (m, d, n) = (dm.rows(), dm.d, dm.n);
    // MLP branch: y = x1 + keep1·fc2(gelu(fc1(LN2(x1)))).
    let dm_out = masked(dy, keep.map(|k| k.1), n * d);
    let (mut dact, dw2, db2) = s.act.linear_backward(p.fc2.0, &dm_out, m, dm.mlp, d, dm.prec);
    drop(dm_out);
    k::gelu_tanh_backward(&s.pre, &mut dact);
    let (dxn2, dw1, db1) = s.xn2.linear_backward(p.fc1.0, &dact, m, d, dm.mlp, dm.prec);
    drop(dact);
    let (dx1_ln, dg2, dbeta2) = k::layer_norm_backward(&s.x1, &s.mean2, &s.rstd2, p.ln2.0, &dxn2, d);
    let dx1: Vec<f32> = dy.par_iter().zip(dx1_ln.par_iter()).map(|(a, b)| a + b).collect();
    drop(dx1_ln);
    // Attention branch: x1 = x + keep0·proj(attn(LN1(x))).
    let da = masked(&dx1, keep.map(|k| k.0), n * d);
    let (datt, dwp, dbp) = s.att.linear_backward(p.proj.0, &da, m, d, d, dm.prec);
    drop(da);
    let dqkv = match &s.qkv {
        Input::F32(rows) => attention_backward(rows, &datt, &s.probs, dm),
        // dO is read by two products per head (dP = dO vᵀ, dv = Pᵀ dO): converted once.
        Input::Bf16(rows) => attention_backward(rows, &k::to_bf16_vec(&datt), &s.probs, dm),
    };
    drop(datt);
    let (dxn1, dwqkv, dbqkv) = s.xn1.linear_backward(p.qkv.0, &dqkv, m, d, 3 * d, dm.prec);
    drop(dqkv);
    let (mut dx, dg1, dbeta1) = k::layer_norm_backward(x, &s.mean1, &s.rstd1, p.ln1.0, &dxn1, d);
    dx.par_iter_mut().zip(dx1.par_iter()).for_each(|(a, b)| *a += b);
    (dx, [dg1, dbeta1, dwqkv, dbqkv, dwp, dbp, dg2, dbeta2, dw1, db1, dw2, db2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// The attention products on `qkv` (and `dO`) converted to bf16 once give the bits of converting them at
    /// every product: forward (probabilities and output, saved or not) and backward.
    #[test]
    fn attention_on_bf16_bits_gives_the_bits_of_converting_at_each_product() {
        let dm = Dims { b: 3, n: 13, d: 24, h: 3, mlp: 0, eps: 1e-6, prec: k::Precision::Bf16 };
        let (m, d) = (dm.rows(), dm.d);
        let qkv = data(m * 3 * d, 1);
        let datt = data(m * d, 2);
        let (qkv16, datt16) = (k::to_bf16_vec(&qkv), k::to_bf16_vec(&datt));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (att, probs) = attention(&qkv, dm, true);
        let (att16, probs16) = attention(&qkv16, dm, true);
        assert!(bits(&att) == bits(&att16) && bits(&probs) == bits(&probs16), "forward");
        assert!(bits(&attention(&qkv16, dm, false).0) == bits(&att), "inference");
        let dqkv = attention_backward(&qkv, &datt, &probs, dm);
        assert!(bits(&dqkv) == bits(&attention_backward(&qkv16, &datt16, &probs, dm)), "backward");
        // And bf16 is not f32 here (the comparison above could not pass by both running in f32).
        let (att32, _) = attention(&qkv, Dims { prec: k::Precision::F32, ..dm }, true);
        assert!(bits(&att32) != bits(&att), "f32 and bf16 attention must differ");
    }
}
