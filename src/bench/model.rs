//! `polyflow bench-model`: train-step and inference throughput of a ViT on random data, on any backend.
//! The same model as `benches/vit_torch.py` (PyTorch), for side-by-side numbers in BENCHMARKS.md.

use crate::model::block::Arith;
use crate::model::device::{dispatch, BackendJob};
use crate::model::fused::kernels::Precision;
use crate::model::{Geometry, HeadInit, Modality, ModelConfig, PolyVit, Size, TaskHead};
use crate::train::metrics::{loss, Loss};
use crate::train::optim::{OptKind, SharedOptimizer};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType, Tensor};
use std::time::Instant;

/// A kernel switch `--ab` compares with itself off. The CPU switches change how the CPU kernels run, never a
/// result's bits; `gpu-kernels` changes float rounding (another summation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AbSwitch {
    /// The attention's per-head products without packing.
    SmallProducts,
    /// The fused block's parallel loops as one-item tasks.
    FineSplit,
    /// polyflow's LayerNorm and softmax kernels on the GPU backends (`model::gpu_fused`) instead of burn's
    /// compositions.
    GpuKernels,
}

impl AbSwitch {
    /// Turns the switch on or off (process-wide).
    fn set(self, on: bool) {
        match self {
            AbSwitch::SmallProducts => crate::model::fused::sgemm::small_products(on),
            AbSwitch::FineSplit => crate::model::fused::kernels::fine_split(on),
            AbSwitch::GpuKernels => crate::model::gpu_fused::set_enabled(on),
        }
    }

    /// The name on the command line (and in the JSON line).
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Hidden size.
    #[arg(long, default_value_t = 192)]
    pub dim: usize,
    /// Blocks.
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// Heads.
    #[arg(long, default_value_t = 3)]
    pub heads: usize,
    /// MLP size.
    #[arg(long, default_value_t = 768)]
    pub mlp: usize,
    /// Image side.
    #[arg(long, default_value_t = 32)]
    pub image: usize,
    /// Patch side.
    #[arg(long, default_value_t = 4)]
    pub patch: usize,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Backend: flex, cuda or wgpu.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Exact (erf) GELU instead of the tanh approximation.
    #[arg(long)]
    pub gelu_erf: bool,
    /// burn's compositions of tensor ops instead of polyflow's fused kernels (A/B comparisons): every block
    /// without the fused CPU block (the same as `POLYFLOW_FUSED_CPU=0`), and on cuda/wgpu LayerNorm, softmax,
    /// the attention's core and the linear layers as burn composes them, without polyflow's GPU kernels and
    /// flattened products (`model::gpu_fused`; training nodes always use them there).
    #[arg(long)]
    pub no_fused: bool,
    /// Matrix products of the blocks on bf16 operands (as `precision = "bf16"` on a training node): the fused
    /// CPU block's bf16 kernels, or elsewhere (cuda, `--no-fused`) the autocast-style composed block.
    #[arg(long, conflicts_with = "f16")]
    pub bf16: bool,
    /// Matrix products of the blocks on f16 operands with dynamic loss scaling (as `precision = "f16"` on a
    /// training node): the autocast-style composed block; the gradient norm is read every step, to skip
    /// overflowed updates (as PyTorch's `GradScaler`).
    #[arg(long, conflicts_with = "checkpoint")]
    pub f16: bool,
    /// With `--bf16`/`--f16` on cuda or wgpu: the blocks' product weights stay f32 parameters cast in every pass
    /// (autocast's layout) instead of the flat optimizer's half working copies, which training uses there (the
    /// same bits; for comparisons of host work).
    #[arg(long)]
    pub f32_params: bool,
    /// Activation checkpointing (as `activation_checkpointing = true` on a training node; CPU only): the
    /// blocks recompute their activations in the backward pass.
    #[arg(long)]
    pub checkpoint: bool,
    /// Gradient accumulation as `micro_batch = N` on a training node: each step runs the batch through
    /// forward and backward in slices of at most N examples and takes one optimizer step (0: whole batch).
    /// For peak-memory measurements of the paper's batch sizes (`.ci/gpu_check.sh`).
    #[arg(long, default_value_t = 0)]
    pub micro_batch: usize,
    /// Time only inference (`infer`) or only the train step (`train`), e.g. under a profiler; the other is
    /// reported as 0.
    #[arg(long, value_parser = ["train", "infer"])]
    pub only: Option<String>,
    /// After the timed steps, compare a kernel switch with itself off in one process: rounds of 5 train steps
    /// and 10 inference batches with the switch on and off, in alternating order (on a machine whose speed
    /// drifts, adjacent runs compare best). Reports each round's speed ratio (stderr) and the medians (`ab` in
    /// the JSON line).
    #[arg(long, value_enum)]
    pub ab: Option<AbSwitch>,
    /// Rounds of `--ab`.
    #[arg(long, default_value_t = 20)]
    pub ab_rounds: usize,
    /// Before timing, check polyflow's GPU kernels against burn's compositions on this backend: one training
    /// step's loss and gradients and the inference logits, computed with the kernels on and off from the same
    /// weights and batch. Reports the largest differences (`verify` in the JSON line) and fails when one exceeds
    /// `--verify-tolerance` of the largest magnitude of its tensor.
    #[arg(long)]
    pub verify: bool,
    /// Relative tolerance of `--verify` (default 1e-3 in f32; 5e-2 with `--bf16` or `--f16`, where the kernels
    /// compute in f32 what burn's compositions round to the half type).
    #[arg(long)]
    pub verify_tolerance: Option<f64>,
}

