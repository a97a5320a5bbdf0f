//! The GPU code path on burn's wgpu backend (feature `wgpu`): burn's fusion, autotune and CubeCL kernels, the
//! composed block, deferred reads, micro-batches and replicas — what CUDA runs, through WGSL instead of PTX.
//! On a machine without a GPU, Mesa's lavapipe (Debian's `mesa-vulkan-drivers`) runs the kernels on the CPU.
//!
//! Built only with the `wgpu` feature, and ignored even then (they need a Vulkan driver); `.ci/run` installs
//! lavapipe and runs them with `cargo test --features wgpu,video --test wgpu --test layouts -- --include-ignored`.
#![cfg(feature = "wgpu")]

use burn::backend::{Autodiff, Flex, Wgpu};
use polyflow::model::{Geometry, HeadInit, Modality, ModelConfig, Size, TaskHead};
use polyflow::train::batch::Augment;
use polyflow::train::metrics::Loss;
use polyflow::train::optim::OptKind;
use polyflow::train::run::{run, Outcome, RunConfig, TaskRun};
use polyflow::train::schedule::Schedule;
use std::process::Command;

mod common;
use common::{split, BIN};

/// Two image tasks (softmax and sigmoid loss), batches of 8, stochastic depth 0.2, and a depth-2 model.
fn two_image_tasks() -> (Vec<TaskRun>, ModelConfig) {
    let task = |name: &str, loss| TaskRun {
        name: name.into(),
        loss,
        batch: 8,
        steps: 4,
        lr: 1e-3,
        warmup: 1,
        warmup_group: None,
        augment: Augment::default(),
        droplayer: 0.2,
        classes: 3,
        map: false,
        train: split(16, [1, 1, 8, 8], 3, 1),
        val: split(6, [1, 1, 8, 8], 3, 2),
        test: split(6, [1, 1, 8, 8], 3, 3),
    };
    let tasks = vec![task("a", Loss::Softmax), task("b", Loss::Sigmoid)];
    let model = ModelConfig {
        size: Size { dim: 16, depth: 2, heads: 2, mlp: 32 },
        l_adapt: 0,
        geometry: vec![(Modality::Image, Geometry { channels: 3, input: vec![8, 8], patch: vec![4, 4] })],
        tasks: tasks
            .iter()
            .map(|t| TaskHead { name: t.name.clone(), modality: Modality::Image, classes: 3, init: HeadInit::LecunNormal })
            .collect(),
        gelu_tanh: true,
        ln_eps: 1e-6,
    };
    (tasks, model)
}

fn config(model: ModelConfig, micro_batch: usize, replicas: usize, deferred_reads: Option<usize>) -> RunConfig {
    RunConfig {
        model,
        schedule: Schedule::Weighted,
        total_steps: None,
        schedule_seed: 0,
        optimizer: OptKind::Sgd { momentum: 0.9 },
        clip: Some(1.0),
        wrap_last: true,
        accumulate_mean: false,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 5,
        eval_batch: 8,
        bf16: false,
        f16: false,
        loss_scale_init: None,
        micro_batch,
        replicas,
        recompute: false,
        deferred_reads,
        f32_params: false,
    }
}

/// Asserts that two runs took the same updates up to float rounding: losses and final weights within `tol`
/// (relative to the larger of 1 and the loss, and to each tensor's largest value).
fn assert_close(what: &str, a: &Outcome, b: &Outcome, tol: f64) {
    assert_eq!(a.steps.len(), b.steps.len(), "{what}");
    for (x, y) in a.steps.iter().zip(&b.steps) {
        assert_eq!(x.tasks, y.tasks, "{what}: update {} trained other tasks", x.step);
        assert!((x.loss - y.loss).abs() <= tol * (1.0 + x.loss.abs()), "{what}: update {} loss {} vs {}", x.step, x.loss, y.loss);
        assert!(x.loss.is_finite(), "{what}: update {} loss {}", x.step, x.loss);
    }
    assert_eq!(a.weights.keys().collect::<Vec<_>>(), b.weights.keys().collect::<Vec<_>>(), "{what}");
    for (name, w) in &a.weights {
        let v = &b.weights[name];
        let scale = w.data.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        for (x, y) in w.data.iter().zip(&v.data) {
            assert!(((x - y).abs() as f64) <= tol * scale as f64, "{what} {name}: {x} vs {y}");
        }
    }
}

/// Co-training on wgpu takes the CPU's updates up to float rounding: the same tasks each update, losses and
/// final weights within 1e-3, with the host reading losses every update or deferred (as on CUDA), and with
/// micro-batches of 3 over 2 replicas on the one device. The CPU side is the fused CPU block (its own tests pin
/// it to burn's composition), the wgpu side burn's composition with fusion: two implementations agreeing.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn training_on_wgpu_takes_the_cpu_updates() {
    let (tasks, model) = two_image_tasks();
    let cpu =
        run::<Autodiff<Flex>>(&config(model.clone(), 0, 1, None), &tasks, None, None, &[Default::default()], &|_, _, _| {}, &mut |_| {})
            .unwrap();
    let gpu = |micro, replicas, deferred| {
        let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
        run::<Autodiff<Wgpu>>(&config(model.clone(), micro, replicas, deferred), &tasks, None, None, &[dev], &|_, _, _| {}, &mut |_| {})
            .unwrap()
    };
    assert_close("wgpu, reading every update", &cpu, &gpu(0, 1, None), 1e-3);
    let deferred = gpu(0, 1, Some(16));
    assert_close("wgpu, reads deferred by 16", &cpu, &deferred, 1e-3);
    assert_close("wgpu, micro-batches of 3 on 2 replicas", &cpu, &gpu(3, 2, Some(16)), 1e-3);
    // The final evaluations ran on the device too (inference through burn's attention there): the same tasks,
    // splits and metrics, values in [0, 1] (top-k and mAP on 6 examples; a near tie may flip one, so not compared).
    assert!(!cpu.evals.is_empty());
    assert_eq!(cpu.evals.len(), deferred.evals.len());
    for (c, g) in cpu.evals.iter().zip(&deferred.evals) {
        assert_eq!((c.step, &c.task, &c.split), (g.step, &g.task, &g.split));
        assert_eq!(c.metrics.keys().collect::<Vec<_>>(), g.metrics.keys().collect::<Vec<_>>());
        assert!(g.metrics.values().all(|v| (0.0..=1.0).contains(v)), "{:?}", g.metrics);
    }
}

fn polyflow<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

/// The CLI on `--backend wgpu`: a Digits node trains there under its own key (the backend is in it, so the
/// CPU's model does not stand in for it), a second run finds it fresh, and `precision = "bf16"` (no bf16 in
/// WGSL) is refused before anything runs, with an error that names the node's line and says what to use;
/// `precision = "f16"` trains under a key of its own where the adapter has f16.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_cli_trains_on_wgpu_under_its_own_key() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let s = store.to_str().unwrap();
    // 8 updates of 8 examples: the key, the cache and the error are the point here, not accuracy (lavapipe is
    // slow: 40 updates of 32 took 134 s of this test's ~250 on a 2-core EPYC, 8 of 8 about 54 s).
    let args = |cmd: &str, extra: &[&str]| -> Vec<String> {
        let mut a = vec![cmd, "tests/pipelines/digits.toml", "--profile", "minute", "--store", s, "--backend", "wgpu"];
        a.extend_from_slice(&["--set", "t_digits.steps=8", "--set", "t_digits.batch_size=8"]);
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect()
    };
    let run_args = |extra: &[&str]| args("run", extra);
    let out = polyflow(&run_args(&[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Finished st_digits"), "{err}");
    let again = polyflow(&run_args(&[]));
    let err2 = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{err2}");
    assert!(!err2.contains("Finished st_digits"), "the second run found the node fresh: {err2}");
    // The CPU's node is another key: stale in the same store.
    let status = polyflow(&[
        "status",
        "tests/pipelines/digits.toml",
        "--profile",
        "minute",
        "--store",
        s,
        "--set",
        "t_digits.steps=8",
        "--set",
        "t_digits.batch_size=8",
    ]);
    let table = String::from_utf8_lossy(&status.stdout);
    let row = table.lines().find(|l| l.contains("st_digits")).unwrap_or_default();
    assert!(row.contains("stale"), "flex's st_digits is not wgpu's: {table}");

    // bf16 is refused before anything runs (exit 2), naming the node, where the value was written (here the
    // `--set`) and what to set.
    let bf16 = polyflow(&run_args(&["--set", "st_digits.precision=bf16"]));
    let err = String::from_utf8_lossy(&bf16.stderr);
    assert_eq!(bf16.status.code(), Some(2), "{err}");
    assert!(err.contains("not available on the wgpu backend") && err.contains("WGSL"), "{err}");
    assert!(
        err.contains("`st_digits` (train, --set st_digits.precision=bf16:1:11)") && err.contains("--set st_digits.precision="),
        "{err}"
    );
    assert!(!err.contains("Finished") && !err.contains("Running"), "nothing ran: {err}");

    // f16 where the adapter has it: its own key (trained, then fresh), through the half working copies and
    // LayerNorm to f16 that training takes on the GPU backends.
    if has_f16("the_cli_trains_on_wgpu_under_its_own_key") {
        let f16 = polyflow(&run_args(&["--set", "st_digits.precision=f16"]));
        let err = String::from_utf8_lossy(&f16.stderr);
        assert_eq!(f16.status.code(), Some(0), "{err}");
        assert!(err.contains("Finished st_digits"), "f16 is another key than f32: {err}");
        let again = polyflow(&run_args(&["--set", "st_digits.precision=f16"]));
        let err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(0), "{err}");
        assert!(!err.contains("Finished st_digits"), "the f16 node is fresh the second time: {err}");
    }
}

/// Values of a tensor as f32.
fn vals<B: burn::tensor::backend::Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `got` within one f16 rounding of `want` everywhere (relative 2⁻¹⁰, plus `floor` near zero): what f32 arithmetic
/// rounded once to f16 gives, where arithmetic in f16 would be several roundings off somewhere.
fn within_one_f16_step(what: &str, got: &[f32], want: &[f32], floor: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= b.abs() * 2f32.powi(-10) + floor, "{what}[{i}]: kernel {a} vs {b}");
    }
}

