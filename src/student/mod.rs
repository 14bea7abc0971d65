//! The student: a small convolutional network distilled from a teacher (a model and its
//! keypoint tokens) that gives the teacher's K keypoints at a fraction of its cost.
//!
//! A student file (`student.safetensors`) holds the layers' weights and, in its metadata,
//! the architecture, the preprocessing it expects and the teacher's identity: the model's
//! identity, the tokens' fingerprint and their indices. A pose file fitted for the
//! teacher's tokens therefore applies to the student, and one fitted for other tokens is
//! refused as it is for the teacher.

pub mod distill;
pub mod graph;
pub mod infer;
pub mod labels;
pub mod net;
pub mod onnx;

use crate::detect::item::prepare;
use crate::detect::timing::Laps;
use crate::detect::{map_back, Detection, Item, Keypoint, Stage, StageTimes};
use crate::error::{Error, Result};
use crate::frame::{CropMode, Fit, FrameRef};
use crate::util::safetensors_bytes;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `format` metadata of a student file.
pub const FORMAT: &str = "stablekeypoints-student/1";
/// The one architecture so far ([`net::LAYERS`]).
pub const ARCH: &str = "skp-student-1";
/// Default channel widths of the four stages.
pub const DEFAULT_WIDTHS: [usize; 4] = [16, 32, 64, 128];
/// Largest input side a student file may ask for.
pub const MAX_INPUT_SIZE: usize = 1024;
/// Widest stage a student file may ask for.
pub const MAX_WIDTH: usize = 1024;

/// What a student file says about itself besides its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct StudentInfo {
    pub widths: [usize; 4],
    pub num_keypoints: usize,
    /// Side of the square input.
    pub input_size: usize,
    pub crop: CropMode,
    /// The teacher model's identity ([`crate::model::ModelIdentity`]'s weights fingerprint,
    /// as tokens files and checkpoints record it; a configuration hash in older files).
    pub teacher_model: String,
    /// The teacher tokens' fingerprint ([`crate::Tokens::fingerprint`]).
    pub tokens_hash: String,
    /// The teacher tokens' keypoint indices, in keypoint order.
    pub token_indices: Vec<usize>,
    /// Per keypoint: the teacher confidence that a heatmap peak of 1 stands for.
    pub confidence_scale: Vec<f32>,
    /// Other metadata (how it was distilled), kept verbatim.
    pub extra: BTreeMap<String, String>,
}

impl StudentInfo {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.widths.iter().any(|&w| w == 0 || w > MAX_WIDTH) {
            return Err(format!(
                "metadata `widths` {:?}: each must be 1..={MAX_WIDTH}",
                self.widths
            ));
        }
        if self.num_keypoints == 0 || self.num_keypoints > crate::limits::MAX_NUM_KEYPOINTS {
            return Err(format!(
                "metadata `num_keypoints` = {} is outside 1..={}",
                self.num_keypoints,
                crate::limits::MAX_NUM_KEYPOINTS
            ));
        }
        if self.input_size == 0
            || self.input_size > MAX_INPUT_SIZE
            || !self.input_size.is_multiple_of(net::SIZE_MULTIPLE)
        {
            return Err(format!(
                "metadata `input_size` = {} must be a multiple of {} up to {MAX_INPUT_SIZE}",
                self.input_size,
                net::SIZE_MULTIPLE
            ));
        }
        if self.token_indices.len() != self.num_keypoints
            || self.confidence_scale.len() != self.num_keypoints
        {
            return Err(format!(
                "metadata `token_indices` ({}) and `confidence_scale` ({}) must have one entry per keypoint ({})",
                self.token_indices.len(),
                self.confidence_scale.len(),
                self.num_keypoints
            ));
        }
        if let Some(s) = self
            .confidence_scale
            .iter()
            .find(|s| !s.is_finite() || **s <= 0.0)
        {
            return Err(format!(
                "metadata `confidence_scale` holds {s}: must be > 0"
            ));
        }
        Ok(())
    }

    fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.extra.clone();
        let list = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(",");
        m.insert("format".into(), FORMAT.into());
        m.insert("arch".into(), ARCH.into());
        m.insert(
            "widths".into(),
            list(&mut self.widths.iter().map(|w| w.to_string())),
        );
        m.insert("num_keypoints".into(), self.num_keypoints.to_string());
        m.insert("input_size".into(), self.input_size.to_string());
        m.insert("crop".into(), self.crop.name().into());
        m.insert("input".into(), INPUT_DOC.into());
        m.insert("teacher_model".into(), self.teacher_model.clone());
        m.insert("tokens_hash".into(), self.tokens_hash.clone());
        m.insert(
            "token_indices".into(),
            list(&mut self.token_indices.iter().map(|i| i.to_string())),
        );
        m.insert(
            "confidence_scale".into(),
            list(&mut self.confidence_scale.iter().map(|s| format!("{s:e}"))),
        );
        m
    }

    fn from_metadata(meta: &HashMap<String, String>) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            meta.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("metadata `{k}` is missing"))
        };
        if get("format")? != FORMAT {
            return Err(format!(
                "metadata `format` is {:?}, not {FORMAT:?}",
                get("format")?
            ));
        }
        if get("arch")? != ARCH {
            return Err(format!(
                "architecture {:?} is not supported (only {ARCH:?})",
                get("arch")?
            ));
        }
        fn nums<T: std::str::FromStr>(k: &str, v: &str) -> std::result::Result<Vec<T>, String> {
            v.split(',')
                .map(|x| x.trim().parse::<T>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("metadata `{k}` = {v:?} is not a list of numbers"))
        }
        let one = |k: &str| -> std::result::Result<usize, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("metadata `{k}` = {:?} is not a count", get(k).unwrap()))
        };
        let widths: Vec<usize> = nums("widths", get("widths")?)?;
        let widths: [usize; 4] = widths
            .try_into()
            .map_err(|_| "metadata `widths` must list 4 stages".to_string())?;
        let mut extra = BTreeMap::new();
        for (k, v) in meta {
            if !KNOWN.contains(&k.as_str()) {
                extra.insert(k.clone(), v.clone());
            }
        }
        let info = Self {
            widths,
            num_keypoints: one("num_keypoints")?,
            input_size: one("input_size")?,
            crop: get("crop")?.parse().map_err(|e: Error| e.to_string())?,
            teacher_model: get("teacher_model")?.to_string(),
            tokens_hash: get("tokens_hash")?.to_string(),
            token_indices: nums("token_indices", get("token_indices")?)?,
            confidence_scale: nums("confidence_scale", get("confidence_scale")?)?,
            extra,
        };
        info.validate()?;
        Ok(info)
    }
}

