//! The shared artifact cache (issue 17): two stores and one cache, concurrent publishers (processes), a
//! damaged cache blob refused and recomputed, `[cache]` in a pipeline, `verify` and `gc` on the cache.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_polyflow");

/// Runs the binary in `dir`; (exit code, stdout + stderr).
fn pf(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN).args(args).current_dir(dir).env_remove("POLYFLOW_CACHE").output().unwrap();
    (o.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The JSON object a command writes on stdout, which exits with `code`.
fn json_of(dir: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let o = Command::new(BIN).args(args).current_dir(dir).env_remove("POLYFLOW_CACHE").output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(code), "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Node ids of the `--json` events named `event`.
fn ids(out: &str, event: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == event)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

const P: &str = "[node.a]\nkind = \"value\"\nvalue = 1\nsleep_ms = 300\n\
[node.b]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"mkdir -p $POLYFLOW_OUT/d && head -c 200000 /dev/zero | tr '\\\\0' x > $POLYFLOW_OUT/d/big.txt\"]\ninputs = { in = \"a\" }\n\
[node.c]\nkind = \"value\"\nvalue = 3\nsleep_ms = 300\ninputs = { after = \"b\" }\n";

fn cache_files(cache: &Path, sub: &str) -> usize {
    walk(&cache.join(sub))
}

fn walk(p: &Path) -> usize {
    std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
}

#[test]
fn a_second_store_fetches_what_the_first_published() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out, "finished"), ["a", "b", "c"]);
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 3);
    // Another store: stale there, but the cache holds every key.
    // Another store: stale there, but the cache holds every key, downstream ones included (keyed by the digests
    // of the entries upstream), and `plan` says they would be fetched, estimated at what computing them took.
    let (_, st) = pf(d.path(), &["status", "p.toml", "--store", "s2", "--cache", "cache"]);
    assert_eq!(st.matches("in the shared cache").count(), 3, "{st}");
    let (_, plan) = pf(d.path(), &["plan", "p.toml", "--store", "s2", "--cache", "cache"]);
    assert!(plan.contains("0 of 3 nodes would run, 3 would be fetched from the shared cache"), "{plan}");
    assert_eq!(plan.matches("Would fetch").count(), 3, "{plan}");
    let (_, plan) = pf(d.path(), &["plan", "p.toml", "--store", "s2", "--cache", "cache", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&plan[plan.find('{').unwrap()..plan.rfind('}').unwrap() + 1]).unwrap();
    let fetch = v["fetch"].as_array().unwrap();
    assert!(fetch.len() == 3 && fetch.iter().all(|f| f["reason"] == "never run" && f["computed_ms"].is_u64()), "{v}");
    // A mistyped cache path is an error for commands that read it, never an empty cache made there.
    for cmd in [
        &["status", "p.toml", "--store", "s2", "--cache", "nocache"][..],
        &["verify", "--cache", "nocache"],
        &["plan", "p.toml", "--cache", "nocache"],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_polyflow")).args(cmd).current_dir(d.path()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("there is no shared cache at nocache"), "{err}");
    }
    assert!(!d.path().join("nocache").exists());
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--cache", "cache", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out, "fetched"), ["a", "b", "c"], "{out}");
    assert!(ids(&out, "started").is_empty(), "nothing computed: {out}");
    assert!(out.contains("\"event\":\"fetched\",\"id\":\"a\"") && out.contains("\"artifact\":"), "the digest is in the event: {out}");
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--json"]);
    assert!(code == 0 && ids(&out, "fresh") == ["a", "b", "c"], "{out}");
    // `show` says a fetched artifact was fetched, from where, and which build published it.
    let (_, shown) = pf(d.path(), &["show", "p.toml", "a", "--store", "s2"]);
    assert!(shown.contains("fetched: ") && shown.contains("from the shared cache") && shown.contains(", by polyflow "), "{shown}");
    // The fetched records keep what computing took in s1 (`a` sleeps 300 ms), not the copy's milliseconds.
    let last_ms = |store: &str| {
        let (_, st) = pf(d.path(), &["status", "p.toml", "--store", store, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&st[..st.rfind(']').unwrap() + 1]).unwrap();
        v.as_array().unwrap().iter().find(|n| n["id"] == "a").unwrap()["last_ms"].as_u64().unwrap()
    };
    assert!(last_ms("s2") >= 300 && last_ms("s2") == last_ms("s1"), "{} vs {}", last_ms("s2"), last_ms("s1"));
    assert_eq!(pf(d.path(), &["verify", "--store", "s2"]).0, 0);
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache"]);
    assert!(code == 0 && out.contains("0 damaged"), "{out}");
    // The same through `[cache]` in the pipeline, and POLYFLOW_CACHE.
    std::fs::write(d.path().join("q.toml"), format!("[cache]\ndir = \"cache\"\n{P}")).unwrap();
    // `plan` names the cache the pipeline file sends results to; the run's header counts the fetches apart.
    let (_, plan) = pf(d.path(), &["plan", "q.toml", "--store", "s3"]);
    assert!(plan.contains("Cache cache (the pipeline's `[cache]`): a run fetches from it and publishes what it computes there"), "{plan}");
    let (code, out) = pf(d.path(), &["run", "q.toml", "--store", "s3", "--json"]);
    assert!(code == 0 && ids(&out, "fetched") == ["a", "b", "c"], "{out}");
    let plan_event: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.contains("\"event\":\"plan\"")).unwrap()).unwrap();
    assert!(plan_event["nodes"].as_array().unwrap().iter().all(|n| n["in_cache"] == true), "{plan_event}");
    // What a run publishes is counted, with where it went.
    let (code, out) = pf(d.path(), &["run", "q.toml", "--store", "s5", "--set", "c.value=4"]);
    assert!(code == 0 && out.contains("Plan 3 nodes, 1 to run, 2 to fetch from the shared cache"), "{out}");
    assert!(out.contains("Published 1 artifact to the shared cache"), "{out}");
    let (code, out) = pf(d.path(), &["run", "q.toml", "--store", "s5", "--force", "c", "--set", "c.value=4"]);
    assert!(code == 0 && !out.contains("Published"), "the key was there already: {out}");
    let o = Command::new(BIN)
        .args(["run", "p.toml", "--store", "s4", "--json"])
        .current_dir(d.path())
        .env("POLYFLOW_CACHE", "cache")
        .output()
        .unwrap();
    assert_eq!(ids(&String::from_utf8_lossy(&o.stdout), "fetched"), ["a", "b", "c"]);
}

