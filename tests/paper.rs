//! The paper profile through the binary: every table resolves (`plan`, `params`) at `--profile paper` with the
//! user's data given by `--config`/`--set` (here: tiny generated datasets in the layouts the paper's dataset
//! nodes declare), `params` counts the paper's models without any data, and a table whose data is not
//! configured names every missing path and writes nothing.

mod common;

use common::{pf, timm_vit_zeros};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn png(path: &Path, side: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(side, side, |x, y| image::Rgb([(x * 20) as u8, (y * 20) as u8, 7])).save(path).unwrap();
}

/// A 16 kHz mono PCM16 WAV of `n` samples.
fn wav(path: &Path, n: usize) {
    let data: Vec<u8> = (0..n).flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes()).collect();
    let mut b = b"RIFF".to_vec();
    b.extend((36 + data.len() as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(1u16.to_le_bytes()); // PCM
    b.extend(1u16.to_le_bytes()); // mono
    b.extend(16000u32.to_le_bytes());
    b.extend(32000u32.to_le_bytes());
    b.extend(2u16.to_le_bytes());
    b.extend(16u16.to_le_bytes());
    b.extend(b"data");
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(data);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b).unwrap();
}

/// Miniature datasets in the layouts of pipelines/paper/data.toml, and a config file pointing at them
/// (relative paths: they resolve against the config file's folder).
fn make_data(root: &Path) -> PathBuf {
    let mut cfg = String::new();
    let set = |cfg: &mut String, node: &str, rel: &str| cfg.push_str(&format!("[node.{node}]\npath = \"{rel}\"\n"));
    for n in ["resisc45", "caltech101", "sun397", "dtd"] {
        for c in ["a", "b"] {
            png(&root.join(format!("{n}/{c}/0.png")), 8);
        }
        set(&mut cfg, n, n);
        // A miniature copy declares its own class count (`plan` counts the folders against it).
        cfg.push_str("num_classes = 2\n");
    }
    // ImageNet's train/ + val/ class folders; Pets' images/ + annotations/.
    for s in ["train", "val"] {
        for c in ["n01", "n02"] {
            png(&root.join(format!("imagenet/{s}/{c}/0.png")), 8);
        }
    }
    set(&mut cfg, "imagenet", "imagenet");
    cfg.push_str("num_classes = 2\n");
    png(&root.join("pets/images/Abyssinian_1.png"), 8);
    png(&root.join("pets/images/Abyssinian_2.png"), 8);
    std::fs::create_dir_all(root.join("pets/annotations")).unwrap();
    std::fs::write(root.join("pets/annotations/trainval.txt"), "Abyssinian_1 1 1 1\n").unwrap();
    std::fs::write(root.join("pets/annotations/test.txt"), "Abyssinian_2 1 1 1\n").unwrap();
    std::fs::write(root.join("pets/annotations/test.txt"), "Abyssinian_1 1 1 1\n").unwrap();
    set(&mut cfg, "pets", "pets");
    let rec = |label: &[u8]| [label, &[9u8; 3072][..]].concat();
    std::fs::create_dir_all(root.join("cifar10")).unwrap();
    for f in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        std::fs::write(root.join("cifar10").join(f), rec(&[3])).unwrap();
    }
    set(&mut cfg, "cifar10", "cifar10");
    std::fs::create_dir_all(root.join("cifar100")).unwrap();
    for f in ["train.bin", "test.bin"] {
        std::fs::write(root.join("cifar100").join(f), rec(&[1, 42])).unwrap();
    }
    set(&mut cfg, "cifar100", "cifar100");
    // Video as folders of frames (DMVR-style dumps): the `frames` format, so this test needs no video decoder.
    for n in ["kinetics400", "kinetics600", "mit", "epic_kitchens", "ssv2"] {
        for c in ["a", "b"] {
            for f in 0..3 {
                png(&root.join(format!("{n}/{c}/clip0/{f:03}.png")), 8);
            }
        }
        set(&mut cfg, n, n);
        cfg.push_str("format = \"frames\"\nframes = 64\nstride = 1\nnum_classes = 2\n");
    }
    // AudioSet's segment CSVs, VGGSound's CSV, Speech Commands' folders, ESC-50 as distributed.
    wav(&root.join("audioset/Yaaaaaaaaaaa.wav"), 1600);
    std::fs::write(root.join("audioset/class_labels_indices.csv"), "index,mid,display_name\n0,/m/0,x\n").unwrap();
    std::fs::write(root.join("audioset/balanced_train_segments.csv"), "# a\n# b\n# c\naaaaaaaaaaa, 0.000, 10.000, \"/m/0\"\n").unwrap();
    set(&mut cfg, "audioset", "audioset");
    wav(&root.join("vggsound/aaaaaaaaaaa_000000.wav"), 1600);
    std::fs::write(root.join("vggsound/vggsound.csv"), "aaaaaaaaaaa,0,x,train\n").unwrap();
    set(&mut cfg, "vggsound", "vggsound");
    for c in ["yes", "no"] {
        wav(&root.join(format!("speech_commands/{c}/a.wav")), 1600);
    }
    set(&mut cfg, "speech_commands", "speech_commands");
    wav(&root.join("esc50/audio/1-1-A-0.wav"), 1600);
    wav(&root.join("esc50/audio/2-1-A-1.wav"), 1600);
    std::fs::create_dir_all(root.join("esc50/meta")).unwrap();
    std::fs::write(
        root.join("esc50/meta/esc50.csv"),
        "filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,1,0,dog,True,1,A\n2-1-A-1.wav,2,1,rooster,True,1,A\n",
    )
    .unwrap();
    set(&mut cfg, "esc50", "esc50");
    let path = root.join("my-data.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn params_counts_the_papers_polyvits_without_any_data() {
    let d = tempfile::tempdir().unwrap();
    let table2 = repo().join("pipelines/table2.toml");
    let (code, out, err) = pf(d.path(), &["params", table2.to_str().unwrap(), "--profile", "paper", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["co_all.0"]["total"], 92_683_471, "{out}");
    assert_eq!(v["co_all.6"]["total"], 177_737_935, "{out}");
    // Nine single-task baselines, three per-modality PolyViTs, two all-task PolyViTs; nothing of the small study.
    assert_eq!(v.as_object().unwrap().keys().filter(|k| k.starts_with("st.")).count(), 9);
    assert!(v.get("st.digits").is_none());
    // Nothing was read or written: no store.
    assert!(!d.path().join(".polyflow").exists());
}

#[test]
fn every_table_names_its_missing_data_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        let f = repo().join(format!("pipelines/table{i}.toml"));
        let (code, _, err) = pf(d.path(), &["plan", f.to_str().unwrap(), "--profile", "paper"]);
        assert_eq!(code, 2, "table {i}: {err}");
        assert!(err.contains("nothing was run or written"), "{err}");
        let (code, _, err2) = pf(d.path(), &["run", f.to_str().unwrap(), "--profile", "paper"]);
        assert_eq!((code, &err2), (2, &err), "run and plan give the same list");
        assert!(!d.path().join(".polyflow").exists(), "table {i} created a store");
    }
    // Table 2 needs the nine co-training datasets, the held-out ones of its probe rows are not asked for, and
    // each missing path comes with the option that sets it.
    let f = repo().join("pipelines/table2.toml");
    let (_, _, err) = pf(d.path(), &["plan", f.to_str().unwrap(), "--profile", "paper"]);
    for n in ["imagenet", "cifar10", "cifar100", "pets", "resisc45", "kinetics400", "mit", "audioset", "vggsound", "vit_b16"] {
        assert!(err.contains(&format!("--set {n}.path=")), "{n}: {err}");
    }
    assert!(err.contains("pipelines/paper/data.toml:"), "{err}");
    assert!(!err.contains("--set sun397.path"), "{err}");
    // Table 5 needs the ViT-L/16 weights and the three video datasets only.
    let f = repo().join("pipelines/table5.toml");
    let (_, _, err) = pf(d.path(), &["plan", f.to_str().unwrap(), "--profile", "paper"]);
    assert!(err.starts_with("error: 4 problems found before running"), "{err}");
    assert!(err.contains("vit_l16") && err.contains("kinetics600") && !err.contains("imagenet"), "{err}");
    // A build without video decoding says so with the first list, not once the paths are set.
    let without_video = err.contains("kinetics600.path") && err.contains("built without video decoding");
    assert_eq!(without_video, !cfg!(feature = "video"), "{err}");
}

