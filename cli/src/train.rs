//! `train`: learn keypoint tokens from a folder of images or a video file (glue over
//! `stablekeypoints::train`; videos are decoded by `crate::video`).

use crate::args::{SeedArg, TrainArgs, TrainCmd};
use crate::images::{is_csv, is_image, ImageFiles, LabelImages};
use crate::progress::{duration, Progress};
use candle_core::DType;
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::eval::LabelSet;
use stablekeypoints::ops::warp::AugmentRanges;
use stablekeypoints::train::{
    self, checkpoint_path, Event, Outcome, RunOptions, TrainConfig, TrainData, Trainer,
};
use stablekeypoints::util::{available_memory, check_output_file, human_bytes, Inputs};
use stablekeypoints::{CropMode, Error, Model};
use std::ops::ControlFlow;
use std::path::Path;

/// A path is treated as a video when it is a file that is neither a png/jpg image nor a
/// label CSV.
pub fn is_video(path: &Path) -> bool {
    path.is_file() && !is_image(path) && !is_csv(path)
}

/// What is trained on.
#[derive(Clone, Copy, Debug)]
pub enum TrainInput<'a> {
    /// A folder of images, an image or a video (`--input`).
    Path(&'a Path),
    /// A corpus of videos (`--inputs`): a list file or a folder.
    Corpus(&'a Path),
}

impl TrainInput<'_> {
    #[cfg(not(feature = "video"))]
    fn path(&self) -> &Path {
        match self {
            TrainInput::Path(p) | TrainInput::Corpus(p) => p,
        }
    }
}

/// What `train` (and `process` before it runs the element) trains with.
pub struct TrainJob<'a> {
    pub model: &'a Path,
    pub weights: &'a crate::args::WeightsArgs,
    pub input: TrainInput<'a>,
    pub out: &'a Path,
    /// The flag that named `out` (`--out`, or `--out-dir` for `process`), for errors.
    pub out_flag: &'static str,
    pub train: &'a TrainArgs,
    pub seed: &'a SeedArg,
    pub crop: CropMode,
    pub device: DeviceSpec,
}

pub fn cmd_train(c: TrainCmd) -> Result<(), Error> {
    let input = match (&c.input, &c.inputs) {
        (_, Some(corpus)) => TrainInput::Corpus(corpus),
        (Some(p), None) => TrainInput::Path(p),
        (None, None) => unreachable!("clap requires --input or --inputs"),
    };
    run(&TrainJob {
        model: &c.model,
        weights: &c.weights,
        input,
        out: &c.out,
        out_flag: "--out",
        train: &c.train,
        seed: &c.seed,
        crop: c.crop.crop,
        device: c.device.device,
    })
}

/// Frames of a video or of a corpus of videos, decoded by GStreamer.
#[cfg(feature = "video")]
pub(crate) fn video_frames(
    input: TrainInput,
    max: Option<usize>,
    size: usize,
    crop: CropMode,
) -> Result<Box<dyn TrainData>, Error> {
    Ok(match input {
        TrainInput::Path(p) => Box::new(crate::video::VideoFrames::new(p, max, size, crop)?),
        TrainInput::Corpus(p) => Box::new(crate::corpus::frames::CorpusFrames::new(
            p, max, size, crop,
        )?),
    })
}

#[cfg(not(feature = "video"))]
pub(crate) fn video_frames(
    input: TrainInput,
    _max: Option<usize>,
    _size: usize,
    _crop: CropMode,
) -> Result<Box<dyn TrainData>, Error> {
    Err(Error::Invalid(format!(
        "{}: this build of stablekeypoints has no video input (built without the `video` \
         feature); extract the frames into a folder of png/jpg images",
        input.path().display()
    )))
}

/// The largest buffers of a step, the all-token maps of an image pair (`[2, N, R, R]` f32 on
/// the device, its host copy and the selection's working copy), must fit in memory.
fn check_memory(cfg: &TrainConfig) -> Result<(), Error> {
    let (n, r) = (cfg.num_tokens as u64, cfg.map_res as u64);
    let need = 3 * 2 * n * r * r * 4;
    match available_memory() {
        Some(avail) if need > avail => Err(Error::Invalid(format!(
            "--num-tokens {n} with --map-res {r}: a step holds about {} of attention maps \
             (2 images x N x R x R floats, 3 copies), more than the {} of memory available; \
             lower either",
            human_bytes(need),
            human_bytes(avail)
        ))),
        _ => Ok(()),
    }
}

