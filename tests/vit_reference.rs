//! The image path's logits equal an independent numpy forward (tests/fixtures/make_vit_fixture.py) within
//! 1e-4 relative, after importing timm-named weights; import → save → load round trip is exact.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use polyflow::model::checkpoint::{from_safetensors, load_into, named_tensors, to_safetensors};
use polyflow::model::import::{from_timm, timm_head, Inflation};
use polyflow::model::{Geometry, HeadInit, Modality, ModelConfig, PolyVit, Size, TaskHead};

fn cfg() -> ModelConfig {
    ModelConfig {
        size: Size { dim: 32, depth: 2, heads: 2, mlp: 64 },
        l_adapt: 0,
        geometry: vec![(Modality::Image, Geometry { channels: 3, input: vec![16, 16], patch: vec![8, 8] })],
        tasks: vec![TaskHead { name: "t".into(), modality: Modality::Image, classes: 5, init: HeadInit::Zero }],
        gelu_tanh: true,
        ln_eps: 1e-6,
    }
}

#[test]
fn image_logits_match_numpy_reference() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vit_fixture.safetensors")).unwrap();
    let fx = from_safetensors(&bytes).unwrap();
    let timm: std::collections::BTreeMap<_, _> =
        fx.iter().filter(|(k, _)| *k != "input" && *k != "logits").map(|(k, v)| (k.clone(), v.clone())).collect();
    let c = cfg();
    let mut named = from_timm(&timm, &c, Inflation::Central).unwrap();
    let (wn, w, bn, b) = timm_head(&timm, 0).unwrap().unwrap();
    named.insert(wn, w);
    named.insert(bn, b);
    let dev = Default::default();
    let m = load_into(PolyVit::<Flex>::new(&c, 9, &dev), &named, false, &dev).unwrap();
    let x = &fx["input"];
    let xt = Tensor::<Flex, 5>::from_data(TensorData::new(x.data.clone(), [2, 3, 1, 16, 16]), &dev);
    let got = m.forward(PolyVit::<Flex>::route(&c, 0), xt, &[]).into_data().into_vec::<f32>().unwrap();
    let want = &fx["logits"].data;
    assert_eq!(got.len(), want.len(), "logits: got {got:?}\nwant {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "got {got:?}\nwant {want:?}");
    }
    // Import → save → load is exact.
    let saved = to_safetensors(&named_tensors(&m));
    let back = load_into(PolyVit::<Flex>::new(&c, 3, &dev), &from_safetensors(&saved).unwrap(), false, &dev).unwrap();
    assert_eq!(named_tensors(&back), named_tensors(&m));
}

#[test]
fn adapters_get_copies_of_the_same_vit_block_and_video_is_inflated() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vit_fixture.safetensors")).unwrap();
    let timm = from_safetensors(&bytes).unwrap();
    let mut c = cfg();
    c.l_adapt = 1;
    c.geometry.push((Modality::Video, Geometry { channels: 3, input: vec![4, 16, 16], patch: vec![2, 8, 8] }));
    let named = from_timm(&timm, &c, Inflation::Central).unwrap();
    assert_eq!(named["tokenizers.0.adapters.0.qkv.weight"], named["tokenizers.1.adapters.0.qkv.weight"]);
    assert!(named.contains_key("blocks.0.fc1.weight"));
    let v = &named["tokenizers.1.embed.weight"]; // [3·2·8·8, 32], central frame = t index 1
    assert_eq!(v.shape, vec![3 * 2 * 64, 32]);
    let i = &named["tokenizers.0.embed.weight"];
    // Channel 0, t = 0 rows are zero; t = 1 rows equal the 2D kernel's channel-0 rows.
    assert!(v.data[..64 * 32].iter().all(|&x| x == 0.0));
    assert_eq!(&v.data[64 * 32..128 * 32], &i.data[..64 * 32]);
    // Positions tiled over time: 1 + 2·4 tokens.
    assert_eq!(named["tokenizers.1.pos"].shape, vec![1, 9, 32]);
    let missing =
        from_timm(&timm.iter().filter(|(k, _)| *k != "norm.weight").map(|(k, v)| (k.clone(), v.clone())).collect(), &c, Inflation::Central)
            .unwrap_err();
    assert!(missing.contains("norm.weight"));
}
