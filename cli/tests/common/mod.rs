//! Shared by the CLI's test binaries: the binary and the test data, temporary folders that
//! clean up, COCO's field rules (`coco`), a pose file with a hand-chosen regressor, and
//! (`clips`) videos with the timestamps a test needs.
#![allow(dead_code)] // each test binary uses its own subset

#[cfg(feature = "video")]
pub mod clips;
#[path = "../../../tests/common/coco.rs"]
mod coco;
#[path = "../../../tests/common/images.rs"]
pub mod images;
#[path = "../../../tests/common/temp.rs"]
mod temp;

pub use coco::*;
pub use temp::*;

use stablekeypoints::pose::{PoseModel, Regressor};
use stablekeypoints::Tokens;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `stablekeypoints` binary, without the job-array variables of a CI runner that is
/// itself a task of an array: the tests choose their shards.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stablekeypoints"));
    for v in [
        "JOB_COMPLETION_INDEX",
        "SKP_SHARD_COUNT",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
    ] {
        c.env_remove(v);
    }
    c
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file or folder under the core's `tests/data`.
pub fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(p)
}

/// The tiny SD1-style model with its tokens.
pub fn tiny_dir() -> PathBuf {
    data("tiny-sd1")
}

pub fn tiny_tokens() -> PathBuf {
    tiny_dir().join("tokens.safetensors")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub const POSE_NAMES: [&str; 3] = ["head", "middle", "centre"];
/// 0-based, as in the pose file.
pub const POSE_SKELETON: [[usize; 2]; 2] = [[0, 1], [1, 2]];

/// The landmarks of [`write_pose`] from normalised keypoints, by hand: keypoint 0; the
/// mean x of keypoints 1 and 2 with 1 - y of keypoint 1; the centre of the frame.
pub fn hand_landmarks(k: &[(f64, f64)]) -> Vec<(f64, f64)> {
    vec![k[0], ((k[1].0 + k[2].0) / 2.0, 1.0 - k[1].1), (0.5, 0.5)]
}

/// Writes a pose file fitted with `tokens` (their indices and fingerprint) whose regressor,
/// `0.5 + (x - 0.5) W`, realises [`hand_landmarks`].
pub fn write_pose(path: &Path, tokens: &Tokens) {
    let (k, l) = (tokens.indices.len(), POSE_NAMES.len());
    let mut w = vec![0f64; 2 * k * 2 * l];
    // Row 2 * keypoint + axis, column 2 * landmark + axis.
    let mut set = |kp: usize, axis: usize, lm: usize, lm_axis: usize, v: f64| {
        w[(2 * kp + axis) * 2 * l + 2 * lm + lm_axis] = v;
    };
    set(0, 0, 0, 0, 1.0);
    set(0, 1, 0, 1, 1.0);
    set(1, 0, 1, 0, 0.5);
    set(2, 0, 1, 0, 0.5);
    set(1, 1, 1, 1, -1.0);
    let reg = Regressor {
        num_keypoints: k,
        num_landmarks: l,
        weights: w,
    };
    let mut pose = PoseModel::new(
        &reg,
        tokens.indices.clone(),
        Some(POSE_NAMES.iter().map(|s| s.to_string()).collect()),
        POSE_SKELETON.to_vec(),
    )
    .unwrap();
    pose.tokens_hash = Some(tokens.fingerprint());
    pose.save(path).unwrap();
}
