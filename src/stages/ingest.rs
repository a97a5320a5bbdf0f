//! `dataset` and `video_synth`: ingest files in the formats users have (or generate the embedded video tasks)
//! into a `dataset` artifact with train / val / test splits.

use super::datautil::{hash_tree, write_dataset, Split};
use crate::data::audio::{self, ClipRef};
use crate::data::images::{self, ImageSet};
use crate::data::tensors::{carve, Array, Labels, Meta, Named};
use crate::data::video;
use crate::stage::{InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde::Deserialize;
use serde_json::json;
use std::path::Path;

const FORMATS: &[&str] = &["idx", "cifar10", "cifar100", "image_folder", "speech_commands", "csv", "frames"];

/// `dataset`: reads a dataset from disk.
pub struct DatasetStage;

#[derive(Deserialize)]
struct DatasetParams {
    format: String,
    path: String,
    classes: Vec<String>,
    multilabel: bool,
    val_fraction: f64,
    test_fraction: f64,
    limit: usize,
    height: usize,
    width: usize,
    sample_rate: u32,
    frames: usize,
    coarse: bool,
    resplit: bool,
}

fn input_err(e: crate::data::DataError) -> StageError {
    StageError::input(e.to_string())
}

fn class_list(dir: &Path, given: &[String], n: usize) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Ok(t) = std::fs::read_to_string(dir.join("classes.txt")) {
        let v: Vec<String> = t.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if !v.is_empty() {
            return v;
        }
    }
    (0..n).map(|i| i.to_string()).collect()
}

fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf, StageError> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(StageError::input(format!("{}: no `{stem}` or `{stem}.gz` (IDX datasets need train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)", dir.display())))
}

fn image_split(set: &ImageSet, idx: &[usize]) -> Split {
    let per = set.h * set.w * set.c;
    let mut px = Vec::with_capacity(idx.len() * per);
    for &i in idx {
        px.extend_from_slice(&set.pixels[i * per..(i + 1) * per]);
    }
    Split {
        x: vec![("x".into(), Named { shape: vec![idx.len(), set.h, set.w, set.c], data: Array::U8(px) })],
        y: Labels::Single(idx.iter().map(|&i| set.labels[i]).collect()),
    }
}

/// Train/val/test index lists from given train and test sets (val carved from train).
fn splits_from(n_train: usize, val_fraction: f64, seed: u64, limit: usize) -> (Vec<usize>, Vec<usize>) {
    let (tr, va) = carve(n_train, val_fraction, seed);
    (lim(tr, limit), lim(va, limit))
}

fn lim(v: Vec<usize>, limit: usize) -> Vec<usize> {
    // A seeded random subset (sorted), never the first rows: files are often sorted by class.
    if limit == 0 || v.len() <= limit {
        return v;
    }
    let (_, keep) = carve(v.len(), limit as f64 / v.len() as f64, 0x11_4117);
    keep.into_iter().map(|i| v[i]).collect()
}