struct Job(BenchArgs);

impl BackendJob for Job {
    type Output = Timings;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Timings {
        let device = devices[0].clone();
        let a = self.0;
        let cfg = ModelConfig {
            size: Size { dim: a.dim, depth: a.depth, heads: a.heads, mlp: a.mlp },
            l_adapt: 0,
            geometry: vec![(Modality::Image, Geometry { channels: 3, input: vec![a.image, a.image], patch: vec![a.patch, a.patch] })],
            tasks: vec![TaskHead { name: "bench".into(), modality: Modality::Image, classes: a.classes, init: HeadInit::LecunNormal }],
            gelu_tanh: !a.gelu_erf,
            ln_eps: 1e-6,
        };
        // A linear layer's bias gradient sums a slice's rows (examples × tokens): past what burn's reductions
        // cover on some adapters (`train::run::SAFE_REDUCE_LEN`), say whether this device counts them all
        // (with polyflow's kernels on the bias gradients are its own column sums; off, burn's).
        let rows = (if a.micro_batch > 0 { a.micro_batch.min(a.batch) } else { a.batch }) * ((a.image / a.patch).pow(2) + 1);
        let reduce_rows = (crate::model::gpu_fused::gpu_backend::<B>() && rows > crate::train::run::SAFE_REDUCE_LEN).then(|| {
            let counted = crate::train::run::reduce_count::<B::InnerBackend>(rows, &device);
            if counted != rows as f64 && !crate::model::gpu_fused::enabled() {
                eprintln!(
                    "warning: a sum over {rows} rows counted {counted} on this device: with the kernels off the bias \
                     gradients of these slices are partial sums"
                );
            }
            (rows, counted)
        });
        let mut model = PolyVit::<B>::new(&cfg, 0, &device);
        model.set_arith(if a.bf16 {
            Arith::Bf16
        } else if a.f16 {
            Arith::F16
        } else {
            Arith::F32
        });
        let mut scaler = crate::train::optim::LossScaler::new(crate::train::optim::LossScaler::INIT);
        model.set_recompute(a.checkpoint);
        let mut opt = SharedOptimizer::<B>::new(OptKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, None);
        let on_cpu = a.backend == "flex" || a.backend == "cpu";
        // As training on an accelerator: the products' weights as half working copies of the optimizer's masters.
        let half_copies = crate::train::run::half_copies_with::<B>(a.bf16 || a.f16, !on_cpu, a.f32_params, false);
        if half_copies {
            opt.keep_half_copies(model.product_params(), if a.bf16 { FloatDType::BF16 } else { FloatDType::F16 });
        }
        let route = PolyVit::<B>::route(&cfg, 0);
        let x = Tensor::<B, 5>::random([a.batch, 3, 1, a.image, a.image], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..a.batch as i64).map(|i| i % a.classes as i64).collect();
        let y = Tensor::<B, 1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(labels, [a.batch]), &device)
            .one_hot::<2>(a.classes)
            .float();
        let read_each_step = crate::train::run::deferred_reads_from_env() == 1;
        let mut train_step = |model: PolyVit<B>| {
            let s = if a.f16 { scaler.scale } else { 1.0 };
            let g = if a.micro_batch == 0 || a.micro_batch >= a.batch {
                let l = loss(Loss::Softmax, model.forward(route, x.clone(), &[]), y.clone());
                let l = if a.f16 { l * s } else { l };
                GradientsParams::from_grads(l.backward(), &model)
            } else {
                // As the trainer slices a batch: each slice's loss weighted by its share, gradients summed.
                let mut acc = GradientsAccumulator::<PolyVit<B>>::new();
                for start in (0..a.batch).step_by(a.micro_batch) {
                    let len = a.micro_batch.min(a.batch - start);
                    let logits = model.forward(route, x.clone().narrow(0, start, len), &[]);
                    let l = loss(Loss::Softmax, logits, y.clone().narrow(0, start, len)) * (s * len as f64 / a.batch as f64);
                    let g = GradientsParams::from_grads(l.backward(), &model);
                    acc.accumulate(&model, if half_copies { crate::train::flat::grads_in_f32(&model, g) } else { g });
                }
                acc.grads()
            };
            // f16 reads the norm every step, to skip an update whose scaled gradients overflowed; as training,
            // per tensor on the CPU and over the flat buffers on an accelerator.
            if a.f16 {
                let (m, _, applied) = if on_cpu { opt.step_scaled(model, &g, 1e-3, s) } else { opt.step_scaled_flat(model, g, 1e-3, s) };
                scaler.update(applied);
                return m;
            }
            if on_cpu {
                // As training on the CPU: the per-tensor update, its norm read on the host.
                return opt.step(model, &g, 1e-3).0;
            }
            // As training on an accelerator: the flat update, nothing read back unless POLYFLOW_SYNC_EVERY=1
            // asks for the gradient norm every step (the cost of a host read per update).
            let (m, norm) = opt.step_deferred(model, g, 1e-3);
            if read_each_step {
                let _ = norm.map(|n| n.into_scalar());
            }
            m
        };
        let verify = a.verify.then(|| {
            use burn::tensor::ElementConversion;
            let run = |on: bool| {
                crate::model::gpu_fused::set_enabled(on);
                let l = loss(Loss::Softmax, model.forward(route, x.clone(), &[]), y.clone());
                let lv = l.clone().into_scalar().elem::<f64>();
                let g = GradientsParams::from_grads(l.backward(), &model);
                let mut grads = GradValues::<B> { grads: &g, out: vec![], backend: std::marker::PhantomData };
                model.visit(&mut grads);
                let logits = model
                    .valid()
                    .forward(route, x.clone().inner(), &[])
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_else(|_| vec![f32::NAN]);
                (lv, logits, grads.out)
            };
            let (off, on) = (run(false), run(true));
            crate::model::gpu_fused::set_enabled(!a.no_fused);
            Verify::of(&on, &off)
        });
        let mut train = 0.0;
        let mut warmup = 0.0;
        if a.only.as_deref() != Some("infer") {
            // Warm-up: where a GPU autotunes and compiles its kernels (each step's seconds on stderr, so a run
            // cut short by a timeout still says how far tuning got).
            let t = Instant::now();
            for i in 0..3 {
                model = train_step(model);
                let _ = B::sync(&device);
                eprintln!("train warm-up step {i}: {:.2} s since start of warm-up", t.elapsed().as_secs_f64());
            }
            warmup = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..a.steps {
                model = train_step(model);
            }
            let _ = B::sync(&device);
            train = (a.steps * a.batch) as f64 / t.elapsed().as_secs_f64();
        }
        let ab = a.ab.map(|switch| {
            let inf = model.clone().valid();
            let xi = x.clone().inner();
            let r = interleave(
                a.ab_rounds,
                |on| switch.set(on),
                || {
                    let t = Instant::now();
                    for _ in 0..5 {
                        model = train_step(model.clone());
                    }
                    // A GPU runs behind the host: wait for the updates before reading the clock.
                    let _ = B::sync(&device);
                    let train = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    for _ in 0..10 {
                        let _ = inf.forward(route, xi.clone(), &[]).into_data();
                    }
                    (train, t.elapsed().as_secs_f64())
                },
            );
            (switch.name(), r)
        });
        if a.only.as_deref() == Some("train") {
            return Timings { train, infer: 0.0, warmup, infer_warmup: 0.0, ab, verify, reduce_rows };
        }
        let inf = model.valid();
        let xi = x.inner();
        let t = Instant::now();
        for _ in 0..3 {
            let _ = inf.forward(route, xi.clone(), &[]).into_data();
        }
        let infer_warmup = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..a.steps {
            let _ = inf.forward(route, xi.clone(), &[]).into_data();
        }
        let infer = (a.steps * a.batch) as f64 / t.elapsed().as_secs_f64();
        Timings { train, infer, warmup, infer_warmup, ab, verify, reduce_rows }
    }
}

