//! Source files of a pipeline and byte-offset → line:col mapping.

use std::path::{Path, PathBuf};

/// A byte range inside one loaded source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Index into [`SourceMap::files`].
    pub file: usize,
    /// Start byte offset.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
}

/// One loaded pipeline file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown to the user (relative to the working directory when possible).
    pub display: String,
    /// Canonical absolute path (used only to detect the same file included twice; never hashed).
    pub canonical: PathBuf,
    /// Full text.
    pub text: String,
    /// For `--config` files and `--set` arguments: the folder relative paths they give resolve against.
    pub overlay_dir: Option<PathBuf>,
    /// Byte offsets of line starts, built on the first lookup (a pipeline of 3,000 nodes locates every node:
    /// rescanning the text from its start each time was 38 % of `status`).
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl SourceFile {
    /// 1-based (line, column) of a byte offset, by binary search over the line starts.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.line_starts.get_or_init(|| line_starts(&self.text));
        let offset = clamp_to_char(&self.text, offset);
        let line = starts.partition_point(|&s| s <= offset); // ≥ 1: starts[0] = 0
        let col = self.text[starts[line - 1]..offset].chars().count() + 1;
        (line, col)
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1)).collect()
}

/// `offset` clamped to the text and moved back to a character boundary.
fn clamp_to_char(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

/// All files loaded while resolving one pipeline.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// Files in load order; the root pipeline is file 0.
    pub files: Vec<SourceFile>,
}

/// A human-readable location `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File path as displayed.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

impl SourceMap {
    /// Adds a file and returns its index.
    pub fn add(&mut self, path: &Path, text: String) -> usize {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let display = display_path(path);
        self.files.push(SourceFile { display, canonical, text, overlay_dir: None, line_starts: Default::default() });
        self.files.len() - 1
    }

    /// Location of the start of `span`.
    pub fn locate(&self, span: Span) -> Location {
        let Some(file) = self.files.get(span.file) else {
            return Location { file: "<unknown>".into(), line: 0, col: 0 };
        };
        let (line, col) = file.line_col(span.start);
        Location { file: file.display.clone(), line, col }
    }

    /// The source line containing `span`'s start (for error excerpts).
    pub fn line_text(&self, span: Span) -> Option<&str> {
        let file = self.files.get(span.file)?;
        let start = span.start.min(file.text.len());
        let line_start = file.text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = file.text[start..].find('\n').map(|i| start + i).unwrap_or(file.text.len());
        Some(&file.text[line_start..line_end])
    }
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// `path` made absolute (against the current directory) with `.` and `..` folded, without touching the disk: two
/// spellings of one path compare equal (links aside).
pub fn folded_absolute(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A path relative to the current directory when it lies below it.
pub fn display_path(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(abs) = path.canonicalize() {
            if let Ok(rel) = abs.strip_prefix(&cwd) {
                return rel.display().to_string();
            }
        }
    }
    // Otherwise (outside the working folder, or not there yet) as written, without a leading `./` (`./../results`,
    // `./out/t.md`: as a path that exists is shown).
    let shown = path.display().to_string();
    match shown.strip_prefix("./") {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
    }

    #[test]
    fn indexed_lookup_matches_the_scan() {
        let t = "a = 1\nbé = \"ü\"\n\n[x]\ny = 2";
        let mut m = SourceMap::default();
        m.add(Path::new("p.toml"), t.to_string());
        for o in 0..=t.len() + 3 {
            assert_eq!(m.files[0].line_col(o), line_col(t, o), "offset {o}");
        }
    }
}
