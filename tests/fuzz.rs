//! Bounded fuzzing of the pipeline loader and the graph builder (issue 15, item 6).
//!
//! Property: whatever the bytes of a pipeline file (or of a file it includes), loading it
//! (`spec::load`, the path `polyflow run/plan/status` takes) and validating it (`graph::build`, then
//! `select` and `declarations`, which read nothing) never panics, and every error it gives renders as
//! `FILE:LINE:COL: error: …` with a position that exists in that file: what the CLI prints before it exits
//! with code 2 (`CliError::Spec` → `exit::USAGE`). Strategies:
//!
//! - `bytes`: arbitrary bytes, half of them drawn from TOML's punctuation (invalid UTF-8 included);
//! - `utf8`: arbitrary Unicode text, and text over TOML's alphabet;
//! - `soup`: lines generated from a grammar of headers, keys and values taken from the real pipelines and the
//!   stage registry (kinds, parameters, slots, node ids, profiles, `{var}` placeholders, edge-case numbers);
//! - `typed`: well-formed pipelines of registry kinds with parameters of (mostly) the declared type, wired to
//!   each other and to the real pipelines' nodes: reaches the graph builder's checks;
//! - `mutate`: the real pipelines (pipelines/, datasets/, tests/pipelines, tests/malformed), copied with their
//!   includes into a temporary tree, with 1–4 mutations applied to the root or to one of its includes (byte
//!   flips, deleted / duplicated / swapped lines, values swapped between keys, truncation, numbers replaced by
//!   strings or huge numbers, duplicated tables, inserted tokens, replaced strings);
//! - `overlay`: 1–3 `--set NODE.PARAM=VALUE` arguments (the root's own nodes and their kind's parameters, or
//!   anything) and sometimes a `--config` file, over the real pipelines (`spec::load_with`).
//!
//! Then the binary itself (`polyflow plan` / `status`) on saved mutated inputs (tests/fuzz/*.toml) and on
//! generated mutations the library rejects: exit 2, the same FILE:LINE:COL on stderr, no `.polyflow` store.
//!
//! Bounded for CI: `POLYFLOW_FUZZ_CASES` cases per strategy (default [`DEFAULT_CASES`]), seed
//! `POLYFLOW_FUZZ_SEED` (default [`DEFAULT_SEED`], so a CI run is reproducible); each test prints how many inputs
//! it tried. A failure prints the (shrunk) input and the seed that found it.
//!
//! Accepted and counted (each run prints how many): a `--profile` that the (mutated) pipeline no longer
//! declares (a command-line error, not a file's: no position by design). What the suite found first — a root
//! file that declares no nodes had no position, an integer past i64 was reported at 1:1 — is fixed and kept by
//! `an_empty_pipeline_error_has_a_position` and `an_out_of_range_integer_is_reported_at_the_number`.

use polyflow::graph;
use polyflow::spec::{self, Pipeline, SpecError, SpecErrorKind};
use polyflow::stage::{ParamType, Registry};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Instant;

/// Cases per strategy when `POLYFLOW_FUZZ_CASES` is not set: the whole file runs in 15–30 s on 2 cores (test
/// profile; BENCHMARKS.md has the numbers).
const DEFAULT_CASES: u32 = 4000;
/// The seed when `POLYFLOW_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x15_06;

fn cases() -> u32 {
    std::env::var("POLYFLOW_FUZZ_CASES").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("POLYFLOW_FUZZ_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(DEFAULT_SEED)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A deterministic runner: `salt` separates the strategies' random streams.
fn runner(cases: u32, salt: u64) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_global_rejects: cases.saturating_mul(4),
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed().to_le_bytes());
    bytes[8..16].copy_from_slice(&salt.to_le_bytes());
    bytes[16..24].copy_from_slice(b"polyflow");
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

// ----------------------------------------------------------------------------------------------------------
// Panics: caught per input, their message kept (not printed) while a fuzz input runs.

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                CAUGHT.with(|c| *c.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic becomes `Err("panic in PHASE: message at file:line")`.
fn guarded<T>(phase: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|_| {
        let msg = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_else(|| "(no message)".into());
        format!("panic in {phase}: {msg}")
    })
}

// ----------------------------------------------------------------------------------------------------------
// The property.

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Loaded and validated.
    Valid,
    /// A located error (what the CLI prints, exit 2).
    Located,
    /// `--profile NAME` that the pipeline does not declare: a command-line error, no position by design.
    UnknownProfile,
}

