//! The dataset layouts users have, as miniature fixtures written here: ImageNet (split folders, flat ILSVRC
//! val with its label CSV), CIFAR-10 with any number of batches, Pets, AudioSet and VGGSound CSVs, Kinetics
//! (with the `video` feature). Bad files are skipped and counted; too many of them, or a wrong layout, fail
//! with exit 2 naming the file, and nothing is cached.

mod common;
use common::pf;
use std::path::Path;

/// Runs a one-dataset pipeline `d`; returns (exit code, stderr, `show` output or "").
fn ingest(dir: &Path, body: &str) -> (i32, String, String) {
    std::fs::write(dir.join("p.toml"), format!("[node.d]\nkind = \"dataset\"\n{body}\n")).unwrap();
    let (code, _, err) = pf(dir, &["run", "p.toml"]);
    let (_, st, _) = pf(dir, &["status", "p.toml", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&st).unwrap();
    let fresh = s[0]["state"] == "fresh";
    assert_eq!(fresh, code == 0, "cached iff it succeeded: {err}");
    let show = if fresh { pf(dir, &["show", "p.toml", "d"]).1 } else { String::new() };
    (code, err, show)
}

/// The number of examples `show` reports for `split`.
fn count(show: &str, split: &str) -> usize {
    let line = show.lines().find(|l| l.trim_start().starts_with(&format!("{split} "))).unwrap_or_else(|| panic!("no {split} in\n{show}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn jpeg(path: &Path, w: u32, h: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([shade, (x * 7) as u8, (y * 5) as u8]));
    image::DynamicImage::ImageRgb8(img).save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

#[test]
fn imagenet_split_folders_with_flat_val_and_bad_files() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("imagenet");
    for (c, shade) in [("n01440764", 10u8), ("n01443537", 200)] {
        for i in 0..3 {
            jpeg(&r.join(format!("train/{c}/{c}_{i}.JPEG")), 20 + i, 15, shade);
        }
    }
    // ImageNet's PNG named .JPEG decodes (format from the bytes); a corrupt JPEG is skipped.
    image::RgbImage::new(9, 9).save_with_format(r.join("train/n01440764/n01440764_png.JPEG"), image::ImageFormat::Png).unwrap();
    std::fs::write(r.join("train/n01443537/n01443537_bad.JPEG"), b"\xff\xd8\xff not a jpeg").unwrap();
    for k in 1..=4u32 {
        jpeg(&r.join(format!("val/ILSVRC2012_val_{k:08}.JPEG")), 16, 16, 100);
    }
    let labels = ["n01440764", "n01443537", "n01443537", "n01440764"];
    let mut csv = "ImageId,PredictionString\n".to_string();
    for (k, l) in labels.iter().enumerate() {
        csv.push_str(&format!("ILSVRC2012_val_{:08},{l} 1 2 3 4\n", k + 1));
    }
    csv.push_str("ILSVRC2012_val_00000005,n01440764 1 2 3 4\n");
    std::fs::write(r.join("LOC_val_solution.csv"), csv).unwrap();
    let body = "format = \"image_folder\"\npath = \"imagenet\"\nheight = 8\nwidth = 8\nnum_classes = 2\nval_fraction = 0.25";
    // One of the 8 training files is bad: 12.5 % is over the default max_bad (1 %).
    let (code, err, _) = ingest(d.path(), body);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("1 of 12 examples could not be decoded") && err.contains("n01443537_bad.JPEG") && err.contains("max_bad"),
        "{err}"
    );
    let (code, err, show) = ingest(d.path(), &format!("{body}\nmax_bad = 0.2"));
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("1 undecodable, 1 listed but absent"), "{show}");
    assert!(show.contains("n01443537_bad.JPEG") && show.contains("ILSVRC2012_val_00000005"), "{show}");
    assert!(show.contains("val/ is the test split"), "{show}");
    assert_eq!((count(&show, "train") + count(&show, "val"), count(&show, "test")), (7, 4), "{show}");
    // A declared class count that does not match names the folder.
    let (code, err, _) = ingest(d.path(), &format!("{}\nmax_bad = 0.2", body.replace("num_classes = 2", "num_classes = 3")));
    assert!(code == 2 && err.contains("found 2 classes but the node declares num_classes = 3"), "{err}");
    // No label file for a flat val/: the error says which files would do.
    std::fs::remove_file(r.join("LOC_val_solution.csv")).unwrap();
    let (code, err, _) = ingest(d.path(), &format!("{body}\nmax_bad = 0.2"));
    assert!(code == 2 && err.contains("LOC_val_solution.csv") && err.contains("val"), "{err}");
}

#[test]
fn frame_folders_are_read_as_video_in_colour_and_a_bad_frame_skips_its_clip() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("frames");
    // train/CLASS/CLIP/00001.jpg …, as `ffmpeg -i clip.mp4 CLIP/%05d.jpg` writes them; a test/ split folder.
    for (split, n) in [("train", 4), ("test", 1)] {
        for (c, red) in [("jump", 250u8), ("run", 10)] {
            for clip in 0..n {
                for f in 1..=6u32 {
                    let p = r.join(format!("{split}/{c}/clip {clip}/{f:05}.png"));
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    image::RgbImage::from_pixel(16, 12, image::Rgb([red, 20 * f as u8, 255 - red]))
                        .save_with_format(&p, image::ImageFormat::Png)
                        .unwrap();
                }
            }
        }
    }
    // One frame cut short: its clip is skipped and counted, as a bad video file is.
    let bad = r.join("train/jump/clip 1/00002.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..50]).unwrap();
    let body = "format = \"frames\"\npath = \"frames\"\nframes = 2\nstride = 2\nwidth = 8\nval_fraction = 0.25";
    let (code, err, _) = ingest(d.path(), body);
    assert!(code == 2 && err.contains("1 of 10 examples could not be decoded") && err.contains("00002.png"), "{err}");
    let (code, err, show) = ingest(d.path(), &format!("{body}\nmax_bad = 0.2"));
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("[2, 8, 8, 3]"), "RGB frames, short side 8, centre crop: {show}");
    assert!(show.contains("1 undecodable") && show.contains("clip 1"), "{show}");
    assert_eq!((count(&show, "train") + count(&show, "val"), count(&show, "test")), (7, 2), "{show}");
    assert!(show.contains("2 frames at stride 2 from the centre"), "{show}");
}

