//! Preprocessing caches: `image_prep`, `audio_prep` (Kaldi log-mel) and `video_prep` turn a `dataset`
//! artifact into model-ready `tensors` (`x` f32 `[N, C, T, H, W]`).

use super::datautil::{read_split, write_dataset, Split};
use crate::data::fbank::{Fbank, FbankOptions};
use crate::data::tensors::{Array, Labels, Meta, Named};
use crate::stage::{InputArtifact, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn meta_of(a: &InputArtifact, want: &str) -> Result<Meta, StageError> {
    let m: Meta = a.json("meta.json")?;
    if m.modality != want {
        return Err(StageError::input(format!("`{}` holds {} data, this node needs {want}", a.id, m.modality)));
    }
    Ok(m)
}

fn labels(arrays: &std::collections::BTreeMap<String, Named>) -> Result<Labels, StageError> {
    Labels::from_named(&arrays["y"]).map_err(StageError::failed)
}

/// Resizes one grey/RGB u8 image `[h, w, c]` to `[oh, ow, c]` (bilinear, "triangle" filter).
fn resize(px: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
    if (h, w) == (oh, ow) {
        return px.to_vec();
    }
    match c {
        1 => image::imageops::resize(
            &image::GrayImage::from_raw(w as u32, h as u32, px.to_vec()).unwrap(),
            ow as u32,
            oh as u32,
            image::imageops::FilterType::Triangle,
        )
        .into_raw(),
        _ => image::imageops::resize(
            &image::RgbImage::from_raw(w as u32, h as u32, px.to_vec()).unwrap(),
            ow as u32,
            oh as u32,
            image::imageops::FilterType::Triangle,
        )
        .into_raw(),
    }
}

/// Scales a u8 value: to [0, 1] when `unit`, else to [-1, 1] (the paper's convention).
fn scale(v: u8, unit: bool) -> f32 {
    if unit {
        v as f32 / 255.0
    } else {
        v as f32 / 127.5 - 1.0
    }
}

/// Writes an interleaved u8 image (`c` channels) as `oc` scaled channel planes, plane `ch` starting at
/// `out[offset(ch)]` (grey is tiled to every output channel).
fn write_planes(img: &[u8], c: usize, oc: usize, unit: bool, out: &mut [f32], offset: impl Fn(usize) -> usize) {
    let pixels = img.len() / c;
    for ch in 0..oc {
        let sc = if c == 1 { 0 } else { ch.min(c - 1) };
        let o = offset(ch);
        for p in 0..pixels {
            out[o + p] = scale(img[p * c + sc], unit);
        }
    }
}

/// Per-channel mean/std normalisation in place, statistics from `train` (`x` is `[N, C, rest]`).
fn mean_std(splits: &mut [(&str, Split)], c: usize) {
    let stats: Vec<(f64, f64)> = {
        let Array::F32(x) = &splits[0].1.x[0].1.data else {
            return;
        };
        let per = x.len() / splits[0].1.y.len().max(1) / c;
        (0..c)
            .map(|ch| {
                let vals = x.chunks_exact(per).skip(ch).step_by(c).flatten();
                let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0.0f64);
                for &v in vals {
                    s += v as f64;
                    s2 += (v as f64) * (v as f64);
                    n += 1.0;
                }
                let m = s / n.max(1.0);
                (m, (s2 / n.max(1.0) - m * m).max(1e-12).sqrt())
            })
            .collect()
    };
    for (_, sp) in splits.iter_mut() {
        let n = sp.y.len().max(1);
        if let Array::F32(x) = &mut sp.x[0].1.data {
            let per = x.len() / n / c;
            for (i, chunk) in x.chunks_exact_mut(per).enumerate() {
                let (m, s) = stats[i % c];
                chunk.iter_mut().for_each(|v| *v = ((*v as f64 - m) / s) as f32);
            }
        }
    }
}

/// `image_prep`.
pub struct ImagePrep;

/// The declaration of a preprocessed dataset: its input's declaration (modality, classes) with `shape`
/// `[C, T, H, W]`, when the input's modality is `modality`.
fn declare_shape(inputs: &BTreeMap<String, Vec<serde_json::Value>>, modality: &str, shape: [usize; 4]) -> Option<serde_json::Value> {
    let mut d = inputs.get("data")?.first()?.clone();
    if d["modality"] != modality || shape.contains(&0) {
        return None;
    }
    d["shape"] = json!(shape);
    Some(d)
}

