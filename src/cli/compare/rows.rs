//! The rows of a comparison: one per node, or with `--group` one per seed group, each metric the mean ± sample
//! std over the group's fresh replicates (the result tables' convention, [`crate::tables::mean_std`]).

use super::values::Origin;
use crate::exec::State;
use crate::graph::Graph;
use serde_json::Value;
use std::collections::BTreeMap;

/// One compared node, as read from the store.
#[derive(Debug, Clone)]
pub struct Run {
    /// Node id.
    pub id: String,
    /// Its seed group (`st.digits` for `st.digits.s1`), if a replicate.
    pub group: Option<String>,
    /// Node kind.
    pub kind: &'static str,
    /// Its state.
    pub state: State,
    /// Its parameters, inputs and seed, dotted.
    pub params: BTreeMap<String, Value>,
    /// Its metrics (empty when [`Run::origin`] is absent or gone).
    pub metrics: BTreeMap<String, f64>,
    /// The metrics its file holds as JSON integers (counts, steps): written back as integers, others as floats
    /// even when whole (an accuracy of `1.0` stays `1.0`).
    pub integers: std::collections::BTreeSet<String>,
    /// Where the metrics come from.
    pub origin: Origin,
    /// Parameters each replicate has its own value of by design (they name `{seed}` or `{replicate}`): a name
    /// here stands for itself and the names under it (`model` for `model.lr`).
    pub by_design: std::collections::BTreeSet<String>,
    /// Its parameters written with placeholders, as written (dotted as `params`): a column whose rows were all
    /// written alike differs only through the variables the matrix columns show.
    pub written: BTreeMap<String, Value>,
}

impl Run {
    /// Whether parameter `k` differs between replicates by design ([`Run::by_design`]).
    fn differs_by_design(&self, k: &str) -> bool {
        self.by_design.iter().any(|p| k == p || k.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('.')))
    }
}

/// A metric of a row: one value (`n` = 1, no std) or a seed group's mean and sample std.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// The value, or the mean.
    pub mean: f64,
    /// The sample standard deviation (`None` for a single value).
    pub std: Option<f64>,
    /// How many values.
    pub n: usize,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct Row {
    /// A node id, or a seed group's name.
    pub id: String,
    /// Node kind.
    pub kind: &'static str,
    /// `fresh`, `stale`, `failed`; for a group `partial` when only some replicates are fresh.
    pub state: String,
    /// Its values are an earlier run's (every one of them: never mixed with fresh ones).
    pub outdated: bool,
    /// Parameters (a group's: those its replicates share, so the seed is left out).
    pub params: BTreeMap<String, Value>,
    /// Metrics.
    pub metrics: BTreeMap<String, Stat>,
    /// The metrics that are integers in the node's file (a group's: in the files of all the replicates used).
    pub integers: std::collections::BTreeSet<String>,
    /// With `--group`: the member nodes, and how many of them the values are over.
    pub members: Option<(Vec<String>, usize)>,
    /// Its parameters written with placeholders, as written ([`Run::written`]; a group's: those its members share).
    pub written: BTreeMap<String, Value>,
}

/// Node `i`'s seed group: the declaration its replicate suffix (`.s1`) was added to, when that is a group.
pub fn seed_group(g: &Graph, i: usize) -> Option<String> {
    let suffix = g.pipeline.nodes.get(i)?.matrix.get("replicate").filter(|s| !s.is_empty())?;
    let base = g.nodes[i].id.strip_suffix(suffix.as_str())?;
    g.pipeline.groups.contains_key(base).then(|| base.to_string())
}

/// Its group under `compare --over KEYS`: its declaration's id with each of `over`'s matrix values (and its
/// replicate suffix) left out, as `*` (`cv.*.0.01` for `cv.2.0.01` over `fold`); its seed group where it has none
/// of those keys.
pub fn over_group(g: &Graph, i: usize, over: &[String]) -> Option<String> {
    let spec = g.pipeline.nodes.get(i)?;
    if !over.iter().any(|k| spec.matrix.contains_key(k)) {
        return seed_group(g, i);
    }
    let mut name = spec.decl.clone();
    for (k, v) in spec.matrix.iter().filter(|(k, _)| *k != "seed" && *k != "replicate") {
        name.push('.');
        name.push_str(&if over.contains(k) { "*".to_string() } else { crate::spec::id_label(v) });
    }
    Some(name)
}

