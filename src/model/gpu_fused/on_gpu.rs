//! The dispatch from a generic backend to the concrete GPU backends this build has.

use super::{autodiff, enabled, GpuKernels};
use burn::backend::Autodiff;
use burn::nn::LayerNorm;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use std::any::TypeId;

/// Whether the kernels can address a tensor of `n` elements: not empty (a zero-sized launch), and within their
/// 32-bit indices (CubeCL's default address type); burn's compositions take the others.
fn indexable(n: usize) -> bool {
    n > 0 && n <= u32::MAX as usize
}

/// The float types the softmax and attention kernels take (they compute in f32 whatever the type).
fn float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::BF16 | DType::F16)
}

fn cast<A: 'static, T: 'static>(a: A) -> Option<T> {
    crate::model::fused::cast(a)
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, G: Backend, const D: usize>(p: FloatTensor<G>) -> Option<Tensor<B, D>> {
    Some(Tensor::from_primitive(TensorPrimitive::Float(cast::<FloatTensor<G>, FloatTensor<B>>(p)?)))
}

/// `f()` when `B` is `G` itself (the optimizer's flat buffers are the inner backend's: `Autodiff<G>` never
/// comes here), `None` otherwise.
fn plain_only<B: Backend, G: Backend, T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    if TypeId::of::<B>() == TypeId::of::<G>() {
        f()
    } else {
        None
    }
}

/// Whether `B` is `G` or `Autodiff<G>`.
fn is<B: Backend, G: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<G>() || TypeId::of::<B>() == TypeId::of::<Autodiff<G>>()
}

/// Returns `$on!(G)` for the GPU backend `G` of this build that `$b` is (or wraps in `Autodiff`); falls
/// through when there is none.
macro_rules! dispatch {
    ($b:ty, $on:ident) => {
        #[cfg(feature = "cuda")]
        if is::<$b, burn::backend::Cuda>() {
            return $on!(burn::backend::Cuda);
        }
        #[cfg(feature = "wgpu")]
        if is::<$b, burn::backend::Wgpu>() {
            return $on!(burn::backend::Wgpu);
        }
    };
}

pub(super) fn attention<B: Backend, const R: usize>(qkv: Tensor<B, R>, n: usize, heads: usize) -> Option<Tensor<B, R>> {
    let dims = qkv.dims();
    let (rows, d3) = (dims[..R - 1].iter().product::<usize>(), dims[R - 1]);
    if !enabled() || !float(qkv.dtype()) || R < 2 || heads == 0 || d3 % (3 * heads) != 0 || d3 == 0 {
        return None;
    }
    if n == 0 || rows % n != 0 || (R == 3 && dims[1] != n) {
        return None;
    }
    let b = rows / n;
    if !indexable(qkv.shape().num_elements()) || !indexable(b * heads * n * n) {
        return None;
    }
    let inputs = [prim(qkv)];
    macro_rules! on {
        ($g:ty) => {
            run::<B, $g, R, 1>(inputs, |[x]| autodiff::attention_output::<$g>(x, n, heads), |[x]| autodiff::attention::<$g>(x, n, heads))
        };
    }
    dispatch!(B, on);
    let _ = inputs;
    None
}

pub(super) fn gpu_backend<B: Backend>() -> bool {
    macro_rules! on {
        ($g:ty) => {
            true
        };
    }
    dispatch!(B, on);
    false
}

/// `Some` when `B` is `G` or `Autodiff<G>`: the function on the matching primitives.
fn run<B: Backend, G: GpuKernels, const D: usize, const N: usize>(
    inputs: [FloatTensor<B>; N],
    plain: impl FnOnce([FloatTensor<G>; N]) -> FloatTensor<G>,
    tracked: impl FnOnce([FloatTensor<Autodiff<G>>; N]) -> FloatTensor<Autodiff<G>>,
) -> Option<Tensor<B, D>> {
    if TypeId::of::<B>() == TypeId::of::<Autodiff<G>>() {
        let p = inputs.map(|t| cast::<_, FloatTensor<Autodiff<G>>>(t).expect("Autodiff<G> primitive"));
        tensor::<B, Autodiff<G>, D>(tracked(p))
    } else if TypeId::of::<B>() == TypeId::of::<G>() {
        let p = inputs.map(|t| cast::<_, FloatTensor<G>>(t).expect("G primitive"));
        tensor::<B, G, D>(plain(p))
    } else {
        None
    }
}

