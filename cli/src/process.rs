//! `process`: the offline path for a video. Trains tokens on the video unless `--tokens` is
//! given, then runs every frame through the `stablekeypoints` element in a GStreamer
//! pipeline of this process, writing `keypoints.jsonl` (the element's `json-location`) and
//! an annotated `annotated.mp4`:
//!
//! ```text
//! filesrc ! decodebin ! videoconvert ! stablekeypoints ... draw=true ! videoconvert
//!   ! videoscale ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink
//! ```
//!
//! The element is this build's (registered statically from the plugin crate);
//! `SKP_PLUGIN_PATH` loads another build of it instead.

use crate::args::ProcessCmd;
use crate::interrupt;
use crate::progress::Progress;
use crate::train::{self, TrainJob};
use crate::video::{self, caps_size, file_error, make, set_state, LOG_EVERY};
use gst::prelude::*;
use stablekeypoints::util::StagedOutputs;
use stablekeypoints::{CropMode, DetectOptions, Detector, Error, Model, Tokens};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Environment variable naming another build of the plugin: the `.so` itself or a folder
/// holding it.
pub const PLUGIN_ENV: &str = "SKP_PLUGIN_PATH";

/// Makes the `stablekeypoints` element available: this build's, or the one `SKP_PLUGIN_PATH`
/// names.
fn register_element() -> Result<(), Error> {
    video::init()?;
    match std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            let loaded = if p.is_file() {
                gst::Plugin::load_file(&p)
                    .map(|_| ())
                    .map_err(|e| format!("cannot load it: {e}"))
            } else if p.is_dir() {
                if gst::Registry::get().scan_path(&p)
                    || gst::ElementFactory::find("stablekeypoints").is_some()
                {
                    Ok(())
                } else {
                    Err("no GStreamer plugin in that folder".into())
                }
            } else {
                Err("no such plugin file or folder".into())
            };
            loaded.map_err(|m| Error::Invalid(format!("{PLUGIN_ENV}={}: {m}", p.display())))?;
        }
        None => gststablekeypoints::plugin_register_static().map_err(|e| {
            Error::Invalid(format!("cannot register the stablekeypoints element: {e}"))
        })?,
    }
    if gst::ElementFactory::find("stablekeypoints").is_none() {
        return Err(Error::Invalid(
            "the GStreamer element stablekeypoints is not available".into(),
        ));
    }
    Ok(())
}

/// What a short preroll learns of the video: its decoded size, frame rate and duration.
struct Stream {
    width: usize,
    height: usize,
    fps: Option<(u64, u64)>,
    duration: Option<gst::ClockTime>,
}

impl Stream {
    /// How far short of the declared duration decoding may end: 1.5 frames (the last frame's
    /// rounding), 50 ms without a frame rate.
    fn slack(&self) -> gst::ClockTime {
        match self.fps {
            Some((n, d)) => gst::ClockTime::from_nseconds(1_500_000_000 * d / n.max(1)),
            None => gst::ClockTime::from_mseconds(50),
        }
    }

    /// Frames in `t` of video, when the frame rate is known.
    fn frames_in(&self, t: gst::ClockTime) -> Option<u64> {
        let (n, d) = self.fps?;
        // Nearest: durations are rounded to nanoseconds.
        let den = d as u128 * 1_000_000_000;
        Some(((t.nseconds() as u128 * n as u128 + den / 2) / den) as u64)
    }
}

/// Decodes the first frame (PAUSED) to learn the stream's caps and duration, so that a file
/// GStreamer cannot decode fails before any training.
fn preroll(path: &Path) -> Result<Stream, Error> {
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
        let fps = caps
            .structure(0)
            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map(|f| (f.numer() as u64, f.denom() as u64));
        Ok(Stream {
            width,
            height,
            fps,
            duration: pipeline.query_duration::<gst::ClockTime>(),
        })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// The model, the tokens and the element's settings, checked as the element will check them
/// at start, so that a mistake fails before any decoding or training with an error naming
/// the file at fault.
fn check_model_and_tokens(c: &ProcessCmd, tokens_path: &Path) -> Result<(), Error> {
    let (device, dtype) = c.device.device.open()?;
    let tokens = Tokens::load(tokens_path)?;
    let model = Arc::new(Model::load(&c.model, &device, dtype)?);
    let opts = DetectOptions {
        augmentations: c.element.pass.augmentations,
        crop: c.crop.crop.into(),
        ..Default::default()
    };
    Detector::new(model, &tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })?;
    Ok(())
}

