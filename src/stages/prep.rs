//! Preprocessing caches: `image_prep`, `audio_prep` (Kaldi log-mel) and `video_prep` turn a `dataset`
//! artifact into model-ready `tensors` (`x` `[N, C, T, H, W]`: f32, or u8 with the value map in `meta.json`
//! for images and video, 4× smaller and the same floats at training time).
//!
//! Every split is read one example at a time from its shards, processed in parallel chunks, and written in
//! order into shards: memory is flat in the dataset's size. Statistics for `mean_std` are accumulated over
//! the train split in example order first (the same sums, so the same bits, as over a whole split in memory).

use super::datautil::{open_split, shard_put, write_meta};
use crate::data::fbank::{Fbank, FbankOptions};
use crate::data::shards::{Label, Layout, ShardWriter, SplitReader, Values, SHARD_BYTES};
use crate::data::tensors::{Labels, Meta, ValueMap};
use crate::stage::{choice_enum, parse, parse_checked, InputArtifact, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

const SPLITS: [&str; 3] = ["train", "val", "test"];

choice_enum! {
    /// How `image_prep` scales values (recorded by name in `meta.json`'s value map).
    enum Scale {
        /// To [-1, 1] (the paper).
        MinusOneOne = "minus_one_one",
        /// To [0, 1].
        Unit = "unit",
        /// Per-channel mean/std of the train split.
        MeanStd = "mean_std",
    }
}

choice_enum! {
    /// How `video_prep` scales values.
    enum VideoScale {
        /// To [-1, 1] (the paper).
        MinusOneOne = "minus_one_one",
        /// To [0, 1].
        Unit = "unit",
    }
}

choice_enum! {
    /// The stored value type of a preprocessed cache.
    enum Stored {
        /// f32 values, scaled.
        F32 = "f32",
        /// u8 values, scaled when batches are read (the value map in `meta.json`).
        U8 = "u8",
    }
}

choice_enum! {
    /// `audio_prep`'s normalisation.
    enum Normalize {
        /// None.
        None = "none",
        /// Mean/std computed on the train split.
        Train = "train",
    }
}

/// The parameters of an `image_prep` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageParams {
    /// Output height (0 = keep).
    height: usize,
    /// Output width (0 = keep).
    width: usize,
    /// Stored channels.
    channels: usize,
    scale: Scale,
    dtype: Stored,
}

/// The parameters of an `audio_prep` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudioParams {
    fbank: FbankOptions,
    /// Frames stored per clip (centre crop, or `pad` to it).
    frames: usize,
    normalize: Normalize,
    /// Frames the model sees (0 = all).
    window: usize,
    /// How a clip shorter than `frames` is filled; added later, absent at its default.
    #[serde(default = "zero_pad")]
    pad: Pad,
}

choice_enum! {
    /// How an audio clip shorter than the stored frames is filled.
    enum Pad {
        /// Zeros after the clip (the AST recipe). In the log-mel domain 0 is not silence but a loud value
        /// unless `normalize = "train"` makes it the mean.
        Zero = "zero",
        /// The clip's frames repeated until the length is reached (DMVR's `sample_sequence(repeat_sequence=True)`,
        /// which MBT's and PolyViT's audio pipeline uses).
        Repeat = "repeat",
    }
}

fn zero_pad() -> Pad {
    Pad::Zero
}

impl AudioParams {
    /// The `window` when it is shorter than `frames`.
    fn window(&self) -> Option<usize> {
        (self.window > 0 && self.window < self.frames).then_some(self.window)
    }
}

/// The parameters of a `video_prep` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VideoParams {
    frames: usize,
    stride: usize,
    /// Frame side (0 = keep).
    size: usize,
    /// Side the model sees (0 = all).
    crop: usize,
    channels: usize,
    scale: VideoScale,
    dtype: Stored,
    /// Frames the model sees (0 = all `frames`); added later, absent at its default.
    #[serde(default)]
    window: usize,
}

impl VideoParams {
    /// The `crop` when it is smaller than the stored side.
    fn crop(&self, side: usize) -> Option<usize> {
        (self.crop > 0 && self.crop < side).then_some(self.crop)
    }

