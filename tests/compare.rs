//! `polyflow compare` (issue 17, item 4): one table of the parameters that differ between nodes (matrix
//! declarations expand) and their metrics, as a table, CSV or JSON; unknown nodes are usage errors.

mod common;
use common::pf;

/// A matrix of `value` nodes (the value stands for a metric) and one other node.
const VALUES: &str = r#"
[node.v]
kind = "value"
matrix = { acc = [0.5, 0.75, 0.25], tag = ["a"] }
value = "{acc}"
comment = "run {tag}"
sleep_ms = 0

[node.other]
kind = "value"
value = { acc = 0.9, loss = 1.5 }
comment = "other"
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn compare_values_table_csv_json_sort_and_stale() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), VALUES).unwrap();
    // Nothing ran: every node is stale, parameters still compare.
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "v", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let ids: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "the matrix declaration expands: {out}");
    // Only `value` differs (comment and the rest are equal; `--all` shows them).
    assert_eq!(v["params"], serde_json::json!(["value"]), "{out}");
    assert_eq!(v["stale"].as_array().unwrap().len(), 3);
    assert!(err.contains("3 of 3 nodes not fresh"), "{err}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "v", "--json", "--all"]);
    let all: Vec<String> = json(&out)["params"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    for k in ["comment", "value", "seed", "sleep_ms", "fail"] {
        assert!(all.iter().any(|p| p == k), "--all lists `{k}`: {all:?}");
    }

    // Two of the three run: their values become metrics; the third shows "—" and is listed as stale.
    let first = ids[0].to_string();
    let second = ids[1].to_string();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", &first, &second, "other"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "v", "other"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("comment") && out.contains("state"), "comment now differs: {out}");
    assert!(out.contains("—"), "{out}");
    assert!(out.contains(&format!("1 of 4 nodes not fresh (no metrics): {}", ids[2])), "{out}");
    // The hint is the command that computes them, with the options given here.
    assert!(out.contains(&format!("(`polyflow run p.toml {}` computes them)", ids[2])), "{out}");
    // A damaged metrics blob makes its node stale in the comparison, not the comparison fail; `status` then says
    // damaged, not missing.
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", &first]);
    let blob = shown.lines().find(|l| l.contains("value.json")).and_then(|l| l.split_whitespace().last()).unwrap().to_string();
    // The same size (what a quick check misses): found as the bytes are read.
    let old = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, vec![b'7'; old.len()]).unwrap();
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "v"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("note: `{first}`: blob")) && err.contains("corrupt") && out.contains("2 of 3 nodes not fresh"),
        "{out}{err}"
    );
    let (_, out, _) = pf(d.path(), &["status", "p.toml", &first]);
    assert!(out.contains("is damaged"), "{out}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml", &first]);
    assert_eq!(code, 0, "recomputed: {err}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "other", "--store", "elsewhere", "--set", "other.comment=\"a b\""]);
    assert!(out.contains("(`polyflow run p.toml --store elsewhere --set 'other.comment=\"a b\"' other` computes them)"), "{out}");
    // Metrics: the bare values (`value`) and `other`'s `acc`, `loss`.
    let (code, out, _) = pf(d.path(), &["compare", "p.toml", "v", "other", "--json", "--sort", "value"]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["metrics"], serde_json::json!(["acc", "loss", "value"]), "{out}");
    let order: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    // Highest value first: 0.75, 0.5; then the nodes without the column (stable: declaration order).
    assert_eq!(order, [second.as_str(), first.as_str(), ids[2], "other"], "{out}");
    assert_eq!(v["nodes"][0]["metrics"]["value"], 0.75);
    assert_eq!(v["nodes"][0]["state"], "fresh");
    assert_eq!(v["nodes"][2]["state"], "stale");
    assert_eq!(v["nodes"][2]["metrics"], serde_json::json!({}));
    // Ascending, CSV: header then one line per node, raw values, missing ones empty.
    let (code, out, _) = pf(d.path(), &["compare", "p.toml", "v", "--csv", "--sort", "value", "--ascending"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node,state,param:value,metric:value", "params then metrics, a shared name marked: {out}");
    assert_eq!(lines[1], format!("{first},fresh,0.5,0.5"));
    assert_eq!(lines[2], format!("{second},fresh,0.75,0.75"));
    assert_eq!(lines[3], format!("{},stale,0.25,", ids[2]));
    // Only some metrics.
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "other", "v", "--json", "--metric", "loss"]);
    assert_eq!(json(&out)["metrics"], serde_json::json!(["loss"]));
}