fn cifar_batch(n: usize, label: u8) -> Vec<u8> {
    (0..n).flat_map(|i| std::iter::once(label).chain((0..3072).map(move |p| ((p + i) % 251) as u8))).collect()
}

#[test]
fn cifar10_any_number_of_batches_and_an_empty_one() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("cifar/cifar-10-batches-bin");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("data_batch_1.bin"), cifar_batch(10, 3)).unwrap();
    std::fs::write(r.join("test_batch.bin"), cifar_batch(4, 1)).unwrap();
    let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    std::fs::write(r.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    let (code, err, show) = ingest(d.path(), "format = \"cifar10\"\npath = \"cifar\"\nval_fraction = 0.2");
    assert_eq!(code, 0, "{err}");
    assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (8, 2, 4), "{show}");
    assert!(show.contains("cat") && show.contains("automobile"), "the class names it ships: {show}");
    std::fs::write(r.join("data_batch_2.bin"), b"").unwrap();
    let (code, err, _) = ingest(d.path(), "format = \"cifar10\"\npath = \"cifar\"\nval_fraction = 0.2");
    assert!(code == 2 && err.contains("data_batch_2.bin") && err.contains("is empty (0 bytes)"), "{err}");
    // The Python version (pickles) is named as such, with the one to get.
    let py = d.path().join("py/cifar-10-batches-py");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::write(py.join("data_batch_1"), b"\x80\x02").unwrap();
    let (code, err, _) = ingest(d.path(), "format = \"cifar10\"\npath = \"py\"");
    assert!(code == 2 && err.contains("CIFAR-10's Python version (pickles)") && err.contains("cifar-10-binary.tar.gz"), "{err}");
    // Found by `plan` already, before anything queues behind the node.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("`path` does not hold the cifar10 layout") && err.contains("nothing was run"), "{err}");
}

/// Where a dataset is is not part of its key, its content is: the folder moved to another disk (an absolute
/// path given with `--set`, as a teammate's mount would be) leaves the dataset and what was computed from it
/// fresh; a changed file there re-ingests.
#[test]
fn a_moved_dataset_keeps_its_key_and_a_changed_one_does_not() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("c10");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("data_batch_1.bin"), cifar_batch(6, 0)).unwrap();
    std::fs::write(r.join("test_batch.bin"), cifar_batch(3, 1)).unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.d]\nkind = \"dataset\"\nformat = \"cifar10\"\npath = \"c10\"\n\
         [node.x]\nkind = \"image_prep\"\ninputs = { data = \"d\" }\nheight = 8\nwidth = 8\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("cifar-10-batches-bin");
    std::fs::rename(&r, &moved).unwrap();
    let set = format!("d.path={}", moved.display());
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--set", &set, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"event\":\"started\""), "nothing re-runs after a move: {out}");
    // What a copy from macOS or a notebook leaves in the folder is never read: the node stays fresh.
    std::fs::write(moved.join(".DS_Store"), b"Bud1").unwrap();
    std::fs::write(moved.join("._data_batch_1.bin"), b"\0\x05\x16\x07").unwrap();
    std::fs::create_dir_all(moved.join(".ipynb_checkpoints")).unwrap();
    std::fs::write(moved.join(".ipynb_checkpoints/x.bin"), b"x").unwrap();
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "--set", &set, "--json"]);
    assert!(st.contains("\"fresh\"") && !st.contains("\"stale\""), "hidden files stale nothing: {st}");
    let mut bytes = std::fs::read(moved.join("test_batch.bin")).unwrap();
    bytes[5] ^= 1;
    std::fs::write(moved.join("test_batch.bin"), bytes).unwrap();
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--set", &set]);
    assert!(out.contains("test_batch.bin modified"), "{out}");
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--set", &set, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"event\":\"started\",\"id\":\"d\"") && out.contains("\"event\":\"started\",\"id\":\"x\""), "{out}");
    // The artifact does not name where the files were (its bytes depend on their content only); the parameters
    // and the settings of the run that made it do.
    let (_, show, _) = pf(d.path(), &["show", "p.toml", "d", "--set", &set]);
    assert!(show.contains("cifar10 (all examples), seed 0"), "{show}");
    assert!(show.lines().any(|l| l.starts_with("ran:") && l.contains(&format!("with --set {set}"))), "{show}");
    assert!(
        !show.lines().filter(|l| !l.starts_with("params:") && !l.starts_with("ran:")).any(|l| l.contains("cifar-10-batches-bin")),
        "{show}"
    );
}

#[test]
fn pets_lists_with_an_absent_image() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("pets");
    std::fs::create_dir_all(r.join("annotations")).unwrap();
    let mut trainval = "#Image CLASS-ID SPECIES BREED ID\n".to_string();
    for i in 1..=4 {
        jpeg(&r.join(format!("images/Abyssinian_{i}.jpg")), 12, 10, 50);
        jpeg(&r.join(format!("images/beagle_{i}.jpg")), 12, 10, 150);
        trainval.push_str(&format!("Abyssinian_{i} 1 1 1\nbeagle_{i} 2 2 1\n"));
    }
    trainval.push_str("beagle_99 2 2 1\n");
    std::fs::write(r.join("annotations/trainval.txt"), trainval).unwrap();
    jpeg(&r.join("images/beagle_5.jpg"), 12, 10, 150);
    std::fs::write(r.join("annotations/test.txt"), "beagle_5 2 2 1\n").unwrap();
    let (code, err, show) =
        ingest(d.path(), "format = \"pets\"\npath = \"pets\"\nheight = 8\nwidth = 8\nnum_classes = 2\nval_fraction = 0.25");
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("Abyssinian:") && show.contains("beagle:"), "{show}");
    assert!(show.contains("0 undecodable, 1 listed but absent") && show.contains("beagle_99.jpg"), "{show}");
    assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (6, 2, 1), "{show}");
    // Too many absent: 1 of 10 is over max_missing = 0.05.
    let (code, err, _) = ingest(d.path(), "format = \"pets\"\npath = \"pets\"\nheight = 8\nwidth = 8\nmax_missing = 0.05");
    assert!(code == 2 && err.contains("beagle_99.jpg") && err.contains("max_missing"), "{err}");
}