/// Whether the default adapter has 16-bit float arithmetic (Vulkan's shaderFloat16; lavapipe has it). Without it
/// the f16 part of `test` is skipped, and said so on stderr.
fn has_f16(test: &str) -> bool {
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let yes = <Wgpu as burn::tensor::backend::Backend>::supports_dtype(&dev, burn::tensor::DType::F16);
    if !yes {
        eprintln!("{test}: no f16 on this adapter, its f16 checks are SKIPPED");
    }
    yes
}

/// `a` within `tol` of `b`, relative to `b`'s largest magnitude.
fn near(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: kernel {x} vs burn {y} (scale {scale})");
    }
}

/// polyflow's LayerNorm and softmax kernels (src/model/gpu_fused) give burn's compositions' outputs and
/// gradients up to float rounding, tracked (one autodiff node each) and in inference: rows shorter than a cube,
/// not a power of two, more rows than a grid axis holds, LayerNorm's parameter gradients summed over chunks of
/// rows whose last one is short, and inputs whose rows are padded (a narrowed view: rows farther apart than their
/// length, as CUDA lays out a product's output; the kernels read those in place).
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn layer_norm_and_softmax_kernels_match_burns_compositions() {
    use burn::module::{AutodiffModule, Param};
    use burn::nn::LayerNormConfig;
    use burn::tensor::{activation, Distribution, Tensor};
    use polyflow::model::gpu_fused::{layer_norm, softmax_last};
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let normal = |m, s| Distribution::Normal(m, s);

    // Shapes from burn's composition's reference; with f16 where the adapter has it, LayerNorm to f16 against the
    // f32 kernel and a cast, bit for bit.
    for (shape, pad) in [([7, 143, 48], 0), ([3, 7, 192], 0), ([2, 5, 16], 0), ([4, 3, 1], 0), ([3, 7, 192], 64)] {
        let d = shape[2];
        let mut norm = LayerNormConfig::new(d).with_epsilon(1e-6).init::<A>(&dev);
        norm.gamma = Param::from_tensor(Tensor::random([d], normal(1.0, 0.5), &dev));
        norm.beta = Some(Param::from_tensor(Tensor::random([d], normal(0.0, 0.5), &dev)));
        let x = Tensor::<A, 3>::random([shape[0], shape[1], d + pad], normal(0.5, 2.0), &dev);
        let w = Tensor::<A, 3>::random(shape, normal(0.0, 1.0), &dev);
        let run = |kernel: bool| {
            let xi = x.clone().detach().require_grad();
            let xv = xi.clone().narrow(2, 0, d); // padded rows when pad > 0
            let y = if kernel { layer_norm(&norm, xv, 1e-6) } else { norm.forward(xv) };
            let g = (y.clone() * w.clone()).sum().backward();
            let beta = norm.beta.as_ref().unwrap();
            [vals(y.inner()), vals(xi.grad(&g).unwrap()), vals(norm.gamma.grad(&g).unwrap()), vals(beta.grad(&g).unwrap())]
        };
        let (k, b) = (run(true), run(false));
        // The kernel ran, not burn's composition (its other summation order changes some bits; d = 1 has no sums).
        if d > 1 {
            assert!(k[1].iter().zip(&b[1]).any(|(p, q)| p.to_bits() != q.to_bits()), "layer norm {shape:?}: dx bit-identical to burn's");
        }
        for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
            near(&format!("layer norm {shape:?} {what}"), &k[i], &b[i], 2e-5);
        }
        let inner = norm.valid();
        let xi = x.clone().inner().narrow(2, 0, d);
        near(&format!("layer norm {shape:?} inference"), &vals(layer_norm(&inner, xi.clone(), 1e-6)), &vals(inner.forward(xi)), 2e-5);
        // bf16/f16 blocks: the kernel writes f16 itself, the bits of the f32 kernel's output cast to f16, and its
        // backward takes the f16 gradient (read exactly), the bits of the cast's backward into the f32 kernel.
        if has_f16("layer_norm_and_softmax_kernels_match_burns_compositions") {
            use burn::tensor::FloatDType;
            let run_f16 = |direct: bool| {
                let xi = x.clone().detach().require_grad();
                let xv = xi.clone().narrow(2, 0, d);
                let y = if direct {
                    polyflow::model::gpu_fused::layer_norm_to(&norm, xv, 1e-6, Some(FloatDType::F16))
                } else {
                    layer_norm(&norm, xv, 1e-6).cast(FloatDType::F16)
                };
                assert_eq!(y.dtype(), burn::tensor::DType::F16);
                let g = (y.clone() * w.clone().cast(FloatDType::F16)).cast(FloatDType::F32).sum().backward();
                let beta = norm.beta.as_ref().unwrap();
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                [vals(y.inner()), vals(xi.grad(&g).unwrap()), vals(norm.gamma.grad(&g).unwrap()), vals(beta.grad(&g).unwrap())].map(bits)
            };
            let (direct, cast) = (run_f16(true), run_f16(false));
            for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                assert_eq!(direct[i], cast[i], "layer norm {shape:?} to f16: {what}");
            }
        }
    }

    // The last: a strided view (the kernels copy it contiguous first); n = 1 (every output 1, every gradient 0).
    // Then rows padded to 129 (a narrowed view, read in place).
    for (shape, strided) in [
        ([2, 3, 65, 65], false),
        ([1, 2, 3, 197], false),
        ([1, 1, 40_000, 5], false),
        ([2, 3, 17, 9], true),
        ([1, 1, 4, 1], false),
        ([2, 3, 65, 129], false),
    ] {
        let x = Tensor::<A, 4>::random(shape, normal(0.0, 3.0), &dev);
        let x = if strided { x.swap_dims(2, 3) } else { x };
        let x = if shape[3] == 129 { x.narrow(3, 0, 65) } else { x };
        let shape = x.dims();
        let w = Tensor::<A, 4>::random(shape, normal(0.0, 1.0), &dev);
        let run = |kernel: bool| {
            let xi = x.clone().detach().require_grad();
            let y = if kernel { softmax_last(xi.clone()) } else { activation::softmax(xi.clone(), 3) };
            let g = (y.clone() * w.clone()).sum().backward();
            [vals(y.inner()), vals(xi.grad(&g).unwrap())]
        };
        let (k, b) = (run(true), run(false));
        if shape[3] > 1 {
            assert!(k[1].iter().zip(&b[1]).any(|(p, q)| p.to_bits() != q.to_bits()), "softmax {shape:?}: dx bit-identical to burn's");
        }
        near(&format!("softmax {shape:?} y"), &k[0], &b[0], 2e-6);
        near(&format!("softmax {shape:?} dx"), &k[1], &b[1], 2e-5);
        let xi = x.clone().inner();
        near(&format!("softmax {shape:?} inference"), &vals(softmax_last(xi.clone())), &vals(activation::softmax(xi, 3)), 2e-6);
    }
}

