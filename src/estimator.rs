//! What turns frames into keypoints: the teacher (a diffusion model with its keypoint
//! tokens) or a student distilled from it. The CLI and the elements hold one of these and
//! do not care which.

use crate::detect::{Detection, Detector};
use crate::error::{Error, Result};
use crate::frame::{CropMode, Fit, FrameRef};
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

    /// Keypoints of frames as one batch, frame i being item `keys[i]` (the teacher's noise
    /// and warps; a student has none).
    pub fn detect_frames_keyed(
        &mut self,
        frames: &[FrameRef],
        keys: &[u64],
    ) -> Result<Vec<Detection>> {
        match self {
            Self::Teacher(d) => d.detect_frames_keyed(frames, keys),
            Self::Student(s) => {
                if keys.len() != frames.len() {
                    return Err(Error::Invalid(format!(
                        "{} item keys for {} frames",
                        keys.len(),
                        frames.len()
                    )));
                }
                s.detect_frames(frames)
            }
        }
    }

    /// Keypoints of one frame that is item `key`.
    pub fn detect_frame(&mut self, frame: &FrameRef, key: u64) -> Result<Detection> {
        let mut d = self.detect_frames_keyed(std::slice::from_ref(frame), &[key])?;
        Ok(d.pop().expect("one frame"))
    }

    /// Keypoints of a model input prepared by the caller (`to_model_input`, then e.g. a
    /// mask), as item `key`.
    pub fn detect_prepared(&mut self, input: Vec<f32>, fit: &Fit, key: u64) -> Result<Detection> {
        match self {
            Self::Teacher(d) => {
                d.set_item_key(key);
                d.detect_prepared(input, fit)
            }
            Self::Student(s) => Ok(s
                .detect_inputs(input, std::slice::from_ref(fit))?
                .pop()
                .expect("one input")),
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
