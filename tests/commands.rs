//! `gc`, `verify`, `dag`, `plan` and `kinds` through the binary.

mod common;

use common::{pf, BIN};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// File `name` of the fresh artifact of node `node` of `p.toml` in `dir`, read from the blob path `show` lists.
fn stored(dir: &Path, node: &str, name: &str) -> String {
    let (_, out, _) = pf(dir, &["show", "p.toml", node]);
    let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}: {out}"));
    std::fs::read_to_string(line.split_whitespace().last().unwrap()).unwrap()
}

const P: &str = "[node.a]\nkind = \"value\"\nvalue = 1\n[node.b]\nkind = \"value\"\nvalue = 2\ninputs = { after = \"a\" }\n[profile.other.node.a]\nvalue = 7\n";

#[test]
fn gc_keeps_what_pipelines_reference_and_removes_the_rest() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--profile", "other"]).0, 0);
    // An artifact no profile of the pipeline references any more.
    std::fs::write(d.path().join("p.toml"), P.replace("value = 2", "value = 3")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--profile", "other"]).0, 0);
    // A Slurm job directory of a key nothing references (its job long gone).
    let stale_job = d.path().join(".polyflow/jobs/0123456789abcdef01234567");
    std::fs::create_dir_all(&stale_job).unwrap();
    std::fs::write(stale_job.join("stderr.log"), "old log").unwrap();
    // A blob an interrupted run wrote and never committed, in a shard of its own.
    let orphan = d.path().join(".polyflow/blobs/ff").join("f".repeat(64));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, "orphan").unwrap();
    let (code, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert_eq!(code, 0);
    assert!(out.contains("Would remove job directory") && stale_job.exists(), "{out}");
    assert!(out.contains("Would remove 1 blob no artifact names (6 B), left by interrupted runs"), "{out}");
    // The old `b` of both profiles (value 2 after a = 1, and after a = 7): two entries, one shared blob; and the
    // orphan.
    assert!(out.contains("Would free 2 artifacts, 2 blobs"), "{out}");
    assert_eq!(out.matches("an earlier version of node `b`").count(), 2, "gc names the nodes: {out}");
    assert!(out.contains("--yes"));
    // `--json`: the same as one object on stdout, the text on stderr.
    let (code, out, err) = pf(d.path(), &["gc", "p.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(code == 0 && err.contains("Would free 2 artifacts"), "{err}");
    assert_eq!((v["removed"].as_bool(), v["blobs"].as_u64(), v["orphan_blobs"].as_u64()), (Some(false), Some(2), Some(1)), "{v}");
    let arts = v["artifacts"].as_array().unwrap();
    assert!(arts.len() == 2 && arts.iter().all(|a| a["node"] == "b" && a["key"].is_string()), "{v}");
    assert_eq!(v["job_dirs"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, out, _) = pf(d.path(), &["gc", "p.toml", "--yes"]);
    assert!(out.contains("Removed 2 artifacts"), "{out}");
    assert!(!stale_job.exists());
    assert!(!orphan.parent().unwrap().exists(), "its emptied shard folder stays");
    // Both profiles are still fresh; nothing left to collect; the store verifies.
    for prof in [None, Some("other")] {
        let mut args = vec!["run", "p.toml", "--json"];
        if let Some(p) = prof {
            args.extend(["--profile", p]);
        }
        let (_, out, _) = pf(d.path(), &args);
        assert!(!out.contains("\"event\":\"started\""), "{prof:?}: {out}");
    }
    assert!(pf(d.path(), &["gc", "p.toml"]).1.contains("Would free 0 artifacts"));
    assert_eq!(pf(d.path(), &["verify"]).0, 0);
    // Scratch of interrupted runs: that of a key no node has any more goes, and so does that of the key a stale
    // node would be computed under when its kind resumes from nothing there (a training run's checkpoint stays:
    // tests/training.rs).
    std::fs::write(d.path().join("p.toml"), P.replace("value = 2", "value = 4")).unwrap();
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    let b = st.as_array().unwrap().iter().find(|n| n["id"] == "b").unwrap();
    assert_eq!(b["state"], "stale");
    let partial = d.path().join(".polyflow/partial");
    let (current, abandoned) = (partial.join(&b["key"].as_str().unwrap()[..24]), partial.join("00112233445566778899aabb"));
    for p in [&current, &abandoned] {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("checkpoint"), vec![0u8; 1000]).unwrap();
    }
    let (_, out, _) = pf(d.path(), &["gc", "p.toml", "--yes"]);
    assert!(out.contains("Removing scratch") && out.contains("00112233445566778899aabb") && out.contains("1000 B"), "{out}");
    assert!(!current.exists() && !abandoned.exists(), "{out}");
}

#[test]
fn verify_reports_damage_with_exit_4_and_run_repairs_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let blobs = d.path().join(".polyflow/blobs");
    let sub = std::fs::read_dir(&blobs).unwrap().next().unwrap().unwrap().path();
    let f = std::fs::read_dir(&sub).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&f, b"garbage").unwrap();
    let (code, out, _) = pf(d.path(), &["verify"]);
    assert_eq!(code, 4, "{out}");
    // Named by its node and key (the key `status --json` gives).
    assert!(
        out.contains("Damaged value.json of `a`'s artifact (key ") || out.contains("Damaged value.json of `b`'s artifact (key "),
        "{out}"
    );
    let (code, _, _) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0);
    assert_eq!(pf(d.path(), &["verify"]).0, 0);
}

/// `verify FILES…` checks only what those pipelines use now (every profile), so one team's damaged blob in a
/// shared store does not fail another pipeline's check; without pipelines, everything is checked.
#[test]
fn verify_with_pipelines_checks_only_their_artifacts() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    std::fs::write(d.path().join("q.toml"), "[node.q]\nkind = \"value\"\nvalue = \"only q\"\n").unwrap();
    for f in ["p.toml", "q.toml"] {
        assert_eq!(pf(d.path(), &["run", f]).0, 0);
    }
    assert_eq!(pf(d.path(), &["run", "p.toml", "--profile", "other"]).0, 0);
    // Damage q's blob (the one whose bytes are q's value).
    let blobs = d.path().join(".polyflow/blobs");
    let q_blob = walk(&blobs).into_iter().find(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("only q"))).unwrap();
    std::fs::write(&q_blob, b"garbage").unwrap();
    let (code, out, err) = pf(d.path(), &["verify", "p.toml"]);
    assert_eq!(code, 0, "{out}{err}");
    // a and b of the default profile, a and b of `other`.
    assert!(out.contains("4 files checked (4 artifacts that p.toml uses now), 0 damaged"), "{out}");
    // `--json`: one object on stdout, each damaged file with its node and key; the text on stderr.
    let (code, out, err) = pf(d.path(), &["verify", "q.toml", "--json"]);
    assert_eq!(code, 4, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((v["files"].as_u64(), v["artifacts"].as_u64(), v["damaged"].as_u64()), (Some(1), Some(1), Some(1)), "{v}");
    let f = &v["found"][0];
    assert!(f["node"] == "q" && f["file"] == "value.json" && f["state"] == "corrupt" && f["moved_to"].is_string(), "{v}");
    assert!(
        err.contains("Damaged value.json of `q`'s artifact") && err.contains("1 file checked (1 artifact that q.toml uses now), 1 damaged"),
        "{err}"
    );
    // Moved aside: damaged (missing) until a run computes it again.
    let (code, out, _) = pf(d.path(), &["verify", "q.toml"]);
    assert!(code == 4 && out.contains("(missing)"), "{out}");
    let (_, out, _) = pf(d.path(), &["verify", "q.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["found"][0]["state"], "missing", "{v}");
    assert_eq!(pf(d.path(), &["run", "q.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["verify", "q.toml", "p.toml"]).0, 0);
    // A node whose input is damaged (stale) has no known artifact of now: said, not silently skipped.
    let a_blob = walk(&blobs).into_iter().find(|f| std::fs::read_to_string(f).is_ok_and(|t| t.trim() == "1")).unwrap();
    std::fs::remove_file(&a_blob).unwrap();
    let (code, out, _) = pf(d.path(), &["verify", "p.toml"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("Damaged value.json of `a`'s artifact")
            && out.contains("1 node not checked, as an input of theirs is stale")
            && out.contains(": b"),
        "{out}"
    );
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    // A pipeline with nothing in the store says so.
    std::fs::write(d.path().join("r.toml"), "[node.r]\nkind = \"value\"\nvalue = 3\n").unwrap();
    let (code, out, _) = pf(d.path(), &["verify", "r.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("none of the artifacts r.toml uses now is in the store"), "{out}");
    // A pipeline that does not load is an error naming it, not an empty check.
    let (code, _, err) = pf(d.path(), &["verify", "missing.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The JSON lines of `out`.
fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn run_events_share_plan_and_status_fields() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.z]\nkind = \"value\"\nvalue = 1\n[node.bad]\nkind = \"value\"\nfail = true\n[node.after]\nkind = \"value\"\ninputs = { after = \"bad\" }\n[node.a]\nkind = \"value\"\nvalue = 2\ninputs = { after = \"z\" }\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 1, "{err}");
    let ev = events(&out);
    let find =
        |event: &str, id: &str| ev.iter().find(|e| e["event"] == event && e["id"] == id).unwrap_or_else(|| panic!("{event} {id}: {out}"));
    // Reasons as `plan --json` and `status --json` give them: in words and structured.
    let plan = &ev[0]["nodes"][0];
    assert_eq!((&plan["reason"], &plan["reasons"][0]["reason"]), (&json!("never run"), &json!("never_run")), "{out}");
    let started = find("started", "z");
    assert_eq!((&started["reason"], &started["reasons"][0]["reason"]), (&json!("never run"), &json!("never_run")), "{out}");
    assert!(find("failed", "bad")["ms"].is_u64() && find("skipped", "after")["kind"] == "value", "{out}");
    // `finished` carries the key `status --json` names.
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    let z_key = st.as_array().unwrap().iter().find(|n| n["id"] == "z").unwrap()["key"].clone();
    assert_eq!(find("finished", "z")["key"], z_key, "{out}");
    // The summary lists the nodes in plan order, whatever order they ended in.
    let summary = ev.iter().find(|e| e["event"] == "summary").unwrap();
    let order: Vec<&str> = summary["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    let planned: Vec<&str> = ev[0]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(order, planned, "{out}");
    // A node failing on its input or settings ends the run as exit 2, with the JSON error line of any exit 2.
    std::fs::write(d.path().join("q.toml"), "[node.nf]\nkind = \"command\"\nrun = [\"/nonexistent/prog\"]\n").unwrap();
    let (code, out, err) = pf(d.path(), &["run", "q.toml", "--json"]);
    let last = events(&out).pop().unwrap();
    assert!(code == 2 && last["event"] == "error" && last["exit"] == 2, "{out}{err}");
    assert!(err.contains("nf failed on its input or settings"), "{err}");
    // Errors a script can act on: a pipeline error's place, and each problem found before running.
    std::fs::write(d.path().join("r.toml"), "[node.x]\nkind = \"valu\"\n").unwrap();
    let (code, out, _) = pf(d.path(), &["plan", "r.toml", "--json"]);
    let e = events(&out).pop().unwrap();
    assert!(code == 2 && e["at"] == json!({"file": "r.toml", "line": 2, "col": 8}) && e["help"].is_string(), "{out}");
    std::fs::write(d.path().join("s.toml"), "[node.d]\nkind = \"dataset\"\nformat = \"image_folder\"\n").unwrap();
    let (code, out, _) = pf(d.path(), &["run", "s.toml", "--json"]);
    let e = events(&out).pop().unwrap();
    let p = &e["problems"][0];
    assert!(code == 2 && p["node"] == "d" && p["param"] == "path" && p["set"] == "--set d.path=...", "{out}");
    assert!(
        p["at"]["file"] == "s.toml" && p["at"]["line"] == 1 && p["message"].as_str().is_some_and(|m| m.contains("not configured")),
        "{out}"
    );
}

#[test]
fn dag_plan_and_kinds() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let (_, dot, _) = pf(d.path(), &["dag", "p.toml"]);
    assert!(dot.starts_with("digraph") && dot.contains("\"a\" -> \"b\" [label=\"after\"]"), "{dot}");
    let (_, mm, _) = pf(d.path(), &["dag", "p.toml", "--format", "mermaid"]);
    assert!(mm.contains("n0 -->|after| n1"), "{mm}");
    // A target and what it needs only.
    let (code, dot, err) = pf(d.path(), &["dag", "p.toml", "a"]);
    assert_eq!(code, 0, "{err}");
    assert!(dot.contains("\"a\"") && !dot.contains("\"b\""), "{dot}");
    let (code, plan, _) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0);
    assert!(plan.contains("Would run a (value): never run") && plan.contains("2 of 2 nodes would run"), "{plan}");
    let (_, kinds, _) = pf(d.path(), &["kinds"]);
    for k in ["cotrain", "dataset", "probe", "table", "audio_prep"] {
        assert!(kinds.contains(&format!("{k} (v")), "{k}");
    }
}

#[test]
fn a_bare_pipeline_file_name_runs_command_nodes_in_its_folder() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.txt"), "hello").unwrap();
    std::fs::write(
        d.path().join("pipeline.toml"),
        "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"cp in.txt $POLYFLOW_OUT/out.txt\"]\ndeps = [\"in.txt\"]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = pf(d.path(), &["show", "pipeline.toml", "c"]);
    assert!(code == 0 && out.contains("out.txt"), "{out}");
}

/// Python in a `command` node writes unbuffered (its progress shows as it runs, not when it ends) and no bytecode
/// cache (an imported module's `__pycache__/` in a folder `deps` lists would make the node stale after every run),
/// unless the user's environment sets `PYTHONUNBUFFERED` / `PYTHONDONTWRITEBYTECODE` itself.
#[test]
fn command_nodes_run_python_unbuffered_unless_told_otherwise() {
    let d = tempfile::tempdir().unwrap();
    let pipe = "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo ${PYTHONUNBUFFERED:-unset} ${PYTHONDONTWRITEBYTECODE:-unset} > $POLYFLOW_OUT/env.txt\"]\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let seen = |env: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["run", "p.toml", "--force", "c"])
            .current_dir(d.path())
            .env_remove("PYTHONUNBUFFERED")
            .env_remove("PYTHONDONTWRITEBYTECODE");
        if let Some(v) = env {
            c.env("PYTHONUNBUFFERED", v).env("PYTHONDONTWRITEBYTECODE", v);
        }
        assert!(c.output().unwrap().status.success());
        let (_, out, _) = pf(d.path(), &["show", "p.toml", "c"]);
        let blob = out.lines().find(|l| l.trim_start().starts_with("env.txt")).unwrap().split_whitespace().last().unwrap().to_string();
        std::fs::read_to_string(blob).unwrap().trim().to_string()
    };
    assert_eq!(seen(None), "1 1");
    assert_eq!(seen(Some("")), "unset unset", "the user's own (empty) settings stay");
}

/// A pipeline file in a subfolder (as `pipelines/*.toml`) run with the default, relative store: its programs run
/// in that subfolder, and `$POLYFLOW_OUT` / `$POLYFLOW_IN` still name the store's folders (absolute paths).
#[test]
fn command_nodes_of_a_pipeline_in_a_subfolder_write_into_the_store() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("p")).unwrap();
    std::fs::write(
        d.path().join("p/c.toml"),
        "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo hello > $POLYFLOW_OUT/a.txt\"]\n\
         [node.b]\nkind = \"command\"\ninputs = { in = \"a\" }\nrun = [\"sh\", \"-c\", \"cp $POLYFLOW_IN/in/a/a.txt $POLYFLOW_OUT/b.txt\"]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p/c.toml"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["show", "p/c.toml", "b"]);
    assert!(out.contains("b.txt") && out.contains("6 B"), "{out}");
    assert!(!d.path().join("p/.polyflow").exists(), "nothing written beside the pipeline file");
}

/// A `command` program finds its inputs under their node ids (`$POLYFLOW_IN/in/a/`): renaming the input node
/// re-runs it (its program, run now, reads another folder), where a kind that never sees the ids keeps its result.
#[test]
fn renaming_a_commands_input_node_reruns_it() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |up: &str| {
        format!(
            "[node.{up}]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo hello > $POLYFLOW_OUT/a.txt\"]\n\
             [node.b]\nkind = \"command\"\ninputs = {{ in = \"{up}\" }}\nrun = [\"sh\", \"-c\", \"cp $POLYFLOW_IN/in/{up}/a.txt $POLYFLOW_OUT/b.txt\"]\n\
             [node.v]\nkind = \"value\"\nvalue = 1\ninputs = {{ after = \"{up}\" }}\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("a")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), pipe("a2")).unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("Would run b") && out.contains("inputs of `in` rewired"), "{out}");
    assert!(out.contains("Plan 1 of 3 nodes would run"), "the renamed node and the value keep their results: {out}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_seeds_declaration_names_all_its_replicates_in_why_force_and_show() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.st]\nkind = \"value\"\nvalue = 1\nseeds = 2\n[node.u]\nkind = \"value\"\nvalue = 2\n")
        .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--why", "st"]);
    assert!(code == 0 && out.contains("st.s0 (value): fresh") && out.contains("st.s1 (value): fresh"), "{out}{err}");
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--why", "st", "--json", "--set", "st.value=3"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(code, 0);
    assert_eq!((v[0]["id"].as_str(), v[1]["id"].as_str()), (Some("st.s0"), Some("st.s1")), "{out}");
    assert_eq!(v[0]["reasons"][0]["reason"], "param_changed", "{out}");
    let (code, _, err) = pf(d.path(), &["status", "p.toml", "u", "--why", "st"]);
    assert!(code == 2 && err.contains("drop the NODES arguments"), "{err}");
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--force", "st"]);
    assert!(code == 0 && out.contains("Would run st.s0") && out.contains("Would run st.s1") && !out.contains("Would run u"), "{out}{err}");
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "st"]);
    assert!(code == 0 && out.contains("node:   st.s0") && out.contains("node:   st.s1"), "{out}{err}");
    assert!(out.contains("\nran:    20"), "when the artifact was computed: {out}");
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--force", "st", "--json"]);
    let mut started: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "started")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    started.sort();
    assert!(code == 0 && started == ["st.s0", "st.s1"], "{out}{err}");
    // Declarations are suggested too.
    let (code, _, err) = pf(d.path(), &["show", "p.toml", "sx"]);
    assert!(code == 2 && err.contains("did you mean `st`?"), "{err}");
}

#[test]
fn why_of_a_misspelt_node_suggests_the_closest() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.st_digits]\nkind = \"value\"\nvalue = 1\n").unwrap();
    let (code, _, err) = pf(d.path(), &["status", "p.toml", "--why", "st.digit"]);
    assert!(code == 2 && err.contains("no node `st.digit`") && err.contains("did you mean `st_digits`?"), "{code} {err}");
}

