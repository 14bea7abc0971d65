//! The inference element's properties (names, ranges, defaults and when they may change)
//! and the [`Settings`] they set.

use gst::glib;
use gst::prelude::*;

use super::objects::{parse_classes, ObjectSettings};
use super::{CropModeProp, GapPolicyProp, InferenceRegionProp};
use stablekeypoints::options::{DetectSettings, NoiseLevel};
use stablekeypoints::stream::{GapPolicy, StreamSettings};
use stablekeypoints::CropMode;
use std::path::PathBuf;
use std::time::Duration;

pub(super) const DEFAULT_DEVICE: &str = "cpu";
pub(super) const DEFAULT_INPUT_SIZE: u32 = 0;
pub(super) const DEFAULT_AUGMENTATIONS: u32 = 1;
pub(super) const DEFAULT_SEED: u64 = 0;
pub(super) const DEFAULT_NOISE: bool = true;
/// `noise-level` of the tokens file's timestep (one below the reference's valid indices).
pub(super) const NOISE_LEVEL_FROM_TOKENS: i32 = NoiseLevel::MIN as i32 - 1;
pub(super) const DEFAULT_INFERENCE_INTERVAL: u32 = 1;
pub(super) const DEFAULT_KEYPOINT_THRESHOLD: f64 = 0.0;
pub(super) const DEFAULT_DRAW: bool = false;
pub(super) const DEFAULT_DRAW_IDS: bool = false;
pub(super) const DEFAULT_RADIUS: u32 = 0;
pub(super) const DEFAULT_LINE_WIDTH: u32 = 0;
pub(super) const DEFAULT_BATCH_SIZE: u32 = 1;
pub(super) const MAX_BATCH_SIZE: u32 = stablekeypoints::limits::MAX_BATCH_SIZE as u32;
pub(super) const MAX_AUGMENTATIONS: u32 = stablekeypoints::limits::MAX_AUGMENTATIONS as u32;
pub(super) const DEFAULT_BATCH_TIMEOUT_MS: u32 = 100;
pub(super) const DEFAULT_OBJECT_MARGIN: f64 = 0.15;
pub(super) const DEFAULT_MIN_OBJECT_SIZE: u32 = 16;
pub(super) const DEFAULT_MAX_OBJECTS: u32 = 16;
pub(super) const MAX_MAX_OBJECTS: u32 = 256;
pub(super) const DEFAULT_OBJECT_BATCH_SIZE: u32 = 8;

#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub model: Option<PathBuf>,
    pub vae: Option<PathBuf>,
    pub no_ema: bool,
    pub tokens: Option<PathBuf>,
    pub pose: Option<PathBuf>,
    pub device: String,
    /// `input-size`, `crop-mode`, `augmentations`, `seed`, `noise` and `noise-level`, as the
    /// core takes them (sentinels made `None` by the setter).
    pub detect: DetectSettings,
    pub batch_size: u32,
    pub batch_timeout: u32,
    pub inference_interval: u32,
    pub gap_policy: GapPolicyProp,
    pub keypoint_threshold: f64,
    pub draw: bool,
    pub draw_ids: bool,
    pub radius: u32,
    pub line_width: u32,
    pub inference_region: InferenceRegionProp,
    pub object_class: String,
    pub object_margin: f64,
    pub min_object_size: u32,
    pub max_objects: u32,
    pub object_batch_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            vae: None,
            no_ema: false,
            tokens: None,
            pose: None,
            device: DEFAULT_DEVICE.into(),
            detect: DetectSettings {
                input_size: None,
                crop: CropMode::Letterbox,
                augmentations: DEFAULT_AUGMENTATIONS as usize,
                seed: DEFAULT_SEED,
                noise: DEFAULT_NOISE,
                noise_level: None,
                ..Default::default()
            },
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout: DEFAULT_BATCH_TIMEOUT_MS,
            inference_interval: DEFAULT_INFERENCE_INTERVAL,
            gap_policy: GapPolicyProp::HoldLast,
            keypoint_threshold: DEFAULT_KEYPOINT_THRESHOLD,
            draw: DEFAULT_DRAW,
            draw_ids: DEFAULT_DRAW_IDS,
            radius: DEFAULT_RADIUS,
            line_width: DEFAULT_LINE_WIDTH,
            inference_region: InferenceRegionProp::FullFrame,
            object_class: String::new(),
            object_margin: DEFAULT_OBJECT_MARGIN,
            min_object_size: DEFAULT_MIN_OBJECT_SIZE,
            max_objects: DEFAULT_MAX_OBJECTS,
            object_batch_size: DEFAULT_OBJECT_BATCH_SIZE,
        }
    }
}

