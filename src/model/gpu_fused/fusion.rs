//! The kernels on burn's fusion backend (`Fusion<CubeBackend>`, what `Cuda` and `Wgpu` are): each call is one
//! custom operation in the fusion stream, executed on the inner backend's tensors when the stream flushes.

use super::GpuKernels;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use std::marker::PhantomData;

/// Which kernel a [`Custom`] operation runs.
#[derive(Clone, Debug)]
enum Kind {
    LnForward { eps: f64, out: DType },
    LnBackward,
    SoftmaxForward,
    SoftmaxBackward,
    GeluForward,
    GeluBackward,
    HeadsSplit { tokens: usize, heads: usize },
    HeadsMerge { shape: Shape },
    Pack { offsets: Vec<usize>, total: usize },
    Unpack { segs: Vec<(usize, usize)>, shapes: Vec<Shape>, dtypes: Vec<DType>, old: Vec<bool> },
    SqPartials,
    ColSums,
    QkvSplit { tokens: usize, heads: usize, scale: f64 },
    QkvMerge { scale: f64, shape: Shape },
    LinearBackward { want: [bool; 3] },
    AttentionForward { tokens: usize, heads: usize, state: bool },
    FlatUpdate { rule: super::FlatRule, gs: f32, v: bool, scale: bool, mask: bool },
    AttentionBackward { scale: f64, shape: Shape },
    LossForward { sigmoid: bool },
    LossBackward { sigmoid: bool },
}

/// One of the kernels as an operation of the fusion stream.
#[derive(Debug)]
struct Custom<B> {
    desc: CustomOpIr,
    kind: Kind,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + GpuKernels> Operation<B::FusionRuntime> for Custom<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let inputs: Vec<FloatTensor<B>> = self.desc.inputs.iter().map(|t| handles.get_float_tensor::<B>(t)).collect();
        if let Kind::Pack { offsets, total } = &self.kind {
            let out = B::pack(inputs, offsets.clone(), *total);
            handles.register_float_tensor::<B>(&self.desc.outputs[0].id, out);
            return;
        }
        if let Kind::FlatUpdate { rule, gs, v, scale, mask } = self.kind {
            // Inputs w, g, m, then v, scale and mask where given, in that order.
            let mut it = inputs.into_iter();
            let (w, g, m) = (it.next().expect("w"), it.next().expect("g"), it.next().expect("m"));
            let (v, scale, mask) =
                (v.then(|| it.next().expect("v")), scale.then(|| it.next().expect("scale")), mask.then(|| it.next().expect("mask")));
            for (ir, t) in self.desc.outputs.iter().zip(B::flat_update(w, g, m, v, scale, mask, rule, gs)) {
                handles.register_float_tensor::<B>(&ir.id, t);
            }
            return;
        }
        if let Kind::Unpack { segs, shapes, dtypes, old } = &self.kind {
            // Inputs: the flat weights, then the old tensors given, in segment order.
            let mut it = inputs.into_iter();
            let flat = it.next().expect("the flat weights");
            let old: Vec<Option<FloatTensor<B>>> = old.iter().map(|&given| if given { it.next() } else { None }).collect();
            let outs = B::unpack(flat, segs.clone(), shapes.clone(), dtypes.clone(), old);
            for (ir, t) in self.desc.outputs.iter().zip(outs) {
                handles.register_float_tensor::<B>(&ir.id, t);
            }
            return;
        }
        if let Kind::LinearBackward { want } = self.kind {
            let Ok([g, x, w]) = <[FloatTensor<B>; 3]>::try_from(inputs) else { panic!("the linear backward takes g, x, w") };
            // The outputs registered are the wanted gradients, in order.
            let grads = B::linear_backward(g, x, w, want).into_iter().flatten();
            for (ir, t) in self.desc.outputs.iter().zip(grads) {
                handles.register_float_tensor::<B>(&ir.id, t);
            }
            return;
        }
        let mut inputs = inputs.into_iter();
        // Arguments are evaluated left to right: the inputs in the order `register` was given them.
        let mut next = move || inputs.next().expect("as many inputs as registered");
        let outputs: Vec<FloatTensor<B>> = match self.kind {
            Kind::LnForward { eps, out } => B::ln_forward(next(), next(), next(), eps, out).into(),
            Kind::LnBackward => B::ln_backward(next(), next(), next(), next(), next()).into(),
            Kind::SoftmaxForward => vec![B::softmax_forward(next())],
            Kind::SoftmaxBackward => vec![B::softmax_backward(next(), next())],
            Kind::GeluForward => vec![B::gelu_tanh_forward(next())],
            Kind::GeluBackward => vec![B::gelu_tanh_backward(next(), next())],
            Kind::HeadsSplit { tokens, heads } => vec![B::heads_split(next(), tokens, heads)],
            Kind::HeadsMerge { ref shape } => vec![B::heads_merge(next(), shape.clone())],
            Kind::QkvSplit { tokens, heads, scale } => B::qkv_split(next(), tokens, heads, scale).into(),
            Kind::QkvMerge { scale, ref shape } => vec![B::qkv_merge(next(), next(), next(), scale, shape.clone())],
            Kind::SqPartials => vec![B::sq_partials(next())],
            Kind::ColSums => vec![B::col_sums(next())],
            Kind::AttentionForward { tokens, heads, state } => B::attention_forward(next(), tokens, heads, state),
            Kind::AttentionBackward { scale, ref shape } => {
                vec![B::attention_backward(next(), next(), next(), next(), next(), scale, shape.clone())]
            }
            Kind::LossForward { sigmoid } => vec![B::loss_forward(next(), next(), sigmoid)],
            Kind::LossBackward { sigmoid } => vec![B::loss_backward(next(), next(), next(), sigmoid)],
            Kind::Pack { .. } | Kind::Unpack { .. } | Kind::LinearBackward { .. } | Kind::FlatUpdate { .. } => {
                unreachable!("handled above")
            }
        };
        for (ir, t) in self.desc.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<B>(&ir.id, t);
        }
    }
}

