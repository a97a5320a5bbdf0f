//! Ingesting a [`Catalog`] (one file per example): splits, decoding on a thread pool in order, and skipping
//! what cannot be decoded.
//!
//! Splits: the layout's own train / val / test when it has them; a missing test split is carved from train
//! (`test_fraction`, seed ^ 0x7e57), then a missing val split (`val_fraction`, seed). Examples are decoded in
//! chunks on rayon's pool and written in catalog order, so the artifact's bytes do not depend on the thread
//! count; memory holds one chunk at a time.
//!
//! Bad data never stops a study on its own: a file that cannot be decoded is skipped, logged and listed
//! in `skipped.json` with the files the layout lists but that are absent. Only when more than `max_bad` of
//! the decoded examples (or `max_missing` of the listed ones) are lost does the node fail (exit 2), naming the
//! first files, since then the data is not what the study claims to use.

use super::datautil::shard_put;
use crate::data::error::DataError;
use crate::data::layouts::{Catalog, Missing, SplitName};
use crate::data::shards::{Label, Layout, ShardWriter, Values};
use crate::data::tensors::carve;
use crate::stage::{StageCtx, StageError};
use rayon::prelude::*;
use safetensors::Dtype;
use std::collections::BTreeMap;

/// Decodes one file into an example's values.
pub type DecodeFn<T> = Box<dyn Fn(&std::path::Path) -> Result<Vec<T>, DataError> + Sync>;

/// How each file becomes an example.
pub enum Decoder {
    /// A fixed-size u8 record of `shape` (`[H, W, C]` or `[T, H, W, C]`).
    Fixed {
        /// Per-example shape.
        shape: Vec<usize>,
        /// Decodes one file.
        decode: DecodeFn<u8>,
    },
    /// A variable-length f32 wave (all clips concatenated, with offsets).
    Wave(DecodeFn<f32>),
    /// The file's bytes as they are (encoded images), after a check that they decode.
    Encoded(DecodeFn<u8>),
}

/// Split and limit settings.
pub struct SplitRule {
    /// Part of train carved as val when the layout has none.
    pub val_fraction: f64,
    /// Part of train carved as test when the layout has none.
    pub test_fraction: f64,
    /// Examples per split at most (0 = all), a seeded subset.
    pub limit: usize,
    /// The node's seed.
    pub seed: u64,
}

/// A skipped example.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bad {
    /// Its split.
    pub split: &'static str,
    /// The file.
    pub path: String,
    /// Why it could not be decoded.
    pub reason: String,
}

/// What ingestion wrote and lost.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Split → examples written.
    pub sizes: BTreeMap<String, usize>,
    /// Files skipped as undecodable.
    pub bad: Vec<Bad>,
}

/// A seeded random subset (sorted), never the first rows: files are often sorted by class.
pub fn lim(v: Vec<usize>, limit: usize) -> Vec<usize> {
    if limit == 0 || v.len() <= limit {
        return v;
    }
    let (_, keep) = carve(v.len(), limit as f64 / v.len() as f64, 0x11_4117);
    keep.into_iter().map(|i| v[i]).collect()
}

/// Entry indices of train, val and test by the rule in the module docs: a split the layout declares is taken
/// as it is (even empty); test, then val, are carved from train when the layout does not declare them.
pub fn assign(cat: &Catalog, rule: &SplitRule) -> [(SplitName, Vec<usize>); 3] {
    let of = |s: SplitName| -> Vec<usize> { cat.entries.iter().enumerate().filter(|(_, e)| e.split == s).map(|(i, _)| i).collect() };
    let declared = |s: SplitName| cat.declared.contains(&s) || cat.entries.iter().any(|e| e.split == s);
    let mut train = of(SplitName::Train);
    let mut test = of(SplitName::Test);
    if !declared(SplitName::Test) {
        let (rest, te) = carve(train.len(), rule.test_fraction, rule.seed ^ 0x7e57);
        test = te.iter().map(|&i| train[i]).collect();
        train = rest.iter().map(|&i| train[i]).collect();
    }
    let mut val = of(SplitName::Val);
    if !declared(SplitName::Val) {
        let (tr, va) = carve(train.len(), rule.val_fraction, rule.seed);
        val = va.iter().map(|&i| train[i]).collect();
        train = tr.iter().map(|&i| train[i]).collect();
    }
    let pick = |v: Vec<usize>| lim((0..v.len()).collect(), rule.limit).into_iter().map(|i| v[i]).collect();
    [(SplitName::Train, pick(train)), (SplitName::Val, pick(val)), (SplitName::Test, pick(test))]
}

