//! Built-in node kinds. [`registry`] returns all of them.
//!
//! - generic: `value`, `command`
//! - data: `dataset`, `video_synth`, `image_prep`, `audio_prep`, `video_prep`
//! - models: `weights` (a pretrained checkpoint), `task`, `train`, `cotrain`, `features`, `probe`
//! - results: `table`, `findings` (qualitative claims checked against tables)

pub mod datautil;
pub mod findings;
pub mod generic;
pub mod ingest;
pub mod ingest_files;
pub mod modelspec;
pub mod plot;
pub mod prep;
pub mod probe;
pub mod table;
pub mod task;
pub mod training;
pub mod weights;

use crate::stage::Registry;

/// Every built-in kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(generic::ValueStage).register(generic::CommandStage);
    r.register(ingest::DatasetStage).register(ingest::VideoSynthStage);
    r.register(prep::ImagePrep).register(prep::AudioPrep).register(prep::VideoPrep);
    r.register(task::TaskStage).register(training::TrainStage { multi: false }).register(training::TrainStage { multi: true });
    r.register(probe::FeaturesStage).register(probe::ProbeStage);
    r.register(weights::WeightsStage);
    r.register(table::TableStage).register(findings::FindingsStage);
    r
}
