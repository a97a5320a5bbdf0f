//! `dataset`: ingests files in the formats users have into a `dataset` artifact with train / val / test splits
//! (`video_synth` generates the embedded video tasks: [`super::video_synth`]).

use super::datautil::{shard_put, write_meta};
use super::ingest_cifar::{cifar_files, cifar_names};
use super::ingest_files::{check_declared, check_loss, check_missing, ingest, lim, lost, DecodeFn, Decoder, SplitRule};
use crate::data::audio::{self, ClipRef};
use crate::data::images::{self, Images};
use crate::data::layouts::video_csv::TestTable;
use crate::data::layouts::{self, Catalog, Entry, Missing, SplitName};
use crate::data::shards::{Label, Layout, ShardWriter, Values};
use crate::data::tensors::{carve, Meta};
use crate::data::video_file::{self, ClipSpec};
use crate::stage::{choice_enum, parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Problem, Stage, StageCtx, StageError};
use safetensors::Dtype;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

choice_enum! {
    /// The file layout a `dataset` node reads.
    enum Format {
        /// MNIST-style IDX files.
        Idx = "idx",
        /// CIFAR-10 binary batches.
        Cifar10 = "cifar10",
        /// CIFAR-100 binary files.
        Cifar100 = "cifar100",
        /// Class folders (optionally under train/ val/ test/; ILSVRC's flat val/).
        ImageFolder = "image_folder",
        /// Oxford-IIIT Pets.
        Pets = "pets",
        /// Speech Commands.
        SpeechCommands = "speech_commands",
        /// A CSV manifest of audio clips.
        Csv = "csv",
        /// AudioSet CSVs.
        Audioset = "audioset",
        /// VGGSound CSV.
        Vggsound = "vggsound",
        /// ESC-50 as distributed (`meta/esc50.csv`, `audio/`).
        Esc50 = "esc50",
        /// Folders of frame images.
        Frames = "frames",
        /// Kinetics CSVs and video files.
        Kinetics = "kinetics",
        /// Moments in Time CSVs and video files.
        MomentsInTime = "moments_in_time",
        /// Class folders of video files.
        VideoFolder = "video_folder",
    }
}

impl Format {
    /// The modality of the format's examples.
    fn modality(self) -> &'static str {
        match self {
            Format::SpeechCommands | Format::Csv | Format::Audioset | Format::Vggsound | Format::Esc50 => "audio",
            Format::Frames | Format::Kinetics | Format::MomentsInTime | Format::VideoFolder => "video",
            _ => "image",
        }
    }

    /// Whether it is read from video files (needs the `video` feature).
    fn needs_video(self) -> bool {
        matches!(self, Format::Kinetics | Format::MomentsInTime | Format::VideoFolder)
    }
}

choice_enum! {
    /// How a `dataset` node stores images.
    enum StoreAs {
        /// Decoded and resized to height × width once.
        Pixels = "pixels",
        /// The files' bytes, decoded per batch.
        Encoded = "encoded",
    }
}

/// `dataset`: reads a dataset from disk.
pub struct DatasetStage;

/// The parameters of a `dataset` node (see [`DatasetStage::params`] for each one's meaning).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetParams {
    format: Format,
    path: String,
    classes: Vec<String>,
    num_classes: usize,
    multilabel: bool,
    val_fraction: f64,
    test_fraction: f64,
    limit: usize,
    height: usize,
    width: usize,
    sample_rate: u32,
    frames: usize,
    stride: usize,
    coarse: bool,
    resplit: bool,
    max_bad: f64,
    max_missing: f64,
    shard_mb: u64,
    store: StoreAs,
    #[serde(default = "first_fold")]
    test_fold: u32,
    #[serde(default = "validation_table")]
    test_table: TestTable,
    /// Video files: the frame rate clips are resampled to before sampling; 0 = the source's own frames.
    #[serde(default)]
    fps: u32,
}

fn validation_table() -> TestTable {
    TestTable::Validate
}

fn first_fold() -> u32 {
    1
}

fn class_list(dir: &Path, given: &[String], n: usize) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Ok(t) = std::fs::read_to_string(dir.join("classes.txt")) {
        let v: Vec<String> = t.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if !v.is_empty() {
            return v;
        }
    }
    (0..n).map(|i| i.to_string()).collect()
}

fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf, StageError> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(StageError::input(format!("{}: no `{stem}` or `{stem}.gz` (IDX datasets need train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)", dir.display())))
}