/// The flat optimizer's gradient buffer from polyflow's pack kernel (five pieces per launch) holds exactly what
/// burn's `slice_assign` into zeros gives: pieces of every length around the 128-float padding, missing pieces
/// and padding left zero, more pieces than one launch takes (9 present: a full launch and one with a slot unused),
/// pieces of two and three axes whose rows lie farther apart than their length. And the unpack kernel gives every
/// segment back as a packed tensor of the parameter's shape, into the old tensor's buffer where nothing else holds
/// it (a tensor held elsewhere keeps its values).
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_pack_kernel_lays_out_what_slice_assign_does() {
    use burn::tensor::ops::{FloatTensor, FloatTensorOps};
    use burn::tensor::{DType, Distribution, FloatDType, Shape, Tensor, TensorMetadata, TensorPrimitive};
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    // Half working copies' gradients come in f16 (bf16 on CUDA): every fourth piece is f16 where the adapter has it.
    let half = has_f16("the_pack_kernel_lays_out_what_slice_assign_does");
    let dtype_of = |i: usize| if half && i % 4 == 1 { FloatDType::F16 } else { FloatDType::F32 };
    let lens = [1usize, 128, 129, 300, 7, 1000, 64, 256, 5, 2, 77, 129, 3000];
    let mut segs = vec![];
    let mut off = 0;
    for &n in &lens {
        segs.push((off, n));
        off += n.div_ceil(128) * 128;
    }
    let total = off;
    // Pieces as they come from autodiff: one axis, or (lengths with a divisor below) two or three axes narrowed
    // from wider ones, 64 floats apart more than their length: padded rows, as CUDA lays out a matrix's gradient,
    // read in place by the kernel.
    let rows_of = |n: usize| [30, 10, 4, 3].into_iter().find(|r| n.is_multiple_of(*r) && n > *r).unwrap_or(1);
    let shape_of = |n: usize| match rows_of(n) {
        1 => vec![n],
        30 => vec![2, 15, n / 30],
        r => vec![r, n / r],
    };
    let padded = |shape: &[usize], dtype: FloatDType| -> FloatTensor<Wgpu> {
        let last = shape.len() - 1;
        let pad = if shape.len() > 1 { 64 } else { 0 };
        let mut wide = shape.to_vec();
        wide[last] += pad;
        let t = Tensor::<Wgpu, 1>::random([wide.iter().product::<usize>()], Distribution::Normal(0.0, 1.0), &dev);
        let t = t.cast(dtype).into_primitive().tensor();
        let t = <Wgpu as FloatTensorOps<Wgpu>>::float_reshape(t, Shape::from(wide.clone()));
        let ranges: Vec<burn::tensor::Slice> = shape.iter().map(|&d| burn::tensor::Slice::from(0..d)).collect();
        <Wgpu as FloatTensorOps<Wgpu>>::float_slice(t, &ranges)
    };
    let flat1 = |p: &FloatTensor<Wgpu>, n: usize| {
        Tensor::<Wgpu, 1>::from_primitive(TensorPrimitive::Float(<Wgpu as FloatTensorOps<Wgpu>>::float_reshape(p.clone(), Shape::new([n]))))
    };
    let pieces: Vec<Option<FloatTensor<Wgpu>>> =
        lens.iter().enumerate().map(|(i, &n)| (i % 3 != 2).then(|| padded(&shape_of(n), dtype_of(i)))).collect();
    assert!(!half || pieces.iter().flatten().any(|p| p.dtype() == DType::F16), "f16 pieces are in the test");
    assert!(pieces.iter().flatten().filter(|p| p.shape().num_dims() == 2).count() >= 3, "padded matrices are in the test");
    assert!(pieces.iter().flatten().any(|p| p.shape().num_dims() == 3), "a padded three-axis piece is in the test");
    let packed =
        polyflow::model::gpu_fused::pack::<Wgpu>(pieces.clone(), &segs, total).unwrap_or_else(|_| panic!("the kernel runs on wgpu"));
    let mut reference = Tensor::<Wgpu, 1>::zeros([total], &dev);
    for (p, &(o, n)) in pieces.iter().zip(&segs) {
        if let Some(p) = p {
            reference = reference.slice_assign(o..o + n, flat1(p, n).cast(FloatDType::F32));
        }
    }
    let (k, r) = (vals(packed.clone()), vals(reference));
    assert_eq!(k.len(), total);
    assert!(k.iter().zip(&r).all(|(a, b)| a.to_bits() == b.to_bits()), "pack differs from slice_assign");
    assert!(r.iter().filter(|v| **v != 0.0).count() > 3000, "the pieces are in it");
    // The inverse for the flat weights: every segment as a packed tensor of its shape and type, holding its values
    // (f16 copies rounded as burn's cast rounds: the half working copies' products see what the cast gave them).
    let shapes: Vec<Shape> = lens.iter().map(|&n| Shape::from(shape_of(n))).collect();
    let dtypes: Vec<DType> = (0..lens.len()).map(|i| dtype_of(i + 2).into()).collect();
    // The tensors the copies replace: alone (their buffers taken), held elsewhere too (a clone, which must keep its
    // values), none, and padded views (whose buffers are not theirs alone, nor packed).
    let ones = |i: usize| Tensor::<Wgpu, 1>::ones([lens[i]], &dev).cast(FloatDType::from(dtypes[i])).into_primitive().tensor();
    let shaped = |t: FloatTensor<Wgpu>, i: usize| <Wgpu as FloatTensorOps<Wgpu>>::float_reshape(t, shapes[i].clone());
    let mut kept = vec![];
    let old: Vec<Option<FloatTensor<Wgpu>>> = (0..lens.len())
        .map(|i| match i % 4 {
            0 => Some(shaped(ones(i), i)),
            1 => {
                let t = shaped(ones(i), i);
                kept.push((i, t.clone()));
                Some(t)
            }
            2 => None,
            _ => Some(padded(&shape_of(lens[i]), FloatDType::from(dtypes[i]))),
        })
        .collect();
    let copies: Vec<FloatTensor<Wgpu>> =
        polyflow::model::gpu_fused::unpack::<Wgpu>(&packed, &segs, &shapes, &dtypes, old).expect("the kernel runs on wgpu");
    assert_eq!(copies.len(), segs.len());
    for (i, t) in kept {
        assert!(vals(flat1(&t, lens[i])).iter().all(|v| *v == 1.0), "segment {i}: a tensor held elsewhere was written");
    }
    for (((c, &(o, n)), shape), dt) in copies.into_iter().zip(&segs).zip(&shapes).zip(&dtypes) {
        assert_eq!((&c.shape(), c.dtype()), (shape, *dt), "segment at {o}");
        let want = packed.clone().narrow(0, o, n).cast(*dt);
        let (got, want) = (vals(flat1(&c, n)), vals(want));
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "segment at {o} ({dt:?})");
        assert_eq!(got.len(), n);
    }
    assert!(!half || dtypes.iter().filter(|d| **d == DType::F16).count() >= 3, "f16 copies are in the test");
    // Nothing to copy: the caller's slice_assign path (a zero buffer).
    assert!(polyflow::model::gpu_fused::pack::<Wgpu>(vec![None, None], &segs[..2], 256).is_err());
}

/// What `Block::attention` composes: heads from the packed projection, q scaled, softmax, heads merged; with
/// `autocast`, the softmax in f32 from the scores' type and its probabilities cast back to it (f16 here).
///
/// # Shapes
/// `qkv: [B, N, 3·D]` → `[B, N, D]`
fn composed_attention<B: burn::tensor::backend::Backend>(
    qkv: burn::tensor::Tensor<B, 3>,
    h: usize,
    autocast: bool,
) -> burn::tensor::Tensor<B, 3> {
    use burn::tensor::{activation, FloatDType};
    let [b, n, d3] = qkv.dims();
    let (d, hd) = (d3 / 3, d3 / 3 / h);
    let qkv = qkv.reshape([b, n, 3, h, hd]).permute([2, 0, 3, 1, 4]); // [3, B, H, N, hd]
    let q = qkv.clone().narrow(0, 0, 1).reshape([b, h, n, hd]) * (1.0 / (hd as f64).sqrt());
    let k = qkv.clone().narrow(0, 1, 1).reshape([b, h, n, hd]);
    let v = qkv.narrow(0, 2, 1).reshape([b, h, n, hd]);
    let scores = q.matmul(k.swap_dims(2, 3)); // [B, H, N, N]
    let att = match autocast {
        true => activation::softmax(scores.cast(FloatDType::F32), 3).cast(FloatDType::F16),
        false => activation::softmax(scores, 3),
    };
    att.matmul(v).swap_dims(1, 2).reshape([b, n, d])
}

