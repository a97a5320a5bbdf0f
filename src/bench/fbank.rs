//! `polyflow bench-fbank`: log-mel filterbank throughput on a folder of clips (beside `benches/fbank_bench.py`).

use std::time::Instant;

/// `bench-fbank` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct FbankBenchArgs {
    /// Folders of audio clips (searched recursively).
    #[arg(required = true)]
    pub dirs: Vec<std::path::PathBuf>,
    /// Mel bins.
    #[arg(long, default_value_t = 128)]
    pub bins: usize,
    /// Repetitions over the clip set.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
}

/// Log-mel throughput (clips/s) on decoded clips; decoding is not timed. Prints one JSON line.
pub fn bench_fbank(a: FbankBenchArgs) -> anyhow::Result<()> {
    use crate::data::fbank::{Fbank, FbankOptions};
    if a.reps == 0 || a.bins == 0 {
        anyhow::bail!("--reps and --bins must be at least 1");
    }
    let mut files = vec![];
    for d in &a.dirs {
        // The error names the path already.
        crate::stages::command::collect_files(d, &mut files).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "flac" || e == "wav"));
    files.sort();
    let clips: Vec<Vec<f32>> = files.iter().filter_map(|f| crate::data::audio::decode(f).ok().map(|x| x.0)).collect();
    if clips.is_empty() {
        anyhow::bail!(
            "no .wav or .flac clip that decodes under {}: nothing to time",
            a.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let fb = Fbank::new(FbankOptions { num_mel_bins: a.bins, ..Default::default() }).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut frames = 0usize;
    for _ in 0..a.reps {
        for c in &clips {
            frames += fb.compute(c).0;
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"impl": "polyflow", "clips": clips.len(), "reps": a.reps, "bins": a.bins, "clips_per_s": (clips.len() * a.reps) as f64 / s, "frames": frames})
    );
    Ok(())
}
