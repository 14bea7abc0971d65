//! What a short preroll learns of a video before any work.

use crate::video::{self, caps_size, file_error, make, set_state};
use gst::prelude::*;
use gststablekeypoints::framerate::FrameRate;
use stablekeypoints::Error;
use std::path::Path;

/// What a short preroll learns of the video: its decoded size, frame rate and duration.
pub struct Stream {
    pub(super) width: usize,
    pub(super) height: usize,
    /// `None` for a variable frame rate (caps `framerate=0/1`) or an absurd one.
    pub(super) rate: Option<FrameRate>,
    pub(super) duration: Option<gst::ClockTime>,
}

impl Stream {
    /// Frames in `t` of video, when the frame rate is known.
    pub(super) fn frames_in(&self, t: gst::ClockTime) -> Option<u64> {
        self.rate.map(|r| r.index_at(t))
    }
}

/// Decodes the first frame (PAUSED) to learn the stream's caps and duration, so that a file
/// GStreamer cannot decode fails before any training.
pub fn preroll(path: &Path) -> Result<Stream, Error> {
    let sink = make("fakesink")?;
    let (pipeline, linked) = video::decoding_pipeline(path, &[&sink])?;
    let what = "cannot decode the video with GStreamer";
    let result = (|| {
        set_state(&pipeline, gst::State::Paused, path, what)?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[
                gst::MessageType::AsyncDone,
                gst::MessageType::Error,
                gst::MessageType::Eos,
            ],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                return Err(file_error(
                    path,
                    format!("{what}: {}", video::describe_error(e)),
                ))
            }
            Some(gst::MessageView::AsyncDone(_)) => {}
            _ => {
                return Err(file_error(
                    path,
                    format!("{what}: no video frame within 60 s"),
                ))
            }
        }
        if !linked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(file_error(path, format!("{what}: no video stream found")));
        }
        let caps = sink
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .ok_or_else(|| file_error(path, format!("{what}: the video has no frames")))?;
        let (width, height, _) = caps_size(&caps)
            .ok_or_else(|| file_error(path, format!("{what}: unexpected caps {caps}")))?;
        Ok(Stream {
            width,
            height,
            rate: FrameRate::of_caps(&caps),
            duration: pipeline.query_duration::<gst::ClockTime>(),
        })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
