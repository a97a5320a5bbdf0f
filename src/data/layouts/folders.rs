//! Image layouts: class folders (torchvision's `ImageFolder`), optionally under `train/` `val/` `test/`
//! split folders (ImageNet, as torchvision and most mirrors arrange it), ILSVRC-2012's flat validation
//! folder with its label file, and Oxford-IIIT Pets.

use super::{first_existing, has_ext, read_text, Catalog, Entry, Missing, SplitName, IMAGE_EXTS, VIDEO_EXTS};
use crate::data::error::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Sorted subfolder names of `dir` (symlinks to folders included, hidden folders such as `.ipynb_checkpoints`
/// left out). A name that is not UTF-8 is an error naming it: class names are text.
fn subfolders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut v = vec![];
    for e in std::fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot read dataset folder: {e}")))?.flatten() {
        if super::hidden(&e.file_name()) || !e.path().is_dir() {
            continue;
        }
        match e.file_name().into_string() {
            Ok(name) => v.push(name),
            Err(_) => return Err(DataError::new(&e.path(), "folder name is not UTF-8 text, so it cannot be a class name: rename it")),
        }
    }
    v.sort();
    Ok(v)
}

/// What a class folder holds: files with one of these extensions, found in it and its subfolders (as
/// torchvision's `ImageFolder` walks them), or clip folders of frames (one example each).
#[derive(Clone, Copy, PartialEq)]
enum Items {
    Files(&'static [&'static str]),
    Clips,
}

impl Items {
    fn what(self) -> String {
        match self {
            Items::Files(exts) => format!("{} files", exts.join("/")),
            Items::Clips => "clip folders (one folder of frames per clip)".into(),
        }
    }
}

/// The examples in class folder `dir`: with [`Items::Files`] the files with one of the extensions in it and below
/// it (symlinks followed, hidden files and folders left out), sorted; with [`Items::Clips`] its visible
/// subfolders, in number order of their names. Also the other visible files found (left out).
fn items_in(dir: &Path, items: Items) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DataError> {
    let (mut v, mut other) = (vec![], vec![]);
    match items {
        Items::Files(exts) => {
            for p in super::visible_files(dir)? {
                if has_ext(&p, exts) {
                    v.push(p);
                } else {
                    other.push(p);
                }
            }
            v.sort();
        }
        Items::Clips => {
            for e in std::fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot read folder: {e}")))?.flatten() {
                let p = e.path();
                if super::hidden(&e.file_name()) {
                    continue;
                }
                if p.is_dir() {
                    v.push(p);
                } else if p.is_file() {
                    other.push(p);
                }
            }
            alphanumeric_sort::sort_path_slice(&mut v);
        }
    }
    other.sort();
    Ok((v, other))
}
/// Entries of `dir/<class>/*`, class by class in the order of `classes`. `required` (train): every class
/// needs a folder with examples. `strict` (classes found, not given): a folder that is not a class is an error (a
/// typo or a stray folder would silently lose its images); with a given class list, other folders are left out
/// on purpose. Other files found in the class folders are left out, named in a warning.
fn class_tree(
    dir: &Path,
    classes: &[String],
    split: SplitName,
    required: bool,
    strict: bool,
    items: Items,
) -> Result<Vec<Entry>, DataError> {
    if strict {
        if let Some(stray) = subfolders(dir)?.into_iter().find(|n| !classes.contains(n)) {
            return Err(DataError::new(
                &dir.join(&stray),
                format!("is not one of the {} classes found in the train split; rename or remove it", classes.len()),
            ));
        }
    }
    let mut out = vec![];
    let mut other = vec![];
    for (ci, name) in classes.iter().enumerate() {
        let folder = dir.join(name);
        if !folder.is_dir() {
            if required {
                return Err(DataError::new(&folder, "class folder not found: check the class list or the dataset `path`"));
            }
            continue;
        }
        let (found, others) = items_in(&folder, items)?;
        other.extend(others);
        if found.is_empty() && required {
            return Err(DataError::new(&folder, format!("empty class folder: no {}; remove the folder or add some", items.what())));
        }
        out.extend(found.into_iter().map(|path| Entry { path, labels: vec![ci], split, listed: String::new() }));
    }
    if !other.is_empty() {
        let rel = |p: &PathBuf| p.strip_prefix(dir).unwrap_or(p).display().to_string();
        let some: Vec<String> = other.iter().take(3).map(rel).collect();
        let more = if other.len() > 3 { format!(" and {} more", other.len() - 3) } else { String::new() };
        tracing::warn!(
            "{}: {} files in the class folders are left out, not {}: {}{more}",
            dir.display(),
            other.len(),
            items.what(),
            some.join(", ")
        );
    }
    Ok(out)
}

