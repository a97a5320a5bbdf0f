//! Sharded split files: a split is one safetensors file `{split}.safetensors` while it is small, or a sequence
//! `{split}-00000.safetensors`, `{split}-00001.safetensors`, … of bounded size (each a whole safetensors file
//! a Python user can open), written while the examples arrive and read back one example at a time.
//!
//! Each shard holds, for its `n` examples:
//! - a fixed-size tensor `[n, …]` (`x`: images, clips, spectrograms), or a variable-size one (`wave`, or
//!   encoded bytes) concatenated, with `offsets` i64 `[n + 1]` relative to the shard;
//! - the labels `y`: i64 `[n]`, or multi-hot u8 `[n, K]`.
//!
//! [`ShardWriter`] keeps one shard's tensors in temporary files (never in memory) and closes a shard into the
//! artifact once it exceeds its byte budget; a split that never exceeds it is written exactly as the unsharded
//! format was, byte for byte. [`SplitReader`] verifies each shard's checksum once by streaming it, then reads
//! examples with positioned reads (`pread`) from any thread: memory holds the labels and offsets only.

use super::stream::SplitWriter;
use super::tensors::Labels;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Where a finished shard file goes: `put(file name, its bytes as a stream)`.
pub type Put<'a> = dyn FnMut(&str, Box<dyn std::io::Read>) -> Result<(), String> + 'a;

/// The default shard budget (bytes of one shard's tensors).
pub const SHARD_BYTES: u64 = 256 << 20;

/// What one split's shards hold besides `y`.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// One fixed-size tensor: name, dtype, per-example shape.
    Fixed(String, Dtype, Vec<usize>),
    /// One variable-size tensor (with `offsets`): name, dtype.
    Var(String, Dtype),
}