#[test]
fn commands_that_read_the_store_never_create_one() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let typo = d.path().join("typo/store");
    let store = typo.to_str().unwrap();
    for args in [
        vec!["status", "p.toml", "--store", store],
        vec!["plan", "p.toml", "--store", store],
        vec!["show", "p.toml", "a", "--store", store],
        vec!["compare", "p.toml", "a", "b", "--store", store],
        vec!["report", "p.toml", "--store", store, "-o", "r.html"],
        vec!["verify", "--store", store],
        vec!["gc", "p.toml", "--store", store, "--yes"],
    ] {
        let (code, _, err) = pf(d.path(), &args);
        assert!(code != 101 && err.contains(&format!("no store at {store}")), "{args:?}: {code} {err}");
        assert_eq!(err.matches("no store at").count(), 1, "{args:?}: said once: {err}");
        assert!(!d.path().join("typo").exists(), "{args:?} created {}", typo.display());
    }
    // Nothing cached there: everything would run.
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--store", store]);
    assert!(out.contains("0 of 2 nodes fresh"), "{out}");
    // A file is no store, for reading commands as for `run`.
    std::fs::write(d.path().join("afile"), "x").unwrap();
    let (code, _, err) = pf(d.path(), &["status", "p.toml", "--store", "afile"]);
    assert!(code == 2 && err.contains("is a file, not a folder"), "{code} {err}");
}

#[test]
fn an_empty_pipeline_is_an_error_and_creates_no_store() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("empty.toml"), "# nothing yet\n").unwrap();
    for cmd in ["run", "status", "plan"] {
        let (code, _, err) = pf(d.path(), &[cmd, "empty.toml"]);
        assert!(code == 2 && err.contains("declares no nodes"), "{cmd}: {code} {err}");
    }
    assert!(!d.path().join(".polyflow").exists(), "no store created");
    // A file that only includes nodes is a pipeline.
    std::fs::write(d.path().join("nodes.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    std::fs::write(d.path().join("top.toml"), "include = [\"nodes.toml\"]\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "top.toml"]).0, 0);
}

#[test]
fn why_shows_the_root_cause_chain_and_the_nodes_own_damage() {
    let d = tempfile::tempdir().unwrap();
    let chain = "[node.a]\nkind = \"value\"\nvalue = 1\n[node.b]\nkind = \"value\"\nvalue = 2\ninputs = { after = \"a\" }\n[node.c]\nkind = \"value\"\nvalue = 3\ninputs = { after = \"b\" }\n";
    std::fs::write(d.path().join("p.toml"), chain).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    // `b`'s own blob goes missing, and `a` changes upstream.
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let b_key = rows.iter().find(|r| r["id"] == "b").unwrap()["key"].as_str().unwrap().to_string();
    let store = polyflow::store::Store::open(&d.path().join(".polyflow")).unwrap();
    let m = store.index().unwrap().artifact(&b_key).unwrap().unwrap();
    std::fs::remove_file(store.blobs.path(&m.files["value.json"].digest)).unwrap();
    std::fs::write(d.path().join("p.toml"), chain.replace("value = 1", "value = 5")).unwrap();
    let (code, out, _) = pf(d.path(), &["status", "p.toml", "--why", "c"]);
    assert_eq!(code, 0);
    let want = [
        "c (value): stale",
        "  - waits on b",
        "    b (value): stale",
        "      - waits on a",
        "        a (value): stale",
        "          - value changed 1 → 5",
        "      - artifact file `value.json` missing from the store",
    ];
    let mut at = 0;
    for w in want {
        let found = out[at..].find(w).unwrap_or_else(|| panic!("`{w}` not found in order in:\n{out}"));
        at += found;
    }
}

/// A script `run` names that `deps` does not key (an edit of it would not make the node stale), and a program not
/// on PATH, are warned of before anything runs: once per declaration.
#[test]
fn an_unkeyed_script_and_a_missing_program_are_warned_of() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.sh"), "echo 1 > $POLYFLOW_OUT/x\n").unwrap();
    let pipe = |deps: &str| {
        format!(
            "[node.a]\nkind = \"command\"\nmatrix = {{ x = [1, 2] }}\nrun = [\"sh\", \"-c\", \"sh ./a.sh {{x}}\"]\n{deps}\n\
             [node.b]\nkind = \"command\"\nrun = [\"pythn3\", \"-c\", \"1\"]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("")).unwrap();
    let (_, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(err.matches("names `a.sh`, which `deps` does not list").count(), 1, "{err}");
    assert!(err.contains("Warning `run` of `a` (p.toml:1:7)"), "{err}");
    assert!(err.contains("its program `pythn3` is not on PATH here"), "{err}");
    std::fs::write(d.path().join("p.toml"), pipe("deps = [\".\"]")).unwrap();
    let (_, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(!err.contains("a.sh"), "{err}");
}

/// A damaged blob among the files to export (a store restored from a CI cache) is found before any file is
/// written: moved aside, its node computed again in the same run, and the export written from the new artifact.
#[test]
fn a_damaged_blob_of_an_export_is_recomputed_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), common::EXPORTED_TABLE).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let md = std::fs::read_to_string(d.path().join("results/t.md")).unwrap();
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let key = rows.iter().find(|r| r["id"] == "t").unwrap()["key"].as_str().unwrap().to_string();
    let store = polyflow::store::Store::open(&d.path().join(".polyflow")).unwrap();
    let m = store.index().unwrap().artifact(&key).unwrap().unwrap();
    let blob = store.blobs.path(&m.files["table.md"].digest);
    drop(store);
    // The same size, other bytes: only a checksum tells.
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, md.replace("50.0", "99.9")).unwrap();
    std::fs::remove_file(d.path().join("results/t.md")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Damaged `table.md` of `t` in the store does not match its checksum") && err.contains("1 ran, 1 fresh"), "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("results/t.md")).unwrap(), md);
}

/// A command run from a folder below the project's store (`pipelines/`) says where that store is, before it reads
/// an empty one or `run` makes a second.
#[test]
fn a_store_above_the_working_directory_is_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("sub/p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "sub/p.toml"]).0, 0);
    let (_, _, err) = pf(&d.path().join("sub"), &["status", "p.toml"]);
    assert!(err.contains("../.polyflow is one: run from its folder, or pass `--store ../.polyflow`"), "{err}");
    let (code, _, err) = pf(&d.path().join("sub"), &["run", "p.toml"]);
    assert!(code == 0 && err.contains("Note there is no store at .polyflow: this run makes one"), "{err}");
}

/// A command run from a subfolder of the project uses the project's store, as git finds its repository: from
/// `src/` on `../p.toml` (the pipeline's folder holds the store), and from any folder of a git repository whose
/// store is above it; nothing is made in the subfolder. `--store .polyflow` still makes one there.
#[test]
fn a_command_in_a_subfolder_uses_the_projects_store() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("src/deep")).unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(&d.path().join("src"), &["run", "../p.toml"]);
    assert!(code == 0 && err.contains("note: using the store at ../.polyflow"), "{err}");
    assert!(out.contains("1 fresh") || err.contains("1 fresh"), "{out}{err}");
    assert!(!d.path().join("src/.polyflow").exists());
    // In a git repository: from any folder below the store's, whichever pipeline file.
    let git = |args: &[&str]| {
        let o = Command::new("git").args(args).current_dir(d.path()).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    git(&["init", "-q"]);
    std::fs::copy(d.path().join("p.toml"), d.path().join("src/deep/q.toml")).unwrap();
    let (code, out, err) = pf(&d.path().join("src/deep"), &["status", "q.toml"]);
    assert!(code == 0 && err.contains("note: using the store at ../../.polyflow") && out.contains("1 of 1 nodes fresh"), "{out}{err}");
    // `gc` deletes: it only names the store above.
    let (code, out, err) = pf(&d.path().join("src/deep"), &["gc", "q.toml", "--yes"]);
    assert!(code == 0 && err.contains("../../.polyflow is one: pass `--store ../../.polyflow`") && !out.contains("Remov"), "{out}{err}");
    // Not from a folder git ignores (a build or scratch folder is not part of the project).
    std::fs::write(d.path().join(".gitignore"), "/scratch\n").unwrap();
    std::fs::create_dir_all(d.path().join("scratch")).unwrap();
    std::fs::copy(d.path().join("p.toml"), d.path().join("scratch/q.toml")).unwrap();
    let (_, _, err) = pf(&d.path().join("scratch"), &["status", "q.toml"]);
    assert!(!err.contains("using the store") && err.contains("../.polyflow is one"), "{err}");
    // Named, it is the one used.
    let (code, _, err) = pf(&d.path().join("src"), &["run", "../p.toml", "--store", ".polyflow"]);
    assert!(code == 0 && !err.contains("using the store"), "{err}");
    assert!(d.path().join("src/.polyflow").exists());
}

/// A node waiting on a stale input names its own edited source file too (`status --why`, `plan`), not only
/// "waits on": the edit stands whatever its input turns out to be.
#[test]
fn a_node_waiting_on_its_input_names_its_own_changed_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"a.sh\"]\ndeps = [\"a.sh\"]\n\
         [node.b]\nkind = \"command\"\ninputs = { in = \"a\" }\nrun = [\"sh\", \"b.sh\"]\ndeps = [\"b.sh\"]\n",
    )
    .unwrap();
    std::fs::write(d.path().join("a.sh"), "echo 1 > $POLYFLOW_OUT/x\n").unwrap();
    std::fs::write(d.path().join("b.sh"), "cat $POLYFLOW_IN/in/a/x > $POLYFLOW_OUT/y\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("a.sh"), "echo 2 > $POLYFLOW_OUT/x\n").unwrap();
    std::fs::write(d.path().join("b.sh"), "cat $POLYFLOW_IN/in/a/x >> $POLYFLOW_OUT/y\n").unwrap();
    let (_, why, _) = pf(d.path(), &["status", "p.toml", "--why", "b"]);
    assert!(why.contains("  - waits on a") && why.contains("  - source files changed: b.sh modified"), "{why}");
    let (_, plan, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(plan.contains("Would run b (command): waits on a; source files changed: b.sh modified"), "{plan}");
    // Only its input changed: "waits on" alone.
    std::fs::write(d.path().join("b.sh"), "cat $POLYFLOW_IN/in/a/x > $POLYFLOW_OUT/y\n").unwrap();
    let (_, plan, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(plan.contains("Would run b (command): waits on a ["), "{plan}");
}

#[test]
fn command_outputs_in_subfolders_reach_downstream_and_a_same_size_edit_of_a_dep_is_seen() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.txt"), "hello").unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkdir -p $POLYFLOW_OUT/sub && cp in.txt $POLYFLOW_OUT/sub/x.txt\"]\ndeps = [\"in.txt\"]\n\
         [node.b]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"cat $POLYFLOW_IN/in/a/sub/x.txt > $POLYFLOW_OUT/y.txt\"]\ninputs = { in = \"a\" }\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    // The same size, right away (within the timestamp granularity of the stat cache's record): still seen.
    std::fs::write(d.path().join("in.txt"), "HELLO").unwrap();
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "a"]);
    assert!(out.contains("source files changed: ") && out.contains("in.txt modified"), "{out}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "b"]);
    assert!(out.contains("y.txt"), "{out}");
    let store = polyflow::store::Store::open(&d.path().join(".polyflow")).unwrap();
    let (_, json, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let key = rows.iter().find(|r| r["id"] == "b").unwrap()["key"].as_str().unwrap().to_string();
    let m = store.index().unwrap().artifact(&key).unwrap().unwrap();
    assert_eq!(store.blobs.read(&m.files["y.txt"].digest).unwrap(), b"HELLO");
}

/// `plan` and `run` with a backend this build lacks stop before anything runs, naming the rebuild (before: the
/// run started the training node and failed there).
#[test]
#[cfg(not(feature = "cuda"))]
fn a_backend_not_built_in_is_a_preflight_problem() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.d]\nkind = \"dataset\"\nformat = \"cifar10\"\npath = \"c\"\n\
         [node.x]\nkind = \"image_prep\"\ninputs = { data = \"d\" }\n\
         [node.t]\nkind = \"task\"\ninputs = { data = \"x\" }\nsteps = 1\n\
         [node.m]\nkind = \"train\"\ninputs = { task = \"t\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("c")).unwrap();
    for cmd in ["plan", "run"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml", "--backend", "cuda"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("`cuda` (--backend or POLYFLOW_BACKEND) is not in this build") && err.contains("--features cuda"), "{err}");
        assert!(!err.contains("--set m.backend"), "{err}");
    }
    assert!(!d.path().join(".polyflow").exists());
    // With a shared cache the results may come from it (a laptop fetching a GPU machine's): not refused up front.
    std::fs::create_dir_all(d.path().join("cache/keys")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--backend", "cuda", "--cache", "cache"]);
    assert_eq!(code, 0, "{err}");
}

