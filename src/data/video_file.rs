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
//! With `fps` set, the clip is first resampled to that frame rate by its timestamps, as FFmpeg's `fps` filter
//! does (`round=near`, starting at the first frame): source frame `i` shown at `tᵢ` (seconds after the first
//! frame) lands on output slot `round(tᵢ · fps)`, output slot `n` shows the last source frame landed on or
//! before it (a faster source drops frames, a slower one repeats them), and the clip has `round(D · fps)` slots
//! for a clip lasting `D` (the last frame's time plus the mean frame interval). `L` is then that slot count and
//! the frames above are slots: so "32 frames at stride 2" spans the same 2.56 s at 25 fps whether the source
//! was shot at 24, 30 or 60 fps.
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
    /// Frame rate the clip is resampled to before sampling (see the module docs); `None` = the source's own
    /// decoded frames.
    pub fps: Option<u32>,
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

    /// The output slot of source frame `i`, shown `ticks` time-base units (`tb` seconds each, a rational
    /// `(num, den)`) after the clip's first frame: `i` without `fps`; with it `round(ticks · tb · fps)`, in
    /// integers and half away from zero as FFmpeg's `fps` filter rounds (`round=near`), so that the ties of
    /// 50 → 25 fps all fall the same way.
    #[cfg_attr(not(feature = "video"), allow(dead_code))]
    fn slot(&self, i: usize, ticks: i64, tb: (i64, i64)) -> usize {
        match self.fps {
            None => i,
            Some(fps) => {
                let (n, d) = (ticks.max(0) as i128 * tb.0 as i128 * fps as i128, tb.1.max(1) as i128);
                ((2 * n + d) / (2 * d)) as usize
            }
        }
    }

    /// The number of output slots of a clip whose `count` decoded frames span `last` seconds from the first
    /// frame to the last, the first shown `start` seconds after the file's start: `count` without `fps`; with it
    /// `round((start + D) · fps) − round(start · fps)` (at least 1) for the clip's duration `D = last + last /
    /// (count − 1)` (the last frame lasts the mean interval), as FFmpeg's `fps` filter ends at the end of the
    /// stream. A last frame landing past the end fills no slot, as FFmpeg drops a frame due at the end.
    pub fn slots(&self, count: usize, last: f64, start: f64) -> usize {
        match self.fps {
            None => count,
            Some(fps) => {
                let interval = if count > 1 { last / (count - 1) as f64 } else { 1.0 / fps as f64 };
                let f = fps as f64;
                (((start + last + interval) * f).round() - (start * f).round()).max(1.0) as usize
            }
        }
    }
}

/// Which output slots each decoded frame fills, as frames arrive in presentation order: a frame's slots run
/// from its own slot to the next frame's (none when the next lands on the same slot: it replaces it); the
/// last frame fills every slot to the end.
#[derive(Debug)]
#[cfg_attr(not(feature = "video"), allow(dead_code))]
struct Slots {
    /// The stream's time base, seconds per tick `(num, den)`.
    tb: (i64, i64),
    /// The file's start (ticks of the stream): FFmpeg's command line counts time from it, so that a video
    /// stream starting after an audio one starts after 0, and its `fps` filter rounds those times.
    off: i64,
    /// The slot of the frame held back until the next frame's slot is known.
    held: Option<usize>,
    /// The first frame's timestamp (ticks), the origin of the clip's slots.
    t0: Option<i64>,
    /// The latest frame's ticks after the first.
    last: i64,
    /// Frames seen.
    count: usize,
}

#[cfg_attr(not(feature = "video"), allow(dead_code))]
impl Slots {
    /// Slots of a stream of time base `tb` in a file starting at `off` ticks.
    fn new(tb: (i64, i64), off: i64) -> Slots {
        Slots { tb: (tb.0.max(1), tb.1.max(1)), off, held: None, t0: None, last: 0, count: 0 }
    }

    /// Ticks in seconds.
    fn secs(&self, ticks: i64) -> f64 {
        ticks as f64 * self.tb.0 as f64 / self.tb.1 as f64
    }

