//! Engine integration tests with kinds registered by the test: which nodes ran, from the event log.

use polyflow::exec::{self, Event, RunOptions};
use polyflow::stage::{InputSlot, ParamSpec, ParamType, Registry, Stage, StageCtx, StageError};
use polyflow::store::Store;
use polyflow::{graph, spec};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Writes `out` (or `x` when `out` is absent) and logs each execution.
struct Count(Arc<Mutex<Vec<String>>>);

impl Stage for Count {
    fn kind(&self) -> &'static str {
        "count"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "test kind"
    }
    fn output(&self) -> &'static str {
        "num"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("in", &["num"]).optional()]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("x", ParamType::Int { min: 0, max: 1000 }, json!(0), "value"),
            ParamSpec::opt("out", ParamType::Any, json!(null), "output override"),
            ParamSpec::opt("fail", ParamType::Bool, json!(false), "fail"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        self.0.lock().unwrap().push(ctx.id.to_string());
        if ctx.params["fail"] == json!(true) {
            return Err(StageError::failed("boom"));
        }
        let mut sum = 0i64;
        for a in ctx.inputs.values().flatten() {
            let v: serde_json::Value = a.json("v.json")?;
            sum += v.as_i64().unwrap_or(0);
        }
        let out = if ctx.params["out"].is_null() { json!(ctx.params["x"].as_i64().unwrap() + sum) } else { ctx.params["out"].clone() };
        ctx.out.put_json("v.json", &out)
    }
}

struct Env {
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    reg: Registry,
}

impl Env {
    fn new() -> Self {
        let log = Arc::new(Mutex::new(vec![]));
        let mut reg = Registry::new();
        reg.register(Count(log.clone()));
        Env { dir: tempfile::tempdir().unwrap(), log, reg }
    }
    /// An environment with the `hold` kind registered, and its log.
    fn with_hold() -> (Self, HoldLog) {
        let mut e = Env::new();
        let log = Arc::new(Mutex::new(vec![]));
        e.reg.register(Hold(log.clone()));
        (e, log)
    }
    fn write(&self, name: &str, text: &str) {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("store")).unwrap()
    }
    /// Runs and returns (ids that ran, all events).
    fn run_with(&self, profile: Option<&str>, opts: RunOptions) -> (Vec<String>, Vec<Event>) {
        self.log.lock().unwrap().clear();
        let p = spec::load(&self.dir.path().join("p.toml"), profile).unwrap();
        let g = graph::build(p, &self.reg).unwrap();
        let events = Mutex::new(vec![]);
        let sink = |e: &Event| events.lock().unwrap().push(e.clone());
        let mut opts = opts;
        opts.env.insert("seed".into(), g.pipeline.seed.to_string());
        exec::run(&g, &self.store(), &opts, &sink).unwrap();
        let mut ran: Vec<String> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| if let Event::Finished { id, .. } = e { Some(id.clone()) } else { None })
            .collect();
        ran.sort();
        (ran, events.into_inner().unwrap())
    }
    fn run(&self) -> Vec<String> {
        self.run_with(None, RunOptions::default()).0
    }
    fn reasons(&self, id: &str) -> Vec<String> {
        let p = spec::load(&self.dir.path().join("p.toml"), None).unwrap();
        let g = graph::build(p, &self.reg).unwrap();
        let store = self.store();
        let index = store.index().unwrap();
        let sel = g.select(&[]).unwrap();
        let mut env = BTreeMap::new();
        env.insert("seed".to_string(), g.pipeline.seed.to_string());
        let a = exec::assess::assess_all(&g, &sel, &store, &index, &env, &|_| false);
        a[&g.by_id[id]].reasons.iter().map(|r| r.to_string()).collect()
    }
}

const CHAIN: &str = "[node.a]\nkind = \"count\"\nx = 1\n[node.b]\nkind = \"count\"\nx = 10\ninputs = { in = \"a\" }\n[node.c]\nkind = \"count\"\nx = 100\ninputs = { in = \"b\" }\n[node.side]\nkind = \"count\"\nx = 5\n";

