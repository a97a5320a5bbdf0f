//! `--set` and `--config` through the binary: an override is the same edit as in the file (same keys), and a
//! bad one is an exit-2 error that points at the argument or the config file.

mod common;

use common::pf;

const P: &str = "[node.a]\nkind = \"value\"\nvalue = 1\n[node.b]\nkind = \"value\"\nvalue = 2\ninputs = { after = \"a\" }\n";

#[test]
fn an_override_is_the_same_edit_as_in_the_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml", "--set", "a.value=7", "--json"]);
    assert_eq!(code, 0, "{err}");
    // The same edit in the file: nothing to run.
    std::fs::write(d.path().join("p.toml"), P.replace("value = 1", "value = 7")).unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml"]);
    assert!(out.contains("Plan 0 of 2 nodes would run"), "{out}");
    // The same edit in a config file, and back to the file's value with --set: fresh too.
    std::fs::write(d.path().join("c.toml"), "[node.b]\nvalue = 2\n").unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--config", "c.toml"]);
    assert!(out.contains("Plan 0 of 2 nodes would run"), "{out}");
    // A different value is stale, and says which parameter changed; --set wins over --config.
    std::fs::write(d.path().join("c.toml"), "[node.b]\nvalue = 3\n").unwrap();
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--config", "c.toml"]);
    assert!(out.contains("Would run b") && out.contains("value changed 2 → 3"), "{out}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--config", "c.toml", "--set", "b.value=2"]);
    assert!(out.contains("Plan 0 of 2 nodes would run"), "{out}");
    // The seed, too.
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "seed=0"]);
    assert!(out.contains("Plan 0 of 2 nodes would run"), "{out}");
}

#[test]
fn an_override_of_a_matrix_value_or_seed_group_applies_to_each_of_its_nodes() {
    let d = tempfile::tempdir().unwrap();
    let m = "[node.m]\nkind = \"value\"\nvalue = 1\nmatrix = { sleep_ms = [0, 1] }\nseeds = 2\n";
    std::fs::write(d.path().join("p.toml"), m).unwrap();
    let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.1.value=5"]);
    assert_eq!(code, 0, "{err}");
    // (A `value` node's replicates share their key: the seed is not in it. One computes, the other is its result.)
    assert!(out.contains("Would run m.1.s0") && out.contains("Would reuse m.1.s1") && out.contains("Plan 1 of 4"), "{out}");
    assert!(!err.contains("differ in"), "{err}");
    // One replicate alone is still addressable; its group is then of mixed settings, and that is said.
    let (_, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.1.s1.value=5"]);
    assert!(out.contains("Would run m.1.s1") && out.contains("Plan 1 of 4"), "{out}");
    assert!(err.contains("the replicates of `m.1` differ in `value`"), "{err}");
    // A parameter that is each replicate's seed differs as the seed does: no note.
    let (_, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.value={seed}"]);
    assert!(!err.contains("differ in"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.7.value=5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("override of unknown node `m.7`"), "{err}");
}

#[test]
fn bad_overrides_point_at_the_argument_or_the_config_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "nope.value=1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--set nope.value=1:1:1") && err.contains("unknown node `nope`"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "a.valu=1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--set a.valu=1:1:3") && err.contains("unknown parameter `valu`") && err.contains("value"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "a.value"]);
    assert_eq!(code, 2);
    assert!(err.contains("no `=`"), "{err}");
    std::fs::write(d.path().join("c.toml"), "[node.a]\nvalue = 1\n[nodes.b]\nvalue = 2\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--config", "c.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("c.toml:3:2") && err.contains("unknown key `nodes`"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--config", "missing.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");
    // A node's kind is the pipeline's; inputs are overridden whole, as the advice says, which then works.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "a.kind=command"]);
    assert!(code == 2 && err.contains("--set a.kind=command:1:3") && err.contains("`kind` of `a` cannot be overridden"), "{err}");
    std::fs::write(d.path().join("p.toml"), format!("{P}[node.c]\nkind = \"value\"\nvalue = 3\n")).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "b.inputs.after=c"]);
    assert!(code == 2 && err.contains("`--set 'b.inputs={ after = \"c\" }'`"), "{err}");
    let (code, dot, err) = pf(d.path(), &["dag", "p.toml", "--set", "b.inputs={ after = \"c\" }"]);
    assert!(code == 0 && dot.contains("\"c\" -> \"b\"") && !dot.contains("\"a\" -> \"b\""), "{dot}{err}");
    assert!(!d.path().join(".polyflow").exists());
}

