//! The `stablekeypoints` element: frames -> core detector -> metadata, overlay, bus
//! messages and JSON lines. The model code is in the `stablekeypoints` crate.
//!
//! Buffers go through our own `submit_input_buffer`/`generate_output` instead of
//! `transform_frame_ip` so that late frames are kept (QoS skips inference, never frames),
//! frames can wait for their batch (`batch-size`), and `gap-policy=interpolate` can hold
//! frames until the next inference.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_transform::GenerateOutputSuccess;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use stablekeypoints::frame::YuvMatrix;
use stablekeypoints::pose::{PoseModel, Regressor};
use stablekeypoints::track::{interpolate, GapPolicy, KeypointSmoother, OneEuroParams, Schedule};
use stablekeypoints::{
    CropMode, DetectOptions, Detector, FrameRef, Keypoint, Model, PixelFormat, Tokens,
};

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::convert::{ToRgb, CORE_FORMAT};
use stablekeypoints::export::LineWriter;

use crate::export::{self, FrameTimes};
use crate::meta::{semantic_tag, FrameKeypoints, KeypointMeta, LandmarkMeta, PoseMeta};
use crate::overlay::{Blender, Canvas, Dot, Layout, Overlay, Style, Yuv};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypoints",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints keypoint detector"),
    )
});

const DEFAULT_DEVICE: &str = "cpu";
const DEFAULT_INPUT_SIZE: u32 = 0;
const DEFAULT_AUGMENTATIONS: u32 = 1;
const DEFAULT_SEED: u64 = 0;
const DEFAULT_NOISE: bool = true;
/// `noise-level` of the tokens file's timestep (one below the reference's valid indices).
const NOISE_LEVEL_FROM_TOKENS: i32 = -51;
const DEFAULT_INFERENCE_INTERVAL: u32 = 1;
const DEFAULT_KEYPOINT_THRESHOLD: f64 = 0.0;
const DEFAULT_MIN_CUTOFF: f64 = 1.0;
const DEFAULT_BETA: f64 = 0.0;
const DEFAULT_D_CUTOFF: f64 = 1.0;
const DEFAULT_DRAW: bool = false;
const DEFAULT_DRAW_IDS: bool = false;
const DEFAULT_RADIUS: u32 = 0;
const DEFAULT_LINE_WIDTH: u32 = 0;
const DEFAULT_POST_MESSAGES: bool = false;
const DEFAULT_BATCH_SIZE: u32 = 1;
const MAX_BATCH_SIZE: u32 = stablekeypoints::limits::MAX_BATCH_SIZE as u32;
const MAX_AUGMENTATIONS: u32 = stablekeypoints::limits::MAX_AUGMENTATIONS as u32;
const DEFAULT_BATCH_TIMEOUT_MS: u32 = 100;
const DEFAULT_INFERENCE_DELAY_MS: u32 = 0;

pub use crate::export::MESSAGE_NAME;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsCropMode")]
pub enum CropModeProp {
    #[enum_value(
        name = "Letterbox: scale the whole frame into the square, pad with black",
        nick = "letterbox"
    )]
    Letterbox = 0,
    #[enum_value(
        name = "Center crop: scale the short side to the square, cut the centre",
        nick = "center-crop"
    )]
    CenterCrop = 1,
    #[enum_value(
        name = "Stretch: resize each axis on its own (PIL bilinear), as the reference's loaders",
        nick = "stretch"
    )]
    Stretch = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsGapPolicy")]
pub enum GapPolicyProp {
    #[enum_value(
        name = "None: frames without inference carry no keypoints",
        nick = "none"
    )]
    None = 0,
    #[enum_value(
        name = "Hold last: repeat the last inferred keypoints",
        nick = "hold-last"
    )]
    HoldLast = 1,
    #[enum_value(
        name = "Interpolate: hold frames until the next inference and interpolate (adds latency)",
        nick = "interpolate"
    )]
    Interpolate = 2,
}

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsSmoothing")]
pub enum SmoothingProp {
    #[enum_value(name = "None", nick = "none")]
    None = 0,
    #[enum_value(name = "One-Euro filter on each coordinate", nick = "one-euro")]
    OneEuro = 1,
}

#[derive(Clone, Debug)]
struct Settings {
    model: Option<PathBuf>,
    tokens: Option<PathBuf>,
    pose: Option<PathBuf>,
    device: String,
    input_size: u32,
    crop_mode: CropModeProp,
    augmentations: u32,
    seed: u64,
    noise: bool,
    noise_level: i32,
    batch_size: u32,
    batch_timeout: u32,
    inference_delay: u32,
    inference_interval: u32,
    gap_policy: GapPolicyProp,
    keypoint_threshold: f64,
    smoothing: SmoothingProp,
    min_cutoff: f64,
    beta: f64,
    d_cutoff: f64,
    draw: bool,
    draw_ids: bool,
    radius: u32,
    line_width: u32,
    post_messages: bool,
    json_location: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            tokens: None,
            pose: None,
            device: DEFAULT_DEVICE.into(),
            input_size: DEFAULT_INPUT_SIZE,
            crop_mode: CropModeProp::Letterbox,
            augmentations: DEFAULT_AUGMENTATIONS,
            seed: DEFAULT_SEED,
            noise: DEFAULT_NOISE,
            noise_level: NOISE_LEVEL_FROM_TOKENS,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout: DEFAULT_BATCH_TIMEOUT_MS,
            inference_delay: DEFAULT_INFERENCE_DELAY_MS,
            inference_interval: DEFAULT_INFERENCE_INTERVAL,
            gap_policy: GapPolicyProp::HoldLast,
            keypoint_threshold: DEFAULT_KEYPOINT_THRESHOLD,
            smoothing: SmoothingProp::None,
            min_cutoff: DEFAULT_MIN_CUTOFF,
            beta: DEFAULT_BETA,
            d_cutoff: DEFAULT_D_CUTOFF,
            draw: DEFAULT_DRAW,
            draw_ids: DEFAULT_DRAW_IDS,
            radius: DEFAULT_RADIUS,
            line_width: DEFAULT_LINE_WIDTH,
            post_messages: DEFAULT_POST_MESSAGES,
            json_location: None,
        }
    }
}

impl Settings {
    fn gap_policy(&self) -> GapPolicy {
        match self.gap_policy {
            GapPolicyProp::None => GapPolicy::None,
            GapPolicyProp::HoldLast => GapPolicy::HoldLast,
            GapPolicyProp::Interpolate => GapPolicy::Interpolate,
        }
    }

    fn one_euro(&self) -> Option<OneEuroParams> {
        (self.smoothing == SmoothingProp::OneEuro).then_some(OneEuroParams {
            min_cutoff: self.min_cutoff,
            beta: self.beta,
            d_cutoff: self.d_cutoff,
        })
    }
}