impl Stage for DatasetStage {
    fn kind(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "ingest a dataset (IDX, CIFAR binary, image folders, Speech Commands, CSV manifests, frame folders)"
    }
    fn output(&self) -> &'static str {
        "dataset"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("format", T::Choice(FORMATS), "file layout: idx, cifar10, cifar100, image_folder, speech_commands, csv, frames"),
            ParamSpec::req("path", T::Str, "folder (or CSV file) relative to the declaring pipeline file"),
            ParamSpec::opt("classes", T::StrList, json!([]), "class names (default: classes.txt, folder names or labels found)"),
            ParamSpec::opt("multilabel", T::Bool, json!(false), "CSV: several labels per clip (AudioSet style)"),
            ParamSpec::opt("val_fraction", T::Float { min: 0.0, max: 0.9 }, json!(0.1), "part of train held out as val (seeded)"),
            ParamSpec::opt(
                "test_fraction",
                T::Float { min: 0.0, max: 0.9 },
                json!(0.2),
                "part held out as test when the layout has no test split",
            ),
            ParamSpec::opt("limit", T::Int { min: 0, max: i64::MAX }, json!(0), "keep at most this many examples per split (0 = all)"),
            ParamSpec::opt("height", T::Int { min: 1, max: 4096 }, json!(32), "image_folder: resize height"),
            ParamSpec::opt("width", T::Int { min: 1, max: 4096 }, json!(32), "image_folder: resize width (frames: frame size)"),
            ParamSpec::opt("sample_rate", T::Int { min: 1000, max: 192000 }, json!(16000), "audio: resample to this rate"),
            ParamSpec::opt("frames", T::Int { min: 1, max: 4096 }, json!(8), "frames: frames per clip"),
            ParamSpec::opt("coarse", T::Bool, json!(false), "cifar100: coarse labels"),
            ParamSpec::opt(
                "resplit",
                T::Bool,
                json!(false),
                "pool the file's train and test splits and re-split them with the seed (test_fraction)",
            ),
        ]
    }
    fn external_digest(&self, params: &serde_json::Value, base: &Path) -> Result<Option<String>, StageError> {
        let p = base.join(params["path"].as_str().unwrap_or(""));
        hash_tree(&p).map(Some)
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: DatasetParams = ctx.config()?;
        let root = ctx.base_dir.join(&p.path);
        let seed = ctx.seed();
        let (modality, classes, splits, sr): (&str, Vec<String>, Vec<(&str, Split)>, Option<u32>) = match p.format.as_str() {
            "idx" | "cifar10" | "cifar100" => {
                let (train, test, n_classes) = if p.format == "idx" {
                    let classes = class_list(&root, &p.classes, 10);
                    let tr = images::read_idx_pair(
                        &find(&root, "train-images-idx3-ubyte")?,
                        &find(&root, "train-labels-idx1-ubyte")?,
                        classes.len(),
                    )
                    .map_err(input_err)?;
                    let te = images::read_idx_pair(
                        &find(&root, "t10k-images-idx3-ubyte")?,
                        &find(&root, "t10k-labels-idx1-ubyte")?,
                        classes.len(),
                    )
                    .map_err(input_err)?;
                    (tr, te, classes)
                } else {
                    let c100 = p.format == "cifar100";
                    let (trf, tef): (Vec<&str>, Vec<&str>) = if c100 {
                        (vec!["train.bin"], vec!["test.bin"])
                    } else {
                        (
                            vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
                            vec!["test_batch.bin"],
                        )
                    };
                    let trp: Vec<_> = trf.iter().map(|f| root.join(f)).collect();
                    let tep: Vec<_> = tef.iter().map(|f| root.join(f)).collect();
                    let tr = images::read_cifar(&trp.iter().map(|p| p.as_path()).collect::<Vec<_>>(), c100, p.coarse).map_err(input_err)?;
                    let te = images::read_cifar(&tep.iter().map(|p| p.as_path()).collect::<Vec<_>>(), c100, p.coarse).map_err(input_err)?;
                    let n = if !c100 {
                        10
                    } else if p.coarse {
                        20
                    } else {
                        100
                    };
                    (tr, te, class_list(&root, &p.classes, n))
                };
                if p.resplit {
                    // Pool the given splits and re-split with the seed (for files whose splits are not
                    // class-balanced, e.g. a class-sorted subset).
                    let mut all = train;
                    all.pixels.extend_from_slice(&test.pixels);
                    all.labels.extend_from_slice(&test.labels);
                    let (rest, te) = carve(all.len(), p.test_fraction, seed ^ 0x7e57);
                    let (tr_i, va_i) = carve(rest.len(), p.val_fraction, seed);
                    let tr = lim(tr_i.iter().map(|&i| rest[i]).collect(), p.limit);
                    let va = lim(va_i.iter().map(|&i| rest[i]).collect(), p.limit);
                    let te = lim(te, p.limit);
                    (
                        "image",
                        n_classes,
                        vec![("train", image_split(&all, &tr)), ("val", image_split(&all, &va)), ("test", image_split(&all, &te))],
                        None,
                    )
                } else {
                    let (tr, va) = splits_from(train.len(), p.val_fraction, seed, p.limit);
                    let te: Vec<usize> = lim((0..test.len()).collect(), p.limit);
                    (
                        "image",
                        n_classes,
                        vec![("train", image_split(&train, &tr)), ("val", image_split(&train, &va)), ("test", image_split(&test, &te))],
                        None,
                    )
                }
            }
            "image_folder" => {
                let classes = if p.classes.is_empty() { images::class_folders(&root).map_err(input_err)? } else { p.classes.clone() };
                let set = images::read_image_folder(&root, &classes, (p.height, p.width)).map_err(input_err)?;
                let (rest, te) = carve(set.len(), p.test_fraction, seed ^ 0x7e57);
                let (tr_i, va_i) = carve(rest.len(), p.val_fraction, seed);
                let tr: Vec<usize> = lim(tr_i.iter().map(|&i| rest[i]).collect(), p.limit);
                let va: Vec<usize> = lim(va_i.iter().map(|&i| rest[i]).collect(), p.limit);
                (
                    "image",
                    classes,
                    vec![
                        ("train", image_split(&set, &tr)),
                        ("val", image_split(&set, &va)),
                        ("test", image_split(&set, &lim(te, p.limit))),
                    ],
                    None,
                )
            }
            "speech_commands" | "csv" => {
                let (classes, clips) = if p.format == "csv" {
                    audio::csv_manifest(&root, &p.classes, p.multilabel).map_err(input_err)?
                } else {
                    audio::speech_commands(&root).map_err(input_err)?
                };
                let mut out = vec![];
                let train: Vec<&ClipRef> = clips.iter().filter(|c| c.split == "train").collect();
                let has_val = clips.iter().any(|c| c.split == "val");
                let (tr, va): (Vec<&ClipRef>, Vec<&ClipRef>) = if has_val {
                    (train, clips.iter().filter(|c| c.split == "val").collect())
                } else {
                    let (k, c) = carve(train.len(), p.val_fraction, seed);
                    (k.iter().map(|&i| train[i]).collect(), c.iter().map(|&i| train[i]).collect())
                };
                let te: Vec<&ClipRef> = clips.iter().filter(|c| c.split == "test").collect();
                for (name, list) in [("train", tr), ("val", va), ("test", te)] {
                    let keep = lim((0..list.len()).collect(), p.limit);
                    let list: Vec<&ClipRef> = keep.into_iter().map(|i| list[i]).collect();
                    let mut wave = vec![];
                    let mut offsets = vec![0i64];
                    for c in &list {
                        let (x, rate) = audio::decode(&c.path).map_err(input_err)?;
                        let x = audio::resample(&x, rate, p.sample_rate)
                            .map_err(|e| StageError::input(format!("{}: resampling failed: {e}", c.path.display())))?;
                        wave.extend_from_slice(&x);
                        offsets.push(wave.len() as i64);
                    }
                    let y = if p.multilabel {
                        let k = classes.len();
                        let mut m = vec![0u8; list.len() * k];
                        for (i, c) in list.iter().enumerate() {
                            c.labels.iter().for_each(|&l| m[i * k + l] = 1);
                        }
                        Labels::Multi(m, k)
                    } else {
                        Labels::Single(list.iter().map(|c| c.labels[0] as i64).collect())
                    };
                    let n = list.len();
                    out.push((
                        name,
                        Split {
                            x: vec![
                                ("wave".into(), Named { shape: vec![wave.len()], data: Array::F32(wave) }),
                                ("offsets".into(), Named { shape: vec![n + 1], data: Array::I64(offsets) }),
                            ],
                            y,
                        },
                    ));
                }
                ("audio", classes, out, Some(p.sample_rate))
            }
            "frames" => {
                let classes = if p.classes.is_empty() { images::class_folders(&root).map_err(input_err)? } else { p.classes.clone() };
                let clips = video::read_frame_folders(&root, &classes, p.frames, p.width).map_err(input_err)?;
                let set = ImageSet { h: p.frames * p.width, w: p.width, c: 1, pixels: clips.pixels, labels: clips.labels };
                let (rest, te) = carve(set.len(), p.test_fraction, seed ^ 0x7e57);
                let (tr_i, va_i) = carve(rest.len(), p.val_fraction, seed);
                let pick = |idx: Vec<usize>| {
                    let mut s = image_split(&set, &lim(idx, p.limit));
                    let n = s.y.len();
                    s.x[0].1.shape = vec![n, p.frames, p.width, p.width, 1];
                    s
                };
                let tr = pick(tr_i.iter().map(|&i| rest[i]).collect());
                let va = pick(va_i.iter().map(|&i| rest[i]).collect());
                ("video", classes, vec![("train", tr), ("val", va), ("test", pick(te))], None)
            }
            other => return Err(StageError::input(format!("unknown format `{other}`"))),
        };
        let note = format!(
            "{} from {} ({}), seed {seed}",
            p.format,
            p.path,
            if p.limit > 0 { format!("limit {} per split", p.limit) } else { "all examples".into() }
        );
        write_dataset(ctx, modality, classes, p.multilabel, splits, sr, note)
    }
    fn describe(&self, a: &crate::stage::InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}

