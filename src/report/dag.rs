//! The DAG as inline SVG: a layered layout by depth (longest path from a source), left to right; within a
//! layer, nodes ordered by the mean position of their inputs. Nodes are coloured by state (fresh / stale /
//! failed), carry a tooltip (kind, state, reasons, key) and link to their run-time row.

use super::html::{esc, node_anchor};
use crate::exec::assess::Assessment;
use crate::exec::State;
use crate::graph::Graph;
use std::collections::BTreeMap;

const COL: f64 = 220.0;
const ROW: f64 = 46.0;
const NW: f64 = 180.0;
const NH: f64 = 34.0;
const PAD: f64 = 16.0;

/// The fill colour of a state.
pub fn color(s: State) -> &'static str {
    match s {
        State::Fresh => "#b7e4c7",
        State::Stale => "#ffe08a",
        State::Failed => "#f4a6a6",
    }
}

fn short(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        // Cut in the middle: the end tells replicates and matrix entries apart (`….s0`, `….s1`).
        let tail = (n / 3).max(1);
        let head = n - 1 - tail;
        format!("{}…{}", c[..head].iter().collect::<String>(), c[c.len() - tail..].iter().collect::<String>())
    }
}

/// `(depth, row)` of every selected node.
fn layout(g: &Graph, sel: &[usize]) -> BTreeMap<usize, (usize, usize)> {
    let in_sel: std::collections::HashSet<usize> = sel.iter().copied().collect();
    let order: Vec<usize> = g.topo_order().into_iter().filter(|i| in_sel.contains(i)).collect();
    let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in &order {
        let d = g.nodes[i].inputs.values().flatten().filter_map(|u| depth.get(u)).map(|d| d + 1).max().unwrap_or(0);
        depth.insert(i, d);
    }
    let layers = depth.values().max().map(|m| m + 1).unwrap_or(0);
    let mut pos: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for l in 0..layers {
        let mut nodes: Vec<(f64, usize)> = order
            .iter()
            .filter(|i| depth[i] == l)
            .map(|&i| {
                let ups: Vec<f64> = g.nodes[i].inputs.values().flatten().filter_map(|u| pos.get(u)).map(|p| p.1 as f64).collect();
                let bary = if ups.is_empty() { f64::MAX } else { ups.iter().sum::<f64>() / ups.len() as f64 };
                (bary, i)
            })
            .collect();
        // Stable: nodes without placed inputs keep the topological (declaration) order at the end.
        nodes.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        for (row, (_, i)) in nodes.into_iter().enumerate() {
            pos.insert(i, (l, row));
        }
    }
    pos
}

/// The DAG of the selected nodes as an `<svg class="dag">`.
pub fn svg(g: &Graph, sel: &[usize], a: &BTreeMap<usize, Assessment>) -> String {
    let pos = layout(g, sel);
    let cols = pos.values().map(|p| p.0 + 1).max().unwrap_or(1);
    let rows = pos.values().map(|p| p.1 + 1).max().unwrap_or(1);
    let w = PAD * 2.0 + (cols - 1) as f64 * COL + NW;
    let h = PAD * 2.0 + (rows - 1) as f64 * ROW + NH;
    let xy = |i: usize| {
        let (c, r) = pos[&i];
        (PAD + c as f64 * COL, PAD + r as f64 * ROW)
    };
    let mut s = format!(
        "<svg class=\"dag\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\"><title>pipeline DAG</title><g class=\"edges\">"
    );
    for &i in sel {
        for (slot, ups) in &g.nodes[i].inputs {
            for &u in ups {
                if !pos.contains_key(&u) || !pos.contains_key(&i) {
                    continue;
                }
                let ((x0, y0), (x1, y1)) = (xy(u), xy(i));
                let (sx, sy, ex, ey) = (x0 + NW, y0 + NH / 2.0, x1, y1 + NH / 2.0);
                let mx = (sx + ex) / 2.0;
                s.push_str(&format!(
                    "<path d=\"M{sx:.1},{sy:.1} C{mx:.1},{sy:.1} {mx:.1},{ey:.1} {ex:.1},{ey:.1}\" fill=\"none\" stroke=\"#999\" marker-end=\"url(#arrow)\"><title>{} → {} ({})</title></path>",
                    esc(&g.nodes[u].id),
                    esc(&g.nodes[i].id),
                    esc(slot)
                ));
            }
        }
    }
    s.push_str("</g><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#999\"/></marker></defs><g class=\"nodes\">");
    for &i in sel {
        let Some(st) = a.get(&i) else { continue };
        let n = &g.nodes[i];
        let (x, y) = xy(i);
        let state = st.state.to_string();
        let mut tip = format!("{} ({})\nstate: {state}", n.id, n.stage.kind());
        for r in &st.reasons {
            tip.push_str(&format!("\n- {r}"));
        }
        if let Some(k) = &st.key {
            tip.push_str(&format!("\nkey: {k}"));
        }
        if let Some(r) = &st.record {
            tip.push_str(&format!("\nlast run: {}", super::html::duration(r.duration_ms)));
        }
        s.push_str(&format!(
            "<a href=\"#{}\"><g class=\"dag-node {}\" data-id=\"{}\" data-state=\"{}\"><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NW}\" height=\"{NH}\" rx=\"5\" fill=\"{}\" stroke=\"#555\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"nid\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"nkind\">{}</text></g></a>",
            node_anchor(&n.id),
            esc(&state),
            esc(&n.id),
            esc(&state),
            esc(&tip),
            color(st.state),
            x + 6.0,
            y + 14.0,
            esc(&short(&n.id, 26)),
            x + 6.0,
            y + 28.0,
            esc(n.stage.kind())
        ));
    }
    s.push_str("</g></svg>");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_ids_keep_their_end() {
        assert_eq!(super::short("probe_init.fashion_motion.s2", 26), "probe_init.fashio…otion.s2");
        assert_eq!(super::short("probe_init.fashion_motion.s2", 26).chars().count(), 26);
        assert_eq!(super::short("co_all.0", 26), "co_all.0");
    }
}