#[test]
fn second_run_executes_nothing() {
    let e = Env::new();
    e.write("p.toml", CHAIN);
    assert_eq!(e.run(), ["a", "b", "c", "side"]);
    assert_eq!(e.run(), Vec::<String>::new());
    assert!(e.log.lock().unwrap().is_empty());
}

#[test]
fn changed_param_reruns_node_and_dependents_and_status_explains() {
    let e = Env::new();
    e.write("p.toml", CHAIN);
    e.run();
    e.write("p.toml", &CHAIN.replace("x = 1\n[", "x = 2\n["));
    assert_eq!(e.reasons("a"), ["x changed 1 → 2"]);
    assert_eq!(e.reasons("b"), ["waits on a"]);
    // A node waiting on its input still shows its own edits (they stand whatever the input becomes).
    e.write("p.toml", &CHAIN.replace("x = 1\n[", "x = 2\n[").replace("x = 10\n", "x = 11\n"));
    assert_eq!(e.reasons("b"), ["waits on a", "x changed 10 → 11"]);
    assert_eq!(e.reasons("c"), ["waits on b"]);
    assert_eq!(e.run(), ["a", "b", "c"]);
    // Back to the old value: every artifact is still cached.
    e.write("p.toml", CHAIN);
    assert_eq!(e.run(), Vec::<String>::new());
}

#[test]
fn a_stale_node_is_compared_with_its_nearest_run_not_the_last_of_another_profile() {
    let e = Env::new();
    let file = format!("{CHAIN}[profile.big.node.a]\nx = 7\n");
    e.write("p.toml", &file);
    assert_eq!(e.run(), ["a", "b", "c", "side"]);
    assert_eq!(e.run_with(Some("big"), RunOptions::default()).0, ["a", "b", "c"]);
    // Back at the default profile, with one edit: b's last run (profile big) also had another input, its run
    // under these settings did not. Only the edit is named.
    e.write("p.toml", &file.replace("x = 10\n", "x = 12\n"));
    assert_eq!(e.reasons("b"), ["x changed 10 → 12"]);
    assert_eq!(e.reasons("a"), Vec::<String>::new(), "a is fresh");
    // The fresh node's record is the run that made its artifact (x = 1), not the id's last run (x = 7).
    let p = spec::load(&e.dir.path().join("p.toml"), None).unwrap();
    let g = graph::build(p, &e.reg).unwrap();
    let store = e.store();
    let index = store.index().unwrap();
    let mut env = BTreeMap::new();
    env.insert("seed".to_string(), g.pipeline.seed.to_string());
    let a = exec::assess::assess_all(&g, &g.select(&[]).unwrap(), &store, &index, &env, &|_| false);
    let rec = a[&g.by_id["a"]].record.as_ref().unwrap();
    assert_eq!(rec.fingerprint.params["x"], 1, "{rec:?}");
    assert_eq!(index.record("a").unwrap().unwrap().fingerprint.params["x"], 7, "the id's last run");
}

#[test]
fn nodes_are_listed_in_declaration_order_where_the_graph_allows() {
    let e = Env::new();
    e.write("p.toml", &format!("{CHAIN}[node.r]\nkind = \"count\"\nseeds = 3\ninputs = {{ in = \"a\" }}\n"));
    let p = spec::load(&e.dir.path().join("p.toml"), None).unwrap();
    let g = graph::build(p, &e.reg).unwrap();
    let ids: Vec<&str> = g.select(&[]).unwrap().into_iter().map(|i| g.nodes[i].id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "side", "r.s0", "r.s1", "r.s2"]);
}

#[test]
fn resources_and_executor_settings_never_change_keys() {
    let e = Env::new();
    e.write("p.toml", CHAIN);
    e.run();
    let with = CHAIN.replace("x = 10\n", "x = 10\nresources = { cpus = 1, mem = \"4G\", time = \"1:00:00\", sbatch = [\"--qos=x\"] }\n");
    e.write("p.toml", &format!("[executor]\npartition = \"gpu\"\npoll = 5\n\n{with}"));
    assert_eq!(e.run(), Vec::<String>::new());
}

