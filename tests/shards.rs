//! Sharded splits, u8 caches and encoded images: the data path at bounded memory gives the same model, bit
//! for bit, as the single-file float path; encoded images are cropped at batch time, deterministically.

mod common;
use common::pf;
use std::path::Path;

fn cifar_batch(n: usize, offset: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let i = i + offset;
            std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p * 7 + i * 13 + (i % 10) * 40 * (p % 3)) % 256) as u8))
        })
        .collect()
}

const PIPE: &str = r#"
[node.data]
kind = "dataset"
format = "cifar10"
path = "cifar"
val_fraction = 0.1

[node.x]
kind = "image_prep"
inputs = { data = "data" }
channels = 3

[node.t]
kind = "task"
inputs = { data = "x" }
steps = 6
batch_size = 16
lr = 0.001
warmup = 1
augment = { crop_pad = 1, flip = true }

[node.m]
kind = "train"
inputs = { task = "t" }
dim = 32
depth = 1
heads = 2
mlp = 64
optimizer = "adam"
"#;

/// The `artifact …` line of `show NODE` (the digest of every file of the artifact).
fn artifact(dir: &Path, store: &str, node: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["show", "p.toml", node, "--store", store];
    args.extend_from_slice(extra);
    let (code, out, err) = pf(dir, &args);
    assert_eq!(code, 0, "{err}");
    (out.lines().find(|l| l.starts_with("artifact")).unwrap_or_default().to_string(), out)
}

#[test]
fn sharded_u8_caches_train_the_same_model_as_float_files() {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("cifar");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("data_batch_1.bin"), cifar_batch(300, 0)).unwrap();
    std::fs::write(c.join("data_batch_2.bin"), cifar_batch(300, 300)).unwrap();
    std::fs::write(c.join("test_batch.bin"), cifar_batch(60, 600)).unwrap();
    std::fs::write(d.path().join("p.toml"), PIPE).unwrap();
    // 1 MiB shards hold 341 CIFAR images: train (540) and val + test stay whole or split.
    let sharded = ["--set", "data.shard_mb=1", "--set", "x.dtype=u8"];
    for scale in ["minus_one_one", "mean_std"] {
        let s = format!("--set=x.scale={scale}");
        let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", "a", &s]);
        assert_eq!(code, 0, "{err}");
        let mut args = vec!["run", "p.toml", "--store", "b", &s];
        args.extend_from_slice(&sharded);
        let (code, _, err) = pf(d.path(), &args);
        assert_eq!(code, 0, "{err}");
        let (a, _) = artifact(d.path(), "a", "m", &[&s]);
        let mut extra = vec![s.as_str()];
        extra.extend_from_slice(&sharded);
        let (b, _) = artifact(d.path(), "b", "m", &extra);
        assert!(a.starts_with("artifact"), "{a}");
        assert_eq!(a, b, "scale {scale}: the u8 sharded path trained another model");
        let (_, show) = artifact(d.path(), "b", "data", &extra);
        assert!(show.contains("in 2 shards"), "{show}");
        let (_, show) = artifact(d.path(), "b", "x", &extra);
        assert!(show.contains("stored as u8") && show.contains(" u8,"), "{show}");
    }
}

fn jpeg(path: &Path, w: u32, h: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([shade, (x * 9 % 256) as u8, (y * 5 % 256) as u8]));
    image::DynamicImage::ImageRgb8(img).save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

