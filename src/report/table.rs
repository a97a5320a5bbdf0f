//! A result table as HTML: best per column bold, second underlined (ties marked), mean ± std as the table
//! computed it, and every cell's provenance (node, key, artifact, value path, the node's parameters and inputs)
//! in a `<details>` that opens on click.

use super::html::{esc, node_anchor};
use crate::graph::Graph;
use crate::tables::{ranks, Cell, Provenance, ResultTable};
use std::collections::BTreeMap;

/// The table of node `node` as a `<section>`; `keys` holds each node's current key (to flag cells computed
/// from an artifact the pipeline no longer produces).
pub fn section(node: &str, t: &ResultTable, g: &Graph, keys: &BTreeMap<String, String>) -> String {
    let r = ranks(t);
    let mut s = format!(
        "<section class=\"result-table\" data-node=\"{}\"><h3>{}</h3><p class=\"meta\">node <a href=\"#{}\"><code>{}</code></a></p>\n<table class=\"results\">\n<thead><tr>",
        esc(node),
        esc(&t.title),
        node_anchor(node),
        esc(node)
    );
    for (c, h) in t.columns.iter().enumerate() {
        s.push_str(&format!("<th{}>{}</th>", if c == 0 { "" } else { " class=\"num\"" }, esc(h)));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in t.cells.iter().enumerate() {
        s.push_str(&format!("<tr><th scope=\"row\">{}</th>", esc(t.rows.get(i).map(|x| x.as_str()).unwrap_or(""))));
        for (c, cell) in row.iter().enumerate() {
            let (best, second) = r.get(c).map(|(b, s)| (b.as_slice(), s.as_slice())).unwrap_or((&[], &[]));
            let (mark, class) = if best.contains(&i) {
                (if best.len() > 1 { "best tie" } else { "best" }, "best")
            } else if second.contains(&i) {
                (if second.len() > 1 { "second tie" } else { "second" }, "second")
            } else {
                ("", "")
            };
            s.push_str(&cell_html(cell, mark, class, g, keys));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s.push_str(&format!("<p class=\"caption\">{}</p></section>\n", esc(&t.caption)));
    s
}

fn cell_html(cell: &Cell, mark: &str, class: &str, g: &Graph, keys: &BTreeMap<String, String>) -> String {
    let shown = match class {
        "best" => format!("<b>{}</b>", esc(&cell.text)),
        "second" => format!("<u>{}</u>", esc(&cell.text)),
        _ => esc(&cell.text),
    };
    let tie = if mark.ends_with("tie") { " <span class=\"tie\">(tie)</span>" } else { "" };
    let cls = format!("cell num {mark}");
    if cell.from.is_empty() {
        return format!("<td class=\"{}\">{shown}{tie}</td>", cls.trim());
    }
    let mut body = String::new();
    if let Some(std) = cell.std {
        body.push_str(&format!("<p>mean {} ± sample std {} over {} seeds</p>", fmt(cell.value.unwrap_or(f64::NAN)), fmt(std), cell.n()));
    }
    for (k, p) in cell.from.iter().enumerate() {
        // Per-seed value when the cell aggregates seeds one provenance each.
        let seed_value = (cell.seeds.len() == cell.from.len()).then(|| cell.seeds[k]);
        body.push_str(&prov_html(p, seed_value, g, keys));
    }
    format!(
        "<td class=\"{}\" data-node=\"{}\"><details class=\"prov\"><summary>{shown}{tie}</summary><div class=\"prov-body\">{body}</div></details></td>",
        cls.trim(),
        esc(&cell.from[0].node)
    )
}

fn fmt(v: f64) -> String {
    format!("{v:.4}")
}

fn prov_html(p: &Provenance, seed_value: Option<f64>, g: &Graph, keys: &BTreeMap<String, String>) -> String {
    let mut s = String::from("<dl class=\"prov-item\">");
    let kind = g.by_id.get(&p.node).map(|&i| g.nodes[i].stage.kind()).unwrap_or("not in this pipeline");
    s.push_str(&format!(
        "<dt>node</dt><dd><a class=\"prov-node\" href=\"#{}\"><code>{}</code></a> ({})</dd>",
        node_anchor(&p.node),
        esc(&p.node),
        esc(kind)
    ));
    let key = p.key.as_deref().unwrap_or("(unknown)");
    let current = match (p.key.as_deref(), keys.get(&p.node)) {
        (Some(k), Some(now)) if k != now => format!(" <span class=\"stale\">(the node's current key is <code>{}</code>)</span>", esc(now)),
        _ => String::new(),
    };
    s.push_str(&format!("<dt>key</dt><dd><code class=\"prov-key\">{}</code>{current}</dd>", esc(key)));
    s.push_str(&format!("<dt>artifact</dt><dd><code>{}</code></dd>", esc(&p.artifact)));
    s.push_str(&format!(
        "<dt>value</dt><dd><code>{}</code>{}</dd>",
        esc(&p.path),
        seed_value.map(|v| format!(" = {}", fmt(v))).unwrap_or_default()
    ));
    if let Some(&i) = g.by_id.get(&p.node) {
        let n = &g.nodes[i];
        // As the node uses them (a preset's size in place of `0`, only the chosen optimizer's settings), as `show`
        // says under `uses:`.
        let params = serde_json::to_string_pretty(&g.used_params(i)).unwrap_or_default();
        s.push_str(&format!("<dt>parameters</dt><dd><pre class=\"prov-params\">{}</pre></dd>", esc(&params)));
        let inputs: Vec<String> = n
            .inputs
            .iter()
            .map(|(slot, ups)| {
                let ids: Vec<String> = ups
                    .iter()
                    .map(|&u| format!("<a href=\"#{}\"><code>{}</code></a>", node_anchor(&g.nodes[u].id), esc(&g.nodes[u].id)))
                    .collect();
                format!("{}: {}", esc(slot), ids.join(", "))
            })
            .collect();
        s.push_str(&format!(
            "<dt>inputs</dt><dd class=\"prov-inputs\">{}</dd>",
            if inputs.is_empty() { "none".to_string() } else { inputs.join("<br>") }
        ));
    }
    s.push_str("</dl>");
    s
}
