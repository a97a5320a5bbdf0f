//! Clips stored as folders of frames (`CLIP/00001.jpg …`, as `ffmpeg -i clip.mp4 CLIP/%05d.jpg` writes them, or
//! as many Kinetics and Something-Something mirrors ship): read as video files are ([`super::video_file`]),
//! `frames` frames at `stride` from the centre window (wrapping when the clip is shorter), each resized
//! (bilinear) so that its short side is `S`, then centre-cropped to `S × S` RGB: examples `[T, S, S, 3]` u8.
//! Frames are the folder's image files (torchvision's `ImageFolder` extensions, the format read from the bytes)
//! in number order of their names (`frame_2` before `frame_10`). A frame rate is not known, so `fps` does not
//! apply. A frame that does not decode makes the clip undecodable (the ingesting stage skips and counts it).

use super::error::DataError;
use super::video_file::ClipSpec;
use std::path::{Path, PathBuf};

/// The frame files of clip folder `dir`, in number order of their names (hidden files left out).
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::new(dir, format!("cannot read clip folder: {e}")))?
        .flatten()
        .filter(|e| !super::layouts::hidden(&e.file_name()))
        .map(|e| e.path())
        .filter(|p| p.is_file() && super::layouts::has_ext(p, super::layouts::IMAGE_EXTS))
        .collect();
    alphanumeric_sort::sort_path_slice(&mut v);
    Ok(v)
}

/// One clip folder decoded as the module docs say: `spec.record_len()` bytes.
pub fn decode(dir: &Path, spec: &ClipSpec) -> Result<Vec<u8>, DataError> {
    let files = frame_files(dir)?;
    if files.is_empty() {
        // Frames one folder too deep (`CLASS/CLIP/rgb/00001.jpg`) are the usual cause: say so.
        let nested =
            std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| !super::layouts::hidden(&e.file_name()) && e.path().is_dir());
        let hint = if nested { ": its frames must be directly in it, and it holds folders (frames one level too deep?)" } else { "" };
        return Err(DataError::new(dir, format!("clip folder has no frames (no {} files){hint}", super::layouts::IMAGE_EXTS.join("/"))));
    }
    let s = spec.size;
    let mut out = Vec::with_capacity(spec.record_len());
    // A clip shorter than the window repeats frames: each is decoded once.
    let mut last: Option<(usize, Vec<u8>)> = None;
    for i in spec.indices(files.len()) {
        if last.as_ref().is_none_or(|(j, _)| *j != i) {
            last = Some((i, frame(&files[i], s)?));
        }
        out.extend_from_slice(&last.as_ref().expect("set above").1);
    }
    Ok(out)
}

/// One frame: decoded from its bytes, short side resized to `s` (rounded to the nearest pixel, as the video
/// decoder does), centre crop `s × s`, RGB.
fn frame(path: &Path, s: usize) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let img = super::images::decode(&bytes).map_err(|m| DataError::new(path, m))?.into_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(DataError::new(path, "frame has no pixels"));
    }
    let (dw, dh) = if w >= h { (((w * s + h / 2) / h).max(s), s) } else { (s, ((h * s + w / 2) / w).max(s)) };
    let r = image::imageops::resize(&img, dw as u32, dh as u32, image::imageops::FilterType::Triangle);
    let (x0, y0) = ((dw - s) / 2, (dh - s) / 2);
    let raw = r.as_raw();
    let mut px = Vec::with_capacity(s * s * 3);
    for y in 0..s {
        let row = ((y0 + y) * dw + x0) * 3;
        px.extend_from_slice(&raw[row..row + s * 3]);
    }
    Ok(px)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(frames: usize, stride: usize, size: usize) -> ClipSpec {
        ClipSpec { frames, stride, size, fps: None }
    }

    #[test]
    fn frames_in_number_order_at_stride_from_the_centre_in_colour() {
        let d = tempfile::tempdir().unwrap();
        // 12 frames, unpadded numbers; frame k is (10k, 200, 255 − 10k), 8 wide and 4 high.
        for k in 0..12u8 {
            image::RgbImage::from_pixel(8, 4, image::Rgb([10 * k, 200, 255 - 10 * k]))
                .save(d.path().join(format!("frame_{k}.png")))
                .unwrap();
        }
        // A PNG named .jpg decodes (the format is read from the bytes); hidden files and other files are not frames.
        std::fs::write(d.path().join(".frame_99.png"), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(frame_files(d.path()).unwrap().len(), 12);
        // 4 frames at stride 2 of 12: need 7, start (12 − 7) / 2 = 2 → frames 2, 4, 6, 8; side 2 (short side 4 → 2).
        let x = decode(d.path(), &spec(4, 2, 2)).unwrap();
        assert_eq!(x.len(), 4 * 2 * 2 * 3);
        let firsts: Vec<u8> = x.chunks(12).map(|f| f[0]).collect();
        assert_eq!(firsts, [20, 40, 60, 80]);
        assert_eq!(&x[..3], &[20, 200, 235], "RGB kept");
        // Longer than the clip: wraps as video files do.
        let x = decode(d.path(), &spec(16, 1, 2)).unwrap();
        assert_eq!(x.chunks(12).map(|f| f[0]).nth(12), Some(0));
    }

    #[test]
    fn a_frame_that_does_not_decode_or_an_empty_clip_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let e = decode(d.path(), &spec(2, 1, 4)).unwrap_err();
        assert!(e.message.contains("clip folder has no frames"), "{e}");
        std::fs::create_dir(d.path().join("rgb")).unwrap();
        let e = decode(d.path(), &spec(2, 1, 4)).unwrap_err();
        assert!(e.message.contains("frames one level too deep?"), "{e}");
        std::fs::remove_dir(d.path().join("rgb")).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])).save(d.path().join("00001.png")).unwrap();
        let png = std::fs::read(d.path().join("00001.png")).unwrap();
        std::fs::write(d.path().join("00002.jpg"), &png).unwrap();
        assert!(decode(d.path(), &spec(2, 1, 4)).is_ok(), "a PNG named .jpg");
        std::fs::write(d.path().join("00002.jpg"), &png[..20]).unwrap();
        let e = decode(d.path(), &spec(2, 1, 4)).unwrap_err();
        assert!(e.path.ends_with("00002.jpg") && e.message.contains("undecodable image"), "{e}");
    }
}