/// Counters behind the read-only `stats` property.
#[derive(Clone, Debug, Default)]
struct Stats {
    processed: u64,
    inferred: u64,
    skipped_late: u64,
    /// Not due under `inference-interval`.
    skipped_interval: u64,
    inference_total: Duration,
    last_inference: Duration,
    warmup: Duration,
}

impl Stats {
    fn mean_inference(&self) -> Duration {
        if self.inferred == 0 {
            self.warmup
        } else {
            // Not `Duration / u32`: the count may exceed u32 (and would wrap to 0).
            Duration::from_secs_f64(self.inference_total.as_secs_f64() / self.inferred as f64)
        }
    }
}

/// A frame waiting for its batch (see `process`).
struct Pending {
    buffer: gst::Buffer,
    index: u64,
    /// Item key of its noise: frames since the start or the last flush.
    key: u64,
    late: bool,
    /// In the batch; otherwise only waiting behind it.
    infer: bool,
}

/// A frame waiting for the keypoints of a later inference.
struct Held {
    buffer: gst::Buffer,
    index: u64,
}

/// A frame ready for metadata, overlay and export.
struct Out {
    buffer: gst::Buffer,
    index: u64,
    keypoints: Option<Vec<Keypoint>>,
    inferred: bool,
}

/// The `pose` file, checked against the tokens at start.
struct Pose {
    regressor: Regressor,
    names: Vec<String>,
    connections: Vec<[u32; 2]>,
}

impl Pose {
    /// Landmarks of frame-normalised keypoints in token order, as `eval` regresses them.
    fn landmarks(&self, keypoints: &[KeypointMeta]) -> PoseMeta {
        // open() checked that the pose reads as many keypoints as the detector gives.
        let xy: Vec<[f64; 2]> = keypoints
            .iter()
            .map(|k| [f64::from(k.x), f64::from(k.y)])
            .collect();
        PoseMeta {
            landmarks: self
                .names
                .iter()
                .zip(self.regressor.predict(&xy))
                .map(|(name, [x, y])| LandmarkMeta {
                    name: name.clone(),
                    x: x as f32,
                    y: y as f32,
                })
                .collect(),
            connections: self.connections.clone(),
        }
    }
}

struct State {
    /// Taken out while an inference runs so that no lock is held meanwhile.
    detector: Option<Detector>,
    num_keypoints: usize,
    pose: Option<Arc<Pose>>,
    /// `inference-delay-ms` per inferred frame.
    delay: Duration,
    model_name: String,
    info: Option<gst_video::VideoInfo>,
    schedule: Schedule,
    /// Last inferred keypoints (frame-normalised, unsmoothed).
    last: Option<Vec<Keypoint>>,
    held: VecDeque<Held>,
    pending: VecDeque<Pending>,
    /// How many of `pending` are to be inferred.
    pending_infer: usize,
    /// Arrival of the first pending frame (for `batch-timeout`).
    pending_since: Option<Instant>,
    ready: VecDeque<gst::Buffer>,
    queued: Option<(gst::Buffer, bool)>,
    smoother: KeypointSmoother,
    next_index: u64,
    /// Frames since the start or the last flush: the next frame's noise key.
    next_key: u64,
}

/// The `json-location` file.
struct JsonWriter {
    path: PathBuf,
    lines: LineWriter<File>,
}

impl JsonWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            lines: LineWriter::create(path)?,
        })
    }
}

#[derive(Default)]
pub struct StableKeypoints {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    json: Mutex<Option<JsonWriter>>,
    /// Running time before which frames are late (from QoS events).
    earliest: Mutex<Option<gst::ClockTime>>,
    reported_latency: Mutex<gst::ClockTime>,
    /// Model input of formats the core does not read (set with the caps).
    convert: Mutex<Option<ToRgb>>,
    /// Drawing into formats without a native [`Layout`].
    blender: Mutex<Blender>,
    /// The last caps refused with a warning (warned once, not on every query).
    refused: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn into a panic in the streaming thread.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Models already loaded by some element instance, shared by path, device and dtype.
type ModelCache = Vec<((PathBuf, String), Weak<Model>)>;
static MODELS: LazyLock<Mutex<ModelCache>> = LazyLock::new(Default::default);

fn parse_device(s: &str) -> Result<(candle_core::Device, candle_core::DType), String> {
    stablekeypoints::device::parse(s).map_err(|e| e.to_string())
}

pub(super) fn load_model(dir: &Path, device: &str) -> Result<Arc<Model>, String> {
    let key = (
        dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
        device.trim().to_string(),
    );
    let mut cache = lock(&MODELS);
    cache.retain(|(_, w)| w.strong_count() > 0);
    if let Some(m) = cache
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        gst::debug!(
            CAT,
            "model {} on {}: already loaded",
            key.0.display(),
            key.1
        );
        return Ok(m);
    }
    let (dev, dtype) = parse_device(device)?;
    let model = Arc::new(Model::load(dir, &dev, dtype).map_err(|e| e.to_string())?);
    gst::info!(
        CAT,
        "model {} on {}: loaded from disk",
        key.0.display(),
        key.1
    );
    cache.push((key, Arc::downgrade(&model)));
    Ok(model)
}

/// Reads the `pose` file and checks that it reads the keypoints these tokens give.
fn load_pose(path: &Path, tokens: &Tokens, tokens_path: &Path) -> Result<Pose, gst::ErrorMessage> {
    let bad = |msg: String| {
        gst::error_msg!(
            gst::LibraryError::Settings,
            ("Cannot use pose {}: {}", path.display(), msg)
        )
    };
    let pose = PoseModel::load(path).map_err(|e| {
        // Name the file once: I/O errors carry the path, the others do not.
        let msg = match e {
            stablekeypoints::Error::Io { source, .. } => source.to_string(),
            e => e.to_string(),
        };
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Cannot load pose {}: {}", path.display(), msg)
        )
    })?;
    if pose.num_keypoints != tokens.indices.len() {
        return Err(bad(format!(
            "it reads {} keypoints but tokens {} give {}",
            pose.num_keypoints,
            tokens_path.display(),
            tokens.indices.len()
        )));
    }
    if pose.token_indices != tokens.indices {
        return Err(bad(format!(
            "it was fitted with token indices {:?} but tokens {} select {:?}",
            pose.token_indices,
            tokens_path.display(),
            tokens.indices
        )));
    }
    let regressor = pose.regressor().map_err(|e| bad(e.to_string()))?;
    let connections = pose
        .skeleton
        .iter()
        .map(|&[a, b]| [a as u32, b as u32])
        .collect();
    Ok(Pose {
        regressor,
        names: pose.names,
        connections,
    })
}