/// A failed program's last lines of output are kept with the failure (`show`), and still reach the terminal as
/// it runs, on standard error (standard output stays `--json`'s).
#[test]
fn a_failed_command_keeps_its_last_output_lines() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"head -c 300000 /dev/zero | tr '\\\\0' x; printf '\\\\n10%%\\\\r50%%\\\\r'; echo step one; echo 'boom: no such file' >&2; exit 7\"]\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("step one") && err.contains("boom: no such file"), "{err}");
    assert!(out.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{out}");
    let (_, show, _) = pf(d.path(), &["show", "p.toml", "c"]);
    // The kept lines, indented under the failure (the command itself, in `params`, holds the same words).
    assert!(show.contains("exited with code 7") && show.contains("its last 5 lines of output:"), "{show}");
    // In the order written: the error last, though it came on standard error after lines on standard output.
    assert!(show.contains("\n      step one\n      boom: no such file\n"), "{show}");
    // A progress bar's redraws are lines of their own, and a 300 kB line is kept cut short.
    assert!(show.contains("\n      50%\n") && show.len() < 20_000, "{}", &show[..show.len().min(3000)]);
}

/// A node made fresh by an identical node's artifact (it never ran itself) has that run as its own: after an
/// edit it is compared with the settings it was fresh under, not reported "never run".
#[test]
fn a_node_fresh_through_an_identical_one_explains_its_edits() {
    let d = tempfile::tempdir().unwrap();
    let p = |v: &str| format!("[node.a]\nkind = \"value\"\nvalue = 1\n\n[node.b]\nkind = \"value\"\nvalue = {v}\n");
    std::fs::write(d.path().join("p.toml"), p("1")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (_, show, _) = pf(d.path(), &["show", "p.toml", "b"]);
    assert!(show.contains("(as `a`, which has the same key)"), "{show}");
    std::fs::write(d.path().join("p.toml"), p("2")).unwrap();
    let (_, why, _) = pf(d.path(), &["status", "p.toml", "--why", "b"]);
    assert!(!why.contains("never run") && why.contains("value"), "{why}");
    assert!(why.contains("1") && why.contains("2"), "the change from 1 to 2: {why}");
}

#[test]
fn a_parameter_set_on_the_wrong_node_says_which_node_has_it() {
    let d = tempfile::tempdir().unwrap();
    let images = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("datasets/images.toml");
    let text = format!(
        "include = [\"{}\"]\n[node.x]\nkind = \"image_prep\"\ninputs = {{ data = \"digits\" }}\n[node.t]\nkind = \"task\"\ninputs = {{ data = \"x\" }}\n\
         [node.m]\nkind = \"train\"\ninputs = {{ task = \"t\" }}\n",
        images.display()
    );
    std::fs::write(d.path().join("p.toml"), text).unwrap();
    // A task's learning rate set on the training node that reads the task.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.lr=0.1"]);
    assert!(code == 2 && err.contains("unknown parameter `lr` for kind `train`"), "{err}");
    assert!(err.contains("`lr` is a parameter of its input `t` (kind `task`)") && err.contains("`--set t.lr=…`"), "{err}");
    // A parameter of a kind that is not an input: the kinds named; a typo: the nearest name.
    let (_, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "t.schedule=uniform"]);
    assert!(err.contains("`schedule` is a parameter of kind `cotrain`, not of `task`"), "{err}");
    let (_, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.mlpp=3"]);
    assert!(err.contains("did you mean `mlp`?"), "{err}");
    // Asked for JSON, the error is a JSON line on stdout too.
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--json", "--set", "m.lr=0.1"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        code == 2 && v["event"] == "error" && v["exit"] == 2 && v["message"].as_str().unwrap().contains("unknown parameter `lr`"),
        "{v}"
    );
    // A patch is whole numbers, one per axis.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.image_patch=[16.5,16]"]);
    assert!(code == 2 && err.contains("`image_patch`: 16.5 is not a whole number of at least 1"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.video_patch=[2,16]"]);
    assert!(code == 2 && err.contains("has 2 numbers; it takes 3 ([t, h, w])"), "{err}");
}

/// A `command` node is given its seed (`$POLYFLOW_SEED`), so the seed is in its key: replicates of `seeds = 3`
/// are three runs, each with its own seed, and `--set seed=…` makes them stale.
#[test]
fn command_replicates_run_each_with_its_own_seed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.r]\nkind = \"command\"\nseeds = 3\nrun = [\"sh\", \"-c\", \"echo $POLYFLOW_SEED > $POLYFLOW_OUT/seed.txt\"]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 ran"), "{err}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: std::collections::BTreeSet<String> = v.as_array().unwrap().iter().map(|n| n["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys.len(), 3, "{out}");
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "seed=5"]);
    assert_eq!(code, 0);
    assert!(out.contains("3 of 3 nodes would run"), "{out}");
}

/// The README's pipeline-format example is a pipeline that `plan` accepts, at the default and the smoke profile.
#[test]
fn the_readmes_pipeline_example_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## The pipeline format").expect("README has its pipeline format section")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let d = tempfile::tempdir().unwrap();
    let prep = root.join("pipelines/prep.toml");
    std::fs::write(d.path().join("ex.toml"), text.replacen("\"prep.toml\"", &format!("{:?}", prep.to_str().unwrap()), 1)).unwrap();
    for extra in [&[][..], &["--profile", "smoke"][..]] {
        let mut args = vec!["plan", "ex.toml"];
        args.extend(extra);
        let (code, out, err) = pf(d.path(), &args);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("st.digits") && out.contains("table"), "{out}");
    }
}

/// `status --stale` lists only the nodes not fresh; its last line counts them all. `--why` tells a long chain of
/// nodes, each waiting on the next, as one line, not a staircase a thousand levels deep.
#[test]
fn status_lists_only_stale_nodes_and_why_folds_chains() {
    let d = tempfile::tempdir().unwrap();
    let mut p = "[node.c0]\nkind = \"value\"\nvalue = 1\n".to_string();
    for i in 1..50 {
        p.push_str(&format!("[node.c{i}]\nkind = \"value\"\nvalue = {i}\ninputs = {{ after = \"c{}\" }}\n", i - 1));
    }
    std::fs::write(d.path().join("p.toml"), &p).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), p.replacen("value = 1\n", "value = 100\n", 1)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "c0"]).0, 0);
    let (code, out, _) = pf(d.path(), &["status", "p.toml", "--stale"]);
    assert_eq!(code, 0);
    assert!(out.contains("c1 ") && out.contains("c49") && !out.contains("c0 "), "{out}");
    assert!(out.contains("1 of 50 nodes fresh (those not listed: --stale)"), "{out}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "c49"]);
    assert!(out.contains("c48 (value): stale … c1 (48 nodes, each waiting only on the next)"), "{out}");
    assert!(out.lines().count() < 12 && out.lines().all(|l| l.len() < 200), "{out}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json", "--stale"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().len(), 49);
    // JSON: the chain is one entry listing its nodes, not 48 levels of nesting.
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "c49", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &v[0]["waits_on"][0];
    assert_eq!(first["chain"].as_array().map(Vec::len), Some(48), "{out}");
    assert_eq!(first["id"], "c1", "the chain's last node, explained: {out}");
}

/// `gc` past a screenful of artifacts counts them by declaration (`-v`: each one).
#[test]
fn gc_counts_many_artifacts_by_declaration() {
    let d = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    let p = format!("[node.v]\nkind = \"value\"\nmatrix = {{ i = [{}] }}\nvalue = \"{{i}}\"\ncomment = \"a\"\n", values.join(", "));
    std::fs::write(d.path().join("p.toml"), &p).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), p.replace("\"a\"", "\"b\"")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert_eq!(code, 0);
    assert!(out.contains("Would remove 30 artifacts") && out.contains("earlier versions of the nodes of `v`"), "{out}");
    assert!(out.lines().count() < 5, "{out}");
    let (_, out, _) = pf(d.path(), &["gc", "p.toml", "-v"]);
    assert_eq!(out.matches("Would remove artifact ").count(), 30, "{out}");
}

/// A command's outputs are moved into the store, except what is the user's too: a symlinked file or folder, or a
/// hard link, is copied, and the user's files stay where they are.
#[test]
fn command_outputs_linked_to_user_files_are_copied_not_moved() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("data/sub")).unwrap();
    std::fs::write(d.path().join("data/sub/a.txt"), "a").unwrap();
    std::fs::write(d.path().join("data/b.txt"), "b").unwrap();
    std::fs::write(d.path().join("data/c.txt"), "c").unwrap();
    let run = "ln -s \\\"$PWD/data/sub\\\" $POLYFLOW_OUT/sub && ln -s \\\"$PWD/data/b.txt\\\" $POLYFLOW_OUT/b.txt && ln data/c.txt $POLYFLOW_OUT/c.txt && echo own > $POLYFLOW_OUT/own.txt && ln -s own.txt $POLYFLOW_OUT/z_latest.txt";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"{run}\"]\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    for (f, text) in [("data/sub/a.txt", "a"), ("data/b.txt", "b"), ("data/c.txt", "c")] {
        assert_eq!(std::fs::read_to_string(d.path().join(f)).unwrap(), text, "{f} stays the user's");
    }
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "c"]);
    // A link to a sibling output (sorting after it) is read before its target is moved into the store.
    for f in ["sub/a.txt", "b.txt", "c.txt", "own.txt", "z_latest.txt"] {
        assert!(out.contains(f), "{f}: {out}");
    }
    // The store holds regular files of its own: changing the user's file changes no blob.
    std::fs::write(d.path().join("data/c.txt"), "changed").unwrap();
    let (code, out, _) = pf(d.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
}

/// Asked for JSON, even an option the argument parser refuses is a JSON error line on stdout (exit 2).
#[test]
fn a_misspelt_option_with_json_is_a_json_error_line() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--json", "--bogus"]);
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(v["event"] == "error" && v["exit"] == 2 && v["message"].as_str().unwrap().contains("--bogus"), "{v}");
    assert!(err.contains("unexpected argument"), "{err}");
    let (code, out, _) = pf(d.path(), &["status", "--help", "--json"]);
    assert!(code == 0 && !out.contains("\"event\""), "{out}");
    // A command without JSON output (`kinds`) answers in text: `--json` is the misspelt option there.
    let (code, out, err) = pf(d.path(), &["kinds", "--json"]);
    assert!(code == 2 && out.is_empty() && err.contains("--json"), "{out}{err}");
    // `gc --json` without a store: nothing to collect, said in JSON.
    let (code, out, _) = pf(d.path(), &["gc", "p.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(code == 0 && v["artifacts"] == json!([]) && v["bytes"] == 0, "{v}");
    // … and its failures are a JSON error line, as any JSON command's (a store there: a pipeline file missing).
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    for args in [&["gc", "nope.toml", "--json"][..], &["verify", "nope.toml", "--json"][..]] {
        let (code, out, _) = pf(d.path(), args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(code == 2 && v["event"] == "error" && v["exit"] == 2, "{args:?}: {v}");
    }
}

/// Matrix values in any script keep their letters in the ids (they used to become `_` and collide).
#[test]
fn matrix_values_in_any_script_are_ids_of_their_own() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.v]\nkind = \"value\"\nmatrix = { lang = [\"日本\", \"中文\", \"a b\"] }\nvalue = \"{lang}\"\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(out.contains("v.日本") && out.contains("v.中文") && out.contains("v.a_b"), "{out}");
}

/// A node declared in two files is one node only where both declarations mean the same: a `path` is compared
/// as the folder it names (`./data` and `data`), and a command's `run`/`deps` with the folder it runs in.
#[test]
fn declarations_in_two_files_are_one_node_only_when_they_mean_the_same() {
    let d = tempfile::tempdir().unwrap();
    let ds = |p: &str| format!("[node.d]\nkind = \"dataset\"\nformat = \"idx\"\npath = \"{p}\"\n");
    std::fs::write(d.path().join("q.toml"), ds("./data")).unwrap();
    std::fs::write(d.path().join("p.toml"), format!("include = [\"q.toml\"]\n{}", ds("data"))).unwrap();
    let (_, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(!err.contains("declared twice") && !out.contains("declared twice"), "{out}{err}");
    // The same command text in another folder runs there: two meanings, refused.
    std::fs::create_dir_all(d.path().join("sub")).unwrap();
    let c = "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"cp in.txt $POLYFLOW_OUT/x\"]\n";
    std::fs::write(d.path().join("sub/a.toml"), c).unwrap();
    std::fs::write(d.path().join("r.toml"), format!("include = [\"sub/a.toml\"]\n{c}")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "r.toml"]);
    assert!(code == 2 && err.contains("node `c` is declared twice, differently"), "{err}");
    // The same file included twice is one declaration.
    std::fs::write(d.path().join("s.toml"), "include = [\"sub/a.toml\", \"t.toml\"]\n").unwrap();
    std::fs::write(d.path().join("t.toml"), "include = [\"sub/a.toml\"]\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "s.toml"]);
    assert_eq!(code, 0, "{err}");
}

/// `{seed}` in a command's argv is the seed the replicate runs with (`$POLYFLOW_SEED`), not its index; replicates
/// whose argv differs only by it are not reported as differing; a `{name}` naming no variable is passed as
/// written, with a warning naming where it is and the variables there are.
#[test]
fn seed_placeholders_are_the_seed_and_unknown_ones_are_warned_of() {
    let d = tempfile::tempdir().unwrap();
    let script = "echo \"$0 $POLYFLOW_SEED $1\" > $POLYFLOW_OUT/s";
    std::fs::write(
        d.path().join("p.toml"),
        format!("seed = 7\n[node.c]\nkind = \"command\"\nseeds = 2\nmatrix = {{ lr = [0.1] }}\nrun = [\"sh\", \"-c\", {script:?}, \"{{seed}}\", \"{{lrr}}\"]\n"),
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("differ in"), "replicates reported as differing: {err}");
    assert_eq!(err.matches("`{lrr}` in `run` of `c` (p.toml:6:").count(), 1, "{err}");
    assert!(err.contains("its variables: {lr}, {replicate}, {seed}"), "{err}");
    // `status` says it too (on standard error: `--json` stays parseable).
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("`{lrr}` in `run` of `c`") && serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{err}");
    for (id, want) in [("c.0.1.s0", "7 7 {lrr}"), ("c.0.1.s1", "8 8 {lrr}")] {
        let (code, out, err) = pf(d.path(), &["show", "p.toml", id]);
        assert_eq!(code, 0, "{err}");
        let blob = out.lines().find(|l| l.trim_start().starts_with("s ")).and_then(|l| l.split_whitespace().last()).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join(blob)).unwrap().trim(), want);
    }
    // `compare --group` averages them without a note; an override of one replicate's `run` is a difference of
    // settings, said so by `plan` and `compare`.
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "c", "--group"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("differ in") && !err.contains("differ in"), "{out}{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "c.0.1.s1.run=[\"true\"]"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the replicates of `c.0.1` differ in `run`"), "{err}");
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "c", "--group", "--set", "c.0.1.s1.run=[\"true\"]"]);
    assert_eq!(code, 0, "{err}");
    assert!(format!("{out}{err}").contains("the replicates of `c.0.1` differ in `run` besides their seed"), "{out}{err}");
    // An override of an expanded node or of a group has that node's variables substituted: the group's
    // replicates still differ by design only; one replicate's `{seed}` override is a difference of settings.
    let set = format!("c.0.1.run=[\"sh\", \"-c\", {script:?}, \"{{seed}}\", \"{{lr}}\"]");
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--set", &set]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("differ in") && !err.contains("names no variable"), "{err}");
    let (_, out2, _) = pf(d.path(), &["show", "p.toml", "c.0.1.s1", "--set", &set]);
    let blob = out2.lines().find(|l| l.trim_start().starts_with("s ")).and_then(|l| l.split_whitespace().last()).unwrap();
    assert_eq!(std::fs::read_to_string(d.path().join(blob)).unwrap().trim(), "8 8 0.1", "{out}");
    let (_, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "c.0.1.s1.run=[\"echo\", \"{seed}\", \"{lrr}\"]"]);
    assert!(err.contains("the replicates of `c.0.1` differ in `run`") && err.contains("`{lrr}` in `run` of `c`"), "{err}");
}