/// One example's values.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// Bytes.
    U8(&'a [u8]),
    /// Floats.
    F32(&'a [f32]),
}

/// One example's label.
#[derive(Debug, Clone, Copy)]
pub enum Label<'a> {
    /// A class index.
    Single(i64),
    /// A multi-hot row of `K` bytes.
    Multi(&'a [u8]),
}

/// Writes one split as shards (see the module docs). `put(name, reader)` stores a finished shard file.
pub struct ShardWriter {
    split: String,
    layout: Layout,
    budget: u64,
    cur: SplitWriter,
    n: usize,
    bytes: u64,
    offsets: Vec<i64>,
    labels_k: Option<usize>,
    counts: Vec<usize>,
    total: usize,
}

impl ShardWriter {
    /// A writer for `split` with `layout`; `multilabel_k` = `Some(K)` for multi-hot labels; `budget` bytes per
    /// shard.
    pub fn new(split: &str, layout: Layout, multilabel_k: Option<usize>, budget: u64) -> Result<Self, String> {
        let mut w = ShardWriter {
            split: split.into(),
            layout,
            budget: budget.max(1),
            cur: SplitWriter::new(),
            n: 0,
            bytes: 0,
            offsets: vec![0],
            labels_k: multilabel_k,
            counts: vec![],
            total: 0,
        };
        w.declare()?;
        Ok(w)
    }

    fn declare(&mut self) -> Result<(), String> {
        match &self.layout {
            Layout::Fixed(name, dt, _) | Layout::Var(name, dt) => self.cur.declare(name, *dt),
        }
    }

    /// Examples written so far.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True before the first example.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends one example; may close the current shard into `put`.
    pub fn push(&mut self, x: Values<'_>, y: Label<'_>, put: &mut Put<'_>) -> Result<(), String> {
        // A full shard is closed when the next example arrives, so a split that ends exactly at the budget
        // stays one unsharded file.
        if self.bytes >= self.budget && self.n > 0 {
            self.close(put, true)?;
        }
        let name = match &self.layout {
            Layout::Fixed(n, _, shape) => {
                let want: usize = shape.iter().product();
                let got = match x {
                    Values::U8(v) => v.len(),
                    Values::F32(v) => v.len(),
                };
                if got != want {
                    return Err(format!("example of {got} values, expected {want} ({shape:?})"));
                }
                n.clone()
            }
            Layout::Var(n, _) => n.clone(),
        };
        match x {
            Values::U8(v) => {
                self.cur.push_u8(&name, v)?;
                self.bytes += v.len() as u64;
            }
            Values::F32(v) => {
                self.cur.push_f32(&name, v)?;
                self.bytes += 4 * v.len() as u64;
            }
        }
        if matches!(self.layout, Layout::Var(..)) {
            self.offsets.push(self.cur.len(&name) as i64);
        }
        match (y, self.labels_k) {
            (Label::Single(c), None) => self.cur.push_i64("y", &[c])?,
            (Label::Multi(row), Some(k)) if row.len() == k => self.cur.push_u8("y", row)?,
            _ => return Err("label kind does not match the split's (single or multi-hot of K)".into()),
        }
        self.n += 1;
        self.total += 1;
        Ok(())
    }

    fn close(&mut self, put: &mut Put<'_>, sharded: bool) -> Result<(), String> {
        let mut w = std::mem::take(&mut self.cur);
        let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        match &self.layout {
            Layout::Fixed(name, _, shape) => {
                let mut s = vec![self.n];
                s.extend_from_slice(shape);
                shapes.insert(name.clone(), s);
            }
            Layout::Var(name, _) => {
                shapes.insert(name.clone(), vec![w.len(name)]);
                w.push_i64("offsets", &self.offsets)?;
                shapes.insert("offsets".into(), vec![self.n + 1]);
            }
        }
        match self.labels_k {
            None => {
                w.declare("y", Dtype::I64)?;
                shapes.insert("y".into(), vec![self.n]);
            }
            Some(k) => {
                w.declare("y", Dtype::U8)?;
                shapes.insert("y".into(), vec![self.n, k]);
            }
        }
        let (r, _) = w.finish(&shapes)?;
        let file =
            if sharded { format!("{}-{:05}.safetensors", self.split, self.counts.len()) } else { format!("{}.safetensors", self.split) };
        put(&file, r)?;
        self.counts.push(self.n);
        self.n = 0;
        self.bytes = 0;
        self.offsets = vec![0];
        self.declare()
    }

    /// Closes the last shard; returns the examples per shard.
    pub fn finish(mut self, put: &mut Put<'_>) -> Result<Vec<usize>, String> {
        let sharded = !self.counts.is_empty();
        if !sharded || self.n > 0 {
            self.close(put, sharded)?;
        }
        Ok(self.counts)
    }
}

/// The shard files of `split` among an artifact's file names, in order.
pub fn shard_names<'a>(files: impl Iterator<Item = &'a String>, split: &str) -> Vec<String> {
    let single = format!("{split}.safetensors");
    let mut v: Vec<String> = files
        .filter(|f| {
            **f == single
                || f.strip_prefix(&format!("{split}-"))
                    .and_then(|r| r.strip_suffix(".safetensors"))
                    .is_some_and(|d| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .cloned()
        .collect();
    v.sort();
    v
}

#[derive(Debug)]
struct TensorAt {
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    len: u64,
}

#[derive(Debug)]
struct Shard {
    name: String,
    file: File,
    x: TensorAt,
    offsets: Option<Vec<i64>>,
}

/// Random access to one split's examples (see the module docs).
#[derive(Debug)]
pub struct SplitReader {
    shards: Vec<Shard>,
    /// First example index of each shard, plus the total at the end.
    starts: Vec<usize>,
    /// The `x`/`wave` tensor's name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Per-example shape (fixed layouts; empty for variable ones).
    pub shape: Vec<usize>,
    /// The labels of every example.
    pub labels: Labels,
}

fn header(file: &File, what: &str) -> Result<(u64, BTreeMap<String, TensorAt>), String> {
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|e| format!("{what}: {e}"))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(format!("{what}: not a safetensors file (header of {n} bytes)"));
    }
    let mut h = vec![0u8; n as usize];
    file.read_exact_at(&mut h, 8).map_err(|e| format!("{what}: {e}"))?;
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&h).map_err(|e| format!("{what}: bad safetensors header: {e}"))?;
    let base = 8 + n;
    let mut out = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let (a, b) = info.data_offsets;
        out.insert(name, TensorAt { dtype: info.dtype, shape: info.shape.clone(), start: base + a as u64, len: (b - a) as u64 });
    }
    Ok((base, out))
}

