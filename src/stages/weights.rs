//! `weights`: brings a pretrained checkpoint into a pipeline, e.g. the ImageNet-21k ViT-B/16 the paper starts
//! every model from. The node is keyed by the file's content digest (never its path), checks that the file is a
//! timm-named ViT, and produces a `weights` artifact that `train`, `cotrain` and `features` take as `init`
//! (which maps it onto their model: fused qkv, 2D → 3D inflation, position resizing, adapter copies; see
//! [`crate::model::import`]).

use crate::model::checkpoint::{from_safetensors, HostTensor};
use crate::stage::{
    choice_enum, parse, parse_checked, InputArtifact, InputSlot, ParamSpec, ParamType as T, Problem, Stage, StageCtx, StageError,
};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// `weights`.
pub struct WeightsStage;

pub use crate::model::import::VitInfo;

fn shape_of<'a>(w: &'a BTreeMap<String, Vec<usize>>, name: &str, file: &str) -> Result<&'a [usize], StageError> {
    w.get(name).map(Vec::as_slice).ok_or_else(|| {
        StageError::input(format!(
            "{file}: not a timm ViT checkpoint: no tensor `{name}` (a timm ViT has patch_embed.proj, cls_token, pos_embed, blocks.N.*, norm); export it with timm's `save_file(model.state_dict(), …)`"
        ))
    })
}

/// Every tensor of a timm ViT of this geometry, name → shape, in checking order (heads excluded). `inspect`
/// checks a file against it; tests build checkpoints from it.
pub fn timm_layout(v: &VitInfo) -> Vec<(String, Vec<usize>)> {
    let (d, m) = (v.dim, v.mlp);
    let mut out = vec![
        ("patch_embed.proj.weight".to_string(), vec![d, v.channels, v.patch[0], v.patch[1]]),
        ("patch_embed.proj.bias".to_string(), vec![d]),
        ("cls_token".to_string(), vec![1, 1, d]),
        ("pos_embed".to_string(), vec![1, 1 + v.grid * v.grid, d]),
    ];
    for i in 0..v.depth {
        let b = |s: &str, shape: Vec<usize>| (format!("blocks.{i}.{s}"), shape);
        for n in ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias"] {
            out.push(b(n, vec![d]));
        }
        out.push(b("attn.qkv.weight", vec![3 * d, d]));
        out.push(b("attn.qkv.bias", vec![3 * d]));
        out.push(b("attn.proj.weight", vec![d, d]));
        out.push(b("mlp.fc1.weight", vec![m, d]));
        out.push(b("mlp.fc1.bias", vec![m]));
        out.push(b("mlp.fc2.weight", vec![d, m]));
    }
    out.push(("norm.weight".to_string(), vec![d]));
    out.push(("norm.bias".to_string(), vec![d]));
    out
}

/// What a checkpoint file that is not safetensors is, from its first bytes, and how to convert it; `None` when it
/// may be safetensors (whose parser then has the last word).
fn other_format(bytes: &[u8]) -> Option<String> {
    const TORCH: &str =
        "`from safetensors.torch import save_file; save_file(torch.load(PATH, map_location=\"cpu\"), \"vit.safetensors\")` \
         (a timm model: `save_file(timm.create_model(NAME, pretrained=True).state_dict(), …)`)";
    let what = if bytes.starts_with(b"PK\x03\x04") {
        format!(
            "a zip archive: a PyTorch checkpoint (`torch.save`, .pth/.pt/.bin) or a NumPy .npz (JAX ViT checkpoints, \
             e.g. Scenic's or big_vision's; timm's `create_model(NAME, pretrained=True)` loads those). Convert a \
             PyTorch one with {TORCH}"
        )
    } else if bytes.first() == Some(&0x80) && bytes.get(1).is_some_and(|v| (2..=5).contains(v)) {
        format!("a Python pickle (PyTorch's legacy `torch.save` format). Convert it with {TORCH}")
    } else if bytes.starts_with(b"\x93NUMPY") {
        "a NumPy .npy array, not a set of named tensors: save the model's state dict with safetensors".to_string()
    } else if bytes.starts_with(b"\x89HDF") {
        "an HDF5 file (Keras): export the model's weights under timm's names with safetensors".to_string()
    } else {
        return None;
    };
    Some(what)
}

/// The tensors of checkpoint file `shown`: the safetensors parser first (a valid header's length may begin with a
/// pickle's bytes, e.g. a 640-byte header), and a file it refuses named by what it is.
fn read_checkpoint(bytes: &[u8], shown: &str) -> Result<BTreeMap<String, HostTensor>, StageError> {
    from_safetensors(bytes).map_err(|e| match other_format(bytes) {
        Some(what) => StageError::input(format!("{shown}: not a safetensors file but {what}")),
        None => StageError::input(format!("{shown}: {e}")),
    })
}

