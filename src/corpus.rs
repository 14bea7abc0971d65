//! Corpora of videos processed as the tasks of a cluster job array (Kubernetes Indexed Jobs,
//! Slurm arrays): the sorted work list, the deterministic share of each shard, the stable
//! output folder of each video, and the records that let a rerun do only what is missing
//! (`done.json` and `failed.json` per video, `corpus.json` per output folder).
//! GStreamer-free: the CLI runs the videos and decides what is done with these records.
//!
//! Layout of an output folder `OUT/`:
//!
//! ```text
//! OUT/corpus.json                 the work list and the settings (rewritten by every shard)
//! OUT/<name>/keypoints.jsonl      outputs of one video, renamed into place when complete
//! OUT/<name>/done.json            written after the outputs: input size and mtime, settings
//! OUT/<name>/failed.json          the last error and the attempt count
//! OUT/<name>/.lock                held (flock) by the process working on the video
//! ```

use crate::error::{Error, Result};
use crate::limits;
use crate::util::Fnv;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The work list and settings of an output folder.
pub const MANIFEST: &str = "corpus.json";
/// A video's record of completion.
pub const DONE: &str = "done.json";
/// A video's record of failure.
pub const FAILED: &str = "failed.json";
/// The file a worker locks while it works on a video.
pub const LOCK: &str = ".lock";

pub const DONE_SCHEMA: &str = "stablekeypoints-done/1";
pub const FAILED_SCHEMA: &str = "stablekeypoints-failed/1";
pub const MANIFEST_SCHEMA: &str = "stablekeypoints-corpus/1";

/// File name extensions taken as videos when a folder is searched.
pub const VIDEO_EXTENSIONS: [&str; 21] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "flv", "ogv",
    "ogg", "wmv", "3gp", "mxf", "y4m", "h264", "h265", "ivf",
];

/// Where a video is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// Anything GStreamer has a source for (`file://`, `http://`, ...).
    Uri(String),
}

impl Source {
    /// The path or URI, as GStreamer is given it.
    pub fn location(&self) -> String {
        match self {
            Source::File(p) => p.to_string_lossy().into_owned(),
            Source::Uri(u) => u.clone(),
        }
    }

    /// The local file behind a path or a `file://` URI.
    pub fn local_file(&self) -> Option<PathBuf> {
        match self {
            Source::File(p) => Some(p.clone()),
            Source::Uri(u) => file_uri_path(u),
        }
    }
}

/// `scheme://...` (RFC 3986 scheme characters).
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The path of a `file:///path` or `file://localhost/path` URI, percent-decoded.
pub fn file_uri_path(uri: &str) -> Option<PathBuf> {
    let rest = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("FILE://"))?;
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// One video of the work list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Video {
    /// Its identity: the path relative to the searched folder, or the list's line as written.
    pub key: String,
    pub source: Source,
    /// Its output folder's name ([`stable_name`]).
    pub name: String,
}

fn has_video_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The sorted work list of `inputs`: a folder searched recursively for video files (hidden
/// entries, `exclude` and folders holding a [`MANIFEST`] or [`DONE`], i.e. our outputs, are
/// skipped), or a text file of video paths or URIs, one per line (blank lines and `#` lines
/// skipped; relative paths are relative to the list's folder). Sorted by key, so that every
/// shard of a job array computes the same list.
pub fn work_list(inputs: &Path, exclude: Option<&Path>) -> Result<Vec<Video>> {
    // Absolute locations: records and `corpus.json` are read from other working folders.
    let inputs = &std::path::absolute(inputs).unwrap_or_else(|_| inputs.to_path_buf());
    let mut videos = if inputs.is_dir() {
        let mut found = Vec::new();
        let exclude = exclude.and_then(|p| p.canonicalize().ok());
        find_videos(inputs, inputs, exclude.as_deref(), &mut found)?;
        if found.is_empty() {
            return Err(Error::Invalid(format!(
                "--inputs {}: no video files found (extensions {})",
                inputs.display(),
                VIDEO_EXTENSIONS.join(", ")
            )));
        }
        found
    } else if inputs.is_file() {
        if has_video_extension(inputs) {
            return Err(Error::Invalid(format!(
                "--inputs {}: is a video; --inputs takes a list file (one video per line) or a \
                 folder (--input takes one video)",
                inputs.display()
            )));
        }
        read_list(inputs)?
    } else {
        return Err(Error::Io {
            path: inputs.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such list file or folder (--inputs)",
            ),
        });
    };
    videos.sort_by(|a, b| a.key.cmp(&b.key));
    for pair in videos.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(Error::Invalid(format!(
                "--inputs {}: {:?} and {:?} would share the output folder {} (rename one)",
                inputs.display(),
                pair[0].key,
                pair[1].key,
                pair[0].name
            )));
        }
    }
    Ok(videos)
}