/// The attention as one autodiff node (`gpu_fused::attention`: head split kernel, burn's products, the softmax
/// kernel, head merge kernel backward) gives burn's composition's output and packed-projection gradient up to
/// float rounding, tracked and in inference; heads of 1, 3 and 64 floats, a sequence not a power of two, one head.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_attention_node_matches_burns_composition() {
    use burn::tensor::{Distribution, Tensor};
    use polyflow::model::gpu_fused::attention;
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    // The last: the projection's rows padded (a narrowed view, 64 floats more apart), read in place.
    for (b, n, h, hd, pad) in [(2, 65, 3, 64, 0), (3, 17, 4, 3, 0), (1, 197, 2, 1, 0), (2, 5, 1, 8, 0), (2, 9, 2, 4, 64)] {
        let d3 = 3 * h * hd;
        let qkv = Tensor::<A, 3>::random([b, n, d3 + pad], Distribution::Normal(0.0, 1.5), &dev).narrow(2, 0, d3);
        let w = Tensor::<A, 3>::random([b, n, h * hd], Distribution::Normal(0.0, 1.0), &dev);
        let run = |kernel: bool| {
            let x = qkv.clone().detach().require_grad();
            let y = if kernel {
                attention(x.clone(), n, h).expect("the attention node runs on Autodiff<Wgpu>")
            } else {
                composed_attention(x.clone(), h, false)
            };
            assert_eq!(y.dims(), [b, n, h * hd]);
            let g = (y.clone() * w.clone()).sum().backward();
            [vals(y.inner()), vals(x.grad(&g).unwrap())]
        };
        let (k, r) = (run(true), run(false));
        let what = format!("attention b={b} n={n} heads={h} hd={hd}");
        near(&format!("{what} y"), &k[0], &r[0], 1e-5);
        near(&format!("{what} dqkv"), &k[1], &r[1], 1e-5);
        assert!(k[1].iter().all(|v| v.is_finite()) && k[1].iter().any(|v| *v != 0.0), "{what}: a gradient");
        let x = qkv.clone().inner();
        let plain = attention(x.clone(), n, h).expect("and on Wgpu");
        near(&format!("{what} inference"), &vals(plain), &vals(composed_attention(x, h, false)), 1e-5);
        // The same tokens as rows, [B·N, 3·D] (how the blocks hand them over on the GPU backends): the node's
        // output and gradient have the rows' shape and the same values.
        let x = qkv.clone().detach().reshape([b * n, d3]).require_grad();
        let y = attention(x.clone(), n, h).expect("the node takes rows");
        assert_eq!(y.dims(), [b * n, h * hd]);
        let g = (y.clone() * w.clone().reshape([b * n, h * hd])).sum().backward();
        let dx = x.grad(&g).unwrap();
        assert_eq!(dx.dims(), [b * n, d3]);
        near(&format!("{what} rows y"), &vals(y.inner()), &k[0], 1e-6);
        near(&format!("{what} rows dqkv"), &vals(dx), &k[1], 1e-6);
    }
    // Heads that do not divide the width, or rows that are not whole examples: the caller's composition.
    let x = Tensor::<A, 3>::random([1, 4, 18], Distribution::Normal(0.0, 1.0), &dev);
    assert!(attention(x.clone(), 4, 4).is_none(), "18 is not 3 × 4 heads × hd");
    let x = Tensor::<A, 2>::random([10, 12], Distribution::Normal(0.0, 1.0), &dev);
    assert!(attention(x.clone(), 3, 2).is_none(), "10 rows are not examples of 3 tokens");
    assert!(attention(x, 5, 2).is_some());
    // The heads' merge and split kernels read rows at their pitch (CUDA pads a product's rows, of hd or of the
    // width): from narrowed views, against burn's transpose and reshapes.
    use burn::tensor::{Shape, TensorPrimitive};
    use polyflow::model::gpu_fused::GpuKernels;
    let t = |p| Tensor::<Wgpu, 2>::from_primitive(TensorPrimitive::Float(p));
    let o = Tensor::<Wgpu, 4>::random([2, 3, 5, 16], Distribution::Normal(0.0, 1.0), &dev).narrow(3, 0, 8); // [B, H, N, hd]
    let merged = t(<Wgpu as GpuKernels>::heads_merge(o.clone().into_primitive().tensor(), Shape::new([10, 24])));
    near("heads merged", &vals(merged), &vals(o.swap_dims(1, 2).reshape([10, 24])), 0.0);
    let g = Tensor::<Wgpu, 2>::random([10, 32], Distribution::Normal(0.0, 1.0), &dev).narrow(1, 0, 24); // [B·N, H·hd]
    let split = Tensor::<Wgpu, 4>::from_primitive(TensorPrimitive::Float(<Wgpu as GpuKernels>::heads_split(
        g.clone().into_primitive().tensor(),
        5,
        3,
    )));
    assert_eq!(split.dims(), [2, 3, 5, 8]);
    near("heads split", &vals(split), &vals(g.reshape([2, 5, 3, 8]).swap_dims(1, 2)), 0.0);
}

/// GELU (tanh approximation) as one autodiff node (`gpu_fused::gelu_tanh`: a kernel each way) gives burn's
/// composition (`block::gelu_tanh`) output and gradient up to float rounding, tracked and in inference, on packed
/// and padded rows (a narrowed view, as CUDA pads a product's output) and large arguments of both signs; in f16
/// (where the adapter has it) `gelu(x as f32) as f16` within one f16 rounding, the output staying f16.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_gelu_node_matches_burns_composition() {
    use burn::tensor::{Distribution, FloatDType, Tensor};
    use polyflow::model::block::gelu_tanh as composed;
    use polyflow::model::gpu_fused::gelu_tanh;
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    for (rows, n, pad) in [(7, 33, 0), (5, 40, 24), (1, 1, 0)] {
        let x0 = Tensor::<A, 2>::random([rows, n + pad], Distribution::Normal(0.0, 4.0), &dev).narrow(1, 0, n);
        let w = Tensor::<A, 2>::random([rows, n], Distribution::Normal(0.0, 1.0), &dev);
        let run = |kernel: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if kernel { gelu_tanh(x.clone()).expect("the node runs on Autodiff<Wgpu>") } else { composed(x.clone()) };
            let g = (y.clone() * w.clone()).sum().backward();
            [vals(y.inner()), vals(x.grad(&g).unwrap())]
        };
        let (k, r) = (run(true), run(false));
        near(&format!("gelu {rows}×{n}+{pad} y"), &k[0], &r[0], 1e-5);
        near(&format!("gelu {rows}×{n}+{pad} dx"), &k[1], &r[1], 1e-5);
        let x = x0.clone().inner();
        let plain = gelu_tanh(x.clone()).expect("and on Wgpu");
        near(&format!("gelu {rows}×{n}+{pad} inference"), &vals(plain), &vals(composed(x)), 1e-5);
    }
    let edges = Tensor::<Wgpu, 1>::from_floats([-30.0, -9.0, -3.0, -0.5, 0.0, 1e-3, 0.5, 3.0, 9.0, 30.0], &dev);
    let (k, r) = (vals(gelu_tanh(edges.clone()).unwrap()), vals(composed(edges)));
    assert!(k.iter().all(|v| v.is_finite()), "{k:?}");
    near("gelu at large arguments", &k, &r, 1e-6);
    if has_f16("the_gelu_node_matches_burns_composition") {
        let x = Tensor::<Wgpu, 2>::random([9, 70], Distribution::Normal(0.0, 3.0), &dev).cast(FloatDType::F16);
        let y = gelu_tanh(x.clone()).expect("the node takes f16");
        assert_eq!(y.dtype(), burn::tensor::DType::F16);
        let want = vals(composed(x.cast(FloatDType::F32)).cast(FloatDType::F16));
        within_one_f16_step("f16 gelu", &vals(y), &want, 2f32.powi(-20));
    }
}

