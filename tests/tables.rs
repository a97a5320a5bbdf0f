//! The five table pipelines at the smoke profile: they run end to end, a second run executes nothing, the
//! results (tables and the artifact digests behind them) equal the committed `results/smoke/` files (the pipeline
//! is deterministic; `POLYFLOW_BLESS=1 cargo test --test tables smoke` rewrites them), the JSON records provenance
//! for every cell; and changing one task's peak LR re-runs exactly what depends on it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

fn run_json(dir: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(BIN).args(args).arg("--json").current_dir(dir).output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.code().unwrap_or(-1), events)
}

fn started(events: &[serde_json::Value]) -> BTreeSet<String> {
    events.iter().filter(|e| e["event"] == "started").map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn smoke_tables_run_reproduce_the_committed_results_and_rerun_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // In a copy of the project, so that a failing run neither leaves the checkout dirty nor becomes the baseline
    // the next run compares with. POLYFLOW_BLESS=1 copies what the run wrote over the committed files instead of
    // comparing (after a change that is meant to change them; review `git diff results/smoke`).
    let d = tempfile::tempdir().unwrap();
    copy_project(d.path());
    let dir = d.path();
    let store = dir.join("s");
    for i in 1..=5 {
        let file = format!("pipelines/table{i}.toml");
        let (code, ev) = run_json(dir, &["run", &file, "--profile", "smoke", "--store", store.to_str().unwrap()]);
        assert_eq!(code, 0, "table{i}: {ev:?}");
        for ext in ["md", "tex", "csv", "json"] {
            // Each file written is an event after the summary (a script need not parse stderr).
            let path = format!("results/smoke/table{i}.{ext}");
            assert!(dir.join(&path).is_file(), "{path} written");
            assert!(ev.iter().any(|e| e["event"] == "wrote" && e["path"] == path.as_str()), "table{i}: no `wrote` {path}: {ev:?}");
        }
        assert_eq!(ev.last().map(|e| e["event"] == "wrote"), Some(true), "the files after the summary");
    }
    // The findings over Tables 1-3: nothing to train any more, only the findings node runs.
    let (code, ev) = run_json(dir, &["run", "pipelines/findings.toml", "--profile", "smoke", "--store", store.to_str().unwrap()]);
    assert_eq!(code, 0, "findings: {ev:?}");
    assert_eq!(started(&ev), ["findings".to_string()].into_iter().collect());
    for i in 1..=5 {
        let file = format!("pipelines/table{i}.toml");
        let (code, ev) = run_json(dir, &["run", &file, "--profile", "smoke", "--store", store.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert!(started(&ev).is_empty(), "table{i}: second run executed {:?}", started(&ev));
    }
    // The tables and their provenance (`.json`: the cache key and artifact digest behind every cell), so a
    // run that trains different bits fails here even where the rounded table text would not change.
    let bless = std::env::var("POLYFLOW_BLESS").is_ok_and(|v| v == "1");
    let files = (1..=5)
        .flat_map(|i| ["md", "tex", "csv", "json"].map(|ext| format!("table{i}.{ext}")))
        .chain(["FINDINGS.md".to_string(), "FINDINGS.json".to_string()]);
    for f in files {
        let new = std::fs::read(dir.join("results/smoke").join(&f)).unwrap();
        let committed = root.join("results/smoke").join(&f);
        if bless {
            std::fs::write(&committed, &new).unwrap();
            continue;
        }
        let old = std::fs::read(&committed).unwrap_or_else(|e| panic!("results/smoke/{f}: {e} (POLYFLOW_BLESS=1 writes it)"));
        assert!(
            new == old,
            "{f}: smoke results differ from the committed ones (POLYFLOW_BLESS=1 writes them; then git diff results/smoke)"
        );
    }
    let root = dir;
    // Provenance: every metric cell names its node, key and artifact.
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/smoke/table2.json")).unwrap()).unwrap();
    let mut n = 0;
    for row in t["cells"].as_array().unwrap() {
        for c in row.as_array().unwrap() {
            if c["ranked"] == true && !c["value"].is_null() {
                let p = &c["from"][0];
                assert!(p["node"].is_string() && p["key"].is_string() && p["artifact"].is_string(), "{c}");
                n += 1;
            }
        }
    }
    assert!(n >= 30, "{n} provenance cells");
    // Seeds: each metric cell of a trained row carries its three per-seed values, and the caption says so.
    let cell = &t["cells"][1][2];
    assert_eq!(cell["seeds"].as_array().map(|a| a.len()), Some(3), "{cell}");
    assert_eq!(cell["from"].as_array().map(|a| a.len()), Some(3), "{cell}");
    assert!(t["caption"].as_str().unwrap().contains("over 3 seeds"));
    let f = std::fs::read_to_string(root.join("results/smoke/FINDINGS.md")).unwrap();
    assert_eq!(f.matches("| **").count(), 5, "five verdicts: {f}");
    assert!(std::fs::read_to_string(root.join("results/smoke/table2.md")).unwrap().contains("Profile smoke"));
}

/// The repository's pipelines and embedded datasets copied into `to` (a project of one's own to edit).
fn copy_project(to: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["pipelines", "datasets"] {
        copy_tree(&root.join(dir), &to.join(dir));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn changing_one_task_lr_reruns_exactly_its_dependents() {
    let d = tempfile::tempdir().unwrap();
    copy_project(d.path());
    let args = ["run", "pipelines/table2.toml", "--profile", "smoke"];
    let (code, _) = run_json(d.path(), &args);
    assert_eq!(code, 0);
    let tasks = d.path().join("pipelines/tasks.toml");
    let text = std::fs::read_to_string(&tasks).unwrap();
    let i = text.find("[node.t_digits]").unwrap();
    let j = i + text[i..].find("lr = 0.002").unwrap();
    std::fs::write(&tasks, format!("{}lr = 0.003{}", &text[..j], &text[j + "lr = 0.002".len()..])).unwrap();
    let st = Command::new(BIN)
        .args(["status", "pipelines/table2.toml", "--profile", "smoke", "--why", "t_digits"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&st.stdout).contains("lr changed 0.002 → 0.003"), "{}", String::from_utf8_lossy(&st.stdout));
    let (code, ev) = run_json(d.path(), &args);
    assert_eq!(code, 0);
    // Every seed replicate of what trains on digits (3 seeds), and nothing else.
    let mut want: BTreeSet<String> = ["t_digits", "table2"].iter().map(|s| s.to_string()).collect();
    for n in ["st.digits", "co_image", "co_all.0", "co_all.2", "feat_init.digits"] {
        want.extend((0..3).map(|s| format!("{n}.s{s}")));
    }
    assert_eq!(started(&ev), want);
    // The initial model's features do not depend on the LR: rebuilt identically, so its probes stay fresh.
    for s in 0..3 {
        assert!(ev.iter().any(|e| e["event"] == "fresh" && e["id"] == format!("probe_init.digits.s{s}")));
    }
}

/// The digest of the `table` artifact behind a committed `results/**/tableN.json`, rebuilt from the committed
/// files (`table.txt` is the terminal rendering of the JSON); `with_tex` adds `table.tex`.
fn table_artifact_digest(dir: &Path, i: usize, with_tex: bool) -> String {
    use polyflow::store::{FileEntry, Manifest, Store};
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    let read = |ext: &str| std::fs::read(dir.join(format!("table{i}.{ext}"))).unwrap();
    let json = read("json");
    let t: polyflow::tables::ResultTable = serde_json::from_slice(&json).unwrap();
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("table.md", read("md")),
        ("table.csv", read("csv")),
        ("table.json", json),
        ("table.txt", polyflow::tables::terminal(&t).into_bytes()),
    ];
    if with_tex {
        files.push(("table.tex", read("tex")));
    }
    let entries =
        files.into_iter().map(|(n, b)| (n.to_string(), FileEntry { digest: store.blobs.put(&b).unwrap(), size: b.len() as u64 })).collect();
    Manifest::new("table", entries).digest
}

/// The findings name the table artifacts they read by digest: those digests are the committed tables' (their
/// `.md`, `.tex`, `.csv`, `.json`), so the committed `.tex` files are the ones a run writes, without training.
#[test]
fn committed_findings_name_the_committed_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // POLYFLOW_BLESS=1: rewrite the digests of tables that predate `table.tex` (their digest without it) to
    // what a run writes now, after `cargo test --lib committed_tex` wrote the `.tex` files.
    let bless = std::env::var("POLYFLOW_BLESS").is_ok_and(|v| v == "1");
    for dir in ["results", "results/smoke"] {
        let dir = root.join(dir);
        let mut text = std::fs::read_to_string(dir.join("FINDINGS.json")).unwrap();
        let f: serde_json::Value = serde_json::from_str(&text).unwrap();
        for c in f["claims"].as_array().unwrap() {
            let i: usize = c["table"].as_str().unwrap().strip_prefix("table").unwrap().parse().unwrap();
            let want = c["table_artifact"].as_str().unwrap();
            let (with, without) = (table_artifact_digest(&dir, i, true), table_artifact_digest(&dir, i, false));
            if bless && want == without {
                text = text.replace(want, &with);
                continue;
            }
            assert_eq!(want, with, "{}: table{i} (without table.tex: {without})", dir.display());
        }
        if bless {
            std::fs::write(dir.join("FINDINGS.json"), text).unwrap();
        }
    }
}

/// Every key and artifact digest behind a table JSON (64-hex strings), sorted: what the table's numbers were
/// computed from, without the node ids that name them.
fn digests_behind(table_json: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(table_json).unwrap();
    let mut out: Vec<String> = text.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 64).map(str::to_string).collect();
    out.sort();
    out
}

#[test]
fn renamed_nodes_give_the_same_keys_and_bytes() {
    // A node's id is not in any key, so it must not be in any artifact either: a renamed model (features name
    // their encoder) or image dataset (a generated video dataset names its source) gave other bytes under the
    // same key, and so other keys downstream (a teammate's shared cache missed; `git diff results/` lied).
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&a, &b] {
        copy_project(d.path());
    }
    let renames = [("co_image", "co_img"), ("[node.mnist]", "[node.mnist_pixels]"), ("= \"mnist\" }", "= \"mnist_pixels\" }")];
    let mut changed = 0;
    for dir in ["pipelines", "datasets"] {
        for e in std::fs::read_dir(b.path().join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let new = renames.iter().fold(text.clone(), |t, (from, to)| t.replace(from, to));
                changed += usize::from(new != text);
                std::fs::write(e.path(), new).unwrap();
            }
        }
    }
    assert!(changed >= 3, "the renames reach the model, the dataset and the generated video's declarations");
    for d in [&a, &b] {
        let (code, _) = run_json(d.path(), &["run", "pipelines/table3.toml", "--profile", "smoke"]);
        assert_eq!(code, 0);
    }
    let json = |d: &tempfile::TempDir| d.path().join("results/smoke/table3.json");
    let renamed = std::fs::read_to_string(json(&b)).unwrap();
    assert!(renamed.contains("co_img") && !renamed.contains("co_image"), "the table reads the renamed nodes");
    assert_eq!(digests_behind(&json(&a)), digests_behind(&json(&b)), "renaming nodes changed keys or artifacts");
}