fn find_videos(
    root: &Path,
    dir: &Path,
    exclude: Option<&Path>,
    out: &mut Vec<Video>,
) -> Result<()> {
    let io = |e| Error::io(dir, e);
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        entries.push(e.map_err(io)?.path());
    }
    if entries.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == MANIFEST || n == DONE || n == FAILED)
    }) {
        return Ok(());
    }
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            if exclude.is_some_and(|x| p.canonicalize().is_ok_and(|c| c == x)) {
                continue;
            }
            find_videos(root, &p, exclude, out)?;
        } else if has_video_extension(&p) {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push(Video {
                name: stable_name(&key),
                key,
                source: Source::File(p),
            });
        }
    }
    Ok(())
}

fn read_list(list: &Path) -> Result<Vec<Video>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    let base = list
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut videos = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if let Some(first) = seen.insert(entry.to_string(), i + 1) {
            return Err(Error::Invalid(format!(
                "{}:{}: {entry:?} is listed twice (also on line {first})",
                list.display(),
                i + 1
            )));
        }
        let source = if is_uri(entry) {
            Source::Uri(entry.to_string())
        } else {
            let p = Path::new(entry);
            Source::File(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            })
        };
        videos.push(Video {
            key: entry.to_string(),
            name: stable_name(entry),
            source,
        });
    }
    if videos.is_empty() {
        return Err(Error::Invalid(format!(
            "--inputs {}: the list names no videos (one path or URI per line)",
            list.display()
        )));
    }
    Ok(videos)
}

