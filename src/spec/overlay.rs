//! Overrides from outside the repository: `--config FILE` overlays and `--set NODE.PARAM=VALUE`.
//!
//! A researcher points a pipeline at their own copies of the data without editing it (as with Hydra's
//! overrides or Snakemake's `--config`):
//!
//! ```toml
//! # local.toml, given with --config local.toml
//! seed = 1                        # optional: the pipeline seed
//! [node.imagenet]                 # one node (a declaration or an expanded matrix id)
//! path = "/data/imagenet"
//! [kind.task]                     # every node of a kind
//! batch_size = 256
//! ```
//!
//! `--set imagenet.path=/data/imagenet` is the same as that `[node.imagenet]` entry: the text after the last
//! dot before `=` is the parameter, the rest the node id (matrix ids keep their dots: `--set co_all.6.lr=0.1`);
//! `--set seed=3` sets the seed. The value is read as TOML (`0.1`, `true`, `[0, 6]`, `"text"`), else taken as a
//! string. An override is applied exactly like the same edit in the file, so it enters keys the same way.
//!
//! Precedence, lowest first: the declaration, `[profile.P.kind.K]`, `--config` kind tables, `[profile.P.node.N]`,
//! `--config` node tables, `--set` (several `--config` files apply in order). Relative paths in parameters of
//! path type resolve against the folder of the config file, or the current directory for `--set`.

use super::error::{SpecError, SpecErrorKind as K};
use super::source::{SourceMap, Span};
use super::value::{from_toml, table_from_toml, Entry, SValue, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Overrides given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    /// `--config` files, in order.
    #[serde(default)]
    pub configs: Vec<PathBuf>,
    /// `--set NODE.PARAM=VALUE` arguments, in order.
    #[serde(default)]
    pub sets: Vec<String>,
}

impl Overlay {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty() && self.sets.is_empty()
    }

    /// The overrides as a command line gives them, in order (`--config local.toml`, `--set a.b=1`): how a run
    /// records the settings it was made under.
    pub fn words(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| format!("--config {}", super::source::display_path(c)))
            .chain(self.sets.iter().map(|s| format!("--set {s}")))
            .collect()
    }

    /// The same overlay with config paths made absolute (for jobs that run elsewhere).
    pub fn absolute(&self) -> Overlay {
        let cwd = std::env::current_dir().unwrap_or_default();
        Overlay { configs: self.configs.iter().map(|p| cwd.join(p)).collect(), sets: self.sets.clone() }
    }
}

/// What marks an override's entry as one to add to a table that lacks it (`--set +hp.value.lr=0.3`): the first
/// character of the entry's own name.
pub const ADDS: char = '+';

/// `key` without the [`ADDS`] mark its last entry's name may start with (`params.+lr` → `params.lr`); a `+`
/// anywhere else is part of a name (`"c++"`).
pub fn unmarked(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((path, last)) => format!("{path}.{}", last.strip_prefix(ADDS).unwrap_or(last)),
        None => key.strip_prefix(ADDS).unwrap_or(key).to_string(),
    }
}

/// Overrides read from an [`Overlay`], with spans into the source map.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Node id → overridden parameters (and reserved keys such as `inputs`).
    pub nodes: Vec<(String, Span, BTreeMap<String, Entry>)>,
    /// Kind → overridden parameters.
    pub kinds: Vec<(String, Span, BTreeMap<String, Entry>)>,
    /// The seed, if set.
    pub seed: Option<u64>,
    /// Pipeline variables set (`--set vars.NAME=…`, a config file's `[vars]`), with whether each is added (`+`).
    pub vars: Vec<(String, Entry, bool)>,
}

fn type_err(sources: &SourceMap, v: &SValue, expected: &str) -> SpecError {
    SpecError::at(sources, v.span, K::WrongType, format!("expected {expected}, found {}", v.value.type_name()))
        .help(format!("write {expected} here"))
}

fn seed_of(sources: &SourceMap, v: &SValue) -> Result<u64, SpecError> {
    match v.value {
        Value::Int(i) if i >= 0 => Ok(i as u64),
        _ => Err(type_err(sources, v, "a non-negative integer")),
    }
}

