//! Typed parameters and the backend (issue 15, item 2): `--backend cpu` is another name for `flex`, so both give
//! the same keys (a model trained with one is fresh under the other); an unknown backend is a usage error.

mod common;
use common::pf;

const MODELS: &str = r#"

[node.m]
kind = "train"
inputs = { task = "t" }
dim = 16
depth = 1
heads = 2
mlp = 32
"#;

/// The whole pipeline: the tiny CIFAR task (`tests/common`) and the nodes above.
fn pipe() -> String {
    format!("{}{MODELS}", common::cifar_task(2))
}

/// The `key` of node `id` in `status --json` under `backend`.
fn key(dir: &std::path::Path, backend: &str, id: &str) -> String {
    let (code, out, err) = pf(dir, &["status", "p.toml", "--json", "--backend", backend]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let node = v.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no `{id}` in {out}"));
    node["key"].as_str().unwrap_or_else(|| panic!("`{id}` has no key under {backend}: {out}")).to_string()
}

#[test]
fn cpu_and_flex_are_one_backend_with_one_key() {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    std::fs::write(d.path().join("p.toml"), pipe()).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "t"]);
    assert_eq!(code, 0, "{err}");
    // The training node's inputs are known: its key is computed, with the backend in it.
    let flex = key(d.path(), "flex", "m");
    assert_eq!(key(d.path(), "cpu", "m"), flex, "--backend cpu and --backend flex give different keys");
    assert_ne!(key(d.path(), "cuda", "m"), flex, "the backend is not part of the training node's key");
    // Trained under one name, fresh under the other: nothing runs again.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--backend", "flex"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--backend", "cpu", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"event\":\"started\""), "a node re-ran under --backend cpu: {out}");
    // The environment variable goes through the same parser.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_polyflow"))
        .args(["status", "p.toml", "--json"])
        .env("POLYFLOW_BACKEND", "cpu")
        .current_dir(d.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v.as_array().unwrap().iter().find(|n| n["id"] == "m").unwrap();
    assert_eq!((m["key"].as_str(), m["state"].as_str()), (Some(flex.as_str()), Some("fresh")), "{m}");
}

#[test]
fn an_unknown_backend_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    let (code, _, err) = pf(d.path(), &["status", "p.toml", "--backend", "tpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown backend `tpu`"), "{err}");
}

#[test]
fn show_names_the_values_a_training_node_uses() {
    let d = tempfile::tempdir().unwrap();
    let pipe = "[node.data]\nkind = \"dataset\"\nformat = \"cifar10\"\npath = \"cifar\"\n[node.x]\nkind = \"image_prep\"\ninputs = { data = \"data\" }\n[node.t]\nkind = \"task\"\ninputs = { data = \"x\" }\nsteps = 2\n[node.m]\nkind = \"train\"\ninputs = { task = \"t\" }\nsize = \"micro\"\noptimizer = \"adam\"\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "m"]);
    assert_eq!(code, 0, "{err}");
    let uses = out.lines().find(|l| l.starts_with("uses:")).unwrap_or_else(|| panic!("no `uses:` line in\n{out}"));
    let v: serde_json::Value = serde_json::from_str(uses.trim_start_matches("uses:").trim()).unwrap();
    // The micro preset resolved; Adam's run shows no SGD momentum.
    assert_eq!((v["dim"].as_u64(), v["depth"].as_u64(), v["heads"].as_u64(), v["mlp"].as_u64()), (Some(64), Some(4), Some(4), Some(128)));
    assert!(v.get("momentum").is_none() && v.get("weight_decay").is_none(), "{uses}");
    assert_eq!(v["optimizer"], "adam");
}