#[test]
fn every_table_plans_at_paper_scale_on_the_users_data() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let cfg = make_data(&data);
    // The geometry of the checkpoints the paper starts from (B/16 and L/16 at 224², ImageNet-21k): `plan` checks
    // that they fit the profile's models.
    timm_vit_zeros(&data.join("vit_b16.safetensors"), 768, 12, 3072, 16, 14);
    timm_vit_zeros(&data.join("vit_l16.safetensors"), 1024, 24, 4096, 16, 14);
    let work = d.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for i in 1..=5 {
        let f = repo().join(format!("pipelines/table{i}.toml"));
        let args = [
            "plan",
            f.to_str().unwrap(),
            "--profile",
            "paper",
            "--config",
            cfg.to_str().unwrap(),
            // Relative to the current directory, as typed on a command line.
            "--set",
            "vit_b16.path=../data/vit_b16.safetensors",
            "--set",
            "vit_l16.path=../data/vit_l16.safetensors",
        ];
        let (code, out, err) = pf(&work, &args);
        assert_eq!(code, 0, "table {i}: {err}");
        assert!(out.contains(&format!("Would run table{i} (table)")), "{out}");
        if i == 2 {
            // Table 2 ingests the nine tasks from the configured folders and trains from `vit_b16`.
            for n in ["imagenet", "kinetics400", "audioset", "vggsound", "vit_b16", "st.imagenet", "co_all.6", "probe_init.pets"] {
                assert!(out.contains(&format!("Would run {n} (")), "{n}: {out}");
            }
        }
        let (code, out, err) = pf(&work, &[&["params"], &args[1..]].concat());
        assert_eq!(code, 0, "table {i}: {err}");
        assert!(out.contains("total"), "{out}");
        // (The paper's counts, with its class counts, are `params_counts_the_papers_polyvits_without_any_data`'s:
        // these miniature copies declare 2 classes each.)
    }
}

