//! Spanned TOML values: every value and key remembers where it came from.

use super::source::Span;
use std::collections::BTreeMap;

/// A TOML value with its span.
#[derive(Debug, Clone)]
pub struct SValue {
    /// The value.
    pub value: Value,
    /// Where it was written.
    pub span: Span,
}

/// A table entry: the key's span and the value.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Span of the key.
    pub key_span: Span,
    /// The value.
    pub value: SValue,
}

/// A TOML value (datetimes are kept as strings).
#[derive(Debug, Clone)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (datetimes too).
    Str(String),
    /// An array.
    Array(Vec<SValue>),
    /// A table, sorted by key.
    Table(BTreeMap<String, Entry>),
}

impl Value {
    /// [`Self::type_name`], with an array's element types (`array of string and integer`): what a type error
    /// shows.
    pub fn describe(&self) -> String {
        match self {
            Value::Array(items) if !items.is_empty() => {
                let mut kinds: Vec<&str> = vec![];
                for v in items {
                    let k = v.value.type_name();
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
                format!("array of {}", kinds.join(" and "))
            }
            v => v.type_name().to_string(),
        }
    }

    /// Name of the TOML type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            // Not numbers to any parameter (JSON, which keys hash, has no such values).
            Value::Float(f) if f.is_nan() => "nan",
            Value::Float(f) if f.is_infinite() => "an infinity",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

impl SValue {
    /// The value as canonical JSON (tables sorted by key, spans dropped).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or_else(|| serde_json::Value::String(f.to_string()))
            }
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(|v| v.to_json()).collect()),
            Value::Table(t) => serde_json::Value::Object(t.iter().map(|(k, e)| (k.clone(), e.value.to_json())).collect()),
        }
    }

    /// The first NaN or infinity in this value (itself, or in an array or table it holds): JSON, which keys
    /// hash and programs read their parameters as, has neither.
    pub fn non_finite(&self) -> Option<&SValue> {
        match &self.value {
            Value::Float(f) if !f.is_finite() => Some(self),
            Value::Array(a) => a.iter().find_map(SValue::non_finite),
            Value::Table(t) => t.values().find_map(|e| e.value.non_finite()),
            _ => None,
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The table, if this is a table.
    pub fn as_table(&self) -> Option<&BTreeMap<String, Entry>> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The `{name}` placeholders in this value's strings (at any depth), with the span of the string holding each:
    /// `name` a word (letters, digits, `_`, not starting with a digit), not right after `$` (a shell's `${HOME}`)
    /// and not doubled (`{{name}}`, a template's or an escaped placeholder: see [`expand`]).
    pub fn placeholders(&self, out: &mut Vec<(String, Span)>) {
        match &self.value {
            Value::Str(s) => pieces(s, |p| {
                if let Piece::Var(name) = p {
                    out.push((name.to_string(), self.span));
                }
            }),
            Value::Array(a) => a.iter().for_each(|v| v.placeholders(out)),
            Value::Table(t) => t.values().for_each(|e| e.value.placeholders(out)),
            _ => {}
        }
    }

    /// Whether a string in this value (at any depth) holds a `{`, as every placeholder and escape does.
    pub fn has_braces(&self) -> bool {
        match &self.value {
            Value::Str(s) => s.contains('{'),
            Value::Array(a) => a.iter().any(SValue::has_braces),
            Value::Table(t) => t.values().any(|e| e.value.has_braces()),
            _ => false,
        }
    }

    /// Whether a string in this value (at any depth) holds a placeholder of one of `names` (not an escaped one).
    pub fn names_variable(&self, names: &[&str]) -> bool {
        let mut found = vec![];
        self.placeholders(&mut found);
        found.iter().any(|(n, _)| names.contains(&n.as_str()))
    }

    /// [`SValue::substitute`], except that a string that is one placeholder alone (`"{lr}"`), at any depth (a
    /// table's entry, a list's element), becomes the variable's value in `values` with its type: `lr = "{lr}"`
    /// is the float, in a command's `params` table as at the top level. (A list parameter itself, such as a
    /// command's argv, takes [`SValue::substitute`]: its elements stay text.)
    pub fn substitute_typed(&mut self, vars: &BTreeMap<String, String>, values: &BTreeMap<String, SValue>) {
        match &mut self.value {
            Value::Str(s) => {
                if let Some(v) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')).and_then(|name| values.get(name)) {
                    self.value = v.value.clone();
                } else if s.contains('{') {
                    *s = expand(s, vars);
                }
            }
            Value::Array(a) => {
                // An element that is a list variable alone is its values, in place (`["{samples}", "z"]`).
                if let Some(s) = spliced(a, |name| values.get(name), SValue::clone) {
                    *a = s;
                }
                a.iter_mut().for_each(|v| v.substitute_typed(vars, values))
            }
            Value::Table(t) => t.values_mut().for_each(|e| e.value.substitute_typed(vars, values)),
            _ => {}
        }
    }

    /// Replaces `{name}` placeholders in every string with `vars[name]`, and an escaped `{{name}}` of a variable
    /// with the literal `{name}` (see [`expand`]).
    pub fn substitute(&mut self, vars: &BTreeMap<String, String>) {
        match &mut self.value {
            Value::Str(s) if s.contains('{') => *s = expand(s, vars),
            Value::Array(a) => a.iter_mut().for_each(|v| v.substitute(vars)),
            Value::Table(t) => t.values_mut().for_each(|e| e.value.substitute(vars)),
            _ => {}
        }
    }
}

