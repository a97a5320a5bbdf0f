//! Per-task data streams and augmentation, on the host.
//!
//! Each task has its own infinite, shuffled stream that advances only when its task is sampled (as in the
//! paper's code). The permutation of epoch `e` is derived from `(seed, task, e)` and the augmentation noise of
//! a batch from `(seed, task, step)`, so a stream's whole state is `(epoch, position)`: resuming from a
//! checkpoint reproduces the same batches bit for bit.

use crate::data::shards::SplitReader;
use crate::data::tensors::Labels;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One split of a task: examples `[C, T, H, W]` with their labels, held in memory (`dense`) or read from the
/// store's shard files example by example (`stored`: memory holds the labels only).
#[derive(Debug, Clone)]
pub struct SplitData {
    /// `[C, T, H, W]`.
    pub shape: [usize; 4],
    /// Labels.
    pub y: Labels,
    src: Src,
    /// Stored time length (`H` axis) when the model sees a window of `shape[2]` of it: random per example at
    /// training time, the centre at evaluation (audio: 8 s of a 10 s clip).
    window: Option<usize>,
    /// Stored `[H, W]` when the model sees a `shape[2] × shape[3]` crop of it: random (after scale jitter) at
    /// training time, the centre at evaluation (video: 224² of 256²).
    crop: Option<[usize; 2]>,
    /// Stored clip length (`T` axis) when the model sees `shape[1]` consecutive frames of it: from a random start
    /// per example at training time, the centre at evaluation (video: DMVR's random temporal crop). Taken
    /// before the spatial crop.
    clip: Option<usize>,
}

/// What [`SplitData::gather_train`] applied while reading a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The Inception crop and the flip (encoded images).
    pub crop_flip: bool,
    /// The scale jitter (with the random crop).
    pub scale_jitter: bool,
}

#[derive(Debug, Clone)]
enum Src {
    /// `[N, C, T, H, W]` floats.
    Dense(Vec<f32>),
    /// Shards; u8 values go through a per-channel table to floats.
    Stored { r: Arc<SplitReader>, lut: Option<Arc<Vec<[f32; 256]>>> },
    /// Shards of encoded images, decoded (and, for training, cropped and flipped) per batch.
    Encoded { r: Arc<SplitReader>, affine: [(f32, f32); 3] },
}

impl SplitData {
    /// A split held in memory: `x` is `[N, C, T, H, W]`.
    pub fn dense(x: Vec<f32>, shape: [usize; 4], y: Labels) -> Self {
        SplitData { shape, y, src: Src::Dense(x), window: None, crop: None, clip: None }
    }

    /// A split read from shards: f32 examples as stored, or u8 examples mapped per channel by `lut`
    /// (`lut[c][v]` = the float of value `v` in channel `c`, exactly what a float cache would hold).
    pub fn stored(r: SplitReader, shape: [usize; 4], lut: Option<Vec<[f32; 256]>>) -> Self {
        let y = r.labels.clone();
        SplitData { shape, y, src: Src::Stored { r: Arc::new(r), lut: lut.map(Arc::new) }, window: None, crop: None, clip: None }
    }

    /// A split of encoded images (see [`super::encoded`]), decoded to `[3, 1, H, W]` with the value map
    /// `v · affine[c].0 + affine[c].1`.
    pub fn encoded(r: SplitReader, h: usize, w: usize, affine: [(f32, f32); 3]) -> Self {
        let y = r.labels.clone();
        SplitData { shape: [3, 1, h, w], y, src: Src::Encoded { r: Arc::new(r), affine }, window: None, crop: None, clip: None }
    }

    /// The model sees a window of `window` steps of the `H` (time) axis of the stored examples (whose shape is
    /// `self.shape`): random per example at training time, the centre at evaluation.
    pub fn with_time_window(mut self, window: usize) -> Self {
        if window > 0 && window < self.shape[2] {
            self.window = Some(self.shape[2]);
            self.shape[2] = window;
        }
        self
    }

    /// The model sees `frames` consecutive frames of the stored clips (`T` axis of `self.shape`): from a random
    /// start per example at training time, the centre at evaluation.
    pub fn with_clip_window(mut self, frames: usize) -> Self {
        if frames > 0 && frames < self.shape[1] {
            self.clip = Some(self.shape[1]);
            self.shape[1] = frames;
        }
        self
    }