/// Tallies of one strategy.
#[derive(Default)]
struct Tally {
    tried: AtomicUsize,
    by_outcome: [AtomicUsize; 5],
    /// Error kinds seen (first word of the Debug name) → count, for the report.
    kinds: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Tally {
    fn record(&self, o: &Result<Outcome, String>, kind: Option<&SpecErrorKind>) {
        self.tried.fetch_add(1, Ordering::Relaxed);
        if let Ok(o) = o {
            self.by_outcome[*o as usize].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(k) = kind {
            *self.kinds.lock().unwrap().entry(format!("{k:?}")).or_default() += 1;
        }
    }

    fn report(&self, name: &str, cases: u32, started: Instant) {
        let n = |o: Outcome| self.by_outcome[o as usize].load(Ordering::Relaxed);
        eprintln!(
            "fuzz[{name}]: {} inputs tried ({cases} cases, seed {}) in {:.1} s: {} valid, {} located errors, {} unknown \
             --profile; error kinds {:?}",
            self.tried.load(Ordering::Relaxed),
            seed(),
            started.elapsed().as_secs_f64(),
            n(Outcome::Valid),
            n(Outcome::Located),
            n(Outcome::UnknownProfile),
            self.kinds.lock().unwrap()
        );
    }
}

/// Loads `root` (as `polyflow plan ROOT [--profile P]` does), validates it, and checks the property.
fn check_file(reg: &Registry, root: &Path, profile: Option<&str>) -> (Result<Outcome, String>, Option<SpecErrorKind>) {
    check_with(reg, root, profile, &spec::Overlay::default())
}

/// [`check_file`] with `--config` / `--set` overrides (`spec::load_with`).
fn check_with(
    reg: &Registry,
    root: &Path,
    profile: Option<&str>,
    overlay: &spec::Overlay,
) -> (Result<Outcome, String>, Option<SpecErrorKind>) {
    let loaded = match guarded("spec::load_with", || spec::load_with(root, profile, overlay)) {
        Ok(r) => r,
        Err(panic) => return (Err(panic), None),
    };
    let pipeline = match loaded {
        Ok(p) => p,
        Err(e) => {
            let kind = e.kind.clone();
            return (check_error(&e, profile), Some(kind));
        }
    };
    match validate(reg, pipeline) {
        Ok(Ok(())) => (Ok(Outcome::Valid), None),
        Ok(Err(e)) => {
            let kind = e.kind.clone();
            (check_error(&e, profile), Some(kind))
        }
        Err(panic) => (Err(panic), None),
    }
}

/// `graph::build`, then what `plan` does next without reading anything: the default selection and the
/// declarations. Outer `Err` = a panic.
fn validate(reg: &Registry, p: Pipeline) -> Result<Result<(), SpecError>, String> {
    let g = match guarded("graph::build", || graph::build(p, reg))? {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    let sel = match guarded("Graph::select", || g.select(&[]))? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    guarded("graph::declarations", || graph::declarations(&g, &sel))?;
    Ok(Ok(()))
}

/// The error renders as `FILE:LINE:COL: error: …` and LINE:COL exist in FILE (read back from disk).
fn check_error(e: &SpecError, profile: Option<&str>) -> Result<Outcome, String> {
    let rendered = e.render();
    let Some(l) = &e.location else {
        if e.kind == SpecErrorKind::UnknownProfile && profile.is_some() {
            return Ok(Outcome::UnknownProfile);
        }
        return Err(format!("error without a position:\n{rendered}"));
    };
    let head = format!("{}:{}:{}: error: ", l.file, l.line, l.col);
    if !rendered.starts_with(&head) {
        return Err(format!("rendered error does not start with `{head}`:\n{rendered}"));
    }
    if l.line == 0 || l.col == 0 || l.file == "<unknown>" {
        return Err(format!("degenerate position {l}:\n{rendered}"));
    }
    // A `--set ARG` error is located in the argument (its "file" is `--set ARG`), a file's in the file.
    let text = match l.file.strip_prefix("--set ") {
        Some(arg) => arg.to_string(),
        None => {
            let bytes = std::fs::read(Path::new(&l.file))
                .map_err(|err| format!("position names `{}`, which cannot be read ({err}):\n{rendered}", l.file))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(line) = lines.get(l.line - 1) else {
        return Err(format!("line {} is past the end of `{}` ({} lines):\n{rendered}", l.line, l.file, lines.len()));
    };
    let chars = line.chars().count();
    if l.col > chars + 1 {
        return Err(format!("column {} is past the end of line {} of `{}` ({chars} characters):\n{rendered}", l.col, l.line, l.file));
    }
    if e.message.starts_with("integer out of range") && (l.line, l.col) == (1, 1) && !line.trim_start().starts_with(char::is_numeric) {
        return Err(format!("an out-of-range integer reported at 1:1, not at the number:\n{rendered}"));
    }
    Ok(Outcome::Located)
}

/// Runs `strategy` through `check` for `cases` cases; fails with the shrunk input on a violation.
fn fuzz<S: Strategy>(
    name: &str,
    salt: u64,
    cases: u32,
    strategy: S,
    check: impl Fn(&S::Value) -> (Result<Outcome, String>, Option<SpecErrorKind>),
) where
    S::Value: std::fmt::Debug,
{
    let tally = Tally::default();
    let started = Instant::now();
    // `POLYFLOW_FUZZ_SHOW=N` prints the first N inputs of each strategy and what they gave.
    let show: usize = std::env::var("POLYFLOW_FUZZ_SHOW").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let result = runner(cases, salt).run(&strategy, |input| {
        let (outcome, kind) = check(&input);
        if tally.tried.load(Ordering::Relaxed) < show {
            eprintln!("fuzz[{name}] input {input:?}\n  -> {outcome:?} {kind:?}");
        }
        tally.record(&outcome, kind.as_ref());
        outcome.map(|_| ()).map_err(TestCaseError::fail)
    });
    tally.report(name, cases, started);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("fuzz[{name}] (seed {}): {why}\nminimal input: {input:#?}", seed())
        }
        Err(TestError::Abort(why)) => panic!("fuzz[{name}] aborted: {why}"),
    }
}

// ----------------------------------------------------------------------------------------------------------
// Vocabulary of the real pipelines and the registry.

/// The real pipeline files, relative to the repository root.
fn corpus_files() -> Vec<PathBuf> {
    let mut out = vec![];
    for dir in ["pipelines", "pipelines/paper", "datasets", "tests/pipelines", "tests/malformed", "tests/malformed/inc"] {
        let Ok(rd) = std::fs::read_dir(repo().join(dir)) else { continue };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.strip_prefix(repo()).unwrap().to_path_buf())
            .collect();
        files.sort();
        out.extend(files);
    }
    assert!(out.len() >= 40, "found {} pipeline files", out.len());
    out
}

/// Words to build inputs from.
#[derive(Debug, Clone, Default)]
struct Vocab {
    keys: Vec<String>,
    strings: Vec<String>,
    numbers: Vec<String>,
    ids: Vec<String>,
    profiles: Vec<String>,
    kinds: Vec<String>,
    slots: Vec<String>,
    /// Per kind: its parameters and input slots.
    schema: Vec<KindSchema>,
    /// Absolute paths of real pipeline files that load and validate (for `include`).
    good_includes: Vec<String>,
}

#[derive(Debug, Clone)]
struct KindSchema {
    kind: String,
    /// (name, type, required)
    params: Vec<(String, ParamType, bool)>,
    /// (name, takes several, required)
    slots: Vec<(String, bool, bool)>,
}

fn walk(v: &toml::Value, under_node: bool, vocab: &mut BTreeMap<&'static str, BTreeSet<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                vocab.entry("keys").or_default().insert(k.clone());
                if under_node {
                    vocab.entry("ids").or_default().insert(k.clone());
                }
                walk(x, k == "node", vocab);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| walk(x, false, vocab)),
        toml::Value::String(s) if s.chars().count() <= 48 => {
            vocab.entry("strings").or_default().insert(s.clone());
        }
        toml::Value::Integer(i) => {
            vocab.entry("numbers").or_default().insert(i.to_string());
        }
        toml::Value::Float(f) => {
            vocab.entry("numbers").or_default().insert(format!("{f:?}"));
        }
        _ => {}
    }
}

