//! Video data: clips generated deterministically from real images (the embedded video tasks). The reader for
//! folders of frames (`class/clip/00001.jpg`) is [`super::frames`].
//!
//! - *moving digits*: a digit bounces on a canvas; label = the digit.
//! - *fashion motion*: a Fashion-MNIST item moves in one of 8 ways (left, right, up, down, rotate cw, rotate
//!   ccw, zoom in, zoom out) from a random start; label = the motion, so no single frame carries the label.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Names of the 8 fashion motions.
pub const MOTIONS: [&str; 8] = ["left", "right", "up", "down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out"];

/// Generated clips `[N, T, S, S]` (grey u8).
#[derive(Debug, Clone, Default)]
pub struct Clips {
    /// Frames per clip.
    pub frames: usize,
    /// Canvas side.
    pub size: usize,
    /// Pixels.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<i64>,
}

/// Bilinear sample of a grey `h×w` image at (y, x); 0 outside.
fn sample(img: &[u8], h: usize, w: usize, y: f32, x: f32) -> f32 {
    if y < -1.0 || x < -1.0 || y > h as f32 || x > w as f32 {
        return 0.0;
    }
    let (y0, x0) = (y.floor() as isize, x.floor() as isize);
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let at = |yy: isize, xx: isize| {
        if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
            0.0
        } else {
            img[yy as usize * w + xx as usize] as f32
        }
    };
    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))
}

/// Draws `obj` (h×w) into `canvas` (s×s) centred at (cy, cx), rotated by `angle` rad, scaled so the object
/// spans `obj_size · scale` pixels; max-composited.
#[allow(clippy::too_many_arguments)]
fn draw(canvas: &mut [u8], s: usize, obj: &[u8], h: usize, w: usize, obj_size: f32, cy: f32, cx: f32, angle: f32, scale: f32) {
    let k = (h as f32 / obj_size) / scale; // canvas px → source px
    let (sin, cos) = angle.sin_cos();
    for y in 0..s {
        for x in 0..s {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let ry = cos * dy + sin * dx;
            let rx = -sin * dy + cos * dx;
            let v = sample(obj, h, w, ry * k + h as f32 / 2.0 - 0.5, rx * k + w as f32 / 2.0 - 0.5);
            let p = &mut canvas[y * s + x];
            *p = (*p).max(v.round().clamp(0.0, 255.0) as u8);
        }
    }
}

/// Moving digits: each source image `[h, w]` becomes one clip of `frames` frames on an `size²` canvas; the
/// digit (drawn at `size/2`) bounces with a random velocity.
pub fn moving_digits(src: &[u8], h: usize, w: usize, labels: &[i64], frames: usize, size: usize, seed: u64) -> Clips {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let obj = size as f32 / 2.0;
    let span = size as f32 - obj;
    let mut out = Clips { frames, size, pixels: vec![0; labels.len() * frames * size * size], labels: labels.to_vec() };
    for (i, clip) in out.pixels.chunks_exact_mut(frames * size * size).enumerate() {
        let img = &src[i * h * w..(i + 1) * h * w];
        let (mut y, mut x) = (rng.random_range(0.0..span), rng.random_range(0.0..span));
        let speed = size as f32 / 10.0;
        let (mut vy, mut vx) = (rng.random_range(-speed..speed), rng.random_range(-speed..speed));
        for f in 0..frames {
            draw(&mut clip[f * size * size..(f + 1) * size * size], size, img, h, w, obj, y + obj / 2.0, x + obj / 2.0, 0.0, 1.0);
            y += vy;
            x += vx;
            if y < 0.0 || y > span {
                vy = -vy;
                y = y.clamp(0.0, span);
            }
            if x < 0.0 || x > span {
                vx = -vx;
                x = x.clamp(0.0, span);
            }
        }
    }
    out
}

/// Fashion motion: each source image becomes one clip; the label is one of [`MOTIONS`], drawn uniformly.
pub fn fashion_motion(src: &[u8], h: usize, w: usize, n: usize, frames: usize, size: usize, seed: u64) -> Clips {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let obj = size as f32 / 2.0;
    let mut out = Clips { frames, size, pixels: vec![0; n * frames * size * size], labels: vec![0; n] };
    let travel = size as f32 - obj; // total displacement of a translation
    for (i, clip) in out.pixels.chunks_exact_mut(frames * size * size).enumerate() {
        let img = &src[i * h * w..(i + 1) * h * w];
        let m = rng.random_range(0..MOTIONS.len());
        out.labels[i] = m as i64;
        let mid = size as f32 / 2.0;
        let jitter = |rng: &mut ChaCha8Rng| rng.random_range(-travel / 4.0..travel / 4.0);
        let (jy, jx) = (jitter(&mut rng), jitter(&mut rng));
        let a0 = rng.random_range(-0.5f32..0.5);
        for f in 0..frames {
            let p = if frames > 1 { f as f32 / (frames - 1) as f32 } else { 0.0 }; // 0 → 1
            let (lo, hi) = (obj / 2.0, size as f32 - obj / 2.0);
            let (cy, cx, ang, sc) = match MOTIONS[m] {
                "left" => (mid + jy, hi - p * (hi - lo), a0, 1.0),
                "right" => (mid + jy, lo + p * (hi - lo), a0, 1.0),
                "up" => (hi - p * (hi - lo), mid + jx, a0, 1.0),
                "down" => (lo + p * (hi - lo), mid + jx, a0, 1.0),
                "rotate_cw" => (mid + jy, mid + jx, a0 + p * 1.6, 1.0),
                "rotate_ccw" => (mid + jy, mid + jx, a0 - p * 1.6, 1.0),
                "zoom_in" => (mid + jy, mid + jx, a0, 0.6 + 0.8 * p),
                _ => (mid + jy, mid + jx, a0, 1.4 - 0.8 * p),
            };
            draw(&mut clip[f * size * size..(f + 1) * size * size], size, img, h, w, obj, cy, cx, ang, sc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn deterministic_and_moving() {
        let img: Vec<u8> = (0..64).map(|i| if i % 9 == 0 { 255 } else { 0 }).collect();
        let a = fashion_motion(&img, 8, 8, 1, 4, 16, 7);
        let b = fashion_motion(&img, 8, 8, 1, 4, 16, 7);
        assert_eq!(a.pixels, b.pixels);
        let f0 = &a.pixels[..256];
        let f3 = &a.pixels[3 * 256..];
        assert_ne!(f0, f3, "frames differ: the item moves");
        let d = moving_digits(&img, 8, 8, &[3], 4, 16, 1);
        assert_eq!(d.labels, [3]);
        assert!(d.pixels.iter().any(|&p| p > 0));
    }
}