#[test]
fn encoded_images_are_cropped_per_batch_deterministically() {
    let d = tempfile::tempdir().unwrap();
    for (k, (c, shade)) in [("cat", 30u8), ("dog", 220)].iter().enumerate() {
        for i in 0..20u32 {
            jpeg(&d.path().join(format!("im/train/{c}/{i}.jpg")), 40 + 3 * i, 30 + 2 * (i % 5) + k as u32, *shade);
        }
        for i in 0..4u32 {
            jpeg(&d.path().join(format!("im/val/{c}/v{i}.jpg")), 33, 47, *shade);
        }
    }
    let pipe = PIPE
        .replace("format = \"cifar10\"\npath = \"cifar\"", "format = \"image_folder\"\npath = \"im\"\nstore = \"encoded\"")
        .replace("channels = 3\n", "channels = 3\nheight = 16\nwidth = 16\n")
        .replace("augment = { crop_pad = 1, flip = true }", "augment = { inception_crop = true, flip = true }");
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    for store in ["a", "b"] {
        let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", store]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(artifact(d.path(), "a", "m", &[]).0, artifact(d.path(), "b", "m", &[]).0, "two runs differ");
    let (_, show) = artifact(d.path(), "a", "x", &[]);
    assert!(show.contains("decoded per batch to 16×16") && show.contains("bytes ["), "{show}");
    // A float cache of the same images trains another model (the crop comes from the original image).
    let (code, _, err) =
        pf(d.path(), &["run", "p.toml", "--store", "c", "--set", "data.store=pixels", "--set", "data.height=16", "--set", "data.width=16"]);
    assert_eq!(code, 0, "{err}");
    // Encoded storage is for image files only.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", "a", "--set", "data.format=cifar10"]);
    assert!(code == 2 && err.contains("`store` = \"encoded\" keeps image files' bytes") && err.contains("nothing was run"), "{code} {err}");
}

#[test]
fn audio_models_see_a_window_of_the_stored_frames() {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/audio/spoken_digits");
    for c in ["3", "7"] {
        std::fs::create_dir_all(d.path().join("sc").join(c)).unwrap();
        for f in std::fs::read_dir(src.join(c)).unwrap().flatten().take(12) {
            std::fs::copy(f.path(), d.path().join("sc").join(c).join(f.file_name())).unwrap();
        }
    }
    let pipe = PIPE
        .replace("format = \"cifar10\"\npath = \"cifar\"", "format = \"speech_commands\"\npath = \"sc\"\ntest_fraction = 0.2")
        .replace(
            "kind = \"image_prep\"\ninputs = { data = \"data\" }\nchannels = 3\n",
            "kind = \"audio_prep\"\ninputs = { data = \"data\" }\nframes = 96\nwindow = 64\nfbank = { num_mel_bins = 32 }\n",
        )
        .replace("augment = { crop_pad = 1, flip = true }", "augment = { time_masks = 1, time_mask_width = 4 }");
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", "a"]);
    assert_eq!(code, 0, "{err}");
    let (_, show) = artifact(d.path(), "a", "x", &[]);
    assert!(show.contains("96 frames; the model sees 64 of them"), "{show}");
    let (_, out, _) = pf(d.path(), &["params", "p.toml", "--store", "a", "--json"]);
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", "b"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(artifact(d.path(), "a", "m", &[]).0, artifact(d.path(), "b", "m", &[]).0, "random windows are seeded");
    // The model is built for 64 frames: 8 × 4 patches of 8 × 8 on 64 × 32, 33 tokens; its tokenizer has
    // 8·8·3·32 + 32 (patch projection) + 33·32 (positions) + 32 (class token) = 7,264 parameters (96 frames: 7,776).
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["m"]["tokenizers"], 7264, "{out}");
}

