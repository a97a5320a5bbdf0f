//! Training: schedules yield their step counts, learning on the embedded data, resume bit for bit,
//! determinism.

use burn::backend::{Autodiff, Flex};
use polyflow::model::{Geometry, HeadInit, Modality, ModelConfig, Size, TaskHead};
use polyflow::train::batch::Augment;
use polyflow::train::metrics::Loss;
use polyflow::train::optim::OptKind;
use polyflow::train::run::{run, Outcome, RunConfig, TaskRun};
use polyflow::train::schedule::Schedule;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{split, BIN};

fn task(name: &str, shape: [usize; 4], steps: usize, loss: Loss) -> TaskRun {
    TaskRun {
        name: name.into(),
        loss,
        batch: 4,
        steps,
        lr: 1e-3,
        warmup: 1,
        warmup_group: None,
        augment: Augment::default(),
        droplayer: 0.0,
        classes: 3,
        map: false,
        train: split(12, shape, 3, 1),
        val: split(6, shape, 3, 2),
        test: split(6, shape, 3, 3),
    }
}

/// The settings these tests share: SGD with momentum 0.9, clip 1.0, Scenic's wrap, evaluation at the end only,
/// f32, whole batches on one replica.
fn config(model: ModelConfig, schedule: Schedule, accumulate_mean: bool, seed: u64) -> RunConfig {
    RunConfig {
        model,
        schedule,
        total_steps: None,
        schedule_seed: 0,
        optimizer: OptKind::Sgd { momentum: 0.9 },
        clip: Some(1.0),
        wrap_last: true,
        accumulate_mean,
        eval_every: 0,
        checkpoint_every: 0,
        seed,
        eval_batch: 8,
        bf16: false,
        f16: false,
        loss_scale_init: None,
        micro_batch: 0,
        replicas: 1,
        recompute: false,
        deferred_reads: None,
        f32_params: false,
    }
}

/// Trains on the CPU backend, its one device given `devices` times.
fn train(cfg: &RunConfig, tasks: &[TaskRun], devices: usize) -> Outcome {
    run::<Autodiff<Flex>>(cfg, tasks, None, None, &vec![Default::default(); devices], &|_, _, _| {}, &mut |_| {}).unwrap()
}

