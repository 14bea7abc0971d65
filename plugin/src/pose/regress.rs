//! A `pose` file (`stablekeypoints eval --save-regressor`) applied to keypoint metadata:
//! shared by the `stablekeypointspose` element and the inference element's `pose`.

use crate::meta::{KeypointMeta, LandmarkMeta, ObjectMeta, PoseMeta, TokenIdentity};
use stablekeypoints::pose::{PoseModel, Regressor};
use std::path::{Path, PathBuf};

/// A loaded pose file.
#[derive(Debug)]
pub struct Pose {
    pub path: PathBuf,
    regressor: Regressor,
    connections: Vec<[u32; 2]>,
    /// The file as read (its token identity checks the keypoints).
    file: PoseModel,
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
            connections: pose
                .skeleton
                .iter()
                .map(|&[a, b]| [a as u32, b as u32])
                .collect(),
            file: pose,
        })
    }

    /// Checks that the pose reads the keypoints of tokens with these `indices` and
    /// fingerprint `hash` (described as `source` in the message):
    /// [`PoseModel::check_tokens`], as the CLI checks it.
    pub fn check(&self, indices: &[usize], hash: &str, source: &str) -> Result<(), PoseError> {
        self.file
            .check_tokens(indices, hash, source)
            .map_err(|msg| {
                PoseError::Unusable(format!("Cannot use pose {}: {}", self.path.display(), msg))
            })
    }

    /// [`Pose::check`] against the tokens named in the metadata.
    pub fn check_identity(&self, tokens: &TokenIdentity) -> Result<(), PoseError> {
        let indices: Vec<usize> = tokens.indices.iter().map(|&i| i as usize).collect();
        self.check(&indices, &tokens.hash, "the keypoints' tokens")
    }

    /// Landmarks of frame-normalised keypoints in token order, as `eval` regresses them:
    /// `0.5 + (x - 0.5) W` with `x` flattened `x0, y0, x1, y1, ...`.
    pub fn landmarks(&self, keypoints: &[KeypointMeta]) -> Result<PoseMeta, PoseError> {
        if keypoints.len() != self.file.num_keypoints {
            return Err(PoseError::Unusable(format!(
                "Cannot use pose {}: it reads {} keypoints but the frame has {}",
                self.path.display(),
                self.file.num_keypoints,
                keypoints.len()
            )));
        }
        let xy: Vec<[f64; 2]> = keypoints
            .iter()
            .map(|k| [f64::from(k.x), f64::from(k.y)])
            .collect();
        Ok(PoseMeta {
            landmarks: self
                .file
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

impl Pose {
    /// Landmarks of an object's keypoints (normalised to a `width` x `height` frame, as are
    /// the landmarks): regressed in the square the model saw (the object's `view`; without
    /// one, the square around its box, which has the same centre), as [`Pose::landmarks`]
    /// regresses a frame's. The regression is linear about the square's centre, so only
    /// that centre matters, not the square's size.
    pub fn landmarks_of_object(
        &self,
        keypoints: &[KeypointMeta],
        object: &ObjectMeta,
        width: u32,
        height: u32,
    ) -> Result<PoseMeta, PoseError> {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let [x, y, bw, bh] = match object.view {
            [_, _, vw, vh] if vw > 0.0 && vh > 0.0 => object.view,
            _ => object.bbox,
        };
        let (cx, cy) = ((x + bw / 2.0) * w, (y + bh / 2.0) * h);
        let side = (bw * w).max(bh * h).max(1.0);
        let in_square: Vec<KeypointMeta> = keypoints
            .iter()
            .map(|k| KeypointMeta {
                x: (k.x * w - cx) / side + 0.5,
                y: (k.y * h - cy) / side + 0.5,
                ..*k
            })
            .collect();
        let mut pose = self.landmarks(&in_square)?;
        for l in &mut pose.landmarks {
            l.x = ((l.x - 0.5) * side + cx) / w;
            l.y = ((l.y - 0.5) * side + cy) / h;
        }
        Ok(pose)
    }
}

impl std::fmt::Display for PoseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoseError::Load(m) | PoseError::Unusable(m) => f.write_str(m),
        }
    }
}
