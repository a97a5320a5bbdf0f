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
    pub fn render(&self) -> String {
        let mut s = String::new();
        match &self.location {
            Some(l) => s.push_str(&format!("{l}: error: {}", self.message)),
            None => s.push_str(&format!("error: {}", self.message)),
        }
        if let (Some(l), Some(ex)) = (&self.location, &self.excerpt) {
            s.push_str(&format!("\n  {:>4} | {}\n       | {}^", l.line, ex, " ".repeat(l.col.saturating_sub(1))));
        }
        if let Some(h) = &self.help {
            s.push_str(&format!("\n  help: {h}"));
        }
        s
    }
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
            let all: Vec<_> = candidates.into_iter().collect();
            format!("expected one of: {}", all.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn suggests_near_keys() {
        assert_eq!(closest("lerning_rate", ["learning_rate", "steps"]), Some("learning_rate"));
        assert_eq!(closest("zzz", ["learning_rate", "steps"]), None);
    }
}
