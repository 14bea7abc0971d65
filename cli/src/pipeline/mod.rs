//! One video through the `stablekeypoints` element, in a GStreamer pipeline of this
//! process: what `process --input` runs once and `process --inputs` once per video of its
//! shard. The keypoints go to `keypoints.jsonl` and `keypoints.coco.json`
//! (`stablekeypointspublish`), the drawn frames to `annotated.mp4`:
//!
//! ```text
//! filesrc ! decodebin ! videoconvert ! stablekeypoints ... draw=true [pose=POSE]
//!   ! stablekeypointspublish location=keypoints.jsonl frame-index=timestamp
//!   ! stablekeypointspublish location=keypoints.coco.json format=coco frame-index=timestamp
//!   ! videoconvert ! videoscale ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink
//! ```
//!
//! The element is this build's (registered statically from the plugin crate);
//! `SKP_PLUGIN_PATH` loads another build of it instead.

use crate::args::ProcessCmd;
use crate::interrupt;
use crate::mp4;
use crate::progress::Progress;
use crate::timeline::{Gap, Timeline};
use crate::uri::file_uri_path;
use crate::video::{self, caps_size, file_error, make, set_state, LOG_EVERY};
use gst::prelude::*;
use gststablekeypoints::framerate::FrameRate;
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::pose::PoseModel;
use stablekeypoints::util::{Inputs, StagedOutputs};
use stablekeypoints::{CropMode, DetectOptions, Detector, Error, Model, Tokens};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Environment variable naming another build of the plugin: the `.so` itself or a folder
/// holding it.
pub const PLUGIN_ENV: &str = "SKP_PLUGIN_PATH";

