//! Helpers shared by integration tests.
#![allow(dead_code)] // each test file uses some of them

use polyflow::data::tensors::Labels;
use polyflow::model::checkpoint::{to_safetensors, HostTensor};
use polyflow::stages::weights::{timm_layout, VitInfo};
use polyflow::train::batch::SplitData;
use std::path::Path;
use std::process::Command;

/// A `command` node writing `{"acc": 0.5}` and a table `t` over it exported to `results/t.*`.
pub const EXPORTED_TABLE: &str =
    "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{\\\"acc\\\": 0.5}' > $POLYFLOW_OUT/metrics.json\"]\n\
     [node.t]\nkind = \"table\"\ninputs = { runs = [\"c\"] }\ntitle = \"t\"\ncaption = \"c\"\ncounts = false\n\
     rows = [{ label = \"R\", nodes = [\"c\"] }]\ncolumns = [{ key = \"acc\", label = \"acc\" }]\nexport = \"results/t\"\n";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

/// Runs `polyflow ARGS` in `dir`: (exit code, stdout, stderr).
pub fn pf(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).current_dir(dir).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// timm-named ViT weights (small pseudo-random values): `dim`, `depth`, MLP `mlp`, `patch`² RGB patches, a
/// `grid`² position grid.
pub fn timm_vit(path: &Path, dim: usize, depth: usize, mlp: usize, patch: usize, grid: usize) {
    let info = VitInfo { format: "timm".into(), dim, depth, mlp, patch: [patch, patch], channels: 3, grid };
    let mut seed = 1u64;
    let w = timm_layout(&info)
        .into_iter()
        .map(|(n, shape)| {
            let len: usize = shape.iter().product();
            let data = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
                })
                .collect();
            (n, HostTensor { shape, data })
        })
        .collect();
    std::fs::write(path, to_safetensors(&w)).unwrap();
}

/// A timm-named ViT checkpoint of this geometry whose tensors are all zero, written as a sparse file (its header
/// and a length: a B/16 or L/16 checkpoint for `plan` costs no disk and no time to write).
pub fn timm_vit_zeros(path: &Path, dim: usize, depth: usize, mlp: usize, patch: usize, grid: usize) {
    let info = VitInfo { format: "timm".into(), dim, depth, mlp, patch: [patch, patch], channels: 3, grid };
    let mut header = serde_json::Map::new();
    let mut end = 0usize;
    for (n, shape) in timm_layout(&info) {
        let len = 4 * shape.iter().product::<usize>();
        header.insert(n, serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [end, end + len]}));
        end += len;
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&header);
    std::fs::write(path, &bytes).unwrap();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len((bytes.len() + end) as u64).unwrap();
}

/// `n` CIFAR-10 binary records (label byte + 3072 pixel bytes), deterministic.
pub fn cifar_batch(n: usize, offset: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let i = i + offset;
            std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p * 7 + i * 13) % 256) as u8))
        })
        .collect()
}

/// Writes a tiny CIFAR-10 folder `dir/cifar` (40 training and 10 test records) for pipelines that train in
/// seconds.
pub fn write_cifar(dir: &Path) {
    let c = dir.join("cifar");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("data_batch_1.bin"), cifar_batch(40, 0)).unwrap();
    std::fs::write(c.join("test_batch.bin"), cifar_batch(10, 40)).unwrap();
}

/// The nodes `data` (the folder [`write_cifar`] writes), `x` (8×8 images) and `t` (a task of `steps` updates,
/// batch 8) of those tiny pipelines.
pub fn cifar_task(steps: usize) -> String {
    format!(
        "[node.data]\nkind = \"dataset\"\nformat = \"cifar10\"\npath = \"cifar\"\n\n[node.x]\nkind = \"image_prep\"\n\
         inputs = {{ data = \"data\" }}\nheight = 8\nwidth = 8\n\n[node.t]\nkind = \"task\"\ninputs = {{ data = \"x\" }}\n\
         steps = {steps}\nbatch_size = 8\n"
    )
}

/// A `train` node `id` of the tiniest ViT (dim 16, depth 1, 2 heads, MLP 32) on task `task`, as pipeline TOML.
pub fn tiny_train(id: &str, task: &str) -> String {
    format!("\n[node.{id}]\nkind = \"train\"\ninputs = {{ task = \"{task}\" }}\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\n")
}

/// `n` examples of `shape` with deterministic values in [-1, 1) (by `seed`) and labels cycling over `classes`: a
/// split for training tests that need data, not learning.
pub fn split(n: usize, shape: [usize; 4], classes: i64, seed: u64) -> SplitData {
    let per: usize = shape.iter().product();
    let x = (0..n * per).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0).collect();
    SplitData::dense(x, shape, Labels::Single((0..n as i64).map(|i| i % classes).collect()))
}