#[test]
fn concurrent_publishers_leave_one_whole_entry_per_key() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let children: Vec<_> = (0..4)
        .map(|k| {
            Command::new(BIN)
                .args(["run", "p.toml", "--store", &format!("s{k}"), "--cache", "cache", "--json"])
                .current_dir(d.path())
                .env_remove("POLYFLOW_CACHE")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let cache = d.path().join("cache");
    assert_eq!(cache_files(&cache, "keys"), 3, "one entry per key");
    assert_eq!(cache_files(&cache, "tmp"), 0, "no temp file left");
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache"]);
    assert!(code == 0 && out.contains("3 files checked") && out.contains("0 damaged"), "{out}");
    // And each store is whole.
    for k in 0..4 {
        assert_eq!(pf(d.path(), &["verify", "--store", &format!("s{k}")]).0, 0);
    }
    // With the pipeline named: the entries it computes now, known from a store that has none of them fresh (the
    // whole chain as a run would fetch it), and an error without a store.
    std::fs::write(d.path().join("q.toml"), "[node.q]\nkind = \"value\"\nvalue = 1\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "q.toml", "--store", "s8"]).0, 0);
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache", "--store", "s8", "p.toml"]);
    assert!(code == 0 && out.contains("3 files checked in cache (3 entries that p.toml computes now)"), "{out}");
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache", "--store", "nostore", "p.toml"]);
    assert!(code == 2 && out.contains("there is no store at nostore"), "{out}");
}

#[test]
fn a_damaged_cache_blob_is_refused_and_the_node_recomputed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache"]).0, 0);
    // Damage the big blob of `b` (same size).
    let blobs = d.path().join("cache/blobs");
    let big = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
        .find(|f| f.metadata().unwrap().len() == 200_000)
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&big).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&big, bytes).unwrap();
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--cache", "cache", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out, "finished"), ["b"], "b recomputed: {out}");
    assert_eq!(ids(&out, "fetched"), ["a", "c"], "{out}");
    assert!(out.contains("not taken from the shared cache"), "{out}");
    // The damaged copy is gone from the cache and the recomputed one restored it.
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache"]);
    assert!(code == 0 && out.contains("0 damaged"), "{out}");
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s3", "--cache", "cache", "--json"]);
    assert!(code == 0 && ids(&out, "fetched") == ["a", "b", "c"], "{out}");
}