    /// The model sees a `side × side` crop of the stored frames: random after the task's scale jitter when
    /// training, the centre when evaluating.
    pub fn with_spatial_crop(mut self, side: usize) -> Self {
        if side > 0 && side <= self.shape[2].min(self.shape[3]) && (side, side) != (self.shape[2], self.shape[3]) && self.window.is_none() {
            self.crop = Some([self.shape[2], self.shape[3]]);
            self.shape[2] = side;
            self.shape[3] = side;
        }
        self
    }

    /// Examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Values per example.
    pub fn per(&self) -> usize {
        self.shape.iter().product()
    }

    /// Writes example `i` into `dst` (`per` floats). A stored shard was checksum-verified when opened, so a
    /// failing read here is a failing disk: it panics with the reason (the executor reports the node failed).
    fn fill_stored(&self, i: usize, dst: &mut [f32]) {
        match &self.src {
            Src::Dense(x) => dst.copy_from_slice(&x[i * dst.len()..(i + 1) * dst.len()]),
            Src::Stored { r, lut } => {
                let raw = r.raw(i).unwrap_or_else(|e| panic!("reading example {i} from the store: {e}"));
                match lut {
                    Some(lut) => {
                        let plane = dst.len() / lut.len();
                        for (k, (d, &v)) in dst.iter_mut().zip(&raw).enumerate() {
                            *d = lut[k / plane][v as usize];
                        }
                    }
                    None => {
                        for (d, c) in dst.iter_mut().zip(raw.chunks_exact(4)) {
                            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        }
                    }
                }
            }
            Src::Encoded { .. } => self.fill_encoded(i, dst, None),
        }
    }

    /// The shape of a stored example (before the time window, the clip window or the spatial crop).
    fn stored_shape(&self) -> [usize; 4] {
        let mut s = self.shape;
        if let Some(t) = self.clip {
            s[1] = t;
        }
        if let Some(t) = self.window {
            s[2] = t;
        }
        if let Some([h, w]) = self.crop {
            s[2] = h;
            s[3] = w;
        }
        s
    }

    /// Writes example `i` into `dst`: for evaluation (`train` = `None`) the centre window or crop; for
    /// training a random one drawn from the example's generator (with the task's scale jitter before a crop).
    fn fill(&self, i: usize, dst: &mut [f32], mut train: Option<(&Augment, &mut ChaCha8Rng)>) {
        if self.window.is_none() && self.crop.is_none() && self.clip.is_none() {
            return match &self.src {
                Src::Encoded { .. } => self.fill_encoded(i, dst, train),
                _ => self.fill_stored(i, dst),
            };
        }
        let mut ss = self.stored_shape();
        let mut full = vec![0f32; ss.iter().product()];
        self.fill_stored(i, &mut full);
        // The clip window first (its start is the example's first draw), then the spatial crop of its frames.
        if let Some(stored) = self.clip {
            let [c, _, h, w] = ss;
            let t = self.shape[1];
            let t0 = match train.as_mut() {
                Some((_, rng)) => rng.random_range(0..=stored - t),
                None => (stored - t) / 2,
            };
            // [C, T_stored, H, W] → [C, t, H, W]
            let mut part = vec![0f32; c * t * h * w];
            for ch in 0..c {
                part[ch * t * h * w..(ch + 1) * t * h * w]
                    .copy_from_slice(&full[(ch * stored + t0) * h * w..(ch * stored + t0 + t) * h * w]);
            }
            full = part;
            ss[1] = t;
            if self.crop.is_none() {
                dst.copy_from_slice(&full);
                return;
            }
        }
        let [c, t, h, w] = self.shape;
        if let Some(stored) = self.window {
            let s0 = match train {
                Some((_, rng)) => rng.random_range(0..=stored - h),
                None => (stored - h) / 2,
            };
            for p in 0..c * t {
                dst[p * h * w..(p + 1) * h * w].copy_from_slice(&full[(p * stored + s0) * w..(p * stored + s0 + h) * w]);
            }
        } else {
            let (jitter, rng) = match train {
                Some((a, rng)) => ((a.scale_jitter != [0.0, 0.0]).then_some((a.scale_jitter[0], a.scale_jitter[1])), Some(rng)),
                None => (None, None),
            };
            super::geometric::jitter_crop_to(&full, ss, h, w, jitter, rng, dst);
        }
    }

