//! A `command` node's `metrics.json`, as tables, `compare` and `show` read it.

/// A `metrics.json` as tables, `compare` and `show` read it: JSON, where the bare `NaN`, `Infinity` and
/// `-Infinity` that Python's `json.dump` writes by default (a diverged run's loss) are read as `null` (no
/// number), and a leading UTF-8 byte-order mark is let be.
pub fn parse_metrics(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Outside strings only.
            let (mut out, mut i, mut in_str, mut esc) = (Vec::with_capacity(bytes.len()), 0, false, false);
            while i < bytes.len() {
                let b = bytes[i];
                if in_str {
                    out.push(b);
                    match (esc, b) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                let rest = &bytes[i..];
                if let Some(t) = [&b"-Infinity"[..], b"Infinity", b"NaN"].into_iter().find(|t| rest.starts_with(t)) {
                    out.extend_from_slice(b"null");
                    i += t.len();
                    continue;
                }
                in_str = b == b'"';
                out.push(b);
                i += 1;
            }
            serde_json::from_slice(&out).map_err(|_| e)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_json_reads_with_nan_as_null() {
        let v = super::parse_metrics(
            b"\xef\xbb\xbf{\"loss\": NaN, \"a\": -Infinity, \"b\": Infinity, \"s\": \"NaN \\\" Infinity\", \"acc\": 0.5}",
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"loss": null, "a": null, "b": null, "s": "NaN \" Infinity", "acc": 0.5}));
        assert!(super::parse_metrics(b"{\"acc\": .1}").is_err());
    }
}