/// Two image tasks (softmax and sigmoid loss) with batches of 8 and stochastic depth 0.2, and a depth-3 model
/// for them with `l_adapt` adapter blocks.
fn two_image_tasks(l_adapt: usize) -> (Vec<TaskRun>, ModelConfig) {
    let mut a = task("a", [1, 1, 8, 8], 4, Loss::Softmax);
    let mut b = task("b", [1, 1, 8, 8], 4, Loss::Sigmoid);
    for t in [&mut a, &mut b] {
        t.batch = 8;
        t.droplayer = 0.2;
    }
    let tasks = vec![a, b];
    let model = ModelConfig {
        size: Size { dim: 16, depth: 3, heads: 2, mlp: 32 },
        l_adapt,
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

#[test]
fn each_schedule_yields_its_step_counts_on_three_modalities() {
    let tasks = vec![
        task("img", [1, 1, 8, 8], 4, Loss::Sigmoid),
        task("aud", [1, 1, 8, 8], 2, Loss::Softmax),
        task("vid", [1, 2, 8, 8], 2, Loss::Softmax),
    ];
    let model = ModelConfig {
        size: Size { dim: 16, depth: 2, heads: 2, mlp: 32 },
        l_adapt: 0,
        geometry: vec![
            (Modality::Image, Geometry { channels: 3, input: vec![8, 8], patch: vec![4, 4] }),
            (Modality::Audio, Geometry { channels: 3, input: vec![8, 8], patch: vec![4, 4] }),
            (Modality::Video, Geometry { channels: 3, input: vec![2, 8, 8], patch: vec![2, 4, 4] }),
        ],
        tasks: tasks
            .iter()
            .zip([Modality::Image, Modality::Audio, Modality::Video])
            .map(|(t, m)| TaskHead { name: t.name.clone(), modality: m, classes: 3, init: HeadInit::Zero })
            .collect(),
        gelu_tanh: true,
        ln_eps: 1e-6,
    };
    let expect = [
        (Schedule::Weighted, vec![4, 2, 2], 8),
        (Schedule::TaskByTask, vec![4, 2, 2], 8),
        (Schedule::Alternating, vec![3, 3, 2], 8),
        (Schedule::Accumulate, vec![2, 2, 2], 2),
    ];
    for (sched, counts, updates) in expect {
        let out = train(&config(model.clone(), sched, false, 0), &tasks, 1);
        assert_eq!(out.steps_per_task, counts, "{sched:?}");
        assert_eq!(out.steps.len(), updates, "{sched:?}");
        for s in &out.steps {
            assert_eq!(s.tasks.len(), if sched == Schedule::Accumulate { 3 } else { 1 });
        }
    }
    // Uniform: U updates, each one task.
    let out = train(&config(model, Schedule::Uniform, true, 0), &tasks, 1);
    assert_eq!(out.steps_per_task.iter().sum::<usize>(), 8);
}

fn polyflow(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(dir).output().unwrap()
}

fn metrics(store: &Path, file: &str, profile: &str, node: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = polyflow(root, &["status", file, "--profile", profile, "--store", store.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    s.as_array().unwrap().iter().find(|n| n["id"] == node).unwrap().clone()
}

/// Test top-1 of `st_digits` in `store` (after a run with the same `extra` arguments).
fn digits_top1(root: &Path, store: &Path, extra: &[&str]) -> f64 {
    digits_top1_env(root, store, extra, &[])
}

/// [`digits_top1`] with environment variables set (those of the run: `POLYFLOW_FUSED_CPU=0` is in its key).
fn digits_top1_env(root: &Path, store: &Path, extra: &[&str], env: &[(&str, &str)]) -> f64 {
    let mut args = vec!["show", "tests/pipelines/digits.toml", "st_digits", "--profile", "minute", "--store", store.to_str().unwrap()];
    args.extend_from_slice(extra);
    let show = Command::new(BIN).args(&args).current_dir(root).envs(env.iter().copied()).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    let json_start = text.find("\n{").unwrap();
    let m: serde_json::Value = serde_json::from_str(&text[json_start..]).unwrap();
    m["tasks"]["t_digits"]["test"]["top1"].as_f64().unwrap()
}

/// Digits reaches 90 % in f32, and `precision = "bf16"` (vdpbf16ps where the CPU has AVX512-BF16, the
/// emulation elsewhere) is a different node key that trains to within one point of f32.
#[test]
fn single_task_digits_reaches_90_percent_and_bf16_is_within_a_point() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let s = store.to_str().unwrap();
    let t = std::time::Instant::now();
    let out = polyflow(root, &["run", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("digits: {:.1}s", t.elapsed().as_secs_f64());
    let top1 = digits_top1(root, &store, &[]);
    eprintln!("digits test top-1 {top1:.3}");
    assert!(top1 >= 0.90, "digits test top-1 {top1}");
    // burn's composition (POLYFLOW_FUSED_CPU=0) rounds differently: the fused block's model is not its.
    let out = Command::new(BIN)
        .args(["status", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s])
        .current_dir(root)
        .env("POLYFLOW_FUSED_CPU", "0")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().find(|l| l.contains("st_digits")).unwrap_or_default().to_string();
    assert!(row.contains("stale"), "the composed block's key differs from the fused block's: {table}");
    let why = String::from_utf8_lossy(
        &Command::new(BIN)
            .args(["status", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s, "--why", "st_digits"])
            .current_dir(root)
            .env("POLYFLOW_FUSED_CPU", "0")
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(why.contains("POLYFLOW_FUSED_CPU=0"), "status names the variable that changed the key: {why}");

    let bf16 = ["--set", "st_digits.precision=bf16"];
    let t = std::time::Instant::now();
    let mut args = vec!["run", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s];
    args.extend_from_slice(&bf16);
    let out = polyflow(root, &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Finished st_digits"), "the bf16 node is a new key and trains: {err}");
    eprintln!("digits bf16: {:.1}s", t.elapsed().as_secs_f64());
    // The composed bf16 block (POLYFLOW_FUSED_CPU=0) rounds differently from the fused block's bf16 kernels:
    // the fused block's bf16 model is not its either (both are one version up, so the `cpu_block` entry tells).
    let mut args = vec!["status", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s];
    args.extend_from_slice(&bf16);
    let out = Command::new(BIN).args(&args).current_dir(root).env("POLYFLOW_FUSED_CPU", "0").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().find(|l| l.contains("st_digits")).unwrap_or_default().to_string();
    assert!(row.contains("stale") && row.contains("cpu_block"), "bf16: the composed block's key differs: {table}");
    let top1_bf16 = digits_top1(root, &store, &bf16);
    eprintln!("digits test top-1: f32 {top1:.3}, bf16 {top1_bf16:.3}");
    assert!((top1 - top1_bf16).abs() <= 0.01, "bf16 {top1_bf16} vs f32 {top1}");
}

/// `precision = "bf16"` off the fused CPU block: the composed, autocast-style block that CUDA runs (products
/// and GELU in bf16, LayerNorm, softmax and residuals in f32, f32 master weights), here forced on the CPU with
/// `POLYFLOW_FUSED_CPU=0`. Over seeds 0–2 its mean test top-1 on Digits is within one point of f32's (the
/// default block). One seed is not enough: f32 alone spreads over about 3 points across seeds.
#[test]
fn composed_bf16_digits_is_within_a_point_of_f32_over_three_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let seeds = ["seed=0", "seed=1", "seed=2"];
    let run = |store: &Path, seed: &str, bf16: bool| {
        let s = store.to_str().unwrap();
        let mut args = vec!["run", "tests/pipelines/digits.toml", "--profile", "minute", "--store", s, "--set", seed];
        if bf16 {
            args.extend_from_slice(&["--set", "st_digits.precision=bf16"]);
        }
        let mut cmd = Command::new(BIN);
        // No shared cache: this test measures training, not a cache's artifacts.
        cmd.args(&args).current_dir(root).env_remove("POLYFLOW_CACHE");
        if bf16 {
            cmd.env("POLYFLOW_FUSED_CPU", "0");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let mut extra = vec!["--set", seed];
        if bf16 {
            extra.extend_from_slice(&["--set", "st_digits.precision=bf16"]);
            return digits_top1_env(root, store, &extra, &[("POLYFLOW_FUSED_CPU", "0")]);
        }
        digits_top1(root, store, &extra)
    };
    // The three bf16 runs side by side (the composed bf16 path is the slow one on the CPU).
    let bf16: Vec<f64> = std::thread::scope(|sc| {
        let hs: Vec<_> = seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| {
                let store = d.path().join(format!("b{i}"));
                let run = &run;
                sc.spawn(move || run(&store, seed, true))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let f32: Vec<f64> = seeds.iter().map(|seed| run(&d.path().join("f"), seed, false)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!("digits test top-1 per seed: f32 {f32:?}, composed bf16 {bf16:?}");
    assert!((mean(&f32) - mean(&bf16)).abs() <= 0.01, "mean top-1: bf16 {} vs f32 {}", mean(&bf16), mean(&f32));
}

#[test]
fn killed_cotraining_resumes_to_the_same_bits_and_runs_are_deterministic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let args = |s: &Path| {
        vec![
            "run".to_string(),
            "tests/pipelines/resume.toml".into(),
            "--profile".into(),
            "t".into(),
            "--store".into(),
            s.to_str().unwrap().to_string(),
            "--json".into(),
        ]
    };
    // Uninterrupted reference.
    let out = Command::new(BIN).args(args(&a)).current_dir(root).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Killed after update 27 of 60 (checkpoint at 25), then resumed.
    let mut child = Command::new(BIN).args(args(&b)).current_dir(root).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("run ended before update 27").unwrap();
        let ev: serde_json::Value = serde_json::from_str(&l).unwrap();
        if ev["event"] == "progress" && ev["id"] == "co" && ev["done"].as_u64().unwrap() >= 27 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = metrics(&b, "tests/pipelines/resume.toml", "t", "co");
    assert_eq!(killed["state"], "stale");
    assert!(killed["reason"].as_str().unwrap().contains("an interrupted run's checkpoint at update 25 is kept"), "{killed}");
    let plan = polyflow(root, &["plan", "tests/pipelines/resume.toml", "--profile", "t", "--store", b.to_str().unwrap(), "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let co = plan["stale"].as_array().unwrap().iter().find(|n| n["id"] == "co").unwrap();
    assert_eq!(co["resumes_from"], "update 25", "{co}");
    let partial = std::fs::read_dir(b.join("partial")).unwrap().count();
    assert_eq!(partial, 1, "a resumable checkpoint was left in the store");
    // `gc` keeps it: the next run resumes from it.
    let gc = polyflow(root, &["gc", "tests/pipelines/resume.toml", "--store", b.to_str().unwrap(), "--yes"]);
    assert_eq!(gc.status.code(), Some(0), "{}", String::from_utf8_lossy(&gc.stderr));
    assert_eq!(std::fs::read_dir(b.join("partial")).unwrap().count(), 1, "gc removed a resumable checkpoint");
    // Resumed with checkpoints at another cadence: outside the key, it changes no bit, and the checkpoint is kept.
    let out = Command::new(BIN).args(args(&b)).args(["--set", "co.checkpoint_every=7"]).current_dir(root).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The user is told the run continues where the interrupted one stopped (a note event in `--json`).
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("resuming from an interrupted run's checkpoint at update"), "{said}");
    // A third, independent run: determinism.
    let out = Command::new(BIN).args(args(&c)).current_dir(root).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let key = |s: &Path| metrics(s, "tests/pipelines/resume.toml", "t", "co");
    let (ma, mb, mc) = (key(&a), key(&b), key(&c));
    assert_eq!(ma["key"], mb["key"]);
    // Same artifact bytes: compare the committed artifact digests through `show`.
    let digest = |s: &Path| {
        let o = polyflow(root, &["show", "tests/pipelines/resume.toml", "co", "--profile", "t", "--store", s.to_str().unwrap()]);
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("artifact")).unwrap().to_string()
    };
    assert_eq!(digest(&a), digest(&b), "resumed run differs from the uninterrupted one");
    assert_eq!(digest(&a), digest(&c), "two runs differ");
    assert_eq!(mc["state"], "fresh");
    assert!(!b.join("partial").exists() || std::fs::read_dir(b.join("partial")).unwrap().count() == 0, "scratch removed after commit");
}

/// Co-training one image, one audio and one video task (U_j = 120, 160 and 200 updates, weighted sampling) stays
/// within a margin of the three single-task baselines of the same seed on every task, and above chance.
///
/// Measured here (2026-12-07, CPU, this pipeline, seed 0): digits 69.7 → 56.2, spoken digits 50.0 → 50.0, moving
/// digits 19.8 → 20.7 (single → co-trained, test top-1 %). The worst drop, 13.5 points on digits, is the
/// smallest budget (120 updates) shared among three tasks; the margin is that drop plus 2.5 points. Runs are
/// deterministic, so this guards against regressions in the co-training path rather than against noise. The
/// floor, 1.5 × chance (10 classes each), fails a co-training path that learns nothing on a task even where its
/// single-task baseline is itself weak (moving digits, about twice chance).
const MARGIN: f64 = 0.16;
/// The least test top-1 a co-trained task must reach: 1.5 × chance for these 10-class tasks.
const FLOOR: f64 = 0.15;

#[test]
fn cotraining_three_modalities_is_within_margin_of_single_task() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let out = polyflow(root, &["run", "tests/pipelines/margin.toml", "--store", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let show = polyflow(root, &["show", "tests/pipelines/margin.toml", "compare", "--store", store.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&show.stdout).to_string();
    eprintln!("{text}");
    // `show` lists the artifact's files with their blob paths; read table.json from there.
    let blob = text.lines().find(|l| l.trim_start().starts_with("table.json")).and_then(|l| l.split_whitespace().last()).unwrap();
    let table: serde_json::Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    let cells = table["cells"].as_array().unwrap();
    for c in 0..3 {
        let single = cells[0][2 + c]["value"].as_f64().unwrap();
        let co = cells[1][2 + c]["value"].as_f64().unwrap();
        eprintln!("task {c}: single {single:.3} co {co:.3}");
        assert!(co >= single - MARGIN, "task {c}: co-trained {co:.3} vs single-task {single:.3} (margin {MARGIN})");
        assert!(co >= FLOOR, "task {c}: co-trained {co:.3}, under {FLOOR} (1.5 × chance)");
    }
}

/// Gradient accumulation (`micro_batch`) and data parallelism (`gpus`, here replicas on the CPU backend's
/// device): slices of 3 of a batch of 8 (3 + 3 + 2), 2 replicas (4 + 4), 3 replicas (3 + 3 + 2), and 2 replicas
/// each in slices of 3 (3 + 1, 3 + 1), stochastic depth on, under both the weighted schedule and `accumulate`
/// (mean of two tasks), give the whole-batch updates up to float rounding: the same losses and final weights
/// within 1e-4 (relative to the largest value). Where the replicas are placed does not change the bits.
#[test]
fn micro_batches_and_replicas_give_the_whole_batch_update() {
    let (tasks, model) = two_image_tasks(0);
    for (schedule, mean) in [(Schedule::Weighted, false), (Schedule::Accumulate, true)] {
        let go = |micro_batch: usize, replicas: usize, devices: usize| {
            let cfg = RunConfig { clip: None, micro_batch, replicas, ..config(model.clone(), schedule, mean, 3) };
            train(&cfg, &tasks, devices)
        };
        let whole = go(0, 1, 1);
        for (micro, replicas) in [(3, 1), (0, 2), (0, 3), (3, 2)] {
            let what = format!("{schedule:?}, micro_batch {micro}, {replicas} replicas");
            let sliced = go(micro, replicas, 1);
            assert_eq!(whole.steps.len(), sliced.steps.len());
            for (w, s) in whole.steps.iter().zip(&sliced.steps) {
                assert!((w.loss - s.loss).abs() <= 1e-4 * (1.0 + w.loss.abs()), "{what} update {}: loss {} vs {}", w.step, w.loss, s.loss);
                assert_eq!(w.tasks, s.tasks, "{what}: every replica trains the update's task");
            }
            let mut differs = false;
            for (name, w) in &whole.weights {
                let s = &sliced.weights[name];
                assert_eq!(w.data.len(), s.data.len(), "{what} {name}");
                let scale = w.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (x, y) in w.data.iter().zip(&s.data) {
                    assert!((x - y).abs() <= 1e-4 * scale, "{what} {name}: {x} vs {y}");
                    differs |= x != y;
                }
            }
            // Slicing really happened: sums in another order round differently somewhere.
            assert!(differs, "{what}: weights bit-identical to the whole batch's; was the batch sliced?");
            if replicas > 1 {
                // The same replicas spread over two devices (the CPU backend's one device, twice): same bits.
                let spread = go(micro, replicas, 2);
                assert_eq!(sliced.weights, spread.weights, "{what}: placement changed the result");
            }
        }
    }
}

/// f16 with gradient accumulation and data parallelism: 2 replicas in slices of 3 (3 + 1, 3 + 1) train the f16
/// whole-batch updates up to rounding — the same loss scale and the same skipped updates at every step, losses
/// and final weights close (f16 products round to 11 bits, so sums over other slices move further than in
/// f32) — and where the replicas are placed does not change the bits.
#[test]
fn f16_micro_batches_and_replicas_give_the_whole_batch_update() {
    let (mut tasks, model) = two_image_tasks(0);
    tasks.iter_mut().for_each(|t| t.steps = 8);
    let go = |micro_batch: usize, replicas: usize, devices: usize| {
        let cfg = RunConfig {
            f16: true,
            loss_scale_init: Some(2f64.powi(24)),
            clip: None,
            micro_batch,
            replicas,
            ..config(model.clone(), Schedule::Weighted, false, 7)
        };
        train(&cfg, &tasks, devices)
    };
    let whole = go(0, 1, 1);
    let sliced = go(3, 2, 1);
    assert_eq!(whole.steps.len(), 16);
    assert_eq!(sliced.steps.len(), 16);
    let (mut max_loss, mut max_w) = (0.0f64, 0.0f32);
    for (w, s) in whole.steps.iter().zip(&sliced.steps) {
        assert_eq!((w.loss_scale, w.skipped), (s.loss_scale, s.skipped), "update {}: scale and skip", w.step);
        assert_eq!(w.tasks, s.tasks);
        max_loss = max_loss.max((w.loss - s.loss).abs() / (1.0 + w.loss.abs()));
    }
    assert!(whole.steps.iter().any(|s| s.skipped), "no update overflowed at 2^24: the skip path went untested");
    let mut differs = false;
    for (name, w) in &whole.weights {
        let s = &sliced.weights[name];
        assert_eq!(w.data.len(), s.data.len(), "{name}");
        let scale = w.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (x, y) in w.data.iter().zip(&s.data) {
            max_w = max_w.max((x - y).abs() / scale);
            differs |= x != y;
        }
    }
    // Measured: losses 1.1e-4, weights 1.2e-3 of the largest value (f32 slicing: under 1e-4). Slices' losses
    // weighted 1.5× too much, as a check of the check: 0.38 and 0.59.
    eprintln!("f16 sliced vs whole: loss {max_loss:e}, weights {max_w:e}");
    assert!(max_loss <= 1e-3, "losses differ by {max_loss:e}");
    assert!(max_w <= 5e-3, "weights differ by {max_w:e}");
    assert!(differs, "weights bit-identical to the whole batch's: was the batch sliced?");
    assert_eq!(sliced.weights, go(3, 2, 2).weights, "placement changed the result");
}

/// Activation checkpointing recomputes each fused block's activations in the backward pass from its input with
/// the same kernels: the losses and final weights are bit-identical to keeping them (co-training, the
/// `accumulate` schedule and the weighted one, stochastic depth on; also with 2 replicas in slices of 3).
#[test]
fn activation_checkpointing_gives_the_same_bits() {
    let (tasks, model) = two_image_tasks(1);
    for (schedule, mean, micro_batch, replicas) in
        [(Schedule::Weighted, false, 0, 1), (Schedule::Accumulate, true, 0, 1), (Schedule::Weighted, false, 3, 2)]
    {
        let go =
            |recompute: bool| train(&RunConfig { micro_batch, replicas, recompute, ..config(model.clone(), schedule, mean, 5) }, &tasks, 1);
        let (kept, recomputed) = (go(false), go(true));
        assert_eq!(kept.steps, recomputed.steps, "{schedule:?}: losses, learning rates, gradient norms");
        assert_eq!(kept.weights, recomputed.weights, "{schedule:?}: final weights");
    }
}

/// Deferred host reads (what accelerators run, `RunConfig::deferred_reads`): the clip factor computed as a
/// tensor and losses and gradient norms read every few updates. The bits do not depend on how often they are
/// read (every update, every 5, with evaluations and checkpoints in between); the run equals the CPU's eager
/// path (clip factor on the host in f64) within 1e-5, with clipping active, whole batches and slices; and a
/// diverging run still stops with the update its loss became non-finite at.
#[test]
fn deferred_reads_give_the_same_updates_and_still_catch_divergence() {
    let (tasks, model) = two_image_tasks(0);
    for micro_batch in [0, 3] {
        let go = |deferred_reads: Option<usize>, eval_every: usize, checkpoint_every: usize| {
            let cfg = RunConfig {
                micro_batch,
                deferred_reads,
                eval_every,
                checkpoint_every,
                ..config(model.clone(), Schedule::Weighted, false, 4)
            };
            let mut checkpoints = 0;
            let out = run::<Autodiff<Flex>>(&cfg, &tasks, None, None, &[Default::default()], &|_, _, _| {}, &mut |r| {
                checkpoints += 1;
                assert_eq!(r.steps.len(), r.step, "a checkpoint holds every update's log");
            })
            .unwrap();
            (out, checkpoints)
        };
        let (eager, _) = go(None, 0, 3);
        let (every, _) = go(Some(1), 0, 3);
        // Reads forced by evaluations and checkpoints (updates 2, 3, 4, 6, 8), and reads on the count alone
        // (every 3: updates 3, 6, then the end).
        let (five, checkpoints) = go(Some(5), 2, 3);
        let (three, _) = go(Some(3), 0, 0);
        assert_eq!(checkpoints, 2, "checkpoints at updates 3 and 6 of 8");
        for other in [&five, &three] {
            assert_eq!(every.steps, other.steps, "micro_batch {micro_batch}: losses, norms, LRs");
            assert_eq!(every.weights, other.weights, "micro_batch {micro_batch}: weights");
        }
        assert!(eager.steps.iter().any(|s| s.grad_norm > 1.0), "clipping is active in this run");
        for (e, d) in eager.steps.iter().zip(&every.steps) {
            assert_eq!((e.step, &e.tasks, e.lr), (d.step, &d.tasks, d.lr));
            for (x, y, what) in [(e.loss, d.loss, "loss"), (e.grad_norm, d.grad_norm, "gradient norm")] {
                assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "micro_batch {micro_batch} update {}: {what} {x} vs {y}", e.step);
            }
        }
        for (name, w) in &eager.weights {
            let scale = w.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (x, y) in w.data.iter().zip(&every.weights[name].data) {
                assert!((x - y).abs() <= 1e-5 * scale, "micro_batch {micro_batch} {name}: {x} vs {y}");
            }
        }
    }
    // A learning rate that blows up: both paths stop at the same update, naming it.
    let mut hot = tasks.clone();
    hot.iter_mut().for_each(|t| {
        t.lr = 1e12;
        t.steps = 12;
    });
    let err = |deferred_reads, micro_batch| {
        let cfg = RunConfig { clip: None, deferred_reads, micro_batch, ..config(model.clone(), Schedule::Weighted, false, 4) };
        run::<Autodiff<Flex>>(&cfg, &hot, None, None, &[Default::default()], &|_, _, _| {}, &mut |_| {}).map(|_| ()).unwrap_err()
    };
    for micro_batch in [0, 3] {
        let (eager, deferred, every3) = (err(None, micro_batch), err(Some(16), micro_batch), err(Some(3), micro_batch));
        assert!(eager.contains("loss became") && eager.contains("at update"), "{eager}");
        assert_eq!(eager, deferred, "micro_batch {micro_batch}");
        assert_eq!(eager, every3, "micro_batch {micro_batch}");
    }
}

/// `precision = "f16"` (`RunConfig::f16`): the autocast-style composition in f16 with dynamic loss scaling.
/// Started at 2³⁰, the scaled gradients overflow f16, so the first updates are skipped (logged with an
/// infinite norm, the scale halved after each) until the scale fits; then updates are applied at that scale
/// (halved again whenever one overflows). A run resumed from a checkpoint (the scaler's state in it, the logs through JSON as the
/// checkpoint file keeps them) ends with the same bits as the uninterrupted run; a run as on an accelerator
/// (deferred loss reads, the flat loss-scaled update) follows it within 1e-5. Whole batches and slices.
#[test]
fn f16_loss_scaling_skips_overflowed_updates_and_resumes_to_the_same_bits() {
    let (mut tasks, model) = two_image_tasks(0);
    tasks.iter_mut().for_each(|t| t.steps = 12);
    for micro_batch in [0, 3] {
        let cfg = RunConfig {
            f16: true,
            loss_scale_init: Some(2f64.powi(30)),
            checkpoint_every: 10,
            micro_batch,
            ..config(model.clone(), Schedule::Weighted, false, 6)
        };
        let mut saved = None;
        let whole = run::<Autodiff<Flex>>(&cfg, &tasks, None, None, &[Default::default()], &|_, _, _| {}, &mut |r| {
            saved.get_or_insert_with(|| r.clone());
        })
        .unwrap();
        let steps = &whole.steps;
        assert_eq!(steps.len(), 24);
        let skipped = steps.iter().filter(|s| s.skipped).count();
        assert!((1..20).contains(&skipped), "micro_batch {micro_batch}: {skipped} updates skipped");
        assert_eq!(steps[0].loss_scale, Some(2f64.powi(30)));
        for w in steps.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let want = if a.skipped { a.loss_scale.unwrap() / 2.0 } else { a.loss_scale.unwrap() };
            assert_eq!(b.loss_scale, Some(want), "micro_batch {micro_batch} update {}", b.step);
            assert_eq!(a.skipped, !a.grad_norm.is_finite(), "update {}: norm {}", a.step, a.grad_norm);
        }
        assert!(steps.iter().all(|s| s.loss.is_finite()));
        assert!(whole.weights.values().all(|w| w.data.iter().all(|v| v.is_finite())));
        // The checkpoint at update 10, its logs through JSON.
        let mut r = saved.expect("a checkpoint at update 10");
        assert_eq!(r.step, 10);
        assert!(r.loss_scale.is_some());
        r.steps = serde_json::from_str(&serde_json::to_string(&r.steps).unwrap()).unwrap();
        let resumed = run::<Autodiff<Flex>>(&cfg, &tasks, None, Some(r), &[Default::default()], &|_, _, _| {}, &mut |_| {}).unwrap();
        assert_eq!(resumed.steps, whole.steps, "micro_batch {micro_batch}: logs");
        assert_eq!(resumed.weights, whole.weights, "micro_batch {micro_batch}: weights");
        // As on an accelerator (losses read every 5 updates; the norm still every update; the loss-scaled update
        // over the flat buffers, its norm one reduction): the same updates skipped at the same scales, norms,
        // losses and weights within 1e-5; and the read cadence does not change the bits.
        let cfg = RunConfig { deferred_reads: Some(5), ..cfg };
        let deferred = run::<Autodiff<Flex>>(&cfg, &tasks, None, None, &[Default::default()], &|_, _, _| {}, &mut |_| {}).unwrap();
        assert_eq!(deferred.steps.len(), steps.len(), "micro_batch {micro_batch}: updates");
        for (d, w) in deferred.steps.iter().zip(steps) {
            assert_eq!((d.loss_scale, d.skipped), (w.loss_scale, w.skipped), "update {}", d.step);
            assert!(
                d.skipped || (d.grad_norm - w.grad_norm).abs() <= 1e-5 * w.grad_norm,
                "update {}: norm {} vs {}",
                d.step,
                d.grad_norm,
                w.grad_norm
            );
            assert!((d.loss - w.loss).abs() <= 1e-5 * w.loss.abs(), "update {}: loss {} vs {}", d.step, d.loss, w.loss);
        }
        for (name, w) in &whole.weights {
            let d = &deferred.weights[name];
            assert_eq!(d.data.len(), w.data.len(), "micro_batch {micro_batch} {name}");
            let scale = w.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (x, y) in d.data.iter().zip(&w.data) {
                assert!((x - y).abs() <= 1e-5 * scale, "micro_batch {micro_batch} {name}: {x} vs {y}");
            }
        }
        let every = RunConfig { deferred_reads: Some(1), ..cfg };
        let every = run::<Autodiff<Flex>>(&every, &tasks, None, None, &[Default::default()], &|_, _, _| {}, &mut |_| {}).unwrap();
        assert_eq!(every.weights, deferred.weights, "micro_batch {micro_batch}: read cadence");
    }
}

/// Evaluation batches filled up to one size (what the GPU backends do, `eval_batches`) give the metrics of the
/// real examples: the same top-1 and mAP as batches whose last one is partial, and as one batch of the whole
/// split (37 examples, batches of 8 and 10: the last one filled up with 3 copies of its last example). A
/// filler row counted as an example, or a logit row paired with another example's target, changes them.
#[test]
fn filled_up_evaluation_batches_give_the_real_examples_metrics() {
    use polyflow::model::PolyVit;
    use polyflow::train::run::evaluate_batched;
    let (tasks, model) = two_image_tasks(0);
    let dev = Default::default();
    let net = PolyVit::<Flex>::new(&model, 3, &dev);
    for (ti, t) in tasks.iter().enumerate() {
        let mut t = t.clone();
        t.map = true;
        let data = split(37, [1, 1, 8, 8], 3, 7);
        let whole = evaluate_batched(&net, &model, ti, &t, &data, 37, false, &dev);
        assert!(whole.contains_key("top1") && whole.contains_key("map"), "{whole:?}");
        for bs in [8, 10] {
            let (partial, filled) = (
                evaluate_batched(&net, &model, ti, &t, &data, bs, false, &dev),
                evaluate_batched(&net, &model, ti, &t, &data, bs, true, &dev),
            );
            assert_eq!(filled, partial, "task {} batches of {bs}", t.name);
            assert_eq!(filled, whole, "task {} batches of {bs}", t.name);
        }
    }
}
