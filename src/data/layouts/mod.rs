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
pub mod shallow;
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
    /// Where a list names it (`file:line`); empty for a file found in a folder.
    pub listed: String,
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
    /// Rows naming a file another row already names, left out by [`Catalog::drop_duplicates`].
    pub duplicates: Vec<Duplicate>,
    /// Files found by the video's id alone (AudioSet's and VGGSound's `{ytid}.*`), which may hold the whole
    /// video: the segment their row names, cut from the sound when the file is clearly longer (see
    /// [`crate::data::audio::cut_segment`]). Empty for the other layouts.
    pub segments: HashMap<PathBuf, Segment>,
}

/// The part of a file a row names: `[start, end)` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Start, in seconds from the file's start.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
}

/// A row left out because another row names the same file (see [`Catalog::drop_duplicates`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Duplicate {
    /// The file.
    pub file: String,
    /// Where the row left out is (`file:line`).
    pub listed: String,
    /// The split of the row left out.
    #[serde(serialize_with = "split_name")]
    pub split: SplitName,
    /// Where the row kept is.
    pub kept: String,
    /// The split of the row kept.
    #[serde(serialize_with = "split_name")]
    pub kept_split: SplitName,
}

impl Catalog {
    /// Whether any entry is in `split`.
    pub fn has(&self, split: SplitName) -> bool {
        self.entries.iter().any(|e| e.split == split)
    }

    /// Keeps one entry per file. Lists repeat rows (a CSV concatenated twice, a clip listed for training and for
    /// evaluation): a file listed in two splits stays in the evaluation one (test before val before train), so
    /// that no test example is trained on; a file listed twice in one split is kept once. The rows left out are
    /// in [`Catalog::duplicates`]. Two rows of one split that give the same file other labels are an error
    /// naming both: which is right cannot be guessed.
    pub fn drop_duplicates(&mut self) -> Result<(), DataError> {
        // Which entry of each file is kept: the first of its most evaluative split.
        let rank = |s: SplitName| match s {
            SplitName::Test => 0,
            SplitName::Val => 1,
            SplitName::Train => 2,
        };
        let mut keep: HashMap<&Path, usize> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            match keep.get(e.path.as_path()) {
                None => {
                    keep.insert(&e.path, i);
                }
                Some(&k) => {
                    let first = &self.entries[k];
                    if first.split == e.split && sorted(&first.labels) != sorted(&e.labels) {
                        let at = |x: &Entry| if x.listed.is_empty() { x.path.display().to_string() } else { x.listed.clone() };
                        return Err(DataError::new(
                            Path::new(&at(e)),
                            format!(
                                "names {} again with other labels than {} ({}: labels {:?} vs {:?}); fix or remove one of the rows",
                                e.path.display(),
                                at(first),
                                e.split.as_str(),
                                first.labels.iter().map(|&l| &self.classes[l]).collect::<Vec<_>>(),
                                e.labels.iter().map(|&l| &self.classes[l]).collect::<Vec<_>>(),
                            ),
                        ));
                    }
                    if rank(e.split) < rank(first.split) {
                        keep.insert(&e.path, i);
                    }
                }
            }
        }
        if keep.len() == self.entries.len() {
            return Ok(());
        }
        let kept: Vec<bool> = (0..self.entries.len()).map(|i| keep[self.entries[i].path.as_path()] == i).collect();
        let dropped: Vec<Duplicate> = (self.entries.iter().zip(&kept))
            .filter(|(_, &k)| !k)
            .map(|(e, _)| {
                let k = &self.entries[keep[e.path.as_path()]];
                Duplicate {
                    file: e.path.display().to_string(),
                    listed: e.listed.clone(),
                    split: e.split,
                    kept: k.listed.clone(),
                    kept_split: k.split,
                }
            })
            .collect();
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            kept[i - 1]
        });
        self.duplicates = dropped;
        Ok(())
    }
}

fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether a file or folder name is hidden (`.ipynb_checkpoints`, `.DS_Store`, `._x.jpg` of macOS, `.cache`):
/// never a class, an example or a split.
pub fn hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Files below `root` (recursively, symlinks followed, hidden files and folders left out) whose extension is one
/// of `exts` (lower case), keyed by file stem (the name without its extension). Two files with the same stem
/// are an error naming both, because a CSV row could not tell them apart; so is a symlink loop.
pub fn files_by_stem(root: &Path, exts: &[&str]) -> Result<HashMap<String, PathBuf>, DataError> {
    by_stem(list_files(root, exts)?)
}