/// Streams the examples of `pool` (sources indexed one after another) once, each into the split whose
/// (sorted) index list holds it; examples in no list are skipped without being decoded.
fn stream_pool(
    ctx: &mut StageCtx<'_>,
    pool: &[&Images],
    lists: Vec<(&str, Vec<usize>)>,
    sizes: &mut BTreeMap<String, usize>,
    budget: u64,
) -> Result<(), StageError> {
    let total: usize = pool.iter().map(|s| s.len()).sum();
    let mut assign = vec![usize::MAX; total];
    for (k, (_, idx)) in lists.iter().enumerate() {
        idx.iter().for_each(|&i| assign[i] = k);
    }
    let id = ctx.id.to_string();
    let tmp_err = |m: String| StageError::failed(format!("node `{id}`: {m}"));
    let labels: Vec<i64> = pool.iter().flat_map(|s| s.labels.iter().copied()).collect();
    let mut writers: Vec<ShardWriter> = vec![];
    for (name, _) in &lists {
        writers.push(ShardWriter::new(name, Layout::Fixed("x".into(), Dtype::U8, pool[0].shape.clone()), None, budget).map_err(tmp_err)?);
    }
    let mut base = 0;
    for (si, src) in pool.iter().enumerate() {
        (ctx.progress)(crate::stage::Progress {
            done: si as u64,
            total: pool.len() as u64,
            message: format!("reading {} examples", src.len()),
            note: false,
        });
        let out = &mut ctx.out;
        src.for_each(
            |i| assign[base + i] != usize::MAX,
            |i, rec| writers[assign[base + i]].push(Values::U8(rec), Label::Single(labels[base + i]), &mut shard_put(out)).map_err(tmp_err),
        )?;
        base += src.len();
    }
    for ((name, _), w) in lists.into_iter().zip(writers) {
        if name == "train" && w.is_empty() {
            return Err(StageError::input(format!("node `{id}`: the train split is empty")));
        }
        sizes.insert(name.to_string(), w.len());
        w.finish(&mut shard_put(&mut ctx.out)).map_err(tmp_err)?;
    }
    let n = pool.len() as u64;
    (ctx.progress)(crate::stage::Progress { done: n, total: n, message: "written".into(), note: false });
    Ok(())
}

/// Train/val/test index lists from given train and test sets (val carved from train).
fn splits_from(n_train: usize, val_fraction: f64, seed: u64, limit: usize) -> (Vec<usize>, Vec<usize>) {
    let (tr, va) = carve(n_train, val_fraction, seed);
    (lim(tr, limit), lim(va, limit))
}

fn check_classes(root: &Path, found: usize, declared: usize) -> Result<(), StageError> {
    if declared > 0 && declared != found {
        return Err(StageError::input(format!(
            "{}: found {found} classes but the node declares num_classes = {declared}; fix the dataset folder, or declare \
             what it holds (a subset of the dataset, your own copy): `num_classes = {found}`",
            root.display()
        )));
    }
    Ok(())
}

/// Decodes one image file (format from its bytes, not its name: ImageNet has a PNG named `.JPEG`) resized to
/// `h × w` RGB.
fn decode_image(path: &Path, h: usize, w: usize) -> Result<Vec<u8>, crate::data::DataError> {
    let bytes = std::fs::read(path).map_err(|e| crate::data::DataError::new(path, format!("cannot read: {e}")))?;
    let img = images::decode(&bytes).map_err(|m| crate::data::DataError::new(path, m))?;
    Ok(img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle).to_rgb8().into_raw())
}