/// One row per node.
pub fn single(r: &Run) -> Row {
    Row {
        id: r.id.clone(),
        kind: r.kind,
        state: r.state.to_string(),
        outdated: r.origin.outdated(),
        params: r.params.clone(),
        metrics: r.metrics.iter().map(|(k, &v)| (k.clone(), Stat { mean: v, std: None, n: 1 })).collect(),
        integers: r.integers.clone(),
        members: None,
        written: r.written.clone(),
    }
}

/// What the replicates of a seed group differ in besides their seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mixed {
    /// The group.
    pub group: String,
    /// Parameters that differ now (an override of one replicate).
    pub params: Vec<String>,
    /// Their earlier runs, whose values would be shown, differ in settings or in what changed since: they are
    /// not averaged.
    pub earlier: bool,
}

/// One row per seed group (a node outside any group is a group of one), in the order of their first member.
/// Metrics are over the fresh replicates only; only when none is fresh, over the replicates' earlier runs, the
/// whole row then outdated, and only when those runs share their settings and what changed since (else none).
/// Also returns what the replicates of a group differ in besides their seed.
pub fn grouped(runs: &[Run]) -> (Vec<Row>, Vec<Mixed>) {
    let mut order: Vec<String> = vec![];
    let mut by: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        let name = r.group.clone().unwrap_or_else(|| r.id.clone());
        if !by.contains_key(&name) {
            order.push(name.clone());
        }
        by.entry(name).or_default().push(r);
    }
    let mut mixed = vec![];
    let rows = order
        .into_iter()
        .map(|name| {
            let members = &by[&name];
            if let [one] = members.as_slice() {
                if one.group.is_none() {
                    return single(one);
                }
            }
            let (row, params, earlier) = group_row(name, members);
            if !params.is_empty() || earlier {
                mixed.push(Mixed { group: row.id.clone(), params, earlier });
            }
            row
        })
        .collect();
    (rows, mixed)
}