#[test]
fn video_models_see_a_crop_of_the_stored_frames() {
    let d = tempfile::tempdir().unwrap();
    for (k, c) in ["left", "right"].iter().enumerate() {
        for clip in 0..8u32 {
            for f in 0..4u32 {
                let p = d.path().join(format!("v/{c}/clip{clip}/frame_{f}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let img =
                    image::GrayImage::from_fn(12, 12, |x, y| image::Luma([((x + y * 3 + f * (1 + k as u32) * 5 + clip) * 7 % 256) as u8]));
                img.save(p).unwrap();
            }
        }
    }
    let pipe = PIPE
        .replace(
            "format = \"cifar10\"\npath = \"cifar\"",
            "format = \"frames\"\npath = \"v\"\nframes = 4\nwidth = 12\ntest_fraction = 0.25",
        )
        .replace(
            "kind = \"image_prep\"\ninputs = { data = \"data\" }\nchannels = 3\n",
            "kind = \"video_prep\"\ninputs = { data = \"data\" }\nframes = 4\nsize = 12\ncrop = 8\ndtype = \"u8\"\n",
        )
        .replace("augment = { crop_pad = 1, flip = true }", "augment = { scale_jitter = [0.9, 1.33], flip = true }")
        .replace("optimizer = \"adam\"", "optimizer = \"adam\"\nvideo_patch = [2, 4, 4]");
    std::fs::write(d.path().join("p.toml"), &pipe).unwrap();
    for store in ["a", "b"] {
        let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", store]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(artifact(d.path(), "a", "m", &[]).0, artifact(d.path(), "b", "m", &[]).0, "random crops are seeded");
    let (_, show) = artifact(d.path(), "a", "x", &[]);
    assert!(show.contains("the model sees 8² crops"), "{show}");
    // The tokenizer is built for 8² crops: (4/2)·(8/4)² = 8 tubelets + the class token = 9 positions;
    // 2·4·4·3·32 + 32 (projection) + 9·32 (positions) + 32 (class token) = 3,424 parameters (12²: 19 positions).
    let (_, out, _) = pf(d.path(), &["params", "p.toml", "--store", "a", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["m"]["tokenizers"], 3424, "{out}");
    // And 2 consecutive frames of the 4 stored (`window`): a random start per example, seeded.
    let windowed = pipe.replace("crop = 8\n", "crop = 8\nwindow = 2\n");
    std::fs::write(d.path().join("p.toml"), windowed).unwrap();
    for store in ["c", "e"] {
        let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", store]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(artifact(d.path(), "c", "m", &[]).0, artifact(d.path(), "e", "m", &[]).0, "random clip windows are seeded");
    let (_, show) = artifact(d.path(), "c", "x", &[]);
    assert!(show.contains("the model sees 2 consecutive frames"), "{show}");
    // (2/2)·(8/4)² = 4 tubelets + the class token = 5 positions: 2·4·4·3·32 + 32 + 5·32 + 32 = 3,296.
    let (_, out, _) = pf(d.path(), &["params", "p.toml", "--store", "c", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["m"]["tokenizers"], 3296, "{out}");
    // More than it stores is refused before anything runs.
    std::fs::write(d.path().join("p.toml"), pipe.replace("crop = 8\n", "crop = 8\nwindow = 5\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--store", "c"]);
    assert!(code == 2 && err.contains("window") && err.contains("more than the 4 stored"), "{err}");
}

#[test]
fn short_audio_clips_are_zero_padded_or_repeated_as_pad_says() {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/audio/spoken_digits");
    for c in ["3", "7"] {
        std::fs::create_dir_all(d.path().join("sc").join(c)).unwrap();
        for f in std::fs::read_dir(src.join(c)).unwrap().flatten().take(3) {
            std::fs::copy(f.path(), d.path().join("sc").join(c).join(f.file_name())).unwrap();
        }
    }
    let prep = |id: &str, pad: &str| {
        format!("[node.{id}]\nkind = \"audio_prep\"\ninputs = {{ data = \"data\" }}\nframes = 300\n{pad}fbank = {{ num_mel_bins = 8 }}\n")
    };
    let pipe = format!(
        "[node.data]\nkind = \"dataset\"\nformat = \"speech_commands\"\npath = \"sc\"\ntest_fraction = 0.2\n{}{}",
        prep("z", ""),
        prep("r", "pad = \"repeat\"\n")
    );
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let train = |node: &str| {
        let (_, show) = artifact(d.path(), ".polyflow", node, &[]);
        let blob =
            show.lines().find(|l| l.trim_start().starts_with("train.safetensors")).unwrap().split_whitespace().last().unwrap().to_string();
        let bytes = std::fs::read(blob).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        t.tensor("x").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>()
    };
    let (z, r) = (train("z"), train("r"));
    let row = |x: &[f32], f: usize| x[f * 8..(f + 1) * 8].to_vec();
    // The first clip: its frames, then zeros (zero) or its frames again (repeat).
    let m = (0..300).find(|&f| row(&z, f).iter().all(|&v| v == 0.0)).expect("a 1 s clip is shorter than 300 frames");
    assert!(m > 10 && (m..300).all(|f| row(&z, f).iter().all(|&v| v == 0.0)), "zeros after the clip");
    for f in 0..300 {
        assert_eq!(row(&r, f), row(&z, f % m), "frame {f} of the repeated clip");
    }
}
