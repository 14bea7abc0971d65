//! `train`: learn keypoint tokens from a folder of images or a video file (glue over
//! `stablekeypoints::train`; videos are decoded by `crate::video`).

use crate::args::{device_from_str, Args, USAGE};
use crate::detect::read_image;
use crate::video::{self, VideoFrames};
use candle_core::DType;
use stablekeypoints::frame::to_model_input;
use stablekeypoints::train::{
    self, checkpoint_path, Event, Fnv, Outcome, RunOptions, TrainConfig, TrainData, Trainer,
};
use stablekeypoints::{CropMode, Error, FrameRef, Model, PixelFormat};
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// `train`'s on/off flags.
pub const SWITCHES: [&str; 2] = ["resume", "flip"];
/// `train`'s valued flags besides `--model`, `--input` and `--out` (`process` takes them too).
pub const OPTIONS: [&str; 14] = [
    "steps",
    "batch-size",
    "lr",
    "num-tokens",
    "num-keypoints",
    "num-candidates",
    "num-indices",
    "size",
    "map-res",
    "seed",
    "checkpoint-every",
    "max-frames",
    "crop",
    "device",
];

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files under `dir`, recursively, sorted by path.
fn find_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let p = entry
            .map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?
            .path();
        if p.is_dir() {
            find_images(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Image files decoded on demand (a step costs far more than a decode).
struct ImageFiles {
    paths: Vec<PathBuf>,
    crop: CropMode,
    fingerprint: String,
}

impl ImageFiles {
    fn new(input: &Path, max_frames: Option<usize>, crop: CropMode) -> Result<Self, Error> {
        let mut paths = Vec::new();
        if input.is_dir() {
            find_images(input, &mut paths)?;
        } else if input.is_file() {
            if !is_image(input) {
                return Err(Error::Invalid(format!(
                    "{}: only folders of png/jpg images (or one image) are supported so far; \
                     extract video frames into a folder first",
                    input.display()
                )));
            }
            paths.push(input.to_path_buf());
        } else {
            return Err(Error::Io {
                path: input.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no png/jpg images found",
                input.display()
            )));
        }
        if let Some(m) = max_frames.filter(|&m| m > 0 && m < paths.len()) {
            // Uniformly over the whole sorted list, first and last included when m > 1.
            let n = paths.len();
            paths = (0..m)
                .map(|i| {
                    let j = if m == 1 { 0 } else { i * (n - 1) / (m - 1) };
                    paths[j].clone()
                })
                .collect();
        }
        let mut h = Fnv::new();
        h.write(format!("{crop:?}").as_bytes());
        for p in &paths {
            let rel = p.strip_prefix(input).unwrap_or(p);
            h.write(rel.to_string_lossy().as_bytes());
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            h.write(&len.to_le_bytes());
        }
        let fingerprint = format!("{} images, {}", paths.len(), h.hex());
        Ok(Self {
            paths,
            crop,
            fingerprint,
        })
    }
}

impl TrainData for ImageFiles {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        let img = read_image(&self.paths[index])?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
        Ok(to_model_input(&frame, size, self.crop).0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub fn cmd_train(a: Args) -> Result<(), Error> {
    if !a.positional.is_empty() {
        return Err(Error::Invalid(format!(
            "unexpected argument {:?}\n\n{USAGE}",
            a.positional[0]
        )));
    }
    let model_dir = PathBuf::from(a.required("model")?);
    let input = PathBuf::from(a.required("input")?);
    let out = PathBuf::from(a.required("out")?);
    // Made before hours of training, so that a bad --out fails now, not at the checkpoint.
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let crop = a
        .get("crop")
        .map(str::parse::<CropMode>)
        .transpose()?
        .unwrap_or_default();
    let max_frames = a.parse_opt("max-frames")?;
    // Image files are listed (and checked) before the model loads; a video is decoded once
    // the model input size is known.
    let images = if video::is_video(&input, is_image) {
        None
    } else {
        Some(ImageFiles::new(&input, max_frames, crop)?)
    };
    // Gradients through f16 activations underflow: training computes in f32 everywhere.
    let (device, _) = device_from_str(a.get("device").unwrap_or("cpu"))?;
    let model = Model::load(&model_dir, &device, DType::F32)?;
    let native = model.unet_config.sample_size * model.vae_config.downscale();
    let d = TrainConfig::default();
    let cfg = TrainConfig {
        steps: a.parse_opt("steps")?.unwrap_or(d.steps),
        batch_size: a.parse_opt("batch-size")?.unwrap_or(d.batch_size),
        lr: a.parse_opt("lr")?.unwrap_or(d.lr),
        num_tokens: a.parse_opt("num-tokens")?.unwrap_or(d.num_tokens),
        num_keypoints: a.parse_opt("num-keypoints")?.unwrap_or(d.num_keypoints),
        num_candidates: a.parse_opt("num-candidates")?.unwrap_or(d.num_candidates),
        num_indices: a.parse_opt("num-indices")?.unwrap_or(d.num_indices),
        input_size: a
            .parse_opt("size")?
            .unwrap_or(if native > 0 { native } else { d.input_size }),
        map_res: a.parse_opt("map-res")?.unwrap_or(d.map_res),
        seed: a.parse_opt("seed")?.unwrap_or(d.seed),
        flip: a.has("flip"),
        ..d
    };
    let opts = RunOptions {
        checkpoint: Some(checkpoint_path(&out)),
        checkpoint_every: a.parse_opt("checkpoint-every")?.unwrap_or(50),
        resume: a.has("resume"),
    };
    let frames;
    let data: &dyn TrainData = match &images {
        Some(d) => d,
        None => {
            eprintln!("decoding {} with {}", input.display(), video::GST_LAUNCH);
            frames = VideoFrames::new(&input, max_frames, cfg.input_size, crop)?;
            eprintln!(
                "sampled {} of {} frames ({}x{}) uniformly over the video: {}",
                frames.len(),
                frames.info.frames,
                frames.info.width,
                frames.info.height,
                video::index_list(&frames.indices)
            );
            &frames
        }
    };
    let mut trainer = Trainer::new(&model, data, cfg.clone())?;
    eprintln!(
        "training {} tokens on {} images ({}x{}, maps {}x{}) for {} steps of {} images; checkpoint {}",
        cfg.num_tokens,
        data.len(),
        cfg.input_size,
        cfg.input_size,
        cfg.map_res,
        cfg.map_res,
        cfg.steps,
        cfg.batch_size,
        opts.checkpoint.as_ref().expect("set").display()
    );
    let tty = std::io::stderr().is_terminal();
    let mut err = std::io::stderr();
    let outcome = train::run(&mut trainer, &opts, &mut |ev| {
        match ev {
            Event::Resumed { step } => {
                let _ = writeln!(err, "resumed at step {step}");
            }
            Event::Step {
                stats: s,
                eta_seconds,
            } => {
                let line = format!(
                    "step {}/{} loss {:.5} (sharpening {:.5}, equivariance {:.5}) entropy {:.3} {:.2} s/step ETA {}",
                    s.step, s.steps, s.loss, s.sharpening, s.equivariance, s.entropy, s.seconds,
                    duration(eta_seconds)
                );
                if tty {
                    let done = 30 * s.step / s.steps.max(1);
                    let bar = format!("{}{}", "#".repeat(done), ".".repeat(30 - done));
                    let _ = write!(err, "\r\x1b[2K[{bar}] {line}");
                    if s.step == s.steps {
                        let _ = writeln!(err);
                    }
                } else {
                    let _ = writeln!(err, "{line}");
                }
            }
            Event::Checkpoint { .. } => {}
            Event::Vote { done, total } => {
                if tty {
                    let _ = write!(err, "\r\x1b[2Kvote {done}/{total}");
                    if done == total {
                        let _ = writeln!(err);
                    }
                } else if done == total || done % 10 == 0 {
                    let _ = writeln!(err, "vote {done}/{total}");
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    match outcome {
        Outcome::Finished { tokens, votes } => {
            tokens.save(&out)?;
            let counts: Vec<String> = votes.iter().map(|(t, c)| format!("{t}:{c}")).collect();
            eprintln!(
                "wrote {} ({} keypoint tokens; token:votes {})",
                out.display(),
                tokens.indices.len(),
                counts.join(" ")
            );
            if tokens.indices.len() < cfg.num_keypoints {
                eprintln!(
                    "warning: only {} distinct tokens were voted for (asked for {})",
                    tokens.indices.len(),
                    cfg.num_keypoints
                );
            }
            Ok(())
        }
        Outcome::Stopped { step } => Err(Error::Invalid(format!("stopped at step {step}"))),
    }
}
