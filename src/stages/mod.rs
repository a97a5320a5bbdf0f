//! Built-in node kinds. [`registry`] returns all of them.
//!
//! - generic: `value`, `command` (an external program)
//! - data: `dataset`, `video_synth`, `image_prep`, `audio_prep`, `video_prep`
//! - models: `weights` (a pretrained checkpoint), `task`, `train`, `cotrain`, `features`, `probe`
//! - results: `table`, `findings` (qualitative claims checked against tables)

pub mod command;
pub mod datautil;
pub mod findings;
pub mod ingest;
mod ingest_cifar;
pub mod ingest_files;
pub mod modelspec;
pub mod plot;
pub mod prep;
pub mod probe;
pub mod table;
pub mod task;
pub mod training;
pub mod value;
pub mod video_synth;
pub mod weights;

use crate::stage::Registry;

/// Every built-in kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(value::ValueStage).register(command::CommandStage);
    r.register(ingest::DatasetStage).register(video_synth::VideoSynthStage);
    r.register(prep::ImagePrep).register(prep::AudioPrep).register(prep::VideoPrep);
    r.register(task::TaskStage).register(training::TrainStage { multi: false }).register(training::TrainStage { multi: true });
    r.register(probe::FeaturesStage).register(probe::ProbeStage);
    r.register(weights::WeightsStage);
    r.register(table::TableStage).register(findings::FindingsStage);
    r
}

#[cfg(test)]
mod tests {
    use crate::stage::{defaults, ParamType};
    use serde_json::{json, Value};

    /// Every kind's typed parameters (read by its `validate`, as by `run`) against its `ParamSpec`s: the
    /// canonical parameters of a node that sets only its required ones parse; a key the specs do not declare is
    /// refused (`deny_unknown_fields`); leaving out any declared key is refused (each is a field, none ignored);
    /// every option of a `Choice` parses, and a string outside it is refused (an enum, not a string).
    #[test]
    fn typed_parameters_match_the_param_specs() {
        let reg = super::registry();
        for stage in reg.stages() {
            let kind = stage.kind();
            let specs = stage.params();
            let base = defaults(&specs);
            assert_eq!(stage.validate(&base), Ok(()), "{kind}: the defaults do not parse");
            let with = |name: &str, v: Value| {
                let mut p = base.clone();
                p[name] = v;
                p
            };
            assert!(stage.validate(&with("no_such_param", json!(1))).is_err(), "{kind}: an undeclared key is accepted");
            for s in &specs {
                let mut p = base.clone();
                p.as_object_mut().unwrap().remove(s.name);
                if s.keyed_default {
                    assert!(stage.validate(&p).is_err(), "{kind}: `{}` is not a field of its typed parameters", s.name);
                } else {
                    // Added later: absent at its default (a field all the same: `base` has it and parses under
                    // `deny_unknown_fields`).
                    assert_eq!(stage.validate(&p), Ok(()), "{kind}: `{}` (added later) must parse when absent", s.name);
                }
                if let ParamType::Choice(options) = &s.ty {
                    for o in *options {
                        assert_eq!(stage.validate(&with(s.name, json!(o))), Ok(()), "{kind}: `{} = \"{o}\"` does not parse", s.name);
                    }
                    assert!(stage.validate(&with(s.name, json!("no_such_option"))).is_err(), "{kind}: `{}` is not an enum", s.name);
                }
            }
        }
    }

    /// Every default is already canonical (what [`ParamType::check`] makes of it): a node that writes a default
    /// out (`image_patch = [8, 8]`, `clip = 1`) has the key of one that leaves it out.
    #[test]
    fn defaults_are_canonical() {
        let reg = super::registry();
        for stage in reg.stages() {
            for s in stage.params() {
                if let Some(d) = &s.default {
                    assert_eq!(s.ty.check(d).as_ref(), Ok(d), "{}: default of `{}` is not canonical", stage.kind(), s.name);
                }
            }
        }
    }

    /// Writing a default out (`image_patch = [8, 8]`, `clip = 1`), or changing a parameter outside the key
    /// (`checkpoint_every`), leaves a node's key as it was; a real change does not.
    /// The key parameters of node `id` declared by `text` (a pipeline in `pipelines/`, so it may include the
    /// embedded ones).
    fn keyed_of(text: &str, id: &str) -> serde_json::Value {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let p = crate::spec::load_str("p.toml", text, &dir, None).unwrap();
        let g = crate::graph::build(p, &super::registry()).unwrap();
        g.nodes.iter().find(|n| n.id == id).unwrap().keyed.clone()
    }