impl Stage for ImagePrep {
    fn declare(&self, params: &serde_json::Value, inputs: &BTreeMap<String, Vec<serde_json::Value>>) -> Option<serde_json::Value> {
        let g = |k: &str| params[k].as_u64().unwrap_or(0) as usize;
        declare_shape(inputs, "image", [g("channels"), 1, g("height"), g("width")])
    }
    fn kind(&self) -> &'static str {
        "image_prep"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "resize images, grey → C channels, scale to [-1, 1] (paper), [0, 1] or per-channel mean/std"
    }
    fn output(&self) -> &'static str {
        "tensors"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("data", &["dataset"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("height", T::Int { min: 0, max: 4096 }, json!(0), "output height (0 = keep)"),
            ParamSpec::opt("width", T::Int { min: 0, max: 4096 }, json!(0), "output width (0 = keep)"),
            ParamSpec::opt(
                "channels",
                T::Int { min: 1, max: 3 },
                json!(1),
                "stored channels (grey is tiled here if 3; the tokenizer also tiles 1 → its channels)",
            ),
            ParamSpec::opt("scale", T::Choice(&["minus_one_one", "unit", "mean_std"]), json!("minus_one_one"), "value scaling"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "image")?;
        let oc = ctx.params["channels"].as_u64().unwrap() as usize;
        let how = ctx.params["scale"].as_str().unwrap().to_string();
        let mut splits = vec![];
        let (mut oh, mut ow) = (0, 0);
        for s in SPLITS {
            let arrays = read_split(&a, s)?;
            let x = &arrays["x"];
            let Array::U8(px) = &x.data else {
                return Err(StageError::failed("images must be u8"));
            };
            let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
            oh = match ctx.params["height"].as_u64().unwrap() as usize {
                0 => h,
                v => v,
            };
            ow = match ctx.params["width"].as_u64().unwrap() as usize {
                0 => w,
                v => v,
            };
            let mut out = vec![0f32; n * oc * oh * ow];
            for i in 0..n {
                let img = resize(&px[i * h * w * c..(i + 1) * h * w * c], h, w, c, oh, ow);
                write_planes(&img, c, oc, how == "unit", &mut out, |ch| (i * oc + ch) * oh * ow);
            }
            splits.push((
                s,
                Split { x: vec![("x".into(), Named { shape: vec![n, oc, 1, oh, ow], data: Array::F32(out) })], y: labels(&arrays)? },
            ));
        }
        if how == "mean_std" {
            mean_std(&mut splits, oc);
        }
        let note = format!("{}; resized to {oh}×{ow}, {oc} channels, scale {how}", meta.note);
        write_dataset(ctx, "image", meta.classes, meta.multilabel, splits, None, note)
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}

/// `audio_prep`: Kaldi log-mel, crop/pad to a fixed frame count, optional mean/std from the train split.
pub struct AudioPrep;

impl Stage for AudioPrep {
    fn declare(&self, params: &serde_json::Value, inputs: &BTreeMap<String, Vec<serde_json::Value>>) -> Option<serde_json::Value> {
        let opts: FbankOptions = serde_json::from_value(params["fbank"].clone()).ok()?;
        declare_shape(inputs, "audio", [1, 1, params["frames"].as_u64()? as usize, opts.num_mel_bins])
    }
    fn kind(&self) -> &'static str {
        "audio_prep"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "Kaldi-compatible log-mel spectrograms (torchaudio kaldi.fbank; AST recipe by default), time × mel"
    }
    fn output(&self) -> &'static str {
        "tensors"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("data", &["dataset"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("fbank", T::Table, json!({}), "fbank options (torchaudio names: num_mel_bins, window_type, frame_length, …)"),
            ParamSpec::opt("frames", T::Int { min: 1, max: 100_000 }, json!(96), "crop (centre) or zero-pad to this many frames"),
            ParamSpec::opt("normalize", T::Choice(&["none", "train"]), json!("none"), "mean/std normalisation computed on the train split"),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        let r: Result<FbankOptions, _> = serde_json::from_value(params["fbank"].clone());
        r.map(|_| ()).map_err(|e| ("fbank".into(), format!("bad fbank option: {e}")))
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "audio")?;
        let mut opts: FbankOptions = serde_json::from_value(ctx.params["fbank"].clone()).map_err(|e| StageError::input(e.to_string()))?;
        opts.sample_frequency = meta.sample_rate.unwrap_or(16000) as f64;
        let fb = Fbank::new(opts.clone()).map_err(StageError::input)?;
        let frames = ctx.params["frames"].as_u64().unwrap() as usize;
        let mut splits = vec![];
        let bins = opts.num_mel_bins + usize::from(opts.use_energy);
        for s in SPLITS {
            let arrays = read_split(&a, s)?;
            let (Array::F32(wave), Array::I64(off)) = (&arrays["wave"].data, &arrays["offsets"].data) else {
                return Err(StageError::failed("audio must be wave f32 + offsets i64"));
            };
            let n = off.len() - 1;
            let mut out = vec![0f32; n * frames * bins];
            for i in 0..n {
                let (m, c, feats) = fb.compute(&wave[off[i] as usize..off[i + 1] as usize]);
                // Centre crop or zero-pad (in the log domain a pad is 0, as AST pads).
                let start = m.saturating_sub(frames) / 2;
                for f in 0..frames.min(m) {
                    out[(i * frames + f) * bins..(i * frames + f + 1) * bins].copy_from_slice(&feats[(start + f) * c..(start + f + 1) * c]);
                }
            }
            splits.push((
                s,
                Split { x: vec![("x".into(), Named { shape: vec![n, 1, 1, frames, bins], data: Array::F32(out) })], y: labels(&arrays)? },
            ));
        }
        if ctx.params["normalize"] == "train" {
            mean_std(&mut splits, 1);
        }
        let note = format!(
            "{}; log-mel {} bins, {:?} window, {} ms / {} ms, {frames} frames",
            meta.note, opts.num_mel_bins, opts.window_type, opts.frame_length, opts.frame_shift
        );
        write_dataset(ctx, "audio", meta.classes, meta.multilabel, splits, None, note)
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}

/// `video_prep`: frame sampling (count, stride), resize, scale.
pub struct VideoPrep;

impl Stage for VideoPrep {
    fn declare(&self, params: &serde_json::Value, inputs: &BTreeMap<String, Vec<serde_json::Value>>) -> Option<serde_json::Value> {
        let g = |k: &str| params[k].as_u64().unwrap_or(0) as usize;
        declare_shape(inputs, "video", [g("channels"), g("frames"), g("size"), g("size")])
    }
    fn kind(&self) -> &'static str {
        "video_prep"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "sample frames (count, stride), resize, grey → C channels, scale to [-1, 1]"
    }
    fn output(&self) -> &'static str {
        "tensors"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("data", &["dataset"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("frames", T::Int { min: 1, max: 1024 }, json!(8), "frames kept per clip"),
            ParamSpec::opt("stride", T::Int { min: 1, max: 64 }, json!(1), "temporal stride"),
            ParamSpec::opt("size", T::Int { min: 0, max: 4096 }, json!(0), "frame side (0 = keep)"),
            ParamSpec::opt(
                "channels",
                T::Int { min: 1, max: 3 },
                json!(1),
                "stored channels (grey is tiled here if 3; the tokenizer also tiles 1 → its channels)",
            ),
            ParamSpec::opt("scale", T::Choice(&["minus_one_one", "unit"]), json!("minus_one_one"), "value scaling"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "video")?;
        let (tf, stride) = (ctx.params["frames"].as_u64().unwrap() as usize, ctx.params["stride"].as_u64().unwrap() as usize);
        let oc = ctx.params["channels"].as_u64().unwrap() as usize;
        let how = ctx.params["scale"].as_str().unwrap().to_string();
        let mut splits = vec![];
        let mut side = 0;
        for s in SPLITS {
            let arrays = read_split(&a, s)?;
            let x = &arrays["x"];
            let Array::U8(px) = &x.data else {
                return Err(StageError::failed("video must be u8"));
            };
            let (n, t, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]);
            if (tf - 1) * stride >= t {
                return Err(StageError::input(format!(
                    "`{}` has {t} frames per clip; {tf} frames at stride {stride} need {}",
                    a.id,
                    (tf - 1) * stride + 1
                )));
            }
            side = match ctx.params["size"].as_u64().unwrap() as usize {
                0 => h,
                v => v,
            };
            let mut out = vec![0f32; n * oc * tf * side * side];
            for i in 0..n {
                for f in 0..tf {
                    let src = &px[((i * t + f * stride) * h * w * c)..((i * t + f * stride + 1) * h * w * c)];
                    let img = resize(src, h, w, c, side, side);
                    write_planes(&img, c, oc, how == "unit", &mut out, |ch| ((i * oc + ch) * tf + f) * side * side);
                }
            }
            splits.push((
                s,
                Split { x: vec![("x".into(), Named { shape: vec![n, oc, tf, side, side], data: Array::F32(out) })], y: labels(&arrays)? },
            ));
        }
        let note = format!("{}; {tf} frames at stride {stride}, {side}², {oc} channels", meta.note);
        write_dataset(ctx, "video", meta.classes, meta.multilabel, splits, None, note)
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}
