//! A matrix over files: `matrix = { sample = { files = "data/{sample}.csv" } }` gives the key `sample` one value
//! per file the pattern matches, what `{sample}` stands for in it (Snakemake's `glob_wildcards`), so that
//!
//! ```toml
//! [node.clean]
//! kind = "command"
//! matrix = { sample = { files = "raw/{sample}.csv" } }
//! run = ["python3", "clean.py", "raw/{sample}.csv"]
//! deps = ["clean.py", "raw/{sample}.csv"]
//! ```
//!
//! is one node per file (`clean.a`, `clean.b`, and `clean.sub/c` named `clean.sub_c`, as `inputs = { in =
//! "clean.{sample}" }` names it too), each keyed by its own file's content (the engine hashes a node's matched
//! files into its key whatever its kind reads: `deps` may leave it out): a new file is a node that never ran, a changed one reruns alone, a removed one's node is gone (and a
//! table that reads the declaration reads one run fewer). The pattern is relative to the declaring file's folder;
//! the placeholder matches one or more characters, `/` included (files in subfolders); files and folders whose
//! names start with `.` (`.git`, the store `.polyflow`, editor backups) are not matched. The values are sorted, so
//! the node ids and their order do not depend on the file system's listing order.

use super::error::{SpecError, SpecErrorKind as K};
use super::source::SourceMap;
use super::value::{Entry, SValue, Value};
use std::path::Path;

/// The pattern and the values of matrix key `key` when its entry `e` is a `{ files = "PATTERN" }` table, else
/// `None` (a list of values, read by the caller). `base` is the folder of the file that declares it.
pub fn values(sources: &SourceMap, key: &str, e: &Entry, base: &Path) -> Result<Option<(String, Vec<SValue>)>, SpecError> {
    let Value::Table(t) = &e.value.value else { return Ok(None) };
    let example = format!("`{key} = {{ files = \"data/{{{key}}}.csv\" }}`");
    let Some(pe) = t.get("files") else {
        return Err(SpecError::at(sources, e.value.span, K::WrongType, format!("matrix key `{key}` is a table without `files`"))
            .help(format!("give a list of values, or the files to run over: {example}")));
    };
    if let Some((k, other)) = t.iter().find(|(k, _)| k.as_str() != "files") {
        return Err(SpecError::at(sources, other.key_span, K::UnknownKey, format!("unknown key `{k}` in a matrix's files table"))
            .help(format!("a files table has one key, `files`: {example}")));
    }
    let Some(pattern) = pe.value.as_str() else {
        return Err(SpecError::at(sources, pe.value.span, K::WrongType, format!("`files` must be a string, as in {example}")));
    };
    let holder = format!("{{{key}}}");
    let bad = |why: String| {
        SpecError::at(sources, pe.value.span, K::OutOfRange, format!("files pattern `{pattern}`: {why}"))
            .help(format!("write a path relative to this file with `{holder}` where the names differ: {example}"))
    };
    let Some(at) = pattern.find(&holder) else { return Err(bad(format!("it has no `{holder}`"))) };
    let (prefix, suffix) = (&pattern[..at], &pattern[at + holder.len()..]);
    if suffix.contains(&holder) {
        return Err(bad(format!("`{holder}` appears twice")));
    }
    if let Some(c) = pattern.replace(&holder, "").chars().find(|c| "{}*?[]".contains(*c)) {
        return Err(bad(format!("`{c}` is not read: only `{holder}` stands for what differs")));
    }
    if Path::new(pattern).is_absolute() || pattern.split('/').any(|p| p == "..") {
        return Err(bad("it leaves this file's folder: the files a pipeline runs over lie below it".to_string()));
    }
    // Walked from the folder the literal start names (`data/` of `data/{x}.csv`).
    let dir_part = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
    let root = base.join(dir_part);
    if !root.is_dir() {
        return Err(bad(format!("`{}` is not a folder", super::source::display_path(&root))));
    }
    let mut found = vec![];
    let hidden = |e: &walkdir::DirEntry| e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
    for entry in walkdir::WalkDir::new(&root).follow_links(true).into_iter().filter_entry(|e| !hidden(e)) {
        let entry = entry.map_err(|err| bad(format!("cannot list it: {err}")))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(&root).expect("below the root");
        let Some(rel) = rel.to_str() else { continue };
        let whole = format!("{dir_part}{rel}");
        if whole.len() > prefix.len() + suffix.len() && whole.starts_with(prefix) && whole.ends_with(suffix) {
            found.push(whole[prefix.len()..whole.len() - suffix.len()].to_string());
        }
    }
    if found.is_empty() {
        return Err(bad(format!("it matches no file below `{}`", super::source::display_path(&root))));
    }
    found.sort();
    Ok(Some((pattern.to_string(), found.into_iter().map(|v| SValue { value: Value::Str(v), span: pe.value.span }).collect())))
}

#[cfg(test)]
mod tests {
    fn ids(dir: &std::path::Path, matrix: &str) -> Result<Vec<String>, String> {
        let text = format!("[node.m]\nkind = \"value\"\nvalue = \"{{s}}\"\nmatrix = {{ {matrix} }}\n");
        crate::spec::load_str("p.toml", &text, dir, None)
            .map(|p| p.nodes.iter().map(|n| format!("{}={}", n.id, n.params["value"].value.to_json())).collect())
            .map_err(|e| e.render())
    }

    #[test]
    fn one_node_per_file_named_by_what_the_placeholder_matched() {
        let d = tempfile::tempdir().unwrap();
        for f in ["data/b.csv", "data/a.csv", "data/sub/c.csv", "data/notes.txt", "data/.hidden.csv", "data/.git/x.csv"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let got = ids(d.path(), "s = { files = \"data/{s}.csv\" }").unwrap();
        assert_eq!(got, ["m.a=\"a\"", "m.b=\"b\"", "m.sub_c=\"sub/c\""]);
        // With another key: the cartesian product, as for lists.
        let got = ids(d.path(), "s = { files = \"data/sub/{s}.csv\" }, k = [1, 2]").unwrap();
        assert_eq!(got, ["m.1.c=\"c\"", "m.2.c=\"c\""]);
        for (bad, says) in [
            ("s = { files = \"data/{s}.json\" }", "matches no file below"),
            ("s = { files = \"data/*.csv\" }", "has no `{s}`"),
            ("s = { files = \"data/{s}*.csv\" }", "`*` is not read"),
            ("s = { files = \"../{s}.csv\" }", "leaves this file's folder"),
            ("s = { files = \"nope/{s}.csv\" }", "is not a folder"),
            ("s = { glob = \"data/{s}.csv\" }", "without `files`"),
        ] {
            let e = ids(d.path(), bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