pub fn cmd_process(c: ProcessCmd) -> Result<(), Error> {
    let input = &c.input;
    if input.is_dir() {
        return Err(file_error(
            input,
            "is a folder; process takes one video file (train takes folders of images)",
        ));
    }
    if !input.is_file() {
        return Err(Error::Io {
            path: input.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such video file"),
        });
    }
    let crop: CropMode = c.crop.crop.into();
    // Everything that can be checked is checked before any decoding or training: the output
    // folder, the model and the tokens; the outputs are written under temporary names and
    // renamed into place only once complete, so that a failure leaves earlier results as
    // they were.
    let out_dir = &c.out_dir;
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--out-dir {}: is a file, not a folder",
            out_dir.display()
        )));
    }
    if let Some(t) = &c.tokens {
        check_model_and_tokens(&c, t)?;
    }
    // Fail before training when the element or the file cannot run.
    register_element()?;
    let stream = preroll(input)?;
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::Invalid(format!(
            "--out-dir {}: cannot create it: {e}",
            out_dir.display()
        ))
    })?;
    let jsonl = out_dir.join("keypoints.jsonl");
    let mp4 = out_dir.join("annotated.mp4");
    let mut staged = StagedOutputs::new();
    let jsonl_tmp = staged.stage(&jsonl, "--out-dir")?;
    let mp4_tmp = staged.stage(&mp4, "--out-dir")?;

    let tokens = match &c.tokens {
        Some(t) => t.clone(),
        None => {
            // Written (atomically) as soon as training ends: a complete result of its own,
            // kept even if the pipeline then fails.
            let out = out_dir.join("tokens.safetensors");
            train::run(&TrainJob {
                model: &c.model,
                input,
                out: &out,
                out_flag: "--out-dir",
                train: &c.train,
                seed: &c.seed,
                crop,
                device: c.device.device,
            })?;
            out
        }
    };

    let element = make("stablekeypoints")?;
    let path_prop = |name: &str, p: &Path| element.set_property(name, p.to_string_lossy().as_ref());
    path_prop("model", &c.model);
    path_prop("tokens", &tokens);
    path_prop("json-location", &jsonl_tmp);
    element.set_property_from_str(
        "crop-mode",
        match crop {
            CropMode::Letterbox => "letterbox",
            CropMode::CenterCrop => "center-crop",
            CropMode::Stretch => "stretch",
        },
    );
    element.set_property("augmentations", c.element.pass.augmentations as u32);
    element.set_property("seed", c.seed.seed);
    element.set_property("noise", !c.element.pass.no_noise);
    element.set_property("draw", true);
    element.set_property("draw-ids", c.element.draw_ids);
    element.set_property("device", c.device.device.to_string());
    // x264 wants even sizes for 4:2:0.
    let (w, h) = ((stream.width + 1) & !1, (stream.height + 1) & !1);
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", w as i32)
        .field("height", h as i32)
        .build();
    let filter = make("capsfilter")?;
    filter.set_property("caps", &caps);
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", "veryfast");
    let sink = make("filesink")?;
    sink.set_property("location", mp4_tmp.to_string_lossy().as_ref());
    let first = make("videoconvert")?;
    let decoded = count_buffers(&first);
    let encoded = count_buffers(&encoder);
    let chain = [
        first,
        element,
        make("videoconvert")?,
        make("videoscale")?,
        filter,
        encoder,
        make("mp4mux")?,
        sink,
    ];
    let refs: Vec<&gst::Element> = chain.iter().collect();
    let (pipeline, _) = video::decoding_pipeline(input, &refs)?;
    let reached = stream_ends(&pipeline);
    let total = stream.duration.and_then(|d| stream.frames_in(d));
    // From here on SIGINT/SIGTERM stop the pipeline; the temporary files are then removed.
    let armed = interrupt::Armed::new();
    eprintln!(
        "running {} frames of {} through the stablekeypoints element",
        total.map_or("the".to_string(), |n| n.to_string()),
        input.display()
    );
    let start = Instant::now();
    let result = run(&pipeline, input, &stream, total, &decoded, start);
    let _ = pipeline.set_state(gst::State::Null);
    drop(armed);
    result?;
    // Success only when the file was decoded to the end it declares, and every decoded
    // frame has its line and its encoded frame.
    let decoded = decoded.load(Ordering::SeqCst);
    let encoded = encoded.load(Ordering::SeqCst);
    let lines = count_lines(&jsonl_tmp);
    let reached = gst::ClockTime::from_nseconds(reached.load(Ordering::SeqCst));
    if let Some(declared) = stream.duration.filter(|&d| reached + stream.slack() < d) {
        return Err(file_error(
            input,
            format!(
                "decoding ended at {:.3} s of the {:.3} s the file declares, after {decoded} \
                 frames (truncated or damaged?); nothing was written to {}",
                reached.nseconds() as f64 / 1e9,
                declared.nseconds() as f64 / 1e9,
                out_dir.display()
            ),
        ));
    }
    if lines != decoded || encoded != decoded {
        return Err(Error::Invalid(format!(
            "the pipeline stopped early: {decoded} frames decoded from {}, but {lines} keypoint \
             lines and {encoded} annotated frames written; nothing was written to {}",
            input.display(),
            out_dir.display()
        )));
    }
    staged.commit()?;
    eprintln!(
        "wrote {} ({lines} frames) and {} in {:.1} s",
        jsonl.display(),
        mp4.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The furthest stream time (end of a buffer) any decoded stream of `pipeline` reaches, video
/// or not: the container's duration is that of its longest stream (an audio track may
/// outlast the video), so a file is cut short only when no stream reaches that end.
fn stream_ends(pipeline: &gst::Pipeline) -> Arc<AtomicU64> {
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
                let stream_time = pad
                    .sticky_event::<gst::event::Segment>(0)
                    .and_then(|ev| {
                        ev.segment()
                            .downcast_ref::<gst::ClockTime>()
                            .and_then(|s| s.to_stream_time(stop))
                    })
                    .unwrap_or(stop);
                end.fetch_max(stream_time.nseconds(), Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        });
    }
    end
}

