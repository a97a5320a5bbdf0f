//! The paper's image and video augmentations, applied to one example `[C, T, H, W]` of a stored tensor at
//! training time (values in [-1, 1]), with the reference code's parameters:
//!
//! - [`inception_crop`]: TF's `sample_distorted_bounding_box` (area 5–100 %, aspect ratio U(0.75, 1.33), up to
//!   100 attempts, the whole image when all fail) followed by a bilinear resize back to H × W (half-pixel
//!   centres, no antialiasing), as big_vision's `inception_crop`. Here the window is cut from the stored
//!   (already resized) image, not from the original JPEG.
//! - [`scale_jitter_crop`]: DMVR's scale jitter (height and width scaled independently by U(lo, hi)) followed by a
//!   random H × W crop; the same window for every frame (zeros where the scaled frame is smaller).
//! - [`color`]: DMVR's `color_default_augm` on [0, 1] values: brightness ±32/255, saturation and contrast
//!   U(0.6, 1.4), hue ±0.2, clipped; [`grayscale`]: ITU-R 601 luma tiled to the three channels.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A crop window `(y, x, h, w)` drawn exactly as TF's `sample_distorted_bounding_box` (with
/// `min_object_covered = 0`, so every valid window is accepted): per attempt an aspect ratio
/// `r ~ U[ratio.0, ratio.1)`, then `GenerateRandomCrop` in f32 with `lrintf` rounding (ties to even); the
/// whole image when every attempt fails.
pub fn sample_window(
    rng: &mut ChaCha8Rng,
    h: usize,
    w: usize,
    area: (f64, f64),
    ratio: (f64, f64),
    attempts: usize,
) -> (usize, usize, usize, usize) {
    for _ in 0..attempts {
        let r = rng.random::<f32>() * (ratio.1 - ratio.0) as f32 + ratio.0 as f32;
        if let Some(win) = generate_random_crop(rng, w as i64, h as i64, area.0 as f32, area.1 as f32, r) {
            return win;
        }
    }
    (0, 0, h, w)
}

/// TF's `GenerateRandomCrop` (core/kernels/image/sample_distorted_bounding_box_op.cc), line for line.
fn generate_random_crop(
    rng: &mut ChaCha8Rng,
    ow: i64,
    oh: i64,
    min_rel: f32,
    max_rel: f32,
    r: f32,
) -> Option<(usize, usize, usize, usize)> {
    let lrint = |v: f32| v.round_ties_even() as i64;
    if max_rel <= 0.0 || r <= 0.0 || ow <= 0 || oh <= 0 || min_rel > max_rel {
        return None;
    }
    let min_area = min_rel * ow as f32 * oh as f32;
    let max_area = max_rel * ow as f32 * oh as f32;
    let mut height = lrint((min_area / r).sqrt());
    let mut max_height = lrint((max_area / r).sqrt());
    if lrint(max_height as f32 * r) > ow {
        const EPS: f32 = 0.0000001;
        // C++ computes this in double (0.5 is a double literal), then truncates.
        max_height = ((ow as f64 + 0.5 - EPS as f64) / r as f64) as i64;
        if lrint(max_height as f32 * r) > ow {
            max_height -= 1;
        }
    }
    max_height = max_height.min(oh);
    if height >= max_height {
        height = max_height;
    }
    if height < max_height {
        height += rng.random_range(0..(max_height - height + 1));
    }
    let mut width = lrint(height as f32 * r);
    let mut a = (width * height) as f32;
    if a < min_area {
        height += 1;
        width = lrint(height as f32 * r);
        a = (width * height) as f32;
    }
    if a < min_area {
        return None;
    }
    if a > max_area {
        height -= 1;
        width = lrint(height as f32 * r);
        a = (width * height) as f32;
    }
    if a < min_area || a > max_area || width > ow || height > oh || width <= 0 || height <= 0 {
        return None;
    }
    let y = if height < oh { rng.random_range(0..oh - height) } else { 0 };
    let x = if width < ow { rng.random_range(0..ow - width) } else { 0 };
    Some((y as usize, x as usize, height as usize, width as usize))
}

