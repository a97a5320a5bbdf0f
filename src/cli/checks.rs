//! What every command that reads a pipeline does first: load and validate it, say what looks like a mistake,
//! check what the selected nodes will read before anything runs, and the environment keys record.

use super::*;

/// Loads and validates a pipeline.
pub fn load_graph(c: &Common, reg: &Registry) -> Result<Graph, CliError> {
    let p = spec::load_with(&c.file, c.profile.as_deref(), &c.overlay())?;
    Ok(graph::build(p, reg)?)
}

/// Warns of each `{name}` a declaration's parameters hold that names none of its variables (a misspelt `{lr}`):
/// it is passed to the node as written. Once per declaration, parameter and name.
pub(super) fn note_placeholders(g: &Graph) {
    // Per (declaration, parameter, name): the nodes with it, where it is written, their variables.
    type Found = (Vec<String>, crate::spec::source::Span, Vec<String>);
    let mut found: BTreeMap<(String, String, String), Found> = BTreeMap::new();
    for n in &g.pipeline.nodes {
        for (param, name, span) in &n.unknown_placeholders {
            // One in a parameter its kind wrote out (a table row's `label = "lr {lr}"` from a matrix:
            // `Stage::expand_params`, which refuses a name it lacks) is not passed as written: the parameter the node
            // has is not the one written.
            let top = param.split('.').next().unwrap_or(param);
            if g.by_id.get(&n.id).is_some_and(|&i| g.nodes[i].written_out.contains(top)) {
                continue;
            }
            let e = found.entry((n.decl.clone(), param.clone(), name.clone())).or_insert_with(|| {
                let names: BTreeSet<&String> = n.matrix.keys().chain(&g.pipeline.vars).collect();
                (vec![], *span, names.into_iter().cloned().collect())
            });
            e.0.push(n.id.clone());
        }
    }
    for ((decl, param, name), (nodes, span, vars)) in found {
        // The declaration when every node of it has the placeholder, else the nodes (an override of one of them).
        let all = g.pipeline.nodes.iter().filter(|n| n.decl == decl).count();
        let whose =
            if nodes.len() == all { format!("`{decl}`") } else { nodes.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ") };
        // A near name is most likely what was meant (`{thrr}` for `{thr}`, `{S}` for `{s}`).
        let near = crate::spec::error::closest(&name, vars.iter().map(String::as_str))
            .or_else(|| vars.iter().find(|v| v.eq_ignore_ascii_case(&name)).map(String::as_str))
            .map(|v| format!(" (did you mean `{{{v}}}`?)"))
            .unwrap_or_default();
        crate::cli::out::errln!(
            "{:>12} `{{{name}}}` in `{param}` of {whose} ({}) names no variable of it, so it is passed as written{near}; its variables: {}",
            "Warning",
            g.pipeline.sources.locate(span),
            vars.iter().map(|v| format!("{{{v}}}")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Warns of a matrix key that changes nothing of a declaration's nodes (no parameter or input names `{wd}`): its
/// values are one computation under one key, run once, where a sweep over it was meant. Once per declaration,
/// naming the keys whose values give nodes of the same parameters, inputs and files.
fn note_unused_matrix_keys(g: &Graph) {
    let spec: std::collections::HashMap<&str, &crate::spec::NodeSpec> = g.pipeline.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    // Per declaration: what each node computes (its kind, parameters, inputs, files and seed) → its matrix values.
    type Values<'a> = &'a BTreeMap<String, String>;
    let mut seen: BTreeMap<&str, BTreeMap<String, Vec<Values<'_>>>> = BTreeMap::new();
    for n in &g.nodes {
        let Some(s) = spec.get(n.id.as_str()) else { continue };
        if s.matrix.keys().all(|k| k == "seed" || k == "replicate") {
            continue;
        }
        let inputs: Vec<Vec<&str>> = n.inputs.values().map(|ups| ups.iter().map(|&u| g.nodes[u].id.as_str()).collect()).collect();
        let what = serde_json::json!([n.stage.kind(), n.keyed, inputs, n.files, n.seed_offset]).to_string();
        seen.entry(s.decl.as_str()).or_default().entry(what).or_default().push(&s.matrix);
    }
    for (decl, by_what) in seen {
        let Some(same) = by_what.values().find(|v| v.len() > 1) else { continue };
        // The keys whose values differ among nodes that compute the same.
        let keys: Vec<String> = same[0]
            .iter()
            .filter(|(k, v)| *k != "seed" && *k != "replicate" && same.iter().any(|m| m.get(*k) != Some(*v)))
            .map(|(k, _)| format!("`{k}`"))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let first = keys[0].trim_matches('`');
        crate::cli::out::errln!(
            "{:>12} matrix key {} of `{decl}` changes none of its nodes' parameters or inputs: its values are one \
             computation, run once; pass `{{{first}}}` to the node (in `run`, or as a parameter)",
            "Warning",
            keys.join(", "),
        );
    }
}

/// Warns of what each node's kind finds likely a mistake in its parameters ([`crate::stage::Stage::lints`]: a script
/// its command names that `deps` does not key): once per declaration, parameter and message.
fn note_lints(g: &Graph) {
    let mut found: BTreeMap<(&str, String, String), Vec<&str>> = BTreeMap::new();
    for (n, s) in g.nodes.iter().zip(&g.pipeline.nodes) {
        for (param, msg) in n.stage.lints(&n.params, &n.base_dir, &n.files) {
            found.entry((s.decl.as_str(), param, msg)).or_default().push(n.id.as_str());
        }
    }
    for ((decl, param, msg), nodes) in found {
        let all = g.pipeline.nodes.iter().filter(|n| n.decl == decl).count();
        let whose = match nodes.len() {
            n if n == all => format!("`{decl}`"),
            n if n <= 3 => nodes.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            n => format!("`{}`, `{}` and {} more", nodes[0], nodes[1], n - 2),
        };
        let at = g.by_id.get(nodes[0]).map(|&i| g.nodes[i].location.as_str()).unwrap_or_default();
        crate::cli::out::errln!("{:>12} `{param}` of {whose} ({at}): {msg}", "Warning");
    }
}

/// Says on stderr what in the pipeline is likely a mistake, before `run`, `plan` or `status` goes on: placeholders naming
/// no variable, and seed groups with replicates of different settings (an override of one replicate), whose
/// tables' cells average them as if they were seeds of one setting.
pub fn pipeline_notes(g: &Graph) {
    note_placeholders(g);
    for (name, span) in &g.pipeline.unused_vars {
        crate::cli::out::errln!(
            "{:>12} variable `{name}` of `[vars]` ({}) is named by no node as `{{{name}}}`: its value changes nothing",
            "Warning",
            g.pipeline.sources.locate(*span)
        );
    }
    note_unused_matrix_keys(g);
    note_lints(g);
    for (group, params) in g.mixed_replicates() {
        crate::cli::out::errln!(
            "{:>12} the replicates of `{group}` differ in {} (an override of one of them?): a table averages them into one cell as seeds of one setting",
            "Note",
            params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Checks what the selected nodes will read (e.g. every dataset path) and their parameters against the run's
/// environment `env` (e.g. a precision the backend lacks) before the store is opened or anything runs: every
/// problem is listed with the option that fixes it, and nothing is written (exit 2).
pub fn preflight(g: &Graph, c: &Common, targets: &[String], env: &BTreeMap<String, String>) -> Result<(), CliError> {
    // Where the store is (or would be made), as exports are resolved: none goes into it.
    let store_at = resolved(&c.store);
    /// A problem as `preflight` lists it: the node that has it, or the declaration whose expansions (`nodes`)
    /// share it (`shared`: the declaration and the problem's text).
    struct Listed {
        who: String,
        shared: Option<(String, String)>,
        nodes: Vec<String>,
        kind: &'static str,
        at: crate::spec::source::Location,
        param: String,
        msg: String,
        set: Option<String>,
    }
    let mut problems: Vec<Listed> = vec![];
    // Where the selected nodes export to, and which node does.
    let mut exported: BTreeMap<std::path::PathBuf, String> = BTreeMap::new();
    let computed = computed_elsewhere(g, c, env);
    let sel = g.select(targets)?;
    // What the inputs will be, from declarations (a checkpoint's geometry is read from its header): a model the
    // checkpoint does not fit is found here, not after ingestion.
    let decls = graph::declarations(g, &sel);
    for i in sel {
        let n = &g.nodes[i];
        let declared = || match graph::declared_inputs(g, i, &decls) {
            Some(inputs) => n.stage.check_declared(&n.params, &inputs),
            None => Ok(()),
        };
        let checked = n
            .stage
            .preflight(&n.params, &n.base_dir)
            .and_then(|()| n.stage.preflight_env(&n.params, env))
            .and_then(|()| declared())
            .and_then(|()| export_clash(g, i, &store_at, &mut exported));
        // A backend this build lacks matters only to a node that computes here: not to one the shared cache may
        // hold, or that this store computed on that backend before (a laptop fetching a GPU machine's results).
        if matches!(&checked, Err(p) if p.local) && computed(i) {
            continue;
        }
        if let Err(Problem { param, msg, by_param, .. }) = checked {
            let set = by_param.then(|| format!("--set {}.{param}=...", n.id));
            // Where the parameter is written (the node's header when it is not: a default, or a derived value).
            let spec = &g.pipeline.nodes[i];
            let at = g.pipeline.sources.locate(spec.params.get(&param).map_or(spec.span, |e| e.key_span));
            // The same problem in every expansion of a declaration (a matrix, replicates), where no value of the
            // node's own fixes it, is listed once, counted.
            let shared = (!by_param && spec.decl != n.id).then(|| (spec.decl.clone(), format!("`{param}` {msg}")));
            if let Some(p) = problems.iter_mut().find(|p: &&mut Listed| shared.is_some() && p.shared == shared) {
                p.nodes.push(n.id.clone());
                continue;
            }
            let who = shared.as_ref().map_or_else(|| n.id.clone(), |(d, _)| d.clone());
            problems.push(Listed { who, shared, nodes: vec![n.id.clone()], kind: n.stage.kind(), at, param, msg, set });
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    // One JSON entry per problem as the text lists it: `node` is the declaration of a shared one, `nodes` its
    // expansions.
    let listed = problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "node": p.who, "nodes": p.nodes, "kind": p.kind, "param": p.param, "message": p.msg, "set": p.set,
                // As an error's `at`: the file (or the `--set` argument) and where in it.
                "at": {"file": p.at.file, "line": p.at.line, "col": p.at.col},
            })
        })
        .collect();
    let problems: Vec<String> = problems
        .iter()
        .map(|p| {
            let count = if p.nodes.len() > 1 { format!("{} nodes, ", p.nodes.len()) } else { String::new() };
            let mut text = format!("  - `{}` ({count}{}, {}): `{}` {}", p.who, p.kind, p.at, p.param, p.msg);
            if let Some(set) = &p.set {
                text += &format!("\n    set it with `{set}` or `[node.{}] {} = ...` in a `--config` file", p.who, p.param);
            }
            text
        })
        .collect();
    Err(problems_found(&problems, listed))
}

/// The error of problems found before running (exit 2): each problem's lines as the text lists them, and each as
/// its JSON entry (`{node, nodes, kind, at, param, message, set}`).
pub(super) fn problems_found(lines: &[String], listed: Vec<serde_json::Value>) -> CliError {
    CliError::Problems(
        format!(
            "error: {} found before running; nothing was run or written:\n{}",
            crate::text::count(lines.len(), "problem"),
            lines.join("\n")
        ),
        listed,
    )
}

/// A path as the file system resolves it (links followed) as far as it exists — its deepest existing folder
/// resolved, the rest appended with `.` and `..` folded: two spellings of one file compare equal, also a file not
/// written yet below a link (`storelink/x` where `storelink` → `.polyflow`).
pub(super) fn resolved(p: &std::path::Path) -> std::path::PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let parts: Vec<std::path::Component> = abs.components().collect();
    for k in (1..parts.len()).rev() {
        let head: std::path::PathBuf = parts[..k].iter().collect();
        if let Ok(c) = std::fs::canonicalize(&head) {
            let rest: std::path::PathBuf = parts[k..].iter().collect();
            return crate::spec::source::folded_absolute(&c.join(rest));
        }
    }
    crate::spec::source::folded_absolute(p)
}

/// Node `i`'s exports, checked before anything runs: none writes over a file the pipeline is read from (its TOML
/// files, `--config` files) or into the store (`store`, resolved: its index or blobs overwritten), none is a path
/// no file can have (a NUL), and none goes where another selected node's export goes (`exported`: path → node;
/// one would overwrite the other, and `status` would then call one of them outdated after every run).
fn export_clash(g: &Graph, i: usize, store: &std::path::Path, exported: &mut BTreeMap<std::path::PathBuf, String>) -> Result<(), Problem> {
    let n = &g.nodes[i];
    for (file, rel) in n.stage.exports(&n.params) {
        let problem = |msg: String| Problem { param: "export".into(), msg, by_param: true, local: false };
        if let Some(bad) = [&file, &rel].into_iter().find(|x| x.contains('\0')) {
            return Err(problem(format!("{bad:?} holds a NUL character, which no file name can")));
        }
        let dest = resolved(&n.base_dir.join(&rel));
        let shown = crate::spec::source::display_path(&n.base_dir.join(&rel));
        if g.pipeline.sources.files.iter().any(|f| f.canonical == dest) {
            return Err(problem(format!("would write over {shown}, a file this pipeline is read from")));
        }
        if dest.starts_with(store) {
            return Err(problem(format!(
                "would write {shown} into the store {}: export into the project (e.g. `results/`)",
                crate::spec::source::display_path(store)
            )));
        }
        if let Some(other) = exported.get(&dest).filter(|o| **o != n.id) {
            return Err(problem(format!("writes {shown}, as `{other}` does: one would overwrite the other")));
        }
        exported.insert(dest, n.id.clone());
    }
    Ok(())
}

/// A note for each declaration whose selected nodes ask for more CPUs (`resources.cpus`) than a local run's `-j`
/// gives: they run on `-j` slots (and their programs are told that many threads), not on what they asked for.
pub(super) fn note_capped_cpus(g: &Graph, targets: &[String], jobs: usize, executor: Option<crate::spec::resources::ExecutorKind>) {
    if executor.unwrap_or(g.executor.kind) != crate::spec::resources::ExecutorKind::Local {
        return;
    }
    let Ok(sel) = g.select(targets) else { return };
    let slots = crate::exec::cpu_slots(jobs);
    let mut by_decl: BTreeMap<&str, (u32, usize)> = BTreeMap::new();
    for i in sel {
        if let Some(c) = g.nodes[i].resources.over(&g.executor.defaults).cpus.filter(|&c| c as usize > slots) {
            let e = by_decl.entry(g.pipeline.nodes[i].decl.as_str()).or_insert((c, 0));
            e.1 += 1;
        }
    }
    for (decl, (cpus, n)) in by_decl {
        let who = if n == 1 { format!("`{decl}`") } else { format!("{n} nodes of `{decl}`") };
        crate::cli::out::errln!(
            "note: {who} ask{} for {cpus} CPUs (`resources.cpus`), and -j gives {slots}: {} on {slots} (raise -j to give more)",
            if n == 1 { "s" } else { "" },
            if n == 1 { "it runs" } else { "each runs" }
        );
    }
}

/// Whether node `i`'s result may come from elsewhere than a computation here: a shared cache is configured, or
/// the store recorded a run of the node on the run's backend.
pub(super) fn computed_elsewhere<'a>(g: &'a Graph, c: &Common, env: &BTreeMap<String, String>) -> impl Fn(usize) -> bool + 'a {
    let cache = c.cache.is_some() || g.pipeline.cache.is_some();
    let backend = env.get("backend").cloned().unwrap_or_default();
    let index = Store::exists(&c.store).then(|| Store::open(&c.store).ok()).flatten().and_then(|s| s.index_read().ok());
    move |i: usize| {
        cache
            || index.as_ref().is_some_and(|x| {
                x.record(&g.nodes[i].id).ok().flatten().is_some_and(|r| r.fingerprint.env.get("backend") == Some(&backend))
            })
    }
}

/// The environment recorded in keys.
pub fn env_of(g: &Graph, backend: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("seed".to_string(), g.pipeline.seed.to_string());
    // The canonical name (`cpu` → `flex`), so one backend always gives one key.
    env.insert("backend".to_string(), crate::model::device::Backend::canonical(backend).unwrap_or_else(|_| backend.to_string()));
    // Reserved, always "f32" (it has been in every training key since the first version); a training node's
    // arithmetic is its `precision` parameter.
    env.insert("precision".to_string(), "f32".to_string());
    // What of this machine changes a model's arithmetic (the fused CPU block turned off, AMX's bf16 products).
    if let Ok(b) = env["backend"].parse::<crate::model::device::Backend>() {
        env.extend(crate::model::device::arithmetic_env(b));
    }
    env
}

/// `--force` nodes must be among those the run selects (its targets and what they need): one outside is
/// forced to nothing, which said nothing before. Returns the forced nodes.
pub fn forced_nodes(g: &Graph, targets: &[String], force: &[String]) -> Result<Vec<usize>, CliError> {
    let sel = g.select(targets)?;
    let mut forced = vec![];
    for f in force {
        let Some(ids) = g.resolve(f) else {
            return Err(CliError::Other(format!("error: --force: no node `{f}`\n  help: {}", g.suggest(f)), exit::USAGE));
        };
        if !ids.iter().any(|i| sel.contains(i)) {
            return Err(CliError::Other(
                format!(
                    "error: --force: `{f}` is not among the nodes this run selects (its targets {} and what they need)\n  help: add `{f}` to the targets (after the pipeline file), or name no targets to select every node",
                    targets.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
                ),
                exit::USAGE,
            ));
        }
        forced.extend(ids);
    }
    Ok(forced)
}