/// Fails when a split the layout lists has none of its files: that split is not there, and carving a
/// replacement from train would change what the study measures.
pub fn check_declared(cat: &Catalog) -> Result<(), StageError> {
    for s in [SplitName::Train, SplitName::Val, SplitName::Test] {
        let listed: Vec<&Missing> = cat.missing.iter().filter(|m| m.split == s).collect();
        if !listed.is_empty() && !cat.entries.iter().any(|e| e.split == s) {
            return Err(StageError::input(format!(
                "none of the {} files of the {} split is there (first: {}, listed at {}); fix the dataset `path` or remove that split's list",
                listed.len(),
                s.as_str(),
                listed[0].file,
                listed[0].listed
            )));
        }
    }
    Ok(())
}

/// Whether `k` lost of `n` is too many for a share of at most `max`. Of the whole dataset: more than `max · n`.
/// Of a sample (`limit`), whose share only estimates the dataset's: so many would be unlikely were at most
/// `max` of the dataset lost, P(X ≥ k) < 5 % for X ~ Binomial(n, max) (one bad file among a smoke run's 48
/// is no evidence that over 1 % of the dataset is bad; three are). Monotone in `k`: once true, more losses keep
/// it true.
pub fn too_many(k: usize, n: usize, max: f64, sample: bool) -> bool {
    if k == 0 {
        return false;
    }
    if !sample {
        return k as f64 > max * n as f64;
    }
    if max >= 1.0 {
        return false;
    }
    if max <= 0.0 {
        return true;
    }
    // P(X < k) = Σ_{i<k} C(n, i) pⁱ (1 − p)ⁿ⁻ⁱ, term by term in logs (n up to millions).
    let (lp, lq) = (max.ln(), (1.0 - max).ln());
    let mut log_term = n as f64 * lq;
    let mut below = 0.0;
    for i in 0..k.min(n + 1) {
        below += log_term.exp();
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + lp - lq;
    }
    1.0 - below < 0.05
}

/// Fails when too many of `total` were lost (see [`too_many`]; `sample`: `total` is a `limit`ed subset).
pub fn check_loss(what: &str, lost: &[String], total: usize, max: f64, param: &str, sample: bool) -> Result<(), StageError> {
    if !too_many(lost.len(), total, max, sample) {
        return Ok(());
    }
    let first: Vec<&str> = lost.iter().take(5).map(String::as_str).collect();
    let above = if sample {
        format!(
            "with `limit`, a sample: that many would be unlikely, p < 0.05, were at most {param} = {:.1} % of the dataset bad",
            100.0 * max
        )
    } else {
        format!("above {param} = {:.1} %", 100.0 * max)
    };
    Err(StageError::input(format!(
        "{} of {total} examples {what} ({:.1} %, {above}); first: {}. Fix or remove those files, or raise `{param}`",
        lost.len(),
        100.0 * lost.len() as f64 / total.max(1) as f64,
        first.join("; ")
    )))
}

/// Checks the missing files against `max_missing` and logs them.
pub fn check_missing(ctx: &StageCtx<'_>, missing: &[Missing], listed: usize, max_missing: f64) -> Result<(), StageError> {
    if !missing.is_empty() {
        tracing::warn!("{}: {} of {listed} listed examples have no file (listed in skipped.json)", ctx.id, missing.len());
    }
    let lost: Vec<String> = missing.iter().map(|m| format!("{} ({})", m.file, m.listed)).collect();
    check_loss("listed are absent", &lost, listed, max_missing, "max_missing", false)
}