/// A block on its tokens as rows (`Block::forward_rows`, what the GPU backends run: no reshape around the linear
/// layers) gives the block on `[B, N, D]` (`forward_composed`) its output and every gradient, with stochastic
/// depth dropping one example's branches, in f32 and in f16 where the adapter has it.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn blocks_on_token_rows_match_blocks_on_tokens() {
    use burn::module::AutodiffModule;
    use burn::tensor::{Distribution, Tensor, TensorData};
    use polyflow::model::block::{Arith, Block};
    use polyflow::model::init::Init;
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    assert!(polyflow::model::gpu_fused::token_rows::<A>());
    let (b, n, d) = (3, 17, 24);
    let f16 = has_f16("blocks_on_token_rows_match_blocks_on_tokens");
    let ariths: &[Arith] = if f16 { &[Arith::F32, Arith::F16] } else { &[Arith::F32] };
    for &arith in ariths {
        let mut blk = Block::<A>::new(d, 4, 2 * d, 1e-6, true, &mut Init::new(7), &dev);
        blk.arith = arith;
        let mask = |v: [f32; 3]| Tensor::<A, 3>::from_data(TensorData::new(v.to_vec(), [3, 1, 1]), &dev);
        let keep = (mask([1.0, 0.0, 1.0]), mask([1.0, 1.0, 0.0]));
        let x0 = Tensor::<A, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<A, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &dev);
        let run = |rows: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if rows {
                blk.forward_rows(x.clone().reshape([b * n, d]), b, Some(&keep)).reshape([b, n, d])
            } else {
                blk.forward_composed(x.clone(), Some(&keep))
            };
            let g = (y.clone() * w.clone()).sum().backward();
            let mut out = vec![vals(y.inner()), vals(x.grad(&g).unwrap())];
            for p in [&blk.qkv.weight, &blk.fc1.weight, &blk.fc2.weight] {
                out.push(vals(p.grad(&g).unwrap()));
            }
            for p in [&blk.proj.bias, &blk.fc2.bias] {
                out.push(vals(p.as_ref().unwrap().grad(&g).unwrap()));
            }
            out.push(vals(blk.norm2.gamma.grad(&g).unwrap()));
            out
        };
        let (r, c) = (run(true), run(false));
        let tol = if arith == Arith::F32 { 1e-5 } else { 1e-2 };
        for (i, what) in ["y", "dx", "dW qkv", "dW fc1", "dW fc2", "db proj", "db fc2", "dγ norm2"].iter().enumerate() {
            near(&format!("{arith:?} rows {what}"), &r[i], &c[i], tol);
        }
        // Inference too (the backend's attention in f32).
        let inner = blk.valid();
        let x = x0.clone().inner();
        let y = inner.forward_rows(x.clone().reshape([b * n, d]), b, None).reshape([b, n, d]);
        near(&format!("{arith:?} rows inference"), &vals(y), &vals(inner.forward_composed(x, None)), tol);
    }
}

/// In f16 (the half type lavapipe has; bf16 takes the same kernels with another `#[define]`d type) the attention
/// node gives the autocast-style composition `Block::attention` runs in half precision (products in f16, softmax
/// in f32 from f16 scores, probabilities back to f16) up to f16 rounding, output and gradient, tracked and in
/// inference; and the softmax kernel on f16 tensors gives `softmax(x as f32) as f16`. The node's output stays f16.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_attention_node_in_f16_matches_the_autocast_composition() {
    use burn::tensor::{activation, backend::Backend, DType, Distribution, FloatDType, Tensor};
    use polyflow::model::gpu_fused::{attention, softmax_last};
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    assert!(
        <Wgpu as Backend>::supports_dtype(&dev, DType::F16),
        "this test needs a Vulkan adapter with 16-bit float arithmetic (shaderFloat16; lavapipe has it)"
    );
    for (b, n, h, hd) in [(2, 65, 3, 64), (3, 17, 4, 3), (1, 197, 2, 8)] {
        let d3 = 3 * h * hd;
        let qkv = Tensor::<A, 3>::random([b, n, d3], Distribution::Normal(0.0, 1.5), &dev);
        let w = Tensor::<A, 3>::random([b, n, h * hd], Distribution::Normal(0.0, 1.0), &dev);
        let run = |kernel: bool| {
            // The leaf in f32 (as the model's weights), the node's input f16 (as the bf16/f16 projection's output).
            let x = qkv.clone().detach().require_grad();
            let x16 = x.clone().cast(FloatDType::F16);
            let y = if kernel { attention(x16, n, h).expect("the attention node takes f16") } else { composed_attention(x16, h, true) };
            assert_eq!(y.dtype(), DType::F16);
            let g = (y.clone().cast(FloatDType::F32) * w.clone()).sum().backward();
            [vals(y.inner()), vals(x.grad(&g).unwrap())]
        };
        let (k, r) = (run(true), run(false));
        let what = format!("f16 attention b={b} n={n} heads={h} hd={hd}");
        near(&format!("{what} y"), &k[0], &r[0], 4e-3);
        near(&format!("{what} dqkv"), &k[1], &r[1], 1e-2);
        assert!(k[1].iter().all(|v| v.is_finite()) && k[1].iter().any(|v| *v != 0.0), "{what}: a gradient");
        let x = qkv.clone().inner().cast(FloatDType::F16);
        let plain = attention(x.clone(), n, h).expect("and on Wgpu");
        assert_eq!(plain.dtype(), DType::F16);
        near(&format!("{what} inference"), &vals(plain), &vals(composed_attention(x, h, true)), 4e-3);
    }
    let x = Tensor::<Wgpu, 4>::random([2, 3, 65, 65], Distribution::Normal(0.0, 3.0), &dev).cast(FloatDType::F16);
    let y = softmax_last(x.clone());
    assert_eq!(y.dtype(), DType::F16);
    // Within one f16 step of `softmax(x as f32) as f16` everywhere (f32 arithmetic, one rounding): a softmax
    // computed in f16 would be several steps off somewhere.
    let (k, r) = (vals(y), vals(activation::softmax(x.cast(FloatDType::F32), 3).cast(FloatDType::F16)));
    within_one_f16_step("f16 softmax", &k, &r, 2f32.powi(-24));
}

/// The GPU backends' `linear` (leading axes flattened into one product, product and bias one node of one operation
/// each way, the bias's gradient as polyflow's column sums) gives burn's batched `linear`'s output and gradients
/// (input, weight, bias) up to float rounding, in inference and with an untracked input too, and the right bias
/// gradient over more rows than burn's own reductions cover on lavapipe.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn flattened_linear_matches_burns_linear() {
    use burn::tensor::{Distribution, FloatDType, Tensor};
    type A = Autodiff<Wgpu>;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    assert!(polyflow::model::gpu_fused::gpu_backend::<A>() && !polyflow::model::gpu_fused::gpu_backend::<Flex>());
    let normal = Distribution::Normal(0.0, 1.0);
    let x0 = Tensor::<A, 3>::random([5, 33, 48], normal, &dev);
    let w0 = Tensor::<A, 2>::random([48, 20], normal, &dev);
    let b0 = Tensor::<A, 1>::random([20], normal, &dev);
    let gy = Tensor::<A, 3>::random([5, 33, 20], normal, &dev);
    let run = |flat: bool| {
        let (x, w, b) = (x0.clone().detach().require_grad(), w0.clone().detach().require_grad(), b0.clone().detach().require_grad());
        let y = if flat {
            polyflow::model::gpu_fused::linear_rows(x.clone(), w.clone(), Some(b.clone()))
        } else {
            burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()))
        };
        let g = (y.clone() * gy.clone()).sum().backward();
        [vals(y.inner()), vals(x.grad(&g).unwrap()), vals(w.grad(&g).unwrap()), vals(b.grad(&g).unwrap())]
    };
    let (f, r) = (run(true), run(false));
    for (i, what) in ["y", "dx", "dw", "db"].iter().enumerate() {
        near(&format!("linear {what}"), &f[i], &r[i], 1e-5);
    }
    // The linear node's forward operation alone (inference, the plain backend), and its backward with an input that
    // is not tracked (only the weight's and the bias's gradients computed): the same values.
    let plain = polyflow::model::gpu_fused::linear_rows(x0.clone().inner(), w0.clone().inner(), Some(b0.clone().inner()));
    near("linear inference", &vals(plain), &f[0], 1e-6);
    let (w, b) = (w0.clone().detach().require_grad(), b0.clone().detach().require_grad());
    let y = polyflow::model::gpu_fused::linear_rows(x0.clone().detach(), w.clone(), Some(b.clone()));
    let g = (y * gy.clone()).sum().backward();
    near("linear dw, input not tracked", &vals(w.grad(&g).unwrap()), &f[2], 1e-6);
    near("linear db, input not tracked", &vals(b.grad(&g).unwrap()), &f[3], 1e-6);
    // More rows (examples × tokens) than burn's reductions cover on lavapipe (65,532): the bias's gradient is
    // polyflow's column sums, checked against the host's sums of the output gradient; in f32, and in f16 where
    // the adapter has it (as `precision = "f16"` runs a linear layer: input, weight and bias cast to f16, the
    // sums in f32 rounded once to f16, the f32 bias's gradient back through the cast).
    let (rows, d) = (70_001usize, 3usize);
    let f16 = has_f16("flattened_linear_matches_burns_linear");
    let types: &[FloatDType] = if f16 { &[FloatDType::F32, FloatDType::F16] } else { &[FloatDType::F32] };
    eprintln!("bias gradients over {rows} rows checked in {types:?}");
    for &ty in types {
        let x = Tensor::<A, 3>::random([1, rows, 4], normal, &dev).require_grad();
        let w = Tensor::<A, 2>::random([4, d], normal, &dev).require_grad();
        let b = Tensor::<A, 1>::zeros([d], &dev).require_grad();
        let gy = Tensor::<A, 3>::random([1, rows, d], normal, &dev).cast(ty);
        let y = polyflow::model::gpu_fused::linear_rows(x.cast(ty), w.cast(ty), Some(b.clone().cast(ty)));
        assert_eq!(y.dtype(), gy.dtype());
        let g = (y * gy.clone()).cast(FloatDType::F32).sum().backward();
        let db = vals(b.grad(&g).unwrap());
        let host = vals(gy.inner().cast(FloatDType::F32));
        let want: Vec<f32> = (0..d).map(|c| (0..rows).map(|r| f64::from(host[r * d + c])).sum::<f64>() as f32).collect();
        // f32: summation order; f16: one rounding of the f32 sum to f16 (11 bits), nothing accumulated in f16.
        let rel = if ty == FloatDType::F32 { 1e-4 * (rows as f32).sqrt() } else { 0.0 };
        for (c, (a, e)) in db.iter().zip(&want).enumerate() {
            let tol = rel + e.abs() * 2f32.powi(if ty == FloatDType::F32 { -20 } else { -11 }) + 1e-3;
            assert!((a - e).abs() <= tol, "{ty:?} bias gradient, column {c}: {a} against the host's {e}");
        }
    }
}

