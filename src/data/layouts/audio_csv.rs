//! Audio layouts: AudioSet's segment CSVs and VGGSound's CSV. The clips are audio files or videos (their sound
//! track is decoded), found anywhere below the dataset folder by name.
//!
//! - **AudioSet**: `balanced_train_segments.csv` (train) and `eval_segments.csv` (test), three `#` comment lines
//!   then rows `YTID, start_seconds, end_seconds, "/m/a,/m/b"` (comma + space, quoted multi-labels); classes
//!   from `class_labels_indices.csv` (`index,mid,display_name`, 527 rows). A clip is found as `{YTID}.*`,
//!   `Y{YTID}.*` (AST's naming), `{YTID}_{start}[_{end}].*` (seconds as integers, 6-digit or not, or with 3
//!   decimals) or `Y{YTID}_{start:.3}_{end:.3}.*` (PANNs' naming), with the row's own end time. A clip found
//!   as `.webm`/`.weba`/`.opus`/`.mkv` is undecodable (convert it to FLAC or WAV), not absent; an absent one is
//!   listed with every name tried. A `{YTID}.*` / `Y{YTID}.*` file may hold the whole video: when its sound is
//!   over 1 s longer than the row's segment, the segment is cut from it ([`Catalog::segments`]).
//! - **VGGSound**: `vggsound.csv`, headerless `YouTube ID,start seconds,label,train|test`; clips
//!   `{ytid}_{start:06}.mp4` (or `.wav`, `.flac`, …; found by the same names as AudioSet's, end = start + 10;
//!   a whole video `{ytid}.*` is cut to `[start, start + 10)`). Classes are the sorted labels.
//!
//! - **ESC-50**: `meta/esc50.csv` (`filename,fold,target,category,esc10,src_file,take`) and `audio/*.wav`;
//!   classes are the 50 categories in `target` order; one fold is the test split, the other four train.
//!
//! Val is carved from train in all three (none ships one).