/// Warns of what makes results hollow while the node succeeds: an empty val or test split (a model trained on
/// it has no metric there; a table prints `–`), and classes without a test example (their accuracy is never
/// measured). Multi-label data (AudioSet's rare classes) is left to its mAP. A `limit`ed run is a sample and
/// says nothing of the dataset: no class warning there.
fn warn_thin_splits(id: &str, cat: &Catalog, splits: &[(SplitName, Vec<usize>)], rule: &SplitRule) {
    let sample = rule.limit > 0;
    for (split, idx) in splits {
        if idx.is_empty() && *split != SplitName::Train {
            let s = split.as_str();
            let own = cat.declared.contains(split) || cat.entries.iter().any(|e| e.split == *split);
            // None carved by choice (`val_fraction = 0`: train on the whole train table, as the paper profile does).
            let fraction = if *split == SplitName::Val { rule.val_fraction } else { rule.test_fraction };
            if !own && fraction == 0.0 {
                continue;
            }
            // The layout's own split (a folder, a list, rows) has none, or too few examples to carve one from.
            let fix = if own {
                format!("the layout's {s} split has no examples: add some to it")
            } else {
                format!("too few examples to carve one: add examples, give the layout a {s} split of its own, or raise `{s}_fraction`")
            };
            tracing::warn!("{id}: the {s} split is empty, so a model trained on this data has no {s} metric (a table shows –); {fix}");
        }
    }
    let Some((_, test)) = splits.iter().find(|(s, v)| *s == SplitName::Test && !v.is_empty()) else { return };
    if sample || cat.entries.iter().any(|e| e.labels.len() != 1) {
        return;
    }
    let mut seen = vec![false; cat.classes.len()];
    test.iter().for_each(|&i| seen[cat.entries[i].labels[0]] = true);
    let absent: Vec<&str> = cat.classes.iter().zip(&seen).filter(|(_, s)| !**s).map(|(c, _)| c.as_str()).collect();
    if !absent.is_empty() {
        let more = if absent.len() > 5 { format!(" and {} more", absent.len() - 5) } else { String::new() };
        tracing::warn!(
            "{id}: {} of {} classes {} no test example ({}{more}): their accuracy is not measured",
            absent.len(),
            cat.classes.len(),
            if absent.len() == 1 { "has" } else { "have" },
            absent[..absent.len().min(5)].join(", ")
        );
    }
}