/// The gradients of a model's float parameters in visit order, read to the host (`--verify`).
struct GradValues<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    out: Vec<Vec<f32>>,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradValues<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // a failed read compares as NaN (a failure), never as an empty, equal tensor
            self.out.push(g.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_else(|_| vec![f32::NAN]));
        }
    }
}

/// `--verify`'s result: the largest difference between polyflow's GPU kernels and burn's compositions, each
/// relative to the largest magnitude of its tensor (the loss: to the loss).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Verify {
    loss: f64,
    logits: f64,
    /// The worst over the parameters' gradients.
    grads: f64,
}

/// `(loss, logits, gradients per parameter)` of one step.
type StepValues = (f64, Vec<f32>, Vec<Vec<f32>>);

impl Verify {
    /// The differences of `a` from the reference `b`; a length mismatch or a non-finite value counts as infinite.
    fn of(a: &StepValues, b: &StepValues) -> Verify {
        fn rel(a: &[f32], b: &[f32]) -> f64 {
            if a.len() != b.len() || a.iter().chain(b).any(|v| !v.is_finite()) {
                return f64::INFINITY;
            }
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(f64::MIN_POSITIVE);
            a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs() as f64)) / scale
        }
        let loss = if a.0.is_finite() && b.0.is_finite() { (a.0 - b.0).abs() / b.0.abs().max(f64::MIN_POSITIVE) } else { f64::INFINITY };
        let grads = if a.2.len() == b.2.len() { a.2.iter().zip(&b.2).map(|(p, q)| rel(p, q)).fold(0.0, f64::max) } else { f64::INFINITY };
        Verify { loss, logits: rel(&a.1, &b.1), grads }
    }

    /// Whether every difference is within `tol` (NaN fails).
    fn within(&self, tol: f64) -> bool {
        [self.loss, self.logits, self.grads].iter().all(|d| *d <= tol)
    }
}

