//! Readers on tiny fixtures of each failure: a clear error naming the file, exit code 2, nothing cached.
//! And the ingest+preprocess pipeline of every embedded dataset runs end to end, then does nothing.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn idx_set(dir: &Path, n_img: u32, labels: &[u8], magic_ok: bool, truncate: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut imgs = idx(&[n_img, 2, 2], &vec![7u8; n_img as usize * 4]);
    if !magic_ok {
        imgs[2] = 0x0d;
        imgs[0] = 0x42;
    }
    if truncate {
        imgs.truncate(imgs.len() - 3);
    }
    for pre in ["train", "t10k"] {
        std::fs::write(dir.join(format!("{pre}-images-idx3-ubyte")), &imgs).unwrap();
        std::fs::write(dir.join(format!("{pre}-labels-idx1-ubyte")), idx(&[labels.len() as u32], labels)).unwrap();
    }
}

/// Runs a one-dataset pipeline; returns (exit code, stderr, state of node `d`).
fn run_one(dir: &Path, body: &str) -> (Option<i32>, String, String) {
    std::fs::write(dir.join("p.toml"), format!("[node.d]\nkind = \"dataset\"\n{body}\n")).unwrap();
    let out = Command::new(BIN).args(["run", "p.toml"]).current_dir(dir).output().unwrap();
    let st = Command::new(BIN).args(["status", "p.toml", "--json"]).current_dir(dir).output().unwrap();
    let s: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string(), s[0]["state"].as_str().unwrap().to_string())
}

fn assert_input_error(dir: &Path, body: &str, file: &str, what: &str) {
    let (code, err, state) = run_one(dir, body);
    assert_eq!(code, Some(2), "{body}: {err}");
    assert!(err.contains(file) && err.contains(what), "{body}: expected `{file}` and `{what}` in:\n{err}");
    assert_ne!(state, "fresh", "a failed ingest must not be cached");
    // Nothing half-cached: no index entry for the node and no stray temp files.
    assert_eq!(std::fs::read_dir(dir.join(".polyflow/tmp")).map(|r| r.count()).unwrap_or(0), 0);
}

#[test]
fn idx_failures() {
    let d = tempfile::tempdir().unwrap();
    idx_set(&d.path().join("bad"), 3, &[0, 1, 2], false, false);
    assert_input_error(d.path(), "format = \"idx\"\npath = \"bad\"", "train-images-idx3-ubyte", "bad IDX magic");
    idx_set(&d.path().join("trunc"), 3, &[0, 1, 2], true, true);
    assert_input_error(d.path(), "format = \"idx\"\npath = \"trunc\"", "train-images-idx3-ubyte", "truncated IDX data");
    idx_set(&d.path().join("count"), 3, &[0, 1], true, false);
    assert_input_error(d.path(), "format = \"idx\"\npath = \"count\"", "train-labels-idx1-ubyte", "2 labels for 3 images");
    idx_set(&d.path().join("label"), 3, &[0, 1, 7], true, false);
    std::fs::write(d.path().join("label/classes.txt"), "a\nb\n").unwrap();
    assert_input_error(d.path(), "format = \"idx\"\npath = \"label\"", "train-labels-idx1-ubyte", "label 7 is not in the class list");
    // A good one is cached.
    idx_set(&d.path().join("ok"), 3, &[0, 1, 1], true, false);
    let (code, err, state) = run_one(d.path(), "format = \"idx\"\npath = \"ok\"");
    assert_eq!((code, state.as_str()), (Some(0), "fresh"), "{err}");
}

#[test]
fn audio_and_folder_failures() {
    let d = tempfile::tempdir().unwrap();
    let sc = d.path().join("sc");
    std::fs::create_dir_all(sc.join("yes")).unwrap();
    std::fs::create_dir_all(sc.join("no")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/audio/spoken_digits/3/3_000.flac"), sc.join("yes/a.flac")).unwrap();
    std::fs::write(sc.join("no/b.flac"), b"fLaC this is not really flac data").unwrap();
    assert_input_error(d.path(), "format = \"speech_commands\"\npath = \"sc\"", "b.flac", "corrupt");
    std::fs::remove_file(sc.join("no/b.flac")).unwrap();
    assert_input_error(d.path(), "format = \"speech_commands\"\npath = \"sc\"", "no", "empty class folder");
    let f = d.path().join("folder");
    std::fs::create_dir_all(f.join("cat")).unwrap();
    std::fs::create_dir_all(f.join("dog")).unwrap();
    image::RgbImage::new(4, 4).save(f.join("cat/1.png")).unwrap();
    assert_input_error(d.path(), "format = \"image_folder\"\npath = \"folder\"", "dog", "empty class folder");
    std::fs::write(d.path().join("m.csv"), "path,label\nsc/yes/a.flac,yes\nsc/yes/a.flac,maybe\n").unwrap();
    assert_input_error(
        d.path(),
        "format = \"csv\"\npath = \"m.csv\"\nclasses = [\"yes\", \"no\"]",
        "m.csv",
        "label `maybe` is not in the class list",
    );
    assert_input_error(d.path(), "format = \"idx\"\npath = \"missing\"", "missing", "check the dataset `path`");
}

#[test]
fn ingest_and_preprocess_every_embedded_dataset_then_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let run = || {
        Command::new(BIN)
            .args(["run", "pipelines/data.toml", "--json", "--store", store.to_str().unwrap()])
            .current_dir(root)
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let finished = String::from_utf8_lossy(&first.stdout).matches("\"event\":\"finished\"").count();
    assert_eq!(finished, 18, "9 datasets + 9 preprocessing caches");
    let second = run();
    assert!(!String::from_utf8_lossy(&second.stdout).contains("\"event\":\"started\""));
    let show = Command::new(BIN)
        .args(["show", "pipelines/data.toml", "spoken_digits_x", "--store", store.to_str().unwrap()])
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("example shape [1, 1, 96, 32]"), "{text}");
    assert!(store.join("show/spoken_digits_x/preview.png").exists());
}