    /// Decodes encoded example `i` into `dst`: the whole image resized (`aug` = `None`), or an Inception crop
    /// and flip drawn from the given generator. An image that no longer decodes (it decoded at ingestion) is
    /// damaged storage: it panics with the reason.
    fn fill_encoded(&self, i: usize, dst: &mut [f32], aug: Option<(&Augment, &mut ChaCha8Rng)>) {
        let Src::Encoded { r, affine } = &self.src else { unreachable!("encoded source") };
        let bytes = r.raw(i).unwrap_or_else(|e| panic!("reading example {i} from the store: {e}"));
        let [_, _, h, w] = self.shape;
        let res = match aug {
            Some((a, rng)) => super::encoded::example(&bytes, a.inception_crop, a.flip, Some(rng), affine, dst, h, w),
            None => super::encoded::example(&bytes, false, false, None, affine, dst, h, w),
        };
        res.unwrap_or_else(|e| panic!("example {i}: {e}"));
    }

    /// Gathers a training batch, example by example with a generator each where the stored example is more
    /// than the model sees: encoded images get their Inception crop and flip from the original image, time
    /// windows start at random, spatial crops are random (after the task's scale jitter). What was applied is
    /// returned so the caller leaves it out of [`augment`]; other sources are gathered as by [`Self::gather`].
    pub fn gather_train(
        &self,
        idx: &[usize],
        classes: usize,
        aug: &Augment,
        seed: u64,
        task: usize,
        step: u64,
    ) -> (Vec<f32>, Vec<f32>, Applied) {
        use rayon::prelude::*;
        let encoded = matches!(self.src, Src::Encoded { .. });
        if !encoded && self.window.is_none() && self.crop.is_none() && self.clip.is_none() {
            let (x, t) = self.gather(idx, classes);
            return (x, t, Applied::default());
        }
        let per = self.per();
        let mut x = vec![0f32; idx.len() * per];
        x.par_chunks_exact_mut(per).zip(idx).enumerate().for_each(|(b, (d, &i))| {
            let mut rng = super::encoded::example_rng(seed, task, step, b);
            self.fill(i, d, Some((aug, &mut rng)));
        });
        (x, self.targets(idx, classes), Applied { crop_flip: encoded, scale_jitter: self.crop.is_some() })
    }

    fn targets(&self, idx: &[usize], classes: usize) -> Vec<f32> {
        let mut t = vec![0f32; idx.len() * classes];
        for (b, &i) in idx.iter().enumerate() {
            match &self.y {
                Labels::Single(v) => t[b * classes + v[i] as usize] = 1.0,
                Labels::Multi(v, k) => (0..*k).for_each(|j| t[b * classes + j] = v[i * k + j] as f32),
            }
        }
        t
    }

    /// Gathers examples `idx` → (x `[B, C, T, H, W]`, targets `[B, K]`); stored examples are read in parallel.
    pub fn gather(&self, idx: &[usize], classes: usize) -> (Vec<f32>, Vec<f32>) {
        let per = self.per();
        let mut x = vec![0f32; idx.len() * per];
        match &self.src {
            Src::Dense(_) => x.chunks_exact_mut(per.max(1)).zip(idx).for_each(|(d, &i)| self.fill(i, d, None)),
            Src::Stored { .. } | Src::Encoded { .. } => {
                use rayon::prelude::*;
                x.par_chunks_exact_mut(per.max(1)).zip(idx).for_each(|(d, &i)| self.fill(i, d, None))
            }
        }
        (x, self.targets(idx, classes))
    }
}