#[test]
fn gc_keeps_what_runs_with_the_same_overrides_computed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), P).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "a.value=7"]).0, 0);
    // A later run without the override: the store's last records are now those of a = 1.
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert!(out.contains("Would free 2 artifacts"), "without the override they are unreferenced: {out}");
    let (_, out, _) = pf(d.path(), &["gc", "p.toml", "--set", "a.value=7"]);
    assert!(out.contains("Would free 0 artifacts"), "{out}");
}

/// `--set DECL.matrix.NAME=[…]` replaces one value list of a declaration's matrix, the others kept; a name the
/// matrix lacks is a misspelling unless added with a `+`.
#[test]
fn one_entry_of_a_matrix_is_set_on_its_declaration() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.m]\nkind = \"value\"\nvalue = \"{lr}-{wd}\"\nmatrix = { lr = [1, 2], wd = [0] }\n")
        .unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.matrix.lr=[3]"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would run m.3.0") && !out.contains("m.1.0") && out.contains("Plan 1 of 1"), "{out}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.matrix.lrr=[3]"]);
    assert!(
        code == 2 && err.contains("the matrix of `m` has no entry `lrr` (it has `lr`, `wd`)") && err.contains("did you mean `lr`?"),
        "{err}"
    );
    let (code, out, err) = pf(d.path(), &["plan", "p.toml", "--set", "+m.matrix.bs=[8]"]);
    assert!(code == 0 && out.contains("Would run m.8.1.0") && out.contains("Plan 2 of 2"), "{out}{err}");
    // What only such a run made is named as its, when `gc` collects it.
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "m.matrix.lr=[3]"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["gc", "p.toml"]);
    assert!(out.contains("node `m.3.0` of a run with --set m.matrix.lr=[3], not in these pipelines"), "{out}");
    // A declaration without a matrix says so, with the way to give it one.
    std::fs::write(d.path().join("q.toml"), "[node.v]\nkind = \"value\"\nvalue = 1\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "q.toml", "--set", "v.matrix.lr=[3]"]);
    assert!(code == 2 && err.contains("`v` has no matrix") && err.contains("`--set 'v.matrix={ lr = [...] }'`"), "{err}");
}

/// After a `--set` run, `gc` keeps what the file itself computes, whatever order its nodes' names sort in: a node
/// named before its input (`a` after `z`) was once assessed before it, read as stale, and its artifact collected.
#[test]
fn gc_after_a_set_run_keeps_what_the_file_computes() {
    let d = tempfile::tempdir().unwrap();
    let p = "[node.z]\nkind = \"value\"\nvalue = 1\n[node.a]\nkind = \"value\"\nvalue = 2\ninputs = { after = \"z\" }\n";
    std::fs::write(d.path().join("p.toml"), p).unwrap();
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    assert_eq!(pf(d.path(), &["run", "p.toml", "--set", "z.value=7"]).0, 0);
    // The file's results and the `--set` run's (each node's latest run) all stay.
    let (code, out, err) = pf(d.path(), &["gc", "p.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Removed 0 artifacts"), "{out}");
    let (_, out, _) = pf(d.path(), &["status", "p.toml"]);
    assert!(out.contains("2 of 2 nodes fresh"), "{out}");
}