/// The state `status` gives the one node of `p.toml` in `dir`.
fn state(dir: &Path) -> String {
    let (_, st, _) = pf(dir, &["status", "p.toml", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&st).unwrap();
    s[0]["state"].as_str().unwrap().to_string()
}

#[test]
fn label_files_beside_the_dataset_folder_are_part_of_its_key() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("imagenet");
    for (c, shade) in [("n01440764", 10u8), ("n01443537", 200)] {
        for i in 0..3 {
            jpeg(&r.join(format!("train/{c}/{c}_{i}.JPEG")), 20 + i, 15, shade);
        }
    }
    for k in 1..=2u32 {
        jpeg(&r.join(format!("val/ILSVRC2012_val_{k:08}.JPEG")), 16, 16, 100);
    }
    // Kaggle's label file in the folder above `path`, where the reader also looks.
    let loc = d.path().join("LOC_val_solution.csv");
    std::fs::write(
        &loc,
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\nILSVRC2012_val_00000002,n01443537 1 2 3 4\n",
    )
    .unwrap();
    let body = "format = \"image_folder\"\npath = \"imagenet\"\nheight = 8\nwidth = 8";
    let (code, err, show) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("n01440764:1 n01443537:1") || count(&show, "test") == 2, "{show}");
    std::fs::write(
        &loc,
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\nILSVRC2012_val_00000002,n01443537 1 2 3 4\n",
    )
    .unwrap();
    assert_eq!(state(d.path()), "stale", "a label changed");
    let (code, err, _) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert_eq!(state(d.path()), "fresh");

    // VGGSound given as its CSV: the clips it names, wherever below its folder, and nothing else there.
    let v = d.path().join("vgg");
    let mut csv = String::new();
    for i in 0..4 {
        csv.push_str(&format!("vid{i:08},{},{},{}\n", 10 * i, ["dog", "cat"][i % 2], if i < 3 { "train" } else { "test" }));
        wav(&v.join(format!("clips/vid{i:08}_{:06}.wav", 10 * i)), 16000, 0.25, 300.0);
    }
    std::fs::write(v.join("vggsound.csv"), csv).unwrap();
    let body = "format = \"vggsound\"\npath = \"vgg/vggsound.csv\"\nval_fraction = 0.34";
    let (code, err, _) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    std::fs::write(v.join("notes.txt"), "not a clip").unwrap();
    wav(&v.join("clips/unlisted_000000.wav"), 16000, 0.25, 500.0);
    assert_eq!(state(d.path()), "fresh", "files no row names");
    wav(&v.join("clips/vid00000001_000010.wav"), 16000, 0.25, 900.0);
    assert_eq!(state(d.path()), "stale", "a clip replaced");
}

#[test]
fn what_users_get_wrong_in_folders_and_lists() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("plain");
    for (c, shade) in [("cat", 10u8), ("dog", 200)] {
        for i in 0..4 {
            jpeg(&r.join(format!("{c}/{c}_{i}.jpg")), 30, 20, shade + i as u8);
        }
    }
    // A notebook's checkpoint folder is no class, a macOS resource fork no image; a JPEG cut short (an
    // interrupted copy) is undecodable, not silently grey.
    jpeg(&r.join(".ipynb_checkpoints/x.jpg"), 30, 20, 0);
    std::fs::write(r.join("cat/._cat_0.jpg"), b"\0\x05\x16\x07").unwrap();
    let whole = std::fs::read(r.join("dog/dog_3.jpg")).unwrap();
    std::fs::write(r.join("dog/dog_3.jpg"), &whole[..whole.len() * 6 / 10]).unwrap();
    let body =
        "format = \"image_folder\"\npath = \"plain\"\nheight = 8\nwidth = 8\nval_fraction = 0.25\ntest_fraction = 0.25\nmax_bad = 0.2";
    let (code, err, show) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("2 classes") && show.contains("1 undecodable") && show.contains("truncated JPEG"), "{show}");
    // A frame rate for images is a mistake, said before anything runs.
    let (code, err, _) = ingest(d.path(), &format!("{body}\nfps = 25"));
    assert!(code == 2 && err.contains("`fps`") && err.contains("remove `fps`"), "{err}");

    // Pets lists saved by a spreadsheet (a byte-order mark, CRLF) read as the originals.
    let p = d.path().join("pets");
    std::fs::create_dir_all(p.join("annotations")).unwrap();
    let mut trainval = "\u{feff}Abyssinian_1 1 1 1\r\n".to_string();
    for i in 1..=4 {
        jpeg(&p.join(format!("images/Abyssinian_{i}.jpg")), 12, 10, 50);
        jpeg(&p.join(format!("images/beagle_{i}.jpg")), 12, 10, 150);
        if i > 1 {
            trainval.push_str(&format!("Abyssinian_{i} 1 1 1\r\n"));
        }
        trainval.push_str(&format!("beagle_{i} 2 2 1\r\n"));
    }
    std::fs::write(p.join("annotations/trainval.txt"), trainval).unwrap();
    jpeg(&p.join("images/beagle_5.jpg"), 12, 10, 150);
    // The test list repeats a training image: it is kept for testing only.
    std::fs::write(p.join("annotations/test.txt"), "beagle_5 2 2 1\nbeagle_4 2 2 1\n").unwrap();
    let (code, err, show) = ingest(d.path(), "format = \"pets\"\npath = \"pets\"\nheight = 8\nwidth = 8\nval_fraction = 0.25");
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("Abyssinian:") && !show.contains("feff") && !show.contains("listed but absent"), "{show}");
    assert!(show.contains("1 repeated rows left out"), "{show}");
    assert_eq!((count(&show, "train") + count(&show, "val"), count(&show, "test")), (7, 2), "{show}");
    // …unless the two rows disagree on the label: which is right cannot be guessed.
    std::fs::write(p.join("annotations/test.txt"), "beagle_5 2 2 1\nAbyssinian_2 1 1 1\nAbyssinian_2 1 1 1\nbeagle_5 1 2 1\n").unwrap();
    let (code, err, _) = ingest(d.path(), "format = \"pets\"\npath = \"pets\"\nheight = 8\nwidth = 8\nval_fraction = 0.25");
    assert!(code == 2 && err.contains("test.txt:4"), "{err}");
}