/// Makes the `stablekeypoints` element available: this build's, or the one `SKP_PLUGIN_PATH`
/// names.
pub fn register_element() -> Result<(), Error> {
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
pub struct Stream {
    width: usize,
    height: usize,
    /// `None` for a variable frame rate (caps `framerate=0/1`) or an absurd one.
    rate: Option<FrameRate>,
    duration: Option<gst::ClockTime>,
}

impl Stream {
    /// Frames in `t` of video, when the frame rate is known.
    fn frames_in(&self, t: gst::ClockTime) -> Option<u64> {
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

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// A student file as `--model` (with `--tokens`, those must be its teacher's), checked as the
/// element will check it, with the pose file.
pub fn check_student(c: &ProcessCmd) -> Result<(), Error> {
    let (device, _) = c.device.device.open()?;
    let student = stablekeypoints::student::Student::load(&c.model, &device)?;
    if let Some(t) = &c.tokens {
        student.check_tokens(&Tokens::load(t)?, t)?;
    }
    if let Some(path) = &c.pose {
        PoseModel::load(path)?
            .check_tokens(
                &student.info.token_indices,
                &student.info.tokens_hash,
                &format!("student {}", c.model.display()),
            )
            .map_err(|e| Error::Invalid(format!("--pose {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The model, the tokens and the element's settings, checked as the element will check them
/// at start, so that a mistake fails before any decoding or training with an error naming
/// the file at fault.
///
/// The model comes from the cache the elements share, and is returned: while the caller
/// holds it, the elements it starts use it instead of loading their own.
pub fn check_model_and_tokens(c: &ProcessCmd, tokens_path: &Path) -> Result<Arc<Model>, Error> {
    c.device.device.open()?;
    // The element's cache logs through GStreamer.
    video::init()?;
    let tokens = Tokens::load(tokens_path)?;
    let model =
        gststablekeypoints::shared_model(&c.weights.source(&c.model), &c.device.device.to_string())
            .map_err(Error::Invalid)?;
    let opts = DetectOptions {
        augmentations: c.element.pass.augmentations,
        crop: c.crop.crop,
        ..Default::default()
    };
    Detector::new(model.clone(), &tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })?;
    if let Some(path) = &c.pose {
        // As the element checks it at start: fitted with these tokens.
        let pose = PoseModel::load(path)?;
        if pose.token_indices != tokens.indices {
            return Err(Error::Invalid(format!(
                "--pose {}: it was fitted with token indices {:?} but tokens {} select {:?}",
                path.display(),
                pose.token_indices,
                tokens_path.display(),
                tokens.indices
            )));
        }
        pose.regressor()
            .map_err(|e| Error::Invalid(format!("--pose {}: {e}", path.display())))?;
    }
    Ok(model)
}

/// What the element is told for every video of a run, and which outputs it writes.
pub struct ElementJob<'a> {
    /// A model folder, single file or a student file.
    pub model: &'a Path,
    pub weights: &'a crate::args::WeightsArgs,
    /// Empty with a student and no `--tokens`.
    pub tokens: &'a Path,
    pub pose: Option<&'a Path>,
    pub crop: CropMode,
    pub augmentations: usize,
    pub seed: u64,
    pub noise: bool,
    pub draw_ids: bool,
    pub device: DeviceSpec,
    /// `annotated.mp4` (else only the keypoints).
    pub annotated: bool,
    /// `keypoints.coco.json` (COCO keypoint results, from `stablekeypointspublish`).
    pub coco: bool,
    /// Keypoints per object on these boxes (`stablekeypointsboxes`, `inference-region=roi-list`).
    pub objects: Option<Objects<'a>>,
}

/// `--boxes` and the object flags, as the elements take them.
pub struct Objects<'a> {
    /// The boxes file (frame i: the i-th decoded frame).
    pub boxes: &'a Path,
    /// `object-class`: comma-separated labels, empty for all.
    pub class: &'a str,
    pub margin: f64,
}

impl<'a> ElementJob<'a> {
    pub fn new(c: &'a ProcessCmd, tokens: &'a Path) -> Self {
        ElementJob {
            model: &c.model,
            weights: &c.weights,
            tokens,
            pose: c.pose.as_deref(),
            crop: c.crop.crop,
            augmentations: c.element.pass.augmentations,
            seed: c.seed.seed,
            noise: !c.element.pass.no_noise,
            draw_ids: c.element.draw_ids,
            device: c.device.device,
            annotated: !c.no_annotated,
            coco: c.coco,
            objects: c.objects.boxes.as_deref().map(|boxes| Objects {
                boxes,
                class: &c.objects.object_class,
                margin: c.objects.object_margin,
            }),
        }
    }

    /// What a run on `input` reads: no output may replace one of these.
    pub fn inputs(&self, input: &Path) -> Inputs {
        let mut inputs = Inputs::new();
        inputs.add("--input", input).add("--model", self.model);
        if !self.tokens.as_os_str().is_empty() {
            inputs.add("--tokens", self.tokens);
        }
        if let Some(pose) = self.pose {
            inputs.add("--pose", pose);
        }
        if let Some(o) = &self.objects {
            inputs.add("--boxes", o.boxes);
        }
        inputs
    }

    /// The output files of a video, in `out_dir`.
    pub fn outputs(&self, out_dir: &Path) -> Vec<PathBuf> {
        let mut v = vec![out_dir.join(KEYPOINTS)];
        if self.annotated {
            v.push(out_dir.join(ANNOTATED));
        }
        if self.coco {
            v.push(out_dir.join(COCO));
        }
        v
    }
}

pub const KEYPOINTS: &str = "keypoints.jsonl";
pub const ANNOTATED: &str = "annotated.mp4";
pub const COCO: &str = "keypoints.coco.json";

/// What one video gave.
pub struct VideoDone {
    pub frames: u64,
    pub seconds: f64,
    /// The files written (renamed into place).
    pub outputs: Vec<PathBuf>,
    /// Frames missing between decoded ones (said in a warning too).
    pub gaps: Vec<Gap>,
}
/// Runs every frame of `input` (a path, or a URI) through the element into `out_dir` (created
/// if missing), with a progress bar when `progress`. The outputs are staged and renamed into
/// place only when every frame the file declares was decoded and written to each of them;
/// otherwise nothing in `out_dir` changes. The caller arms [`interrupt`].
pub fn run_video(
    input: &Path,
    out_dir: &Path,
    job: &ElementJob,
    progress: bool,
) -> Result<VideoDone, Error> {
    let start = Instant::now();
    let stream = preroll(input)?;
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::Invalid(format!(
            "--out-dir {}: cannot create it: {e}",
            out_dir.display()
        ))
    })?;
    let outputs = job.outputs(out_dir);
    let inputs = job.inputs(input);
    for p in &outputs {
        inputs.check(p, "--out-dir")?;
    }
    let mut staged = StagedOutputs::new();
    let mut temps = Vec::new();
    for p in &outputs {
        temps.push(staged.stage(p, "--out-dir")?);
    }
    let jsonl_tmp = &temps[0];

    let Chain {
        elements,
        timeline,
        jsonl,
        coco,
        encoded,
    } = chain(job, &stream, &temps)?;
    let refs: Vec<&gst::Element> = elements.iter().collect();
    let (pipeline, _) = video::decoding_pipeline(input, &refs)?;
    let reached = stream_ends(&pipeline);
    let total = stream.duration.and_then(|d| stream.frames_in(d));
    if progress {
        eprintln!(
            "running {} frames of {} through the stablekeypoints element",
            total.map_or("the".to_string(), |n| n.to_string()),
            input.display()
        );
    }
    let result = run(&pipeline, input, &stream, total, &timeline, start, progress);
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    // Success only when the file was decoded to the end it declares, and every decoded
    // frame has its line, its encoded frame and its COCO entry.
    let timeline = lock(&timeline);
    let decoded = timeline.frames();
    let lines = count_lines(jsonl_tmp);
    let reached = gst::ClockTime::from_nseconds(reached.load(Ordering::SeqCst));
    if let Some(declared) = stream.duration.filter(|&d| reached + timeline.slack() < d) {
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
    // Per object, a frame has as many lines as it has objects (none without): every frame
    // must then have passed both publishers, and every record reached the file.
    let per_object = job.objects.is_some();
    let sent = jsonl.property::<u64>("records-sent");
    let written = Written {
        lines,
        frames: per_object.then(|| jsonl.property::<u64>("frames-processed")),
        lost: lines != sent,
        encoded: encoded.map(|e| e.load(Ordering::SeqCst)),
        cocos: coco.map(|p| {
            p.property::<u64>(if per_object {
                "frames-processed"
            } else {
                "records-sent"
            })
        }),
    };
    written.check(decoded, input, out_dir)?;
    if job.annotated {
        set_mp4_times(input, &temps[1], &outputs[1])?;
    }
    staged.commit()?;
    for gap in timeline.gaps() {
        eprintln!("warning: {}: {gap}", input.display());
    }
    // Within the end's tolerance, but still a frame short of what the file declares.
    if let Some(total) = total.filter(|&t| decoded < t && timeline.gaps().is_empty()) {
        eprintln!(
            "warning: {}: {decoded} of the {total} frames the file declares were decoded \
             (the end may be cut or damaged)",
            input.display()
        );
    }
    Ok(VideoDone {
        frames: decoded,
        seconds: start.elapsed().as_secs_f64(),
        outputs,
        gaps: timeline.gaps().to_vec(),
    })
}

/// The elements after the decoder, and what counts the frames through them.
struct Chain {
    elements: Vec<gst::Element>,
    /// The frames decoded (entering the first converter).
    timeline: Arc<Mutex<Timeline>>,
    /// The JSON lines publisher.
    jsonl: gst::Element,
    /// The COCO publisher, with `coco`.
    coco: Option<gst::Element>,
    /// Frames entering the encoder, with `annotated`.
    encoded: Option<Arc<AtomicU64>>,
}

/// The element and the outputs of `job`, writing to the staged files `temps` (keypoints
/// first, as [`ElementJob::outputs`] orders them).
fn chain(job: &ElementJob, stream: &Stream, temps: &[PathBuf]) -> Result<Chain, Error> {
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

/// What reached each output: keypoint lines, encoded frames, COCO frames.
struct Written {
    lines: u64,
    /// Per object: the frames that passed the JSON lines publisher (a frame has a line per
    /// object, and none without objects).
    frames: Option<u64>,
    /// The file has other than the lines the publisher wrote.
    lost: bool,
    encoded: Option<u64>,
    cocos: Option<u64>,
}

impl Written {
    /// Every one of the `decoded` frames must be in every output.
    fn check(&self, decoded: u64, input: &Path, out_dir: &Path) -> Result<(), Error> {
        if self.frames.unwrap_or(self.lines) == decoded
            && !self.lost
            && self.encoded.is_none_or(|e| e == decoded)
            && self.cocos.is_none_or(|c| c == decoded)
        {
            return Ok(());
        }
        let mut wrote = vec![match self.frames {
            Some(f) => format!("{f} frames of {} keypoint lines", self.lines),
            None => format!("{} keypoint lines", self.lines),
        }];
        wrote.extend(self.encoded.map(|e| format!("{e} annotated frames")));
        wrote.extend(self.cocos.map(|c| format!("{c} COCO frames")));
        Err(Error::Invalid(format!(
            "the pipeline stopped early: {decoded} frames decoded from {}, but {} written; \
             nothing was written to {}",
            input.display(),
            wrote.join(" and "),
            out_dir.display()
        )))
    }
}

/// The same frames give the same bytes: the MP4 header times of `tmp` (staged for `output`)
/// are the input's mtime.
fn set_mp4_times(input: &Path, tmp: &Path, output: &Path) -> Result<(), Error> {
    let local = file_uri_path(&input.to_string_lossy()).unwrap_or_else(|| input.to_path_buf());
    let mtime = std::fs::metadata(local)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + mp4::MP4_EPOCH_OFFSET);
    mp4::set_times(tmp, mtime).map_err(|e| Error::Io {
        path: output.to_path_buf(),
        source: e,
    })?;
    Ok(())
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

fn lock(t: &Mutex<Timeline>) -> MutexGuard<'_, Timeline> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream times of the frames entering `element`'s sink pad (a stream of `rate`).
fn watch_frames(element: &gst::Element, rate: Option<FrameRate>) -> Arc<Mutex<Timeline>> {
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
fn keep_last_frame(encoder: &gst::Element, rate: Option<FrameRate>) {
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
    timeline: &Mutex<Timeline>,
    start: Instant,
    progress: bool,
) -> Result<(), Error> {
    let what = "the stablekeypoints pipeline failed";
    set_state(pipeline, gst::State::Playing, input, what)?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut bar =
        progress.then(|| Progress::new(total.unwrap_or(0), "frame {pos}/{len} [{bar:30}] {eta}"));
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
                let done = lock(timeline).frames();
                let Some(bar) = bar.as_mut() else { break };
                bar.set(done, "", true, || {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    format!("frame {done}{of} ({:.0} s)", start.elapsed().as_secs_f64())
                });
                break;
            }
            None => {
                let Some(bar) = bar.as_mut() else { continue };
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
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(())
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