pub(super) fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: &Tensor<B, D>, eps: f64, out: DType) -> Option<Tensor<B, D>> {
    let beta = norm.beta.as_ref()?.val();
    let gamma = norm.gamma.val();
    if !enabled() || !indexable(x.shape().num_elements()) || [x.dtype(), gamma.dtype(), beta.dtype()].iter().any(|d| *d != DType::F32) {
        return None;
    }
    if !float(out) {
        return None;
    }
    let inputs = [prim(x.clone()), prim(gamma), prim(beta)];
    macro_rules! on {
        ($g:ty) => {
            run::<B, $g, D, 3>(
                inputs,
                |[x, g, b]| {
                    let [y, _, _] = <$g as GpuKernels>::ln_forward(x, g, b, eps, out);
                    y
                },
                |[x, g, b]| autodiff::layer_norm::<$g>(x, g, b, eps, out),
            )
        };
    }
    dispatch!(B, on);
    let _ = inputs;
    None
}

#[allow(clippy::type_complexity)]
pub(super) fn pack<B: Backend>(
    pieces: Vec<Option<FloatTensor<B>>>,
    segs: &[(usize, usize)],
    total: usize,
) -> Result<Tensor<B, 1>, Vec<Option<FloatTensor<B>>>> {
    let any = pieces.iter().any(Option::is_some);
    if !enabled() || !any || !indexable(total) || pieces.iter().flatten().any(|p| !float(p.dtype())) {
        return Err(pieces);
    }
    // The gradients are the inner backend's: `Autodiff<G>` itself never packs.
    macro_rules! on {
        ($g:ty) => {
            if TypeId::of::<B>() == TypeId::of::<$g>() {
                let (prims, offsets): (Vec<FloatTensor<$g>>, Vec<usize>) = pieces
                    .into_iter()
                    .zip(segs)
                    .filter_map(|(p, s)| Some((cast::<_, FloatTensor<$g>>(p?).expect("G primitive"), s.0)))
                    .unzip();
                Ok(tensor::<B, $g, 1>(<$g as GpuKernels>::pack(prims, offsets, total)).expect("B is G"))
            } else {
                Err(pieces)
            }
        };
    }
    dispatch!(B, on);
    Err(pieces)
}

pub(super) fn unpack<B: Backend>(
    flat: &Tensor<B, 1>,
    segs: &[(usize, usize)],
    shapes: &[Shape],
    dtypes: &[DType],
    old: Vec<Option<FloatTensor<B>>>,
) -> Option<Vec<FloatTensor<B>>> {
    let total = flat.dims()[0];
    if !enabled() || segs.is_empty() || !indexable(total) || flat.dtype() != DType::F32 || !dtypes.iter().all(|d| float(*d)) {
        return None;
    }
    macro_rules! on {
        ($g:ty) => {
            plain_only::<B, $g, _>(|| {
                let flat = cast::<_, FloatTensor<$g>>(prim(flat.clone())).expect("G primitive");
                let old = old.into_iter().map(|t| t.map(|t| cast::<_, FloatTensor<$g>>(t).expect("G primitive"))).collect();
                <$g as GpuKernels>::unpack(flat, segs.to_vec(), shapes.to_vec(), dtypes.to_vec(), old)
                    .into_iter()
                    .map(cast::<FloatTensor<$g>, FloatTensor<B>>)
                    .collect::<Option<Vec<_>>>()
            })
        };
    }
    dispatch!(B, on);
    let _ = (segs, shapes, dtypes, old);
    None
}

pub(super) fn linear<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, bias: Tensor<B, 1>) -> Option<Tensor<B, 2>> {
    // Checked by the caller: the kernels on, a GPU backend, one float type of f32, bf16 and f16. Past the
    // kernels' 32-bit indices (the bias gradient's column sums), the product and burn's broadcast add.
    let [rows, d_in] = x.dims();
    let d_out = w.dims()[1];
    if ![rows * d_in, rows * d_out, d_in * d_out].into_iter().all(indexable) {
        return Some(super::linear_product(x, w, Some(bias)));
    }
    let inputs = [prim(x), prim(w), prim(bias)];
    macro_rules! on {
        ($g:ty) => {
            run::<B, $g, 2, 3>(inputs, |[x, w, b]| autodiff::linear_forward::<$g>(x, w, b), |[x, w, b]| autodiff::linear::<$g>(x, w, b))
        };
    }
    dispatch!(B, on);
    let _ = inputs;
    None
}