/// A mono 16-bit PCM WAV of `secs` seconds of a tone.
fn wav(path: &Path, rate: u32, secs: f32, freq: f32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let n = (rate as f32 * secs) as u32;
    let mut b = vec![];
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let v = ((i as f32 / rate as f32 * freq * std::f32::consts::TAU).sin() * 8000.0) as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn audioset_segments_multilabel_and_vggsound() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("audioset");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(
        r.join("class_labels_indices.csv"),
        "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n1,/m/05zppz,\"Male speech, man speaking\"\n2,/m/0k4j,Car\n",
    )
    .unwrap();
    let head = "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytid=9, num_segs=9, num_unique_labels=3, num_positive_labels=12\n# YTID, start_seconds, end_seconds, positive_labels\n";
    let mut train = head.to_string();
    for i in 0..8 {
        let id = format!("--train{i:04}");
        train.push_str(&format!("{id}, 30.000, 40.000, \"/m/09x0r,/m/0k4j\"\n"));
        wav(&r.join(format!("audio/Y{id}.wav")), 8000, 0.5, 200.0 + 50.0 * i as f32);
    }
    train.push_str("absent00000, 0.000, 10.000, \"/m/05zppz\"\n");
    std::fs::write(r.join("balanced_train_segments.csv"), train).unwrap();
    let mut eval = head.to_string();
    for i in 0..3 {
        let id = format!("-eval{i:06}");
        eval.push_str(&format!("{id}, 5.000, 15.000, \"/m/05zppz\"\n"));
        wav(&r.join(format!("eval/{id}_5.wav")), 16000, 0.5, 440.0);
    }
    eval.push_str("-evalbroken, 5.000, 15.000, \"/m/05zppz\"\n");
    std::fs::write(r.join("eval/-evalbroken.wav"), b"RIFF\x00\x00\x00\x00WAVEjunk").unwrap();
    std::fs::write(r.join("eval_segments.csv"), eval).unwrap();
    let body = "format = \"audioset\"\npath = \"audioset\"\nnum_classes = 3\nval_fraction = 0.25\nmax_bad = 0.1";
    let (code, err, show) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("(multi-label)") && show.contains("1 undecodable, 1 listed but absent"), "{show}");
    assert!(show.contains("-evalbroken.wav") && show.contains("absent00000"), "{show}");
    assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (6, 2, 3), "{show}");
    // Per-class counts of the multi-label train split: Speech and Car on every clip.
    assert!(show.contains("Speech:6") && show.contains("Car:6"), "{show}");

    let v = d.path().join("vgg");
    let mut csv = String::new();
    for i in 0..6 {
        let (id, label, split) =
            (format!("vid{i:08}"), if i % 2 == 0 { "dog barking" } else { "engine, idling" }, if i < 4 { "train" } else { "test" });
        csv.push_str(&format!("{id},{},\"{label}\",{split}\n", 10 * i));
        wav(&v.join(format!("clips/{id}_{:06}.wav", 10 * i)), 16000, 0.25, 300.0);
    }
    std::fs::write(v.join("vggsound.csv"), csv).unwrap();
    let (code, err, show) = ingest(d.path(), "format = \"vggsound\"\npath = \"vgg\"\nval_fraction = 0.25");
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("dog barking:") && show.contains("engine, idling:"), "{show}");
    assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (3, 1, 2), "{show}");
}

/// Writes an H.264 `.mp4` of `frames` grey frames whose luma is `40 + 4 · n` at frame n, with the `ffmpeg` CLI.
#[cfg(feature = "video")]
fn mp4(path: &Path, frames: usize, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let src = format!("color=c=black:size={w}x{h}:rate=25,format=yuv420p,geq=lum='40+4*N':cb=128:cr=128");
    let o = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &src, "-frames:v", &frames.to_string(), "-c:v", "libx264", "-qp", "0"])
        .arg(path)
        .output()
        .expect("the `ffmpeg` command (Debian package ffmpeg) writes the test videos; .ci/run installs it");
    assert!(o.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&o.stderr));
}

/// HD video is converted to RGB with its stream's YUV matrix (BT.709), as FFmpeg's `scale` filter does, not
/// swscale's BT.601 default: a BT.709-tagged clip of RGB (16, 224, 32) comes back within a few levels (BT.601
/// gave (29, 255, 36)).
#[test]
#[cfg_attr(not(feature = "video"), ignore = "needs `--features video` (FFmpeg's libraries); .ci/run runs it")]
fn bt709_video_keeps_its_colours() {
    #[cfg(feature = "video")]
    {
        let d = tempfile::tempdir().unwrap();
        for (c, i) in [("a", 0), ("a", 1), ("b", 0), ("b", 1)] {
            let path = d.path().join(format!("v/{c}/c{i}.mp4"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let o = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x10E020:size=64x48:rate=25", "-frames:v", "4"])
                .args(["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", "-colorspace", "bt709"])
                .args(["-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv", "-c:v", "libx264", "-qp", "0"])
                .arg(&path)
                .output()
                .expect("the `ffmpeg` command writes the test videos; .ci/run installs it");
            assert!(o.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&o.stderr));
        }
        let (code, err, show) = ingest(
            d.path(),
            "format = \"video_folder\"\npath = \"v\"\nframes = 2\nstride = 1\nwidth = 32\ntest_fraction = 0.25\nval_fraction = 0",
        );
        assert_eq!(code, 0, "{err}");
        let blob = show.lines().find(|l| l.trim_start().starts_with("train.safetensors")).unwrap().split_whitespace().last().unwrap();
        let bytes = std::fs::read(blob).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let x = t.tensor("x").unwrap();
        for px in x.data().chunks_exact(3) {
            for (got, want) in px.iter().zip([16u8, 224, 32]) {
                assert!(got.abs_diff(want) <= 6, "pixel {px:?}, source (16, 224, 32)");
            }
        }
    }
}

/// Without the `video` feature a video layout is refused before anything runs, with the rebuild as the fix (not
/// a parameter to set: the format is right, the build is not).
#[test]
#[cfg(not(feature = "video"))]
fn a_build_without_video_says_to_rebuild() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("k400")).unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.d]\nkind = \"dataset\"\nformat = \"kinetics\"\npath = \"k400\"\n").unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("built without video decoding") && err.contains("--features video"), "{err}");
    assert!(!err.contains("--set d.format"), "no parameter fixes a build: {err}");
    assert!(!d.path().join(".polyflow").exists(), "nothing written: {err}");
}

