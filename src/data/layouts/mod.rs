//! The dataset layouts users have, read into a [`Catalog`]: which file is which example, with its labels and
//! split. Only small things are read here (folder listings, CSV and text files); the examples themselves are
//! decoded later, one at a time, by the ingesting stage.
//!
//! | layout | module | what it reads |
//! |---|---|---|
//! | class folders, with or without `train/` `val/` `test/` split folders; ILSVRC's flat `val/` | [`folders`] | ImageNet, RESISC45, Caltech, any torchvision `ImageFolder` |
//! | Oxford-IIIT Pets | [`folders::pets`] | `images/` + `annotations/{trainval,test}.txt` |
//! | Kinetics CSVs, Moments in Time CSVs, class folders of videos | [`video_csv`] | `.mp4` (and other containers) |
//! | AudioSet segment CSVs, VGGSound's CSV | [`audio_csv`] | audio or video files, their sound track |
//!
//! Every error names the file (and line) at fault and the layout expected. Files a CSV lists but that are
//! not on disk are not errors: they are [`Catalog::missing`], counted and reported (every Kinetics user has
//! missing videos).

pub mod audio_csv;
pub mod folders;
pub mod matlab;
pub mod video_csv;

use super::error::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The split an example belongs to, as the layout gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SplitName {
    /// Training data.
    Train,
    /// Validation data.
    Val,
    /// Test data.
    Test,
}

impl SplitName {
    /// `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Val => "val",
            SplitName::Test => "test",
        }
    }
}

/// One example: a file, its label indices (one unless multi-label) and its split.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The file holding the example.
    pub path: PathBuf,
    /// Class indices into [`Catalog::classes`].
    pub labels: Vec<usize>,
    /// Its split.
    pub split: SplitName,
}

/// An example the layout lists whose file is not there.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Missing {
    /// Where it is listed (`file:line`).
    pub listed: String,
    /// The file name that was looked for.
    pub file: String,
    /// The split it would be in.
    #[serde(serialize_with = "split_name")]
    pub split: SplitName,
}

fn split_name<S: serde::Serializer>(s: &SplitName, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// What a layout reader found.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The examples found, in a deterministic order.
    pub entries: Vec<Entry>,
    /// Listed examples whose files are absent.
    pub missing: Vec<Missing>,
    /// How the layout's folders or files became train / val / test (for the artifact's note).
    pub note: String,
    /// The splits the layout itself defines (folders, CSVs, lists), present files or not; the others are
    /// carved from train.
    pub declared: Vec<SplitName>,
}

impl Catalog {
    /// Whether any entry is in `split`.
    pub fn has(&self, split: SplitName) -> bool {
        self.entries.iter().any(|e| e.split == split)
    }
}

/// Files below `root` (recursively) whose extension is one of `exts` (lower case), keyed by file stem (the
/// name without its extension). Two files with the same stem are an error naming both, because a CSV row could
/// not tell them apart.
pub fn files_by_stem(root: &Path, exts: &[&str]) -> Result<HashMap<String, PathBuf>, DataError> {
    let mut out: HashMap<String, PathBuf> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| DataError::new(&dir, format!("cannot list folder: {e}")))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if has_ext(&p, exts) {
                let stem = p.file_stem().unwrap_or_default().to_string_lossy().to_string();
                if let Some(prev) = out.insert(stem, p.clone()) {
                    let (a, b) = if prev < p { (prev, p) } else { (p, prev) };
                    return Err(DataError::new(
                        &b,
                        format!("has the same name as {} (extension aside): the CSV cannot tell them apart; remove one", a.display()),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Whether `p`'s extension (case-insensitive) is one of `exts`.
pub fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
}

/// The first of `names` that exists in `dir`.
pub fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads a text file, naming it on failure.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let b = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    String::from_utf8(b)
        .map_err(|e| DataError::new(path, format!("not UTF-8 text (byte {}): is this the right file?", e.utf8_error().valid_up_to())))
}

/// Video file extensions read by the video decoder.
pub const VIDEO_EXTS: &[&str] = &["mp4", "webm", "mkv", "avi", "mov", "m4v"];
/// Audio (or audio-in-video) file extensions read by the audio decoder.
pub const AUDIO_EXTS: &[&str] = &["wav", "flac", "ogg", "mp3", "m4a", "mp4", "aac"];
/// Image file extensions.
pub const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg"];

/// Tests: writes a one-byte file at `p`, creating its folders (the readers only list and name files).
#[cfg(test)]
pub(crate) fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"x").unwrap();
}