#[test]
fn compare_unknown_node_or_column_is_a_usage_error_with_a_suggestion() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), VALUES).unwrap();
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "othr"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no node or matrix `othr`") && err.contains("did you mean `other`?"), "{err}");
    let (code, _, err) = pf(d.path(), &["compare", "p.toml", "v", "--sort", "nosuch"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sort: no column `nosuch`"), "{err}");
    // A `--metric` that matches nothing at all is a misspelling, as a `--sort` is; one of several only a note.
    std::fs::write(d.path().join("p.toml"), VALUES).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, _, err) = pf(d.path(), &["compare", "p.toml", "other", "v", "--metric", "los"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metric: `los` matches no metric") && err.contains("did you mean `loss`?"), "{err}");
    let (code, _, err) = pf(d.path(), &["compare", "p.toml", "other", "v", "--metric", "los", "--metric", "loss"]);
    assert!(code == 0 && err.contains("note: --metric `los` matches no metric"), "{err}");
}

/// Two tiny trainings (a matrix over `mlp`): the differing parameter and the task's test top-1 from
/// `metrics.json`.
#[test]
fn compare_training_runs_reads_metrics_json() {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar(d.path());
    let pipe = common::cifar_task(2)
        + r#"

[node.m]
kind = "train"
matrix = { mlp = [16, 32] }
inputs = { task = "t" }
dim = 16
depth = 1
heads = 2
mlp = "{mlp}"
"#;
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "m", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["params"], serde_json::json!(["mlp"]), "{out}");
    // With --all: what each was trained on, its task input and that task's own parameters.
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "m", "--json", "--all"]);
    let all = json(&out);
    assert_eq!(all["nodes"][0]["params"]["task"], "t", "{out}");
    assert!(all["nodes"][0]["params"]["task.steps"].is_number(), "{out}");
    let metrics: Vec<&str> = v["metrics"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(metrics.contains(&"tasks.t.test.top1") && metrics.contains(&"params"), "{out}");
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "fresh", "{out}");
        let top1 = n["metrics"]["tasks.t.test.top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&top1), "{out}");
    }
    // The params count differs with the MLP width.
    assert_ne!(v["nodes"][0]["metrics"]["params"], v["nodes"][1]["metrics"]["params"]);
    let (code, out, _) = pf(d.path(), &["compare", "p.toml", "m", "--sort", "test.top1"]);
    assert_eq!(code, 0);
    assert!(out.contains("tasks.t.test.top1") && out.contains("2 nodes, 1 parameter that differs"), "{out}");
}

/// A metric keeps the type its file gives it: a count written `3` stays an integer, an accuracy of `1.0` a float
/// (in JSON and in the table), even when every row's value is whole.
#[test]
fn compare_keeps_integers_and_whole_floats_apart() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.w]\nkind = \"value\"\nvalue = { acc = 1.0, n = 3 }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "w", "--json"]);
    let m = &json(&out)["nodes"][0]["metrics"];
    assert!(m["acc"].is_f64() && m["acc"] == 1.0, "{out}");
    assert!(m["n"].is_u64() && m["n"] == 3, "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "w"]);
    assert!(out.contains("1.0000") && !out.contains("3.0000"), "{out}");
}

/// The expansions of a matrix of `command` nodes differ only inside their argv: their matrix variables are columns
/// of their own (`matrix.lr`, sortable as `lr`), and the terminal cuts long argv cells.
#[test]
fn compare_shows_matrix_variables_as_columns() {
    let d = tempfile::tempdir().unwrap();
    let long = "x".repeat(200);
    std::fs::write(
        d.path().join("p.toml"),
        format!(
            "[node.t]\nkind = \"command\"\nmatrix = {{ lr = [0.1, 0.01], task = [\"a\", \"b\"] }}\n\
             run = [\"sh\", \"-c\", \"echo {{lr}} {{task}} {long} > $POLYFLOW_OUT/o\"]\n"
        ),
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "t", "--json", "--sort", "lr", "--ascending"]);
    let v = json(&out);
    // `run` differs only through `{lr}` and `{task}`, which the matrix columns show: left out (`--all` has it).
    assert_eq!(v["params"], serde_json::json!(["matrix.lr", "matrix.task"]), "{out}");
    assert_eq!(v["nodes"][0]["params"]["matrix.lr"], 0.01, "{out}");
    assert_eq!(v["nodes"][0]["params"]["matrix.task"], "a", "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "t", "--all"]);
    assert!(out.contains("…") && out.lines().all(|l| l.chars().count() < 160), "{out}");
}