/// `precision = "f16"` on a wgpu adapter: where the adapter reports 16-bit float arithmetic (Vulkan's
/// shaderFloat16) training runs with finite losses; where it does not, training is refused before the first
/// step with an error naming the device and what to use, instead of a shader failing to compile mid-step.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn f16_on_wgpu_trains_where_the_adapter_has_it_and_is_refused_where_not() {
    use burn::tensor::backend::Backend;
    let (tasks, model) = two_image_tasks();
    let mut cfg = config(model, 0, 1, Some(16));
    cfg.f16 = true;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let supported = <Wgpu as Backend>::supports_dtype(&dev, burn::tensor::DType::F16);
    eprintln!("f16 on this adapter: {}", if supported { "reported, trained" } else { "not reported, refused" });
    if supported {
        // Trains with finite losses (checked there, on the same configuration with checkpoints on).
        half_working_copies_are_the_casts_bits(&cfg.model, &tasks);
    } else {
        let r = run::<Autodiff<Wgpu>>(&cfg, &tasks, None, None, &[dev], &|_, _, _| {}, &mut |_| {});
        let e = r.expect_err("refused");
        assert!(e.contains("precision = \"f16\" is not supported by the device") && e.contains("\"f32\""), "{e}");
    }
}

/// f16 training with the blocks' product weights as half working copies of the flat optimizer's f32 masters (the
/// default on the GPU backends) takes the bits of training with f32 parameters cast in every pass
/// (`f32_params`): the same losses and final weights exactly, with whole batches and with micro-batches of 3 on
/// 2 replicas (their gradients summed in f32), with finite losses; checkpoints hold the f32 masters (the same as
/// the casts' run's), and a run resumed from one ends with the uninterrupted run's weights.
fn half_working_copies_are_the_casts_bits(model: &ModelConfig, tasks: &[TaskRun]) {
    use polyflow::train::run::Resume;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    for (micro, replicas) in [(0, 1), (3, 2)] {
        let go = |f32_params: bool, resume: Option<Resume>| {
            let mut cfg = config(model.clone(), micro, replicas, Some(16));
            (cfg.f16, cfg.f32_params, cfg.checkpoint_every) = (true, f32_params, 3);
            assert_eq!(polyflow::train::run::half_copies::<Autodiff<Wgpu>>(&cfg), !f32_params, "half working copies chosen");
            let mut saved: Vec<Resume> = vec![];
            let o =
                run::<Autodiff<Wgpu>>(&cfg, tasks, None, resume, std::slice::from_ref(&dev), &|_, _, _| {}, &mut |r| saved.push(r.clone()))
                    .unwrap();
            (o, saved)
        };
        let what = format!("micro-batch {micro}, {replicas} replicas");
        let ((copies, saved_copies), (cast, saved_cast)) = (go(false, None), go(true, None));
        assert!(copies.steps.iter().all(|s| s.loss.is_finite()), "{what}: {:?}", copies.steps.iter().map(|s| s.loss).collect::<Vec<_>>());
        let losses = |o: &Outcome| o.steps.iter().map(|s| s.loss.to_bits()).collect::<Vec<_>>();
        assert_eq!(losses(&copies), losses(&cast), "{what}: losses");
        assert_eq!(copies.weights, cast.weights, "{what}: final weights");
        assert!(!saved_copies.is_empty(), "{what}: a checkpoint was written");
        for (a, b) in saved_copies.iter().zip(&saved_cast) {
            assert_eq!((a.step, &a.weights, &a.opt), (b.step, &b.weights, &b.opt), "{what}: checkpoint");
        }
        let (resumed, _) = go(false, Some(saved_copies[0].clone()));
        assert_eq!(resumed.weights, copies.weights, "{what}: resumed from update {}", saved_copies[0].step);
    }
}

/// burn's fusion after the warm-up of `bench-model --backend wgpu --only train` on a tiny ViT with `steps` timed
/// updates (`BURN_FUSION_LOG=full`): how many times it searched for a plan (`[explorer] explore`) and how many
/// times it ran a stored one (`[plan] cache hit`).
fn fusion_after_warm_up(steps: usize) -> (usize, usize) {
    let mut args = vec!["bench-model", "--backend", "wgpu", "--only", "train", "--dim", "16", "--depth", "2", "--heads", "2"];
    args.extend_from_slice(&["--mlp", "32", "--image", "8", "--patch", "4", "--classes", "10", "--batch", "4"]);
    let steps = steps.to_string();
    args.extend_from_slice(&["--steps", &steps]);
    let out = Command::new(BIN).args(&args).env("BURN_FUSION_LOG", "full").current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "{tail}");
    let (_, after) = err.split_once("train warm-up step 2").expect("the warm-up's last step is reported");
    let count = |prefix: &str| after.lines().filter(|l| l.starts_with(prefix)).count();
    (count("[explorer] explore"), count("[plan] cache hit"))
}

/// A training step is the same sequence of operations every time, so burn's fusion executes it from stored
/// plans after the warm-up instead of searching it again: the explorations after the warm-up do not grow with
/// the number of updates (those left are the first timed update's and the model's release at exit), while the
/// stored plans run more often. They did grow: the flat optimizer released the gradients in a hash map's order,
/// another order every update, so every update searched its optimizer segment again (O(n²) in its ~130
/// operations), most of a ViT-Ti step's host time on an H200 (BENCHMARKS.md, "GPU, 2026-12-04").
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn training_steps_run_from_stored_fusion_plans() {
    let ((explored_few, hits_few), (explored_many, hits_many)) = (fusion_after_warm_up(2), fusion_after_warm_up(8));
    assert!(hits_many > hits_few, "the fusion log is read: {hits_few} stored plans run in 2 updates, {hits_many} in 8");
    // The few explorations left vary a little from run to run (8 to 10 here, wherever the count of updates); a
    // search of every update would add dozens per update (36 on this model before the fix).
    assert!(
        explored_many < explored_few + 6,
        "{explored_few} explorations after 2 updates, {explored_many} after 8: the updates are searched again"
    );
}