/// Class folders under `root`, or under `root/train` (+ `val`, `test`) when `root/train` holds folders.
///
/// With split folders: `train/` gives the classes (sorted folder names unless `classes` is given); with both
/// `val/` and `test/`, they are val and test; with `val/` only (ImageNet), `val/` is the test split and val
/// is carved from train later, as the paper's code does (ImageNet's official validation set is its test
/// set; its minival is 1 % of train). A flat `val/` (ILSVRC-2012 as distributed) takes its labels from
/// `LOC_val_solution.csv` (Kaggle) or `imagenet_2012_validation_synset_labels.txt` (one WordNet id per line, in
/// file-number order), or the devkit's `ILSVRC2012_validation_ground_truth.txt` with its `meta.mat`, looked for
/// in `val/`, the dataset folder and its parent (and their `ILSVRC2012_devkit_t12/data/`).
pub fn image_folders(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    class_folders(root, classes, Items::Files(IMAGE_EXTS))
}

/// Class folders of video files (UCF-101, Something-Something or Kinetics arranged by class), with the same
/// split-folder rules as [`image_folders`] (no flat validation folder).
pub fn video_folders(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    class_folders(root, classes, Items::Files(VIDEO_EXTS))
}

/// Class folders of clip folders, each clip a folder of frames (`CLASS/CLIP/00001.jpg`, as frames extracted
/// with `ffmpeg -i clip.mp4 CLIP/%05d.jpg`), with the same split-folder rules as [`image_folders`] (no flat
/// validation folder). Each entry is a clip folder; its frames are read when it is decoded.
pub fn frame_folders(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    class_folders(root, classes, Items::Clips)
}

fn class_folders(root: &Path, classes: &[String], items: Items) -> Result<Catalog, DataError> {
    let train = root.join("train");
    let split_layout = train.is_dir() && !subfolders(&train)?.is_empty();
    if !split_layout {
        let strict = classes.is_empty();
        let classes = if strict { subfolders(root)? } else { classes.to_vec() };
        if classes.is_empty() {
            return Err(DataError::new(
                root,
                match items {
                    Items::Files(exts) => format!(
                        "no class subfolders found: expected CLASS/*.{e} folders, or train/CLASS/*.{e} (+ val/, test/) split folders",
                        e = exts[0]
                    ),
                    Items::Clips => "no class subfolders found: expected CLASS/CLIP/ folders of frames, or train/CLASS/CLIP/ \
                                     (+ val/, test/) split folders"
                        .into(),
                },
            ));
        }
        let entries = class_tree(root, &classes, SplitName::Train, true, strict, items)?;
        let note = "class folders; val and test carved from them".to_string();
        return Ok(Catalog {
            classes,
            entries,
            missing: vec![],
            note,
            declared: vec![SplitName::Train],
            duplicates: vec![],
            segments: Default::default(),
        });
    }
    let strict = classes.is_empty();
    let classes = if strict { subfolders(&train)? } else { classes.to_vec() };
    let mut entries = class_tree(&train, &classes, SplitName::Train, true, strict, items)?;
    let (val, test) = (root.join("val"), root.join("test"));
    let has_test = test.is_dir();
    let val_as = if has_test { SplitName::Val } else { SplitName::Test };
    let mut missing = vec![];
    if val.is_dir() {
        // A flat ILSVRC `val/` holds images; an empty one (no class folders, no images) is an empty split.
        let flat = subfolders(&val)?.is_empty() && items == Items::Files(IMAGE_EXTS) && !items_in(&val, items)?.0.is_empty();
        if flat {
            let (e, m) = flat_val(root, &val, &classes, val_as)?;
            entries.extend(e);
            missing = m;
        } else {
            entries.extend(class_tree(&val, &classes, val_as, false, strict, items)?);
        }
    }
    if has_test {
        entries.extend(class_tree(&test, &classes, SplitName::Test, false, strict, items)?);
    }
    let note = match (val.is_dir(), has_test) {
        (true, true) => "split folders train/, val/, test/",
        (true, false) => "split folders train/ and val/ (val/ is the test split; val carved from train)",
        (false, true) => "split folders train/ and test/ (val carved from train)",
        (false, false) => "split folder train/ only (val and test carved from it)",
    };
    let mut declared = vec![SplitName::Train];
    if val.is_dir() {
        declared.push(val_as);
    }
    if has_test {
        declared.push(SplitName::Test);
    }
    Ok(Catalog { classes, entries, missing, note: note.into(), declared, duplicates: vec![], segments: Default::default() })
}