/// Files below `root` whose extension is one of `exts`, as [`files_by_stem`] finds them, in walk order.
pub fn list_files(root: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, DataError> {
    Ok(visible_files(root)?.into_iter().filter(|p| has_ext(p, exts)).collect())
}

/// The regular files below `root` (recursively, symlinks followed, hidden files and folders left out), in walk
/// order; a symlink loop is an error naming it.
pub fn visible_files(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = vec![];
    let walk = walkdir::WalkDir::new(root).follow_links(true).into_iter().filter_entry(|e| e.depth() == 0 || !hidden(e.file_name()));
    for e in walk {
        let e = e.map_err(|e| {
            let at = e.path().unwrap_or(root).to_path_buf();
            match e.loop_ancestor() {
                Some(up) => DataError::new(&at, format!("is a symlink back to {} (a loop): remove the link", up.display())),
                None => DataError::new(&at, format!("cannot list: {e}")),
            }
        })?;
        if e.file_type().is_file() {
            out.push(e.path().to_path_buf());
        }
    }
    Ok(out)
}

/// `files` keyed by stem; two with the same stem are an error naming both (see [`files_by_stem`]).
pub fn by_stem(files: Vec<PathBuf>) -> Result<HashMap<String, PathBuf>, DataError> {
    let mut out: HashMap<String, PathBuf> = HashMap::new();
    for p in files {
        let stem = p.file_stem().unwrap_or_default().to_string_lossy().to_string();
        if let Some(prev) = out.insert(stem, p.clone()) {
            let (a, b) = if prev < p { (prev, p) } else { (p, prev) };
            return Err(DataError::new(
                &b,
                format!("has the same name as {} (extension aside): the CSV cannot tell them apart; remove one", a.display()),
            ));
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

/// Reads a text file, naming it on failure. A UTF-8 byte-order mark (spreadsheets write one) is dropped.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let b = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let mut s = String::from_utf8(b)
        .map_err(|e| DataError::new(path, format!("not UTF-8 text (byte {}): is this the right file?", e.utf8_error().valid_up_to())))?;
    if s.starts_with('\u{feff}') {
        s.drain(..'\u{feff}'.len_utf8());
    }
    Ok(s)
}

/// Video file extensions read by the video decoder.
pub const VIDEO_EXTS: &[&str] = &["mp4", "webm", "mkv", "avi", "mov", "m4v"];
/// Audio (or audio-in-video) file extensions read by the audio decoder.
pub const AUDIO_EXTS: &[&str] = &["wav", "flac", "ogg", "mp3", "m4a", "mp4", "aac"];
/// Audio container extensions the audio decoder cannot read (WebM/Matroska, Opus: yt-dlp's usual `bestaudio`):
/// a clip found with one is reported as undecodable, with the conversion to do, not as absent.
pub const AUDIO_UNDECODABLE_EXTS: &[&str] = &["webm", "weba", "opus", "mkv"];
/// Image file extensions: torchvision's `ImageFolder` list (`IMG_EXTENSIONS`); the format is read from the bytes.
pub const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "ppm", "pgm", "bmp", "tif", "tiff", "webp"];

/// Tests: writes a one-byte file at `p`, creating its folders (the readers only list and name files).
#[cfg(test)]
pub(crate) fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"x").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, labels: &[usize], split: SplitName, listed: &str) -> Entry {
        Entry { path: PathBuf::from(path), labels: labels.to_vec(), split, listed: listed.into() }
    }

    #[test]
    fn duplicates_stay_in_the_evaluation_split_once_and_conflicts_are_named() {
        use SplitName::*;
        let mut c = Catalog {
            classes: vec!["a".into(), "b".into()],
            entries: vec![
                entry("x", &[0], Train, "t.csv:2"),
                entry("y", &[1], Train, "t.csv:3"),
                entry("x", &[0], Test, "e.csv:2"),
                entry("y", &[1], Train, "t.csv:9"),
                entry("z", &[0, 1], Test, "e.csv:3"),
                entry("z", &[1, 0], Test, "e.csv:4"),
            ],
            ..Default::default()
        };
        c.drop_duplicates().unwrap();
        let kept: Vec<(&str, SplitName, &str)> = c.entries.iter().map(|e| (e.path.to_str().unwrap(), e.split, e.listed.as_str())).collect();
        assert_eq!(kept, [("y", Train, "t.csv:3"), ("x", Test, "e.csv:2"), ("z", Test, "e.csv:3")]);
        let dropped: Vec<(&str, &str, SplitName)> =
            c.duplicates.iter().map(|d| (d.listed.as_str(), d.kept.as_str(), d.kept_split)).collect();
        assert_eq!(dropped, [("t.csv:2", "e.csv:2", Test), ("t.csv:9", "t.csv:3", Train), ("e.csv:4", "e.csv:3", Test)]);
        // One split, two label sets for one file: an error naming both rows and the labels.
        c.entries.push(entry("y", &[0], Train, "t.csv:12"));
        let e = c.drop_duplicates().unwrap_err();
        assert_eq!(e.path, Path::new("t.csv:12"));
        assert!(e.message.contains("t.csv:3") && e.message.contains(r#"["b"] vs ["a"]"#), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_not_text() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        std::fs::write(&p, "\u{feff}Abyssinian_1 1 1 1\r\n").unwrap();
        assert_eq!(read_text(&p).unwrap(), "Abyssinian_1 1 1 1\r\n");
    }

    #[test]
    fn clips_are_found_through_symlinked_folders_not_in_hidden_ones() {
        let d = tempfile::tempdir().unwrap();
        let (root, real) = (d.path().join("data"), d.path().join("real"));
        touch(&real.join("a.wav"));
        touch(&root.join("audio/b.wav"));
        touch(&root.join(".trash/c.wav"));
        touch(&root.join("audio/._b2.wav"));
        std::os::unix::fs::symlink(&real, root.join("linked")).unwrap();
        let mut found: Vec<String> = files_by_stem(&root, AUDIO_EXTS).unwrap().into_keys().collect();
        found.sort();
        assert_eq!(found, ["a", "b"]);
        std::os::unix::fs::symlink(&root, root.join("audio/up")).unwrap();
        let e = files_by_stem(&root, AUDIO_EXTS).unwrap_err();
        assert!(e.message.contains("a loop"), "{e}");
    }
}
