//! Video through GStreamer, linked in process (the core library stays GStreamer-free):
//! frames for `train` come out of an appsink, and `process` (crate::pipeline) builds its
//! pipeline from the same pieces. Errors come from the bus and name the file and the element
//! that failed; progress comes from the pipeline's position and duration.
//!
//! Training frames take two passes: the first decodes the whole file once to count its
//! frames (and read its size), the second decodes `decodebin ! videoconvert ! videoscale !
//! video/x-raw,format=RGBA,...` (any raw format a decoder outputs becomes RGBA) into an
//! appsink and keeps the frames sampled uniformly over the whole video.

use crate::progress::Progress;
use crate::uri::is_uri;
use gst::prelude::*;
use stablekeypoints::frame::to_model_input;
use stablekeypoints::train::{Fnv, TrainData};
use stablekeypoints::util::{available_memory, human_bytes};
use stablekeypoints::{CropMode, Error, FrameRef, PixelFormat};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Frames kept from a video when `--max-frames` is not given.
pub const DEFAULT_MAX_FRAMES: usize = 300;

/// How often a plain (non-terminal) progress line is written.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long one wait on the bus or the appsink lasts before progress is updated.
const POLL: gst::ClockTime = gst::ClockTime::from_mseconds(100);

/// GStreamer, initialised once.
pub fn init() -> Result<(), Error> {
    gst::init().map_err(|e| Error::Invalid(format!("cannot initialise GStreamer: {e}")))
}

/// An error about `path`.
pub fn file_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(msg.into()),
    }
}

/// Which system package brings an element, for the error when it is missing.
fn package_of(factory: &str) -> &'static str {
    match factory {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "mp4mux" | "qtdemux" => "gstreamer1.0-plugins-good",
        "filesrc" | "fakesink" | "capsfilter" | "queue" => "libgstreamer1.0-0",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// An element by factory name; a missing one is an error naming the package to install.
pub fn make(factory: &str) -> Result<gst::Element, Error> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        Error::Invalid(format!(
            "the GStreamer element {factory} is missing (Debian/Ubuntu: install {})",
            package_of(factory)
        ))
    })
}

/// "MESSAGE (GStreamer element NAME [FACTORY])" for a bus error.
pub fn describe_error(err: &gst::message::Error) -> String {
    let src = err
        .src()
        .map(|s| {
            let name = s.name();
            let factory = s
                .downcast_ref::<gst::Element>()
                .and_then(|e| e.factory())
                .map(|f| f.name().to_string())
                .filter(|f| f.as_str() != name.as_str())
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            format!(" (GStreamer element {name}{factory})")
        })
        .unwrap_or_default();
    format!("{}{src}", err.error())
}