#[test]
fn upstream_rerun_with_identical_output_leaves_downstream_fresh() {
    let e = Env::new();
    e.write("p.toml", &CHAIN.replace("x = 1\n[", "x = 1\nout = 7\n["));
    e.run();
    // `x` changes but `out` pins the bytes: a re-runs, b and c stay fresh (early cutoff).
    e.write("p.toml", &CHAIN.replace("x = 1\n[", "x = 9\nout = 7\n["));
    let (ran, events) = e.run_with(None, RunOptions::default());
    assert_eq!(ran, ["a"]);
    assert!(events.iter().any(|ev| matches!(ev, Event::Fresh { id, after_inputs: true, .. } if id == "c")));
    // The summary counts them apart: planned to run, found fresh once their input came out as before.
    assert!(events.iter().any(|ev| matches!(ev, Event::Summary { ran: 1, fresh_after_inputs: 2, .. })), "{:?}", events.last());
}

#[test]
fn force_targets_and_force_all() {
    let e = Env::new();
    e.write("p.toml", CHAIN);
    e.run();
    let (ran, _) = e.run_with(None, RunOptions { force: vec!["b".into()], ..Default::default() });
    assert_eq!(ran, ["b"], "b re-runs with identical output, so c stays fresh");
    let (ran, _) = e.run_with(None, RunOptions { targets: vec!["b".into()], force_all: true, ..Default::default() });
    assert_eq!(ran, ["a", "b"]);
    e.write("p.toml", &CHAIN.replace("x = 5", "x = 6"));
    let (ran, _) = e.run_with(None, RunOptions { targets: vec!["c".into()], ..Default::default() });
    assert!(ran.is_empty(), "side is not needed by c");
}

#[test]
fn profiles_matrix_and_includes() {
    let e = Env::new();
    e.write("inc/shared.toml", "[node.base]\nkind = \"count\"\nx = 3\n");
    e.write("inc/again.toml", "include = [\"shared.toml\"]\n[node.base]\nkind = \"count\"\nx = 3\n");
    e.write(
        "p.toml",
        "include = [\"inc/shared.toml\", \"inc/again.toml\"]\n[node.m]\nkind = \"count\"\nmatrix = { v = [1, 2, 3] }\nx = \"{v}\"\ninputs = { in = \"base\" }\n[node.sum]\nkind = \"count\"\ninputs = { in = \"m\" }\n[profile.fast.node.base]\nx = 4\n",
    );
    assert_eq!(e.run(), ["base", "m.1", "m.2", "m.3", "sum"]);
    let (ran, events) = e.run_with(Some("fast"), RunOptions::default());
    assert_eq!(ran, ["base", "m.1", "m.2", "m.3", "sum"]);
    let plan = events.iter().find_map(|ev| if let Event::Plan { nodes } = ev { Some(nodes.clone()) } else { None }).unwrap();
    assert_eq!(plan[0].reason, "x changed 3 → 4");
    assert!(matches!(&plan[0].reasons[..], [polyflow::fingerprint::DirtyReason::ParamChanged { .. }]), "{:?}", plan[0].reasons);
    assert_eq!(e.run_with(Some("fast"), RunOptions::default()).0, Vec::<String>::new());
    // The matrix declaration id as a target selects all of its expansions.
    // Back to the default profile: still cached. The matrix declaration id as a target selects its expansions.
    let (ran, events) = e.run_with(None, RunOptions { targets: vec!["m".into()], ..Default::default() });
    assert!(ran.is_empty());
    let plan = events.iter().find_map(|ev| if let Event::Plan { nodes } = ev { Some(nodes.clone()) } else { None }).unwrap();
    let ids: Vec<&str> = plan.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&"sum"));
}