#[allow(clippy::too_many_arguments)]
pub(super) fn flat_update<B: Backend>(
    w: &Tensor<B, 1>,
    g: &Tensor<B, 1>,
    m: Tensor<B, 1>,
    v: Option<Tensor<B, 1>>,
    scale: Option<&Tensor<B, 1>>,
    mask: Option<&Tensor<B, 1>>,
    rule: super::FlatRule,
    gs: f32,
) -> Option<Vec<Tensor<B, 1>>> {
    let n = w.dims()[0];
    let all_f32 = [Some(w), Some(g), Some(&m), v.as_ref(), scale, mask].into_iter().flatten().all(|t| t.dtype() == DType::F32);
    if !enabled() || !indexable(n) || !all_f32 {
        return None;
    }
    // Adam's kernel binds nine tensors and CubeCL's metadata; SGD's six.
    let needed = if v.is_some() { 10 } else { 7 };
    let device = w.device();
    macro_rules! on {
        ($g:ty) => {
            plain_only::<B, $g, _>(|| {
                let dev = cast::<_, burn::tensor::Device<$g>>(device.clone())?;
                if <$g as GpuKernels>::max_bindings(&dev) < needed {
                    return None;
                }
                let p = |t: &Tensor<B, 1>| cast::<_, FloatTensor<$g>>(prim(t.clone()));
                let outs = <$g as GpuKernels>::flat_update(
                    p(w)?,
                    p(g)?,
                    cast::<_, FloatTensor<$g>>(prim(m))?,
                    match v {
                        Some(v) => Some(cast::<_, FloatTensor<$g>>(prim(v))?),
                        None => None,
                    },
                    match scale {
                        Some(s) => Some(p(s)?),
                        None => None,
                    },
                    match mask {
                        Some(k) => Some(p(k)?),
                        None => None,
                    },
                    rule,
                    gs,
                );
                outs.into_iter().map(|t| tensor::<B, $g, 1>(t)).collect::<Option<Vec<_>>>()
            })
        };
    }
    dispatch!(B, on);
    let _ = (m, v, device);
    None
}

pub(super) fn bias_add<B: Backend>(y: Tensor<B, 2>, bias: Tensor<B, 1>) -> Option<Tensor<B, 2>> {
    // Checked by the caller: the kernels on, a GPU backend, one float type of f32, bf16 and f16 (the inputs are
    // moved in, not handed back). Past the kernels' 32-bit indices, burn's broadcast add and its reductions.
    if !indexable(y.shape().num_elements()) {
        return Some(y + bias.unsqueeze());
    }
    let inputs = [prim(y), prim(bias)];
    macro_rules! on {
        ($g:ty) => {
            run::<B, $g, 2, 2>(inputs, |[y, b]| autodiff::bias_add_forward::<$g>(y, b), |[y, b]| autodiff::bias_add::<$g>(y, b))
        };
    }
    dispatch!(B, on);
    let _ = inputs;
    None
}

pub(super) fn squared_norm<B: Backend>(g: &Tensor<B, 1>) -> Option<Tensor<B, 1>> {
    let n = g.dims()[0];
    if !enabled() || !indexable(n) || g.dtype() != DType::F32 {
        return None;
    }
    macro_rules! on {
        ($g:ty) => {
            plain_only::<B, $g, _>(|| {
                let p = cast::<_, FloatTensor<$g>>(prim(g.clone())).expect("G primitive");
                tensor::<B, $g, 1>(<$g as GpuKernels>::sq_partials(p)).map(|parts| parts.sum())
            })
        };
    }
    dispatch!(B, on);
    None
}

pub(super) fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !enabled() || !gpu_backend::<B>() || !indexable(x.shape().num_elements()) || !float(x.dtype()) {
        return Err(x);
    }
    let inputs = [prim(x)];
    macro_rules! on {
        ($g:ty) => {
            Ok(run::<B, $g, D, 1>(inputs, |[x]| <$g as GpuKernels>::gelu_tanh_forward(x), |[x]| autodiff::gelu_tanh::<$g>(x))
                .expect("one of this build's GPU backends"))
        };
    }
    dispatch!(B, on);
    unreachable!("gpu_backend::<B>() was checked")
}

#[allow(clippy::type_complexity)]
pub(super) fn loss<B: Backend>(z: Tensor<B, 2>, t: Tensor<B, 2>, sigmoid: bool) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let n = z.shape().num_elements();
    let ok = enabled() && gpu_backend::<B>() && indexable(n) && z.dims() == t.dims() && float(z.dtype()) && z.dtype() == t.dtype();
    if !ok || t.is_require_grad() {
        return Err((z, t));
    }
    let inputs = [prim(z), prim(t)];
    macro_rules! on {
        ($g:ty) => {
            Ok(run::<B, $g, 1, 2>(
                inputs,
                |[z, t]| <$g as GpuKernels>::loss_forward(z, t, sigmoid),
                |[z, t]| autodiff::loss::<$g>(z, t, sigmoid),
            )
            .expect("one of this build's GPU backends"))
        };
    }
    dispatch!(B, on);
    unreachable!("gpu_backend::<B>() was checked")
}

pub(super) fn softmax<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if !enabled() || !indexable(x.shape().num_elements()) || !float(x.dtype()) {
        return None;
    }
    let inputs = [prim(x.clone())];
    macro_rules! on {
        ($g:ty) => {
            run::<B, $g, D, 1>(inputs, |[x]| <$g as GpuKernels>::softmax_forward(x), |[x]| autodiff::softmax::<$g>(x))
        };
    }
    dispatch!(B, on);
    let _ = inputs;
    None
}
