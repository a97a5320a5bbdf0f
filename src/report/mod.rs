//! `polyflow report`: one self-contained HTML page (inline CSS, SVG and a few lines of script; nothing loaded
//! from the network) with every result table of the pipeline (best bold, second underlined, mean ± std, each
//! cell's provenance on click), the training curves of every training node, the DAG coloured by state, and run
//! times. Built from the store as `status` sees it: what is not fresh is listed as such, never drawn from an
//! artifact of other parameters.
//!
//! - [`html`]: escaping, anchors, durations and dates.
//! - [`table`]: a result table section.
//! - [`curves`]: training curves from `steps.jsonl` / `evals.jsonl`.
//! - [`dag`]: the DAG as SVG.

pub mod curves;
pub mod dag;
pub mod html;
pub mod table;

use crate::exec::assess::Assessment;
use crate::exec::State;
use crate::graph::Graph;
use crate::stage::InputArtifact;
use crate::store::Store;
use crate::tables::ResultTable;
use html::{bytes, duration, esc, node_anchor, utc};
use std::collections::BTreeMap;

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 1.5em 3em;color:#222}
h1{font-size:1.5em;margin-top:1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-bottom:.3em}
nav a{margin-right:1em} code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.meta,.caption{color:#555;font-size:.9em} .summary span{margin-right:1.2em}
table{border-collapse:collapse;margin:.5em 0} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3} .num{text-align:right} td.cell{position:relative;white-space:nowrap}
.tie{color:#777;font-size:.85em}
details.prov>summary{cursor:pointer;list-style:none} details.prov>summary::-webkit-details-marker{display:none}
details.prov>summary:hover{background:#eef4ff}
.prov-body{position:absolute;z-index:10;left:0;top:100%;min-width:28em;max-width:48em;max-height:30em;overflow:auto;background:#fff;border:1px solid #888;box-shadow:0 4px 12px rgba(0,0,0,.2);padding:.5em .8em;text-align:left;white-space:normal;font-size:.85em}
.prov-item{display:grid;grid-template-columns:max-content 1fr;gap:.1em .8em;margin:.3em 0 .6em;border-bottom:1px dashed #ddd;padding-bottom:.4em}
.prov-item dt{font-weight:600} .prov-item dd{margin:0;word-break:break-all} .prov-params{margin:0;max-height:12em;overflow:auto;background:#f8f8f8;padding:.3em}
.stale,.state-stale{background:#ffe08a} .state-fresh{background:#b7e4c7} .state-failed{background:#f4a6a6}
.curves{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em} .curves svg{border:1px solid #eee}
svg text{font-size:11px;font-family:sans-serif} .ctitle{font-weight:600;font-size:12px} .tick{fill:#555}
.legend{list-style:none;padding:0;margin:0;font-size:.9em} .swatch{display:inline-block;width:1em;height:.6em;margin-right:.4em}
.dag-wrap{overflow:auto;border:1px solid #eee;max-height:80vh} .dag .nid{font-family:ui-monospace,monospace;font-size:11px} .dag .nkind{fill:#555;font-size:10px}
.dag a:hover rect{stroke:#000;stroke-width:2} .key{font-size:.8em;word-break:break-all}
tr:target{outline:2px solid #1f77b4}
"#;

const SCRIPT: &str = r#"
(function(){
  // One provenance popup open at a time; Escape closes it.
  var all = document.querySelectorAll('details.prov');
  all.forEach(function(d){
    d.addEventListener('toggle', function(){
      if (d.open) all.forEach(function(o){ if (o !== d) o.open = false; });
    });
  });
  document.addEventListener('keydown', function(e){
    if (e.key === 'Escape') all.forEach(function(o){ o.open = false; });
  });
  // `#prov` in the address opens the first cell's provenance (a link to show it; the browser test uses it).
  if (location.hash === '#prov' && all.length) all[0].open = true;
  var shown = document.querySelector('details.prov[open] .prov-body');
  document.body.dataset.provShown = shown && shown.getBoundingClientRect().height > 0 ? '1' : '0';
  document.body.dataset.provCells = String(all.length);
  document.body.dataset.ok = '1';
})();
"#;

/// Everything the page shows about one node.
struct NodeRow<'a> {
    i: usize,
    a: &'a Assessment,
}

/// The report page for the selected nodes: `a` is their assessment (as `status` computes it), `title` names
/// the pipeline (its file), and `overrides` the `--config`/`--set` options the page was made with (said at its
/// top: its tables are then not the pipeline file's).
pub fn render(
    g: &Graph,
    sel: &[usize],
    a: &BTreeMap<usize, Assessment>,
    store: &Store,
    title: &str,
    overrides: &[String],
    run: &str,
) -> String {
    let rows: Vec<NodeRow> = sel.iter().filter_map(|&i| a.get(&i).map(|a| NodeRow { i, a })).collect();
    let keys: BTreeMap<String, String> =
        rows.iter().filter_map(|r| r.a.key.as_ref().map(|k| (g.nodes[r.i].id.clone(), k.clone()))).collect();
    let artifact = |r: &NodeRow| r.a.manifest.clone().map(|m| InputArtifact::new(g.nodes[r.i].id.clone(), m, store.clone()));
    let count = |s: State| rows.iter().filter(|r| r.a.state == s).count();
    let now = crate::text::now_secs();
    let profile = g.pipeline.profile.as_deref().map(|p| format!(", profile <code>{}</code>", esc(p))).unwrap_or_default();

    let mut body = format!(
        "<h1>polyflow report: <code>{}</code></h1>\n<p class=\"meta\">Generated {}{profile}, pipeline seed {}.</p>\n<p class=\"summary\"><span class=\"state-fresh\">{} fresh</span> <span class=\"state-stale\">{} stale</span> <span class=\"state-failed\">{} failed</span> of {} nodes</p>\n<nav><a href=\"#tables\">Tables</a><a href=\"#curves\">Training curves</a><a href=\"#dag\">DAG</a><a href=\"#times\">Run times</a></nav>\n",
        esc(title),
        utc(now),
        g.pipeline.seed,
        count(State::Fresh),
        count(State::Stale),
        count(State::Failed),
        rows.len()
    );
    if !overrides.is_empty() {
        let shown: Vec<String> = overrides.iter().map(|o| format!("<code>{}</code>", esc(o))).collect();
        body.push_str(&format!(
            "<p class=\"meta\">With {}: its nodes and tables are those of the pipeline file with these changes.</p>\n",
            shown.join(" ")
        ));
    }

    // Tables.
    body.push_str("<h2 id=\"tables\">Tables</h2>\n<p class=\"meta\">Best per column in <b>bold</b>, second <u>underlined</u> (ties within noise marked); click a cell for its provenance.</p>\n");
    let mut n_tables = 0;
    for r in rows
        .iter()
        .filter(|r| r.a.manifest.as_ref().is_some_and(|m| m.files.contains_key("table.json")) || g.nodes[r.i].stage.kind() == "table")
    {
        let id = &g.nodes[r.i].id;
        n_tables += 1;
        match artifact(r) {
            Some(art) => match art.json::<ResultTable>("table.json") {
                Ok(t) => body.push_str(&table::section(id, &t, g, &keys)),
                Err(e) => body.push_str(&format!("<section class=\"result-table missing\"><h3><code>{}</code></h3><p class=\"stale\">cannot read its table: {}</p></section>\n", esc(id), esc(&e.to_string()))),
            },
            None => body.push_str(&not_built(id, r.a, run)),
        }
    }
    if n_tables == 0 {
        body.push_str("<p>This pipeline has no table nodes.</p>\n");
    }

    // Training curves: every node whose artifact logs updates, and the training kinds not built yet.
    body.push_str("<h2 id=\"curves\">Training curves</h2>\n");
    let mut n_curves = 0;
    for r in &rows {
        let id = &g.nodes[r.i].id;
        let kind = g.nodes[r.i].stage.kind();
        match artifact(r) {
            Some(art) if art.manifest.files.contains_key("steps.jsonl") => {
                n_curves += 1;
                let text = |f: &str| art.read(f).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                body.push_str(&format!(
                    "<section class=\"training\" data-node=\"{}\"><h3><a href=\"#{}\"><code>{}</code></a> ({})</h3>{}</section>\n",
                    esc(id),
                    node_anchor(id),
                    esc(id),
                    esc(kind),
                    curves::figure(&text("steps.jsonl"), &text("evals.jsonl"))
                ));
            }
            None if matches!(kind, "train" | "cotrain") => {
                n_curves += 1;
                body.push_str(&not_built(id, r.a, run).replace("result-table missing", "training missing"));
            }
            _ => {}
        }
    }
    if n_curves == 0 {
        body.push_str("<p>No training nodes.</p>\n");
    }

    // DAG.
    body.push_str(&format!(
        "<h2 id=\"dag\">DAG</h2>\n<p class=\"meta\"><span class=\"state-fresh\">fresh</span> <span class=\"state-stale\">stale</span> <span class=\"state-failed\">failed</span>; hover a node for its state, reasons and key, click it for its run times.{}</p>\n<div class=\"dag-wrap\">{}</div>\n",
        if dag::by_declaration(sel) {
            format!(
                " {} nodes, drawn by declaration (a box per matrix or seed declaration, coloured by its worst state; `polyflow dag` gives every node).",
                sel.len()
            )
        } else {
            String::new()
        },
        dag::svg(g, sel, a)
    ));

    // Run times.
    let total: u64 = rows.iter().filter_map(|r| r.a.record.as_ref().map(|x| x.duration_ms)).sum();
    body.push_str(&format!(
        "<h2 id=\"times\">Run times</h2>\n<p class=\"meta\">Last successful run of each node; {} in all.</p>\n<table class=\"times\"><thead><tr><th>node</th><th>kind</th><th>state</th><th>why</th><th class=\"num\">last run</th><th>finished</th><th class=\"num\">size</th><th>key</th></tr></thead><tbody>\n",
        duration(total)
    ));
    for r in &rows {
        let n = &g.nodes[r.i];
        let why: Vec<String> = r.a.reasons.iter().map(|x| esc(&x.to_string())).collect();
        let failure =
            r.a.failure
                .as_ref()
                .filter(|_| r.a.state == State::Failed)
                .map(|f| format!("<br>last failure: {}", esc(&f.error)))
                .unwrap_or_default();
        body.push_str(&format!(
            "<tr id=\"{}\"><td><code>{}</code></td><td>{}</td><td class=\"state-{}\">{}</td><td>{}{failure}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"key\"><code>{}</code></td></tr>\n",
            node_anchor(&n.id),
            esc(&n.id),
            esc(n.stage.kind()),
            r.a.state,
            r.a.state,
            why.join("<br>"),
            r.a.record.as_ref().map(|x| duration(x.duration_ms)).unwrap_or_default(),
            r.a.record.as_ref().map(|x| utc(x.finished_at)).unwrap_or_default(),
            r.a.manifest.as_ref().map(|m| bytes(m.size())).unwrap_or_default(),
            esc(r.a.key.as_deref().unwrap_or(""))
        ));
    }
    body.push_str("</tbody></table>\n");

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>polyflow report: {}</title><style>{CSS}</style></head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body></html>\n",
        esc(title)
    )
}

/// A table or training node that has no fresh artifact: its state, why, and the command that builds it (`run`:
/// the report's own options, without nodes).
fn not_built(id: &str, a: &Assessment, run: &str) -> String {
    let why: Vec<String> = a.reasons.iter().map(|r| esc(&r.to_string())).collect();
    format!(
        "<section class=\"result-table missing\" data-node=\"{}\"><h3><a href=\"#{}\"><code>{}</code></a></h3><p class=\"state-{}\">{}: {} (<code>{} {}</code> builds it)</p></section>\n",
        esc(id),
        node_anchor(id),
        esc(id),
        a.state,
        a.state,
        why.join("; "),
        esc(run),
        esc(&crate::text::shell_word(id))
    )
}
