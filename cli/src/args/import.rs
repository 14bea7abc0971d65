//! `import-tokens` and `import-pose`: the reference's files.

use super::common::AugmentArgs;
use super::parse::{bounded, layer_set, noise_level};
use clap::{Args, ValueEnum};
use stablekeypoints::model::LayerSet;
use stablekeypoints::options::NoiseLevel;
use stablekeypoints::tokens::MAX_MAP_RES;
use std::path::PathBuf;

/// Convert the reference's embedding.pt and indices.pt (a folder as its main.py saves them)
/// to a tokens file.
///
/// The settings the reference ran with (its defaults unless given) are recorded in the file:
/// input 512, --map-res (its --feature_upsample_res), --noise-level, --layers and the
/// --augment-* ranges.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints import-tokens outputs/ --out celeba.safetensors")]
pub struct ImportTokensCmd {
    /// Folder with embedding.pt ([1, N, D] or [N, D]) and indices.pt ([K])
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Output tokens file
    #[arg(long, value_name = "TOKENS.safetensors")]
    pub out: PathBuf,
    /// The reference's --feature_upsample_res
    #[arg(long, value_name = "R", default_value_t = 128, value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: usize,
    /// The reference's --noise_level
    #[arg(long, value_name = "I", default_value = "-1", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: NoiseLevel,
    /// The reference's --layers
    #[arg(long, value_name = "L,...", default_value = "0,1,2,3", value_parser = layer_set)]
    pub layers: LayerSet,
    #[command(flatten)]
    pub augment: AugmentArgs,
}

/// Label order of the reference's regressor columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabelOrder {
    /// (row, column) per landmark: loaders that swap their labels, as CelebA's and CUB's
    Yx,
    /// (x, y) per landmark: loaders that keep them
    Xy,
}

/// Convert the reference's regressor.pt to a pose file (the element's `pose`).
///
/// The regressor maps the keypoints of the tokens in --tokens (default: the regressor's own
/// folder, holding embedding.pt and indices.pt) to the labelled landmarks.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints import-pose outputs/regressor.pt --label-order yx --names celeba_names.txt --out pose.json")]
pub struct ImportPoseCmd {
    /// The reference's regressor.pt ([2K, 2L])
    #[arg(value_name = "REGRESSOR.pt")]
    pub regressor: PathBuf,
    /// Tokens the regressor was fitted for (a tokens file or a folder of the reference's .pt files) [default: the regressor's folder]
    #[arg(long, value_name = "FILE|DIR")]
    pub tokens: Option<PathBuf>,
    /// Order of each landmark's two label columns in the reference's data loader
    #[arg(long, value_enum)]
    pub label_order: LabelOrder,
    /// Output pose file
    #[arg(long, value_name = "OUT.json")]
    pub out: PathBuf,
    /// Landmark names, one per line [default: landmark0, ...]
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Skeleton: one pair per line, `a b`, indices or names
    #[arg(long, value_name = "FILE")]
    pub skeleton: Option<PathBuf>,
}