fn vocab(reg: &Registry) -> Vocab {
    let mut words: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut profiles = BTreeSet::new();
    let mut good_includes = vec![];
    for f in corpus_files() {
        let text = std::fs::read_to_string(repo().join(&f)).unwrap_or_default();
        if let Ok(v) = toml::from_str::<toml::Value>(&text) {
            if let Some(p) = v.get("profile").and_then(|p| p.as_table()) {
                profiles.extend(p.keys().cloned());
            }
            walk(&v, false, &mut words);
        }
        if !f.starts_with("tests/malformed") {
            good_includes.push(repo().join(&f).display().to_string());
        }
    }
    let mut v = Vocab {
        keys: words.remove("keys").unwrap_or_default().into_iter().collect(),
        strings: words.remove("strings").unwrap_or_default().into_iter().collect(),
        numbers: words.remove("numbers").unwrap_or_default().into_iter().collect(),
        ids: words.remove("ids").unwrap_or_default().into_iter().collect(),
        profiles: profiles.into_iter().collect(),
        kinds: reg.kinds().map(String::from).collect(),
        good_includes,
        ..Vocab::default()
    };
    let mut slots = BTreeSet::new();
    for s in reg.stages() {
        let params: Vec<(String, ParamType, bool)> =
            s.params().into_iter().map(|p| (p.name.to_string(), p.ty, p.default.is_none())).collect();
        let sl: Vec<(String, bool, bool)> = s.inputs().into_iter().map(|i| (i.name.to_string(), i.multiple, !i.optional)).collect();
        v.keys.extend(params.iter().map(|(n, _, _)| n.clone()));
        slots.extend(sl.iter().map(|(n, _, _)| n.clone()));
        v.schema.push(KindSchema { kind: s.kind().to_string(), params, slots: sl });
    }
    v.slots = slots.into_iter().collect();
    v.keys.sort();
    v.keys.dedup();
    assert!(v.kinds.len() >= 10 && v.ids.len() >= 20 && v.keys.len() >= 30, "vocabulary too small: {v:?}");
    v
}

// ----------------------------------------------------------------------------------------------------------
// Generators.

/// Numbers at and past the edges of what TOML and i64 / f64 hold, and other odd literals.
const ODD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "+1",
    "1_000",
    "0x7fffffffffffffff",
    "0xffffffffffffffff",
    "0o777",
    "0b1010",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999999999",
    "1e308",
    "1e400",
    "-1e400",
    "5e-324",
    "1e-400",
    "nan",
    "+nan",
    "-nan",
    "inf",
    "-inf",
    "0.1",
    "-0.0",
    "1.5e3",
    "00",
    "01",
    "1__0",
    "1.",
    ".5",
    "0x",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
];

/// Strings that mean something to the loader (placeholders, globs) or to a renderer (escapes, long lines).
const ODD_STRINGS: &[&str] = &[
    "\"\"",
    "\"{lr}\"",
    "\"{seed}\"",
    "\"{replicate}\"",
    "\"{\"",
    "\"}\"",
    "\"{{seed}}\"",
    "\"{seed}{replicate}{seed}\"",
    "\"a.*\"",
    "\".*\"",
    "\"*\"",
    "\"..\"",
    "\"/\"",
    "\"/dev/null\"",
    "\"\\u0000\"",
    "\"\\t\\n\"",
    "\"é\u{1F600}\u{200B}\"",
    "'literal {lr}'",
    "\"\"\"multi\nline\"\"\"",
    "'''raw\nlines'''",
    "\"16G\"",
    "\"2:00:00\"",
    "\"1-00:00:00\"",
    "\"slurm\"",
    "\"local\"",
    "\"--qos=high\"",
];

/// Pieces that break TOML in different places.
const JUNK: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "==",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\\",
    "\t",
    "\r",
    "\r\n",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "\u{2028}",
    "[node.]",
    "[node..a]",
    "[node.a.b.c]",
    "[.]",
    "[]",
    "[node.\"a b\"]",
    "a.b.c = 1",
    "\"quoted key\" = 1",
    "key",
    "= 1",
    "a = ",
    "a = 1 b = 2",
    "a = [1,",
    "a = {",
    "a = { b = 1, }",
    "a = [1 2]",
];

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A key: a real one, an id, a slot, or an odd one.
fn key(v: &Vocab) -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(v.keys.clone()),
        2 => select(v.ids.clone()),
        1 => select(v.slots.clone()),
        1 => select(vec!["kind", "inputs", "matrix", "seeds", "resources", "seed", "include", "node", "profile", "executor"])
            .prop_map(String::from),
        1 => "[a-z_]{1,8}",
        1 => select(vec!["\"\"", "\"a.b\"", "'x y'", "\"\u{e9}\"", "a.b", "1", "-", "true"]).prop_map(String::from),
    ]
    .boxed()
}

/// A TOML value as text: real words, odd literals, nested arrays and inline tables.
fn value(v: &Vocab) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        3 => select(v.numbers.clone()),
        3 => select(ODD_NUMBERS).prop_map(String::from),
        4 => select(v.strings.clone()).prop_map(|s| quote(&s)),
        3 => select(v.ids.clone()).prop_map(|s| quote(&s)),
        2 => select(v.kinds.clone()).prop_map(|s| quote(&s)),
        2 => select(ODD_STRINGS).prop_map(String::from),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => ".{0,12}".prop_map(|s| quote(&s)),
    ];
    let key = key(v);
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(|xs| format!("[{}]", xs.join(", "))),
            proptest::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                let items: Vec<String> = kv.into_iter().map(|(k, x)| format!("{k} = {x}")).collect();
                format!("{{ {} }}", items.join(", "))
            }),
        ]
    })
    .boxed()
}