/// Reads every config file and `--set` argument of `overlay` into `sources` and returns the overrides.
pub fn parse(sources: &mut SourceMap, overlay: &Overlay) -> Result<Parsed, SpecError> {
    let mut out = Parsed::default();
    for path in &overlay.configs {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecError::nowhere(K::Io, format!("cannot read config file `{}`: {e}", path.display()))
                .help("--config takes a TOML file with [node.ID] and [kind.KIND] tables")
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let file = sources.add(path, text.clone());
        sources.files[file].overlay_dir = Some(absolute(&dir));
        let doc = toml::de::DeTable::parse(&text).map_err(|e| super::unclosed::syntax_error(sources, file, &text, &e))?;
        let top = table_from_toml(doc.get_ref(), file).map_err(|(m, span)| SpecError::at(sources, span, K::OutOfRange, m))?;
        for (k, e) in &top {
            match k.as_str() {
                "seed" => out.seed = Some(seed_of(sources, &e.value)?),
                "vars" => out.vars.extend(super::vars::vars_table(sources, e)?.into_iter().map(|(k, v)| (k, v, false))),
                "node" | "kind" => {
                    let Some(t) = e.value.as_table() else {
                        return Err(type_err(sources, &e.value, "a table"));
                    };
                    for (target, oe) in t {
                        let Some(ot) = oe.value.as_table() else {
                            return Err(type_err(sources, &oe.value, "a table of overrides"));
                        };
                        let item = (target.clone(), oe.key_span, ot.clone());
                        if k == "node" {
                            out.nodes.push(item)
                        } else {
                            out.kinds.push(item)
                        }
                    }
                }
                _ => {
                    return Err(SpecError::at(sources, e.key_span, K::UnknownKey, format!("unknown key `{k}` in a config file"))
                        .help(super::error::suggest(k, ["seed", "node", "kind", "vars"])))
                }
            }
        }
    }
    for (i, arg) in overlay.sets.iter().enumerate() {
        let file = sources.add(Path::new(&format!("--set #{}", i + 1)), arg.clone());
        sources.files[file].display = format!("--set {arg}");
        sources.files[file].overlay_dir = Some(absolute(Path::new(".")));
        let whole = Span { file, start: 0, end: arg.len() };
        let Some(eq) = arg.find('=') else {
            return Err(SpecError::at(sources, whole, K::Syntax, format!("`--set {arg}` has no `=`"))
                .help("write --set NODE.PARAM=VALUE, e.g. --set imagenet.path=/data/imagenet"));
        };
        // `+NODE.TABLE.KEY=VALUE` adds an entry a table lacks (Hydra's and DVC's `+`): without it, a name the
        // table lacks is taken for a misspelling ([`super::parse`]'s `set_param`). Marked by a `+` before the
        // entry's own name, which is what reaches the table.
        let (adds, lhs) = match arg[..eq].trim().strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, arg[..eq].trim()),
        };
        if lhs.starts_with('+') {
            return Err(SpecError::at(
                sources,
                Span { file, start: 0, end: eq },
                K::Syntax,
                format!("`{}` has more than one `+`", &arg[..eq]),
            )
            .help("one `+` before the node adds an entry a table lacks (`--set +NODE.TABLE.KEY=VALUE`); without it, an entry is set"));
        }
        let value = parse_value(&arg[eq + 1..], file, eq + 1);
        if lhs == "seed" {
            if adds {
                return Err(SpecError::at(
                    sources,
                    Span { file, start: 0, end: eq },
                    K::Syntax,
                    "`seed` is the pipeline's seed, which every pipeline has: a `+` adds an entry a table lacks",
                )
                .help("leave out the `+`: `--set seed=N`"));
            }
            out.seed = Some(seed_of(sources, &value)?);
            continue;
        }
        // `--set vars.NAME=VALUE`: a pipeline variable.
        if let Some(name) = lhs.strip_prefix("vars.") {
            let lead = arg.len() - arg.trim_start().len() + usize::from(adds) + "vars.".len();
            let key_span = Span { file, start: lead, end: eq };
            let wrapper =
                SValue { value: Value::Table([(name.to_string(), Entry { key_span, value: value.clone() })].into()), span: value.span };
            let t = super::vars::vars_table(sources, &Entry { key_span, value: wrapper })?;
            out.vars.extend(t.into_iter().map(|(k, v)| (k, v, adds)));
            continue;
        }
        let Some(dot) = lhs.rfind('.') else {
            return Err(SpecError::at(sources, Span { file, start: 0, end: eq }, K::Syntax, format!("`{lhs}` names no node"))
                .help("write --set NODE.PARAM=VALUE (or --set seed=N)"));
        };
        let (node, param) = (&lhs[..dot], &lhs[dot + 1..]);
        if node.is_empty() || param.is_empty() || param.starts_with('+') {
            return Err(SpecError::at(sources, Span { file, start: 0, end: eq }, K::Syntax, format!("`{lhs}` is not NODE.PARAM"))
                .help("write --set NODE.PARAM=VALUE, e.g. --set imagenet.path=/data/imagenet"));
        }
        let lead = arg.len() - arg.trim_start().len() + usize::from(adds);
        let key_span = Span { file, start: lead + dot + 1, end: eq };
        let entry = Entry { key_span, value };
        let param = if adds { format!("{ADDS}{param}") } else { param.to_string() };
        out.nodes.push((node.to_string(), Span { file, start: lead, end: lead + dot }, [(param, entry)].into()));
    }
    Ok(out)
}