/// The ILSVRC file number of `ILSVRC2012_val_00000042.JPEG` (42).
fn val_number(name: &str) -> Option<usize> {
    let stem = name.split('.').next()?;
    stem.rsplit('_').next()?.parse().ok()
}

/// A flat `val/` without a label file where [`val_labels`] looks: what to do.
const NO_VAL_LABELS: &str = "holds images but no class folders, and no label file was found in it, in the dataset folder or \
     up to three folders above that: put LOC_val_solution.csv there (Kaggle's archive has it three above \
     ILSVRC/Data/CLS-LOC), or imagenet_2012_validation_synset_labels.txt, or the devkit \
     (ILSVRC2012_validation_ground_truth.txt with meta.mat), or arrange it as val/CLASS/*.JPEG";

/// The label file of a flat ILSVRC validation folder, as found.
enum ValLabels {
    /// Kaggle's `LOC_val_solution.csv`.
    Loc(PathBuf),
    /// `imagenet_2012_validation_synset_labels.txt`.
    Synsets(PathBuf),
    /// The devkit's `ILSVRC2012_validation_ground_truth.txt`, with its `meta.mat` when found.
    Devkit(PathBuf, Option<PathBuf>),
}

/// Looks for a flat `val/`'s label file in `val/`, the dataset folder and up to three folders above it (Kaggle's
/// archive keeps `LOC_val_solution.csv` three above `ILSVRC/Data/CLS-LOC`), and their `ILSVRC2012_devkit_t12/data/`
/// and `data/`, in that order.
fn val_labels(root: &Path, val: &Path) -> Option<ValLabels> {
    let base = std::iter::once(Some(val.to_path_buf())).chain(root.ancestors().take(4).map(|p| Some(p.to_path_buf())));
    // The devkit's files may sit in its own folders.
    let dirs: Vec<PathBuf> = base.into_iter().flatten().flat_map(|d| [d.join("ILSVRC2012_devkit_t12/data"), d.join("data"), d]).collect();
    let find = |names: &[&str]| dirs.iter().find_map(|d| first_existing(d, names));
    if let Some(csv) = find(&["LOC_val_solution.csv"]) {
        Some(ValLabels::Loc(csv))
    } else if let Some(txt) = find(&["imagenet_2012_validation_synset_labels.txt"]) {
        Some(ValLabels::Synsets(txt))
    } else {
        find(&["ILSVRC2012_validation_ground_truth.txt"]).map(|gt| ValLabels::Devkit(gt, find(&["meta.mat"])))
    }
}