/// The parameters `show` resolves for node `n` of Table 2 at the paper profile.
fn paper_params(dir: &Path, n: &str) -> serde_json::Value {
    let table2 = repo().join("pipelines/table2.toml");
    let (code, out, err) = pf(dir, &["show", table2.to_str().unwrap(), n, "--profile", "paper"]);
    assert_eq!(code, 0, "{n}: {err}");
    let line = out.lines().find_map(|l| l.strip_prefix("params: ")).unwrap_or_else(|| panic!("{n}: {out}"));
    serde_json::from_str(line).unwrap()
}

/// What the paper profile resolves is Table 6 and the reference code's settings (docs/paper.md), not a profile
/// kind table's: such a table overrides what a node declares, which once cut the stored audio to the 8 s the model
/// sees (no random window left) and the video frames to the 224² crop (and to stride 2 twice, which failed).
#[test]
fn the_paper_profile_resolves_table_6() {
    let d = tempfile::tempdir().unwrap();
    for n in ["audioset_x", "vggsound_x"] {
        let p = paper_params(d.path(), n);
        assert_eq!((p["frames"].as_u64(), p["window"].as_u64()), (Some(1000), Some(800)), "{n}: {p}");
        assert_eq!(p["fbank"]["num_mel_bins"], 128, "{n}: {p}");
    }
    for n in ["kinetics400_x", "mit_x"] {
        let p = paper_params(d.path(), n);
        let got = ["frames", "stride", "size", "crop"].map(|k| p[k].as_u64().unwrap());
        assert_eq!(got, [32, 1, 256, 224], "{n}: {p}");
    }
    for n in ["imagenet_x", "cifar10_x", "pets_x", "resisc45_x"] {
        let p = paper_params(d.path(), n);
        assert_eq!((p["height"].as_u64(), p["width"].as_u64()), (Some(384), Some(384)), "{n}: {p}");
    }
    // Every image task: Inception crop + flip; single-task warmups of the builders (Pets 100, RESISC45 200).
    for (n, warmup) in [("t_imagenet", 500), ("t_cifar10", 500), ("t_pets", 100), ("t_resisc45", 200)] {
        let p = paper_params(d.path(), n);
        assert_eq!(p["augment"], serde_json::json!({"inception_crop": true, "flip": true}), "{n}: {p}");
        assert_eq!((p["warmup"].as_u64(), p["warmup_group"].as_str()), (Some(warmup), Some("image")), "{n}: {p}");
    }
    // `show` outlines the co-training schedule from the tasks (T and W of docs/paper.md), and a single-task run's.
    let table2 = repo().join("pipelines/table2.toml");
    for (n, want) in
        [("co_all.0", "weighted, 417,920 updates, one global warmup of 47,330"), ("st.pets", "500 updates, one global warmup of 100")]
    {
        let (_, out, _) = pf(d.path(), &["show", table2.to_str().unwrap(), n, "--profile", "paper"]);
        assert!(out.contains(&format!("schedule: {want}")), "{n}: {out}");
    }
    // Splits: CIFAR holds out 2 %, Pets 10 %, ImageNet 1 %; video and audio train on all of their train tables.
    for (n, val) in
        [("cifar10", 0.02), ("pets", 0.1), ("imagenet", 0.01), ("kinetics400", 0.0), ("mit", 0.0), ("audioset", 0.0), ("vggsound", 0.0)]
    {
        assert_eq!(paper_params(d.path(), n)["val_fraction"].as_f64(), Some(val), "{n}");
    }
}

