//! Parameter schemas: every stage declares its parameters, their types, ranges and defaults.

use serde_json::Value as J;

/// The type (and range) of a parameter.
#[derive(Debug, Clone)]
pub enum ParamType {
    /// `true`/`false`.
    Bool,
    /// Integer within `[min, max]`.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// Float within `[min, max]` (integers are accepted and converted).
    Float {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// Any string.
    Str,
    /// A file or folder path: relative to the pipeline file that declares the node, or, when set by
    /// `--config`/`--set`, to that config file's folder or the current directory (made absolute then).
    Path,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// A list of numbers.
    FloatList,
    /// Any table (checked by the stage itself).
    Table,
    /// Anything (checked by the stage itself).
    Any,
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Name (a TOML key).
    pub name: &'static str,
    /// Type and range.
    pub ty: ParamType,
    /// Default (None = required).
    pub default: Option<J>,
    /// One-line description (shown by `polyflow kinds`).
    pub doc: &'static str,
}

impl ParamSpec {
    /// A parameter with a default.
    pub fn opt(name: &'static str, ty: ParamType, default: J, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc }
    }
    /// A required parameter.
    pub fn req(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: None, doc }
    }
}

/// Why a value does not fit its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// Wrong type: expected description.
    Type(String),
    /// Right type, out of range: explanation.
    Range(String),
}

impl ParamType {
    /// Checks (and normalises: int → float) `v`.
    pub fn check(&self, v: &J) -> Result<J, Mismatch> {
        match self {
            ParamType::Bool => v.as_bool().map(J::Bool).ok_or_else(|| Mismatch::Type("a boolean".into())),
            ParamType::Int { min, max } => {
                let i = v.as_i64().filter(|_| v.is_i64() || v.is_u64()).ok_or_else(|| Mismatch::Type("an integer".into()))?;
                if i < *min || i > *max {
                    return Err(Mismatch::Range(format!("{i} is outside [{min}, {max}]")));
                }
                Ok(J::from(i))
            }
            ParamType::Float { min, max } => {
                let f = v.as_f64().ok_or_else(|| Mismatch::Type("a number".into()))?;
                if !f.is_finite() || f < *min || f > *max {
                    return Err(Mismatch::Range(format!("{f} is outside [{min}, {max}]")));
                }
                Ok(serde_json::Number::from_f64(f).map(J::Number).unwrap_or(J::Null))
            }
            ParamType::Str | ParamType::Path => v.as_str().map(|s| J::String(s.into())).ok_or_else(|| Mismatch::Type("a string".into())),
            ParamType::Choice(c) => {
                let s = v.as_str().ok_or_else(|| Mismatch::Type(format!("one of {}", c.join(", "))))?;
                if c.contains(&s) {
                    Ok(J::String(s.into()))
                } else {
                    Err(Mismatch::Range(format!("`{s}` is not one of: {}", c.join(", "))))
                }
            }
            ParamType::StrList => match v {
                J::Array(a) if a.iter().all(|x| x.is_string()) => Ok(v.clone()),
                _ => Err(Mismatch::Type("a list of strings".into())),
            },
            ParamType::FloatList => match v {
                J::Array(a) if a.iter().all(|x| x.is_number()) => Ok(J::Array(
                    a.iter().map(|x| serde_json::Number::from_f64(x.as_f64().unwrap()).map(J::Number).unwrap_or(J::Null)).collect(),
                )),
                _ => Err(Mismatch::Type("a list of numbers".into())),
            },
            ParamType::Table => {
                if v.is_object() {
                    Ok(v.clone())
                } else {
                    Err(Mismatch::Type("a table".into()))
                }
            }
            ParamType::Any => Ok(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ranges_and_coercion() {
        let f = ParamType::Float { min: 0.0, max: 1.0 };
        assert_eq!(f.check(&serde_json::json!(1)).unwrap(), serde_json::json!(1.0));
        assert!(matches!(f.check(&serde_json::json!(2.0)), Err(Mismatch::Range(_))));
        assert!(matches!(f.check(&serde_json::json!("x")), Err(Mismatch::Type(_))));
        let c = ParamType::Choice(&["a", "b"]);
        assert!(matches!(c.check(&serde_json::json!("c")), Err(Mismatch::Range(_))));
    }
}
