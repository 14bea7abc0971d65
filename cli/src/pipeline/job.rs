//! What the element is told for every video of a run, and the files it writes.

use crate::args::{ProcessCmd, WeightsArgs};
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::util::Inputs;
use stablekeypoints::CropMode;
use std::path::{Path, PathBuf};

/// What the element is told for every video of a run, and which outputs it writes.
pub struct ElementJob<'a> {
    /// A model folder, single file or a student file.
    pub model: &'a Path,
    pub weights: &'a WeightsArgs,
    /// Empty with a student and no `--tokens`.
    pub tokens: &'a Path,
    pub pose: Option<&'a Path>,
    pub crop: CropMode,
    pub augmentations: usize,
    pub seed: u64,
    pub noise: bool,
    pub draw_ids: bool,
    pub device: DeviceSpec,
    /// `annotated.mp4` (else only the keypoints).
    pub annotated: bool,
    /// `keypoints.coco.json` (COCO keypoint results, from `stablekeypointspublish`).
    pub coco: bool,
    /// Keypoints per object on these boxes (`stablekeypointsboxes`, `inference-region=roi-list`).
    pub objects: Option<Objects<'a>>,
}

/// `--boxes` and the object flags, as the elements take them.
pub struct Objects<'a> {
    /// The boxes file (frame i: the i-th decoded frame).
    pub boxes: &'a Path,
    /// `object-class`: comma-separated labels, empty for all.
    pub class: &'a str,
    pub margin: f64,
}

impl<'a> ElementJob<'a> {
    pub fn new(c: &'a ProcessCmd, tokens: &'a Path) -> Self {
        ElementJob {
            model: &c.model,
            weights: &c.weights,
            tokens,
            pose: c.pose.as_deref(),
            crop: c.crop.crop,
            augmentations: c.element.pass.augmentations,
            seed: c.seed.seed,
            noise: !c.element.pass.no_noise,
            draw_ids: c.element.draw_ids,
            device: c.device.device,
            annotated: !c.no_annotated,
            coco: c.coco,
            objects: c.objects.boxes.as_deref().map(|boxes| Objects {
                boxes,
                class: &c.objects.object_class,
                margin: c.objects.object_margin,
            }),
        }
    }

    /// What a run on `input` reads: no output may replace one of these.
    pub fn inputs(&self, input: &Path) -> Inputs {
        let mut inputs = Inputs::new();
        inputs.add("--input", input).add("--model", self.model);
        if !self.tokens.as_os_str().is_empty() {
            inputs.add("--tokens", self.tokens);
        }
        if let Some(pose) = self.pose {
            inputs.add("--pose", pose);
        }
        if let Some(o) = &self.objects {
            inputs.add("--boxes", o.boxes);
        }
        inputs
    }

    /// The output files of a video, in `out_dir`.
    pub fn outputs(&self, out_dir: &Path) -> Vec<PathBuf> {
        let mut v = vec![out_dir.join(KEYPOINTS)];
        if self.annotated {
            v.push(out_dir.join(ANNOTATED));
        }
        if self.coco {
            v.push(out_dir.join(COCO));
        }
        v
    }
}

pub const KEYPOINTS: &str = "keypoints.jsonl";
pub const ANNOTATED: &str = "annotated.mp4";
pub const COCO: &str = "keypoints.coco.json";
