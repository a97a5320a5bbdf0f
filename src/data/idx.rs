//! IDX files (the MNIST format), raw or gzip: magic `0x0000_08TT_DD` (type 0x08 = u8, DD = rank), big-endian
//! sizes, then the data.

use super::error::{read, DataError};
use std::io::Read;
use std::path::Path;

/// A u8 IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values.
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip detected by its magic bytes).
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let raw = read(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path, format!("corrupt gzip stream: {e}; re-download the file")))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|m| DataError::new(path, m))
}

/// Parses IDX bytes.
pub fn parse_idx(b: &[u8]) -> Result<Idx, String> {
    if b.len() < 4 {
        return Err("truncated IDX file (no header)".into());
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(format!("bad IDX magic {:02x}{:02x}{:02x}{:02x}: not an IDX file", b[0], b[1], b[2], b[3]));
    }
    if b[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", b[2]));
    }
    let rank = b[3] as usize;
    if rank == 0 || b.len() < 4 + 4 * rank {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..rank).map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    let body = &b[4 + 4 * rank..];
    if body.len() < n {
        return Err(format!("truncated IDX data: header {dims:?} needs {n} bytes, file has {}", body.len()));
    }
    if body.len() > n {
        return Err(format!("IDX file has {} trailing bytes after {dims:?}", body.len() - n));
    }
    Ok(Idx { dims, data: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }
    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_idx(&idx(&[2, 2], &[1, 2, 3, 4])).unwrap().dims, [2, 2]);
        assert!(parse_idx(&idx(&[2, 2], &[1, 2, 3])).unwrap_err().contains("truncated"));
        assert!(parse_idx(&[1, 2, 3, 4, 5]).unwrap_err().contains("bad IDX magic"));
    }
}
