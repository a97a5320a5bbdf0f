//! DOT and Mermaid renderings of the graph (`polyflow dag`).

use super::Graph;

/// Graphviz DOT; `label(i)` adds a state to each node.
pub fn to_dot(g: &Graph, sel: &[usize], label: &dyn Fn(usize) -> String) -> String {
    let mut s = String::from("digraph polyflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for &i in sel {
        let n = &g.nodes[i];
        s.push_str(&format!("  \"{}\" [label=\"{}\\n{}{}\"];\n", n.id, n.id, n.stage.kind(), label(i)));
    }
    for &i in sel {
        for (slot, ups) in &g.nodes[i].inputs {
            for &u in ups {
                s.push_str(&format!("  \"{}\" -> \"{}\" [label=\"{}\"];\n", g.nodes[u].id, g.nodes[i].id, slot));
            }
        }
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn to_mermaid(g: &Graph, sel: &[usize], label: &dyn Fn(usize) -> String) -> String {
    let mut s = String::from("flowchart LR\n");
    for &i in sel {
        let n = &g.nodes[i];
        s.push_str(&format!("  n{i}[\"{}<br/>{}{}\"]\n", n.id, n.stage.kind(), label(i)));
    }
    for &i in sel {
        for (slot, ups) in &g.nodes[i].inputs {
            for &u in ups {
                s.push_str(&format!("  n{u} -->|{slot}| n{i}\n"));
            }
        }
    }
    s
}