#[test]
fn no_publish_and_gc_of_the_cache() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    // A run that only fetches makes no cache where there is none (a mistyped path, say).
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache", "--no-publish"]);
    assert!(code == 0 && out.contains("note: there is no shared cache at cache, and this run publishes nothing"), "{out}");
    assert!(!d.path().join("cache").exists());
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache", "--force-all"]).0, 0);
    // `plan --no-publish` plans such a run, as `run -n --no-publish` does.
    let (code, out) = pf(d.path(), &["plan", "p.toml", "--store", "s1", "--cache", "cache", "--no-publish"]);
    assert!(code == 0 && out.contains("a run fetches from it") && !out.contains("publishes what it computes"), "{out}");
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 3);
    // `c` changes: a new entry; the old one is not computed by the pipeline any more.
    std::fs::write(d.path().join("p.toml"), P.replace("value = 3", "value = 4")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache"]).0, 0);
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 4);
    let (code, out) = pf(d.path(), &["gc", "p.toml", "--store", "s1", "--cache", "cache", "--keep-days", "0"]);
    assert!(code == 0 && out.contains("Would remove cache entry") && out.contains("node `c`"), "{out}");
    assert_eq!(out.matches("Would remove cache entry").count(), 1, "{out}");
    let (code, out) = pf(d.path(), &["gc", "p.toml", "--store", "s1", "--cache", "cache", "--keep-days", "0", "--yes"]);
    assert!(code == 0 && out.contains("Removed 1 cache entry"), "{out}");
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 3);
    // Recent entries are kept by default.
    std::fs::write(d.path().join("p.toml"), P.replace("value = 3", "value = 5")).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache"]).0, 0);
    let (_, out) = pf(d.path(), &["gc", "p.toml", "--store", "s1", "--cache", "cache"]);
    assert!(out.contains("Would free 0 cache entries"), "{out}");
}

#[test]
fn push_publishes_what_the_store_already_held() {
    // Computed before the team had a cache: `push` publishes it, a run computes nothing and publishes nothing old.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s1"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache", "--json"]);
    assert!(code == 0 && ids(&out, "fresh") == ["a", "b", "c"], "{out}");
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 0);
    let (code, out) = pf(d.path(), &["push", "p.toml", "--store", "s1", "--cache", "cache"]);
    assert!(code == 0 && out.contains("Pushed 3 artifacts") && out.contains("0 were there already"), "{out}");
    assert_eq!(cache_files(&d.path().join("cache"), "keys"), 3);
    let (code, out) = pf(d.path(), &["push", "p.toml", "--store", "s1", "--cache", "cache"]);
    assert!(code == 0 && out.contains("Pushed 0 artifacts") && out.contains("3 were there already"), "{out}");
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--cache", "cache", "--json"]);
    assert!(code == 0 && ids(&out, "fetched") == ["a", "b", "c"], "{out}");
    let (code, out) = pf(d.path(), &["push", "p.toml", "--store", "s1"]);
    assert!(code == 2 && out.contains("no shared cache"), "{out}");
}

/// A node re-run (forced) whose result differs from what the cache holds under its key is reported as not
/// deterministic: the cache keeps the first, and the run says so instead of silently diverging from the team.
#[test]
fn a_forced_rerun_that_differs_from_the_cache_is_named_nondeterministic() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("r.toml"),
        "[node.r]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"head -c 64 /dev/urandom > $POLYFLOW_OUT/r.bin\"]\n",
    )
    .unwrap();
    assert_eq!(pf(d.path(), &["run", "r.toml", "--cache", "cache"]).0, 0);
    let (code, out) = pf(d.path(), &["run", "r.toml", "--cache", "cache", "--force", "r"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the node is not deterministic"), "{out}");
    // The entry names the build that published it, and the note says it (here the same build as this one).
    let version = Command::new(BIN).arg("--version").output().unwrap();
    let build = String::from_utf8_lossy(&version.stdout).trim().trim_start_matches("polyflow ").to_string();
    assert!(out.contains(&format!("with polyflow {build})")), "{out}");
    assert!(!out.contains("computes it otherwise"), "{out}");
    let keys = d.path().join("cache/keys");
    let entry = std::fs::read_dir(&keys).unwrap().flatten().flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten()).next().unwrap();
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    assert_eq!(e["polyflow"].as_str(), Some(build.as_str()), "{e}");
    // A deterministic node re-run under --force says nothing of the kind.
    std::fs::write(d.path().join("r.toml"), "[node.r]\nkind = \"value\"\nvalue = 2\n").unwrap();
    assert_eq!(pf(d.path(), &["run", "r.toml", "--cache", "cache"]).0, 0);
    let (_, out) = pf(d.path(), &["run", "r.toml", "--cache", "cache", "--force", "r"]);
    assert!(!out.contains("not deterministic"), "{out}");
}