/// Bilinear sample of plane `p` (`h × w`) at real coordinates; `None` outside the plane.
fn bilinear(p: &[f32], h: usize, w: usize, fy: f64, fx: f64) -> f32 {
    let fy = fy.clamp(0.0, (h - 1) as f64);
    let fx = fx.clamp(0.0, (w - 1) as f64);
    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (wy, wx) = ((fy - y0 as f64) as f32, (fx - x0 as f64) as f32);
    let at = |y: usize, x: usize| p[y * w + x];
    (1.0 - wy) * ((1.0 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1.0 - wx) * at(y1, x0) + wx * at(y1, x1))
}

/// Replaces each `h × w` plane of `ex` by the window `(y, x, ch, cw)` resized bilinearly to `h × w`.
fn crop_resize(ex: &mut [f32], h: usize, w: usize, (y, x, ch, cw): (usize, usize, usize, usize)) {
    if (y, x, ch, cw) == (0, 0, h, w) {
        return;
    }
    let (sy, sx) = (ch as f64 / h as f64, cw as f64 / w as f64);
    for plane in ex.chunks_mut(h * w) {
        let src = plane.to_vec();
        for oy in 0..h {
            let fy = y as f64 + (oy as f64 + 0.5) * sy - 0.5;
            for ox in 0..w {
                let fx = x as f64 + (ox as f64 + 0.5) * sx - 0.5;
                plane[oy * w + ox] = bilinear(&src, h, w, fy, fx);
            }
        }
    }
}

/// Inception crop of one example (all channels and frames share the window).
pub fn inception_crop(ex: &mut [f32], shape: [usize; 4], rng: &mut ChaCha8Rng) {
    let [_, _, h, w] = shape;
    let win = sample_window(rng, h, w, (0.05, 1.0), (0.75, 1.33), 100);
    crop_resize(ex, h, w, win);
}

/// Scale jitter by independent factors U(lo, hi) for height and width, then a random `h × w` crop.
pub fn scale_jitter_crop(ex: &mut [f32], shape: [usize; 4], (lo, hi): (f64, f64), rng: &mut ChaCha8Rng) {
    let [_, _, h, w] = shape;
    let (fh, fw) = (rng.random_range(lo..=hi), rng.random_range(lo..=hi));
    let (nh, nw) = (((h as f64) * fh).round() as i64, ((w as f64) * fw).round() as i64);
    let off = |n: i64, o: i64, rng: &mut ChaCha8Rng| {
        let d = n - o;
        if d >= 0 {
            rng.random_range(0..=d)
        } else {
            rng.random_range(d..=0)
        }
    };
    let (oy, ox) = (off(nh, h as i64, rng), off(nw, w as i64, rng));
    let (sy, sx) = (h as f64 / nh as f64, w as f64 / nw as f64);
    for plane in ex.chunks_mut(h * w) {
        let src = plane.to_vec();
        for y in 0..h {
            let ry = y as i64 + oy;
            for x in 0..w {
                let rx = x as i64 + ox;
                plane[y * w + x] = if ry < 0 || rx < 0 || ry >= nh || rx >= nw {
                    0.0
                } else {
                    bilinear(&src, h, w, (ry as f64 + 0.5) * sy - 0.5, (rx as f64 + 0.5) * sx - 0.5)
                };
            }
        }
    }
}