/// What [`Job`] measured: images per second, and the interleaved comparison when `--ab` asked for one.
struct Timings {
    train: f64,
    infer: f64,
    /// Seconds of the 3 training warm-up steps (on a GPU: kernel compilation and autotuning included).
    warmup: f64,
    /// Seconds of the 3 inference warm-up passes.
    infer_warmup: f64,
    ab: Option<(String, AbRounds)>,
    verify: Option<Verify>,
    /// Past `SAFE_REDUCE_LEN` rows a slice on a GPU backend: `(rows, what the device's sum over them counted)`.
    reduce_rows: Option<(usize, f64)>,
}

/// Per round, the speed with a switch on over the speed with it off: `(train, inference)`.
type AbRounds = Vec<(f64, f64)>;

/// `rounds` rounds of `work` (returning its train and inference seconds) with `switch` on and off, the order
/// alternating between rounds; the switch is left on (its default). Each round's ratio is printed on stderr.
fn interleave(rounds: usize, switch: impl Fn(bool), mut work: impl FnMut() -> (f64, f64)) -> AbRounds {
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut secs = [(0.0, 0.0); 2];
        for on in [r % 2 == 0, r % 2 == 1] {
            switch(on);
            secs[on as usize] = work();
        }
        let ratio = (secs[0].0 / secs[1].0, secs[0].1 / secs[1].1);
        eprintln!("round {r}: on/off speed: train {:.3}, inference {:.3}", ratio.0, ratio.1);
        out.push(ratio);
    }
    switch(true);
    out
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark and prints one JSON line.
pub fn bench_model(a: BenchArgs) -> anyhow::Result<()> {
    // Sizes a ViT can have (before: panics deep in the tensor code).
    for (name, v) in
        [("--dim", a.dim), ("--depth", a.depth), ("--heads", a.heads), ("--mlp", a.mlp), ("--image", a.image), ("--patch", a.patch)]
    {
        if v == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
    }
    for (name, v) in [("--classes", a.classes), ("--batch", a.batch), ("--steps", a.steps)] {
        if v == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
    }
    if !a.dim.is_multiple_of(a.heads) {
        anyhow::bail!("--dim {} is not a multiple of --heads {}: each head takes dim / heads channels", a.dim, a.heads);
    }
    if !a.image.is_multiple_of(a.patch) {
        anyhow::bail!("--image {} is not a multiple of --patch {}: the image is cut into whole patches", a.image, a.patch);
    }
    if a.no_fused {
        crate::model::fused::set_enabled(false);
        crate::model::gpu_fused::set_enabled(false);
    }
    let backend = a.backend.clone();
    if a.checkpoint && !(backend == "flex" || backend == "cpu") {
        anyhow::bail!("--checkpoint runs on the CPU (flex) backend only");
    }
    if a.checkpoint && a.gelu_erf {
        anyhow::bail!("--checkpoint needs the fused CPU block, which has the tanh GELU only: drop --gelu-erf or --checkpoint");
    }
    if a.checkpoint && !crate::model::fused::enabled() {
        anyhow::bail!(
            "--checkpoint needs the fused CPU block, which {} turned off: drop it or --checkpoint",
            if a.no_fused { "--no-fused" } else { "POLYFLOW_FUSED_CPU=0" }
        );
    }
    if a.verify && (backend == "flex" || backend == "cpu") {
        anyhow::bail!("--verify checks polyflow's GPU kernels against burn's compositions: run it with --backend cuda or wgpu");
    }
    if a.bf16 {
        backend.parse::<crate::model::device::Backend>().and_then(|b| b.supports_precision("bf16")).map_err(anyhow::Error::msg)?;
    }
    // On a worker of a pool of the configured size, as a pipeline's node runs (`exec::launch`): the calling
    // thread does the serial work itself instead of competing for the cores with the pool's idle workers.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(rayon::current_num_threads()).build()?;
    let Timings { train, infer, warmup, infer_warmup, ab, verify, reduce_rows } =
        pool.install(|| dispatch(&backend, Job(a.clone()))).map_err(anyhow::Error::msg)?;
    let tokens = (a.image / a.patch).pow(2) + 1;
    // Matrix-product FLOPs of one forward pass per image (blocks, patch embedding, head); a train step is
    // counted as three forward passes (forward, and two products per product in the backward pass).
    let (n, d) = (tokens as f64, a.dim as f64);
    let block = 2.0 * n * (4.0 * d * d + 2.0 * d * a.mlp as f64) + 4.0 * n * n * d;
    let fwd = a.depth as f64 * block + 2.0 * (n - 1.0) * (3 * a.patch * a.patch) as f64 * d + 2.0 * d * a.classes as f64;
    let train_gflops = 3.0 * fwd * train / 1e9;
    let mut out = serde_json::json!({"backend": backend, "dim": a.dim, "depth": a.depth, "heads": a.heads, "mlp": a.mlp, "image": a.image, "patch": a.patch, "tokens": tokens, "batch": a.batch, "train_img_s": train, "infer_img_s": infer, "fused_cpu": crate::model::fused::enabled() && !a.f16 && (backend == "flex" || backend == "cpu"), "gpu_kernels": crate::model::gpu_fused::enabled() && cfg!(feature = "gpu-kernels") && (backend == "cuda" || backend == "wgpu"), "train_gflops": train_gflops, "infer_gflops": fwd * infer / 1e9, "precision": if a.bf16 { "bf16" } else if a.f16 { "f16" } else { "f32" }, "micro_batch": a.micro_batch, "read_each_step": a.f16 || crate::train::run::deferred_reads_from_env() == 1, "train_warmup_s": warmup, "infer_warmup_s": infer_warmup});
    if (backend == "flex" || backend == "cpu") && !a.f16 {
        // The matmul peak the fractions refer to: polyflow's CPU product on the block's largest shape.
        let m = a.batch * tokens;
        let prec = if a.bf16 { Precision::Bf16 } else { Precision::F32 };
        let peak = matmul_peak(m, a.dim, a.mlp, prec);
        out["matmul_peak_gflops"] = peak.into();
        // The block's other shapes (fc2, qkv, proj), for comparisons with a BLAS on the same shapes.
        out["matmul_gflops"] = serde_json::json!({
            format!("{m}x{}x{}", a.dim, a.mlp): peak,
            format!("{m}x{}x{}", a.mlp, a.dim): matmul_peak(m, a.mlp, a.dim, prec),
            format!("{m}x{}x{}", a.dim, 3 * a.dim): matmul_peak(m, a.dim, 3 * a.dim, prec),
            format!("{m}x{}x{}", a.dim, a.dim): matmul_peak(m, a.dim, a.dim, prec),
        });
        out["cpu"] = cpu_model().into();
        out["matmul_kernel"] = match (a.bf16, crate::model::fused::sgemm::isa()) {
            (true, _) => format!("polyflow bf16 ({})", crate::model::fused::kernels::bf16::kernel().name()),
            (false, Some(isa)) => format!("polyflow sgemm ({})", isa.name),
            (false, None) => "gemm crate".into(),
        }
        .into();
        out["activation_checkpointing"] = a.checkpoint.into();
        out["train_fraction_of_peak"] = (train_gflops / peak).into();
    }
    if let Some((rows, counted)) = reduce_rows {
        out["reduce_rows"] = serde_json::json!({"rows": rows, "counted": counted});
    }
    if let Some((switch, rounds)) = ab {
        out["ab"] = serde_json::json!({
            "switch": switch,
            "rounds": rounds.len(),
            "train_on_over_off": median(rounds.iter().map(|r| r.0).collect()),
            "infer_on_over_off": median(rounds.iter().map(|r| r.1).collect()),
            "per_round": rounds,
        });
    }
    let tolerance = a.verify_tolerance.unwrap_or(if a.bf16 || a.f16 { 5e-2 } else { 1e-3 });
    let failed = verify.filter(|v| !v.within(tolerance));
    if let Some(v) = verify {
        out["verify"] =
            serde_json::json!({"loss": v.loss, "logits": v.logits, "grads": v.grads, "tolerance": tolerance, "ok": failed.is_none()});
    }
    println!("{out}");
    if let Some(v) = failed {
        anyhow::bail!(
            "polyflow's GPU kernels differ from burn's compositions on {backend}: loss {:.3e}, logits {:.3e}, gradients {:.3e} \
             (relative; tolerance {:e})",
            v.loss,
            v.logits,
            v.grads,
            tolerance
        );
    }
    Ok(())
}

