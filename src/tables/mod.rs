//! Result tables: a grid of cells with provenance, rendered as a terminal table (comfy-table), Markdown (best
//! per column in bold, second underlined), LaTeX (booktabs, the same marks), CSV and JSON. No engine or burn
//! code here.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table as Comfy};
use serde::{Deserialize, Serialize};

/// `n` with its digits in groups of three (`417,920`), as the paper's tables print counts.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

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
    /// Sample standard deviation over seeds (when the cell aggregates several seeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// The per-seed values behind `value` (their mean), in replicate order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<f64>,
    /// How the text shows `value`: multiplied by `scale` (100: a fraction shown in percent) with `digits`
    /// decimals.
    #[serde(default = "percent", skip_serializing_if = "is_percent")]
    pub scale: f64,
    /// Decimals of the text (1 by default).
    #[serde(default = "one_digit", skip_serializing_if = "is_one_digit")]
    pub digits: u8,
}

fn percent() -> f64 {
    100.0
}

fn is_percent(x: &f64) -> bool {
    *x == 100.0
}

fn one_digit() -> u8 {
    1
}

fn is_one_digit(x: &u8) -> bool {
    *x == 1
}

impl Cell {
    /// A cell of one value (text formatted by the caller).
    pub fn single(value: Option<f64>, text: String, from: Vec<Provenance>, ranked: bool) -> Cell {
        Cell { value, text, from, ranked, std: None, seeds: vec![], scale: 100.0, digits: 1 }
    }

    /// A metric cell over the values of several seeds: mean ± sample std ([`mean_std`]), in percent.
    pub fn over_seeds(values: Vec<f64>, from: Vec<Provenance>) -> Cell {
        Cell::over_seeds_shown(values, from, 100.0, 1)
    }

    /// [`Cell::over_seeds`] shown as `value × scale` with `digits` decimals (`scale = 1`: the values as they
    /// are, e.g. a loss).
    pub fn over_seeds_shown(values: Vec<f64>, from: Vec<Provenance>, scale: f64, digits: u8) -> Cell {
        let d = digits as usize;
        let Some((mean, std)) = mean_std(&values) else {
            return Cell { scale, digits, ..Cell::single(None, "–".into(), from, true) };
        };
        let Some(std) = std else {
            return Cell { scale, digits, ..Cell::single(Some(mean), format!("{:.d$}", mean * scale), from, true) };
        };
        Cell {
            value: Some(mean),
            text: format!("{:.d$} ± {:.d$}", mean * scale, std * scale),
            from,
            ranked: true,
            std: Some(std),
            seeds: values,
            scale,
            digits,
        }
    }

    /// Number of seeds behind the value (1 for a single run).
    pub fn n(&self) -> usize {
        self.seeds.len().max(1)
    }
}

/// The convention of every aggregate over seeds: the mean and the *sample* standard deviation (divided by
/// n − 1); `None` for no values, and no std for a single value (one seed says nothing about the spread).
pub fn mean_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some((mean, None));
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((mean, Some(var.sqrt())))
}

/// The rule that decides ties: two cells are tied when their means differ by at most twice the standard error
/// of the difference, 2·√(s₁²/n₁ + s₂²/n₂) (single runs: only equal values tie).
pub const TIE_RULE: &str =
    "cells whose means differ by less than twice the standard error of their difference, 2·√(s₁²/n₁ + s₂²/n₂), are tied";

/// Whether `a` and `b` are indistinguishable under [`TIE_RULE`].
pub fn tied(a: &Cell, b: &Cell) -> bool {
    match (a.value, b.value) {
        (Some(x), Some(y)) => {
            let se = (a.std.unwrap_or(0.0).powi(2) / a.n() as f64 + b.std.unwrap_or(0.0).powi(2) / b.n() as f64).sqrt();
            (x - y).abs() <= 2.0 * se
        }
        _ => false,
    }
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
    /// Columns (headers) where the lowest value ranks first (a loss, an error rate); higher is better elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower_is_better: Vec<String>,
}

