//! Parameter schemas: every stage declares its parameters, their types, ranges and defaults.
//!
//! Two views of one thing: the [`ParamSpec`]s (names, types, ranges, defaults, docs) are what the graph builder
//! checks a node against and fills defaults from, and the canonical JSON it builds from them is what enters
//! cache keys; each stage then reads that JSON once into its own typed struct (`#[serde(deny_unknown_fields)]`,
//! an enum per [`ParamType::Choice`], declared with [`choice_enum`]) through [`parse`] or [`parse_checked`].
//! A test over the registry holds the two views together: the defaults parse, every name is a field, an
//! extra key is refused and every choice is a variant.

use super::StageError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as J;

/// The type (and range) of a parameter.
#[derive(Debug, Clone)]
pub enum ParamType {
    /// `true`/`false`.
    Bool,
    /// Integer within `[min, max]` (a whole float such as `1e5` is taken as the integer it equals).
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
    /// `--config`/`--set`, to that config file's folder or the current directory (made absolute then). Not part
    /// of the node's key (where the data is does not change it): a stage with a `Path` parameter keys what it
    /// reads there through [`crate::stage::Stage::external_digest`].
    Path,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// A list of numbers.
    FloatList,
    /// A list of integers, each within `[min, max]` (a whole float such as `8.0` is taken as `8`).
    IntList {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
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
    /// Whether the parameter enters the canonical parameters (and so the key) at its default. `false` for a
    /// parameter added after nodes were cached whose default is the old behaviour ([`ParamSpec::added`]):
    /// left out at its default, so existing keys and artifacts stay valid.
    pub keyed_default: bool,
    /// Whether its value enters the key. `false` for a parameter that changes how the work is done, never what
    /// it computes (how often a resumable checkpoint is written): the key holds its default whatever the
    /// value, so changing it neither re-runs the node nor loses an interrupted run's checkpoint.
    pub keyed: bool,
}

impl ParamSpec {
    /// A parameter with a default.
    pub fn opt(name: &'static str, ty: ParamType, default: J, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc, keyed_default: true, keyed: true }
    }
    /// A parameter added to an existing kind, whose default is what the kind did before: at its default
    /// (given or not) it is left out of the canonical parameters, so nodes cached before it existed keep
    /// their keys. The stage's typed struct gives the field a serde default.
    pub fn added(name: &'static str, ty: ParamType, default: J, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc, keyed_default: false, keyed: true }
    }
    /// A parameter outside the key ([`ParamSpec::keyed`]): it must not change what the node computes, bit for bit.
    pub fn unkeyed(mut self) -> Self {
        self.keyed = false;
        self
    }
    /// A required parameter.
    pub fn req(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: None, doc, keyed_default: true, keyed: true }
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
                // A whole float (`steps = 1e5`, `20.0`) is the integer it equals, as in an integer list.
                let i = match v.as_i64().filter(|_| v.is_i64() || v.is_u64()) {
                    Some(i) => i,
                    None => match v.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                        Some(f) if f.fract() == 0.0 => {
                            return Err(Mismatch::Range(format!("{} is outside [{min}, {max}]", short_float(f))))
                        }
                        Some(f) if f.is_finite() => return Err(Mismatch::Range(format!("{} is not a whole number", short_float(f)))),
                        _ => return Err(Mismatch::Type("an integer".into())),
                    },
                };
                if i < *min || i > *max {
                    return Err(Mismatch::Range(format!("{i} is outside [{min}, {max}]")));
                }
                Ok(J::from(i))
            }
            ParamType::Float { min, max } => {
                let f = v.as_f64().ok_or_else(|| Mismatch::Type("a number".into()))?;
                if !f.is_finite() || f < *min || f > *max {
                    return Err(Mismatch::Range(format!("{} is outside [{min}, {max}]", short_float(f))));
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
            ParamType::IntList { min, max } => {
                let J::Array(a) = v else { return Err(Mismatch::Type("a list of integers".into())) };
                let mut out = Vec::with_capacity(a.len());
                for x in a {
                    let Some(f) = x.as_f64() else { return Err(Mismatch::Type("a list of integers".into())) };
                    if f.fract() != 0.0 || f < *min as f64 {
                        return Err(Mismatch::Range(format!("{x} is not a whole number of at least {min}")));
                    }
                    if f > *max as f64 {
                        return Err(Mismatch::Range(format!("{x} is outside [{min}, {max}]")));
                    }
                    out.push(J::from(f as i64));
                }
                Ok(J::Array(out))
            }
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

/// A float as a person wrote it: `1e30`, `1e-300`, `20.5` (not 300 digits).
fn short_float(f: f64) -> String {
    if f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-4) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// Reads a node's canonical parameters (every default filled in by the graph builder) into the stage's typed
/// parameter struct. A failure is a bad-input error; the graph builder's `Stage::validate`, which parses the
/// same struct with [`parse_checked`], normally reports it first, with the parameter's place in the file.
pub fn parse<T: DeserializeOwned>(params: &J) -> Result<T, StageError> {
    from_value_lenient(params).map_err(|e| StageError::input(format!("bad parameters: {e}")))
}

/// `serde_json::from_value`, but where that fails, once more with every whole float turned into the integer it
/// equals: an option table's integer (`augment = { crop_pad = 1.0 }`) takes a whole float as a parameter does,
/// and a float field takes an integer anyway.
pub fn from_value_lenient<T: DeserializeOwned>(v: &J) -> Result<T, serde_json::Error> {
    fn whole(v: &J) -> J {
        match v {
            J::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => J::from(f as i64),
                _ => v.clone(),
            },
            J::Array(a) => J::Array(a.iter().map(whole).collect()),
            J::Object(o) => J::Object(o.iter().map(|(k, x)| (k.clone(), whole(x))).collect()),
            _ => v.clone(),
        }
    }
    serde_json::from_value(v.clone()).or_else(|e| serde_json::from_value(whole(v)).map_err(|_| e))
}

/// [`parse`] for `Stage::validate`: a failure is `(parameter, message)`. The parameter is the one which, put
/// back to its default (a [`sample`] value when it has none), lets the rest parse, so a bad nested table such
/// as `augment` is named and the graph builder points at its line; `parameters` when no single one is at fault.
pub fn parse_checked<T: DeserializeOwned>(params: &J, specs: &[ParamSpec]) -> Result<T, (String, String)> {
    let err = match from_value_lenient::<T>(params) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let at_fault = params.as_object().and_then(|obj| {
        specs.iter().find(|s| {
            let d = s.default.clone().unwrap_or_else(|| sample(&s.ty));
            if obj.get(s.name).is_none_or(|v| *v == d) {
                return false;
            }
            let mut o = obj.clone();
            o.insert(s.name.to_string(), d);
            serde_json::from_value::<T>(J::Object(o)).is_ok()
        })
    });
    Err((at_fault.map(|s| s.name).unwrap_or("parameters").to_string(), err))
}

/// The key form of an option table that reads into `T` (a task's `augment`, a filterbank's `fbank`): each entry
/// as `T` writes it back (`color = 1` and `color = 1.0` are one value), the entries at `T::default()`'s value
/// left out (`mixup = 0` is no mixup, as is no `mixup`). `None` when the table does not read as `T` (the stage's
/// validation names that).
pub fn option_table_key<T: Serialize + DeserializeOwned + Default>(table: &J) -> Option<J> {
    let t: T = from_value_lenient(table).ok()?;
    let J::Object(mut m) = serde_json::to_value(&t).ok()? else { return None };
    let J::Object(d) = serde_json::to_value(T::default()).ok()? else { return None };
    m.retain(|k, v| d.get(k) != Some(v));
    Some(J::Object(m))
}

/// Replaces `params[name]`, an option table, by its key form ([`option_table_key`]), where it reads as `T`.
pub fn canonical_option_table<T: Serialize + DeserializeOwned + Default>(params: &mut J, name: &str) {
    if let Some(k) = params.get(name).and_then(option_table_key::<T>) {
        params[name] = k;
    }
}

/// Declares the enum of a [`ParamType::Choice`] parameter, each variant with the name pipelines write:
/// serde (de)serialises it by those names, `NAMES` is the list for its `ParamSpec`, `name()` gives one name
/// back (for notes and artifacts that recorded the string), and `Display` prints it.
macro_rules! choice_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $var:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $var,)+
        }
        impl $name {
            /// Every option's name, in order: the parameter's `ParamType::Choice` list.
            #[allow(dead_code)]
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// The option's name, as pipelines write it.
            #[allow(dead_code)]
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$var => $text,)+
                }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use choice_enum;

