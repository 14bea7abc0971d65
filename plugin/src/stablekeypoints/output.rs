//! The metadata of one frame the inference element resolved, and what goes on its buffer.

use crate::meta::geometry::Signature;
use crate::meta::{
    carrier, semantic_tag, FrameKeypoints, KeypointMeta, ObjectMeta, Origin, TokenIdentity,
};
use crate::overlay::{draw_buffer, frame_scene_all, Blender, DrawSettings};
use crate::pose::Pose;
use stablekeypoints::Keypoint;
use std::sync::Arc;

/// What the entries of a frame share: the frame's format, the model and tokens that gave
/// the keypoints, and the pose that reads landmarks off them.
pub struct FrameContext {
    pub info: gst_video::VideoInfo,
    pub num_keypoints: usize,
    pub model: String,
    pub tokens: TokenIdentity,
    pub pose: Option<Arc<Pose>>,
}

impl FrameContext {
    /// The entry of `keypoints` (of the frame, or of `object`) from `origin`.
    pub fn entry(
        &self,
        keypoints: &[Keypoint],
        object: Option<ObjectMeta>,
        origin: Origin,
        threshold: f32,
    ) -> FrameKeypoints {
        let size = (self.info.width(), self.info.height());
        let identity = (self.num_keypoints, self.model.clone(), self.tokens.clone());
        let mut f = frame_keypoints(keypoints, origin, size, threshold, identity);
        f.object = object;
        // From the keypoints as reported (clamped), so consumers can redo it; start()
        // checked that the pose reads as many keypoints as the detector gives.
        f.pose = self.pose.as_ref().and_then(|p| p.landmarks_of(&f).ok());
        f
    }
}

/// Puts `entries` on `buf` (a frame of `info`): drawn first with `draw`, then as metadata,
/// signed with the picture as it leaves (drawn), so that readers downstream can tell
/// whether a transform moved it under the keypoints. The error is the drawing's.
pub fn attach(
    buf: &mut gst::BufferRef,
    info: &gst_video::VideoInfo,
    entries: &[FrameKeypoints],
    draw: Option<&DrawSettings>,
    blender: &mut Blender,
) -> Result<(), String> {
    if let Some(settings) = draw {
        let overlay = frame_scene_all(info.width(), info.height(), entries, &[], settings);
        draw_buffer(buf, info, &overlay, blender)?;
    }
    FrameKeypoints::attach_all(entries, buf);
    if let Some(signature) = Signature::of_buffer(buf, info) {
        carrier::sign(buf, &signature);
    }
    Ok(())
}

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