const KNOWN: [&str; 11] = [
    "format",
    "arch",
    "widths",
    "num_keypoints",
    "input_size",
    "crop",
    "input",
    "teacher_model",
    "tokens_hash",
    "token_indices",
    "confidence_scale",
];

/// The preprocessing, as recorded in the file and the ONNX export.
pub const INPUT_DOC: &str =
    "RGB planar [1,3,S,S] float32 in [0,1] (pixel/255), frame fitted to the square by `crop`";

/// Whether `path` looks like a student file (a file, not a model folder, whose safetensors
/// header says so). Cheap: reads the header only.
pub fn is_student_file(path: &Path) -> bool {
    use std::io::Read;
    if !path.is_file() {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(n);
    if n > 1 << 20 {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).is_ok()
        && String::from_utf8_lossy(&header).contains(&format!("\"{FORMAT}\""))
}

/// A student's weights as host tensors, with its description.
#[derive(Clone, Debug)]
pub struct StudentWeights {
    pub info: StudentInfo,
    /// `(weight [cout, cin, k, k], bias [cout])` per layer of [`net::LAYERS`], row-major f32.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl StudentWeights {
    /// A student with seeded He-initialised weights (the head small, so that early heatmaps
    /// are flat) and zero biases, for `info`.
    pub fn random(info: StudentInfo, seed: u64) -> Self {
        let mut rng = crate::ops::rng::Rng::new(crate::ops::rng::mix64(seed ^ 0x5354_5544));
        let layers = (0..net::LAYERS.len())
            .map(|i| {
                let [co, ci, ks, _] = net::weight_shape(&info.widths, info.num_keypoints, i);
                let std = if i + 1 == net::LAYERS.len() {
                    0.01
                } else {
                    (2.0 / (ci * ks * ks) as f32).sqrt()
                };
                let mut w = vec![0f32; co * ci * ks * ks];
                rng.fill_normal(&mut w);
                w.iter_mut().for_each(|x| *x *= std);
                (w, vec![0f32; co])
            })
            .collect();
        Self { info, layers }
    }

    /// Reads a student file; errors name the file and the tensor or key at fault.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Weights {
            path: path.to_path_buf(),
            msg: format!("not a usable student file: {m}"),
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("unreadable safetensors header ({e})")))?;
        let meta = meta
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let info = StudentInfo::from_metadata(&meta).map_err(bad)?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("unreadable tensors ({e})")))?;
        let mut layers = Vec::with_capacity(net::LAYERS.len());
        for (i, (name, ..)) in net::LAYERS.iter().enumerate() {
            let ws = net::weight_shape(&info.widths, info.num_keypoints, i);
            let w = read_f32(&st, &format!("{name}.weight"), &ws).map_err(bad)?;
            let b = read_f32(&st, &format!("{name}.bias"), &[ws[0]]).map_err(bad)?;
            layers.push((w, b));
        }
        Ok(Self { info, layers })
    }

    /// The file's bytes (canonical header: the same student always gives the same bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        for (i, (name, ..)) in net::LAYERS.iter().enumerate() {
            let ws = net::weight_shape(&self.info.widths, self.info.num_keypoints, i);
            let (w, b) = &self.layers[i];
            data.push((format!("{name}.weight"), ws.to_vec(), bytes_of(w)));
            data.push((format!("{name}.bias"), vec![ws[0]], bytes_of(b)));
        }
        let views = data
            .iter()
            .map(|(n, s, d)| {
                safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, s.clone(), d)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| Error::Invalid(format!("student tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors_bytes(views, &self.info.to_metadata()).map_err(Error::Invalid)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::write_atomic(path, &self.to_bytes()?)
    }

    /// Layer tensors on `device`.
    pub fn tensors(&self, device: &Device) -> Result<Vec<(Tensor, Tensor)>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, (w, b))| {
                let ws = net::weight_shape(&self.info.widths, self.info.num_keypoints, i);
                Ok((
                    Tensor::from_slice(w, ws.to_vec(), device)?,
                    Tensor::from_slice(b, ws[0], device)?,
                ))
            })
            .collect()
    }
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(
    st: &safetensors::SafeTensors,
    name: &str,
    shape: &[usize],
) -> std::result::Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if t.shape() != shape {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {shape:?}",
            t.shape()
        ));
    }
    if t.dtype() != safetensors::tensor::Dtype::F32 {
        return Err(format!("tensor `{name}` is {:?}, expected F32", t.dtype()));
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("tensor `{name}` holds a non-finite value at {i}"));
    }
    Ok(v)
}

