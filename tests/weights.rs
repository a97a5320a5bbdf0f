//! The `weights` node kind end to end through the CLI: a generated timm-named ViT checkpoint initialises a
//! `train` run and the "initial model" of `features`; it is keyed by its content; a checkpoint of the wrong
//! shape or a non-ViT file is an exit-2 error naming the tensor.

mod common;

use common::{pf, timm_vit};
use polyflow::model::checkpoint::{to_safetensors, HostTensor};
use std::path::{Path, PathBuf};

/// Writes `p.toml` in `dir`: the embedded image datasets included, then `body`.
fn with_images(dir: &Path, body: &str) -> PathBuf {
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("datasets/images.toml");
    let p = dir.join("p.toml");
    std::fs::write(&p, format!("include = [\"{}\"]\n{body}", images.display())).unwrap();
    p
}

/// Digits (embedded, 48 examples per split), a micro ViT (dim 64, depth 4, MLP 128, 8×8 patches) fine-tuned from
/// `vit` and probed as the initial model.
fn pipeline(dir: &Path) -> PathBuf {
    with_images(
        dir,
        r#"
[node.digits_x]
kind = "image_prep"
inputs = { data = "digits" }
height = 32
width = 32

[node.t_digits]
kind = "task"
inputs = { data = "digits_x" }
steps = 2
batch_size = 8
augment = { inception_crop = true, flip = true }

[node.vit]
kind = "weights"
path = "vit.safetensors"

[node.ft]
kind = "train"
inputs = { task = "t_digits", init = "vit" }
optimizer = "adam"

[node.feat]
kind = "features"
inputs = { task = "t_digits", init = "vit" }
"#,
    )
}

const LIMIT: &str = "digits.limit=48";

#[test]
fn a_timm_checkpoint_initialises_training_and_the_initial_model() {
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path());
    timm_vit(&d.path().join("vit.safetensors"), 64, 4, 128, 8, 2);
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--set", LIMIT, "-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "feat", "--set", LIMIT]);
    // The checkpoint by its artifact's digest, not by its node's id (which is not in the key).
    assert!(out.contains("pretrained weights (artifact ") && !out.contains("`vit`"), "{out}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "ft", "--set", LIMIT]);
    assert!(out.contains("initialised from a pretrained checkpoint (checkpoint blake3 "), "{out}");
    assert!(out.contains("\nseed:   0\n") && out.contains("\ninput:  init: vit (") && out.contains("\ninput:  task: t_digits ("), "{out}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "vit", "--set", LIMIT]);
    assert!(out.contains("\"depth\": 4") && out.contains("\"grid\": 2"), "{out}");
    // Keyed by content, not by path: a renamed copy leaves the weights node, training and features fresh.
    std::fs::rename(d.path().join("vit.safetensors"), d.path().join("moved.safetensors")).unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--set", LIMIT, "--set", "vit.path=moved.safetensors", "--json"]);
    assert_eq!(code, 0, "{err}");
    for n in ["vit", "ft", "feat"] {
        assert!(out.contains(&format!("\"event\":\"fresh\",\"id\":\"{n}\"")), "{n} re-ran: {out}");
    }
    // Other weights: the weights node and everything trained from it are stale.
    timm_vit(&d.path().join("moved.safetensors"), 64, 4, 128, 8, 3);
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", LIMIT, "--set", "vit.path=moved.safetensors"]);
    assert!(out.contains("Would run vit") && out.contains("Would run ft") && out.contains("Would run feat"), "{out}");
}

#[test]
fn wrong_shapes_and_non_vit_files_are_exit_2_naming_the_tensor_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path());
    // Two blocks for a four-block model: found from the checkpoint's header and the declared tasks, by `plan`
    // as by `run`, before the dataset is ingested.
    timm_vit(&d.path().join("vit.safetensors"), 64, 2, 128, 8, 2);
    for cmd in ["plan", "run"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml", "ft", "--set", LIMIT]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("2 blocks") && err.contains("blocks.1") && err.contains("nothing was run"), "{err}");
        assert!(err.contains("set `dim = 64`, `depth = 2`, `mlp = 128`"), "{err}");
        assert!(err.contains("`ft` (train") && err.contains("`init`"), "{err}");
    }
    assert!(!d.path().join(".polyflow").exists(), "a refused run opened the store");
    // A ViT of another width: the weights node accepts it (it is a ViT); the model says what is off.
    timm_vit(&d.path().join("vit.safetensors"), 32, 4, 128, 8, 2);
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "feat", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`feat` (features") && err.contains("width 32") && err.contains("the model width 64"), "{err}");
    // Either the file or the model may be the mistake.
    assert!(err.contains("if it is the wrong file, point the `weights` node's `path` at the intended checkpoint"), "{err}");
    // 16×16 patches for the model's 8×8: the tokenizer named, and the parameter to change.
    timm_vit(&d.path().join("vit.safetensors"), 64, 4, 128, 16, 2);
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("image tokenizer's patch is [8, 8]×3") && err.contains("16×16×3") && err.contains("set `image_patch = [16, 16]`"),
        "{err}"
    );
    assert_eq!(err.matches("does not fit the model").count(), 2, "ft and feat: {err}");
    // With the matching patch, it plans.
    let (code, _, err) =
        pf(d.path(), &["plan", "p.toml", "--set", LIMIT, "--set", "ft.image_patch=[16,16]", "--set", "feat.image_patch=[16,16]"]);
    assert_eq!(code, 0, "{err}");
    // A download cut short: its header is whole, its tensors are not.
    timm_vit(&d.path().join("vit.safetensors"), 64, 4, 128, 8, 2);
    let full = std::fs::metadata(d.path().join("vit.safetensors")).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(d.path().join("vit.safetensors")).unwrap().set_len(full - 1000).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("vit.safetensors: truncated") && err.contains("interrupted download"), "{err}");
    // Not a ViT at all: `weights` refuses it before running, from the header.
    let mut w = std::collections::BTreeMap::new();
    w.insert("conv1.weight".to_string(), HostTensor { shape: vec![4, 3, 3, 3], data: vec![0.0; 108] });
    std::fs::write(d.path().join("vit.safetensors"), to_safetensors(&w)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "vit", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a timm ViT") && err.contains("patch_embed.proj.weight") && err.contains("nothing was run"), "{err}");
    // Not even safetensors: named by what it is.
    std::fs::write(d.path().join("vit.safetensors"), b"hello").unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "vit", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("vit.safetensors") && err.contains("safetensors"), "{err}");
    std::fs::write(d.path().join("vit.safetensors"), [0x80, 0x02, 0x7d, 0x71, 0, 0, 0, 0, 0, 0]).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "vit", "--set", LIMIT]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Python pickle"), "{err}");
}