/// How the element reads and draws a format without conversion.
#[derive(Clone, Copy, Debug)]
struct Native {
    /// The core's name for the frame (YV12 is read as I420 with its chroma planes swapped).
    format: PixelFormat,
    layout: Layout,
    swap_uv: bool,
}

fn native(f: gst_video::VideoFormat) -> Option<Native> {
    use gst_video::VideoFormat as V;
    let packed = |format, bpp, rgb, alpha| Native {
        format,
        layout: Layout::Packed { bpp, rgb, alpha },
        swap_uv: false,
    };
    let planar = |format, layout, swap_uv| Native {
        format,
        layout,
        swap_uv,
    };
    Some(match f {
        V::Rgb => packed(PixelFormat::Rgb, 3, [0, 1, 2], None),
        V::Bgr => packed(PixelFormat::Bgr, 3, [2, 1, 0], None),
        V::Rgba => packed(PixelFormat::Rgba, 4, [0, 1, 2], Some(3)),
        V::Bgra => packed(PixelFormat::Bgra, 4, [2, 1, 0], Some(3)),
        V::Rgbx => packed(PixelFormat::Rgbx, 4, [0, 1, 2], None),
        V::Bgrx => packed(PixelFormat::Bgrx, 4, [2, 1, 0], None),
        V::Argb => packed(PixelFormat::Argb, 4, [1, 2, 3], Some(0)),
        V::Abgr => packed(PixelFormat::Abgr, 4, [3, 2, 1], Some(0)),
        V::Xrgb => packed(PixelFormat::Xrgb, 4, [1, 2, 3], None),
        V::Xbgr => packed(PixelFormat::Xbgr, 4, [3, 2, 1], None),
        V::I420 => planar(PixelFormat::I420, Layout::I420, false),
        V::Yv12 => planar(PixelFormat::I420, Layout::I420, true),
        V::Nv12 => planar(PixelFormat::Nv12, Layout::Nv12, false),
        _ => return None,
    })
}

/// Formats the element reads and draws in place, first in the caps (preferred).
const NATIVE_FORMATS: [gst_video::VideoFormat; 13] = {
    use gst_video::VideoFormat as V;
    [
        V::I420,
        V::Yv12,
        V::Nv12,
        V::Rgb,
        V::Bgr,
        V::Rgba,
        V::Bgra,
        V::Rgbx,
        V::Bgrx,
        V::Argb,
        V::Abgr,
        V::Xrgb,
        V::Xbgr,
    ]
};

/// Formats of the pad templates: the native ones, then every other raw format of this
/// GStreamer (those with pack/unpack functions, which `VideoConverter` converts to RGB and
/// `gst_video_overlay_composition_blend` draws into).
pub(crate) fn formats() -> Vec<gst_video::VideoFormat> {
    NATIVE_FORMATS
        .into_iter()
        .chain(gst_video::VideoFormat::iter_raw().filter(|f| !NATIVE_FORMATS.contains(f)))
        .collect()
}

/// The core's YUV matrix for this frame, if the core converts it (RGB frames need none).
fn core_matrix(info: &gst_video::VideoInfo) -> Option<YuvMatrix> {
    use gst_video::VideoColorMatrix as M;
    match info.colorimetry().matrix() {
        M::Bt709 => Some(YuvMatrix::Bt709),
        M::Bt601 | M::Unknown => Some(YuvMatrix::Bt601),
        _ => None,
    }
}

/// Whether the core reads frames of these caps itself (otherwise they are converted).
fn core_reads(info: &gst_video::VideoInfo) -> bool {
    native(info.format()).is_some() && (info.is_rgb() || core_matrix(info).is_some())
}

/// Overlay colours in the frame's own YUV matrix and range.
fn yuv_of(info: &gst_video::VideoInfo) -> Yuv {
    let c = info.colorimetry();
    let full = c.range() == gst_video::VideoColorRange::Range0_255;
    match c.matrix().kr_kb() {
        Ok((kr, kb)) => Yuv::with_coefficients(kr as f32, kb as f32, full),
        Err(_) => Yuv::new(YuvMatrix::Bt601, full),
    }
}

/// The frame as the core sees it, for caps that [`core_reads`].
fn frame_ref<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
    info: &gst_video::VideoInfo,
) -> Result<FrameRef<'a>, String> {
    let n = native(info.format()).ok_or_else(|| format!("unsupported format {}", info.format()))?;
    let planes = frame.planes_data();
    let strides = frame.plane_stride();
    let stride = |i: usize| strides.get(i).map_or(0, |&s| s.max(0) as usize);
    let (u, v) = if n.swap_uv { (2, 1) } else { (1, 2) };
    let mut f = FrameRef::new(
        n.format,
        info.width() as usize,
        info.height() as usize,
        [
            (planes[0], stride(0)),
            (planes[u], stride(u)),
            (planes[v], stride(v)),
        ],
    )
    .map_err(|e| e.to_string())?;
    f.matrix = core_matrix(info).unwrap_or(YuvMatrix::Bt601);
    f.full_range = info.colorimetry().range() == gst_video::VideoColorRange::Range0_255;
    Ok(f)
}

/// Why caps that the pad template does not take are refused, for the warning.
fn refusal_reason(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return "no caps".into();
    };
    if s.name() != "video/x-raw" {
        return format!(
            "{} is not raw video (decode it first, e.g. with decodebin)",
            s.name()
        );
    }
    if let Some(f) = caps.features(0) {
        let system = f.size() == 1 && f.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY);
        if !f.is_any() && !system {
            return format!(
                "buffers with the caps features {f} are not supported: the element reads and \
                 draws frames in system memory, so download them first (e.g. gldownload for \
                 GL memory, cudadownload for CUDA memory)"
            );
        }
    }
    match s.get::<&str>("format") {
        Ok(f) if !formats().iter().any(|g| g.to_str() == f) => {
            format!("format {f} is not a raw format that GStreamer converts to RGB")
        }
        _ => "they do not match the element's caps (see gst-inspect-1.0 stablekeypoints)".into(),
    }
}

impl StableKeypoints {
    fn started(&self) -> bool {
        lock(&self.state).is_some()
    }

    /// Lateness of `buf` against the last QoS event, as GstBaseTransform judges it.
    fn is_late(&self, buf: &gst::BufferRef) -> bool {
        if !self.obj().is_qos() {
            return false;
        }
        let Some(earliest) = *lock(&self.earliest) else {
            return false;
        };
        let segment = self.obj().segment();
        let Some(seg) = segment.downcast_ref::<gst::ClockTime>() else {
            return false;
        };
        seg.to_running_time(buf.pts())
            .is_some_and(|rt| rt <= earliest)
    }

