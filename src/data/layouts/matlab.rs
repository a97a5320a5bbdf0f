//! Just enough of MATLAB's Level 5 MAT-file format to read ILSVRC-2012's `meta.mat` (the devkit's `synsets`
//! struct array, which maps the validation ground truth's ILSVRC2012_IDs to WordNet ids): numeric arrays,
//! character arrays, struct and cell arrays, compressed (zlib) or not, little-endian.
//! No maintained Rust crate reads MAT struct arrays; the format is public (MathWorks, "MAT-File Format").

use std::io::Read;

/// A MATLAB value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Numbers (any numeric class, as f64), column-major.
    Num(Vec<f64>),
    /// A character array (a row of text).
    Text(String),
    /// A struct array: field names, then each element's values in field order.
    Struct(Vec<String>, Vec<Vec<Value>>),
    /// A cell array.
    Cell(Vec<Value>),
    /// Anything else (sparse, objects, …) or empty.
    Other,
}

const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.b.get(self.pos..self.pos + 4).ok_or("truncated MAT file")?;
        self.pos += 4;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// One data element: (type, bytes); small elements (≤ 4 bytes) are packed in their tag.
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            let data = self.b.get(self.pos..self.pos + n).ok_or("truncated MAT element")?;
            self.pos += 4;
            return Ok((ty, data));
        }
        let n = self.u32()? as usize;
        let data = self.b.get(self.pos..self.pos + n).ok_or("truncated MAT element")?;
        self.pos += n;
        if first != MI_COMPRESSED {
            self.pos = self.pos.next_multiple_of(8);
        }
        Ok((first, data))
    }

    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

fn numbers(ty: u32, d: &[u8]) -> Vec<f64> {
    match ty {
        1 => d.iter().map(|&v| v as i8 as f64).collect(),
        2 => d.iter().map(|&v| v as f64).collect(),
        3 => d.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        4 => d.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        5 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        6 => d.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        7 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        9 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        12 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        13 => d.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        _ => vec![],
    }
}

/// Nesting deeper than this is not a devkit file.
const MAX_DEPTH: usize = 16;

/// Parses the contents of one miMATRIX element: (name, value).
fn matrix(d: &[u8], depth: usize) -> Result<(String, Value), String> {
    if d.is_empty() {
        return Ok((String::new(), Value::Other));
    }
    if depth > MAX_DEPTH {
        return Err("MAT arrays nested too deeply".into());
    }
    let mut c = Cursor { b: d, pos: 0 };
    let (_, flags) = c.element()?;
    let class = *flags.first().ok_or("MAT array without flags")?;
    let (_, dims) = c.element()?;
    let count = dims
        .chunks_exact(4)
        .try_fold(1usize, |n, x| n.checked_mul(i32::from_le_bytes(x.try_into().unwrap()).max(0) as usize))
        .ok_or("MAT array dimensions overflow")?;
    // Every element of a cell or struct takes at least an 8-byte tag: more than the bytes left is corrupt.
    if matches!(flags.first(), Some(1 | 2)) && count > d.len() / 8 + 1 {
        return Err("MAT array claims more elements than its bytes hold".into());
    }
    let (_, name) = c.element()?;
    let name = String::from_utf8_lossy(name).to_string();
    let value = match class {
        // mxCELL_CLASS
        1 => {
            let mut v = vec![];
            for _ in 0..count {
                let (_, e) = c.element()?;
                v.push(matrix(e, depth + 1)?.1);
            }
            Value::Cell(v)
        }
        // mxSTRUCT_CLASS
        2 => {
            let (_, len) = c.element()?;
            let len = numbers(5, len).first().copied().unwrap_or(0.0) as usize; // miINT32
            let (_, names) = c.element()?;
            let fields: Vec<String> = if len == 0 {
                vec![]
            } else {
                names.chunks(len).map(|n| String::from_utf8_lossy(n).trim_end_matches('\0').to_string()).collect()
            };
            let mut elems = vec![];
            for _ in 0..count {
                let mut vals = vec![];
                for _ in &fields {
                    let (_, e) = c.element()?;
                    vals.push(matrix(e, depth + 1)?.1);
                }
                elems.push(vals);
            }
            Value::Struct(fields, elems)
        }
        // mxCHAR_CLASS: UTF-8/UTF-16/… code units, column-major (a 1 × N row is the text itself).
        4 => {
            let (ty, data) = c.element()?;
            let text = match ty {
                16 | 1 | 2 => String::from_utf8_lossy(data).to_string(),
                _ => numbers(ty, data).into_iter().filter_map(|u| char::from_u32(u as u32)).collect(),
            };
            Value::Text(text)
        }
        // Numeric classes (double, single, int8 … uint64).
        6..=15 => {
            let (ty, data) = c.element()?;
            Value::Num(numbers(ty, data))
        }
        _ => Value::Other,
    };
    Ok((name, value))
}