use super::{by_stem, has_ext, list_files, read_text, Catalog, Entry, Missing, Segment, SplitName, AUDIO_EXTS, AUDIO_UNDECODABLE_EXTS};
use crate::data::error::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The clip files below a dataset folder, by stem: those the audio decoder reads, and those it cannot (found
/// so that a row naming one is reported as undecodable, with the conversion to do, not as absent).
struct ClipFiles {
    decodable: HashMap<String, PathBuf>,
    undecodable: HashMap<String, PathBuf>,
}

/// Lists the clip files below `root` (two decodable files with one stem are an error, see [`by_stem`]).
fn clip_files(root: &Path) -> Result<ClipFiles, DataError> {
    let all = list_files(root, &[AUDIO_EXTS, AUDIO_UNDECODABLE_EXTS].concat())?;
    let (ok, mut other): (Vec<PathBuf>, Vec<PathBuf>) = all.into_iter().partition(|p| has_ext(p, AUDIO_EXTS));
    other.sort();
    let mut undecodable = HashMap::new();
    for p in other {
        undecodable.entry(p.file_stem().unwrap_or_default().to_string_lossy().to_string()).or_insert(p);
    }
    Ok(ClipFiles { decodable: by_stem(ok)?, undecodable })
}

/// The file stems the clip of `ytid` for `[start, end)` seconds may have, in the order they are tried, each
/// with whether it names the video alone (such a file may hold the whole video, not the segment).
fn candidates(ytid: &str, start: f64, end: f64) -> Vec<(String, bool)> {
    let (s, e) = (start.round() as u64, end.round() as u64);
    let mut out: Vec<(String, bool)> = vec![(ytid.to_string(), true), (format!("Y{ytid}"), true)];
    for c in [
        format!("{ytid}_{s:06}"),
        format!("{ytid}_{s}"),
        format!("{ytid}_{start:.3}"),
        format!("{ytid}_{s:06}_{e:06}"),
        format!("{ytid}_{s}_{e}"),
        format!("{ytid}_{start:.3}_{end:.3}"),
        format!("Y{ytid}_{start:.3}_{end:.3}"),
    ] {
        if !out.iter().any(|(o, _)| *o == c) {
            out.push((c, false));
        }
    }
    out
}

/// Finds the clip of `ytid` for `[start, end)` among `files`: a decodable file first, then one the decoder will
/// report as undecodable. Returns the path and whether its name is the video's alone, or the stems tried.
fn find_clip(files: &ClipFiles, ytid: &str, start: f64, end: f64) -> Found {
    let cands = candidates(ytid, start, end);
    for map in [&files.decodable, &files.undecodable] {
        let mut hits: Vec<(&PathBuf, bool)> = cands.iter().filter_map(|(c, whole)| map.get(c).map(|p| (p, *whole))).collect();
        hits.dedup_by(|a, b| a.0 == b.0);
        match hits.as_slice() {
            [] => continue,
            [(p, whole)] => return Found::Clip((*p).clone(), *whole),
            several => return Found::Several(several.iter().map(|(p, _)| (*p).clone()).collect()),
        }
    }
    Found::Absent(cands.into_iter().map(|(c, _)| c).collect())
}

/// What [`find_clip`] found for a row.
enum Found {
    /// The row's file, and whether it is a whole video's audio (to be cut to the row's segment).
    Clip(PathBuf, bool),
    /// No file: the stems tried.
    Absent(Vec<String>),
    /// Several files, by different naming schemes (`Y…` and a segment-named one): the row cannot choose.
    Several(Vec<PathBuf>),
}

/// The error of a row that several files match.
fn several(csv: &Path, line: usize, paths: &[PathBuf]) -> DataError {
    let names: Vec<String> = paths.iter().map(|p| crate::spec::source::display_path(p)).collect();
    DataError::new(
        csv,
        format!(
            "line {line}: {} files match this row ({}): the CSV cannot tell them apart; remove all but one",
            names.len(),
            names.join(", ")
        ),
    )
}

/// What `skipped.json` and `show` say of an absent clip: `wanted`, then every stem tried.
fn absent(wanted: String, tried: &[String]) -> String {
    format!("{wanted} (looked for {} with .{})", tried.join(", "), AUDIO_EXTS.join("/."))
}

/// AudioSet (see the module docs).
pub fn audioset(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    let idx_csv = root.join("class_labels_indices.csv");
    let mut mids: HashMap<String, usize> = HashMap::new();
    let (mut names, mut mid_list): (Vec<String>, Vec<String>) = (vec![], vec![]);
    if idx_csv.is_file() {
        let mut rdr =
            csv::ReaderBuilder::new().has_headers(true).from_path(&idx_csv).map_err(|e| DataError::new(&idx_csv, e.to_string()))?;
        // Its first line is the header: a file without one would lose its first class to it.
        let first = rdr.headers().map_err(|e| DataError::new(&idx_csv, format!("line 1: {e}")))?.get(0).unwrap_or("").trim().to_string();
        if first.parse::<usize>().is_ok() {
            return Err(DataError::new(
                &idx_csv,
                "line 1 is a class row, not the header `index,mid,display_name`: add that header as the first line",
            ));
        }
        for (k, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| DataError::new(&idx_csv, format!("line {}: {e}", k + 2)))?;
            let (Some(i), Some(mid), Some(name)) = (rec.get(0).and_then(|s| s.trim().parse::<usize>().ok()), rec.get(1), rec.get(2)) else {
                return Err(DataError::new(&idx_csv, format!("line {}: expected `index,mid,display_name`", k + 2)));
            };
            if i != names.len() {
                return Err(DataError::new(&idx_csv, format!("line {}: index {i}, expected {} (rows in index order)", k + 2, names.len())));
            }
            mids.insert(mid.trim().to_string(), i);
            mid_list.push(mid.trim().to_string());
            names.push(name.trim().to_string());
        }
    } else if classes.is_empty() {
        return Err(DataError::new(
            root,
            "no class_labels_indices.csv (index,mid,display_name): AudioSet's class list is needed to number the labels",
        ));
    } else {
        // Classes given as MIDs.
        for (i, c) in classes.iter().enumerate() {
            mids.insert(c.clone(), i);
        }
        names = classes.to_vec();
    }
    let files = clip_files(root)?;
    let (mut entries, mut missing, mut segments) = (vec![], vec![], HashMap::new());
    let mut found_any = false;
    for (file, split) in [("balanced_train_segments.csv", SplitName::Train), ("eval_segments.csv", SplitName::Test)] {
        let csv = root.join(file);
        if !csv.is_file() {
            if split == SplitName::Train {
                return Err(DataError::new(
                    root,
                    "no balanced_train_segments.csv: expected AudioSet's segment CSVs (and eval_segments.csv)",
                ));
            }
            continue;
        }
        found_any = true;
        let text = read_text(&csv)?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // A re-exported copy's plain header row (`YTID,start_seconds,end_seconds,positive_labels`, no `#`).
            if line.split(',').next().is_some_and(|f| f.trim().eq_ignore_ascii_case("ytid")) {
                continue;
            }
            let bad = || DataError::new(&csv, format!("line {}: expected `YTID, start_seconds, end_seconds, \"/m/…,/m/…\"`", i + 1));
            let mut parts = line.splitn(4, ',');
            let (Some(ytid), Some(start), Some(end), Some(labels)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            let start: f64 = start.trim().parse().map_err(|_| bad())?;
            let end: f64 = end.trim().parse().map_err(|_| bad())?;
            let mut idx = vec![];
            let field = labels.trim().trim_matches('"');
            for mid in field.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let Some(&k) = mids.get(mid) else {
                    // A display name where a MID belongs (a CSV written by hand or by another tool).
                    let named = |n: &str| names.iter().position(|x| x == n).filter(|&k| k < mid_list.len());
                    let msg = match named(mid).map(|k| (mid, k)).or_else(|| named(field).map(|k| (field, k))) {
                        Some((n, k)) => format!(
                            "label `{n}` is a display name: expected a MID, such as {}, the MID of `{n}` (index {k} in \
                             class_labels_indices.csv)",
                            mid_list[k]
                        ),
                        None => format!("label `{mid}` is not in class_labels_indices.csv"),
                    };
                    return Err(DataError::new(&csv, format!("line {}: {msg}", i + 1)));
                };
                idx.push(k);
            }
            if idx.is_empty() {
                return Err(DataError::new(&csv, format!("line {}: no labels", i + 1)));
            }
            let ytid = ytid.trim();
            let listed = format!("{}:{}", csv.display(), i + 1);
            match find_clip(&files, ytid, start, end) {
                Found::Several(paths) => return Err(several(&csv, i + 1, &paths)),
                Found::Clip(path, whole) => {
                    if whole {
                        segments.insert(path.clone(), Segment { start, end });
                    }
                    entries.push(Entry { path, labels: idx, split, listed })
                }
                Found::Absent(tried) => missing.push(Missing { listed, file: absent(format!("{ytid}.*"), &tried), split }),
            }
        }
    }
    debug_assert!(found_any);
    let declared = if root.join("eval_segments.csv").is_file() { vec![SplitName::Train, SplitName::Test] } else { vec![SplitName::Train] };
    Ok(Catalog {
        classes: names,
        entries,
        missing,
        note: "AudioSet balanced_train (val carved from it) and eval segments".into(),
        declared,
        duplicates: vec![],
        segments,
    })
}

