//! Where a TOML syntax error really is when a bracket was left open: the parser reports the line after an inline
//! table that was never closed (`params = { degree = 3` … `[node.train]`: "missing key for inline table element" at
//! the next table's header), which is not where the fix goes.

use super::error::{SpecError, SpecErrorKind as K};
use super::source::{SourceMap, Span};

/// The error for TOML `text` (file `file` of `sources`) that does not parse: at the inline table left open where one
/// is ([`open_inline_table`]), else where the parser stopped.
pub fn syntax_error(sources: &SourceMap, file: usize, text: &str, e: &toml::de::Error) -> SpecError {
    let r = e.span().unwrap_or(0..0);
    let span = Span { file, start: r.start, end: r.end };
    let msg = e.message().trim();
    match open_inline_table(text, r.start) {
        Some(open) => {
            SpecError::at(sources, Span { file, start: open, end: open + 1 }, K::Syntax, "invalid TOML: this inline table is not closed")
                .help(format!(
                    "add its `}}` on this line: an inline table `{{ … }}` ends on the line it starts (the parser stopped at {}: {msg})",
                    sources.locate(span)
                ))
        }
        None => SpecError::at(sources, span, K::Syntax, format!("invalid TOML: {msg}")).help("fix the TOML syntax at this place"),
    }
}

/// The byte offset of the inline table `{` still open at `at` that was opened on an earlier line (an inline table
/// ends on the line it starts), if any: strings and comments are skipped.
pub fn open_inline_table(text: &str, at: usize) -> Option<usize> {
    let b = text.as_bytes();
    let end = at.min(b.len());
    let mut open: Vec<(u8, usize)> = vec![];
    let mut i = 0;
    while i < end {
        match b[i] {
            b'#' => {
                while i < end && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            q @ (b'"' | b'\'') => {
                let triple = b.get(i..i + 3) == Some(&[q, q, q][..]);
                i += if triple { 3 } else { 1 };
                while i < end {
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple && b.get(i..i + 3) == Some(&[q, q, q][..]) {
                        i += 3;
                        break;
                    }
                    if !triple && (b[i] == q || b[i] == b'\n') {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            c @ (b'{' | b'[') => open.push((c, i)),
            b'}' | b']' => {
                open.pop();
            }
            _ => {}
        }
        i += 1;
    }
    // A table header's `[`…`]` closes on its line; what is open now was opened by a value.
    let line_start = text[..end].rfind('\n').map_or(0, |n| n + 1);
    open.iter().rev().find(|(c, pos)| *c == b'{' && *pos < line_start).map(|(_, pos)| *pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_inline_table_left_open_on_an_earlier_line() {
        let t = "[node.a]\nparams = { degree = 3 \n\n[node.b]\nkind = \"x\"\n";
        let at = t.find("[node.b]").unwrap();
        assert_eq!(open_inline_table(t, at), Some(t.find('{').unwrap()));
    }

    #[test]
    fn ignores_closed_tables_strings_comments_and_arrays() {
        let t = "a = { x = \"{\" } # {\nb = '{'\nc = [\n  1,\n]\nd = \"\"\"{\n\"\"\"\ne = ?\n";
        assert_eq!(open_inline_table(t, t.find('?').unwrap()), None);
        // An array open over several lines is allowed; an inline table on the same line is the parser's own error.
        let t = "c = [\n  1,\n ?";
        assert_eq!(open_inline_table(t, t.find('?').unwrap()), None);
        let t = "c = { a = ?";
        assert_eq!(open_inline_table(t, t.find('?').unwrap()), None);
    }
}
