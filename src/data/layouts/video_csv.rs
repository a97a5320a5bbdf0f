//! Video layouts: Kinetics (400/600/700) and Moments in Time, as their CSV files list them.
//!
//! - **Kinetics**: `train.csv`, `validate.csv` (or `val.csv`), optional `test.csv`, in the dataset folder or
//!   its `annotations/` (ActivityNet's `kinetics-400_train.csv` names work too), with the header
//!   `label,youtube_id,time_start,time_end,split[,is_cc]`. Clips are named
//!   `{youtube_id}_{time_start:06}_{time_end:06}.mp4` anywhere below the folder (flat, per split or per
//!   label). Rows whose clip is absent are counted as missing, not errors. Which CSV is the test split is
//!   [`TestTable`]: by default the validation CSV (the paper, like Scenic, evaluates on Kinetics' validation
//!   set) and `test.csv` is not read, labelled or not; val is carved from train.
//! - **Moments in Time**: `trainingSet.csv` / `validationSet.csv` (headerless:
//!   `label/name.mp4,label,positive,negative`), classes from `moments_categories.txt` (`name,index`); clips at
//!   `training/<label>/<name>.mp4` and `validation/<label>/<name>.mp4`. The validation set is the test split.

use super::{files_by_stem, read_text, Catalog, Entry, Missing, SplitName, VIDEO_EXTS};
use crate::data::error::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

crate::stage::choice_enum! {
    /// Which Kinetics CSV is the test split (the `dataset` node's `test_table`).
    pub enum TestTable {
        /// `validate.csv` (or `val.csv`), as the paper reports Kinetics; `test.csv` is not read. Without a
        /// validation CSV, a labelled `test.csv` is the test split.
        Validate = "validate",
        /// A labelled `test.csv` (Kinetics-400's CVDF copy has one); `validate.csv` is then the val split.
        Test = "test",
    }
}

/// The CSV of one Kinetics split, looked for in `root` and `root/annotations`.
pub(crate) fn kinetics_csv(root: &Path, split: SplitName) -> Option<PathBuf> {
    let suffixes: &[&str] = match split {
        SplitName::Train => &["train.csv"],
        SplitName::Val => &["validate.csv", "val.csv"],
        SplitName::Test => &["test.csv"],
    };
    let mut found: Vec<PathBuf> = [root.to_path_buf(), root.join("annotations")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy().to_ascii_lowercase();
            p.is_file() && suffixes.iter().any(|s| n == *s || n.ends_with(&format!("_{s}")) || n.ends_with(&format!("-{s}")))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// One parsed Kinetics row.
struct Row {
    label: String,
    stem: String,
    listed: String,
}

fn kinetics_rows(csv: &Path) -> Result<Vec<Row>, DataError> {
    let text = read_text(csv)?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(DataError::new(csv, "is empty: expected the header `label,youtube_id,time_start,time_end,split`"));
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(li), Some(yi), Some(si), Some(ei)) = (col("label"), col("youtube_id"), col("time_start"), col("time_end")) else {
        return Err(DataError::new(
            csv,
            format!("line 1: header `{header}` lacks label, youtube_id, time_start or time_end (Kinetics' CSV layout)"),
        ));
    };
    let mut rows = vec![];
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 2;
        let rec = rec.map_err(|e| DataError::new(csv, format!("line {line}: {e}")))?;
        let field = |i: usize| rec.get(i).map(str::trim).unwrap_or("");
        let secs = |i: usize| field(i).parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| v.round() as u64);
        let (Some(start), Some(end)) = (secs(si), secs(ei)) else {
            return Err(DataError::new(
                csv,
                format!("line {line}: time_start/time_end must be seconds, got `{}`, `{}`", field(si), field(ei)),
            ));
        };
        if field(yi).is_empty() || field(li).is_empty() {
            return Err(DataError::new(csv, format!("line {line}: empty label or youtube_id")));
        }
        rows.push(Row {
            label: field(li).to_string(),
            stem: format!("{}_{start:06}_{end:06}", field(yi)),
            listed: format!("{}:{line}", csv.display()),
        });
    }
    Ok(rows)
}

