//! `table`: rows are runs (one or several nodes each), columns are task metrics plus #Models and #Params;
//! writes `table.md`, `table.tex` (LaTeX, booktabs), `table.csv`, `table.json` (every cell with the node, key and
//! artifact that produced it) and `table.txt`. Optional constant rows of published numbers are labelled as such.

use crate::spec::error::suggest;
use crate::stage::{parse, parse_checked, InputArtifact, InputSlot, MatrixFacts, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use crate::tables::{csv, latex, markdown, terminal, Cell, Provenance, ResultTable};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A row: the nodes it shows (`nodes`), or rows written out from a matrix declaration (`matrix = "cv"`, `over`: the
/// variables each row is over; see [`rows_from_matrix`]), which [`TableStage::expand_params`] turns into rows of
/// `nodes` before anything else reads them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowSpec {
    #[serde(default)]
    label: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    matrix: Option<String>,
    #[serde(default)]
    over: Vec<String>,
}

/// A column: a task's test metric (`task`, `metric`), or any number a run writes into its `metrics.json` (`key`,
/// a dotted path such as `test.acc`: a `command` node's own metrics).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColSpec {
    task: Option<String>,
    #[serde(default = "top1")]
    metric: String,
    key: Option<String>,
    label: Option<String>,
    /// The text shows the value × `scale` (100: fractions in percent; 1: as reported).
    #[serde(default = "hundred")]
    scale: f64,
    /// Decimals of the text.
    #[serde(default = "one")]
    digits: u8,
    #[serde(default)]
    better: Better,
}

/// Which end of a column ranks first.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Better {
    /// Accuracy, mAP.
    #[default]
    Higher,
    /// A loss, an error rate.
    Lower,
}

fn top1() -> String {
    "top1".into()
}

fn hundred() -> f64 {
    100.0
}

fn one() -> u8 {
    1
}

/// The test metrics training, co-training and probe nodes report (`metrics.json`: `tasks.TASK.test.METRIC`).
const METRICS: &[&str] = &["top1", "top5", "map"];

fn col_label(c: &ColSpec) -> String {
    c.label.clone().unwrap_or_else(|| match (&c.task, &c.key) {
        (Some(t), _) => format!("{t} {}", c.metric),
        (None, Some(k)) => k.clone(),
        (None, None) => String::new(),
    })
}

impl ColSpec {
    /// Where the column's value is in a run's `metrics.json`, as a dotted path (for provenance) and a JSON pointer.
    fn path(&self) -> (String, String) {
        let dotted = match (&self.task, &self.key) {
            (Some(t), _) => format!("tasks.{t}.test.{}", self.metric),
            (None, Some(k)) => k.clone(),
            (None, None) => String::new(),
        };
        let pointer = match (&self.task, &self.key) {
            (Some(t), _) => format!("/tasks/{}/test/{}", escape_pointer(t), escape_pointer(&self.metric)),
            _ => dotted.split('.').map(|p| format!("/{}", escape_pointer(p))).collect(),
        };
        (dotted, pointer)
    }
}

/// A JSON pointer token (RFC 6901): `~` and `/` escaped.
fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The kinds whose metrics count a model (`models`, `params`): the training kinds.
const MODEL_KINDS: [&str; 2] = ["train", "cotrain"];

/// The artifacts a row names: the node itself, or its seed replicates `NAME.s0`, `NAME.s1`, … in order.
fn replicates<'a>(runs: &'a [InputArtifact], name: &str) -> Vec<&'a InputArtifact> {
    resolve(runs, |a| a.id.as_str(), name)
}

/// [`replicates`] over anything with an id (`plan` matches node ids the same way, before anything ran).
fn resolve<'a, T>(items: &'a [T], id: impl Fn(&T) -> &str, name: &str) -> Vec<&'a T> {
    if let Some(a) = items.iter().find(|a| id(a) == name) {
        return vec![a];
    }
    let mut v: Vec<(u64, &T)> = items
        .iter()
        .filter_map(|a| id(a).strip_prefix(name).and_then(|r| r.strip_prefix(".s")).and_then(|i| i.parse().ok()).map(|i| (i, a)))
        .collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