/// For `plan`'s shallow check: a flat ILSVRC `val/` (images, no class folders, beside `train/CLASS/` folders)
/// with no label file where ingestion looks for one, or with the devkit's ground truth but no `meta.mat`: the
/// error ingestion would give, before anything runs.
pub fn flat_val_unlabelled(root: &Path) -> Option<DataError> {
    let (train, val) = (root.join("train"), root.join("val"));
    let flat = subfolders(&train).is_ok_and(|t| !t.is_empty()) && val.is_dir() && subfolders(&val).is_ok_and(|v| v.is_empty());
    if !flat || !items_in(&val, Items::Files(IMAGE_EXTS)).is_ok_and(|(v, _)| !v.is_empty()) {
        return None;
    }
    match val_labels(root, &val) {
        None => Some(DataError::new(&val, NO_VAL_LABELS)),
        Some(ValLabels::Devkit(gt, None)) => {
            Some(DataError::new(&gt, "holds devkit ids: its meta.mat (ILSVRC2012_devkit_t12/data/meta.mat) is needed beside it"))
        }
        Some(_) => None,
    }
}

/// The files outside `root` that [`image_folders`] reads: a flat `val/`'s label file (and the devkit's
/// `meta.mat`) when it is found in the dataset folder's parent. A digest of the dataset must cover them.
pub fn read_outside(root: &Path) -> Vec<PathBuf> {
    let (train, val) = (root.join("train"), root.join("val"));
    let flat_val = || subfolders(&train).is_ok_and(|t| !t.is_empty()) && val.is_dir() && subfolders(&val).is_ok_and(|v| v.is_empty());
    let files = match flat_val().then(|| val_labels(root, &val)).flatten() {
        Some(ValLabels::Loc(f)) | Some(ValLabels::Synsets(f)) => vec![f],
        Some(ValLabels::Devkit(gt, mat)) => std::iter::once(gt).chain(mat).collect(),
        None => vec![],
    };
    files.into_iter().filter(|f| !f.starts_with(root)).collect()
}