/// Augmentation of one task (all off by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Images/video: random translation by up to this many pixels (zero padding), as a random crop.
    pub crop_pad: usize,
    /// Images/video: random horizontal flip.
    pub flip: bool,
    /// Audio: number of SpecAugment frequency masks.
    pub freq_masks: usize,
    /// Audio: max width of a frequency mask (bins).
    pub freq_mask_width: usize,
    /// Audio: number of SpecAugment time masks.
    pub time_masks: usize,
    /// Audio: max width of a time mask (frames).
    pub time_mask_width: usize,
    /// Mixup α (0 = off): one λ ~ Beta(α, α) per batch, example i mixed with B−1−i (the paper's recipe).
    pub mixup: f64,
    /// Images: Inception crop (TF's sampler: area 5–100 %, ratio 3/4–4/3, 100 attempts) resized back to the
    /// stored size, before the flip (the paper's image recipe; here from the stored image).
    #[serde(skip_serializing_if = "is_false")]
    pub inception_crop: bool,
    /// Video: scale jitter `[lo, hi]` (height and width independently) then a random crop of the stored size
    /// (DMVR, the paper: `[0.9, 1.33]`); `[0, 0]` = off.
    #[serde(skip_serializing_if = "is_zero2")]
    pub scale_jitter: [f64; 2],
    /// Video: probability of DMVR's colour augmentation (brightness, saturation, contrast, hue; the paper: 0.8).
    #[serde(skip_serializing_if = "is_zero")]
    pub color: f64,
    /// Video: probability of greyscale (the paper: 0.1).
    #[serde(skip_serializing_if = "is_zero")]
    pub grayscale: f64,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(f: &f64) -> bool {
    *f == 0.0
}
fn is_zero2(f: &[f64; 2]) -> bool {
    f[0] == 0.0 && f[1] == 0.0
}

impl Augment {
    /// Checks ranges: probabilities in [0, 1], a scale jitter range with 0 < lo ≤ hi.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [("color", self.color), ("grayscale", self.grayscale)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("`{name}` is a probability, got {p}"));
            }
        }
        let [lo, hi] = self.scale_jitter;
        let ok = lo > 0.0 && lo <= hi && hi <= 10.0;
        if !is_zero2(&self.scale_jitter) && !ok {
            return Err(format!("`scale_jitter` must be [lo, hi] with 0 < lo ≤ hi ≤ 10, got [{lo}, {hi}]"));
        }
        if !(0.0..=100.0).contains(&self.mixup) {
            return Err(format!("`mixup` α must be in [0, 100], got {}", self.mixup));
        }
        Ok(())
    }
}

/// A task's stream position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    /// Epoch.
    pub epoch: u64,
    /// Position in the epoch's permutation.
    pub pos: usize,
}

fn perm(n: usize, seed: u64, task: usize, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch.wrapping_mul(0xbf58_476d_1ce4_e5b9),
    ));
    idx
}

/// The next `batch` indices of a stream.
pub fn next_indices(cur: &mut Cursor, n: usize, batch: usize, seed: u64, task: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut p = perm(n, seed, task, cur.epoch);
    while out.len() < batch {
        if cur.pos >= n {
            cur.epoch += 1;
            cur.pos = 0;
            p = perm(n, seed, task, cur.epoch);
        }
        out.push(p[cur.pos]);
        cur.pos += 1;
    }
    out
}

/// The augmentation generator's seed for `(seed, task, step)`: each value mixed in by splitmix64's finaliser, so
/// that no two triples share a stream. (It was `(seed + c) ^ (task << 40) ^ step`: seed 1 at step s ^ 3 drew
/// what seed 0 drew at step s, so seed replicates shared their augmentation draws, reordered.)
pub fn augment_seed(seed: u64, task: usize, step: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(mix(seed ^ 0x5eed) ^ task as u64) ^ step)
}

