//! `checkout FILE NODE -o DIR`: a node's artifact copied out of the store into a folder, its files as the node
//! wrote them (a model's weights, a command's outputs, a table's files): the node's current artifact, or the
//! artifact of any run on record (`--key`, from `polyflow runs`), as `dvc checkout` puts a version's outputs
//! into the workspace. Every blob is checked against its digest as it is copied; nothing is computed.

use super::{env_of, exit, load_graph, CliError, Common};
use crate::exec::assess::assess_all;
use crate::exec::State;
use crate::stage::Registry;
use crate::store::{BlobState, Manifest};
use std::path::{Path, PathBuf};

/// `checkout` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckoutArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The node.
    node: String,
    /// The folder to copy the artifact's files into (made if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The artifact of an earlier run of the node: its key, or the first characters of it (`polyflow runs FILE NODE`
    /// lists them), instead of the node's current one.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Replace files of the same names already in the folder.
    #[arg(long)]
    force: bool,
}

/// `checkout FILE NODE -o DIR`.
pub fn checkout(a: CheckoutArgs, reg: &Registry) -> Result<i32, CliError> {
    let c = &a.common;
    let g = load_graph(c, reg)?;
    let Some(&i) = g.by_id.get(&a.node) else {
        let e = match g.resolve(&a.node) {
            Some(ids) => format!(
                "error: `{}` stands for {} nodes, and checkout copies one node's artifact\n  help: name one, e.g. `{}`",
                a.node,
                ids.len(),
                g.nodes[ids[0]].id
            ),
            None => format!("error: no node `{}`\n  help: {}", a.node, g.suggest(&a.node)),
        };
        return Err(CliError::Other(e, exit::USAGE));
    };
    let (store, _empty) = super::read_store(&c.store)?;
    let index = store.index_read()?;
    let id = &g.nodes[i].id;
    let (key, manifest): (String, Manifest) = match &a.key {
        Some(prefix) => {
            // Hex digits, any case (as git takes a commit's).
            let prefix = prefix.to_ascii_lowercase();
            if prefix.is_empty() {
                return Err(CliError::Other(
                    "error: `--key` is empty: give the first characters of a key `runs` lists".into(),
                    exit::USAGE,
                ));
            }
            let runs: Vec<String> = index.runs_of(id).into_iter().map(|r| r.key).filter(|k| k.starts_with(prefix.as_str())).collect();
            let key = match runs.as_slice() {
                [k] => k.clone(),
                [] => {
                    return Err(CliError::Other(
                        format!(
                        "error: no run of `{id}` on record has a key starting with `{prefix}`\n  help: `{}` lists its runs and their keys",
                        c.command("runs", &[id])
                    ),
                        exit::USAGE,
                    ))
                }
                many => {
                    let keys: Vec<&str> = many.iter().map(|k| &k[..16]).collect();
                    return Err(CliError::Other(
                        format!(
                            "error: {} runs of `{id}` have keys starting with `{prefix}` ({}): give more of the key",
                            many.len(),
                            keys.join(", ")
                        ),
                        exit::USAGE,
                    ));
                }
            };
            match index.artifact(&key)? {
                Some(m) => (key, m),
                None => {
                    return Err(CliError::Other(
                        format!("error: the artifact of that run of `{id}` ({}) is no longer in the store (`gc` removed it)", &key[..16]),
                        exit::USAGE,
                    ))
                }
            }
        }
        None => {
            let sel = g.select(std::slice::from_ref(id))?;
            let s = assess_all(&g, &sel, &store, &index, &env_of(&g, &c.backend), &|_| false).remove(&i).expect("assessed");
            match (s.state, s.key, s.manifest) {
                (State::Fresh, Some(k), Some(m)) => (k, m),
                _ => {
                    return Err(CliError::Other(
                        format!(
                            "error: `{id}` is not fresh ({}): its artifact for the settings now is not in the store\n  help: `{}` computes it; `--key` takes an earlier run's (`{}` lists them)",
                            s.reasons.first().map_or_else(|| s.state.to_string(), ToString::to_string),
                            c.run_command(&[id]),
                            c.command("runs", &[id])
                        ),
                        exit::USAGE,
                    ))
                }
            }
        }
    };
    // A damaged blob is not copied out as if it were the artifact.
    if let Some((file, state)) = store.check(&manifest) {
        let what = if state == BlobState::Missing { "is missing from" } else { "does not match its checksum in" };
        return Err(CliError::Other(
            format!("error: `{file}` of `{id}` {what} the store: nothing copied\n  help: `{}` computes it again", c.run_command(&[id])),
            exit::STORE,
        ));
    }
    // Into the store, never (its blobs are read-only content); over files already there only with --force.
    let out = super::checks::resolved(&a.output);
    if out.starts_with(super::checks::resolved(&c.store)) {
        return Err(CliError::Other(format!("error: {} is inside the store: choose a folder outside it", a.output.display()), exit::USAGE));
    }
    if std::fs::metadata(&a.output).is_ok_and(|m| !m.is_dir()) {
        return Err(CliError::Other(format!("error: {} is a file, not a folder: choose a folder", a.output.display()), exit::USAGE));
    }
    let there: Vec<&String> = manifest.files.keys().filter(|f| std::fs::symlink_metadata(a.output.join(f)).is_ok()).collect();
    if !there.is_empty() && !a.force {
        return Err(CliError::Other(
            format!(
                "error: {} holds {} of the artifact's files already (`{}`{}): nothing copied\n  help: `--force` replaces them, or choose another folder",
                a.output.display(),
                there.len(),
                there[0],
                if there.len() > 1 { ", …" } else { "" }
            ),
            exit::USAGE,
        ));
    }
    // Each file inside the folder, checked before any is written: a name of plain parts (a manifest's are;
    // checked all the same), no folder on the way a link out of it (into the store, or anywhere else), and no
    // folder where the file goes.
    for name in manifest.files.keys() {
        let plain = Path::new(name).components().all(|p| matches!(p, std::path::Component::Normal(_)));
        let dest = a.output.join(name);
        if !plain || dest.parent().is_some_and(|p| !super::checks::resolved(p).starts_with(&out)) {
            return Err(CliError::Other(
                format!(
                    "error: `{name}` of `{id}` would be written outside {} (a link in it leads out): nothing copied\n  help: remove the link, or choose another folder",
                    a.output.display()
                ),
                exit::USAGE,
            ));
        }
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err(CliError::Other(
                format!("error: {} is a folder, where the artifact has file `{name}`: nothing copied", dest.display()),
                exit::USAGE,
            ));
        }
    }
    for (name, entry) in &manifest.files {
        copy_checked(&store, name, entry, &a.output.join(name)).map_err(|e| match e {
            // A damaged blob: what to do about it.
            CliError::Other(m, code) if m.contains("does not match its checksum") => CliError::Other(
                format!("{m}\n  help: `polyflow verify` moves it aside; then `{}` computes it again", c.run_command(&[id])),
                code,
            ),
            e => e,
        })?;
    }
    super::out::outln!(
        "{:>12} {} of `{id}` ({}, key {}) into {}",
        "Copied",
        crate::text::count(manifest.files.len(), "file"),
        super::report::fmt_bytes(manifest.size()),
        &key[..16],
        a.output.display()
    );
    Ok(exit::OK)
}

/// Copies file `name` of the artifact (blob `entry` of `store`) to `dest`, through a temporary file beside it, and
/// checks its digest on the way: a blob that does not match leaves `dest` as it was. A link at `dest` is replaced by
/// the file, never written through (it may point anywhere, the store's blobs included).
fn copy_checked(store: &crate::store::Store, name: &str, entry: &crate::store::FileEntry, dest: &Path) -> Result<(), CliError> {
    let fail = |e: String| CliError::Other(format!("error: {}: {e}", dest.display()), exit::STORE);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    if std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(dest).map_err(|e| fail(e.to_string()))?;
    }
    let blob = store.blobs.path(&entry.digest);
    let mut from = std::fs::File::open(&blob).map_err(|e| fail(format!("`{name}` in the store ({}): {e}", blob.display())))?;
    super::out::write_through_with(dest, &mut |w| {
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut from, &mut crate::store::TeeHash { w, h: &mut hasher })?;
        if hasher.finalize().to_hex().as_str() == entry.digest {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("`{name}` in the store does not match its checksum (damaged): not copied")))
        }
    })
    .map_err(|e| fail(e.to_string()))
}
