//! The CIFAR-10/100 binary layouts of a `dataset` node: where their files are, their class names, and what to say
//! when a folder holds another layout.

use crate::stage::StageError;
use std::path::Path;

/// The train and test batch files of a CIFAR binary folder (or its `cifar-10-batches-bin/` /
/// `cifar-100-binary/` subfolder): CIFAR-10's `data_batch_*.bin` (any number, in numeric order) and
/// `test_batch.bin`; CIFAR-100's `train.bin` and `test.bin`.
pub(super) fn cifar_files(root: &Path, c100: bool) -> Result<(Vec<std::path::PathBuf>, Vec<std::path::PathBuf>), StageError> {
    let dir = cifar_dir(root, c100);
    if c100 {
        let (tr, te) = (dir.join("train.bin"), dir.join("test.bin"));
        for f in [&tr, &te] {
            if !f.is_file() {
                return Err(StageError::input(format!(
                    "{}: missing; CIFAR-100 binary needs train.bin and test.bin{}{}",
                    f.display(),
                    cifar_python_hint(&dir, true),
                    cifar_other_hint(&dir, true)
                )));
            }
        }
        return Ok((vec![tr], vec![te]));
    }
    let mut batches: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| StageError::input(format!("{}: cannot read: {e}; check the dataset `path`", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("data_batch_")?.strip_suffix(".bin")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    batches.sort();
    let test = dir.join("test_batch.bin");
    if batches.is_empty() || !test.is_file() {
        return Err(StageError::input(format!(
            "{}: CIFAR-10 binary needs data_batch_1.bin … (any number) and test_batch.bin; found {} batch files{}{}{}",
            dir.display(),
            batches.len(),
            if test.is_file() { "" } else { " and no test_batch.bin" },
            cifar_python_hint(&dir, false),
            cifar_other_hint(&dir, false)
        )));
    }
    Ok((batches.into_iter().map(|(_, p)| p).collect(), vec![test]))
}

/// The folder of a CIFAR binary dataset at `root`: its `cifar-10-batches-bin/` / `cifar-100-binary/` subfolder as
/// the archive unpacks, or `root` itself.
fn cifar_dir(root: &Path, c100: bool) -> std::path::PathBuf {
    let sub = root.join(if c100 { "cifar-100-binary" } else { "cifar-10-batches-bin" });
    if sub.is_dir() {
        sub
    } else {
        root.to_path_buf()
    }
}

/// The class names a CIFAR binary folder ships (`batches.meta.txt` for CIFAR-10, `fine_label_names.txt` or
/// `coarse_label_names.txt` for CIFAR-100: one per line, in label order), where present.
pub(super) fn cifar_names(root: &Path, c100: bool, coarse: bool) -> Option<Vec<String>> {
    let dir = cifar_dir(root, c100);
    let file = match (c100, coarse) {
        (false, _) => "batches.meta.txt",
        (true, false) => "fine_label_names.txt",
        (true, true) => "coarse_label_names.txt",
    };
    let text = crate::data::layouts::read_text(&dir.join(file)).ok()?;
    Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// What to do when a CIFAR folder holds the other CIFAR's binary batches (CIFAR-10's for `cifar100`, or the reverse).
fn cifar_other_hint(dir: &Path, c100: bool) -> &'static str {
    if c100 && dir.join("data_batch_1.bin").is_file() {
        "; it holds CIFAR-10's batches: point `path` at CIFAR-100's binary version (cifar-100-binary: train.bin, \
         test.bin), or, if this node is meant to read CIFAR-10, set format = \"cifar10\""
    } else if !c100 && dir.join("train.bin").is_file() {
        "; it holds CIFAR-100's train.bin: point `path` at CIFAR-10's binary version (cifar-10-batches-bin: \
         data_batch_1.bin …), or, if this node is meant to read CIFAR-100, set format = \"cifar100\""
    } else {
        ""
    }
}

/// What to do when a CIFAR folder holds the Python version (pickles: `data_batch_1`, `batches.meta`, or its
/// `cifar-10-batches-py/` folder; CIFAR-100's `train`, `meta`, `cifar-100-python/`) instead of the binary one.
fn cifar_python_hint(dir: &Path, c100: bool) -> &'static str {
    let python = if c100 { ["train", "meta"] } else { ["data_batch_1", "batches.meta"] };
    let folder = dir.join(if c100 { "cifar-100-python" } else { "cifar-10-batches-py" });
    if python.iter().all(|f| dir.join(f).is_file()) || folder.is_dir() {
        if c100 {
            "; this is CIFAR-100's Python version (pickles): use the binary version, cifar-100-binary.tar.gz"
        } else {
            "; this is CIFAR-10's Python version (pickles): use the binary version, cifar-10-binary.tar.gz"
        }
    } else {
        ""
    }
}
