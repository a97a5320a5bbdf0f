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

/// Above this many nodes the DAG is drawn by declaration: one box per matrix or seed declaration (`st` for its
/// 2,500 expansions), coloured by its worst state, so the picture stays readable and small.
pub const MAX_NODES: usize = 300;

/// One box of the picture: a node, or (past [`MAX_NODES`]) a declaration's nodes.
struct Unit {
    /// Its label (a node id, or a declaration's with its count).
    label: String,
    /// The node kinds, joined.
    kind: String,
    /// Its nodes.
    members: Vec<usize>,
    /// The units it reads.
    inputs: Vec<usize>,
}

/// The units of the selected nodes, in topological order: each node alone, or its outermost declaration.
fn units(g: &Graph, sel: &[usize], grouped: bool) -> Vec<Unit> {
    let in_sel: std::collections::HashSet<usize> = sel.iter().copied().collect();
    let order: Vec<usize> = g.topo_order().into_iter().filter(|i| in_sel.contains(i)).collect();
    let decl = if grouped { g.pipeline.declaration_of() } else { Default::default() };
    let mut unit_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Unit> = vec![];
    for &i in &order {
        let id = g.nodes[i].id.as_str();
        let name = decl.get(id).copied().unwrap_or(id);
        let u = *by_name.entry(name).or_insert_with(|| {
            out.push(Unit { label: name.to_string(), kind: String::new(), members: vec![], inputs: vec![] });
            out.len() - 1
        });
        out[u].members.push(i);
        unit_of.insert(i, u);
    }
    for (u, unit) in out.iter_mut().enumerate() {
        let mut ins: Vec<usize> = unit
            .members
            .iter()
            .flat_map(|&i| g.nodes[i].inputs.values().flatten())
            .filter_map(|j| unit_of.get(j).copied())
            .filter(|&v| v != u)
            .collect();
        ins.sort_unstable();
        ins.dedup();
        let mut kinds: Vec<&str> = unit.members.iter().map(|&i| g.nodes[i].stage.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        unit.inputs = ins;
        unit.kind = kinds.join(", ");
        if unit.members.len() > 1 {
            unit.label = format!("{} ×{}", unit.label, unit.members.len());
        }
    }
    out
}

/// `(depth, row)` of every unit: depth the longest path from a source (relaxed until nothing moves; declarations
/// that read each other, `a.1 → b → a.2`, stop at the number of units); within a layer, units ordered by the
/// mean row of their inputs.
fn layout(units: &[Unit]) -> Vec<(usize, usize)> {
    let n = units.len();
    let mut depth = vec![0usize; n];
    for _ in 0..n {
        let mut moved = false;
        for u in 0..n {
            let d = units[u].inputs.iter().map(|&v| depth[v] + 1).max().unwrap_or(0).min(n);
            if d != depth[u] {
                depth[u] = d;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let layers = depth.iter().max().map(|m| m + 1).unwrap_or(0);
    let mut pos: Vec<Option<(usize, usize)>> = vec![None; units.len()];
    for l in 0..layers {
        let mut here: Vec<(f64, usize)> = (0..units.len())
            .filter(|&u| depth[u] == l)
            .map(|u| {
                let ups: Vec<f64> = units[u].inputs.iter().filter_map(|&v| pos[v]).map(|p| p.1 as f64).collect();
                let bary = if ups.is_empty() { f64::MAX } else { ups.iter().sum::<f64>() / ups.len() as f64 };
                (bary, u)
            })
            .collect();
        // Stable: units without placed inputs keep the topological (declaration) order at the end.
        here.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        for (row, (_, u)) in here.into_iter().enumerate() {
            pos[u] = Some((l, row));
        }
    }
    pos.into_iter().map(|p| p.unwrap_or((0, 0))).collect()
}

/// The worst state among `states` (failed, then stale, then fresh).
fn worst(states: impl Iterator<Item = State>) -> State {
    states.fold(State::Fresh, |w, s| match (w, s) {
        (State::Failed, _) | (_, State::Failed) => State::Failed,
        (State::Stale, _) | (_, State::Stale) => State::Stale,
        _ => State::Fresh,
    })
}

/// Whether the DAG of `sel` is drawn by declaration ([`MAX_NODES`]).
pub fn by_declaration(sel: &[usize]) -> bool {
    sel.len() > MAX_NODES
}

/// The DAG of the selected nodes as an `<svg class="dag">`: one box per node, or per declaration past
/// [`MAX_NODES`].
pub fn svg(g: &Graph, sel: &[usize], a: &BTreeMap<usize, Assessment>) -> String {
    let units = units(g, sel, by_declaration(sel));
    let pos = layout(&units);
    let cols = pos.iter().map(|p| p.0 + 1).max().unwrap_or(1);
    let rows = pos.iter().map(|p| p.1 + 1).max().unwrap_or(1);
    let w = PAD * 2.0 + (cols - 1) as f64 * COL + NW;
    let h = PAD * 2.0 + (rows - 1) as f64 * ROW + NH;
    let xy = |u: usize| {
        let (c, r) = pos[u];
        (PAD + c as f64 * COL, PAD + r as f64 * ROW)
    };
    let mut s = format!(
        "<svg class=\"dag\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\"><title>pipeline DAG</title><g class=\"edges\">"
    );
    for (u, unit) in units.iter().enumerate() {
        for &v in &unit.inputs {
            let ((x0, y0), (x1, y1)) = (xy(v), xy(u));
            let (sx, sy, ex, ey) = (x0 + NW, y0 + NH / 2.0, x1, y1 + NH / 2.0);
            let mx = (sx + ex) / 2.0;
            s.push_str(&format!(
                "<path d=\"M{sx:.1},{sy:.1} C{mx:.1},{sy:.1} {mx:.1},{ey:.1} {ex:.1},{ey:.1}\" fill=\"none\" stroke=\"#999\" marker-end=\"url(#arrow)\"><title>{} → {}</title></path>",
                esc(&units[v].label),
                esc(&unit.label),
            ));
        }
    }
    s.push_str("</g><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#999\"/></marker></defs><g class=\"nodes\">");
    for (u, unit) in units.iter().enumerate() {
        let states: Vec<State> = unit.members.iter().filter_map(|i| a.get(i)).map(|s| s.state).collect();
        if states.is_empty() {
            continue;
        }
        let state = worst(states.iter().copied());
        let (x, y) = xy(u);
        let first = unit.members[0];
        let tip = match unit.members.as_slice() {
            [i] => {
                let st = &a[i];
                let mut tip = format!("{} ({})\nstate: {}", g.nodes[*i].id, unit.kind, st.state);
                for r in &st.reasons {
                    tip.push_str(&format!("\n- {r}"));
                }
                if let Some(k) = &st.key {
                    tip.push_str(&format!("\nkey: {k}"));
                }
                if let Some(r) = &st.record {
                    tip.push_str(&format!("\nlast run: {}", super::html::duration(r.duration_ms)));
                }
                tip
            }
            m => {
                let count = |s: State| states.iter().filter(|&&x| x == s).count();
                format!(
                    "{} ({}): {} nodes, {} fresh, {} stale, {} failed\n{} … {}",
                    unit.label,
                    unit.kind,
                    m.len(),
                    count(State::Fresh),
                    count(State::Stale),
                    count(State::Failed),
                    g.nodes[m[0]].id,
                    g.nodes[m[m.len() - 1]].id
                )
            }
        };
        let state_name = state.to_string();
        s.push_str(&format!(
            "<a href=\"#{}\"><g class=\"dag-node {}\" data-id=\"{}\" data-state=\"{}\"><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NW}\" height=\"{NH}\" rx=\"5\" fill=\"{}\" stroke=\"#555\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"nid\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"nkind\">{}</text></g></a>",
            node_anchor(&g.nodes[first].id),
            esc(&state_name),
            esc(&unit.label),
            esc(&state_name),
            esc(&tip),
            color(state),
            x + 6.0,
            y + 14.0,
            esc(&short(&unit.label, 26)),
            x + 6.0,
            y + 28.0,
            esc(&short(&unit.kind, 28))
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

    #[test]
    fn the_worst_state_colours_a_declaration() {
        use crate::exec::State;
        assert_eq!(super::worst([State::Fresh, State::Stale].into_iter()), State::Stale);
        assert_eq!(super::worst([State::Failed, State::Stale].into_iter()), State::Failed);
        assert_eq!(super::worst([State::Fresh].into_iter()), State::Fresh);
    }
}