#[test]
#[cfg_attr(not(feature = "video"), ignore = "needs `--features video` (FFmpeg's libraries); .ci/run runs it")]
fn kinetics_csv_mp4_clips_missing_and_corrupt() {
    #[cfg(feature = "video")]
    {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("k400");
        let mut train = "label,youtube_id,time_start,time_end,split,is_cc\n".to_string();
        for i in 0..6 {
            let label = if i % 2 == 0 { "abseiling" } else { "air drumming" };
            let id = format!("yt{i:09}");
            train.push_str(&format!("{label},{id},{},{},train,0\n", i, i + 10));
            mp4(&r.join(format!("train/{label}/{id}_{i:06}_{:06}.mp4", i + 10)), 50, 48, 32);
        }
        train.push_str("abseiling,gone0000000,0,10,train,0\n");
        std::fs::write(r.join("train.csv"), train).unwrap();
        let mut val = "label,youtube_id,time_start,time_end,split\n".to_string();
        for i in 0..3 {
            let id = format!("val{i:08}");
            val.push_str(&format!("abseiling,{id},0,10,val\n"));
            mp4(&r.join(format!("val/{id}_000000_000010.mp4")), 5, 32, 48);
        }
        // A corrupt clip and a truncated one are skipped and counted.
        val.push_str("abseiling,corrupt0000,0,10,val\nabseiling,truncated00,0,10,val\n");
        std::fs::write(r.join("val/corrupt0000_000000_000010.mp4"), b"\x00\x00\x00\x18ftypmp42 this is not a video").unwrap();
        let whole = std::fs::read(r.join("train/abseiling/yt000000000_000000_000010.mp4")).unwrap();
        std::fs::write(r.join("val/truncated00_000000_000010.mp4"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(r.join("validate.csv"), val).unwrap();
        let body = "format = \"kinetics\"\npath = \"k400\"\nframes = 4\nstride = 2\nwidth = 16\nval_fraction = 0.34\nmax_bad = 0.25\nnum_classes = 2";
        let (code, err, show) = ingest(d.path(), body);
        assert_eq!(code, 0, "{err}");
        assert!(show.contains("2 undecodable, 1 listed but absent"), "{show}");
        assert!(show.contains("corrupt0000") && show.contains("truncated00") && show.contains("gone0000000"), "{show}");
        assert!(show.contains("x [4, 4, 16, 16, 3]") || show.contains("[4, 4, 16, 16, 3]"), "{show}");
        assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (4, 2, 3), "{show}");
        // A labelled test.csv (the CVDF copy of K400): the validation table stays the test split, as the paper
        // reports Kinetics, unless test_table = "test".
        std::fs::write(r.join("test.csv"), "label,youtube_id,time_start,time_end,split\nair drumming,tst00000000,0,10,test\n").unwrap();
        mp4(&r.join("test/tst00000000_000000_000010.mp4"), 5, 32, 48);
        let (code, err, show) = ingest(d.path(), body);
        assert_eq!(code, 0, "{err}");
        assert!(show.contains("validate.csv the test split") && show.contains("test.csv not read"), "{show}");
        assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (4, 2, 3), "{show}");
        let (code, err, show) = ingest(d.path(), &format!("{body}\ntest_table = \"test\""));
        assert_eq!(code, 0, "{err}");
        assert!(show.contains("test.csv the test split, validate.csv the val split"), "{show}");
        assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (6, 3, 1), "{show}");
        // Resampled to a frame rate: a new key, said in the note.
        let (code, err, show) = ingest(
            d.path(),
            &format!(
                "{body}
fps = 10"
            ),
        );
        assert_eq!(code, 0, "{err}");
        assert!(show.contains("4 frames at stride 2 at 10 fps from the centre"), "{show}");
    }
}

#[test]
#[cfg_attr(not(feature = "video"), ignore = "needs `--features video` (FFmpeg's libraries); .ci/run runs it")]
fn video_frames_are_the_centre_window_at_the_stride() {
    #[cfg(feature = "video")]
    {
        use polyflow::data::video_file::{decode, ClipSpec};
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ramp.mp4");
        mp4(&f, 50, 64, 48);
        // need = 7, start = (50 − 7) / 2 = 21: frames 21, 23, 25, 27.
        let spec = ClipSpec { frames: 4, stride: 2, size: 16, fps: None };
        let x = decode(&f, &spec).unwrap();
        assert_eq!(x.len(), 4 * 16 * 16 * 3);
        for (k, n) in [21u32, 23, 25, 27].iter().enumerate() {
            // Limited-range luma 40 + 4n → full-range RGB: (Y − 16) · 255 / 219.
            let want = ((40 + 4 * n) as f32 - 16.0) * 255.0 / 219.0;
            let frame = &x[k * 768..(k + 1) * 768];
            let mean = frame.iter().map(|&v| v as f32).sum::<f32>() / 768.0;
            assert!((mean - want).abs() < 3.0, "frame {k}: mean {mean}, want {want}");
        }
        // Short clips wrap around: 5 frames, window of 7.
        mp4(&f, 5, 64, 48);
        let x = decode(&f, &spec).unwrap();
        let mean = |k: usize| x[k * 768..(k + 1) * 768].iter().map(|&v| v as f32).sum::<f32>() / 768.0;
        assert!(mean(3) < mean(2), "frame index 6 wraps to 1");
        let e = decode(&d.path().join("nope.mp4"), &spec).unwrap_err();
        assert!(e.message.contains("cannot open video"), "{e}");
    }
}

