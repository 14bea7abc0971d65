//! A `pose` file (`stablekeypoints eval --save-regressor`) applied to keypoint metadata:
//! shared by the `stablekeypointspose` element and the inference element's `pose`.

use crate::meta::{KeypointMeta, LandmarkMeta, PoseMeta, TokenIdentity};
use stablekeypoints::pose::{PoseModel, Regressor};
use std::path::{Path, PathBuf};

/// A loaded pose file.
#[derive(Debug)]
pub struct Pose {
    pub path: PathBuf,
    regressor: Regressor,
    names: Vec<String>,
    connections: Vec<[u32; 2]>,
    /// The token indices it was fitted with, in keypoint order.
    token_indices: Vec<usize>,
    num_keypoints: usize,
    /// The fingerprint of those tokens, if the file records it.
    tokens_hash: Option<String>,
}

/// Why a pose file cannot be used, as the element error reports it.
#[derive(Debug)]
pub enum PoseError {
    /// The file is missing or not a pose file.
    Load(String),
    /// It does not fit these keypoints (or its regressor is unusable).
    Unusable(String),
}

impl Pose {
    /// Reads a pose file; errors name it.
    pub fn load(path: &Path) -> Result<Self, PoseError> {
        let pose = PoseModel::load(path).map_err(|e| {
            // Name the file once: I/O errors carry the path, the others do not.
            let msg = match e {
                stablekeypoints::Error::Io { source, .. } => source.to_string(),
                e => e.to_string(),
            };
            PoseError::Load(format!("Cannot load pose {}: {}", path.display(), msg))
        })?;
        let regressor = pose.regressor().map_err(|e| {
            PoseError::Unusable(format!("Cannot use pose {}: {}", path.display(), e))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            regressor,
            names: pose.names,
            connections: pose
                .skeleton
                .iter()
                .map(|&[a, b]| [a as u32, b as u32])
                .collect(),
            token_indices: pose.token_indices,
            num_keypoints: pose.num_keypoints,
            tokens_hash: pose.tokens_hash,
        })
    }

    /// Checks that the pose reads the keypoints of tokens with these `indices` and
    /// fingerprint `hash` (described as `source` in the message): same count, same token
    /// indices in the same order, and the same fingerprint when the file records one.
    pub fn check(&self, indices: &[usize], hash: &str, source: &str) -> Result<(), PoseError> {
        let bad = |msg: String| {
            PoseError::Unusable(format!("Cannot use pose {}: {}", self.path.display(), msg))
        };
        if self.num_keypoints != indices.len() {
            return Err(bad(format!(
                "it reads {} keypoints but {source} give {}",
                self.num_keypoints,
                indices.len()
            )));
        }
        if self.token_indices != indices {
            return Err(bad(format!(
                "it was fitted with token indices {:?} but {source} select {:?}",
                self.token_indices, indices
            )));
        }
        match &self.tokens_hash {
            Some(h) if h != hash => Err(bad(format!(
                "it was fitted with tokens of hash {h} but {source} have hash {hash}"
            ))),
            _ => Ok(()),
        }
    }

    /// [`Pose::check`] against the tokens named in the metadata.
    pub fn check_identity(&self, tokens: &TokenIdentity) -> Result<(), PoseError> {
        let indices: Vec<usize> = tokens.indices.iter().map(|&i| i as usize).collect();
        self.check(&indices, &tokens.hash, "the keypoints' tokens")
    }

    /// Landmarks of frame-normalised keypoints in token order, as `eval` regresses them:
    /// `0.5 + (x - 0.5) W` with `x` flattened `x0, y0, x1, y1, ...`.
    pub fn landmarks(&self, keypoints: &[KeypointMeta]) -> Result<PoseMeta, PoseError> {
        if keypoints.len() != self.num_keypoints {
            return Err(PoseError::Unusable(format!(
                "Cannot use pose {}: it reads {} keypoints but the frame has {}",
                self.path.display(),
                self.num_keypoints,
                keypoints.len()
            )));
        }
        let xy: Vec<[f64; 2]> = keypoints
            .iter()
            .map(|k| [f64::from(k.x), f64::from(k.y)])
            .collect();
        Ok(PoseMeta {
            landmarks: self
                .names
                .iter()
                .zip(self.regressor.predict(&xy))
                .map(|(name, [x, y])| LandmarkMeta {
                    name: name.clone(),
                    x: x as f32,
                    y: y as f32,
                })
                .collect(),
            connections: self.connections.clone(),
        })
    }
}

impl std::fmt::Display for PoseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoseError::Load(m) | PoseError::Unusable(m) => f.write_str(m),
        }
    }
}
