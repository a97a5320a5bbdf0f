//! What-if before spending GPU hours (issue 17, item 2): `plan FILE --set node.param=value` lists the nodes
//! that would go stale, the table cells that may change, and an estimate from each node's last recorded
//! duration, and runs nothing.

mod common;
use common::pf;
use serde_json::Value;

/// Two tiny trainings on one task, `b` over two seeds, a table with a row each, and an unrelated slow value.
const MODELS: &str = r#"

[node.a]
kind = "train"
inputs = { task = "t" }
dim = 16
depth = 1
heads = 2
mlp = 32

[node.b]
kind = "train"
inputs = { task = "t" }
seeds = 2
dim = 16
depth = 1
heads = 2
mlp = 32
momentum = 0.5

[node.table]
kind = "table"
inputs = { runs = ["a", "b"] }
title = "What-if"
caption = "test"
rows = [{ label = "Row A", nodes = ["a"] }, { label = "Row B", nodes = ["b"] }]
columns = [{ task = "t", label = "T" }]

[node.slow]
kind = "value"
value = 1
sleep_ms = 150
"#;

/// The whole pipeline: the tiny CIFAR task (`tests/common`) and the nodes above.
fn pipe() -> String {
    format!("{}{MODELS}", common::cifar_task(2))
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    std::fs::write(d.path().join("p.toml"), pipe()).unwrap();
    d
}

