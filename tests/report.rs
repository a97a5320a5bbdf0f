//! `polyflow report`: a small pipeline (two seeds of a tiny ViT and a second model, a table over them) runs,
//! then the report is written. Always: the page is self-contained (nothing from the network) and holds every
//! table cell, each with its provenance (node, key). In a real headless browser (Debian's
//! `chromium-headless-shell`, ignored by a plain `cargo test`; `.ci/run` runs it with
//! `POLYFLOW_BROWSER_TESTS=1 cargo test --test report -- --ignored`): the page loads without a script error,
//! the tables, curves and DAG are in the DOM, and a cell's provenance opens and shows.

mod common;
use common::pf;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MODELS: &str = r#"

[node.m]
kind = "train"
inputs = { task = "t" }
dim = 16
depth = 1
heads = 2
mlp = 32
seeds = 2
eval_every = 1

[node.wide]
kind = "train"
inputs = { task = "t" }
dim = 16
depth = 1
heads = 2
mlp = 48
eval_every = 1

[node.tab]
kind = "table"
title = "Tiny <results> & co"
caption = "two seeds of a tiny ViT on 40 images"
inputs = { runs = ["m", "wide"] }
rows = [
  { label = "Tiny", nodes = ["m"] },
  { label = "Wider MLP", nodes = ["wide"] },
]
columns = [{ task = "t", metric = "top1", label = "Acc" }]
export = "out/tab"
"#;

/// The whole pipeline: the tiny CIFAR task (`tests/common`) and the nodes above.
fn pipe() -> String {
    format!("{}{MODELS}", common::cifar_task(3))
}

struct Fixture {
    dir: PathBuf,
    html: String,
    table: serde_json::Value,
}

/// The pipeline run once and its report written (shared by the tests of this file).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        common::write_cifar(&dir);
        std::fs::write(dir.join("p.toml"), pipe()).unwrap();
        let (code, _, err) = pf(&dir, &["run", "p.toml"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = pf(&dir, &["report", "p.toml", "-o", "r.html"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("Wrote"), "{err}");
        let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
        let table = serde_json::from_str(&std::fs::read_to_string(dir.join("out/tab.json")).unwrap()).unwrap();
        Fixture { dir, html, table }
    })
}