impl Settings {
    /// With `inference-region=roi-list`, which objects are inferred by a detector that
    /// squares boxes as `crop` says.
    pub(super) fn objects(&self, crop: CropMode) -> Option<ObjectSettings> {
        (self.inference_region == InferenceRegionProp::RoiList).then(|| ObjectSettings {
            crop,
            classes: parse_classes(&self.object_class),
            margin: self.object_margin,
            min_size: self.min_object_size,
            max_objects: self.max_objects.max(1) as usize,
            batch: self.object_batch_size.max(1) as usize,
        })
    }

    /// What the core's scheduler is told.
    pub(super) fn stream(&self) -> StreamSettings {
        StreamSettings {
            interval: self.inference_interval.max(1) as u64,
            gap: match self.gap_policy {
                GapPolicyProp::None => GapPolicy::None,
                GapPolicyProp::HoldLast => GapPolicy::HoldLast,
            },
            batch_size: self.batch_size.max(1) as usize,
            batch_timeout: (self.batch_timeout > 0)
                .then(|| Duration::from_millis(self.batch_timeout as u64)),
        }
    }
}

pub(super) fn specs() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("model")
            .nick("Model")
            .blurb(
                "Stable Diffusion model directory in diffusers layout (unet/ and vae/), a hub id \
                 found in the local Hugging Face cache (org/name[@revision]), a single-file \
                 checkpoint in the original SD layout (.safetensors, .ckpt), or a \
                 student file of `stablekeypoints distill` (real time on a CPU; the diffusion \
                 options noise, noise-level, augmentations and input-size do not apply to it)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("vae")
            .nick("VAE")
            .blurb("Take the VAE from this diffusers folder (its vae/, or a VAE folder with config.json) or single file instead of the model's")
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("no-ema")
            .nick("No EMA")
            .blurb("For a single-file checkpoint with EMA weights: use its plain UNet weights instead of the EMA copies")
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("tokens")
            .nick("Tokens")
            .blurb("Learned tokens file (safetensors); default: <model>/tokens.safetensors")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("pose")
            .nick("Pose")
            .blurb("Pose file from `stablekeypoints eval --save-regressor`: regress named landmarks and a skeleton from the keypoints, as stablekeypointspose does (checked against the tokens at start)")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("device")
            .nick("Device")
            .blurb("Compute device: cpu (f32), or cuda:N (f16) when built with the cuda feature")
            .default_value(Some(DEFAULT_DEVICE))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("input-size")
            .nick("Input size")
            .blurb("Side of the square model input in pixels, a multiple of 64 for SD (0 = from the tokens file)")
            .maximum(4096)
            .default_value(DEFAULT_INPUT_SIZE)
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("crop-mode", CropModeProp::from(CropMode::default()))
            .nick("Crop mode")
            .blurb("How a non-square frame becomes the square model input")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("augmentations")
            .nick("Augmentations")
            .blurb("Test-time augmentation passes per inference (1 = none)")
            .minimum(1)
            .maximum(MAX_AUGMENTATIONS)
            .default_value(DEFAULT_AUGMENTATIONS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("seed")
            .nick("Seed")
            .blurb("Seed of the diffusion noise and of the augmentation warps (per frame: the seed and the frame's index since the start or the last flush)")
            .default_value(DEFAULT_SEED)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("noise")
            .nick("Noise")
            .blurb("Add seeded diffusion noise at the timestep (as the paper); off = deterministic per frame")
            .default_value(DEFAULT_NOISE)
            .mutable_ready()
            .build(),
        glib::ParamSpecInt::builder("noise-level")
            .nick("Noise level")
            .blurb("The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0, negative from the end (-1 = t = 0, -2 = t = 20); -51 = the tokens file's timestep")
            .minimum(NOISE_LEVEL_FROM_TOKENS)
            .maximum(NoiseLevel::MAX as i32)
            .default_value(NOISE_LEVEL_FROM_TOKENS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("batch-size")
            .nick("Batch size")
            .blurb("Frames inferred together in one forward pass (adds latency: frames wait for their batch)")
            .minimum(1)
            .maximum(MAX_BATCH_SIZE)
            .default_value(DEFAULT_BATCH_SIZE)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("batch-timeout")
            .nick("Batch timeout")
            .blurb("With batch-size > 1: infer a partial batch when a frame arrives this many ms after its first frame (0 = never)")
            .default_value(DEFAULT_BATCH_TIMEOUT_MS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("inference-interval")
            .nick("Inference interval")
            .blurb("Run inference on every N-th frame (1 = every frame); see gap-policy. With roi-list, an object first seen on a skipped frame is inferred on it")
            .minimum(1)
            .default_value(DEFAULT_INFERENCE_INTERVAL)
            .mutable_playing()
            .build(),
        glib::ParamSpecEnum::builder_with_default("gap-policy", GapPolicyProp::HoldLast)
            .nick("Gap policy")
            .blurb("Keypoints of frames without inference; for interpolation add stablekeypointstrack gap-policy=interpolate")
            .mutable_playing()
            .build(),
        glib::ParamSpecDouble::builder("keypoint-threshold")
            .nick("Keypoint threshold")
            .blurb("Keypoints with a lower confidence are kept but marked not visible (and not drawn)")
            .minimum(0.0)
            .default_value(DEFAULT_KEYPOINT_THRESHOLD)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("draw")
            .nick("Draw")
            .blurb("Draw the visible keypoints (and with pose the skeleton) into the frames, as stablekeypointsoverlay does")
            .default_value(DEFAULT_DRAW)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("draw-ids")
            .nick("Draw ids")
            .blurb("Draw each keypoint's id beside it (with draw=true)")
            .default_value(DEFAULT_DRAW_IDS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("radius")
            .nick("Radius")
            .blurb("Radius of the drawn keypoints in pixels (0 = from the frame size: max(3, min(width, height) / 100), 10 at 1080p)")
            .maximum(1024)
            .default_value(DEFAULT_RADIUS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("line-width")
            .nick("Line width")
            .blurb("Width of the pose skeleton's lines in pixels (0 = half the radius, at least 2)")
            .maximum(1024)
            .default_value(DEFAULT_LINE_WIDTH)
            .mutable_playing()
            .build(),
        glib::ParamSpecEnum::builder_with_default("inference-region", InferenceRegionProp::FullFrame)
            .nick("Inference region")
            .blurb("full-frame: keypoints of the whole frame; roi-list: keypoints of each object an upstream detector attached as a region-of-interest meta (top-down, as gvaclassify inference-region=roi-list), attached to that object's meta; a frame without objects is not inferred")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("object-class")
            .nick("Object class")
            .blurb("With roi-list: the region-of-interest types (roi_type, e.g. person) to infer, comma-separated; empty = all")
            .default_value(Some(""))
            .mutable_playing()
            .build(),
        glib::ParamSpecDouble::builder("object-margin")
            .nick("Object margin")
            .blurb("With roi-list: share of an object's box width and height added on each side before the box is squared by crop-mode (letterbox: black beside the box, so that other objects beside it are not seen) and inferred")
            .minimum(0.0)
            .maximum(2.0)
            .default_value(DEFAULT_OBJECT_MARGIN)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("min-object-size")
            .nick("Minimum object size")
            .blurb("With roi-list: objects whose box has a shorter side below this many pixels are skipped (counted in stats as objects-small)")
            .default_value(DEFAULT_MIN_OBJECT_SIZE)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("max-objects")
            .nick("Maximum objects")
            .blurb("With roi-list: objects inferred per frame at most, the largest first (the others are counted in stats as objects-over-max)")
            .minimum(1)
            .maximum(MAX_MAX_OBJECTS)
            .default_value(DEFAULT_MAX_OBJECTS)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("object-batch-size")
            .nick("Object batch size")
            .blurb("With roi-list: object crops inferred together in one forward pass (batch-size still counts frames)")
            .minimum(1)
            .maximum(MAX_BATCH_SIZE)
            .default_value(DEFAULT_OBJECT_BATCH_SIZE)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb("frames-processed, frames-inferred, frames-skipped (late, QoS), frames-interval-skipped (not due under inference-interval), mean-inference-ms, last-inference-ms (a batch's time per frame), warmup-ms; with roi-list: objects-inferred, objects-held (keypoints held, moved with the box), objects-small, objects-over-max, rois-clipped (reaching past the frame), rois-skipped (empty or outside the frame)")
            .read_only()
            .build(),
    ]
}

/// Sets property `name` of `s` (the type was checked by GObject).
pub(super) fn set(s: &mut Settings, name: &str, value: &glib::Value) {
    let path = |v: &glib::Value| {
        v.get::<Option<String>>()
            .expect("type checked upstream")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let get = || value.get().expect("type checked upstream");
    match name {
        "model" => s.model = path(value),
        "vae" => s.vae = path(value),
        "no-ema" => s.no_ema = value.get().expect("type checked upstream"),
        "tokens" => s.tokens = path(value),
        "pose" => s.pose = path(value),
        "device" => {
            s.device = value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .unwrap_or_else(|| DEFAULT_DEVICE.into())
        }
        "input-size" => {
            let size: u32 = get();
            s.detect.input_size = (size != DEFAULT_INPUT_SIZE).then_some(size as usize)
        }
        "crop-mode" => {
            s.detect.crop = value
                .get::<CropModeProp>()
                .expect("type checked upstream")
                .into()
        }
        "augmentations" => {
            s.detect.augmentations = value.get::<u32>().expect("type checked upstream") as usize
        }
        "seed" => s.detect.seed = value.get().expect("type checked upstream"),
        "noise" => s.detect.noise = value.get().expect("type checked upstream"),
        "noise-level" => {
            let level: i32 = value.get().expect("type checked upstream");
            s.detect.noise_level = (level != NOISE_LEVEL_FROM_TOKENS).then(|| {
                NoiseLevel::new(level as isize)
                    .expect("the property's range is the valid levels and the sentinel")
            })
        }
        "batch-size" => s.batch_size = get(),
        "batch-timeout" => s.batch_timeout = get(),
        "inference-interval" => s.inference_interval = get(),
        "gap-policy" => s.gap_policy = value.get().expect("type checked upstream"),
        "keypoint-threshold" => s.keypoint_threshold = value.get().expect("type checked upstream"),
        "draw" => s.draw = value.get().expect("type checked upstream"),
        "draw-ids" => s.draw_ids = value.get().expect("type checked upstream"),
        "radius" => s.radius = get(),
        "line-width" => s.line_width = get(),
        "inference-region" => s.inference_region = value.get().expect("type checked upstream"),
        "object-class" => {
            s.object_class = value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .unwrap_or_default()
        }
        "object-margin" => s.object_margin = value.get().expect("type checked upstream"),
        "min-object-size" => s.min_object_size = get(),
        "max-objects" => s.max_objects = get(),
        "object-batch-size" => s.object_batch_size = get(),
        _ => unimplemented!(),
    }
}

/// The value of property `name` of `s` (not `stats`, which is not a setting).
pub(super) fn get(s: &Settings, name: &str) -> glib::Value {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).to_value();
    match name {
        "model" => path(&s.model),
        "vae" => path(&s.vae),
        "no-ema" => s.no_ema.to_value(),
        "tokens" => path(&s.tokens),
        "pose" => path(&s.pose),
        "device" => s.device.to_value(),
        "input-size" => s
            .detect
            .input_size
            .map_or(DEFAULT_INPUT_SIZE, |n| n as u32)
            .to_value(),
        "crop-mode" => CropModeProp::from(s.detect.crop).to_value(),
        "augmentations" => (s.detect.augmentations as u32).to_value(),
        "seed" => s.detect.seed.to_value(),
        "noise" => s.detect.noise.to_value(),
        "noise-level" => s
            .detect
            .noise_level
            .map_or(NOISE_LEVEL_FROM_TOKENS, |l| l.level() as i32)
            .to_value(),
        "batch-size" => s.batch_size.to_value(),
        "batch-timeout" => s.batch_timeout.to_value(),
        "inference-interval" => s.inference_interval.to_value(),
        "gap-policy" => s.gap_policy.to_value(),
        "keypoint-threshold" => s.keypoint_threshold.to_value(),
        "draw" => s.draw.to_value(),
        "draw-ids" => s.draw_ids.to_value(),
        "radius" => s.radius.to_value(),
        "line-width" => s.line_width.to_value(),
        "inference-region" => s.inference_region.to_value(),
        "object-class" => s.object_class.to_value(),
        "object-margin" => s.object_margin.to_value(),
        "min-object-size" => s.min_object_size.to_value(),
        "max-objects" => s.max_objects.to_value(),
        "object-batch-size" => s.object_batch_size.to_value(),
        _ => unimplemented!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the properties' ranges admit reaches the core's settings (the sentinels
    /// as `None`) and reads back unchanged.
    #[test]
    fn sentinels_become_none_and_values_read_back() {
        let mut s = Settings::default();
        for level in NOISE_LEVEL_FROM_TOKENS..=NoiseLevel::MAX as i32 {
            set(&mut s, "noise-level", &level.to_value());
            assert_eq!(
                s.detect.noise_level.map(NoiseLevel::level),
                (level != NOISE_LEVEL_FROM_TOKENS).then_some(level as isize)
            );
            assert_eq!(get(&s, "noise-level").get::<i32>().unwrap(), level);
        }
        for (size, want) in [(0u32, None), (256, Some(256))] {
            set(&mut s, "input-size", &size.to_value());
            assert_eq!(s.detect.input_size, want);
            assert_eq!(get(&s, "input-size").get::<u32>().unwrap(), size);
        }
    }
}
