//! The elements after the decoder: the inference element, the publishers and the MP4
//! encoding of the drawn frames.

use super::job::ElementJob;
use super::probes::{count_buffers, keep_last_frame, watch_frames};
use super::stream::Stream;
use crate::timeline::Timeline;
use crate::video::make;
use gst::prelude::*;
use stablekeypoints::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// The elements after the decoder, and what counts the frames through them.
pub(super) struct Chain {
    pub(super) elements: Vec<gst::Element>,
    /// The frames decoded (entering the first converter).
    pub(super) timeline: Arc<Mutex<Timeline>>,
    /// The JSON lines publisher.
    pub(super) jsonl: gst::Element,
    /// The COCO publisher, with `coco`.
    pub(super) coco: Option<gst::Element>,
    /// Frames entering the encoder, with `annotated`.
    pub(super) encoded: Option<Arc<AtomicU64>>,
}

/// The element and the outputs of `job`, writing to the staged files `temps` (keypoints
/// first, as [`ElementJob::outputs`] orders them).
pub(super) fn chain(job: &ElementJob, stream: &Stream, temps: &[PathBuf]) -> Result<Chain, Error> {
    let element = inference_element(job)?;
    let first = make("videoconvert")?;
    let timeline = watch_frames(&first, stream.rate);
    let jsonl = publisher(&temps[0])?;
    let mut elements = vec![first];
    if let Some(o) = &job.objects {
        // Frame i of the boxes file is the i-th decoded frame.
        let boxes = make("stablekeypointsboxes")?;
        boxes.set_property("location", o.boxes.to_string_lossy().as_ref());
        boxes.set_property_from_str("frame-index", "count");
        elements.push(boxes);
    }
    elements.extend([element, jsonl.clone()]);
    let coco = if job.coco {
        let p = publisher(temps.last().expect("staged"))?;
        p.set_property_from_str("format", "coco");
        elements.push(p.clone());
        Some(p)
    } else {
        None
    };
    let encoded = if job.annotated {
        let (tail, encoded) = encoding_tail(stream, &temps[1])?;
        elements.extend(tail);
        Some(encoded)
    } else {
        let sink = make("fakesink")?;
        sink.set_property("sync", false);
        elements.push(sink);
        None
    };
    Ok(Chain {
        elements,
        timeline,
        jsonl,
        coco,
        encoded,
    })
}

/// A `stablekeypointspublish` writing to `location`, its records numbered by the source's
/// frame index (frames lost in a damaged file leave their numbers unused).
fn publisher(location: &Path) -> Result<gst::Element, Error> {
    let p = make("stablekeypointspublish")?;
    p.set_property("location", location.to_string_lossy().as_ref());
    p.set_property_from_str("frame-index", "timestamp");
    Ok(p)
}

/// The `stablekeypoints` element, told what `job` says.
fn inference_element(job: &ElementJob) -> Result<gst::Element, Error> {
    let element = make("stablekeypoints")?;
    let path_prop = |name: &str, p: &Path| element.set_property(name, p.to_string_lossy().as_ref());
    path_prop("model", job.model);
    if let Some(vae) = &job.weights.vae {
        path_prop("vae", vae);
    }
    element.set_property("no-ema", job.weights.no_ema);
    // A student needs none (empty: its own).
    if !job.tokens.as_os_str().is_empty() {
        path_prop("tokens", job.tokens);
    }
    if let Some(pose) = job.pose {
        path_prop("pose", pose);
    }
    element.set_property_from_str("crop-mode", job.crop.name());
    element.set_property("augmentations", job.augmentations as u32);
    element.set_property("seed", job.seed);
    element.set_property("noise", job.noise);
    element.set_property("draw", job.annotated);
    element.set_property("draw-ids", job.draw_ids);
    element.set_property("device", job.device.to_string());
    if let Some(o) = &job.objects {
        element.set_property_from_str("inference-region", "roi-list");
        element.set_property("object-class", o.class);
        element.set_property("object-margin", o.margin);
    }
    Ok(element)
}

/// The elements that encode the drawn frames into the MP4 file `location`, and the count of
/// the frames entering the encoder.
fn encoding_tail(
    stream: &Stream,
    location: &Path,
) -> Result<(Vec<gst::Element>, Arc<AtomicU64>), Error> {
    let (w, h) = encoded_size(stream.width, stream.height);
    if (w, h) != (stream.width, stream.height) {
        eprintln!(
            "the annotated video is {w}x{h}: H.264 in MP4 takes even sizes of at least \
             {MIN_ENCODED_SIDE} pixels, the video is {}x{}",
            stream.width, stream.height
        );
    }
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", w as i32)
        .field("height", h as i32)
        .build();
    let filter = make("capsfilter")?;
    filter.set_property("caps", &caps);
    // The encoder gets a thread of its own (a few frames behind inference): on the
    // element's streaming thread x264enc encoded the same frames differently from run to
    // run (GStreamer 1.22), as if it depended on what had run on that thread before.
    let queue = make("queue")?;
    queue.set_property("max-size-buffers", 4u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", 0u64);
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", "veryfast");
    let encoded = count_buffers(&encoder);
    keep_last_frame(&encoder, stream.rate);
    let mux = make("mp4mux")?;
    if stream.rate.is_none() {
        // The automatic time scale is the caps' rate: 0/1 in a variable-rate stream,
        // 1000000000/1 for some MP4 files (which overflows).
        mux.set_property("trak-timescale", 90_000u32);
    }
    let sink = make("filesink")?;
    sink.set_property("location", location.to_string_lossy().as_ref());
    let tail = vec![
        queue,
        make("videoconvert")?,
        make("videoscale")?,
        filter,
        encoder,
        mux,
        sink,
    ];
    Ok((tail, encoded))
}

/// The smallest side of H.264 video in MP4 (`mp4mux` refuses smaller: a pipeline to it never
/// links).
pub const MIN_ENCODED_SIDE: usize = 16;

/// The size the annotated video of a `width x height` video is encoded at: the same, rounded
/// up to even sides (4:2:0), or scaled up (keeping its shape) until both sides are at least
/// [`MIN_ENCODED_SIDE`].
pub fn encoded_size(width: usize, height: usize) -> (usize, usize) {
    let (w, h) = (width.max(1), height.max(1));
    // Scaled by MIN / the shorter side when that is shorter than MIN (rounded up).
    let short = w.min(h);
    let up = |v: usize| {
        if short < MIN_ENCODED_SIDE {
            (v * MIN_ENCODED_SIDE).div_ceil(short)
        } else {
            v
        }
    };
    let even = |v: usize| (v + 1) & !1;
    (even(up(w)), even(up(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_videos_are_scaled_up_to_what_the_encoder_takes() {
        // A video under 16 pixels never linked to mp4mux and `process` waited forever.
        for (size, want) in [
            ((96, 72), (96, 72)),
            ((95, 71), (96, 72)),
            ((1, 1), (16, 16)),
            ((2, 2), (16, 16)),
            ((14, 14), (16, 16)),
            ((640, 8), (1280, 16)),
            ((8, 640), (16, 1280)),
            ((15, 40), (16, 44)),
        ] {
            assert_eq!(encoded_size(size.0, size.1), want, "{size:?}");
        }
    }
}