/// `fps` resamples a clip by its timestamps as FFmpeg's `fps` filter does: for sources at 50 fps (every other
/// frame lands on a tie), 30 fps (one frame in six dropped), 12 fps and a variable rate (frames repeated), the
/// frames kept are those `ffmpeg -vf fps=25` outputs at the centre window's indices. Each source frame n has
/// luma 20 + 2n, so a frame's mean tells which source frame it is.
#[test]
#[cfg_attr(not(feature = "video"), ignore = "needs `--features video` (FFmpeg's libraries); .ci/run runs it")]
fn fps_resamples_as_ffmpegs_fps_filter() {
    #[cfg(feature = "video")]
    {
        use polyflow::data::video_file::{decode, ClipSpec};
        let d = tempfile::tempdir().unwrap();
        let ffmpeg = |args: &[&str]| {
            let o = std::process::Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().expect("ffmpeg (Debian package)");
            assert!(o.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            o.stdout
        };
        // (source, frames): constant rates, a variable one (timestamps 0, 1, 3, 4, 6, … in 1/20 s), and a 30 fps
        // video starting 13 ms after the file's audio (times count from the file's start, then round).
        let sources = [("50", 100), ("30", 90), ("12", 30), ("vfr", 40), ("late", 60)];
        for (rate, n) in sources {
            let src_rate = match rate {
                "vfr" => "20",
                "late" => "30",
                r => r,
            };
            // (Matroska keeps the video's 13 ms start, in a millisecond time base, beside PCM audio from 0.)
            let f = d.path().join(if rate == "late" { "late.mkv".to_string() } else { format!("r{rate}.mp4") });
            let late = if rate == "late" { ",settb=1/3000,setpts=PTS+39" } else { "" };
            let lum = format!("color=c=black:size=64x48:rate={src_rate},format=yuv420p,geq=lum='20+2*N':cb=128:cr=128{late}");
            let mut args: Vec<&str> = vec![];
            if rate == "late" {
                args.extend(["-copyts", "-f", "lavfi", "-i", "sine=f=440:d=3"]);
            }
            args.extend(["-f", "lavfi", "-i", &lum]);
            let (count, secs) = (n.to_string(), format!("{}", n as f64 / 30.0));
            if rate == "late" {
                args.extend(["-t", &secs]);
            } else {
                args.extend(["-frames:v", &count]);
            }
            // Variable rate: every third frame of a 20 fps source dropped, timestamps kept (gaps of 2/20 s).
            if rate == "vfr" {
                args.extend(["-vf", "select='not(eq(mod(n,3),2))'", "-fps_mode", "vfr"]);
            }
            if rate == "late" {
                args.extend(["-map", "0:a", "-map", "1:v", "-c:a", "pcm_s16le", "-fps_mode", "passthrough", "-enc_time_base:v", "1:3000"]);
            }
            args.extend(["-c:v", "libx264", "-qp", "0", f.to_str().unwrap()]);
            ffmpeg(&args);
            // FFmpeg's own resampling, as grey levels per output frame → source frame numbers.
            let grey = ffmpeg(&["-i", f.to_str().unwrap(), "-vf", "fps=25", "-f", "rawvideo", "-pix_fmt", "gray", "-"]);
            // (Full-range grey, as RGB below: Y = 16 + v · 219 / 255.)
            let frame_no = |fr: &[u8]| {
                let v = fr.iter().map(|&v| v as f32).sum::<f32>() / fr.len() as f32;
                ((16.0 + v * 219.0 / 255.0 - 20.0) / 2.0).round() as i32
            };
            let theirs: Vec<i32> = grey.chunks(64 * 48).map(frame_no).collect();
            let spec = ClipSpec { frames: 8, stride: 2, size: 16, fps: Some(25) };
            let x = decode(&f, &spec).unwrap_or_else(|e| panic!("{rate}: {e}"));
            let ours: Vec<i32> = x.chunks(16 * 16 * 3).map(frame_no).collect();
            let want: Vec<i32> = spec.indices(theirs.len()).iter().map(|&i| theirs[i]).collect();
            assert_eq!(ours, want, "source {rate} fps: FFmpeg's fps=25 gives {} frames {theirs:?}", theirs.len());
        }
        // Without `fps` the same 50 fps clip is sampled in its own frames: the window spans half the time.
        let f = d.path().join("r50.mp4");
        let x = decode(&f, &ClipSpec { frames: 8, stride: 2, size: 16, fps: None }).unwrap();
        let first_last = |x: &[u8]| {
            let m = |k: usize| x[k * 768..(k + 1) * 768].iter().map(|&v| v as f32).sum::<f32>() / 768.0;
            ((m(7) - m(0)) * 219.0 / 255.0 / 2.0).round() as i32 // 2 luma levels a source frame
        };
        assert_eq!(first_last(&x), 14, "8 frames at stride 2 of the source's own frames span 14 frames");
        let x = decode(&f, &ClipSpec { frames: 8, stride: 2, size: 16, fps: Some(25) }).unwrap();
        assert_eq!(first_last(&x), 28, "at 25 fps they span 14 slots = 28 frames of 50 fps");
    }
}

#[test]
#[cfg_attr(not(feature = "video"), ignore = "needs `--features video` (FFmpeg's libraries); .ci/run runs it")]
fn moments_in_time_csvs_and_clips() {
    #[cfg(feature = "video")]
    {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("mit");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("moments_categories.txt"), "running,1\nasking,0\n").unwrap();
        let mut train = String::new();
        for i in 0..6 {
            let label = if i % 2 == 0 { "asking" } else { "running" };
            train.push_str(&format!("{label}/yt-{i}.mp4,{label},3,0\n"));
            mp4(&r.join(format!("training/{label}/yt-{i}.mp4")), 30, 40, 30);
        }
        std::fs::write(r.join("trainingSet.csv"), train).unwrap();
        std::fs::write(r.join("validationSet.csv"), "asking/v-0.mp4,asking,3,0\nrunning/v-1.mp4,running,2,1\n").unwrap();
        mp4(&r.join("validation/asking/v-0.mp4"), 30, 40, 30);
        mp4(&r.join("validation/running/v-1.mp4"), 30, 40, 30);
        let body = "format = \"moments_in_time\"\npath = \"mit\"\nframes = 8\nstride = 2\nwidth = 16\nval_fraction = 0.34\nnum_classes = 2";
        let (code, err, show) = ingest(d.path(), body);
        assert_eq!(code, 0, "{err}");
        assert!(show.contains("asking:") && show.contains("validationSet is the test split"), "{show}");
        assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (4, 2, 2), "{show}");
    }
}

