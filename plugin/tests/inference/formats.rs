//! Every raw format (issue 12): the formats the core does not read go to the model through
//! GStreamer's converter and are drawn by blending. Keypoints equal the core's on the frame
//! converted to RGB, `draw=false` leaves the bytes alone, drawing reads in every format
//! family, padding is never touched, and the literal `filesrc ! decodebin ! stablekeypoints`
//! pipeline runs on clips that real encoders make in those formats.

use gst::prelude::*;
use gst_video::prelude::*;
use gst_video::VideoFormat as F;
use gststablekeypoints::convert::ToRgb;
use gststablekeypoints::overlay::{palette_rgb, Dot, Overlay, Style};
use stablekeypoints::{DetectOptions, Detector};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::common;
use common::*;

mod conversion;
mod decoders;
mod drawing;

fn core_detector() -> Detector {
    core_detector_with(DetectOptions::default())
}

/// Who draws: the inference element's `draw=true`, or `stablekeypointsoverlay` after it.
const DRAWERS: [bool; 2] = [false, true];

/// A harness drawing with `props` (`draw-ids`, `radius`, ...) into frames of `info`: with
/// `draw=true` on the inference element, or (`overlay`) by the overlay element after it.
fn drawing(props: &str, info: &gst_video::VideoInfo, overlay: bool) -> gst_check::Harness {
    if !overlay {
        return harness(&format!("draw=true {props}"), info);
    }
    let mut hn = chain_harness(&format!(
        "stablekeypoints {} ! stablekeypointsoverlay {props}",
        common::props()
    ));
    hn.set_src_caps(info.to_caps().unwrap());
    hn
}

fn bytes(buf: &gst::BufferRef) -> Vec<u8> {
    buf.map_readable().unwrap().to_vec()
}

/// Writes sample `v` (of `bytes` bytes, little-endian) at byte `at`.
fn put(data: &mut [u8], at: usize, bytes: usize, v: u16) {
    data[at..at + bytes].copy_from_slice(&v.to_le_bytes()[..bytes]);
}

fn luma([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

fn pixel(rgb: &[u8], stride: usize, x: usize, y: usize) -> [u8; 3] {
    let p = y * stride + 3 * x;
    [rgb[p], rgb[p + 1], rgb[p + 2]]
}

/// Encodes a short clip with `encode` (a gst-launch fragment from raw video to a muxed
/// stream) into `name`.
fn encode(name: &str, encode: &str) -> PathBuf {
    let path = scratch().join(name);
    let desc = format!(
        "videotestsrc num-buffers=3 pattern=ball ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! videoconvert ! {encode} ! filesink location={}",
        path.display()
    );
    init();
    let p = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("{desc}: {e} (scripts/install-deps.sh installs the encoders)"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    run(&p).unwrap_or_else(|e| panic!("{desc}: {e}"));
    path
}

/// Plays a pipeline to EOS; the error text otherwise.
fn run(p: &gst::Pipeline) -> Result<(), String> {
    p.set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let bus = p.bus().unwrap();
    let mut result = Err("no EOS within 120 s".to_string());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                result = Ok(());
                break;
            }
            gst::MessageView::Error(e) => {
                result = Err(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    result
}

fn harness(extra: &str, info: &gst_video::VideoInfo) -> gst_check::Harness {
    let element = inference_element(extra);
    let mut hn = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    hn.set_src_caps(info.to_caps().unwrap());
    hn
}