/// One line of a pipeline file.
fn line(v: &Vocab) -> BoxedStrategy<String> {
    let id = prop_oneof![3 => select(vec!["a", "b", "c", "n0", "n1"]).prop_map(String::from), 2 => select(v.ids.clone())];
    let profile = prop_oneof![3 => select(v.profiles.clone()), 1 => Just("p".to_string())];
    let kind = select(v.kinds.clone());
    let header = prop_oneof![
        4 => id.clone().prop_map(|i| format!("[node.{i}]")),
        2 => (profile.clone(), id.clone()).prop_map(|(p, i)| format!("[profile.{p}.node.{i}]")),
        2 => (profile.clone(), kind.clone()).prop_map(|(p, k)| format!("[profile.{p}.kind.{k}]")),
        1 => Just("[executor]".to_string()),
        1 => profile.clone().prop_map(|p| format!("[profile.{p}.executor]")),
        1 => profile.clone().prop_map(|p| format!("[profile.{p}]")),
        1 => (id.clone(), select(vec!["inputs", "matrix", "resources", "augment"])).prop_map(|(i, t)| format!("[node.{i}.{t}]")),
        1 => id.clone().prop_map(|i| format!("[[node.{i}]]")),
        1 => key(v).prop_map(|k| format!("[{k}]")),
    ];
    let includes = prop_oneof![
        select(v.good_includes.clone()).prop_map(|p| quote(&p)),
        select(vec!["\"missing.toml\"", "\"/dev/zero\"", "\"/\"", "\".\"", "\"fuzz.toml\"", "\"inc.toml\"", "1", "\"\""])
            .prop_map(String::from),
    ];
    let special = prop_oneof![
        kind.clone().prop_map(|k| format!("kind = {}", quote(&k))),
        (select(v.slots.clone()), id.clone()).prop_map(|(s, i)| format!("inputs = {{ {s} = {} }}", quote(&i))),
        (select(v.slots.clone()), proptest::collection::vec(id.clone(), 0..3))
            .prop_map(|(s, is)| format!("inputs = {{ {s} = [{}] }}", is.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", "))),
        (select(vec!["lr", "seed", "x", "replicate"]), proptest::collection::vec(value(v), 0..4))
            .prop_map(|(k, xs)| format!("matrix = {{ {k} = [{}] }}", xs.join(", "))),
        select(vec!["0", "1", "2", "3", "1000", "1001", "-1", "\"2\""]).prop_map(|n| format!("seeds = {n}")),
        proptest::collection::vec(includes, 0..3).prop_map(|xs| format!("include = [{}]", xs.join(", "))),
        select(vec!["0", "7", "-1", "\"0\"", "1.5"]).prop_map(|n| format!("seed = {n}")),
        (select(vec!["cpus", "gpus", "mem", "time", "partition", "sbatch", "cpu"]), value(v))
            .prop_map(|(k, x)| format!("resources = {{ {k} = {x} }}")),
    ];
    prop_oneof![
        4 => header,
        8 => (key(v), value(v)).prop_map(|(k, x)| format!("{k} = {x}")),
        4 => special,
        2 => select(JUNK).prop_map(String::from),
        1 => Just(String::new()),
        1 => ".{0,20}".prop_map(|s| format!("# {s}")),
    ]
    .boxed()
}