/// `video_synth`: the embedded video tasks, generated deterministically from an image dataset.
pub struct VideoSynthStage;

impl Stage for VideoSynthStage {
    fn kind(&self) -> &'static str {
        "video_synth"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "generate a video task from images: moving_digits (label = digit) or fashion_motion (label = motion)"
    }
    fn output(&self) -> &'static str {
        "dataset"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("source", &["dataset"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("task", T::Choice(&["moving_digits", "fashion_motion"]), "which video task"),
            ParamSpec::opt("frames", T::Int { min: 1, max: 256 }, json!(8), "frames per clip"),
            ParamSpec::opt("size", T::Int { min: 8, max: 512 }, json!(32), "canvas side in pixels"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let src = ctx.input("source")?.clone();
        let meta: Meta = src.json("meta.json")?;
        if meta.modality != "image" {
            return Err(StageError::input(format!("video_synth needs an image dataset, `{}` is {}", src.id, meta.modality)));
        }
        let task = ctx.params["task"].as_str().unwrap().to_string();
        let frames = ctx.params["frames"].as_u64().unwrap() as usize;
        let size = ctx.params["size"].as_u64().unwrap() as usize;
        let mut splits = vec![];
        for (si, name) in ["train", "val", "test"].iter().enumerate() {
            let arrays = super::datautil::read_split(&src, name)?;
            let x = &arrays["x"];
            let Array::U8(px) = &x.data else {
                return Err(StageError::failed("images must be u8"));
            };
            let (n, h, w) = (x.shape[0], x.shape[1], x.shape[2]);
            let labels = match Labels::from_named(&arrays["y"]).map_err(StageError::failed)? {
                Labels::Single(v) => v,
                _ => return Err(StageError::input("video_synth needs single-label images")),
            };
            let seed = ctx.seed().wrapping_mul(31).wrapping_add(si as u64 + 1);
            let clips = if task == "moving_digits" {
                video::moving_digits(px, h, w, &labels, frames, size, seed)
            } else {
                video::fashion_motion(px, h, w, n, frames, size, seed)
            };
            splits.push((
                *name,
                Split {
                    x: vec![("x".into(), Named { shape: vec![n, frames, size, size, 1], data: Array::U8(clips.pixels) })],
                    y: Labels::Single(clips.labels),
                },
            ));
        }
        let classes = if task == "moving_digits" { meta.classes.clone() } else { video::MOTIONS.iter().map(|s| s.to_string()).collect() };
        let note = format!("{task} generated from `{}` ({frames} frames, {size}², seed {})", src.id, ctx.seed());
        write_dataset(ctx, "video", classes, false, splits, None, note)
    }
    fn describe(&self, a: &crate::stage::InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}