/// Digits at 32² trains `base`; `deeper` starts from it (`init`), `feat16` embeds 16² digits with its encoder.
fn transfer_pipeline(dir: &Path) -> PathBuf {
    with_images(
        dir,
        r#"
[node.d32]
kind = "image_prep"
inputs = { data = "digits" }
height = 32
width = 32

[node.d16]
kind = "image_prep"
inputs = { data = "digits" }
height = 16
width = 16

[node.t32]
kind = "task"
inputs = { data = "d32" }
steps = 2
batch_size = 8

[node.t16]
kind = "task"
inputs = { data = "d16" }
steps = 2
batch_size = 8

[node.base]
kind = "train"
inputs = { task = "t32" }

[node.deeper]
kind = "train"
inputs = { task = "t32", init = "base" }
depth = 5

[node.feat16]
kind = "features"
inputs = { task = "t16", model = "base" }
"#,
    )
}

#[test]
fn a_trained_model_that_does_not_fit_is_refused_before_it_is_trained() {
    let d = tempfile::tempdir().unwrap();
    transfer_pipeline(d.path());
    // `base` would train for nothing: `plan` and `run` find both misfits from the declarations alone.
    for cmd in ["plan", "run"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml", "--set", LIMIT]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("2 problems") && err.contains("nothing was run"), "{err}");
        assert!(err.contains("`deeper` (train") && err.contains("`init` (the trained model) does not fit this model"), "{err}");
        assert!(err.contains("4 blocks") && err.contains("5 blocks") && err.contains("give it the same `size`"), "{err}");
        assert!(err.contains("`feat16` (features") && err.contains("`model` (the trained model) does not fit this task"), "{err}");
        assert!(err.contains("its image tokenizer takes inputs [32, 32], this task's data is [16, 16]"), "{err}");
    }
    assert!(!d.path().join(".polyflow").exists(), "a refused run opened the store");
    // Two tasks of one modality at two sizes: the task is named by its node.
    std::fs::write(
        d.path().join("c.toml"),
        "include = [\"p.toml\"]\n[node.c]\nkind = \"cotrain\"\ninputs = { tasks = [\"t32\", \"t16\"] }\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "c.toml", "c", "--set", LIMIT]);
    assert!(code == 2 && err.contains("task `t16` has image input [16, 16] but another image task has [32, 32]"), "{err}");
    // Made to fit (the same depth; the probe's data at the model's size), it runs, and the encoder carries over.
    let fit = ["--set", LIMIT, "--set", "deeper.depth=0", "--set", "d16.height=32", "--set", "d16.width=32"];
    let (code, _, err) = pf(d.path(), &[&["run", "p.toml"][..], &fit[..]].concat());
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &[&["show", "p.toml", "feat16"][..], &fit[..]].concat());
    assert!(out.contains("encoder of `base`"), "{out}");
    assert!(out.contains("embeds with the encoder of `base` (width 64, 4 blocks, 4 heads, MLP 128, l_adapt 0)"), "{out}");
    // The sizes it uses are the trained model's, whatever its own defaults say.
    let (_, out, _) = pf(d.path(), &[&["show", "p.toml", "feat16"][..], &fit[..], &["--set", "base.depth=2"]].concat());
    let uses = out.lines().find(|l| l.starts_with("uses:")).unwrap_or_default();
    assert!(uses.contains("\"depth\":2") && out.contains("(width 64, 2 blocks"), "{out}");
    // Its own model settings are not used with a trained model: one that differs from the model's is refused.
    let (code, _, err) = pf(d.path(), &[&["plan", "p.toml"][..], &fit[..], &["--set", "feat16.depth=2"]].concat());
    assert!(code == 2 && err.contains("`feat16` (features") && err.contains("2 blocks") && err.contains("the trained model has"), "{err}");
    let (code, _, err) = pf(d.path(), &[&["plan", "p.toml"][..], &fit[..], &["--set", "feat16.depth=4"]].concat());
    assert_eq!(code, 0, "the trained model's own value: {err}");
}