fn plan_json(dir: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "p.toml", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = pf(dir, &args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// id → last recorded duration, from `status --json`.
fn durations(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let (code, out, err) = pf(dir, &["status", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["state"], "fresh", "{n}");
            (n["id"].as_str().unwrap().to_string(), n["last_ms"].as_u64().unwrap())
        })
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn plan_with_set_lists_stale_nodes_changed_cells_and_an_estimate_and_runs_nothing() {
    let d = setup();
    let dir = d.path();
    // Before anything ran: every node would run, none has a recorded time.
    let v = plan_json(dir, &[]);
    assert_eq!(v["would_run"], 8, "{v}");
    assert_eq!(v["estimate"]["known"], 0, "{v}");
    assert_eq!(v["estimate"]["serial_ms"], 0, "{v}");
    assert_eq!(ids(&v["estimate"]["unknown"]).len(), 8, "{v}");
    let (_, out, _) = pf(dir, &["plan", "p.toml"]);
    assert!(out.contains("8 nodes without a successful run on record, time unknown"), "{out}");
    assert!(out.contains("Would run a (train)") && out.contains("no recorded run: time unknown"), "{out}");

    let (code, _, err) = pf(dir, &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let dur = durations(dir);
    assert!(dur["slow"] >= 150, "{dur:?}");

    // One replicated training changes: its replicates and the table would run; only row B's cells read them.
    let v = plan_json(dir, &["--set", "b.momentum=0.7"]);
    let mut stale: Vec<String> = v["stale"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();
    stale.sort();
    assert_eq!(stale, strings(&["b.s0", "b.s1", "table"]), "{v}");
    for n in v["stale"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        assert_eq!(n["last_ms"].as_u64(), Some(dur[id]), "{n}");
        assert!(!n["reason"].as_str().unwrap().is_empty(), "{n}");
    }
    assert!(v["stale"][0]["reason"].as_str().unwrap().contains("momentum"), "{v}");
    let cells: Vec<(String, String, String, Vec<String>)> = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap().into(),
                c["row"].as_str().unwrap().into(),
                c["column"].as_str().unwrap().into(),
                ids(&c["would_run"]),
            )
        })
        .collect();
    let b = strings(&["b.s0", "b.s1"]);
    assert_eq!(
        cells,
        vec![
            ("table".into(), "Row B".into(), "#Models".into(), strings(&["b.s0"])),
            ("table".into(), "Row B".into(), "#Params".into(), strings(&["b.s0"])),
            ("table".into(), "Row B".into(), "T".into(), b.clone()),
        ],
        "{v}"
    );
    // The estimate: the recorded durations, one after another and along the longest chain (the two
    // replicates can run side by side, the table after them).
    let e = &v["estimate"];
    assert_eq!(e["serial_ms"].as_u64(), Some(dur["b.s0"] + dur["b.s1"] + dur["table"]), "{v}");
    assert_eq!(e["critical_path_ms"].as_u64(), Some(dur["b.s0"].max(dur["b.s1"]) + dur["table"]), "{v}");
    assert_eq!(ids(&e["critical_path"]).last().map(String::as_str), Some("table"), "{v}");
    assert_eq!((e["known"].as_u64(), ids(&e["unknown"]).len()), (Some(3), 0), "{v}");
    assert_eq!(v["fresh"].as_array().unwrap().len(), 5, "{v}");
    // Placed on the run's slots: with -j 1 one after another; with -j 2 the replicates side by side (each
    // takes one slot), then the table; a cluster schedules as it can (no local estimate).
    let placed = |args: &[&str]| plan_json(dir, &[&["--set", "b.momentum=0.7"][..], args].concat())["estimate"].clone();
    assert_eq!(placed(&["-j", "1"])["scheduled_ms"].as_u64(), Some(dur["b.s0"] + dur["b.s1"] + dur["table"]));
    let two = placed(&["-j", "2"]);
    assert_eq!(two["scheduled_ms"].as_u64(), Some(dur["b.s0"].max(dur["b.s1"]) + dur["table"]), "{two}");
    assert_eq!((two["jobs"].as_u64(), two["devices"].as_u64()), (Some(2), Some(1)), "{two}");
    assert!(placed(&["--executor", "slurm"])["scheduled_ms"].is_null());

    // The same in words: the cell of row B, not row A.
    let (code, out, err) = pf(dir, &["plan", "p.toml", "--set", "b.momentum=0.7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Plan 3 of 8 nodes would run"), "{out}");
    assert!(out.contains("table: row 'Row B' × 'T' (b.s0, b.s1 would run)"), "{out}");
    assert!(!out.contains("Row A"), "{out}");
    assert!(out.contains("Estimate") && out.contains("critical path b.s"), "{out}");
    let (_, out, _) = pf(dir, &["plan", "p.toml", "--set", "b.momentum=0.7", "-j", "2"]);
    assert!(out.contains(" on -j 2 and 1 device (each node's last run's time, placed as a run places them)"), "{out}");
    assert!(out.contains("may change"), "{out}");

    // Upstream of everything: the task changes, so both rows' cells, and the critical path goes through t.
    let v = plan_json(dir, &["--set", "t.steps=3"]);
    let stale: Vec<String> = v["stale"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(stale.len(), 5, "{v}");
    assert!(!stale.contains(&"slow".to_string()) && !stale.contains(&"x".to_string()), "{v}");
    let rows: std::collections::BTreeSet<String> =
        v["cells"].as_array().unwrap().iter().map(|c| c["row"].as_str().unwrap().to_string()).collect();
    assert_eq!(rows, ["Row A".to_string(), "Row B".to_string()].into_iter().collect(), "{v}");
    let e = &v["estimate"];
    let serial: u64 = ["t", "a", "b.s0", "b.s1", "table"].iter().map(|id| dur[*id]).sum();
    assert_eq!(e["serial_ms"].as_u64(), Some(serial), "{v}");
    let critical = dur["t"] + dur["a"].max(dur["b.s0"]).max(dur["b.s1"]) + dur["table"];
    assert_eq!(e["critical_path_ms"].as_u64(), Some(critical), "{v}");
    assert!(critical <= serial);
    assert_eq!(ids(&e["critical_path"]).first().map(String::as_str), Some("t"), "{v}");

    // A change no cell reads: the value node alone, no cells.
    let v = plan_json(dir, &["--set", "slow.value=2"]);
    assert_eq!(v["would_run"], 1, "{v}");
    assert_eq!(v["cells"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["estimate"]["serial_ms"].as_u64(), Some(dur["slow"]), "{v}");

    // Nothing ran: without the overrides every node is fresh, with the same recorded durations.
    assert_eq!(durations(dir), dur);
    let v = plan_json(dir, &[]);
    assert_eq!(v["would_run"], 0, "{v}");
}

#[test]
fn plan_on_a_fresh_directory_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\nsleep_ms = 50\n").unwrap();
    let v = plan_json(d.path(), &["--set", "a.value=2"]);
    assert_eq!(ids(&v["estimate"]["unknown"]), strings(&["a"]), "{v}");
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 0 && out.contains("1 node without a successful run on record, time unknown: a"), "{out}{err}");
    assert!(!d.path().join(".polyflow").exists(), "a plan created the store");
    let (code, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    // No record was written: the plan after it still knows no duration.
    let v = plan_json(d.path(), &[]);
    assert_eq!(v["estimate"]["known"], 0, "{v}");
    assert_eq!(v["stale"][0]["last_ms"], Value::Null, "{v}");
}

#[test]
fn a_cell_reads_only_the_row_nodes_that_trained_its_task() {
    // One row of two single-task models (as the paper's row of single-task baselines): a change of one task
    // may change its column only.
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    let extra = r#"
[node.t2]
kind = "task"
inputs = { data = "x" }
steps = 2
batch_size = 8

[node.table]
kind = "table"
inputs = { runs = ["a", "c"] }
title = "Cells"
caption = "test"
rows = [{ label = "Single-task", nodes = ["a", "c"] }]
columns = [{ task = "t", label = "T" }, { task = "t2", label = "T2" }]
averages = [{ label = "Mean", columns = ["T", "T2"] }]
"#;
    let models = common::tiny_train("a", "t") + &common::tiny_train("c", "t2");
    std::fs::write(d.path().join("p.toml"), format!("{}{extra}{models}", common::cifar_task(2))).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let v = plan_json(d.path(), &["--set", "t2.steps=3"]);
    let cells: Vec<(String, Vec<String>)> =
        v["cells"].as_array().unwrap().iter().map(|c| (c["column"].as_str().unwrap().to_string(), ids(&c["would_run"]))).collect();
    // T reads `a` only, which stays fresh; #Models and #Params read both models.
    assert_eq!(
        cells,
        [
            ("#Models".to_string(), vec!["c".to_string()]),
            ("#Params".to_string(), vec!["c".to_string()]),
            ("T2".to_string(), vec!["c".to_string()]),
            ("Mean".to_string(), vec!["c".to_string()]),
        ],
        "{v}"
    );
}

/// After a `--set` experiment, a what-if of other settings compares with that experiment's run (its nearest): the
/// reason says so, so that the experiment's value is not taken for the file's; the file's own plan compares with the
/// file's own run and says nothing of it.
#[test]
fn a_reason_compared_with_an_experiments_run_says_so() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "a.value=2"]).0, 0);
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "a.value=3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("value changed 2 → 3 (since its run under --set a.value=2)"), "{out}");
    let (_, _, err) = pf(d.path(), &["run", "p.toml", "--set", "a.value=3"]);
    assert!(err.contains("value changed 2 → 3 (since its run under --set a.value=2)"), "{err}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("value changed 3 → 1 (since its run under --set a.value=3)"), "{out}");
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 4\n").unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("value changed 1 → 4") && !out.contains("since its run"), "{out}");
}