/// A `deps` entry that does not exist is found by `plan` and `run` before anything runs (exit 2, nothing
/// written), once for all the expansions of its declaration; a file added to a listed folder is named by
/// `status --why` as written in `deps` (`./data/new.txt added`, whether `deps` says `data` or `data/`).
#[test]
fn command_deps_are_checked_before_running_and_named_when_they_change() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("data")).unwrap();
    std::fs::write(d.path().join("data/a.txt"), "a").unwrap();
    let node = |deps: &str| {
        format!("[node.c]\nkind = \"command\"\nseeds = 2\nrun = [\"sh\", \"-c\", \"echo '{{\\\"a\\\": 1}}' > $POLYFLOW_OUT/metrics.json\"]\ndeps = {deps}\n")
    };
    std::fs::write(d.path().join("p.toml"), node("[\"data/\", \"missing.py\"]")).unwrap();
    for cmd in ["plan", "run"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert_eq!(err.matches("`deps` lists a file or folder not there: `missing.py`").count(), 1, "{cmd}: {err}");
        // Placed at `deps` (line 5), where the fix goes.
        assert!(err.contains("`c` (2 nodes, command, p.toml:5:1)"), "{cmd}: {err}");
        assert!(!d.path().join(".polyflow").exists(), "{cmd} wrote a store");
    }
    // `--json` lists it as the text does: once, with the nodes that share it.
    let (code, out, _) = pf(d.path(), &["plan", "p.toml", "--json"]);
    let e = events(&out).pop().unwrap();
    assert!(code == 2 && e["problems"].as_array().unwrap().len() == 1, "{out}");
    assert_eq!(e["problems"][0]["node"], "c", "{out}");
    assert_eq!(e["problems"][0]["nodes"], json!(["c.s0", "c.s1"]), "{out}");
    assert_eq!(e["problems"][0]["at"], json!({"file": "p.toml", "line": 5, "col": 1}), "{out}");
    std::fs::write(d.path().join("p.toml"), node("[\"data/\"]")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.path().join("data/new.txt"), "n").unwrap();
    let (code, out, err) = pf(d.path(), &["status", "p.toml", "--why", "c.s0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" data/new.txt added"), "{out}");
    // `compare`'s footnote on the outdated values names it too.
    let (code, out, err) = pf(d.path(), &["compare", "p.toml", "c"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("source files changed: data/new.txt added"), "{out}");
    // What a listed folder holds must be readable as well: a dangling symlink in it is found before running.
    std::os::unix::fs::symlink("/nonexistent/target", d.path().join("data/dl")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("data/dl: a symlink whose target does not exist"), "{err}");
}

/// `show` on a command node prints the `metrics.json` it wrote (what `compare` reads), or says it is not JSON.
#[test]
fn show_prints_a_command_nodes_metrics() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{\\\"test\\\": {\\\"acc\\\": 0.79}}' > $POLYFLOW_OUT/metrics.json\"]\n\
         [node.bad]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo 'acc=0.79' > $POLYFLOW_OUT/metrics.json\"]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "c"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("metrics.json:\n{\n  \"test\": {\n    \"acc\": 0.79"), "{out}");
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "bad"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("metrics.json: not JSON"), "{out}");
}

/// A command that wrote nothing into `$POLYFLOW_OUT` is cached as done, with a note saying its artifact is empty
/// (a program writing its results elsewhere is found at once, not when its dependants find no input).
#[test]
fn a_command_that_writes_nothing_is_noted() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.e]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo hi > elsewhere.txt\"]\n").unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Note e: `sh` wrote no file into $POLYFLOW_OUT: its artifact is empty"), "{err}");
}

/// A FIFO or a socket left in `$POLYFLOW_OUT` fails the node at once, naming the file and what it is (reading
/// the FIFO waited forever; the socket was reported as a store error, exit 4); nothing is cached.
#[test]
fn a_fifo_or_socket_among_the_outputs_fails_the_node_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let sock = "python3 -c \"import socket,os; socket.socket(socket.AF_UNIX).bind(os.environ['POLYFLOW_OUT'] + '/sock')\"";
    std::fs::write(
        d.path().join("p.toml"),
        format!(
            "[node.f]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkfifo $POLYFLOW_OUT/f; echo x > $POLYFLOW_OUT/ok\"]\n\
             [node.s]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {sock:?}]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "p.toml"]).current_dir(d.path()).stdin(std::process::Stdio::null());
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Stderr read on a thread, the exit waited for with a deadline: a run that hangs (opening the FIFO waits for
    // a writer) is killed and fails the test instead of blocking it forever.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("hung on a FIFO or socket: {}", reader.join().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("$POLYFLOW_OUT/f is a FIFO, not a regular file"), "{err}");
    assert!(err.contains("$POLYFLOW_OUT/sock is a socket, not a regular file"), "{err}");
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    assert!(!st.contains("\"fresh\""), "{st}");
}

/// A table of one's own study: `key` columns read any number a `command` writes into its metrics.json, seeds
/// aggregated as for the paper's tables; a loss column ranks the lowest first and shows the values as reported;
/// a misspelt key is an error saying what the runs report, not a column of dashes.
#[test]
fn a_table_reads_command_metrics_by_key() {
    let d = tempfile::tempdir().unwrap();
    // Accuracy grows with lr; the loss falls with it; seeds move both a little.
    let script = "python3 -c \"import os,sys; lr=float(sys.argv[1]); s=int(os.environ['POLYFLOW_SEED']); \
open(os.environ['POLYFLOW_OUT']+'/metrics.json','w').write('{\\\"test\\\": {\\\"acc\\\": %f, \\\"loss\\\": %f}}' % (0.5+lr+0.002*s, 2-lr-0.002*s))\" {lr}";
    let table = |key: &str| {
        format!(
            "[node.c]\nkind = \"command\"\nseeds = 2\nmatrix = {{ lr = [0.1, 0.3] }}\nrun = [\"sh\", \"-c\", {script:?}]\n\
             [node.t]\nkind = \"table\"\ninputs = {{ runs = [\"c\"] }}\ntitle = \"Sweep\"\ncaption = \"Two seeds.\"\ncounts = false\n\
             rows = [{{ label = \"lr 0.1\", nodes = [\"c.0.1\"] }}, {{ label = \"lr 0.3\", nodes = [\"c.0.3\"] }}]\n\
             columns = [{{ key = \"{key}\", label = \"Acc\" }}, {{ key = \"test.loss\", label = \"Loss\", scale = 1, digits = 3, better = \"lower\" }}]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), table("test.acc")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["show", "p.toml", "t"]);
    assert_eq!(code, 0, "{err}");
    // Acc in percent, mean ± std over the two seeds; the best acc is lr 0.3, and so is the best (lowest) loss.
    let row = |label: &str| out.lines().find(|l| l.contains(label) && l.contains("┆")).unwrap_or_else(|| panic!("{out}")).to_string();
    assert!(row("lr 0.1").contains("60.1 ± 0.1") && row("lr 0.1").contains("1.899 ± 0.001"), "{out}");
    assert!(row("lr 0.3").contains("**80.1 ± 0.1**") && row("lr 0.3").contains("**1.699 ± 0.001**"), "{out}");
    std::fs::write(d.path().join("p.toml"), table("test.accuracy")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("column `Acc`: no run of this table reports `test.accuracy`") && err.contains("test.acc, test.loss"), "{err}");
    // A number written as a string is said to be one.
    std::fs::write(d.path().join("s.toml"), "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{\\\"acc\\\": \\\"0.5\\\"}' > $POLYFLOW_OUT/metrics.json\"]\n[node.t]\nkind = \"table\"\ninputs = { runs = [\"c\"] }\ntitle = \"T\"\ncaption = \"c\"\ncounts = false\nrows = [{ label = \"R\", nodes = [\"c\"] }]\ncolumns = [{ key = \"acc\" }]\n").unwrap();
    let (code, _, err) = pf(d.path(), &["run", "s.toml"]);
    assert!(code == 2 && err.contains("`c` reports `acc` as \"0.5\", which is not a number"), "{err}");
    // A column names a task or a key, not both; checked before anything runs.
    std::fs::write(d.path().join("p.toml"), table("test.acc").replace("key = \"test.acc\"", "key = \"test.acc\", task = \"c\"")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("either a `task`"), "{err}");
    // A replicate that does not report the number: the cell is over the others, and the run says so.
    std::fs::write(
        d.path().join("q.toml"),
        "[node.r]\nkind = \"command\"\nseeds = 3\nrun = [\"sh\", \"-c\", \"if [ $POLYFLOW_SEED != 2 ]; then echo '{\\\"acc\\\": 0.5}' > $POLYFLOW_OUT/metrics.json; else echo '{}' > $POLYFLOW_OUT/metrics.json; fi\"]\n\
         [node.t]\nkind = \"table\"\ninputs = { runs = [\"r\"] }\ntitle = \"T\"\ncaption = \"c\"\ncounts = false\nrows = [{ label = \"R\", nodes = [\"r\"] }]\ncolumns = [{ key = \"acc\" }]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "q.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("row `R`, column `acc`: r.s2 report(s) no `acc`, so the cell is over 2 of 3 replicates"), "{err}");
}

/// A kind override of a misspelt kind is an error whether its profile is in use or not, and in a `--config`
/// file (it was checked only in profiles not in use, and did nothing, silently, where it mattered).
#[test]
fn a_misspelt_kind_override_is_an_error_where_it_applies() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), format!("{P}[profile.smoke.kind.valeu]\nvalue = 3\n")).unwrap();
    for args in [&["plan", "p.toml"][..], &["plan", "p.toml", "-p", "smoke"]] {
        let (code, _, err) = pf(d.path(), args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("profile `smoke`: unknown node kind `valeu`") && err.contains("`value`"), "{args:?}: {err}");
    }
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    std::fs::write(d.path().join("kc.toml"), "[kind.valeu]\nvalue = 5\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--config", "kc.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kc.toml:1:") && err.contains("override: unknown node kind `valeu`"), "{err}");
    // A kind no node of this pipeline has, spelt right, is no error (a shared config file for many pipelines).
    std::fs::write(d.path().join("kc.toml"), "[kind.task]\nsteps = 5\n").unwrap();
    assert_eq!(pf(d.path(), &["plan", "p.toml", "--config", "kc.toml"]).0, 0);
}

/// `--force` of a node outside the run's selection (its targets and what they need) is an error saying so; it
/// forced nothing, silently.
#[test]
fn force_outside_the_targets_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n[node.b]\nkind = \"value\"\nvalue = 2\n").unwrap();
    for cmd in ["run", "plan"] {
        let (code, _, err) = pf(d.path(), &[cmd, "p.toml", "a", "--force", "b"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("`b` is not among the nodes this run selects") && err.contains("add `b` to the targets"), "{err}");
    }
    assert!(!d.path().join(".polyflow").exists());
    assert_eq!(pf(d.path(), &["run", "p.toml", "a", "b", "--force", "b"]).0, 0);
}

/// An output file whose name is not UTF-8 fails its node, named (before, it was stored under a rewritten name,
/// and two such names became one file).
#[test]
fn an_output_name_that_is_not_utf8_fails_the_node_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let script = "echo one > \"$POLYFLOW_OUT/f$(printf '\\377')\"; echo two > \"$POLYFLOW_OUT/f$(printf '\\376')\"";
    std::fs::write(d.path().join("p.toml"), format!("[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("whose name is not UTF-8 text") && err.contains("$POLYFLOW_OUT/f\\xf"), "{err}");
}

/// Arguments that are not UTF-8 (a store or pipeline path, a `--set` value) never panic: a path works, a text
/// argument is a usage error.
#[test]
fn arguments_that_are_not_utf8_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    let store = std::ffi::OsStr::from_bytes(b"st\xfd");
    let o = Command::new(BIN).arg("run").arg("p.toml").arg("--store").arg(store).current_dir(d.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let set = std::ffi::OsStr::from_bytes(b"a.value=\xff");
    let o = Command::new(BIN).args(["run", "p.toml", "--json", "--set"]).arg(set).current_dir(d.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"event\":\"error\""));
}

