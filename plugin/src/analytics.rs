//! Optional GstAnalytics keypoint metadata (cargo feature `analytics`, GStreamer >= 1.30):
//! one keypoints group per frame in the buffer's `GstAnalyticsRelationMeta`, attached in
//! addition to the region-of-interest meta (as DL Streamer does during the migration).

use crate::meta::FrameKeypoints;
use gst_analytics::prelude::*;
use gst_analytics::{AnalyticsRelationMeta, KeypointDimensions, KeypointVisibility};

/// Adds the frame's keypoints as a group (pixel positions, confidences, visibility).
pub fn attach(
    frame: &FrameKeypoints,
    buffer: &mut gst::BufferRef,
) -> Result<(), gst::glib::BoolError> {
    let (w, h) = (frame.source_width, frame.source_height);
    let mut positions = Vec::with_capacity(2 * frame.keypoints.len());
    for k in &frame.keypoints {
        let (x, y) = k.pixel(w, h);
        positions.push(x.round() as i32);
        positions.push(y.round() as i32);
    }
    let confidences: Vec<f32> = frame.keypoints.iter().map(|k| k.confidence).collect();
    let visibility: Vec<u8> = frame
        .keypoints
        .iter()
        .map(|k| {
            let v = if k.visible {
                KeypointVisibility::VISIBLE
            } else {
                KeypointVisibility::UNKNOWN
            };
            v.bits() as u8
        })
        .collect();
    if buffer.meta::<AnalyticsRelationMeta>().is_none() {
        AnalyticsRelationMeta::add(buffer);
    }
    let mut meta = buffer
        .meta_mut::<AnalyticsRelationMeta>()
        .ok_or_else(|| gst::glib::bool_error!("no analytics relation meta"))?;
    meta.add_keypoints_group(
        &frame.semantic_tag,
        KeypointDimensions::_2d,
        &positions,
        Some(&confidences),
        Some(&visibility),
        &[],
    )?;
    Ok(())
}