/// Labels of a flat ILSVRC validation folder.
fn flat_val(root: &Path, val: &Path, classes: &[String], split: SplitName) -> Result<(Vec<Entry>, Vec<Missing>), DataError> {
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    // Image stem → (wnid, where listed).
    let mut labels: HashMap<String, (String, String)> = HashMap::new();
    match val_labels(root, val) {
        Some(ValLabels::Loc(csv)) => {
            let text = read_text(&csv)?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if i == 0 && line.starts_with("ImageId") || line.is_empty() {
                    continue;
                }
                // Another header than Kaggle's (its first label no WordNet id `n…`): read as a row, it would name an
                // image `id.JPEG` that is not there.
                let wnid_like = |w: &str| w.strip_prefix('n').is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if i == 0 && !line.split_once(',').and_then(|(_, p)| p.split_whitespace().next()).is_some_and(wnid_like) {
                    return Err(DataError::new(
                        &csv,
                        format!("line 1: `{line}` is neither Kaggle's header `ImageId,PredictionString` nor a row `IMAGE,WNID …`"),
                    ));
                }
                let (id, pred) = line.split_once(',').ok_or_else(|| {
                    DataError::new(&csv, format!("line {}: expected `ImageId,PredictionString` (Kaggle's LOC_val_solution.csv)", i + 1))
                })?;
                let wnid = pred
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| DataError::new(&csv, format!("line {}: empty PredictionString", i + 1)))?;
                let at = format!("{}:{}", csv.display(), i + 1);
                if let Some((before, first)) = labels.insert(id.trim().to_string(), (wnid.to_string(), at.clone())) {
                    if before != wnid {
                        return Err(DataError::new(
                            Path::new(&at),
                            format!("labels {} `{wnid}`, but {first} labels it `{before}`; fix or remove one of the rows", id.trim()),
                        ));
                    }
                    labels.insert(id.trim().to_string(), (before, first));
                }
            }
        }
        Some(ValLabels::Synsets(txt)) => {
            let text = read_text(&txt)?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                labels.insert(format!("ILSVRC2012_val_{:08}", i + 1), (line.trim().to_string(), format!("{}:{}", txt.display(), i + 1)));
            }
        }
        Some(ValLabels::Devkit(gt, mat)) => {
            // The devkit: ILSVRC2012_IDs, one per image in file-number order, mapped to WordNet ids by meta.mat.
            let Some(mat) = mat else {
                return Err(DataError::new(
                    &gt,
                    "holds devkit ids: its meta.mat (ILSVRC2012_devkit_t12/data/meta.mat) is needed beside it",
                ));
            };
            let bytes = std::fs::read(&mat).map_err(|e| DataError::new(&mat, format!("cannot read: {e}")))?;
            let wnids = super::matlab::ilsvrc_synsets(&bytes).map_err(|e| DataError::new(&mat, e))?;
            let text = read_text(&gt)?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let id: usize =
                    line.trim().parse().ok().filter(|k| (1..=1000).contains(k)).ok_or_else(|| {
                        DataError::new(&gt, format!("line {}: `{}` is not an ILSVRC2012_ID (1–1000)", i + 1, line.trim()))
                    })?;
                labels.insert(format!("ILSVRC2012_val_{:08}", i + 1), (wnids[id - 1].clone(), format!("{}:{}", gt.display(), i + 1)));
            }
        }
        None => {
            return Err(DataError::new(val, NO_VAL_LABELS));
        }
    }
    let mut entries = vec![];
    for path in items_in(val, Items::Files(IMAGE_EXTS))?.0 {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let stem = name.split('.').next().unwrap_or(&name).to_string();
        let key = if labels.contains_key(&stem) { Some(stem.clone()) } else { val_number(&name).map(|k| format!("ILSVRC2012_val_{k:08}")) };
        let Some((wnid, listed)) = key.and_then(|k| labels.remove(&k)) else {
            return Err(DataError::new(&path, "has no label in the validation label file: is it from another dataset?"));
        };
        let Some(&ci) = index.get(wnid.as_str()) else {
            return Err(DataError::new(
                Path::new(&listed),
                format!("label `{wnid}` is not one of the train folders' {} classes", classes.len()),
            ));
        };
        entries.push(Entry { path, labels: vec![ci], split, listed });
    }
    let mut missing: Vec<Missing> =
        labels.into_iter().map(|(stem, (_, listed))| Missing { listed, file: format!("{stem}.JPEG"), split }).collect();
    missing.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((entries, missing))
}

