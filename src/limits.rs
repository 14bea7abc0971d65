//! Bounds of the counts users set, shared by the CLI's flags and the element's properties so
//! that both refuse the same values, with errors naming the flag or property and the range.
//! Buffers that grow with a count are bounded too: test-time augmentation runs in constant
//! memory (passes are accumulated a few at a time), and the CLI checks the memory its
//! training and video frames need against the memory available before it starts.

/// Test-time augmentation passes per image or frame (`--augmentations`, `augmentations`).
pub const MAX_AUGMENTATIONS: usize = 64;
/// Frames per forward pass (the element's `batch-size`, `bench --batch`).
pub const MAX_BATCH_SIZE: usize = 64;
/// Images per training step (`--batch-size`: accumulated, one at a time).
pub const MAX_TRAIN_BATCH_SIZE: usize = 1024;
/// Timed runs of `bench --runs`.
pub const MAX_RUNS: usize = 10_000;
/// Optimiser steps (`--steps`).
pub const MAX_STEPS: usize = 1_000_000;
/// Token embeddings (`--num-tokens`), and so Gaussian-KL candidates (`--num-candidates`).
pub const MAX_NUM_TOKENS: usize = 4096;
/// Keypoint tokens (`--num-keypoints`).
pub const MAX_NUM_KEYPOINTS: usize = 256;
/// Subjects per image (`--num-subjects`): peaks per map, each masking a disc of 0.05 x the
/// map side around it.
pub const MAX_NUM_SUBJECTS: usize = 64;
/// Images in the final vote (`--num-indices`).
pub const MAX_NUM_INDICES: usize = 100_000;
/// Frames or images kept for training (`--max-frames`).
pub const MAX_FRAMES: usize = 1_000_000;
/// Shards of a corpus (`--shard I/N`, `--shard-count`).
pub const MAX_SHARDS: usize = 1_000_000;
/// Videos processed at once by one `process --inputs` (`--workers`).
pub const MAX_WORKERS: usize = 64;
/// Attempts per video across reruns (`--max-attempts`).
pub const MAX_ATTEMPTS: usize = 1000;

/// Pixels of an image file decoded (`detect`, `eval`, training images): 200 megapixels (a
/// 16384 x 12288 picture), checked from the header before anything is allocated.
pub const MAX_IMAGE_PIXELS: u64 = 200_000_000;

/// `Ok(value)` when `min <= value <= max`, else the message `must be between MIN and MAX`.
pub fn check(value: usize, min: usize, max: usize) -> Result<usize, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}