/// A value of type `ty` that passes [`ParamType::check`] (the low end of a range, the first choice, an empty
/// table or list): stands in for a required parameter in tests of a stage's typed parameters.
pub fn sample(ty: &ParamType) -> J {
    match ty {
        ParamType::Bool => J::Bool(false),
        ParamType::Int { min, .. } => J::from(*min),
        ParamType::Float { min, .. } => J::from(*min),
        ParamType::Str | ParamType::Path => J::String("x".into()),
        ParamType::Choice(c) => J::String(c[0].into()),
        ParamType::StrList | ParamType::FloatList | ParamType::IntList { .. } | ParamType::Any => J::Array(vec![]),
        ParamType::Table => J::Object(Default::default()),
    }
}

/// The canonical parameters of a node that sets only its required parameters, to [`sample`] values: what the
/// graph builder would build (every default filled in).
pub fn defaults(specs: &[ParamSpec]) -> J {
    J::Object(specs.iter().map(|s| (s.name.to_string(), s.default.clone().unwrap_or_else(|| sample(&s.ty)))).collect())
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
        // A whole float is the integer it equals (`steps = 1e5`); a fraction is named.
        let i = ParamType::Int { min: 0, max: 1_000_000 };
        assert_eq!(i.check(&serde_json::json!(1e5)).unwrap(), serde_json::json!(100000));
        assert_eq!(i.check(&serde_json::json!(20.0)).unwrap(), i.check(&serde_json::json!(20)).unwrap());
        assert!(matches!(i.check(&serde_json::json!(20.5)), Err(Mismatch::Range(m)) if m.contains("whole")));
        assert!(matches!(i.check(&serde_json::json!(2e6)), Err(Mismatch::Range(_))));
        assert!(matches!(i.check(&serde_json::json!("20")), Err(Mismatch::Type(_))));
        // Out of range and fractions read as written, not as 300 digits.
        assert_eq!(i.check(&serde_json::json!(1e30)), Err(Mismatch::Range("1e30 is outside [0, 1000000]".into())));
        assert_eq!(i.check(&serde_json::json!(1e-300)), Err(Mismatch::Range("1e-300 is not a whole number".into())));
    }

    #[derive(serde::Serialize, serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Opts {
        rate: f64,
        on: bool,
        n: usize,
    }

    #[test]
    fn an_option_table_keys_without_its_defaults_and_with_its_own_number_types() {
        let k = |v: J| option_table_key::<Opts>(&v).unwrap();
        assert_eq!(k(serde_json::json!({})), serde_json::json!({}));
        // Spelling a default out is leaving it out.
        assert_eq!(k(serde_json::json!({ "rate": 0, "on": false })), serde_json::json!({}));
        // `1` and `1.0` for a float option are one value.
        assert_eq!(k(serde_json::json!({ "rate": 1 })), k(serde_json::json!({ "rate": 1.0 })));
        assert_eq!(k(serde_json::json!({ "rate": 0.5, "n": 0 })), serde_json::json!({ "rate": 0.5 }));
        // A whole float for an integer option is that integer (as for a parameter).
        assert_eq!(k(serde_json::json!({ "n": 2.0 })), serde_json::json!({ "n": 2 }));
        // A table that does not read is left to validation.
        assert_eq!(option_table_key::<Opts>(&serde_json::json!({ "bogus": 1 })), None);
        let mut p = serde_json::json!({ "opts": { "bogus": 1 }, "x": 1 });
        canonical_option_table::<Opts>(&mut p, "opts");
        assert_eq!(p["opts"], serde_json::json!({ "bogus": 1 }));
    }
}