/// The findings node under every profile names rows and columns its tables have under that profile (the claims
/// are checked only when the node runs: at the paper profile, after weeks of training), and a paper run
/// exports into `results/paper/`, never over the committed small-profile results.
#[test]
fn findings_claims_name_their_tables_rows_under_every_profile() {
    let file = repo().join("pipelines/findings.toml");
    for profile in [None, Some("smoke"), Some("paper")] {
        let p = polyflow::spec::load_with(&file, profile, &Default::default()).unwrap();
        let params = |id: &str| -> serde_json::Value {
            let n = p.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("{id}"));
            n.params.iter().map(|(k, e)| (k.clone(), e.value.to_json())).collect::<serde_json::Map<_, _>>().into()
        };
        let labels = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|x| x["label"].as_str().map(str::to_string)).collect()
        };
        let f = params("findings");
        for c in f["claims"].as_array().unwrap() {
            let t = params(c["table"].as_str().unwrap());
            let rows = labels(&t["rows"]);
            let mut cols = labels(&t["columns"]);
            cols.extend(labels(&t["averages"]));
            for r in std::iter::once(&c["row"]).chain(c["versus"].as_array().unwrap()) {
                assert!(rows.iter().any(|x| Some(x.as_str()) == r.as_str()), "{profile:?}: {r} not among {rows:?}");
            }
            for col in c["columns"].as_array().into_iter().flatten() {
                assert!(cols.iter().any(|x| Some(x.as_str()) == col.as_str()), "{profile:?}: {col} not among {cols:?}");
            }
        }
        if profile == Some("paper") {
            for id in ["findings", "table1", "table2", "table3"] {
                let export = params(id)["export"].as_str().unwrap().to_string();
                assert!(export.starts_with("../results/paper/"), "{id}: {export}");
            }
        }
    }
    for t in ["table4", "table5"] {
        let p = polyflow::spec::load_with(&repo().join(format!("pipelines/{t}.toml")), Some("paper"), &Default::default()).unwrap();
        let n = p.nodes.iter().find(|n| n.id == t).unwrap();
        assert_eq!(n.params["export"].value.to_json(), format!("../results/paper/{t}"));
    }
}