/// VGGSound (see the module docs).
pub fn vggsound(root: &Path, classes: &[String]) -> Result<Catalog, DataError> {
    let csv = if root.is_file() { root.to_path_buf() } else { root.join("vggsound.csv") };
    let base = csv.parent().unwrap_or(root).to_path_buf();
    if !csv.is_file() {
        return Err(DataError::new(root, "no vggsound.csv: expected VGGSound's `YouTube ID,start seconds,label,train|test` CSV"));
    }
    let text = read_text(&csv)?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut rows = vec![];
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 1;
        let rec = rec.map_err(|e| DataError::new(&csv, format!("line {line}: {e}")))?;
        let f = |i: usize| rec.get(i).map(str::trim).unwrap_or("");
        if rec.len() < 4 {
            return Err(DataError::new(
                &csv,
                format!("line {line}: {} fields, expected 4: `YouTube ID,start seconds,label,train|test`", rec.len()),
            ));
        }
        let split = match f(3) {
            "train" => SplitName::Train,
            "test" => SplitName::Test,
            other => {
                return Err(DataError::new(
                    &csv,
                    format!("line {line}: split `{other}` is not train or test (`YouTube ID,start seconds,label,train|test`)"),
                ));
            }
        };
        let start: f64 =
            f(1).parse().map_err(|_| DataError::new(&csv, format!("line {line}: start `{}` is not a number of seconds", f(1))))?;
        rows.push((f(0).to_string(), start, f(2).to_string(), split, line));
    }
    let classes: Vec<String> = if classes.is_empty() {
        let mut c: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
        c.sort();
        c.dedup();
        c
    } else {
        classes.to_vec()
    };
    let has_test = rows.iter().any(|r| r.3 == SplitName::Test);
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let files = clip_files(&base)?;
    let (mut entries, mut missing, mut segments) = (vec![], vec![], HashMap::new());
    for (ytid, start, label, split, line) in rows {
        let Some(&ci) = index.get(label.as_str()) else {
            return Err(DataError::new(&csv, format!("line {line}: label `{label}` is not in the class list")));
        };
        let listed = format!("{}:{line}", csv.display());
        // VGGSound's clips are the 10 s from the row's start.
        match find_clip(&files, &ytid, start, start + 10.0) {
            Found::Several(paths) => return Err(several(&csv, line, &paths)),
            Found::Clip(path, whole) => {
                if whole {
                    segments.insert(path.clone(), Segment { start, end: start + 10.0 });
                }
                entries.push(Entry { path, labels: vec![ci], split, listed })
            }
            Found::Absent(tried) => {
                missing.push(Missing { listed, file: absent(format!("{ytid}_{:06}.mp4", start.round() as u64), &tried), split })
            }
        }
    }
    let declared = if has_test { vec![SplitName::Train, SplitName::Test] } else { vec![SplitName::Train] };
    Ok(Catalog {
        classes,
        entries,
        missing,
        note: "VGGSound train (val carved from it) and test".into(),
        declared,
        duplicates: vec![],
        segments,
    })
}

