//! Result tables: a grid of cells with provenance, rendered as a terminal table (comfy-table), Markdown (best
//! per column in bold, second underlined), CSV and JSON. No engine or burn code here.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table as Comfy};
use serde::{Deserialize, Serialize};

/// Where a cell's number came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Node id.
    pub node: String,
    /// Its cache key (when known).
    pub key: Option<String>,
    /// Digest of the artifact read.
    pub artifact: String,
    /// JSON path inside the artifact's `metrics.json`.
    pub path: String,
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The value (None = missing).
    pub value: Option<f64>,
    /// Text when not a metric (e.g. #Params), else formatted from `value`.
    pub text: String,
    /// Provenance (empty for constants).
    pub from: Vec<Provenance>,
    /// Whether it takes part in best/second-best marking.
    pub ranked: bool,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultTable {
    /// Title.
    pub title: String,
    /// Caption (profile, scale, datasets: never presented as the paper's numbers).
    pub caption: String,
    /// Column headers (first column is the row label).
    pub columns: Vec<String>,
    /// Row labels.
    pub rows: Vec<String>,
    /// Cells `[row][col]` (without the label column).
    pub cells: Vec<Vec<Cell>>,
}

/// Best and second-best row index per column (higher is better).
pub fn ranks(t: &ResultTable) -> Vec<(Option<usize>, Option<usize>)> {
    (0..t.columns.len().saturating_sub(1))
        .map(|c| {
            let mut v: Vec<(usize, f64)> = t
                .cells
                .iter()
                .enumerate()
                .filter(|(_, r)| r[c].ranked)
                .filter_map(|(i, r)| r[c].value.filter(|x| x.is_finite()).map(|x| (i, x)))
                .collect();
            v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
            (v.first().map(|x| x.0), v.get(1).filter(|x| Some(x.1) != v.first().map(|f| f.1)).map(|x| x.0))
        })
        .collect()
}

/// Markdown with the best value per column in **bold** and the second <u>underlined</u>.
pub fn markdown(t: &ResultTable) -> String {
    let r = ranks(t);
    let mut s = format!("### {}\n\n", t.title);
    s.push_str(&format!("| {} |\n", t.columns.join(" | ")));
    s.push_str(&format!("|{}\n", t.columns.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()));
    for (i, row) in t.cells.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if r[c].0 == Some(i) {
                    format!("**{}**", cell.text)
                } else if r[c].1 == Some(i) {
                    format!("<u>{}</u>", cell.text)
                } else {
                    cell.text.clone()
                }
            })
            .collect();
        s.push_str(&format!("| {} | {} |\n", t.rows[i], cells.join(" | ")));
    }
    s.push_str(&format!("\n{}\n", t.caption));
    s
}

/// CSV.
pub fn csv(t: &ResultTable) -> String {
    let mut w = csv::Writer::from_writer(vec![]);
    let _ = w.write_record(&t.columns);
    for (i, row) in t.cells.iter().enumerate() {
        let mut rec = vec![t.rows[i].clone()];
        rec.extend(row.iter().map(|c| c.value.map(|v| format!("{v}")).unwrap_or_else(|| c.text.clone())));
        let _ = w.write_record(&rec);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Terminal rendering.
pub fn terminal(t: &ResultTable) -> String {
    let mut c = Comfy::new();
    c.load_preset(UTF8_FULL_CONDENSED);
    c.set_header(t.columns.clone());
    for (i, row) in t.cells.iter().enumerate() {
        let mut v = vec![t.rows[i].clone()];
        v.extend(row.iter().map(|x| x.text.clone()));
        c.add_row(v);
    }
    format!("{}\n{c}\n{}\n", t.title, t.caption)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: f64) -> Cell {
        Cell { value: Some(v), text: format!("{:.1}", v * 100.0), from: vec![], ranked: true }
    }

    fn table() -> ResultTable {
        ResultTable {
            title: "T".into(),
            caption: "small profile".into(),
            columns: vec!["Model".into(), "A".into(), "B".into()],
            rows: vec!["x".into(), "y".into(), "z".into()],
            cells: vec![
                vec![cell(0.5), cell(0.9)],
                vec![cell(0.7), cell(0.8)],
                vec![cell(0.6), Cell { value: None, text: "–".into(), from: vec![], ranked: true }],
            ],
        }
    }

    #[test]
    fn markdown_snapshot() {
        let want = "### T\n\n| Model | A | B |\n|---|---:|---:|\n| x | 50.0 | **90.0** |\n| y | **70.0** | <u>80.0</u> |\n| z | <u>60.0</u> | – |\n\nsmall profile\n";
        assert_eq!(markdown(&table()), want);
    }

    #[test]
    fn csv_snapshot() {
        assert_eq!(csv(&table()), "Model,A,B\nx,0.5,0.9\ny,0.7,0.8\nz,0.6,–\n");
    }
}