/// The digest of what a dataset node reads: the tree at `root` (the dataset `path`), or where the layout reads
/// files elsewhere, those too. A VGGSound CSV or a CSV manifest given as the `path` names clips beside or
/// anywhere around it: the digest covers the CSV and exactly the files its rows name (the folder around it may
/// hold much else). ILSVRC's flat `val/` may take its label file from the dataset folder's parent: that file is
/// digested with the tree. A CSV that cannot be read yet is digested alone (the run then says what is wrong).
/// The digest a dataset node is keyed by: the files its layout reads. A list-based layout given as one file
/// (a CSV manifest, VGGSound's CSV) digests the files the list names; a folder, its visible files (hidden ones,
/// `.DS_Store` and `._x.jpg` of a copy from macOS, `.ipynb_checkpoints`, are never read by a layout, so they do
/// not stale the node); ImageNet's label files beside the folder are added.
fn dataset_digest(p: &DatasetParams, root: &Path, files: &crate::fingerprint::FileDigests) -> Result<String, StageError> {
    let fail = |e: crate::fingerprint::files::FileError| StageError::input(format!("{e}; check the dataset `path`"));
    let listed = |paths: Result<Vec<std::path::PathBuf>, crate::data::DataError>| -> Result<String, StageError> {
        match paths {
            Ok(mut v) => {
                v.push(root.to_path_buf());
                files.list(root, &v).map_err(fail)
            }
            Err(_) => files.file(root).map_err(fail),
        }
    };
    match p.format {
        Format::Csv if root.is_file() => {
            listed(audio::csv_manifest(root, &p.classes, p.multilabel).map(|(_, clips)| clips.into_iter().map(|c| c.path).collect()))
        }
        Format::Vggsound if root.is_file() => {
            listed(layouts::audio_csv::vggsound(root, &p.classes).map(|c| c.entries.into_iter().map(|e| e.path).collect()))
        }
        Format::ImageFolder => {
            let outside = layouts::folders::read_outside(root);
            let tree = files.visible_tree(root).map_err(fail)?;
            if outside.is_empty() {
                return Ok(tree);
            }
            // The tree's digest and each outside file's, in the order the reader looks for them.
            let mut h = blake3::Hasher::new();
            h.update(b"polyflow dataset and label files\0");
            h.update(tree.as_bytes());
            for f in &outside {
                h.update(files.file(f).map_err(fail)?.as_bytes());
            }
            Ok(h.finalize().to_hex().to_string())
        }
        _ => files.visible_tree(root).map_err(fail),
    }
}

impl DatasetStage {
    /// The parameters, once the dataset `path` is configured and exists and what the format needs is built in:
    /// all the node's key (the folder's files) needs.
    fn located(&self, params: &serde_json::Value, base: &Path) -> Result<DatasetParams, Problem> {
        let p: DatasetParams = parse_checked(params, &self.params())?;
        if p.store == StoreAs::Encoded && !matches!(p.format, Format::ImageFolder | Format::Pets) {
            return Err((
                "store".to_string(),
                format!("= \"encoded\" keeps image files' bytes: it is for image_folder and pets, not `{}`", p.format),
            )
                .into());
        }
        if p.path.is_empty() {
            // A build without video decoding is said at once too: the rebuild takes longest.
            let also = if p.format.needs_video() && !video_file::AVAILABLE {
                format!(" Also, {}", video_file::UNAVAILABLE)
            } else {
                String::new()
            };
            return Err(("path".to_string(), format!("not configured: where is your copy of this {} dataset?{also}", p.format)).into());
        }
        // A rebuild first: it takes longest, and a path set next would only meet this.
        if p.format.needs_video() && !video_file::AVAILABLE {
            return Err(Problem::installation(
                "format",
                format!("= \"{}\" decodes video files, and {}", p.format, video_file::UNAVAILABLE),
            ));
        }
        let root = base.join(&p.path);
        if !root.exists() {
            return Err(("path".to_string(), format!("`{}` does not exist (check the dataset `path`)", root.display())).into());
        }
        if p.fps > 0 && !p.format.needs_video() {
            return Err(("fps".to_string(), format!("resamples video files, and format = \"{}\" has none: remove `fps`", p.format)).into());
        }
        Ok(p)
    }

