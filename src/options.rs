//! Detection settings as users give them (the CLI's flags, the element's properties) in one
//! plain struct, and the one mapping from it to the engine's [`DetectOptions`].

use crate::detect::{DetectOptions, PeakMode};
use crate::error::Result;
use crate::frame::CropMode;
use crate::model::LayerSet;
use crate::ops::schedule::DdimSchedule;
use crate::ops::warp::AugmentRanges;

/// Radius in pixels of [`PeakMode::Weighted`] when chosen by name (`--peak weighted`).
pub const WEIGHTED_PEAK_RADIUS: f32 = 5.0;

/// Detection settings; `Default` is the element's and the CLI's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSettings {
    /// Square model input side; 0 = the tokens file's.
    pub input_size: usize,
    /// Attention-map resolution; 0 = the tokens file's.
    pub map_res: usize,
    /// Test-time augmentation passes (1 = a single unwarped pass; 0 is refused by the
    /// detector).
    pub augmentations: usize,
    /// Seed of the diffusion noise and of the augmentation warps.
    pub seed: u64,
    /// Seeded DDIM noise (as the paper) or none (deterministic per frame).
    pub noise: bool,
    pub crop: CropMode,
    /// Mass-weighted peak within [`WEIGHTED_PEAK_RADIUS`] instead of the arg-max.
    pub weighted_peak: bool,
    /// The reference's `noise_level`: an index into the 50 DDIM timesteps (-1 = the last,
    /// t = 0); None = the tokens file's timestep.
    pub noise_level: Option<isize>,
    /// The observed layers averaged; None = the tokens file's.
    pub layers: Option<LayerSet>,
    /// Test-time augmentation ranges; None = the tokens file's.
    pub augment: Option<AugmentRanges>,
    /// Warp a single pass too (the reference's evaluation).
    pub warp_every_pass: bool,
}

impl Default for DetectSettings {
    fn default() -> Self {
        let d = DetectOptions::default();
        Self {
            input_size: 0,
            map_res: 0,
            augmentations: d.augmentations,
            seed: d.seed,
            noise: d.noise,
            crop: d.crop,
            weighted_peak: false,
            noise_level: None,
            layers: d.layers,
            augment: d.augment,
            warp_every_pass: d.warp_every_pass,
        }
    }
}

/// The timestep of the reference's `noise_level` (an index into its 50 DDIM timesteps,
/// negative from the end: -1 = t = 0, -2 = t = 20, 0 = t = 980).
pub fn timestep_of_noise_level(level: isize) -> Result<usize> {
    DdimSchedule::stable_diffusion().timestep_of_level(level)
}

impl DetectSettings {
    /// The engine's options; an out-of-range `noise_level` is an error.
    pub fn to_options(&self) -> Result<DetectOptions> {
        Ok(DetectOptions {
            input_size: (self.input_size > 0).then_some(self.input_size),
            map_res: (self.map_res > 0).then_some(self.map_res),
            augmentations: self.augmentations,
            seed: self.seed,
            noise: self.noise,
            crop: self.crop,
            peak: if self.weighted_peak {
                PeakMode::Weighted {
                    radius: WEIGHTED_PEAK_RADIUS,
                }
            } else {
                PeakMode::Argmax
            },
            timestep: self.noise_level.map(timestep_of_noise_level).transpose()?,
            layers: self.layers,
            augment: self.augment,
            warp_every_pass: self.warp_every_pass,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_mean_the_tokens_file_and_defaults_agree() {
        assert_eq!(
            DetectSettings::default().to_options().unwrap(),
            DetectOptions::default()
        );
        let augment = AugmentRanges {
            degrees: 5.0,
            ..Default::default()
        };
        let o = DetectSettings {
            input_size: 256,
            map_res: 32,
            augmentations: 3,
            seed: 9,
            noise: false,
            crop: CropMode::CenterCrop,
            weighted_peak: true,
            noise_level: Some(-2),
            layers: Some(LayerSet::from_indices(&[2]).unwrap()),
            augment: Some(augment),
            warp_every_pass: true,
        }
        .to_options()
        .unwrap();
        assert_eq!(o.input_size, Some(256));
        assert_eq!(o.map_res, Some(32));
        assert_eq!((o.augmentations, o.seed, o.noise), (3, 9, false));
        assert_eq!(o.crop, CropMode::CenterCrop);
        assert_eq!(o.peak, PeakMode::Weighted { radius: 5.0 });
        // The reference's noise_level -2 is its second-to-last timestep.
        assert_eq!(o.timestep, Some(20));
        assert_eq!(o.layers.unwrap().indices(), vec![2]);
        assert_eq!((o.augment, o.warp_every_pass), (Some(augment), true));
        let e = DetectSettings {
            noise_level: Some(50),
            ..Default::default()
        }
        .to_options()
        .unwrap_err()
        .to_string();
        assert!(e.contains("noise level 50"), "{e}");
        assert_eq!(timestep_of_noise_level(-1).unwrap(), 0);
        assert_eq!(timestep_of_noise_level(0).unwrap(), 980);
    }
}