/// A value of (usually) the parameter's type, sometimes at or past its range.
fn typed_value(ty: &ParamType, v: &Vocab) -> BoxedStrategy<String> {
    let any_value = value(v);
    let typed: BoxedStrategy<String> = match ty.clone() {
        ParamType::Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        ParamType::Int { min, max } => prop_oneof![
            3 => (min..=max.min(min.saturating_add(1000))).prop_map(|i| i.to_string()),
            2 => (min..=max).prop_map(|i| i.to_string()),
            2 => select(vec![min, max, max.saturating_sub(1), min.saturating_add(1)]).prop_map(|i| i.to_string()),
            1 => select(vec![min.saturating_sub(1), max.saturating_add(1)]).prop_map(|i| i.to_string()),
        ]
        .boxed(),
        ParamType::Float { min, max } => {
            let lo = if min.is_finite() { min } else { -1e6 };
            let hi = if max.is_finite() { max } else { 1e6 };
            prop_oneof![
                4 => (0.0..=1.0f64).prop_map(move |t| format!("{:?}", lo + t * (hi - lo))),
                1 => select(vec![min, max, min - 1.0, max + 1.0]).prop_map(|f| format!("{f:?}").replace("NaN", "nan")),
            ]
            .boxed()
        }
        ParamType::Choice(c) => prop_oneof![4 => select(c.to_vec()).prop_map(quote), 1 => Just("\"nope\"".to_string())].boxed(),
        ParamType::Str | ParamType::Path => select(v.strings.clone()).prop_map(|s| quote(&s)).boxed(),
        ParamType::StrList => proptest::collection::vec(select(v.strings.clone()), 0..4)
            .prop_map(|xs| format!("[{}]", xs.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")))
            .boxed(),
        ParamType::FloatList => {
            proptest::collection::vec(select(v.numbers.clone()), 0..4).prop_map(|xs| format!("[{}]", xs.join(", "))).boxed()
        }
        ParamType::IntList { min, max } => proptest::collection::vec(
            prop_oneof![4 => min..=max.min(min.saturating_add(64)), 1 => select(vec![min.saturating_sub(1), max.saturating_add(1)])],
            0..4,
        )
        .prop_map(|xs| format!("[{}]", xs.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
        .boxed(),
        ParamType::Table | ParamType::Any => any_value.clone(),
    };
    prop_oneof![12 => typed, 1 => any_value].boxed()
}

/// One node of a well-formed pipeline: `[node.nI]` of a registry kind, typed parameters, inputs to siblings
/// or to the real pipelines' nodes, sometimes a matrix, replicates or resources.
fn typed_node(v: &Vocab, siblings: usize) -> BoxedStrategy<String> {
    let v = v.clone();
    (0..v.schema.len())
        .prop_flat_map(move |k| {
            let s = &v.schema[k];
            // Required parameters (almost always), then a few optional ones.
            let required: Vec<BoxedStrategy<Option<(String, String)>>> = s
                .params
                .iter()
                .filter(|p| p.2)
                .map(|(name, ty, _)| {
                    let name = name.clone();
                    proptest::option::weighted(0.95, typed_value(ty, &v)).prop_map(move |x| x.map(|x| (name.clone(), x))).boxed()
                })
                .collect();
            let optional = if s.params.is_empty() {
                Just(vec![]).boxed()
            } else {
                let specs = s.params.clone();
                let vv = v.clone();
                proptest::collection::vec(
                    (0..specs.len()).prop_flat_map(move |i| {
                        let (name, ty, _) = specs[i].clone();
                        typed_value(&ty, &vv).prop_map(move |x| (name.clone(), x))
                    }),
                    0..4,
                )
                .boxed()
            };
            let params = (required, optional).prop_map(|(r, o)| r.into_iter().flatten().chain(o).collect::<Vec<_>>());
            let target = prop_oneof![
                3 => (0..siblings).prop_map(|j| format!("n{j}")),
                2 => select(v.ids.clone()),
                1 => (0..siblings).prop_map(|j| format!("n{j}.*")),
            ];
            // Required slots (almost always) with one target (or more where the slot takes several), then others.
            type SlotTargets = BoxedStrategy<Option<(String, Vec<String>)>>;
            let required: Vec<SlotTargets> = s
                .slots
                .iter()
                .filter(|sl| sl.2)
                .map(|(name, multiple, _)| {
                    let name = name.clone();
                    let n = if *multiple { 1..3 } else { 1..2 };
                    proptest::option::weighted(0.95, proptest::collection::vec(target.clone(), n))
                        .prop_map(move |t| t.map(|t| (name.clone(), t)))
                        .boxed()
                })
                .collect();
            let others = if s.slots.is_empty() {
                Just(vec![]).boxed()
            } else {
                let names: Vec<String> = s.slots.iter().map(|(n, _, _)| n.clone()).collect();
                proptest::collection::vec((select(names), proptest::collection::vec(target, 1..3)), 0..2).boxed()
            };
            let inputs = (required, others).prop_map(|(r, o)| r.into_iter().flatten().chain(o).collect::<Vec<_>>());
            let extra = prop_oneof![
                6 => Just(String::new()),
                1 => (select(vec!["1", "2", "3"])).prop_map(|n| format!("seeds = {n}\n")),
                1 => proptest::collection::vec(select(v.numbers.clone()), 1..3)
                    .prop_map(|xs| format!("matrix = {{ m = [{}] }}\n", xs.join(", "))),
                1 => select(vec!["cpus = 2", "gpus = 1", "mem = \"4G\"", "time = \"1:00\"", "mem = \"4 G\""])
                    .prop_map(|r| format!("resources = {{ {r} }}\n")),
            ];
            (Just(s.kind.clone()), params, inputs, extra)
        })
        .prop_map(|(kind, mut params, mut inputs, extra)| {
            // One line per key (a repeated key is a TOML error that the other strategies cover).
            let mut seen = BTreeSet::new();
            params.retain(|(k, _)| seen.insert(k.clone()));
            let mut seen = BTreeSet::new();
            inputs.retain(|(k, _)| seen.insert(k.clone()));
            let mut t = format!("kind = {}\n{extra}", quote(&kind));
            if !inputs.is_empty() {
                let items: Vec<String> = inputs
                    .iter()
                    .map(|(slot, ts)| {
                        if ts.len() == 1 {
                            format!("{slot} = {}", quote(&ts[0]))
                        } else {
                            format!("{slot} = [{}]", ts.iter().map(|x| quote(x)).collect::<Vec<_>>().join(", "))
                        }
                    })
                    .collect();
                t.push_str(&format!("inputs = {{ {} }}\n", items.join(", ")));
            }
            for (k, x) in params {
                t.push_str(&format!("{k} = {x}\n"));
            }
            t
        })
        .boxed()
}

/// A well-formed pipeline of 1–6 typed nodes, maybe including a real pipeline, maybe with a profile.
fn typed_pipeline(v: &Vocab) -> BoxedStrategy<String> {
    let includes = v.good_includes.clone();
    let v2 = v.clone();
    (1usize..=6)
        .prop_flat_map(move |n| {
            let include = prop_oneof![3 => Just(None), 1 => select(includes.clone()).prop_map(Some)];
            let profile = prop_oneof![
                3 => Just(String::new()),
                1 => (0..n, typed_value(&ParamType::Int { min: 1, max: 10 }, &v2))
                    .prop_map(|(j, x)| format!("[profile.p.node.n{j}]\nsteps = {x}\n")),
                1 => (select(v2.kinds.clone()), key(&v2), value(&v2))
                    .prop_map(|(k, key, x)| format!("[profile.p.kind.{k}]\n{key} = {x}\n")),
            ];
            (proptest::collection::vec(typed_node(&v2, n), n), include, profile)
        })
        .prop_map(|(nodes, include, profile)| {
            let mut t = String::new();
            if let Some(i) = include {
                t.push_str(&format!("include = [{}]\n", quote(&i)));
            }
            for (j, n) in nodes.iter().enumerate() {
                t.push_str(&format!("\n[node.n{j}]\n{n}"));
            }
            t.push('\n');
            t.push_str(&profile);
            t
        })
        .boxed()
}

// ----------------------------------------------------------------------------------------------------------
// Mutations of real pipelines.

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte (may leave invalid UTF-8).
    FlipByte(Index, u8),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Swap the values of two `key = value` lines.
    SwapValues(Index, Index),
    Truncate(Index),
    /// Replace a number literal by a string, a huge number, another type…
    ReplaceNumber(Index, &'static str),
    /// Copy a `[table]` with its body to the end, or only its header.
    DuplicateTable(Index, bool),
    /// Insert a token at a byte position.
    Insert(Index, String),
    /// Replace a quoted string by another.
    ReplaceString(Index, String),
}

const NUMBER_REPLACEMENTS: &[&str] = &[
    "\"12\"",
    "99999999999999999999",
    "-9223372036854775809",
    "9223372036854775807",
    "-1",
    "0",
    "1e400",
    "nan",
    "-inf",
    "0x7fffffffffffffff",
    "1.5",
    "true",
    "[]",
    "{}",
    "[1, \"a\"]",
    "\"{seed}\"",
    "1979-05-27",
];

fn mutation(v: &Vocab) -> BoxedStrategy<Mutation> {
    let token = prop_oneof![
        select(JUNK).prop_map(String::from),
        select(ODD_STRINGS).prop_map(String::from),
        line(v).prop_map(|l| format!("\n{l}\n")),
    ];
    let string = prop_oneof![
        select(v.ids.clone()).prop_map(|s| quote(&s)),
        select(v.kinds.clone()).prop_map(|s| quote(&s)),
        select(ODD_STRINGS).prop_map(String::from),
        select(v.strings.clone()).prop_map(|s| quote(&s)),
    ];
    prop_oneof![
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), select(NUMBER_REPLACEMENTS)).prop_map(|(i, r)| Mutation::ReplaceNumber(i, r)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, b)| Mutation::DuplicateTable(i, b)),
        2 => (any::<Index>(), token).prop_map(|(i, t)| Mutation::Insert(i, t)),
        2 => (any::<Index>(), string).prop_map(|(i, s)| Mutation::ReplaceString(i, s)),
    ]
    .boxed()
}

/// Byte ranges of number literals (a digit run with signs, dots, exponents, underscores) outside strings and
/// comments, roughly.
fn numbers_in(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = vec![];
    let (mut i, mut in_str, mut in_comment) = (0, false, false);
    while i < b.len() {
        let c = b[i];
        if in_comment {
            in_comment = c != b'\n';
        } else if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' || c == b'\n' {
                in_str = false;
            }
        } else if c == b'#' {
            in_comment = true;
        } else if c == b'"' {
            in_str = true;
        } else if c.is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
            let start = if i > 0 && (b[i - 1] == b'-' || b[i - 1] == b'+') { i - 1 } else { i };
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b"._+-".contains(&b[j])) {
                j += 1;
            }
            out.push((start, j));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Byte ranges of basic `"…"` strings (with their quotes) on one line.
