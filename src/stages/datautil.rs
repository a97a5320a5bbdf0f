//! Shared helpers of the data stages: hashing source trees, writing/reading split files, `show` output.

use crate::data::tensors::{decode, encode, Array, Labels, Meta, Named};
use crate::stage::{InputArtifact, StageCtx, StageError};
use std::collections::BTreeMap;
use std::path::Path;

impl From<crate::data::DataError> for StageError {
    /// A data file at fault is bad user input (exit code 2); the message names the file.
    fn from(e: crate::data::DataError) -> Self {
        StageError::input(e.to_string())
    }
}

/// One split's arrays (besides `y`) and labels.
pub struct Split {
    /// Named arrays (`x`, or `wave` + `offsets`).
    pub x: Vec<(String, Named)>,
    /// Labels.
    pub y: Labels,
}

/// Writes `{split}.safetensors` for each in-memory split and `meta.json`.
pub fn write_dataset(
    ctx: &mut StageCtx<'_>,
    modality: &str,
    classes: Vec<String>,
    multilabel: bool,
    splits: Vec<(&str, Split)>,
    sample_rate: Option<u32>,
    note: String,
) -> Result<(), StageError> {
    let mut sizes = BTreeMap::new();
    let mut shape = vec![];
    for (name, s) in splits {
        check_train(ctx, name, s.y.len())?;
        sizes.insert(name.to_string(), s.y.len());
        let mut arrays: BTreeMap<String, Named> = s.x.into_iter().collect();
        if let Some(x) = arrays.get("x") {
            shape = x.shape[1..].to_vec();
        }
        arrays.insert("y".into(), s.y.named());
        ctx.out.put(&format!("{name}.safetensors"), &encode(&arrays))?;
    }
    write_meta(ctx, Meta { modality: modality.into(), classes, multilabel, splits: sizes, shape, sample_rate, note, ..Default::default() })
}

fn check_train(ctx: &StageCtx<'_>, name: &str, n: usize) -> Result<(), StageError> {
    if n == 0 && name == "train" {
        return Err(StageError::input(format!("node `{}`: the train split is empty", ctx.id)));
    }
    Ok(())
}

/// The `put` of a [`crate::data::shards::ShardWriter`]: each finished shard goes into the artifact.
pub fn shard_put(out: &mut crate::stage::ArtifactWriter) -> impl FnMut(&str, Box<dyn std::io::Read>) -> Result<(), String> + '_ {
    move |name, r| out.put_reader(name, r).map_err(|e| e.to_string())
}

/// Opens one split of a dataset or tensors artifact for random access (its shards checksum-verified).
pub fn open_split(a: &InputArtifact, split: &str) -> Result<crate::data::shards::SplitReader, StageError> {
    open_split_with(a, split, true)
}

/// [`open_split`], with or without verifying the shards (`show` reads labels and a few examples only).
pub fn open_split_with(a: &InputArtifact, split: &str, verify: bool) -> Result<crate::data::shards::SplitReader, StageError> {
    let names = crate::data::shards::shard_names(a.manifest.files.keys(), split);
    if names.is_empty() {
        return Err(StageError::failed(format!("input `{}` has no split `{split}`", a.id)));
    }
    let open = |n: &str| if verify { a.open(n) } else { a.open_unchecked(n) };
    let files = names.into_iter().map(|n| open(&n).map(|f| (n, f))).collect::<Result<Vec<_>, _>>()?;
    crate::data::shards::SplitReader::new(files).map_err(|e| StageError::failed(format!("input `{}` split {split}: {e}", a.id)))
}

/// Writes `meta.json`.
pub fn write_meta(ctx: &mut StageCtx<'_>, meta: Meta) -> Result<(), StageError> {
    ctx.out.put_json("meta.json", &meta)
}

/// Reads one split's arrays into memory (small data only: the embedded video generators), from one file or
/// its shards.
pub fn read_split(a: &InputArtifact, split: &str) -> Result<BTreeMap<String, Named>, StageError> {
    if a.has(&format!("{split}.safetensors")) {
        let bytes = a.read(&format!("{split}.safetensors"))?;
        return decode(&bytes).map_err(|e| StageError::failed(format!("input `{}` split {split}: {e}", a.id)));
    }
    let r = open_split(a, split)?;
    if r.shape.is_empty() || r.dtype != safetensors::Dtype::U8 {
        return Err(StageError::failed(format!("input `{}` split {split}: only sharded u8 examples can be read whole", a.id)));
    }
    let mut x = vec![];
    for i in 0..r.len() {
        x.extend(r.raw(i).map_err(StageError::failed)?);
    }
    let mut m = BTreeMap::new();
    m.insert("x".to_string(), Named { shape: [&[r.len()][..], &r.shape].concat(), data: Array::U8(x) });
    m.insert("y".to_string(), r.labels.named());
    Ok(m)
}