fn read_at(file: &File, start: u64, len: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, start).map_err(|e| format!("{what}: {e}"))?;
    Ok(b)
}

impl SplitReader {
    /// Opens the shards `files` (opened and checksum-verified by the caller) of one split.
    pub fn new(files: Vec<(String, File)>) -> Result<Self, String> {
        if files.is_empty() {
            return Err("no shard files".into());
        }
        let (mut shards, mut starts) = (vec![], vec![0usize]);
        let (mut single, mut multi, mut k) = (vec![], vec![], None);
        let mut name = String::new();
        for (fname, file) in files {
            let (_, mut t) = header(&file, &fname)?;
            let y = t.remove("y").ok_or_else(|| format!("{fname}: no labels `y`"))?;
            let yb = read_at(&file, y.start, y.len as usize, &fname)?;
            let n = y.shape.first().copied().unwrap_or(0);
            match (y.dtype, y.shape.len()) {
                (Dtype::I64, 1) => single.extend(yb.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()))),
                (Dtype::U8, 2) => {
                    k = Some(y.shape[1]);
                    multi.extend_from_slice(&yb);
                }
                _ => return Err(format!("{fname}: labels `y` have an unexpected layout {:?}", y.shape)),
            }
            let offsets = match t.remove("offsets") {
                Some(o) => {
                    let b = read_at(&file, o.start, o.len as usize, &fname)?;
                    Some(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<i64>>())
                }
                None => None,
            };
            let (xn, x) = t.into_iter().next().ok_or_else(|| format!("{fname}: no example tensor"))?;
            if name.is_empty() {
                name = xn;
            }
            starts.push(starts.last().unwrap() + n);
            shards.push(Shard { name: fname, file, x, offsets });
        }
        let labels = match k {
            Some(k) => Labels::Multi(multi, k),
            None => Labels::Single(single),
        };
        let first = &shards[0];
        let shape = if first.offsets.is_some() { vec![] } else { first.x.shape[1..].to_vec() };
        Ok(SplitReader { dtype: first.x.dtype, shape, name, shards, starts, labels })
    }

    /// Examples.
    pub fn len(&self) -> usize {
        *self.starts.last().unwrap()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn locate(&self, i: usize) -> (&Shard, usize) {
        let s = self.starts.partition_point(|&st| st <= i) - 1;
        (&self.shards[s], i - self.starts[s])
    }

    /// The raw little-endian bytes of example `i`'s values.
    pub fn raw(&self, i: usize) -> Result<Vec<u8>, String> {
        if i >= self.len() {
            return Err(format!("example {i} of {}", self.len()));
        }
        let (sh, j) = self.locate(i);
        let size = (self.dtype.bitsize() / 8) as u64;
        let (a, b) = match &sh.offsets {
            Some(o) => (o[j] as u64 * size, o[j + 1] as u64 * size),
            None => {
                let per: u64 = self.shape.iter().product::<usize>() as u64 * size;
                (j as u64 * per, (j as u64 + 1) * per)
            }
        };
        if b > sh.x.len || a > b {
            return Err(format!("{}: example {i}: range {a}..{b} outside its tensor of {} bytes", sh.name, sh.x.len));
        }
        read_at(&sh.file, sh.x.start + a, (b - a) as usize, &sh.name)
    }

    /// Example `i` as floats (u8 values cast, f32 read as they are).
    pub fn f32s(&self, i: usize) -> Result<Vec<f32>, String> {
        let b = self.raw(i)?;
        match self.dtype {
            Dtype::U8 => Ok(b.iter().map(|&v| v as f32).collect()),
            Dtype::F32 => Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            other => Err(format!("dtype {other:?} is not supported for examples")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tensors::{encode, Array, Named};
    use std::io::Read;

    fn collect(w: ShardWriter, pushes: Vec<(Vec<u8>, i64)>) -> (BTreeMap<String, Vec<u8>>, Vec<usize>) {
        let mut files = BTreeMap::new();
        let mut w = w;
        let mut put = |name: &str, mut r: Box<dyn Read>| {
            let mut b = vec![];
            r.read_to_end(&mut b).unwrap();
            files.insert(name.to_string(), b);
            Ok(())
        };
        for (x, y) in &pushes {
            w.push(Values::U8(x), Label::Single(*y), &mut put).unwrap();
        }
        let counts = w.finish(&mut put).unwrap();
        (files, counts)
    }

    fn reader(files: &BTreeMap<String, Vec<u8>>, split: &str) -> SplitReader {
        let d = tempfile::tempdir().unwrap();
        let opened = shard_names(files.keys(), split)
            .into_iter()
            .map(|n| {
                let p = d.path().join(&n);
                std::fs::write(&p, &files[&n]).unwrap();
                (n, File::open(p).unwrap())
            })
            .collect();
        SplitReader::new(opened).unwrap()
    }

    #[test]
    fn one_shard_is_the_unsharded_format_and_shards_read_back() {
        let pushes: Vec<(Vec<u8>, i64)> = (0..7).map(|i| (vec![i as u8; 6], i % 3)).collect();
        let (files, counts) =
            collect(ShardWriter::new("train", Layout::Fixed("x".into(), Dtype::U8, vec![2, 3]), None, 1 << 20).unwrap(), pushes.clone());
        assert_eq!(counts, [7]);
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), Named { shape: vec![7, 2, 3], data: Array::U8(pushes.iter().flat_map(|p| p.0.clone()).collect()) });
        m.insert("y".to_string(), Named { shape: vec![7], data: Array::I64(pushes.iter().map(|p| p.1).collect()) });
        assert_eq!(files["train.safetensors"], encode(&m), "byte for byte the unsharded file");
        // Exactly the budget (42 bytes = 7 examples): still one unsharded file.
        let (files, counts) =
            collect(ShardWriter::new("train", Layout::Fixed("x".into(), Dtype::U8, vec![2, 3]), None, 42).unwrap(), pushes.clone());
        assert_eq!((counts, files.keys().cloned().collect::<Vec<_>>()), (vec![7], vec!["train.safetensors".to_string()]));
        // A 12-byte budget: a shard closes after every second example.
        let (files, counts) =
            collect(ShardWriter::new("train", Layout::Fixed("x".into(), Dtype::U8, vec![2, 3]), None, 12).unwrap(), pushes.clone());
        assert_eq!(counts, [2, 2, 2, 1]);
        assert_eq!(files.keys().cloned().collect::<Vec<_>>(), (0..4).map(|k| format!("train-{k:05}.safetensors")).collect::<Vec<_>>());
        let r = reader(&files, "train");
        assert_eq!((r.len(), r.shape.clone()), (7, vec![2, 3]));
        for (i, (x, _)) in pushes.iter().enumerate() {
            assert_eq!(&r.raw(i).unwrap(), x);
        }
        assert_eq!(r.labels, Labels::Single(pushes.iter().map(|p| p.1).collect()));
        assert!(r.raw(7).is_err());
    }

    #[test]
    fn variable_records_and_multilabels() {
        let mut files = BTreeMap::new();
        let mut put = |name: &str, mut r: Box<dyn Read>| {
            let mut b = vec![];
            r.read_to_end(&mut b).unwrap();
            files.insert(name.to_string(), b);
            Ok(())
        };
        let mut w = ShardWriter::new("val", Layout::Var("wave".into(), Dtype::F32), Some(3), 20).unwrap();
        let waves: Vec<Vec<f32>> = vec![vec![0.5; 3], vec![-1.0; 5], vec![2.0; 1]];
        for (i, x) in waves.iter().enumerate() {
            let row = [i as u8 % 2, 1, 0];
            w.push(Values::F32(x), Label::Multi(&row), &mut put).unwrap();
        }
        assert_eq!(w.finish(&mut put).unwrap(), [2, 1]);
        let r = reader(&files, "val");
        for (i, x) in waves.iter().enumerate() {
            assert_eq!(&r.f32s(i).unwrap(), x);
        }
        assert_eq!(r.labels, Labels::Multi(vec![0, 1, 0, 1, 1, 0, 0, 1, 0], 3));
        assert!(shard_names(["val-1.safetensors".to_string(), "valx.safetensors".to_string()].iter(), "val").is_empty());
    }
}
