//! Checkpoints as safetensors, named by module path (`tokenizers.0.embed.weight`, `blocks.3.qkv.weight`, …),
//! so a Python user can open them. Loading checks names and shapes and lists missing and unexpected tensors.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use std::collections::BTreeMap;

/// A named f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

struct Collect {
    path: Vec<String>,
    out: BTreeMap<String, HostTensor>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 data");
        self.out.insert(self.path.join("."), HostTensor { shape, data });
    }
}

/// Every float parameter of `m` by path.
pub fn named_tensors<B: Backend, M: Module<B>>(m: &M) -> BTreeMap<String, HostTensor> {
    let mut c = Collect { path: vec![], out: BTreeMap::new() };
    m.visit(&mut c);
    c.out
}

/// Serialises named tensors as safetensors bytes.
pub fn to_safetensors(tensors: &BTreeMap<String, HostTensor>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes).expect("view"))
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// Parses safetensors bytes (F32 tensors only).
pub fn from_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        use safetensors::Dtype;
        let b = view.data();
        // Half-precision checkpoints widen to f32 exactly; f64 rounds to nearest (as `.float()` does).
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            other => return Err(format!("tensor `{name}` has dtype {other:?}; weights must be F32, BF16, F16 or F64")),
        };
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// A checkpoint that does not fit the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("checkpoint does not fit the model: {}", self.describe())]
pub struct LoadError {
    /// Model tensors the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint tensors the model lacks.
    pub unexpected: Vec<String>,
    /// Tensors with other shapes: (name, model shape, checkpoint shape).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadError {
    fn describe(&self) -> String {
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!("missing {}: {}", self.missing.len(), self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}: {}", self.unexpected.len(), self.unexpected.join(", ")));
        }
        for (n, a, b) in &self.mismatched {
            parts.push(format!("`{n}` is {a:?} in the model but {b:?} in the checkpoint"));
        }
        parts.join("; ")
    }
}

struct Assign<'a, B: Backend> {
    path: Vec<String>,
    src: &'a BTreeMap<String, HostTensor>,
    used: Vec<String>,
    missing: Vec<String>,
    mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    device: B::Device,
}

impl<B: Backend> ModuleMapper<B> for Assign<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims().to_vec();
        let tensor = match self.src.get(&name) {
            None => {
                self.missing.push(name);
                tensor
            }
            Some(h) if h.shape != dims => {
                self.mismatched.push((name, dims, h.shape.clone()));
                tensor
            }
            Some(h) => {
                self.used.push(name);
                let req = tensor.is_require_grad();
                let t = Tensor::<B, D>::from_data(TensorData::new(h.data.clone(), h.shape.clone()), &self.device);
                if req {
                    t.require_grad()
                } else {
                    t
                }
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Loads `src` into `m`. Strict: every model tensor must be present with its shape and nothing may be left
/// over, unless `allow_partial` (then only shape mismatches fail, and the rest keep their values).
pub fn load_into<B: Backend, M: Module<B>>(
    m: M,
    src: &BTreeMap<String, HostTensor>,
    allow_partial: bool,
    device: &B::Device,
) -> Result<M, LoadError> {
    let mut a = Assign::<B> { path: vec![], src, used: vec![], missing: vec![], mismatched: vec![], device: device.clone() };
    let m = m.map(&mut a);
    let unexpected: Vec<String> = src.keys().filter(|k| !a.used.contains(k)).cloned().collect();
    let bad = !a.mismatched.is_empty() || (!allow_partial && (!a.missing.is_empty() || !unexpected.is_empty()));
    if bad {
        return Err(LoadError { missing: a.missing, unexpected, mismatched: a.mismatched });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{polyvit::PolyVit, ModelConfig};
    use burn::backend::Flex;

    #[test]
    fn half_precision_checkpoints_widen_to_f32_exactly() {
        use safetensors::{tensor::TensorView, Dtype};
        let vals = [1.5f32, -0.0078125, 3.0e4];
        let bf: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let f16: Vec<u8> = vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let i8s = vec![1u8, 2, 3];
        let views =
            vec![("a", TensorView::new(Dtype::BF16, vec![3], &bf).unwrap()), ("b", TensorView::new(Dtype::F16, vec![3], &f16).unwrap())];
        let w = from_safetensors(&safetensors::serialize(views, None).unwrap()).unwrap();
        assert_eq!(w["a"].data, vals.map(|v| half::bf16::from_f32(v).to_f32()).to_vec());
        assert_eq!(w["b"].data, vals.map(|v| half::f16::from_f32(v).to_f32()).to_vec());
        let ints = safetensors::serialize(vec![("c", TensorView::new(Dtype::U8, vec![3], &i8s).unwrap())], None).unwrap();
        assert!(from_safetensors(&ints).unwrap_err().contains("dtype U8"));
    }

    fn cfg() -> ModelConfig {
        serde_json::from_value(serde_json::json!({
            "size": {"dim": 8, "depth": 2, "heads": 2, "mlp": 16}, "l_adapt": 1,
            "geometry": [["image", {"channels": 3, "input": [4, 4], "patch": [2, 2]}]],
            "tasks": [{"name": "a", "modality": "image", "classes": 3, "init": "lecun_normal"}],
            "gelu_tanh": true, "ln_eps": 1e-6
        }))
        .unwrap()
    }

    #[test]
    fn save_load_roundtrip_is_exact_and_names_are_paths() {
        let dev = Default::default();
        let a = PolyVit::<Flex>::new(&cfg(), 1, &dev);
        let named = named_tensors(&a);
        assert!(named.contains_key("tokenizers.0.embed.weight"), "{:?}", named.keys().collect::<Vec<_>>());
        assert!(named.contains_key("tokenizers.0.adapters.0.qkv.weight"));
        assert!(named.contains_key("blocks.0.norm1.gamma"));
        assert!(named.contains_key("heads.0.bias"));
        let bytes = to_safetensors(&named);
        let back = from_safetensors(&bytes).unwrap();
        let b = load_into(PolyVit::<Flex>::new(&cfg(), 2, &dev), &back, false, &dev).unwrap();
        assert_eq!(named_tensors(&b), named);
    }

    #[test]
    fn partial_checkpoint_lists_missing_and_unexpected() {
        let dev = Default::default();
        let mut named = named_tensors(&PolyVit::<Flex>::new(&cfg(), 1, &dev));
        named.remove("norm.gamma");
        named.insert("extra.w".into(), HostTensor { shape: vec![1], data: vec![0.0] });
        let err = load_into(PolyVit::<Flex>::new(&cfg(), 2, &dev), &named, false, &dev).unwrap_err();
        assert_eq!(err.missing, ["norm.gamma"]);
        assert_eq!(err.unexpected, ["extra.w"]);
        assert!(err.to_string().contains("missing 1: norm.gamma"));
    }
}
