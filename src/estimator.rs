//! What turns frames into keypoints: the teacher (a diffusion model with its keypoint
//! tokens) or a student distilled from it. The CLI and the elements hold one of these and
//! do not care which.

use crate::detect::{Detection, Detector, Item, StageTimes};
use crate::error::Result;
use crate::frame::CropMode;
use crate::student::Student;
use crate::tokens::Tokens;
use std::path::Path;

/// Which tokens the keypoints are those of: their indices in keypoint order and their
/// fingerprint (a student carries its teacher's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeypointIdentity {
    pub indices: Vec<usize>,
    pub hash: String,
}

impl KeypointIdentity {
    pub fn of(tokens: &Tokens) -> Self {
        Self {
            indices: tokens.indices.clone(),
            hash: tokens.fingerprint(),
        }
    }
}

pub enum Estimator {
    Teacher(Box<Detector>),
    Student(Box<Student>),
}

impl Estimator {
    pub fn teacher(detector: Detector) -> Self {
        Self::Teacher(Box::new(detector))
    }

    /// The model path (a student file or a model folder) is a student file.
    pub fn is_student(model: &Path) -> bool {
        crate::student::is_student_file(model)
    }

    /// Keypoints of `items` (frames, regions, prepared inputs), in order, as one batch;
    /// each item's key seeds the teacher's noise and warps (a student has none).
    pub fn detect(&mut self, items: Vec<Item>) -> Result<Vec<Detection>> {
        match self {
            Self::Teacher(d) => d.detect(items),
            Self::Student(s) => s.detect(items),
        }
    }

    /// Records the time of each stage of the detections from now on (`on`), or stops.
    pub fn record_stage_times(&mut self, on: bool) {
        match self {
            Self::Teacher(d) => d.record_stage_times(on),
            Self::Student(s) => s.record_stage_times(on),
        }
    }

    /// The stage times recorded since the previous call.
    pub fn take_stage_times(&mut self) -> StageTimes {
        match self {
            Self::Teacher(d) => d.take_stage_times(),
            Self::Student(s) => s.take_stage_times(),
        }
    }

    pub fn input_size(&self) -> usize {
        match self {
            Self::Teacher(d) => d.input_size(),
            Self::Student(s) => s.info.input_size,
        }
    }

    pub fn num_keypoints(&self) -> usize {
        match self {
            Self::Teacher(d) => d.num_keypoints(),
            Self::Student(s) => s.info.num_keypoints,
        }
    }

    pub fn crop(&self) -> CropMode {
        match self {
            Self::Teacher(d) => d.options().crop,
            Self::Student(s) => s.info.crop,
        }
    }

    pub fn is_student_estimator(&self) -> bool {
        matches!(self, Self::Student(_))
    }
}