/// The list a value names alone (`"{samples}"`), where the variable `lookup` gives for that name is a list.
pub fn named_list<'a>(v: &SValue, lookup: impl Fn(&str) -> Option<&'a SValue>) -> Option<&'a Vec<SValue>> {
    let name = v.as_str()?.strip_prefix('{')?.strip_suffix('}')?;
    match &lookup(name)?.value {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

/// `items` with each element that names a list variable alone (`"{samples}"`) replaced in place by its values,
/// each through `each`; `None` where no element names one.
pub fn spliced<'a>(items: &[SValue], lookup: impl Fn(&str) -> Option<&'a SValue>, each: impl Fn(&SValue) -> SValue) -> Option<Vec<SValue>> {
    if !items.iter().any(|v| named_list(v, &lookup).is_some()) {
        return None;
    }
    Some(
        items
            .iter()
            .flat_map(|v| match named_list(v, &lookup) {
                Some(l) => l.iter().map(&each).collect(),
                None => vec![v.clone()],
            })
            .collect(),
    )
}

/// A piece of a string as placeholders read it.
enum Piece<'a> {
    /// Text passed as written.
    Lit(&'a str),
    /// `{name}`: a placeholder.
    Var(&'a str),
    /// `{{name}}`: the literal `{name}` where `name` is a variable, else passed as written (a template's).
    Escaped(&'a str),
}

/// The length of the word (`[A-Za-z_][A-Za-z0-9_]*`) at the start of `s`.
fn word(s: &str) -> usize {
    let n = s.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
    if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        0
    } else {
        n
    }
}

/// Splits `s` into [`Piece`]s, in order.
fn pieces<'a>(s: &'a str, mut f: impl FnMut(Piece<'a>)) {
    let mut lit = 0;
    let mut i = 0;
    while let Some(j) = s[i..].find('{').map(|j| i + j) {
        let after_dollar = j > 0 && s.as_bytes()[j - 1] == b'$';
        let rest = &s[j..];
        let (piece, len) = if let Some(inner) = rest.strip_prefix("{{") {
            let n = word(inner);
            if n > 0 && inner[n..].starts_with("}}") {
                (Some(Piece::Escaped(&inner[..n])), n + 4)
            } else {
                (None, 2)
            }
        } else {
            let n = word(&rest[1..]);
            if n > 0 && rest[1 + n..].starts_with('}') && !after_dollar {
                (Some(Piece::Var(&rest[1..1 + n])), n + 2)
            } else {
                (None, 1)
            }
        };
        if let Some(p) = piece {
            if lit < j {
                f(Piece::Lit(&s[lit..j]));
            }
            f(p);
            lit = j + len;
        }
        i = j + len;
    }
    if lit < s.len() {
        f(Piece::Lit(&s[lit..]));
    }
}

/// The names of the `{name}` placeholders in `s`, in order (as [`SValue::placeholders`] reads them: not `${name}`,
/// not an escaped `{{name}}`).
pub fn placeholder_names(s: &str) -> Vec<&str> {
    let mut out = vec![];
    pieces(s, |p| {
        if let Piece::Var(name) = p {
            out.push(name);
        }
    });
    out
}

/// `s` with each `{name}` placeholder of a variable replaced by its value, and each `{{name}}` of a variable by the
/// literal `{name}` (the escape: `"{{seed}}"` passes `{seed}` to a program). A placeholder or doubled braces
/// naming no variable are kept as written (`${HOME}`, a template's `{{x}}`).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    pieces(s, |p| match p {
        Piece::Lit(t) => out.push_str(t),
        Piece::Var(name) => match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        },
        Piece::Escaped(name) => {
            out.push_str(if vars.contains_key(name) { "{" } else { "{{" });
            out.push_str(name);
            out.push_str(if vars.contains_key(name) { "}" } else { "}}" });
        }
    });
    out
}