    /// The layouts with one file per example: read the catalog, check it, decode and write the splits.
    fn run_catalog(&self, ctx: &mut StageCtx<'_>, p: &DatasetParams, root: &Path) -> Result<(), StageError> {
        let cat: Catalog = match p.format {
            Format::ImageFolder => layouts::folders::image_folders(root, &p.classes)?,
            Format::Pets => layouts::folders::pets(root)?,
            Format::VideoFolder => layouts::folders::video_folders(root, &p.classes)?,
            Format::Frames => layouts::folders::frame_folders(root, &p.classes)?,
            Format::Kinetics => layouts::video_csv::kinetics(root, &p.classes, p.test_table)?,
            Format::MomentsInTime => layouts::video_csv::moments(root, &p.classes)?,
            Format::Audioset => layouts::audio_csv::audioset(root, &p.classes)?,
            Format::Vggsound => layouts::audio_csv::vggsound(root, &p.classes)?,
            Format::Esc50 => layouts::audio_csv::esc50(root, p.test_fold)?,
            Format::SpeechCommands | Format::Csv => {
                let (classes, clips) = if p.format == Format::Csv {
                    audio::csv_manifest(root, &p.classes, p.multilabel)?
                } else {
                    audio::speech_commands(root)?
                };
                let split = |c: &ClipRef| match c.split.as_str() {
                    "val" => SplitName::Val,
                    "test" => SplitName::Test,
                    _ => SplitName::Train,
                };
                // A row of a CSV whose file is not there is a listed example absent (`max_missing`), not a file
                // that could not be decoded (`max_bad`).
                let (present, absent): (Vec<&ClipRef>, Vec<&ClipRef>) = clips.iter().partition(|c| c.path.exists());
                let entries: Vec<Entry> = present
                    .iter()
                    .map(|c| Entry { path: c.path.clone(), labels: c.labels.clone(), split: split(c), listed: c.listed.clone() })
                    .collect();
                let missing: Vec<Missing> = absent
                    .iter()
                    .map(|c| Missing { listed: c.listed.clone(), file: crate::spec::source::display_path(&c.path), split: split(c) })
                    .collect();
                // Test as these layouts always had it: from their lists or rows, possibly empty, never carved.
                let mut declared = vec![SplitName::Train, SplitName::Test];
                if entries.iter().any(|e: &Entry| e.split == SplitName::Val) {
                    declared.push(SplitName::Val);
                }
                Catalog { classes, entries, declared, missing, ..Default::default() }
            }
            other @ (Format::Idx | Format::Cifar10 | Format::Cifar100) => {
                return Err(StageError::failed(format!("format `{other}` has no file catalog")))
            }
        };
        let mut cat = cat;
        check_classes(root, cat.classes.len(), p.num_classes)?;
        cat.drop_duplicates()?;
        if !cat.duplicates.is_empty() {
            let d = &cat.duplicates[0];
            tracing::warn!(
                "{}: {} rows name a file another row names and are left out (listed in skipped.json); first: {} at {} ({}), kept at {} ({})",
                ctx.id,
                cat.duplicates.len(),
                d.file,
                d.listed,
                d.split.as_str(),
                d.kept,
                d.kept_split.as_str()
            );
        }
        check_declared(&cat)?;
        if cat.entries.iter().all(|e| e.split != SplitName::Train) {
            return Err(StageError::input(format!("{}: the layout was read but no training example was found", root.display())));
        }
        check_missing(ctx, &cat.missing, cat.entries.len() + cat.missing.len(), p.max_missing)?;
        let modality = p.format.modality();
        let multilabel = p.multilabel || p.format == Format::Audioset;
        let (h, w, rate) = (p.height, p.width, p.sample_rate);
        let clip = ClipSpec { frames: p.frames, stride: p.stride, size: p.width, fps: (p.fps > 0).then_some(p.fps) };
        if p.store == StoreAs::Encoded && modality != "image" {
            return Err(StageError::input(format!(
                "node `{}`: store = \"encoded\" is for image layouts; `{}` is {modality}",
                ctx.id, p.format
            )));
        }
        // How many whole-video files were cut to their row's segment (AudioSet, VGGSound).
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (decoder, shape, sr) = match modality {
            "image" if p.store == StoreAs::Encoded => {
                let check = |f: &Path| -> Result<Vec<u8>, crate::data::DataError> {
                    let bytes = std::fs::read(f).map_err(|e| crate::data::DataError::new(f, format!("cannot read: {e}")))?;
                    crate::data::images::decode_rgb(&bytes).map_err(|e| crate::data::DataError::new(f, e))?;
                    Ok(bytes)
                };
                (Decoder::Encoded(Box::new(check)), vec![], None)
            }
            "image" => {
                (Decoder::Fixed { shape: vec![h, w, 3], decode: Box::new(move |f: &Path| decode_image(f, h, w)) }, vec![h, w, 3], None)
            }
            "video" => {
                let shape = vec![clip.frames, clip.size, clip.size, 3];
                let decode: DecodeFn<u8> = if p.format == Format::Frames {
                    Box::new(move |f: &Path| crate::data::frames::decode(f, &clip))
                } else {
                    Box::new(move |f: &Path| video_file::decode(f, &clip))
                };
                (Decoder::Fixed { shape: shape.clone(), decode }, shape, None)
            }
            _ => {
                let (segments, cut) = (std::sync::Arc::new(cat.segments.clone()), cut.clone());
                let decode = move |f: &Path| -> Result<Vec<f32>, crate::data::DataError> {
                    let (mut x, r) = audio::decode(f)?;
                    if let Some(&seg) = segments.get(f) {
                        if let Some(part) = audio::cut_segment(&x, r, seg).map_err(|e| crate::data::DataError::new(f, e))? {
                            x = part;
                            cut.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    audio::resample(&x, r, rate).map_err(|e| crate::data::DataError::new(f, format!("resampling failed: {e}")))
                };
                (Decoder::Wave(Box::new(decode)), vec![], Some(rate))
            }
        };
        let rule = SplitRule { val_fraction: p.val_fraction, test_fraction: p.test_fraction, limit: p.limit, seed: ctx.seed() };
        let outcome = ingest(ctx, &cat, &decoder, multilabel, &rule, p.shard_mb << 20, p.max_bad)?;
        let decoded: usize = outcome.sizes.values().sum::<usize>() + outcome.bad.len();
        check_loss("could not be decoded", &lost(&outcome.bad), decoded, p.max_bad, "max_bad", p.limit > 0)?;
        if !cat.missing.is_empty() || !outcome.bad.is_empty() || !cat.duplicates.is_empty() {
            ctx.out.put_json("skipped.json", &json!({"missing": cat.missing, "undecodable": outcome.bad, "duplicates": cat.duplicates}))?;
        }
        // Not where the files are: the artifact's bytes (and so every key downstream) depend on their content
        // only, wherever the dataset is mounted (`show` prints the `path` among the parameters).
        let mut note = format!(
            "{} ({}), seed {}",
            p.format,
            if p.limit > 0 { format!("limit {} per split", p.limit) } else { "all examples".into() },
            ctx.seed()
        );
        if !cat.note.is_empty() {
            note.push_str(&format!("; {}", cat.note));
        }
        if !cat.duplicates.is_empty() {
            note.push_str(&format!("; {} repeated rows left out (skipped.json)", cat.duplicates.len()));
        }
        if p.store == StoreAs::Encoded && modality == "image" {
            note.push_str("; stored encoded (the files' bytes)");
        }
        if !cat.segments.is_empty() {
            let n = cut.load(std::sync::atomic::Ordering::Relaxed);
            note.push_str(&format!(
                "; {n} of {} clips named by the video id alone were longer than their row's segment and cut to it",
                cat.segments.len()
            ));
        }
        if modality == "video" {
            // (Without `fps` the note is as it was before the option: the same key gives the same bytes.)
            let rate = clip.fps.map_or(String::new(), |f| format!(" at {f} fps"));
            note.push_str(&format!(
                "; {} frames at stride {}{rate} from the centre, short side {} + centre crop",
                clip.frames, clip.stride, clip.size
            ));
        }
        let meta = Meta {
            modality: modality.into(),
            classes: cat.classes,
            multilabel,
            splits: outcome.sizes,
            shape,
            sample_rate: sr,
            note,
            skipped: outcome.bad.len(),
            missing: cat.missing.len(),
            ..Default::default()
        };
        write_meta(ctx, meta)
    }
}

impl Stage for DatasetStage {
    fn kind(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "ingest a dataset in the layout it ships in (IDX, CIFAR, image folders incl. ImageNet, Pets, Speech Commands, CSV manifests, AudioSet, VGGSound, ESC-50, Kinetics, Moments in Time, video folders, frame folders)"
    }
    fn output(&self) -> &'static str {
        "dataset"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::req(
                "format",
                T::Choice(Format::NAMES),
                "file layout: idx, cifar10, cifar100, image_folder (class folders, optionally under train/ val/ test/; \
                 ILSVRC's flat val/), pets, speech_commands, csv, audioset, vggsound, esc50, frames, kinetics, \
                 moments_in_time, video_folder",
            ),
            ParamSpec::opt(
                "path",
                T::Path,
                json!(""),
                "folder (or CSV file), relative to the declaring pipeline file; empty = not configured yet (set it with --set NODE.path=DIR or a --config file)",
            ),
            ParamSpec::opt("classes", T::StrList, json!([]), "class names (default: classes.txt, folder names or labels found)"),
            ParamSpec::opt(
                "num_classes",
                T::Int { min: 0, max: 1_000_000 },
                json!(0),
                "declared class count (0 = from the data): lets `params` count a model before the data exists; checked at ingestion",
            ),
            ParamSpec::opt("multilabel", T::Bool, json!(false), "CSV: several labels per clip (AudioSet style)"),
            ParamSpec::opt("val_fraction", T::Float { min: 0.0, max: 0.9 }, json!(0.1), "part of train held out as val (seeded)"),
            ParamSpec::opt(
                "test_fraction",
                T::Float { min: 0.0, max: 0.9 },
                json!(0.2),
                "part held out as test when the layout has no test split",
            ),
            ParamSpec::opt("limit", T::Int { min: 0, max: i64::MAX }, json!(0), "keep at most this many examples per split (0 = all)"),
            ParamSpec::opt("height", T::Int { min: 1, max: 4096 }, json!(32), "image_folder: resize height"),
            ParamSpec::opt(
                "width",
                T::Int { min: 1, max: 4096 },
                json!(32),
                "image_folder, pets: resize width; video files and frame folders: short side resized to this, then a centre square crop",
            ),
            ParamSpec::opt("sample_rate", T::Int { min: 1000, max: 192000 }, json!(16000), "audio: resample to this rate"),
            ParamSpec::opt("frames", T::Int { min: 1, max: 4096 }, json!(8), "frames, video files: frames kept per clip"),
            ParamSpec::opt(
                "stride",
                T::Int { min: 1, max: 64 },
                json!(1),
                "video files and frame folders: temporal stride of the kept frames (centre window; the paper: 32 frames at stride 2)",
            ),
            ParamSpec::added(
                "fps",
                T::Int { min: 0, max: 240 },
                json!(0),
                "video files: resample each clip to this frame rate by its timestamps before `frames` and `stride` \
                 pick frames (as FFmpeg's fps filter: faster sources drop frames, slower ones repeat them), so a window \
                 spans the same time whatever rate a clip was shot at; 0 = the source's own frames",
            ),
            ParamSpec::opt("coarse", T::Bool, json!(false), "cifar100: coarse labels"),
            ParamSpec::added(
                "test_fold",
                T::Int { min: 1, max: 5 },
                json!(1),
                "esc50: the fold that is the test split, the other four train (ESC-50 is usually reported as 5-fold \
                 cross-validation: one node per fold, e.g. a matrix over test_fold)",
            ),
            ParamSpec::added(
                "test_table",
                T::Choice(TestTable::NAMES),
                json!("validate"),
                "kinetics: the CSV that is the test split: `validate` = validate.csv (the paper reports Kinetics' \
                 validation set; test.csv is not read), `test` = a labelled test.csv (validate.csv is then val)",
            ),
            ParamSpec::opt(
                "resplit",
                T::Bool,
                json!(false),
                "pool the file's train and test splits and re-split them with the seed (test_fraction)",
            ),
            ParamSpec::opt(
                "max_bad",
                T::Float { min: 0.0, max: 1.0 },
                json!(0.01),
                "fraction of examples whose files cannot be decoded that is skipped (listed in skipped.json) before the node fails",
            ),
            ParamSpec::opt(
                "max_missing",
                T::Float { min: 0.0, max: 1.0 },
                json!(0.25),
                "fraction of listed examples (Kinetics, AudioSet, … CSVs) whose files are absent that is tolerated",
            ),
            ParamSpec::opt(
                "store",
                T::Choice(StoreAs::NAMES),
                json!("pixels"),
                "image_folder, pets: `pixels` = decoded and resized to height × width once; `encoded` = the files' bytes as \
                 they are (checked to decode), decoded per batch so training can crop the original image (the paper's \
                 Inception crop)",
            ),
            ParamSpec::opt(
                "shard_mb",
                T::Int { min: 1, max: 1 << 20 },
                json!(256),
                "split files are shards of about this many MiB (a split that fits in one is a single file)",
            ),
        ]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<DatasetParams>(params, &self.params()).map(|_| ())
    }
    fn preflight(&self, params: &serde_json::Value, base: &Path) -> Result<(), Problem> {
        let p = self.located(params, base)?;
        let root = base.join(&p.path);
        // The layouts made of fixed files: each file there, before anything queues behind the node (a problem
        // only for ingesting here: the key is the folder's files, whatever they are, and may be in a cache).
        let fixed = match p.format {
            Format::Cifar10 | Format::Cifar100 => cifar_files(&root, p.format == Format::Cifar100).map(|_| ()),
            Format::Idx => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
                .iter()
                .try_for_each(|f| find(&root, f).map(|_| ())),
            _ => {
                use layouts::shallow as sh;
                let shape = match p.format {
                    Format::ImageFolder => Some(sh::IMAGE_FOLDERS),
                    Format::VideoFolder => Some(sh::VIDEO_FOLDERS),
                    Format::Frames => Some(sh::Shape::FrameFolders),
                    Format::Audioset => Some(sh::AUDIOSET),
                    Format::Kinetics => Some(sh::KINETICS),
                    Format::MomentsInTime => Some(sh::MOMENTS),
                    Format::Esc50 => Some(sh::ESC50),
                    Format::Vggsound if root.is_dir() => Some(sh::VGGSOUND),
                    Format::Pets => Some(sh::PETS),
                    Format::SpeechCommands => Some(sh::SPEECH_COMMANDS),
                    _ => None,
                };
                shape.map_or(Ok(()), |s| sh::check(&root, s, &p.classes).map_err(|e| StageError::input(e.to_string())))
            }
        };

        if let Err(e) = fixed {
            return Err(Problem::from(("path".to_string(), format!("does not hold the {} layout: {}", p.format, e.message))).local());
        }
        // Class folders whose count the node declares: counted now (one directory read), not after the read of
        // every example. (Speech Commands' reader leaves folders out, so its count is the ingestion's to check.)
        if matches!(p.format, Format::ImageFolder | Format::VideoFolder | Format::Frames) && p.classes.is_empty() {
            if let Some(Err(e)) = layouts::shallow::class_count(&root).map(|n| check_classes(&root, n, p.num_classes)) {
                return Err(Problem::from(("num_classes".to_string(), e.message)).local());
            }
        }
        Ok(())
    }
    fn declare(
        &self,
        params: &serde_json::Value,
        _base: &std::path::Path,
        _inputs: &BTreeMap<String, Vec<serde_json::Value>>,
    ) -> Option<serde_json::Value> {
        // Parameters that do not parse declare nothing (validation reports them).
        let p: DatasetParams = parse(params).ok()?;
        let known = match p.format {
            Format::Cifar10 => 10,
            Format::Cifar100 if p.coarse => 20,
            Format::Cifar100 => 100,
            _ => 0,
        };
        // 0: not declared (read from the data when it is ingested); the modality is known regardless.
        let classes = [p.classes.len(), p.num_classes, known].into_iter().find(|&n| n > 0).unwrap_or(0);
        let multilabel = p.multilabel || p.format == Format::Audioset;
        Some(json!({"modality": p.format.modality(), "classes": classes, "multilabel": multilabel}))
    }
    fn external_digest(
        &self,
        params: &serde_json::Value,
        base: &Path,
        files: &crate::fingerprint::FileDigests,
    ) -> Result<Option<String>, StageError> {
        let p = self.located(params, base).map_err(|Problem { param, msg, .. }| StageError::input(format!("`{param}`: {msg}")))?;
        dataset_digest(&p, &base.join(&p.path), files).map(Some)
    }
    fn version_for(&self, params: &serde_json::Value, _env: &BTreeMap<String, String>) -> u32 {
        // 2: the layouts read from lists and folders leave hidden files out, take more image formats, drop a
        // UTF-8 byte-order mark, follow symlinked folders, refuse truncated JPEGs and keep one row per file.
        // The formats whose readers did not change keep their keys.
        // 3 (kinetics): validate.csv is the test split even beside a labelled test.csv (`test_table`).
        // 3 (csv, audioset, vggsound, esc50): a container's first audio track is decoded, not refused when a
        // video track comes first; MP3's encoder delay and padding are trimmed (gapless); AudioSet and VGGSound
        // find clips by more names (the row's end time) and cut a whole video to its row's segment.
        // speech_commands keeps 1: Speech Commands ships WAV, which none of this changes.
        // 3 (moments_in_time, video_folder), 4 (kinetics): video is converted to RGB with the stream's own
        // YUV matrix and range (BT.709 for HD), not swscale's BT.601 default.
        match parse::<DatasetParams>(params).map(|p| p.format) {
            // 2 (speech_commands), 4 (csv, audioset, vggsound, esc50): an audio file that decodes to under 90 % of
            // the samples its header declares (cut short) is skipped and counted, not kept as a short clip; a CSV
            // manifest's header may name its columns otherwise (`file,class`: not a row of class `class`).
            Ok(Format::SpeechCommands) => 2,
            Ok(Format::Csv | Format::Audioset | Format::Vggsound | Format::Esc50) => 4,
            // 2 (cifar10, cifar100): the class names the binary version ships (batches.meta.txt,
            // fine_label_names.txt / coarse_label_names.txt), not "0".."9".
            Ok(Format::Cifar10 | Format::Cifar100) => 2,
            Ok(Format::Idx) => 1,
            // 2 (frames): a clip's frame files in number order (frame_2 before frame_10), not byte order.
            // 3 (frames): read as video files are (RGB, `frames` at `stride` from the centre, short side + centre
            // crop, undecodable clips skipped up to `max_bad`, split folders), not grey frames sampled uniformly.
            Ok(Format::Frames) => 3,
            Ok(Format::Kinetics) => 4,
            // 3 (image_folder), 4 (video_folder): files in a class folder's subfolders are its examples too, as
            // torchvision's ImageFolder walks them (they were left out without a word). Identical bytes where a
            // dataset has none: the node re-runs once and everything downstream stays fresh.
            Ok(Format::ImageFolder) => 3,
            Ok(Format::VideoFolder) => 4,
            Ok(Format::MomentsInTime) => 3,
            _ => 2,
        }
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: DatasetParams = parse(ctx.params)?;
        if p.store == StoreAs::Encoded && !matches!(p.format, Format::ImageFolder | Format::Pets) {
            return Err(StageError::input(format!(
                "node `{}`: store = \"encoded\" keeps image files' bytes: it is for image_folder and pets",
                ctx.id
            )));
        }
        let root = ctx.base_dir.join(&p.path);
        let seed = ctx.seed();
        let mut sizes = BTreeMap::new();
        // Small things first (labels, file lists, headers: every check that can fail early), then the examples
        // are streamed one at a time into the split files.
        let (modality, classes, shape, sr): (&str, Vec<String>, Vec<usize>, Option<u32>) = match p.format {
            Format::Idx | Format::Cifar10 | Format::Cifar100 => {
                let (train, test, classes) = if p.format == Format::Idx {
                    let classes = class_list(&root, &p.classes, 10);
                    let tr = images::idx_pair(
                        &find(&root, "train-images-idx3-ubyte")?,
                        &find(&root, "train-labels-idx1-ubyte")?,
                        classes.len(),
                    )?;
                    let te =
                        images::idx_pair(&find(&root, "t10k-images-idx3-ubyte")?, &find(&root, "t10k-labels-idx1-ubyte")?, classes.len())?;
                    (tr, te, classes)
                } else {
                    let c100 = p.format == Format::Cifar100;
                    let (trf, tef) = cifar_files(&root, c100)?;
                    let tr = images::cifar(&trf, c100, p.coarse)?;
                    let te = images::cifar(&tef, c100, p.coarse)?;
                    let n = if !c100 {
                        10
                    } else if p.coarse {
                        20
                    } else {
                        100
                    };
                    let classes = match cifar_names(&root, c100, p.coarse) {
                        Some(names) if p.classes.is_empty() && names.len() == n => names,
                        Some(names) if p.classes.is_empty() => {
                            tracing::warn!(
                                "{}: its class-name file has {} names for {n} classes, left unused (the classes are numbered); \
                                 is it this dataset's?",
                                ctx.id,
                                names.len()
                            );
                            class_list(&root, &p.classes, n)
                        }
                        _ => class_list(&root, &p.classes, n),
                    };
                    (tr, te, classes)
                };
                if p.resplit {
                    // Pool the given splits and re-split with the seed (for files whose splits are not
                    // class-balanced, e.g. a class-sorted subset).
                    let (rest, te) = carve(train.len() + test.len(), p.test_fraction, seed ^ 0x7e57);
                    let (tr_i, va_i) = carve(rest.len(), p.val_fraction, seed);
                    let tr = lim(tr_i.iter().map(|&i| rest[i]).collect(), p.limit);
                    let va = lim(va_i.iter().map(|&i| rest[i]).collect(), p.limit);
                    stream_pool(
                        ctx,
                        &[&train, &test],
                        vec![("train", tr), ("val", va), ("test", lim(te, p.limit))],
                        &mut sizes,
                        p.shard_mb << 20,
                    )?;
                } else {
                    let (tr, va) = splits_from(train.len(), p.val_fraction, seed, p.limit);
                    let te: Vec<usize> = lim((0..test.len()).collect(), p.limit);
                    stream_pool(ctx, &[&train], vec![("train", tr), ("val", va)], &mut sizes, p.shard_mb << 20)?;
                    stream_pool(ctx, &[&test], vec![("test", te)], &mut sizes, p.shard_mb << 20)?;
                }
                ("image", classes, train.shape.clone(), None)
            }
            _ => return self.run_catalog(ctx, &p, &root),
        };
        check_classes(&root, classes.len(), p.num_classes)?;
        let note = format!(
            "{} ({}), seed {seed}",
            p.format,
            if p.limit > 0 { format!("limit {} per split", p.limit) } else { "all examples".into() }
        );
        let meta = Meta {
            modality: modality.into(),
            classes,
            multilabel: p.multilabel,
            splits: sizes,
            shape,
            sample_rate: sr,
            note,
            ..Default::default()
        };
        write_meta(ctx, meta)
    }
    fn describe(&self, a: &crate::stage::InputArtifact, out: &Path) -> Result<String, StageError> {
        super::datautil::describe(a, out)
    }
}
