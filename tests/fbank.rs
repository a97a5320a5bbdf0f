//! Log-mel features match torchaudio's `compliance.kaldi.fbank` within 1e-3 (absolute, log values) on real
//! clips, for the AST recipe and for Kaldi's defaults. Fixture: tests/fixtures/make_fbank_fixture.py.

use polyflow::data::fbank::{Fbank, FbankOptions};
use polyflow::data::tensors::{decode, Array};
use std::path::Path;

fn f32s(m: &std::collections::BTreeMap<String, polyflow::data::tensors::Named>, k: &str) -> (Vec<usize>, Vec<f32>) {
    match &m[k].data {
        Array::F32(v) => (m[k].shape.clone(), v.clone()),
        _ => panic!("{k} not f32"),
    }
}

#[test]
fn fbank_matches_torchaudio_on_real_clips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = decode(&std::fs::read(root.join("tests/fixtures/fbank.safetensors")).unwrap()).unwrap();
    let ast = Fbank::new(FbankOptions::default()).unwrap();
    let kaldi = Fbank::new(FbankOptions::kaldi_defaults()).unwrap();
    let clips = [
        "datasets/audio/spoken_digits/3/3_000.flac",
        "datasets/audio/instruments/violin/violin_001.flac",
        "datasets/audio/languages/fr/june_fr_CA__fr_CA_f_June-agent-loggedoff.flac",
    ];
    for (i, clip) in clips.iter().enumerate() {
        let (_, wave) = f32s(&fx, &format!("wave_{i}"));
        // Our FLAC decoder gives the same samples as libsndfile.
        let (ours, sr) = polyflow::data::audio::decode(&root.join(clip)).unwrap();
        assert_eq!(sr, 16000);
        assert_eq!(ours.len(), wave.len());
        let dmax = ours.iter().zip(&wave).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(dmax < 1e-6, "{clip}: decoded samples differ by {dmax}");
        for (name, fb) in [("ast", &ast), ("kaldi", &kaldi)] {
            let (shape, want) = f32s(&fx, &format!("{name}_{i}"));
            let (m, c, got) = fb.compute(&wave);
            assert_eq!(vec![m, c], shape, "{name} {clip}");
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("{name} {clip}: max |Δ| = {worst:.2e}");
            assert!(worst < 1e-3, "{name} {clip}: max |Δ| = {worst}");
        }
    }
}
