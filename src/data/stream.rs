//! Writing safetensors files without holding their tensors in memory: each tensor's bytes go to an anonymous
//! temp file as records arrive; [`SplitWriter::finish`] yields the header followed by the tensors as one
//! stream. The bytes are exactly those of `safetensors::serialize` (same header, same tensor order: by
//! descending dtype, then name), so streamed and in-memory artifacts have the same digests.

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

struct TensorFile {
    dtype: Dtype,
    elems: usize,
    file: BufWriter<File>,
}

/// The tensors of one split file, filled record by record.
#[derive(Default)]
pub struct SplitWriter {
    tensors: BTreeMap<String, TensorFile>,
}

fn io(e: std::io::Error) -> String {
    format!("temporary file: {e}")
}

impl SplitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    fn tensor(&mut self, name: &str, dtype: Dtype) -> Result<&mut TensorFile, String> {
        if !self.tensors.contains_key(name) {
            let file = tempfile::tempfile().map_err(io)?;
            self.tensors.insert(name.to_string(), TensorFile { dtype, elems: 0, file: BufWriter::with_capacity(1 << 20, file) });
        }
        let t = self.tensors.get_mut(name).unwrap();
        if t.dtype != dtype {
            return Err(format!("tensor `{name}` is {:?}, not {dtype:?}", t.dtype));
        }
        Ok(t)
    }

    /// Declares tensor `name` (so an empty split still has it).
    pub fn declare(&mut self, name: &str, dtype: Dtype) -> Result<(), String> {
        self.tensor(name, dtype).map(|_| ())
    }

    /// Appends bytes to a u8 tensor.
    pub fn push_u8(&mut self, name: &str, v: &[u8]) -> Result<(), String> {
        let t = self.tensor(name, Dtype::U8)?;
        t.elems += v.len();
        t.file.write_all(v).map_err(io)
    }

    /// Appends floats (little-endian) to an f32 tensor.
    pub fn push_f32(&mut self, name: &str, v: &[f32]) -> Result<(), String> {
        self.push_pod(name, Dtype::F32, v)
    }

    /// Appends integers (little-endian) to an i64 tensor.
    pub fn push_i64(&mut self, name: &str, v: &[i64]) -> Result<(), String> {
        self.push_pod(name, Dtype::I64, v)
    }

    /// One `write_all` per call, not per element. The values' memory is written as is, like
    /// [`crate::data::tensors::encode`] does: little-endian targets, as safetensors requires.
    fn push_pod<T: bytemuck::Pod>(&mut self, name: &str, dtype: Dtype, v: &[T]) -> Result<(), String> {
        let t = self.tensor(name, dtype)?;
        t.elems += v.len();
        t.file.write_all(bytemuck::cast_slice(v)).map_err(io)
    }

    /// Elements written to `name` so far.
    pub fn len(&self, name: &str) -> usize {
        self.tensors.get(name).map(|t| t.elems).unwrap_or(0)
    }

    /// Finishes with each tensor's shape (whose product must equal its element count); returns the file as a
    /// stream and its total size.
    pub fn finish(self, shapes: &BTreeMap<String, Vec<usize>>) -> Result<(Box<dyn Read>, u64), String> {
        let mut items: Vec<(String, TensorFile)> = self.tensors.into_iter().collect();
        if let Some(k) = shapes.keys().find(|k| !items.iter().any(|(n, _)| n == *k)) {
            return Err(format!("no tensor `{k}` was written"));
        }
        // safetensors' order: descending dtype, then name.
        items.sort_by(|(ln, l), (rn, r)| r.dtype.cmp(&l.dtype).then(ln.cmp(rn)));
        let mut infos = vec![];
        let mut offset = 0usize;
        let mut files = vec![];
        for (name, t) in items {
            let shape = shapes.get(&name).ok_or_else(|| format!("no shape for tensor `{name}`"))?.clone();
            if shape.iter().product::<usize>() != t.elems {
                return Err(format!("tensor `{name}`: shape {shape:?} but {} elements written", t.elems));
            }
            let n = t.elems * t.dtype.bitsize() / 8;
            infos.push((name, TensorInfo { dtype: t.dtype, shape, data_offsets: (offset, offset + n) }));
            offset += n;
            let mut f = t.file.into_inner().map_err(|e| io(e.into_error()))?;
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            files.push(f.take(n as u64));
        }
        let meta = Metadata::new(None, infos).map_err(|e| format!("safetensors header: {e}"))?;
        let mut header = serde_json::to_string(&meta).map_err(|e| e.to_string())?.into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut head = (header.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&header);
        let total = head.len() as u64 + offset as u64;
        let mut r: Box<dyn Read> = Box::new(std::io::Cursor::new(head));
        for f in files {
            r = Box::new(r.chain(f));
        }
        Ok((r, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tensors::{encode, Array, Named};

    #[test]
    fn streamed_bytes_equal_safetensors_serialize() {
        let x: Vec<u8> = (0..2 * 3 * 5).map(|i| (i * 7 % 256) as u8).collect();
        let wave: Vec<f32> = (0..11).map(|i| i as f32 * 0.25 - 1.0).collect();
        let y = vec![3i64, -1];
        let mut w = SplitWriter::new();
        // Records arrive one at a time, in any tensor order.
        w.push_i64("y", &y[..1]).unwrap();
        for rec in x.chunks(15) {
            w.push_u8("x", rec).unwrap();
        }
        w.push_f32("wave", &wave).unwrap();
        w.push_i64("y", &y[1..]).unwrap();
        let shapes: BTreeMap<String, Vec<usize>> =
            [("x".to_string(), vec![2, 3, 5]), ("wave".to_string(), vec![11]), ("y".to_string(), vec![2])].into();
        let (mut r, total) = w.finish(&shapes).unwrap();
        let mut got = vec![];
        r.read_to_end(&mut got).unwrap();
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), Named { shape: vec![2, 3, 5], data: Array::U8(x) });
        m.insert("wave".to_string(), Named { shape: vec![11], data: Array::F32(wave) });
        m.insert("y".to_string(), Named { shape: vec![2], data: Array::I64(y) });
        assert_eq!(got, encode(&m));
        assert_eq!(total as usize, got.len());
    }

    #[test]
    fn empty_tensor_and_shape_mismatch() {
        let mut w = SplitWriter::new();
        w.declare("x", Dtype::U8).unwrap();
        let (mut r, _) = w.finish(&[("x".to_string(), vec![0, 4])].into()).unwrap();
        let mut got = vec![];
        r.read_to_end(&mut got).unwrap();
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), Named { shape: vec![0, 4], data: Array::U8(vec![]) });
        assert_eq!(got, encode(&m));
        let mut w = SplitWriter::new();
        w.push_u8("x", &[1, 2, 3]).unwrap();
        assert!(w.finish(&[("x".to_string(), vec![2, 2])].into()).err().unwrap().contains("3 elements"));
    }
}