/// Parameters added to a kind later (`precision`, `micro_batch`, `gpus`, `activation_checkpointing` on `train`)
/// stay out of the key at their default, given or not, so stores cached before them stay fresh; any other
/// value is a new key and trains from the CLI (f16 logging its loss scale). Activation checkpointing with the
/// erf GELU or with f16 is refused at the parameter's line.
#[test]
fn added_parameters_at_their_default_keep_the_key() {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    let extra = "\n[node.f32]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\nprecision = \"f32\"\nmicro_batch = 0\ngpus = 1\nactivation_checkpointing = false\n\
                 \n[node.bf16]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\nprecision = \"bf16\"\n\
                 \n[node.micro]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\nmicro_batch = 4\n\
                 \n[node.dp]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\ngpus = 2\n\
                 \n[node.ckpt]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\nactivation_checkpointing = true\n\
                 \n[node.f16]\nkind = \"train\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\nprecision = \"f16\"\n";
    std::fs::write(d.path().join("p.toml"), format!("{}{extra}", pipe())).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "t"]);
    assert_eq!(code, 0, "{err}");
    let m = key(d.path(), "flex", "m");
    assert_eq!(key(d.path(), "flex", "f32"), m, "precision = \"f32\" / micro_batch = 0 changed the key");
    assert_ne!(key(d.path(), "flex", "bf16"), m);
    assert_ne!(key(d.path(), "flex", "micro"), m);
    assert_ne!(key(d.path(), "flex", "dp"), m);
    assert_ne!(key(d.path(), "flex", "ckpt"), m);
    assert_ne!(key(d.path(), "flex", "f16"), m);
    // From the CLI: `m` trains, `f32` is then fresh (its key), `bf16`, `micro` and `dp` (two replicas taking
    // turns on the CPU) train on their own.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "m"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("Finished f32"), "f32 (same key as m) ran again: {err}");
    assert!(["bf16", "micro", "dp", "ckpt", "f16"].iter().all(|n| err.contains(&format!("Finished {n}"))), "{err}");
    // f16 logs every update's loss scale (`steps.jsonl` in its artifact, named by `show`).
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "f16"]);
    assert_eq!(code, 0, "{err}");
    let blob = out.lines().find(|l| l.trim_start().starts_with("steps.jsonl")).and_then(|l| l.split_whitespace().last()).unwrap();
    let steps = std::fs::read_to_string(d.path().join(blob)).unwrap();
    assert!(!steps.is_empty() && steps.lines().all(|l| l.contains("\"loss_scale\":")), "{steps}");
    // bf16 with the erf GELU runs the composed (autocast) block: valid.
    std::fs::write(d.path().join("q.toml"), format!("{}{MODELS}gelu = \"erf\"\nprecision = \"bf16\"\n", common::cifar_task(2))).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "q.toml"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.path().join("q.toml"), format!("{}{MODELS}gelu = \"erf\"\nactivation_checkpointing = true\n", common::cifar_task(2)))
        .unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "q.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("q.toml:") && err.contains("activation_checkpointing") && err.contains("tanh"), "{err}");
    // f16 never runs in the fused CPU block, so it cannot checkpoint activations there either.
    std::fs::write(
        d.path().join("q.toml"),
        format!("{}{MODELS}precision = \"f16\"\nactivation_checkpointing = true\n", common::cifar_task(2)),
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "q.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("q.toml:") && err.contains("activation_checkpointing") && err.contains("no f16"), "{err}");
}

/// A precision the backend cannot compute in (bf16 on wgpu: WGSL has none) is refused before anything runs or is
/// written, by `run` and `plan` alike, naming the node, its line and the setting to change: in every build, the
/// check needs no GPU. Other precisions and backends pass it.
#[test]
fn a_precision_the_backend_lacks_is_refused_before_running() {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    std::fs::write(d.path().join("p.toml"), format!("{}{MODELS}precision = \"bf16\"\n", common::cifar_task(2))).unwrap();
    for cmd in ["run", "plan"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml", "--backend", "wgpu", "--store", "s"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("found before running; nothing was run"), "{cmd}: {err}");
        assert!(err.contains("`m` (train, p.toml:") && err.contains("not available on the wgpu backend"), "{cmd}: {err}");
        assert!(err.contains("--set m.precision="), "{cmd}: {err}");
        assert!(!d.path().join("s").exists(), "{cmd} opened a store");
    }
    // The same node on the CPU backend passes the check (`plan` runs nothing).
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--backend", "flex"]);
    assert_eq!(code, 0, "{err}");
}

/// `bench-model --verify` compares polyflow's GPU kernels with burn's compositions; on the CPU backend there
/// is nothing to compare, so it is refused with what to run instead (before any benchmark runs), not reported
/// as a pass.
#[test]
fn verify_is_refused_on_the_cpu_backend() {
    let d = tempfile::tempdir().unwrap();
    for backend in ["flex", "cpu"] {
        let (code, out, err) = pf(d.path(), &["bench-model", "--verify", "--backend", backend, "--steps", "1"]);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("--verify") && err.contains("--backend cuda or wgpu"), "{err}");
        assert!(out.is_empty(), "no benchmark line: {out}");
    }
}

/// A size override is keyed as `0` where it equals its preset's ("the preset's"), yet a change of it reads in the
/// values the model has: `heads changed 2 → 4`, not `2 → 0`, in `status --why` and `plan`.
#[test]
fn a_size_change_is_explained_in_the_values_the_model_has() {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    std::fs::write(d.path().join("p.toml"), pipe()).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    // micro has 4 heads: `heads = 4` keys as the preset's.
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--set", "m.heads=4", "--why", "m"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("heads changed 2 → 4"), "{out}");
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.heads=4"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would run m (train): heads changed 2 → 4"), "{out}");
}
