//! Why a node is dirty: a comparison of the old and new fingerprints, used only for explanations.

use super::{Fingerprint, NodeRecord};
use serde::{Deserialize, Serialize};

/// How many changed files a reason names (the rest are counted).
pub const CHANGES_SHOWN: usize = 5;

/// The reason a node must (re)run. Serializable for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DirtyReason {
    /// No run of this node id was ever recorded.
    NeverRun,
    /// `--force` / `--force-all`.
    Forced,
    /// A parameter changed.
    ParamChanged {
        /// Dotted parameter path.
        param: String,
        /// Old value (JSON), `null` if absent.
        old: serde_json::Value,
        /// New value (JSON), `null` if absent.
        new: serde_json::Value,
    },
    /// A pipeline variable (`[vars]`) its parameters are written with changed; the parameters that changed
    /// through it alone are not listed apart.
    VarChanged {
        /// The variable's name.
        name: String,
        /// Old value, as `{NAME}` wrote it.
        old: String,
        /// New value.
        new: String,
    },
    /// An input artifact's content changed.
    InputChanged {
        /// Input slot.
        slot: String,
        /// Upstream node id.
        upstream: String,
    },
    /// The set of inputs of a slot changed.
    InputsRewired {
        /// Input slot.
        slot: String,
    },
    /// An upstream node is not fresh yet, so this node's key cannot be known.
    UpstreamPending {
        /// Upstream ids that will run first.
        upstream: Vec<String>,
    },
    /// The stage implementation's version changed.
    VersionBumped {
        /// Old version.
        old: u32,
        /// New version.
        new: u32,
    },
    /// An environment entry changed (seed, backend, …).
    EnvChanged {
        /// Entry name.
        name: String,
        /// Old value.
        old: String,
        /// New value.
        new: String,
    },
    /// External files read by the stage changed.
    ExternalChanged {
        /// Which, where known (`path modified`, `path added`, `path removed`, at most [`CHANGES_SHOWN`] and a
        /// count of the rest); empty where the earlier listing was not kept (see `fingerprint::files`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<String>,
    },
    /// The artifact is recorded but a blob is missing.
    ArtifactMissing {
        /// File inside the artifact.
        file: String,
    },
    /// The artifact is recorded but a blob fails its checksum.
    ArtifactCorrupt {
        /// File inside the artifact.
        file: String,
    },
    /// The last attempt with this key failed.
    Failed {
        /// The error.
        error: String,
    },
    /// Its last attempt with this key was stopped with its run (Ctrl-C, a signal) before it finished.
    Interrupted {
        /// How long it had run, in milliseconds.
        after_ms: u64,
    },
    /// The files it reads cannot be digested (a dangling symlink in a dataset, a file this user cannot read): it
    /// cannot run until they are fixed.
    SourcesUnreadable {
        /// What could not be read, and why.
        error: String,
    },
    /// The kind changed, or something the comparison cannot name.
    Other {
        /// Explanation.
        detail: String,
    },
}

fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(unset)".to_string(),
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

use crate::text::cut as head;

/// Both values as shown in a reason: whole when short; otherwise each is cut to the part where they start to
/// differ (a few characters of common context kept), so the change is always visible.
fn shown_pair(old: &serde_json::Value, new: &serde_json::Value) -> (String, String) {
    const MAX: usize = 60;
    let (a, b) = (render(old), render(new));
    if a.chars().count() <= MAX && b.chars().count() <= MAX {
        return (a, b);
    }
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let skip = common.saturating_sub(12);
    let cut = |s: &str| {
        let rest: String = s.chars().skip(skip).collect();
        let rest = head(&rest, MAX);
        if skip > 0 {
            format!("…{rest}")
        } else {
            rest
        }
    };
    (cut(&a), cut(&b))
}

