//! `eval`.

use super::common::ModelTokensArgs;
use super::detect::DetectArgs;
use super::parse::{eye_pair, flip_pair};
use clap::{Args, ValueEnum};
use stablekeypoints::eval::Protocol;
use std::path::PathBuf;

/// The dataset metric to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricName {
    /// Tai-Chi-HD: sum of visible L2 errors at 256x256, mean over images
    Taichi,
    /// CelebA (MAFL): mean error / inter-ocular distance, in %
    InterOcular,
    /// CUB: mean error normalised by the image size, in %
    Visible,
    /// DeepFashion: % of landmarks within --pck-px pixels
    Pck,
    /// Human3.6M: error x 128, the better of the labels' order and the left/right swap
    OrientationInvariant,
}

/// `--protocol` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// The reference's eval.py: its regressor and landmarks per metric, its units
    #[default]
    Paper,
    /// Only visible landmarks, per-landmark regressor, PCK pooled with <= in image pixels
    Visibility,
}

impl From<ProtocolName> for Protocol {
    fn from(p: ProtocolName) -> Self {
        match p {
            ProtocolName::Paper => Protocol::Paper,
            ProtocolName::Visibility => Protocol::Visibility,
        }
    }
}

/// Score the keypoints against labelled landmarks: fit the linear keypoints -> landmarks
/// regressor on --train, report --metric on --test.
///
/// LABELS.csv lines: image path (relative to the CSV), then x,y per landmark in pixels
/// (empty or negative = not visible).
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints eval --model sd15 --tokens taichi.safetensors --train taichi_train.csv \\
      --test taichi_test.csv --metric taichi --augmentations 10 --save-regressor pose.json")]
pub struct EvalCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// Labels the regressor is fitted on
    #[arg(long, value_name = "LABELS.csv", required_unless_present = "pose")]
    pub train: Option<PathBuf>,
    /// Score the landmarks of this pose file's regressor instead of fitting one (e.g. a
    /// teacher's pose on its student's keypoints)
    #[arg(long, value_name = "POSE.json", conflicts_with_all = ["train", "save_regressor"])]
    pub pose: Option<PathBuf>,
    /// Labels the metric is computed on
    #[arg(long, value_name = "LABELS.csv")]
    pub test: PathBuf,
    /// The dataset metric
    #[arg(long, value_enum)]
    pub metric: MetricName,
    /// Which definitions: the reference's eval.py (paper) or the visibility-aware variants
    #[arg(long, value_enum, default_value_t = ProtocolName::Paper)]
    pub protocol: ProtocolName,
    /// The eye landmarks of --metric inter-ocular [default: 0,1]
    #[arg(long, value_name = "L,R", value_parser = eye_pair)]
    pub eyes: Option<(usize, usize)>,
    /// Threshold of --metric pck in pixels [default: 6]
    #[arg(long, value_name = "PX")]
    pub pck_px: Option<f64>,
    /// Landmark pairs a left/right flip exchanges, for --metric orientation-invariant [default: the reference's Human3.6M list of 32 landmarks]
    #[arg(long, value_name = "L:R,...", value_delimiter = ',', value_parser = flip_pair)]
    pub flip_pairs: Vec<(usize, usize)>,
    /// One JSON object instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Store the fitted regressor as a pose file (the element's `pose`)
    #[arg(long, value_name = "OUT.json")]
    pub save_regressor: Option<PathBuf>,
    /// Landmark names, one per line [default: landmark0, ...]
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Skeleton of the pose file: one pair per line, `a b`, indices or names
    #[arg(long, value_name = "FILE", requires = "save_regressor")]
    pub skeleton: Option<PathBuf>,
    #[command(flatten)]
    pub detect: DetectArgs,
}
