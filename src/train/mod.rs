//! Training: task-sampling and LR schedules, the shared optimizer, data streams and augmentation, losses and
//! metrics, and the resumable loop. Knows burn and the model; knows nothing of the engine.

pub mod batch;
pub mod encoded;
pub mod flat;
pub mod geometric;
pub mod metrics;
pub mod optim;
pub mod prefetch;
pub mod run;
pub mod schedule;