/// Oxford-IIIT Pets: `images/<Breed>_<n>.jpg` with `annotations/trainval.txt` and `annotations/test.txt`
/// (`Abyssinian_100 1 1 1`: image, CLASS-ID 1–37, SPECIES, BREED-ID; `#` lines are comments). Labels are
/// CLASS-ID − 1 (as TFDS); class names are the image names without their number. trainval is the train split
/// (val carved from it), test the test split.
pub fn pets(root: &Path) -> Result<Catalog, DataError> {
    let images = root.join("images");
    let ann = root.join("annotations");
    if !images.is_dir() || !ann.is_dir() {
        return Err(DataError::new(root, "expected the Oxford-IIIT Pets layout: images/*.jpg and annotations/{trainval,test}.txt"));
    }
    let mut names: Vec<Option<(String, String)>> = vec![];
    let mut rows = vec![];
    for (file, split) in [("trainval.txt", SplitName::Train), ("test.txt", SplitName::Test)] {
        let p = ann.join(file);
        let text = read_text(&p)?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let id = f.get(1).and_then(|s| s.parse::<usize>().ok()).filter(|&k| (1..=1000).contains(&k));
            let (Some(image), Some(id)) = (f.first(), id) else {
                return Err(DataError::new(
                    &p,
                    format!("line {}: expected `IMAGE CLASS-ID SPECIES BREED-ID` (e.g. `Abyssinian_100 1 1 1`)", i + 1),
                ));
            };
            if names.len() < id {
                names.resize(id, None);
            }
            let breed = image.rsplit_once('_').map(|(b, _)| b).unwrap_or(image).to_string();
            let at = format!("{}:{}", p.display(), i + 1);
            // Class names come from the image names: each CLASS-ID has one breed, each breed one CLASS-ID.
            if let Some(other) = names.iter().position(|n| n.as_ref().is_some_and(|n| n.0 == breed)).filter(|&k| k != id - 1) {
                return Err(DataError::new(
                    Path::new(&at),
                    format!(
                        "gives {image} CLASS-ID {id}, but {} gives {breed} CLASS-ID {}; fix the row",
                        names[other].as_ref().unwrap().1,
                        other + 1
                    ),
                ));
            }
            if let Some((name, first)) = &names[id - 1] {
                if *name != breed {
                    return Err(DataError::new(
                        Path::new(&at),
                        format!("gives {image} CLASS-ID {id}, which {first} gives the breed {name}; fix the row"),
                    ));
                }
            }
            names[id - 1].get_or_insert((breed, at.clone()));
            rows.push((image.to_string(), id - 1, split, at));
        }
    }
    let classes: Vec<String> = names.into_iter().enumerate().map(|(i, n)| n.map_or_else(|| format!("class_{}", i + 1), |n| n.0)).collect();
    let (mut entries, mut missing) = (vec![], vec![]);
    for (image, label, split, listed) in rows {
        match first_existing(&images, &[&format!("{image}.jpg"), &format!("{image}.jpeg"), &format!("{image}.png")]) {
            Some(path) => entries.push(Entry { path, labels: vec![label], split, listed }),
            None => missing.push(Missing { listed, file: format!("{image}.jpg"), split }),
        }
    }
    let declared = vec![SplitName::Train, SplitName::Test];
    Ok(Catalog {
        classes,
        entries,
        missing,
        note: "Pets trainval.txt (val carved from it) and test.txt".into(),
        declared,
        duplicates: vec![],
        segments: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::touch;
    use super::*;

    #[test]
    fn split_folders_and_flat_ilsvrc_val() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (c, n) in [("n01", 2), ("n02", 1)] {
            for i in 0..n {
                touch(&r.join(format!("train/{c}/{c}_{i}.JPEG")));
            }
        }
        for k in 1..=3 {
            touch(&r.join(format!("val/ILSVRC2012_val_{k:08}.JPEG")));
        }
        // No label file: the error says which files would do.
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.message.contains("LOC_val_solution.csv"), "{e}");
        std::fs::write(
            r.join("LOC_val_solution.csv"),
            "ImageId,PredictionString\nILSVRC2012_val_00000002,n02 1 2 3 4\nILSVRC2012_val_00000001,n01 1 2 3 4 n01 5 6 7 8\nILSVRC2012_val_00000003,n02 0 0 1 1\nILSVRC2012_val_00000009,n01 0 0 1 1\n",
        )
        .unwrap();
        let c = image_folders(r, &[]).unwrap();
        assert_eq!(c.classes, ["n01", "n02"]);
        let tests: Vec<usize> = c.entries.iter().filter(|e| e.split == SplitName::Test).map(|e| e.labels[0]).collect();
        assert_eq!(tests, [0, 1, 1]);
        assert_eq!(c.entries.iter().filter(|e| e.split == SplitName::Train).count(), 3);
        assert_eq!(c.missing.len(), 1);
        assert!(c.note.contains("val/ is the test split"));
        // The devkit instead: ground-truth ids mapped by meta.mat (here ID 1 = n02, ID 2 = n01, as the devkit's
        // order differs from the sorted WordNet ids).
        std::fs::remove_file(r.join("LOC_val_solution.csv")).unwrap();
        let dk = r.join("ILSVRC2012_devkit_t12/data");
        std::fs::create_dir_all(&dk).unwrap();
        std::fs::write(dk.join("ILSVRC2012_validation_ground_truth.txt"), "2\n1\n1\n").unwrap();
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.message.contains("meta.mat"), "{e}");
        let mut ids: Vec<(f64, String)> = (1..=1000).map(|k| (k as f64, format!("n{:02}", k))).collect();
        ids[0].1 = "n02".into();
        ids[1].1 = "n01".into();
        let refs: Vec<(f64, &str)> = ids.iter().map(|(k, w)| (*k, w.as_str())).collect();
        std::fs::write(dk.join("meta.mat"), super::super::matlab::write_synsets(&refs, true)).unwrap();
        let c = image_folders(r, &[]).unwrap();
        let tests: Vec<usize> = c.entries.iter().filter(|e| e.split == SplitName::Test).map(|e| e.labels[0]).collect();
        assert_eq!(tests, [0, 1, 1]);
        std::fs::remove_dir_all(r.join("ILSVRC2012_devkit_t12")).unwrap();
        std::fs::write(r.join("LOC_val_solution.csv"), "ImageId,PredictionString\n").unwrap();
        // Another header is named as such, not read as an image that is not there.
        std::fs::write(r.join("LOC_val_solution.csv"), "id,label\nILSVRC2012_val_00000001,n01 1 2 3 4\n").unwrap();
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.message.contains("line 1: `id,label` is neither Kaggle's header"), "{e}");
        // A label not among the train classes names the CSV line.
        std::fs::write(r.join("LOC_val_solution.csv"), "ImageId,PredictionString\nILSVRC2012_val_00000001,n09 1 2 3 4\n").unwrap();
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.path.to_string_lossy().ends_with("LOC_val_solution.csv:2"), "{e}");
    }

    /// An empty `val/` beside `train/CLASS/` folders is an empty split, not a flat ILSVRC `val/` lacking its labels.
    #[test]
    fn an_empty_val_folder_is_an_empty_split() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for c in ["a", "b"] {
            touch(&r.join(format!("train/{c}/0.png")));
        }
        std::fs::create_dir(r.join("val")).unwrap();
        assert!(flat_val_unlabelled(r).is_none());
        let c = image_folders(r, &[]).unwrap();
        assert_eq!(c.entries.iter().filter(|e| e.split == SplitName::Test).count(), 0);
        assert!(c.declared.contains(&SplitName::Test), "{:?}", c.declared);
    }

    #[test]
    fn val_and_test_folders_and_strays() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for s in ["train", "val", "test"] {
            touch(&r.join(format!("{s}/cat/a.png")));
            touch(&r.join(format!("{s}/dog/b.jpg")));
        }
        let c = image_folders(r, &[]).unwrap();
        assert_eq!(c.entries.len(), 6);
        assert!(c.has(SplitName::Val) && c.has(SplitName::Test));
        touch(&r.join("val/cow/c.png"));
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.path.ends_with("val/cow") && e.message.contains("not one of the 2 classes"), "{e}");
        // Plain class folders (no split folders) are all train.
        let d2 = tempfile::tempdir().unwrap();
        touch(&d2.path().join("a/1.png"));
        touch(&d2.path().join("b/2.png"));
        let c = image_folders(d2.path(), &[]).unwrap();
        assert!(c.entries.iter().all(|e| e.split == SplitName::Train));
    }

    #[test]
    fn pets_lists() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("images/Abyssinian_1.jpg"));
        touch(&r.join("images/american_bulldog_7.jpg"));
        std::fs::create_dir_all(r.join("annotations")).unwrap();
        std::fs::write(r.join("annotations/trainval.txt"), "#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\nAbyssinian_2 1 1 1\n")
            .unwrap();
        std::fs::write(r.join("annotations/test.txt"), "american_bulldog_7 2 2 1\n").unwrap();
        let c = pets(r).unwrap();
        assert_eq!(c.classes, ["Abyssinian", "american_bulldog"]);
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.missing[0].file, "Abyssinian_2.jpg");
        std::fs::write(r.join("annotations/test.txt"), "american_bulldog_7 two 2 1\n").unwrap();
        let e = pets(r).unwrap_err();
        assert!(e.message.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn hidden_folders_and_files_are_not_data() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("cat/a.png"));
        touch(&r.join("cat/.DS_Store"));
        touch(&r.join("cat/._a.png"));
        touch(&r.join("dog/b.webp"));
        touch(&r.join("dog/notes.txt"));
        touch(&r.join(".ipynb_checkpoints/x.png"));
        // Images in a class folder's subfolders are its examples, as torchvision's ImageFolder walks them.
        touch(&r.join("dog/more/c.jpg"));
        touch(&r.join("dog/.hidden/d.jpg"));
        let c = image_folders(r, &[]).unwrap();
        assert_eq!(c.classes, ["cat", "dog"]);
        let files: Vec<&Path> = c.entries.iter().map(|e| e.path.strip_prefix(r).unwrap()).collect();
        assert_eq!(files, [Path::new("cat/a.png"), Path::new("dog/b.webp"), Path::new("dog/more/c.jpg")]);
        // A flat ILSVRC val/ with a hidden cache folder in it is still flat.
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("imagenet");
        touch(&r.join("train/n01/n01_0.JPEG"));
        touch(&r.join("val/ILSVRC2012_val_00000001.JPEG"));
        touch(&r.join("val/.cache/x"));
        std::fs::write(d.path().join("LOC_val_solution.csv"), "ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3 4\n").unwrap();
        let c = image_folders(&r, &["n01".to_string()]).unwrap();
        assert!(c.has(SplitName::Test), "{c:?}");
        // Its label file, found beside the dataset folder, is what the dataset's digest must also cover.
        assert_eq!(read_outside(&r), [d.path().join("LOC_val_solution.csv")]);
        std::fs::rename(d.path().join("LOC_val_solution.csv"), r.join("LOC_val_solution.csv")).unwrap();
        assert!(read_outside(&r).is_empty(), "inside the folder: in its tree already");
    }

    #[test]
    fn conflicting_labels_name_both_rows() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("train/n01/a.JPEG"));
        touch(&r.join("train/n02/b.JPEG"));
        touch(&r.join("val/ILSVRC2012_val_00000001.JPEG"));
        let loc = "ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3 4\nILSVRC2012_val_00000001,n01 5 6 7 8\n";
        std::fs::write(r.join("LOC_val_solution.csv"), loc).unwrap();
        assert!(image_folders(r, &[]).is_ok(), "the same label twice (boxes) is no conflict");
        std::fs::write(r.join("LOC_val_solution.csv"), format!("{loc}ILSVRC2012_val_00000001,n02 1 2 3 4\n")).unwrap();
        let e = image_folders(r, &[]).unwrap_err();
        assert!(e.path.to_string_lossy().ends_with("LOC_val_solution.csv:4"), "{e}");
        assert!(e.message.contains("LOC_val_solution.csv:2 labels it `n01`"), "{e}");
        // Pets: a CLASS-ID is one breed and a breed one CLASS-ID.
        let p = tempfile::tempdir().unwrap();
        let r = p.path();
        touch(&r.join("images/Abyssinian_1.jpg"));
        std::fs::create_dir_all(r.join("annotations")).unwrap();
        std::fs::write(r.join("annotations/test.txt"), "").unwrap();
        std::fs::write(r.join("annotations/trainval.txt"), "Abyssinian_1 1 1 1\nAbyssinian_3 2 1 1\n").unwrap();
        let e = pets(r).unwrap_err();
        assert!(e.path.to_string_lossy().ends_with("trainval.txt:2") && e.message.contains("CLASS-ID 1"), "{e}");
        std::fs::write(r.join("annotations/trainval.txt"), "Abyssinian_1 1 1 1\nBengal_3 1 1 1\n").unwrap();
        let e = pets(r).unwrap_err();
        assert!(e.message.contains("gives the breed Abyssinian"), "{e}");
    }

    #[test]
    fn a_folder_name_that_is_not_text_is_named() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let odd = d.path().join(std::ffi::OsStr::from_bytes(b"b\xffrd"));
        touch(&odd.join("a.png"));
        touch(&d.path().join("cat/b.png"));
        let e = image_folders(d.path(), &[]).unwrap_err();
        assert!(e.path == odd && e.message.contains("not UTF-8"), "{e}");
    }
}