/// An export that cannot be written (onto a folder; into a folder this user cannot write) is refused before any
/// file of it is written, saying what to do, and the table is printed all the same: it is computed and cached.
#[test]
fn an_export_that_cannot_be_written_still_prints_the_table() {
    let d = tempfile::tempdir().unwrap();
    let p = "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{\\\"acc\\\": 0.5}' > $POLYFLOW_OUT/metrics.json\"]\n\
             [node.t]\nkind = \"table\"\ninputs = { runs = [\"a\"] }\ntitle = \"T\"\ncaption = \"c\"\n\
             rows = [{ label = \"A\", nodes = [\"a\"] }]\ncolumns = [{ key = \"acc\", label = \"Acc\" }]\nexport = \"out/t\"\n";
    std::fs::write(d.path().join("p.toml"), p).unwrap();
    std::fs::create_dir_all(d.path().join("out/t.md")).unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`t` exports to out/t.md, which is a folder: nothing was exported"), "{err}");
    assert!(out.contains("50.0"), "the table is printed: {out}");
    // Over command nodes, which count no model: no #Models / #Params columns of dashes.
    assert!(!out.contains("#Models") && !out.contains("#Params"), "{out}");
    assert!(!d.path().join("out/t.csv").exists());
    std::fs::remove_dir(d.path().join("out/t.md")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(d.path().join("out/t.csv").exists());
}

/// `plan --force-all` gives the reason the run then gives: a node downstream of a forced one is "forced", not
/// "waits on".
#[test]
fn plan_gives_forced_nodes_the_reason_the_run_gives() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--force-all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would run b (value): forced") && !out.contains("waits on"), "{out}");
    let (_, _, err) = pf(d.path(), &["run", "p.toml", "--force-all"]);
    assert!(err.contains("Running b (value): forced"), "{err}");
}

/// A command's `metrics.json` that is not JSON is said when the node runs (kept: its other outputs may be hours
/// of work), and a seed group's metric over fewer replicates than the group's `n` says its own count.
#[test]
fn a_metrics_file_that_is_not_json_is_said_at_once_and_counted_out() {
    let d = tempfile::tempdir().unwrap();
    let script = "if [ $POLYFLOW_SEED = 0 ]; then echo '{\"acc\": .1}'; else echo \"{\\\"acc\\\": $POLYFLOW_SEED}\"; fi > $POLYFLOW_OUT/metrics.json";
    std::fs::write(d.path().join("p.toml"), format!("[node.t]\nkind = \"command\"\nseeds = 3\nrun = [\"sh\", \"-c\", {script:?}]\n"))
        .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("t.s0: `sh` wrote a metrics.json that is not JSON"), "{err}");
    assert_eq!(err.matches("not JSON").count(), 1, "{err}");
    let (_, out, _) = pf(d.path(), &["compare", "p.toml", "t", "--group"]);
    assert!(out.contains("n=3") && out.contains("1.5000 ± 0.7071 (n=2)"), "{out}");
}

/// A table depends on the runs its rows name, not on every node of `runs = ["sweep"]`: a failed run no row names
/// does not keep it from being made, nor does a change to one make it stale.
#[test]
fn a_table_depends_only_on_the_runs_its_rows_name() {
    let d = tempfile::tempdir().unwrap();
    let p = |bad: &str| {
        format!(
            "[node.train]\nkind = \"command\"\nmatrix = {{ lr = [0.01, 0.1] }}\nseeds = 2\n\
             run = [\"sh\", \"-c\", \"if [ {{lr}} = {bad} ] && [ $POLYFLOW_SEED = 1 ]; then exit 1; fi; echo \\\"{{\\\\\\\"acc\\\\\\\": $POLYFLOW_SEED}}\\\" > $POLYFLOW_OUT/metrics.json\"]\n\
             [node.table]\nkind = \"table\"\ninputs = {{ runs = [\"train\"] }}\ntitle = \"T\"\ncaption = \"c.\"\n\
             rows = [{{ label = \"lr=0.01\", nodes = [\"train.0.01\"] }}]\ncolumns = [{{ key = \"acc\", scale = 1, digits = 3 }}]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), p("0.1")).unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Failed train.0.1.s1") && err.contains("Finished table"), "{err}");
    assert!(out.contains("0.500 ± 0.707"), "{out}");
    // Another failure condition for lr = 0.1 only: the table stays fresh.
    std::fs::write(d.path().join("p.toml"), p("0.10")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("Running table") && err.contains("Running train.0.1.s1"), "{err}");
}

/// Several failures are listed together after the summary, each with how its program ended and its last line.
#[test]
fn failures_are_listed_after_the_summary() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.f]\nkind = \"command\"\nseeds = 2\nrun = [\"sh\", \"-c\", \"echo loss is NaN; exit 3\"]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    let after: Vec<&str> = err.lines().skip_while(|l| !l.contains("Done")).skip(1).collect();
    assert_eq!(after.len(), 2, "{err}");
    assert!(after.iter().all(|l| l.contains("exited with code 3 — loss is NaN")), "{err}");
}

/// A new replicate has no run of its own: `plan` estimates it from its declaration's runs, not as unknown.
#[test]
fn plan_estimates_a_new_seed_from_its_siblings() {
    let d = tempfile::tempdir().unwrap();
    let p =
        |n: u32| format!("[node.t]\nkind = \"command\"\nseeds = {n}\nrun = [\"sh\", \"-c\", \"echo $POLYFLOW_SEED > $POLYFLOW_OUT/o\"]\n");
    std::fs::write(d.path().join("p.toml"), p(2)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), p(3)).unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would run t.s2 (command): never run [no run of its own: about"), "{out}");
    assert!(!out.contains("time unknown"), "{out}");
}

/// A node that failed and was then changed is "never succeeded", with how its last attempt ended, not "never run".
#[test]
fn a_failed_node_changed_since_says_it_never_succeeded() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.f]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"exit 3\"]\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 1);
    std::fs::write(d.path().join("p.toml"), "[node.f]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"exit 4\"]\n").unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("never succeeded: its last attempt, with other settings, failed (`sh -c exit 3` exited with code 3)"), "{out}");
}

/// A new store needs a folder of its own: a folder of other files, one whose store part is no folder, a path under
/// a file and a link to nothing are refused (exit 2), nothing made there; hidden files are let be.
#[test]
fn a_new_store_needs_a_folder_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    std::fs::create_dir_all(d.path().join("junk")).unwrap();
    std::fs::write(d.path().join("junk/blobs"), "").unwrap();
    std::fs::write(d.path().join("afile"), "").unwrap();
    std::os::unix::fs::symlink("/nonexistent-polyflow", d.path().join("dangling")).unwrap();
    for (store, says) in [
        (".", "is a folder of other files (`afile`, `dangling`, `junk` and 1 more), not a store"),
        ("junk", "holds a `blobs` that is not a store's (a folder)"),
        ("afile/sub", "a folder above it is a file"),
        ("dangling", "is a link to nothing"),
    ] {
        let (code, _, err) = pf(d.path(), &["run", "p.toml", "--store", store]);
        assert!(code == 2 && err.contains(says), "{store}: {code} {err}");
    }
    assert!(!d.path().join("index").exists() && !d.path().join("junk/index").exists());
    std::fs::create_dir_all(d.path().join("hidden")).unwrap();
    std::fs::write(d.path().join("hidden/.gitignore"), "*\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "hidden"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "hidden"]).0, 0);
}

#[test]
fn the_run_compared_with_is_the_nearest_one() {
    // Waiting on an input, a node set back to settings it ran under is compared with that run: no change of its
    // own is invented (it was compared with its latest run, another setting's).
    let d = tempfile::tempdir().unwrap();
    let p = |x: &str| {
        format!(
            "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"cat in.txt > $POLYFLOW_OUT/a.txt\"]\ndeps = [\"in.txt\"]\n\
             [node.b]\nkind = \"command\"\ninputs = {{ in = \"a\" }}\nrun = [\"sh\", \"-c\", \"echo $0 > $POLYFLOW_OUT/b.txt\", \"{x}\"]\n"
        )
    };
    std::fs::write(d.path().join("in.txt"), "1").unwrap();
    for x in ["x=1", "x=2"] {
        std::fs::write(d.path().join("p.toml"), p(x)).unwrap();
        assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    }
    std::fs::write(d.path().join("p.toml"), p("x=1")).unwrap();
    std::fs::write(d.path().join("in.txt"), "2").unwrap();
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "b"]);
    assert!(out.contains("waits on a") && !out.contains("changed \"x=2\""), "{out}");

    // Of two runs that differ from now in the sources, the one with fewer changed `deps` entries: the original
    // script with one data file added, not an experiment's other script.
    let e = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(e.path().join("d")).unwrap();
    std::fs::write(e.path().join("d/x.txt"), "x").unwrap();
    std::fs::write(e.path().join("p.toml"), "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"s.sh\"]\ndeps = [\"s.sh\", \"d\"]\n").unwrap();
    let script = |acc: u32| format!("echo '{{\"acc\": {acc}}}' > $POLYFLOW_OUT/metrics.json\n");
    for acc in [1, 2] {
        std::fs::write(e.path().join("s.sh"), script(acc)).unwrap();
        assert_eq!(pf(e.path(), &["run", "p.toml"]).0, 0);
    }
    std::fs::write(e.path().join("s.sh"), script(1)).unwrap();
    std::fs::write(e.path().join("d/README"), "note").unwrap();
    let (_, why, _) = pf(e.path(), &["status", "p.toml", "--why", "a"]);
    assert!(why.contains("d/README added") && !why.contains("s.sh modified"), "{why}");
    let (_, cmp, _) = pf(e.path(), &["compare", "p.toml", "a", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&cmp).unwrap();
    assert_eq!(v["nodes"][0]["earlier_metrics"]["acc"], json!(1), "{v}");
}

/// A pipeline of one `command` node `a` writing `{"acc": ACC}` as its metrics (`loss` 0.5 too) and a table `t`
/// over it, with `table` appended to the table's declaration (`export = …`, its `columns`).
fn acc_table(acc: &str, table: &str) -> String {
    format!(
        "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{{\\\"acc\\\": {acc}, \\\"loss\\\": 0.5}}' > $POLYFLOW_OUT/metrics.json\"]\n\
         [node.t]\nkind = \"table\"\ninputs = {{ runs = [\"a\"] }}\ntitle = \"T\"\ncaption = \"c\"\n\
         rows = [{{ label = \"A\", nodes = [\"a\"] }}]\n{table}\n"
    )
}

#[test]
fn plan_lists_only_the_cells_a_table_has() {
    // A table over `command` nodes has no #Models/#Params columns (no row names a model): `plan` names none of
    // their cells either.
    let d = tempfile::tempdir().unwrap();
    let p = |v: &str| acc_table(v, "columns = [{ key = \"acc\" }]");
    std::fs::write(d.path().join("p.toml"), p("0.5")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("p.toml"), p("0.7")).unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("row 'A' × 'acc'") && !out.contains("#Models") && !out.contains("#Params"), "{out}");
}

