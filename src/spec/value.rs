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

    /// The `{name}` placeholders left in this value's strings (at any depth), with the span of the string holding
    /// each: `name` a word (letters, digits, `_`), not right after `$` or `{` (a shell's `${HOME}`, a template's
    /// `{{x}}`).
    pub fn placeholders(&self, out: &mut Vec<(String, Span)>) {
        match &self.value {
            Value::Str(s) => {
                let b = s.as_bytes();
                for (i, _) in s.match_indices('{') {
                    if i > 0 && matches!(b[i - 1], b'$' | b'{') {
                        continue;
                    }
                    let rest = &s[i + 1..];
                    let n = rest.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
                    if n > 0 && !rest.as_bytes()[0].is_ascii_digit() && rest[n..].starts_with('}') {
                        out.push((rest[..n].to_string(), self.span));
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| v.placeholders(out)),
            Value::Table(t) => t.values().for_each(|e| e.value.placeholders(out)),
            _ => {}
        }
    }

    /// Whether a string in this value (at any depth) contains one of `needles`.
    pub fn mentions(&self, needles: &[&str]) -> bool {
        match &self.value {
            Value::Str(s) => needles.iter().any(|n| s.contains(n)),
            Value::Array(a) => a.iter().any(|v| v.mentions(needles)),
            Value::Table(t) => t.values().any(|e| e.value.mentions(needles)),
            _ => false,
        }
    }

    /// Replaces `{name}` placeholders in every string with `vars[name]`.
    pub fn substitute(&mut self, vars: &BTreeMap<String, String>) {
        match &mut self.value {
            Value::Str(s) if s.contains('{') => {
                for (k, v) in vars {
                    *s = s.replace(&format!("{{{k}}}"), v);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| v.substitute(vars)),
            Value::Table(t) => t.values_mut().for_each(|e| e.value.substitute(vars)),
            _ => {}
        }
    }
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