/// ESC-50 as distributed (see the module docs): fold `test_fold` (1–5) is the test split.
pub fn esc50(root: &Path, test_fold: u32) -> Result<Catalog, DataError> {
    let csv = root.join("meta/esc50.csv");
    if !csv.is_file() {
        return Err(DataError::new(root, "no meta/esc50.csv: expected ESC-50 as distributed (meta/esc50.csv and audio/*.wav)"));
    }
    let text = read_text(&csv)?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let header = rdr.headers().map_err(|e| DataError::new(&csv, format!("line 1: {e}")))?.clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(fi), Some(fo), Some(ti), Some(ci)) = (col("filename"), col("fold"), col("target"), col("category")) else {
        return Err(DataError::new(&csv, "line 1: expected the header `filename,fold,target,category,…` (ESC-50's meta/esc50.csv)"));
    };
    let mut names: Vec<Option<(String, String)>> = vec![None; 50];
    let (mut entries, mut missing) = (vec![], vec![]);
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 2;
        let at = format!("{}:{line}", csv.display());
        let rec = rec.map_err(|e| DataError::new(&csv, format!("line {line}: {e}")))?;
        let f = |i: usize| rec.get(i).map(str::trim).unwrap_or("");
        let fold: u32 = f(fo)
            .parse()
            .ok()
            .filter(|k| (1..=5).contains(k))
            .ok_or_else(|| DataError::new(&csv, format!("line {line}: fold `{}` is not 1–5", f(fo))))?;
        let target: usize = f(ti)
            .parse()
            .ok()
            .filter(|&t| t < 50)
            .ok_or_else(|| DataError::new(&csv, format!("line {line}: target `{}` is not a class number 0–49", f(ti))))?;
        let category = f(ci).to_string();
        match &names[target] {
            Some((name, first)) if *name != category => {
                return Err(DataError::new(
                    Path::new(&at),
                    format!("gives target {target} the category `{category}`, but {first} gives it `{name}`; fix the row"),
                ))
            }
            Some(_) => {}
            None => names[target] = Some((category, at.clone())),
        }
        let split = if fold == test_fold { SplitName::Test } else { SplitName::Train };
        let path = root.join("audio").join(f(fi));
        if path.is_file() {
            entries.push(Entry { path, labels: vec![target], split, listed: at });
        } else {
            missing.push(Missing { listed: at, file: f(fi).to_string(), split });
        }
    }
    let classes = names.into_iter().enumerate().map(|(i, n)| n.map_or_else(|| format!("class_{i}"), |n| n.0)).collect();
    Ok(Catalog {
        classes,
        entries,
        missing,
        note: format!("ESC-50 fold {test_fold} is the test split, folds {} train (val carved from them)", {
            let rest: Vec<String> = (1..=5).filter(|&k| k != test_fold).map(|k| k.to_string()).collect();
            rest.join(", ")
        }),
        declared: vec![SplitName::Train, SplitName::Test],
        duplicates: vec![],
        segments: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::touch;
    use super::*;

    #[test]
    fn audioset_quoted_multilabels_and_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(
            r.join("class_labels_indices.csv"),
            "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n1,/m/05zppz,\"Male speech, man speaking\"\n",
        )
        .unwrap();
        std::fs::write(
            r.join("balanced_train_segments.csv"),
            "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytid=2, num_segs=2, num_unique_labels=2, num_positive_labels=3\n# YTID, start_seconds, end_seconds, positive_labels\n--PJHxphWEs, 30.000, 40.000, \"/m/09x0r,/m/05zppz\"\n-0RWZT-miFs, 420.000, 430.000, \"/m/05zppz\"\nabsent00000, 0.000, 10.000, \"/m/09x0r\"\n",
        )
        .unwrap();
        std::fs::write(r.join("eval_segments.csv"), "# a\n# b\n# c\nYxyzxyzxyz1, 5.000, 15.000, \"/m/09x0r\"\n").unwrap();
        touch(&r.join("audio/--PJHxphWEs_30.wav"));
        touch(&r.join("audio/Y-0RWZT-miFs.flac"));
        touch(&r.join("eval/Yxyzxyzxyz1.wav"));
        let c = audioset(r, &[]).unwrap();
        assert_eq!(c.classes[1], "Male speech, man speaking");
        assert_eq!(c.entries.iter().map(|e| e.labels.clone()).collect::<Vec<_>>(), [vec![0, 1], vec![1], vec![0]]);
        assert_eq!(c.entries[2].split, SplitName::Test);
        assert_eq!(c.missing.len(), 1);
        std::fs::write(r.join("eval_segments.csv"), "abc, 1.0, 2.0, \"/m/nope\"\n").unwrap();
        let e = audioset(r, &[]).unwrap_err();
        assert!(e.message.starts_with("line 1: label `/m/nope`"), "{e}");
        // Display names where MIDs belong: the error names the MID, also for a name with a comma.
        std::fs::write(r.join("eval_segments.csv"), "abc, 1.0, 2.0, \"/m/09x0r,Speech\"\n").unwrap();
        let e = audioset(r, &[]).unwrap_err();
        assert!(e.message.contains("label `Speech` is a display name: expected a MID, such as /m/09x0r"), "{e}");
        std::fs::write(r.join("eval_segments.csv"), "abc, 1.0, 2.0, \"Male speech, man speaking\"\n").unwrap();
        let e = audioset(r, &[]).unwrap_err();
        assert!(e.message.contains("`Male speech, man speaking` is a display name") && e.message.contains("/m/05zppz"), "{e}");
        // A class list without its header would lose its first class to it: said.
        std::fs::write(r.join("class_labels_indices.csv"), "0,/m/09x0r,\"Speech\"\n1,/m/05zppz,\"Male speech, man speaking\"\n").unwrap();
        let e = audioset(r, &[]).unwrap_err();
        assert!(e.message.contains("line 1 is a class row, not the header `index,mid,display_name`"), "{e}");
    }

    #[test]
    fn audioset_names_with_the_rows_end_time_unsupported_containers_and_names_tried() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(r.join("class_labels_indices.csv"), "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n").unwrap();
        let rows = [
            "shortend001, 3.000, 10.000",  // an AudioSet segment shorter than 10 s
            "pannsstyle1, 30.000, 40.000", // PANNs' Y{id}_{start:.3}_{end:.3}
            "decimals001, 1.500, 11.500",  // {id}_{start:.3}_{end:.3}
            "opusclip001, 0.000, 10.000",  // yt-dlp's bestaudio: WebM/Opus
            "converted01, 0.000, 10.000",  // converted, the original kept beside it
            "absent00000, 20.000, 30.000",
        ];
        let body: String = rows.iter().map(|r| format!("{r}, \"/m/09x0r\"\n")).collect();
        std::fs::write(r.join("balanced_train_segments.csv"), format!("# a\n# b\n# c\n{body}")).unwrap();
        for f in [
            "shortend001_000003_000010.wav",
            "Ypannsstyle1_30.000_40.000.wav",
            "decimals001_1.500_11.500.flac",
            "opusclip001.webm",
            "converted01.webm",
            "converted01.flac",
        ] {
            touch(&r.join("audio").join(f));
        }
        let c = audioset(r, &[]).unwrap();
        let names: Vec<String> = c.entries.iter().map(|e| e.path.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(
            names,
            [
                "shortend001_000003_000010.wav",
                "Ypannsstyle1_30.000_40.000.wav",
                "decimals001_1.500_11.500.flac",
                "opusclip001.webm",
                "converted01.flac"
            ]
        );
        assert_eq!(c.missing.len(), 1);
        // Only a file named by the video id alone may hold more than the segment.
        let mut seg: Vec<(String, f64, f64)> =
            c.segments.iter().map(|(p, s)| (p.file_name().unwrap().to_string_lossy().into(), s.start, s.end)).collect();
        seg.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seg, [("converted01.flac".to_string(), 0.0, 10.0), ("opusclip001.webm".to_string(), 0.0, 10.0)]);
        let m = &c.missing[0].file;
        assert!(m.starts_with("absent00000.* (looked for absent00000, Yabsent00000, absent00000_000020,"), "{m}");
        assert!(m.contains("absent00000_000020_000030, absent00000_20_30, absent00000_20.000_30.000, Yabsent00000_20.000_30.000"), "{m}");
        // A plain header row is a header, not a malformed row.
        let csv = std::fs::read_to_string(r.join("balanced_train_segments.csv")).unwrap();
        std::fs::write(r.join("balanced_train_segments.csv"), format!("YTID,start_seconds,end_seconds,positive_labels\n{csv}")).unwrap();
        assert_eq!(audioset(r, &[]).unwrap().entries.len(), 5);
        // Two naming schemes for one row (a downloader's `Y…` and a segment-named copy): no silent choice.
        touch(&r.join("audio/Yshortend001.wav"));
        let e = audioset(r, &[]).unwrap_err();
        assert!(e.message.contains("line 5: 2 files match this row") && e.message.contains("Yshortend001.wav"), "{e}");
    }

    #[test]
    fn vggsound_rows() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(r.join("vggsound.csv"), "---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,\"waterfall, burbling\",train\n")
            .unwrap();
        touch(&r.join("video/---g-f_I2yQ_000001.mp4"));
        touch(&r.join("video/--0PQM4-hqg_000030.mp4"));
        let c = vggsound(r, &[]).unwrap();
        assert_eq!(c.classes, ["people marching", "waterfall, burbling"]);
        assert_eq!(c.entries.len(), 2);
        std::fs::write(r.join("vggsound.csv"), "abc,1,x,dev\n").unwrap();
        assert!(vggsound(r, &[]).unwrap_err().message.contains("split `dev`"));
    }

    #[test]
    fn esc50_meta_folds_and_categories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("meta")).unwrap();
        let head = "filename,fold,target,category,esc10,src_file,take\n";
        let rows = "1-100032-A-0.wav,1,0,dog,True,100032,A\n1-100038-A-14.wav,1,14,chirping_birds,False,100038,A\n2-1-A-0.wav,2,0,dog,True,1,A\n5-9-A-14.wav,5,14,chirping_birds,False,9,A\n";
        std::fs::write(r.join("meta/esc50.csv"), format!("{head}{rows}")).unwrap();
        for f in ["1-100032-A-0.wav", "1-100038-A-14.wav", "2-1-A-0.wav"] {
            touch(&r.join("audio").join(f));
        }
        let c = esc50(r, 1).unwrap();
        assert_eq!(c.classes.len(), 50);
        assert_eq!((c.classes[0].as_str(), c.classes[14].as_str()), ("dog", "chirping_birds"));
        let splits: Vec<(usize, SplitName)> = c.entries.iter().map(|e| (e.labels[0], e.split)).collect();
        assert_eq!(splits, [(0, SplitName::Test), (14, SplitName::Test), (0, SplitName::Train)]);
        assert_eq!(c.missing.len(), 1);
        assert!(c.note.contains("fold 1 is the test split, folds 2, 3, 4, 5 train"), "{}", c.note);
        std::fs::write(r.join("meta/esc50.csv"), format!("{head}{rows}3-1-A-0.wav,3,0,cat,True,1,A\n")).unwrap();
        let e = esc50(r, 1).unwrap_err();
        assert!(e.path.to_string_lossy().ends_with("esc50.csv:6") && e.message.contains("`dog`"), "{e}");
    }
}