/// Whether a Kinetics CSV's header has a `label` column (Kinetics-600/700's `test.csv` has none).
fn labelled(csv: &Path) -> bool {
    read_text(csv).ok().and_then(|x| x.lines().next().map(|h| h.split(',').any(|c| c.trim().eq_ignore_ascii_case("label")))).unwrap_or(true)
}

/// The file name of a CSV, for the artifact's note.
fn name(csv: &Path) -> String {
    csv.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// Kinetics: the CSVs and the clips they name (see the module docs); `table` picks the test split's CSV.
pub fn kinetics(root: &Path, classes: &[String], table: TestTable) -> Result<Catalog, DataError> {
    let Some(train) = kinetics_csv(root, SplitName::Train) else {
        return Err(DataError::new(root, "no train.csv (here or in annotations/): expected Kinetics' train.csv and validate.csv"));
    };
    let mut splits = vec![(SplitName::Train, kinetics_rows(&train)?)];
    let val = kinetics_csv(root, SplitName::Val);
    let test = kinetics_csv(root, SplitName::Test);
    // (the CSV that is the test split, the one that is val if any, what is left out)
    let (test_csv, val_csv, unused) = match (table, val, test) {
        (TestTable::Validate, Some(v), t) => (Some(v), None, t),
        (TestTable::Validate, None, Some(t)) if labelled(&t) => (Some(t), None, None),
        (TestTable::Validate, None, t) => (None, None, t),
        (TestTable::Test, v, Some(t)) if labelled(&t) => (Some(t), v, None),
        (TestTable::Test, _, t) => {
            let why = match t {
                Some(t) => format!("{} has no `label` column (Kinetics-600/700's test table is unlabelled)", t.display()),
                None => "there is no test.csv (here or in annotations/)".into(),
            };
            return Err(DataError::new(
                root,
                format!("test_table = \"test\" takes a labelled test.csv as the test split, but {why}; use test_table = \"validate\""),
            ));
        }
    };
    if let Some(v) = &val_csv {
        splits.push((SplitName::Val, kinetics_rows(v)?));
    }
    if let Some(t) = &test_csv {
        splits.push((SplitName::Test, kinetics_rows(t)?));
    }
    let classes: Vec<String> = if classes.is_empty() {
        let mut c: Vec<String> = splits[0].1.iter().map(|r| r.label.clone()).collect();
        c.sort();
        c.dedup();
        c
    } else {
        classes.to_vec()
    };
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let files = files_by_stem(root, VIDEO_EXTS)?;
    let (mut entries, mut missing) = (vec![], vec![]);
    for (split, rows) in splits {
        for r in rows {
            let Some(&ci) = index.get(r.label.as_str()) else {
                return Err(DataError::new(Path::new(&r.listed), format!("label `{}` is not a class of the train CSV", r.label)));
            };
            match files.get(&r.stem) {
                Some(p) => entries.push(Entry { path: p.clone(), labels: vec![ci], split, listed: r.listed }),
                None => missing.push(Missing { listed: r.listed, file: format!("{}.mp4", r.stem), split }),
            }
        }
    }
    let mut note = format!("Kinetics CSVs: {} is the train split", name(&train));
    match &test_csv {
        Some(t) => note.push_str(&format!(", {} the test split", name(t))),
        None => note.push_str(", no test CSV (test carved from train)"),
    }
    match &val_csv {
        Some(v) => note.push_str(&format!(", {} the val split", name(v))),
        None => note.push_str(" (val carved from train)"),
    }
    if let Some(u) = &unused {
        let why = if labelled(u) { format!("test_table = \"{table}\"") } else { "no labels".into() };
        note.push_str(&format!("; {} not read ({why})", name(u)));
    }
    let mut declared = vec![SplitName::Train];
    if val_csv.is_some() {
        declared.push(SplitName::Val);
    }
    if test_csv.is_some() {
        declared.push(SplitName::Test);
    }
    Ok(Catalog { classes, entries, missing, note, declared, duplicates: vec![], segments: Default::default() })
}

/// Moments in Time (see the module docs).
pub fn moments(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    let train = root.join("trainingSet.csv");
    if !train.is_file() {
        return Err(DataError::new(
            root,
            "no trainingSet.csv: expected Moments in Time's trainingSet.csv, validationSet.csv and training/, validation/",
        ));
    }
    let mut sets = vec![(SplitName::Train, train, "training")];
    let val = root.join("validationSet.csv");
    if val.is_file() {
        sets.push((SplitName::Test, val, "validation"));
    }
    let mut rows = vec![];
    for (split, csv, dir) in &sets {
        let text = read_text(csv)?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut f = line.split(',').map(str::trim);
            let (Some(file), Some(label)) = (f.next(), f.next()) else {
                return Err(DataError::new(csv, format!("line {}: expected `label/name.mp4,label,positive,negative`", i + 1)));
            };
            rows.push((*split, root.join(dir).join(file), label.to_string(), format!("{}:{}", csv.display(), i + 1), file.to_string()));
        }
    }
    let classes: Vec<String> = if !classes.is_empty() {
        classes.to_vec()
    } else if let Ok(text) = read_text(&root.join("moments_categories.txt")) {
        let cat = root.join("moments_categories.txt");
        let mut v: Vec<(usize, String)> = vec![];
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let (name, idx) =
                line.rsplit_once(',').ok_or_else(|| DataError::new(&cat, format!("line {}: expected `name,index`", i + 1)))?;
            let idx = idx.trim().parse().map_err(|_| DataError::new(&cat, format!("line {}: index `{idx}` is not a number", i + 1)))?;
            v.push((idx, name.trim().to_string()));
        }
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    } else {
        let mut c: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let (mut entries, mut missing) = (vec![], vec![]);
    for (split, path, label, listed, file) in rows {
        let Some(&ci) = index.get(label.as_str()) else {
            return Err(DataError::new(Path::new(&listed), format!("label `{label}` is not in moments_categories.txt")));
        };
        if path.is_file() {
            entries.push(Entry { path, labels: vec![ci], split, listed });
        } else {
            missing.push(Missing { listed, file, split });
        }
    }
    let declared = sets.iter().map(|(s, _, _)| *s).collect();
    Ok(Catalog {
        classes,
        entries,
        missing,
        note: "Moments in Time CSVs (validationSet is the test split; val carved from train)".into(),
        declared,
        duplicates: vec![],
        segments: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::touch;
    use super::*;

    #[test]
    fn kinetics_rows_clips_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(
            r.join("train.csv"),
            "label,youtube_id,time_start,time_end,split,is_cc\nabseiling,abc-_12345A,14,24,train,0\nyawning,zzz,0,10,train,0\nabseiling,gone,3,13,train,0\n",
        )
        .unwrap();
        std::fs::write(r.join("validate.csv"), "label,youtube_id,time_start,time_end,split\nyawning,vvv,1,11,val\n").unwrap();
        touch(&r.join("train/abseiling/abc-_12345A_000014_000024.mp4"));
        touch(&r.join("train/yawning/zzz_000000_000010.mp4"));
        touch(&r.join("val/vvv_000001_000011.mp4"));
        let c = kinetics(r, &[], TestTable::Validate).unwrap();
        assert_eq!(c.classes, ["abseiling", "yawning"]);
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.entries[2].split, SplitName::Test);
        assert_eq!(c.missing.len(), 1);
        assert_eq!(c.missing[0].file, "gone_000003_000013.mp4");
        assert!(c.missing[0].listed.ends_with("train.csv:4"));
        std::fs::write(r.join("validate.csv"), "label,youtube_id,time_start,time_end\nflying,vvv,1,11\n").unwrap();
        let e = kinetics(r, &[], TestTable::Validate).unwrap_err();
        assert!(e.path.to_string_lossy().ends_with("validate.csv:2") && e.message.contains("flying"), "{e}");
        std::fs::write(r.join("train.csv"), "youtube_id,start\n").unwrap();
        assert!(kinetics(r, &[], TestTable::Validate).unwrap_err().message.contains("lacks label"));
    }

    #[test]
    fn the_validation_csv_is_the_test_split_unless_test_table_says_test() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let head = "label,youtube_id,time_start,time_end,split\n";
        std::fs::write(r.join("train.csv"), format!("{head}abseiling,ttt,0,10,train\n")).unwrap();
        std::fs::write(r.join("validate.csv"), format!("{head}abseiling,vvv,0,10,val\n")).unwrap();
        // The CVDF copy of Kinetics-400 has a labelled test.csv.
        std::fs::write(r.join("test.csv"), format!("{head}abseiling,eee,0,10,test\n")).unwrap();
        for id in ["ttt", "vvv", "eee"] {
            touch(&r.join(format!("clips/{id}_000000_000010.mp4")));
        }
        let split_of = |c: &Catalog| -> Vec<(String, SplitName)> {
            c.entries.iter().map(|e| (e.path.file_name().unwrap().to_string_lossy()[..3].to_string(), e.split)).collect()
        };
        let c = kinetics(r, &[], TestTable::Validate).unwrap();
        assert_eq!(split_of(&c), [("ttt".into(), SplitName::Train), ("vvv".into(), SplitName::Test)]);
        assert_eq!(c.declared, [SplitName::Train, SplitName::Test]);
        assert!(c.note.contains("validate.csv the test split") && c.note.contains("test.csv not read"), "{}", c.note);
        let c = kinetics(r, &[], TestTable::Test).unwrap();
        assert_eq!(split_of(&c), [("ttt".into(), SplitName::Train), ("vvv".into(), SplitName::Val), ("eee".into(), SplitName::Test)]);
        assert!(c.note.contains("test.csv the test split, validate.csv the val split"), "{}", c.note);
        // Kinetics-600/700's unlabelled test.csv cannot be the test split.
        std::fs::write(r.join("test.csv"), "youtube_id,time_start,time_end,split\neee,0,10,test\n").unwrap();
        let e = kinetics(r, &[], TestTable::Test).unwrap_err();
        assert!(e.message.contains("no `label` column") && e.message.contains("test_table = \"validate\""), "{e}");
        let c = kinetics(r, &[], TestTable::Validate).unwrap();
        assert!(c.note.contains("test.csv not read (no labels)"), "{}", c.note);
        // No validation CSV: a labelled test.csv is the test split.
        std::fs::remove_file(r.join("validate.csv")).unwrap();
        std::fs::write(r.join("test.csv"), format!("{head}abseiling,eee,0,10,test\n")).unwrap();
        let c = kinetics(r, &[], TestTable::Validate).unwrap();
        assert_eq!(split_of(&c)[1], ("eee".into(), SplitName::Test));
    }

    #[test]
    fn moments_categories_and_paths() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(r.join("moments_categories.txt"), "running,1\nasking,0\n").unwrap();
        std::fs::write(r.join("trainingSet.csv"), "running/a.mp4,running,3,0\nasking/b.mp4,asking,3,1\n").unwrap();
        std::fs::write(r.join("validationSet.csv"), "asking/c.mp4,asking,3,0\n").unwrap();
        touch(&r.join("training/running/a.mp4"));
        touch(&r.join("validation/asking/c.mp4"));
        let c = moments(r, &[]).unwrap();
        assert_eq!(c.classes, ["asking", "running"]);
        assert_eq!(c.entries.iter().map(|e| (e.labels[0], e.split)).collect::<Vec<_>>(), [(1, SplitName::Train), (0, SplitName::Test)]);
        assert_eq!(c.missing[0].file, "asking/b.mp4");
    }
}