/// `show`: shapes, split sizes, class counts; writes `preview.png` (a grid of images, spectrograms or
/// video frames from the train split).
pub fn describe(a: &InputArtifact, out: &Path) -> Result<String, StageError> {
    let meta: Meta = a.json("meta.json")?;
    let mut s = format!(
        "modality {}, {} classes{}, example shape {:?}\n{}\n",
        meta.modality,
        meta.classes.len(),
        if meta.multilabel { " (multi-label)" } else { "" },
        meta.shape,
        meta.note
    );
    if meta.skipped + meta.missing > 0 {
        s.push_str(&format!("skipped: {} undecodable, {} listed but absent (all in skipped.json)\n", meta.skipped, meta.missing));
        if let Ok(v) = a.json::<serde_json::Value>("skipped.json") {
            let bad = v["undecodable"].as_array().cloned().unwrap_or_default();
            let missing = v["missing"].as_array().cloned().unwrap_or_default();
            for b in bad.iter().take(10) {
                s.push_str(&format!(
                    "  undecodable {} ({}): {}\n",
                    b["path"].as_str().unwrap_or(""),
                    b["split"].as_str().unwrap_or(""),
                    b["reason"].as_str().unwrap_or("")
                ));
            }
            for m in missing.iter().take(10) {
                s.push_str(&format!("  absent {} (listed at {})\n", m["file"].as_str().unwrap_or(""), m["listed"].as_str().unwrap_or("")));
            }
            if bad.len() > 10 || missing.len() > 10 {
                s.push_str("  …\n");
            }
        }
    }
    for (split, n) in &meta.splits {
        let r = open_split_with(a, split, false)?;
        let counts = match &r.labels {
            Labels::Single(v) => {
                let mut c = vec![0usize; meta.classes.len()];
                v.iter().for_each(|&l| c[l as usize] += 1);
                c
            }
            Labels::Multi(v, k) => (0..*k).map(|j| v.iter().skip(j).step_by(*k).filter(|&&b| b > 0).count()).collect(),
        };
        // Every class's count up to 40 classes; past that the 20 largest, the rest summarised (AudioSet's 527 made a
        // line of thousands of characters).
        let mut per: Vec<String> = meta.classes.iter().zip(&counts).map(|(c, n)| format!("{c}:{n}")).collect();
        if per.len() > 40 {
            let mut order: Vec<usize> = (0..counts.len()).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), i));
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            let rest = per.len() - 20;
            per = order[..20].iter().map(|&i| format!("{}:{}", meta.classes[i], counts[i])).collect();
            per.push(format!("… {rest} more classes (counts {min}–{max})"));
        }
        let ys = match &r.labels {
            Labels::Single(v) => format!("y [{}]", v.len()),
            Labels::Multi(v, k) => format!("y [{}, {k}]", v.len() / k.max(&1)),
        };
        let xs = if r.shape.is_empty() {
            let what = if meta.modality == "image" { "encoded images" } else { "clips, variable length" };
            format!("{} [{} {what}]", r.name, r.len())
        } else {
            format!("{} {:?}", r.name, [&[r.len()][..], &r.shape].concat())
        };
        let files = crate::data::shards::shard_names(a.manifest.files.keys(), split).len();
        let sharded = if files > 1 { format!(" in {files} shards") } else { String::new() };
        let stored = if r.dtype == safetensors::Dtype::U8 && meta.values.is_some() { " u8" } else { "" };
        s.push_str(&format!("  {split:<5} {n:>6} examples  [{xs}{stored}, {ys}]{sharded}  {}\n", per.join(" ")));
    }
    if let Ok(r) = open_split_with(a, "train", false) {
        if !r.shape.is_empty() {
            let k = r.len().min(16);
            let mut vals = vec![];
            for i in 0..k {
                vals.extend(r.f32s(i).map_err(StageError::failed)?);
            }
            // u8 caches are [N, C, T, H, W] like float ones: drawn as floats.
            let data = if r.dtype == safetensors::Dtype::U8 && meta.values.is_none() {
                Array::U8(vals.iter().map(|&v| v as u8).collect())
            } else {
                Array::F32(vals)
            };
            let arrays: BTreeMap<String, Named> = [("x".to_string(), Named { shape: [&[k][..], &r.shape].concat(), data })].into();
            if let Some(png) = preview(&arrays, &meta) {
                let p = out.join("preview.png");
                png.save(&p).map_err(|e| StageError::failed(format!("{}: {e}", p.display())))?;
                s.push_str(&format!("preview: {}\n", p.display()));
            }
        }
    }
    Ok(s)
}

