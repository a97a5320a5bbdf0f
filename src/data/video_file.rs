//! Video files (H.264 `.mp4` as Kinetics ships them, and whatever else FFmpeg reads) decoded by FFmpeg's
//! libraries through `ffmpeg-next`, behind the `video` cargo feature.
//!
//! A clip becomes `frames` RGB frames `[T, S, S, 3]` u8: `frames` frames at `stride` from the clip's centre
//! window, `start = (L − need) / 2` (integer division) with `need = (frames − 1)·stride + 1` (a clip shorter
//! than `need` wraps around, as DMVR does). DMVR's evaluation window (`sample_sequence(random=False)`) starts
//! at `(L − frames·stride) / 2` instead: the same start at stride 1; at stride 2 one frame earlier when `L`
//! is odd (L = 301, 32 frames: DMVR 118, here 119). Each frame is resized (bilinear) so its short side is `S` and
//! centre-cropped to `S × S`. The frame count `L` comes from the container; when it is absent or wrong the
//! clip is decoded once more with the true count.
//!
//! A clip that cannot be opened, has no video stream, decodes to no frame, or decodes to under 90 % of the
//! frames its container declares (a truncated download) is an error naming the file; the ingesting stage
//! skips and counts it.

use super::error::DataError;
use std::path::Path;

/// How a clip is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipSpec {
    /// Frames kept.
    pub frames: usize,
    /// Temporal stride between kept frames.
    pub stride: usize,
    /// Output side `S` (short side resized to `S`, then a centre crop `S × S`).
    pub size: usize,
}

impl ClipSpec {
    /// The decode-order indices of the kept frames in a clip of `len` frames (centre window, wrapping).
    pub fn indices(&self, len: usize) -> Vec<usize> {
        let need = (self.frames - 1) * self.stride + 1;
        let start = len.saturating_sub(need) / 2;
        (0..self.frames).map(|k| (start + k * self.stride) % len.max(1)).collect()
    }

    /// Bytes of one decoded clip.
    pub fn record_len(&self) -> usize {
        self.frames * self.size * self.size * 3
    }
}

/// Whether this build decodes video files.
pub const AVAILABLE: bool = cfg!(feature = "video");

/// What to tell a user whose build has no video decoder.
pub const UNAVAILABLE: &str = "this polyflow was built without video decoding: install FFmpeg's development packages \
     (Debian: libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev clang pkg-config) and \
     build with `cargo install --path . --features video`";

/// Decodes `path` into `[T, S, S, 3]` u8 (see the module docs).
#[cfg(not(feature = "video"))]
pub fn decode(path: &Path, _spec: &ClipSpec) -> Result<Vec<u8>, DataError> {
    Err(DataError::new(path, UNAVAILABLE))
}

/// Decodes `path` into `[T, S, S, 3]` u8 (see the module docs).
#[cfg(feature = "video")]
pub fn decode(path: &Path, spec: &ClipSpec) -> Result<Vec<u8>, DataError> {
    imp::decode(path, spec)
}

#[cfg(feature = "video")]
mod imp {
    use super::*;
    use ffmpeg_next as ff;
    use std::collections::BTreeMap;

