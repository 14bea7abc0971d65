//! The records of a corpus's output folder: `done.json` and `failed.json` per video,
//! `corpus.json` per folder, written atomically; and the temporaries of killed writers.

use super::source::{Source, Video};
use crate::timeline::Gap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stablekeypoints::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const DONE_SCHEMA: &str = "stablekeypoints-done/1";
pub const FAILED_SCHEMA: &str = "stablekeypoints-failed/1";
pub const MANIFEST_SCHEMA: &str = "stablekeypoints-corpus/1";

/// What a record remembers of its input, to tell whether it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputStamp {
    /// Bytes (local files only).
    pub size: Option<u64>,
    /// Modification time in nanoseconds since 1970 (local files only).
    pub mtime_ns: Option<u64>,
}

impl InputStamp {
    /// The size and modification time of a local file; nothing for other URIs.
    pub fn of(source: &Source) -> std::io::Result<Self> {
        let Some(path) = source.local_file() else {
            return Ok(Self::default());
        };
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            return Err(std::io::Error::other("is a folder, not a video file"));
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64);
        Ok(Self {
            size: Some(meta.len()),
            mtime_ns,
        })
    }
}

/// An output file as the record lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub size: u64,
    pub sha256: String,
}

/// `done.json`: the video's outputs are complete for these inputs and settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub schema: String,
    /// The work list's key.
    pub input: String,
    /// The path or URI read.
    pub location: String,
    #[serde(flatten)]
    pub stamp: InputStamp,
    /// Everything that changes the outputs (hashes of tokens, model and pose; the options).
    pub settings: serde_json::Value,
    /// Output file names (in the video's folder) with their sizes and hashes.
    pub outputs: BTreeMap<String, OutputFile>,
    pub frames: u64,
    /// Frames missing between decoded ones (a file damaged in the middle); empty in
    /// records written before it was kept.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Seconds the video took (pipeline start to outputs in place).
    pub seconds: f64,
    /// Unix times (seconds).
    pub started: f64,
    pub finished: f64,
    /// Which attempt succeeded (1 = the first).
    pub attempt: u32,
    pub shard: String,
    pub host: String,
    pub version: String,
}

impl Done {
    /// Whether this record still covers the video: the same input and settings, and every
    /// output it lists present in `folder` with its size.
    pub fn covers(&self, stamp: &InputStamp, settings: &serde_json::Value, folder: &Path) -> bool {
        self.schema == DONE_SCHEMA
            && self.stamp == *stamp
            && self.settings == *settings
            && self.outputs_present(folder)
    }

    pub fn outputs_present(&self, folder: &Path) -> bool {
        self.outputs.iter().all(|(name, f)| {
            std::fs::metadata(folder.join(name)).is_ok_and(|m| m.is_file() && m.len() == f.size)
        })
    }
}

/// `failed.json`: the last attempt's error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub schema: String,
    pub input: String,
    pub location: String,
    #[serde(flatten)]
    pub stamp: InputStamp,
    pub settings: serde_json::Value,
    pub error: String,
    /// Attempts with these inputs and settings so far.
    pub attempts: u32,
    /// Unix time (seconds) of the last attempt.
    pub last_attempt: f64,
    pub shard: String,
    pub host: String,
    pub version: String,
}

impl Failed {
    /// Earlier attempts that count against `--max-attempts`: those with the same input and
    /// settings (a changed input or setting starts afresh).
    pub fn attempts_for(&self, stamp: &InputStamp, settings: &serde_json::Value) -> u32 {
        if self.schema == FAILED_SCHEMA && self.stamp == *stamp && self.settings == *settings {
            self.attempts
        } else {
            0
        }
    }
}

/// One video of `corpus.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestVideo {
    pub input: String,
    pub location: String,
    pub name: String,
}

/// `corpus.json`: what the output folder is for, so that `corpus-status` can count against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    /// `--inputs` as given.
    pub inputs: String,
    pub settings: serde_json::Value,
    pub videos: Vec<ManifestVideo>,
}