/// A teammate's bad or hostile writes into the cache: a blob that is a link to a file only this user may read is
/// refused (nothing of it enters the store) and the node computed; a malformed entry is named by `verify --cache`
/// and removed by `gc --cache`; a `tmp/` that is a link elsewhere is not emptied by `gc`.
#[test]
fn a_tampered_cache_is_refused_named_and_collected_without_leaving_it() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache"]).0, 0);
    let cache = d.path().join("cache");
    // `b`'s big blob becomes a link to a secret.
    let big = std::fs::read_dir(cache.join("blobs"))
        .unwrap()
        .flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
        .find(|f| f.metadata().unwrap().len() == 200_000)
        .unwrap()
        .path();
    let secret = d.path().join("secret");
    std::fs::write(&secret, "TOPSECRET".repeat(1000)).unwrap();
    std::fs::remove_file(&big).unwrap();
    symlink(&secret, &big).unwrap();
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--cache", "cache", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out, "finished"), ["b"], "{out}");
    assert!(out.contains("symbolic link"), "{out}");
    let leaked = std::fs::read_dir(d.path().join("s2/blobs"))
        .unwrap()
        .flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
        .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("TOPSECRET")));
    assert!(!leaked, "the secret was copied into the store");
    // A malformed entry (a file name outside its artifact), named and collected.
    let entry =
        std::fs::read_dir(cache.join("keys")).unwrap().flatten().flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten()).next();
    let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = v["manifest"]["files"].as_object().unwrap().keys().next().unwrap().clone();
    let bad = cache.join("keys/ee").join(format!("{}.json", "e".repeat(64)));
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, text.replace(&format!("\"{name}\""), "\"../../escape.txt\"")).unwrap();
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache"]);
    assert!(code == 4 && out.contains("Malformed") && out.contains("1 entry malformed or unreadable"), "{out}");
    // `--json`: one object on stdout (the text on stderr).
    let v = json_of(d.path(), &["verify", "--cache", "cache", "--json"], 4);
    assert!(
        v["malformed"][0]["path"].as_str().is_some_and(|p| p.ends_with(".json"))
            && v["damaged"] == 0
            && v["found"] == serde_json::json!([]),
        "{v}"
    );
    let v = json_of(d.path(), &["gc", "p.toml", "--store", "s2", "--cache", "cache", "--json"], 0);
    assert!(v["removed"] == false && v["malformed"].as_array().map(Vec::len) == Some(1), "{v}");
    // `tmp/` made a link to a folder of someone's files, old enough to be collected.
    let victim = d.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let old = std::fs::File::create(victim.join("important.txt")).unwrap();
    old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200)).unwrap();
    std::fs::remove_dir_all(cache.join("tmp")).unwrap();
    symlink(&victim, cache.join("tmp")).unwrap();
    let (code, out) = pf(d.path(), &["gc", "p.toml", "--store", "s2", "--cache", "cache", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("malformed cache entry") && !bad.exists(), "{out}");
    assert!(victim.join("important.txt").exists(), "gc deleted a file outside the cache: {out}");
    assert!(!out.contains("important.txt"), "{out}");
}

/// An entry whose file list was swapped for another artifact's blobs (its artifact digest left as published) is
/// not fetched: the run says why and computes the node, and `verify --cache` names the entry (exit 4).
#[test]
fn an_entry_whose_files_were_swapped_after_publishing_is_not_fetched() {
    let d = tempfile::tempdir().unwrap();
    let p = "[node.a]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo 0.5 > $POLYFLOW_OUT/m.txt\"]\n\
             [node.z]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo 0.99 > $POLYFLOW_OUT/m.txt\"]\n";
    std::fs::write(d.path().join("p.toml"), p).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--store", "s1", "--cache", "cache"]).0, 0);
    let cache = d.path().join("cache");
    let entries: Vec<(std::path::PathBuf, serde_json::Value)> = std::fs::read_dir(cache.join("keys"))
        .unwrap()
        .flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
        .map(|f| (f.path(), serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap()))
        .collect();
    let of = |n: &str| entries.iter().find(|(_, v)| v["node"] == n).unwrap().clone();
    let ((a_path, mut a), (_, z)) = (of("a"), of("z"));
    a["manifest"]["files"] = z["manifest"]["files"].clone();
    std::fs::write(&a_path, serde_json::to_vec(&a).unwrap()).unwrap();
    let (code, out) = pf(d.path(), &["run", "p.toml", "--store", "s2", "--cache", "cache", "--no-publish", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out, "finished"), ["a"], "computed, not fetched: {out}");
    assert_eq!(ids(&out, "fetched"), ["z"], "{out}");
    assert!(out.contains("changed after it was published"), "{out}");
    let (code, out) = pf(d.path(), &["verify", "--cache", "cache"]);
    assert!(code == 4 && out.contains("changed after it was published"), "{out}");
    // `gc --cache` leaves it while young (a later polyflow's entry would look the same), with its blobs.
    let (code, out) = pf(d.path(), &["gc", "p.toml", "--store", "s2", "--cache", "cache", "--yes"]);
    assert!(code == 0 && out.contains("not used here, kept until older than --keep-days") && a_path.exists(), "{out}");
}
