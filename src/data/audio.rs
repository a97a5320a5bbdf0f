//! Audio decoding (WAV, FLAC, OGG/Vorbis, MP3, AAC in MP4/M4A via symphonia), stereo → mono, resampling
//! (rubato), and the dataset layouts users have: Speech Commands folders and CSV manifests (single- or
//! multi-label).

use super::error::DataError;
use super::layouts::Segment;
use std::path::{Path, PathBuf};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The containers and codecs [`decode`] reads, as its errors name them.
pub const SUPPORTED: &str = "WAV, FLAC, OGG/Vorbis, MP3, AAC in MP4/M4A";

/// Decodes `path` to mono f32 samples in [-1, 1] and returns them with the file's sample rate. The sound is
/// the container's first audio track (one with a codec and a sample rate): a video downloaded from YouTube
/// has its H.264 track first and its AAC track second.
pub fn decode(path: &Path) -> Result<(Vec<f32>, u32), DataError> {
    let err = |m: String| DataError::new(path, m);
    if super::layouts::has_ext(path, super::layouts::AUDIO_UNDECODABLE_EXTS) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        return Err(err(format!(
            "found {name}: WebM/Matroska/Opus audio is not decodable here (supported: {SUPPORTED}); convert it to FLAC \
             or WAV, e.g. `ffmpeg -i '{name}' '{stem}.flac'`"
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open audio: {e}")))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        // Gapless: the encoder's delay and padding are trimmed where the container says how long they are (MP3's
        // LAME/Xing header; symphonia 0.5's MP4 reader does not read the edit list, so AAC keeps its priming).
        .format(&hint, mss, &FormatOptions { enable_gapless: true, ..Default::default() }, &MetadataOptions::default())
        .map_err(|e| err(format!("corrupt or unsupported audio ({e}); supported: {SUPPORTED}")))?;
    let mut format = probed.format;
    let tracks = format.tracks();
    let Some(track) = tracks.iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL && t.codec_params.sample_rate.is_some()) else {
        return Err(err(format!(
            "no audio track: none of its {} track(s) has an audio codec with a sample rate (a video without sound?)",
            tracks.len()
        )));
    };
    let (track_id, rate) = (track.id, track.codec_params.sample_rate.unwrap_or_default());
    // Frames the header declares (a WAV's data chunk, an MP4's sample table): a file cut short decodes to fewer.
    // A WAV written to a pipe (`ffmpeg … -f wav -`) declares 0xFFFFFFFF bytes: its length is unknown.
    let declared = track.codec_params.n_frames.unwrap_or(0);
    let frame_bytes = track.codec_params.channels.map_or(1, |c| c.count() as u64)
        * u64::from(track.codec_params.bits_per_sample.or(track.codec_params.bits_per_coded_sample).unwrap_or(0)).div_ceil(8);
    let declared = if frame_bytes > 0 && (declared + 1) * frame_bytes > 0xFFFF_FFFF { 0 } else { declared };
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| err(format!("unsupported audio codec in track {track_id}: {e}; supported: {SUPPORTED}")))?;
    let mut out = vec![];
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(symphonia::core::errors::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(err(format!("corrupt audio stream: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|e| err(format!("corrupt audio frame: {e}")))?;
        let spec = *decoded.spec();
        let ch = spec.channels.count();
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        for frame in buf.samples().chunks_exact(ch) {
            out.push(frame.iter().sum::<f32>() / ch as f32); // stereo → mono
        }
    }
    if out.is_empty() {
        return Err(err("audio file decodes to no samples".into()));
    }
    // Past the length the container declares (an Ogg stream's last granule position): the decoder's padding of
    // the last packet, which libsndfile and torchaudio leave out (a 16,000-sample Vorbis clip decoded to 16,128).
    if declared > 0 && out.len() as u64 > declared {
        out.truncate(declared as usize);
    }
    if declared > 0 && (out.len() as u64) * 10 < declared * 9 {
        return Err(err(format!(
            "decodes to {} of the {declared} samples its header declares: truncated (an interrupted copy or download?)",
            out.len()
        )));
    }
    Ok((out, rate))
}

/// The sound of a file named by its video's id alone (AudioSet's, VGGSound's `{ytid}.*`), which may hold the
/// whole video, cut to its row's segment: samples `[start, end)` seconds of `x` (at `rate` Hz) when `x` is over
/// 1 s longer than the segment, `None` when it is not (the file is the segment already). A file that is longer
/// but ends before the segment starts is an error (the wrong file, or a cut of another segment).
pub fn cut_segment(x: &[f32], rate: u32, seg: Segment) -> Result<Option<Vec<f32>>, String> {
    let secs = x.len() as f64 / rate as f64;
    if secs <= seg.end - seg.start + 1.0 {
        return Ok(None);
    }
    let at = |t: f64| ((t.max(0.0) * rate as f64).round() as usize).min(x.len());
    let (a, b) = (at(seg.start), at(seg.end));
    if a >= b {
        return Err(format!(
            "is {secs:.1} s long, longer than its row's segment [{}, {}) s, but ends before it starts: is it the right file?",
            seg.start, seg.end
        ));
    }
    Ok(Some(x[a..b].to_vec()))
}

/// Resamples `x` from `from` Hz to `to` Hz (sinc interpolation).
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    use rubato::{Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction};
    if from == to {
        return Ok(x.to_vec());
    }
    let params = SincInterpolationParameters {
        sinc_len: 128,
        f_cutoff: 0.95,
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 128,
        window: WindowFunction::BlackmanHarris2,
    };
    let mut r = SincFixedIn::<f32>::new(to as f64 / from as f64, 1.0, params, x.len(), 1).map_err(|e| e.to_string())?;
    let out = r.process(&[x.to_vec()], None).map_err(|e| e.to_string())?;
    let want = (x.len() as f64 * to as f64 / from as f64).round() as usize;
    let mut y = out.into_iter().next().unwrap_or_default();
    y.resize(want, 0.0);
    Ok(y)
}

/// One listed clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipRef {
    /// File.
    pub path: PathBuf,
    /// Label indices (one for single-label).
    pub labels: Vec<usize>,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Where a manifest lists it (`file:line`); empty for a file found in a folder.
    pub listed: String,
}

/// A Speech Commands tree: `root/CLASS/*.{wav,flac,ogg,mp3}`, with `testing_list.txt` and optional
/// `validation_list.txt` (paths relative to `root`); every other clip is training data. Folders starting with
/// `_` (`_background_noise_`) are not classes.
pub fn speech_commands(root: &Path) -> Result<(Vec<String>, Vec<ClipRef>), DataError> {
    // `_background_noise_/` (and any `_…` folder) holds noise for augmentation, not a class.
    let classes: Vec<String> = super::images::class_folders(root)?.into_iter().filter(|c| !c.starts_with('_')).collect();
    // Each list's names (`class/file.wav`, `/` or a backslash between them), with the line that names them.
    let list = |name: &str| -> Result<std::collections::HashMap<String, String>, DataError> {
        let p = root.join(name);
        if !p.exists() {
            return Ok(Default::default());
        }
        let text = super::layouts::read_text(&p)?;
        let mut out = std::collections::HashMap::new();
        for (i, l) in text.lines().enumerate() {
            // `./yes/x.wav` names `yes/x.wav`: a clip it missed would be trained on, not tested.
            let l = l.trim().replace('\\', "/");
            let mut l = l.as_str();
            while let Some(rest) = l.strip_prefix("./") {
                l = rest.trim_start_matches('/');
            }
            let l = l.to_string();
            if !l.is_empty() {
                out.entry(l).or_insert_with(|| format!("{}:{}", p.display(), i + 1));
            }
        }
        Ok(out)
    };
    let test = list("testing_list.txt")?;
    let val = list("validation_list.txt")?;
    let mut clips = vec![];
    // What the class folders hold that is no clip (a subfolder, another format): named in a warning, not dropped
    // unsaid.
    let mut other: Vec<String> = vec![];
    for (ci, c) in classes.iter().enumerate() {
        let dir = root.join(c);
        let (mut files, rest): (Vec<PathBuf>, Vec<PathBuf>) = std::fs::read_dir(&dir)
            .map_err(|e| DataError::new(&dir, e.to_string()))?
            .flatten()
            .filter(|e| !super::layouts::hidden(&e.file_name()))
            .map(|e| e.path())
            .partition(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "wav" | "flac" | "ogg" | "mp3"))
            });
        other.extend(rest.iter().map(|p| format!("{c}/{}", p.file_name().unwrap_or_default().to_string_lossy())));
        files.sort();
        if files.is_empty() {
            return Err(DataError::new(&dir, "empty class folder: no WAV/FLAC/OGG/MP3 clips; remove it or add clips"));
        }
        for f in files {
            let rel = format!("{c}/{}", f.file_name().unwrap().to_string_lossy());
            let split = if test.contains_key(&rel) {
                "test"
            } else if val.contains_key(&rel) {
                "val"
            } else {
                "train"
            };
            clips.push(ClipRef { path: f, labels: vec![ci], split: split.into(), listed: String::new() });
        }
    }
    // The first absent one in list order, named with its line.
    let mut absent: Vec<(&String, &String)> =
        test.iter().chain(val.iter()).filter(|(name, _)| !root.join(name).exists()).map(|(n, at)| (at, n)).collect();
    absent.sort_by(|a, b| alphanumeric_sort::compare_str(a.0, b.0));
    if let Some((at, name)) = absent.first() {
        let more = if absent.len() > 1 { format!(" ({} listed files are absent in all)", absent.len()) } else { String::new() };
        return Err(DataError::new(
            Path::new(at.as_str()),
            format!("lists `{name}`, which does not exist{more}: is the dataset complete, or the list from another version?"),
        ));
    }
    if !other.is_empty() {
        other.sort();
        let more = if other.len() > 3 { format!(" and {} more", other.len() - 3) } else { String::new() };
        tracing::warn!(
            "{}: {} entries of the class folders are left out, not WAV/FLAC/OGG/MP3 clips (subfolders are not read): {}{more}",
            root.display(),
            other.len(),
            other[..other.len().min(3)].join(", ")
        );
    }
    Ok((classes, clips))
}

