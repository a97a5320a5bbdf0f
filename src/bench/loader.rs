//! `polyflow bench-loader`: images per second of the training input pipeline for encoded images (read the
//! file, decode, Inception crop, bilinear resize, flip, planar floats in [-1, 1]) on a pool of threads with a
//! bounded prefetch queue, over an ImageNet-layout folder; `benches/loader_torch.py` runs the same pipeline in
//! PyTorch (DataLoader + RandomResizedCrop + flip + ToTensor) for BENCHMARKS.md. `--generate` writes such a
//! folder of JPEGs.

use crate::data::layouts::{folders, SplitName};
use crate::train::encoded::{example, example_rng};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Settings.
#[derive(Debug, Clone, clap::Args)]
pub struct LoaderArgs {
    /// A folder with `train/CLASS/*.JPEG` (ImageNet's layout).
    pub dir: PathBuf,
    /// Write `--count` JPEGs of 500×375 into DIR/train/ first (100 classes).
    #[arg(long)]
    pub generate: bool,
    /// Images to generate.
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Output side.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Timed batches (after one warm-up batch).
    #[arg(long, default_value_t = 30)]
    pub batches: usize,
    /// Decoding threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batches prepared ahead of the consumer.
    #[arg(long, default_value_t = 2)]
    pub prefetch: usize,
}

fn generate(a: &LoaderArgs) -> anyhow::Result<()> {
    use rayon::prelude::*;
    (0..a.count).into_par_iter().try_for_each(|i| -> anyhow::Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let class = format!("n{:08}", i % 100);
        let dir = a.dir.join("train").join(&class);
        std::fs::create_dir_all(&dir)?;
        // Smooth colour fields with texture and noise: JPEG sizes like photographs' (~100 KB at quality 90).
        let (f1, f2, f3): (f32, f32, f32) = (rng.random_range(0.005..0.05), rng.random_range(0.005..0.05), rng.random_range(0.1..0.6));
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let (x, y) = (x as f32, y as f32);
            let n: f32 = rng.random_range(-24.0..24.0);
            let v = |p: f32| (128.0 + 90.0 * p.sin() + n).clamp(0.0, 255.0) as u8;
            image::Rgb([v(x * f1 + y * f2), v(y * f1 - x * f2 + 1.0), v((x + y) * f3 * 0.1 + (x * f3).sin())])
        });
        let f = std::fs::File::create(dir.join(format!("{class}_{i}.JPEG")))?;
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 90);
        enc.encode_image(&img)?;
        Ok(())
    })
}

/// Runs the benchmark; prints one JSON line.
pub fn bench_loader(a: LoaderArgs) -> anyhow::Result<()> {
    if a.generate {
        generate(&a)?;
    }
    let cat = folders::image_folders(&a.dir, &[])?;
    let files: Vec<PathBuf> = cat.entries.iter().filter(|e| e.split == SplitName::Train).map(|e| e.path.clone()).collect();
    anyhow::ensure!(files.len() >= a.batch, "{} images, fewer than one batch", files.len());
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let (size, batch, total) = (a.size, a.batch, a.batches + 1);
    let per = 3 * size * size;
    let affine = [(1.0 / 127.5, -1.0); 3];
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(a.prefetch.max(1));
    let n = files.len();
    let producer = std::thread::spawn(move || -> Result<(), String> {
        use rayon::prelude::*;
        let mut order: Vec<usize> = (0..n).collect();
        use rand::seq::SliceRandom;
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        for step in 0..total {
            let idx: Vec<usize> = (0..batch).map(|b| order[(step * batch + b) % n]).collect();
            let mut x = vec![0f32; batch * per];
            pool.install(|| {
                x.par_chunks_exact_mut(per).zip(&idx).enumerate().try_for_each(|(b, (d, &i))| -> Result<(), String> {
                    let bytes = std::fs::read(&files[i]).map_err(|e| e.to_string())?;
                    example(&bytes, true, true, Some(&mut example_rng(0, 0, step as u64, b)), &affine, d, size, size)
                })
            })?;
            if tx.send(x).is_err() {
                break;
            }
        }
        Ok(())
    });
    let _warm = rx.recv()?;
    let t0 = Instant::now();
    let mut images = 0;
    for x in rx.iter() {
        images += x.len() / per;
    }
    let secs = t0.elapsed().as_secs_f64();
    producer.join().map_err(|_| anyhow::anyhow!("loader thread panicked"))?.map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "{}",
        serde_json::json!({
            "pipeline": "polyflow", "images": images, "seconds": secs, "images_per_s": images as f64 / secs,
            "threads": threads, "batch": batch, "size": size, "files": n,
        })
    );
    Ok(())
}