/// `filesrc location=path ! decodebin` (`uridecodebin uri=path` when `path` is a URI) in a
/// new pipeline, whose first raw video pad is
/// linked to `sink` (already in the pipeline); other streams (audio, a second video) go to
/// fakesinks. `linked` turns true once the video is linked.
pub fn decoding_pipeline(
    path: &Path,
    sink: &[&gst::Element],
) -> Result<(gst::Pipeline, Arc<AtomicBool>), Error> {
    let pipeline = gst::Pipeline::new();
    let decode = add_decoder(&pipeline, path, sink)?;
    let linked = Arc::new(AtomicBool::new(false));
    // The kinds of stream seen, for the error when none is video.
    let kinds: Arc<Mutex<Vec<String>>> = Arc::default();
    let (flag, seen) = (linked.clone(), kinds.clone());
    // Every stream is exposed by now: a file without video would otherwise wait forever (the
    // video sink never prerolls, so the pipeline never reaches PAUSED nor EOS).
    decode.connect_no_more_pads(move |decode| {
        if !flag.load(Ordering::SeqCst) {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let msg = if let Some(v) = seen.iter().find(|k| k.starts_with("video/x-raw")) {
                format!("its video stream cannot be linked to the pipeline ({v})")
            } else if seen.is_empty() {
                "the file has no video stream (no stream at all)".to_string()
            } else {
                format!("the file has no video stream (only {})", seen.join(", "))
            };
            gst::element_error!(decode, gst::StreamError::WrongType, ("{msg}"));
        }
    });
    let first = sink[0].downgrade();
    let pipe = pipeline.downgrade();
    let flag = linked.clone();
    decode.connect_pad_added(move |_, pad| {
        let (is_video, kind) = stream_kind(pad.current_caps().as_ref());
        kinds.lock().unwrap_or_else(|p| p.into_inner()).push(kind);
        if is_video && !flag.load(Ordering::SeqCst) {
            if let Some(sink_pad) = first.upgrade().and_then(|e| e.static_pad("sink")) {
                if pad.link(&sink_pad).is_ok() {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
        // Anything else is drained, so that it cannot stall the demuxer.
        if let Some(pipe) = pipe.upgrade() {
            drain(&pipe, pad);
        }
    });
    Ok((pipeline, linked))
}

/// `filesrc location=path ! decodebin` (`uridecodebin uri=path` for a URI) and the linked
/// `sink` elements, added to `pipeline`; the decoder.
fn add_decoder(
    pipeline: &gst::Pipeline,
    path: &Path,
    sink: &[&gst::Element],
) -> Result<gst::Element, Error> {
    let location = path.to_string_lossy();
    let added = if is_uri(&location) {
        let decode = make("uridecodebin")?;
        decode.set_property("uri", location.as_ref());
        pipeline.add(&decode).map(|_| decode)
    } else {
        let src = make("filesrc")?;
        src.set_property("location", location.as_ref());
        let decode = make("decodebin")?;
        pipeline
            .add_many([&src, &decode])
            .and_then(|_| src.link(&decode))
            .map(|_| decode)
    };
    added
        .and_then(|decode| {
            pipeline.add_many(sink.iter().copied())?;
            gst::Element::link_many(sink.iter().copied())?;
            Ok(decode)
        })
        .map_err(|e| Error::Invalid(format!("cannot build the GStreamer pipeline: {e}")))
}

/// Whether a decoded stream of `caps` is raw video, and its kind for messages.
fn stream_kind(caps: Option<&gst::Caps>) -> (bool, String) {
    let is_video = caps
        .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/x-raw")))
        .unwrap_or(false);
    let kind = match (caps, is_video) {
        (Some(c), true) => c.to_string(),
        (Some(c), false) => c
            .structure(0)
            .map_or("an empty stream".into(), |s| s.name().to_string()),
        (None, _) => "a stream of unknown kind".into(),
    };
    (is_video, kind)
}

/// Links `pad` to a new fakesink in `pipeline`.
fn drain(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(fake) = gst::ElementFactory::make("fakesink").build() else {
        return;
    };
    fake.set_property("sync", false);
    if pipeline.add(&fake).is_ok() && fake.sync_state_with_parent().is_ok() {
        if let Some(p) = fake.static_pad("sink") {
            let _ = pad.link(&p);
        }
    }
}

/// Sets the pipeline to `state`; a refusal reports the bus error that explains it.
pub fn set_state(
    pipeline: &gst::Pipeline,
    state: gst::State,
    path: &Path,
    what: &str,
) -> Result<(), Error> {
    if pipeline.set_state(state).is_ok() {
        return Ok(());
    }
    let msg = pipeline
        .bus()
        .and_then(|b| {
            b.timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])
        })
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(describe_error(e)),
            _ => None,
        })
        .unwrap_or_else(|| format!("the pipeline refused to go to {state:?}"));
    let _ = pipeline.set_state(gst::State::Null);
    Err(file_error(path, format!("{what}: {msg}")))
}

/// The first error on the bus, if any, without waiting.
pub fn pending_error(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(describe_error(e)),
        _ => None,
    }
}

/// Position and duration of a playing pipeline, when known.
pub fn position(pipeline: &gst::Pipeline) -> (Option<gst::ClockTime>, Option<gst::ClockTime>) {
    (
        pipeline.query_position::<gst::ClockTime>(),
        pipeline.query_duration::<gst::ClockTime>(),
    )
}

fn decode_error(path: &Path, msg: impl std::fmt::Display) -> Error {
    file_error(
        path,
        format!("cannot decode the video with GStreamer: {msg}"),
    )
}

