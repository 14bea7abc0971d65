//! The inference element's model side: loading (shared by instances with the same model
//! and device), the warm-up, and running a batch of mapped frames through the detector.

use stablekeypoints::estimator::{Estimator, KeypointIdentity};
use stablekeypoints::model::{ModelIdentity, ModelSource};
use stablekeypoints::options::DetectSettings;
use stablekeypoints::student::Student;
use stablekeypoints::{Detector, FrameRef, Keypoint, Model, PixelFormat, Region, Tokens};

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use super::CAT;
use crate::convert::{ToRgb, CORE_FORMAT};
use crate::formats::frame_ref;
use crate::lock;
use crate::meta::TokenIdentity;
use crate::pose::Pose;

/// What `start()` needs to know.
pub struct LoadSettings<'a> {
    pub model: Option<&'a Path>,
    /// `vae=`: the VAE from another folder or file.
    pub vae: Option<&'a Path>,
    /// `no-ema`: a single file's plain UNet weights.
    pub no_ema: bool,
    pub tokens: Option<&'a Path>,
    pub pose: Option<&'a Path>,
    pub device: &'a str,
    /// The detection settings, as the properties set them.
    pub detect: &'a DetectSettings,
    /// Testing aid: added to every inference and to the warm-up.
    pub delay: Duration,
}

/// A loaded model with its tokens, or a student.
pub struct Loaded {
    pub detector: Estimator,
    pub tokens: TokenIdentity,
    pub pose: Option<Pose>,
    pub model_name: String,
    /// One frame's time, measured on a grey frame.
    pub warmup: Duration,
}

/// Models already loaded by some element instance, shared by the weights' identity (not
/// the path: weights replaced in a folder are another model) and device.
type ModelCache = Vec<((ModelIdentity, String), Weak<Model>)>;
static MODELS: LazyLock<Mutex<ModelCache>> = LazyLock::new(Default::default);

fn parse_device(s: &str) -> Result<(candle_core::Device, candle_core::DType), String> {
    stablekeypoints::device::parse(s).map_err(|e| e.to_string())
}

pub(super) fn load_model(source: &ModelSource, device: &str) -> Result<Arc<Model>, String> {
    let dir = &source.model;
    let key = (
        ModelIdentity::of_source(source).map_err(|e| e.to_string())?,
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
            "model {} ({}) on {}: already loaded",
            dir.display(),
            key.0.weights,
            key.1
        );
        return Ok(m);
    }
    let (dev, dtype) = parse_device(device)?;
    let model = Arc::new(Model::open(source, &dev, dtype).map_err(|e| e.to_string())?);
    gst::info!(
        CAT,
        "model {} ({}) on {}: loaded from disk",
        dir.display(),
        key.0.weights,
        key.1
    );
    cache.push((key, Arc::downgrade(&model)));
    Ok(model)
}

/// Loads model, tokens and pose, and times one frame. Errors name the file and the cause.
pub fn open(s: &LoadSettings) -> Result<Loaded, gst::ErrorMessage> {
    let model_dir = s.model.map(Path::to_path_buf).ok_or_else(|| {
        gst::error_msg!(
            gst::LibraryError::Settings,
            ("The `model` property is not set (a diffusers directory with unet/ and vae/)")
        )
    })?;
    let model_dir = stablekeypoints::model::resolve_model(&model_dir)
        .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ("{}", e)))?;
    if Estimator::is_student(&model_dir) {
        return open_student(&model_dir, s);
    }
    let source = model_source(&model_dir, s)?;
    let tokens_path = s
        .tokens
        .map(Path::to_path_buf)
        .unwrap_or_else(|| model_dir.join("tokens.safetensors"));
    // The core's errors name the file at fault.
    let tokens = Tokens::load(&tokens_path).map_err(|e| {
        gst::error_msg!(gst::ResourceError::OpenRead, ("Cannot load tokens: {}", e))
    })?;
    let pose = load_pose(
        s,
        &KeypointIdentity::of(&tokens),
        &format!("tokens {}", tokens_path.display()),
    )?;
    let model = load_model(&source, s.device).map_err(|e| {
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Cannot load model {}: {}", model_dir.display(), e)
        )
    })?;
    let opts = s.detect.to_options();
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
    let detector =
        Estimator::teacher(Detector::new(model.clone(), &tokens, opts.clone()).map_err(bad)?);
    // Time one frame on a separate detector (its noise stream stays untouched) so the
    // latency query has an answer before the first buffer.
    let size = detector.input_size();
    let grey = vec![128u8; size * size * 3];
    let started = Instant::now();
    let frame = FrameRef::packed(PixelFormat::Rgb, size, size, &grey, size * 3).map_err(bad)?;
    Detector::new(model, &tokens, opts)
        .and_then(|mut d| d.detect(vec![stablekeypoints::Item::frame(frame, 0)]))
        .map_err(bad)?;
    std::thread::sleep(s.delay);
    Ok(Loaded {
        detector,
        tokens: token_identity(&KeypointIdentity::of(&tokens)),
        pose,
        model_name: model_dir.display().to_string(),
        warmup: started.elapsed(),
    })
}