fn strings_in(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = vec![];
    let (mut i, mut start, mut in_comment) = (0, None, false);
    while i < b.len() {
        let c = b[i];
        match start {
            _ if in_comment => in_comment = c != b'\n',
            None if c == b'#' => in_comment = true,
            None if c == b'"' => start = Some(i),
            Some(_) if c == b'\\' => i += 1,
            Some(s) if c == b'"' => {
                out.push((s, i + 1));
                start = None;
            }
            Some(_) if c == b'\n' => start = None,
            _ => {}
        }
        i += 1;
    }
    out
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let lines_of = |b: &[u8]| -> Vec<Vec<u8>> { b.split(|&c| c == b'\n').map(|l| l.to_vec()).collect() };
    let join = |ls: Vec<Vec<u8>>| ls.join(&b'\n');
    match m {
        Mutation::FlipByte(i, x) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        Mutation::DeleteLine(i) => {
            let mut ls = lines_of(bytes);
            ls.remove(i.index(ls.len()));
            *bytes = join(ls);
        }
        Mutation::DuplicateLine(i) => {
            let mut ls = lines_of(bytes);
            let at = i.index(ls.len());
            ls.insert(at, ls[at].clone());
            *bytes = join(ls);
        }
        Mutation::SwapLines(a, b) => {
            let mut ls = lines_of(bytes);
            let (a, b) = (a.index(ls.len()), b.index(ls.len()));
            ls.swap(a, b);
            *bytes = join(ls);
        }
        Mutation::SwapValues(a, b) => {
            let mut ls = lines_of(bytes);
            let kv: Vec<usize> =
                (0..ls.len()).filter(|&i| !ls[i].starts_with(b"#") && !ls[i].starts_with(b"[") && ls[i].contains(&b'=')).collect();
            if kv.len() >= 2 {
                let (a, b) = (kv[a.index(kv.len())], kv[b.index(kv.len())]);
                let split = |l: &[u8]| {
                    let eq = l.iter().position(|&c| c == b'=').unwrap();
                    (l[..=eq].to_vec(), l[eq + 1..].to_vec())
                };
                let ((ka, va), (kb, vb)) = (split(&ls[a]), split(&ls[b]));
                ls[a] = [ka, vb].concat();
                ls[b] = [kb, va].concat();
                *bytes = join(ls);
            }
        }
        Mutation::Truncate(i) => {
            let at = i.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        Mutation::ReplaceNumber(i, r) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let nums = numbers_in(&text);
            if !nums.is_empty() && text.len() == bytes.len() {
                let (s, e) = nums[i.index(nums.len())];
                bytes.splice(s..e, r.bytes());
            }
        }
        Mutation::DuplicateTable(i, whole) => {
            let ls = lines_of(bytes);
            let headers: Vec<usize> = (0..ls.len()).filter(|&i| ls[i].starts_with(b"[")).collect();
            if !headers.is_empty() {
                let h = headers[i.index(headers.len())];
                let end = if *whole { (h + 1..ls.len()).find(|&j| ls[j].starts_with(b"[")).unwrap_or(ls.len()) } else { h + 1 };
                let mut copy = ls[h..end].to_vec();
                let mut ls = ls;
                ls.push(vec![]);
                ls.append(&mut copy);
                *bytes = join(ls);
            }
        }
        Mutation::Insert(i, t) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, t.bytes());
        }
        Mutation::ReplaceString(i, s) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let strs = strings_in(&text);
            if !strs.is_empty() && text.len() == bytes.len() {
                let (a, e) = strs[i.index(strs.len())];
                bytes.splice(a..e, s.bytes());
            }
        }
        _ => {}
    }
}

/// The real pipelines copied (with the folders their includes name) under a temporary root; each corpus
/// file with the files its unmutated load reads (itself first), as paths relative to the root.
struct Tree {
    root: tempfile::TempDir,
    files: Vec<TreeFile>,
}

/// One corpus file of a [`Tree`], as its unmutated load sees it.
struct TreeFile {
    /// Relative to the tree's root.
    rel: PathBuf,
    /// The files its load reads, itself first.
    sources: Vec<PathBuf>,
    /// A profile it declares, if any.
    profile: Option<String>,
    /// Its node ids (declarations and expansions) with their kind's parameter names.
    nodes: Vec<(String, Vec<(String, ParamType)>)>,
}

impl Tree {
    fn new(reg: &Registry) -> Tree {
        let root = tempfile::tempdir().unwrap();
        let corpus = corpus_files();
        for f in &corpus {
            let dest = root.path().join(f);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(f), &dest).unwrap();
        }
        let mut files = vec![];
        for f in corpus {
            // Which files does its (unmutated) load read, and which profile to use (one it declares, if any).
            let mut nodes = vec![];
            let (sources, profile) = match spec::load(&root.path().join(&f), None) {
                Ok(p) => {
                    for n in &p.nodes {
                        let params: Vec<(String, ParamType)> = reg
                            .get(&n.kind)
                            .map(|s| s.params().into_iter().map(|x| (x.name.to_string(), x.ty)).collect())
                            .unwrap_or_default();
                        if n.decl != n.id {
                            nodes.push((n.decl.clone(), params.clone()));
                        }
                        nodes.push((n.id.clone(), params));
                    }
                    let srcs: Vec<PathBuf> = p
                        .sources
                        .files
                        .iter()
                        .filter_map(|s| s.canonical.strip_prefix(root.path().canonicalize().unwrap()).ok().map(Path::to_path_buf))
                        .collect();
                    (srcs, p.profiles.iter().next().cloned())
                }
                Err(_) => (vec![f.clone()], None),
            };
            let mut srcs = vec![f.clone()];
            srcs.extend(sources.into_iter().filter(|s| s != &f));
            files.push(TreeFile { rel: f, sources: srcs, profile, nodes });
        }
        Tree { root, files }
    }
}

/// A mutated case: which root, which of its files, whether to pass its profile, the mutations.
type MutCase = (Index, Index, bool, Vec<Mutation>);

fn mutated_case(v: &Vocab) -> impl Strategy<Value = MutCase> {
    (any::<Index>(), any::<Index>(), proptest::bool::weighted(0.3), proptest::collection::vec(mutation(v), 1..=4))
}

/// Writes the mutated file into the tree, runs `f(root file, profile, mutated file)`, restores the file.
fn with_mutation<T>(tree: &Tree, case: &MutCase, f: impl FnOnce(&Path, Option<&str>, &Path) -> T) -> T {
    let (root_i, file_i, use_profile, muts) = case;
    let TreeFile { rel: root, sources: srcs, profile, .. } = &tree.files[root_i.index(tree.files.len())];
    // Mutate the root half of the time, else one of the files it includes.
    let target = if srcs.len() == 1 || file_i.index(2) == 0 { &srcs[0] } else { &srcs[1 + file_i.index(srcs.len() - 1)] };
    let path = tree.root.path().join(target);
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    for m in muts {
        apply(&mut bytes, m);
    }
    std::fs::write(&path, &bytes).unwrap();
    let profile = if *use_profile { profile.as_deref() } else { None };
    let out = f(&tree.root.path().join(root), profile, &path);
    std::fs::write(&path, &original).unwrap();
    out
}