/// Registers `kind` on `inputs` with outputs of `shapes` and float types `dtypes`; returns the outputs.
fn register<B: FusionBackend + GpuKernels>(
    name: &'static str,
    kind: Kind,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    shapes: Vec<Shape>,
    dtypes: &[DType],
) -> Vec<FusionTensor<B::FusionRuntime>> {
    assert_eq!(shapes.len(), dtypes.len(), "{name}: one float type per output");
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outs: Vec<TensorIr> = shapes.into_iter().zip(dtypes).map(|(s, d)| TensorIr::uninit(client.create_empty_handle(), s, *d)).collect();
    let ins: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let desc = CustomOpIr::new(name, &ins, &outs);
    client.register(streams, OperationIr::Custom(desc.clone()), Custom::<B> { desc, kind, _b: PhantomData })
}

fn three<T>(v: Vec<T>) -> [T; 3] {
    <[T; 3]>::try_from(v).ok().expect("three outputs")
}

fn one<T>(v: Vec<T>) -> T {
    v.into_iter().next().expect("one output")
}

impl<B: FusionBackend + GpuKernels> GpuKernels for Fusion<B> {
    fn ln_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64, out: DType) -> [FloatTensor<Self>; 3] {
        let shape = x.shape.clone();
        let stats = Shape::new([super::kernels::rows_of(&shape).0]);
        three(register::<B>(
            "polyflow_layer_norm",
            Kind::LnForward { eps, out },
            vec![x, gamma, beta],
            vec![shape, stats.clone(), stats],
            &[out, DType::F32, DType::F32],
        ))
    }

    fn ln_backward(
        g: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let (shape, pshape) = (x.shape.clone(), gamma.shape.clone());
        three(register::<B>(
            "polyflow_layer_norm_backward",
            Kind::LnBackward,
            vec![g, x, gamma, mean, rstd],
            vec![shape, pshape.clone(), pshape],
            &[DType::F32; 3],
        ))
    }

    fn pack(pieces: Vec<FloatTensor<Self>>, offsets: Vec<usize>, total: usize) -> FloatTensor<Self> {
        one(register::<B>("polyflow_pack", Kind::Pack { offsets, total }, pieces, vec![Shape::new([total])], &[DType::F32]))
    }

    fn unpack(
        flat: FloatTensor<Self>,
        segs: Vec<(usize, usize)>,
        shapes: Vec<Shape>,
        dtypes: Vec<DType>,
        old: Vec<Option<FloatTensor<Self>>>,
    ) -> Vec<FloatTensor<Self>> {
        // An old tensor moved in as its last handle is this operation's to release (burn-fusion registers no release
        // of it), and the kernel's to write the copy into.
        let given = (0..segs.len()).map(|i| old.get(i).is_some_and(Option::is_some)).collect();
        let kind = Kind::Unpack { segs, shapes: shapes.clone(), dtypes: dtypes.clone(), old: given };
        let inputs = std::iter::once(flat).chain(old.into_iter().flatten()).collect();
        register::<B>("polyflow_unpack", kind, inputs, shapes, &dtypes)
    }

    fn col_sums(g: FloatTensor<Self>) -> FloatTensor<Self> {
        let (d, dt) = (g.shape[g.shape.num_dims() - 1], g.dtype);
        one(register::<B>("polyflow_col_sums", Kind::ColSums, vec![g], vec![Shape::new([d])], &[dt]))
    }

    fn sq_partials(g: FloatTensor<Self>) -> FloatTensor<Self> {
        let parts = super::kernels::sq_partials_len(g.shape.num_elements());
        one(register::<B>("polyflow_sq_partials", Kind::SqPartials, vec![g], vec![Shape::new([parts])], &[DType::F32]))
    }

    fn qkv_split(qkv: FloatTensor<Self>, tokens: usize, heads: usize, scale: f64) -> [FloatTensor<Self>; 3] {
        let (rows, d3) = super::kernels::rows_of(&qkv.shape);
        let shape = Shape::new([rows / tokens, heads, tokens, d3 / 3 / heads]);
        let dt = qkv.dtype;
        three(register::<B>(
            "polyflow_qkv_split",
            Kind::QkvSplit { tokens, heads, scale },
            vec![qkv],
            vec![shape.clone(), shape.clone(), shape],
            &[dt; 3],
        ))
    }

    fn qkv_merge(dq: FloatTensor<Self>, dk: FloatTensor<Self>, dv: FloatTensor<Self>, scale: f64, shape: Shape) -> FloatTensor<Self> {
        let dt = dq.dtype;
        one(register::<B>("polyflow_qkv_merge", Kind::QkvMerge { scale, shape: shape.clone() }, vec![dq, dk, dv], vec![shape], &[dt]))
    }

    fn heads_split(g: FloatTensor<Self>, tokens: usize, heads: usize) -> FloatTensor<Self> {
        let (rows, d) = super::kernels::rows_of(&g.shape);
        let (shape, dt) = (Shape::new([rows / tokens, heads, tokens, d / heads]), g.dtype);
        one(register::<B>("polyflow_heads_split", Kind::HeadsSplit { tokens, heads }, vec![g], vec![shape], &[dt]))
    }

    fn heads_merge(o: FloatTensor<Self>, shape: Shape) -> FloatTensor<Self> {
        let dt = o.dtype;
        one(register::<B>("polyflow_heads_merge", Kind::HeadsMerge { shape: shape.clone() }, vec![o], vec![shape], &[dt]))
    }

    fn gelu_tanh_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (shape, dt) = (x.shape.clone(), x.dtype);
        one(register::<B>("polyflow_gelu", Kind::GeluForward, vec![x], vec![shape], &[dt]))
    }

    fn gelu_tanh_backward(g: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (shape, dt) = (x.shape.clone(), x.dtype);
        one(register::<B>("polyflow_gelu_backward", Kind::GeluBackward, vec![g, x], vec![shape], &[dt]))
    }

    fn max_bindings(device: &Self::Device) -> u32 {
        B::max_bindings(device)
    }

    fn flat_update(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: Option<FloatTensor<Self>>,
        scale: Option<FloatTensor<Self>>,
        mask: Option<FloatTensor<Self>>,
        rule: super::FlatRule,
        gs: f32,
    ) -> Vec<FloatTensor<Self>> {
        let kind = Kind::FlatUpdate { rule, gs, v: v.is_some(), scale: scale.is_some(), mask: mask.is_some() };
        let n = w.shape.clone();
        let outputs = if v.is_some() { 3 } else { 2 };
        let inputs: Vec<FloatTensor<Self>> = [Some(w), Some(g), Some(m), v, scale, mask].into_iter().flatten().collect();
        register::<B>("polyflow_flat_update", kind, inputs, vec![n; outputs], &vec![DType::F32; outputs])
    }

    fn attention_forward(qkv: FloatTensor<Self>, tokens: usize, heads: usize, state: bool) -> Vec<FloatTensor<Self>> {
        let (rows, d3) = super::kernels::rows_of(&qkv.shape);
        let (d, hd, dt) = (d3 / 3, d3 / 3 / heads, qkv.dtype);
        let b = rows / tokens;
        let mut out = qkv.shape.clone();
        let last = out.num_dims() - 1;
        out[last] = d;
        let mut shapes = vec![out];
        if state {
            let head = Shape::new([b, heads, tokens, hd]);
            shapes.extend([head.clone(), head.clone(), head, Shape::new([b, heads, tokens, tokens])]);
        }
        let dtypes = vec![dt; shapes.len()];
        register::<B>("polyflow_attention", Kind::AttentionForward { tokens, heads, state }, vec![qkv], shapes, &dtypes)
    }

    fn attention_backward(
        g: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        scale: f64,
        shape: Shape,
    ) -> FloatTensor<Self> {
        let dt = q.dtype;
        let kind = Kind::AttentionBackward { scale, shape: shape.clone() };
        one(register::<B>("polyflow_attention_backward", kind, vec![g, q, k, v, p], vec![shape], &[dt]))
    }

    fn linear_backward(
        g: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        want: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        let d_out = g.shape[1];
        let outs = [(x.shape.clone(), x.dtype), (w.shape.clone(), w.dtype), (Shape::new([d_out]), g.dtype)];
        let (shapes, dtypes): (Vec<Shape>, Vec<DType>) = outs.into_iter().zip(want).filter(|(_, w)| *w).map(|(o, _)| o).unzip();
        let mut grads =
            register::<B>("polyflow_linear_backward", Kind::LinearBackward { want }, vec![g, x, w], shapes, &dtypes).into_iter();
        want.map(|w| if w { grads.next() } else { None })
    }

    fn loss_forward(z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        let dt = z.dtype;
        one(register::<B>("polyflow_loss", Kind::LossForward { sigmoid }, vec![z, t], vec![Shape::new([1])], &[dt]))
    }

    fn loss_backward(g: FloatTensor<Self>, z: FloatTensor<Self>, t: FloatTensor<Self>, sigmoid: bool) -> FloatTensor<Self> {
        let (shape, dt) = (z.shape.clone(), z.dtype);
        one(register::<B>("polyflow_loss_backward", Kind::LossBackward { sigmoid }, vec![g, z, t], vec![shape], &[dt]))
    }

    fn softmax_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (shape, dt) = (x.shape.clone(), x.dtype);
        one(register::<B>("polyflow_softmax", Kind::SoftmaxForward, vec![x], vec![shape], &[dt]))
    }

    fn softmax_backward(g: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
        let (shape, dt) = (y.shape.clone(), y.dtype);
        one(register::<B>("polyflow_softmax_backward", Kind::SoftmaxBackward, vec![g, y], vec![shape], &[dt]))
    }
}
