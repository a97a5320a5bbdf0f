//! `compare` and `show` of stale nodes: the values of each node's nearest earlier run, marked outdated (a `*`
//! and a footnote of what changed in the table, `outdated` and `earlier_metrics` in JSON, left out of CSV),
//! never mixed with fresh ones;
//! `--fresh-only` shows fresh values only; an earlier artifact no longer in the store is said, not a crash.
//! `compare --group`: one row per seed group, mean ± sample std over its fresh replicates with their count.

mod common;
use common::pf;

const TWO: &str = r#"
[node.a]
kind = "value"
value = { acc = 0.5 }
comment = "first"

[node.b]
kind = "value"
value = { acc = 0.75 }
comment = "first"
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn node<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no {id}: {v}"))
}

#[test]
fn an_edited_parameter_shows_the_earlier_values_marked_outdated() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), TWO).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    // Edit one parameter of `a` in the file: `a` is stale, its last values are still there.
    std::fs::write(d.path().join("p.toml"), TWO.replacen("comment = \"first\"", "comment = \"second\"", 1)).unwrap();

    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "a", "b", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let a = node(&v, "a");
    assert_eq!(a["state"], "stale", "{out}");
    assert_eq!(a["outdated"], true, "{out}");
    assert_eq!(a["earlier_metrics"]["acc"], 0.5, "the earlier run's value: {out}");
    assert_eq!(a["metrics"], serde_json::json!({}), "never under `metrics`: {out}");
    let changed = a["earlier_run"]["changed"].as_array().unwrap();
    assert!(changed.iter().any(|c| c.as_str().unwrap().contains("comment changed \"first\" → \"second\"")), "{out}");
    assert_eq!(a["earlier_run"]["in_store"], true);
    let b = node(&v, "b");
    assert_eq!((&b["state"], &b["outdated"], &b["metrics"]["acc"]), (&"fresh".into(), &false.into(), &0.75.into()), "{out}");
    assert_eq!(v["outdated"], serde_json::json!(["a"]), "{out}");
    assert_eq!(v["stale"], serde_json::json!(["a"]), "{out}");

    // The table: the state says so, the value is marked, a footnote names what changed.
    let (code, out, _) = pf(d.path(), &["compare", "p.toml", "a", "b"]);
    assert_eq!(code, 0);
    eprintln!("{out}");
    assert!(out.contains("stale (outdated values)"), "{out}");
    assert!(out.contains("0.5000*") && out.contains("0.7500") && !out.contains("0.7500*"), "{out}");
    assert!(out.contains("* outdated: values of the node's nearest earlier run, not of its settings now:"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  a (ran ") && l.contains("comment changed \"first\" → \"second\"")), "{out}");
    assert!(out.contains("1 of 2 nodes not fresh: a (outdated values, marked *) (`polyflow run p.toml a` computes them)"), "{out}");

    // Sorting keeps working (the outdated value sorts by its value, still marked).
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "a", "b", "--json", "--sort", "acc", "--ascending"]);
    let v = json(&out);
    let order: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["a", "b"], "{out}");

    // CSV: fresh values only (a script reading it cannot take the earlier run's for the settings beside them).
    let (_, out, err) = pf(d.path(), &["compare", "p.toml", "a", "b", "--csv"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node,state,comment,value.acc,acc", "{out}");
    assert_eq!(lines[1], "a,stale,second,0.5,", "the parameter `value.acc` stays, the metric `acc` is left out: {out}");
    assert_eq!(lines[2], "b,fresh,first,0.75,0.75", "{out}");
    assert!(err.contains("* outdated:"), "the footnote goes to stderr: {err}");

    // --fresh-only: today's behaviour, no values for a stale node.
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "a", "b", "--json", "--fresh-only"]);
    let v = json(&out);
    assert_eq!((&node(&v, "a")["outdated"], &node(&v, "a")["metrics"]), (&false.into(), &serde_json::json!({})), "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "a", "b", "--fresh-only"]);
    assert!(out.contains("1 of 2 nodes not fresh (no metrics): a") && !out.contains('*'), "{out}");

    // `show` of the stale node: its last results under a heading that says they are outdated, and why.
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no fresh artifact: run `polyflow run p.toml a` first"), "{out}");
    assert!(out.contains("outdated results: those of its nearest earlier run (ran "), "{out}");
    assert!(out.contains("changed since: comment changed \"first\" → \"second\""), "{out}");
    let blob =
        out.lines().find(|l| l.trim_start().starts_with("value.json")).and_then(|l| l.split_whitespace().last()).unwrap().to_string();

    // The earlier artifact gone (as `gc` may leave it): said, no values, no crash.
    std::fs::remove_file(&blob).unwrap();
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "a", "b"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("note: `a` is stale; the artifact (value.json) of its earlier run (ran ") && out.contains("is no longer in the store"),
        "{out}"
    );
    assert!(!out.contains("0.5000") && out.contains("1 of 2 nodes not fresh (no metrics): a"), "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "a", "--json"]);
    let v = json(&out);
    assert_eq!((&node(&v, "a")["outdated"], &node(&v, "a")["earlier_run"]["in_store"]), (&false.into(), &false.into()), "{out}");
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no earlier results either: the artifact (value.json) of its nearest earlier run (ran "), "{out}");

    // Once it runs again, it is fresh and unmarked.
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "a", "b"]);
    assert!(!out.contains('*') && !out.contains("not fresh"), "{out}");
}

