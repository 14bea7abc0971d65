//! Corpora of videos processed as the tasks of a cluster job array (Kubernetes Indexed Jobs,
//! Slurm arrays), one module per job: [`source`] the sorted work list (folder or list file,
//! paths or URIs) and the stable output folder of each video, [`shard`] the deterministic
//! share of each task, [`records`] the records that let a rerun do only what is missing
//! (`done.json` and `failed.json` per video, `corpus.json` per output folder), [`lock`] the
//! folder locks, [`state`] where each video stands (`corpus-status`). With the `video`
//! feature, [`run`] runs a shard's videos (`process --inputs`) and [`frames`] samples
//! training frames from a corpus (`train --inputs`).
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

#[cfg(feature = "video")]
pub mod frames;
pub mod lock;
pub mod records;
#[cfg(feature = "video")]
pub mod run;
pub mod shard;
pub mod source;
pub mod state;

/// The work list and settings of an output folder.
pub const MANIFEST: &str = "corpus.json";
/// A video's record of completion.
pub const DONE: &str = "done.json";
/// A video's record of failure.
pub const FAILED: &str = "failed.json";
/// The file a worker locks while it works on a video.
pub const LOCK: &str = ".lock";

/// Exit status of `process --inputs` and `corpus-status` when some videos are not done.
pub const PARTLY_DONE: u8 = 3;

/// A fresh temporary folder for a test.
#[cfg(test)]
fn test_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("skp-corpus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