#[test]
fn a_renamed_task_is_recomputed_not_served_under_its_old_name() {
    // A task's id is its name in `task.json`, which models report their metrics under: it is in the task's key,
    // so a renamed task reruns (with what trains on it) instead of handing tables metrics of the old name (every
    // cell `–`, exit 0).
    let d = tempfile::tempdir().unwrap();
    copy_project(d.path());
    let args = ["run", "pipelines/table2.toml", "--profile", "smoke"];
    assert_eq!(run_json(d.path(), &args).0, 0);
    for e in std::fs::read_dir(d.path().join("pipelines")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            // Every task id `t_…` (matrix templates `t_{t}` too) becomes `task_…`.
            let mut out = String::new();
            let mut prev = ' ';
            for (i, c) in text.char_indices() {
                if c == 't' && text[i..].starts_with("t_") && !(prev.is_alphanumeric() || prev == '_') {
                    out.push_str("task");
                } else {
                    out.push(c);
                }
                prev = c;
            }
            std::fs::write(e.path(), out).unwrap();
        }
    }
    let (code, ev) = run_json(d.path(), &args);
    assert_eq!(code, 0);
    let ran = started(&ev);
    assert!(ran.contains("task_digits") && ran.contains("st.digits.s0") && ran.contains("co_all.0.s0"), "{ran:?}");
    let md = std::fs::read_to_string(d.path().join("results/smoke/table2.md")).unwrap();
    let single = md.lines().find(|l| l.starts_with("| Single-task")).unwrap_or_else(|| panic!("{md}"));
    assert!(!single.split('|').nth(4).unwrap().contains('–'), "the digits cell has its value: {md}");
}
