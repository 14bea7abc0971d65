//! `process`: the offline path for a video. Trains tokens on the video unless `--tokens` is
//! given, then runs every frame through the `stablekeypoints` element in a GStreamer
//! pipeline of this process, writing `keypoints.jsonl` and `keypoints.coco.json`
//! (`stablekeypointspublish`) and an annotated `annotated.mp4`:
//!
//! ```text
//! filesrc ! decodebin ! videoconvert ! stablekeypoints ... draw=true [pose=POSE]
//!   ! stablekeypointspublish location=keypoints.jsonl
//!   ! stablekeypointspublish location=keypoints.coco.json format=coco ! videoconvert
//!   ! videoscale ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink
//! ```
//!
//! The element is this build's (registered statically from the plugin crate);
//! `SKP_PLUGIN_PATH` loads another build of it instead.

use crate::args::ProcessCmd;
use crate::progress::Progress;
use crate::train::{self, TrainJob};
use crate::video::{self, caps_size, file_error, make, set_state, LOG_EVERY};
use gst::prelude::*;
use stablekeypoints::{CropMode, Error};
use std::path::{Path, PathBuf};
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
    /// Frames in `t` of video, when the frame rate is known.
    fn frames_in(&self, t: gst::ClockTime) -> Option<u64> {
        let (n, d) = self.fps?;
        Some((t.nseconds() as u128 * n as u128 / (d as u128 * 1_000_000_000)) as u64)
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

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
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
    // Fail before training when the element or the file cannot run.
    register_element()?;
    let stream = preroll(input)?;
    // `--pose` comes with `--tokens` (clap): check that they fit before any work.
    if let (Some(pose), Some(tokens)) = (&c.element.pose, &c.tokens) {
        crate::detect::load_pose(pose, &stablekeypoints::Tokens::load(tokens)?, tokens)?;
    }
    std::fs::create_dir_all(&c.out_dir).map_err(|e| io_err(&c.out_dir, e))?;

    let tokens = match &c.tokens {
        Some(t) => t.clone(),
        None => {
            let out = c.out_dir.join("tokens.safetensors");
            train::run(&TrainJob {
                model: &c.model,
                input,
                out: &out,
                train: &c.train,
                seed: &c.seed,
                crop,
                device: c.device.device,
            })?;
            out
        }
    };

    let jsonl = c.out_dir.join("keypoints.jsonl");
    let coco = c.out_dir.join("keypoints.coco.json");
    let mp4 = c.out_dir.join("annotated.mp4");
    for p in [&jsonl, &coco, &mp4] {
        if p.exists() {
            std::fs::remove_file(p).map_err(|e| io_err(p, e))?;
        }
    }
    let element = make("stablekeypoints")?;
    let path_prop = |name: &str, p: &Path| element.set_property(name, p.to_string_lossy().as_ref());
    path_prop("model", &c.model);
    path_prop("tokens", &tokens);
    if let Some(p) = &c.element.pose {
        path_prop("pose", p);
    }
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
    let publish = make("stablekeypointspublish")?;
    publish.set_property("location", jsonl.to_string_lossy().as_ref());
    let publish_coco = make("stablekeypointspublish")?;
    publish_coco.set_property("location", coco.to_string_lossy().as_ref());
    publish_coco.set_property_from_str("format", "coco");
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
    sink.set_property("location", mp4.to_string_lossy().as_ref());
    let chain = [
        make("videoconvert")?,
        element,
        publish,
        publish_coco,
        make("videoconvert")?,
        make("videoscale")?,
        filter,
        encoder,
        make("mp4mux")?,
        sink,
    ];
    let refs: Vec<&gst::Element> = chain.iter().collect();
    let (pipeline, _) = video::decoding_pipeline(input, &refs)?;
    let total = stream.duration.and_then(|d| stream.frames_in(d));
    eprintln!(
        "running {} frames of {} through the stablekeypoints element",
        total.map_or("the".to_string(), |n| n.to_string()),
        input.display()
    );
    let start = Instant::now();
    let result = run(&pipeline, input, &stream, total, start);
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let n = count_lines(&jsonl);
    eprintln!(
        "wrote {} ({n} frames), {} and {} in {:.1} s",
        jsonl.display(),
        coco.display(),
        mp4.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Plays the pipeline to EOS with progress: frames done of total, from the pipeline's
/// position and duration.
fn run(
    pipeline: &gst::Pipeline,
    input: &Path,
    stream: &Stream,
    total: Option<u64>,
    start: Instant,
) -> Result<(), Error> {
    let what = "the stablekeypoints pipeline failed";
    set_state(pipeline, gst::State::Playing, input, what)?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut bar = Progress::new(total.unwrap_or(0), "frame {pos}/{len} [{bar:30}] {eta}");
    loop {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
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
                if let Some(t) = total {
                    bar.set(t, "", true, || {
                        format!("frame {t}/{t} ({:.0} s)", start.elapsed().as_secs_f64())
                    });
                }
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