#[test]
fn status_names_exported_files_a_run_would_rewrite() {
    // Set back to a setting that ran before, the table is fresh, but its exported file still shows the other
    // setting's numbers: `status` says so (only `run` rewrites exports).
    let d = tempfile::tempdir().unwrap();
    let p = |v: &str| acc_table(v, "export = \"out/t\"\ncolumns = [{ key = \"acc\" }]");
    for v in ["0.5", "0.9"] {
        std::fs::write(d.path().join("p.toml"), p(v)).unwrap();
        assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    }
    let (_, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(!err.contains("out/t"), "{err}");
    std::fs::write(d.path().join("p.toml"), p("0.5")).unwrap();
    let (code, out, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(code == 0 && out.contains("2 of 2 nodes fresh"), "{out}");
    assert!(err.contains("note: out/t.md is not what `t` holds now") && err.contains("`polyflow run` rewrites it"), "{err}");
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(!err.contains("out/t"), "{err}");
}

#[test]
fn a_table_columns_numbers_are_keyed_as_their_types_read_them() {
    // `scale = 1` and `scale = 1.0` are one setting: the table keeps its key.
    let d = tempfile::tempdir().unwrap();
    let p = |scale: &str| acc_table("0.7", &format!("columns = [{{ key = \"loss\", scale = {scale} }}]"));
    let key = |scale: &str| {
        std::fs::write(d.path().join("p.toml"), p(scale)).unwrap();
        let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().iter().find(|n| n["id"] == "t").unwrap()["key"].clone()
    };
    std::fs::write(d.path().join("p.toml"), p("1")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert!(key("1").is_string(), "the table's key is known once its run is fresh");
    assert_eq!(key("1"), key("1.0"));
    assert_ne!(key("1"), key("100"));
}

/// A `command` node's `params`: in its key, in the JSON file `$POLYFLOW_PARAMS` names, and substituted for
/// `{params.NAME}` in `run`; `--set NODE.params.NAME=VALUE` changes one value and keeps the others (the same key
/// as that edit in the file); a name `run` uses that `params` lacks is an error before anything runs. The program
/// is told its CPU threads (`$POLYFLOW_THREADS`, and `OMP_NUM_THREADS` for its thread pools).
#[test]
fn command_params_reach_the_program_and_one_is_set_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |lr: &str| {
        format!(
            "[node.train]\nkind = \"command\"\nresources = {{ cpus = 1 }}\n\
             run = [\"sh\", \"-c\", \"echo {{params.lr}} > $POLYFLOW_OUT/lr; cp $POLYFLOW_PARAMS $POLYFLOW_OUT/params.json; echo $POLYFLOW_THREADS $OMP_NUM_THREADS > $POLYFLOW_OUT/threads\"]\n\
             params = {{ lr = {lr}, epochs = 5, opt = {{ name = \"adam\" }} }}\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("0.1")).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(BIN).args(args).current_dir(d.path()).env_remove("OMP_NUM_THREADS").output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["run", "p.toml"]);
    let file = |name: &str| stored(d.path(), "train", name);
    assert_eq!(file("lr"), "0.1\n");
    assert_eq!(file("threads"), "1 1\n");
    let p: serde_json::Value = serde_json::from_str(&file("params.json")).unwrap();
    assert_eq!(p, json!({"lr": 0.1, "epochs": 5, "opt": {"name": "adam"}}));
    // One value from the command line: the others kept; the same key as the edit in the file.
    run(&["run", "p.toml", "--set", "train.params.lr=0.3", "--set", "train.params.opt.name=sgd"]);
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "train", "--set", "train.params.lr=0.3", "--set", "train.params.opt.name=sgd"]);
    assert!(out.contains(r#""params":{"epochs":5,"lr":0.3,"opt":{"name":"sgd"}}"#), "{out}");
    std::fs::write(d.path().join("p.toml"), pipe("0.3").replace("\"adam\"", "\"sgd\"")).unwrap();
    let (_, st, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(st.contains("fresh"), "the edit in the file has the --set's key: {st}");
    let (_, why, _) = pf(d.path(), &["status", "p.toml", "--why", "train", "--set", "train.params.lr=0.5"]);
    assert!(why.contains("params.lr changed 0.3 → 0.5"), "{why}");
    // A name `run` uses that `params` lacks, and a path through a value that is no table.
    std::fs::write(d.path().join("p.toml"), pipe("0.1").replace("{params.lr}", "{params.rate}")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("p.toml:") && err.contains("`{params.rate}`: the node's `params` has no `rate` (it has epochs, lr, opt)"),
        "{err}"
    );
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "train.params.lr.x=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`train.params.lr` is a float, not a table"), "{err}");
}

/// A `command` node's `export`: files its program wrote are copied into the project after a run (folders made,
/// bytes as written, even under `--set`, where the run says the copy is not the file's own settings); `status`
/// notes an exported file that is not the node's fresh artifact; an entry naming a file the program did not write
/// is an error before any file is written; `export` is outside the key.
#[test]
fn command_exports_copy_outputs_into_the_project() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |export: &str| {
        format!(
            "[node.train]\nkind = \"command\"\n\
             run = [\"sh\", \"-c\", \"echo '{{\\\"acc\\\": {{params.acc}}}}' > $POLYFLOW_OUT/metrics.json; mkdir $POLYFLOW_OUT/sub; head -c 300000 /dev/zero > $POLYFLOW_OUT/sub/w.bin\"]\n\
             params = {{ acc = 0.5 }}\nexport = {export}\n"
        )
    };
    let both = r#"{ "metrics.json" = "out/metrics.json", "sub/w.bin" = "out/model/w.bin" }"#;
    std::fs::write(d.path().join("p.toml"), pipe(both)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Wrote out/metrics.json") && err.contains("Wrote out/model/w.bin"), "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/metrics.json")).unwrap(), "{\"acc\": 0.5}\n");
    assert_eq!(std::fs::read(d.path().join("out/model/w.bin")).unwrap(), vec![0u8; 300_000]);
    // An experiment's export says what it was made with; status then notes the file is not the node's now.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--set", "train.params.acc=0.9"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Wrote out/metrics.json (made with --set train.params.acc=0.9: not the pipeline file's own settings)"), "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/metrics.json")).unwrap(), "{\"acc\": 0.9}\n");
    let (_, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(err.contains("out/metrics.json is not what `train` holds now") && !err.contains("w.bin"), "{err}");
    std::fs::remove_file(d.path().join("out/model/w.bin")).unwrap();
    let (_, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(err.contains("out/model/w.bin, which `train` exports, is not there"), "{err}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v[0]["outdated_exports"],
        json!([{"path": "out/metrics.json", "missing": false}, {"path": "out/model/w.bin", "missing": true}])
    );
    // Another destination changes no key: the node stays fresh and its file goes where it is told.
    std::fs::write(d.path().join("p.toml"), pipe(r#"{ "metrics.json" = "elsewhere/m.json" }"#)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 ran, 1 fresh") && err.contains("Wrote elsewhere/m.json"), "{err}");
    // A file the program did not write: an error naming what it did write, and nothing exported.
    std::fs::write(d.path().join("p.toml"), pipe(r#"{ "metrics.json" = "x/m.json", "model.bin" = "x/w.bin" }"#)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("its artifact has no `model.bin` (it holds metrics.json, sub/w.bin)"), "{err}");
    assert!(!d.path().join("x").exists(), "nothing exported");
    // A folder: each file below it, to the same place below the path (Snakemake's `directory()`); `status` names
    // one that is not there.
    std::fs::write(d.path().join("p.toml"), pipe(r#"{ "sub" = "folder/model" }"#)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code == 0 && err.contains("Wrote folder/model/w.bin"), "{err}");
    assert_eq!(std::fs::read(d.path().join("folder/model/w.bin")).unwrap(), vec![0u8; 300_000]);
    std::fs::remove_file(d.path().join("folder/model/w.bin")).unwrap();
    let (_, _, err) = pf(d.path(), &["status", "p.toml"]);
    assert!(err.contains("folder/model/w.bin, which `train` exports, is not there"), "{err}");
    // One the program leaves empty is not written: the run fails.
    std::fs::write(
        d.path().join("p.toml"),
        "[node.e]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkdir $POLYFLOW_OUT/d\"]\nexport = { \"d\" = \"out/d\" }\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code != 0 && err.contains("without writing `$POLYFLOW_OUT/d` (exported to out/d)"), "{err}");
    // A folder's files over the pipeline file, over a file its `deps` lists, or where another export goes: refused
    // before any file is written.
    let folder = |export: &str, more: &str| {
        format!(
            "[node.w]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkdir $POLYFLOW_OUT/f; echo G > $POLYFLOW_OUT/f/p.toml; echo 1 > $POLYFLOW_OUT/f/a.txt\"]\nexport = {export}\n{more}"
        )
    };
    std::fs::write(d.path().join("p.toml"), folder(r#"{ "f" = "." }"#, "")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code == 2 && err.contains("`w` exports to p.toml, a file this pipeline is read from: nothing was exported"), "{err}");
    assert!(std::fs::read_to_string(d.path().join("p.toml")).unwrap().starts_with("[node.w]") && !d.path().join("a.txt").exists());
    std::fs::create_dir_all(d.path().join("o")).unwrap();
    std::fs::write(d.path().join("o/a.txt"), "0\n").unwrap();
    std::fs::write(d.path().join("p.toml"), folder(r#"{ "f" = "o" }"#, "deps = [\"o/a.txt\"]\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code == 2 && err.contains("`w` exports to o/a.txt, but its `deps` lists `o/a.txt`"), "{err}");
    let other =
        "[node.v]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo 3 > $POLYFLOW_OUT/a.txt\"]\nexport = { \"a.txt\" = \"q/a.txt\" }\n";
    std::fs::write(d.path().join("p.toml"), folder(r#"{ "f" = "q" }"#, other)).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code == 2 && err.contains("exports to q/a.txt, where an export of `"), "{err}");
    assert!(!d.path().join("q").exists(), "nothing exported");
}

/// `plan` counts a stale node whose key another stale node has (a matrix entry identical to a declared node) as
/// the other's result, as a run computes it once.
#[test]
fn plan_counts_nodes_of_one_key_once() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.a]\nkind = \"value\"\nvalue = 1\n\n[node.m]\nkind = \"value\"\nmatrix = { v = [1, 2] }\nvalue = \"{v}\"\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would reuse m.1 (value): never run [same key as a: computed once, by it]"), "{out}");
    assert!(out.contains("2 of 3 nodes would run, 1 would be the result of another with the same key"), "{out}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["would_run"].as_u64(), &v["same_key_as"]["m.1"]), (Some(2), &json!("a")), "{out}");
    let (_, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(err.contains("2 ran, 1 fresh"), "{err}");
}

/// Matrix values in a command's `params` keep their type at any depth; `--set` reaches one entry of a table on a
/// matrix value's nodes; `{params.NAME}` is replaced in export paths; exports over the pipeline file or onto
/// another node's export are refused before anything runs; an experiment's export is said to be one, never "the
/// file's own results"; a user's OMP_NUM_THREADS wins for every thread pool.
#[test]
fn command_params_in_matrices_and_export_checks() {
    let d = tempfile::tempdir().unwrap();
    let pipe = "[node.train]\nkind = \"command\"\nmatrix = { lr = [0.1, 2] }\n\
                run = [\"sh\", \"-c\", \"cp $POLYFLOW_PARAMS $POLYFLOW_OUT/p.json; echo $OMP_NUM_THREADS $MKL_NUM_THREADS > $POLYFLOW_OUT/t\"]\n\
                params = { lr = \"{lr}\", opt = { lrs = [\"{lr}\"] }, tag = \"t{lr}\" }\n\
                export = { \"p.json\" = \"out/{params.tag}.json\" }\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let o = Command::new(BIN).args(["run", "p.toml"]).current_dir(d.path()).env("OMP_NUM_THREADS", "3").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("out/t0.1.json")).unwrap()).unwrap();
    assert_eq!(p, json!({"lr": 0.1, "opt": {"lrs": [0.1]}, "tag": "t0.1"}));
    assert!(d.path().join("out/t2.json").is_file(), "{err}");
    assert_eq!(stored(d.path(), "train.0.1", "t"), "3\n", "OMP_NUM_THREADS set by the user, MKL's left to follow it");
    // One entry of a table on one matrix value's nodes.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--set", "train.0.1.params.opt.lrs=[5]"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 ran, 1 fresh"), "{err}");
    assert!(err.contains("Note the files written come from the pipeline with --set"), "{err}");
    assert!(!err.contains("change none of the files"), "{err}");
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("out/t0.1.json")).unwrap()).unwrap();
    assert_eq!(p["opt"]["lrs"], json!([5]));
    // Both matrix values export to one path; an export over the pipeline file.
    for (export, want) in [
        ("\"out/same.json\"", "writes out/same.json, as `train.0.1` does: one would overwrite the other"),
        ("\"p.toml\"", "would write over p.toml, a file this pipeline is read from"),
        // Into the store (its index overwritten would lose every record), or a name no file can have.
        ("\".polyflow/index/db\"", "would write .polyflow/index/db into the store .polyflow"),
        ("\"x\\u0000y\"", "holds a NUL character"),
    ] {
        std::fs::write(d.path().join("p.toml"), pipe.replace("\"out/{params.tag}.json\"", export)).unwrap();
        let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want) && err.contains("nothing was run or written"), "{err}");
    }
    assert!(std::fs::read_to_string(d.path().join("p.toml")).unwrap().starts_with("[node.train]"));
}

/// `$POLYFLOW_SCRATCH`: a command's own folder across attempts of its key (DVC's `persist`). What a failed attempt
/// left there is there for the next (status and gc keep it, plan says the run resumes from it); it goes once the
/// node commits.
#[test]
fn a_commands_scratch_folder_outlives_a_failed_attempt() {
    let d = tempfile::tempdir().unwrap();
    let script = "if [ -f $POLYFLOW_SCRATCH/ckpt ]; then cat $POLYFLOW_SCRATCH/ckpt > $POLYFLOW_OUT/o; else echo half > $POLYFLOW_SCRATCH/ckpt; exit 3; fi";
    std::fs::write(d.path().join("p.toml"), format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml", "--why", "c"]);
    assert!(out.contains("an interrupted run's checkpoint at $POLYFLOW_SCRATCH (1 file) is kept"), "{out}");
    assert_eq!(pf(d.path(), &["gc", "p.toml", "--yes"]).0, 0);
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("resumes from an interrupted run's checkpoint at $POLYFLOW_SCRATCH (1 file)"), "gc kept it: {out}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(d.path(), "c", "o"), "half\n");
    let partial = d.path().join(".polyflow/partial");
    assert!(!partial.exists() || std::fs::read_dir(&partial).unwrap().count() == 0, "the scratch folder went with the commit");
}

/// A node asking for more CPUs than a local run's `-j` gives is told it runs on `-j` (one note per declaration), and
/// its program is told so.
#[test]
fn cpus_above_the_runs_slots_are_said() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.big]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo $POLYFLOW_THREADS > $POLYFLOW_OUT/t\"]\nresources = { cpus = 64 }\nmatrix = { v = [1, 2] }\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "-j", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.matches("note: 2 nodes of `big` ask for 64 CPUs (`resources.cpus`), and -j gives 2: each runs on 2").count(),
        1,
        "{err}"
    );
    assert_eq!(stored(d.path(), "big.1", "t"), "2\n");
    let (_, _, err) = pf(d.path(), &["plan", "p.toml", "-j", "64"]);
    assert!(!err.contains("ask for"), "{err}");
}

/// An export into a folder the node's `deps` lists is refused before running (the node would be stale after every
/// run); `{{params.NAME}}` is the text `{params.NAME}`.
#[test]
fn an_export_into_the_nodes_own_deps_is_refused_and_params_escape() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("data")).unwrap();
    let pipe = "[node.e]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo {{params.lr}} {params.lr} > $POLYFLOW_OUT/o\"]\n\
                params = { lr = 1 }\ndeps = [\"./data\"]\nexport = { o = \"data/sub/o.txt\" }\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("writes `data/sub/o.txt` into `./data`, which `deps` lists"), "{err}");
    std::fs::write(d.path().join("p.toml"), pipe.replace("data/sub/o.txt", "out/o.txt")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/o.txt")).unwrap(), "{params.lr} 1\n");
}

/// A matrix over files (`{ files = "raw/{sample}.csv" }`, Snakemake's `glob_wildcards`): one node per file, keyed
/// by its own file; a new file runs alone (and what reads them all again), a changed one reruns alone, a removed
/// one's node is gone from what reads them.
#[test]
fn a_matrix_over_files_runs_one_node_per_file_and_only_the_changed_ones() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("raw")).unwrap();
    for (f, text) in [("a", "1\n"), ("b", "2\n")] {
        std::fs::write(d.path().join(format!("raw/{f}.csv")), text).unwrap();
    }
    std::fs::write(
        d.path().join("p.toml"),
        "[node.clean]\nkind = \"command\"\nmatrix = { sample = { files = \"raw/{sample}.csv\" } }\n\
         run = [\"sh\", \"-c\", \"cp raw/{sample}.csv $POLYFLOW_OUT/out.csv\"]\ndeps = [\"raw/{sample}.csv\"]\n\
         [node.all]\nkind = \"command\"\ninputs = { in = \"clean\" }\n\
         run = [\"sh\", \"-c\", \"cat $POLYFLOW_IN/in/*/out.csv > $POLYFLOW_OUT/all.csv\"]\n",
    )
    .unwrap();
    let ran = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["run", "p.toml", "--json"];
        a.extend(args);
        let (code, out, err) = pf(d.path(), &a);
        assert_eq!(code, 0, "{err}");
        events(&out).iter().filter(|e| e["event"] == "finished").map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    let mut first = ran(&[]);
    first.sort();
    assert_eq!(first, ["all", "clean.a", "clean.b"]);
    assert_eq!(stored(d.path(), "all", "all.csv"), "1\n2\n");
    assert!(ran(&[]).is_empty());
    // A new file: its node, then what reads them all.
    std::fs::write(d.path().join("raw/c.csv"), "3\n").unwrap();
    let (_, plan, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(plan.contains("Would run clean.c (command): never run") && plan.contains("Plan 2 of 4"), "{plan}");
    assert_eq!(ran(&[]), ["clean.c", "all"]);
    // A changed file: its node alone, and what reads it.
    std::fs::write(d.path().join("raw/a.csv"), "10\n").unwrap();
    assert_eq!(ran(&[]), ["clean.a", "all"]);
    assert_eq!(stored(d.path(), "all", "all.csv"), "10\n2\n3\n");
    // A removed file: its node is gone; what read it runs over the others.
    std::fs::remove_file(d.path().join("raw/b.csv")).unwrap();
    assert_eq!(ran(&[]), ["all"]);
    assert_eq!(stored(d.path(), "all", "all.csv"), "10\n3\n");
    // No file at all: an error naming the pattern, nothing run.
    for f in ["a", "c"] {
        std::fs::remove_file(d.path().join(format!("raw/{f}.csv"))).unwrap();
    }
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(
        code == 2 && err.contains("p.toml:3:31") && err.contains("files pattern `raw/{sample}.csv`: it matches no file below `raw`"),
        "{err}"
    );
}

/// `retries`: a node whose work failed starts again (its `$POLYFLOW_SCRATCH` kept), up to N more times, each
/// attempt said (`retrying` events, `attempt 2 of 3` as the reason it starts); `--retries` is the default for nodes
/// without their own; bad input (a program that does not exist) is not retried; more than 10 is refused.
#[test]
fn retries_start_a_failed_node_again_until_its_attempts_run_out() {
    let d = tempfile::tempdir().unwrap();
    let flaky = "n=$(cat $POLYFLOW_SCRATCH/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > $POLYFLOW_SCRATCH/n; \
                 [ $n -ge 3 ] && echo $n > $POLYFLOW_OUT/x || exit 7";
    std::fs::write(
        d.path().join("p.toml"),
        format!(
            "[node.flaky]\nkind = \"command\"\nresources = {{ retries = 2 }}\nrun = [\"sh\", \"-c\", \"{flaky}\"]\n\
             [node.after]\nkind = \"command\"\ninputs = {{ in = \"flaky\" }}\nrun = [\"sh\", \"-c\", \"cp $POLYFLOW_IN/in/flaky/x $POLYFLOW_OUT/\"]\n\
             [node.broken]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo try >> $POLYFLOW_SCRATCH/tries; exit 3\"]\n\
             [node.missing]\nkind = \"command\"\nrun = [\"./no-such-program\"]\n"
        ),
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "flaky", "after", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ev = events(&out);
    let retrying: Vec<_> = ev.iter().filter(|e| e["event"] == "retrying").collect();
    assert_eq!(retrying.len(), 2, "{out}");
    assert_eq!((&retrying[1]["attempt"], &retrying[1]["attempts"]), (&json!(2), &json!(3)));
    assert!(retrying[0]["error"].as_str().unwrap().contains("exited with code 7"), "{out}");
    let started: Vec<&str> =
        ev.iter().filter(|e| e["event"] == "started" && e["id"] == "flaky").map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(started, ["never run", "attempt 2 of 3; never run", "attempt 3 of 3; never run"]);
    assert_eq!(stored(d.path(), "after", "x"), "3\n");
    // `--retries 1` for a node without its own: two attempts, then its failure, recorded as ever.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "broken", "--retries", "1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("Running broken").count(), 2, "{err}");
    assert!(err.contains("Retrying broken: attempt 1 of 2 failed after") && err.contains("exited with code 3"), "{err}");
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "broken"]);
    assert!(st.contains("failed"), "{st}");
    // Bad input fails the same way again: not retried.
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "missing", "--retries", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("Retrying"), "{err}");
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "missing", "--retries", "11"]);
    assert!(code == 2 && err.contains("11 is not in 0..=10"), "{err}");
    std::fs::write(d.path().join("q.toml"), "[node.v]\nkind = \"value\"\nresources = { retries = 11 }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "q.toml"]);
    assert!(code == 2 && err.contains("q.toml:3:25") && err.contains("`retries = 11`: at most 10"), "{err}");
}

/// A program's whole output is kept in the store (the latest attempt's of each outcome): `show` names it for a run that
/// succeeded and for one that failed (whose record keeps only the last lines); `gc` removes it with its artifact.
#[test]
fn a_programs_whole_output_is_kept_and_named_by_show_until_gc() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |n: u32, code: u32| {
        format!(
            "[node.talk]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"for i in $(seq 1 {n}); do echo line $i; done; echo err >&2; \
             echo x > $POLYFLOW_OUT/x; exit {code}\"]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe(50, 0)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let log_of = |out: &str| -> String {
        let line = out.lines().find(|l| l.starts_with("output: ")).unwrap_or_else(|| panic!("no output line: {out}"));
        let path = line["output: ".len()..].rsplit_once(" (").unwrap().0.to_string();
        std::fs::read_to_string(path).unwrap()
    };
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "talk"]);
    let log = log_of(&out);
    assert!(log.starts_with("line 1\n") && log.contains("line 50\nerr\n"), "{log}");
    // A failure: the record's last lines are 20 of them; the log has all of this attempt's.
    std::fs::write(d.path().join("p.toml"), pipe(40, 3)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 1);
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "talk"]);
    let log = log_of(&out);
    assert!(log.starts_with("line 1\n") && log.contains("line 40\nerr\n") && !log.contains("line 50"), "{log}");
    // `gc` keeps the failure's log while it is the node's last word.
    let (_, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert!(!out.contains("output log"), "{out}");
    // Once other settings succeed, the logs of the first run's artifact (no longer the node's latest) and of the
    // failure go.
    std::fs::write(d.path().join("p.toml"), pipe(30, 0)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(d.path(), &["gc", "p.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("Removing output log").count(), 2, "{out}");
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "talk"]);
    assert!(log_of(&out).contains("line 30\nerr\n"), "{out}");
    assert_eq!(std::fs::read_dir(d.path().join(".polyflow/logs")).unwrap().count(), 1);
}

/// `checkout` copies a node's artifact out of the store: its current one, or an earlier run's by key prefix (from
/// `runs`); files already in the folder are kept unless `--force`; a node not fresh says how to get one.
#[test]
fn checkout_copies_a_current_or_earlier_artifact_into_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |v: u32| {
        format!(
            "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkdir -p $POLYFLOW_OUT/sub; echo {v} > $POLYFLOW_OUT/sub/m.txt\"]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe(1)).unwrap();
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out"]);
    assert!(code == 2 && err.contains("`c` is not fresh") && err.contains("polyflow run p.toml c"), "{err}");
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, out, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out"]);
    assert!(code == 0 && out.contains("Copied 1 file of `c`"), "{out}{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/sub/m.txt")).unwrap(), "1\n");
    // Another setting: the first run's artifact by its key's first characters, over the file only with --force.
    let (_, runs, _) = pf(d.path(), &["runs", "p.toml", "c", "--json"]);
    let first: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let key = first["runs"][0]["key"].as_str().unwrap()[..10].to_string();
    std::fs::write(d.path().join("p.toml"), pipe(2)).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--key", &key]);
    assert!(code == 2 && err.contains("holds 1 of the artifact's files already (`sub/m.txt`)"), "{err}");
    assert_eq!(pf(d.path(), &["checkout", "p.toml", "c", "-o", "out"]).0, 2);
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--key", &key, "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/sub/m.txt")).unwrap(), "1\n");
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--key", "zz", "--force"]);
    assert!(code == 2 && err.contains("no run of `c` on record has a key starting with `zz`"), "{err}");
    // Never into the store, nor through a link: a link in the folder is replaced, its target left as it was.
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", ".polyflow/x"]);
    assert!(code == 2 && err.contains("inside the store"), "{err}");
    std::fs::write(d.path().join("mine.txt"), "mine\n").unwrap();
    std::fs::remove_file(d.path().join("out/sub/m.txt")).unwrap();
    std::os::unix::fs::symlink(d.path().join("mine.txt"), d.path().join("out/sub/m.txt")).unwrap();
    assert_eq!(pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--force"]).0, 0);
    assert_eq!(std::fs::read_to_string(d.path().join("mine.txt")).unwrap(), "mine\n");
    assert_eq!(std::fs::read_to_string(d.path().join("out/sub/m.txt")).unwrap(), "2\n");
    assert!(!std::fs::symlink_metadata(d.path().join("out/sub/m.txt")).unwrap().file_type().is_symlink());
    std::fs::remove_dir_all(d.path().join("out/sub")).unwrap();
    std::os::unix::fs::symlink(d.path().join(".polyflow"), d.path().join("out/sub")).unwrap();
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--force"]);
    assert!(code == 2 && err.contains("would be written outside out (a link in it leads out)"), "{err}");
    // A link to a folder elsewhere: refused too, and what it leads to is left as it was.
    std::fs::create_dir_all(d.path().join("victim")).unwrap();
    std::fs::remove_file(d.path().join("out/sub")).unwrap();
    std::os::unix::fs::symlink(d.path().join("victim"), d.path().join("out/sub")).unwrap();
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "out", "--force"]);
    assert!(code == 2 && err.contains("a link in it leads out"), "{err}");
    assert_eq!(std::fs::read_dir(d.path().join("victim")).unwrap().count(), 0);
    // A file where the folder should be; a key given empty.
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "mine.txt"]);
    assert!(code == 2 && err.contains("mine.txt is a file, not a folder"), "{err}");
    let (code, _, err) = pf(d.path(), &["checkout", "p.toml", "c", "-o", "o2", "--key", ""]);
    assert!(code == 2 && err.contains("`--key` is empty"), "{err}");
}