/// The key of node `id` in `status --json`.
fn key(dir: &Path, id: &str) -> String {
    let (code, out, err) = pf(dir, &["status", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = v.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no `{id}` in {out}"));
    n["key"].as_str().unwrap().to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[test]
fn the_report_is_self_contained_with_every_cell_and_its_provenance() {
    let f = fixture();
    let h = &f.html;
    for bad in ["src=\"http", "href=\"http", "src='http", "href='http", "<link", "@import", "url(http"] {
        assert!(!h.contains(bad), "the page loads `{bad}…` from the network");
    }
    assert!(h.starts_with("<!DOCTYPE html>") && h.contains("</html>"));
    // Every cell of the table (escaped title, mean ± std of the two seeds), best bold.
    assert!(h.contains("Tiny &lt;results&gt; &amp; co"), "title not escaped");
    for row in f.table["cells"].as_array().unwrap() {
        for c in row.as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            assert!(h.contains(&esc(text)), "cell `{text}` missing");
        }
    }
    let acc = f.table["cells"][0][2]["text"].as_str().unwrap();
    assert!(acc.contains('±'), "two seeds give mean ± std: {acc}");
    assert!(h.contains("<b>"), "no best cell marked");
    // Provenance: the seed replicates' nodes and keys, their parameters and inputs.
    for id in ["m.s0", "m.s1", "wide"] {
        let k = key(&f.dir, id);
        assert!(h.contains(&format!("<code class=\"prov-key\">{k}</code>")), "no provenance with {id}'s key {k}");
        assert!(h.contains(&format!("<code>{id}</code>")), "{id}");
    }
    assert!(h.contains("class=\"prov-params\"") && h.contains("&quot;mlp&quot;: 48"), "parameters");
    assert!(h.contains("task: <a href=\"#node-t\">"), "inputs");
    // Curves of the three training nodes, the DAG with every node, run times.
    assert_eq!(h.matches("<section class=\"training\"").count(), 3);
    assert_eq!(h.matches("<svg class=\"curve loss\"").count(), 3);
    assert!(h.contains("<svg class=\"dag\""));
    for id in ["data", "x", "t", "m.s0", "m.s1", "wide", "tab"] {
        assert!(h.contains(&format!("class=\"dag-node fresh\" data-id=\"{id}\"")), "DAG node {id}");
        assert!(h.contains(&format!("<tr id=\"node-{id}\">")), "run-time row {id}");
    }
}

#[test]
fn a_stale_table_is_listed_not_drawn_from_old_parameters() {
    let f = fixture();
    let (code, _, err) = pf(&f.dir, &["report", "p.toml", "--set", "tab.title=Other", "-o", "stale.html"]);
    assert_eq!(code, 0, "{err}");
    let h = std::fs::read_to_string(f.dir.join("stale.html")).unwrap();
    assert!(!h.contains("<table class=\"results\""), "a stale table drawn");
    assert!(h.contains("class=\"dag-node stale\" data-id=\"tab\""), "tab not stale in the DAG");
    assert!(h.contains("<section class=\"training\""), "the fresh training nodes still have curves");
    assert!(h.contains("With <code>--set tab.title=Other</code>"), "the page says what it was made with");
    // The hint is the command that builds it with the same options.
    assert!(h.contains("(<code>polyflow run p.toml --set tab.title=Other tab</code> builds it)"), "hint without the --set");
}

/// Tables exported by a run with overrides say so in their Markdown, LaTeX and JSON (not `Other`: the test
/// above needs that title never computed).
#[test]
fn exports_made_with_overrides_say_so() {
    let f = fixture();
    let (code, _, err) = pf(&f.dir, &["run", "p.toml", "tab", "--set", "tab.title=Mine"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not from the file as it is"), "{err}");
    let md = std::fs::read_to_string(f.dir.join("out/tab.md")).unwrap();
    assert!(md.contains("Mine") && md.contains("> Made with `--set tab.title=Mine` on top of `p.toml`"), "{md}");
    let tex = std::fs::read_to_string(f.dir.join("out/tab.tex")).unwrap();
    assert!(tex.contains("%   --set tab.title=Mine"), "{tex}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.dir.join("out/tab.json")).unwrap()).unwrap();
    assert_eq!(json["made_with"]["overrides"][0], "--set tab.title=Mine");
    // The file's own settings again: the same bytes as the artifact, no mark.
    let (code, _, err) = pf(&f.dir, &["run", "p.toml", "tab"]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(f.dir.join("out/tab.md")).unwrap();
    assert!(!md.contains("Made with") && !md.contains("Mine"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.dir.join("out/tab.json")).unwrap()).unwrap();
    assert!(json.get("made_with").is_none());
    // An override that changes nothing (the value the file has): the file's own result, no mark.
    let (code, _, err) = pf(&f.dir, &["run", "p.toml", "tab", "--set", "m.mlp=32"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the overrides change none of the files written"), "{err}");
    assert!(!std::fs::read_to_string(f.dir.join("out/tab.md")).unwrap().contains("Made with"));
}

#[test]
fn the_page_is_written_through_a_symlink_or_to_standard_output() {
    let f = fixture();
    let web = f.dir.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("real.html"), "old").unwrap();
    let _ = std::fs::remove_file(f.dir.join("link.html"));
    std::os::unix::fs::symlink("web/real.html", f.dir.join("link.html")).unwrap();
    let (code, _, err) = pf(&f.dir, &["report", "p.toml", "-o", "link.html"]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(f.dir.join("link.html")).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read_to_string(web.join("real.html")).unwrap().starts_with("<!DOCTYPE html>"), "its target not written");
    let (code, out, err) = pf(&f.dir, &["report", "p.toml", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("<!DOCTYPE html>") && !f.dir.join("-").exists(), "{err}");
}

/// A pipeline of hundreds of nodes draws its DAG by declaration: a box per matrix declaration, coloured by its
/// worst state, not a picture hundreds of boxes tall.
#[test]
fn a_large_dag_is_drawn_by_declaration() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.a]\nkind = \"value\"\nmatrix = { i = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], j = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }\nvalue = \"{i}\"\n\
         [node.b]\nkind = \"value\"\nmatrix = { i = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], j = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], k = [0, 1, 2] }\n\
         inputs = { after = \"a.{i}.{j}\" }\nvalue = \"{k}\"\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "a"]).0, 0);
    let (code, out, err) = pf(d.path(), &["report", "p.toml", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("400 nodes, drawn by declaration"), "the page says so");
    let dag = &out[out.find("<svg class=\"dag\"").unwrap()..];
    let dag = &dag[..dag.find("</svg>").unwrap()];
    assert_eq!(dag.matches("class=\"dag-node").count(), 2, "{dag}");
    assert!(dag.contains("a ×100") && dag.contains("b ×300") && dag.contains("300 nodes, 0 fresh, 300 stale"), "{dag}");
    assert!(dag.contains("dag-node fresh") && dag.contains("dag-node stale"), "{dag}");
}

/// The headless browser: `POLYFLOW_BROWSER`, else Debian's `chromium-headless-shell` or `chromium`.
fn browser() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("POLYFLOW_BROWSER") {
        return Some(PathBuf::from(b));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| std::env::split_paths(&path).map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

#[test]
#[ignore = "needs chromium-headless-shell (Debian: apt-get install chromium-headless-shell): POLYFLOW_BROWSER_TESTS=1 cargo test --test report -- --ignored (.ci/run does)"]
fn in_a_headless_browser_the_page_loads_and_a_cell_shows_its_provenance() {
    let Some(b) = browser() else {
        panic!(
            "no headless browser found (POLYFLOW_BROWSER_TESTS={}): install Debian's chromium-headless-shell or set POLYFLOW_BROWSER",
            std::env::var("POLYFLOW_BROWSER_TESTS").unwrap_or_default()
        );
    };
    let f = fixture();
    let profile = tempfile::tempdir().unwrap();
    // `#prov` opens the first cell's provenance, as a click does.
    let url = format!("file://{}#prov", f.dir.join("r.html").display());
    let o = Command::new(&b)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &url])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{} failed: {log}", b.display());
    assert!(!log.contains("Uncaught"), "script error: {log}");
    // The page's script ran to its end: no error before it.
    assert!(dom.contains("data-ok=\"1\""), "the script did not finish: {log}\n{}", &dom[..dom.len().min(2000)]);
    assert!(dom.contains("<table class=\"results\""), "no table in the DOM");
    assert!(dom.contains("<svg class=\"curve loss\"") && dom.contains("<polyline"), "no curve in the DOM");
    assert!(dom.contains("<svg class=\"dag\""), "no DAG in the DOM");
    let cells: Vec<serde_json::Value> = f.table["cells"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().clone()).collect();
    let with_prov: Vec<&serde_json::Value> = cells.iter().filter(|c| c["from"].as_array().is_some_and(|a| !a.is_empty())).collect();
    assert!(dom.contains(&format!("data-prov-cells=\"{}\"", with_prov.len())), "not every cell with provenance has its element");
    // The first provenance cell opened, laid out with a height, and names its node and key.
    assert!(dom.contains("data-prov-shown=\"1\""), "the opened provenance has no height");
    let open = dom.find("<details class=\"prov\" open=\"\"").expect("no opened provenance");
    let body = &dom[open..open + dom[open..].find("</details>").unwrap()];
    let node = with_prov[0]["from"][0]["node"].as_str().unwrap();
    let k = with_prov[0]["from"][0]["key"].as_str().unwrap();
    assert!(body.contains(node) && body.contains(k), "provenance of the opened cell: {body}");
}