/// Applies `aug` to a batch `x [B, C, T, H, W]` with targets `[B, K]`, noise from `(seed, task, step)`.
#[allow(clippy::too_many_arguments)]
pub fn augment(aug: &Augment, x: &mut [f32], t: &mut [f32], shape: [usize; 4], classes: usize, seed: u64, task: usize, step: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(augment_seed(seed, task, step));
    let per: usize = shape.iter().product();
    let b = x.len() / per;
    let [c, tt, h, w] = shape;
    for i in 0..b {
        let ex = &mut x[i * per..(i + 1) * per];
        // New options draw from the generator only when on, so runs without them keep their bits.
        if aug.inception_crop {
            super::geometric::inception_crop(ex, shape, &mut rng);
        }
        if !is_zero2(&aug.scale_jitter) {
            super::geometric::scale_jitter_crop(ex, shape, (aug.scale_jitter[0], aug.scale_jitter[1]), &mut rng);
        }
        if aug.crop_pad > 0 || aug.flip {
            let p = aug.crop_pad as i64;
            let (dy, dx) = if p > 0 { (rng.random_range(-p..=p), rng.random_range(-p..=p)) } else { (0, 0) };
            let flip = aug.flip && rng.random_bool(0.5);
            let src = ex.to_vec();
            for plane in 0..c * tt {
                for y in 0..h {
                    for xx in 0..w {
                        let sy = y as i64 + dy;
                        let sx0 = if flip { w - 1 - xx } else { xx } as i64 + dx;
                        let v = if sy < 0 || sx0 < 0 || sy >= h as i64 || sx0 >= w as i64 {
                            0.0
                        } else {
                            src[(plane * h + sy as usize) * w + sx0 as usize]
                        };
                        ex[(plane * h + y) * w + xx] = v;
                    }
                }
            }
        }
        if aug.color > 0.0 && rng.random_bool(aug.color) {
            super::geometric::color(ex, shape, &mut rng);
        }
        if aug.grayscale > 0.0 && rng.random_bool(aug.grayscale) {
            super::geometric::grayscale(ex, shape);
        }
        // SpecAugment on [C, 1, time(h), mel(w)]: masks set to 0 in the stored scale (as lingvo's). That is the
        // mean only when audio_prep normalised with `normalize = "train"`; with `normalize = "none"` (the
        // default, and the paper profile) log-mel values are mostly negative and 0 is a loud band, not a
        // neutral one (docs/paper.md, deviations).
        for _ in 0..aug.freq_masks {
            let wd = rng.random_range(0..=aug.freq_mask_width.min(w));
            let f0 = rng.random_range(0..=w - wd);
            for plane in 0..c * tt {
                for y in 0..h {
                    ex[(plane * h + y) * w + f0..(plane * h + y) * w + f0 + wd].iter_mut().for_each(|v| *v = 0.0);
                }
            }
        }
        for _ in 0..aug.time_masks {
            let wd = rng.random_range(0..=aug.time_mask_width.min(h));
            let t0 = rng.random_range(0..=h - wd);
            for plane in 0..c * tt {
                ex[(plane * h + t0) * w..(plane * h + t0 + wd) * w].iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
    if aug.mixup > 0.0 && b > 1 {
        let lam = Beta::new(aug.mixup, aug.mixup).map(|d| d.sample(&mut rng) as f32).unwrap_or(1.0);
        let (x0, t0) = (x.to_vec(), t.to_vec());
        for i in 0..b {
            let j = b - 1 - i;
            for k in 0..per {
                x[i * per + k] = lam * x0[i * per + k] + (1.0 - lam) * x0[j * per + k];
            }
            for k in 0..classes {
                t[i * classes + k] = lam * t0[i * classes + k] + (1.0 - lam) * t0[j * classes + k];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_replicates_draw_their_own_augmentation() {
        use std::collections::BTreeSet;
        // Seeds 0–2 × 2 tasks × 4,096 steps: no two share a generator (the old XOR scheme made seed 1 at step s ^ 3
        // repeat seed 0 at step s).
        let mut seen = BTreeSet::new();
        for seed in 0..3u64 {
            for task in 0..2 {
                for step in 0..4096u64 {
                    assert!(seen.insert(augment_seed(seed, task, step)), "({seed}, {task}, {step})");
                }
            }
        }
    }

    #[test]
    fn time_windows_are_central_for_eval_and_seeded_for_training() {
        // Two examples [1, 1, 10, 2]: value = 100·example + row.
        let x: Vec<f32> = (0..2).flat_map(|i| (0..10).flat_map(move |r| [100.0 * i as f32 + r as f32; 2])).collect();
        let s = SplitData::dense(x, [1, 1, 10, 2], Labels::Single(vec![0, 1])).with_time_window(4);
        assert_eq!(s.shape, [1, 1, 4, 2]);
        let (x, _) = s.gather(&[1], 2);
        assert_eq!(x, [103.0, 103.0, 104.0, 104.0, 105.0, 105.0, 106.0, 106.0], "the centre rows 3..7");
        let aug = Augment::default();
        let starts: Vec<f32> = (0..20).map(|step| s.gather_train(&[0], 2, &aug, 1, 0, step).0[0]).collect();
        assert!(starts.iter().all(|&v| (0.0..=6.0).contains(&v)));
        assert!(starts.iter().any(|&v| v != starts[0]), "random starts: {starts:?}");
        assert_eq!(s.gather_train(&[0], 2, &aug, 1, 0, 5).0, s.gather_train(&[0], 2, &aug, 1, 0, 5).0);
        let (x, _, _) = s.gather_train(&[0], 2, &aug, 1, 0, 3);
        assert_eq!(x[2], x[0] + 1.0, "consecutive rows");
    }
    #[test]
    fn clip_windows_take_consecutive_frames_then_the_crop() {
        // One example [2, 10, 4, 4] (channels, frames, H, W): value = 100·channel + frame + (y·4 + x) / 100.
        let x: Vec<f32> =
            (0..2).flat_map(|c| (0..10).flat_map(move |f| (0..16).map(move |p| 100.0 * c as f32 + f as f32 + p as f32 / 100.0))).collect();
        let s = SplitData::dense(x.clone(), [2, 10, 4, 4], Labels::Single(vec![0])).with_clip_window(4);
        assert_eq!(s.shape, [2, 4, 4, 4]);
        let frame = |x: &[f32], c: usize, t: usize| x[(c * 4 + t) * 16].floor() - 100.0 * c as f32;
        let (e, _) = s.gather(&[0], 1);
        assert_eq!((0..4).map(|t| frame(&e, 0, t)).collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0], "the centre frames 3..7");
        assert_eq!((0..4).map(|t| frame(&e, 1, t)).collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0], "the same in every channel");
        let aug = Augment::default();
        let starts: Vec<f32> = (0..30).map(|step| frame(&s.gather_train(&[0], 1, &aug, 1, 0, step).0, 0, 0)).collect();
        assert!(starts.iter().all(|&v| (0.0..=6.0).contains(&v)));
        assert!(starts.iter().any(|&v| v != starts[0]), "random starts: {starts:?}");
        assert_eq!(s.gather_train(&[0], 1, &aug, 1, 0, 5).0, s.gather_train(&[0], 1, &aug, 1, 0, 5).0, "seeded");
        for step in 0..10 {
            let (e, _, applied) = s.gather_train(&[0], 1, &aug, 1, 0, step);
            let t0 = frame(&e, 0, 0);
            assert!((0..4).all(|t| frame(&e, 0, t) == t0 + t as f32 && frame(&e, 1, t) == t0 + t as f32), "consecutive, aligned");
            assert!(!applied.scale_jitter);
        }
        // With a spatial crop as well: 4 frames of 2² crops; the centre crop at evaluation.
        let s = SplitData::dense(x, [2, 10, 4, 4], Labels::Single(vec![0])).with_clip_window(4).with_spatial_crop(2);
        assert_eq!(s.shape, [2, 4, 2, 2]);
        let (e, _) = s.gather(&[0], 1);
        assert_eq!(e.len(), 2 * 4 * 4);
        let px = |p: f32| (p.fract() * 100.0).round();
        assert_eq!([px(e[0]), px(e[1]), px(e[2]), px(e[3])], [5.0, 6.0, 9.0, 10.0], "pixels (1,1) (1,2) (2,1) (2,2)");
        assert_eq!(e[4].floor(), 4.0, "frame 4 next");
        let (e, _, applied) = s.gather_train(&[0], 1, &Augment { scale_jitter: [0.9, 1.33], ..aug }, 1, 0, 2);
        assert!(applied.scale_jitter && e.len() == 32);
        let t0 = e[0].floor();
        assert!((0..4).all(|t| e[t * 4].floor() == t0 + t as f32), "consecutive frames under the crop");
    }

    #[test]
    fn streams_are_resumable() {
        let mut a = Cursor::default();
        let first: Vec<usize> = (0..5).flat_map(|_| next_indices(&mut a, 7, 3, 1, 0)).collect();
        let mut b = Cursor::default();
        let _ = next_indices(&mut b, 7, 3, 1, 0);
        let saved = b;
        let mut c = saved;
        let rest: Vec<usize> = (0..4).flat_map(|_| next_indices(&mut c, 7, 3, 1, 0)).collect();
        assert_eq!(&first[3..], &rest[..]);
        let mut counts = [0; 7];
        first[..14].iter().for_each(|&i| counts[i] += 1);
        assert!(counts.iter().all(|&c| c == 2), "each example once per epoch");
    }
}
