//! Runs `filesrc ! decodebin ! stablekeypoints ! fakesink` on a video file and prints the
//! keypoints of every frame, read from the buffer metadata (not from bus messages).
//!
//! ```text
//! cargo run -p print-keypoints -- \
//!     out/input.mp4 out/model [out/model/tokens.safetensors]
//! ```

use gst::prelude::*;
use gststablekeypoints::meta::geometry::Frames;
use gststablekeypoints::meta::FrameKeypoints;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(2..=3).contains(&args.len()) {
        eprintln!("usage: print-keypoints VIDEO MODEL_DIR [TOKENS]");
        return ExitCode::FAILURE;
    }
    match run(&args[0], &args[1], args.get(2).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(video: &str, model: &str, tokens: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    // Registers the element in this process: no GST_PLUGIN_PATH needed.
    gststablekeypoints::plugin_register_static()?;

    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", video)
        .build()?;
    let decode = gst::ElementFactory::make("decodebin").build()?;
    let mut skp = gst::ElementFactory::make("stablekeypoints").property("model", model);
    if let Some(t) = tokens {
        skp = skp.property("tokens", t);
    }
    let skp = skp.build()?;
    let sink = gst::ElementFactory::make("fakesink").build()?;
    pipeline.add_many([&src, &decode, &skp, &sink])?;
    src.link(&decode)?;
    skp.link(&sink)?;
    // decodebin exposes its video pad once it knows the stream.
    let skp_weak = skp.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let Some(skp) = skp_weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if let (true, Some(sinkpad)) = (is_video, skp.static_pad("sink")) {
            if !sinkpad.is_linked() {
                let _ = pad.link(&sinkpad);
            }
        }
    });

    sink.static_pad("sink")
        .ok_or("fakesink has no sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, |pad, info| {
            if let Some(buffer) = info.buffer() {
                // The frames' caps: keypoints are only read while they fit the frame.
                let frames = pad.current_caps().and_then(|c| Frames::from_caps(&c));
                print_frame(buffer, frames.as_ref());
            }
            gst::PadProbeReturn::Ok
        });

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("pipeline without bus")?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(format!(
                    "{}: {}",
                    e.src().map(|s| s.path_string()).unwrap_or_default(),
                    e.error()
                )
                .into());
                break;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    result
}

fn print_frame(buffer: &gst::BufferRef, frames: Option<&Frames>) {
    let pts = buffer.pts().map_or("none".to_string(), |t| t.to_string());
    match FrameKeypoints::for_frame(buffer, frames) {
        None => println!("{pts}: no keypoints"),
        Some(Err(e)) => println!("{pts}: {e}"),
        Some(Ok(f)) => {
            let (w, h) = (f.source_width, f.source_height);
            println!(
                "{pts}: {} keypoints on {w}x{h}{}, box {:?}",
                f.keypoints.len(),
                if f.inferred { " (inferred)" } else { "" },
                f.rect
            );
            for k in &f.keypoints {
                let (x, y) = k.pixel(w, h);
                println!(
                    "  {:>3}  x {:7.1}  y {:7.1}  confidence {:.3e}{}",
                    k.id,
                    x,
                    y,
                    k.confidence,
                    if k.visible { "" } else { "  (not visible)" }
                );
            }
        }
    }
}