/// A table whose rows change (a file of its matrix removed, one added) changes cells whatever runs: `plan` says
/// which rows it gains and loses, not that it only re-renders.
#[test]
fn plan_names_the_rows_a_table_gains_and_loses() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("raw")).unwrap();
    for s in ["s1", "s2"] {
        std::fs::write(d.path().join(format!("raw/{s}.csv")), "1\n").unwrap();
    }
    std::fs::write(
        d.path().join("p.toml"),
        "[node.proc]\nkind = \"command\"\nmatrix = { sample = { files = \"raw/{sample}.csv\" } }\n\
         run = [\"sh\", \"-c\", \"echo '{\\\"n\\\": 1}' > $POLYFLOW_OUT/metrics.json\"]\n\
         [node.t]\nkind = \"table\"\ninputs = { runs = [\"proc\"] }\ntitle = \"t\"\ncaption = \"c\"\ncounts = false\n\
         rows = [{ matrix = \"proc\", label = \"{sample}\" }]\ncolumns = [{ key = \"n\", label = \"n\", scale = 1, digits = 0 }]\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::remove_file(d.path().join("raw/s1.csv")).unwrap();
    std::fs::write(d.path().join("raw/s3.csv"), "1\n").unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("Cells of t change: rows 's3' added, 's1' removed since its last run"), "{out}");
    assert!(!out.contains("only re-renders"), "{out}");
    let v = plan_json(d.path(), &[]);
    assert_eq!(v["reshaped_tables"]["t"], "rows 's3' added, 's1' removed", "{v}");
    // A caption alone: it re-renders, its cells unchanged.
    std::fs::write(d.path().join("raw/s1.csv"), "1\n").unwrap();
    std::fs::remove_file(d.path().join("raw/s3.csv")).unwrap();
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "t.caption=d", "--exit-code"]);
    assert!(out.contains("Cells unchanged: t only re-renders") && !out.contains("Cells of t"), "{out}");
    // `--exit-code`: 1 while something would run, as `git diff --exit-code`; 0 once everything is fresh.
    assert_eq!(code, 1);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["plan", "p.toml", "--exit-code"]).0, 0);
}