    /// A frame with timestamp `ts` (ticks; `None` when it has none: the previous frame's plus the mean
    /// interval so far, or 1/25 s) arrives. Returns the slots the *previous* frame fills, now that they are
    /// known; the new frame is held. A frame's slot is `round((t − off) · fps) − round((t₀ − off) · fps)`: times
    /// from the file's start, rounded, then counted from the first frame's, as FFmpeg's `fps` filter does.
    fn push(&mut self, spec: &ClipSpec, ts: Option<i64>) -> std::ops::Range<usize> {
        let rel = match (ts, self.t0) {
            (Some(t), Some(t0)) => t - t0,
            (Some(t), None) => {
                self.t0 = Some(t);
                0
            }
            (None, _) => {
                self.t0.get_or_insert(self.off);
                match self.count {
                    0 => 0,
                    1 => self.last + (self.tb.1 / (25 * self.tb.0)).max(1),
                    n => self.last + (self.last / (n as i64 - 1)).max(1),
                }
            }
        };
        let from_start = self.t0.unwrap_or(self.off) - self.off;
        let base = spec.slot(0, from_start, self.tb);
        let own = spec.slot(self.count, from_start + rel, self.tb).saturating_sub(base);
        // Timestamps that go backwards (a broken file) replace the held frame rather than reorder slots.
        let slot = self.held.map_or(own, |h| own.max(h));
        let prev = self.held.map_or(0..0, |h| h..slot);
        self.held = Some(slot);
        self.last = rel.max(self.last);
        self.count += 1;
        prev
    }