/// A loaded student, ready to run on frames.
pub struct Student {
    pub info: StudentInfo,
    pub path: PathBuf,
    run: Runner,
    device: Device,
    /// Stage times, when recorded ([`Student::record_stage_times`]).
    laps: Mutex<Option<Laps>>,
}

enum Runner {
    /// The project's CPU kernels.
    Cpu(infer::Engine),
    /// candle's convolutions on another device.
    Device(net::FastConvs),
}

impl Student {
    /// Loads a student file for `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let w = StudentWeights::load(path)?;
        Self::new(w, path, device)
    }

    pub fn new(w: StudentWeights, path: &Path, device: &Device) -> Result<Self> {
        let run = if device.is_cpu() {
            Runner::Cpu(infer::Engine::new(&w))
        } else {
            Runner::Device(net::FastConvs(
                w.tensors(device)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, (wt, b))| {
                        crate::model::nn::Conv2d::from_tensors(
                            wt,
                            Some(b),
                            net::LAYERS[i].4,
                            net::LAYERS[i].3 / 2,
                        )
                    })
                    .collect(),
            ))
        };
        Ok(Self {
            info: w.info,
            path: path.to_path_buf(),
            run,
            device: device.clone(),
            laps: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Heatmaps [B, K, S/4, S/4] of model inputs [B, 3, S, S] in [0, 1].
    pub fn heatmaps(&self, images: &Tensor) -> Result<Tensor> {
        match &self.run {
            Runner::Cpu(e) => {
                let (n, _, s, _) = images.dims4()?;
                if s != self.info.input_size {
                    return Err(Error::Invalid(format!(
                        "inputs of side {s} given to the student {} of input size {}",
                        self.path.display(),
                        self.info.input_size
                    )));
                }
                let x = images
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let h = s / net::STRIDE;
                Ok(Tensor::from_vec(
                    e.run(&x, n),
                    (n, self.info.num_keypoints, h, h),
                    &Device::Cpu,
                )?)
            }
            Runner::Device(c) => Ok(c.forward(&images.to_dtype(DType::F32)?)?),
        }
    }

    /// Keypoints of each heatmap stack [B, K, H, W], normalised to the input square, with
    /// confidences on the teacher's scale.
    pub fn keypoints_of(&self, heat: &Tensor) -> Result<Vec<Vec<Keypoint>>> {
        let (b, _, h, _) = heat.dims4()?;
        self.peaks(&heat.flatten_all()?.to_vec1::<f32>()?, b, h)
    }

    /// [`Self::keypoints_of`] on the heatmaps of `b` inputs as one flat buffer of side `h`.
    fn peaks(&self, v: &[f32], b: usize, h: usize) -> Result<Vec<Vec<Keypoint>>> {
        let k = self.info.num_keypoints;
        if v.len() != b * k * h * h {
            return Err(Error::Invalid(format!(
                "{} heatmap values for {b} inputs of {k} keypoints at {h}x{h}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "the student {} produced non-finite heatmaps",
                self.path.display()
            )));
        }
        Ok(v.chunks_exact(k * h * h)
            .map(|maps| {
                maps.chunks_exact(h * h)
                    .enumerate()
                    .map(|(id, m)| {
                        let (x, y, peak) = net::heatmap_peak(m, h, h);
                        Keypoint {
                            id,
                            x,
                            y,
                            score: peak.max(0.0) * self.info.confidence_scale[id],
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// Keypoints of frames (one batch), mapped back to each frame.
    pub fn detect_frames(&self, frames: &[FrameRef]) -> Result<Vec<Detection>> {
        self.detect(frames.iter().map(|f| Item::frame(*f, 0)).collect())
    }

    /// Keypoints of `items` (a student has no noise: their keys do not matter), as one
    /// batch; an input without a fit is its own frame.
    pub fn detect(&self, items: Vec<Item>) -> Result<Vec<Detection>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.with_laps(Laps::restart);
        let s = self.info.input_size;
        let mut pixels = Vec::with_capacity(items.len() * 3 * s * s);
        let mut fits = Vec::with_capacity(items.len());
        for p in prepare(items, s, self.info.crop)? {
            pixels.extend_from_slice(&p.input);
            fits.push(
                p.fit
                    .unwrap_or_else(|| Fit::new(s, s, s, CropMode::Stretch)),
            );
        }
        self.lap(Stage::Preprocess)?;
        self.detect_inputs(pixels, &fits)
    }

    /// Keypoints of prepared model inputs (`to_model_input`, concatenated), mapped back
    /// through their fits.
    fn detect_inputs(&self, pixels: Vec<f32>, fits: &[Fit]) -> Result<Vec<Detection>> {
        let s = self.info.input_size;
        if pixels.len() != fits.len() * 3 * s * s || fits.iter().any(|f| f.size != s) {
            return Err(Error::Invalid(format!(
                "{} model input values for {} frames given to a student of input size {s}",
                pixels.len(),
                fits.len()
            )));
        }
        let n = fits.len();
        let kps = match &self.run {
            // Frames on the CPU go straight to the kernels, without tensors in between.
            Runner::Cpu(e) => {
                let heat = e.run(&pixels, n);
                self.lap_network(n)?;
                self.peaks(&heat, n, s / net::STRIDE)?
            }
            Runner::Device(_) => {
                let images = Tensor::from_vec(pixels, (n, 3, s, s), &self.device)?;
                let heat = self.heatmaps(&images)?;
                self.lap_network(n)?;
                self.keypoints_of(&heat)?
            }
        };
        let detections = kps
            .into_iter()
            .zip(fits)
            .map(|(k, fit)| map_back(k, fit))
            .collect();
        self.lap(Stage::Extraction)?;
        Ok(detections)
    }

    /// Records the time of each stage of the detections from now on (`on`), each stage
    /// synchronising the device, or stops recording; the network's FLOPs are its
    /// architecture's ([`net::flops`]).
    pub fn record_stage_times(&self, on: bool) {
        *self.laps.lock().unwrap_or_else(|e| e.into_inner()) = on.then(Laps::new);
    }

    /// The stage times recorded since the previous call (zero when not recording).
    pub fn take_stage_times(&self) -> StageTimes {
        self.with_laps(|l| std::mem::take(&mut l.times))
            .unwrap_or_default()
    }

    fn with_laps<T>(&self, f: impl FnOnce(&mut Laps) -> T) -> Option<T> {
        self.laps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(f)
    }

    fn lap(&self, stage: Stage) -> Result<()> {
        self.lap_with(stage, None)
    }

    fn lap_network(&self, n: usize) -> Result<()> {
        let flops = net::flops(
            &self.info.widths,
            self.info.num_keypoints,
            self.info.input_size,
        );
        self.lap_with(Stage::Network, Some(flops * n as u64))
    }

    fn lap_with(&self, stage: Stage, flops: Option<u64>) -> Result<()> {
        let mut laps = self.laps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = laps.as_mut() {
            self.device.synchronize()?;
            l.lap_counting(stage, flops);
        }
        Ok(())
    }

    /// The check that a student was distilled from these tokens (for `--tokens` given with
    /// a student, and for pose files): same indices and fingerprint.
    pub fn check_tokens(&self, tokens: &crate::Tokens, tokens_path: &Path) -> Result<()> {
        if tokens.indices != self.info.token_indices
            || tokens.fingerprint() != self.info.tokens_hash
        {
            return Err(Error::Weights {
                path: self.path.clone(),
                msg: format!(
                    "this student was distilled from tokens {} (indices {:?}), not from {} ({}, indices {:?})",
                    self.info.tokens_hash,
                    self.info.token_indices,
                    tokens_path.display(),
                    tokens.fingerprint(),
                    tokens.indices
                ),
            });
        }
        Ok(())
    }
}