    fn init() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = ff::init();
            // Errors are reported by polyflow, naming the file; FFmpeg's own log would interleave with the progress.
            ff::util::log::set_level(ff::util::log::Level::Quiet);
        });
    }

    /// The YUV → RGB matrix and input range of `frame`'s stream on `c`, as FFmpeg's `scale` filter takes them
    /// from each frame: swscale's own default is BT.601 with limited range whatever the stream says, which
    /// shifts HD (BT.709) colours by up to ~30 levels. Untagged streams keep that default, as FFmpeg does.
    fn set_colour_matrix(c: &mut ff::software::scaling::Context, frame: &ff::util::frame::Video) {
        use ff::util::color::{Range, Space};
        let matrix = match frame.color_space() {
            Space::BT709 => ff::ffi::SWS_CS_ITU709,
            Space::FCC => ff::ffi::SWS_CS_FCC,
            Space::SMPTE240M => ff::ffi::SWS_CS_SMPTE240M,
            Space::BT2020NCL | Space::BT2020CL => ff::ffi::SWS_CS_BT2020,
            _ => ff::ffi::SWS_CS_DEFAULT,
        };
        let full = i32::from(frame.color_range() == Range::JPEG);
        // SAFETY: `c` owns a live SwsContext; the coefficient tables are static in libswscale. Brightness 0,
        // contrast and saturation 1.0 (16.16 fixed point) are swscale's defaults; the output is full-range RGB.
        unsafe {
            ff::ffi::sws_setColorspaceDetails(
                c.as_mut_ptr(),
                ff::ffi::sws_getCoefficients(matrix),
                full,
                ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_DEFAULT),
                1,
                0,
                1 << 16,
                1 << 16,
            );
        }
    }

    /// What one decoding pass finds: the number of frames decoded, the container's declared frame count, and
    /// the converted frames by decode-order index.
    type Pass = (usize, i64, BTreeMap<usize, Vec<u8>>);

    /// One decoding pass: the number of frames decoded and the converted frames at `wanted` (decode-order
    /// indices; `None` = convert none, only count). Also returns the container's declared frame count.
    fn pass(path: &Path, spec: &ClipSpec, wanted: Option<&[usize]>) -> Result<Pass, DataError> {
        let err = |m: String| DataError::new(path, m);
        let mut ictx = ff::format::input(&path).map_err(|e| err(format!("cannot open video ({e}): corrupt, truncated or not a video")))?;
        let stream = ictx.streams().best(ff::media::Type::Video).ok_or_else(|| err("has no video stream".into()))?;
        let (index, declared) = (stream.index(), stream.frames());
        let ctx = ff::codec::context::Context::from_parameters(stream.parameters()).map_err(|e| err(format!("unsupported codec: {e}")))?;
        let mut decoder = ctx.decoder().video().map_err(|e| err(format!("no decoder for this video codec: {e}")))?;
        let mut scaler: Option<(ff::software::scaling::Context, u32, u32)> = None;
        let mut out = BTreeMap::new();
        let mut count = 0usize;
        let mut frame = ff::util::frame::Video::empty();
        let mut take = |frame: &ff::util::frame::Video, count: &mut usize, out: &mut BTreeMap<usize, Vec<u8>>| -> Result<(), DataError> {
            if wanted.is_some_and(|w| w.contains(count)) {
                let (w, h) = (frame.width(), frame.height());
                if w == 0 || h == 0 {
                    return Err(err("a frame has no pixels".into()));
                }
                let s = spec.size as u32;
                let (dw, dh) = if w >= h {
                    (((w as u64 * s as u64 + h as u64 / 2) / h as u64).max(s as u64) as u32, s)
                } else {
                    (s, ((h as u64 * s as u64 + w as u64 / 2) / w as u64).max(s as u64) as u32)
                };
                if scaler.as_ref().is_none_or(|(_, sw, sh)| (*sw, *sh) != (w, h)) {
                    let c = ff::software::scaling::Context::get(
                        frame.format(),
                        w,
                        h,
                        ff::format::Pixel::RGB24,
                        dw,
                        dh,
                        ff::software::scaling::Flags::BILINEAR,
                    )
                    .map_err(|e| err(format!("cannot convert frames: {e}")))?;
                    let mut c = c;
                    set_colour_matrix(&mut c, frame);
                    scaler = Some((c, w, h));
                }
                let mut rgb = ff::util::frame::Video::empty();
                scaler.as_mut().unwrap().0.run(frame, &mut rgb).map_err(|e| err(format!("cannot convert a frame: {e}")))?;
                // Centre crop S × S out of the (dw × dh) RGB frame; rows may be padded (stride).
                let (x0, y0) = ((rgb.width() - s) as usize / 2, (rgb.height() - s) as usize / 2);
                let (stride, data, s) = (rgb.stride(0), rgb.data(0), s as usize);
                let mut px = Vec::with_capacity(s * s * 3);
                for y in 0..s {
                    let row = (y0 + y) * stride + x0 * 3;
                    px.extend_from_slice(&data[row..row + s * 3]);
                }
                out.insert(*count, px);
            }
            *count += 1;
            Ok(())
        };
        for (st, packet) in ictx.packets() {
            if st.index() != index {
                continue;
            }
            // A corrupt packet is not fatal to FFmpeg; the frame count below catches what is lost.
            if decoder.send_packet(&packet).is_err() {
                continue;
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                take(&frame, &mut count, &mut out)?;
            }
        }
        let _ = decoder.send_eof();
        while decoder.receive_frame(&mut frame).is_ok() {
            take(&frame, &mut count, &mut out)?;
        }
        Ok((count, declared, out))
    }

    pub fn decode(path: &Path, spec: &ClipSpec) -> Result<Vec<u8>, DataError> {
        init();
        let err = |m: String| DataError::new(path, m);
        let probe = || -> Result<i64, DataError> {
            let ictx = ff::format::input(&path).map_err(|e| err(format!("cannot open video ({e}): corrupt, truncated or not a video")))?;
            let st = ictx.streams().best(ff::media::Type::Video).ok_or_else(|| err("has no video stream".into()))?;
            Ok(st.frames())
        };
        let declared = probe()?;
        let guess = if declared > 0 { Some(spec.indices(declared as usize)) } else { None };
        let (count, declared, mut got) = pass(path, spec, guess.as_deref())?;
        if count == 0 {
            return Err(err("decodes to no frames: corrupt or truncated".into()));
        }
        if declared > 0 && (count as i64) * 10 < declared * 9 {
            return Err(err(format!("decodes to {count} of the {declared} frames it declares: truncated or corrupt")));
        }
        let want = spec.indices(count);
        if want.iter().any(|i| !got.contains_key(i)) {
            got = pass(path, spec, Some(&want))?.2;
        }
        let mut x = Vec::with_capacity(spec.record_len());
        for i in want {
            x.extend_from_slice(got.get(&i).ok_or_else(|| err(format!("frame {i} vanished on the second decoding pass")))?);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_window_and_wrap() {
        let s = ClipSpec { frames: 4, stride: 2, size: 8 };
        assert_eq!(s.indices(20), [6, 8, 10, 12]); // need 7, start (20 - 7) / 2 = 6
        assert_eq!(s.indices(7), [0, 2, 4, 6]);
        assert_eq!(s.indices(5), [0, 2, 4, 1]); // shorter than the window: wraps
        assert_eq!(s.record_len(), 4 * 8 * 8 * 3);
    }
}