fn to_u8(v: f32, lo: f32, hi: f32) -> u8 {
    (((v - lo) / (hi - lo).max(1e-6)) * 255.0).clamp(0.0, 255.0) as u8
}

/// A grid of up to 16 examples (for 5-D tensors: the frames of up to 4 clips, one clip per row), in colour where
/// the data has three channels (an image's or a video's RGB; a decoding error such as a CMYK file read as RGB shows
/// in its colours), grey otherwise (a spectrogram). Bytes are drawn as they are (0–255); floats (a standardised
/// cache) stretched over their range.
fn preview(arrays: &BTreeMap<String, Named>, meta: &Meta) -> Option<image::RgbImage> {
    let x = arrays.get("x")?;
    let bytes = matches!(&x.data, Array::U8(_));
    let vals: Vec<f32> = match &x.data {
        Array::U8(v) => v.iter().map(|&b| b as f32).collect(),
        Array::F32(v) => v.clone(),
        Array::I64(_) => return None,
    };
    let (lo, hi) = if bytes { (0.0, 255.0) } else { vals.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v))) };
    // A value at (example, frame, row, column, channel); the channels drawn (3: RGB, 1: grey).
    type Pixel = Box<dyn Fn(usize, usize, usize, usize, usize) -> f32>;
    let (n, t, h, w, channels, get): (usize, usize, usize, usize, usize, Pixel) = match x.shape.as_slice() {
        // [N, H, W, C]
        [n, h, w, c] if meta.modality == "image" => {
            let (h, w, c) = (*h, *w, *c);
            (*n, 1, h, w, if c >= 3 { 3 } else { 1 }, Box::new(move |i, _, y, xx, ch| vals[((i * h + y) * w + xx) * c + ch]))
        }
        // [N, T, H, W, C]
        [n, t, h, w, c] if bytes => {
            let (t, h, w, c) = (*t, *h, *w, *c);
            (*n, t, h, w, if c >= 3 { 3 } else { 1 }, Box::new(move |i, f, y, xx, ch| vals[(((i * t + f) * h + y) * w + xx) * c + ch]))
        }
        // [N, C, T, H, W]
        [n, c, t, h, w] => {
            let (c, t, h, w) = (*c, *t, *h, *w);
            // Spectrograms [N, C, 1, time, mel] are drawn with time along x.
            if meta.modality == "audio" {
                (*n, 1, w, h, 1, Box::new(move |i, _, y, xx, _| vals[(((i * c) * t) * h + xx) * w + (w - 1 - y)]))
            } else {
                let chans = if c >= 3 { 3 } else { 1 };
                (*n, t, h, w, chans, Box::new(move |i, f, y, xx, ch| vals[(((i * c + ch) * t + f) * h + y) * w + xx]))
            }
        }
        _ => return None,
    };
    let (rows, cols) = if t > 1 { (n.min(4), t) } else { (n.min(16).div_ceil(4), n.min(4)) };
    let mut img = image::RgbImage::new((cols * (w + 1)) as u32, (rows * (h + 1)) as u32);
    for r in 0..rows {
        for c in 0..cols {
            let (i, f) = if t > 1 { (r, c) } else { (r * 4 + c, 0) };
            if i >= n {
                continue;
            }
            for y in 0..h {
                for xx in 0..w {
                    let v = |ch: usize| to_u8(get(i, f, y, xx, ch.min(channels - 1)), lo, hi);
                    img.put_pixel((c * (w + 1) + xx) as u32, (r * (h + 1) + y) as u32, image::Rgb([v(0), v(1), v(2)]));
                }
            }
        }
    }
    Some(img)
}