// ----------------------------------------------------------------------------------------------------------
// The tests.

struct Fixture {
    reg: Registry,
    vocab: Vocab,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let reg = polyflow::stages::registry();
    let vocab = vocab(&reg);
    let dir = tempfile::tempdir().unwrap();
    // Something for generated `include = ["inc.toml"]` to find.
    std::fs::write(dir.path().join("inc.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\n").unwrap();
    Fixture { reg, vocab, dir }
}

/// Writes `bytes` as the pipeline file and checks it.
fn check_bytes(fx: &Fixture, bytes: &[u8]) -> (Result<Outcome, String>, Option<SpecErrorKind>) {
    let path = fx.dir.path().join("fuzz.toml");
    std::fs::write(&path, bytes).unwrap();
    let (r, k) = check_file(&fx.reg, &path, None);
    (r.map_err(|e| format!("{e}\ninput (as text): {:?}", String::from_utf8_lossy(bytes))), k)
}

#[test]
fn arbitrary_bytes_never_panic_and_errors_have_a_position() {
    let fx = fixture();
    let toml_byte = select(b"[]{}=\"'.,#\n\r\t \\0123456789+-_eExabnodekindinputs".to_vec());
    let strategy = proptest::collection::vec(prop_oneof![any::<u8>(), toml_byte], 0..400);
    fuzz("bytes", 1, cases(), strategy, |b| check_bytes(&fx, b));
}

#[test]
fn arbitrary_utf8_never_panics_and_errors_have_a_position() {
    let fx = fixture();
    let strategy = prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"'.,#\n \\\\a-z0-9_+\\-]{0,300}",
        proptest::collection::vec(select(JUNK), 0..40).prop_map(|xs| xs.concat()),
    ];
    fuzz("utf8", 2, cases(), strategy, |s| check_bytes(&fx, s.as_bytes()));
}

#[test]
fn token_soup_never_panics_and_errors_have_a_position() {
    let fx = fixture();
    let strategy = proptest::collection::vec(line(&fx.vocab), 0..30).prop_map(|ls| ls.join("\n"));
    fuzz("soup", 3, cases(), strategy, |s| check_bytes(&fx, s.as_bytes()));
}

#[test]
fn typed_pipelines_never_panic_and_errors_have_a_position() {
    let fx = fixture();
    let strategy = typed_pipeline(&fx.vocab);
    fuzz("typed", 4, cases(), strategy, |s| {
        let path = fx.dir.path().join("fuzz.toml");
        std::fs::write(&path, s).unwrap();
        // With the profile `p` that some of them declare (an unknown one is a command-line error).
        let profile = s.contains("[profile.p.").then_some("p");
        let (r, k) = check_file(&fx.reg, &path, profile);
        (r.map_err(|e| format!("{e}\ninput:\n{s}")), k)
    });
}

#[test]
fn mutated_real_pipelines_never_panic_and_errors_have_a_position() {
    let fx = fixture();
    let tree = Tree::new(&fx.reg);
    let strategy = mutated_case(&fx.vocab);
    fuzz("mutate", 5, cases(), strategy, |case| {
        with_mutation(&tree, case, |root, profile, mutated| {
            let (r, k) = check_file(&fx.reg, root, profile);
            let r = r.map_err(|e| {
                let text = String::from_utf8_lossy(&std::fs::read(mutated).unwrap()).into_owned();
                format!("{e}\nroot {}, profile {profile:?}, mutated file {}:\n{text}", root.display(), mutated.display())
            });
            (r, k)
        })
    });
}

/// Overrides of a real pipeline: 1–3 `--set` arguments and sometimes a `--config` file, generated from the
/// vocabulary (and arbitrary text).
#[test]
fn command_line_overrides_never_panic_and_errors_have_a_position() {
    let fx = fixture();
    let tree = Tree::new(&fx.reg);
    // Roots that load: the overrides are what is fuzzed here.
    let roots: Vec<usize> = (0..tree.files.len()).filter(|&i| !tree.files[i].nodes.is_empty()).collect();
    type Params = Vec<(String, ParamType)>;
    let nodes: Vec<Vec<(String, Params)>> = roots.iter().map(|&i| tree.files[i].nodes.clone()).collect();
    let v = fx.vocab.clone();
    let strategy = (0..roots.len()).prop_flat_map(move |r| {
        let v = &v;
        let own = nodes[r].clone();
        // NODE.PARAM=VALUE of this root: a parameter of the node's kind with a value of (mostly) its type,
        // often at its range's ends, so that valid pipelines with extreme parameters reach `declarations`.
        let vv = v.clone();
        let with_params: Vec<(String, Vec<(String, ParamType)>)> = own.iter().filter(|(_, ps)| !ps.is_empty()).cloned().collect();
        let own_typed = select(if with_params.is_empty() { own.clone() } else { with_params })
            .prop_flat_map(move |(id, params)| {
                let vv = vv.clone();
                let params = if params.is_empty() { vec![("value".to_string(), ParamType::Any)] } else { params };
                (0..params.len()).prop_flat_map(move |i| {
                    let (p, ty) = params[i].clone();
                    let id = id.clone();
                    typed_value(&ty, &vv).prop_map(move |x| format!("{id}.{p}={x}"))
                })
            })
            .boxed();
        let own_target = (select(own), key(v)).prop_map(|((id, _), k)| format!("{id}.{k}")).boxed();
        let other_target = prop_oneof![
            (select(v.ids.clone()), key(v)).prop_map(|(i, k)| format!("{i}.{k}")),
            "[a-z_.]{0,12}",
            Just("co_all.6.lr".to_string()),
        ];
        let lhs = prop_oneof![4 => own_target, 2 => other_target, 1 => Just("seed".to_string())];
        let rhs = prop_oneof![4 => value(v), 1 => ".{0,16}", 1 => select(ODD_STRINGS).prop_map(String::from)];
        let set = prop_oneof![
            8 => own_typed,
            4 => (lhs.clone(), rhs.clone()).prop_map(|(l, x)| format!("{l}={x}")),
            1 => (lhs, rhs).prop_map(|(l, x)| format!(" {l} = \n{x} ")),
            1 => ".{0,24}",
        ];
        let config_line = prop_oneof![
            2 => select(nodes[r].iter().map(|n| n.0.clone()).collect::<Vec<_>>()).prop_map(|i| format!("[node.{i}]")),
            1 => select(v.kinds.clone()).prop_map(|k| format!("[kind.{k}]")),
            4 => line(v),
        ];
        let config = proptest::option::weighted(0.3, proptest::collection::vec(config_line, 0..12).prop_map(|ls| ls.join("\n")));
        (Just(roots[r]), proptest::collection::vec(set, 1..=3), config)
    });
    let config_path = fx.dir.path().join("config.toml");
    fuzz("overlay", 7, cases(), strategy, |(root_i, sets, config)| {
        let root = &tree.files[*root_i].rel;
        let mut overlay = spec::Overlay { configs: vec![], sets: sets.clone() };
        if let Some(text) = config {
            std::fs::write(&config_path, text).unwrap();
            overlay.configs.push(config_path.clone());
        }
        let (r, k) = check_with(&fx.reg, &tree.root.path().join(root), None, &overlay);
        (r.map_err(|e| format!("{e}\nroot {}, --set {sets:?}, --config {config:?}", root.display())), k)
    });
}

