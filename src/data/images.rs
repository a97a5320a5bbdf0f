//! Image readers: IDX pairs, CIFAR-10/100 binary, and class-folder trees (PNG/JPEG).

use super::error::{read, DataError};
use super::idx::read_idx;
use std::path::Path;

/// Decoded images `[N, H, W, C]` u8 with integer labels.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Pixels, `N·H·W·C`.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<i64>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// An images IDX file plus a labels IDX file.
pub fn read_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<ImageSet, DataError> {
    let x = read_idx(images)?;
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
    Ok(ImageSet { h: x.dims[1], w: x.dims[2], c: 1, pixels: x.data, labels: y.data.iter().map(|&l| l as i64).collect() })
}

/// CIFAR binary batches: each record is `label(s)` then 3072 bytes (R, G, B planes of 32×32).
/// `coarse` selects CIFAR-100's coarse label (records carry coarse then fine).
pub fn read_cifar(files: &[&Path], cifar100: bool, coarse: bool) -> Result<ImageSet, DataError> {
    let lb = if cifar100 { 2 } else { 1 };
    let rec = lb + 3072;
    let mut set = ImageSet { h: 32, w: 32, c: 3, ..Default::default() };
    for f in files {
        let b = read(f)?;
        if b.is_empty() || b.len() % rec != 0 {
            return Err(DataError::new(
                f,
                format!(
                    "size {} is not a multiple of the {rec}-byte CIFAR record: truncated or not a CIFAR{} binary",
                    b.len(),
                    if cifar100 { "-100" } else { "-10" }
                ),
            ));
        }
        for r in b.chunks_exact(rec) {
            let label = if cifar100 {
                if coarse {
                    r[0]
                } else {
                    r[1]
                }
            } else {
                r[0]
            } as i64;
            let classes = if !cifar100 {
                10
            } else if coarse {
                20
            } else {
                100
            };
            if label >= classes {
                return Err(DataError::new(f, format!("label {label} is not in the class list ({classes} classes)")));
            }
            set.labels.push(label);
            let px = &r[lb..];
            for i in 0..1024 {
                set.pixels.extend_from_slice(&[px[i], px[1024 + i], px[2048 + i]]);
            }
        }
    }
    Ok(set)
}

/// A folder with one subfolder per class of PNG/JPEG files (ImageNet / Pets / RESISC45 layout), resized to
/// `size` (bilinear) as RGB. Classes are the sorted subfolder names unless `classes` is given.
pub fn read_image_folder(root: &Path, classes: &[String], size: (usize, usize)) -> Result<ImageSet, DataError> {
    let mut set = ImageSet { h: size.0, w: size.1, c: 3, ..Default::default() };
    for (ci, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| DataError::new(&dir, format!("cannot read class folder: {e}")))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().map(|e| matches!(e.to_ascii_lowercase().to_str(), Some("png" | "jpg" | "jpeg"))).unwrap_or(false))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::new(&dir, "empty class folder: no PNG or JPEG images; remove the folder or add images"));
        }
        for f in files {
            let img = image::open(&f).map_err(|e| DataError::new(&f, format!("unreadable image: {e}")))?;
            let img = img.resize_exact(size.1 as u32, size.0 as u32, image::imageops::FilterType::Triangle).to_rgb8();
            set.pixels.extend_from_slice(img.as_raw());
            set.labels.push(ci as i64);
        }
    }
    Ok(set)
}

/// Sorted subfolder names of `root`.
pub fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| DataError::new(root, format!("cannot read dataset folder: {e}")))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(DataError::new(root, "no class subfolders found"));
    }
    Ok(v)
}
