//! A `command` node's `params`: values for its program, as DVC's `params.yaml` or Snakemake's `params:` give
//! them. They are part of the node's key (like every parameter), written to the JSON file `$POLYFLOW_PARAMS`
//! names, and substituted for `{params.NAME}` (`{params.opt.beta}` inside a table) in `run`:
//!
//! ```toml
//! [node.train]
//! kind = "command"
//! run = ["python3", "train.py", "--lr", "{params.lr}"]
//! params = { lr = 0.1, epochs = 5 }
//! ```
//!
//! `--set train.params.lr=0.3` changes one value, keeping the others.

use serde_json::{Map, Value};

/// A `{params.…}` placeholder of an argument: where it is, and its path below `params` (`["opt", "beta"]`), or
/// `None` for an escaped one, `{{params.a}}`, which stands for the text `{params.a}`.
type Placeholder<'a> = (std::ops::Range<usize>, Option<Vec<&'a str>>);

/// The `{params.…}` placeholders of `arg`, in order.
fn placeholders(arg: &str) -> Vec<Placeholder<'_>> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(i) = arg[from..].find("{params.") {
        let start = from + i;
        let Some(len) = arg[start..].find('}') else { break };
        let inner = &arg[start + "{params.".len()..start + len];
        let path: Vec<&str> = inner.split('.').collect();
        let word = |w: &&str| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        let end = start + len + 1;
        if path.iter().all(word) {
            let escaped = start > 0 && arg.as_bytes()[start - 1] == b'{' && arg.as_bytes().get(end) == Some(&b'}');
            if escaped {
                out.push((start - 1..end + 1, None));
            } else {
                out.push((start..end, Some(path)));
            }
        }
        from = end;
    }
    out
}

/// The value at `path` below `params`.
fn lookup<'a>(params: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = params.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    lookup(v.as_object()?, rest)
}

/// How a value reads on a command line: a string as itself, a float as a `{NAME}` matrix placeholder writes it
/// ([`crate::spec::value::float_text`]: `1e20` as in `{lr}`), an integer or boolean as TOML writes it, a list or
/// table as JSON.
fn as_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), crate::spec::value::float_text),
        other => other.to_string(),
    }
}

/// `argv` with every `{params.NAME}` replaced by its value in `params`; an error names the first placeholder no
/// value answers, with the names there are.
pub fn substitute(argv: &[String], params: &Map<String, Value>) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|arg| {
            let mut out = String::new();
            let mut last = 0;
            for (range, path) in placeholders(arg) {
                let Some(path) = path else {
                    // `{{params.a}}`: the text `{params.a}`.
                    out.push_str(&arg[last..range.start]);
                    out.push_str(&arg[range.start + 1..range.end - 1]);
                    last = range.end;
                    continue;
                };
                let Some(v) = lookup(params, &path) else {
                    let names: Vec<&str> = params.keys().map(String::as_str).collect();
                    let have = if names.is_empty() { "none".to_string() } else { names.join(", ") };
                    return Err(format!("`{}`: the node's `params` has no `{}` (it has {have})", &arg[range], path.join(".")));
                };
                out.push_str(&arg[last..range.start]);
                out.push_str(&as_arg(v));
                last = range.end;
            }
            out.push_str(&arg[last..]);
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_take_values_as_a_command_line_writes_them() {
        let p = params(json!({"lr": 0.1, "name": "run a", "n": 5, "on": true, "opt": {"beta": 0.9}, "l": [1, 2]}));
        let argv: Vec<String> =
            ["x", "--lr={params.lr}", "{params.name}", "{params.n}{params.on}", "{params.opt.beta}", "{params.l}", "{lr}", "${params}"]
                .map(String::from)
                .to_vec();
        assert_eq!(substitute(&argv, &p).unwrap(), ["x", "--lr=0.1", "run a", "5true", "0.9", "[1,2]", "{lr}", "${params}"]);
        // Floats as a matrix's `{lr}` writes them: a whole one keeps its point, none takes an exponent.
        let p = params(json!({"big": 1e20, "w": 2.0, "s": 1e-5}));
        let argv = ["{params.big}", "{params.w}", "{params.s}"].map(String::from).to_vec();
        assert_eq!(substitute(&argv, &p).unwrap(), ["100000000000000000000.0", "2.0", "0.00001"]);
        let p = params(json!({"lr": 0.1}));
        // Escaped: the text itself, even for a name `params` lacks.
        let argv = ["{{params.lr}}={params.lr}", "{{params.nope}}"].map(String::from).to_vec();
        assert_eq!(substitute(&argv, &p).unwrap(), ["{params.lr}=0.1", "{params.nope}"]);
    }

    #[test]
    fn a_name_not_in_params_is_an_error_naming_those_there_are() {
        let e = substitute(&["{params.lr}".to_string()], &params(json!({"rate": 1}))).unwrap_err();
        assert!(e.contains("`{params.lr}`: the node's `params` has no `lr` (it has rate)"), "{e}");
        let e = substitute(&["{params.opt.x}".to_string()], &params(json!({"opt": 1}))).unwrap_err();
        assert!(e.contains("`{params.opt.x}`"), "{e}");
        assert!(substitute(&["{params.a}".to_string()], &Map::new()).unwrap_err().contains("(it has none)"));
    }
}