    /// The end of the clip: the slots the held (last) frame fills, up to the clip's slot count.
    fn finish(&mut self, spec: &ClipSpec) -> std::ops::Range<usize> {
        let start = self.secs(self.t0.unwrap_or(self.off) - self.off);
        let n = spec.slots(self.count, self.secs(self.last), start);
        self.held.take().map_or(0..0, |h| h..n.max(h))
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

    /// What one decoding pass finds.
    struct Pass {
        /// Frames decoded.
        count: usize,
        /// The container's declared frame count (0 or less when unknown).
        declared: i64,
        /// Output slots of the clip (see [`ClipSpec::slots`]).
        slots: usize,
        /// The converted frames by output slot.
        out: BTreeMap<usize, Vec<u8>>,
    }

    /// Converts one decoded frame to RGB, short side `S`, centre crop `S × S`, reusing `scaler` while the input
    /// size stays the same.
    fn convert(
        path: &Path,
        spec: &ClipSpec,
        scaler: &mut Option<(ff::software::scaling::Context, u32, u32)>,
        frame: &ff::util::frame::Video,
    ) -> Result<Vec<u8>, DataError> {
        let err = |m: String| DataError::new(path, m);
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
            let mut c = ff::software::scaling::Context::get(
                frame.format(),
                w,
                h,
                ff::format::Pixel::RGB24,
                dw,
                dh,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(|e| err(format!("cannot convert frames: {e}")))?;
            set_colour_matrix(&mut c, frame);
            *scaler = Some((c, w, h));
        }
        let mut rgb = ff::util::frame::Video::empty();
        scaler.as_mut().expect("set above").0.run(frame, &mut rgb).map_err(|e| err(format!("cannot convert a frame: {e}")))?;
        // Centre crop S × S out of the (dw × dh) RGB frame; rows may be padded (stride).
        let (x0, y0) = ((rgb.width() - s) as usize / 2, (rgb.height() - s) as usize / 2);
        let (stride, data, s) = (rgb.stride(0), rgb.data(0), s as usize);
        let mut px = Vec::with_capacity(s * s * 3);
        for y in 0..s {
            let row = (y0 + y) * stride + x0 * 3;
            px.extend_from_slice(&data[row..row + s * 3]);
        }
        Ok(px)
    }

    /// One decoding pass: the frames decoded, the clip's output slots and the converted frames at the `wanted`
    /// slots (`None` = convert none, only count). Frames are held back one at a time until the next one's
    /// timestamp says which slots they fill ([`Slots`]).
    fn pass(path: &Path, spec: &ClipSpec, wanted: Option<&[usize]>) -> Result<Pass, DataError> {
        let err = |m: String| DataError::new(path, m);
        let mut ictx = ff::format::input(&path).map_err(|e| err(format!("cannot open video ({e}): corrupt, truncated or not a video")))?;
        let stream = ictx.streams().best(ff::media::Type::Video).ok_or_else(|| err("has no video stream".into()))?;
        let (index, declared, tb) = (stream.index(), stream.frames(), stream.time_base());
        let ctx = ff::codec::context::Context::from_parameters(stream.parameters()).map_err(|e| err(format!("unsupported codec: {e}")))?;
        let mut decoder = ctx.decoder().video().map_err(|e| err(format!("no decoder for this video codec: {e}")))?;
        let mut scaler = None;
        let mut out = BTreeMap::new();
        let tbr = (tb.numerator() as i64, tb.denominator() as i64);
        // The file's start in the stream's ticks (rounded as FFmpeg rescales it); 0 when unknown.
        // SAFETY: `ictx` owns a live AVFormatContext; `start_time` is a plain field libavformat set when it read
        // the streams (ffmpeg-next has no accessor for it).
        let start = unsafe { (*ictx.as_ptr()).start_time };
        let off = if start == ff::ffi::AV_NOPTS_VALUE || tbr.0 <= 0 {
            0
        } else {
            let (n, d) = (start as i128 * tbr.1 as i128, ff::ffi::AV_TIME_BASE as i128 * tbr.0 as i128);
            (if n >= 0 { (2 * n + d) / (2 * d) } else { -((-2 * n + d) / (2 * d)) }) as i64
        };
        let mut slots = Slots::new(tbr, off);
        let (mut frame, mut held) = (ff::util::frame::Video::empty(), ff::util::frame::Video::empty());
        // The held frame fills `range`: converted once if any of those slots is wanted.
        let mut place = |range: std::ops::Range<usize>, held: &ff::util::frame::Video| -> Result<(), DataError> {
            let Some(w) = wanted else { return Ok(()) };
            let here: Vec<usize> = w.iter().copied().filter(|i| range.contains(i) && !out.contains_key(i)).collect();
            if !here.is_empty() {
                let px = convert(path, spec, &mut scaler, held)?;
                for i in here {
                    out.insert(i, px.clone());
                }
            }
            Ok(())
        };
        let mut receive = |decoder: &mut ff::decoder::Video,
                           frame: &mut ff::util::frame::Video,
                           held: &mut ff::util::frame::Video|
         -> Result<(), DataError> {
            while decoder.receive_frame(frame).is_ok() {
                let range = slots.push(spec, frame.timestamp());
                place(range, held)?;
                std::mem::swap(frame, held);
            }
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
            receive(&mut decoder, &mut frame, &mut held)?;
        }
        let _ = decoder.send_eof();
        receive(&mut decoder, &mut frame, &mut held)?;
        let range = slots.finish(spec);
        let n = range.end;
        if slots.count > 0 {
            place(range, &held)?;
        }
        Ok(Pass { count: slots.count, declared, slots: if slots.count > 0 { n } else { 0 }, out })
    }

    /// The clip's output slot count as its container declares it: its frame count, or with `fps` its duration
    /// times `fps` (`None` when the container does not say).
    fn declared_slots(path: &Path, spec: &ClipSpec) -> Result<Option<usize>, DataError> {
        let err = |m: String| DataError::new(path, m);
        let ictx = ff::format::input(&path).map_err(|e| err(format!("cannot open video ({e}): corrupt, truncated or not a video")))?;
        let st = ictx.streams().best(ff::media::Type::Video).ok_or_else(|| err("has no video stream".into()))?;
        Ok(match spec.fps {
            None => (st.frames() > 0).then_some(st.frames() as usize),
            Some(fps) => {
                let d = if st.duration() > 0 {
                    st.duration() as f64 * f64::from(st.time_base())
                } else {
                    ictx.duration() as f64 / ff::ffi::AV_TIME_BASE as f64
                };
                (d > 0.0).then(|| (d * fps as f64).round().max(1.0) as usize)
            }
        })
    }

    pub fn decode(path: &Path, spec: &ClipSpec) -> Result<Vec<u8>, DataError> {
        init();
        let err = |m: String| DataError::new(path, m);
        let guess = declared_slots(path, spec)?.map(|n| spec.indices(n));
        let Pass { count, declared, slots, out: mut got } = pass(path, spec, guess.as_deref())?;
        if count == 0 {
            return Err(err("decodes to no frames: corrupt or truncated".into()));
        }
        if declared > 0 && (count as i64) * 10 < declared * 9 {
            return Err(err(format!("decodes to {count} of the {declared} frames it declares: truncated or corrupt")));
        }
        let want = spec.indices(slots);
        if want.iter().any(|i| !got.contains_key(i)) {
            got = pass(path, spec, Some(&want))?.out;
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
        let s = ClipSpec { frames: 4, stride: 2, size: 8, fps: None };
        assert_eq!(s.indices(20), [6, 8, 10, 12]); // need 7, start (20 - 7) / 2 = 6
        assert_eq!(s.indices(7), [0, 2, 4, 6]);
        assert_eq!(s.indices(5), [0, 2, 4, 1]); // shorter than the window: wraps
        assert_eq!(s.record_len(), 4 * 8 * 8 * 3);
    }

    /// The slots each frame of a clip fills, pushing timestamps `ts` (time base `tb`) in order.
    fn fills(spec: &ClipSpec, tb: (i64, i64), ts: &[Option<i64>]) -> Vec<std::ops::Range<usize>> {
        let mut s = Slots::new(tb, 0);
        let mut v: Vec<_> = ts.iter().map(|&t| s.push(spec, t)).skip(1).collect();
        v.push(s.finish(spec));
        v
    }

    #[test]
    fn without_fps_each_frame_is_its_own_slot() {
        let s = ClipSpec { frames: 2, stride: 1, size: 8, fps: None };
        assert_eq!(fills(&s, (1, 25), &[Some(0), Some(1), None]), [0..1, 1..2, 2..3]);
        assert_eq!(s.slots(3, 0.08, 0.0), 3);
    }

    #[test]
    fn fps_drops_faster_frames_and_repeats_slower_ones() {
        let at25 = ClipSpec { frames: 2, stride: 1, size: 8, fps: Some(25) };
        // 50 fps → 25 (time base 1/50): frame i lands on round(i / 2), half away from zero, so frame 2k lands
        // with 2k − 1 and replaces it, every time: frames 0, 2, 4 are kept, as FFmpeg's `fps=25` keeps them; the
        // last, frame 5, lands on slot 3, past the 3 slots of the 0.12 s clip.
        let t50: Vec<Option<i64>> = (0..6).map(Some).collect();
        assert_eq!(fills(&at25, (1, 50), &t50), [0..1, 1..1, 1..2, 2..2, 2..3, 3..3]);
        // 10 frames at 50 fps last 0.2 s: 5 slots.
        assert_eq!(at25.slots(10, 9.0 / 50.0, 0.0), 5);
        // 12.5 fps → 25, starting at 1 s (time base 1/1000): each frame fills two slots; 4 frames last 0.32 s.
        let t125: Vec<Option<i64>> = (0..4).map(|i| Some(1000 + i * 80)).collect();
        assert_eq!(fills(&at25, (1, 1000), &t125), [0..2, 2..4, 4..6, 6..8]);
        // 30 fps, 300 frames (10 s) → 250 slots: a 32 × 2 window spans 2.56 s whatever the source's rate.
        assert_eq!(at25.slots(300, 299.0 / 30.0, 0.0), 250);
        let t30: Vec<Option<i64>> = (0..300).map(|i| Some(i * 512)).collect(); // time base 1/15360, as MP4 writes
        let f = fills(&at25, (1, 15360), &t30);
        assert_eq!(f.last().map(|r| r.end), Some(250));
        assert_eq!(f.iter().map(|r| r.len()).sum::<usize>(), 250);
        assert_eq!(f.iter().filter(|r| r.is_empty()).count(), 50, "one frame in six dropped");
    }

    #[test]
    fn fps_rounds_times_from_the_files_start_as_ffmpeg() {
        // 30 fps from 0.01 s (time base 1/3000: frame i at 30 + 100·i): frame 4 at 0.1433 s lands on
        // round(3.58) − round(0.25) = 4, not round((0.1433 − 0.01)·25) = round(3.33) = 3.
        let at25 = ClipSpec { frames: 2, stride: 1, size: 8, fps: Some(25) };
        let ts: Vec<Option<i64>> = (0..6).map(|i| Some(30 + 100 * i)).collect();
        // The slot each frame lands on, in a file starting at `off` ticks.
        let landed = |off: i64| {
            let mut s = Slots::new((1, 3000), off);
            ts.iter()
                .map(|&t| {
                    s.push(&at25, t);
                    s.held.unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(landed(0), [0, 1, 2, 3, 4, 4], "times 0.01 + i/30 s: round(25·t) − round(0.25)");
        // Counted from a file starting at 0.01 s (the video's own start), the same clip rounds as from 0.
        let from_start = landed(30);
        assert_eq!(from_start, [0, 1, 2, 3, 3, 4], "times i/30 s: round(25·t)");
    }

    #[test]
    fn fps_survives_missing_and_backward_timestamps() {
        let at10 = ClipSpec { frames: 2, stride: 1, size: 8, fps: Some(10) };
        // No timestamps at all: 1/25 s apart, as a guess.
        let none = fills(&at10, (1, 1000), &[None, None, None]);
        assert_eq!(none.iter().map(|r| r.len()).sum::<usize>(), at10.slots(3, 0.08, 0.0));
        // A timestamp going back replaces the held frame; slots never run backwards.
        let back = fills(&at10, (1, 1000), &[Some(0), Some(300), Some(100), Some(400)]);
        assert_eq!(back, [0..3, 3..3, 3..4, 4..5]);
    }
}