/// `--set NODE.TABLE.KEY=VALUE` sets an entry its table has; a name it lacks is taken for a misspelling (an
/// error naming the entries there are and the nearest), unless added with a `+` (as Hydra and DVC's `--set-param`
/// write it), on a plain node, a matrix group and a table the node leaves at its default alike.
#[test]
fn a_table_entry_set_must_exist_unless_added_with_a_plus() {
    let d = tempfile::tempdir().unwrap();
    let p = "[node.hp]\nkind = \"value\"\nvalue = { lr = 0.1, opt = { name = \"adam\" } }\n\
             [node.m]\nkind = \"command\"\nmatrix = { lr = [1, 2] }\nrun = [\"true\"]\nparams = { lr = \"{lr}\" }\n\
             [node.bare]\nkind = \"command\"\nrun = [\"true\"]\n";
    std::fs::write(d.path().join("p.toml"), p).unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "hp.value.lrr=0.3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--set hp.value.lrr=0.3:1:10") && err.contains("`hp.value` has no entry `lrr` (it has `lr`, `opt`)"), "{err}");
    assert!(err.contains("did you mean `lr`?") && err.contains("`--set +hp.value.lrr=0.3`"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "hp.value.opt.nme=sgd"]);
    assert!(code == 2 && err.contains("`hp.value.opt` has no entry `nme` (it has `name`)"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "m.params.lrr=3"]);
    assert!(code == 2 && err.contains("has no entry `lrr`") && err.contains("`--set +m.params.lrr=3`"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "bare.params.lr=3"]);
    assert!(code == 2 && err.contains("`bare.params` has no entry `lr` (it has none)"), "{err}");
    // Added: the entry is there, the others kept (what `show` prints of the key's parameters).
    for (set, node, want) in [
        ("+hp.value.lrr=0.3", "hp", r#""value":{"lr":0.1,"lrr":0.3,"opt":{"name":"adam"}}"#),
        ("+hp.value.opt.beta=0.9", "hp", r#""opt":{"beta":0.9,"name":"adam"}"#),
        ("+m.params.x=3", "m.1", r#""params":{"lr":1,"x":3}"#),
        ("+bare.params.lr=3", "bare", r#""params":{"lr":3}"#),
        ("hp.value.lr=0.5", "hp", r#""value":{"lr":0.5,"opt":{"name":"adam"}}"#),
    ] {
        let (code, out, err) = pf(d.path(), &["show", "p.toml", node, "--set", set]);
        assert!(code == 0 && out.contains(want), "{set}: {out}{err}");
    }
    // A `+` on an entry the table has (Hydra's rule): an error saying to leave it out.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+hp.value.lr=0.3"]);
    assert!(code == 2 && err.contains("`hp.value` has an entry `lr` already") && err.contains("`--set hp.value.lr=…`"), "{err}");
    // So on a parameter the node declares; one it leaves at its default may be added.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+hp.value={ lr = 1 }"]);
    assert!(code == 2 && err.contains("`hp` has `value` already"), "{err}");
    assert_eq!(pf(d.path(), &["plan", "p.toml", "--set", "+hp.comment=x"]).0, 0);
    // A group's names the group, not its first node.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+m.params.lr=3"]);
    assert!(code == 2 && err.contains("`m.params` has an entry `lr` already") && err.contains("`--set m.params.lr=…`"), "{err}");
    // Two `+`; an entry whose name holds a dot (an export's file), which `--set` reads as a path: its whole table.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "++hp.value.x=1"]);
    assert!(code == 2 && err.contains("has more than one `+`"), "{err}");
    std::fs::write(d.path().join("e.toml"), "[node.c]\nkind = \"command\"\nrun = [\"true\"]\nexport = { \"p.json\" = \"out/p.json\" }\n")
        .unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "e.toml", "--set", "c.export.p.json=x.json"]);
    assert!(code == 2 && err.contains("(it has `p.json`)") && err.contains("`--set 'c.export={ \"p.json\" = … }'`"), "{err}");
    assert!(!err.contains("+c.export"), "{err}");
    // Nothing was run or written by any of it.
    assert!(!d.path().join(".polyflow").exists());
}

/// No parameter takes NaN or an infinity: JSON, which keys hash and programs read, has neither (they became the
/// strings "inf" and "NaN"); `cpus = 0` is refused, not taken for 1.
#[test]
fn non_finite_parameters_and_zero_cpus_are_refused_where_written() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.c]\nkind = \"command\"\nrun = [\"true\"]\nparams = { lr = 0.1, clip = inf }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.toml:4:29") && err.contains("`params`: `inf` is not a value a parameter can take"), "{err}");
    assert!(err.contains("`\"inf\"`"), "{err}");
    std::fs::write(d.path().join("p.toml"), "[node.v]\nkind = \"value\"\nvalue = [1.0, nan]\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:3:15") && err.contains("`nan` is not a value"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "v.value=-inf"]);
    assert!(code == 2 && err.contains("--set v.value=-inf") && err.contains("`-inf` is not a value"), "{err}");
    std::fs::write(d.path().join("p.toml"), "[node.v]\nkind = \"value\"\nresources = { cpus = 0 }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:3:22") && err.contains("`cpus = 0`: a node runs on at least one CPU"), "{err}");
    // In a profile not in use too.
    std::fs::write(d.path().join("p.toml"), "[node.v]\nkind = \"value\"\n[profile.x.node.v]\nresources = { cpus = 0 }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:4:22") && err.contains("`cpus = 0`"), "{err}");
    assert!(!d.path().join(".polyflow").exists());
}

