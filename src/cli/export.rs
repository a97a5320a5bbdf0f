//! What an exported file says of the settings it was made with: a table exported by a run with `--set` or
//! `--config` overrides carries them in its text (Markdown, LaTeX, JSON), so a copy in `results/` (or in a
//! paper draft) cannot pass for the pipeline file's own result. CSV has no comment syntax every reader accepts:
//! it is left as it is (the Markdown and JSON beside it say it).

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
            if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice::<serde_json::Value>(&out) {
                m.insert("made_with".into(), serde_json::json!({"pipeline": pipeline, "overrides": overrides}));
                if let Ok(v) = serde_json::to_vec_pretty(&serde_json::Value::Object(m)) {
                    out = v;
                    out.push(b'\n');
                }
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
        let json: serde_json::Value = serde_json::from_slice(&mark("t.json", br#"{"rows": []}"#.to_vec(), "p.toml", &o)).unwrap();
        assert_eq!(json["made_with"]["overrides"][0], "--set co_all.lr=0.5");
        assert_eq!(json["rows"], serde_json::json!([]));
        assert_eq!(mark("t.csv", b"a,b\n".to_vec(), "p.toml", &o), b"a,b\n");
        assert_eq!(mark("t.md", b"x\n".to_vec(), "p.toml", &[]), b"x\n", "no overrides: the artifact's bytes");
        assert_eq!(mark("t.json", b"[1]".to_vec(), "p.toml", &o), b"[1]", "not an object: as it is");
    }
}