    #[test]
    fn written_out_defaults_and_unkeyed_parameters_keep_the_key() {
        let keyed = |extra: &str| {
            keyed_of(&format!("include = [\"tasks.toml\"]\n[node.m]\nkind = \"train\"\ninputs = {{ task = \"t_digits\" }}\n{extra}"), "m")
        };
        let plain = keyed("");
        assert_eq!(keyed("image_patch = [8, 8]\nvideo_patch = [4.0, 8, 8]\nclip = 1\n"), plain);
        assert_eq!(keyed("checkpoint_every = 50\n"), plain);
        assert_ne!(keyed("image_patch = [4, 4]\n"), plain);
        // A size override equal to the preset's value is no override (micro: dim 64, depth 4, heads 4, mlp 128).
        assert_eq!(keyed("dim = 64\ndepth = 4\nheads = 4\nmlp = 128\n"), plain);
        assert_eq!(keyed("size = \"Ti\"\ndim = 192\n"), keyed("size = \"Ti\"\n"));
        assert_ne!(keyed("dim = 96\n"), plain);
        // An optimizer's settings count only where it is the one chosen.
        let adam = keyed("optimizer = \"adam\"\n");
        assert_eq!(keyed("optimizer = \"adam\"\nweight_decay = 0.5\nmomentum = 0.5\n"), adam);
        assert_ne!(keyed("optimizer = \"adamw\"\nweight_decay = 0.5\n"), keyed("optimizer = \"adamw\"\n"));
        assert_ne!(keyed("momentum = 0.5\n"), plain);
    }

    /// An option table's entry at its default (`augment.mixup = 0`, `fbank.num_mel_bins = 128`), a float option
    /// written as an integer, or a window of every stored frame, keys as the node that leaves it out.
    #[test]
    fn values_that_mean_the_default_keep_the_key() {
        let keyed = |node: &str| keyed_of(&format!("include = [\"prep.toml\"]\n[node.n]\n{node}"), "n");
        let task = |extra: &str| keyed(&format!("kind = \"task\"\ninputs = {{ data = \"digits_x\" }}\nsteps = 10\n{extra}"));
        assert_eq!(task("augment = { mixup = 0, flip = false, crop_pad = 0 }"), task(""));
        assert_eq!(task("augment = { mixup = 1, crop_pad = 2 }"), task("augment = { crop_pad = 2, mixup = 1.0 }"));
        assert_ne!(task("augment = { mixup = 0.2 }"), task(""));
        let audio = |extra: &str| keyed(&format!("kind = \"audio_prep\"\ninputs = {{ data = \"spoken_digits\" }}\n{extra}"));
        assert_eq!(audio("fbank = { num_mel_bins = 128, frame_length = 25 }\nframes = 100\nwindow = 100"), audio("frames = 100"));
        assert_ne!(audio("frames = 100\nwindow = 80"), audio("frames = 100"));
        let video = |extra: &str| keyed(&format!("kind = \"video_prep\"\ninputs = {{ data = \"moving_digits\" }}\n{extra}"));
        assert_eq!(video("frames = 8\nwindow = 8\nsize = 32\ncrop = 32"), video("frames = 8\nsize = 32"));
        assert_ne!(video("frames = 8\nsize = 32\ncrop = 28"), video("frames = 8\nsize = 32"));
    }

    /// Where a table's copy goes is not in its key: moving the export re-runs nothing (the next run writes there).
    #[test]
    fn a_tables_export_is_outside_its_key() {
        let reg = super::registry();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let text = std::fs::read_to_string(dir.join("table2.toml")).unwrap();
        let keyed = |t: &str| {
            let g = crate::graph::build(crate::spec::load_str("table2.toml", t, &dir, None).unwrap(), &reg).unwrap();
            g.nodes.iter().find(|n| n.id == "table2").unwrap().keyed.clone()
        };
        let moved = text.replacen("export = \"../results/table2\"", "export = \"./../results/elsewhere/table2\"", 1);
        assert_ne!(moved, text);
        assert_eq!(keyed(&moved), keyed(&text));
        assert_ne!(keyed(&text.replacen("counts = true", "counts = false", 1)), keyed(&text));
    }

    /// A bad nested table is reported at its parameter (so the graph builder points at its line).
    #[test]
    fn a_bad_nested_table_names_its_parameter() {
        let reg = super::registry();
        let task = reg.get("task").unwrap();
        let mut p = defaults(&task.params());
        p["augment"] = json!({"flipp": true});
        let (param, msg) = task.validate(&p).unwrap_err();
        assert_eq!(param, "augment");
        assert!(msg.contains("bad augmentation option") && msg.contains("flipp"), "{msg}");
        let table = reg.get("table").unwrap();
        let mut p = defaults(&table.params());
        p["rows"] = json!([{"label": "a"}]);
        let (param, msg) = table.validate(&p).unwrap_err();
        assert_eq!(param, "rows.0", "{msg}");
        assert!(msg.contains("nodes"), "{msg}");
    }
}