/// Tensors of timm ViT checkpoints that PolyViT does not use: the classifier of the pretraining task and the
/// original ViT's pre-logits layer.
fn unused(name: &str) -> bool {
    name.starts_with("head.") || name.starts_with("pre_logits.") || name.starts_with("head_dist.")
}

/// The tensor shapes of safetensors file `path` (shown as `shown`), read from its header alone: the first
/// 8 + n bytes, however large the file. A file that is not safetensors is named by what it is.
fn header_shapes(path: &Path, shown: &str) -> Result<BTreeMap<String, Vec<usize>>, StageError> {
    use std::io::Read;
    let not = |why: String| StageError::input(format!("{shown}: {why}"));
    let mut f = std::fs::File::open(path).map_err(|e| not(e.to_string()))?;
    let mut head = [0u8; 8];
    f.read_exact(&mut head).map_err(|_| not("not a safetensors file: shorter than its 8-byte header length".into()))?;
    let refuse = |head: &[u8]| match other_format(head) {
        Some(what) => not(format!("not a safetensors file but {what}")),
        None => not("not a safetensors file: its header is not a JSON table of tensors".into()),
    };
    let n = u64::from_le_bytes(head);
    // safetensors caps headers at 100 MB.
    if n > 100_000_000 {
        return Err(refuse(&head));
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).map_err(|_| refuse(&head))?;
    let table: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&json).map_err(|_| refuse(&head))?;
    let mut shapes = BTreeMap::new();
    let mut end = 0u64;
    for (name, t) in table.into_iter().filter(|(n, _)| n != "__metadata__") {
        let shape = serde_json::from_value(t["shape"].clone()).map_err(|_| refuse(&head))?;
        end = end.max(t["data_offsets"][1].as_u64().unwrap_or(0));
        shapes.insert(name, shape);
    }
    // A download cut short keeps its header: say so now rather than after hours of preprocessing.
    let len = f.metadata().map_err(|e| not(e.to_string()))?.len();
    if len < 8 + n + end {
        return Err(not(format!(
            "truncated: its header describes {} bytes of tensors, the file holds {} (an interrupted download or copy?)",
            end,
            len.saturating_sub(8 + n)
        )));
    }
    Ok(shapes)
}

/// Checks that `w` is a timm-named ViT and describes it: [`inspect_shapes`] of its tensors, then no tensor may
/// hold NaN or infinity.
pub fn inspect(w: &BTreeMap<String, HostTensor>, file: &str) -> Result<VitInfo, StageError> {
    let shapes = w.iter().map(|(n, t)| (n.clone(), t.shape.clone())).collect();
    let info = inspect_shapes(&shapes, file)?;
    // Non-finite weights would only surface as a NaN loss blamed on the learning rate.
    for (name, t) in w.iter().filter(|(n, _)| !unused(n)) {
        let bad = t.data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(StageError::input(format!(
                "{file}: tensor `{name}` holds {bad} NaN or infinite value(s): the checkpoint is damaged"
            )));
        }
    }
    Ok(info)
}

/// Checks that tensors of shapes `w` are a timm-named ViT and describes it: the geometry is read from the patch
/// embedding, the position grid, the block count and the first MLP, then every tensor of [`timm_layout`] must be
/// there with its shape, and no other (classifier heads aside).
pub fn inspect_shapes(w: &BTreeMap<String, Vec<usize>>, file: &str) -> Result<VitInfo, StageError> {
    if w.contains_key("fc_norm.weight") && !w.contains_key("norm.weight") {
        return Err(StageError::input(format!(
            "{file}: a global-pool ViT (`fc_norm` after average pooling, no final `norm`): PolyViT classifies from the \
             class token through the final LayerNorm; use a class-token ViT checkpoint (timm's `global_pool='token'` \
             models, e.g. `vit_base_patch16_224.orig_in21k`)"
        )));
    }
    let pe = shape_of(w, "patch_embed.proj.weight", file)?;
    let [dim, channels, ph, pw] = pe else {
        return Err(StageError::input(format!("{file}: tensor `patch_embed.proj.weight` has shape {pe:?}, expected [D, C, ph, pw]")));
    };
    let (dim, channels, patch) = (*dim, *channels, [*ph, *pw]);
    let pos = shape_of(w, "pos_embed", file)?;
    let grid = match pos {
        [1, n, d] if *d == dim && *n > 1 && ((n - 1) as f64).sqrt().fract() == 0.0 => ((n - 1) as f64).sqrt() as usize,
        _ => {
            return Err(StageError::input(format!(
                "{file}: tensor `pos_embed` has shape {pos:?}, expected [1, 1 + g², {dim}] (a class token and a square grid)"
            )))
        }
    };
    let depth = (0..).take_while(|i| w.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
    let mlp = shape_of(w, "blocks.0.mlp.fc1.weight", file)?.first().copied().unwrap_or(0);
    let info = VitInfo { format: "timm".into(), dim, depth, mlp, patch, channels, grid };
    let layout = timm_layout(&info);
    for (name, want) in &layout {
        let got = shape_of(w, name, file)?;
        if got != want.as_slice() {
            return Err(StageError::input(format!("{file}: tensor `{name}` has shape {got:?}, a ViT of this width needs {want:?}")));
        }
    }
    // A tensor a plain ViT lacks changes the network (LayerScale `ls1.gamma`, q/k norms, register tokens, a
    // distillation token): loading the rest would silently train another model.
    let known: std::collections::BTreeSet<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&str> = w.keys().map(String::as_str).filter(|n| !known.contains(n) && !unused(n)).collect();
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(6).copied().collect();
        return Err(StageError::input(format!(
            "{file}: {} tensor(s) a plain ViT does not have ({}{}): a ViT variant (LayerScale, q/k norms, register or \
             distillation tokens) is another network, which PolyViT's model cannot load; use a plain ViT checkpoint",
            extra.len(),
            shown.join(", "),
            if extra.len() > shown.len() { ", …" } else { "" }
        )));
    }
    Ok(info)
}