/// The diffusion model `model_dir` (a folder or a single file) with the parts `s` names,
/// its layout checked before any tensor is read, so that a wrong directory or file is
/// reported as such.
fn model_source(model_dir: &Path, s: &LoadSettings) -> Result<ModelSource, gst::ErrorMessage> {
    if !model_dir.exists() {
        return Err(gst::error_msg!(
            gst::ResourceError::NotFound,
            (
                "Model {} does not exist (`model` is a diffusers folder, a single-file checkpoint or a student file)",
                model_dir.display()
            )
        ));
    }
    let source = ModelSource {
        model: model_dir.to_path_buf(),
        vae: s.vae.map(Path::to_path_buf),
        no_ema: s.no_ema,
    };
    source.check().map_err(|e| {
        gst::error_msg!(
            gst::ResourceError::NotFound,
            ("Cannot load model {}: {}", model_dir.display(), e)
        )
    })?;
    Ok(source)
}

fn token_identity(k: &KeypointIdentity) -> TokenIdentity {
    TokenIdentity {
        indices: k.indices.iter().map(|&i| i as u32).collect(),
        hash: k.hash.clone(),
    }
}

/// The pose file of `s`, checked against the keypoints' tokens (`source` names them).
fn load_pose(
    s: &LoadSettings,
    keys: &KeypointIdentity,
    source: &str,
) -> Result<Option<Pose>, gst::ErrorMessage> {
    s.pose
        .map(|p| {
            let pose = Pose::load(p)?;
            pose.check(&keys.indices, &keys.hash, source)?;
            Ok(pose)
        })
        .transpose()
        .map_err(|e| match e {
            crate::pose::PoseError::Load(m) => {
                gst::error_msg!(gst::ResourceError::OpenRead, ("{}", m))
            }
            crate::pose::PoseError::Unusable(m) => {
                gst::error_msg!(gst::LibraryError::Settings, ("{}", m))
            }
        })
}

/// A student file as the model: its keypoints are its teacher tokens'; `tokens`, when set,
/// must be those tokens. Options of the diffusion model (noise, augmentations, input size)
/// do not apply to a student and are ignored.
fn open_student(path: &Path, s: &LoadSettings) -> Result<Loaded, gst::ErrorMessage> {
    let (dev, _) = parse_device(s.device)
        .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("device: {}", e)))?;
    let student = Student::load(path, &dev).map_err(|e| {
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Cannot load student {}: {}", path.display(), e)
        )
    })?;
    if let Some(t) = s.tokens {
        let tokens = Tokens::load(t).map_err(|e| {
            gst::error_msg!(gst::ResourceError::OpenRead, ("Cannot load tokens: {}", e))
        })?;
        student
            .check_tokens(&tokens, t)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
    }
    let keys = KeypointIdentity {
        indices: student.info.token_indices.clone(),
        hash: student.info.tokens_hash.clone(),
    };
    let pose = load_pose(s, &keys, &format!("student {}", path.display()))?;
    let size = student.info.input_size;
    let grey = vec![128u8; size * size * 3];
    let started = Instant::now();
    let bad = |e: stablekeypoints::Error| {
        gst::error_msg!(
            gst::LibraryError::Settings,
            ("Student {}: {}", path.display(), e)
        )
    };
    let frame = FrameRef::packed(PixelFormat::Rgb, size, size, &grey, size * 3).map_err(bad)?;
    student.detect_frames(&[frame]).map_err(bad)?;
    std::thread::sleep(s.delay);
    Ok(Loaded {
        detector: Estimator::Student(Box::new(student)),
        tokens: token_identity(&keys),
        pose,
        model_name: path.display().to_string(),
        warmup: started.elapsed(),
    })
}

/// What a batch infers: its frames, or regions of them (`(frame, region)`, in forward
/// passes of at most `chunk`).
pub enum Work<'a> {
    Frames,
    Regions(&'a [(usize, Region)], usize),
}

/// Runs `detector` on `buffers` (frames of `info`) as one batch (`work`; a key per frame or
/// per region): straight from the mapped planes for the formats the core reads, through
/// `convert` for the others.
pub fn detect(
    detector: &mut Estimator,
    convert: Option<&mut ToRgb>,
    buffers: &[&gst::BufferRef],
    keys: &[u64],
    info: &gst_video::VideoInfo,
    work: Work,
) -> Result<Vec<Vec<Keypoint>>, String> {
    let mapped = buffers
        .iter()
        .map(|b| gst_video::VideoFrameRef::from_buffer_ref_readable(b, info))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot map the frame: {e}"))?;
    let mut run = |frames: &[FrameRef]| match work {
        Work::Frames => detector.detect(stablekeypoints::Item::frames(frames, keys)?),
        Work::Regions(regions, chunk) => {
            let mut out = Vec::with_capacity(regions.len());
            for (r, k) in regions.chunks(chunk.max(1)).zip(keys.chunks(chunk.max(1))) {
                out.extend(detector.detect(stablekeypoints::Item::regions(frames, r, k)?)?);
            }
            Ok(out)
        }
    };
    let detections = match convert {
        None => {
            let frames = mapped
                .iter()
                .map(|f| frame_ref(f, info))
                .collect::<Result<Vec<_>, _>>()?;
            run(&frames)
        }
        Some(to_rgb) => {
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
            run(&frames)
        }
    };
    detections
        .map(|d| d.into_iter().map(|d| d.keypoints).collect())
        .map_err(|e| e.to_string())
}