const SEEDS: &str = r#"
[node.st]
kind = "value"
seeds = 3
value = "{seed}"
comment = "c"

[node.solo]
kind = "value"
value = 5
comment = "c"
"#;

#[test]
fn group_gives_mean_and_sample_std_over_fresh_replicates() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), SEEDS).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let group = |extra: &[&str]| {
        let mut args = vec!["compare", "p.toml", "st", "solo", "--group", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = pf(d.path(), &args);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    // All fresh: the replicates' acc 0, 1, 2 → 1 ± 1 (sample std), n=3.
    let v = group(&[]);
    let st = &v["groups"][0];
    assert_eq!(st["id"], "st", "{v}");
    assert_eq!(st["members"], serde_json::json!(["st.s0", "st.s1", "st.s2"]), "{v}");
    assert_eq!((&st["n"], &st["of"], &st["outdated"], &st["state"]), (&3.into(), &3.into(), &false.into(), &"fresh".into()), "{v}");
    assert_eq!(st["metrics"]["value"], serde_json::json!({"mean": 1.0, "std": 1.0, "n": 3}), "{v}");
    assert!(st["params"].get("seed").is_none(), "the seed collapses: {v}");
    assert_eq!(v["groups"][1]["metrics"]["value"], serde_json::json!({"mean": 5.0, "std": null, "n": 1}), "{v}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "solo", "--group"]);
    eprintln!("{out}");
    assert!(out.contains("1 ± 1") && out.contains("n=3"), "{out}");
    assert!(out.contains("2 rows of 4 nodes (mean ± sample std over each seed group's fresh replicates)"), "{out}");

    // One replicate edited: the mean is over the two fresh ones, and says so; its outdated value is not averaged.
    let v = group(&["--set", "st.s2.comment=\"x\""]);
    let st = &v["groups"][0];
    assert_eq!((&st["n"], &st["of"], &st["outdated"], &st["state"]), (&2.into(), &3.into(), &false.into(), &"partial".into()), "{v}");
    assert_eq!(st["metrics"]["value"]["mean"], 0.5, "{v}");
    assert_eq!(st["metrics"]["value"]["n"], 2, "{v}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "--group", "--set", "st.s2.comment=\"x\""]);
    assert!(out.contains("n=2 of 3") && !out.contains('*'), "{out}");
    assert!(out.contains("1 of 3 nodes not fresh (left out of the means): st.s2"), "{out}");

    // Every replicate edited: the earlier runs' values, all of them marked outdated.
    let v = group(&["--set", "st.comment=\"x\""]);
    let st = &v["groups"][0];
    assert_eq!((&st["n"], &st["outdated"], &st["state"]), (&3.into(), &true.into(), &"stale".into()), "{v}");
    assert_eq!(st["earlier_metrics"]["value"]["mean"], 1.0, "{v}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "--group", "--set", "st.comment=\"x\""]);
    assert!(out.contains("stale (outdated values)") && out.contains("1 ± 1*"), "{out}");
    assert!(out.contains("fresh replicates; a group with none fresh: their earlier runs, marked)"), "{out}");
    // Every node compared is stale: the hint names them as given, not each replicate.
    assert!(out.contains("`polyflow run p.toml --set 'st.comment=\"x\"' st` computes them"), "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "--group", "--csv"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["group,state,n,of,value:mean,value:std,value:n", "st,fresh,3,3,1,1,3"], "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "--group", "--csv", "--set", "st.comment=\"x\""]);
    assert_eq!(out.lines().nth(1), Some("st,stale,3,3,,,"), "{out}");
    // Without --group: one row per replicate, as before.
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "st", "--json"]);
    assert_eq!(json(&out)["nodes"].as_array().unwrap().len(), 3, "{out}");
}