choice_enum! {
    /// How the checkpoint's tensors are named.
    enum Naming {
        /// timm's `VisionTransformer` state dict.
        Timm = "timm",
    }
}

/// The parameters of a `weights` node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsParams {
    /// The `.safetensors` file (empty = not configured yet).
    path: String,
    /// Tensor naming (only timm today: `run` checks the file against it).
    format: Naming,
}

/// The checkpoint file of a node with `params` (its `path` from `base`; `base` itself when the parameters do
/// not parse, which `preflight` reports first).
fn resolve(params: &serde_json::Value, base: &Path) -> std::path::PathBuf {
    base.join(parse::<WeightsParams>(params).map(|p| p.path).unwrap_or_default())
}

impl Stage for WeightsStage {
    fn kind(&self) -> &'static str {
        "weights"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "a pretrained checkpoint (timm-named ViT, safetensors) for `init`, keyed by the file's content"
    }
    fn output(&self) -> &'static str {
        "weights"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt(
                "path",
                T::Path,
                json!(""),
                "the .safetensors file; empty = not configured yet (set it with --set NODE.path=FILE or a --config file)",
            ),
            ParamSpec::opt("format", T::Choice(Naming::NAMES), json!("timm"), "tensor naming: timm's VisionTransformer state dict"),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<WeightsParams>(params, &self.params()).map(|_| ())
    }
    fn preflight(&self, params: &serde_json::Value, base: &Path) -> Result<(), Problem> {
        let p: WeightsParams = parse_checked(params, &self.params())?;
        if p.path.is_empty() {
            return Err(("path".to_string(), "not configured: where is the pretrained checkpoint (.safetensors)?".to_string()).into());
        }
        let file = base.join(&p.path);
        if !file.is_file() {
            return Err(("path".to_string(), format!("`{}` is not a file", file.display())).into());
        }
        // The header alone says whether it is a timm ViT (a pickle, a ResNet, a LayerScale variant …).
        let shown = crate::spec::source::display_path(&file);
        header_shapes(&file, &shown).and_then(|s| inspect_shapes(&s, &shown)).map_err(|e| ("path".to_string(), e.message))?;
        Ok(())
    }
    fn declare(
        &self,
        params: &serde_json::Value,
        base: &Path,
        _inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // The geometry, from the header: `train`, `cotrain` and `features` check that it fits their model.
        let file = resolve(params, base);
        let shown = crate::spec::source::display_path(&file);
        let info = header_shapes(&file, &shown).and_then(|s| inspect_shapes(&s, &shown)).ok()?;
        Some(json!({ "vit": info }))
    }
    fn external_digest(
        &self,
        params: &serde_json::Value,
        base: &Path,
        files: &crate::fingerprint::FileDigests,
    ) -> Result<Option<String>, StageError> {
        if let Err(Problem { param, msg, .. }) = self.preflight(params, base) {
            return Err(StageError::input(format!("`{param}`: {msg}")));
        }
        files.file(&resolve(params, base)).map(Some).map_err(|e| StageError::input(e.to_string()))
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p = resolve(ctx.params, ctx.base_dir);
        let shown = crate::spec::source::display_path(&p);
        let bytes = std::fs::read(&p).map_err(|e| StageError::input(format!("{shown}: {e}")))?;
        let w = read_checkpoint(&bytes, &shown)?;
        // Only content goes into the artifact, so a moved or renamed file leaves everything downstream fresh.
        // One naming today; another would be read by an arm of its own.
        let info = match parse::<WeightsParams>(ctx.params)?.format {
            Naming::Timm => inspect(&w, &shown)?,
        };
        ctx.out.put("weights.safetensors", &bytes)?;
        ctx.out.put_json("weights.json", &info)
    }
    fn describe(&self, a: &InputArtifact, _out: &Path) -> Result<String, StageError> {
        let info: VitInfo = a.json("weights.json")?;
        Ok(serde_json::to_string_pretty(&info).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit(dim: usize, depth: usize, mlp: usize) -> BTreeMap<String, HostTensor> {
        let info = VitInfo { format: "timm".into(), dim, depth, mlp, patch: [4, 4], channels: 3, grid: 4 };
        timm_layout(&info)
            .into_iter()
            .map(|(n, shape)| {
                let len = shape.iter().product();
                (n, HostTensor { shape, data: vec![0.0; len] })
            })
            .collect()
    }

    #[test]
    fn inspects_a_vit_and_names_the_bad_tensor() {
        let w = vit(8, 2, 16);
        let info = inspect(&w, "f.safetensors").unwrap();
        assert_eq!((info.dim, info.depth, info.mlp, info.patch, info.grid), (8, 2, 16, [4, 4], 4));
        let mut bad = w.clone();
        bad.get_mut("blocks.1.attn.qkv.weight").unwrap().shape = vec![8, 8];
        let e = inspect(&bad, "f.safetensors").unwrap_err().message;
        assert!(e.contains("`blocks.1.attn.qkv.weight`") && e.contains("[8, 8]"), "{e}");
        let mut resnet = BTreeMap::new();
        resnet.insert("conv1.weight".into(), HostTensor { shape: vec![64, 3, 7, 7], data: vec![0.0; 64 * 147] });
        let e = inspect(&resnet, "r.safetensors").unwrap_err().message;
        assert!(e.contains("not a timm ViT") && e.contains("patch_embed.proj.weight"), "{e}");
    }

    #[test]
    fn refuses_variants_damage_and_other_formats_saying_what_they_are() {
        let w = vit(8, 2, 16);
        let mut heads = w.clone();
        heads.insert("head.weight".into(), HostTensor { shape: vec![3, 8], data: vec![0.0; 24] });
        heads.insert("pre_logits.fc.weight".into(), HostTensor { shape: vec![8, 8], data: vec![0.0; 64] });
        assert!(inspect(&heads, "f").is_ok(), "classifier tensors are not used, not refused");
        let mut ls = w.clone();
        ls.insert("blocks.0.ls1.gamma".into(), HostTensor { shape: vec![8], data: vec![1.0; 8] });
        let e = inspect(&ls, "f").unwrap_err().message;
        assert!(e.contains("blocks.0.ls1.gamma") && e.contains("LayerScale"), "{e}");
        let mut gap = w.clone();
        gap.remove("norm.weight");
        gap.insert("fc_norm.weight".into(), HostTensor { shape: vec![8], data: vec![1.0; 8] });
        assert!(inspect(&gap, "f").unwrap_err().message.contains("global-pool ViT"));
        let mut nan = w.clone();
        nan.get_mut("blocks.1.mlp.fc1.weight").unwrap().data[3] = f32::NAN;
        let e = inspect(&nan, "f").unwrap_err().message;
        assert!(e.contains("`blocks.1.mlp.fc1.weight` holds 1 NaN"), "{e}");
        assert!(other_format(b"PK\x03\x04rest").unwrap().contains("zip archive"));
        assert!(other_format(&[0x80, 0x02, 0x7d]).unwrap().contains("pickle"));
        assert!(other_format(b"\x93NUMPY\x01\x00").unwrap().contains(".npy"));
        assert!(other_format(&[8, 0, 0, 0, 0, 0, 0, 0, b'{']).is_none());
        // A valid file whose 640-byte header length begins 0x80 0x02, as a pickle does, is read as safetensors.
        let mut header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_string();
        header.push_str(&" ".repeat(640 - header.len()));
        let mut file = 640u64.to_le_bytes().to_vec();
        file.extend(header.as_bytes());
        file.extend(1.5f32.to_le_bytes());
        assert_eq!(&file[..2], &[0x80, 0x02]);
        assert_eq!(read_checkpoint(&file, "f").unwrap()["a"].data, [1.5]);
        assert!(read_checkpoint(b"PK\x03\x04 zip", "f").unwrap_err().message.contains("zip archive"));
    }
}