/// A matrix value that is NaN or an infinity (`1e400` reads as one) is refused at the value; whole floats count
/// where integers are read (`cpus = 2.0`, `seeds = 2.0`).
#[test]
fn non_finite_matrix_values_are_refused_and_whole_floats_count() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.c]\nkind = \"value\"\nvalue = \"{x}\"\nmatrix = { x = [1.0, 1e400] }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 2 && err.contains("p.toml:4:22") && err.contains("matrix key `x`: a value is not a finite number"), "{err}");
    std::fs::write(d.path().join("p.toml"), "[node.c]\nkind = \"value\"\nseeds = 2.0\nresources = { cpus = 2.0, retries = 1.0 }\n")
        .unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 0 && out.contains("c.s1"), "{out}{err}");
}

/// A matrix key no parameter or input uses gives nodes that compute the same (one key, run once): warned, naming
/// the key; a key that is used, and seed replicates, are not.
#[test]
fn a_matrix_key_used_nowhere_is_warned_of() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[node.c]\nkind = \"command\"\nmatrix = { lr = [0.1, 0.2], wd = [0, 0.1] }\nrun = [\"sh\", \"-c\", \"echo {lr} > $POLYFLOW_OUT/x\"]\n\
         [node.ok]\nkind = \"command\"\nmatrix = { lr = [0.1, 0.2] }\nseeds = 2\nrun = [\"sh\", \"-c\", \"echo {lr} > $POLYFLOW_OUT/x\"]\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Warning matrix key `wd` of `c` changes none of its nodes' parameters or inputs"), "{err}");
    assert_eq!(err.matches("matrix key").count(), 1, "{err}");
    assert!(out.contains("Would reuse c.0.1.0.1"), "{out}");
}

/// `--set train.parms.lr=1`: a parameter the node lacks, named as such with the nearest it has (it was "`train.parms`
/// has no entry `lr`", whose `+` advice led to a second error).
#[test]
fn a_misspelt_table_parameter_in_a_set_is_named_with_the_nearest() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[node.train]\nkind = \"command\"\nrun = [\"true\"]\nparams = { lr = 0.1 }\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "train.parms.lr=1"]);
    assert!(
        code == 2 && err.contains("`train` has no parameter `parms`") && err.contains("did you mean `params`? (`--set train.params.lr=…`)"),
        "{err}"
    );
}