/// Per column: the rows marked best and the rows marked second (higher is better, unless the column is one of
/// [`ResultTable::lower_is_better`]). The best group is the top
/// row and the rows below it, in order of mean, while each is tied with it ([`tied`]): it stops at the first row
/// that is not, so a mark never goes to a lower mean and skips a higher one (a noisy low row tied with the top
/// stays unmarked when a tighter row above it is not tied). The second group likewise among the rest. A group of
/// more than one row is a tie.
pub fn ranks(t: &ResultTable) -> Vec<(Vec<usize>, Vec<usize>)> {
    (0..t.columns.len().saturating_sub(1))
        .map(|c| {
            let mut v: Vec<usize> =
                (0..t.cells.len()).filter(|&i| t.cells[i][c].ranked && t.cells[i][c].value.is_some_and(|x| x.is_finite())).collect();
            let lower = t.columns.get(c + 1).is_some_and(|h| t.lower_is_better.contains(h));
            v.sort_by(|&a, &b| {
                let (x, y) = if lower { (a, b) } else { (b, a) };
                t.cells[x][c].value.partial_cmp(&t.cells[y][c].value).unwrap().then(a.cmp(&b))
            });
            let group = |rest: &[usize]| -> Vec<usize> {
                rest.first()
                    .map(|&top| rest.iter().copied().take_while(|&i| tied(&t.cells[top][c], &t.cells[i][c])).collect())
                    .unwrap_or_default()
            };
            let best = group(&v);
            let second = group(&v[best.len()..]);
            (best, second)
        })
        .collect()
}

/// Text for a Markdown table cell: `|` would end the cell and `<`, `>`, `&` start HTML, `*`, `_` and a backslash
/// emphasis and escapes, so each is escaped (`\|`, `&lt;`, …); a line break is a space.
pub fn markdown_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' | '*' | '_' | '\\' | '`' => {
                o.push('\\');
                o.push(ch);
            }
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '\n' | '\r' => o.push(' '),
            _ => o.push(ch),
        }
    }
    o
}

/// Markdown with the best value per column in **bold** and the second <u>underlined</u>; labels escaped
/// ([`markdown_escape`]).
pub fn markdown(t: &ResultTable) -> String {
    let r = ranks(t);
    let mut s = format!("### {}\n\n", markdown_escape(&t.title));
    s.push_str(&format!("| {} |\n", t.columns.iter().map(|c| markdown_escape(c)).collect::<Vec<_>>().join(" | ")));
    s.push_str(&format!("|{}\n", t.columns.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()));
    for (i, row) in t.cells.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let tie = |g: &Vec<usize>| if g.len() > 1 { " (tie)" } else { "" };
                let text = markdown_escape(&cell.text);
                if r[c].0.contains(&i) {
                    format!("**{text}**{}", tie(&r[c].0))
                } else if r[c].1.contains(&i) {
                    format!("<u>{text}</u>{}", tie(&r[c].1))
                } else {
                    text
                }
            })
            .collect();
        s.push_str(&format!("| {} | {} |\n", markdown_escape(&t.rows[i]), cells.join(" | ")));
    }
    s.push_str(&format!("\n{}\n", t.caption));
    s
}

/// Text escaped for LaTeX: the specials `& % $ # _ { } ~ ^ \` and the few non-ASCII symbols the tables use
/// (±, ×, →, ·, √, ², subscript digits, dashes, curly quotes) as LaTeX commands, so pdflatex reads it; any
/// other character is kept as is.
pub fn latex_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(ch);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            '\\' => o.push_str("\\textbackslash{}"),
            '±' => o.push_str("$\\pm$"),
            '×' => o.push_str("$\\times$"),
            '→' => o.push_str("$\\to$"),
            '·' => o.push_str("$\\cdot$"),
            '√' => o.push_str("$\\surd$"),
            '≤' => o.push_str("$\\leq$"),
            '≥' => o.push_str("$\\geq$"),
            '²' => o.push_str("\\textsuperscript{2}"),
            '³' => o.push_str("\\textsuperscript{3}"),
            '₀'..='₉' => o.push_str(&format!("\\textsubscript{{{}}}", ch as u32 - '₀' as u32)),
            '–' => o.push_str("--"),
            '—' => o.push_str("---"),
            '“' => o.push_str("``"),
            '”' => o.push_str("''"),
            '‘' => o.push('`'),
            '’' => o.push('\''),
            _ => o.push(ch),
        }
    }
    o
}