fn absolute(dir: &Path) -> PathBuf {
    let d = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf())
}

/// The value of `--set K=TEXT`: TOML if it parses as a TOML value, else the text as a string.
fn parse_value(text: &str, file: usize, offset: usize) -> SValue {
    let trimmed = text.trim();
    let lead = text.len() - text.trim_start().len();
    let doc = format!("v = {trimmed}");
    if let Ok(t) = toml::de::DeTable::parse(&doc) {
        if let Some(v) = t.get_ref().get("v") {
            if let Ok(mut sv) = from_toml(v, file) {
                shift(&mut sv, offset + lead, 4);
                return sv;
            }
        }
    }
    SValue { value: Value::Str(trimmed.to_string()), span: Span { file, start: offset + lead, end: offset + lead + trimmed.len() } }
}

/// Moves spans parsed from `v = TEXT` onto the `--set` argument's text.
fn shift(v: &mut SValue, offset: usize, prefix: usize) {
    let mv = |s: &mut Span| {
        s.start = (s.start + offset).saturating_sub(prefix);
        s.end = (s.end + offset).saturating_sub(prefix);
    };
    mv(&mut v.span);
    match &mut v.value {
        Value::Array(a) => a.iter_mut().for_each(|x| shift(x, offset, prefix)),
        Value::Table(t) => t.values_mut().for_each(|e| {
            mv(&mut e.key_span);
            shift(&mut e.value, offset, prefix)
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_toml_or_strings() {
        let mut s = SourceMap::default();
        let o = Overlay {
            configs: vec![],
            sets: vec!["imagenet.path=/data/imagenet".into(), "co_all.6.lr=0.1".into(), "x.m=[0, 6]".into(), "seed=3".into()],
        };
        let p = parse(&mut s, &o).unwrap();
        assert_eq!(p.seed, Some(3));
        assert_eq!(p.nodes[0].0, "imagenet");
        assert_eq!(p.nodes[0].2["path"].value.to_json(), serde_json::json!("/data/imagenet"));
        assert_eq!(p.nodes[1].0, "co_all.6");
        assert_eq!(p.nodes[1].2["lr"].value.to_json(), serde_json::json!(0.1));
        assert_eq!(p.nodes[2].2["m"].value.to_json(), serde_json::json!([0, 6]));
        // The value's span points at the value in the argument.
        let v = &p.nodes[1].2["lr"].value;
        assert_eq!(&s.files[v.span.file].text[v.span.start..v.span.end], "0.1");
        let loc = s.locate(v.span);
        assert_eq!((loc.line, loc.col), (1, 13));
    }

    #[test]
    fn set_without_node_or_equals_is_an_error() {
        let mut s = SourceMap::default();
        assert!(parse(&mut s, &Overlay { configs: vec![], sets: vec!["path".into()] }).is_err());
        assert!(parse(&mut s, &Overlay { configs: vec![], sets: vec!["path=/x".into()] }).is_err());
    }
}