/// Decodes and writes the three splits of `cat` as shards of `budget` bytes; returns split sizes and the
/// skipped files.
pub fn ingest(
    ctx: &mut StageCtx<'_>,
    cat: &Catalog,
    decoder: &Decoder,
    multilabel: bool,
    rule: &SplitRule,
    budget: u64,
    max_bad: f64,
) -> Result<Outcome, StageError> {
    let k = cat.classes.len();
    let mut out = Outcome::default();
    let splits = assign(cat, rule);
    warn_thin_splits(ctx.id, cat, &splits, rule);
    let total: usize = splits.iter().map(|(_, v)| v.len()).sum();
    let mut done = 0usize;
    let chunk = (rayon::current_num_threads() * 8).max(16);
    let id = ctx.id.to_string();
    let fail = |m: String| StageError::failed(format!("node `{id}`: {m}"));
    // Examples written per class, to find a class that decoding emptied.
    let mut written = vec![0usize; k];
    for (split, idx) in splits {
        let layout = match decoder {
            Decoder::Fixed { shape, .. } => Layout::Fixed("x".into(), Dtype::U8, shape.clone()),
            Decoder::Wave(_) => Layout::Var("wave".into(), Dtype::F32),
            Decoder::Encoded(_) => Layout::Var("bytes".into(), Dtype::U8),
        };
        let mut w = ShardWriter::new(split.as_str(), layout, multilabel.then_some(k), budget).map_err(fail)?;
        let mut row = vec![0u8; k];
        for part in idx.chunks(chunk) {
            (ctx.progress)(crate::stage::Progress {
                done: done as u64,
                total: total as u64,
                message: format!("decoding {}", split.as_str()),
                note: false,
            });
            let recs: Vec<Result<Rec, DataError>> = part
                .par_iter()
                .map(|&i| {
                    let path = &cat.entries[i].path;
                    // A decoder that panics on a malformed file loses that file, not the study.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match decoder {
                        Decoder::Fixed { decode, .. } | Decoder::Encoded(decode) => decode(path).map(Rec::U8),
                        Decoder::Wave(decode) => decode(path).map(Rec::F32),
                    }))
                    .unwrap_or_else(|p| {
                        let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                        Err(DataError::new(path, format!("the decoder failed on this file ({})", why.unwrap_or_default())))
                    })
                })
                .collect();
            for (&i, r) in part.iter().zip(recs) {
                let e = &cat.entries[i];
                let x = match &r {
                    Ok(Rec::U8(x)) => Values::U8(x),
                    Ok(Rec::F32(x)) => Values::F32(x),
                    Err(err) => {
                        skip(&id, &mut out.bad, split, err.clone());
                        continue;
                    }
                };
                let y = if multilabel {
                    row.iter_mut().for_each(|b| *b = 0);
                    e.labels.iter().for_each(|&l| row[l] = 1);
                    Label::Multi(&row)
                } else {
                    Label::Single(e.labels[0] as i64)
                };
                if let Err(m) = w.push(x, y, &mut shard_put(&mut ctx.out)) {
                    // A record of the wrong size is the file's fault; anything else is ours.
                    if m.starts_with("example of") {
                        skip(&id, &mut out.bad, split, DataError::new(&e.path, m));
                        continue;
                    }
                    return Err(fail(m));
                }
                e.labels.iter().for_each(|&l| written[l] += 1);
            }
            done += part.len();
            // Past `max_bad` the node fails whatever the rest holds: say so now, not after decoding all of it.
            if too_many(out.bad.len(), total, max_bad, rule.limit > 0) {
                check_loss("could not be decoded", &lost(&out.bad), total, max_bad, "max_bad", rule.limit > 0)?;
            }
        }
        if split == SplitName::Train && w.is_empty() {
            return Err(StageError::input(format!("node `{}`: the train split is empty", ctx.id)));
        }
        let n = w.len();
        w.finish(&mut shard_put(&mut ctx.out)).map_err(fail)?;
        out.sizes.insert(split.as_str().to_string(), n);
    }
    emptied_class(cat, &written, &out.bad, rule)?;
    // The end, so that a progress bar or a script reading the events sees it complete.
    (ctx.progress)(crate::stage::Progress { done: total as u64, total: total as u64, message: "decoded".into(), note: false });
    Ok(out)
}

/// A single-label class with examples in the layout none of which could be decoded: an output the model would
/// never see, which the layout alone (an empty class folder) is refused for. A `limit`ed run is a sample: not
/// checked there.
fn emptied_class(cat: &Catalog, written: &[usize], bad: &[Bad], rule: &SplitRule) -> Result<(), StageError> {
    if rule.limit > 0 || cat.entries.iter().any(|e| e.labels.len() != 1) {
        return Ok(());
    }
    let mut listed = vec![0usize; written.len()];
    cat.entries.iter().for_each(|e| listed[e.labels[0]] += 1);
    let Some(c) = (0..written.len()).find(|&c| listed[c] > 0 && written[c] == 0) else { return Ok(()) };
    let files: std::collections::HashSet<String> =
        cat.entries.iter().filter(|e| e.labels[0] == c).map(|e| e.path.display().to_string()).collect();
    let why = bad.iter().find(|b| files.contains(&b.path)).map(|b| format!(" (first: {} ({}))", b.path, b.reason)).unwrap_or_default();
    Err(StageError::input(format!(
        "class `{}`: none of its {} files could be decoded{why}, which would leave the model an output it never sees; fix \
         those files, or remove the class from the data",
        cat.classes[c], listed[c]
    )))
}