/// Whether a manifest's first row is a header: its first column named like a path column (`path`, `file`,
/// `filename`, …) or its second like a label column (`label`, `class`, …), in any case.
fn is_header(rec: &csv::StringRecord) -> bool {
    let name = |k: usize, names: &[&str]| rec.get(k).is_some_and(|f| names.contains(&f.trim().to_ascii_lowercase().as_str()));
    name(0, &["path", "file", "filename", "file_name", "filepath", "file_path", "fname", "audio", "clip", "video", "image", "name"])
        || name(1, &["label", "labels", "class", "classes", "category", "target", "tag", "tags"])
}

/// The split a manifest row names: `train`, `val` or `test`, or a common other name for one of them.
fn split_name(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "train" | "training" => Some("train"),
        "val" | "valid" | "validation" | "dev" => Some("val"),
        "test" | "testing" => Some("test"),
        _ => None,
    }
}

/// A CSV manifest `path,label[,split]` (header row optional, paths relative to the CSV's folder).
/// With `multilabel`, the label field holds several labels separated by `;` or `,` (AudioSet style, quoted).
/// `classes` fixes the class list; empty = sorted labels found.
pub fn csv_manifest(csv_path: &Path, classes: &[String], multilabel: bool) -> Result<(Vec<String>, Vec<ClipRef>), DataError> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    if csv_path.is_dir() {
        return Err(DataError::new(csv_path, "is a folder: format = \"csv\" takes the manifest file itself (`path,label[,split]` rows)"));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(csv_path)
        .map_err(|e| DataError::new(csv_path, e.to_string()))?;
    let mut rows = vec![];
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| DataError::new(csv_path, format!("line {}: {e}", i + 1)))?;
        // A header: the first row, naming no file, with a column name where the path or label would be.
        if i == 0 && rec.get(0).is_some_and(|f| !base.join(f.trim()).is_file()) && is_header(&rec) {
            continue;
        }
        if rec.len() < 2 {
            return Err(DataError::new(csv_path, format!("line {}: expected `path,label[,split]`", i + 1)));
        }
        let labels: Vec<String> = if multilabel {
            rec[1].split([';', ',']).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        } else {
            vec![rec[1].trim().to_string()].into_iter().filter(|s| !s.is_empty()).collect()
        };
        if labels.is_empty() {
            return Err(DataError::new(csv_path, format!("line {}: no label: give the row its class (or remove it)", i + 1)));
        }
        let given = rec.get(2).map(str::trim).filter(|s| !s.is_empty()).unwrap_or("train");
        let Some(split) = split_name(given) else {
            return Err(DataError::new(
                csv_path,
                format!("line {}: split `{given}` is not train, val or test (nor training, valid, validation, dev, testing)", i + 1),
            ));
        };
        let split = split.to_string();
        rows.push((i + 1, base.join(rec[0].trim()), labels, split));
    }
    if rows.is_empty() {
        return Err(DataError::new(csv_path, "has no rows: expected `path,label[,split]` lines (a header line is optional)"));
    }
    // `cat;dog` in a single-label manifest is one class of that name: likely meant as two labels.
    if let Some((line, _, l, _)) = rows.iter().find(|r| !multilabel && r.2.iter().any(|l| l.contains(';'))) {
        tracing::warn!(
            "{}:{line}: label `{}` is one class here; if it lists several labels, set `multilabel = true`",
            csv_path.display(),
            l[0]
        );
    }
    let classes: Vec<String> = if classes.is_empty() {
        let mut s: Vec<String> = rows.iter().flat_map(|r| r.2.clone()).collect();
        s.sort();
        s.dedup();
        s
    } else {
        classes.to_vec()
    };
    let mut clips = vec![];
    for (line, path, labels, split) in rows {
        let mut idx = vec![];
        for l in &labels {
            let Some(k) = classes.iter().position(|c| c == l) else {
                return Err(DataError::new(csv_path, format!("line {line}: label `{l}` is not in the class list")));
            };
            idx.push(k);
        }
        clips.push(ClipRef { path, labels: idx, split, listed: format!("{}:{line}", csv_path.display()) });
    }
    Ok((classes, clips))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn csv_multilabel_and_unknown_label() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.csv");
        std::fs::write(&p, "path,label,split\na.wav,\"dog;cat\",train\nb.wav,cat,test\n").unwrap();
        let (classes, clips) = csv_manifest(&p, &[], true).unwrap();
        assert_eq!(classes, ["cat", "dog"]);
        assert_eq!(clips[0].labels, [1, 0]);
        let err = csv_manifest(&p, &["cat".to_string()], true).unwrap_err();
        assert!(err.message.contains("label `dog` is not in the class list"));
        // An empty label is no class named "": the line is named.
        for multilabel in [false, true] {
            std::fs::write(&p, "path,label,split\na.wav,cat,train\nb.wav,,train\n").unwrap();
            let err = csv_manifest(&p, &[], multilabel).unwrap_err();
            assert!(err.message.contains("line 3: no label"), "{err}");
        }
        std::fs::write(&p, "path,label,split\n").unwrap();
        let err = csv_manifest(&p, &[], false).unwrap_err();
        assert!(err.path == p && err.message.contains("has no rows"), "{err}");
        // Other header names, other split names; a first row naming a file is data, whatever its words.
        std::fs::write(&p, "File,Class,Split\na.wav,dog,Training\nb.wav,cat,valid\nc.wav,cat,dev\n").unwrap();
        let (classes, clips) = csv_manifest(&p, &[], false).unwrap();
        assert_eq!(classes, ["cat", "dog"]);
        assert_eq!(clips.iter().map(|c| c.split.as_str()).collect::<Vec<_>>(), ["train", "val", "val"]);
        crate::data::layouts::touch(&d.path().join("file"));
        std::fs::write(&p, "file,label\nb.wav,cat\n").unwrap();
        assert_eq!(csv_manifest(&p, &[], false).unwrap().1.len(), 2, "`file` exists: a data row");
        std::fs::write(&p, "a.wav,dog,holdout\n").unwrap();
        let err = csv_manifest(&p, &[], false).unwrap_err();
        assert!(err.message.contains("line 1: split `holdout` is not train, val or test"), "{err}");
    }
    /// A file of `tests/fixtures/` (made by its `make_audio_fixtures.sh`).
    #[test]
    fn speech_commands_lists_drop_a_bom_and_an_absent_entry_names_its_list_and_line() {
        let d = tempfile::tempdir().unwrap();
        for f in ["yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/a_nohash_0.wav", "_background_noise_/n.wav"] {
            crate::data::layouts::touch(&d.path().join(f));
        }
        std::fs::write(d.path().join("testing_list.txt"), "\u{feff}yes/a_nohash_0.wav\r\n").unwrap();
        std::fs::write(d.path().join("validation_list.txt"), "./no\\a_nohash_0.wav\n").unwrap();
        let (classes, clips) = speech_commands(d.path()).unwrap();
        assert_eq!(classes, ["no", "yes"]);
        let split = |f: &str| clips.iter().find(|c| c.path.ends_with(f)).map(|c| c.split.clone()).unwrap();
        assert_eq!(
            (split("yes/a_nohash_0.wav"), split("no/a_nohash_0.wav"), split("yes/b_nohash_0.wav")),
            ("test".into(), "val".into(), "train".into())
        );
        std::fs::write(d.path().join("validation_list.txt"), "no/a_nohash_0.wav\nup/x_nohash_0.wav\n").unwrap();
        let e = speech_commands(d.path()).unwrap_err();
        assert!(e.path.ends_with("validation_list.txt:2") && e.message.contains("`up/x_nohash_0.wav`"), "{e}");
    }

    /// A 16-bit mono WAV at 8 kHz whose header declares `declared` samples, holding `held` of them.
    fn wav_bytes(declared: u32, held: u32) -> Vec<u8> {
        let mut b = b"RIFF".to_vec();
        b.extend((36 + 2 * declared).to_le_bytes());
        b.extend(b"WAVEfmt ");
        b.extend(16u32.to_le_bytes());
        b.extend(1u16.to_le_bytes()); // PCM
        b.extend(1u16.to_le_bytes()); // mono
        b.extend(8000u32.to_le_bytes());
        b.extend(16000u32.to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(b"data");
        b.extend((2 * declared).to_le_bytes());
        b.extend((0..held).flat_map(|i| ((i as i16 % 100) * 100).to_le_bytes()));
        b
    }

    #[test]
    fn a_wav_cut_short_is_an_error_a_whole_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.wav");
        std::fs::write(&f, wav_bytes(8000, 8000)).unwrap();
        assert_eq!(decode(&f).unwrap().0.len(), 8000);
        std::fs::write(&f, wav_bytes(8000, 28)).unwrap();
        let e = decode(&f).unwrap_err();
        assert!(e.message.contains("decodes to 28 of the 8000 samples") && e.message.contains("truncated"), "{e}");
        // Written to a pipe: the sizes say 0xFFFFFFFF, the length is unknown, the clip is whole.
        let mut streamed = wav_bytes(8000, 8000);
        streamed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&f, streamed).unwrap();
        assert_eq!(decode(&f).unwrap().0.len(), 8000);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn the_sound_of_a_video_whose_first_track_is_h264_is_its_aac_track() {
        let (x, rate) = decode(&fixture("video_first.mp4")).unwrap();
        assert_eq!(rate, 16000);
        // 1 s of tone (plus at most AAC's priming and last frame), at lavfi's amplitude 1/8: RMS 0.088.
        assert!((16000..16000 + 3 * 1024).contains(&x.len()), "{} samples", x.len());
        let rms = (x[4000..12000].iter().map(|v| v * v).sum::<f32>() / 8000.0).sqrt();
        assert!((rms - 0.125 / 2f32.sqrt()).abs() < 0.02, "rms {rms}");
        let e = decode(&fixture("video_only.mp4")).unwrap_err();
        assert!(e.message.contains("no audio track") && e.message.contains("1 track(s)"), "{e}");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "not a sound").unwrap();
        let e = decode(&d.path().join("notes.txt")).unwrap_err();
        assert!(e.message.contains("AAC in MP4/M4A"), "{e}");
    }

    #[test]
    fn an_mp3s_encoder_delay_and_padding_are_trimmed() {
        // 1 s at 16 kHz, encoded by LAME: 16,000 samples, not LAME's whole frames with its delay in front.
        let (x, rate) = decode(&fixture("tone.mp3")).unwrap();
        assert_eq!((x.len(), rate), (16000, 16000));
        // The tone (lavfi's sine starts at phase 0) is there from the first samples, not after ~25 ms of silence.
        assert!(x[..40].iter().any(|v| v.abs() > 0.05), "{:?}", &x[..40]);
    }

    #[test]
    fn an_ogg_vorbis_clip_ends_where_its_container_says() {
        // 1 s of a 440 Hz tone at 16 kHz written by libsndfile: 16,000 samples, not the last packet's 128 more.
        let (x, rate) = decode(&fixture("tone.ogg")).unwrap();
        assert_eq!((x.len(), rate), (16000, 16000));
        let expected = |i: usize| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin();
        assert!((0..16000).step_by(97).all(|i| (x[i] - expected(i)).abs() < 0.05), "the tone, sample for sample");
    }

    #[test]
    fn a_whole_video_is_cut_to_its_segment() {
        let x: Vec<f32> = (0..30 * 100).map(|i| i as f32).collect(); // 30 s at 100 Hz
        let cut = cut_segment(&x, 100, Segment { start: 20.0, end: 30.0 }).unwrap().unwrap();
        assert_eq!((cut.len(), cut[0]), (1000, 2000.0));
        // A clip as long as its segment (or up to 1 s longer) is the segment already.
        assert_eq!(cut_segment(&x[..1050], 100, Segment { start: 20.0, end: 30.0 }).unwrap(), None);
        let e = cut_segment(&x, 100, Segment { start: 40.0, end: 50.0 }).unwrap_err();
        assert!(e.contains("ends before it starts"), "{e}");
    }

    #[test]
    fn resample_length() {
        let x: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.01).sin()).collect();
        assert_eq!(resample(&x, 8000, 16000).unwrap().len(), 16000);
    }
}