impl std::fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirtyReason::NeverRun => write!(f, "never run"),
            DirtyReason::Forced => write!(f, "forced"),
            // An entry that one side lacks (a table's row, a `params` entry added or removed) is said so.
            DirtyReason::ParamChanged { param, old, new } if old.is_null() => write!(f, "{param} added: {}", head(&render(new), 60)),
            DirtyReason::ParamChanged { param, old, new } if new.is_null() => write!(f, "{param} removed (was {})", head(&render(old), 60)),
            DirtyReason::ParamChanged { param, old, new } => {
                let (a, b) = shown_pair(old, new);
                write!(f, "{param} changed {a} → {b}")
            }
            DirtyReason::VarChanged { name, old, new } => write!(f, "vars.{name} changed {old} → {new}"),
            DirtyReason::InputChanged { slot, upstream } => {
                write!(f, "input `{slot}` ({upstream}) changed")
            }
            DirtyReason::InputsRewired { slot } => write!(f, "inputs of `{slot}` rewired"),
            DirtyReason::UpstreamPending { upstream } if upstream.len() > 4 => {
                write!(f, "waits on {} and {} more", upstream[..3].join(", "), upstream.len() - 3)
            }
            DirtyReason::UpstreamPending { upstream } => {
                write!(f, "waits on {}", upstream.join(", "))
            }
            DirtyReason::VersionBumped { old, new } => {
                write!(f, "stage version bumped {old} → {new}")
            }
            DirtyReason::EnvChanged { name, old, new } => {
                let shown = |v: &str| if v.is_empty() { "(unset)".to_string() } else { v.to_string() };
                write!(f, "{name} changed {} → {}", shown(old), shown(new))
            }
            DirtyReason::ExternalChanged { files } if files.is_empty() => write!(f, "source files changed"),
            DirtyReason::ExternalChanged { files } => write!(f, "source files changed: {}", files.join(", ")),
            DirtyReason::ArtifactMissing { file } => {
                write!(f, "artifact file `{file}` missing from the store")
            }
            DirtyReason::ArtifactCorrupt { file } => {
                write!(f, "artifact file `{file}` is damaged (wrong size or checksum: the next run recomputes it; a reader or `polyflow verify` moves a damaged blob into the store's `damaged/`)")
            }
            DirtyReason::Interrupted { after_ms } => write!(
                f,
                "interrupted after {}: its run was stopped before it finished; `polyflow run` computes it again",
                crate::text::fmt_ms(*after_ms)
            ),
            DirtyReason::Failed { error } => {
                let first = error.lines().next().unwrap_or("");
                write!(f, "last run failed: {}", head(first, 300))
            }
            DirtyReason::SourcesUnreadable { error } => write!(f, "cannot fingerprint sources: {error}"),
            DirtyReason::Other { detail } => write!(f, "{detail}"),
        }
    }
}

fn diff_json(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<DirtyReason>) {
    use serde_json::Value as J;
    match (old, new) {
        (J::Object(a), J::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (a.get(k), b.get(k)) {
                    // At the top level: a parameter the key no longer covers (e.g. a dataset's `path`: where the
                    // data is no longer keys it) or covers now, rather than a change to or from `null`.
                    // At the top level a parameter at its default is left out of the key (so options added later
                    // keep old keys), and a location (`path`) is never in it: name both ends as such.
                    (Some(v), None) if prefix.is_empty() => out.push(DirtyReason::Other {
                        detail: format!("`{p}` changed {v} → its default (or it is no longer part of the key)"),
                    }),
                    (None, Some(v)) if prefix.is_empty() => {
                        out.push(DirtyReason::Other { detail: format!("`{p}` changed its default → {v}") })
                    }
                    (x, y) => diff_json(&p, x.unwrap_or(&J::Null), y.unwrap_or(&J::Null), out),
                }
            }
        }
        // Lists of the same length (an argv, a list of sizes): name the elements that changed.
        (J::Array(a), J::Array(b)) if a.len() == b.len() && a.len() > 1 => {
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                diff_json(&format!("{prefix}[{k}]"), x, y, out);
            }
        }
        _ if old != new => out.push(DirtyReason::ParamChanged { param: prefix.to_string(), old: old.clone(), new: new.clone() }),
        _ => {}
    }
}