/// A file of `tests/fixtures/` (made by its `make_audio_fixtures.sh`).
fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// VGGSound's clips as yt-dlp/ffmpeg mux them: the H.264 track first, the AAC track second. The sound is
/// decoded (not refused as having no sample rate); a video without sound is undecodable, saying so.
#[test]
fn vggsound_mp4_clips_whose_first_track_is_video() {
    let d = tempfile::tempdir().unwrap();
    let v = d.path().join("vgg");
    let mut csv = String::new();
    for i in 0..5 {
        csv.push_str(&format!("vid{i:08},{},\"{}\",{}\n", 10 * i, ["dog", "cat"][i % 2], if i < 4 { "train" } else { "test" }));
        std::fs::create_dir_all(v.join("video")).unwrap();
        std::fs::copy(fixture("video_first.mp4"), v.join(format!("video/vid{i:08}_{:06}.mp4", 10 * i))).unwrap();
    }
    std::fs::write(v.join("vggsound.csv"), &csv).unwrap();
    let body = "format = \"vggsound\"\npath = \"vgg\"\nval_fraction = 0.25";
    let (code, err, show) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert_eq!((count(&show, "train"), count(&show, "val"), count(&show, "test")), (3, 1, 1), "{show}");
    std::fs::copy(fixture("video_only.mp4"), v.join("video/vid00000004_000040.mp4")).unwrap();
    let (code, err, _) = ingest(d.path(), body);
    assert!(code == 2 && err.contains("vid00000004_000040.mp4") && err.contains("no audio track"), "{err}");
}

/// AudioSet clips named with the row's own end time (a segment shorter than 10 s, PANNs' `Y{id}_{s:.3}_{e:.3}`)
/// are found; one downloaded as WebM/Opus is undecodable, saying how to convert it, not absent; an absent one
/// is listed with the names tried.
#[test]
fn audioset_clip_names_unsupported_containers_and_names_tried() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("as");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("class_labels_indices.csv"), "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n1,/m/0k4j,Car\n").unwrap();
    let mut train = "# a\n# b\n# c\n".to_string();
    for i in 0..4 {
        train.push_str(&format!("trainclip{i:02}, 0.000, 10.000, \"/m/09x0r\"\n"));
        wav(&r.join(format!("audio/trainclip{i:02}.wav")), 16000, 0.5, 300.0);
    }
    train.push_str("shortend001, 3.000, 10.000, \"/m/0k4j\"\npannsstyle1, 30.000, 40.000, \"/m/0k4j\"\n");
    wav(&r.join("audio/shortend001_000003_000010.wav"), 16000, 0.5, 500.0);
    wav(&r.join("audio/Ypannsstyle1_30.000_40.000.wav"), 16000, 0.5, 700.0);
    train.push_str("opusclip001, 0.000, 10.000, \"/m/0k4j\"\nabsent00000, 0.000, 10.000, \"/m/0k4j\"\n");
    std::fs::write(r.join("audio/opusclip001.webm"), b"\x1a\x45\xdf\xa3 webm").unwrap();
    std::fs::write(r.join("balanced_train_segments.csv"), train).unwrap();
    let body = "format = \"audioset\"\npath = \"as\"\nval_fraction = 0.2\nmax_bad = 0.2";
    let (code, err, show) = ingest(d.path(), body);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("1 undecodable, 1 listed but absent"), "{show}");
    assert!(show.contains("opusclip001.webm") && show.contains("convert it to FLAC or WAV"), "{show}");
    assert!(show.contains("absent absent00000.* (looked for absent00000, Yabsent00000,"), "{show}");
    assert_eq!(count(&show, "train") + count(&show, "val") + count(&show, "test"), 6, "{show}");
}

/// A mono 16-bit PCM WAV of consecutive tones, `(seconds, Hz)` each.
fn wav_tones(path: &Path, rate: u32, tones: &[(u32, f32)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut samples = vec![];
    for &(secs, freq) in tones {
        let part = dir.path().join("part.wav");
        wav(&part, rate, secs as f32, freq);
        samples.extend_from_slice(&std::fs::read(&part).unwrap()[44..]);
    }
    let mut b = std::fs::read(dir.path().join("part.wav")).unwrap()[..44].to_vec();
    b[4..8].copy_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    b[40..44].copy_from_slice(&(samples.len() as u32).to_le_bytes());
    b.extend(samples);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b).unwrap();
}

