//! What `plan` checks of a dataset folder before anything runs: the layout's fixed parts (its CSVs, its split
//! folders) and that it holds at least one data file, found by a walk that stops at the first one. A full read
//! (every row, every file) is the ingestion's; this catches the empty or misplaced folder in a second, where
//! ingestion would find it after the nodes ahead of it had run.

use super::{hidden, DataError, AUDIO_EXTS, AUDIO_UNDECODABLE_EXTS, IMAGE_EXTS, VIDEO_EXTS};
use std::path::Path;

/// The shape of a layout, as far as the shallow check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Class folders of files with these extensions (`CLASS/x` or `train/CLASS/x`, + `val/`, `test/`).
    ClassFolders(&'static [&'static str]),
    /// Class folders of clip folders of frame images.
    FrameFolders,
    /// Files the layout needs (relative to the root; each a list of alternatives), and data files with these
    /// extensions somewhere below the root.
    Files(&'static [&'static [&'static str]], &'static [&'static str]),
}

/// The shape of the image-folder layout.
pub const IMAGE_FOLDERS: Shape = Shape::ClassFolders(IMAGE_EXTS);
/// The shape of the video-folder layout.
pub const VIDEO_FOLDERS: Shape = Shape::ClassFolders(VIDEO_EXTS);
/// AudioSet: its segment CSV and audio files (the class list is checked where `classes` is known).
pub const AUDIOSET: Shape = Shape::Files(&[&["balanced_train_segments.csv"]], AUDIO_EXTS);
/// Kinetics: its train CSV (here or in `annotations/`, any prefix) and video files.
pub const KINETICS: Shape = Shape::Files(&[], VIDEO_EXTS);
/// Moments in Time: its CSVs and video files.
pub const MOMENTS: Shape = Shape::Files(&[&["trainingSet.csv"]], VIDEO_EXTS);
/// ESC-50 as distributed.
pub const ESC50: Shape = Shape::Files(&[&["meta/esc50.csv"]], AUDIO_EXTS);
/// VGGSound: its CSV and audio files.
pub const VGGSOUND: Shape = Shape::Files(&[&["vggsound.csv"]], AUDIO_EXTS);
/// Oxford-IIIT Pets as distributed: its two split lists and the images.
pub const PETS: Shape = Shape::Files(&[&["annotations/trainval.txt"], &["annotations/test.txt"]], IMAGE_EXTS);
/// Speech Commands: one folder of clips per word.
pub const SPEECH_COMMANDS: Shape = Shape::ClassFolders(AUDIO_EXTS);

/// At most this many entries are looked at while searching for a first data file (a folder of millions of
/// files that holds no data file at all is left to ingestion).
const LOOK: usize = 200_000;

/// Checks `root` against `shape`: `Err` names the folder and what is missing. With `classes` given, the reader
/// takes only the folders named: those must be there and hold data, the others are not looked into.
pub fn check(root: &Path, shape: Shape, classes: &[String]) -> Result<(), DataError> {
    if !root.is_dir() {
        return Ok(());
    }
    if entries(root)?.is_empty() {
        return Err(DataError::new(root, "the folder is empty"));
    }
    match shape {
        Shape::ClassFolders(exts) => {
            class_folders(root, exts, false, classes)?;
            // ILSVRC's flat val/ needs its label file: missing, ingestion would fail after the train split's read.
            match super::folders::flat_val_unlabelled(root).filter(|_| exts == IMAGE_EXTS) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        Shape::FrameFolders => class_folders(root, IMAGE_EXTS, true, classes),
        Shape::Files(needed, exts) => {
            if shape == KINETICS && super::video_csv::kinetics_csv(root, super::SplitName::Train).is_none() {
                return Err(DataError::new(root, "no train.csv (here or in annotations/): the Kinetics layout needs it"));
            }
            for alternatives in needed {
                if !alternatives.iter().any(|f| root.join(f).is_file()) {
                    return Err(DataError::new(root, format!("no {}: the layout needs it", alternatives.join(" or "))));
                }
            }
            if !has_data(root, exts)? {
                // Only audio polyflow cannot decode (yt-dlp's `bestaudio`): what to convert it to.
                if exts == AUDIO_EXTS && has_data(root, AUDIO_UNDECODABLE_EXTS)? {
                    return Err(DataError::new(
                        root,
                        format!(
                            "holds only .{} clips, which polyflow cannot decode: convert them to FLAC or WAV \
                             (`ffmpeg -i CLIP.webm CLIP.flac`)",
                            AUDIO_UNDECODABLE_EXTS.join("/.")
                        ),
                    ));
                }
                return Err(DataError::new(root, format!("holds no .{} file (searched below it)", exts.join("/."))));
            }
            Ok(())
        }
    }
}

/// Visible entries of `dir`, sorted.
fn entries(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot read dataset folder: {e}")))?;
    let mut v: Vec<_> = rd.flatten().filter(|e| !hidden(&e.file_name())).map(|e| e.path()).collect();
    v.sort();
    Ok(v)
}

/// Class folders, directly or under `train/`: the training classes' folders are there and the first of them
/// holds a data file (with `clips`: a clip folder holding one). `val/` and `test/` are the reader's: they may be
/// sparse, flat (ILSVRC's val) or unlabelled.
fn class_folders(root: &Path, exts: &[&str], clips: bool, named: &[String]) -> Result<(), DataError> {
    // As the reader decides: split folders when `train/` holds folders, else the root's folders are the classes.
    let train = root.join("train");
    if train.is_dir() && entries(&train)?.is_empty() {
        return Err(DataError::new(&train, "the split folder is empty: expected train/CLASS/ folders"));
    }
    let split = train.is_dir() && entries(&train)?.iter().any(|p| p.is_dir());
    let top = if split { train } else { root.to_path_buf() };
    // The classes the reader takes: those named, else every folder there.
    let classes: Vec<_> = if named.is_empty() {
        entries(&top)?.into_iter().filter(|p| p.is_dir()).collect()
    } else {
        let v: Vec<_> = named.iter().map(|c| top.join(c)).collect();
        if let Some(missing) = v.iter().find(|p| !p.is_dir()) {
            return Err(DataError::new(missing, "class folder not found (named in `classes`)"));
        }
        v
    };
    if classes.is_empty() {
        let what = if clips { "CLASS/CLIP/ folders of frames" } else { "CLASS/ folders" };
        return Err(DataError::new(&top, format!("holds no class folders: expected {what} here")));
    }
    // Each training class holds data (one directory read each, until its first file).
    let what = if clips { "clip folder of frames" } else { "file" };
    for c in &classes {
        if !has_data(c, exts)? {
            // What it holds instead (another format, a subfolder), so the message says what to convert or move.
            let mut other: Vec<String> =
                entries(c)?.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
            other.sort();
            let holds = match other.len() {
                0 => String::new(),
                n => format!(
                    " (it holds {}{})",
                    other[..n.min(3)].join(", "),
                    if n > 3 { format!(" and {} more", n - 3) } else { String::new() }
                ),
            };
            return Err(DataError::new(c, format!("holds no .{} {what}{holds}: an empty class folder", exts.join("/."))));
        }
    }
    Ok(())
}

/// How many class folders a class-folder layout at `root` has, as its reader counts them (under `train/` when
/// that holds folders, else at the root); `None` where the folder cannot be read.
pub fn class_count(root: &Path) -> Option<usize> {
    let train = root.join("train");
    let split = train.is_dir() && entries(&train).ok()?.iter().any(|p| p.is_dir());
    let top = if split { train } else { root.to_path_buf() };
    Some(entries(&top).ok()?.iter().filter(|p| p.is_dir()).count())
}

/// Whether a file with one of `exts` lies below `dir` (stops at the first, or after [`LOOK`] entries: then
/// assumed).
fn has_data(dir: &Path, exts: &[&str]) -> Result<bool, DataError> {
    let walk = walkdir::WalkDir::new(dir).follow_links(true).into_iter().filter_entry(|e| e.depth() == 0 || !hidden(e.file_name()));
    for (n, e) in walk.enumerate() {
        if n >= LOOK {
            return Ok(true);
        }
        let Ok(e) = e else { continue };
        if e.file_type().is_file() && super::has_ext(e.path(), exts) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn empty_split_and_class_folders_are_named() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(check(r, IMAGE_FOLDERS, &[]).unwrap_err().message.contains("empty"));
        std::fs::create_dir_all(r.join("train")).unwrap();
        std::fs::create_dir_all(r.join("val")).unwrap();
        let e = check(r, IMAGE_FOLDERS, &[]).unwrap_err();
        assert!(e.message.contains("split folder is empty") && e.to_string().contains("train"), "{e}");
        std::fs::create_dir_all(r.join("train/n01")).unwrap();
        assert!(check(r, IMAGE_FOLDERS, &[]).unwrap_err().message.contains("an empty class folder"));
        touch(&r.join("train/n01/a.JPEG"));
        // val/ and test/ are the reader's to judge (sparse, flat, unlabelled).
        assert!(check(r, IMAGE_FOLDERS, &[]).is_ok());
        std::fs::create_dir_all(r.join("val/n01")).unwrap();
        assert!(check(r, IMAGE_FOLDERS, &[]).is_ok());
        // With `classes` given, only the named folders are looked into; a named one missing is named.
        std::fs::create_dir_all(r.join("train/a_unused")).unwrap();
        assert!(check(r, IMAGE_FOLDERS, &[]).is_err());
        assert!(check(r, IMAGE_FOLDERS, &["n01".to_string()]).is_ok());
        let e = check(r, IMAGE_FOLDERS, &["n01".to_string(), "n09".to_string()]).unwrap_err();
        assert!(e.message.contains("class folder not found") && e.to_string().contains("n09"), "{e}");
    }

    /// ILSVRC's flat val/ needs a label file where ingestion looks for one; `plan` says so before anything runs.
    #[test]
    fn a_flat_val_folder_needs_its_label_file() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("imagenet");
        touch(&r.join("train/n01/a.JPEG"));
        touch(&r.join("val/ILSVRC2012_val_00000001.JPEG"));
        let e = check(&r, IMAGE_FOLDERS, &[]).unwrap_err();
        assert!(e.message.contains("no label file") && e.to_string().contains("val"), "{e}");
        // The devkit's ground truth alone: its meta.mat is named.
        touch(&d.path().join("ILSVRC2012_validation_ground_truth.txt"));
        let e = check(&r, IMAGE_FOLDERS, &[]).unwrap_err();
        assert!(e.message.contains("meta.mat"), "{e}");
        // Kaggle's CSV beside the dataset folder, as ingestion finds it.
        touch(&d.path().join("LOC_val_solution.csv"));
        assert!(check(&r, IMAGE_FOLDERS, &[]).is_ok());
        // Kaggle's archive: the CSV three folders above ILSVRC/Data/CLS-LOC.
        let k = d.path().join("kaggle");
        let cls = k.join("ILSVRC/Data/CLS-LOC");
        touch(&cls.join("train/n01/a.JPEG"));
        touch(&cls.join("train/n02/a.JPEG"));
        touch(&cls.join("val/ILSVRC2012_val_00000001.JPEG"));
        assert!(check(&cls, IMAGE_FOLDERS, &[]).is_err());
        touch(&k.join("LOC_val_solution.csv"));
        assert!(check(&cls, IMAGE_FOLDERS, &[]).is_ok());
        // The class folders `plan` counts against a declared `num_classes`: train/'s.
        assert_eq!(class_count(&cls), Some(2));
        assert_eq!(class_count(&r), Some(1));
    }

    /// Pets needs both its split lists; Speech Commands its word folders.
    #[test]
    fn pets_and_speech_commands_shapes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("images/Abyssinian_1.jpg"));
        touch(&r.join("annotations/trainval.txt"));
        assert!(check(r, PETS, &[]).unwrap_err().message.contains("annotations/test.txt"));
        touch(&r.join("annotations/test.txt"));
        assert!(check(r, PETS, &[]).is_ok());
        let s = d.path().join("sc");
        std::fs::create_dir_all(s.join("yes")).unwrap();
        assert!(check(&s, SPEECH_COMMANDS, &[]).unwrap_err().message.contains("empty class folder"));
        touch(&s.join("yes/a.wav"));
        assert!(check(&s, SPEECH_COMMANDS, &[]).is_ok());
    }

    #[test]
    fn csv_layouts_need_their_files_and_some_data() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("eval_segments.csv"));
        assert!(check(r, AUDIOSET, &[]).unwrap_err().message.contains("balanced_train_segments.csv"));
        touch(&r.join("balanced_train_segments.csv"));
        assert!(check(r, AUDIOSET, &[]).unwrap_err().message.contains("holds no .wav"));
        touch(&r.join("audio/bal/abc.webm"));
        assert!(check(r, AUDIOSET, &[]).unwrap_err().message.contains("convert them to FLAC"));
        std::fs::remove_file(r.join("audio/bal/abc.webm")).unwrap();
        touch(&r.join("audio/bal/abc.flac"));
        assert!(check(r, AUDIOSET, &[]).is_ok());
    }
}