/// `runs FILE NODE`: each setting a node was computed under, newest first, with its settings, what differs from
/// the node now and its metrics; one whose artifact `gc` removed says so; `--metric` keeps the columns asked for.
#[test]
fn runs_lists_every_setting_a_node_ran_under() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.m]\nkind = \"value\"\nvalue = { acc = 0.5, loss = 2 }\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.value.acc=0.9"]).0, 0);
    let (code, out, err) = pf(d.path(), &["runs", "p.toml", "m", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{out}");
    // Newest first: the experiment, then the file's own run, which is the node now.
    assert_eq!(runs[0]["settings"], "--set m.value.acc=0.9");
    assert_eq!(runs[0]["metrics"]["acc"], 0.9);
    assert_eq!(runs[0]["differs"][0], "value.acc changed 0.9 → 0.5", "{out}");
    assert_eq!((runs[1]["current"].as_bool(), runs[1]["metrics"]["loss"].as_i64()), (Some(true), Some(2)), "{out}");
    // What made each: this build (outside git: no commit).
    let version = std::process::Command::new(common::BIN).arg("--version").output().unwrap();
    let build = String::from_utf8_lossy(&version.stdout).trim().trim_start_matches("polyflow ").to_string();
    assert!(runs.iter().all(|r| r["polyflow"] == build.as_str() && r["git_commit"].is_null()), "{out}");
    let (_, out, _) = pf(d.path(), &["runs", "p.toml", "m", "--metric", "acc"]);
    assert!(out.contains("nothing (fresh)") && out.contains("--set m.value.acc=0.9") && !out.contains("loss"), "{out}");
    // Written as `compare` writes a column: lined up to the digits its values need.
    assert!(out.contains("┆ 0.9000 │") && out.contains("┆ 0.5000 │"), "{out}");
    // `gc --all-runs` keeps every run on record; a plain gc keeps the file's run and the node's latest (the 0.7
    // experiment): the 0.9 experiment goes, record and all.
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.value.acc=0.7"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let listed = |d: &std::path::Path| {
        let (_, out, _) = pf(d, &["runs", "p.toml", "m", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut l: Vec<String> = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}: {}", r["settings"].as_str().unwrap(), r["artifact"].as_str().unwrap()))
            .collect();
        l.sort();
        l
    };
    let before = listed(d.path());
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(pf(d.path(), &["gc", "p.toml", "--all-runs", "--yes"]).0, 0);
    assert_eq!(listed(d.path()), before, "gc --all-runs kept every run on record");
    assert_eq!(pf(d.path(), &["gc", "p.toml", "--yes"]).0, 0);
    assert_eq!(listed(d.path()), ["--set m.value.acc=0.7: kept", "the pipeline file's own settings: kept"]);
    // A run whose blob is gone (removed by hand here) is listed, and says so.
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "m", "--set", "m.value.acc=0.7"]);
    let blob = out.lines().find(|l| l.trim_start().starts_with("value.json")).and_then(|l| l.split_whitespace().last()).unwrap();
    std::fs::remove_file(blob).unwrap();
    assert_eq!(listed(d.path()), ["--set m.value.acc=0.7: value.json removed", "the pipeline file's own settings: kept"]);
    let (code, _, err) = pf(d.path(), &["runs", "p.toml", "nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = pf(d.path(), &["runs", "p.toml", "m", "--metric", "ac"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metric ac: no metric of `m`'s runs has it") && err.contains("acc, loss"), "{err}");
    // A sweep's declaration: every node's runs, each named.
    std::fs::write(d.path().join("p.toml"), "[node.m]\nkind = \"value\"\nvalue = { acc = \"{lr}\" }\nmatrix = { lr = [1, 2] }\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.matrix.lr=[3]"]).0, 0);
    let (code, out, err) = pf(d.path(), &["runs", "p.toml", "m"]);
    assert!(code == 0 && out.contains("runs of the 2 nodes of `m` on record (2;"), "{out}{err}");
    assert!(out.contains("│ m.1 ") && out.contains("│ m.2 "), "{out}");
    let (_, out, _) = pf(d.path(), &["runs", "p.toml", "m", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["group"].as_str(), v["nodes"][1]["node"].as_str()), (Some("m"), Some("m.2")), "{out}");
}

/// `compare --over fold`: one row per setting of the other matrix keys (`cv.*.0.1` for every fold and seed of
/// `lr = 0.1`), each metric the mean ± sample std over its folds and seeds; `--over` names a matrix key or is an
/// error with the keys there are.
#[test]
fn compare_over_a_matrix_key_averages_its_values() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.cv]\nkind = \"value\"\nmatrix = { lr = [0.1, 0.5], fold = [0, 1, 2] }\nvalue = { acc = \"{lr}\", fold = \"{fold}\" }\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "cv", "--over", "fold", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let groups = v["groups"].as_array().unwrap_or_else(|| panic!("{out}"));
    let ids: Vec<&str> = groups.iter().map(|g| g["id"].as_str().unwrap_or_else(|| panic!("{g}"))).collect();
    assert_eq!(ids, ["cv.*.0.1", "cv.*.0.5"], "{out}");
    // acc is lr whatever the fold: mean lr, std 0, over 3; fold averages to 1 with std 1.
    assert_eq!(groups[1]["metrics"]["acc"]["mean"], 0.5, "{out}");
    assert_eq!(groups[1]["metrics"]["acc"]["n"], 3, "{out}");
    assert_eq!(groups[0]["metrics"]["fold"]["mean"], 1.0, "{out}");
    assert_eq!(groups[0]["metrics"]["fold"]["std"], 1.0, "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "cv", "--over", "fold"]);
    assert!(out.contains("2 rows of 6 nodes (mean ± sample std over each group's fresh nodes: its values of fold and seeds)"), "{out}");
    // A std of rounding noise (0.1 three times: 1.7e-17) is no reason for exponents.
    assert!(out.contains("0.1000 ± 0.0000") && !out.contains("e-"), "{out}");
    let (code, _, err) = pf(d.path(), &["compare", "p.toml", "cv", "--over", "fld"]);
    assert!(code == 2 && err.contains("`fld` is not a matrix key of the nodes compared (`fold`, `lr`)") && err.contains("`fold`"), "{err}");
}