enum Rec {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// The skipped files as `path (reason)`, for [`check_loss`].
pub fn lost(bad: &[Bad]) -> Vec<String> {
    bad.iter().map(|b| format!("{} ({})", b.path, b.reason)).collect()
}

fn skip(id: &str, bad: &mut Vec<Bad>, split: SplitName, e: DataError) {
    tracing::warn!("{id}: skipped {}: {}", e.path.display(), e.message);
    let reason = crate::data::images::one_line(&e.message);
    bad.push(Bad { split: split.as_str(), path: e.path.display().to_string(), reason });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::layouts::Entry;
    use std::path::PathBuf;

    fn cat(splits: &[SplitName]) -> Catalog {
        let entries = splits
            .iter()
            .enumerate()
            .map(|(i, &split)| Entry { path: PathBuf::from(format!("{i}")), labels: vec![0], split, listed: String::new() })
            .collect();
        Catalog { classes: vec!["a".into()], entries, ..Default::default() }
    }

    #[test]
    fn a_declared_split_is_not_carved_and_must_have_files() {
        use SplitName::*;
        let rule = SplitRule { val_fraction: 0.25, test_fraction: 0.5, limit: 0, seed: 3 };
        let mut c = cat(&[Train; 8]);
        c.declared = vec![Train, Test];
        let [(_, tr), (_, va), (_, te)] = assign(&c, &rule);
        assert_eq!((tr.len(), va.len(), te.len()), (6, 2, 0), "test declared (empty), val carved");
        c.missing.push(Missing { listed: "t.csv:2".into(), file: "x.mp4".into(), split: Test });
        let e = check_declared(&c).unwrap_err().to_string();
        assert!(e.contains("none of the 1 files of the test split") && e.contains("t.csv:2"), "{e}");
    }

    #[test]
    fn given_splits_are_kept_and_missing_ones_carved() {
        use SplitName::*;
        let rule = SplitRule { val_fraction: 0.25, test_fraction: 0.5, limit: 0, seed: 3 };
        let [(_, tr), (_, va), (_, te)] = assign(&cat(&[Train, Train, Train, Train, Test, Val]), &rule);
        assert_eq!((tr.len(), va, te), (4, vec![5], vec![4]));
        let [(_, tr), (_, va), (_, te)] = assign(&cat(&[Train; 8]), &rule);
        assert_eq!((tr.len(), va.len(), te.len()), (3, 1, 4));
        let mut all: Vec<usize> = tr.into_iter().chain(va).chain(te).collect();
        all.sort();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn loss_threshold() {
        let lost = vec!["a.jpg".to_string()];
        assert!(check_loss("could not be decoded", &lost, 100, 0.01, "max_bad", false).is_ok());
        let e = check_loss("could not be decoded", &lost, 50, 0.01, "max_bad", false).unwrap_err();
        assert!(e.to_string().contains("1 of 50 examples could not be decoded") && e.to_string().contains("a.jpg"), "{e}");
        // A `limit`ed sample: one bad file among 50 is no evidence of over 1 %; three are (P(X ≥ 3) = 1.4 %).
        assert!(check_loss("could not be decoded", &lost, 50, 0.01, "max_bad", true).is_ok());
        assert!(!too_many(2, 50, 0.01, true) && too_many(3, 50, 0.01, true));
        assert!(too_many(1, 50, 0.0, true) && !too_many(50, 50, 1.0, true) && !too_many(0, 50, 0.0, true));
        // Large samples: close to the whole-dataset rule (1.3 % of 100,000 is far above 1 %).
        assert!(too_many(1300, 100_000, 0.01, true) && !too_many(1000, 100_000, 0.01, true));
    }
}
