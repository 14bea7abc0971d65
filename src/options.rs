//! Detection settings as users give them (the CLI's flags, the element's properties) in one
//! plain struct, and the one mapping from it to the engine's [`DetectOptions`].

use crate::detect::{DetectOptions, PeakMode};
use crate::frame::CropMode;

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
        }
    }
}

impl DetectSettings {
    pub fn to_options(&self) -> DetectOptions {
        DetectOptions {
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
            ..DetectOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_mean_the_tokens_file_and_defaults_agree() {
        assert_eq!(
            DetectSettings::default().to_options(),
            DetectOptions::default()
        );
        let o = DetectSettings {
            input_size: 256,
            map_res: 32,
            augmentations: 3,
            seed: 9,
            noise: false,
            crop: CropMode::CenterCrop,
            weighted_peak: true,
        }
        .to_options();
        assert_eq!(o.input_size, Some(256));
        assert_eq!(o.map_res, Some(32));
        assert_eq!((o.augmentations, o.seed, o.noise), (3, 9, false));
        assert_eq!(o.crop, CropMode::CenterCrop);
        assert_eq!(o.peak, PeakMode::Weighted { radius: 5.0 });
        assert_eq!(o.num_layers, None);
    }
}