/// `/proc/cpuinfo`'s model name, family and model, and the ISA flags that decide the kernels (BENCHMARKS.md
/// records it in every row).
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
        .into_iter()
        .filter(|f| flags.split(' ').any(|x| x == *f))
        .collect();
    format!(
        "{} (family {}, model {}; {})",
        field("model name").unwrap_or_else(|| "unknown".into()),
        field("cpu family").unwrap_or_default(),
        field("model").unwrap_or_default(),
        have.join(" ")
    )
}

/// GFLOP/s of `[m, k] · [k, n]` with polyflow's CPU product (the fused block's kernel), best of 5 × 10.
fn matmul_peak(m: usize, k: usize, n: usize, prec: Precision) -> f64 {
    use crate::model::fused::kernels::Mat;
    let matmul =
        |m, n, k, a, b, c: &mut [f32], ldc, acc, par| crate::model::fused::kernels::matmul_p(prec, m, n, k, a, b, c, ldc, acc, par);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    matmul(m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c, n, false, true);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                matmul(m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c, n, false, true);
            }
            20.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// `--ab`'s rounds run the work once with the switch on and once off, the order alternating between rounds,
    /// report off-time over on-time (the speed ratio), and leave the switch on.
    #[test]
    fn interleaved_rounds_alternate_the_order_and_leave_the_switch_on() {
        let state = Cell::new(true);
        let order = RefCell::new(Vec::new());
        // The work takes 1 s with the switch on and 2 s with it off (train), the reverse for inference.
        let r = interleave(
            4,
            |on| state.set(on),
            || {
                order.borrow_mut().push(state.get());
                if state.get() {
                    (1.0, 2.0)
                } else {
                    (2.0, 1.0)
                }
            },
        );
        assert_eq!(*order.borrow(), [true, false, false, true, true, false, false, true]);
        assert!(r.iter().all(|&(t, i)| t == 2.0 && i == 0.5), "{r:?}");
        assert!(state.get(), "the switch is left on");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    /// `--verify` measures each difference against the reference's largest magnitude, takes the worst
    /// gradient, and fails on a mismatch of lengths or a non-finite value rather than passing it.
    #[test]
    fn verify_reports_relative_worst_differences_and_fails_on_garbage() {
        let b: StepValues = (2.0, vec![1.0, -4.0], vec![vec![1.0, 2.0], vec![10.0]]);
        let a: StepValues = (2.002, vec![1.0, -4.004], vec![vec![1.0, 2.02], vec![10.0]]);
        let v = Verify::of(&a, &b);
        assert!((v.loss - 1e-3).abs() < 1e-9 && (v.logits - 1e-3).abs() < 1e-6 && (v.grads - 1e-2).abs() < 1e-6, "{v:?}");
        assert!(!v.within(5e-3) && v.within(2e-2));
        assert_eq!(Verify::of(&b, &b), Verify { loss: 0.0, logits: 0.0, grads: 0.0 });
        let nan: StepValues = (2.0, vec![f32::NAN, -4.0], b.2.clone());
        assert!(!Verify::of(&nan, &b).within(1.0), "a NaN fails");
        let short: StepValues = (2.0, b.1.clone(), vec![vec![1.0, 2.0]]);
        assert!(!Verify::of(&short, &b).within(1.0), "a missing gradient fails");
    }

    /// The switches' names on the command line are the ones BENCHMARKS.md and the JSON lines use.
    #[test]
    fn switch_names_are_the_documented_ones() {
        assert_eq!(AbSwitch::SmallProducts.name(), "small-products");
        assert_eq!(AbSwitch::FineSplit.name(), "fine-split");
        assert_eq!(AbSwitch::GpuKernels.name(), "gpu-kernels");
    }
}