/// `bench-model --verify` on wgpu: one step's loss, gradients and the inference logits with polyflow's GPU
/// kernels agree with burn's compositions (what `.ci/gpu_check.sh` runs first on a real GPU, where a wrong
/// memory layout once went unseen: CUDA pads rows that wgpu packs). Widths chosen so that rows are not a power
/// of two long (24 wide, 17 tokens).
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn bench_model_verify_compares_the_kernels_with_burns_compositions() {
    let mut args = vec!["bench-model", "--backend", "wgpu", "--verify", "--only", "train", "--steps", "1", "--dim", "24", "--depth", "2"];
    args.extend_from_slice(&["--heads", "2", "--mlp", "48", "--image", "16", "--patch", "4", "--classes", "10", "--batch", "3"]);
    let out = Command::new(BIN).args(&args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let v = &line["verify"];
    assert_eq!(v["ok"], true, "{v}");
    for k in ["loss", "logits", "grads"] {
        let d = v[k].as_f64().unwrap();
        assert!(d <= 1e-4, "{k}: {d}");
    }
    // the kernels really ran: two paths that agree to the last bit everywhere would mean one of them did not
    assert!(v["grads"].as_f64().unwrap() > 0.0, "{v}");
}

/// Two linear layers, one larger than the flat optimizer copies out of its flat weights (a view on the GPU
/// backends) and one smaller (a copy from the unpack kernel).
#[derive(burn::module::Module, Debug)]
struct BigAndSmall<B: burn::tensor::backend::Backend> {
    big: burn::nn::Linear<B>,
    small: burn::nn::Linear<B>,
}

/// The flat update's kernel (`gpu_fused::flat_update`: one launch for the scaled gradient, the moments and the
/// weights) takes the CPU composition's updates from the same gradients within float rounding: AdamW with the clip
/// factor on the device and a layer that has no gradient yet (no decay there: the mask), SGD with momentum, and
/// f16's host factor (`step_scaled_flat`); four updates each.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_flat_update_kernel_takes_the_compositions_updates() {
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::{backend::AutodiffBackend, Tensor, TensorData};
    use polyflow::train::optim::SharedOptimizer;
    fn model<B: AutodiffBackend>(dev: &B::Device) -> BigAndSmall<B> {
        let w = |i: usize, o: usize, salt: usize| {
            let v: Vec<f32> = (0..i * o).map(|k| (((k * 7 + salt) % 13) as f32 - 6.0) / 50.0).collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [i, o]), dev)
        };
        let mut big = burn::nn::LinearConfig::new(40, 30).init::<B>(dev);
        big.weight = burn::module::Param::from_tensor(w(40, 30, 1));
        big.bias = Some(burn::module::Param::from_tensor(w(1, 30, 3).reshape([30])));
        let mut small = burn::nn::LinearConfig::new(30, 3).init::<B>(dev);
        small.weight = burn::module::Param::from_tensor(w(30, 3, 2));
        small.bias = Some(burn::module::Param::from_tensor(w(1, 3, 4).reshape([3])));
        BigAndSmall { big, small }
    }
    // The same gradients on both backends, from the host: `small` has none before update 2 (not started).
    fn grads<B: AutodiffBackend>(m: &BigAndSmall<B>, step: usize, dev: &B::Device) -> GradientsParams {
        let mut g = GradientsParams::new();
        let t = |n: usize, salt: usize| -> Vec<f32> { (0..n).map(|k| (((k * 5 + salt + 3 * step) % 17) as f32 - 8.0) / 3.0).collect() };
        g.register::<B::InnerBackend, 2>(m.big.weight.id, Tensor::from_data(TensorData::new(t(1200, 1), [40, 30]), dev));
        g.register::<B::InnerBackend, 1>(m.big.bias.as_ref().unwrap().id, Tensor::from_data(TensorData::new(t(30, 2), [30]), dev));
        if step >= 2 {
            g.register::<B::InnerBackend, 2>(m.small.weight.id, Tensor::from_data(TensorData::new(t(90, 3), [30, 3]), dev));
        }
        g
    }
    fn params<B: AutodiffBackend>(m: &BigAndSmall<B>) -> Vec<Vec<f32>> {
        vec![
            vals(m.big.weight.val()),
            vals(m.big.bias.as_ref().unwrap().val()),
            vals(m.small.weight.val()),
            vals(m.small.bias.as_ref().unwrap().val()),
        ]
    }
    type G = Autodiff<Wgpu>;
    type C = Autodiff<Flex>;
    let (gd, cd) = (burn::backend::wgpu::WgpuDevice::DefaultDevice, Default::default());
    let kinds = [
        (OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 }, Some(0.5), false),
        (OptKind::Sgd { momentum: 0.9 }, Some(0.5), false),
        (OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 }, Some(0.5), true),
    ];
    for (kind, clip, scaled) in kinds {
        let what = format!("{kind:?}, loss-scaled {scaled}");
        let (mut og, mut oc) = (SharedOptimizer::<G>::new(kind, clip), SharedOptimizer::<C>::new(kind, clip));
        let (mut mg, mut mc) = (model::<G>(&gd), model::<C>(&cd));
        for step in 0..4 {
            let (gg, gc) = (grads(&mg, step, &gd), grads(&mc, step, &cd));
            if scaled {
                let (a, _, _) = og.step_scaled_flat(mg, gg, 0.01, 4.0);
                let (b, _, _) = oc.step_scaled_flat(mc, gc, 0.01, 4.0);
                (mg, mc) = (a, b);
            } else {
                let (a, _) = og.step_deferred(mg, gg, 0.01);
                let (b, _) = oc.step_deferred(mc, gc, 0.01);
                (mg, mc) = (a, b);
            }
            for (k, (a, b)) in params(&mg).iter().zip(&params(&mc)).enumerate() {
                near(&format!("{what}, update {step}, parameter {k}"), a, b, 1e-5);
            }
            if step < 2 {
                assert_eq!(params(&mg)[2], vals(model::<C>(&cd).small.weight.val()), "{what}: not started, not decayed");
            }
        }
        assert_eq!(og.export().len(), oc.export().len());
        for ((na, a), (nb, b)) in og.export().iter().zip(&oc.export()) {
            assert_eq!(na, nb);
            near(&format!("{what}: moment {na}"), a, b, 1e-5);
        }
        assert_eq!(mg.num_params(), mc.num_params());
    }
}

/// The flat optimizer's updates on wgpu (a parameter past `COPY_MAX` handed back as a view of the flat weights,
/// the others as the unpack kernel's copies in their shapes) take the CPU's per-tensor updates within 1e-5 over
/// three updates, clipped by the same gradient norm (more than a million gradients: burn's `sum` would have
/// counted a quarter of them), and every parameter keeps its shape. SGD with momentum: Adam would turn the
/// rounding differences of tiny gradients into steps of up to the LR (the sign of one flipped between the
/// backends).
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn flat_updates_hand_back_views_and_copies_with_the_cpus_values() {
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::{backend::AutodiffBackend, Tensor, TensorData};
    use polyflow::train::flat::COPY_MAX;
    use polyflow::train::optim::SharedOptimizer;
    let big_in = COPY_MAX / 1000 + 1; // (big_in · 1000 + 1000 bias) > COPY_MAX: the weight stays a view
    assert!(big_in * 1000 > COPY_MAX);
    fn model<B: AutodiffBackend>(big_in: usize, dev: &B::Device) -> BigAndSmall<B> {
        let w = |i: usize, o: usize, salt: usize| {
            let v: Vec<f32> = (0..i * o).map(|k| (((k * 7 + salt) % 13) as f32 - 6.0) / 50.0).collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [i, o]), dev)
        };
        // Weights and biases set (`init` would draw them from each backend's own generator).
        let mut big = burn::nn::LinearConfig::new(big_in, 1000).init::<B>(dev);
        big.weight = burn::module::Param::from_tensor(w(big_in, 1000, 1));
        big.bias = Some(burn::module::Param::from_tensor(w(1, 1000, 3).reshape([1000])));
        let mut small = burn::nn::LinearConfig::new(1000, 3).init::<B>(dev);
        small.weight = burn::module::Param::from_tensor(w(1000, 3, 2));
        small.bias = Some(burn::module::Param::from_tensor(w(1, 3, 4).reshape([3])));
        BigAndSmall { big, small }
    }
    fn grads<B: AutodiffBackend>(m: &BigAndSmall<B>, big_in: usize, dev: &B::Device) -> GradientsParams {
        let x: Vec<f32> = (0..2 * big_in).map(|k| ((k % 11) as f32 - 5.0) / 10.0).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(x, [2, big_in]), dev);
        let y = m.small.forward(m.big.forward(x));
        GradientsParams::from_grads((y.clone() * y).mean().backward(), m)
    }
    fn params<B: AutodiffBackend>(m: &BigAndSmall<B>) -> Vec<(Vec<usize>, Vec<f32>)> {
        let p2 = |t: Tensor<B, 2>| (t.dims().to_vec(), vals(t));
        let p1 = |t: Tensor<B, 1>| (t.dims().to_vec(), vals(t));
        vec![
            p2(m.big.weight.val()),
            p1(m.big.bias.as_ref().unwrap().val()),
            p2(m.small.weight.val()),
            p1(m.small.bias.as_ref().unwrap().val()),
        ]
    }
    type G = Autodiff<Wgpu>;
    type C = Autodiff<Flex>;
    let (gd, cd) = (burn::backend::wgpu::WgpuDevice::DefaultDevice, Default::default());
    let kind = OptKind::Sgd { momentum: 0.9 };
    let (mut og, mut oc) = (SharedOptimizer::<G>::new(kind, Some(1.0)), SharedOptimizer::<C>::new(kind, Some(1.0)));
    let (mut mg, mut mc) = (model::<G>(big_in, &gd), model::<C>(big_in, &cd));
    for step in 0..3 {
        let gg = grads(&mg, big_in, &gd);
        let (m, ng) = og.step_deferred(mg, gg, 0.01);
        mg = m;
        let gc = grads(&mc, big_in, &cd);
        let (m, nc) = oc.step(mc.clone(), &gc, 0.01);
        mc = m;
        let ng = vals(ng.expect("a norm"))[0] as f64;
        assert!((ng - nc).abs() <= 1e-5 * nc, "update {step}: gradient norm {ng} on wgpu, {nc} on the CPU");
        for (k, ((sg, vg), (sc, vc))) in params(&mg).into_iter().zip(params(&mc)).enumerate() {
            assert_eq!(sg, sc, "update {step}, parameter {k}: shape");
            near(&format!("update {step}, parameter {k}"), &vg, &vc, 1e-5);
        }
    }
    assert_eq!(mg.num_params(), mc.num_params());
}