/// `[vars]`: the pipeline's own variables, `{NAME}` in any node's parameters and inputs (typed where alone), set by a
/// profile, a config file or `--set vars.NAME=…` (one the pipeline declares, unless added with `+`), in the keys of
/// the nodes that use them.
#[test]
fn pipeline_vars_are_placeholders_of_every_node_and_set_like_parameters() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[vars]\nsplit = 3\nname = \"a\"\n\
         [node.prep]\nkind = \"value\"\nvalue = \"{split}\"\ncomment = \"{name}-{split}\"\n\
         [node.other]\nkind = \"value\"\nvalue = 1\n\
         [node.m]\nkind = \"value\"\nmatrix = { split = [7] }\nvalue = \"{split}\"\n\
         [node.mv]\nkind = \"value\"\nmatrix = { x = [\"{name}\", \"b\"] }\nvalue = \"{x}\"\n\
         [profile.smoke.vars]\nsplit = 1\n",
    )
    .unwrap();
    std::fs::write(d.path().join("c.toml"), "[vars]\nsplit = 5\n").unwrap();
    let shown = |args: &[&str], node: &str| {
        let (code, out, err) = pf(d.path(), &[&["show", "p.toml", node][..], args].concat());
        assert_eq!(code, 0, "{err}");
        out.lines().find(|l| l.starts_with("params:")).unwrap_or_default().to_string()
    };
    // Typed where alone, text inside a string; a matrix variable of the same name wins.
    let prep = shown(&[], "prep");
    assert!(prep.contains(r#""comment":"a-3""#) && prep.contains(r#""value":3}"#), "{prep}");
    assert!(shown(&[], "m.7").contains(r#""value":7}"#));
    // In a matrix's values too: `x = ["{name}", "b"]` is nodes `mv.a`, `mv.b`.
    assert!(shown(&[], "mv.a").contains(r#""value":"a"}"#));
    assert!(shown(&["-p", "smoke"], "prep").contains(r#""value":1}"#));
    assert!(shown(&["--config", "c.toml"], "prep").contains(r#""value":5}"#));
    assert!(shown(&["--set", "vars.split=9"], "prep").contains(r#""value":9}"#));
    // Only the nodes that use it are stale after a change.
    assert_eq!(pf(d.path(), &["run", "p.toml"]).0, 0);
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "vars.split=4"]);
    assert!(out.contains("Would run prep") && !out.contains("Would run other") && !out.contains("Would run m."), "{out}");
    // Said as the variable that changed, not as each parameter written with it; a parameter edited as well is
    // still named.
    assert!(out.contains("Would run prep (value): vars.split changed 3 → 4 [") && !out.contains("comment changed"), "{out}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "vars.split=4", "--set", "prep.comment=x{split}"]);
    assert!(out.contains("vars.split changed 3 → 4; comment changed \"a-3\" → \"x4\""), "{out}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "vars.split=4", "--json"]);
    assert!(out.contains(r#""reason": "var_changed""#) && out.contains(r#""name": "split""#), "{out}");
    // A misspelt one, a + on one there is, and what cannot be a variable.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "vars.splt=4"]);
    assert!(code == 2 && err.contains("the pipeline has no variable `splt`") && err.contains("did you mean `split`?"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+vars.split=4"]);
    assert!(code == 2 && err.contains("has a variable `split` already"), "{err}");
    // Added, and used by no node: said.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+vars.extra=4"]);
    assert!(code == 0 && err.contains("variable `extra` of `[vars]`") && err.contains("is named by no node"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "vars.split={ a = 1 }"]);
    assert!(code == 2 && err.contains("a pipeline variable is a string, a finite number, a boolean or a list of them"), "{err}");
    // Named only in an override (`--set`, a profile's node): used, no warning; `${x}` or an escaped `{{x}}` is
    // no use of it.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+vars.extra=4", "--set", "+other.comment=v{extra}"]);
    assert!(code == 0 && !err.contains("Warning"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+vars.extra=4", "--set", "+other.comment=${extra} {{extra}}"]);
    assert!(code == 0 && err.contains("variable `extra` of `[vars]`"), "{err}");
    // A misspelt placeholder: the pipeline's variables among the node's, and the nearest.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+other.comment={splt}"]);
    assert!(code == 0 && err.contains("(did you mean `{split}`?); its variables: {name}, {replicate}, {seed}, {split}"), "{err}");
    // `+` on a node's own key, or on the pipeline's seed: an error saying to leave it out, not an override dropped.
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+other.seeds=3"]);
    assert!(code == 2 && err.contains("`seeds` is a key of every node") && err.contains("`--set other.seeds=…`"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "+seed=3"]);
    assert!(code == 2 && err.contains("leave out the `+`: `--set seed=N`"), "{err}");
}

/// A list variable (`[vars] samples = ["a", "b"]`, Snakemake's `config["samples"]`) is a matrix's values written
/// alone (`matrix = { sample = "{samples}" }`) or among others, a list parameter's elements in place (`run = ["agg",
/// "{samples}"]`), the list itself where alone as a value, and its values space-separated in text; set from the
/// command line, it adds the nodes of a new value, and only they and what reads them go stale.
#[test]
fn a_list_variable_is_a_matrixs_values_and_arguments_in_place() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[vars]\nsamples = [\"a\", \"b\"]\npicked = [\"proc.b\"]\n\
         [node.proc]\nkind = \"command\"\nmatrix = { sample = \"{samples}\" }\nrun = [\"sh\", \"-c\", \"echo {sample} > $POLYFLOW_OUT/o\"]\n\
         [node.more]\nkind = \"value\"\nmatrix = { x = [\"{samples}\", \"c\"] }\nvalue = \"{x}\"\n\
         [node.agg]\nkind = \"command\"\ninputs = { in = \"proc\" }\nrun = [\"echo\", \"{samples}\", \"all: {samples}\"]\nparams = { list = \"{samples}\", more = [\"{samples}\", \"z\"] }\n\
         [node.pick]\nkind = \"command\"\ninputs = { in = \"{picked}\" }\nrun = [\"sh\", \"-c\", \"ls $POLYFLOW_IN/in > $POLYFLOW_OUT/seen\"]\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["run", "p.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let finished: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "finished")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    for id in ["proc.a", "proc.b", "more.a", "more.b", "more.c", "agg", "pick"] {
        assert!(finished.contains(&id.to_string()), "{id} in {finished:?}");
    }
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "agg"]);
    assert!(shown.contains(r#""params":{"list":["a","b"],"more":["a","b","z"]},"run":["echo","a","b","all: a b"]"#), "{shown}");
    // As inputs: the ids it lists.
    let (_, shown, _) = pf(d.path(), &["show", "p.toml", "pick"]);
    assert!(shown.lines().any(|l| l.starts_with("input:  in: proc.b (") && !l.contains("proc.a")), "{shown}");
    // A value added on the command line: its node, and what reads the list.
    let (_, plan, _) = pf(d.path(), &["plan", "p.toml", "--set", r#"vars.samples=["a","b","z"]"#]);
    assert!(plan.contains("Would run proc.z") && plan.contains("Would run agg") && plan.contains("Would run more.z"), "{plan}");
    assert!(!plan.contains("Would run proc.a") && !plan.contains("Would run more.c"), "{plan}");
}

/// A pipeline variable sets a node's replicate count (`seeds = "{n}"`) and its resources (`cpus = "{ncpu}"`),
/// typed as where written by hand.
#[test]
fn a_variable_sets_seeds_and_resources() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.toml"),
        "[vars]\nn = 3\nncpu = 2\n[node.a]\nkind = \"value\"\nvalue = \"{seed}\"\nseeds = \"{n}\"\nresources = { cpus = \"{ncpu}\" }\n",
    )
    .unwrap();
    let (code, out, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(code == 0 && out.contains("Would run a.s2") && !out.contains("a.s3"), "{out}{err}");
    let (_, out, _) = pf(d.path(), &["plan", "p.toml", "--set", "vars.n=2"]);
    assert!(out.contains("Would run a.s1") && !out.contains("a.s2"), "{out}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "vars.ncpu=x"]);
    assert!(code == 2 && err.contains("p.toml:8:22: error: expected an integer, found string"), "{err}");
    // One entry of the resources, on the declaration or one replicate; a new one with `+`.
    for set in ["a.resources.cpus=1", "a.s1.resources.cpus=1", "+a.resources.mem=1G"] {
        let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", set]);
        assert_eq!(code, 0, "{set}: {err}");
    }
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "a.resources.mem=1G"]);
    assert!(code == 2 && err.contains("`a.s0.resources` has no entry `mem` (it has `cpus`)"), "{err}");
}

/// A parameter of the wrong type that a variable wrote says which variable, its value and where that was set
/// (the `[vars]` line, or the `--set` that changed it), not only the placeholder.
#[test]
fn a_wrong_value_from_a_variable_names_the_variable_and_where_it_was_set() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), "[vars]\nn = \"abc\"\n\n[node.a]\nkind = \"value\"\nvalue = 1\nsleep_ms = \"{n}\"\n").unwrap();
    let (code, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`sleep_ms` must be an integer, found string (written `\"{n}\"`, `{n}` being `abc`, set at p.toml:2:5)"), "{err}");
    let (code, _, err) = pf(d.path(), &["plan", "p.toml", "--set", "vars.n=xyz"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`{n}` being `xyz`, set at --set vars.n=xyz:1:8"), "{err}");
    // A value written as it is says nothing more.
    std::fs::write(d.path().join("p.toml"), "[node.a]\nkind = \"value\"\nvalue = 1\nsleep_ms = \"abc\"\n").unwrap();
    let (_, _, err) = pf(d.path(), &["plan", "p.toml"]);
    assert!(err.contains("found string\n") || err.contains("found string\r") || !err.contains("written"), "{err}");
}
