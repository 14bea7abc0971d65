//! Flag groups several commands flatten in: the model and its parts, the tokens, device,
//! seed, crop and the augmentation ranges.

use super::parse::{crop_mode, device, model_path, number_pair};
use clap::Args;
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::ops::warp::AugmentRanges;
use stablekeypoints::{CropMode, Error};
use std::path::PathBuf;

/// `--device`.
#[derive(Args, Clone, Debug)]
pub struct DeviceArg {
    /// Compute device: cpu (f32) or cuda:N (f16; needs a build with the `cuda` feature)
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = device)]
    pub device: DeviceSpec,
}

/// Seed of the diffusion noise and the augmentation warps (detection) or of every random
/// choice (training).
#[derive(Args, Clone, Debug)]
pub struct SeedArg {
    /// Seed of every random choice (noise, augmentation warps, training order)
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

/// `--crop`.
#[derive(Args, Clone, Debug)]
pub struct CropArg {
    /// How a non-square image becomes the square model input
    #[arg(long, value_name = "MODE", default_value_t = CropMode::Letterbox, value_parser = crop_mode())]
    pub crop: CropMode,
}

/// Ranges of the random augmentation warps (the reference's `--augment_degrees`,
/// `--augment_scale`, `--augment_translate`): of training in `train`, of test-time
/// augmentation in `detect` and `eval`.
#[derive(Args, Clone, Debug)]
pub struct AugmentArgs {
    /// Rotation of the random warps: uniform in [-D, D] degrees [default: train: 15; detect, eval: the tokens file's]
    #[arg(long, value_name = "D")]
    pub augment_degrees: Option<f64>,
    /// Scale of the random warps: uniform in [LO, HI] [default: train: 0.8,1.0; detect, eval: the tokens file's]
    #[arg(long, value_name = "LO,HI", value_parser = number_pair)]
    pub augment_scale: Option<[f64; 2]>,
    /// Translation of the random warps per axis, in [-1, 1] image coordinates: uniform in [-X, X] and [-Y, Y] [default: train: 0.25,0.25; detect, eval: the tokens file's]
    #[arg(long, value_name = "X,Y", value_parser = number_pair)]
    pub augment_translate: Option<[f64; 2]>,
}

impl AugmentArgs {
    pub fn given(&self) -> bool {
        self.augment_degrees.is_some()
            || self.augment_scale.is_some()
            || self.augment_translate.is_some()
    }

    /// `base` with the given flags replacing its ranges; a bad range names the flags.
    pub fn apply(&self, base: AugmentRanges) -> Result<AugmentRanges, Error> {
        let r = AugmentRanges {
            degrees: self.augment_degrees.unwrap_or(base.degrees),
            scale: self.augment_scale.unwrap_or(base.scale),
            translate: self.augment_translate.unwrap_or(base.translate),
        };
        r.validate().map_err(|e| {
            Error::Invalid(format!(
                "--augment-degrees/--augment-scale/--augment-translate: {e}"
            ))
        })?;
        Ok(r)
    }
}

/// The model directory and the tokens file (default: the model's own, as the element).
#[derive(Args, Clone, Debug)]
pub struct ModelTokensArgs {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]) or a single-file checkpoint in the original SD layout
    /// (.safetensors, .ckpt); detect and eval also take a student file
    #[arg(long, value_name = "DIR|ID|FILE", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Learned tokens file [default: DIR/tokens.safetensors]
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
}

/// Where the parts of `--model` come from, beside it.
#[derive(Args, Clone, Debug, Default)]
pub struct WeightsArgs {
    /// Take the VAE from this diffusers folder (its vae/, or a VAE folder with config.json)
    /// or single file instead of the model's
    #[arg(long, value_name = "DIR|FILE")]
    pub vae: Option<PathBuf>,
    /// For a single-file checkpoint with EMA weights: use its plain UNet weights instead of
    /// the EMA copies
    #[arg(long)]
    pub no_ema: bool,
}

impl WeightsArgs {
    /// The model `model` names, with these parts.
    pub fn source(&self, model: &std::path::Path) -> stablekeypoints::model::ModelSource {
        stablekeypoints::model::ModelSource {
            model: model.to_path_buf(),
            vae: self.vae.clone(),
            no_ema: self.no_ema,
        }
    }
}

impl ModelTokensArgs {
    pub fn tokens_path(&self) -> PathBuf {
        self.tokens
            .clone()
            .unwrap_or_else(|| self.model.join("tokens.safetensors"))
    }
}