/// polyflow's squared norm on wgpu equals the host's sum of squares at every size, past the 262,132 elements
/// where burn 0.21's own `sum` over a tensor's elements stops counting on lavapipe. Whether burn's falls short on
/// this adapter is reported on stderr, not asserted (on other adapters it counts them all), so that the day it
/// counts them all on lavapipe too the workaround can go.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn squared_norm_counts_every_element() {
    use burn::tensor::{Tensor, TensorData};
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let mut burn_short = false;
    for n in [1usize, 255, 257, 262_200, 1_049_000, 3_000_001] {
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 1000.0).collect();
        let host: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let g = Tensor::<Wgpu, 1>::from_data(TensorData::new(v, [n]), &dev);
        let ours = vals(polyflow::model::gpu_fused::squared_norm(&g).expect("the kernel runs on wgpu"))[0] as f64;
        assert!((ours - host).abs() <= 1e-5 * host.max(1e-30), "n = {n}: {ours} against the host's {host}");
        let burns = vals(g.powf_scalar(2.0).sum())[0] as f64;
        burn_short |= (burns - host).abs() > 1e-3 * host;
    }
    eprintln!("burn's sum over all elements {} on this adapter", if burn_short { "falls short" } else { "counts them all" });
}

/// With polyflow's GPU kernels off, training slices of more rows (examples × tokens) than burn's reductions along
/// an axis cover on this adapter (lavapipe: 65,532; the bias gradients are then burn's) are refused before
/// training, naming the micro-batch that fits, instead of training with partial bias gradients. With the kernels
/// on (the default; the bias gradients polyflow's column sums in every precision) the same slices pass, in f32
/// and in f16.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn training_slices_longer_than_the_devices_reductions_are_refused() {
    use burn::tensor::Tensor;
    use polyflow::train::run::reductions_cover;
    let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let (mut tasks, mut model) = two_image_tasks();
    // 8×8 patches of one pixel: 64 tokens and the class token; 1,100 examples a batch: 71,500 rows.
    model.geometry[0].1.patch = vec![1, 1];
    for t in &mut tasks {
        t.batch = 1100;
        t.steps = 1;
    }
    let rows = 1100 * 65;
    let counted = vals(Tensor::<Wgpu, 2>::ones([rows, 1], &dev).sum_dim(0))[0] as usize;
    let mut half = config(model.clone(), 0, 1, None);
    half.f16 = true;
    for cfg in [&half, &config(model, 0, 1, None)] {
        let off = reductions_cover::<Autodiff<Wgpu>>(cfg, &tasks, &dev, false).err();
        if counted == rows {
            eprintln!("this adapter's reductions cover {rows} rows: nothing to refuse");
            assert!(off.is_none(), "{off:?}");
        } else {
            let err = off.expect("refused with the kernels off");
            assert!(err.contains("71500 rows") && err.contains("micro_batch = 1008"), "{err}");
        }
        let on = reductions_cover::<Autodiff<Wgpu>>(cfg, &tasks, &dev, true);
        assert!(on.is_ok(), "with the kernels on: {on:?}");
    }
}

/// The loss node (`gpu_fused::classification_loss`, what `train::metrics::loss` runs on the GPU backends) gives
/// burn's composition's loss and logits' gradient (that composition on the CPU, from the same values): softmax
/// and sigmoid, padded logits rows (a narrowed view), soft and multi-hot targets, more rows than a cube has units,
/// a gradient other than 1 flowing in; logits of ±200 stay finite; at logits exactly 0 (a zero-initialized head's
/// first step) the sigmoid's gradient is `σ(0) − t`, where the composition's subgradients of `max` and `|·|` add
/// to `1 − t`; targets that require a gradient are handed back; f16 within one f16 step of the f32 composition.
#[test]
#[ignore = "needs a Vulkan driver (lavapipe: mesa-vulkan-drivers); .ci/run runs it"]
fn the_loss_node_matches_burns_composition() {
    use burn::tensor::{Distribution, FloatDType, Tensor, TensorData};
    use polyflow::model::gpu_fused::classification_loss;
    use polyflow::train::metrics::loss;
    type A = Autodiff<Wgpu>;
    type C = Autodiff<Flex>;
    let (dev, cpu) = (burn::backend::wgpu::WgpuDevice::DefaultDevice, Default::default());
    // Targets: one-hot rows, a soft row and an all-zero row (softmax), two positives a row (sigmoid).
    let targets = |rows: usize, k: usize, sigmoid: bool| -> Vec<f32> {
        let mut t = vec![0f32; rows * k];
        for r in 0..rows {
            if sigmoid {
                t[r * k + r % k] = 1.0;
                t[r * k + (r * 7 + 3) % k] = 1.0;
            } else if r == 1 && k > 1 {
                t[r * k] = 0.25;
                t[r * k + k - 1] = 0.75;
            } else if r != 2 {
                t[r * k + (r * 5) % k] = 1.0;
            }
        }
        t
    };
    for sigmoid in [false, true] {
        let kind = if sigmoid { Loss::Sigmoid } else { Loss::Softmax };
        for (rows, k, pad, sd) in [(7, 10, 0, 3.0), (300, 37, 5, 4.0), (3, 1, 0, 1.0), (5, 1000, 24, 200.0)] {
            let what = format!("{kind:?} {rows}×{k}+{pad}");
            let z0 = Tensor::<A, 2>::random([rows, k + pad], Distribution::Normal(0.0, sd), &dev).narrow(1, 0, k);
            let zv = vals(z0.clone().inner());
            let tv = targets(rows, k, sigmoid);
            let z = z0.detach().require_grad();
            let l = loss(kind, z.clone(), Tensor::<A, 2>::from_data(TensorData::new(tv.clone(), [rows, k]), &dev)) * 1.7;
            let dz = vals(z.grad(&l.backward()).unwrap());
            let lv = vals(l.inner());
            let zc = Tensor::<C, 2>::from_data(TensorData::new(zv, [rows, k]), &cpu).require_grad();
            let lc = loss(kind, zc.clone(), Tensor::<C, 2>::from_data(TensorData::new(tv, [rows, k]), &cpu)) * 1.7;
            let dzc = vals(zc.grad(&lc.backward()).unwrap());
            assert!(lv[0].is_finite() && dz.iter().all(|v| v.is_finite()), "{what}: {lv:?}");
            near(&format!("{what} loss"), &lv, &vals(lc.inner()), 2e-6);
            near(&format!("{what} dz"), &dz, &dzc, 2e-6);
        }
    }
    // Logits exactly 0: the true gradient of the mean, σ(0) − t over the batch.
    let (rows, k) = (4, 6);
    let tv = targets(rows, k, true);
    let z = Tensor::<A, 2>::zeros([rows, k], &dev).require_grad();
    let l = loss(Loss::Sigmoid, z.clone(), Tensor::<A, 2>::from_data(TensorData::new(tv.clone(), [rows, k]), &dev));
    assert!((vals(l.clone().inner())[0] - k as f32 * std::f32::consts::LN_2).abs() < 1e-5);
    let want: Vec<f32> = tv.iter().map(|t| (0.5 - t) / rows as f32).collect();
    near("sigmoid dz at 0", &vals(z.grad(&l.backward()).unwrap()), &want, 1e-6);
    // Targets that require a gradient: the composition's business.
    let t = Tensor::<A, 2>::from_data(TensorData::new(tv, [rows, k]), &dev).require_grad();
    assert!(classification_loss(Tensor::<A, 2>::zeros([rows, k], &dev), t, true).is_err());
    if has_f16("the_loss_node_matches_burns_composition") {
        for sigmoid in [false, true] {
            let z = Tensor::<Wgpu, 2>::random([9, 70], Distribution::Normal(0.0, 3.0), &dev);
            let t = Tensor::<Wgpu, 2>::from_data(TensorData::new(targets(9, 70, sigmoid), [9, 70]), &dev);
            let h = classification_loss(z.clone().cast(FloatDType::F16), t.clone().cast(FloatDType::F16), sigmoid).ok().unwrap();
            assert_eq!(h.dtype(), burn::tensor::DType::F16);
            // The reference from the f16-rounded logits, in f32.
            let z32 = z.cast(FloatDType::F16).cast(FloatDType::F32);
            let want = classification_loss(z32, t, sigmoid).ok().unwrap();
            within_one_f16_step(&format!("f16 loss, sigmoid {sigmoid}"), &vals(h), &vals(want), 0.0);
        }
    }
}
