//! StableKeypoints core: unsupervised keypoints from Stable Diffusion cross-attention maps
//! (Hedlin et al., CVPR 2024), with candle.
//!
//! GStreamer-free; the plugin crate and the CLI are glue over this library.

pub mod alloc;
pub mod detect;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod frame;
pub mod imagefile;
pub mod init;
pub mod keypoints;
pub mod limits;
pub mod model;
pub mod ops;
pub mod options;
pub mod pose;
pub mod stream;
pub mod tokens;
pub mod torchfile;
pub mod track;
pub mod train;
pub mod util;

#[cfg(test)]
mod test_util;

pub use detect::{DetectOptions, Detection, Detector, Keypoint, PeakMode};
pub use error::{Error, Result};
pub use frame::{CropMode, FrameRef, PixelFormat};
pub use model::Model;
pub use options::DetectSettings;
pub use tokens::Tokens;