    /// Runs the detector on the frames as one batch, without holding any lock.
    fn infer(
        &self,
        buffers: &[&gst::BufferRef],
        keys: &[u64],
        info: &gst_video::VideoInfo,
    ) -> Result<Vec<Vec<Keypoint>>, gst::FlowError> {
        let (mut detector, delay) = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            let detector = state.detector.take().ok_or(gst::FlowError::Flushing)?;
            (detector, state.delay)
        };
        let started = Instant::now();
        let result = buffers
            .iter()
            .map(|b| gst_video::VideoFrameRef::from_buffer_ref_readable(b, info))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot map the frame: {e}"))
            .and_then(|mapped| {
                let mut convert = lock(&self.convert);
                let Some(to_rgb) = convert.as_mut() else {
                    let frames = mapped
                        .iter()
                        .map(|f| frame_ref(f, info))
                        .collect::<Result<Vec<_>, _>>()?;
                    return detector
                        .detect_frames_keyed(&frames, keys)
                        .map_err(|e| e.to_string());
                };
                let stride = to_rgb.stride();
                let rgb = to_rgb
                    .convert(&mapped)
                    .map_err(|e| format!("cannot convert the frame to RGB: {e}"))?;
                let (w, h) = (info.width() as usize, info.height() as usize);
                let frames = rgb
                    .iter()
                    .map(|p| FrameRef::packed(CORE_FORMAT, w, h, p.as_slice(), stride))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                detector
                    .detect_frames_keyed(&frames, keys)
                    .map_err(|e| e.to_string())
            });
        std::thread::sleep(delay.saturating_mul(buffers.len() as u32));
        let elapsed = started.elapsed();
        if let Some(state) = lock(&self.state).as_mut() {
            state.detector = Some(detector);
        }
        match result {
            Ok(d) => {
                let n = buffers.len().max(1) as u32;
                let mut stats = lock(&self.stats);
                stats.inferred += buffers.len() as u64;
                stats.inference_total += elapsed;
                stats.last_inference = elapsed / n;
                drop(stats);
                gst::trace!(CAT, imp = self, "{} frames took {:?}", n, elapsed);
                self.maybe_update_latency();
                Ok(d.into_iter().map(|d| d.keypoints).collect())
            }
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Keypoint inference failed: {}", e)
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// Latency this element adds: the inference time of a batch, the time a batch takes to
    /// fill, and the look-ahead of `gap-policy=interpolate`.
    fn own_latency(&self) -> gst::ClockTime {
        let s = lock(&self.settings).clone();
        let stats = lock(&self.stats).clone();
        let per_frame = stats.warmup.max(stats.mean_inference());
        let ns = |d: Duration| gst::ClockTime::from_nseconds(d.as_nanos() as u64);
        let batch = s.batch_size.max(1) as u64;
        let mut latency = ns(per_frame)
            .nseconds()
            .checked_mul(batch)
            .map_or(gst::ClockTime::MAX, gst::ClockTime::from_nseconds);
        let frame = lock(&self.state)
            .as_ref()
            .and_then(|st| st.info.as_ref().map(|i| i.fps()))
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .and_then(|fps| {
                gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer() as u64)
            });
        let frames = |n: u64| {
            frame.map(|f| {
                f.nseconds()
                    .checked_mul(n)
                    .filter(|&ns| ns <= gst::ClockTime::MAX.nseconds())
                    .map_or(gst::ClockTime::MAX, gst::ClockTime::from_nseconds)
            })
        };
        let interval = s.inference_interval.max(1) as u64;
        if s.gap_policy == GapPolicyProp::Interpolate && interval > 1 {
            latency = latency.saturating_add(frames(interval - 1).unwrap_or_default());
        }
        if batch > 1 {
            // The first frame of a batch waits for the others (every interval-th frame is
            // inferred), or until the first arrival after batch-timeout.
            let timeout = (s.batch_timeout > 0)
                .then(|| gst::ClockTime::from_mseconds(s.batch_timeout as u64));
            let fill = frames((batch - 1).saturating_mul(interval));
            let wait = match (fill, timeout) {
                (Some(fill), Some(t)) => fill.min(t.saturating_add(frame.unwrap_or_default())),
                (fill, t) => fill.or(t).unwrap_or_default(),
            };
            latency = latency.saturating_add(wait);
        }
        latency
    }