/// The top-level variables of a MAT file (Level 5, little-endian).
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
    if bytes.len() < 128 || &bytes[126..128] != b"IM" {
        return Err("not a little-endian MATLAB 5 MAT-file (v7.3 HDF5 files are not supported)".into());
    }
    let mut c = Cursor { b: &bytes[128..], pos: 0 };
    let mut out = vec![];
    while !c.done() {
        let (ty, data) = c.element()?;
        match ty {
            MI_MATRIX => out.push(matrix(data, 0)?),
            MI_COMPRESSED => {
                let mut inflated = vec![];
                flate2::read::ZlibDecoder::new(data).read_to_end(&mut inflated).map_err(|e| format!("compressed MAT element: {e}"))?;
                let mut inner = Cursor { b: &inflated, pos: 0 };
                while !inner.done() {
                    let (t, d) = inner.element()?;
                    if t == MI_MATRIX {
                        out.push(matrix(d, 0)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The devkit's `synsets`: ILSVRC2012_ID → WNID for IDs 1…1000 (index 0 = ID 1).
pub fn ilsvrc_synsets(bytes: &[u8]) -> Result<Vec<String>, String> {
    let vars = read(bytes)?;
    let Some((_, Value::Struct(fields, elems))) = vars.into_iter().find(|(n, _)| n == "synsets") else {
        return Err("no `synsets` struct array (is this the ILSVRC-2012 devkit's data/meta.mat?)".into());
    };
    let at = |f: &str| fields.iter().position(|x| x == f).ok_or(format!("`synsets` has no field {f}"));
    let (id, wnid) = (at("ILSVRC2012_ID")?, at("WNID")?);
    let mut map = vec![String::new(); 1000];
    for e in &elems {
        if let (Value::Num(n), Value::Text(w)) = (&e[id], &e[wnid]) {
            if let Some(&k) = n.first() {
                if (1.0..=1000.0).contains(&k) {
                    map[k as usize - 1] = w.clone();
                }
            }
        }
    }
    if let Some(k) = map.iter().position(String::is_empty) {
        return Err(format!("`synsets` lacks ILSVRC2012_ID {}", k + 1));
    }
    Ok(map)
}

/// Writes a little-endian Level 5 MAT file holding `synsets` with fields ILSVRC2012_ID and WNID (zlib-compressed
/// when `compress`): what the tests' miniature devkits contain.
pub fn write_synsets(ids: &[(f64, &str)], compress: bool) -> Vec<u8> {
    fn el(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(8), 0);
        v
    }
    fn mat(class: u8, dims: &[i32], name: &str, body: &[u8]) -> Vec<u8> {
        let mut d = el(6, &[class, 0, 0, 0, 0, 0, 0, 0]);
        d.extend(el(5, &dims.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
        d.extend(el(1, name.as_bytes()));
        d.extend_from_slice(body);
        el(MI_MATRIX, &d)
    }
    let mut body = el(5, &32i32.to_le_bytes());
    let mut names = vec![0u8; 64];
    names[..13].copy_from_slice(b"ILSVRC2012_ID");
    names[32..36].copy_from_slice(b"WNID");
    body.extend(el(1, &names));
    for (id, w) in ids {
        body.extend(mat(6, &[1, 1], "", &el(9, &id.to_le_bytes())));
        body.extend(mat(4, &[1, w.len() as i32], "", &el(16, w.as_bytes())));
    }
    let m = mat(2, &[1, ids.len() as i32], "synsets", &body);
    let mut out = vec![b' '; 116];
    out[..10].copy_from_slice(b"MATLAB 5.0");
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    if compress {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::default());
        z.write_all(&m).unwrap();
        let c = z.finish().unwrap();
        out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(&c);
    } else {
        out.extend_from_slice(&m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synsets_round_trip_compressed_or_not() {
        let mut ids: Vec<(f64, String)> = (1..=1000).map(|k| (k as f64, format!("n{:08}", 2000 - k))).collect();
        ids.push((1001.0, "n99999999".into())); // an inner node: ignored
        let refs: Vec<(f64, &str)> = ids.iter().map(|(k, w)| (*k, w.as_str())).collect();
        for compress in [false, true] {
            let map = ilsvrc_synsets(&write_synsets(&refs, compress)).unwrap();
            assert_eq!((map[0].as_str(), map[999].as_str()), ("n00001999", "n00001000"));
        }
        let e = ilsvrc_synsets(&write_synsets(&refs[..10], true)).unwrap_err();
        assert!(e.contains("ILSVRC2012_ID 11"), "{e}");
        assert!(read(b"not a mat file").is_err());
    }
}
