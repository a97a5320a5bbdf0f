//! Pipeline errors that point at the file, line and column that caused them.

use super::source::{Location, SourceMap, Span};

/// What went wrong in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecErrorKind {
    /// The file could not be read (missing pipeline or include).
    Io,
    /// The TOML itself is malformed.
    Syntax,
    /// A key that is not known here.
    UnknownKey,
    /// A node kind that no stage implements.
    UnknownKind,
    /// A value of the wrong type.
    WrongType,
    /// A value outside its allowed range or set.
    OutOfRange,
    /// A required parameter or field is missing.
    Missing,
    /// Two different declarations share one id.
    DuplicateId,
    /// An input names a node that does not exist.
    DanglingReference,
    /// The graph has a cycle.
    Cycle,
    /// An input's artifact type does not fit the slot.
    InputType,
    /// A profile that no file declares.
    UnknownProfile,
    /// A target node that does not exist.
    UnknownTarget,
}

/// A pipeline error with its location and a hint on what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// The error class.
    pub kind: SpecErrorKind,
    /// Where (None for errors without a place, e.g. an unknown `--profile`).
    pub location: Option<Location>,
    /// The offending source line, for an excerpt.
    pub excerpt: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl SpecError {
    /// An error at `span` of `sources`.
    pub fn at(sources: &SourceMap, span: Span, kind: SpecErrorKind, message: impl Into<String>) -> Self {
        SpecError {
            kind,
            location: Some(sources.locate(span)),
            excerpt: sources.line_text(span).map(|s| s.to_string()),
            message: message.into(),
            help: None,
        }
    }

    /// An error with no source location.
    pub fn nowhere(kind: SpecErrorKind, message: impl Into<String>) -> Self {
        SpecError { kind, location: None, excerpt: None, message: message.into(), help: None }
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col: error: message` plus excerpt and help.
    /// Long messages and lines (a 10 MB value) are shortened around what matters.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let message = shorten(&self.message, MAX_MESSAGE);
        match &self.location {
            Some(l) => s.push_str(&format!("{l}: error: {message}")),
            None => s.push_str(&format!("error: {message}")),
        }
        if let (Some(l), Some(ex)) = (&self.location, &self.excerpt) {
            let (line, caret) = excerpt_window(ex, l.col.saturating_sub(1));
            s.push_str(&format!("\n  {:>4} | {}\n       | {}^", l.line, line, " ".repeat(caret)));
        }
        if let Some(h) = &self.help {
            s.push_str(&format!("\n  help: {h}"));
        }
        s
    }
}

/// The longest message rendered in full.
const MAX_MESSAGE: usize = 400;
/// Characters of an excerpt line shown around the error's column.
const EXCERPT_CHARS: usize = 120;

/// `text` cut to its first `max` characters plus how long it was.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// At most `EXCERPT_CHARS` characters of `line` around character column `col`; returns the window and the
/// caret's column in it.
fn excerpt_window(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= EXCERPT_CHARS {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(EXCERPT_CHARS / 2).min(chars.len().saturating_sub(EXCERPT_CHARS));
    let end = (start + EXCERPT_CHARS).min(chars.len());
    let mut w: String = chars[start..end].iter().collect();
    let mut caret = col - start;
    if start > 0 {
        w.insert(0, '…');
        caret += 1;
    }
    if end < chars.len() {
        w.push('…');
    }
    (w, caret)
}

/// The closest candidate to `word` (edit distance), if any is close enough.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3) && *d < c.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `help` text suggesting the closest candidate, or listing all of them.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match closest(word, candidates.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => {
            // A pipeline has hundreds of node ids: name a few, not all.
            const SHOWN: usize = 12;
            let all: Vec<_> = candidates.into_iter().collect();
            if all.len() > SHOWN {
                format!("expected one of: {}, … ({} in all)", all[..SHOWN].join(", "), all.len())
            } else {
                format!("expected one of: {}", all.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_values_are_shortened_in_messages_and_excerpts() {
        let big = "x".repeat(10 << 20);
        let e = SpecError {
            kind: SpecErrorKind::OutOfRange,
            location: None,
            excerpt: None,
            message: format!("`{big}` is not one of: a, b"),
            help: None,
        };
        let r = e.render();
        assert!(r.len() < 600 && r.contains(&format!("({} bytes in all)", e.message.len())), "{}", &r[..200]);
        let (w, caret) = excerpt_window(&format!("value = \"{big}\""), 5000);
        assert_eq!((w.chars().count(), caret), (EXCERPT_CHARS + 2, EXCERPT_CHARS / 2 + 1));
        assert_eq!(excerpt_window("short = 1", 3), ("short = 1".to_string(), 3));
    }
    #[test]
    fn suggests_near_keys() {
        assert_eq!(closest("lerning_rate", ["learning_rate", "steps"]), Some("learning_rate"));
        assert_eq!(closest("zzz", ["learning_rate", "steps"]), None);
    }
}
