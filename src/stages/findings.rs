//! `findings`: checks qualitative claims against result tables and writes `FINDINGS.md` / `findings.json`.
//!
//! Each claim compares one row of a table with other rows, on the mean over some of its metric columns (per
//! seed, then mean ± std over seeds). Two values differ only beyond the tables' noise rule
//! ([`crate::tables::TIE_RULE`]); otherwise the claim is "not shown (within noise)". Verdicts are computed from
//! the numbers, never written by hand.

use crate::stage::{parse, parse_checked, InputArtifact, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use crate::tables::{tied, Cell, ResultTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a claim expects of `row` against each row of `versus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Above every other row, beyond noise.
    Higher,
    /// Below every other row, beyond noise.
    Lower,
    /// Not below any other row beyond noise (best or tied with the best).
    NotLower,
    /// Tied with every other row (within noise).
    Similar,
}

/// One claim.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The claim, in the paper's words.
    pub claim: String,
    /// Node id of the table.
    pub table: String,
    /// Row label of the subject.
    pub row: String,
    /// Row labels it is compared with.
    pub versus: Vec<String>,
    /// Column labels averaged (default: every metric column).
    #[serde(default)]
    pub columns: Vec<String>,
    /// What the claim expects.
    pub expect: Expect,
    /// Compare per column instead of on the average: the claim holds when it holds on at least this many columns.
    #[serde(default)]
    pub per_column: Option<usize>,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The numbers show it beyond noise.
    Holds,
    /// The differences are within noise.
    NotShown,
    /// The numbers show the opposite beyond noise.
    DoesNotHold,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::NotShown => "not shown (within noise)",
            Verdict::DoesNotHold => "does not hold",
        }
    }
}

/// `findings`.
pub struct FindingsStage;

/// The parameters of a `findings` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsParams {
    title: String,
    caption: String,
    claims: Vec<Claim>,
    /// Path stem the findings are copied to after a run (empty = none).
    export: String,
}

fn row_cells<'a>(t: &'a ResultTable, label: &str, table: &str) -> Result<&'a Vec<Cell>, StageError> {
    t.rows
        .iter()
        .position(|r| r == label)
        .map(|i| &t.cells[i])
        .ok_or_else(|| StageError::input(format!("table `{table}` has no row `{label}` (rows: {})", t.rows.join("; "))))
}

/// The mean over `cols` of a row, per seed when every cell has the same seeds, as a cell (mean ± std).
fn average(cells: &[&Cell]) -> Cell {
    if cells.is_empty() || cells.iter().any(|c| c.value.is_none()) {
        return Cell::single(None, "–".into(), vec![], true);
    }
    let k = cells[0].seeds.len();
    if k > 1 && cells.iter().all(|c| c.seeds.len() == k) {
        return Cell::over_seeds((0..k).map(|s| cells.iter().map(|c| c.seeds[s]).sum::<f64>() / cells.len() as f64).collect(), vec![]);
    }
    Cell::over_seeds(vec![cells.iter().map(|c| c.value.unwrap()).sum::<f64>() / cells.len() as f64], vec![])
}

/// +1 when `a` is above `b` beyond noise, −1 below, 0 tied.
fn order(a: &Cell, b: &Cell) -> i32 {
    if tied(a, b) {
        0
    } else if a.value > b.value {
        1
    } else {
        -1
    }
}

fn judge(expect: Expect, orders: &[i32]) -> Verdict {
    let all = |f: &dyn Fn(i32) -> bool| orders.iter().all(|&o| f(o));
    let any = |f: &dyn Fn(i32) -> bool| orders.iter().any(|&o| f(o));
    match expect {
        Expect::Higher if all(&|o| o > 0) => Verdict::Holds,
        Expect::Higher if any(&|o| o < 0) => Verdict::DoesNotHold,
        Expect::Lower if all(&|o| o < 0) => Verdict::Holds,
        Expect::Lower if any(&|o| o > 0) => Verdict::DoesNotHold,
        Expect::NotLower if any(&|o| o < 0) => Verdict::DoesNotHold,
        Expect::NotLower if any(&|o| o > 0) => Verdict::Holds,
        Expect::Similar if all(&|o| o == 0) => Verdict::Holds,
        Expect::Similar => Verdict::DoesNotHold,
        _ => Verdict::NotShown,
    }
}

/// Evaluates one claim: (what the numbers show, verdict).
pub fn evaluate(c: &Claim, t: &ResultTable) -> Result<(String, Verdict), StageError> {
    let metric_cols: Vec<usize> = (1..t.columns.len()).filter(|&j| t.cells.iter().any(|r| r[j - 1].ranked)).collect();
    let cols: Vec<usize> = if c.columns.is_empty() {
        metric_cols
    } else {
        c.columns
            .iter()
            .map(|l| {
                t.columns.iter().position(|x| x == l).ok_or_else(|| {
                    StageError::input(format!("table `{}` has no column `{l}` (columns: {})", c.table, t.columns.join(", ")))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let subject = row_cells(t, &c.row, &c.table)?;
    let others: Vec<(&String, &Vec<Cell>)> =
        c.versus.iter().map(|l| row_cells(t, l, &c.table).map(|r| (l, r))).collect::<Result<_, _>>()?;
    if let Some(at_least) = c.per_column {
        let mut wins = 0;
        let mut shown = vec![];
        for &j in &cols {
            let orders: Vec<i32> = others.iter().map(|(_, r)| order(&subject[j - 1], &r[j - 1])).collect();
            let v = judge(c.expect, &orders);
            if v == Verdict::Holds {
                wins += 1;
            }
            let vs: Vec<String> = others.iter().map(|(_, r)| r[j - 1].text.clone()).collect();
            shown.push(format!("{}: {} vs {}", t.columns[j], subject[j - 1].text, vs.join(", ")));
        }
        let verdict = if wins >= at_least { Verdict::Holds } else { Verdict::DoesNotHold };
        return Ok((format!("{} on {wins} of {} columns ({})", expect_word(c.expect), cols.len(), shown.join("; ")), verdict));
    }
    let avg = |r: &Vec<Cell>| average(&cols.iter().map(|&j| &r[j - 1]).collect::<Vec<_>>());
    let a = avg(subject);
    let bs: Vec<(&String, Cell)> = others.iter().map(|(l, r)| (*l, avg(r))).collect();
    let orders: Vec<i32> = bs.iter().map(|(_, b)| order(&a, b)).collect();
    let over = if cols.len() > 1 { format!(" (mean over {} columns)", cols.len()) } else { format!(" ({})", t.columns[cols[0]]) };
    let vs: Vec<String> = bs.iter().map(|(l, b)| format!("{l} {}", b.text)).collect();
    Ok((format!("{} {}{over} vs {}", c.row, a.text, vs.join("; ")), judge(c.expect, &orders)))
}

fn expect_word(e: Expect) -> &'static str {
    match e {
        Expect::Higher => "higher",
        Expect::Lower => "lower",
        Expect::NotLower => "not lower",
        Expect::Similar => "similar",
    }
}

impl Stage for FindingsStage {
    fn kind(&self) -> &'static str {
        "findings"
    }
    fn version(&self) -> u32 {
        // 2: findings.json carries the title and caption (the profile and scale), as a table's JSON does.
        2
    }
    fn doc(&self) -> &'static str {
        "checks qualitative claims against tables (mean ± std over seeds, the tables' noise rule) → FINDINGS.md"
    }
    fn output(&self) -> &'static str {
        "findings"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("tables", &["table"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("title", T::Str, "heading of FINDINGS.md"),
            ParamSpec::req("caption", T::Str, "profile and scale (small-scale findings are not the paper's)"),
            ParamSpec::req(
                "claims",
                T::Any,
                "list of { claim, table, row, versus = [rows], columns = [labels], expect = higher|lower|not_lower|similar, per_column = N }",
            ),
            ParamSpec::opt("export", T::Str, json!(""), "copy findings.{md,json} to this path stem after a run (not in the key: where a copy goes changes nothing computed)")
                .unkeyed(),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, p: &Value) -> Result<(), (String, String)> {
        parse_checked::<FindingsParams>(p, &self.params()).map(|_| ())
    }
    fn exports(&self, p: &Value) -> Vec<(String, String)> {
        // Parameters that do not parse export nothing (validation reports them).
        match parse::<FindingsParams>(p).map(|p| p.export) {
            Ok(stem) if !stem.is_empty() => ["md", "json"].iter().map(|e| (format!("findings.{e}"), format!("{stem}.{e}"))).collect(),
            _ => vec![],
        }
    }
    fn summary_file(&self) -> Option<&'static str> {
        Some("findings.md")
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let FindingsParams { title, caption, claims, export: _ } = parse(ctx.params)?;
        let tables: Vec<InputArtifact> = ctx.inputs.get("tables").cloned().unwrap_or_default();
        let mut md = format!("# {title}\n\n{caption}\n\n");
        md.push_str("| # | Claim (paper) | Table | What this profile shows | Verdict |\n|---:|---|---|---|---|\n");
        let mut out = vec![];
        for (i, c) in claims.iter().enumerate() {
            let a = tables.iter().find(|a| a.id == c.table).ok_or_else(|| {
                StageError::input(format!("claim {} names table `{}`, which is not among this node's `tables` inputs", i + 1, c.table))
            })?;
            let t: ResultTable = a.json("table.json")?;
            let (shows, verdict) = evaluate(c, &t)?;
            md.push_str(&format!("| {} | {} | {} | {} | **{}** |\n", i + 1, c.claim, t.title, shows, verdict.text()));
            out.push(json!({"claim": c.claim, "table": c.table, "shows": shows, "verdict": verdict, "table_artifact": a.manifest.digest}));
        }
        md.push_str(&format!(
            "\nVerdicts come from the numbers: {}; a claim whose differences are all within that noise is \"not shown\".\n",
            crate::tables::TIE_RULE
        ));
        ctx.out.put("findings.md", md.as_bytes())?;
        // The title and caption say the profile and scale, so the JSON alone is not taken for the paper's.
        ctx.out.put_json("findings.json", &json!({"title": title, "caption": caption, "claims": out}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ResultTable {
        let c = |v: [f64; 3]| Cell::over_seeds(v.to_vec(), vec![]);
        ResultTable {
            title: "T".into(),
            caption: "c".into(),
            columns: vec!["Model".into(), "A".into(), "B".into()],
            rows: vec!["good".into(), "same".into(), "bad".into()],
            cells: vec![
                vec![c([0.80, 0.82, 0.84]), c([0.70, 0.71, 0.72])],
                vec![c([0.79, 0.82, 0.85]), c([0.69, 0.71, 0.73])],
                vec![c([0.40, 0.42, 0.44]), c([0.70, 0.71, 0.72])],
            ],
            lower_is_better: vec![],
        }
    }

    fn claim(row: &str, versus: &[&str], expect: Expect, per_column: Option<usize>) -> Claim {
        Claim {
            claim: "x".into(),
            table: "t".into(),
            row: row.into(),
            versus: versus.iter().map(|s| s.to_string()).collect(),
            columns: vec![],
            expect,
            per_column,
        }
    }

    #[test]
    fn verdicts_follow_the_noise_rule() {
        let t = table();
        assert_eq!(evaluate(&claim("good", &["bad"], Expect::Higher, None), &t).unwrap().1, Verdict::Holds);
        assert_eq!(evaluate(&claim("good", &["same"], Expect::Higher, None), &t).unwrap().1, Verdict::NotShown);
        assert_eq!(evaluate(&claim("good", &["same"], Expect::Similar, None), &t).unwrap().1, Verdict::Holds);
        assert_eq!(evaluate(&claim("bad", &["good"], Expect::NotLower, None), &t).unwrap().1, Verdict::DoesNotHold);
        assert_eq!(evaluate(&claim("good", &["same", "bad"], Expect::NotLower, None), &t).unwrap().1, Verdict::Holds);
        // Per column: `bad` is lower than `good` on A only.
        let (shows, v) = evaluate(&claim("bad", &["good"], Expect::Lower, Some(2)), &t).unwrap();
        assert_eq!(v, Verdict::DoesNotHold, "{shows}");
        assert!(shows.starts_with("lower on 1 of 2 columns"), "{shows}");
        assert!(evaluate(&claim("nope", &["good"], Expect::Lower, None), &t).is_err());
    }
}