/// What the first pass learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: usize,
    pub height: usize,
    /// Pixel aspect ratio (numerator, denominator).
    pub par: (u64, u64),
    pub frames: usize,
}

impl VideoInfo {
    /// Width of the frame when displayed with square pixels.
    pub fn display_width(&self) -> f64 {
        self.width as f64 * self.par.0 as f64 / self.par.1.max(1) as f64
    }

    /// The size (square pixels) to decode training frames at for a `size` model input: the
    /// model input is reached without upscaling (the longer side to `size` for letterbox,
    /// the shorter for centre-crop), and the frame is never enlarged.
    pub fn decode_size(&self, size: usize, crop: CropMode) -> (usize, usize) {
        let (dw, dh) = (self.display_width(), self.height as f64);
        let side = match crop {
            CropMode::Letterbox => dw.max(dh),
            CropMode::CenterCrop | CropMode::Stretch => dw.min(dh),
        };
        let scale = (size as f64 / side).min(1.0);
        (
            ((dw * scale).round() as usize).max(1),
            ((dh * scale).round() as usize).max(1),
        )
    }
}

/// Size and pixel aspect ratio of raw video caps.
pub fn caps_size(caps: &gst::CapsRef) -> Option<(usize, usize, (u64, u64))> {
    let s = caps.structure(0)?;
    let w = s.get::<i32>("width").ok()?;
    let h = s.get::<i32>("height").ok()?;
    let par = s
        .get::<gst::Fraction>("pixel-aspect-ratio")
        .ok()
        .map(|f| (f.numer(), f.denom()))
        .filter(|&(n, d)| n > 0 && d > 0)
        .map_or((1, 1), |(n, d)| (n as u64, d as u64));
    (w > 0 && h > 0).then_some((w as usize, h as usize, par))
}

/// "45%" or "12 s" of a playing pipeline, for progress lines.
fn how_far(pipeline: &gst::Pipeline) -> (u64, String) {
    match position(pipeline) {
        (Some(p), Some(d)) if d.nseconds() > 0 => {
            let permille = (p.nseconds() as u128 * 1000 / d.nseconds() as u128).min(1000) as u64;
            (permille, format!("{}%", permille / 10))
        }
        (Some(p), _) => (0, format!("{} s", p.seconds())),
        _ => (0, String::new()),
    }
}

/// First pass: decodes `path` once and returns its frame size and frame count.
pub fn probe(path: &Path) -> Result<VideoInfo, Error> {
    if !is_uri(&path.to_string_lossy()) && !path.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    init()?;
    let sink = make("fakesink")?;
    sink.set_property("sync", false);
    let (pipeline, linked) = decoding_pipeline(path, &[&sink])?;
    let frames = Arc::new(AtomicUsize::new(0));
    let caps: Arc<Mutex<Option<gst::Caps>>> = Arc::default();
    let pad = sink.static_pad("sink").expect("fakesink has a sink pad");
    let (count, seen) = (frames.clone(), caps.clone());
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = pad.current_caps();
        }
        gst::PadProbeReturn::Ok
    });
    let result = run_to_eos(&pipeline, path, "counting frames");
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    if !linked.load(Ordering::SeqCst) {
        return Err(decode_error(path, "no video stream found"));
    }
    let caps = caps.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let frames = frames.load(Ordering::Relaxed);
    let Some((width, height, par)) = caps.as_deref().and_then(caps_size) else {
        return Err(decode_error(path, "the video has no frames"));
    };
    Ok(VideoInfo {
        width,
        height,
        par,
        frames,
    })
}

/// Plays `pipeline` to its end, with progress from its position and duration.
fn run_to_eos(pipeline: &gst::Pipeline, path: &Path, what: &str) -> Result<(), Error> {
    set_state(
        pipeline,
        gst::State::Playing,
        path,
        "cannot decode the video with GStreamer",
    )?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut bar = Progress::new(1000, &format!("{what} of {name} [{{bar:30}}] {{msg}}"));
    loop {
        match bus.timed_pop_filtered(POLL, &[gst::MessageType::Eos, gst::MessageType::Error]) {
            Some(m) => match m.view() {
                gst::MessageView::Error(e) => return Err(decode_error(path, describe_error(e))),
                _ => {
                    bar.set(1000, "100%", true, || format!("{what} of {name}: done"));
                    break;
                }
            },
            None => {
                let (permille, shown) = how_far(pipeline);
                let log = bar.due(LOG_EVERY) && !shown.is_empty();
                bar.set(permille, &shown, log, || {
                    format!("{what} of {name}: {shown}")
                });
            }
        }
    }
    bar.finish();
    Ok(())
}

