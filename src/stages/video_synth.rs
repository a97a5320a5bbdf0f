//! `video_synth`: the embedded video tasks (moving digits, moving garments), generated deterministically from an
//! image dataset.

use super::datautil::{write_dataset, Split};
use crate::data::tensors::{Array, Labels, Meta, Named};
use crate::data::video;
use crate::stage::{choice_enum, parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde::Deserialize;
use serde_json::json;
use std::path::Path;

/// `video_synth`: the embedded video tasks, generated deterministically from an image dataset.
pub struct VideoSynthStage;

choice_enum! {
    /// Which video task `video_synth` generates.
    enum SynthTask {
        /// Digits moving on a canvas; label = digit.
        MovingDigits = "moving_digits",
        /// A garment moving one of several ways; label = motion.
        FashionMotion = "fashion_motion",
    }
}

/// The parameters of a `video_synth` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SynthParams {
    task: SynthTask,
    frames: usize,
    size: usize,
}

impl Stage for VideoSynthStage {
    fn kind(&self) -> &'static str {
        "video_synth"
    }
    fn version(&self) -> u32 {
        // 2: the note names the image dataset by its artifact's digest, not by its node's id (which is not in the
        // key: a renamed node gave other bytes under the same key).
        2
    }
    fn doc(&self) -> &'static str {
        "generate a video task from images: moving_digits (label = digit) or fashion_motion (label = motion)"
    }
    fn output(&self) -> &'static str {
        "dataset"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::one("source", &["dataset"])]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req("task", T::Choice(SynthTask::NAMES), "which video task"),
            ParamSpec::opt("frames", T::Int { min: 1, max: 256 }, json!(8), "frames per clip"),
            ParamSpec::opt("size", T::Int { min: 8, max: 512 }, json!(32), "canvas side in pixels"),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<SynthParams>(params, &self.params()).map(|_| ())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let SynthParams { task, frames, size } = parse(ctx.params)?;
        let src = ctx.input("source")?.clone();
        let meta: Meta = src.json("meta.json")?;
        if meta.modality != "image" {
            return Err(StageError::input(format!("video_synth needs an image dataset, `{}` is {}", src.id, meta.modality)));
        }
        let mut splits = vec![];
        for (si, name) in ["train", "val", "test"].iter().enumerate() {
            let arrays = super::datautil::read_split(&src, name)?;
            let x = &arrays["x"];
            let Array::U8(px) = &x.data else {
                return Err(StageError::failed("images must be u8"));
            };
            let (n, h, w) = (x.shape[0], x.shape[1], x.shape[2]);
            let labels = match Labels::from_named(&arrays["y"]).map_err(StageError::failed)? {
                Labels::Single(v) => v,
                _ => return Err(StageError::input("video_synth needs single-label images")),
            };
            let seed = ctx.seed().wrapping_mul(31).wrapping_add(si as u64 + 1);
            let clips = if task == SynthTask::MovingDigits {
                video::moving_digits(px, h, w, &labels, frames, size, seed)
            } else {
                video::fashion_motion(px, h, w, n, frames, size, seed)
            };
            splits.push((
                *name,
                Split {
                    x: vec![("x".into(), Named { shape: vec![n, frames, size, size, 1], data: Array::U8(clips.pixels) })],
                    y: Labels::Single(clips.labels),
                },
            ));
        }
        let classes =
            if task == SynthTask::MovingDigits { meta.classes.clone() } else { video::MOTIONS.iter().map(|s| s.to_string()).collect() };
        // Content only: the image dataset by its artifact's digest, not its node's id (not in the key).
        let note = format!(
            "{task} generated from an image dataset (artifact {}; {frames} frames, {size}², seed {})",
            &src.manifest.digest[..12.min(src.manifest.digest.len())],
            ctx.seed()
        );
        write_dataset(ctx, "video", classes, false, splits, None, note)
    }
    fn describe(&self, a: &crate::stage::InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}
