//! Dataset artifacts as safetensors (one file per split), so a Python user can open them.
//!
//! - `dataset` artifacts (ingested): `x` u8 images `[N, H, W, C]` or videos `[N, T, H, W, C]`, or audio as
//!   `wave` f32 (all clips concatenated) + `offsets` i64 `[N + 1]`; labels `y` i64 `[N]`, or multi-hot u8
//!   `[N, K]` for multi-label data.
//! - `tensors` artifacts (preprocessed, model-ready): `x` f32 `[N, C, T, H, W]` (images and spectrograms have
//!   `T = 1`; spectrograms are `[N, C, 1, time, mel]`), same labels.
//!
//! `meta.json` records the modality, class names, split sizes and how the data was made.

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A typed host array.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Bytes.
    U8(Vec<u8>),
    /// Floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
}

/// A named array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Array,
}

/// Labels of a split.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One class per example.
    Single(Vec<i64>),
    /// Multi-hot `[N, K]`.
    Multi(Vec<u8>, usize),
}

impl Labels {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Labels::Single(v) => v.len(),
            Labels::Multi(v, k) => v.len() / k.max(&1),
        }
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Labels of the given examples.
    pub fn select(&self, idx: &[usize]) -> Labels {
        match self {
            Labels::Single(v) => Labels::Single(idx.iter().map(|&i| v[i]).collect()),
            Labels::Multi(v, k) => Labels::Multi(idx.iter().flat_map(|&i| v[i * k..(i + 1) * k].to_vec()).collect(), *k),
        }
    }
    /// As a named array `y`.
    pub fn named(&self) -> Named {
        match self {
            Labels::Single(v) => Named { shape: vec![v.len()], data: Array::I64(v.clone()) },
            Labels::Multi(v, k) => Named { shape: vec![v.len() / k, *k], data: Array::U8(v.clone()) },
        }
    }
    /// The shape of [`Self::named`] without building it.
    pub fn named_shape(&self) -> Vec<usize> {
        match self {
            Labels::Single(v) => vec![v.len()],
            Labels::Multi(v, k) => vec![v.len() / k, *k],
        }
    }
    /// From a named array `y`.
    pub fn from_named(n: &Named) -> Result<Labels, String> {
        match (&n.data, n.shape.len()) {
            (Array::I64(v), 1) => Ok(Labels::Single(v.clone())),
            (Array::U8(v), 2) => Ok(Labels::Multi(v.clone(), n.shape[1])),
            _ => Err(format!("labels `y` have an unexpected layout {:?}", n.shape)),
        }
    }
}

/// `meta.json` of a dataset or tensors artifact.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// `image`, `audio` or `video`.
    pub modality: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Several labels per example.
    pub multilabel: bool,
    /// Split → size.
    pub splits: BTreeMap<String, usize>,
    /// Per-example shape of `x` (without N).
    pub shape: Vec<usize>,
    /// Audio sample rate (raw audio only).
    pub sample_rate: Option<u32>,
    /// How it was made.
    pub note: String,
    /// Examples whose files could not be decoded and were skipped (listed in `skipped.json`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: usize,
    /// Examples the layout lists whose files are absent (listed in `skipped.json`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing: usize,
    /// For u8 caches of model inputs: how a stored byte becomes the model's float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ValueMap>,
    /// For stored spectrograms longer than the model's input: the time frames the model sees (a random window
    /// at training time, the centre at evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// For stored frames larger than the model's input: the side of the square the model sees (a random crop
    /// after scale jitter at training time, the centre at evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<usize>,
    /// For stored clips longer than the model's input: the frames the model sees (`T` axis; a random window of
    /// consecutive stored frames at training time, the centre at evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_window: Option<usize>,
}

/// How a stored u8 value becomes the model's float: `minus_one_one` (v / 127.5 − 1, the paper's), `unit`
/// (v / 255), or `mean_std` (the `minus_one_one` value standardised per channel with train statistics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueMap {
    /// `minus_one_one`, `unit` or `mean_std`.
    pub scale: String,
    /// Per-channel means (`mean_std`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// Per-channel standard deviations (`mean_std`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f64>,
}

impl ValueMap {
    /// The float of byte `v` in channel `c`: bit for bit what a float cache computes.
    pub fn value(&self, c: usize, v: u8) -> f32 {
        let base = if self.scale == "unit" { v as f32 / 255.0 } else { v as f32 / 127.5 - 1.0 };
        if self.scale == "mean_std" {
            ((base as f64 - self.mean[c]) / self.std[c]) as f32
        } else {
            base
        }
    }

    /// The map of channel `c` as `v · mul + add` in f32 (for values interpolated between bytes).
    pub fn affine(&self, c: usize) -> (f32, f32) {
        let (mut mul, mut add) = if self.scale == "unit" { (1.0 / 255.0, 0.0) } else { (1.0 / 127.5, -1.0) };
        if self.scale == "mean_std" {
            let (m, s) = (self.mean[c], self.std[c]);
            mul = (mul as f64 / s) as f32;
            add = ((add as f64 - m) / s) as f32;
        }
        (mul, add)
    }

    /// A 256-entry table per channel.
    pub fn lut(&self, channels: usize) -> Vec<[f32; 256]> {
        (0..channels)
            .map(|c| {
                let mut t = [0f32; 256];
                t.iter_mut().enumerate().for_each(|(v, o)| *o = self.value(c, v as u8));
                t
            })
            .collect()
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Serialises named arrays.
pub fn encode(arrays: &BTreeMap<String, Named>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = arrays
        .iter()
        .map(|(k, a)| {
            let (dt, bytes): (Dtype, &[u8]) = match &a.data {
                Array::U8(v) => (Dtype::U8, v),
                Array::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
                Array::I64(v) => (Dtype::I64, bytemuck::cast_slice(v)),
            };
            (k.clone(), safetensors::tensor::TensorView::new(dt, a.shape.clone(), bytes).expect("consistent shape"))
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// Parses named arrays.
pub fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Named>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, v) in st.tensors() {
        let d = v.data();
        let data = match v.dtype() {
            Dtype::U8 => Array::U8(d.to_vec()),
            Dtype::F32 => Array::F32(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            Dtype::I64 => Array::I64(d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
            other => return Err(format!("tensor `{name}`: dtype {other:?} not supported")),
        };
        out.insert(name, Named { shape: v.shape().to_vec(), data });
    }
    Ok(out)
}

/// A seeded split of `n` examples: returns (kept, carved) index lists with `round(n · fraction)` carved.
pub fn carve(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let k = ((n as f64) * fraction).round() as usize;
    let mut carved = idx[..k].to_vec();
    let mut kept = idx[k..].to_vec();
    carved.sort();
    kept.sort();
    (kept, carved)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip() {
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), Named { shape: vec![2, 2], data: Array::F32(vec![1.0, 2.0, 3.0, 4.5]) });
        m.insert("y".to_string(), Labels::Single(vec![3, 1]).named());
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(back, m);
        let (a, b) = carve(10, 0.2, 1);
        assert_eq!((a.len(), b.len()), (8, 2));
        assert_eq!(carve(10, 0.2, 1), (a, b));
    }
}