/// The output folder name of a video: its key without the extension, reduced to
/// `[A-Za-z0-9._-]` and 80 characters, then `-` and 12 hex digits of the key's hash (so that
/// keys that reduce alike still differ).
pub fn stable_name(key: &str) -> String {
    let stem = match key.rsplit_once('.') {
        Some((s, ext)) if !s.is_empty() && !ext.contains('/') => s,
        _ => key,
    };
    let mut s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    let mut h = Fnv::new();
    h.write(key.as_bytes());
    format!("{s}-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// This task's share of the work list: video `j` (0-based, in list order) when
/// `j mod count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> std::result::Result<Self, String> {
        limits::check(count, 1, limits::MAX_SHARDS).map_err(|e| format!("shard count {e}"))?;
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the shard count {count} (indices are 0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn takes(&self, j: usize) -> bool {
        j % self.count == self.index
    }

    /// The videos of this shard, with their positions in the list.
    pub fn select<'a, T>(&self, list: &'a [T]) -> Vec<(usize, &'a T)> {
        list.iter()
            .enumerate()
            .filter(|(j, _)| self.takes(*j))
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    /// `I/N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected I/N (shard I of N, 0 <= I < N), got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

/// Kubernetes Indexed Jobs: the pod's index (the Job's `completions` is the count).
pub const ENV_K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The shard count with [`ENV_K8S_INDEX`] (or to override Slurm's).
pub const ENV_SHARD_COUNT: &str = "SKP_SHARD_COUNT";
pub const ENV_SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const ENV_SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";

/// The shard and where it came from (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardChoice {
    pub shard: Shard,
    pub from: String,
}

/// Chooses the shard: `--shard I/N` wins; else `JOB_COMPLETION_INDEX` with `--shard-count`
/// or `SKP_SHARD_COUNT`; else `SLURM_ARRAY_TASK_ID` with the same count overrides or
/// `SLURM_ARRAY_TASK_COUNT`; else the whole list. `env` reads the environment.
pub fn choose_shard(
    flag: Option<Shard>,
    count_flag: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ShardChoice> {
    if let Some(shard) = flag {
        return Ok(ShardChoice {
            shard,
            from: format!("--shard {shard}"),
        });
    }
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let number = |name: &str| -> Result<Option<usize>> {
        match var(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::Invalid(format!("{name}={v:?}: not a non-negative whole number"))
            }),
        }
    };
    let count_override = match count_flag {
        Some(n) => Some((n, format!("--shard-count {n}"))),
        None => number(ENV_SHARD_COUNT)?.map(|n| (n, format!("{ENV_SHARD_COUNT}={n}"))),
    };
    let make = |index: usize, count: usize, from: String| {
        Shard::new(index, count)
            .map(|shard| ShardChoice {
                shard,
                from: from.clone(),
            })
            .map_err(|e| Error::Invalid(format!("{from}: {e}")))
    };
    if let Some(index) = number(ENV_K8S_INDEX)? {
        let Some((count, how)) = count_override else {
            return Err(Error::Invalid(format!(
                "{ENV_K8S_INDEX}={index} is set (a Kubernetes Indexed Job) but not the shard \
                 count: give --shard-count N or {ENV_SHARD_COUNT}=N (the Job's completions), \
                 or --shard I/N"
            )));
        };
        return make(index, count, format!("{ENV_K8S_INDEX}={index} and {how}"));
    }
    if let Some(id) = number(ENV_SLURM_ID)? {
        let (count, how) = match count_override {
            Some(c) => c,
            None => match number(ENV_SLURM_COUNT)? {
                Some(n) => (n, format!("{ENV_SLURM_COUNT}={n}")),
                None => {
                    return Err(Error::Invalid(format!(
                        "{ENV_SLURM_ID}={id} is set but not {ENV_SLURM_COUNT}: give \
                         --shard-count N or --shard I/N"
                    )))
                }
            },
        };
        // The task id is the index as it is: an array numbered 0 to N-1, rerun in part
        // (`--array=3,5`) with SKP_SHARD_COUNT=N, keeps every task's share.
        return make(id, count, format!("{ENV_SLURM_ID}={id} and {how}")).map_err(|e| {
            Error::Invalid(format!(
                "{e}; number the array 0 to N-1 (--array=0-{}) and set {ENV_SHARD_COUNT}=N when \
                 rerunning some of its tasks",
                count.saturating_sub(1)
            ))
        });
    }
    if let Some((_, how)) = count_override {
        return Err(Error::Invalid(format!(
            "{how} without {ENV_K8S_INDEX} or {ENV_SLURM_ID}: give --shard I/N, or run as a \
             task of a job array"
        )));
    }
    Ok(ShardChoice {
        shard: Shard::ALL,
        from: "no shard given: the whole list".into(),
    })
}

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

/// The lock of a video's folder (released when dropped, or when the process dies).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Locks `folder`'s [`LOCK`] file, waiting for a process that holds it. `Ok(None)` when the
/// file system has no locks (the caller goes on without).
pub fn lock_folder(folder: &Path) -> Result<Option<FolderLock>> {
    let path = folder.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.lock() {
        Ok(()) => Ok(Some(FolderLock::holding(file))),
        Err(e) if no_locks(&e) => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

impl FolderLock {
    /// The lock of `file`, which now names this process (for the error of a run refused).
    fn holding(mut file: std::fs::File) -> Self {
        let _ = file
            .set_len(0)
            .and_then(|_| writeln!(file, "process {} on {}", std::process::id(), host_name()));
        FolderLock { _file: file }
    }
}

/// Locks `folder`'s [`LOCK`] file without waiting: when another run holds it, the error
/// names that run (its process and host) and the folder, given with the flag `what`.
/// `Ok(None)` when the file system has no locks.
pub fn try_lock_folder(folder: &Path, what: &str) -> Result<Option<FolderLock>> {
    let path = folder.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FolderLock::holding(file))),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another process".into());
            Err(Error::Invalid(format!(
                "{what} {}: in use by another run ({holder}, holding {}); wait for it to end \
                 or choose another folder",
                folder.display(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) if no_locks(&e) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn no_locks(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(37) // ENOLCK
}

/// Whether another process holds `folder`'s lock now.
pub fn is_locked(folder: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(folder.join(LOCK))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Where a video stands, as `corpus-status` sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Complete for the corpus's settings.
    Done(Box<Done>),
    /// Its last attempt with the corpus's settings failed.
    Failed(Box<Failed>),
    /// A process holds its lock.
    Running,
    /// Done, but with other settings, another input or outputs missing: to redo.
    Stale,
    /// Not started, or stopped before it was done.
    Missing,
}

/// A video of the manifest with its state.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoStatus {
    pub video: ManifestVideo,
    pub state: State,
}

/// Reads `dir`'s manifest and every video's records. An input that is a local file and can be
/// read here is compared with its record's size and mtime; others are taken as unchanged.
pub fn status(dir: &Path) -> Result<(Manifest, Vec<VideoStatus>)> {
    let path = dir.join(MANIFEST);
    let manifest: Manifest = read_record(&path)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no {MANIFEST}: not an output folder of `stablekeypoints process --inputs` \
             (or no shard has started yet)",
            dir.display()
        ))
    })?;
    if manifest.schema != MANIFEST_SCHEMA {
        return Err(Error::Invalid(format!(
            "{}: schema {:?}, expected {MANIFEST_SCHEMA:?}",
            path.display(),
            manifest.schema
        )));
    }
    let videos = manifest
        .videos
        .iter()
        .map(|v| {
            let folder = dir.join(&v.name);
            let source = if is_uri(&v.location) {
                Source::Uri(v.location.clone())
            } else {
                Source::File(PathBuf::from(&v.location))
            };
            let stamp = InputStamp::of(&source).ok();
            let same_input = |s: &InputStamp| stamp.is_none_or(|now| now == *s);
            let done: Option<Done> = read_record(&folder.join(DONE)).ok().flatten();
            let failed: Option<Failed> = read_record(&folder.join(FAILED)).ok().flatten();
            let state = if is_locked(&folder) {
                State::Running
            } else if let Some(d) = done.as_ref().filter(|d| {
                d.settings == manifest.settings
                    && same_input(&d.stamp)
                    && d.outputs_present(&folder)
            }) {
                State::Done(Box::new(d.clone()))
            } else if let Some(f) =
                failed.filter(|f| f.settings == manifest.settings && same_input(&f.stamp))
            {
                State::Failed(Box::new(f))
            } else if done.is_some() {
                State::Stale
            } else {
                State::Missing
            };
            VideoStatus {
                video: v.clone(),
                state,
            }
        })
        .collect();
    Ok((manifest, videos))
}

/// Writes the keypoint lines of every done video, in work-list order, into one file at `out`,
/// each record with `"video"` (the work list's key) first. Returns (videos, lines).
pub fn merge_lines(dir: &Path, videos: &[VideoStatus], out: &Path) -> Result<(usize, u64)> {
    let tmp = unique_temp_path(out);
    let res = (|| -> Result<(usize, u64)> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(out, e))?;
        let mut w = std::io::BufWriter::new(file);
        let (mut n_videos, mut n_lines) = (0, 0);
        for v in videos {
            let State::Done(done) = &v.state else {
                continue;
            };
            if !done.outputs.contains_key("keypoints.jsonl") {
                continue;
            }
            let path = dir.join(&v.video.name).join("keypoints.jsonl");
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let key = serde_json::to_string(&v.video.input).expect("a string serialises");
            for (i, line) in text.lines().enumerate() {
                let rest = line.strip_prefix('{').ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}:{}: not a JSON object line",
                        path.display(),
                        i + 1
                    ))
                })?;
                let sep = if rest.trim_start().starts_with('}') {
                    ""
                } else {
                    ","
                };
                writeln!(w, "{{\"video\":{key}{sep}{rest}").map_err(|e| Error::io(out, e))?;
                n_lines += 1;
            }
            n_videos += 1;
        }
        let file = w.into_inner().map_err(|e| Error::io(out, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(out, e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok((n_videos, n_lines))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
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
    use std::collections::HashMap;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skp-corpus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_list() {
        for n in 1..=9 {
            for len in [0, 1, 5, 17, 100] {
                let list: Vec<usize> = (0..len).collect();
                let mut seen = vec![0; len];
                for i in 0..n {
                    let shard = Shard::new(i, n).unwrap();
                    let mine = shard.select(&list);
                    // Round robin: sizes differ by at most one.
                    assert!(mine.len() == len / n || mine.len() == len / n + 1);
                    for &(j, &v) in &mine {
                        assert_eq!(j, v);
                        assert_eq!(v % n, i);
                        seen[v] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n} len {len}: {seen:?}");
            }
        }
    }

    #[test]
    fn shard_flags_parse_and_name_the_problem() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard::ALL));
        assert!("4/4".parse::<Shard>().unwrap_err().contains("not below"));
        assert!("1/0".parse::<Shard>().unwrap_err().contains("between 1"));
        assert!("3".parse::<Shard>().unwrap_err().contains("I/N"));
        assert!("a/2".parse::<Shard>().unwrap_err().contains("I/N"));
        assert_eq!(Shard::new(3, 8).unwrap().to_string(), "3/8");
    }

    #[test]
    fn the_shard_comes_from_the_flag_then_kubernetes_then_slurm() {
        let s = |i, n| Shard { index: i, count: n };
        let k8s = [(ENV_K8S_INDEX, "2"), (ENV_SHARD_COUNT, "5")];
        let slurm = [(ENV_SLURM_ID, "3"), (ENV_SLURM_COUNT, "4")];
        // An explicit flag wins over everything.
        let c = choose_shard(Some(s(1, 3)), None, env(&k8s)).unwrap();
        assert_eq!((c.shard, c.from.as_str()), (s(1, 3), "--shard 1/3"));
        let c = choose_shard(None, None, env(&k8s)).unwrap();
        assert_eq!(c.shard, s(2, 5));
        assert!(c.from.contains("JOB_COMPLETION_INDEX=2") && c.from.contains("SKP_SHARD_COUNT=5"));
        // --shard-count wins over the variable.
        let c = choose_shard(None, Some(7), env(&k8s)).unwrap();
        assert_eq!(c.shard, s(2, 7));
        // Kubernetes before Slurm.
        let both: Vec<_> = k8s.iter().chain(&slurm).copied().collect();
        assert_eq!(choose_shard(None, None, env(&both)).unwrap().shard, s(2, 5));
        assert_eq!(
            choose_shard(None, None, env(&slurm)).unwrap().shard,
            s(3, 4)
        );
        // A partial rerun of an array of 8 (--array=3,5: 2 tasks) keeps the shard with
        // SKP_SHARD_COUNT, and is refused without it rather than taking another share.
        let rerun = [
            (ENV_SLURM_ID, "5"),
            (ENV_SLURM_COUNT, "2"),
            (ENV_SHARD_COUNT, "8"),
        ];
        assert_eq!(
            choose_shard(None, None, env(&rerun)).unwrap().shard,
            s(5, 8)
        );
        let e = choose_shard(None, None, env(&rerun[..2]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not below the shard count 2") && e.contains("SKP_SHARD_COUNT"),
            "{e}"
        );
        // Nothing: the whole list.
        assert_eq!(
            choose_shard(None, None, env(&[])).unwrap().shard,
            Shard::ALL
        );
        // Errors name the variables.
        let err = |vars: &[(&str, &str)], count| {
            choose_shard(None, count, env(vars))
                .unwrap_err()
                .to_string()
        };
        let e = err(&[(ENV_K8S_INDEX, "1")], None);
        assert!(
            e.contains("JOB_COMPLETION_INDEX=1") && e.contains("--shard-count"),
            "{e}"
        );
        let e = err(&[(ENV_K8S_INDEX, "5"), (ENV_SHARD_COUNT, "5")], None);
        assert!(e.contains("not below the shard count 5"), "{e}");
        let e = err(&[(ENV_K8S_INDEX, "x")], None);
        assert!(e.contains("JOB_COMPLETION_INDEX=\"x\""), "{e}");
        let e = err(&[(ENV_SLURM_ID, "3")], None);
        assert!(e.contains(ENV_SLURM_COUNT), "{e}");
        let e = err(&[(ENV_SLURM_ID, "3"), (ENV_SLURM_COUNT, "3")], None);
        assert!(
            e.contains("not below the shard count 3") && e.contains("--array=0-2"),
            "{e}"
        );
        let e = err(&[], Some(4));
        assert!(e.contains("--shard-count 4 without"), "{e}");
    }

    #[test]
    fn a_folder_gives_its_videos_sorted_without_our_outputs() {
        let d = tmp("folder");
        for f in [
            "b.mp4",
            "a/z.MKV",
            "a/y.mov",
            "notes.txt",
            ".hidden.mp4",
            "c d.webm",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        // An earlier output folder inside the inputs, and one given as exclude.
        std::fs::create_dir_all(d.join("out/a-1")).unwrap();
        std::fs::write(d.join("out/corpus.json"), "{}").unwrap();
        std::fs::write(d.join("out/a-1/annotated.mp4"), "x").unwrap();
        std::fs::create_dir_all(d.join("res")).unwrap();
        std::fs::write(d.join("res/annotated.mp4"), "x").unwrap();
        let list = work_list(&d, Some(&d.join("res"))).unwrap();
        let keys: Vec<&str> = list.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["a/y.mov", "a/z.MKV", "b.mp4", "c d.webm"]);
        assert_eq!(list[2].source, Source::File(d.join("b.mp4")));
        assert!(list[0].name.starts_with("a_y-"), "{}", list[0].name);
        assert!(list[3].name.starts_with("c_d-"), "{}", list[3].name);
        std::fs::write(d.join("notes.txt"), "# nothing yet\n\n").unwrap();
        let e = work_list(&d.join("notes.txt"), None);
        assert!(e.unwrap_err().to_string().contains("names no videos"));
        let e = work_list(&d.join("b.mp4"), None).unwrap_err().to_string();
        assert!(e.contains("is a video"), "{e}");
        let e = work_list(&d.join("nope"), None).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("--inputs"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_list_gives_paths_and_uris_sorted_and_refuses_duplicates() {
        let d = tmp("list");
        let list = d.join("videos.txt");
        std::fs::write(
            &list,
            "# corpus\nclips/b.mp4\n\n  /abs/a.mp4  \nfile:///data/x%20y.mp4\nhttp://host/v.mp4\n",
        )
        .unwrap();
        let v = work_list(&list, None).unwrap();
        let keys: Vec<&str> = v.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/abs/a.mp4",
                "clips/b.mp4",
                "file:///data/x%20y.mp4",
                "http://host/v.mp4"
            ]
        );
        assert_eq!(v[0].source, Source::File(PathBuf::from("/abs/a.mp4")));
        assert_eq!(v[1].source, Source::File(d.join("clips/b.mp4")));
        // Relative to the list's folder, made absolute.
        let here = std::env::current_dir().unwrap();
        let rel = d.strip_prefix(&here).unwrap_or(&d).join("videos.txt");
        let v = work_list(&rel, None).unwrap();
        assert_eq!(v[1].source, Source::File(d.join("clips/b.mp4")));
        assert_eq!(
            v[2].source.local_file(),
            Some(PathBuf::from("/data/x y.mp4"))
        );
        assert_eq!(v[3].source.local_file(), None);
        assert_eq!(v[3].source.location(), "http://host/v.mp4");
        std::fs::write(&list, "a.mp4\nb.mp4\na.mp4\n").unwrap();
        let e = work_list(&list, None).unwrap_err().to_string();
        assert!(e.contains("videos.txt:3") && e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_are_stable_readable_and_distinct() {
        // Hand-checked: FNV-1a of the key, 48 bits.
        let mut h = Fnv::new();
        h.write(b"clips/a b.mp4");
        let hash = format!("{:012x}", h.finish() & 0xffff_ffff_ffff);
        assert_eq!(stable_name("clips/a b.mp4"), format!("clips_a_b-{hash}"));
        assert_ne!(stable_name("clips/a b.mp4"), stable_name("clips/a_b.mp4"));
        assert!(stable_name(".x.mp4").starts_with("_x-"));
        assert!(stable_name("http://h/v.mkv").starts_with("http___h_v-"));
        let long = "x".repeat(300) + ".mp4";
        assert_eq!(stable_name(&long).len(), 80 + 1 + 12);
        assert!(is_uri("s3+x://b/k") && !is_uri("a/b.mp4") && !is_uri("1a://x"));
    }

    #[test]
    fn records_round_trip_and_decide_what_is_done() {
        let d = tmp("records");
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

    #[test]
    fn a_held_lock_is_seen_and_waited_for() {
        let d = tmp("lock");
        assert!(!is_locked(&d));
        let held = lock_folder(&d).unwrap().expect("local file systems lock");
        // Issue 24 (6): a second run is refused at once, naming the one that holds it.
        let e = try_lock_folder(&d, "--out-dir").unwrap_err().to_string();
        let me = format!("process {} on", std::process::id());
        assert!(e.contains("--out-dir") && e.contains(&me), "{e}");
        // flock locks belong to the open file: another open sees it held.
        assert!(is_locked(&d));
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.clone();
        let waiter = std::thread::spawn(move || {
            let _l = lock_folder(&dir).unwrap();
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "the second lock waits");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        assert!(!is_locked(&d));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn merged_lines_carry_the_video_first() {
        let d = tmp("merge");
        let mk = |name: &str, input: &str, lines: &str, state: fn(Done) -> State| {
            std::fs::create_dir_all(d.join(name)).unwrap();
            std::fs::write(d.join(name).join("keypoints.jsonl"), lines).unwrap();
            let done = Done {
                schema: DONE_SCHEMA.into(),
                input: input.into(),
                location: input.into(),
                stamp: InputStamp::default(),
                settings: serde_json::Value::Null,
                outputs: [(
                    "keypoints.jsonl".to_string(),
                    OutputFile {
                        size: lines.len() as u64,
                        sha256: String::new(),
                    },
                )]
                .into(),
                frames: 0,
                seconds: 0.0,
                started: 0.0,
                finished: 0.0,
                attempt: 1,
                shard: "0/1".into(),
                host: "h".into(),
                version: "0".into(),
            };
            VideoStatus {
                video: ManifestVideo {
                    input: input.into(),
                    location: input.into(),
                    name: name.into(),
                },
                state: state(done),
            }
        };
        let videos = [
            mk("a", "a \"q\".mp4", "{\"frame\":0}\n{\"frame\":1}\n", |d| {
                State::Done(Box::new(d))
            }),
            mk("b", "b.mp4", "{\"frame\":9}\n", |_| State::Missing),
            mk("c", "c.mp4", "{}\n", |d| State::Done(Box::new(d))),
        ];
        let out = d.join("all.jsonl");
        assert_eq!(merge_lines(&d, &videos, &out).unwrap(), (2, 3));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"video\":\"a \\\"q\\\".mp4\",\"frame\":0}\n\
             {\"video\":\"a \\\"q\\\".mp4\",\"frame\":1}\n\
             {\"video\":\"c.mp4\"}\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
