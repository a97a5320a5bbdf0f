//! Encoded images (the JPEG/PNG bytes as the dataset shipped them) turned into model inputs at batch time,
//! as the paper's input pipeline does: for training, TF's Inception crop drawn on the original image, a
//! bilinear resize of the window to `H × W` (half-pixel centres, no antialiasing, as `tf.image.resize`) and a
//! horizontal flip with p = 0.5; for evaluation, the whole image resized to `H × W`. Values go straight to
//! planar floats through the task's value map (`[-1, 1]` for the paper).
//!
//! Every random draw of example `b` of a batch comes from its own generator seeded by
//! `(seed, task, step, b)`, so batches do not depend on the thread count and a resumed run sees the same ones.

use super::geometric::sample_window;
pub use crate::data::images::{decode_rgb as decode, Rgb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator of example `b` of the batch at `step` of `task`.
pub fn example_rng(seed: u64, task: usize, step: u64, b: usize) -> ChaCha8Rng {
    let mut z = seed ^ 0x1ce9_7c0d ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= (b as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
    ChaCha8Rng::seed_from_u64(z)
}

/// Resamples window `(y, x, wh, ww)` of `img` to `out` `[3, H, W]` (bilinear, half-pixel centres, optionally
/// mirrored), mapping channel `c`'s value `v` to `v · affine[c].0 + affine[c].1`.
pub fn window_to_planes(
    img: &Rgb,
    (y, x, wh, ww): (usize, usize, usize, usize),
    flip: bool,
    affine: &[(f32, f32); 3],
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    let (sy, sx) = (wh as f32 / oh as f32, ww as f32 / ow as f32);
    // Samples stay inside the window, as when the crop is cut out first and then resized.
    let (miny, minx) = (y as f32, x as f32);
    let (maxy, maxx) = ((y + wh - 1) as f32, (x + ww - 1) as f32);
    // Horizontal taps once per row of output.
    let cols: Vec<(usize, usize, f32)> = (0..ow)
        .map(|ox| {
            let ox = if flip { ow - 1 - ox } else { ox };
            let fx = (x as f32 + (ox as f32 + 0.5) * sx - 0.5).clamp(minx, maxx);
            let x0 = fx.floor() as usize;
            (x0, (x0 + 1).min(x + ww - 1), fx - x0 as f32)
        })
        .collect();
    let plane = oh * ow;
    for oy in 0..oh {
        let fy = (y as f32 + (oy as f32 + 0.5) * sy - 0.5).clamp(miny, maxy);
        let y0 = fy.floor() as usize;
        let (y1, wy) = ((y0 + 1).min(y + wh - 1), fy - y0 as f32);
        let (r0, r1) = (&img.px[y0 * img.w * 3..(y0 + 1) * img.w * 3], &img.px[y1 * img.w * 3..(y1 + 1) * img.w * 3]);
        for (ox, &(x0, x1, wx)) in cols.iter().enumerate() {
            for (c, &(mul, add)) in affine.iter().enumerate() {
                let top = r0[x0 * 3 + c] as f32 * (1.0 - wx) + r0[x1 * 3 + c] as f32 * wx;
                let bot = r1[x0 * 3 + c] as f32 * (1.0 - wx) + r1[x1 * 3 + c] as f32 * wx;
                out[c * plane + oy * ow + ox] = (top * (1.0 - wy) + bot * wy) * mul + add;
            }
        }
    }
}

/// One example: decode, then (training) an Inception crop and a flip drawn from `rng`, or (evaluation, `rng`
/// = `None`) the whole image; written to `out` `[3, oh, ow]`.
#[allow(clippy::too_many_arguments)]
pub fn example(
    bytes: &[u8],
    crop: bool,
    flip: bool,
    rng: Option<&mut ChaCha8Rng>,
    affine: &[(f32, f32); 3],
    out: &mut [f32],
    oh: usize,
    ow: usize,
) -> Result<(), String> {
    let img = decode(bytes)?;
    let (win, mirror) = match rng {
        Some(rng) => {
            let win = if crop { sample_window(rng, img.h, img.w, (0.05, 1.0), (0.75, 1.33), 100) } else { (0, 0, img.h, img.w) };
            (win, flip && rng.random_bool(0.5))
        }
        None => ((0, 0, img.h, img.w), false),
    };
    window_to_planes(&img, win, mirror, affine, out, oh, ow);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 200]));
        let mut b = std::io::Cursor::new(vec![]);
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    }

    #[test]
    fn identity_window_flip_and_affine() {
        let bytes = png(6, 4);
        let id = [(1.0, 0.0); 3];
        let mut out = vec![0f32; 3 * 4 * 6];
        example(&bytes, false, false, None, &id, &mut out, 4, 6).unwrap();
        // Same size, no crop: the pixels themselves, planar.
        assert_eq!(&out[..6], &[0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(out[24 + 6], 10.0); // G of (y = 1, x = 0)
        assert_eq!(out[48], 200.0);
        let img = decode(&bytes).unwrap();
        window_to_planes(&img, (0, 0, 4, 6), true, &[(1.0 / 127.5, -1.0); 3], &mut out, 4, 6);
        assert!((out[0] - (50.0 / 127.5 - 1.0)).abs() < 1e-6, "mirrored and scaled: {}", out[0]);
        assert!(decode(b"not an image").is_err());
    }

    #[test]
    fn crops_are_seeded_per_example() {
        let bytes = png(40, 30);
        let id = [(1.0, 0.0); 3];
        let run = |b: usize| {
            let mut out = vec![0f32; 3 * 8 * 8];
            example(&bytes, true, true, Some(&mut example_rng(7, 1, 3, b)), &id, &mut out, 8, 8).unwrap();
            out
        };
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
    }
}