/// Where pipeline variables the node's parameters name changed (`[vars]`, a profile's, `--set vars.x=…`): each
/// said once at `at` (`vars.thr changed 3 → 4`), in place of the changes of parameters written the same way
/// before and now (they changed through the variables alone; one edited as well is still listed).
fn explain_vars(o: &Fingerprint, new: &Fingerprint, at: usize, out: &mut Vec<DirtyReason>) {
    let changed: Vec<DirtyReason> = new
        .vars
        .iter()
        .filter_map(|(name, v)| {
            let old = o.vars.get(name).filter(|ov| *ov != v)?;
            Some(DirtyReason::VarChanged { name: name.clone(), old: old.clone(), new: v.clone() })
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    let through_vars = |param: &str| {
        let top = param.split(['.', '[']).next().unwrap_or(param);
        o.written.get(top).is_some_and(|w| new.written.get(top) == Some(w))
    };
    out.retain(|r| !matches!(r, DirtyReason::ParamChanged { param, .. } if through_vars(param)));
    let at = at.min(out.len());
    out.splice(at..at, changed);
}

/// Explains why `new` differs from the last recorded run. Returns every difference found, most specific first.
pub fn compare(old: &NodeRecord, new: &Fingerprint) -> Vec<DirtyReason> {
    let o = &old.fingerprint;
    let mut out = vec![];
    if o.kind != new.kind {
        out.push(DirtyReason::Other { detail: format!("kind changed {} → {}", o.kind, new.kind) });
        return out;
    }
    if o.version != new.version {
        out.push(DirtyReason::VersionBumped { old: o.version, new: new.version });
    }
    match (&o.named, &new.named) {
        (None, Some(_)) => out.push(DirtyReason::Other {
            detail: "this version of polyflow keys this kind by the node's id, which its output holds (it runs once under \
                     its new key, giving the same bytes)"
                .into(),
        }),
        (a, b) if a != b => out.push(DirtyReason::Other {
            detail: format!("id changed {} → {}", a.as_deref().unwrap_or("?"), b.as_deref().unwrap_or("(not keyed)")),
        }),
        _ => {}
    }
    if !o.input_ids && new.input_ids {
        out.push(DirtyReason::Other {
            detail: "this version of polyflow keys this kind by its inputs' node ids, which its program sees in \
                     $POLYFLOW_IN (it runs once under its new key)"
                .into(),
        });
    }
    let first_param = out.len();
    diff_json("", &o.params, &new.params, &mut out);
    explain_vars(o, new, first_param, &mut out);
    let slots: std::collections::BTreeSet<&String> = o.inputs.keys().chain(new.inputs.keys()).collect();
    for slot in slots {
        match (o.inputs.get(slot), new.inputs.get(slot)) {
            (Some(a), Some(b)) if a.len() == b.len() => {
                for (x, y) in a.iter().zip(b) {
                    if x.id != y.id {
                        out.push(DirtyReason::InputsRewired { slot: slot.clone() });
                        break;
                    }
                    if x.digest != y.digest {
                        out.push(DirtyReason::InputChanged { slot: slot.clone(), upstream: y.id.clone() });
                    }
                }
            }
            _ => out.push(DirtyReason::InputsRewired { slot: slot.clone() }),
        }
    }
    let names: std::collections::BTreeSet<&String> = o.env.keys().chain(new.env.keys()).collect();
    for n in names {
        let a = o.env.get(n).cloned().unwrap_or_default();
        let b = new.env.get(n).cloned().unwrap_or_default();
        if a != b {
            out.push(DirtyReason::EnvChanged { name: n.clone(), old: a, new: b });
        }
    }
    if o.external != new.external {
        out.push(DirtyReason::ExternalChanged { files: vec![] });
    }
    // A stage's version may depend on the environment (a GPU backend's kernels): with the environment changed,
    // that is the reason, and the version follows it.
    let env_changed = out.iter().any(|r| matches!(r, DirtyReason::EnvChanged { .. }));
    if env_changed {
        if let Some(k) = out.iter().position(|r| matches!(r, DirtyReason::VersionBumped { .. })) {
            let DirtyReason::VersionBumped { old, new } = out.remove(k) else { unreachable!() };
            out.push(DirtyReason::Other { detail: format!("with it, the stage's version there {old} → {new}") });
        }
    }
    // Nothing named, yet another key (a part of the key no reason above covers): said as such. The same key: no
    // reason at all (a node compared with the run of its very settings, as `nearest` does).
    if out.is_empty() && o.key() != new.key() {
        out.push(DirtyReason::Other { detail: "key changed".into() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_one_side_lacks_is_said_added_or_removed() {
        let r = |old, new| DirtyReason::ParamChanged { param: "params.w".into(), old, new }.to_string();
        assert_eq!(r(json!(null), json!(1)), "params.w added: 1");
        assert_eq!(r(json!("a"), json!(null)), "params.w removed (was \"a\")");
        assert_eq!(r(json!(1), json!(2)), "params.w changed 1 → 2");
    }

    #[test]
    fn a_long_changed_argv_shows_the_differing_part() {
        let base = "python train.py --data /very/long/path/to/the/dataset/folder/of/this/project --epochs";
        let old = json!([format!("{base} 10")]);
        let new = json!([format!("{base} 20")]);
        let mut out = vec![];
        diff_json("run", &old, &new, &mut out);
        let shown = out[0].to_string();
        assert!(shown.contains("10\"") && shown.contains("20\""), "{shown}");
        assert!(shown.starts_with("run changed …"), "{shown}");
    }

    #[test]
    fn lists_of_equal_length_name_the_changed_element() {
        let mut out = vec![];
        diff_json("run", &json!(["sh", "-c", "echo a"]), &json!(["sh", "-c", "echo b"]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to_string(), "run[2] changed \"echo a\" → \"echo b\"");
    }

    #[test]
    fn cutting_respects_characters() {
        let (a, b) = shown_pair(&json!("é".repeat(100)), &json!(format!("{}x", "é".repeat(99))));
        assert!(a.starts_with('…') && b.ends_with("x\""), "{a} / {b}");
        assert!(head(&"ü".repeat(400), 300).ends_with('…'));
    }

    #[test]
    fn a_backend_change_explains_the_version_and_an_unkeyed_param_says_so() {
        use crate::fingerprint::{Fingerprint, NodeRecord};
        let fp = |version: u32, backend: &str, params: serde_json::Value| Fingerprint {
            kind: "train".into(),
            version,
            params,
            inputs: Default::default(),
            env: [("backend".to_string(), backend.to_string())].into(),
            external: None,
            external_parts: vec![],
            named: None,
            input_ids: false,
            vars: std::collections::BTreeMap::new(),
            written: std::collections::BTreeMap::new(),
        };
        let old = fp(6, "flex", json!({"lr": 1, "path": "/data/x"}));
        let rec = NodeRecord {
            id: "n".into(),
            key: "k".into(),
            fingerprint: old,
            artifact: "a".into(),
            duration_ms: 0,
            finished_at: 0,
            runner: Default::default(),
        };
        let got: Vec<String> = compare(&rec, &fp(15, "cuda", json!({"lr": 1}))).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            [
                "`path` changed \"/data/x\" → its default (or it is no longer part of the key)",
                "backend changed flex → cuda",
                "with it, the stage's version there 6 → 15"
            ]
        );
    }

    /// A variable that changed is said once in place of the parameters written with it that changed through it
    /// alone; a parameter written otherwise than before is still listed; a record without variables (an older
    /// one) is explained as before.
    #[test]
    fn a_changed_variable_replaces_the_parameters_it_alone_changed() {
        let fp = |run: &str, label: &str, t: &str, label_written: &str| Fingerprint {
            kind: "command".into(),
            version: 1,
            params: serde_json::json!({"run": run, "label": label}),
            inputs: std::collections::BTreeMap::new(),
            env: std::collections::BTreeMap::new(),
            external: None,
            external_parts: vec![],
            named: None,
            input_ids: false,
            vars: [("t".to_string(), t.to_string())].into(),
            written: [("run".to_string(), serde_json::json!("go {t}")), ("label".to_string(), serde_json::json!(label_written))].into(),
        };
        let rec = |f: Fingerprint| NodeRecord {
            id: "n".into(),
            key: f.key(),
            fingerprint: f,
            artifact: String::new(),
            duration_ms: 0,
            finished_at: 0,
            runner: std::collections::BTreeMap::new(),
        };
        let old = rec(fp("go 3", "t3", "3", "t{t}"));
        let words = |new: &Fingerprint| compare(&old, new).iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(words(&fp("go 4", "t4", "4", "t{t}")), ["vars.t changed 3 → 4"]);
        assert_eq!(words(&fp("go 4", "x4", "4", "x{t}")), ["vars.t changed 3 → 4", "label changed \"t3\" → \"x4\""]);
        let mut older = old.clone();
        older.fingerprint.vars.clear();
        older.fingerprint.written.clear();
        let said: Vec<String> = compare(&older, &fp("go 4", "t4", "4", "t{t}")).iter().map(|r| r.to_string()).collect();
        assert_eq!(said.len(), 2, "{said:?}");
    }
}