    /// The `window` when it is shorter than `frames`.
    fn window(&self) -> Option<usize> {
        (self.window > 0 && self.window < self.frames).then_some(self.window)
    }
}

fn meta_of(a: &InputArtifact, want: &str) -> Result<Meta, StageError> {
    let m: Meta = a.json("meta.json")?;
    if m.modality != want {
        return Err(StageError::input(format!("`{}` holds {} data, this node needs {want}", a.id, m.modality)));
    }
    Ok(m)
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

/// Pixel `p` of an interleaved u8 image (`c` channels) as output channel `ch` of `oc`: grey tiled to every
/// channel; colour to one channel as its luminance, PIL's `convert("L")` (ITU-R 601-2, `(19595 R + 38470 G +
/// 7471 B + 2¹⁵) >> 16`, so a grey pixel stored as RGB keeps its value); else the channel itself.
fn pixel(img: &[u8], c: usize, oc: usize, p: usize, ch: usize) -> u8 {
    match (c, oc) {
        (1, _) => img[p],
        (3.., 1) => {
            let (r, g, b) = (img[p * c] as u32, img[p * c + 1] as u32, img[p * c + 2] as u32);
            ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8
        }
        _ => img[p * c + ch.min(c - 1)],
    }
}

/// Writes an interleaved u8 image (`c` channels) as `oc` scaled channel planes, plane `ch` starting at
/// `out[offset(ch)]` ([`pixel`]: grey tiled to every output channel, colour to one as its luminance).
fn write_planes(img: &[u8], c: usize, oc: usize, unit: bool, out: &mut [f32], offset: impl Fn(usize) -> usize) {
    let pixels = img.len() / c;
    for ch in 0..oc {
        let o = offset(ch);
        for p in 0..pixels {
            out[o + p] = scale(pixel(img, c, oc, p, ch), unit);
        }
    }
}

/// An interleaved u8 image (`c` channels) as `oc` channel planes of bytes (grey tiled to every channel).
fn planes_u8(img: &[u8], c: usize, oc: usize) -> Vec<u8> {
    let pixels = img.len() / c;
    let mut out = vec![0u8; oc * pixels];
    for ch in 0..oc {
        for p in 0..pixels {
            out[ch * pixels + p] = pixel(img, c, oc, p, ch);
        }
    }
    out
}

/// A per-example map of [`map_split`], boxed.
type MapFn = Box<dyn Fn(&SplitReader, Vec<u8>) -> Result<Out, String> + Sync>;

/// One processed example.
enum Out {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Per-channel mean and standard deviation accumulated in example order (f64 sums of every value of each
/// channel's planes), as a whole-split computation would.
#[derive(Default)]
struct Stats {
    s: Vec<f64>,
    s2: Vec<f64>,
    n: Vec<f64>,
}

impl Stats {
    fn new(c: usize) -> Self {
        Stats { s: vec![0.0; c], s2: vec![0.0; c], n: vec![0.0; c] }
    }
    /// Adds one example `[C, rest]`.
    fn add(&mut self, x: &[f32]) {
        let c = self.s.len();
        let per = x.len() / c;
        for ch in 0..c {
            for &v in &x[ch * per..(ch + 1) * per] {
                self.s[ch] += v as f64;
                self.s2[ch] += (v as f64) * (v as f64);
                self.n[ch] += 1.0;
            }
        }
    }
    fn finish(&self) -> (Vec<f64>, Vec<f64>) {
        (0..self.s.len())
            .map(|ch| {
                let m = self.s[ch] / self.n[ch].max(1.0);
                (m, (self.s2[ch] / self.n[ch].max(1.0) - m * m).max(1e-12).sqrt())
            })
            .unzip()
    }
}

/// Standardises one example `[C, rest]` in place.
fn standardise(x: &mut [f32], mean: &[f64], std: &[f64]) {
    let per = x.len() / mean.len();
    for (i, v) in x.iter_mut().enumerate() {
        let ch = i / per;
        *v = ((*v as f64 - mean[ch]) / std[ch]) as f32;
    }
}

/// Per-channel mean and standard deviation of `f`'s floats over the train split `r`: examples mapped in parallel
/// chunks, accumulated in example order (so the same bits as over the whole split in memory).
fn train_stats<F>(ctx: &StageCtx<'_>, r: &SplitReader, channels: usize, f: F) -> Result<(Vec<f64>, Vec<f64>), StageError>
where
    F: Fn(Vec<u8>) -> Vec<f32> + Sync,
{
    let mut st = Stats::new(channels);
    let chunk = (rayon::current_num_threads() * 8).max(16);
    let idx: Vec<usize> = (0..r.len()).collect();
    for part in idx.chunks(chunk) {
        (ctx.progress)(crate::stage::Progress {
            done: part[0] as u64,
            total: r.len() as u64,
            message: "train statistics".into(),
            note: false,
        });
        let outs: Vec<Result<Vec<f32>, String>> = part.par_iter().map(|&i| r.raw(i).map(&f)).collect();
        for (&i, o) in part.iter().zip(outs) {
            st.add(&o.map_err(|e| StageError::failed(format!("node `{}`: example {i}: {e}", ctx.id)))?);
        }
    }
    Ok(st.finish())
}

/// Maps split `split` (read by `r`) example by example through `f` into shards of `shape` (`dtype`); `after`
/// adjusts float results (standardisation). Returns the number of examples.
fn map_split<F>(
    ctx: &mut StageCtx<'_>,
    r: &SplitReader,
    split: &str,
    dtype: Dtype,
    shape: Vec<usize>,
    f: F,
    after: &(dyn Fn(&mut [f32]) + Sync),
) -> Result<usize, StageError>
where
    F: Fn(&SplitReader, Vec<u8>) -> Result<Out, String> + Sync,
{
    let k = match &r.labels {
        Labels::Multi(_, k) => Some(*k),
        Labels::Single(_) => None,
    };
    let id = ctx.id.to_string();
    let fail = |m: String| StageError::failed(format!("node `{id}`: {m}"));
    let mut w = ShardWriter::new(split, Layout::Fixed("x".into(), dtype, shape), k, SHARD_BYTES).map_err(fail)?;
    let labels = r.labels.clone();
    let progress = ctx.progress;
    let out = &mut ctx.out;
    let n = r.len();
    let chunk = (rayon::current_num_threads() * 8).max(16);
    let idx: Vec<usize> = (0..n).collect();
    for part in idx.chunks(chunk) {
        progress(crate::stage::Progress { done: part[0] as u64, total: n as u64, message: format!("{split} split"), note: false });
        let res: Vec<Result<Out, String>> = part.par_iter().map(|&i| r.raw(i).and_then(|raw| f(r, raw))).collect();
        for (&i, o) in part.iter().zip(res) {
            let mut o = o.map_err(|e| fail(format!("example {i}: {e}")))?;
            if let Out::F32(v) = &mut o {
                after(v);
            }
            let x = match &o {
                Out::U8(v) => Values::U8(v),
                Out::F32(v) => Values::F32(v),
            };
            let y = match &labels {
                Labels::Single(v) => Label::Single(v[i]),
                Labels::Multi(v, k) => Label::Multi(&v[i * k..(i + 1) * k]),
            };
            w.push(x, y, &mut shard_put(out)).map_err(fail)?;
        }
    }
    if split == "train" && n == 0 {
        return Err(StageError::input(format!("node `{id}`: the train split is empty")));
    }
    w.finish(&mut shard_put(out)).map_err(fail)?;
    Ok(n)
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
    fn declare(
        &self,
        params: &serde_json::Value,
        _base: &std::path::Path,
        inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // Parameters that do not parse declare nothing (validation reports them).
        let p: ImageParams = parse(params).ok()?;
        declare_shape(inputs, "image", [p.channels, 1, p.height, p.width])
    }
    fn kind(&self) -> &'static str {
        "image_prep"
    }
    fn version(&self) -> u32 {
        1
    }
    fn version_for(&self, params: &serde_json::Value, _env: &BTreeMap<String, String>) -> u32 {
        // One more where one channel is stored: colour becomes its luminance there, not its red channel (grey
        // data gives the same bytes; 3-channel nodes, ImageNet's, keep their keys).
        self.version() + u32::from(params.get("channels").and_then(serde_json::Value::as_u64) == Some(1))
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
            ParamSpec::opt("scale", T::Choice(Scale::NAMES), json!("minus_one_one"), "value scaling"),
            ParamSpec::opt(
                "dtype",
                T::Choice(Stored::NAMES),
                json!("f32"),
                "stored values: f32, or u8 with the scaling applied when batches are read (4× smaller, the same floats)",
            ),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<ImageParams>(params, &self.params()).map(|_| ())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: ImageParams = parse(ctx.params)?;
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "image")?;
        let oc = p.channels;
        let how = p.scale.name().to_string();
        let u8_cache = p.dtype == Stored::U8;
        // Each split is opened (and checksum-verified) once.
        let readers = SPLITS.iter().map(|sp| open_split(&a, sp)).collect::<Result<Vec<_>, _>>()?;
        if readers[0].name == "bytes" {
            return encoded_passthrough(ctx, &a, meta, &p);
        }
        let size = |r: &SplitReader| -> Result<(usize, usize, usize, usize, usize), StageError> {
            let [h, w, c] = r.shape[..] else {
                return Err(StageError::failed(format!("`{}`: images must be u8 [N, H, W, C], got [N] + {:?}", a.id, r.shape)));
            };
            let oh = match p.height {
                0 => h,
                v => v,
            };
            let ow = match p.width {
                0 => w,
                v => v,
            };
            Ok((h, w, c, oh, ow))
        };
        let unit = p.scale == Scale::Unit;
        let floats = move |raw: &[u8], (h, w, c, oh, ow): (usize, usize, usize, usize, usize)| -> Vec<f32> {
            let img = resize(raw, h, w, c, oh, ow);
            let mut out = vec![0f32; oc * oh * ow];
            write_planes(&img, c, oc, unit, &mut out, |ch| ch * oh * ow);
            out
        };
        // Train statistics for mean_std, over the float values, in example order.
        let (mean, std) = if p.scale == Scale::MeanStd {
            let dims = size(&readers[0])?;
            train_stats(ctx, &readers[0], oc, |raw| floats(&raw, dims))?
        } else {
            (vec![], vec![])
        };
        let mut sizes = BTreeMap::new();
        let (mut oh, mut ow) = (0, 0);
        for (s, r) in SPLITS.iter().zip(&readers) {
            let dims = size(r)?;
            (oh, ow) = (dims.3, dims.4);
            let (dtype, f): (Dtype, MapFn) = if u8_cache {
                (
                    Dtype::U8,
                    Box::new(move |_: &SplitReader, raw: Vec<u8>| {
                        Ok(Out::U8(planes_u8(&resize(&raw, dims.0, dims.1, dims.2, dims.3, dims.4), dims.2, oc)))
                    }),
                )
            } else {
                (Dtype::F32, Box::new(move |_: &SplitReader, raw: Vec<u8>| Ok(Out::F32(floats(&raw, dims)))))
            };
            let (m, sd) = (mean.clone(), std.clone());
            let after = move |x: &mut [f32]| {
                if !m.is_empty() {
                    standardise(x, &m, &sd)
                }
            };
            let n = map_split(ctx, r, s, dtype, vec![oc, 1, oh, ow], f, &after)?;
            sizes.insert(s.to_string(), n);
        }
        let mut note = format!("{}; resized to {oh}×{ow}, {oc} channels, scale {how}", meta.note);
        let values = u8_cache.then(|| {
            note.push_str("; stored as u8");
            ValueMap { scale: how.clone(), mean: mean.clone(), std: std.clone() }
        });
        let shape = vec![oc, 1, oh, ow];
        write_meta(
            ctx,
            Meta {
                modality: "image".into(),
                classes: meta.classes,
                multilabel: meta.multilabel,
                splits: sizes,
                shape,
                sample_rate: None,
                note,
                values,
                ..Default::default()
            },
        )
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}

/// `image_prep` of encoded images: the shards are linked (no copy) and `meta.json` records the size and value
/// map the batches are decoded to.
fn encoded_passthrough(ctx: &mut StageCtx<'_>, a: &InputArtifact, meta: Meta, p: &ImageParams) -> Result<(), StageError> {
    let (oh, ow, how) = (p.height, p.width, p.scale.name());
    if oh == 0 || ow == 0 || p.channels != 3 || p.scale == Scale::MeanStd {
        return Err(StageError::input(format!(
            "node `{}`: `{}` holds encoded images, decoded per batch: set height and width, channels = 3 and scale \
             minus_one_one or unit (mean_std needs stored pixels)",
            ctx.id, a.id
        )));
    }
    for s in SPLITS {
        for name in crate::data::shards::shard_names(a.manifest.files.keys(), s) {
            ctx.out.link(&name, a, &name)?;
        }
    }
    let note = format!("{}; decoded per batch to {oh}×{ow}, 3 channels, scale {how} (training crops the original image)", meta.note);
    let values = Some(ValueMap { scale: how.to_string(), mean: vec![], std: vec![] });
    let m = Meta {
        modality: "image".into(),
        classes: meta.classes,
        multilabel: meta.multilabel,
        splits: meta.splits,
        shape: vec![3, 1, oh, ow],
        sample_rate: None,
        note,
        values,
        ..Default::default()
    };
    write_meta(ctx, m)
}

/// `audio_prep`: Kaldi log-mel, crop/pad to a fixed frame count, optional mean/std from the train split.
pub struct AudioPrep;

impl Stage for AudioPrep {
    fn declare(
        &self,
        params: &serde_json::Value,
        _base: &std::path::Path,
        inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // Parameters that do not parse declare nothing (validation reports them).
        let p: AudioParams = parse(params).ok()?;
        declare_shape(inputs, "audio", [1, 1, p.window().unwrap_or(p.frames), p.fbank.num_mel_bins])
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
            ParamSpec::opt("normalize", T::Choice(Normalize::NAMES), json!("none"), "mean/std normalisation computed on the train split"),
            ParamSpec::opt(
                "window",
                T::Int { min: 0, max: 100_000 },
                json!(0),
                "frames the model sees: a random window of the stored `frames` per example at training time, the centre \
                 at evaluation (the paper: 800 of a 10 s clip's 1,000); 0 = all",
            ),
            ParamSpec::added(
                "pad",
                T::Choice(Pad::NAMES),
                json!("zero"),
                "a clip shorter than `frames`: zeros after it (AST) or its frames repeated (DMVR, the paper's pipeline)",
            ),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        let p: AudioParams =
            parse_checked(params, &self.params())
                .map_err(|(k, e)| if k == "fbank" { (k, format!("bad fbank option: {e}")) } else { (k, e) })?;
        if p.window > p.frames {
            return Err(("window".into(), format!("{} frames is more than the {} stored (`frames`)", p.window, p.frames)));
        }
        Ok(())
    }
    fn canonical_key(&self, keyed: &mut serde_json::Value) {
        crate::stage::canonical_option_table::<FbankOptions>(keyed, "fbank");
        // A window of all the stored frames is no window.
        if keyed.get("window").is_some() && keyed.get("window") == keyed.get("frames") {
            keyed["window"] = json!(0);
        }
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: AudioParams = parse(ctx.params)?;
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "audio")?;
        let mut opts = p.fbank.clone();
        opts.sample_frequency = meta.sample_rate.unwrap_or(16000) as f64;
        let fb = Fbank::new(opts.clone()).map_err(StageError::input)?;
        let frames = p.frames;
        let bins = opts.num_mel_bins + usize::from(opts.use_energy);
        // Kaldi log-mel, then a centre crop, or a short clip padded (`pad`: zeros after it, as AST pads in the
        // log domain, or its frames repeated, as DMVR samples a short sequence).
        let feats = |raw: &[u8]| -> Vec<f32> {
            let wave: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let (m, c, feats) = fb.compute(&wave);
            let mut out = vec![0f32; frames * bins];
            let start = m.saturating_sub(frames) / 2;
            let filled = if p.pad == Pad::Repeat && m > 0 { frames } else { frames.min(m) };
            for f in 0..filled {
                let g = if m > frames { start + f } else { f % m };
                out[f * bins..(f + 1) * bins].copy_from_slice(&feats[g * c..(g + 1) * c]);
            }
            out
        };
        let readers = SPLITS.iter().map(|sp| open_split(&a, sp)).collect::<Result<Vec<_>, _>>()?;
        let (mean, std) =
            if p.normalize == Normalize::Train { train_stats(ctx, &readers[0], 1, |raw| feats(&raw))? } else { (vec![], vec![]) };
        let after = |x: &mut [f32]| {
            if !mean.is_empty() {
                standardise(x, &mean, &std)
            }
        };
        let mut sizes = BTreeMap::new();
        for (s, r) in SPLITS.iter().zip(&readers) {
            let n = map_split(ctx, r, s, Dtype::F32, vec![1, 1, frames, bins], |_, raw| Ok(Out::F32(feats(&raw))), &after)?;
            sizes.insert(s.to_string(), n);
        }
        let mut note = format!(
            "{}; log-mel {} bins, {:?} window, {} ms / {} ms, {frames} frames",
            meta.note, opts.num_mel_bins, opts.window_type, opts.frame_length, opts.frame_shift
        );
        if let Some(w) = p.window() {
            note.push_str(&format!("; the model sees {w} of them (a random window when training, the centre when evaluating)"));
        }
        if p.pad == Pad::Repeat {
            note.push_str("; shorter clips repeated to fill them");
        }
        let shape = vec![1, 1, frames, bins];
        write_meta(
            ctx,
            Meta {
                modality: "audio".into(),
                classes: meta.classes,
                multilabel: meta.multilabel,
                splits: sizes,
                shape,
                sample_rate: None,
                note,
                window: p.window(),
                ..Default::default()
            },
        )
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}

/// `video_prep`: frame sampling (count, stride), resize, scale.
pub struct VideoPrep;

impl Stage for VideoPrep {
    fn declare(
        &self,
        params: &serde_json::Value,
        _base: &std::path::Path,
        inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // Parameters that do not parse declare nothing (validation reports them).
        let p: VideoParams = parse(params).ok()?;
        let side = p.crop(p.size).unwrap_or(p.size);
        declare_shape(inputs, "video", [p.channels, p.window().unwrap_or(p.frames), side, side])
    }
    fn kind(&self) -> &'static str {
        "video_prep"
    }
    fn version(&self) -> u32 {
        1
    }
    fn version_for(&self, params: &serde_json::Value, _env: &BTreeMap<String, String>) -> u32 {
        // As `image_prep`'s: one channel stored is the luminance of colour frames, not their red channel.
        self.version() + u32::from(params.get("channels").and_then(serde_json::Value::as_u64) == Some(1))
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
                "crop",
                T::Int { min: 0, max: 4096 },
                json!(0),
                "side the model sees: a random crop of the stored `size` frames after the task's scale jitter when \
                 training, the centre when evaluating (the paper: 224 of 256); 0 = all",
            ),
            ParamSpec::added(
                "window",
                T::Int { min: 0, max: 1024 },
                json!(0),
                "frames the model sees: a window of `window` consecutive stored frames, starting at random per example \
                 when training (DMVR's random temporal crop), the centre when evaluating; store more `frames` than the \
                 model sees for it (e.g. 64 at stride 2 in the dataset, window 32); 0 = all `frames`",
            ),
            ParamSpec::opt(
                "channels",
                T::Int { min: 1, max: 3 },
                json!(1),
                "stored channels (grey is tiled here if 3; the tokenizer also tiles 1 → its channels)",
            ),
            ParamSpec::opt("scale", T::Choice(VideoScale::NAMES), json!("minus_one_one"), "value scaling"),
            ParamSpec::opt(
                "dtype",
                T::Choice(Stored::NAMES),
                json!("f32"),
                "stored values: f32, or u8 with the scaling applied when batches are read (4× smaller, the same floats)",
            ),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        let p = parse_checked::<VideoParams>(params, &self.params())?;
        if p.window > p.frames {
            return Err(("window".into(), format!("{} frames is more than the {} stored (`frames`)", p.window, p.frames)));
        }
        if p.size > 0 && p.crop > p.size {
            return Err(("crop".into(), format!("a {0}² crop is larger than the {1}² frames stored (`size`)", p.crop, p.size)));
        }
        Ok(())
    }
    fn canonical_key(&self, keyed: &mut serde_json::Value) {
        // A window of all the stored frames is no window (`window` is left out at its default), a crop of the whole
        // stored side no crop.
        if keyed.get("window").is_some() && keyed.get("window") == keyed.get("frames") {
            if let Some(m) = keyed.as_object_mut() {
                m.remove("window");
            }
        }
        if keyed.get("size").and_then(|v| v.as_u64()).is_some_and(|s| s > 0) && keyed.get("crop") == keyed.get("size") {
            keyed["crop"] = json!(0);
        }
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: VideoParams = parse(ctx.params)?;
        let a = ctx.input("data")?.clone();
        let meta = meta_of(&a, "video")?;
        let (tf, stride, oc) = (p.frames, p.stride, p.channels);
        let how = p.scale.name().to_string();
        let u8_cache = p.dtype == Stored::U8;
        let mut sizes = BTreeMap::new();
        let mut side = 0;
        for s in SPLITS {
            let r = open_split(&a, s)?;
            let [t, h, w, c] = r.shape[..] else {
                return Err(StageError::failed(format!("`{}`: video must be u8 [N, T, H, W, C], got [N] + {:?}", a.id, r.shape)));
            };
            if (tf - 1) * stride >= t {
                return Err(StageError::input(format!(
                    "`{}` has {t} frames per clip; {tf} frames at stride {stride} need {}",
                    a.id,
                    (tf - 1) * stride + 1
                )));
            }
            side = match p.size {
                0 => h,
                v => v,
            };
            let unit = p.scale == VideoScale::Unit;
            let f = move |_: &SplitReader, px: Vec<u8>| -> Result<Out, String> {
                let frame = |f: usize| resize(&px[(f * stride) * h * w * c..(f * stride + 1) * h * w * c], h, w, c, side, side);
                if u8_cache {
                    let mut out = vec![0u8; oc * tf * side * side];
                    for f in 0..tf {
                        let p = planes_u8(&frame(f), c, oc);
                        for ch in 0..oc {
                            out[(ch * tf + f) * side * side..(ch * tf + f + 1) * side * side]
                                .copy_from_slice(&p[ch * side * side..(ch + 1) * side * side]);
                        }
                    }
                    Ok(Out::U8(out))
                } else {
                    let mut out = vec![0f32; oc * tf * side * side];
                    for f in 0..tf {
                        write_planes(&frame(f), c, oc, unit, &mut out, |ch| (ch * tf + f) * side * side);
                    }
                    Ok(Out::F32(out))
                }
            };
            let dtype = if u8_cache { Dtype::U8 } else { Dtype::F32 };
            let n = map_split(ctx, &r, s, dtype, vec![oc, tf, side, side], f, &|_| {})?;
            sizes.insert(s.to_string(), n);
        }
        let mut note = format!("{}; {tf} frames at stride {stride}, {side}², {oc} channels", meta.note);
        if let Some(c) = p.crop(side) {
            note.push_str(&format!("; the model sees {c}² crops (random after scale jitter when training, the centre when evaluating)"));
        }
        if let Some(w) = p.window() {
            let frames = if w == 1 { "1 frame".to_string() } else { format!("{w} consecutive frames") };
            note.push_str(&format!("; the model sees {frames} (from a random start when training, the centre when evaluating)"));
        }
        let values = u8_cache.then(|| {
            note.push_str("; stored as u8");
            ValueMap { scale: how.clone(), mean: vec![], std: vec![] }
        });
        let shape = vec![oc, tf, side, side];
        write_meta(
            ctx,
            Meta {
                modality: "video".into(),
                classes: meta.classes,
                multilabel: meta.multilabel,
                splits: sizes,
                shape,
                sample_rate: None,
                note,
                values,
                crop: p.crop(side),
                clip_window: p.window(),
                ..Default::default()
            },
        )
    }
    fn describe(&self, a: &InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}