/// A forced re-run that fails (here on a file outside the key) leaves the artifact and the log of the run that made
/// it: `show` of the fresh node names that log, not the failed attempt's, which is kept beside it.
#[test]
fn a_failed_forced_rerun_leaves_the_artifacts_log() {
    let d = tempfile::tempdir().unwrap();
    let pipe = "[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"if [ -f fail ]; then echo broken; exit 3; fi; echo made; \
                echo x > $POLYFLOW_OUT/x\"]\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    std::fs::write(d.path().join("fail"), "").unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--force", "c"]).0, 1);
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "c"]);
    let line = out.lines().find(|l| l.starts_with("output: ")).unwrap_or_else(|| panic!("no output line: {out}"));
    let path = line["output: ".len()..].rsplit_once(" (").unwrap().0.to_string();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "made\n", "{out}");
    let logs: Vec<String> =
        std::fs::read_dir(d.path().join(".polyflow/logs")).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    assert!(logs.len() == 2 && logs.contains(&"broken\n".to_string()), "{logs:?}");
}

/// A row naming the k folds of a cross-validation (`nodes = ["cv.0", "cv.1", "cv.2"]`, each reporting the same
/// number): the cell is the mean ± std over all of them, said in a note and the caption (it showed fold 0's
/// number alone, bold, with no word).
#[test]
fn a_row_naming_several_nodes_that_report_a_number_averages_them_all() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.cv]\nkind = \"command\"\nmatrix = { fold = [0, 1, 2] }\n\
         run = [\"sh\", \"-c\", \"echo '{\\\"acc\\\": {fold}' > $POLYFLOW_OUT/metrics.json; echo '}' >> $POLYFLOW_OUT/metrics.json\"]\n\
         [node.t]\nkind = \"table\"\ninputs = { runs = [\"cv\"] }\ntitle = \"t\"\ncaption = \"c\"\ncounts = false\n\
         rows = [{ label = \"lr\", nodes = [\"cv.0\", \"cv.1\", \"cv.2\"] }, { label = \"dup\", nodes = [\"cv.2\", \"cv.2\"] }]\n\
         columns = [{ key = \"acc\", label = \"acc\", scale = 1, digits = 2 }]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("row `lr`: 3 named nodes report its columns (cv.0, cv.1, cv.2), so each cell is the mean over all their runs"),
        "{err}"
    );
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "t"]);
    // Folds 0, 1, 2: mean 1.00, sample std 1.00, over 3 runs.
    assert!(
        out.contains("1.00 ± 1.00") && out.contains("over 1 to 3 runs (seeds, or the several nodes a row names), as each row has"),
        "{out}"
    );
    // A run named twice counts once: fold 2's value, not a mean of two with a std of 0.
    let dup = out.lines().find(|l| l.contains("dup") && l.contains("┆")).unwrap_or_else(|| panic!("{out}"));
    assert!(dup.contains("2.00") && !dup.contains('±'), "{out}");
}

/// Rows written from a matrix (`{ matrix = "cv", over = ["fold"], label = "lr {lr}, wd {wd}" }`): one row per
/// setting of the other variables, each over its folds and seeds; the table is the one the rows written out by hand
/// give (same key: fresh), it depends on the runs its rows name alone, and without `over` each node is a row
/// labelled by its variables.
#[test]
fn table_rows_written_from_a_matrix_are_one_per_setting_over_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |rows: &str| {
        format!(
            "[node.cv]\nkind = \"command\"\nmatrix = {{ lr = [1, 2], wd = [0, 10], fold = [0, 100] }}\nseeds = 2\n\
             run = [\"sh\", \"-c\", \"echo '{{\\\"acc\\\": '$(( {{lr}} + {{wd}} + {{fold}} + $POLYFLOW_SEED ))'}}' > $POLYFLOW_OUT/metrics.json\"]\n\
             [node.other]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo '{{\\\"acc\\\": 7}}' > $POLYFLOW_OUT/metrics.json\"]\n\
             [node.t]\nkind = \"table\"\ninputs = {{ runs = [\"cv\", \"other\"] }}\ntitle = \"t\"\ncaption = \"c\"\ncounts = false\n\
             rows = [{rows}]\ncolumns = [{{ key = \"acc\", label = \"acc\", scale = 1, digits = 2 }}]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("{ matrix = \"cv\", over = [\"fold\"], label = \"lr {lr}, wd {wd}\" }")).unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "t", "--json"]);
    assert_eq!(code, 0, "{err}");
    // The label's `{lr}` is written out, not a placeholder passed as written.
    assert!(!err.contains("Warning"), "{err}");
    // `other` is among the runs but no row names it: not run for the table.
    let ran: Vec<String> =
        events(&out).iter().filter(|e| e["event"] == "finished").map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ran.len(), 17, "{ran:?}");
    assert!(!ran.iter().any(|id| id == "other"), "{ran:?}");
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "t"]);
    // lr 2, wd 10: folds 0 and 100, seeds 0 and 1 → 12, 13, 112, 113: mean 62.50, sample std 57.74 over 4 runs.
    let row = shown.lines().find(|l| l.contains("lr 2, wd 10") && l.contains("┆")).unwrap_or_else(|| panic!("{shown}"));
    assert!(row.contains("62.50 ± 57.74"), "{shown}");
    assert_eq!(shown.lines().filter(|l| l.contains("┆") && l.contains("lr ")).count(), 4, "{shown}");
    // The rows written out by hand are the same table: fresh.
    let by_hand: Vec<String> = [(1, 0), (1, 10), (2, 0), (2, 10)]
        .iter()
        .map(|(lr, wd)| format!("{{ label = \"lr {lr}, wd {wd}\", nodes = [\"cv.0.{lr}.{wd}\", \"cv.100.{lr}.{wd}\"] }}"))
        .collect();
    std::fs::write(d.path().join("p.toml"), pipe(&by_hand.join(", "))).unwrap();
    let (_, st, _) = pf(d.path(), &["status", "p.toml", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    let t = st.as_array().unwrap().iter().find(|n| n["id"] == "t").unwrap();
    assert_eq!(t["state"], "fresh", "{t}");
    // Without `over`, a row per node (its seeds averaged), labelled by its variables.
    std::fs::write(d.path().join("p.toml"), pipe("{ matrix = \"cv\" }")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "t"]).0, 0);
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "t"]);
    assert_eq!(shown.lines().filter(|l| l.contains("fold=") && l.contains("┆")).count(), 8, "{shown}");
    assert!(shown.lines().any(|l| l.contains("fold=100, lr=2, wd=10") && l.contains("112.50 ± 0.71")), "{shown}");
    // A label naming a variable the rows are over has no one value in a row: refused where written.
    std::fs::write(d.path().join("p.toml"), pipe("{ matrix = \"cv\", over = [\"fold\"], label = \"lr {lr} fold {fold}\" }")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:15:51:") && err.contains("which each row is over"), "{err}");
    // `{{lr}}` is the escape: the row reads `{lr}`, and no warning says a placeholder is passed as written.
    std::fs::write(d.path().join("p.toml"), pipe("{ matrix = \"cv\", over = [\"fold\"], label = \"{{lr}} = {lr}, wd {wd}\" }")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "t"]);
    assert!(code == 0 && !err.contains("Warning"), "{err}");
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "t"]);
    assert!(shown.lines().any(|l| l.contains("{lr} = 2, wd 10") && l.contains("62.50 ± 57.74")), "{shown}");
}