/// The row of seed group `name` over `members`, the parameters (other than the seed) its members differ in,
/// and whether their earlier runs differ (then not averaged).
fn group_row(name: String, members: &[&Run]) -> (Row, Vec<String>, bool) {
    let fresh: Vec<&Run> = members.iter().copied().filter(|r| r.origin == Origin::Fresh).collect();
    let (mut used, outdated) =
        if fresh.is_empty() { (members.iter().copied().filter(|r| r.origin.outdated()).collect::<Vec<_>>(), true) } else { (fresh, false) };
    // Earlier runs of different settings (one replicate re-run with an edit since) are no seeds of one setting.
    let how = |r: &Run| match &r.origin {
        Origin::Outdated { changed, settings, .. } => Some((changed.clone(), settings.clone())),
        _ => None,
    };
    let earlier_differ = outdated && used.iter().any(|r| how(r) != how(used[0]));
    if earlier_differ {
        used.clear();
    }
    let outdated = outdated && !used.is_empty();
    let keys: std::collections::BTreeSet<&String> = used.iter().flat_map(|r| r.metrics.keys()).collect();
    let metrics = keys
        .into_iter()
        .filter_map(|k| {
            let v: Vec<f64> = used.iter().filter_map(|r| r.metrics.get(k).copied()).collect();
            crate::tables::mean_std(&v).map(|(mean, std)| (k.clone(), Stat { mean, std, n: v.len() }))
        })
        .collect();
    // Parameters the replicates share; the seed (and anything an override changed in one of them) is left out.
    let mut params = members[0].params.clone();
    let mut differ = vec![];
    // A parameter that is each replicate's own seed (`value = "{seed}"`) differs as the seed does: no override.
    let seed_of = |r: &Run| r.params.iter().find(|(k, _)| k.starts_with("seed")).map(|(_, v)| v.clone());
    let is_seed = |k: &str| members.iter().all(|r| r.params.get(k).is_some_and(|v| Some(v) == seed_of(r).as_ref()));
    params.retain(|k, v| {
        let same = members.iter().all(|r| r.params.get(k) == Some(v));
        if !same && !k.starts_with("seed") && !is_seed(k) && !members.iter().all(|r| r.differs_by_design(k)) {
            differ.push(k.clone());
        }
        same
    });
    let n_fresh = members.iter().filter(|r| r.state == State::Fresh && r.origin == Origin::Fresh).count();
    let state = if n_fresh == members.len() {
        "fresh".to_string()
    } else if n_fresh > 0 {
        "partial".to_string()
    } else if members.iter().all(|r| r.state == State::Failed) {
        "failed".to_string()
    } else {
        "stale".to_string()
    };
    let row = Row {
        id: name,
        kind: members[0].kind,
        state,
        outdated,
        params,
        metrics,
        integers: used
            .first()
            .map(|f| f.integers.iter().filter(|k| used.iter().all(|r| r.integers.contains(*k))).cloned().collect())
            .unwrap_or_default(),
        members: Some((members.iter().map(|r| r.id.clone()).collect(), used.len())),
        written: members[0]
            .written
            .iter()
            .filter(|(k, v)| members.iter().all(|m| m.written.get(*k) == Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    (row, differ, earlier_differ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: &str, group: Option<&str>, origin: Origin, acc: Option<f64>, seed: u64) -> Run {
        let state = if origin == Origin::Fresh { State::Fresh } else { State::Stale };
        Run {
            id: id.into(),
            group: group.map(String::from),
            kind: "value",
            state,
            params: [("lr".to_string(), json!(0.1)), ("seed".to_string(), json!(seed))].into_iter().collect(),
            metrics: acc.map(|a| ("acc".to_string(), a)).into_iter().collect(),
            integers: Default::default(),
            origin,
            by_design: Default::default(),
            written: Default::default(),
        }
    }

    fn old() -> Origin {
        Origin::Outdated { changed: vec!["lr changed 0.2 → 0.1".into()], finished_at: 0, key: "k".into(), settings: String::new() }
    }

    #[test]
    fn a_group_averages_its_fresh_replicates_only() {
        let runs = [
            run("a.s0", Some("a"), Origin::Fresh, Some(0.5), 0),
            run("a.s1", Some("a"), Origin::Fresh, Some(0.7), 1),
            run("a.s2", Some("a"), old(), Some(0.1), 2),
            run("b", None, Origin::Fresh, Some(0.9), 0),
        ];
        let (rows, mixed) = grouped(&runs);
        assert!(mixed.is_empty());
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!((a.id.as_str(), a.state.as_str(), a.outdated), ("a", "partial", false));
        let acc = &a.metrics["acc"];
        assert!((acc.mean - 0.6).abs() < 1e-12 && acc.n == 2, "{acc:?}");
        assert!((acc.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-9, "sample std (n - 1): {acc:?}");
        assert_eq!(a.members.as_ref().unwrap().1, 2);
        // The seed differs between replicates: it collapses; `lr` is shared.
        assert!(!a.params.contains_key("seed") && a.params.contains_key("lr"));
        // A node outside a group is a row of its own, as without `--group`.
        assert_eq!((rows[1].id.as_str(), rows[1].members.is_none()), ("b", true));
    }

    #[test]
    fn a_group_without_fresh_replicates_is_wholly_outdated() {
        let runs = [run("a.s0", Some("a"), old(), Some(0.5), 0), run("a.s1", Some("a"), Origin::Absent, None, 1)];
        let (rows, _) = grouped(&runs);
        assert_eq!((rows[0].state.as_str(), rows[0].outdated), ("stale", true));
        assert_eq!(rows[0].metrics["acc"], Stat { mean: 0.5, std: None, n: 1 });
        // Nothing to show at all: not outdated, no metrics.
        let (rows, _) = grouped(&[run("a.s0", Some("a"), Origin::Absent, None, 0)]);
        assert!(!rows[0].outdated && rows[0].metrics.is_empty());
    }

    #[test]
    fn earlier_runs_of_different_settings_are_not_averaged() {
        let other =
            Origin::Outdated { changed: vec!["lr changed 0.3 → 0.1".into()], finished_at: 0, key: "j".into(), settings: String::new() };
        let runs = [run("a.s0", Some("a"), old(), Some(0.5), 0), run("a.s1", Some("a"), other, Some(0.9), 1)];
        let (rows, mixed) = grouped(&runs);
        assert!(rows[0].metrics.is_empty() && !rows[0].outdated, "{:?}", rows[0]);
        assert_eq!(mixed, [Mixed { group: "a".into(), params: vec![], earlier: true }]);
        let (rows, mixed) = grouped(&[run("a.s0", Some("a"), old(), Some(0.5), 0), run("a.s1", Some("a"), old(), Some(0.7), 1)]);
        assert!(rows[0].outdated && rows[0].metrics["acc"].n == 2 && mixed.is_empty(), "the same earlier settings: averaged");
    }

    #[test]
    fn an_override_of_one_replicate_is_reported() {
        let mut b = run("a.s1", Some("a"), Origin::Fresh, Some(0.7), 1);
        b.params.insert("lr".into(), json!(0.5));
        let (rows, mixed) = grouped(&[run("a.s0", Some("a"), Origin::Fresh, Some(0.5), 0), b]);
        assert_eq!(mixed, [Mixed { group: "a".into(), params: vec!["lr".into()], earlier: false }]);
        assert!(!rows[0].params.contains_key("lr"));
    }
}
