//! `table`: rows are runs (one or several nodes each), columns are task metrics plus #Models and #Params;
//! writes `table.md`, `table.csv`, `table.json` (every cell with the node, key and artifact that produced it)
//! and `table.txt`. Optional constant rows of published numbers are labelled as such.

use crate::stage::{InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use crate::tables::{csv, markdown, terminal, Cell, Provenance, ResultTable};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowSpec {
    label: String,
    nodes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColSpec {
    task: String,
    #[serde(default = "top1")]
    metric: String,
    label: Option<String>,
}

fn top1() -> String {
    "top1".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    label: String,
    values: Vec<Option<f64>>,
}

/// `table`.
pub struct TableStage;

impl Stage for TableStage {
    fn kind(&self) -> &'static str {
        "table"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "a result table (terminal, Markdown with best/second marked, CSV, JSON with provenance)"
    }
    fn output(&self) -> &'static str {
        "table"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("runs", &["model", "metrics"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("title", T::Str, "table title"),
            ParamSpec::req("caption", T::Str, "profile, scale and datasets (small-scale numbers are never the paper's)"),
            ParamSpec::req("rows", T::Any, "list of { label, nodes = [...] }"),
            ParamSpec::req("columns", T::Any, "list of { task, metric = \"top1\", label }"),
            ParamSpec::opt("counts", T::Bool, json!(true), "add #Models and #Params columns"),
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
                "copy table.{md,csv,json} to this path stem after a run (relative to the pipeline file)",
            ),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, p: &Value) -> Result<(), (String, String)> {
        serde_json::from_value::<Vec<RowSpec>>(p["rows"].clone())
            .map_err(|e| ("rows".to_string(), format!("expected a list of {{ label, nodes }}: {e}")))?;
        serde_json::from_value::<Vec<ColSpec>>(p["columns"].clone())
            .map_err(|e| ("columns".to_string(), format!("expected a list of {{ task, metric, label }}: {e}")))?;
        serde_json::from_value::<Vec<Published>>(p["published"].clone())
            .map_err(|e| ("published".to_string(), format!("expected a list of {{ label, values }}: {e}")))?;
        Ok(())
    }
    fn exports(&self, p: &Value) -> Vec<(String, String)> {
        match p["export"].as_str() {
            Some(stem) if !stem.is_empty() => ["md", "csv", "json"].iter().map(|e| (format!("table.{e}"), format!("{stem}.{e}"))).collect(),
            _ => vec![],
        }
    }
    fn summary_file(&self) -> Option<&'static str> {
        Some("table.txt")
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p = ctx.params;
        let rows: Vec<RowSpec> = serde_json::from_value(p["rows"].clone()).map_err(|e| StageError::input(e.to_string()))?;
        let cols: Vec<ColSpec> = serde_json::from_value(p["columns"].clone()).map_err(|e| StageError::input(e.to_string()))?;
        let published: Vec<Published> = serde_json::from_value(p["published"].clone()).map_err(|e| StageError::input(e.to_string()))?;
        let counts = p["counts"].as_bool().unwrap_or(true);
        let runs = ctx.inputs.get("runs").cloned().unwrap_or_default();
        let mut columns = vec!["Model".to_string()];
        if counts {
            columns.push("#Models".into());
            columns.push("#Params".into());
        }
        columns.extend(cols.iter().map(|c| c.label.clone().unwrap_or_else(|| format!("{} {}", c.task, c.metric))));
        let mut t = ResultTable {
            title: p["title"].as_str().unwrap_or("").into(),
            caption: p["caption"].as_str().unwrap_or("").into(),
            columns,
            rows: vec![],
            cells: vec![],
        };
        for r in &rows {
            let mut arts = vec![];
            for n in &r.nodes {
                let a = runs.iter().find(|a| &a.id == n).ok_or_else(|| {
                    StageError::input(format!("row `{}` names `{n}`, which is not among this table's `runs` inputs", r.label))
                })?;
                let m: Value = a.json("metrics.json")?;
                arts.push((a, m));
            }
            let mut cells = vec![];
            if counts {
                let models: u64 = arts.iter().map(|(_, m)| m["models"].as_u64().unwrap_or(0)).sum();
                let params: u64 = arts.iter().map(|(_, m)| m["params"].as_u64().unwrap_or(0)).sum();
                let prov: Vec<Provenance> = arts
                    .iter()
                    .filter(|(_, m)| m["models"].as_u64().unwrap_or(0) > 0)
                    .map(|(a, _)| Provenance {
                        node: a.id.clone(),
                        key: a.key.clone(),
                        artifact: a.manifest.digest.clone(),
                        path: "params".into(),
                    })
                    .collect();
                cells.push(Cell {
                    value: Some(models as f64),
                    text: if models > 0 { models.to_string() } else { "–".into() },
                    from: prov.clone(),
                    ranked: false,
                });
                let ptxt = if params == 0 {
                    "–".into()
                } else if params >= 1_000_000 {
                    format!("{:.1}M", params as f64 / 1e6)
                } else {
                    format!("{:.1}K", params as f64 / 1e3)
                };
                cells.push(Cell { value: Some(params as f64), text: ptxt, from: prov, ranked: false });
            }
            for c in &cols {
                let found = arts.iter().find_map(|(a, m)| m["tasks"][&c.task]["test"][&c.metric].as_f64().map(|v| (a, v)));
                cells.push(match found {
                    Some((a, v)) => Cell {
                        value: Some(v),
                        text: format!("{:.1}", v * 100.0),
                        from: vec![Provenance {
                            node: a.id.clone(),
                            key: a.key.clone(),
                            artifact: a.manifest.digest.clone(),
                            path: format!("tasks.{}.test.{}", c.task, c.metric),
                        }],
                        ranked: true,
                    },
                    None => Cell { value: None, text: "–".into(), from: vec![], ranked: true },
                });
            }
            t.rows.push(r.label.clone());
            t.cells.push(cells);
        }
        for pr in &published {
            let mut cells = vec![];
            if counts {
                cells.push(Cell { value: None, text: "".into(), from: vec![], ranked: false });
                cells.push(Cell { value: None, text: "".into(), from: vec![], ranked: false });
            }
            for i in 0..cols.len() {
                let v = pr.values.get(i).copied().flatten();
                cells.push(Cell {
                    value: v,
                    text: v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into()),
                    from: vec![],
                    ranked: false,
                });
            }
            t.rows.push(format!("{} (published, paper scale)", pr.label));
            t.cells.push(cells);
        }
        ctx.out.put("table.md", markdown(&t).as_bytes())?;
        ctx.out.put("table.csv", csv(&t).as_bytes())?;
        ctx.out.put_json("table.json", &t)?;
        ctx.out.put("table.txt", terminal(&t).as_bytes())
    }
    fn describe(&self, a: &crate::stage::InputArtifact, _out: &std::path::Path) -> Result<String, StageError> {
        Ok(String::from_utf8_lossy(&a.read("table.txt")?).to_string())
    }
}