impl Manifest {
    pub fn new(inputs: &Path, settings: serde_json::Value, videos: &[Video]) -> Self {
        Manifest {
            schema: MANIFEST_SCHEMA.into(),
            inputs: inputs.to_string_lossy().into_owned(),
            settings,
            videos: videos
                .iter()
                .map(|v| ManifestVideo {
                    input: v.key.clone(),
                    location: v.source.location(),
                    name: v.name.clone(),
                })
                .collect(),
        }
    }
}

/// Reads a record: `None` when the file is absent, an error when it does not parse.
pub fn read_record<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: not a valid record: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `value` as pretty JSON through a temporary file unique to this host, process and
/// call (several tasks of an array may write the same `corpus.json` at once, each from a
/// container where it is PID 1) and a rename.
pub fn write_record<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    bytes.push(b'\n');
    let tmp = unique_temp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// `.NAME.tmp-HOST-PID-N` next to `path`.
pub fn unique_temp_path(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let file = format!(
        ".{name}.tmp-{}-{}-{n}-{nanos}",
        host_name(),
        std::process::id()
    );
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(file),
        None => PathBuf::from(file),
    }
}

/// Removes what interrupted writers left in `folder` (temporary names: `.NAME.tmp...`).
/// Only safe while holding the folder's lock. Returns how many were removed.
pub fn remove_temporaries(folder: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.contains(".tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Seconds since 1970.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name (the pod's, in Kubernetes), for records and temporary names.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{test_dir, DONE};

    #[test]
    fn records_round_trip_and_decide_what_is_done() {
        let d = test_dir("records");
        let settings = serde_json::json!({"tokens_sha256": "ab", "seed": 0});
        let stamp = InputStamp {
            size: Some(10),
            mtime_ns: Some(5),
        };
        std::fs::write(d.join("keypoints.jsonl"), "{}\n").unwrap();
        let done = Done {
            schema: DONE_SCHEMA.into(),
            input: "a.mp4".into(),
            location: "/x/a.mp4".into(),
            stamp,
            settings: settings.clone(),
            outputs: [(
                "keypoints.jsonl".to_string(),
                OutputFile {
                    size: 3,
                    sha256: "00".into(),
                },
            )]
            .into(),
            frames: 1,
            gaps: Vec::new(),
            seconds: 0.5,
            started: 1.0,
            finished: 1.5,
            attempt: 1,
            shard: "0/1".into(),
            host: "h".into(),
            version: "0".into(),
        };
        write_record(&d.join(DONE), &done).unwrap();
        let back: Done = read_record(&d.join(DONE)).unwrap().unwrap();
        assert_eq!(back, done);
        // Flattened stamp: size and mtime_ns at the top level.
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(DONE)).unwrap()).unwrap();
        assert_eq!(raw["size"], 10);
        assert_eq!(raw["mtime_ns"], 5);
        assert!(back.covers(&stamp, &settings, &d));
        let touched = InputStamp {
            mtime_ns: Some(6),
            ..stamp
        };
        assert!(!back.covers(&touched, &settings, &d));
        assert!(!back.covers(
            &stamp,
            &serde_json::json!({"tokens_sha256": "cd", "seed": 0}),
            &d
        ));
        std::fs::write(d.join("keypoints.jsonl"), "{}\n{}\n").unwrap();
        assert!(
            !back.covers(&stamp, &settings, &d),
            "an output of another size"
        );
        assert!(read_record::<Done>(&d.join("absent.json"))
            .unwrap()
            .is_none());
        std::fs::write(d.join("bad.json"), "{").unwrap();
        assert!(read_record::<Done>(&d.join("bad.json")).is_err());
        // Temporaries: removed, records kept.
        std::fs::write(d.join(".keypoints.jsonl.tmp123"), "partial").unwrap();
        std::fs::write(unique_temp_path(&d.join(DONE)), "partial").unwrap();
        assert_eq!(remove_temporaries(&d), 2);
        assert!(d.join(DONE).is_file());
        let failed = Failed {
            schema: FAILED_SCHEMA.into(),
            input: "a.mp4".into(),
            location: "/x/a.mp4".into(),
            stamp,
            settings: settings.clone(),
            error: "boom".into(),
            attempts: 2,
            last_attempt: 1.0,
            shard: "0/1".into(),
            host: "h".into(),
            version: "0".into(),
        };
        assert_eq!(failed.attempts_for(&stamp, &settings), 2);
        assert_eq!(failed.attempts_for(&touched, &settings), 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
