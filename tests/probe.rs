//! Linear probes choose their hyperparameter on the features' val split, or, where the dataset has none (the
//! paper's video and audio tasks train on their whole train table), on a seeded tenth of train, and are then
//! fitted on all of train: never chosen on train itself or on test.

mod common;
use common::{cifar_task, pf, write_cifar};

fn probe_pipeline(val_fraction: f64) -> String {
    cifar_task(2).replace("path = \"cifar\"\n", &format!("path = \"cifar\"\nval_fraction = {val_fraction}\n"))
        + "\n[node.f]\nkind = \"features\"\ninputs = { task = \"t\" }\ndim = 16\ndepth = 1\nheads = 2\nmlp = 32\n\
           [node.p]\nkind = \"probe\"\ninputs = { features = \"f\" }\n"
}

#[test]
fn a_probe_without_val_chooses_on_a_tenth_of_train() {
    for (val, own) in [(0.0, true), (0.25, false)] {
        let d = tempfile::tempdir().unwrap();
        write_cifar(d.path());
        std::fs::write(d.path().join("p.toml"), probe_pipeline(val)).unwrap();
        let (code, _, err) = pf(d.path(), &["run", "p.toml"]);
        assert_eq!(code, 0, "{err}");
        let (_, show, _) = pf(d.path(), &["show", "p.toml", "p"]);
        assert_eq!(show.contains("\"chosen_on\": \"a seeded 10 % of train"), own, "val_fraction {val}: {show}");
        // Either way the probe reports val and test metrics for the task.
        assert!(show.contains("\"val\"") && show.contains("\"test\"") && show.contains("\"top1\""), "{show}");
    }
}