/// Converts a parsed `toml` document value into a spanned value of file `file`.
pub fn from_toml(v: &toml::Spanned<toml::de::DeValue<'_>>, file: usize) -> Result<SValue, (String, Span)> {
    use toml::de::DeValue;
    let r = v.span();
    let span = Span { file, start: r.start, end: r.end };
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => {
            let text = i.as_str().replace('_', "");
            let parsed = i64::from_str_radix(text.trim_start_matches('+'), i.radix());
            Value::Int(parsed.map_err(|e| (format!("integer out of range: {e} (integers are 64-bit)"), span))?)
        }
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            let parsed: f64 = text.trim_start_matches('+').parse().map_err(|e| (format!("bad float: {e}"), span))?;
            Value::Float(parsed)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| from_toml(x, file)).collect::<Result<_, _>>()?),
        DeValue::Table(t) => Value::Table(table_from_toml(t, file)?),
    };
    Ok(SValue { value, span })
}

/// Converts a parsed table.
pub fn table_from_toml(t: &toml::de::DeTable<'_>, file: usize) -> Result<BTreeMap<String, Entry>, (String, Span)> {
    let mut out = BTreeMap::new();
    for (k, v) in t.iter() {
        let r = k.span();
        let key_span = Span { file, start: r.start, end: r.end };
        out.insert(k.get_ref().to_string(), Entry { key_span, value: from_toml(v, file)? });
    }
    Ok(out)
}

/// A float as `{NAME}` placeholders and matrix ids write it, and so as `{params.NAME}` does: a whole float keeps
/// its point (`1.0`, not `1`: `[1, 1.0]` are two values, as TOML says), and no exponent (`0.00001`).
pub fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("seed", "7"), ("lr", "0.1")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholders_expand_and_an_escape_stays_literal() {
        let v = vars();
        assert_eq!(expand("--seed={seed} lr{lr}", &v), "--seed=7 lr0.1");
        assert_eq!(expand("{{seed}} is {seed}", &v), "{seed} is 7");
        // Not variables: as written (a shell's `${HOME}`, a template's `{{x}}`, an unknown `{x}`, odd braces).
        for s in ["${HOME}", "${seed}", "{{x}}", "{x}", "{{seed}", "{ seed }", "{1}", "awk '{print $1}'", "{", "}}"] {
            assert_eq!(expand(s, &v), s, "{s}");
        }
        assert_eq!(expand("{{{seed}}}", &v), "{{7}}");
    }

    #[test]
    fn an_escaped_placeholder_is_not_one() {
        let sv = |s: &str| SValue { value: Value::Str(s.into()), span: Span { file: 0, start: 0, end: 0 } };
        let names = |s: &str| {
            let mut out = vec![];
            sv(s).placeholders(&mut out);
            out.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        assert_eq!(names("{a} {{b}} ${c} {d}"), ["a", "d"]);
        assert!(sv("--seed {seed}").names_variable(&["seed"]));
        assert!(!sv("--seed {{seed}}").names_variable(&["seed"]));
    }
}