pub fn run(job: &TrainJob) -> Result<(), Error> {
    let out = job.out;
    check_outputs(job)?;
    let t = job.train;
    // Image files are listed (and checked) before the model loads; a video is decoded once
    // the model input size is known.
    let images = list_images(job)?;
    let augment = t.augment.apply(AugmentRanges::default())?;
    // Gradients through f16 activations underflow: training computes in f32 everywhere.
    let (device, _) = job.device.open()?;
    let model = Model::open(&job.weights.source(job.model), &device, DType::F32)?;
    let cfg = config(job, &model, augment)?;
    check_memory(&cfg)?;
    let opts = RunOptions {
        checkpoint: Some(checkpoint_path(out)),
        checkpoint_every: t.checkpoint_every,
        resume: t.resume,
    };
    let frames;
    let data: &dyn TrainData = match &images {
        Some(d) => d.as_ref(),
        None => {
            frames = video_frames(job.input, t.max_frames, cfg.input_size, job.crop)?;
            frames.as_ref()
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
    match train_with_progress(&mut trainer, &opts, cfg.steps)? {
        Outcome::Finished { tokens, votes } => {
            tokens.save(out)?;
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

/// The output and its checkpoint are checked (and their folder made) before hours of
/// training, so that a bad `--out` fails now, not when the result is written; nor may they
/// replace what training reads (`--input clip.mp4 --out clip.mp4`). Without `--resume`, an
/// unfinished checkpoint is refused.
fn check_outputs(job: &TrainJob) -> Result<(), Error> {
    let out = job.out;
    check_output_file(out, job.out_flag)?;
    check_output_file(&checkpoint_path(out), job.out_flag)?;
    let mut inputs = Inputs::new();
    inputs.add("--model", job.model);
    match job.input {
        TrainInput::Path(p) if is_csv(p) => {
            inputs.add("--input", p);
            if let Ok(set) = LabelSet::load(p) {
                for row in &set.rows {
                    inputs.add("--input", &row.image);
                    if let Some(mask) = &row.mask {
                        inputs.add("--input", mask);
                    }
                }
            }
        }
        TrainInput::Path(p) => inputs.add_where("--input", p, &is_image),
        TrainInput::Corpus(p) => {
            inputs.add("--inputs", p);
        }
    }
    inputs.check(out, job.out_flag)?;
    inputs.check(&checkpoint_path(out), job.out_flag)?;
    if !job.train.resume {
        train::checkpoint::refuse_unfinished(&checkpoint_path(out))?;
    }
    Ok(())
}

/// The images trained on, listed and checked; `None` for videos, decoded once the model
/// input size is known (a corpus's list is checked now).
fn list_images(job: &TrainJob) -> Result<Option<Box<dyn TrainData>>, Error> {
    let t = job.train;
    Ok(match job.input {
        TrainInput::Path(p) if is_video(p) => None,
        TrainInput::Path(p) if is_csv(p) && p.is_file() => {
            Some(Box::new(LabelImages::new(p, t.max_frames, job.crop)?))
        }
        TrainInput::Path(p) => Some(Box::new(ImageFiles::new(p, t.max_frames, job.crop)?)),
        TrainInput::Corpus(p) => {
            crate::corpus::source::work_list(p, None)?;
            None
        }
    })
}

/// The training configuration of `job` for `model` (its native input size unless `--size`).
fn config(job: &TrainJob, model: &Model, augment: AugmentRanges) -> Result<TrainConfig, Error> {
    let t = job.train;
    let native = model.unet_config.sample_size * model.vae_config.downscale();
    let input_size = t.size.unwrap_or(if native > 0 {
        native
    } else {
        TrainConfig::default().input_size
    });
    model
        .check_input_size(input_size)
        .map_err(|e| match t.size {
            Some(s) => Error::Invalid(format!("--size {s}: {e}")),
            None => e,
        })?;
    Ok(TrainConfig {
        steps: t.steps,
        batch_size: t.batch_size,
        lr: t.lr,
        num_tokens: t.num_tokens,
        num_keypoints: t.num_keypoints,
        num_candidates: t.num_candidates,
        num_indices: t.num_indices,
        input_size,
        map_res: t.map_res,
        num_layers: TrainConfig::default().num_layers,
        layers: t.layers,
        timestep: t.noise_level.timestep(),
        sigma: t.sigma,
        sharpening_weight: t.sharpening_weight,
        equivariance_weight: t.equivariance_weight,
        top_k_strategy: t.top_k_strategy.into(),
        num_subjects: t.num_subjects,
        augment,
        seed: job.seed.seed,
        flip: t.flip,
    })
}

/// Runs the training of `total` steps and the final vote with progress bars.
fn train_with_progress(
    trainer: &mut Trainer,
    opts: &RunOptions,
    total: usize,
) -> Result<Outcome, Error> {
    let mut steps = Progress::new(total as u64, "step {pos}/{len} [{bar:30}] {msg}");
    let mut vote: Option<Progress> = None;
    let outcome = train::run(trainer, opts, &mut |ev| {
        match ev {
            Event::Resumed { step } => {
                steps.println(&format!("resumed at step {step}"));
                steps.set(step as u64, "", false, String::new);
            }
            Event::Step {
                stats: s,
                eta_seconds,
            } => {
                let terms = format!(
                    "loss {:.5} (sharpening {:.5}, equivariance {:.5}) entropy {:.3} {:.2} s/step ETA {}",
                    s.loss,
                    s.sharpening,
                    s.equivariance,
                    s.entropy,
                    s.seconds,
                    duration(eta_seconds)
                );
                steps.set(s.step as u64, &terms, true, || {
                    format!("step {}/{} {terms}", s.step, s.steps)
                });
            }
            Event::Checkpoint { .. } => {}
            Event::Vote { done, total } => {
                let bar = vote.get_or_insert_with(|| {
                    steps.finish();
                    Progress::new(total as u64, "vote {pos}/{len} [{bar:30}] {eta}")
                });
                bar.set(done as u64, "", done == total || done % 10 == 0, || {
                    format!("vote {done}/{total}")
                });
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(v) = &vote {
        v.finish();
    }
    Ok(outcome)
}