/// A matrix row's label reads its runs' variables before the pipeline's `[vars]` of the same name (a matrix
/// variable wins, as in parameters), its escapes once (`{{lr}}` is the literal `{lr}`), and the table's own
/// variables (`{seed}`) as in any parameter.
#[test]
fn a_matrix_rows_label_prefers_the_runs_variables_to_the_pipelines() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[vars]\nlr = 0.1\n[node.cv]\nkind = \"command\"\nmatrix = { lr = [0.3, 0.5], fold = [0, 1] }\n\
         run = [\"sh\", \"-c\", \"echo '{\\\"acc\\\": {fold}}' > $POLYFLOW_OUT/metrics.json; echo {lr}\"]\n\
         [node.t]\nkind = \"table\"\ninputs = { runs = [\"cv\"] }\ntitle = \"t\"\ncaption = \"c\"\ncounts = false\n\
         row_header = \"Rate\"\nrows = [{ matrix = \"cv\", over = [\"fold\"], label = \"lr {lr} ({{lr}} = {seed})\" }]\n\
         columns = [{ key = \"acc\", label = \"acc\", scale = 1, digits = 2 }]\n",
    )
    .unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert!(code == 0 && !err.contains("Warning"), "{err}");
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "t"]);
    for lr in ["0.3", "0.5"] {
        assert!(shown.lines().any(|l| l.contains(&format!("lr {lr} ({{lr}} = 0)")) && l.contains("0.50 ± 0.71")), "{shown}");
    }
    // The rows' column is headed as `row_header` says.
    assert!(shown.lines().any(|l| l.contains("│ Rate ")), "{shown}");
}

/// A `command`'s inputs under names of the pipeline's own (`inputs = { data = "prep", model = "train" }`): each
/// slot is a folder of `$POLYFLOW_IN`; a name that is no folder name is refused where it is written.
#[test]
fn command_inputs_take_names_of_the_pipelines_own() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |slot: &str| {
        format!(
            "[node.prep]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo p > $POLYFLOW_OUT/x.csv\"]\n\
             [node.train]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo t > $POLYFLOW_OUT/w.bin\"]\n\
             [node.eval]\nkind = \"command\"\ninputs = {{ {slot} = \"prep\", model = \"train\" }}\n\
             run = [\"sh\", \"-c\", \"cat $POLYFLOW_IN/data/prep/x.csv $POLYFLOW_IN/model/train/w.bin > $POLYFLOW_OUT/seen\"]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("data")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(d.path(), "eval", "seen"), "p\nt\n");
    std::fs::write(d.path().join("p.toml"), pipe("\"../up\"")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:9:12: error: `../up` cannot name an input of `command`"), "{err}");
    std::fs::write(d.path().join("p.toml"), pipe("\"*\"")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("`*` cannot name an input of `command`"), "{err}");
}

/// Two matrices over the same files chained file by file (`inputs = { in = "clean.{sample}" }`), a file in a
/// subfolder and one with a space included (their ids are `clean.sub_c`, `clean.c_d`); without `deps`, each node is
/// still keyed by its own file: a changed file reruns its two nodes alone.
#[test]
fn matrices_over_files_chain_file_by_file_and_key_each_node_by_its_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("raw/sub")).unwrap();
    for (f, text) in [("a", "1\n"), ("sub/c", "2\n"), ("c d", "3\n")] {
        std::fs::write(d.path().join(format!("raw/{f}.csv")), text).unwrap();
    }
    std::fs::write(
        d.path().join("p.toml"),
        "[node.clean]\nkind = \"command\"\nmatrix = { sample = { files = \"raw/{sample}.csv\" } }\n\
         run = [\"sh\", \"-c\", \"cp \\\"$1\\\" $POLYFLOW_OUT/out.csv\", \"sh\", \"raw/{sample}.csv\"]\n\
         [node.feat]\nkind = \"command\"\nmatrix = { sample = { files = \"raw/{sample}.csv\" } }\ninputs = { in = \"clean.{sample}\" }\n\
         run = [\"sh\", \"-c\", \"cat $POLYFLOW_IN/in/*/out.csv > $POLYFLOW_OUT/f.csv\"]\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events(&out).iter().filter(|e| e["event"] == "finished").count(), 6, "{out}");
    assert_eq!(stored(d.path(), "feat.sub_c", "f.csv"), "2\n");
    assert_eq!(stored(d.path(), "feat.c_d", "f.csv"), "3\n");
    std::fs::write(d.path().join("raw/sub/c.csv"), "20\n").unwrap();
    let (_, why, _) = pf(d.path(), &["status", "p.toml", "--why", "clean.sub_c"]);
    assert!(why.contains("raw/sub/c.csv"), "{why}");
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ev = events(&out);
    let ran: Vec<&str> = ev.iter().filter(|e| e["event"] == "finished").map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ran, ["clean.sub_c", "feat.sub_c"], "{out}");
    assert_eq!(stored(d.path(), "feat.sub_c", "f.csv"), "20\n");
}

/// A file `export` names is an output the node declares: a program that ends well without writing it fails the
/// node (not cached as done, so the next run runs it again), naming the file.
#[test]
fn a_command_that_does_not_write_what_export_names_fails() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |write: &str| {
        format!("[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"{write}echo > $POLYFLOW_OUT/other\"]\nexport = {{ \"m.json\" = \"out/m.json\" }}\n")
    };
    std::fs::write(d.path().join("p.toml"), pipe("")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ended well without writing `$POLYFLOW_OUT/m.json` (exported to out/m.json), which `export` names"), "{err}");
    let (_, st, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(st.contains("failed"), "{st}");
    // Once the program writes it, the next run exports it.
    std::fs::write(d.path().join("p.toml"), pipe("echo 1 > $POLYFLOW_OUT/m.json; ")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/m.json")).unwrap(), "1\n");
}

/// The worked example of one's own study (`pipelines/examples/sweep`): a k-fold learning-rate sweep of a Python
/// script, a table of mean ± std over the folds, the best rate chosen and retrained; everything runs, a second
/// run runs nothing, and `compare --over split` gives one row per rate.
#[test]
fn the_sweep_example_runs_and_then_is_fresh() {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/examples/sweep");
    for f in ["sweep.toml", "train.py", "select.py", "data/points.csv"] {
        std::fs::create_dir_all(d.path().join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), d.path().join(f)).unwrap();
    }
    let (code, out, err) = pf(d.path(), &["run", "sweep.toml", "-j", "2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ev = events(&out);
    assert_eq!(ev.iter().filter(|e| e["event"] == "finished").count(), 18, "{out}");
    let table = std::fs::read_to_string(d.path().join("results/cv.md")).unwrap();
    assert!(table.contains("| Learning rate |"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| 0.") && l.contains(" ± ")).count(), 3, "{table}");
    assert!(table.contains("over 5 runs (seeds, or the several nodes a row names)"), "{table}");
    // Retrained with one of the swept rates, on every row.
    let fin: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("results/final.json")).unwrap()).unwrap();
    assert!([0.0003, 0.003, 0.3].contains(&fin["lr"].as_f64().unwrap()) && fin["val"]["acc"].as_f64().unwrap() > 0.7, "{fin}");
    let mtime = std::fs::metadata(d.path().join("results/cv.md")).unwrap().modified().unwrap();
    let (code, out, err) = pf(d.path(), &["run", "sweep.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events(&out).iter().filter(|e| e["event"] == "finished").count(), 0, "{out}");
    // The exports hold these results already: left as they were (listed as unchanged in the events), not rewritten.
    assert!(err.contains("Unchanged 5 exported files already held their results") && !err.contains("Wrote"), "{err}");
    assert!(events(&out).iter().filter(|e| e["event"] == "wrote").all(|e| e["unchanged"] == true), "{out}");
    assert_eq!(std::fs::metadata(d.path().join("results/cv.md")).unwrap().modified().unwrap(), mtime);
    // One edited by hand is written again.
    std::fs::write(d.path().join("results/final.json"), "{}").unwrap();
    let (_, _, err) = pf(d.path(), &["run", "sweep.toml"]);
    assert!(err.contains("Wrote results/final.json") && err.contains("Unchanged 4 exported files"), "{err}");
    let (code, out, err) = pf(d.path(), &["compare", "sweep.toml", "cv", "--over", "split", "--csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("cv.") && l.contains(".*,fresh,5,5,")).count(), 3, "{out}");
}

/// `input_files`: only the files of its inputs that it names (or matches) reach a command's `$POLYFLOW_IN` (a
/// sweep's metrics, not its checkpoints); an input holding none of them is an error naming what it holds.
#[test]
fn input_files_copy_only_the_named_files_of_the_inputs() {
    let d = tempfile::tempdir().unwrap();
    let pipe = |take: &str| {
        format!(
            "[node.up]\nkind = \"command\"\nmatrix = {{ i = [1, 2] }}\n\
             run = [\"sh\", \"-c\", \"echo {{i}} > $POLYFLOW_OUT/metrics.json; head -c 1000 /dev/zero > $POLYFLOW_OUT/ckpt.bin\"]\n\
             [node.down]\nkind = \"command\"\ninputs = {{ in = \"up\" }}\ninput_files = [\"{take}\"]\n\
             run = [\"sh\", \"-c\", \"cd $POLYFLOW_IN && find . -type f | sort > $OLDPWD/$POLYFLOW_OUT/seen\"]\n"
        )
    };
    std::fs::write(d.path().join("p.toml"), pipe("*.json")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(d.path(), "down", "seen"), "./in/up.1/metrics.json\n./in/up.2/metrics.json\n");
    std::fs::write(d.path().join("p.toml"), pipe("model.pt")).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("input `up.1` has no file `input_files` takes (model.pt); it holds ckpt.bin, metrics.json"), "{err}");
    std::fs::write(d.path().join("p.toml"), pipe("[")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("`[` is not a file name pattern"), "{err}");
}

/// `show` says what made an artifact: the polyflow build (as `--version` names it) and the git commit, with a
/// word where tracked files had uncommitted changes then (the commit alone does not give what ran).
#[test]
fn show_names_the_build_and_an_uncommitted_checkout() {
    let d = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@t"]).args(args).current_dir(d.path()).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    std::fs::write(d.path().join(".gitignore"), ".polyflow\n").unwrap();
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let version = Command::new(BIN).arg("--version").output().unwrap();
    let build = String::from_utf8_lossy(&version.stdout).trim().trim_start_matches("polyflow ").to_string();
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "a"]);
    assert!(out.contains(&format!("by polyflow {build}")), "{out}");
    assert!(out.contains("on:     branch main, commit ") && !out.contains("uncommitted"), "{out}");
    // A tracked file a run exports, rewritten by it: an output, not an edit of what ran.
    let pipe = "[node.a]\nkind = \"value\"\nvalue = 1\n[node.c]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo new > $POLYFLOW_OUT/x.txt\"]\nexport = { \"x.txt\" = \"out/x.txt\" }\n";
    std::fs::write(d.path().join("p.toml"), pipe).unwrap();
    std::fs::create_dir_all(d.path().join("out")).unwrap();
    std::fs::write(d.path().join("out/x.txt"), "old\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "two"]);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(std::fs::read_to_string(d.path().join("out/x.txt")).unwrap(), "new\n");
    assert_eq!(pf(d.path(), &["run", "p.toml", "--force", "c"]).0, 0);
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "c"]);
    assert!(out.contains("on:     branch main, commit ") && !out.contains("uncommitted"), "{out}");
    // An edit not committed: the run says so.
    std::fs::write(d.path().join("p.toml"), pipe.replace("value = 1", "value = 2")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["show", "p.toml", "a"]);
    assert!(out.contains("(with uncommitted changes)"), "{out}");
}

/// `gc` in a git repository keeps what the last run on each other branch that still exists found or made (a
/// checkout of it finds it fresh), also where that run computed nothing (every node fresh) and whatever `--set`
/// experiments ran since; `--this-branch` collects them; and it keeps every node the pipeline declares, an
/// included file's too (not only what `run` targets by default).
#[test]
fn gc_keeps_other_branches_results_and_included_nodes() {
    let d = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@t"]).args(args).current_dir(d.path()).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let pipe = |v: u32| format!("include = [\"inc.toml\"]\n[node.a]\nkind = \"value\"\nvalue = {v}\ninputs = {{ after = \"shared\" }}\n");
    std::fs::write(d.path().join("inc.toml"), "[node.shared]\nkind = \"value\"\nvalue = 1\n[node.extra]\nkind = \"value\"\nvalue = 2\n")
        .unwrap();
    std::fs::write(d.path().join("p.toml"), pipe(10)).unwrap();
    std::fs::write(d.path().join(".gitignore"), ".polyflow\n").unwrap();
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "main"]);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "extra"]).0, 0, "a node of the included file only");
    // feat-a branches off and runs: everything is fresh there, nothing computed.
    git(&["checkout", "-q", "-b", "feat-a"]);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    // main moves on (a = 11), with a `--set` experiment after it.
    git(&["checkout", "-q", "main"]);
    std::fs::write(d.path().join("p.toml"), pipe(11)).unwrap();
    git(&["commit", "-qam", "main 11"]);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "a.value=99"]).0, 0);
    // feat-a's `a` (10) is neither main's now nor `a`'s latest run (the experiment): kept as feat-a's; `extra` is
    // declared (through the include). Nothing goes.
    let (code, out, err) = pf(d.path(), &["gc", "p.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Keeping 1 artifact of other branches' last runs (feat-a)"), "{out}");
    assert!(out.contains("Removed 0 artifacts"), "{out}");
    git(&["checkout", "-q", "feat-a"]);
    let (_, st, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(!st.contains("stale"), "switching back finds everything fresh: {st}");
    // From feat-a, main's a=11 is main's result; `--this-branch` collects it, named by the branch it ran on.
    let (_, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert!(out.contains("Keeping 1 artifact of other branches' last runs (main)"), "{out}");
    let (_, out, _) = pf(d.path(), &["gc", "p.toml", "--this-branch"]);
    assert!(out.contains("node `a` as run on branch `main`"), "{out}");
    assert!(!out.contains("`extra`") && !out.contains("`shared`"), "included nodes stay: {out}");
    // A deleted branch's results go with it.
    git(&["branch", "-q", "-D", "main"]);
    let (_, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert!(!out.contains("Keeping") && out.contains("node `a` as run on branch `main`"), "{out}");
}

/// A dataset folder holding a dangling symlink cannot be digested: `plan` says so as a problem found before
/// running (exit 2, the node and the link named), as a run would fail on it.
#[test]
fn plan_names_a_dataset_whose_files_cannot_be_read() {
    let d = tempfile::tempdir().unwrap();
    for c in ["a", "b"] {
        std::fs::create_dir_all(d.path().join(format!("e/train/{c}"))).unwrap();
        std::fs::write(d.path().join(format!("e/train/{c}/0.png")), "").unwrap();
    }
    std::fs::write(d.path().join("p.toml"), "[node.d]\nkind = \"dataset\"\nformat = \"image_folder\"\npath = \"e\"\nnum_classes = 2\n")
        .unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    std::os::unix::fs::symlink("/nonexistent/file.png", d.path().join("e/train/a/broken.png")).unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`d` (dataset, p.toml:1:7): its files cannot be read") && err.contains("broken.png"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["problems"][0]["node"], "d", "{v}");
    // `status` lists it, stale, with the same words.
    let (code, out, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(code == 0 && out.contains("cannot fingerprint sources"), "{out}");
}