/// A `fw` x `fh` RGB frame holding the `side` x `side` picture `cut` at `(x0, y0)`, with its
/// edge pixels repeated around it (so a region's outermost samples read what the cut's do).
#[cfg(test)]
fn around(cut: &[u8], side: usize, (fw, fh): (usize, usize), (x0, y0): (usize, usize)) -> Vec<u8> {
    (0..fh)
        .flat_map(|y| {
            let cy = y.saturating_sub(y0).min(side - 1);
            (0..fw).flat_map(move |x| {
                let cx = x.saturating_sub(x0).min(side - 1);
                cut[(cy * side + cx) * 3..][..3].to_vec()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectOptions;
    use crate::frame::{FrameRef, PixelFormat, Region};
    use crate::init::{init_model, TinyArch};
    use crate::Model;
    use std::sync::Arc;

    #[test]
    fn a_region_gives_the_keypoints_of_its_cut_mapped_into_the_frame() {
        let dir = std::env::temp_dir().join(format!("skp-regions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init_model(&dir, TinyArch::TinySd1, 3, 24, 5).unwrap();
        let model = Arc::new(
            Model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap(),
        );
        let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
        // A 24x24 cut, and a 40x36 frame holding it at (8, 5).
        let (side, (fw, fh), (x0, y0)) = (24usize, (40usize, 36usize), (8usize, 5usize));
        let cut: Vec<u8> = (0..side * side * 3).map(|p| (p * 31 % 251) as u8).collect();
        let frame = around(&cut, side, (fw, fh), (x0, y0));
        let cut_ref = FrameRef::packed(PixelFormat::Rgb, side, side, &cut, side * 3).unwrap();
        let frame_ref = FrameRef::packed(PixelFormat::Rgb, fw, fh, &frame, fw * 3).unwrap();
        let whole = Region {
            x: 0.0,
            y: 0.0,
            w: fw as f64,
            h: fh as f64,
        };
        let region = Region {
            x: x0 as f64,
            y: y0 as f64,
            w: side as f64,
            h: side as f64,
        };
        for noise in [false, true] {
            let opts = DetectOptions {
                noise,
                ..Default::default()
            };
            let mut by_frame =
                Estimator::teacher(Detector::new(model.clone(), &tokens, opts.clone()).unwrap());
            let mut by_region =
                Estimator::teacher(Detector::new(model.clone(), &tokens, opts).unwrap());
            let want = by_frame
                .detect(Item::frames(&[frame_ref, cut_ref], &[7, 8]).unwrap())
                .unwrap();
            let got = by_region
                .detect(Item::regions(&[frame_ref], &[(0, whole), (0, region)], &[7, 8]).unwrap())
                .unwrap();
            assert_eq!(
                want[0], got[0],
                "the whole frame as a region, noise {noise}"
            );
            assert_eq!((got[1].width, got[1].height), (fw, fh));
            for (g, w) in got[1].keypoints.iter().zip(&want[1].keypoints) {
                let x = (x0 as f32 + w.x * side as f32) / fw as f32;
                let y = (y0 as f32 + w.y * side as f32) / fh as f32;
                assert!(
                    (g.x - x).abs() < 1e-4 && (g.y - y).abs() < 1e-4,
                    "{g:?} vs {w:?}"
                );
                assert!((g.score - w.score).abs() <= 1e-4 * w.score.abs().max(1e-3));
            }
            assert!(Item::regions(&[frame_ref], &[(1, region)], &[0]).is_err());
            assert!(Item::regions(&[frame_ref], &[(0, region)], &[]).is_err());
            assert!(by_region
                .detect(Item::regions(&[frame_ref], &[], &[]).unwrap())
                .unwrap()
                .is_empty());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod student_tests {
    use super::*;
    use crate::frame::{FrameRef, PixelFormat, Region};

    /// The committed figure student on regions: the whole frame as a region is the frame,
    /// and a region's keypoints are those of its cut mapped into the frame, as the teacher's.
    #[test]
    fn a_students_regions_are_its_frames_cut() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/figure/student.safetensors");
        let mut est = Estimator::Student(Box::new(
            Student::load(&path, &candle_core::Device::Cpu).unwrap(),
        ));
        let (side, (fw, fh), (x0, y0)) = (96usize, (200usize, 150usize), (60usize, 30usize));
        let cut: Vec<u8> = (0..side * side * 3).map(|p| (p * 37 % 251) as u8).collect();
        let frame = around(&cut, side, (fw, fh), (x0, y0));
        let cut_ref = FrameRef::packed(PixelFormat::Rgb, side, side, &cut, side * 3).unwrap();
        let frame_ref = FrameRef::packed(PixelFormat::Rgb, fw, fh, &frame, fw * 3).unwrap();
        let whole = Region {
            x: 0.0,
            y: 0.0,
            w: fw as f64,
            h: fh as f64,
        };
        let region = Region {
            x: x0 as f64,
            y: y0 as f64,
            w: side as f64,
            h: side as f64,
        };
        let want = est
            .detect(Item::frames(&[frame_ref, cut_ref], &[0, 1]).unwrap())
            .unwrap();
        let got = est
            .detect(Item::regions(&[frame_ref], &[(0, whole), (0, region)], &[0, 1]).unwrap())
            .unwrap();
        assert_eq!(want[0], got[0], "the whole frame as a region");
        for (g, w) in got[1].keypoints.iter().zip(&want[1].keypoints) {
            let x = (x0 as f32 + w.x * side as f32) / fw as f32;
            let y = (y0 as f32 + w.y * side as f32) / fh as f32;
            assert!(
                (g.x - x).abs() < 1e-4 && (g.y - y).abs() < 1e-4,
                "{g:?} vs {w:?}"
            );
        }
    }
}