/// A cell's LaTeX: `$m \pm s$` (in percent, as in the other renderings) where the cell aggregates seeds, else
/// its text escaped (`--` for a missing value).
fn latex_cell(c: &Cell) -> (String, bool) {
    match (c.value, c.std) {
        (Some(m), Some(s)) if c.seeds.len() > 1 => {
            let d = c.digits as usize;
            (format!("${:.d$} \\pm {:.d$}$", m * c.scale, s * c.scale), true)
        }
        _ => (latex_escape(&c.text), false),
    }
}

/// A `\label` key from the title: `tab:` and its lowercase letters and digits, words joined by `-`.
fn latex_label(title: &str) -> String {
    let words: Vec<String> =
        title.split(|ch: char| !ch.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).take(6).map(|w| w.to_ascii_lowercase()).collect();
    format!("tab:{}", if words.is_empty() { "table".into() } else { words.join("-") })
}

/// LaTeX (booktabs): a `table` float with caption (title, then caption) and label, `\toprule` / `\midrule` /
/// `\bottomrule`, mean ± std as `$m \pm s$`, and per column the best in bold and the second underlined by the
/// same ranking as [`markdown`] ([`ranks`]: ties share a mark and say “(tie)”).
pub fn latex(t: &ResultTable) -> String {
    let r = ranks(t);
    let mut s = String::new();
    s.push_str(&format!("% {}\n", t.title.replace('\n', " ")));
    s.push_str("% Written by polyflow (a `table` node). Needs \\usepackage{booktabs} in the preamble.\n");
    s.push_str("\\begin{table}[t]\n\\centering\n");
    let title = latex_escape(t.title.trim());
    let sep = if title.ends_with(['.', '!', '?', ':']) { " " } else { ". " };
    s.push_str(&format!("\\caption{{{title}{sep}{}}}\n", latex_escape(t.caption.trim())));
    s.push_str(&format!("\\label{{{}}}\n", latex_label(&t.title)));
    let align: String = t.columns.iter().enumerate().map(|(i, _)| if i == 0 { 'l' } else { 'r' }).collect();
    s.push_str(&format!("\\begin{{tabular}}{{{align}}}\n\\toprule\n"));
    s.push_str(&format!("{} \\\\\n\\midrule\n", t.columns.iter().map(|c| latex_escape(c)).collect::<Vec<_>>().join(" & ")));
    for (i, row) in t.cells.iter().enumerate() {
        let mut cells = vec![latex_escape(&t.rows[i])];
        for (c, cell) in row.iter().enumerate() {
            let (txt, math) = latex_cell(cell);
            let tie = |g: &Vec<usize>| if g.len() > 1 { " (tie)" } else { "" };
            cells.push(if r[c].0.contains(&i) {
                // \boldmath makes the math of `$m \pm s$` bold too.
                format!("\\textbf{{{}{txt}}}{}", if math { "\\boldmath " } else { "" }, tie(&r[c].0))
            } else if r[c].1.contains(&i) {
                format!("\\underline{{{txt}}}{}", tie(&r[c].1))
            } else {
                txt
            });
        }
        s.push_str(&format!("{} \\\\\n", cells.join(" & ")));
    }
    s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
    s
}

