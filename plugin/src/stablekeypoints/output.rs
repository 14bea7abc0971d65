//! The metadata of one frame the inference element resolved.

use crate::meta::{semantic_tag, FrameKeypoints, KeypointMeta, Origin, TokenIdentity};
use stablekeypoints::Keypoint;

/// The metadata of a `width` x `height` frame whose `keypoints` (frame-normalised) come
/// from `origin`: positions clamped into the frame, `visible` from `threshold`.
pub fn frame_keypoints(
    keypoints: &[Keypoint],
    origin: Origin,
    (width, height): (u32, u32),
    threshold: f32,
    (num_keypoints, model, tokens): (usize, String, TokenIdentity),
) -> FrameKeypoints {
    FrameKeypoints {
        semantic_tag: semantic_tag(num_keypoints),
        model,
        source_width: width,
        source_height: height,
        inferred: origin.inferred(),
        keypoints: keypoints
            .iter()
            .map(|k| KeypointMeta {
                id: k.id as u32,
                x: k.x.clamp(0.0, 1.0),
                y: k.y.clamp(0.0, 1.0),
                confidence: k.score,
                visible: k.score >= threshold,
            })
            .collect(),
        origin: Some(origin),
        threshold: Some(threshold),
        tokens: Some(tokens),
        ..Default::default()
    }
}