// ----------------------------------------------------------------------------------------------------------
// The binary on saved and generated mutated inputs: exit 2, FILE:LINE:COL in stderr, no store written.

fn polyflow(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_polyflow"))
        .args(args)
        .current_dir(cwd)
        .env_remove("POLYFLOW_STORE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// tests/fuzz/*.toml: inputs the mutation strategy produces from real pipelines, saved. The first line says
/// where the error must be reported: `# expect: LINE:COL text` (as in tests/malformed).
#[test]
fn saved_mutations_exit_2_with_their_position_and_write_nothing() {
    let dir = repo().join("tests/fuzz");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    files.sort();
    assert!(files.len() >= 6, "{} saved inputs", files.len());
    let mut runs = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let spec = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| panic!("{}: no header", f.display()));
        let (pos, want) = spec.split_once(' ').unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        for cmd in ["plan", "status"] {
            let tmp = tempfile::tempdir().unwrap();
            let (code, stderr) = polyflow(&[cmd, f.to_str().unwrap()], tmp.path());
            runs += 1;
            assert_eq!(code, Some(2), "{cmd} {name}: exit code; stderr:\n{stderr}");
            assert!(stderr.contains(&format!("{name}:{pos}: error: ")), "{cmd} {name}: expected {name}:{pos} in:\n{stderr}");
            assert!(stderr.contains(want), "{cmd} {name}: expected `{want}` in:\n{stderr}");
            assert!(!tmp.path().join(".polyflow").exists(), "{cmd} {name}: a store was created");
        }
    }
    // A byte flip into invalid UTF-8 (binary, so made here rather than saved).
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(repo().join("tests/pipelines/digits.toml")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"train").unwrap();
    bytes[at + 1] ^= 0x80;
    std::fs::write(tmp.path().join("flipped.toml"), &bytes).unwrap();
    let (code, stderr) = polyflow(&["plan", "flipped.toml"], tmp.path());
    runs += 1;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("flipped.toml:5:10: error: not UTF-8 text (byte 0xf2)"), "{stderr}");
    assert!(!tmp.path().join(".polyflow").exists());
    eprintln!("fuzz[saved]: {runs} runs of the binary on {} saved inputs and one byte flip", files.len());
}

/// Generated mutations that the library rejects: the binary (`plan`, `status`) exits 2 with the same position.
#[test]
fn binary_agrees_with_the_library_on_generated_mutations() {
    let fx = fixture();
    let tree = Tree::new(&fx.reg);
    let want = (cases() / 100).clamp(5, 200) as usize;
    let mut rng = runner(1, 6);
    let strategy = mutated_case(&fx.vocab);
    let started = Instant::now();
    let (mut tried, mut ran) = (0, 0);
    while ran < want && tried < want * 20 {
        tried += 1;
        let case = strategy.new_tree(&mut rng).unwrap().current();
        with_mutation(&tree, &case, |root, profile, mutated| {
            let lib = spec::load(root, profile).and_then(|p| graph::build(p, &fx.reg).map(|_| ()));
            let Err(SpecError { location: Some(l), .. }) = &lib else { return };
            let file = Path::new(&l.file).file_name().unwrap().to_str().unwrap().to_string();
            let head = format!("{file}:{}:{}: error: ", l.line, l.col);
            let rel = root.strip_prefix(tree.root.path()).unwrap().to_str().unwrap();
            let cmd = if ran % 2 == 0 { "plan" } else { "status" };
            let mut args = vec![cmd, rel];
            if let Some(p) = profile {
                args.extend(["--profile", p]);
            }
            let (code, stderr) = polyflow(&args, tree.root.path());
            ran += 1;
            let text = String::from_utf8_lossy(&std::fs::read(mutated).unwrap()).into_owned();
            assert_eq!(code, Some(2), "{args:?} (mutated {}): stderr:\n{stderr}\nmutated text:\n{text}", mutated.display());
            assert!(stderr.contains(&head), "{args:?}: expected `{head}` in:\n{stderr}\nmutated text:\n{text}");
            assert!(!tree.root.path().join(".polyflow").exists(), "{args:?}: a store was created");
        });
    }
    eprintln!(
        "fuzz[binary]: {ran} runs of the binary on rejected mutations ({tried} generated) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ran >= want / 2, "only {ran} of {tried} generated mutations were rejected");
}

// ----------------------------------------------------------------------------------------------------------
// Known gaps, kept visible.

/// A pipeline that declares no nodes (empty, comments only, `seed = 1`, `include = []`) is refused with exit 2
/// at 1:1 of the file (found by this suite: it had no position).
#[test]
fn an_empty_pipeline_error_has_a_position() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.toml"), "# nothing here\nseed = 1\n").unwrap();
    let (code, stderr) = polyflow(&["plan", "p.toml"], tmp.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("p.toml:1:1: error:"), "no position in:\n{stderr}");
}

/// An integer literal past i64 (`x = 99999999999999999999`, which TOML parses) is refused with exit 2 at the
/// number (found by this suite: it was reported at 1:1).
#[test]
fn an_out_of_range_integer_is_reported_at_the_number() {
    let f = repo().join("tests/fuzz/huge_int.toml");
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = polyflow(&["plan", f.to_str().unwrap()], tmp.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("huge_int.toml:9:20: error: integer out of range"), "wrong position in:\n{stderr}");
    assert!(!tmp.path().join(".polyflow").exists());
}