/// Earlier values are only ever a run's of the command's own settings: a node whose only runs were under another
/// profile or a one-off `--set` shows none (and says so), and after an edit of the file its values are those of
/// the run of the file's settings, not of a later `--set` experiment; a failed node's footnote names what changed.
#[test]
fn earlier_values_come_from_runs_of_the_same_settings() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |lr: &str| {
        format!(
            "[node.up]\nkind = \"value\"\nvalue = {lr}\n\n[node.m]\nkind = \"value\"\nvalue = {{ acc = 0.5 }}\ninputs = {{ after = \"up\" }}\n\n[profile.smoke.node.m]\nvalue = {{ acc = 0.1 }}\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("1")).unwrap();
    // Only a smoke run: the full profile's `m` (waiting on `up`, never run with its settings) shows nothing.
    assert_eq!(pf(d.path(), &["run", "p.toml", "--profile", "smoke"]).0, 0);
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "m", "--json"]);
    assert_eq!(code, 0, "{err}");
    let m = &json(&out)["nodes"][0];
    assert!(m["earlier_metrics"].is_null() && m["outdated"] == false, "smoke values passed for the full profile's: {out}");
    assert_eq!(m["earlier_run"]["settings"], "--profile smoke", "{out}");
    assert!(err.contains("its runs on record were made under another profile (the latest: --profile smoke)"), "{err}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "m"]);
    assert!(out.contains("no earlier results shown") && !out.contains("outdated results"), "{out}");

    // The file's own run, then a one-off experiment with --set, then an edit of the file.
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.value={ acc = 0.9 }"]).0, 0);
    std::fs::write(d.path().join("p.toml"), pipe("2")).unwrap();
    let (_, out, err) = pf(d.path(), &["compare", "p.toml", "m", "--json"]);
    let m = &json(&out)["nodes"][0];
    assert_eq!(m["earlier_metrics"]["acc"], 0.5, "the file's run, not the --set experiment's 0.9: {out}");
    assert_eq!(m["earlier_run"]["settings"], "the pipeline file's own settings", "{out}");
    assert!(m["earlier_run"]["changed"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("waits on up")), "{out}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "m"]);
    assert!(out.contains("0.5000*") && out.contains("the pipeline file's own settings"), "{out}{err}");
    // The experiment's own settings find the experiment's values.
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "m", "--json", "--set", "m.value={ acc = 0.9 }"]);
    assert_eq!(json(&out)["nodes"][0]["earlier_metrics"]["acc"], 0.9, "{out}");

    // A failed attempt: what changed since the values shown is named, not only the failure.
    std::fs::write(d.path().join("p.toml"), pipe("1")).unwrap();
    assert_ne!(pf(d.path(), &["run", "p.toml", "--set", "m.fail=true"]).0, 0);
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "m", "--json", "--set", "m.fail=true"]);
    let changed = json(&out)["nodes"][0]["earlier_run"]["changed"].to_string();
    assert!(changed.contains("fail changed false → true"), "{out}");
}

/// `status --why` explains a stale node from the same earlier run whose values `show` and `compare` present: the
/// run of the command's own settings, even where a `--set` experiment's run differs from the node's settings now
/// in fewer parts.
#[test]
fn status_and_show_explain_from_the_same_earlier_run() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |up: &str, acc: &str| {
        format!("[node.up]\nkind = \"value\"\nvalue = {up}\n\n[node.m]\nkind = \"value\"\nvalue = {{ acc = {acc} }}\ninputs = {{ after = \"up\" }}\n")
    };
    std::fs::write(d.path().join("p.toml"), pipe("1", "0.5")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.value={ acc = 0.9 }"]).0, 0);
    // The file now has the experiment's value, and `up` changed: the experiment's run differs in one part (its
    // input), the file's run in two; the file's run is the one both commands speak of.
    std::fs::write(d.path().join("p.toml"), pipe("2", "0.9")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "up"]).0, 0);
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--why", "m"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("value.acc changed 0.5 → 0.9"), "status compared with the --set experiment's run: {out}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "m"]);
    assert!(out.contains("value.acc changed 0.5 → 0.9") && out.contains("the pipeline file's own settings"), "{out}");
    // Under the experiment's settings, both speak of the experiment's run: only the input changed.
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "m", "--set", "m.value={ acc = 0.9 }"]);
    assert!(!out.contains("value.acc changed") && out.contains("input `after` (up) changed"), "{out}");
}