#[test]
fn failure_stops_dependents_but_not_independent_branches() {
    let e = Env::new();
    let tail = "[node.d]\nkind = \"count\"\nx = 1000\ninputs = { in = \"c\" }\n";
    e.write("p.toml", &(CHAIN.replace("x = 10\n", "x = 10\nfail = true\n") + tail));
    let (ran, events) = e.run_with(None, RunOptions::default());
    assert_eq!(ran, ["a", "side"]);
    assert!(events.iter().any(|ev| matches!(ev, Event::Failed { id, .. } if id == "b")));
    assert!(events.iter().any(|ev| matches!(ev, Event::Skipped { id, because, .. } if id == "c" && because == "b")));
    // Skipped through a skipped node: the node that failed is named, not `c`.
    assert!(events.iter().any(|ev| matches!(ev, Event::Skipped { id, because, .. } if id == "d" && because == "b")), "{events:?}");
    assert!(e.reasons("b")[0].starts_with("last run failed: boom"));
}

#[test]
fn corrupt_or_missing_blob_is_detected_and_recomputed() {
    let e = Env::new();
    e.write("p.toml", CHAIN);
    e.run();
    let store = e.store();
    let blobs = store.blobs.list();
    // Flip a byte in every blob (same sizes): freshness trusts the store's record (no bytes read)…
    for (d, _) in &blobs {
        let p = store.blobs.path(d);
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 0x55;
        std::fs::write(&p, b).unwrap();
    }
    assert!(e.reasons("a").is_empty());
    assert!(e.run().is_empty());
    // …but no corrupt byte reaches a computation: `c` reads `b`'s damaged blob, which is moved aside, `b` is
    // recomputed (reading `a`'s damaged blob: `a` is recomputed too) and `c` retried.
    e.write("p.toml", &CHAIN.replace("x = 100", "x = 101"));
    let (ran, events) = e.run_with(None, RunOptions::default());
    assert_eq!(ran, ["a", "b", "c"]);
    assert!(!events.iter().any(|ev| matches!(ev, Event::Failed { .. })), "{events:?}");
    assert!(events.iter().any(|ev| matches!(ev, Event::Note { message, .. } if message.contains("damaged"))));
    assert!(store.root.join("damaged").read_dir().unwrap().count() >= 2);
    // A missing blob or one of the wrong size is seen from metadata alone.
    let m = store.index().unwrap().artifacts().into_iter().map(|(_, m)| m).find(|m| m.files.contains_key("v.json")).unwrap();
    let digest = m.files["v.json"].digest.clone();
    std::fs::remove_file(store.blobs.path(&digest)).unwrap();
    let ran = e.run();
    assert!(!ran.is_empty());
    assert!(e.run().is_empty());
}

#[test]
fn wrong_artifact_type_is_a_spec_error() {
    struct Other;
    impl Stage for Other {
        fn kind(&self) -> &'static str {
            "other"
        }
        fn version(&self) -> u32 {
            1
        }
        fn doc(&self) -> &'static str {
            ""
        }
        fn output(&self) -> &'static str {
            "text"
        }
        fn inputs(&self) -> Vec<InputSlot> {
            vec![]
        }
        fn params(&self) -> Vec<ParamSpec> {
            vec![]
        }
        fn run(&self, _: &mut StageCtx<'_>) -> Result<(), StageError> {
            Ok(())
        }
    }
    let mut e = Env::new();
    e.reg.register(Other);
    let p =
        spec::load_str("p.toml", "[node.o]\nkind = \"other\"\n[node.c]\nkind = \"count\"\ninputs = { in = \"o\" }\n", Path::new("."), None)
            .unwrap();
    let err = graph::build(p, &e.reg).err().unwrap();
    assert_eq!(err.location.as_ref().unwrap().line, 5);
    assert!(err.message.contains("takes num artifacts"), "{}", err.message);
}

/// Holds the devices it was given for a while and logs them with its start and end.
/// (node, devices, start, end, threads of the pool it ran in) of each run.
type HoldLog = Arc<Mutex<Vec<(String, Vec<u32>, std::time::Instant, std::time::Instant, usize)>>>;

