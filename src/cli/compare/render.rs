//! A comparison as a terminal table, CSV or JSON, and the notes under it: which values are outdated (an earlier
//! run's) and what changed since, which earlier artifacts are gone, and which nodes are not fresh.

use super::rows::{Row, Run, Stat};
use super::values::{show, NumFormat, Origin};
use crate::cli::{exit, CliError};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What is shown: the rows, their columns, and how.
pub struct View<'a> {
    /// The rows, in order.
    pub rows: &'a [Row],
    /// The nodes behind them.
    pub runs: &'a [Run],
    /// Parameter columns.
    pub pcols: &'a [String],
    /// Metric columns.
    pub mcols: &'a [String],
    /// One row per seed group (`--group`).
    pub grouped: bool,
    /// The matrix keys rows average over (`--over`).
    pub over: &'a [String],
    /// `--all`.
    pub all: bool,
    /// The `run` command that computes the given nodes, with this command's options.
    pub run_command: &'a dyn Fn(&[&str]) -> String,
}

/// The mark after an outdated value.
const MARK: &str = "*";
/// At most this many characters of a parameter in a terminal table's cell (the rest cut, `…`).
const CELL_CHARS: usize = 60;

impl View<'_> {
    fn kind_differs(&self) -> bool {
        self.rows.iter().any(|r| r.kind != self.rows[0].kind)
    }

    /// `n` and `of` of a row under `--group`: how many values its metrics are over, of how many nodes.
    fn n_of(r: &Row) -> (usize, usize) {
        match &r.members {
            Some((m, used)) => (*used, m.len()),
            None => (usize::from(!r.metrics.is_empty()), 1),
        }
    }

    /// The header: a name that is both a parameter and a metric (a `value` node's `value`), or one of the fixed
    /// columns, says which it is.
    fn header(&self, csv: bool) -> Vec<String> {
        let fixed = ["node", "group", "kind", "state", "outdated", "seeds", "n", "of"];
        let both = |k: &String| self.pcols.contains(k) && self.mcols.contains(k) || fixed.contains(&k.as_str());
        let mut h = vec![if self.grouped { "group" } else { "node" }.to_string()];
        if self.kind_differs() {
            h.push("kind".into());
        }
        h.push("state".into());
        if self.grouped {
            // (Under `--over`, a group's members are its key's values and seeds: runs.)
            let what = if self.over.is_empty() { "seeds" } else { "runs" };
            h.extend(if csv { vec!["n".to_string(), "of".to_string()] } else { vec![what.to_string()] });
        }
        h.extend(self.pcols.iter().map(|k| if both(k) { format!("param:{k}") } else { k.clone() }));
        for k in self.mcols {
            let k = if both(k) { format!("metric:{k}") } else { k.clone() };
            if csv && self.grouped {
                h.extend([format!("{k}:mean"), format!("{k}:std"), format!("{k}:n")]);
            } else {
                h.push(k);
            }
        }
        h
    }

    /// Each metric column's number format, from all of its values (means and stds; a std that is only rounding
    /// noise, under 1e-9 of its mean, as 0: `0.99 ± 1.2e-16` is not a reason for exponents); whole numbers are
    /// written as integers only where the files hold integers (an accuracy of `1.0` in every row is still `1.0000`).
    fn formats(&self) -> BTreeMap<&str, NumFormat> {
        let values = |k: &String| -> Vec<f64> {
            let noise = |s: &super::rows::Stat| s.std.map(|sd| if sd < 1e-9 * s.mean.abs() { 0.0 } else { sd });
            self.rows.iter().filter_map(|r| r.metrics.get(k)).flat_map(|s| [Some(s.mean), noise(s)]).flatten().collect()
        };
        let integers = |k: &String| self.rows.iter().filter(|r| r.metrics.contains_key(k)).all(|r| r.integers.contains(k));
        self.mcols.iter().map(|k| (k.as_str(), NumFormat::of(values(k), integers(k)))).collect()
    }

    fn row(&self, r: &Row, csv: bool, formats: &BTreeMap<&str, NumFormat>) -> Vec<String> {
        // A long id (matrix values in it) is cut in the middle in the terminal: its end tells expansions apart.
        let id = if csv { r.id.clone() } else { crate::text::cut_middle(&r.id, CELL_CHARS) };
        let mut v = vec![id];
        if self.kind_differs() {
            v.push(r.kind.to_string());
        }
        let (n, of) = Self::n_of(r);
        if csv {
            v.push(r.state.clone());
            if self.grouped {
                v.extend([n.to_string(), of.to_string()]);
            }
        } else {
            v.push(if r.outdated { format!("{} (outdated values)", r.state) } else { r.state.clone() });
            if self.grouped {
                v.push(if n == of { format!("n={n}") } else { format!("n={n} of {of}") });
            }
        }
        let missing = if csv { "" } else { "—" };
        // The terminal's cells are cut (a command's argv can be hundreds of characters); CSV and JSON are whole.
        let cut = |s: String| if csv { s } else { crate::text::cut(&s, CELL_CHARS) };
        v.extend(self.pcols.iter().map(|k| r.params.get(k).map(|x| cut(show(x))).unwrap_or_else(|| missing.into())));
        for k in self.mcols {
            // CSV carries fresh values only: a script reading it cannot take an earlier run's for the settings
            // beside them (JSON has them apart, under `earlier_metrics`).
            let s = r.metrics.get(k).filter(|_| !(csv && r.outdated));
            match (csv, self.grouped, s) {
                (true, false, s) => v.push(s.map(|s| s.mean.to_string()).unwrap_or_default()),
                (true, true, s) => v.extend([
                    s.map(|s| s.mean.to_string()).unwrap_or_default(),
                    s.and_then(|s| s.std).map(|x| x.to_string()).unwrap_or_default(),
                    s.map(|s| s.n.to_string()).unwrap_or_default(),
                ]),
                (false, grouped, Some(s)) => {
                    let mut t = cell(s, r.outdated, formats.get(k.as_str()).copied().unwrap_or(NumFormat::Fixed(4)));
                    // Over fewer replicates than the row's `n` (some did not report it): said in the cell.
                    if grouped && s.n < n {
                        t.push_str(&format!(" (n={})", s.n));
                    }
                    v.push(t)
                }
                (false, _, None) => v.push(missing.into()),
            }
        }
        v
    }

    /// The terminal table and its notes.
    pub fn table(&self) -> String {
        let header = self.header(false);
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Disabled);
        t.set_header(header.clone());
        let formats = self.formats();
        for r in self.rows {
            t.add_row(self.row(r, false, &formats));
        }
        for c in header.len() - self.mcols.len()..header.len() {
            if let Some(col) = t.column_mut(c) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let params = if self.all {
            plural(self.pcols.len(), "parameter", "parameters")
        } else {
            format!(
                "{} (`--all` shows the ones they share too)",
                plural(self.pcols.len(), "parameter that differs", "parameters that differ")
            )
        };
        // A group none of whose nodes is fresh shows their earlier runs' values (marked): said where there is one.
        let earlier = if self.rows.iter().any(|r| r.outdated) { "; a group with none fresh: their earlier runs, marked" } else { "" };
        let what = if self.grouped {
            format!(
                "{} of {}",
                plural(self.rows.len(), "row", "rows"),
                plural(self.runs.len(), "node", "nodes")
                    + if self.over.is_empty() {
                        format!(" (mean ± sample std over each seed group's fresh replicates{earlier})")
                    } else {
                        format!(
                            " (mean ± sample std over each group's fresh nodes: its values of {} and seeds{earlier})",
                            self.over.join(", ")
                        )
                    }
                    .as_str()
            )
        } else {
            plural(self.rows.len(), "node", "nodes")
        };
        let mut out = format!("{t}\n{what}, {params}, {}\n", plural(self.mcols.len(), "metric", "metrics"));
        for n in self.notes() {
            out.push_str(&n);
            out.push('\n');
        }
        out
    }

    /// CSV: raw values of fresh artifacts, missing ones empty (outdated values are left out: `--json` has them).
    pub fn csv(&self) -> Result<String, CliError> {
        let err = |e: csv::Error| CliError::Other(format!("error: csv: {e}"), exit::STORE);
        let mut w = csv::Writer::from_writer(vec![]);
        w.write_record(self.header(true)).map_err(err)?;
        for r in self.rows {
            w.write_record(self.row(r, true, &BTreeMap::new())).map_err(err)?;
        }
        let out = w.into_inner().map_err(|e| CliError::Other(format!("error: csv: {e}"), exit::STORE))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// JSON: `metrics` holds fresh values only; a row whose values are an earlier run's has `outdated: true`,
    /// them under `earlier_metrics`, and that run (`earlier_run`: when it finished, its key, what changed since,
    /// whether it is still in the store).
    pub fn json(&self) -> Value {
        let runs: BTreeMap<&str, &Run> = self.runs.iter().map(|r| (r.id.as_str(), r)).collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let p: Map<String, Value> = self.pcols.iter().filter_map(|k| r.params.get(k).map(|v| (k.clone(), v.clone()))).collect();
                let m: Map<String, Value> = self
                    .mcols
                    .iter()
                    .filter_map(|k| {
                        r.metrics.get(k).map(|s| {
                            (
                                k.clone(),
                                if self.grouped {
                                    json!({"mean": s.mean, "std": s.std, "n": s.n})
                                } else {
                                    super::values::number(s.mean, r.integers.contains(k))
                                },
                            )
                        })
                    })
                    .collect();
                // Outdated values never under `metrics`: a script reading that key gets fresh results only.
                let mut o = json!({"id": r.id, "kind": r.kind, "state": r.state, "outdated": r.outdated, "params": p});
                if r.outdated {
                    o["metrics"] = json!({});
                    o["earlier_metrics"] = Value::Object(m);
                } else {
                    o["metrics"] = Value::Object(m);
                }
                if self.grouped {
                    let (n, of) = Self::n_of(r);
                    let members = r.members.as_ref().map(|(m, _)| m.clone()).unwrap_or_else(|| vec![r.id.clone()]);
                    o["members"] = json!(members);
                    o["n"] = json!(n);
                    o["of"] = json!(of);
                } else if let Some(e) = runs.get(r.id.as_str()).and_then(|x| earlier_json(&x.origin)) {
                    o["earlier_run"] = e;
                }
                o
            })
            .collect();
        let stale: Vec<&str> = self.runs.iter().filter(|r| r.origin != Origin::Fresh).map(|r| r.id.as_str()).collect();
        let outdated: Vec<&str> = self.outdated_shown().into_iter().map(|r| r.id.as_str()).collect();
        let rows_key = if self.grouped { "groups" } else { "nodes" };
        json!({"params": self.pcols, "metrics": self.mcols, rows_key: rows, "stale": stale, "outdated": outdated})
    }

    /// The nodes whose outdated values are shown (under `--group`: those of rows with no fresh replicate).
    fn outdated_shown(&self) -> Vec<&Run> {
        let in_rows: BTreeSet<&str> = self
            .rows
            .iter()
            .filter(|r| r.outdated)
            .flat_map(|r| r.members.as_ref().map(|(m, _)| m.iter().map(String::as_str).collect()).unwrap_or_else(|| vec![r.id.as_str()]))
            .collect();
        self.runs.iter().filter(|r| r.origin.outdated() && in_rows.contains(r.id.as_str())).collect()
    }

    /// The lines under the table (on stderr with `--csv`/`--json`): the footnote of outdated values, earlier
    /// artifacts that are gone, and the nodes not fresh with the command that computes them.
    pub fn notes(&self) -> Vec<String> {
        let mut out = vec![];
        let shown = self.outdated_shown();
        if !shown.is_empty() {
            out.push(format!("{MARK} outdated: values of the node's nearest earlier run, not of its settings now:"));
            for r in &shown {
                if let Origin::Outdated { changed, finished_at, settings, .. } = &r.origin {
                    let what = if changed.is_empty() {
                        "(what changed is not known)".to_string()
                    } else {
                        super::values::changed(changed).join("; ")
                    };
                    out.push(format!("  {} (ran {}, {settings}): {what}", r.id, crate::report::html::utc(*finished_at)));
                }
            }
        }
        for r in self.runs {
            if let Origin::Elsewhere { settings } = &r.origin {
                out.push(format!(
                    "note: `{}` is {}; its runs on record were made under another profile (the latest: {settings}): their values are not shown",
                    r.id, r.state
                ));
            }
        }
        for r in self.runs {
            if let Origin::Gone { finished_at, file, damaged } = &r.origin {
                let what = file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
                let why = if *damaged { "is damaged" } else { "is no longer in the store (removed by `gc`, or by hand)" };
                out.push(format!(
                    "note: `{}` is {}; the artifact{what} of its earlier run (ran {}) {why}, so no earlier values either",
                    r.id,
                    r.state,
                    crate::report::html::utc(*finished_at)
                ));
            }
        }
        let stale: Vec<&Run> = self.runs.iter().filter(|r| r.origin != Origin::Fresh).collect();
        if !stale.is_empty() {
            let ids: Vec<&str> = stale.iter().map(|r| r.id.as_str()).collect();
            let (old, rest): (Vec<&Run>, Vec<&Run>) = stale.iter().partition(|r| shown.iter().any(|s| s.id == r.id));
            let join = |v: &[&Run]| v.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
            let plain = if self.grouped { "left out of the means" } else { "no metrics" };
            let which = match (old.is_empty(), rest.is_empty()) {
                (true, _) => format!(" ({plain}): {}", join(&rest)),
                (false, true) => format!(": {} (outdated values, marked {MARK})", join(&old)),
                (false, false) => format!(": {} (outdated values, marked {MARK}); {} ({plain})", join(&old), join(&rest)),
            };
            out.push(format!(
                "{} of {} nodes not fresh{which} (`{}` computes them)",
                stale.len(),
                self.runs.len(),
                (self.run_command)(&ids)
            ));
        }
        out
    }
}

