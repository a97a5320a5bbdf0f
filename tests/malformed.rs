//! A corpus of malformed pipelines (tests/malformed/*.toml). Each file's first line says where the error must
//! be reported and what it must say: `# expect: LINE:COL text`; a second line `# help: text` what its help must say.
//! Each must exit with code 2 and leave no store.

use std::path::Path;
use std::process::Command;

#[test]
fn every_malformed_pipeline_reports_its_line_and_writes_nothing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    files.sort();
    assert!(files.len() >= 25, "corpus has {} files", files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap();
        let spec = first.strip_prefix("# expect: ").unwrap_or_else(|| panic!("{}: no `# expect:` header", f.display()));
        let (pos, want) = spec.split_once(' ').unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let out = Command::new(env!("CARGO_BIN_EXE_polyflow"))
            .args(["run", f.to_str().unwrap(), "--store", store.to_str().unwrap()])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: exit code; stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("{name}:{pos}: error:")) || stderr.contains(&format!(":{pos}: error:")),
            "{name}: expected position {pos} in:\n{stderr}"
        );
        assert!(stderr.contains(want), "{name}: expected `{want}` in:\n{stderr}");
        assert!(stderr.contains("help:") || name.starts_with("0"), "{name}: no help line:\n{stderr}");
        if let Some(help) = text.lines().nth(1).and_then(|l| l.strip_prefix("# help: ")) {
            assert!(stderr.contains(help), "{name}: expected help `{help}` in:\n{stderr}");
        }
        assert!(!store.exists(), "{name}: the store was created");
    }
}

#[test]
fn invalid_utf8_is_reported_at_its_first_bad_byte() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.toml"), b"[node.a]\nkind = \"value\"\ncomment = \"caf\xe9\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_polyflow")).args(["run", "p.toml"]).current_dir(tmp.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("p.toml:3:15: error: not UTF-8 text (byte 0xe9)") && stderr.contains("help:"), "{stderr}");
    assert!(!tmp.path().join(".polyflow").exists());
}