/// `m` frame indices spread uniformly over `0..n` (first and last included when m > 1).
pub fn sample_indices(n: usize, m: usize) -> Vec<usize> {
    if m == 0 || m >= n {
        return (0..n).collect();
    }
    if m == 1 {
        return vec![0];
    }
    (0..m).map(|i| i * (n - 1) / (m - 1)).collect()
}

/// A decoded RGBA frame and its timestamp (nanoseconds), when it has one.
pub type Decoded = (Vec<u8>, Option<u64>);

/// Second pass: decodes `path` to RGBA `width x height` (square pixels), whatever raw format
/// the decoder gives, and returns the frames whose index is in `keep` (sorted), in order,
/// each with its timestamp (nanoseconds) when it has one.
pub fn decode_frames(
    path: &Path,
    width: usize,
    height: usize,
    keep: &[usize],
    total: usize,
) -> Result<Vec<Decoded>, Error> {
    init()?;
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGBA")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let appsink = gst_app::AppSink::builder()
        .caps(&caps)
        .sync(false)
        .max_buffers(4)
        .build();
    let sink: gst::Element = appsink.clone().upcast();
    let (pipeline, _) = decoding_pipeline(path, &[&convert, &scale, &sink])?;
    let result = pull_frames(&pipeline, &appsink, path, width, height, keep, total);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn pull_frames(
    pipeline: &gst::Pipeline,
    appsink: &gst_app::AppSink,
    path: &Path,
    width: usize,
    height: usize,
    keep: &[usize],
    total: usize,
) -> Result<Vec<Decoded>, Error> {
    set_state(
        pipeline,
        gst::State::Playing,
        path,
        "cannot decode the video with GStreamer",
    )?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut bar = Progress::new(
        total as u64,
        &format!("decoding {name} {{pos}}/{{len}} [{{bar:30}}] {{eta}}"),
    );
    let row = width * 4;
    let mut frames = Vec::with_capacity(keep.len());
    let mut next = keep.iter().peekable();
    let mut index = 0usize;
    while next.peek().is_some() {
        if let Some(e) = pending_error(pipeline) {
            return Err(decode_error(path, e));
        }
        let Some(sample) = appsink.try_pull_sample(POLL) else {
            if appsink.is_eos() {
                break;
            }
            continue;
        };
        if next.peek() == Some(&&index) {
            let buffer = sample
                .buffer()
                .ok_or_else(|| decode_error(path, "a sample without a buffer"))?;
            let stride = sample
                .caps()
                .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                .map_or(row, |i| i.stride()[0] as usize);
            let map = buffer
                .map_readable()
                .map_err(|_| decode_error(path, "cannot read a decoded frame"))?;
            if stride < row || map.len() < stride * (height - 1) + row {
                return Err(decode_error(
                    path,
                    format!(
                        "a decoded frame of {} bytes is smaller than {width}x{height} RGBA",
                        map.len()
                    ),
                ));
            }
            let mut f = Vec::with_capacity(row * height);
            for y in 0..height {
                f.extend_from_slice(&map[y * stride..y * stride + row]);
            }
            frames.push((f, buffer.pts().map(|t| t.nseconds())));
            next.next();
        }
        index += 1;
        let log = bar.due(LOG_EVERY);
        bar.set(index as u64, "", log, || {
            format!("decoding {name}: frame {index}/{total}")
        });
    }
    bar.finish();
    if frames.is_empty() {
        return Err(decode_error(path, "no frame could be decoded"));
    }
    Ok(frames)
}

/// Frames sampled from a video, held as RGBA at a size where the model input needs no
/// upscaling, resampled to the model input on request (as image files are).
pub struct VideoFrames {
    width: usize,
    height: usize,
    frames: Vec<Vec<u8>>,
    /// Each frame's timestamp, nanoseconds.
    pts: Vec<Option<u64>>,
    crop: CropMode,
    fingerprint: String,
}

impl VideoFrames {
    /// Samples `max_frames` frames (default [`DEFAULT_MAX_FRAMES`]) uniformly over the video,
    /// decoded at a size suited to a `size x size` model input with `crop`.
    pub fn new(
        path: &Path,
        max_frames: Option<usize>,
        size: usize,
        crop: CropMode,
    ) -> Result<Self, Error> {
        eprintln!("decoding {} with GStreamer", path.display());
        let info = probe(path)?;
        let indices = sample_indices(info.frames, max_frames.unwrap_or(DEFAULT_MAX_FRAMES));
        let (width, height) = info.decode_size(size, crop);
        // The kept frames stay in memory (RGBA): they must fit.
        let need = indices.len() as u64 * (width * height * 4) as u64;
        if let Some(avail) = available_memory().filter(|&a| need > a / 2) {
            return Err(Error::Invalid(format!(
                "--max-frames {}: {} frames of {width}x{height} RGBA take {}, more than half of \
                 the {} of memory available; keep fewer frames",
                indices.len(),
                indices.len(),
                human_bytes(need),
                human_bytes(avail)
            )));
        }
        let (frames, pts): (Vec<_>, Vec<_>) =
            decode_frames(path, width, height, &indices, info.frames)?
                .into_iter()
                .unzip();
        let indices = indices[..frames.len()].to_vec();
        let mut h = Fnv::new();
        h.write(format!("{crop:?} {width}x{height} {:?}", info).as_bytes());
        for i in &indices {
            h.write(&(*i as u64).to_le_bytes());
        }
        // The pixels too: a re-encoded file with the same name must not resume.
        for f in &frames {
            h.write(f);
        }
        let fingerprint = format!(
            "video {} ({} of {} frames), {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            frames.len(),
            info.frames,
            h.hex()
        );
        eprintln!(
            "sampled {} of {} frames ({}x{}) uniformly over the video: {}",
            frames.len(),
            info.frames,
            info.width,
            info.height,
            index_list(&indices)
        );
        Ok(Self {
            width,
            height,
            frames,
            pts,
            crop,
            fingerprint,
        })
    }
}

impl TrainData for VideoFrames {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        let (w, h) = (self.width, self.height);
        let frame = FrameRef::packed(PixelFormat::Rgba, w, h, &self.frames[index], w * 4)?;
        Ok(to_model_input(&frame, size, self.crop).0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn source(&self, index: usize) -> Option<(String, Option<u64>)> {
        Some((String::new(), self.pts[index]))
    }
}

/// `0 3 6 ... 29`, shortened in the middle when long.
pub fn index_list(indices: &[usize]) -> String {
    let show = |v: &[usize]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if indices.len() <= 12 {
        show(indices)
    } else {
        format!(
            "{} ... {}",
            show(&indices[..6]),
            show(&indices[indices.len() - 3..])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_sampling_spans_the_video() {
        assert_eq!(sample_indices(30, 10), [0, 3, 6, 9, 12, 16, 19, 22, 25, 29]);
        assert_eq!(sample_indices(5, 10), [0, 1, 2, 3, 4]);
        assert_eq!(sample_indices(5, 1), [0]);
        assert_eq!(
            index_list(&sample_indices(100, 20)),
            "0 5 10 15 20 26 ... 88 93 99"
        );
    }

    #[test]
    fn caps_give_size_and_pixel_aspect_ratio() {
        gst::init().unwrap();
        let caps: gst::Caps = "video/x-raw, format=(string)Y444, width=(int)160, height=(int)120, pixel-aspect-ratio=(fraction)4/3"
            .parse()
            .unwrap();
        assert_eq!(caps_size(&caps), Some((160, 120, (4, 3))));
        let caps: gst::Caps = "video/x-raw, format=(string)GRAY8, width=(int)7, height=(int)5"
            .parse()
            .unwrap();
        assert_eq!(caps_size(&caps), Some((7, 5, (1, 1))));
        assert_eq!(
            caps_size(&"audio/x-raw".parse::<gst::Caps>().unwrap()),
            None
        );
    }
}
