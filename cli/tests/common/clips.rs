//! Clips made in process, with the timestamps a test needs (variable rates, lost frames).

use gst::prelude::*;
use std::path::{Path, PathBuf};

/// A 96x72 H.264 clip in `mux` (e.g. `matroskamux`, `mp4mux`) written in process through
/// appsrc: one frame (a square moving down the picture) at each of `times_ms`, lasting
/// until the next one (the last one `last_ms`), with caps `framerate` (0/1: a variable
/// rate). None (with a message) when GStreamer cannot encode it.
pub fn clip_at_times(
    path: &Path,
    times_ms: &[u64],
    last_ms: u64,
    framerate: (i32, i32),
    mux: &str,
) -> Option<PathBuf> {
    gst::init().unwrap();
    let desc = format!(
        "appsrc name=src format=time ! videoconvert ! x264enc ! {mux} ! filesink location=\"{}\"",
        path.display()
    );
    let pipeline = match gst::parse::launch(&desc) {
        Ok(p) => p.downcast::<gst::Pipeline>().unwrap(),
        Err(e) => {
            let msg = format!("cannot make the clip (x264enc or {mux} missing?): {e}");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
    };
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let (w, h) = (96usize, 72usize);
    src.set_caps(Some(
        &gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", w as i32)
            .field("height", h as i32)
            .field("framerate", gst::Fraction::new(framerate.0, framerate.1))
            .build(),
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, &t) in times_ms.iter().enumerate() {
        let mut frame = vec![128u8; w * h * 3 / 2];
        frame[..w * h].fill(40);
        let top = (i * 3) % (h - 16);
        for row in &mut frame[top * w..(top + 16) * w].chunks_mut(w) {
            row[20..36].fill(230);
        }
        let mut b = gst::Buffer::from_mut_slice(frame);
        let next = times_ms.get(i + 1).copied().unwrap_or(t + last_ms);
        let b_mut = b.get_mut().unwrap();
        b_mut.set_pts(gst::ClockTime::from_mseconds(t));
        b_mut.set_duration(gst::ClockTime::from_mseconds(next - t));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Some(path.to_path_buf()),
        other => panic!("making {}: {other:?}", path.display()),
    }
}
