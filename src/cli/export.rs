//! What an exported file says of the settings it was made with: a table exported by a run with `--set` or
//! `--config` overrides that change it carries them in its text (Markdown, LaTeX, JSON), so a copy in
//! `results/` (or in a paper draft) cannot pass for the pipeline file's own result. Overrides that change
//! nothing (a value the file already has, a dataset moved to another disk) leave no mark: the file alone gives
//! the same artifact. CSV has no comment syntax every reader accepts: it is left as it is (the Markdown and
//! JSON beside it say it).

use super::{env_of, load_graph, Common};
use crate::exec::State;
use crate::stage::Registry;
use std::collections::BTreeSet;

/// The nodes of `summary` whose artifact the pipeline file gives without the overrides of `c` too (assessed
/// without them: fresh, with the very same artifact). Anything that cannot be assessed so counts as changed.
pub fn same_without_overrides(c: &Common, reg: &Registry, summary: &crate::exec::RunSummary) -> BTreeSet<String> {
    let mut plain = c.clone();
    plain.config.clear();
    plain.set.clear();
    let Ok(g) = load_graph(&plain, reg) else { return BTreeSet::new() };
    let ids: Vec<String> = summary.artifacts.keys().filter(|id| g.resolve(id).is_some()).cloned().collect();
    let Ok(sel) = g.select(&ids) else { return BTreeSet::new() };
    let Ok((store, _)) = super::read_store(&c.store) else { return BTreeSet::new() };
    let Ok(index) = store.index_read() else { return BTreeSet::new() };
    let states = crate::exec::assess::assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false);
    sel.iter()
        .filter_map(|&i| {
            let (id, st) = (&g.nodes[i].id, states.get(&i)?);
            let same = st.state == State::Fresh && st.manifest.as_ref().map(|m| &m.digest) == summary.artifacts.get(id).map(|m| &m.digest);
            same.then(|| id.clone())
        })
        .collect()
}

/// `bytes` of an exported file named `name`, marked as made from `pipeline` with `overrides` (the options as
/// typed: `--set a.b=1`, `--config x.toml`); unchanged when there are none or the format has no place for it.
pub fn mark(name: &str, bytes: Vec<u8>, pipeline: &str, overrides: &[String]) -> Vec<u8> {
    if overrides.is_empty() {
        return bytes;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let mut out = bytes;
    match ext.as_str() {
        "md" => {
            let code = overrides.iter().map(|o| format!("`{}`", o.replace('`', "'"))).collect::<Vec<_>>().join(" ");
            ensure_newline(&mut out);
            out.extend(format!("\n> Made with {code} on top of `{pipeline}`: not the pipeline file's own settings.\n").as_bytes());
        }
        "tex" => {
            ensure_newline(&mut out);
            // One comment line per override: a `%` comment ends at the line's end.
            out.extend(format!("% Made with these overrides on top of {pipeline}, not the pipeline file's own settings:\n").as_bytes());
            for o in overrides {
                out.extend(format!("%   {}\n", o.replace(['\n', '\r'], " ")).as_bytes());
            }
        }
        "json" => {
            // Appended before the object's closing brace, as text: the other keys keep their order and bytes.
            let is_object =
                matches!(serde_json::from_slice::<serde_json::Value>(&out), Ok(serde_json::Value::Object(ref m)) if !m.is_empty());
            let end = out.iter().rposition(|&b| b == b'}');
            if let (true, Some(end)) = (is_object, end) {
                let mark = serde_json::json!({"pipeline": pipeline, "overrides": overrides});
                let tail = out.split_off(end);
                while out.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    out.pop();
                }
                out.extend(format!(",\n  \"made_with\": {mark}\n").as_bytes());
                out.extend(tail);
            }
        }
        _ => {}
    }
    out
}

fn ensure_newline(v: &mut Vec<u8>) {
    if !v.is_empty() && v.last() != Some(&b'\n') {
        v.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::mark;

    #[test]
    fn overrides_are_written_where_the_format_allows() {
        let o = vec!["--set co_all.lr=0.5".to_string(), "--config my data.toml".to_string()];
        let md = String::from_utf8(mark("t.md", b"| a |\n".to_vec(), "p.toml", &o)).unwrap();
        assert!(md.starts_with("| a |\n") && md.contains("`--set co_all.lr=0.5` `--config my data.toml` on top of `p.toml`"), "{md}");
        let tex = String::from_utf8(mark("t.tex", b"\\begin{tabular}".to_vec(), "p.toml", &o)).unwrap();
        assert!(tex.contains("\\begin{tabular}\n% Made with") && tex.ends_with("%   --config my data.toml\n"), "{tex}");
        let marked = mark("t.json", b"{\n  \"title\": \"T\",\n  \"rows\": []\n}\n".to_vec(), "p.toml", &o);
        let text = String::from_utf8(marked.clone()).unwrap();
        assert!(text.starts_with("{\n  \"title\": \"T\",\n  \"rows\": [],\n  \"made_with\": {"), "keys keep their order: {text}");
        let json: serde_json::Value = serde_json::from_slice(&marked).unwrap();
        assert_eq!(json["made_with"]["overrides"][0], "--set co_all.lr=0.5");
        assert_eq!(json["rows"], serde_json::json!([]));
        assert_eq!(mark("t.csv", b"a,b\n".to_vec(), "p.toml", &o), b"a,b\n");
        assert_eq!(mark("t.md", b"x\n".to_vec(), "p.toml", &[]), b"x\n", "no overrides: the artifact's bytes");
        assert_eq!(mark("t.json", b"[1]".to_vec(), "p.toml", &o), b"[1]", "not an object: as it is");
    }
}
