//! Pad probes that watch the pipeline: how far the decoded streams reached, the frames
//! decoded, the frames encoded, and the last frame's duration in the MP4.

use crate::timeline::Timeline;
use gst::prelude::*;
use gststablekeypoints::framerate::FrameRate;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The furthest stream time (end of a buffer) any decoded stream of `pipeline` reaches, video
/// or not: the container's duration is that of its longest stream (an audio track may
/// outlast the video), so a file is cut short only when no stream reaches that end.
pub(super) fn stream_ends(pipeline: &gst::Pipeline) -> Arc<AtomicU64> {
    let end = Arc::new(AtomicU64::new(0));
    let decodebins = pipeline
        .children()
        .into_iter()
        .filter(|e| e.factory().is_some_and(|f| f.name().ends_with("decodebin")));
    for decode in decodebins {
        let end = end.clone();
        decode.connect_pad_added(move |_, pad| {
            let end = end.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(buffer) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(pts) = buffer.pts() else {
                    return gst::PadProbeReturn::Ok;
                };
                let stop = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                end.fetch_max(stream_time(pad, stop).nseconds(), Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        });
    }
    end
}

/// `t`, a buffer timestamp on `pad`, in stream time (unchanged outside a time segment).
fn stream_time(pad: &gst::Pad, t: gst::ClockTime) -> gst::ClockTime {
    pad.sticky_event::<gst::event::Segment>(0)
        .and_then(|ev| {
            ev.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_stream_time(t))
        })
        .unwrap_or(t)
}

/// `t`, a buffer timestamp on `pad`, in running time (unchanged outside a time segment).
fn running_time(pad: &gst::Pad, t: gst::ClockTime) -> gst::ClockTime {
    pad.sticky_event::<gst::event::Segment>(0)
        .and_then(|ev| {
            ev.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_running_time(t))
        })
        .unwrap_or(t)
}

pub(super) fn lock(t: &Mutex<Timeline>) -> MutexGuard<'_, Timeline> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream times of the frames entering `element`'s sink pad (a stream of `rate`).
pub(super) fn watch_frames(
    element: &gst::Element,
    rate: Option<FrameRate>,
) -> Arc<Mutex<Timeline>> {
    let timeline = Arc::new(Mutex::new(Timeline::new(rate)));
    let t = timeline.clone();
    if let Some(pad) = element.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let time = info.buffer().and_then(|b| b.pts());
            lock(&t).push(time.map(|pts| stream_time(pad, pts)));
            gst::PadProbeReturn::Ok
        });
    }
    timeline
}

/// Keeps the annotated video's last frame in it. mp4mux takes a sample's duration from the
/// next sample's decoding time but the last one's from its buffer, and demuxers cut what is
/// shown after a track's end: x264enc gives 1 ns without a frame rate, and a frame
/// reordered across a long pause is shown after the last sample. So the encoded frames
/// leaving `encoder` last at least until the end of the latest frame that entered it (its
/// timestamp and duration; in a stream without a `rate`, at least the interval before it),
/// compared in running time (x264enc shifts its timestamps by 1000 hours).
pub(super) fn keep_last_frame(encoder: &gst::Element, rate: Option<FrameRate>) {
    let (Some(sink), Some(src)) = (encoder.static_pad("sink"), encoder.static_pad("src")) else {
        return;
    };
    // The last frame's timestamp, and the latest end of a frame, that entered.
    let seen = Arc::new(Mutex::new((None::<gst::ClockTime>, gst::ClockTime::ZERO)));
    let entered = seen.clone();
    sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let own = info.buffer().and_then(|b| b.duration());
        let mut seen = entered.lock().unwrap_or_else(|e| e.into_inner());
        let duration = match rate {
            Some(r) => own.unwrap_or_else(|| r.frame_duration()),
            None => {
                let before = seen.0.and_then(|l| pts.checked_sub(l)).unwrap_or_default();
                own.unwrap_or_default().max(before)
            }
        };
        let end = running_time(pad, pts + duration);
        *seen = (Some(pts), seen.1.max(end));
        gst::PadProbeReturn::Ok
    });
    src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let end = seen.lock().unwrap_or_else(|e| e.into_inner()).1;
            let t = buffer.dts_or_pts().map(|t| running_time(pad, t));
            let wanted = t.and_then(|t| end.checked_sub(t));
            if let Some(d) = wanted.filter(|&w| buffer.duration().is_none_or(|d| d < w)) {
                buffer.make_mut().set_duration(d);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts the buffers entering `element`'s sink pad.
pub(super) fn count_buffers(element: &gst::Element) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    if let Some(pad) = element.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    }
    n
}