    /// Asks the pipeline to redistribute latency when inference became much slower.
    fn maybe_update_latency(&self) {
        let now = self.own_latency();
        let mut reported = lock(&self.reported_latency);
        if *reported > gst::ClockTime::ZERO && now > reported.saturating_add(*reported / 4) {
            *reported = now;
            drop(reported);
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    /// Decides what happens to one input frame; returns the frames that are now complete.
    /// Frames to infer wait in `pending` until `batch-size` of them are there (or the
    /// timeout passed); the frames that arrive meanwhile wait behind them, so that every
    /// frame is resolved in order, exactly as one at a time.
    fn process(
        &self,
        buffer: gst::Buffer,
        late: bool,
        s: &Settings,
    ) -> Result<Vec<Out>, gst::FlowError> {
        let run = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            if state.info.is_none() {
                drop(st);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("No caps set before the first buffer")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            let index = state.next_index;
            state.next_index += 1;
            let key = state.next_key;
            state.next_key += 1;
            let due = state.schedule.due(s.inference_interval as u64);
            let infer = due && !late;
            if infer {
                state.schedule.inferred();
            } else {
                state.schedule.skipped();
            }
            lock(&self.stats).processed += 1;
            if !due {
                lock(&self.stats).skipped_interval += 1;
            } else if late {
                lock(&self.stats).skipped_late += 1;
                gst::debug!(
                    CAT,
                    imp = self,
                    "frame {} is late: skipping inference",
                    index
                );
            }
            let frame = Pending {
                buffer,
                index,
                key,
                late,
                infer,
            };
            if !infer && state.pending.is_empty() {
                return Ok(Self::resolve(state, frame, None, s));
            }
            state.pending.push_back(frame);
            state.pending_infer += infer as usize;
            let since = *state.pending_since.get_or_insert_with(Instant::now);
            state.pending_infer >= s.batch_size.max(1) as usize
                || (s.batch_timeout > 0
                    && since.elapsed() >= Duration::from_millis(s.batch_timeout as u64))
        };
        if run {
            self.run_batch(s)
        } else {
            Ok(Vec::new())
        }
    }

    /// Infers the pending frames that need it as one batch and resolves all pending frames.
    fn run_batch(&self, s: &Settings) -> Result<Vec<Out>, gst::FlowError> {
        let (frames, info) = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            state.pending_infer = 0;
            state.pending_since = None;
            let frames: Vec<Pending> = state.pending.drain(..).collect();
            (
                frames,
                state.info.clone().ok_or(gst::FlowError::NotNegotiated)?,
            )
        };
        let buffers: Vec<&gst::BufferRef> = frames
            .iter()
            .filter(|f| f.infer)
            .map(|f| f.buffer.as_ref())
            .collect();
        let keys: Vec<u64> = frames.iter().filter(|f| f.infer).map(|f| f.key).collect();
        let mut keypoints = if buffers.is_empty() {
            Vec::new()
        } else {
            self.infer(&buffers, &keys, &info)?
        }
        .into_iter();
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        let mut outs = Vec::new();
        for f in frames {
            let k = if f.infer { keypoints.next() } else { None };
            outs.extend(Self::resolve(state, f, k, s));
        }
        Ok(outs)
    }

    /// The keypoints of one frame in stream order: `keypoints` of its inference, or those
    /// its gap policy gives. Returns the frames that are now complete.
    fn resolve(
        state: &mut State,
        frame: Pending,
        keypoints: Option<Vec<Keypoint>>,
        s: &Settings,
    ) -> Vec<Out> {
        let Pending {
            buffer,
            index,
            late,
            ..
        } = frame;
        if let Some(keypoints) = keypoints {
            let previous = state.last.replace(keypoints.clone());
            let held: Vec<Held> = state.held.drain(..).collect();
            let n = held.len();
            let mut outs: Vec<Out> = held
                .into_iter()
                .enumerate()
                .map(|(i, h)| Out {
                    keypoints: Some(match &previous {
                        Some(p) => interpolate(p, &keypoints, (i + 1) as f32 / (n + 1) as f32),
                        None => keypoints.clone(),
                    }),
                    buffer: h.buffer,
                    index: h.index,
                    inferred: true,
                })
                .collect();
            outs.push(Out {
                buffer,
                index,
                keypoints: Some(keypoints),
                inferred: false,
            });
            return outs;
        }
        match s.gap_policy() {
            GapPolicy::Interpolate if !late && state.last.is_some() => {
                state.held.push_back(Held { buffer, index });
                Vec::new()
            }
            GapPolicy::None if !late => vec![Out {
                buffer,
                index,
                keypoints: None,
                inferred: false,
            }],
            _ => {
                let mut outs = Self::release_held(state);
                outs.push(Out {
                    buffer,
                    index,
                    keypoints: state.last.clone(),
                    inferred: true,
                });
                outs
            }
        }
    }

    /// Held frames with the last keypoints (no later inference is coming for them).
    fn release_held(state: &mut State) -> Vec<Out> {
        let last = state.last.clone();
        state
            .held
            .drain(..)
            .map(|h| Out {
                buffer: h.buffer,
                index: h.index,
                keypoints: last.clone(),
                inferred: true,
            })
            .collect()
    }

    /// Smoothing, metadata, overlay, bus message and JSON record of one finished frame.
    fn finish(&self, out: Out, s: &Settings) -> Result<gst::Buffer, gst::FlowError> {
        let Out {
            mut buffer,
            index,
            keypoints,
            inferred,
        } = out;
        let Some(mut keypoints) = keypoints else {
            return Ok(buffer);
        };
        let (info, num_keypoints, model, pose) = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            if let Some(p) = s.one_euro() {
                let t = buffer.pts().map_or_else(
                    || {
                        let fps = info.fps();
                        let rate = if fps.numer() > 0 && fps.denom() > 0 {
                            fps.numer() as f64 / fps.denom() as f64
                        } else {
                            30.0
                        };
                        index as f64 / rate
                    },
                    |t| t.nseconds() as f64 / 1e9,
                );
                state.smoother.smooth(&mut keypoints, t, &p);
            }
            (
                info,
                state.num_keypoints,
                state.model_name.clone(),
                state.pose.clone(),
            )
        };
        let (w, h) = (info.width(), info.height());
        let threshold = s.keypoint_threshold as f32;
        let mut frame = FrameKeypoints {
            semantic_tag: semantic_tag(num_keypoints),
            model,
            source_width: w,
            source_height: h,
            inferred,
            keypoints: keypoints
                .iter()
                .map(|k| KeypointMeta {
                    id: k.id as u32,
                    x: k.x.clamp(0.0, 1.0),
                    y: k.y.clamp(0.0, 1.0),
                    confidence: k.score,
                    visible: k.score >= threshold,
                })
                .collect(),
            pose: None,
            rect: (0, 0, 0, 0),
        };
        // From the keypoints as reported (smoothed, clamped), so consumers can redo it.
        frame.pose = pose.map(|p| p.landmarks(&frame.keypoints));

        {
            let buf = buffer.make_mut();
            if s.draw {
                self.draw(buf, &info, &frame, s)?;
            }
            frame.attach(buf);
            #[cfg(feature = "analytics")]
            if let Err(e) = crate::analytics::attach(&frame, buf) {
                gst::warning!(CAT, imp = self, "cannot add analytics keypoints: {}", e);
            }
        }

        let times = FrameTimes::of(&buffer, &self.obj().segment());
        if s.post_messages {
            let st = export::message(&frame, index, &times, w, h);
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(st).src(&*self.obj()).build());
        }