struct Hold(HoldLog);

impl Stage for Hold {
    fn kind(&self) -> &'static str {
        "hold"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "test kind"
    }
    fn output(&self) -> &'static str {
        "num"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("x", ParamType::Int { min: 0, max: 1000 }, json!(0), "value"),
            ParamSpec::opt("need", ParamType::Int { min: 0, max: 8 }, json!(0), "devices the kind itself needs"),
            ParamSpec::opt("ms", ParamType::Int { min: 0, max: 10_000 }, json!(300), "how long it holds"),
        ]
    }
    fn resources(&self, params: &serde_json::Value, _: &BTreeMap<String, String>) -> polyflow::stage::Resources {
        polyflow::stage::Resources { cpu_slots: 1, devices: params["need"].as_u64().unwrap_or(0) as u32 }
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let start = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(ctx.params["ms"].as_u64().unwrap_or(300)));
        let threads = rayon::current_num_threads();
        self.0.lock().unwrap().push((ctx.id.to_string(), ctx.devices.clone(), start, std::time::Instant::now(), threads));
        ctx.out.put_json("v.json", &ctx.params["x"])
    }
}

/// With a shared cache, a GPU node the cache holds is fetched without waiting for a device. `--devices 1`:
/// `a` computes on the device for 1.5 s; `c1` and `c2` (GPU nodes the cache holds) become ready when the CPU
/// node `b` they read ends (0.1 s, forced so that it computes) and are fetched then, while `a` still holds
/// the device, not after it.
#[test]
fn cached_gpu_nodes_are_fetched_without_waiting_for_a_device() {
    let (e, log) = Env::with_hold();
    let c = |n: &str, x: u32| format!("[node.{n}]\nkind = \"count\"\nx = {x}\ninputs = {{ in = [\"b\"] }}\nresources = {{ gpus = 1 }}\n");
    e.write(
        "p.toml",
        &format!(
            "[node.a]\nkind = \"hold\"\nx = 1\nms = 1500\nresources = {{ gpus = 1 }}\n[node.b]\nkind = \"hold\"\nx = 2\nms = 100\n{}{}",
            c("c1", 3),
            c("c2", 4)
        ),
    );
    let cache: Arc<dyn polyflow::store::cache::ArtifactCache> =
        Arc::new(polyflow::store::cache::DirCache::open(&e.dir.path().join("cache")).unwrap());
    let opts = |targets: Vec<String>, force: Vec<String>| RunOptions {
        targets,
        force,
        jobs: 4,
        devices: 1,
        cache: Some(cache.clone()),
        publish: true,
        ..RunOptions::default()
    };
    let (ran, _) = e.run_with(None, opts(vec!["c1".into(), "c2".into()], vec![]));
    assert_eq!(ran, ["b", "c1", "c2"]);
    std::fs::remove_dir_all(e.dir.path().join("store")).unwrap();
    log.lock().unwrap().clear();
    // The whole pipeline from an empty store, `b` forced, each event stamped when it arrives.
    let g = graph::build(spec::load(&e.dir.path().join("p.toml"), None).unwrap(), &e.reg).unwrap();
    let events = Mutex::new(vec![]);
    let sink = |ev: &Event| events.lock().unwrap().push((ev.clone(), std::time::Instant::now()));
    let mut o = opts(vec![], vec!["b".into()]);
    o.env.insert("seed".into(), g.pipeline.seed.to_string());
    exec::run(&g, &e.store(), &o, &sink).unwrap();
    let events = events.into_inner().unwrap();
    let log = log.lock().unwrap().clone();
    let held = |id: &str| log.iter().find(|l| l.0 == id).map(|l| (l.1.clone(), l.2, l.3)).unwrap_or_else(|| panic!("{id} did not run"));
    let ((a_dev, a_start, a_end), (_, _, b_end)) = (held("a"), held("b"));
    assert_eq!(a_dev, [0], "`a` holds the one device");
    for c in ["c1", "c2"] {
        let at = events.iter().find_map(|(ev, t)| matches!(ev, Event::Fetched { id, .. } if id == c).then_some(*t)).expect("fetched");
        assert!(at > b_end && at > a_start, "{c} fetched before its input was made or the device was taken");
        assert!(at < a_end, "{c} waited for the device `a` held: fetched {:?} after `a` ended", at - a_end);
    }
}