/// A fresh table whose exported file is gone or edited is not the store's result: `plan` lists the file as one a
/// run would write, counts it for `--exit-code` and `--json`, and a run puts it back.
#[test]
fn plan_counts_exported_files_a_run_would_write() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), common::EXPORTED_TABLE).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--exit-code"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Would write"), "{out}");
    let md = d.path().join("results/t.md");
    std::fs::remove_file(&md).unwrap();
    std::fs::write(d.path().join("results/t.csv"), "edited\n").unwrap();
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--exit-code"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Would write results/t.md, which `t` exports: not there"), "{out}");
    assert!(out.contains("Would write results/t.csv, which `t` exports: not what it holds now"), "{out}");
    assert!(out.contains("0 of 2 nodes would run, 2 exported files would be written"), "{out}");
    let v = plan_json(d.path(), &[]);
    let mut listed: Vec<(&str, bool)> =
        v["outdated_exports"].as_array().unwrap().iter().map(|e| (e["path"].as_str().unwrap(), e["missing"].as_bool().unwrap())).collect();
    listed.sort();
    assert_eq!(listed, [("results/t.csv", false), ("results/t.md", true)], "{v}");
    // A what-if with overrides says nothing of them (a run with them marks what it writes), though `t` stays
    // fresh under this one (a config file that changes nothing).
    std::fs::write(d.path().join("c.toml"), "# nothing\n").unwrap();
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--config", "c.toml", "--exit-code"]);
    assert!(code == 0 && out.contains("0 of 2 nodes would run") && !out.contains("Would write"), "{out}");
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert!(md.exists());
    assert_eq!(pf(d.path(), &["plan", "p.toml", "--exit-code"]).0, 0);
}

/// A node whose artifact is damaged is computed again as it was: `plan` gives that run's time and compares with
/// nothing else (not the id's later run under `--set`, whose settings have nothing to do with the damage).
#[test]
fn a_damaged_artifact_is_planned_with_the_run_that_made_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.c]\nkind = \"command\"\nparams = { off = 0 }\nrun = [\"sh\", \"-c\", \"sleep 0.$1; echo $1 > $POLYFLOW_OUT/out.txt\", \"sh\", \"{params.off}\"]\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let own_ms = durations(d.path())["c"];
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "c.params.off=5"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let key = rows[0]["key"].as_str().unwrap().to_string();
    let store = polyflow::store::Store::open(&d.path().join(".polyflow")).unwrap();
    let blob = store.blobs.path(&store.index().unwrap().artifact(&key).unwrap().unwrap().files["out.txt"].digest);
    drop(store);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, "9\n").unwrap();
    // The same size: `verify` finds it (and moves it aside).
    assert_eq!(pf(d.path(), &["verify"]).0, 4);
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("artifact file `out.txt` is damaged") && !out.contains("since its run under"), "{out}");
    let v = plan_json(d.path(), &[]);
    assert_eq!(v["stale"][0]["last_ms"].as_u64(), Some(own_ms), "{v}");
}