        let mut json = lock(&self.json);
        if let Some(writer) = json.as_mut() {
            let record = export::record(&frame, index, &times, w, h);
            if let Err(e) = writer.lines.write_record(&record) {
                let path = writer.path.display().to_string();
                drop(json);
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    ("Cannot write keypoints to {}: {}", path, e)
                );
                return Err(gst::FlowError::Error);
            }
        }
        Ok(buffer)
    }

    fn draw(
        &self,
        buf: &mut gst::BufferRef,
        info: &gst_video::VideoInfo,
        frame: &FrameKeypoints,
        s: &Settings,
    ) -> Result<(), gst::FlowError> {
        let (w, h) = (info.width(), info.height());
        let dots: Vec<Dot> = frame
            .keypoints
            .iter()
            .filter(|k| k.visible)
            .map(|k| {
                let (x, y) = k.pixel(w, h);
                Dot {
                    id: k.id as usize,
                    x,
                    y,
                }
            })
            .collect();
        let points: Vec<(f32, f32)> = frame
            .pose
            .iter()
            .flat_map(|p| p.landmarks.iter().map(|l| l.pixel(w, h)))
            .collect();
        let skeleton = frame
            .pose
            .as_ref()
            .map(|p| (&points[..], &p.connections[..]));
        let (w, h) = (w as usize, h as usize);
        let style = Style::for_frame(w, h, s.radius, s.line_width);
        let overlay = Overlay::new(w, h, style, &dots, s.draw_ids, skeleton);
        if overlay.is_empty() {
            return Ok(());
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("Cannot {} the frame for drawing: {}", what, e)
            );
            gst::FlowError::Error
        };
        let mut vf = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, info)
            .map_err(|e| failed("map", &e))?;
        let yuv = yuv_of(info);
        let Some(n) = native(info.format()) else {
            return lock(&self.blender)
                .blend(&mut vf, &overlay, yuv)
                .map_err(|e| failed("blend the overlay into", &e));
        };
        let strides: Vec<usize> = vf
            .plane_stride()
            .iter()
            .map(|&v| v.max(0) as usize)
            .collect();
        let stride = |i: usize| strides.get(i).copied().unwrap_or(0);
        let [p0, p1, p2, _] = vf.planes_data_mut();
        let (u, v, su, sv) = if n.swap_uv {
            (p2, p1, stride(2), stride(1))
        } else {
            (p1, p2, stride(1), stride(2))
        };
        Canvas {
            layout: n.layout,
            width: w,
            height: h,
            planes: [(p0, stride(0)), (u, su), (v, sv)],
            yuv,
            origin: (0, 0),
        }
        .render(&overlay);
        Ok(())
    }

    /// Before a serialized event (EOS, caps, segment, ...): infers the partial batch and
    /// pushes its frames, then the held frames with the last keypoints.
    fn drain(&self) {
        let s = lock(&self.settings).clone();
        let pending = lock(&self.state)
            .as_ref()
            .is_some_and(|st| !st.pending.is_empty());
        let mut outs = Vec::new();
        if pending {
            match self.run_batch(&s) {
                Ok(o) => outs = o,
                // Inference errors are posted already; or the element is stopping.
                Err(_) => return,
            }
        }
        match lock(&self.state).as_mut() {
            Some(state) => outs.extend(Self::release_held(state)),
            None => return,
        }
        for out in outs {
            match self.finish(out, &s) {
                Ok(buf) => {
                    if let Err(e) = self.obj().src_pad().push(buf) {
                        gst::debug!(CAT, imp = self, "pushing a held frame: {:?}", e);
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn flush_json(&self) {
        if let Some(w) = lock(&self.json).as_mut() {
            if let Err(e) = w.lines.sync() {
                gst::warning!(CAT, imp = self, "flushing {}: {}", w.path.display(), e);
            }
        }
    }

    fn stats_structure(&self) -> gst::Structure {
        let st = lock(&self.stats).clone();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        gst::Structure::builder("stablekeypoints-stats")
            .field("frames-processed", st.processed)
            .field("frames-inferred", st.inferred)
            .field("frames-skipped", st.skipped_late)
            .field("frames-interval-skipped", st.skipped_interval)
            .field("mean-inference-ms", ms(st.mean_inference()))
            .field("last-inference-ms", ms(st.last_inference))
            .field("warmup-ms", ms(st.warmup))
            .build()
    }

    fn open(
        &self,
        s: &Settings,
    ) -> Result<(State, Duration, Option<JsonWriter>), gst::ErrorMessage> {
        let model_dir = s.model.clone().ok_or_else(|| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                ("The `model` property is not set (a diffusers directory with unet/ and vae/)")
            )
        })?;
        if !model_dir.is_dir() {
            let what = if model_dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("Model directory {} {}", model_dir.display(), what)
            ));
        }
        // Cheap layout checks first, so a wrong directory is reported as such.
        for sub in ["unet", "vae"] {
            stablekeypoints::model::weights_file(&model_dir, sub).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::NotFound,
                    ("Cannot load model {}: {}", model_dir.display(), e)
                )
            })?;
        }
        let tokens_path = s
            .tokens
            .clone()
            .unwrap_or_else(|| model_dir.join("tokens.safetensors"));
        // The core's errors name the file at fault.
        let tokens = Tokens::load(&tokens_path).map_err(|e| {
            gst::error_msg!(gst::ResourceError::OpenRead, ("Cannot load tokens: {}", e))
        })?;
        let pose = s
            .pose
            .as_deref()
            .map(|p| load_pose(p, &tokens, &tokens_path))
            .transpose()?;
        let model = load_model(&model_dir, &s.device).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenRead,
                ("Cannot load model {}: {}", model_dir.display(), e)
            )
        })?;
        let timestep = (s.noise_level != NOISE_LEVEL_FROM_TOKENS)
            .then(|| stablekeypoints::options::timestep_of_noise_level(s.noise_level as isize))
            .transpose()
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("noise-level: {}", e)))?;
        let opts = DetectOptions {
            input_size: (s.input_size > 0).then_some(s.input_size as usize),
            augmentations: s.augmentations.max(1) as usize,
            seed: s.seed,
            noise: s.noise,
            timestep,
            crop: match s.crop_mode {
                CropModeProp::Letterbox => CropMode::Letterbox,
                CropModeProp::CenterCrop => CropMode::CenterCrop,
                CropModeProp::Stretch => CropMode::Stretch,
            },
            ..Default::default()
        };
        let bad = |e: stablekeypoints::Error| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "Model {} with tokens {}: {}",
                    model_dir.display(),
                    tokens_path.display(),
                    e
                )
            )
        };
        let detector = Detector::new(model.clone(), &tokens, opts.clone()).map_err(bad)?;
        // Time one frame on a separate detector (its noise stream stays untouched) so the
        // latency query has an answer before the first buffer.
        let size = detector.input_size();
        let grey = vec![128u8; size * size * 3];
        let started = Instant::now();
        let frame = FrameRef::packed(PixelFormat::Rgb, size, size, &grey, size * 3).map_err(bad)?;
        Detector::new(model, &tokens, opts)
            .and_then(|mut d| d.detect_frame(&frame))
            .map_err(bad)?;
        let delay = Duration::from_millis(s.inference_delay as u64);
        std::thread::sleep(delay);
        let warmup = started.elapsed();

        let json = match &s.json_location {
            Some(path) => Some(JsonWriter::create(path).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    ("Cannot create {}: {}", path.display(), e)
                )
            })?),
            None => None,
        };
        let state = State {
            num_keypoints: detector.num_keypoints(),
            pose: pose.map(Arc::new),
            delay,
            detector: Some(detector),
            model_name: model_dir.display().to_string(),
            info: None,
            schedule: Schedule::default(),
            last: None,
            held: VecDeque::new(),
            pending: VecDeque::new(),
            pending_infer: 0,
            pending_since: None,
            ready: VecDeque::new(),
            queued: None,
            smoother: KeypointSmoother::default(),
            next_index: 0,
            next_key: 0,
        };
        Ok((state, warmup, json))
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypoints {
    const NAME: &'static str = "GstStableKeypoints";
    type Type = super::StableKeypoints;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for StableKeypoints {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Stable Diffusion model directory in diffusers layout (unet/ and vae/)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tokens")
                    .nick("Tokens")
                    .blurb("Learned tokens file (safetensors); default: <model>/tokens.safetensors")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("pose")
                    .nick("Pose")
                    .blurb("Pose file from `stablekeypoints eval --save-regressor`: regress named landmarks and a skeleton from the keypoints")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("Compute device: cpu, or cuda:N when built with the cuda feature")
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-size")
                    .nick("Input size")
                    .blurb("Side of the square model input in pixels (0 = from the tokens file)")
                    .maximum(4096)
                    .default_value(DEFAULT_INPUT_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("crop-mode", CropModeProp::Letterbox)
                    .nick("Crop mode")
                    .blurb("How a non-square frame becomes the square model input")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("augmentations")
                    .nick("Augmentations")
                    .blurb("Test-time augmentation passes per inference (1 = none)")
                    .minimum(1)
                    .maximum(MAX_AUGMENTATIONS)
                    .default_value(DEFAULT_AUGMENTATIONS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of the diffusion noise and of the augmentation warps (per frame: the seed and the frame's index since the start or the last flush)")
                    .default_value(DEFAULT_SEED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("noise")
                    .nick("Noise")
                    .blurb("Add seeded diffusion noise at the timestep (as the paper); off = deterministic per frame")
                    .default_value(DEFAULT_NOISE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("noise-level")
                    .nick("Noise level")
                    .blurb("The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0 (-1 = the last, t = 0); -51 = the tokens file's timestep")
                    .minimum(NOISE_LEVEL_FROM_TOKENS)
                    .maximum(49)
                    .default_value(NOISE_LEVEL_FROM_TOKENS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Frames inferred together in one forward pass (adds latency: frames wait for their batch)")
                    .minimum(1)
                    .maximum(MAX_BATCH_SIZE)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout")
                    .nick("Batch timeout")
                    .blurb("With batch-size > 1: infer a partial batch when a frame arrives this many ms after its first frame (0 = never)")
                    .default_value(DEFAULT_BATCH_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("inference-delay-ms")
                    .nick("Inference delay (testing aid)")
                    .blurb("Testing aid: sleep this many ms per inferred frame and in the warm-up, to act as a slower model")
                    .maximum(60_000)
                    .default_value(DEFAULT_INFERENCE_DELAY_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("inference-interval")
                    .nick("Inference interval")
                    .blurb("Run inference on every N-th frame (1 = every frame); see gap-policy")
                    .minimum(1)
                    .default_value(DEFAULT_INFERENCE_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("gap-policy", GapPolicyProp::HoldLast)
                    .nick("Gap policy")
                    .blurb("Keypoints of frames without inference")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("keypoint-threshold")
                    .nick("Keypoint threshold")
                    .blurb("Keypoints with a lower confidence are kept but marked not visible")
                    .minimum(0.0)
                    .default_value(DEFAULT_KEYPOINT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("smoothing", SmoothingProp::None)
                    .nick("Smoothing")
                    .blurb("Temporal smoothing of keypoint positions")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-cutoff")
                    .nick("Min cut-off")
                    .blurb("One-Euro minimum cut-off frequency in Hz (lower = smoother, more lag)")
                    .minimum(1e-6)
                    .default_value(DEFAULT_MIN_CUTOFF)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("beta")
                    .nick("Beta")
                    .blurb("One-Euro speed coefficient (higher = less lag on fast motion)")
                    .minimum(0.0)
                    .default_value(DEFAULT_BETA)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("d-cutoff")
                    .nick("Derivative cut-off")
                    .blurb("One-Euro cut-off frequency of the speed estimate in Hz")
                    .minimum(1e-6)
                    .default_value(DEFAULT_D_CUTOFF)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw")
                    .nick("Draw")
                    .blurb("Draw the visible keypoints into the frames")
                    .default_value(DEFAULT_DRAW)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw-ids")
                    .nick("Draw ids")
                    .blurb("Draw each keypoint's id beside it (with draw=true)")
                    .default_value(DEFAULT_DRAW_IDS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("radius")
                    .nick("Radius")
                    .blurb("Radius of the drawn keypoints in pixels (0 = from the frame size: max(3, min(width, height) / 100))")
                    .maximum(1024)
                    .default_value(DEFAULT_RADIUS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb("Width of the pose skeleton's lines in pixels (0 = half the radius, at least 2)")
                    .maximum(1024)
                    .default_value(DEFAULT_LINE_WIDTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a `stablekeypoints` element message per frame on the bus")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("json-location")
                    .nick("JSON location")
                    .blurb("Write one JSON record per frame to this file (JSON lines)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("frames-processed, frames-inferred, frames-skipped (late), frames-interval-skipped, mean/last-inference-ms, warmup-ms")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY) && self.started() {
            gst::warning!(
                CAT,
                imp = self,
                "`{}` can only be changed in the NULL or READY state",
                name
            );
            return;
        }
        let path = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let mut s = lock(&self.settings);
        match name {
            "model" => s.model = path(value),
            "tokens" => s.tokens = path(value),
            "pose" => s.pose = path(value),
            "device" => {
                s.device = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_DEVICE.into())
            }
            "input-size" => s.input_size = value.get().expect("type checked upstream"),
            "crop-mode" => s.crop_mode = value.get().expect("type checked upstream"),
            "augmentations" => s.augmentations = value.get().expect("type checked upstream"),
            "seed" => s.seed = value.get().expect("type checked upstream"),
            "noise" => s.noise = value.get().expect("type checked upstream"),
            "noise-level" => s.noise_level = value.get().expect("type checked upstream"),
            "batch-size" => s.batch_size = value.get().expect("type checked upstream"),
            "batch-timeout" => s.batch_timeout = value.get().expect("type checked upstream"),
            "inference-delay-ms" => s.inference_delay = value.get().expect("type checked upstream"),
            "inference-interval" => {
                s.inference_interval = value.get().expect("type checked upstream")
            }
            "gap-policy" => s.gap_policy = value.get().expect("type checked upstream"),
            "keypoint-threshold" => {
                s.keypoint_threshold = value.get().expect("type checked upstream")
            }
            "smoothing" => s.smoothing = value.get().expect("type checked upstream"),
            "min-cutoff" => s.min_cutoff = value.get().expect("type checked upstream"),
            "beta" => s.beta = value.get().expect("type checked upstream"),
            "d-cutoff" => s.d_cutoff = value.get().expect("type checked upstream"),
            "draw" => s.draw = value.get().expect("type checked upstream"),
            "draw-ids" => s.draw_ids = value.get().expect("type checked upstream"),
            "radius" => s.radius = value.get().expect("type checked upstream"),
            "line-width" => s.line_width = value.get().expect("type checked upstream"),
            "post-messages" => s.post_messages = value.get().expect("type checked upstream"),
            "json-location" => s.json_location = path(value),
            _ => unimplemented!(),
        }
        gst::debug!(CAT, imp = self, "set `{}`", name);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let s = lock(&self.settings);
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).to_value();
        match pspec.name() {
            "model" => path(&s.model),
            "tokens" => path(&s.tokens),
            "pose" => path(&s.pose),
            "device" => s.device.to_value(),
            "input-size" => s.input_size.to_value(),
            "crop-mode" => s.crop_mode.to_value(),
            "augmentations" => s.augmentations.to_value(),
            "seed" => s.seed.to_value(),
            "noise" => s.noise.to_value(),
            "noise-level" => s.noise_level.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "batch-timeout" => s.batch_timeout.to_value(),
            "inference-delay-ms" => s.inference_delay.to_value(),
            "inference-interval" => s.inference_interval.to_value(),
            "gap-policy" => s.gap_policy.to_value(),
            "keypoint-threshold" => s.keypoint_threshold.to_value(),
            "smoothing" => s.smoothing.to_value(),
            "min-cutoff" => s.min_cutoff.to_value(),
            "beta" => s.beta.to_value(),
            "d-cutoff" => s.d_cutoff.to_value(),
            "draw" => s.draw.to_value(),
            "draw-ids" => s.draw_ids.to_value(),
            "radius" => s.radius.to_value(),
            "line-width" => s.line_width.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "json-location" => path(&s.json_location),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for StableKeypoints {}

impl ElementImpl for StableKeypoints {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints detector",
                "Filter/Analyzer/Video",
                "Detects unsupervised keypoints (StableKeypoints, Stable Diffusion attention) and \
                 attaches them as region-of-interest metadata; optional overlay, bus messages and JSON lines",
                "stablekeypoints developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(formats())
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for StableKeypoints {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        let (state, warmup, json) = self.open(&s)?;
        gst::info!(
            CAT,
            imp = self,
            "loaded {} ({} keypoints, input {}), one frame takes {:?}",
            state.model_name,
            state.num_keypoints,
            state.detector.as_ref().map_or(0, |d| d.input_size()),
            warmup
        );
        *lock(&self.stats) = Stats {
            warmup,
            ..Default::default()
        };
        *lock(&self.json) = json;
        *lock(&self.earliest) = None;
        *lock(&self.state) = Some(state);
        *lock(&self.reported_latency) = gst::ClockTime::ZERO;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        *lock(&self.convert) = None;
        *lock(&self.blender) = Blender::default();
        self.flush_json();
        *lock(&self.json) = None;
        Ok(())
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        let ok = self.parent_accept_caps(direction, caps);
        if !ok {
            // Negotiation then fails with a bare not-negotiated error: say why, once.
            let text = caps.to_string();
            let mut refused = lock(&self.refused);
            if refused.as_deref() != Some(text.as_str()) {
                let why = refusal_reason(caps);
                gst::warning!(CAT, imp = self, "refusing {}: {}", text, why);
                *refused = Some(text.clone());
                drop(refused);
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Cannot handle caps {}: {}", text, why)
                );
            }
        }
        ok
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let is_latency = matches!(query.view(), gst::QueryView::Latency(_));
        if direction != gst::PadDirection::Src || !is_latency {
            return BaseTransformImplExt::parent_query(self, direction, query);
        }
        if !BaseTransformImplExt::parent_query(self, direction, query) {
            return false;
        }
        let ours = self.own_latency();
        *lock(&self.reported_latency) = ours;
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let (live, min, max) = q.result();
            gst::debug!(CAT, imp = self, "adding {} of latency", ours);
            q.set(
                live,
                min.saturating_add(ours),
                max.map(|m| m.saturating_add(ours)),
            );
        }
        true
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Qos(q) = event.view() {
            let (_, _, diff, timestamp) = q.get();
            *lock(&self.earliest) = timestamp.map(|ts| {
                if diff >= 0 {
                    ts.saturating_add(gst::ClockTime::from_nseconds(diff as u64))
                } else {
                    ts.saturating_sub(gst::ClockTime::from_nseconds(diff.unsigned_abs()))
                }
            });
        }
        self.parent_src_event(event)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                // A flush (seek) starts a new stream: its first frame is inferred, and no
                // keypoints from before it are held, interpolated from or smoothed with.
                if let Some(state) = lock(&self.state).as_mut() {
                    state.held.clear();
                    state.pending.clear();
                    state.pending_infer = 0;
                    state.pending_since = None;
                    state.ready.clear();
                    state.queued = None;
                    state.smoother.reset();
                    state.schedule.reset();
                    state.last = None;
                    state.next_key = 0;
                }
                *lock(&self.earliest) = None;
            }
            gst::EventView::Eos(_) => {
                self.drain();
                self.flush_json();
            }
            _ if event.is_serialized() => self.drain(),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn submit_input_buffer(
        &self,
        _is_discont: bool,
        inbuf: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let late = self.is_late(&inbuf);
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        state.queued = Some((inbuf, late));
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(&self) -> Result<GenerateOutputSuccess, gst::FlowError> {
        let queued = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            if let Some(buf) = state.ready.pop_front() {
                return Ok(GenerateOutputSuccess::Buffer(buf));
            }
            state.queued.take()
        };
        let Some((buffer, late)) = queued else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        // Settings are copied once per frame; property changes apply from the next frame.
        let s = lock(&self.settings).clone();
        let mut done = VecDeque::new();
        for out in self.process(buffer, late, &s)? {
            done.push_back(self.finish(out, &s)?);
        }
        let first = done.pop_front();
        if let Some(state) = lock(&self.state).as_mut() {
            state.ready.extend(done);
        }
        Ok(first.map_or(
            GenerateOutputSuccess::NoOutput,
            GenerateOutputSuccess::Buffer,
        ))
    }
}

impl VideoFilterImpl for StableKeypoints {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        outcaps: &gst::Caps,
        out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        *lock(&self.convert) = if core_reads(in_info) {
            None
        } else {
            let to_rgb = ToRgb::new(in_info).map_err(|e| {
                gst::loggable_error!(CAT, "cannot convert {} to RGB: {}", in_info.format(), e)
            })?;
            gst::debug!(
                CAT,
                imp = self,
                "{} goes to the model through RGB",
                in_info.format()
            );
            Some(to_rgb)
        };
        let mut st = lock(&self.state);
        let state = st
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps set before start"))?;
        gst::debug!(CAT, imp = self, "configured for {:?}", incaps);
        state.info = Some(in_info.clone());
        drop(st);
        self.parent_set_info(incaps, in_info, outcaps, out_info)
    }
}