/// `--devices 2`: nodes asking for one GPU each run two at a time, each pinned to a device no other running node
/// holds; a node asking for two gets both (and one asking for more than there are gets all; one whose kind needs
/// two gets two even with `resources.gpus = 1`); `Started` events name the devices. With `--devices 0` nodes run
/// without devices. Devices never enter keys.
#[test]
fn nodes_are_pinned_to_their_own_devices() {
    let (e, log) = Env::with_hold();
    let one = |n: &str, x: u32| format!("[node.{n}]\nkind = \"hold\"\nx = {x}\nresources = {{ gpus = 1 }}\n");
    let text = format!(
        "{}{}{}[node.both]\nkind = \"hold\"\nx = 4\nresources = {{ gpus = 2 }}\n[node.many]\nkind = \"hold\"\nx = 5\nresources = {{ gpus = 8 }}\n[node.floor]\nkind = \"hold\"\nx = 6\nneed = 2\nresources = {{ gpus = 1 }}\n",
        one("g1", 1),
        one("g2", 2),
        one("g3", 3)
    );
    e.write("p.toml", &text);
    let opts = RunOptions { jobs: 8, devices: 2, ..RunOptions::default() };
    let (ran, events) = e.run_with(None, opts);
    assert_eq!(ran, ["both", "floor", "g1", "g2", "g3", "many"]);
    let first = log.lock().unwrap().clone();
    for (id, devices, .., threads) in &first {
        let want: &[u32] = if id.starts_with('g') { &[] } else { &[0, 1] };
        if want.is_empty() {
            assert_eq!(devices.len(), 1, "{id} got {devices:?}");
        } else {
            assert_eq!(devices, want, "{id}");
        }
        // Without `cpus`, a node's pool is its devices' share of `-j 8`: 4 threads per device of 2.
        assert_eq!(*threads, 4 * devices.len(), "{id}: threads for {devices:?}");
        let told = events.iter().find_map(|ev| match ev {
            Event::Started { id: i, devices, .. } if i == id => Some(devices.clone()),
            _ => None,
        });
        assert_eq!(told.as_ref(), Some(devices), "{id}: the Started event names its devices");
    }
    // Nodes that ran at the same time held disjoint devices; some did run at the same time.
    let mut overlapped = false;
    for (i, a) in first.iter().enumerate() {
        for b in &first[i + 1..] {
            if a.2 < b.3 && b.2 < a.3 {
                overlapped = true;
                assert!(a.1.iter().all(|d| !b.1.contains(d)), "{} {:?} and {} {:?} ran at once on one device", a.0, a.1, b.0, b.1);
            }
        }
    }
    assert!(overlapped, "two one-GPU nodes never ran side by side on two devices");
    // No devices: the same nodes are fresh (devices are not in keys) and, forced, run with none.
    let (ran, _) = e.run_with(None, RunOptions { jobs: 8, devices: 0, ..RunOptions::default() });
    assert!(ran.is_empty(), "devices changed keys: {ran:?}");
    let (ran, events) = e.run_with(None, RunOptions { jobs: 8, devices: 0, force_all: true, ..RunOptions::default() });
    assert_eq!(ran.len(), 6);
    for ev in &events {
        if let Event::Started { id, devices, .. } = ev {
            assert!(devices.is_empty(), "{id} got devices {devices:?} with --devices 0");
        }
    }
    // Without devices a node's pool is its slots: one each.
    let log = log.lock().unwrap().clone();
    assert!(log[log.len() - 6..].iter().all(|l| l.4 == 1), "threads without devices: {:?}", log.iter().map(|l| l.4).collect::<Vec<_>>());
}