/// Counts the buffers entering `element`'s sink pad.
fn count_buffers(element: &gst::Element) -> Arc<AtomicU64> {
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

/// Plays the pipeline to EOS with progress (frames decoded of the total), or stops it at
/// SIGINT/SIGTERM.
fn run(
    pipeline: &gst::Pipeline,
    input: &Path,
    stream: &Stream,
    total: Option<u64>,
    decoded: &AtomicU64,
    start: Instant,
) -> Result<(), Error> {
    let what = "the stablekeypoints pipeline failed";
    set_state(pipeline, gst::State::Playing, input, what)?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut bar = Progress::new(total.unwrap_or(0), "frame {pos}/{len} [{bar:30}] {eta}");
    loop {
        if let Some(sig) = interrupt::received() {
            return Err(Error::Invalid(format!(
                "interrupted by {}: stopped the pipeline; the earlier outputs are unchanged",
                interrupt::name(sig)
            )));
        }
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                return Err(file_error(
                    input,
                    format!("{what}: {}", video::describe_error(e)),
                ))
            }
            Some(_) => {
                let done = decoded.load(Ordering::SeqCst);
                bar.set(done, "", true, || {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    format!("frame {done}{of} ({:.0} s)", start.elapsed().as_secs_f64())
                });
                break;
            }
            None => {
                let done = pipeline
                    .query_position::<gst::ClockTime>()
                    .and_then(|p| stream.frames_in(p));
                if let Some(done) = done {
                    let log = bar.due(LOG_EVERY);
                    bar.set(done, "", log, || {
                        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                        format!("frame {done}{of} ({:.0} s)", start.elapsed().as_secs_f64())
                    });
                }
            }
        }
    }
    bar.finish();
    Ok(())
}
