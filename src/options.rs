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

/// The user-facing detection settings: what the CLI's flags and the inference element's
/// properties say, each value already checked where it entered. Both build this one type;
/// [`to_options`](Self::to_options) turns it into the engine's [`DetectOptions`].
/// `Default` is the element's and the CLI's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSettings {
    /// Square model input side; None = the tokens file's.
    pub input_size: Option<usize>,
    /// Attention-map resolution; None = the tokens file's.
    pub map_res: Option<usize>,
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
    /// The reference's `noise_level` (checked where it was given); None = the tokens
    /// file's timestep.
    pub noise_level: Option<NoiseLevel>,
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
            input_size: d.input_size,
            map_res: d.map_res,
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

/// The reference's `noise_level`, checked: an index into its 50 DDIM timesteps 980, 960,
/// ..., 0, negative from the end (-1 = t = 0, -2 = t = 20, 0 = t = 980). Made once where the
/// value enters (the CLI's `--noise-level`, the element's `noise-level`); its timestep is
/// then used as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseLevel {
    level: isize,
    timestep: usize,
}

impl NoiseLevel {
    /// The lowest valid level (the first timestep, t = 980).
    pub const MIN: isize = -50;
    /// The highest valid level (the last timestep, t = 0).
    pub const MAX: isize = 49;

    /// `level` if it is one of the schedule's; the error names it and the valid range.
    pub fn new(level: isize) -> Result<Self> {
        let timestep = DdimSchedule::stable_diffusion().timestep_of_level(level)?;
        Ok(Self { level, timestep })
    }

    /// The level as given.
    pub fn level(self) -> isize {
        self.level
    }

    /// Its DDIM timestep.
    pub fn timestep(self) -> usize {
        self.timestep
    }
}

impl std::fmt::Display for NoiseLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.level.fmt(f)
    }
}

/// The timestep of the reference's `noise_level` (see [`NoiseLevel`]).
pub fn timestep_of_noise_level(level: isize) -> Result<usize> {
    NoiseLevel::new(level).map(NoiseLevel::timestep)
}

impl DetectSettings {
    /// The engine's options. Every value was checked where it entered (the noise level is a
    /// [`NoiseLevel`]), so this cannot fail.
    pub fn to_options(&self) -> DetectOptions {
        DetectOptions {
            input_size: self.input_size,
            map_res: self.map_res,
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
            timestep: self.noise_level.map(NoiseLevel::timestep),
            layers: self.layers,
            augment: self.augment,
            warp_every_pass: self.warp_every_pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree_and_settings_become_options() {
        assert_eq!(
            DetectSettings::default().to_options(),
            DetectOptions::default()
        );
        let augment = AugmentRanges {
            degrees: 5.0,
            ..Default::default()
        };
        let o = DetectSettings {
            input_size: Some(256),
            map_res: Some(32),
            augmentations: 3,
            seed: 9,
            noise: false,
            crop: CropMode::CenterCrop,
            weighted_peak: true,
            noise_level: Some(NoiseLevel::new(-2).unwrap()),
            layers: Some(LayerSet::from_indices(&[2]).unwrap()),
            augment: Some(augment),
            warp_every_pass: true,
        }
        .to_options();
        assert_eq!(o.input_size, Some(256));
        assert_eq!(o.map_res, Some(32));
        assert_eq!((o.augmentations, o.seed, o.noise), (3, 9, false));
        assert_eq!(o.crop, CropMode::CenterCrop);
        assert_eq!(o.peak, PeakMode::Weighted { radius: 5.0 });
        // The reference's noise_level -2 is its second-to-last timestep.
        assert_eq!(o.timestep, Some(20));
        assert_eq!(o.layers.unwrap().indices(), vec![2]);
        assert_eq!((o.augment, o.warp_every_pass), (Some(augment), true));
        // An out-of-range level is refused where it enters.
        let e = NoiseLevel::new(50).unwrap_err().to_string();
        assert!(e.contains("noise level 50"), "{e}");
        assert_eq!(timestep_of_noise_level(-1).unwrap(), 0);
        assert_eq!(timestep_of_noise_level(0).unwrap(), 980);
    }

    #[test]
    fn noise_levels_are_the_schedule_s_indices() {
        for level in [NoiseLevel::MIN, -1, 0, NoiseLevel::MAX] {
            let l = NoiseLevel::new(level).unwrap();
            assert_eq!(l.level(), level);
            assert_eq!(l.to_string(), level.to_string());
        }
        assert_eq!(NoiseLevel::new(NoiseLevel::MIN).unwrap().timestep(), 980);
        assert_eq!(NoiseLevel::new(NoiseLevel::MAX).unwrap().timestep(), 0);
        assert!(NoiseLevel::new(NoiseLevel::MIN - 1).is_err());
        assert!(NoiseLevel::new(NoiseLevel::MAX + 1).is_err());
    }
}