/// A metric cell: the value, or a group's `mean ± std` (both in the column's format `f`); an outdated one marked.
fn cell(s: &Stat, outdated: bool, f: NumFormat) -> String {
    let mut t = f.show(s.mean);
    if let Some(std) = s.std {
        t = format!("{t} ± {}", f.show(std));
    }
    if outdated {
        t.push_str(MARK);
    }
    t
}

/// The earlier run a row's values come from (or would, were its artifact still there), as JSON.
fn earlier_json(o: &Origin) -> Option<Value> {
    match o {
        Origin::Outdated { changed, finished_at, key, settings } => {
            Some(json!({"finished_at": finished_at, "key": key, "settings": settings, "changed": changed, "in_store": true}))
        }
        Origin::Elsewhere { settings } => Some(json!({"settings": settings, "other_settings": true, "in_store": false})),
        Origin::Gone { finished_at, file, damaged } => {
            Some(json!({"finished_at": finished_at, "in_store": false, "file": file, "damaged": damaged}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_mean_std_and_the_outdated_mark() {
        let f4 = NumFormat::Fixed(4);
        assert_eq!(cell(&Stat { mean: 0.5, std: None, n: 1 }, false, f4), "0.5000");
        assert_eq!(cell(&Stat { mean: 0.5, std: Some(0.01), n: 3 }, false, f4), "0.5000 ± 0.0100");
        assert_eq!(cell(&Stat { mean: 0.1, std: Some(0.0), n: 2 }, false, f4), "0.1000 ± 0.0000");
        assert_eq!(cell(&Stat { mean: 3.0, std: None, n: 1 }, true, NumFormat::Integer), "3*");
    }
}
