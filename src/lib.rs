//! StableKeypoints core: unsupervised keypoints from Stable Diffusion cross-attention maps
//! (Hedlin et al., CVPR 2024), with candle.
//!
//! GStreamer-free; the plugin crate and the CLI are glue over this library.

// The method: the Stable Diffusion model and its kernels, frames in and keypoints out,
// the learned tokens, their training and the paper's evaluation; the student distilled
// from a model and its tokens, and the estimator that runs either.
pub mod detect;
pub mod estimator;
pub mod eval;
pub mod frame;
pub mod keypoints;
pub mod model;
pub mod ops;
pub mod pose;
pub mod student;
pub mod tokens;
pub mod train;

// Infrastructure: what the method runs on and what the CLI and the elements share.
// Settings and bounds as users give them, errors, files (staged outputs, images, the
// authors' token files, export records), random models for demos and tests, video streams
// (scheduling, smoothing), the object boxes of an upstream detector and the allocator.
pub mod alloc;
pub mod boxes;
pub mod device;
pub mod error;
pub mod export;
pub mod imagefile;
pub mod init;
pub mod limits;
pub mod options;
pub mod stream;
pub mod torchfile;
pub mod track;
pub mod util;

#[cfg(test)]
mod test_util;

pub use detect::{DetectOptions, Detection, Detector, Diagnostics, Item, Keypoint, PeakMode};
pub use error::{Error, Result};
pub use frame::{CropMode, FrameRef, PixelFormat, Region};
pub use model::Model;
pub use options::DetectSettings;
pub use tokens::Tokens;
