//! Image readers: IDX pairs and CIFAR-10/100 binary (class folders are a layout: [`super::layouts::folders`]), and
//! image decoding.
//!
//! Each reader first reads what is small (labels, file lists, headers) and checks it, then streams the
//! examples one at a time through [`Images::for_each`]: nothing holds a whole split in memory.

use super::error::DataError;
use super::idx::{read_idx, IdxStream};
use std::io::Read;
use std::path::{Path, PathBuf};

enum Source {
    Idx(PathBuf),
    Cifar { files: Vec<PathBuf>, label_bytes: usize },
}

/// A set of u8 examples with integer labels, read one at a time.
pub struct Images {
    /// Shape of one example: `[H, W, C]` for images, `[T, H, W, C]` for clips.
    pub shape: Vec<usize>,
    /// Labels, one per example.
    pub labels: Vec<i64>,
    src: Source,
}

impl Images {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per example.
    pub fn record_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Calls `f(index, example)` for every `wanted` example in order, decoding one at a time (files of
    /// unwanted examples are not decoded; streams are still read through and checked).
    pub fn for_each<E: From<DataError>>(
        &self,
        wanted: impl Fn(usize) -> bool,
        mut f: impl FnMut(usize, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = vec![0u8; self.record_len()];
        match &self.src {
            Source::Idx(path) => {
                let mut s = IdxStream::open(path)?;
                for i in 0..self.len() {
                    s.next_into(&mut buf)?;
                    if wanted(i) {
                        f(i, &buf)?;
                    }
                }
                Ok(s.finish()?)
            }
            Source::Cifar { files, label_bytes } => {
                let mut rec = vec![0u8; label_bytes + 3072];
                let mut i = 0;
                for path in files {
                    let mut r = std::io::BufReader::with_capacity(1 << 20, open(path)?);
                    loop {
                        match r.read_exact(&mut rec) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                            Err(e) => return Err(DataError::new(path, format!("cannot read: {e}")).into()),
                        }
                        if !wanted(i) {
                            i += 1;
                            continue;
                        }
                        // R, G, B planes of 32×32 → interleaved HWC.
                        let px = &rec[*label_bytes..];
                        for p in 0..1024 {
                            buf[3 * p..3 * p + 3].copy_from_slice(&[px[p], px[1024 + p], px[2048 + p]]);
                        }
                        f(i, &buf)?;
                        i += 1;
                    }
                }
                Ok(())
            }
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File, DataError> {
    std::fs::File::open(path).map_err(|e| DataError::new(path, format!("cannot read: {e}; check the dataset `path`")))
}

/// An images IDX file plus a labels IDX file: the labels are read and checked, the images' header checked.
pub fn idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<Images, DataError> {
    let x = IdxStream::open(images)?;
    let y = read_idx(labels)?;
    if x.dims.len() != 3 {
        return Err(DataError::new(images, format!("expected an images IDX of rank 3 [N, H, W], found {:?}", x.dims)));
    }
    if y.dims.len() != 1 {
        return Err(DataError::new(labels, format!("expected a labels IDX of rank 1, found {:?}", y.dims)));
    }
    if x.dims[0] != y.dims[0] {
        return Err(DataError::new(labels, format!("{} labels for {} images in {}", y.dims[0], x.dims[0], images.display())));
    }
    if let Some(bad) = y.data.iter().find(|&&l| l as usize >= classes) {
        return Err(DataError::new(labels, format!("label {bad} is not in the class list ({classes} classes)")));
    }
    Ok(Images {
        shape: vec![x.dims[1], x.dims[2], 1],
        labels: y.data.iter().map(|&l| l as i64).collect(),
        src: Source::Idx(images.to_path_buf()),
    })
}

/// CIFAR binary batches: each record is `label(s)` then 3072 bytes (R, G, B planes of 32×32). `coarse`
/// selects CIFAR-100's coarse label (records carry coarse then fine). Labels are read in a first pass.
pub fn cifar(files: &[PathBuf], cifar100: bool, coarse: bool) -> Result<Images, DataError> {
    let lb = if cifar100 { 2 } else { 1 };
    let rec = lb + 3072;
    let classes = if !cifar100 {
        10
    } else if coarse {
        20
    } else {
        100
    };
    let mut labels = vec![];
    for f in files {
        let len = open(f)?.metadata().map(|m| m.len() as usize).unwrap_or(0);
        if len == 0 {
            return Err(DataError::new(f, "is empty (0 bytes): an interrupted download? Download it again or remove it"));
        }
        if len % rec != 0 {
            return Err(DataError::new(
                f,
                format!(
                    "size {len} is not a multiple of the {rec}-byte CIFAR record: truncated or not a CIFAR{} binary",
                    if cifar100 { "-100" } else { "-10" }
                ),
            ));
        }
        let mut r = std::io::BufReader::with_capacity(1 << 20, open(f)?);
        let mut buf = vec![0u8; rec];
        for n in 0..len / rec {
            r.read_exact(&mut buf).map_err(|e| DataError::new(f, format!("cannot read: {e}")))?;
            let label = if cifar100 && !coarse { buf[1] } else { buf[0] } as i64;
            if label >= classes {
                return Err(DataError::new(
                    f,
                    format!(
                        "record {n} (byte {}): label {label} is not in the class list ({classes} classes): the file is damaged, or \
                         not this dataset's (CIFAR-100 for CIFAR-10?)",
                        n * rec
                    ),
                ));
            }
            labels.push(label);
        }
    }
    Ok(Images { shape: vec![32, 32, 3], labels, src: Source::Cifar { files: files.to_vec(), label_bytes: lb } })
}

/// Sorted subfolder names of `root` (hidden ones, such as `.ipynb_checkpoints`, left out).
pub fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| DataError::new(root, format!("cannot read dataset folder: {e}")))?
        .flatten()
        .filter(|e| e.path().is_dir() && !super::layouts::hidden(&e.file_name()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(DataError::new(root, "no class subfolders found"));
    }
    Ok(v)
}

/// An image decoded to interleaved RGB8.
pub struct Rgb {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `h × w × 3` bytes.
    pub px: Vec<u8>,
}

/// Whether `bytes` are a JPEG cut short: walking its segments from the start (each header segment skipped by its
/// length, each scan's entropy-coded data up to the next marker), the bytes end before the end-of-image marker
/// (`FF D9`). Whatever follows that marker is not read (Motion Photos append a video; some cameras append
/// data). The JPEG decoder itself fills a missing end with grey and says nothing.
pub fn truncated_jpeg(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    // The length of the segment whose length field starts at `at`, if the whole segment is there.
    let segment = |at: usize| -> Option<usize> {
        let len = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        (len >= 2 && at + len <= b.len()).then_some(len)
    };
    let mut i = 2;
    loop {
        // The next marker: FF (fill bytes FF allowed), then its code; stray bytes before it are skipped, as
        // decoders do.
        match b[i..].iter().position(|&x| x == 0xFF) {
            Some(k) => i += k,
            None => return true,
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = b.get(i) else { return true };
        i += 1;
        match code {
            0xD9 => return false,
            // Restart markers and TEM carry no length.
            0xD0..=0xD7 | 0x01 => {}
            0xDA => {
                let Some(len) = segment(i) else { return true };
                i += len;
                // Entropy-coded data: FF 00 is a data byte, FF D0–D7 a restart, FF FF fill; any other FF xx a marker.
                loop {
                    match b[i..].iter().position(|&x| x == 0xFF) {
                        Some(k) => i += k,
                        None => return true,
                    }
                    match b.get(i + 1) {
                        None => return true,
                        Some(0x00 | 0xD0..=0xD7) => i += 2,
                        Some(0xFF) => i += 1,
                        Some(_) => break,
                    }
                }
            }
            _ => {
                let Some(len) = segment(i) else { return true };
                i += len;
            }
        }
    }
}

/// Decodes an encoded image (JPEG, PNG, BMP, PNM, TIFF or WebP, format from its bytes) to an image; a JPEG cut
/// short is an error ([`truncated_jpeg`]).
pub fn decode(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    if truncated_jpeg(bytes) {
        return Err("truncated JPEG: the file ends before its image data does (an interrupted copy or download?)".into());
    }
    image::load_from_memory(bytes).map_err(|e| format!("undecodable image: {}", one_line(&e.to_string())))
}

/// A decoder's message on one line (some span several): it goes into `status` rows and error messages.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes an encoded image (format from its bytes) to RGB; used at ingestion (to check a file) and per batch
/// (to crop it).
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb, String> {
    let img = decode(bytes)?;
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    Ok(Rgb { w, h, px: rgb.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_cut_short_is_an_error_a_whole_one_with_trailing_bytes_is_not() {
        let img = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let mut whole = vec![];
        image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut whole), image::ImageFormat::Jpeg).unwrap();
        assert!(!truncated_jpeg(&whole) && decode_rgb(&whole).is_ok());
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"camera maker's data");
        assert!(!truncated_jpeg(&trailing) && decode_rgb(&trailing).is_ok());
        // A Motion Photo: a video after the image, whose bytes hold marker-like pairs and no end-of-image.
        let mut motion = whole.clone();
        motion.extend_from_slice(b"\x00\x00\x00\x18ftypmp42\xFF\xDA\x00\x08\x01\x02\xFF\xC0\x00\x11junk");
        assert!(!truncated_jpeg(&motion) && decode_rgb(&motion).is_ok());
        for keep in [whole.len() * 6 / 10, whole.len() - 2] {
            let cut = &whole[..keep];
            assert!(image::load_from_memory(cut).is_ok(), "the decoder alone fills the rest in and says nothing");
            let e = decode_rgb(cut).err().expect("cut short");
            assert!(e.contains("truncated JPEG"), "{e}");
        }
        assert!(!truncated_jpeg(b"\x89PNG\r\n\x1a\n"), "not a JPEG: the decoder judges");
    }

    fn collect(s: &Images, wanted: impl Fn(usize) -> bool) -> Vec<(usize, Vec<u8>)> {
        let mut v = vec![];
        s.for_each(wanted, |i, rec| -> Result<(), DataError> {
            v.push((i, rec.to_vec()));
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn cifar_records_become_hwc_with_their_labels() {
        let d = tempfile::tempdir().unwrap();
        let mut b = vec![];
        for (label, base) in [(3u8, 0u8), (7, 100)] {
            b.push(label);
            for plane in 0..3u8 {
                b.extend(std::iter::repeat_n(base + plane, 1024));
            }
        }
        let f = d.path().join("data_batch_1.bin");
        std::fs::write(&f, &b).unwrap();
        let s = cifar(std::slice::from_ref(&f), false, false).unwrap();
        assert_eq!((s.labels.clone(), s.shape.clone()), (vec![3, 7], vec![32, 32, 3]));
        let recs = collect(&s, |_| true);
        assert_eq!(&recs[1].1[..6], &[100, 101, 102, 100, 101, 102]);
        std::fs::write(&f, &b[..b.len() - 1]).unwrap();
        assert!(cifar(&[f], false, false).err().unwrap().message.contains("not a multiple"));
    }
}