/// The waves of `split` of the dataset node `d` (from the blob path `show` prints).
fn waves(show: &str, split: &str) -> Vec<f32> {
    let line = show.lines().find(|l| l.trim_start().starts_with(&format!("{split}.safetensors"))).unwrap();
    let bytes = std::fs::read(line.split_whitespace().last().unwrap()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("wave").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// AudioSet's and VGGSound's rows name a segment of a YouTube video; a file named by the video id alone that is
/// clearly longer holds the whole video: the segment is cut from it (not the file's centre), and the note says
/// how many were.
#[test]
fn a_whole_video_named_by_its_id_is_cut_to_its_rows_segment() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("as");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("class_labels_indices.csv"), "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n").unwrap();
    let mut train = "# a\n# b\n# c\n".to_string();
    for i in 0..4 {
        train.push_str(&format!("trainclip{i:02}, 30.000, 40.000, \"/m/09x0r\"\n"));
        wav(&r.join(format!("audio/trainclip{i:02}_30.wav")), 8000, 1.0, 500.0);
    }
    std::fs::write(r.join("balanced_train_segments.csv"), train).unwrap();
    // 30 s: 0–10 s at 300 Hz, 10–20 s at 1 kHz, 20–30 s at 3 kHz; the row names 20–30 s.
    std::fs::write(r.join("eval_segments.csv"), "# a\n# b\n# c\nfullvideo01, 20.000, 30.000, \"/m/09x0r\"\n").unwrap();
    wav_tones(&r.join("audio/fullvideo01.wav"), 8000, &[(10, 300.0), (10, 1000.0), (10, 3000.0)]);
    let (code, err, show) = ingest(d.path(), "format = \"audioset\"\npath = \"as\"\nval_fraction = 0.25");
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("1 of 1 clips named by the video id alone were longer than their row's segment and cut"), "{show}");
    let x = waves(&show, "test");
    assert_eq!(x.len(), 160_000, "10 s at 16 kHz");
    // 3 kHz: 6,000 zero crossings a second (1 kHz, the file's centre, would give 2,000).
    let crossings = x[16_000..32_000].windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    assert!((5_900..6_100).contains(&crossings), "{crossings} zero crossings in 1 s");

    // VGGSound: a whole video is cut to the 10 s from the row's start.
    let v = d.path().join("vgg");
    let mut csv = String::new();
    for i in 0..4 {
        csv.push_str(&format!("vid{i:08},0,dog,train\n"));
        wav(&v.join(format!("clips/vid{i:08}_000000.wav")), 8000, 1.0, 300.0);
    }
    csv.push_str("wholevideo1,10,dog,test\n");
    wav_tones(&v.join("clips/wholevideo1.wav"), 8000, &[(10, 300.0), (10, 3000.0), (10, 300.0)]);
    std::fs::write(v.join("vggsound.csv"), csv).unwrap();
    let (code, err, show) = ingest(d.path(), "format = \"vggsound\"\npath = \"vgg\"\nval_fraction = 0.25");
    assert_eq!(code, 0, "{err}");
    let x = waves(&show, "test");
    let crossings = x[16_000..32_000].windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    assert!(x.len() == 160_000 && (5_900..6_100).contains(&crossings), "{} samples, {crossings} crossings", x.len());
}

#[test]
fn an_empty_split_or_a_class_never_tested_is_warned_of() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("imgs");
    for c in ["bird", "cat"] {
        for i in 0..2 {
            jpeg(&r.join(format!("{c}/{i}.jpg")), 8, 8, 10);
        }
    }
    // Four images: a tenth carved as test is none.
    let (code, err, _) =
        ingest(d.path(), "format = \"image_folder\"\npath = \"imgs\"\nheight = 8\nwidth = 8\ntest_fraction = 0.1\nval_fraction = 0.3");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the test split is empty") && err.contains("raise `test_fraction`"), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes in a warning written to a pipe: {err:?}");
    // ImageNet-style split folders whose val/ (the test split) lacks a class.
    std::fs::remove_dir_all(&r).unwrap();
    for c in ["bird", "cat"] {
        for i in 0..3 {
            jpeg(&r.join(format!("train/{c}/{i}.jpg")), 8, 8, 10);
        }
    }
    jpeg(&r.join("val/cat/0.jpg"), 8, 8, 10);
    let (code, err, _) = ingest(d.path(), "format = \"image_folder\"\npath = \"imgs\"\nheight = 8\nwidth = 8");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 of 2 classes has no test example (bird)"), "{err}");
    assert!(!err.contains("split is empty"), "{err}");
}

#[test]
fn absent_rows_emptied_classes_and_stray_files_are_said() {
    let d = tempfile::tempdir().unwrap();
    // A CSV row whose file is not there is an absent example (`max_missing`), not an undecodable one.
    for i in 0..8 {
        wav(&d.path().join(format!("clips/c{i}.wav")), 16000, 0.25, 300.0 + 100.0 * (i % 2) as f32);
    }
    let mut rows: String = (0..8).map(|i| format!("clips/c{i}.wav,{}\n", ["cat", "dog"][i % 2])).collect();
    rows.push_str("clips/nope.wav,cat\n");
    std::fs::write(d.path().join("m.csv"), &rows).unwrap();
    let (code, err, _) = ingest(d.path(), "format = \"csv\"\npath = \"m.csv\"");
    assert!(code == 0 && err.contains("1 of 9 listed examples have no file"), "{err}");
    let (code, err, _) = ingest(d.path(), "format = \"csv\"\npath = \"m.csv\"\nmax_missing = 0.05");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1 of 9 examples listed are absent") && err.contains("max_missing") && err.contains("m.csv:9"), "{err}");
    // A class whose every file fails to decode is no class of 0 examples.
    for i in 0..30 {
        jpeg(&d.path().join(format!("imgs/red/{i}.jpg")), 8, 8, 200);
        jpeg(&d.path().join(format!("imgs/blue/{i}.jpg")), 8, 8, 20);
    }
    std::fs::create_dir_all(d.path().join("imgs/bad")).unwrap();
    for i in 0..2 {
        std::fs::write(d.path().join(format!("imgs/bad/{i}.jpg")), "<html>error</html>").unwrap();
    }
    let (code, err, _) = ingest(d.path(), "format = \"image_folder\"\npath = \"imgs\"\nheight = 8\nwidth = 8\nmax_bad = 0.05");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("class `bad`: none of its 2 files could be decoded"), "{err}");
    // Speech Commands: what the class folders hold that is no clip is named, not dropped unsaid.
    for c in ["yes", "no"] {
        for i in 0..4 {
            wav(&d.path().join(format!("sc/{c}/{i}.wav")), 16000, 0.25, 440.0);
        }
    }
    std::fs::write(d.path().join("sc/yes/extra.aiff"), "x").unwrap();
    std::fs::create_dir_all(d.path().join("sc/no/nested")).unwrap();
    let (code, err, _) = ingest(d.path(), "format = \"speech_commands\"\npath = \"sc\"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 entries of the class folders are left out") && err.contains("yes/extra.aiff"), "{err}");
}