/// Scale jitter of `src` `[C, T, H, W]` (height and width scaled by independent factors U(lo, hi); `None` = 1),
/// then an `oh × ow` window at a random offset (`rng`) or centred (`rng` = `None`), written to `out`
/// `[C, T, oh, ow]` (zeros where the window leaves the scaled frame): DMVR's training and evaluation crops.
pub fn jitter_crop_to(
    src: &[f32],
    [c, t, h, w]: [usize; 4],
    oh: usize,
    ow: usize,
    jitter: Option<(f64, f64)>,
    mut rng: Option<&mut ChaCha8Rng>,
    out: &mut [f32],
) {
    let (fh, fw) = match (jitter, rng.as_deref_mut()) {
        (Some((lo, hi)), Some(r)) => (r.random_range(lo..=hi), r.random_range(lo..=hi)),
        _ => (1.0, 1.0),
    };
    let (nh, nw) = (((h as f64) * fh).round() as i64, ((w as f64) * fw).round() as i64);
    let mut off = |n: i64, o: i64| {
        let d = n - o;
        match rng.as_deref_mut() {
            Some(r) if d >= 0 => r.random_range(0..=d),
            Some(r) => r.random_range(d..=0),
            None => d / 2,
        }
    };
    let (oy, ox) = (off(nh, oh as i64), off(nw, ow as i64));
    let (sy, sx) = (h as f64 / nh as f64, w as f64 / nw as f64);
    for p in 0..c * t {
        let plane = &src[p * h * w..(p + 1) * h * w];
        for y in 0..oh {
            let ry = y as i64 + oy;
            for x in 0..ow {
                let rx = x as i64 + ox;
                out[(p * oh + y) * ow + x] = if ry < 0 || rx < 0 || ry >= nh || rx >= nw {
                    0.0
                } else {
                    bilinear(plane, h, w, (ry as f64 + 0.5) * sy - 0.5, (rx as f64 + 0.5) * sx - 0.5)
                };
            }
        }
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    let s = if max > 0.0 { d / max } else { 0.0 };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - (h6 % 2.0 - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    (r + m, g + m, b + m)
}

/// DMVR's colour augmentation of one RGB example `[3, T, H, W]` in [-1, 1] (one draw for the whole clip):
/// brightness, saturation, contrast (per-frame channel means), hue, then clipping.
pub fn color(ex: &mut [f32], shape: [usize; 4], rng: &mut ChaCha8Rng) {
    let [c, t, h, w] = shape;
    if c != 3 {
        return;
    }
    let bright = rng.random_range(-32.0 / 255.0..=32.0 / 255.0) as f32;
    let sat = rng.random_range(0.6..=1.4) as f32;
    let con = rng.random_range(0.6..=1.4) as f32;
    let hue = rng.random_range(-0.2..=0.2) as f32;
    let hw = h * w;
    let idx = |ch: usize, f: usize, i: usize| (ch * t + f) * hw + i;
    for f in 0..t {
        // To [0, 1], brightness and saturation per pixel.
        let mut px: Vec<[f32; 3]> = (0..hw)
            .map(|i| {
                let v = |ch| (ex[idx(ch, f, i)] + 1.0) * 0.5 + bright;
                let (hh, s, vv) = rgb_to_hsv(v(0), v(1), v(2));
                let (r, g, b) = hsv_to_rgb(hh, (s * sat).clamp(0.0, 1.0), vv);
                [r, g, b]
            })
            .collect();
        // Contrast around each channel's mean over the frame.
        for ch in 0..3 {
            let mean = px.iter().map(|p| p[ch]).sum::<f32>() / hw as f32;
            px.iter_mut().for_each(|p| p[ch] = (p[ch] - mean) * con + mean);
        }
        for (i, p) in px.iter().enumerate() {
            let (hh, s, vv) = rgb_to_hsv(p[0], p[1], p[2]);
            let (r, g, b) = hsv_to_rgb(hh + hue, s, vv);
            for (ch, v) in [r, g, b].into_iter().enumerate() {
                ex[idx(ch, f, i)] = v.clamp(0.0, 1.0) * 2.0 - 1.0;
            }
        }
    }
}

/// Greyscale (luma 0.2989 R + 0.5870 G + 0.1140 B, TF's weights) tiled to the three channels.
pub fn grayscale(ex: &mut [f32], shape: [usize; 4]) {
    let [c, t, h, w] = shape;
    if c != 3 {
        return;
    }
    let n = t * h * w;
    for i in 0..n {
        let y = 0.2989 * ex[i] + 0.5870 * ex[n + i] + 0.1140 * ex[2 * n + i];
        ex[i] = y;
        ex[n + i] = y;
        ex[2 * n + i] = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_is_a_copy_and_random_crops_are_sub_blocks() {
        let src: Vec<f32> = (0..2 * 4 * 4).map(|v| v as f32).collect(); // [2, 1, 4, 4]
        let mut out = vec![0f32; 2 * 2 * 2];
        jitter_crop_to(&src, [2, 1, 4, 4], 2, 2, None, None, &mut out);
        assert_eq!(out, [5.0, 6.0, 9.0, 10.0, 21.0, 22.0, 25.0, 26.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut corners = std::collections::BTreeSet::new();
        for _ in 0..60 {
            jitter_crop_to(&src, [2, 1, 4, 4], 2, 2, None, Some(&mut rng), &mut out);
            let a = out[0];
            assert_eq!([out[1], out[2], out[3], out[4]], [a + 1.0, a + 4.0, a + 5.0, a + 16.0], "{out:?}");
            corners.insert(a as i64);
        }
        assert_eq!(corners.len(), 9, "every 2 × 2 window of a 4 × 4 frame: {corners:?}");
        // Jittered crops stay within the source values (bilinear) or are padding zeros.
        for _ in 0..20 {
            jitter_crop_to(&src, [2, 1, 4, 4], 2, 2, Some((0.9, 1.33)), Some(&mut rng), &mut out);
            assert!(out.iter().all(|&v| (0.0..=31.0).contains(&v)));
        }
    }
    use rand::SeedableRng;

    #[test]
    fn windows_respect_area_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let (y, x, h, w) = sample_window(&mut rng, 384, 384, (0.05, 1.0), (0.75, 1.33), 100);
            let a = (h * w) as f64 / (384.0 * 384.0);
            assert!((0.05..=1.0).contains(&a), "{a}");
            assert!(y + h <= 384 && x + w <= 384);
            let r = w as f64 / h as f64;
            assert!((0.70..=1.40).contains(&r), "{r}");
        }
        // Impossible constraints: the whole image.
        assert_eq!(sample_window(&mut rng, 4, 4, (2.0, 3.0), (1.0, 1.0), 100), (0, 0, 4, 4));
    }

    #[test]
    fn full_window_and_unit_jitter_are_identity() {
        let mut ex: Vec<f32> = (0..2 * 8 * 8).map(|i| (i as f32 / 64.0) - 1.0).collect();
        let orig = ex.clone();
        crop_resize(&mut ex, 8, 8, (0, 0, 8, 8));
        assert_eq!(ex, orig);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        scale_jitter_crop(&mut ex, [1, 2, 8, 8], (1.0, 1.0), &mut rng);
        assert!(ex.iter().zip(&orig).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn colour_stays_in_range_and_grey_equalises_channels() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut ex: Vec<f32> = (0..3 * 2 * 4 * 4).map(|i| ((i * 37 % 200) as f32 / 100.0) - 1.0).collect();
        color(&mut ex, [3, 2, 4, 4], &mut rng);
        assert!(ex.iter().all(|v| (-1.0..=1.0).contains(v)));
        grayscale(&mut ex, [3, 2, 4, 4]);
        let n = 2 * 16;
        assert!((0..n).all(|i| ex[i] == ex[n + i] && ex[i] == ex[2 * n + i]));
        // Round trip HSV.
        let (h, s, v) = rgb_to_hsv(0.2, 0.5, 0.9);
        let (r, g, b) = hsv_to_rgb(h, s, v);
        assert!((r - 0.2).abs() < 1e-5 && (g - 0.5).abs() < 1e-5 && (b - 0.9).abs() < 1e-5);
    }
}