/// The rows `{ matrix = DECL, over = [...], label }` (row `i` of the table) stands for: one per setting of the
/// declaration's variables not in `over`, in the declaration's order, each naming the nodes of that setting (a seed
/// replicate by its node, so the row is over the seeds too) and labelled by `label` with `{var}` written as
/// placeholders write it (`{{var}}` the literal `{var}`, as in parameters; a name no variable of it has, one of
/// `own`: the table's own variables and the pipeline's), or `lr=0.1, wd=0` where it has none.
fn rows_from_matrix(
    i: usize,
    decl: &str,
    spec: &RowSpec,
    own: &BTreeMap<String, String>,
    runs: &[String],
    matrix: &MatrixFacts<'_>,
) -> Result<Vec<Value>, (String, String, String)> {
    let Some(group) = matrix.groups.get(decl) else {
        // The outermost declarations among the runs (`cv`, not each of its prefixes `cv.0.1`).
        let among = |g: &&String| runs.iter().any(|r| r.starts_with(&format!("{g}.")));
        let outer: Vec<&String> = matrix.groups.keys().filter(among).collect();
        let decls = outer.iter().filter(|g| !outer.iter().any(|o| g.starts_with(&format!("{o}.")))).map(|g| g.as_str());
        return Err((
            format!("rows.{i}.matrix"),
            format!("`{decl}` is not a matrix or seeds declaration"),
            if runs.iter().any(|r| r == decl) {
                format!("{} (a row of one node is `nodes = [\"{decl}\"]`)", suggest(decl, decls))
            } else {
                suggest(decl, decls)
            },
        ));
    };
    let members: Vec<&String> = group.iter().filter(|id| runs.contains(id)).collect();
    if members.is_empty() {
        return Err((
            format!("rows.{i}.matrix"),
            format!("none of `{decl}`'s {} nodes is among this table's runs", group.len()),
            format!("add it to the table's inputs: `inputs = {{ runs = [\"{decl}\"] }}`"),
        ));
    }
    const OWN: [&str; 2] = ["seed", "replicate"];
    let vars = |id: &str| -> BTreeMap<String, String> {
        matrix
            .vars
            .get(id)
            .map(|v| v.iter().filter(|(k, _)| !OWN.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let names: Vec<String> =
        members.iter().flat_map(|id| vars(id).into_keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for (k, o) in spec.over.iter().enumerate() {
        // Seeds are averaged over in every row.
        if o != "seed" && !names.contains(o) {
            return Err((
                format!("rows.{i}.over.{k}"),
                format!(
                    "`{o}` is not a variable of `{decl}`'s matrix ({})",
                    if names.is_empty() { "it has none: its nodes differ by seed alone".to_string() } else { names.join(", ") }
                ),
                suggest(o, names.iter().map(String::as_str)),
            ));
        }
    }
    // A `{name}` of the label naming no variable is a misspelling (its rows would share one label); one that
    // each row is over has no one value in a row. (A name of the table's own, such as `{seed}` or a pipeline
    // variable, is its value there.)
    for name in crate::spec::value::placeholder_names(&spec.label) {
        if !names.contains(&name.to_string()) {
            if own.contains_key(name) {
                continue;
            }
            return Err((
                format!("rows.{i}.label"),
                format!("`{{{name}}}` names no variable of `{decl}`'s matrix ({})", names.join(", ")),
                suggest(name, names.iter().map(String::as_str)),
            ));
        }
        if spec.over.iter().any(|o| o == name) {
            return Err((
                format!("rows.{i}.label"),
                format!("the label names `{{{name}}}`, which each row is over (`over = [\"{name}\"]`): a row has no one value of it"),
                format!("leave `{{{name}}}` out of the label, or `{name}` out of `over` for a row per value of it"),
            ));
        }
    }
    // Settings in the declaration's order, each with its nodes (a replicate by the node it replicates).
    let mut settings: Vec<(BTreeMap<String, String>, Vec<String>)> = vec![];
    for id in members {
        let setting: BTreeMap<String, String> = vars(id).into_iter().filter(|(k, _)| !spec.over.contains(k)).collect();
        let replicate = matrix.vars.get(id.as_str()).and_then(|v| v.get("replicate")).map_or("", String::as_str);
        let node = id.strip_suffix(replicate).filter(|_| !replicate.is_empty()).unwrap_or(id).to_string();
        match settings.iter_mut().find(|(s, _)| *s == setting) {
            Some((_, nodes)) if nodes.contains(&node) => {}
            Some((_, nodes)) => nodes.push(node),
            None => settings.push((setting, vec![node])),
        }
    }
    let mut out = vec![];
    for (setting, nodes) in settings {
        let label = if spec.label.is_empty() {
            if setting.is_empty() {
                decl.to_string()
            } else {
                setting.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
            }
        } else {
            let mut vars = own.clone();
            vars.extend(setting.iter().map(|(k, v)| (k.clone(), v.clone())));
            crate::spec::value::expand(&spec.label, &vars)
        };
        out.push(json!({ "label": label, "nodes": nodes }));
    }
    Ok(out)
}

/// A run's `metrics.json` (Python's `NaN` read as no number: [`super::command::parse_metrics`]).
fn metrics_of(a: &InputArtifact) -> Result<Value, StageError> {
    super::command::parse_metrics(&a.read("metrics.json")?)
        .map_err(|e| StageError::failed(format!("input `{}` file `metrics.json`: {e}", a.id)))
}

/// The dotted paths of the numbers in `v` (the first 12), for saying what a run's metrics.json holds.
fn number_paths(v: &Value, prefix: &str) -> Vec<String> {
    let mut out = vec![];
    match v {
        Value::Number(_) => out.push(prefix.to_string()),
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.extend(number_paths(x, &p));
            }
        }
        _ => {}
    }
    out.truncate(12);
    out
}

fn prov(a: &InputArtifact, path: String) -> Provenance {
    Provenance { node: a.id.clone(), key: a.key.clone(), artifact: a.manifest.digest.clone(), path }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AvgSpec {
    label: String,
    columns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    label: String,
    values: Vec<Option<f64>>,
}

/// The parameters of a `table` node (see [`TableStage::params`] for each one's meaning).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableParams {
    title: String,
    caption: String,
    #[serde(default = "model_header")]
    row_header: String,
    rows: Vec<RowSpec>,
    columns: Vec<ColSpec>,
    counts: bool,
    averages: Vec<AvgSpec>,
    published: Vec<Published>,
    export: String,
}

/// The header of the rows' label column unless `row_header` says otherwise: the paper's tables are of models.
fn model_header() -> String {
    "Model".into()
}

/// `table`.
pub struct TableStage;

impl Stage for TableStage {
    fn kind(&self) -> &'static str {
        "table"
    }
    fn version(&self) -> u32 {
        // 2: seed replicates aggregated (mean ± std), ties within noise, average columns. 3: also `table.tex`.
        // 4: a mark's tie group stops at the first untied row (marks follow the means); marks in `table.txt`.
        // 5: no model counts 0 on a row without models (no value); CSV with `:std`/`:n` columns, empty where no
        // value; Markdown labels escaped; the caption names no text marks (the terminal rendering does); a
        // published row's values as fractions, as computed cells are. 6: no count columns when no row has a model; a
        // caption without a full stop gets one before the seeds' sentence. 7: a cell that several of a row's named
        // nodes report is over all their runs (k folds listed in one row), not the first node's alone. 8: a caption
        // over rows of different run counts says the range, not the largest alone.
        8
    }
    fn doc(&self) -> &'static str {
        "a result table (terminal, Markdown and LaTeX with best/second marked, CSV, JSON with provenance)"
    }
    fn output(&self) -> &'static str {
        "table"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        // A `command` node's files: its `metrics.json`, read by `key` columns.
        vec![InputSlot::many("runs", &["model", "metrics", "files"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("title", T::Str, "table title"),
            ParamSpec::req(
                "caption",
                T::Str,
                "what the numbers are: data, scale and settings (a table at a small scale says so: its numbers are never a paper's)",
            ),
            ParamSpec::added("row_header", T::Str, json!("Model"), "the header of the rows' label column (`Sample`, `Learning rate`)"),
            ParamSpec::req(
                "rows",
                T::Any,
                "list of { label, nodes = [...] } (a row over several nodes shows the mean ± std of those that report a column), or { matrix = \"DECL\", over = [\"fold\"], label = \"lr {lr}\" }: one row per setting of a matrix declaration's variables not in `over` (the seeds always averaged), labelled `lr=0.1` without `label`",
            ),
            ParamSpec::req(
                "columns",
                T::Any,
                "list of { task, metric = \"top1\", label }, or { key = \"test.acc\", label, scale = 100, digits = 1, better = \"higher\" } for a number of each run's metrics.json (a command's own)",
            ),
            ParamSpec::opt("counts", T::Bool, json!(true), "add #Models and #Params columns (left out when no row has a model, as over `command` nodes)"),
            ParamSpec::opt(
                "averages",
                T::Any,
                json!([]),
                "extra columns { label, columns = [column labels] }: the mean of those columns per row (per seed, then mean ± std)",
            ),
            ParamSpec::opt(
                "published",
                T::Any,
                json!([]),
                "constant rows { label, values = [...] } of published numbers (labelled as such)",
            ),
            ParamSpec::opt(
                "export",
                T::Str,
                json!(""),
                "copy table.{md,tex,csv,json} to this path stem after a run (relative to the pipeline file; not in the key: where a copy goes changes nothing computed)",
            )
            .unkeyed(),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, p: &Value) -> Result<(), (String, String)> {
        let p: TableParams = parse_checked(p, &self.params()).map_err(|(k, e)| {
            let shape = match k.as_str() {
                "rows" => "{ label, nodes } or { matrix, over, label }",
                "columns" => "{ task, metric, label } or { key, label, scale, digits, better }",
                "averages" => "{ label, columns }",
                "published" => "{ label, values }",
                _ => return (k, e),
            };
            (k, format!("expected a list of {shape}: {e}"))
        })?;
        for (i, r) in p.rows.iter().enumerate() {
            match (&r.matrix, r.nodes.is_empty()) {
                (Some(_), false) => {
                    return Err((
                        format!("rows.{i}"),
                        "a row names its `nodes`, or the `matrix` declaration its rows are written from, not both".into(),
                    ))
                }
                (None, true) => {
                    return Err((
                        format!("rows.{i}"),
                        "a row needs `nodes = [\"ID\", …]` (the runs it shows), or `matrix = \"DECL\"` for one row per setting of a matrix declaration".into(),
                    ))
                }
                (None, false) if r.label.is_empty() => {
                    return Err((format!("rows.{i}"), format!("the row of {} needs a `label`", r.nodes.join(", "))))
                }
                (None, false) if !r.over.is_empty() => {
                    return Err((
                        format!("rows.{i}.over"),
                        "`over` belongs to a row written from a matrix (`matrix = \"DECL\", over = [\"fold\"]`); a row of `nodes` is over the nodes it lists".into(),
                    ))
                }
                _ => {}
            }
        }
        for (i, c) in p.columns.iter().enumerate() {
            match (&c.task, &c.key) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err((
                        format!("columns.{i}"),
                        "a column names either a `task` (its test `metric`) or a `key` of the runs' metrics.json (`key = \"test.acc\"`), one of them".into(),
                    ))
                }
                (None, Some(k)) if k.is_empty() || k.split('.').any(str::is_empty) => {
                    return Err((format!("columns.{i}.key"), format!("`{k}` is not a dotted path such as `test.acc`")))
                }
                (None, Some(_)) => continue,
                (Some(_), None) => {}
            }
            if !(c.scale.is_finite() && c.scale > 0.0) || c.digits > 6 {
                return Err((format!("columns.{i}"), "`scale` must be a positive number and `digits` at most 6".into()));
            }
            if !METRICS.contains(&c.metric.as_str()) {
                return Err((
                    format!("columns.{i}.metric"),
                    format!(
                        "column `{}`: metric `{}` is not one a task's runs report; {}",
                        col_label(c),
                        c.metric,
                        match suggest(&c.metric, METRICS.iter().copied()) {
                            // A typo of one of them, or a number of the runs' own.
                            close if close.starts_with("did you mean") => close,
                            list => format!(
                                "{list} (a number your runs write into their own metrics.json is a `key` column: `{{ key = \"{}\" }}`)",
                                c.metric
                            ),
                        }
                    ),
                ));
            }
        }
        let labels: Vec<String> = p.columns.iter().map(col_label).collect();
        for a in &p.averages {
            if let Some(c) = a.columns.iter().find(|c| !labels.contains(c)) {
                return Err((
                    "averages".into(),
                    format!("`{}` averages `{c}`, which is not a column label ({})", a.label, labels.join(", ")),
                ));
            }
        }
        Ok(())
    }
    fn check_refs(
        &self,
        p: &Value,
        inputs: &std::collections::BTreeMap<String, Vec<String>>,
        nodes: &std::collections::BTreeMap<&str, &str>,
    ) -> Result<(), (String, String, String)> {
        // Checked here, before anything runs, not after the trainings a table waits for.
        let Ok(p) = parse::<TableParams>(p) else { return Ok(()) };
        let runs = inputs.get("runs").cloned().unwrap_or_default();
        // Rows written from a matrix are checked as they are written (`expand_params`).
        for (r, row) in p.rows.iter().enumerate() {
            for (k, n) in row.nodes.iter().enumerate() {
                // A group of several settings (a matrix prefix such as `sweep.0.01`): not one row's.
                let under: Vec<&String> = runs.iter().filter(|id| id.starts_with(&format!("{n}."))).collect();
                if resolve(&runs, |s| s.as_str(), n).is_empty() && !under.is_empty() {
                    return Err((
                        format!("rows.{r}.nodes.{k}"),
                        format!(
                            "row `{}` names `{n}`, a group of {} runs of different settings: a row shows one setting (a node, or its seed replicates `NODE.sN`)",
                            row.label,
                            under.len()
                        ),
                        format!(
                            "name one of them (e.g. `{}`), give each its own row, or list those the cell averages over (k folds): \
                             `nodes = [\"{}\", …]`",
                            under[0], under[0]
                        ),
                    ));
                }
                if resolve(&runs, |s| s.as_str(), n).is_empty() {
                    return Err((
                        format!("rows.{r}.nodes.{k}"),
                        format!(
                            "row `{}` names `{n}`, which is neither one of this table's `runs` inputs nor their seed replicates `{n}.sN`",
                            row.label
                        ),
                        format!("{} (or add it to `inputs = {{ runs = [...] }}`)", suggest(n, runs.iter().map(String::as_str))),
                    ));
                }
            }
        }
        for (i, c) in p.columns.iter().enumerate() {
            let Some(task) = &c.task else { continue };
            if nodes.get(task.as_str()) != Some(&"task") {
                let tasks = nodes.iter().filter(|(_, k)| **k == "task").map(|(id, _)| *id);
                let what = match nodes.get(task.as_str()) {
                    Some(kind) => format!("`{task}` is a `{kind}` node, not a `task` node"),
                    None => format!("no task node `{task}` in this pipeline"),
                };
                return Err((
                    format!("columns.{i}.task"),
                    format!("column `{}`: {what}", col_label(c)),
                    format!(
                        "{} (a column's `task` names the `task` node whose metrics it shows, its id as in `[node.ID]`)",
                        suggest(task, tasks)
                    ),
                ));
            }
        }
        Ok(())
    }
    fn expand_params(
        &self,
        p: &mut Value,
        written: &crate::spec::AsWritten,
        inputs: &std::collections::BTreeMap<String, Vec<String>>,
        matrix: &MatrixFacts<'_>,
    ) -> Result<(), (String, String, String)> {
        let Some(rows) = p.get("rows").and_then(Value::as_array) else { return Ok(()) };
        if !rows.iter().any(|r| r.get("matrix").is_some()) {
            return Ok(());
        }
        let runs = inputs.get("runs").cloned().unwrap_or_default();
        // The rows as written, where the pipeline replaced placeholders in them: a matrix row's label is written
        // out here, its runs' variables first (`{lr}` is the row's, not a pipeline variable `lr`).
        let as_written = written.params.get("rows").and_then(Value::as_array).filter(|w| w.len() == rows.len());
        // Each row written, with the row it was written from.
        let mut out: Vec<(usize, Value)> = vec![];
        for (i, r) in rows.iter().enumerate() {
            let Ok(mut spec) = serde_json::from_value::<RowSpec>(r.clone()) else { return Ok(()) };
            let mut own = BTreeMap::new();
            if let Some(label) = as_written.and_then(|w| w[i].get("label")).and_then(Value::as_str) {
                spec.label = label.to_string();
                own = written.vars.clone();
            }
            match spec.matrix {
                None => out.push((i, r.clone())),
                Some(ref decl) => out.extend(rows_from_matrix(i, decl, &spec, &own, &runs, matrix)?.into_iter().map(|r| (i, r))),
            }
        }
        // Two rows of one label would be one row to a reader (and to `plan`'s cells).
        for (k, (at, r)) in out.iter().enumerate() {
            let label = r["label"].as_str().unwrap_or_default();
            if let Some((first, _)) = out[..k].iter().find(|(_, o)| o["label"].as_str() == Some(label)) {
                let at = if rows[*at].get("matrix").is_some() { *at } else { *first };
                return Err((
                    format!("rows.{at}.label"),
                    format!("two rows are labelled `{label}`"),
                    "give each row its own label: a matrix row's `label` names the variables its rows differ in (`\"lr {lr}, wd {wd}\"`), or leave it out for `lr=0.1, wd=0`".into(),
                ));
            }
        }
        p["rows"] = Value::Array(out.into_iter().map(|(_, r)| r).collect());
        Ok(())
    }
    fn used_inputs(
        &self,
        p: &Value,
        inputs: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
        // The runs its rows name (with their seed replicates): a sweep's other runs neither make it stale nor,
        // failed, keep it from being made.
        let p = parse::<TableParams>(p).ok()?;
        let runs = inputs.get("runs")?;
        let used: Vec<String> = runs
            .iter()
            .filter(|id| p.rows.iter().flat_map(|r| &r.nodes).any(|n| resolve(std::slice::from_ref(*id), |s| s.as_str(), n).len() == 1))
            .cloned()
            .collect();
        let mut out = inputs.clone();
        out.insert("runs".into(), used);
        Some(out)
    }
    fn exports(&self, p: &Value) -> Vec<(String, String)> {
        // Parameters that do not parse export nothing (validation reports them).
        match parse::<TableParams>(p).map(|p| p.export) {
            Ok(stem) if !stem.is_empty() => {
                ["md", "tex", "csv", "json"].iter().map(|e| (format!("table.{e}"), format!("{stem}.{e}"))).collect()
            }
            _ => vec![],
        }
    }
    fn shown_key(&self, keyed: &mut Value) {
        // Rows by label, so that a change reads `rows.lr 0.3 added`, not two lists of JSON.
        if let Some(rows) = keyed.get("rows").and_then(Value::as_array) {
            let by_label: serde_json::Map<String, Value> =
                rows.iter().map(|r| (r["label"].as_str().unwrap_or_default().to_string(), r["nodes"].clone())).collect();
            if by_label.len() == rows.len() {
                keyed["rows"] = Value::Object(by_label);
            }
        }
    }
    fn canonical_key(&self, keyed: &mut Value) {
        // A column's numbers as their types read them (`scale = 1` is `scale = 1.0`, `digits = 3.0` is `3`), as
        // the engine keys a typed parameter's: a respelling is no change.
        for c in keyed.get_mut("columns").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(x) = c.get("scale").and_then(Value::as_f64) {
                c["scale"] = serde_json::json!(x);
            }
            if let Some(x) = c.get("digits").and_then(Value::as_f64).filter(|x| x.fract() == 0.0 && *x >= 0.0) {
                c["digits"] = serde_json::json!(x as u64);
            }
        }
    }
    fn summary_file(&self) -> Option<&'static str> {
        Some("table.txt")
    }
    fn cells(
        &self,
        p: &Value,
        inputs: &std::collections::BTreeMap<String, Vec<String>>,
        reads_from: &dyn Fn(&str, &str) -> bool,
        kind_of: &dyn Fn(&str) -> Option<&'static str>,
    ) -> Vec<(String, String, Vec<String>)> {
        // As `run` reads them: a metric cell reads the replicates of the row's named nodes that report its task
        // (those with the task node upstream; the cell is over all of them that report the metric, which only a run
        // can tell), an average cell those of its columns; #Models and #Params read the first replicate of each
        // named node, and are columns only where some row names a model (a training node's metrics count it: a
        // table over `command` or probe nodes has none). Published rows are constants.
        let Ok(p) = parse::<TableParams>(p) else { return vec![] };
        let runs = inputs.get("runs").cloned().unwrap_or_default();
        let reps_of = |r: &RowSpec| -> Vec<Vec<String>> {
            r.nodes.iter().map(|n| resolve(&runs, |s| s.as_str(), n).into_iter().cloned().collect()).collect()
        };
        let models = |id: &String| kind_of(id).is_some_and(|k| MODEL_KINDS.contains(&k));
        let counts = p.counts && p.rows.iter().any(|r| reps_of(r).iter().filter_map(|v| v.first()).any(models));
        let mut out = vec![];
        for r in &p.rows {
            let reps = reps_of(r);
            // A row of no model (probes of the initial model) shows `–` there, whatever runs.
            if counts && reps.iter().filter_map(|v| v.first()).any(models) {
                let firsts: Vec<String> = reps.iter().filter_map(|v| v.first().cloned()).collect();
                for c in ["#Models", "#Params"] {
                    out.push((r.label.clone(), c.to_string(), firsts.clone()));
                }
            }
            let all: Vec<String> = reps.concat();
            let of_task = |task: &str| -> Vec<String> { all.iter().filter(|n| reads_from(n, task)).cloned().collect() };
            // A `key` column reads every run of the row (those that report it make the cell).
            let of_col = |c: &ColSpec| -> Vec<String> { c.task.as_ref().map_or_else(|| all.clone(), |t| of_task(t)) };
            for c in &p.columns {
                out.push((r.label.clone(), col_label(c), of_col(c)));
            }
            for a in &p.averages {
                let mut reads: Vec<String> = p.columns.iter().filter(|c| a.columns.contains(&col_label(c))).flat_map(&of_col).collect();
                reads.sort();
                reads.dedup();
                out.push((r.label.clone(), a.label.clone(), reads));
            }
        }
        out
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let TableParams { title, caption, row_header, rows, columns: cols, counts, averages: avgs, published, export: _ } =
            parse(ctx.params)?;
        let runs = ctx.inputs.get("runs").cloned().unwrap_or_default();
        let mut columns = vec![row_header];
        if counts {
            columns.push("#Models".into());
            columns.push("#Params".into());
        }
        let labels: Vec<String> = cols.iter().map(col_label).collect();
        columns.extend(labels.iter().cloned());
        columns.extend(avgs.iter().map(|a| a.label.clone()));
        let lower_is_better = cols.iter().filter(|c| c.better == Better::Lower).map(col_label).collect();
        let mut t = ResultTable { title, caption, columns, rows: vec![], cells: vec![], lower_is_better };
        // Per `key` column, whether any run reported it (a misspelt key would otherwise be a column of dashes).
        let mut reported = vec![false; cols.len()];
        let mut notes: Vec<String> = vec![];
        let mut max_seeds = 1;
        // The fewest runs a computed cell is over (rows over different numbers of runs: a baseline's one seed
        // beside a sweep's folds).
        let mut min_seeds = usize::MAX;
        // Whether a cell is over the runs of several of its row's nodes; the rows with such cells, with those nodes.
        let mut pooled = false;
        let mut pooled_rows: Vec<(String, Vec<String>)> = vec![];
        for r in &rows {
            // Per named node: its replicates with their metrics; each run once (a row naming `a` twice, or `cv.0` and
            // its replicate `cv.0.s1`, counts the run once, not as two values of a mean).
            let mut named = vec![];
            let mut counted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
            for n in &r.nodes {
                let all = replicates(&runs, n);
                let reps: Vec<&InputArtifact> = all.iter().copied().filter(|a| counted.insert(a.id.as_str())).collect();
                if reps.is_empty() && !all.is_empty() {
                    continue;
                }
                if reps.is_empty() {
                    return Err(StageError::input(format!("row `{}` names `{n}`, which is not among this table's `runs` inputs", r.label)));
                }
                let mut v = vec![];
                for a in reps {
                    if !a.manifest.files.contains_key("metrics.json") {
                        return Err(StageError::input(format!(
                            "row `{}`: `{}` has no metrics.json, which a table reads (a command writes its numbers as JSON into $POLYFLOW_OUT/metrics.json)",
                            r.label, a.id
                        )));
                    }
                    v.push((a, metrics_of(a)?));
                }
                named.push(v);
            }
            let mut cells = vec![];
            if counts {
                // One model per named node (its first replicate: every replicate has the same architecture).
                let firsts: Vec<&(&InputArtifact, Value)> = named.iter().filter_map(|v| v.first()).collect();
                let models: u64 = firsts.iter().map(|(_, m)| m["models"].as_u64().unwrap_or(0)).sum();
                let params: u64 = firsts.iter().map(|(_, m)| m["params"].as_u64().unwrap_or(0)).sum();
                let from: Vec<Provenance> =
                    firsts.iter().filter(|(_, m)| m["models"].as_u64().unwrap_or(0) > 0).map(|(a, _)| prov(a, "params".into())).collect();
                // No model (a probe of the initial model): no value, not a count of 0.
                cells.push(Cell::single(
                    (models > 0).then_some(models as f64),
                    if models > 0 { models.to_string() } else { "–".into() },
                    from.clone(),
                    false,
                ));
                let ptxt = if params == 0 {
                    "–".into()
                } else if params >= 1_000_000 {
                    format!("{:.1}M", params as f64 / 1e6)
                } else {
                    format!("{:.1}K", params as f64 / 1e3)
                };
                cells.push(Cell::single((params > 0).then_some(params as f64), ptxt, from, false));
            }
            // Per column: the per-seed values of the named nodes that report the metric — one node of the row in the
            // paper's tables (each task's baseline reports its own task); all of them where several do (the k folds
            // of a cross-validation listed in one row: the cell is over all their runs, said).
            let mut per_col: Vec<(Vec<f64>, Vec<Provenance>)> = vec![];
            for (ci, c) in cols.iter().enumerate() {
                let (path, pointer) = c.path();
                let reporting: Vec<(&String, Vec<(f64, Provenance)>)> = named
                    .iter()
                    .zip(&r.nodes)
                    .filter_map(|(reps, name)| {
                        let vals: Vec<(f64, Provenance)> = reps
                            .iter()
                            .filter_map(|(a, m)| m.pointer(&pointer).and_then(Value::as_f64).map(|v| (v, prov(a, path.clone()))))
                            .collect();
                        // Replicates of that node without the number: the cell is over fewer seeds than it has, said.
                        let missing: Vec<&str> = reps
                            .iter()
                            .filter(|(_, m)| m.pointer(&pointer).and_then(Value::as_f64).is_none())
                            .map(|(a, _)| a.id.as_str())
                            .collect();
                        if !vals.is_empty() && !missing.is_empty() {
                            notes.push(format!(
                                "row `{}`, column `{}`: {} report(s) no `{path}`, so the cell is over {} of {} replicates",
                                r.label,
                                col_label(c),
                                missing.join(", "),
                                vals.len(),
                                reps.len()
                            ));
                        }
                        (!vals.is_empty()).then_some((name, vals))
                    })
                    .collect();
                if reporting.len() > 1 {
                    pooled = true;
                    if pooled_rows.last().is_none_or(|(l, _)| *l != r.label) {
                        pooled_rows.push((r.label.clone(), vec![]));
                    }
                    let ids = &mut pooled_rows.last_mut().expect("pushed").1;
                    for (name, _) in &reporting {
                        if !ids.iter().any(|n| n == *name) {
                            ids.push(name.to_string());
                        }
                    }
                }
                let (vals, from): (Vec<f64>, Vec<Provenance>) = reporting.into_iter().flat_map(|(_, v)| v).unzip();
                max_seeds = max_seeds.max(vals.len());
                if !vals.is_empty() {
                    min_seeds = min_seeds.min(vals.len());
                }
                reported[ci] |= !vals.is_empty();
                cells.push(Cell::over_seeds_shown(vals.clone(), from.clone(), c.scale, c.digits));
                per_col.push((vals, from));
            }
            // Averages of columns: per seed when every averaged column has the same seeds, else of the means.
            for a in &avgs {
                let idx: Vec<usize> = a.columns.iter().filter_map(|l| labels.iter().position(|x| x == l)).collect();
                let parts: Vec<&(Vec<f64>, Vec<Provenance>)> = idx.iter().map(|&i| &per_col[i]).collect();
                let from: Vec<Provenance> = parts.iter().flat_map(|p| p.1.clone()).collect();
                let k = parts.first().map(|p| p.0.len()).unwrap_or(0);
                let cell = if k == 0 || parts.iter().any(|p| p.0.is_empty()) {
                    Cell::single(None, "–".into(), from, true)
                } else if parts.iter().all(|p| p.0.len() == k) {
                    Cell::over_seeds((0..k).map(|s| parts.iter().map(|p| p.0[s]).sum::<f64>() / parts.len() as f64).collect(), from)
                } else {
                    let m = parts.iter().map(|p| p.0.iter().sum::<f64>() / p.0.len() as f64).sum::<f64>() / parts.len() as f64;
                    Cell::single(Some(m), format!("{:.1}", m * 100.0), from, true)
                };
                cells.push(cell);
            }
            t.rows.push(r.label.clone());
            t.cells.push(cells);
        }
        if let Some(c) = cols.iter().zip(&reported).find(|(c, r)| c.key.is_some() && !**r).map(|(c, _)| c) {
            // There, but not a number (`"0.5"`, `true`): said as such, not as absent.
            let (path, pointer) = c.path();
            let typed = runs.iter().find_map(|a| metrics_of(a).ok().and_then(|m| m.pointer(&pointer).cloned()).map(|v| (a.id.clone(), v)));
            if let Some((id, v)) = typed {
                return Err(StageError::input(format!(
                    "column `{}`: `{id}` reports `{path}` as {v}, which is not a number (write it as a JSON number)",
                    col_label(c)
                )));
            }
            let some = runs.iter().find_map(|a| metrics_of(a).ok().map(|m| (a.id.clone(), m)));
            let seen = some.map(|(id, m)| format!(" (`{id}`'s has: {})", number_paths(&m, "").join(", "))).unwrap_or_default();
            return Err(StageError::input(format!(
                "column `{}`: no run of this table reports `{}` in its metrics.json{seen}",
                col_label(c),
                c.path().0
            )));
        }
        // No row with a model (a table over `command` nodes, which count none): no count columns, not two columns
        // of dashes.
        let counts = counts && t.cells.iter().any(|c| c[0].value.is_some());
        if !counts && t.columns.get(1).is_some_and(|c| c == "#Models") {
            t.columns.drain(1..3);
            t.cells.iter_mut().for_each(|c| drop(c.drain(0..2)));
        }
        if max_seeds > 1 {
            // Its own sentence after the caption's (`caption = "toy sweep"` ran into "toy sweep Mean ± …").
            let c = t.caption.trim_end();
            let closed = c.trim_end_matches(['"', '\'', '”', '’', ')']);
            t.caption = if c.is_empty() {
                String::new()
            } else if closed.ends_with(['.', '!', '?', '…', ':']) && !c.ends_with(')') {
                format!("{c} ")
            } else {
                format!("{c}. ")
            };
            let over = if pooled { "runs (seeds, or the several nodes a row names)" } else { "seeds" };
            let count = if min_seeds < max_seeds {
                format!("{min_seeds} to {max_seeds} {over}, as each row has (each cell's count in the CSV's `:n` columns)")
            } else {
                format!("{max_seeds} {over}")
            };
            t.caption.push_str(&format!(
                "Mean ± sample std over {count} (per-seed values in the JSON). Bold: best, underlined: second, each with the cells below it in the column while they are tied with it; {} (marked “tie”).",
                crate::tables::TIE_RULE
            ));
        }
        for pr in &published {
            let mut cells = vec![];
            if counts {
                cells.push(Cell::single(None, "".into(), vec![], false));
                cells.push(Cell::single(None, "".into(), vec![], false));
            }
            for i in 0..cols.len() + avgs.len() {
                // Written in % as the paper prints them; kept as fractions, as every computed cell is (CSV, JSON).
                let v = pr.values.get(i).copied().flatten();
                cells.push(Cell::single(v.map(|x| x / 100.0), v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into()), vec![], false));
            }
            t.rows.push(format!("{} (published, paper scale)", pr.label));
            t.cells.push(cells);
        }
        // One note for the rows over several nodes (k folds listed, a matrix's rows `over` a variable).
        match pooled_rows.as_slice() {
            [] => {}
            [(label, ids)] => notes.push(format!(
                "row `{label}`: {} named nodes report its columns ({}), so each cell is the mean over all their runs",
                ids.len(),
                ids.join(", ")
            )),
            rows => notes.push(format!(
                "rows {}: each names several nodes that report its columns, so each cell is the mean over all their runs",
                rows.iter().map(|(l, ids)| format!("`{l}` ({} nodes)", ids.len())).collect::<Vec<_>>().join(", ")
            )),
        }
        for n in notes {
            ctx.note(n);
        }
        ctx.out.put("table.md", markdown(&t).as_bytes())?;
        ctx.out.put("table.tex", latex(&t).as_bytes())?;
        ctx.out.put("table.csv", csv(&t).as_bytes())?;
        ctx.out.put_json("table.json", &t)?;
        ctx.out.put("table.txt", terminal(&t).as_bytes())
    }
    fn describe(&self, a: &crate::stage::InputArtifact, _out: &std::path::Path) -> Result<String, StageError> {
        Ok(String::from_utf8_lossy(&a.read("table.txt")?).to_string())
    }
}
