//! `detect` and the detection flags `eval` shares with it.

use super::common::{AugmentArgs, CropArg, DeviceArg, ModelTokensArgs, SeedArg};
use super::parse::{bounded, layer_set, noise_level, object_margin};
use clap::{Args, ValueEnum};
use stablekeypoints::limits;
use stablekeypoints::model::LayerSet;
use stablekeypoints::options::NoiseLevel;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::{DetectSettings, Error, Tokens};
use std::path::PathBuf;

/// `--peak` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Peak {
    /// The arg-max pixel centre (the reference).
    #[default]
    Argmax,
    /// The mass-weighted mean within 5 px of the arg-max.
    Weighted,
}

/// Keypoints per object, on the boxes a detector wrote to a file (`detect`, `process`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Objects")]
pub struct BoxesArgs {
    /// Boxes file (JSON lines per frame or COCO detections): keypoints of each box, one record per object (schema stablekeypoints-frame/2); a frame without boxes has no record. Frame i is the i-th image (detect) or decoded frame (process); not with --inputs (one file is the boxes of one video)
    #[arg(long, value_name = "FILE")]
    pub boxes: Option<PathBuf>,
    /// With --boxes: the labels to infer, comma-separated [default: all]
    #[arg(
        long,
        value_name = "LABEL,...",
        requires = "boxes",
        default_value = "",
        hide_default_value = true
    )]
    pub object_class: String,
    /// With --boxes: share of a box's width and height added on each side before the box is squared by --crop (letterbox: black beside the box)
    #[arg(long, value_name = "M", requires = "boxes", default_value_t = 0.15,
          value_parser = object_margin)]
    pub object_margin: f64,
}

impl BoxesArgs {
    /// `--object-class` as names (empty: every label).
    pub fn classes(&self) -> Vec<String> {
        self.object_class
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    }
}

/// How a frame's keypoints are computed: `detect`, `eval` (and the element's options of
/// `process`, which takes the ones the element has).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Detection")]
pub struct DetectArgs {
    /// Square model input side, a multiple of 64 for SD [default: the tokens file's]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE))]
    pub size: Option<usize>,
    /// Attention-map resolution R [default: the tokens file's, 128 for SD]
    #[arg(long, value_name = "R", value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: Option<usize>,
    /// Peak read off each map
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Peak::Argmax)]
    pub peak: Peak,
    /// Test-time augmentation passes [default: 1 = none; eval: 10, every pass a random warp]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub augmentations: Option<usize>,
    /// Zero DDIM noise instead of seeded noise (deterministic per image)
    #[arg(long)]
    pub no_noise: bool,
    /// The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0 (-1 = the last, t = 0) [default: the tokens file's timestep]
    #[arg(long, value_name = "I", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: Option<NoiseLevel>,
    /// Observed layers averaged, e.g. 0,1,2,3 (the reference's --layers) [default: the tokens file's]
    #[arg(long, value_name = "L,...", value_parser = layer_set)]
    pub layers: Option<LayerSet>,
    #[command(flatten)]
    pub augment: AugmentArgs,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl DetectArgs {
    /// `detect`'s settings: one plain pass unless --augmentations; the warp ranges of the
    /// tokens file with the given `--augment-*` flags on top.
    pub fn settings(&self, tokens: &Tokens) -> Result<DetectSettings, Error> {
        Ok(DetectSettings {
            input_size: self.size,
            map_res: self.map_res,
            augmentations: self.augmentations.unwrap_or(1),
            seed: self.seed.seed,
            noise: !self.no_noise,
            crop: self.crop.crop,
            weighted_peak: self.peak == Peak::Weighted,
            noise_level: self.noise_level,
            layers: self.layers,
            augment: if self.augment.given() {
                Some(self.augment.apply(tokens.augment)?)
            } else {
                None
            },
            warp_every_pass: false,
        })
    }
}

/// `detect --format` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table per image.
    #[default]
    Table,
    /// One JSON record per image (the elements' JSON lines schema).
    Json,
    /// One COCO keypoint results document (with --pose, a COCO keypoint dataset).
    Coco,
}

/// Keypoints of images (any size; letterboxed to the model's square input by default).
///
/// Prints one record per image; x, y are pixels of the original image, nx, ny the same
/// normalised to [0, 1], confidence the peak of the keypoint's averaged attention map.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints detect --model out/model photo.jpg
  stablekeypoints detect --model sd15 --tokens taichi.safetensors --augmentations 10 --json *.png
  stablekeypoints detect --model sd15 --tokens taichi.safetensors --pose pose.json --format coco *.png")]
pub struct DetectCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// Write the first image's maps: `maps` [K, R, R] (single pass) and `maps_full` [K, S, S]
    #[arg(long, value_name = "OUT.safetensors")]
    pub dump_maps: Option<PathBuf>,
    /// Output: a table, JSON lines, or COCO keypoint results
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Same as --format json
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Pose file (eval --save-regressor): also the named landmarks and their skeleton
    #[arg(long, value_name = "POSE.json")]
    pub pose: Option<PathBuf>,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub objects: BoxesArgs,
    /// Images (png, jpg)
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

impl DetectCmd {
    /// `--format`, or json with `--json`.
    pub fn output(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.format
        }
    }
}
