//! IDX files (the MNIST format), raw or gzip: magic `0x0000_08TT_DD` (type 0x08 = u8, DD = rank), big-endian
//! sizes, then the data. [`IdxStream`] reads one record (one image) at a time.

use super::error::DataError;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A u8 IDX array read whole (for small files such as labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values.
    pub data: Vec<u8>,
}

/// An open IDX file whose records (slices along the first dimension) are read one at a time.
pub struct IdxStream {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    path: PathBuf,
    r: Box<dyn Read>,
    read: usize,
}

fn header(b: &[u8]) -> Result<usize, String> {
    if b.len() < 4 {
        return Err("truncated IDX file (no header)".into());
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(format!("bad IDX magic {:02x}{:02x}{:02x}{:02x}: not an IDX file", b[0], b[1], b[2], b[3]));
    }
    if b[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", b[2]));
    }
    if b[3] == 0 {
        return Err("truncated IDX header".into());
    }
    Ok(b[3] as usize)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl IdxStream {
    /// Opens `path` (gzip detected by its magic bytes) and reads its header. For a raw file the data size is
    /// checked against the header at once; for gzip, while reading.
    pub fn open(path: &Path) -> Result<IdxStream, DataError> {
        let err = |m: String| DataError::new(path, m);
        let f = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}; check the dataset `path`")))?;
        let file_len = f.metadata().map(|m| m.len()).ok();
        let mut br = BufReader::with_capacity(1 << 16, f);
        let gz = br.fill_buf().map_err(|e| err(format!("cannot read: {e}")))?.starts_with(&[0x1f, 0x8b]);
        let mut r: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(br)) } else { Box::new(br) };
        let io = |e: std::io::Error| {
            if gz {
                err(format!("corrupt gzip stream: {e}; re-download the file"))
            } else {
                err(format!("cannot read: {e}"))
            }
        };
        let mut h = [0u8; 4];
        let got = read_full(&mut r, &mut h).map_err(io)?;
        let rank = header(&h[..got]).map_err(err)?;
        let mut d = vec![0u8; 4 * rank];
        if read_full(&mut r, &mut d).map_err(io)? < d.len() {
            return Err(err("truncated IDX header".into()));
        }
        let dims: Vec<usize> = d.chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
        let n: usize = dims.iter().product();
        if let (false, Some(len)) = (gz, file_len) {
            let body = len as usize - 4 - 4 * rank;
            if body < n {
                return Err(err(format!("truncated IDX data: header {dims:?} needs {n} bytes, file has {body}")));
            }
            if body > n {
                return Err(err(format!("IDX file has {} trailing bytes after {dims:?}", body - n)));
            }
        }
        Ok(IdxStream { dims, path: path.to_path_buf(), r, read: 0 })
    }

    /// Number of records (the first dimension).
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }

    /// Bytes per record.
    pub fn record_len(&self) -> usize {
        self.dims[1..].iter().product()
    }

    /// Reads the next record into `buf` (of [`Self::record_len`] bytes).
    pub fn next_into(&mut self, buf: &mut [u8]) -> Result<(), DataError> {
        let got =
            read_full(&mut self.r, buf).map_err(|e| DataError::new(&self.path, format!("corrupt data: {e}; re-download the file")))?;
        if got < buf.len() {
            let n: usize = self.dims.iter().product();
            let have = self.read * buf.len() + got;
            return Err(DataError::new(&self.path, format!("truncated IDX data: header {:?} needs {n} bytes, file has {have}", self.dims)));
        }
        self.read += 1;
        Ok(())
    }

    /// After the last record: checks that nothing follows.
    pub fn finish(mut self) -> Result<(), DataError> {
        let mut one = [0u8; 1];
        let extra = read_full(&mut self.r, &mut one).map_err(|e| DataError::new(&self.path, format!("corrupt data: {e}")))?;
        if extra > 0 {
            return Err(DataError::new(&self.path, format!("IDX file has trailing bytes after {:?}", self.dims)));
        }
        Ok(())
    }
}

/// Reads a whole IDX file.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let mut s = IdxStream::open(path)?;
    let mut data = vec![0u8; s.dims.iter().product()];
    let rl = s.record_len().max(1);
    for rec in data.chunks_mut(rl) {
        s.next_into(rec)?;
    }
    let dims = s.dims.clone();
    s.finish()?;
    Ok(Idx { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn file(bytes: &[u8], gz: bool) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        if gz {
            let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            f.write_all(&e.finish().unwrap()).unwrap();
        } else {
            f.write_all(bytes).unwrap();
        }
        f
    }

    #[test]
    fn reads_raw_and_gzip_and_rejects() {
        for gz in [false, true] {
            let f = file(&idx(&[2, 2], &[1, 2, 3, 4]), gz);
            assert_eq!(read_idx(f.path()).unwrap(), Idx { dims: vec![2, 2], data: vec![1, 2, 3, 4] });
            let f = file(&idx(&[2, 2], &[1, 2, 3]), gz);
            assert!(read_idx(f.path()).unwrap_err().message.contains("truncated IDX data"), "gz={gz}");
            let f = file(&idx(&[2, 2], &[1, 2, 3, 4, 5]), gz);
            assert!(read_idx(f.path()).unwrap_err().message.contains("trailing bytes"), "gz={gz}");
            let f = file(&[1, 2, 3, 4, 5], gz);
            assert!(read_idx(f.path()).unwrap_err().message.contains("bad IDX magic"), "gz={gz}");
        }
    }
}