/// CSV: each cell's value as computed (a metric as a fraction, not the percent the text shows; a count as
/// the number), empty where there is none; a column of cells over seeds gets `COLUMN:std` (the sample std,
/// empty for one run) and `COLUMN:n` (the runs averaged) beside it, as `compare --csv` writes them.
pub fn csv(t: &ResultTable) -> String {
    let mut w = csv::Writer::from_writer(vec![]);
    let seeded: Vec<bool> = (0..t.columns.len().saturating_sub(1)).map(|c| t.cells.iter().any(|r| r[c].seeds.len() > 1)).collect();
    let mut head = vec![t.columns.first().cloned().unwrap_or_default()];
    for (c, name) in t.columns.iter().skip(1).enumerate() {
        head.push(name.clone());
        if seeded[c] {
            head.push(format!("{name}:std"));
            head.push(format!("{name}:n"));
        }
    }
    let _ = w.write_record(&head);
    for (i, row) in t.cells.iter().enumerate() {
        let mut rec = vec![t.rows[i].clone()];
        for (c, cell) in row.iter().enumerate() {
            rec.push(cell.value.map(|v| format!("{v}")).unwrap_or_default());
            if seeded[c] {
                rec.push(cell.std.map(|v| format!("{v}")).unwrap_or_default());
                // A run's count; none for a number written into the pipeline (a published row).
                rec.push(if cell.value.is_some() && !cell.from.is_empty() { cell.n().to_string() } else { String::new() });
            }
        }
        let _ = w.write_record(&rec);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Terminal rendering.
pub fn terminal(t: &ResultTable) -> String {
    let r = ranks(t);
    let mut c = Comfy::new();
    c.load_preset(UTF8_FULL_CONDENSED);
    c.set_header(t.columns.clone());
    for (i, row) in t.cells.iter().enumerate() {
        let mut v = vec![t.rows[i].clone()];
        // Plain-text marks (the text is stored and mailed, so no terminal escapes): **best**, _second_.
        v.extend(row.iter().enumerate().map(|(c, x)| {
            let tie = |g: &Vec<usize>| if g.len() > 1 { " (tie)" } else { "" };
            if r[c].0.contains(&i) {
                format!("**{}**{}", x.text, tie(&r[c].0))
            } else if r[c].1.contains(&i) {
                format!("_{}_{}", x.text, tie(&r[c].1))
            } else {
                x.text.clone()
            }
        }));
        c.add_row(v);
    }
    let marks = if r.iter().any(|(b, s)| !b.is_empty() || !s.is_empty()) { "\nHere bold is **best**, underlined _second_." } else { "" };
    format!("{}\n{c}\n{}{marks}\n", t.title, t.caption)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_sample_std() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[0.5]), Some((0.5, None)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert!((m - 2.0).abs() < 1e-12 && (s.unwrap() - 1.0).abs() < 1e-12);
    }

    fn cell(v: f64) -> Cell {
        Cell::single(Some(v), format!("{:.1}", v * 100.0), vec![], true)
    }

    fn table() -> ResultTable {
        ResultTable {
            lower_is_better: vec![],
            title: "T".into(),
            caption: "small profile".into(),
            columns: vec!["Model".into(), "A".into(), "B".into()],
            rows: vec!["x".into(), "y".into(), "z".into()],
            cells: vec![
                vec![cell(0.5), cell(0.9)],
                vec![cell(0.7), cell(0.8)],
                vec![cell(0.6), Cell::single(None, "–".into(), vec![], true)],
            ],
        }
    }

    #[test]
    fn markdown_snapshot() {
        let want = "### T\n\n| Model | A | B |\n|---|---:|---:|\n| x | 50.0 | **90.0** |\n| y | **70.0** | <u>80.0</u> |\n| z | <u>60.0</u> | – |\n\nsmall profile\n";
        assert_eq!(markdown(&table()), want);
    }

    #[test]
    fn seeds_give_mean_std_and_ties_within_noise() {
        let a = Cell::over_seeds(vec![0.70, 0.72, 0.74], vec![]);
        assert_eq!(a.text, "72.0 ± 2.0");
        assert_eq!(a.seeds.len(), 3);
        // 1 point apart with std 2 over 3 seeds: 2·√(4/3 + 4/3)·0.01 ≈ 3.3 points of noise → tied.
        let b = Cell::over_seeds(vec![0.69, 0.71, 0.73], vec![]);
        assert!(tied(&a, &b));
        // 10 points apart: not tied.
        let c = Cell::over_seeds(vec![0.60, 0.62, 0.64], vec![]);
        assert!(!tied(&a, &c));
        let t = ResultTable {
            lower_is_better: vec![],
            title: "T".into(),
            caption: "c".into(),
            columns: vec!["Model".into(), "A".into()],
            rows: vec!["a".into(), "b".into(), "c".into()],
            cells: vec![vec![a], vec![b], vec![c]],
        };
        assert_eq!(ranks(&t), vec![(vec![0, 1], vec![2])]);
        let md = markdown(&t);
        assert!(md.contains("| a | **72.0 ± 2.0** (tie) |") && md.contains("| b | **71.0 ± 2.0** (tie) |"), "{md}");
        assert!(md.contains("| c | <u>62.0 ± 2.0</u> |"), "{md}");
        // A noisy lower row tied with the top is not marked over a tighter higher one that is not: the marks
        // follow the means (the committed Table 2's fashion-motion column before this rule).
        let col = |v: &[(f64, f64)]| ResultTable {
            lower_is_better: vec![],
            title: "T".into(),
            caption: "c".into(),
            columns: vec!["Model".into(), "A".into()],
            rows: v.iter().map(|_| "r".into()).collect(),
            cells: v.iter().map(|&(m, s)| vec![Cell::over_seeds(vec![m - s, m, m + s], vec![])]).collect(),
        };
        let fm = col(&[(0.699, 0.015), (0.862, 0.059), (0.907, 0.017), (0.928, 0.007), (0.913, 0.010)]);
        assert!(tied(&fm.cells[3][0], &fm.cells[1][0]) && !tied(&fm.cells[3][0], &fm.cells[4][0]));
        assert_eq!(ranks(&fm), vec![(vec![3], vec![4, 2, 1])]);
        assert!(terminal(&fm).contains("**92.8 ± 0.7**") && terminal(&fm).contains("_91.3 ± 1.0_ (tie)"), "{}", terminal(&fm));
        // Single runs tie only when equal.
        let t1 = ResultTable { cells: vec![vec![cell(0.5)], vec![cell(0.5)], vec![cell(0.4)]], ..t };
        assert_eq!(ranks(&t1), vec![(vec![0, 1], vec![2])]);
    }

    #[test]
    fn csv_snapshot() {
        assert_eq!(csv(&table()), "Model,A,B\nx,0.5,0.9\ny,0.7,0.8\nz,0.6,\n");
        // A column over seeds carries its std and count; a missing value is an empty field, never 0.
        let mut t = table();
        t.cells[0][1] = Cell::over_seeds(vec![0.5, 0.7], vec![]);
        t.cells[2][1] = Cell::over_seeds(vec![], vec![]);
        let c = csv(&t);
        assert!(c.starts_with("Model,A,B,B:std,B:n\nx,0.5,0.6,0.1414213562373"), "{c}");
        assert!(c.ends_with("\nz,0.6,,,\n"), "{c}");
    }

    /// A `|` in a label would split its cell and shift the row's values into the wrong columns; HTML would render.
    #[test]
    fn markdown_escapes_what_would_split_or_render() {
        let mut t = table();
        t.rows[0] = "r2 | a&b <script>x_y*".into();
        let md = markdown(&t);
        let row = md.lines().find(|l| l.starts_with("| r2")).unwrap();
        assert_eq!(row, "| r2 \\| a&amp;b &lt;script&gt;x\\_y\\* | 50.0 | **90.0** |", "{md}");
        // Every row has as many unescaped separators as the header.
        let seps = |l: &str| l.replace("\\|", "").matches('|').count();
        let head = md.lines().find(|l| l.starts_with("| Model")).unwrap();
        assert!(md.lines().filter(|l| l.starts_with('|')).all(|l| seps(l) == seps(head)), "{md}");
    }

    #[test]
    fn latex_escapes_specials_and_symbols() {
        assert_eq!(latex_escape("a & b % c $ d # e _ f { g } h"), "a \\& b \\% c \\$ d \\# e \\_ f \\{ g \\} h");
        assert_eq!(latex_escape("~^\\"), "\\textasciitilde{}\\textasciicircum{}\\textbackslash{}");
        assert_eq!(
            latex_escape("L_adapt = L/2, 8×8 → 32², s₁ ± 1 – “tie”"),
            "L\\_adapt = L/2, 8$\\times$8 $\\to$ 32\\textsuperscript{2}, s\\textsubscript{1} $\\pm$ 1 -- ``tie''"
        );
        let t = ResultTable {
            lower_is_better: vec![],
            title: "T_1 & co".into(),
            caption: "100% #small".into(),
            columns: vec!["Model".into(), "#Params".into()],
            rows: vec!["a_b".into()],
            cells: vec![vec![Cell::single(Some(1.0), "1.0K".into(), vec![], false)]],
        };
        let tex = latex(&t);
        assert!(tex.contains("\\caption{T\\_1 \\& co. 100\\% \\#small}"), "{tex}");
        assert!(tex.contains("\\label{tab:t-1-co}"), "{tex}");
        assert!(tex.contains("Model & \\#Params \\\\\n"), "{tex}");
        assert!(tex.contains("a\\_b & 1.0K \\\\\n"), "{tex}");
    }

    #[test]
    fn latex_snapshot_bold_best_underlined_second() {
        let want = "% T\n% Written by polyflow (a `table` node). Needs \\usepackage{booktabs} in the preamble.\n\
\\begin{table}[t]\n\\centering\n\\caption{T. small profile}\n\\label{tab:t}\n\\begin{tabular}{lrr}\n\\toprule\n\
Model & A & B \\\\\n\\midrule\n\
x & 50.0 & \\textbf{90.0} \\\\\n\
y & \\textbf{70.0} & \\underline{80.0} \\\\\n\
z & \\underline{60.0} & -- \\\\\n\
\\bottomrule\n\\end{tabular}\n\\end{table}\n";
        assert_eq!(latex(&table()), want);
        assert_eq!(latex(&table()).matches("\\toprule").count(), 1);
    }

    #[test]
    fn latex_mean_std_and_ties_as_in_markdown() {
        let t = ResultTable {
            lower_is_better: vec![],
            title: "T".into(),
            caption: "c".into(),
            columns: vec!["Model".into(), "A".into()],
            rows: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            cells: vec![
                vec![Cell::over_seeds(vec![0.70, 0.72, 0.74], vec![])],
                vec![Cell::over_seeds(vec![0.69, 0.71, 0.73], vec![])],
                vec![Cell::over_seeds(vec![0.60, 0.62, 0.64], vec![])],
                vec![Cell::over_seeds(vec![0.40, 0.42, 0.44], vec![])],
            ],
        };
        let tex = latex(&t);
        assert!(tex.contains("a & \\textbf{\\boldmath $72.0 \\pm 2.0$} (tie) \\\\\n"), "{tex}");
        assert!(tex.contains("b & \\textbf{\\boldmath $71.0 \\pm 2.0$} (tie) \\\\\n"), "{tex}");
        assert!(tex.contains("c & \\underline{$62.0 \\pm 2.0$} \\\\\n"), "{tex}");
        assert!(tex.contains("d & $42.0 \\pm 2.0$ \\\\\n"), "{tex}");
        // The same marks as the Markdown.
        let md = markdown(&t);
        assert!(md.contains("| a | **72.0 ± 2.0** (tie) |") && md.contains("| c | <u>62.0 ± 2.0</u> |"), "{md}");
    }

    /// Every committed `results/**/tableN.tex` is `latex()` of the `tableN.json` beside it (the JSON holds the
    /// whole table). `POLYFLOW_BLESS=1` writes them.
    #[test]
    fn committed_tex_is_latex_of_committed_json() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let bless = std::env::var("POLYFLOW_BLESS").is_ok_and(|v| v == "1");
        for dir in ["results", "results/smoke"] {
            for i in 1..=5 {
                let Ok(json) = std::fs::read_to_string(root.join(format!("{dir}/table{i}.json"))) else { continue };
                let t: ResultTable = serde_json::from_str(&json).unwrap();
                assert_eq!(serde_json::to_string_pretty(&t).unwrap(), json, "{dir}/table{i}.json round-trips");
                let tex = root.join(format!("{dir}/table{i}.tex"));
                if bless {
                    std::fs::write(&tex, latex(&t)).unwrap();
                } else if let Ok(old) = std::fs::read_to_string(&tex) {
                    assert!(old == latex(&t), "{dir}/table{i}.tex is not latex() of table{i}.json (POLYFLOW_BLESS=1 rewrites it)");
                }
            }
        }
    }
}
