//! Model configuration: sizes (presets Ti/S/B/L/micro or custom), modality geometry, tasks and heads.
//! Serializable, so a config is exactly what goes into a node's cache key.

use serde::{Deserialize, Serialize};

/// An input modality, each with its own tokenizer, class token and positional embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Images `[B, C, H, W]`, 2D patches.
    Image,
    /// Log-mel spectrograms `[B, C, T, F]` (time first), 2D patches.
    Audio,
    /// Videos `[B, C, T, H, W]`, unfactorised tubelets.
    Video,
}

impl Modality {
    /// All modalities in a fixed order.
    pub const ALL: [Modality; 3] = [Modality::Image, Modality::Audio, Modality::Video];
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Audio => "audio",
            Modality::Video => "video",
        }
    }
    /// Parses a name.
    pub fn parse(s: &str) -> Option<Modality> {
        Modality::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Transformer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Hidden size D.
    pub dim: usize,
    /// Total number of blocks L (adapters + shared).
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden size.
    pub mlp: usize,
}

impl Size {
    /// Presets: `micro` (CPU-sized), `Ti`, `S`, `B`, `L`.
    pub fn preset(name: &str) -> Option<Size> {
        Some(match name {
            "micro" => Size { dim: 64, depth: 4, heads: 4, mlp: 128 },
            "Ti" => Size { dim: 192, depth: 12, heads: 3, mlp: 768 },
            "S" => Size { dim: 384, depth: 12, heads: 6, mlp: 1536 },
            "B" => Size { dim: 768, depth: 12, heads: 12, mlp: 3072 },
            "L" => Size { dim: 1024, depth: 24, heads: 16, mlp: 4096 },
            _ => return None,
        })
    }
}

/// Geometry of one modality's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Input channels (3 reuses an RGB kernel; grey images and spectrograms are tiled).
    pub channels: usize,
    /// Input extent per axis: image `[H, W]`, audio `[T, F]`, video `[T, H, W]`.
    pub input: Vec<usize>,
    /// Patch / tubelet per axis (same order as `input`).
    pub patch: Vec<usize>,
}

impl Geometry {
    /// Token grid per axis.
    pub fn grid(&self) -> Vec<usize> {
        self.input.iter().zip(&self.patch).map(|(i, p)| i / p).collect()
    }
    /// Number of patch tokens (without the class token).
    pub fn tokens(&self) -> usize {
        self.grid().iter().product()
    }
    /// Values per patch.
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch.iter().product::<usize>()
    }
}

/// How a head is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    /// Zero kernel and bias (the paper's audio and video heads).
    Zero,
    /// LeCun-normal kernel, zero bias (the paper's image heads).
    LecunNormal,
}

/// One task = one dataset = one linear head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHead {
    /// Task name.
    pub name: String,
    /// Its modality.
    pub modality: Modality,
    /// Number of classes.
    pub classes: usize,
    /// Head init.
    pub init: HeadInit,
}

/// The whole model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Transformer size.
    pub size: Size,
    /// Modality-specific blocks per tokenizer (`L_adapt`); the remaining `depth − l_adapt` are shared.
    pub l_adapt: usize,
    /// Tokenizer geometry per modality present (sorted by modality).
    pub geometry: Vec<(Modality, Geometry)>,
    /// Task heads, in task order.
    pub tasks: Vec<TaskHead>,
    /// GELU with the tanh approximation (the paper's Flax default) instead of the exact erf form.
    pub gelu_tanh: bool,
    /// LayerNorm ε.
    pub ln_eps: f64,
}

impl ModelConfig {
    /// Geometry of `m`, if the model has that modality.
    pub fn geometry(&self, m: Modality) -> Option<&Geometry> {
        self.geometry.iter().find(|(k, _)| *k == m).map(|(_, g)| g)
    }
    /// Modalities with a tokenizer, in order.
    pub fn modalities(&self) -> Vec<Modality> {
        self.geometry.iter().map(|(m, _)| *m).collect()
    }
    /// Index of task `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
    /// Checks the config for impossible shapes.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.size;
        if !s.dim.is_multiple_of(s.heads) {
            return Err(format!("dim {} is not divisible by heads {}", s.dim, s.heads));
        }
        if self.l_adapt > s.depth {
            return Err(format!("l_adapt {} exceeds depth {}", self.l_adapt, s.depth));
        }
        for (m, g) in &self.geometry {
            let want = if *m == Modality::Video { 3 } else { 2 };
            if g.input.len() != want || g.patch.len() != want {
                return Err(format!("{} geometry needs {want} axes", m.name()));
            }
            for (i, p) in g.input.iter().zip(&g.patch) {
                if *p == 0 || i % p != 0 {
                    let axes = match m {
                        Modality::Video => "`frames` (or `window`), `size` or `crop`",
                        Modality::Image => "`height`, `width`",
                        Modality::Audio => "`frames` (or `window`), `fbank.num_mel_bins`",
                    };
                    return Err(format!(
                        "{} input {:?} is not divisible by patch {:?}: prepare the data at a multiple of the patch ({axes} of its \
                         `{}_prep` node) or set `{}_patch`",
                        m.name(),
                        g.input,
                        g.patch,
                        m.name(),
                        m.name()
                    ));
                }
            }
        }
        for t in &self.tasks {
            if self.geometry(t.modality).is_none() {
                return Err(format!("task `{}` needs a {} tokenizer", t.name, t.modality.name()));
            }
        }
        Ok(())
    }
}
