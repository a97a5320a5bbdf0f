//! `polyflow bench-video`: clips per second of video decoding (FFmpeg through ffmpeg-next) as datasets ingest
//! them: every frame decoded, the centre window's frames at the stride resized (short side) and centre-cropped
//! to RGB; clips decoded in parallel on `--threads`. `benches/video_decode.py` does the same with PyAV.

use crate::data::video_file::{decode, ClipSpec};
use std::path::PathBuf;
use std::time::Instant;

/// Settings.
#[derive(Debug, Clone, clap::Args)]
pub struct VideoArgs {
    /// A folder of video files (searched recursively).
    pub dir: PathBuf,
    /// Frames kept per clip.
    #[arg(long, default_value_t = 32)]
    pub frames: usize,
    /// Temporal stride.
    #[arg(long, default_value_t = 2)]
    pub stride: usize,
    /// Short side / crop side.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Resample clips to this frame rate first (0: the source's frames).
    #[arg(long, default_value_t = 0)]
    pub fps: u32,
    /// Decoding threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs the benchmark; prints one JSON line.
pub fn bench_video(a: VideoArgs) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let mut files: Vec<PathBuf> = crate::data::layouts::files_by_stem(&a.dir, crate::data::layouts::VIDEO_EXTS)?.into_values().collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no video files under {}", a.dir.display());
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let spec = ClipSpec { frames: a.frames, stride: a.stride, size: a.size, fps: (a.fps > 0).then_some(a.fps) };
    // Warm-up: one clip (library initialisation, page cache).
    decode(&files[0], &spec)?;
    let t0 = Instant::now();
    let bytes: usize =
        pool.install(|| files.par_iter().map(|f| decode(f, &spec).map(|x| x.len())).collect::<Result<Vec<_>, _>>())?.iter().sum();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"pipeline": "polyflow (ffmpeg-next)", "clips": files.len(), "seconds": secs,
            "clips_per_s": files.len() as f64 / secs, "threads": threads, "frames": a.frames, "stride": a.stride,
            "size": a.size, "fps": a.fps, "bytes_out": bytes})
    );
    Ok(())
}
