//! The command line's flags: one struct per command, and the groups several commands share
//! (`#[command(flatten)]`), so that a new flag is one field in one place.

#[cfg(feature = "video")]
use crate::corpus::shard::Shard;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::eval::Protocol;
use stablekeypoints::init::TinyArch;
use stablekeypoints::limits;
use stablekeypoints::model::LayerSet;
use stablekeypoints::ops::warp::AugmentRanges;
use stablekeypoints::options::NoiseLevel;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::train::select::TopKStrategy;
use stablekeypoints::train::TrainConfig;
use stablekeypoints::{CropMode, DetectSettings, Error, Tokens};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  stablekeypoints init-model --out out/model
  stablekeypoints detect --model out/model --json photo.jpg
  stablekeypoints train --model out/model --input clip.mp4 --out tokens.safetensors
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/
  stablekeypoints process --model out/model --tokens t.safetensors --inputs videos.txt --out-dir out/ --shard 0/4
  stablekeypoints corpus-status out/
  stablekeypoints completions bash > ~/.local/share/bash-completion/completions/stablekeypoints";

/// Unsupervised keypoints from Stable Diffusion attention maps (StableKeypoints).
#[derive(Parser, Debug)]
#[command(name = "stablekeypoints", version, propagate_version = true)]
#[command(arg_required_else_help = true, after_help = EXAMPLES)]
// A repeated flag takes its last value, so that a script can append overrides.
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    InitModel(InitModelCmd),
    Detect(DetectCmd),
    Train(TrainCmd),
    Eval(EvalCmd),
    #[cfg(feature = "video")]
    Process(ProcessCmd),
    CorpusStatus(CorpusStatusCmd),
    ImportTokens(ImportTokensCmd),
    ImportPose(ImportPoseCmd),
    Bench(BenchCmd),
    Distill(DistillCmd),
    ExportOnnx(ExportOnnxCmd),
    Completions(CompletionsCmd),
}

/// What clap's attributes cannot say: `process --tokens` does not train, so training flags
/// given with it are an error naming them.
pub fn check(matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some(("process", m)) = matches.subcommand() else {
        return Ok(());
    };
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    // clap does not enforce `requires = "inputs"` once `--input` (which conflicts with it)
    // is given.
    for flag in ["shard", "shard_count", "workers"] {
        if given(flag) && !given("inputs") {
            let mut cli = Cli::command();
            cli.build();
            let process = cli
                .find_subcommand_mut("process")
                .expect("process is a subcommand");
            return Err(process.error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "--{} needs --inputs (a corpus); one video (--input) has no shards",
                    flag.replace('_', "-")
                ),
            ));
        }
    }
    if !given("tokens") {
        return Ok(());
    }
    let train = TrainArgs::augment_args(clap::Command::new("process"));
    let flags: Vec<String> = train
        .get_arguments()
        .filter(|a| given(a.get_id().as_str()))
        .map(|a| format!("--{}", a.get_long().unwrap_or(a.get_id().as_str())))
        .collect();
    if flags.is_empty() {
        return Ok(());
    }
    let mut cli = Cli::command();
    cli.build();
    let process = cli
        .find_subcommand_mut("process")
        .expect("process is a subcommand");
    Err(process.error(
        ErrorKind::ArgumentConflict,
        format!(
            "--tokens cannot be used with {}: process trains on the video only without --tokens",
            flags.join(", ")
        ),
    ))
}

/// Counts with bounds (`stablekeypoints::limits`, the element's too): the error names the
/// range, and clap adds the flag and the value.
fn bounded(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| {
        let n = s.trim().parse::<usize>().map_err(|e| e.to_string())?;
        limits::check(n, min, max)
    }
}

/// A model argument: a hub id becomes its snapshot folder in the local cache.
fn model_path(s: &str) -> Result<PathBuf, String> {
    stablekeypoints::model::resolve_model(std::path::Path::new(s)).map_err(|e| e.to_string())
}

fn device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: stablekeypoints::Error| e.to_string())
}

/// `--noise-level`: an index into the 50 DDIM timesteps, checked here (once).
fn noise_level(s: &str) -> Result<NoiseLevel, String> {
    let i: isize = s.trim().parse().map_err(|e| format!("{e}"))?;
    NoiseLevel::new(i).map_err(|e| e.to_string())
}

fn layer_set(s: &str) -> Result<LayerSet, String> {
    s.parse()
}

/// `A,B`: two numbers.
fn number_pair(s: &str) -> Result<[f64; 2], String> {
    let bad = || format!("expected two numbers A,B, got {s:?}");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok([
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ])
}

/// `--crop`: the core's crop modes by their names (and aliases).
fn crop_mode() -> impl clap::builder::TypedValueParser<Value = CropMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(CropMode::ALL.map(|m| {
        PossibleValue::new(m.name())
            .help(m.summary())
            .aliases(m.aliases().iter().copied())
    }))
    .map(|s| s.parse::<CropMode>().expect("one of the possible values"))
}

/// `--top-k-strategy` values (the reference's `--top_k_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// The lowest KL divergence from a Gaussian at the map's peak(s)
    #[default]
    Gaussian,
    /// The lowest entropy of the map's pixel softmax
    Entropy,
    /// Always the first --num-candidates tokens
    Consistent,
}

impl From<Strategy> for TopKStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Gaussian => TopKStrategy::Gaussian,
            Strategy::Entropy => TopKStrategy::Entropy,
            Strategy::Consistent => TopKStrategy::Consistent,
        }
    }
}

/// `--peak` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Peak {
    /// The arg-max pixel centre (the reference).
    #[default]
    Argmax,
    /// The mass-weighted mean within 5 px of the arg-max.
    Weighted,
}

/// `--device`.
#[derive(Args, Clone, Debug)]
pub struct DeviceArg {
    /// Compute device: cpu (f32) or cuda:N (f16; needs a build with the `cuda` feature)
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = device)]
    pub device: DeviceSpec,
}

/// Seed of the diffusion noise and the augmentation warps (detection) or of every random
/// choice (training).
#[derive(Args, Clone, Debug)]
pub struct SeedArg {
    /// Seed of every random choice (noise, augmentation warps, training order)
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

/// `--crop`.
#[derive(Args, Clone, Debug)]
pub struct CropArg {
    /// How a non-square image becomes the square model input
    #[arg(long, value_name = "MODE", default_value_t = CropMode::Letterbox, value_parser = crop_mode())]
    pub crop: CropMode,
}

/// Keypoints per object, on the boxes a detector wrote to a file (`detect`, `process`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Objects")]
pub struct BoxesArgs {
    /// Boxes file (JSON lines per frame or COCO detections): keypoints of each box, one record per object (schema stablekeypoints-frame/2); a frame without boxes has no record. Frame i is the i-th image (detect) or decoded frame (process); not with --inputs (one file is the boxes of one video)
    #[arg(long, value_name = "FILE")]
    pub boxes: Option<PathBuf>,
    /// With --boxes: the labels to infer, comma-separated [default: all]
    #[arg(
        long,
        value_name = "LABEL,...",
        requires = "boxes",
        default_value = "",
        hide_default_value = true
    )]
    pub object_class: String,
    /// With --boxes: share of a box's width and height added on each side before the box is squared by --crop (letterbox: black beside the box)
    #[arg(long, value_name = "M", requires = "boxes", default_value_t = 0.15,
          value_parser = object_margin)]
    pub object_margin: f64,
}

impl BoxesArgs {
    /// `--object-class` as names (empty: every label).
    pub fn classes(&self) -> Vec<String> {
        self.object_class
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    }
}

/// `--object-margin`: as the element's `object-margin`, 0 to 2.
fn object_margin(s: &str) -> Result<f64, String> {
    let m: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (0.0..=2.0).contains(&m) {
        Ok(m)
    } else {
        Err("must be between 0 and 2".into())
    }
}

/// How a frame's keypoints are computed: `detect`, `eval` (and the element's options of
/// `process`, which takes the ones the element has).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Detection")]
pub struct DetectArgs {
    /// Square model input side, a multiple of 64 for SD [default: the tokens file's]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE))]
    pub size: Option<usize>,
    /// Attention-map resolution R [default: the tokens file's, 128 for SD]
    #[arg(long, value_name = "R", value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: Option<usize>,
    /// Peak read off each map
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Peak::Argmax)]
    pub peak: Peak,
    /// Test-time augmentation passes [default: 1 = none; eval: 10, every pass a random warp]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub augmentations: Option<usize>,
    /// Zero DDIM noise instead of seeded noise (deterministic per image)
    #[arg(long)]
    pub no_noise: bool,
    /// The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0 (-1 = the last, t = 0) [default: the tokens file's timestep]
    #[arg(long, value_name = "I", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: Option<NoiseLevel>,
    /// Observed layers averaged, e.g. 0,1,2,3 (the reference's --layers) [default: the tokens file's]
    #[arg(long, value_name = "L,...", value_parser = layer_set)]
    pub layers: Option<LayerSet>,
    #[command(flatten)]
    pub augment: AugmentArgs,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// The element's per-frame passes in `process`: test-time augmentation and the diffusion noise.
#[derive(Args, Clone, Debug)]
pub struct PassArgs {
    /// Test-time augmentation passes (1 = none)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub augmentations: usize,
    /// Zero DDIM noise instead of seeded noise (deterministic per image)
    #[arg(long)]
    pub no_noise: bool,
}

/// Ranges of the random augmentation warps (the reference's `--augment_degrees`,
/// `--augment_scale`, `--augment_translate`): of training in `train`, of test-time
/// augmentation in `detect` and `eval`.
#[derive(Args, Clone, Debug)]
pub struct AugmentArgs {
    /// Rotation of the random warps: uniform in [-D, D] degrees [default: train: 15; detect, eval: the tokens file's]
    #[arg(long, value_name = "D")]
    pub augment_degrees: Option<f64>,
    /// Scale of the random warps: uniform in [LO, HI] [default: train: 0.8,1.0; detect, eval: the tokens file's]
    #[arg(long, value_name = "LO,HI", value_parser = number_pair)]
    pub augment_scale: Option<[f64; 2]>,
    /// Translation of the random warps per axis, in [-1, 1] image coordinates: uniform in [-X, X] and [-Y, Y] [default: train: 0.25,0.25; detect, eval: the tokens file's]
    #[arg(long, value_name = "X,Y", value_parser = number_pair)]
    pub augment_translate: Option<[f64; 2]>,
}

impl AugmentArgs {
    pub fn given(&self) -> bool {
        self.augment_degrees.is_some()
            || self.augment_scale.is_some()
            || self.augment_translate.is_some()
    }

    /// `base` with the given flags replacing its ranges; a bad range names the flags.
    pub fn apply(&self, base: AugmentRanges) -> Result<AugmentRanges, Error> {
        let r = AugmentRanges {
            degrees: self.augment_degrees.unwrap_or(base.degrees),
            scale: self.augment_scale.unwrap_or(base.scale),
            translate: self.augment_translate.unwrap_or(base.translate),
        };
        r.validate().map_err(|e| {
            Error::Invalid(format!(
                "--augment-degrees/--augment-scale/--augment-translate: {e}"
            ))
        })?;
        Ok(r)
    }
}

impl DetectArgs {
    /// `detect`'s settings: one plain pass unless --augmentations; the warp ranges of the
    /// tokens file with the given `--augment-*` flags on top.
    pub fn settings(&self, tokens: &Tokens) -> Result<DetectSettings, Error> {
        Ok(DetectSettings {
            input_size: self.size,
            map_res: self.map_res,
            augmentations: self.augmentations.unwrap_or(1),
            seed: self.seed.seed,
            noise: !self.no_noise,
            crop: self.crop.crop,
            weighted_peak: self.peak == Peak::Weighted,
            noise_level: self.noise_level,
            layers: self.layers,
            augment: if self.augment.given() {
                Some(self.augment.apply(tokens.augment)?)
            } else {
                None
            },
            warp_every_pass: false,
        })
    }
}

/// The model directory and the tokens file (default: the model's own, as the element).
#[derive(Args, Clone, Debug)]
pub struct ModelTokensArgs {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]) or a single-file checkpoint in the original SD layout
    /// (.safetensors, .ckpt); detect and eval also take a student file
    #[arg(long, value_name = "DIR|ID|FILE", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Learned tokens file [default: DIR/tokens.safetensors]
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
}

/// Where the parts of `--model` come from, beside it.
#[derive(Args, Clone, Debug, Default)]
pub struct WeightsArgs {
    /// Take the VAE from this diffusers folder (its vae/, or a VAE folder with config.json)
    /// or single file instead of the model's
    #[arg(long, value_name = "DIR|FILE")]
    pub vae: Option<PathBuf>,
    /// For a single-file checkpoint with EMA weights: use its plain UNet weights instead of
    /// the EMA copies
    #[arg(long)]
    pub no_ema: bool,
}

impl WeightsArgs {
    /// The model `model` names, with these parts.
    pub fn source(&self, model: &std::path::Path) -> stablekeypoints::model::ModelSource {
        stablekeypoints::model::ModelSource {
            model: model.to_path_buf(),
            vae: self.vae.clone(),
            no_ema: self.no_ema,
        }
    }
}

impl ModelTokensArgs {
    pub fn tokens_path(&self) -> PathBuf {
        self.tokens
            .clone()
            .unwrap_or_else(|| self.model.join("tokens.safetensors"))
    }
}

/// Write a miniature (or full-size) SD-architecture model with deterministic random
/// weights, plus a matching random tokens file.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  stablekeypoints init-model --out out/model --arch tiny-sd2")]
pub struct InitModelCmd {
    /// Output directory (diffusers layout)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Architecture
    #[arg(long, value_enum, default_value_t = Arch::TinySd1)]
    pub arch: Arch,
    /// Seed of the random weights
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Token embeddings in the tokens file [default: 100, 500 for sd15/sd21]
    #[arg(long, visible_alias = "tokens", value_name = "N",
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_tokens: Option<usize>,
    /// Keypoint tokens in the tokens file
    #[arg(long, visible_alias = "keypoints", value_name = "K", default_value_t = 10,
          value_parser = bounded(1, limits::MAX_NUM_KEYPOINTS))]
    pub num_keypoints: usize,
    /// Write into a --out folder that is not empty (replacing its model and tokens files)
    #[arg(long)]
    pub force: bool,
    /// Also write the same weights as one checkpoint in the original Stable Diffusion
    /// layout (`model.diffusion_model.*`, `first_stage_model.*`), as most SD tools pass
    /// them around (sd15 and sd21 only): for load-time measurements of that form
    #[arg(long, value_name = "FILE.safetensors")]
    pub single_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// Miniature SD 1.x layout
    TinySd1,
    /// Miniature SD 2.x layout
    TinySd2,
    /// Full-size SD 1.5 architecture (3.4 GB)
    Sd15,
    /// Full-size SD 2.1 architecture
    Sd21,
    /// Miniature SDXL base layout
    TinySdxl,
    /// Full-size SDXL base architecture (10 GB)
    Sdxl,
}

impl From<Arch> for TinyArch {
    fn from(a: Arch) -> Self {
        match a {
            Arch::TinySd1 => TinyArch::TinySd1,
            Arch::TinySd2 => TinyArch::TinySd2,
            Arch::Sd15 => TinyArch::Sd15,
            Arch::Sd21 => TinyArch::Sd21,
            Arch::TinySdxl => TinyArch::TinySdxl,
            Arch::Sdxl => TinyArch::Sdxl,
        }
    }
}

/// `detect --format` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table per image.
    #[default]
    Table,
    /// One JSON record per image (the elements' JSON lines schema).
    Json,
    /// One COCO keypoint results document (with --pose, a COCO keypoint dataset).
    Coco,
}

/// Keypoints of images (any size; letterboxed to the model's square input by default).
///
/// Prints one record per image; x, y are pixels of the original image, nx, ny the same
/// normalised to [0, 1], confidence the peak of the keypoint's averaged attention map.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints detect --model out/model photo.jpg
  stablekeypoints detect --model sd15 --tokens taichi.safetensors --augmentations 10 --json *.png
  stablekeypoints detect --model sd15 --tokens taichi.safetensors --pose pose.json --format coco *.png")]
pub struct DetectCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// Write the first image's maps: `maps` [K, R, R] (single pass) and `maps_full` [K, S, S]
    #[arg(long, value_name = "OUT.safetensors")]
    pub dump_maps: Option<PathBuf>,
    /// Output: a table, JSON lines, or COCO keypoint results
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Same as --format json
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Pose file (eval --save-regressor): also the named landmarks and their skeleton
    #[arg(long, value_name = "POSE.json")]
    pub pose: Option<PathBuf>,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub objects: BoxesArgs,
    /// Images (png, jpg)
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
}

impl DetectCmd {
    /// `--format`, or json with `--json`.
    pub fn output(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.format
        }
    }
}

fn train_defaults() -> TrainConfig {
    TrainConfig::default()
}

/// Training hyper-parameters (`train`, and `process` when it trains).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Training")]
pub struct TrainArgs {
    /// Optimiser steps
    #[arg(long, value_name = "N", default_value_t = train_defaults().steps,
          value_parser = bounded(1, limits::MAX_STEPS))]
    pub steps: usize,
    /// Images per step (gradient accumulation)
    #[arg(long, value_name = "B", default_value_t = train_defaults().batch_size,
          value_parser = bounded(1, limits::MAX_TRAIN_BATCH_SIZE))]
    pub batch_size: usize,
    /// Adam learning rate
    #[arg(long, value_name = "LR", default_value_t = train_defaults().lr)]
    pub lr: f64,
    /// N, the token embeddings learned
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_tokens,
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_tokens: usize,
    /// K, the keypoints kept
    #[arg(long, value_name = "K", default_value_t = train_defaults().num_keypoints,
          value_parser = bounded(1, limits::MAX_NUM_KEYPOINTS))]
    pub num_keypoints: usize,
    /// Gaussian-KL candidates per image
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_candidates,
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_candidates: usize,
    /// Images in the final vote
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_indices,
          value_parser = bounded(1, limits::MAX_NUM_INDICES))]
    pub num_indices: usize,
    /// Square model input side [default: the model's native size]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE))]
    pub size: Option<usize>,
    /// Attention-map resolution R
    #[arg(long, value_name = "R", default_value_t = train_defaults().map_res,
          value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: usize,
    /// The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0 (-1 = the last, t = 0); recorded in the tokens file
    #[arg(long, value_name = "I", default_value = "-1", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: NoiseLevel,
    /// Observed layers averaged, among the 4 recorded (the reference's --layers); recorded in the tokens file
    #[arg(long, value_name = "L,...", default_value = "0,1,2,3", value_parser = layer_set)]
    pub layers: LayerSet,
    /// Gaussian sigma in pixels at the map resolution (candidate ranking and sharpening targets)
    #[arg(long, value_name = "PX", default_value_t = train_defaults().sigma)]
    pub sigma: f32,
    /// Weight of the sharpening loss
    #[arg(long, value_name = "W", default_value_t = train_defaults().sharpening_weight)]
    pub sharpening_weight: f64,
    /// Weight of the equivariance loss
    #[arg(long, value_name = "W", default_value_t = train_defaults().equivariance_weight)]
    pub equivariance_weight: f64,
    /// How each image's candidate tokens are ranked (the reference's --top_k_strategy)
    #[arg(long, value_enum, value_name = "S", default_value_t = Strategy::Gaussian)]
    pub top_k_strategy: Strategy,
    /// Subjects per image: peaks per map in the Gaussian ranking and the sharpening targets
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_subjects, value_parser = bounded(1, limits::MAX_NUM_SUBJECTS))]
    pub num_subjects: usize,
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// Random horizontal flips (as the reference's Tai-Chi set)
    #[arg(long)]
    pub flip: bool,
    /// Write the checkpoint every N steps and after the last (0 = only after the last)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = bounded(0, limits::MAX_STEPS))]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint next to the output
    #[arg(long)]
    pub resume: bool,
    /// Images kept, spread uniformly over the sorted list or the video [default: all images; 300 frames of a video]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_FRAMES))]
    pub max_frames: Option<usize>,
}

/// Learn keypoint tokens from a folder of images, a label CSV, a video file or a corpus of
/// videos.
///
/// Images: png/jpg under PATH, recursively. A label CSV (as for eval): its images, each
/// multiplied by its mask when the CSV has a mask column. A video: any file GStreamer
/// decodes; --max-frames frames (300 by default) sampled uniformly over it, first and last
/// included. A corpus (--inputs, as for process): --max-frames frames in total, uniformly
/// over the frames of all its videos. Checkpoints go to TOKENS.ckpt.safetensors next to the
/// output.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints train --model out/model --input frames/ --out tokens.safetensors
  stablekeypoints train --model out/model --input ball.mp4 --out tokens.safetensors \\
      --steps 100 --batch-size 1 --num-tokens 100 --map-res 32 --num-indices 30")]
pub struct TrainCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]) or a single-file checkpoint (.safetensors, .ckpt)
    #[arg(long, value_name = "DIR|ID|FILE", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// A folder of images, one image, a label CSV (with masks), or a video file
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus of videos (a list file of paths or URIs, or a folder): --max-frames frames
    /// (300 by default) sampled uniformly over all their frames
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output tokens file (its folder is created if missing)
    #[arg(long, value_name = "TOKENS.safetensors")]
    pub out: PathBuf,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The dataset metric to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricName {
    /// Tai-Chi-HD: sum of visible L2 errors at 256x256, mean over images
    Taichi,
    /// CelebA (MAFL): mean error / inter-ocular distance, in %
    InterOcular,
    /// CUB: mean error normalised by the image size, in %
    Visible,
    /// DeepFashion: % of landmarks within --pck-px pixels
    Pck,
    /// Human3.6M: error x 128, the better of the labels' order and the left/right swap
    OrientationInvariant,
}

/// `--protocol` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// The reference's eval.py: its regressor and landmarks per metric, its units
    #[default]
    Paper,
    /// Only visible landmarks, per-landmark regressor, PCK pooled with <= in image pixels
    Visibility,
}

impl From<ProtocolName> for Protocol {
    fn from(p: ProtocolName) -> Self {
        match p {
            ProtocolName::Paper => Protocol::Paper,
            ProtocolName::Visibility => Protocol::Visibility,
        }
    }
}

/// `A,B` (eyes) or `A:B` (flip pairs): two landmark indices.
fn index_pair(s: &str, sep: char) -> Result<(usize, usize), String> {
    let bad = || format!("expected two landmark indices A{sep}B, got {s:?}");
    let (a, b) = s.split_once(sep).ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn eye_pair(s: &str) -> Result<(usize, usize), String> {
    index_pair(s, ',')
}

fn flip_pair(s: &str) -> Result<(usize, usize), String> {
    index_pair(s, ':')
}

/// Score the keypoints against labelled landmarks: fit the linear keypoints -> landmarks
/// regressor on --train, report --metric on --test.
///
/// LABELS.csv lines: image path (relative to the CSV), then x,y per landmark in pixels
/// (empty or negative = not visible).
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints eval --model sd15 --tokens taichi.safetensors --train taichi_train.csv \\
      --test taichi_test.csv --metric taichi --augmentations 10 --save-regressor pose.json")]
pub struct EvalCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// Labels the regressor is fitted on
    #[arg(long, value_name = "LABELS.csv", required_unless_present = "pose")]
    pub train: Option<PathBuf>,
    /// Score the landmarks of this pose file's regressor instead of fitting one (e.g. a
    /// teacher's pose on its student's keypoints)
    #[arg(long, value_name = "POSE.json", conflicts_with_all = ["train", "save_regressor"])]
    pub pose: Option<PathBuf>,
    /// Labels the metric is computed on
    #[arg(long, value_name = "LABELS.csv")]
    pub test: PathBuf,
    /// The dataset metric
    #[arg(long, value_enum)]
    pub metric: MetricName,
    /// Which definitions: the reference's eval.py (paper) or the visibility-aware variants
    #[arg(long, value_enum, default_value_t = ProtocolName::Paper)]
    pub protocol: ProtocolName,
    /// The eye landmarks of --metric inter-ocular [default: 0,1]
    #[arg(long, value_name = "L,R", value_parser = eye_pair)]
    pub eyes: Option<(usize, usize)>,
    /// Threshold of --metric pck in pixels [default: 6]
    #[arg(long, value_name = "PX")]
    pub pck_px: Option<f64>,
    /// Landmark pairs a left/right flip exchanges, for --metric orientation-invariant [default: the reference's Human3.6M list of 32 landmarks]
    #[arg(long, value_name = "L:R,...", value_delimiter = ',', value_parser = flip_pair)]
    pub flip_pairs: Vec<(usize, usize)>,
    /// One JSON object instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Store the fitted regressor as a pose file (the element's `pose`)
    #[arg(long, value_name = "OUT.json")]
    pub save_regressor: Option<PathBuf>,
    /// Landmark names, one per line [default: landmark0, ...]
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Skeleton of the pose file: one pair per line, `a b`, indices or names
    #[arg(long, value_name = "FILE", requires = "save_regressor")]
    pub skeleton: Option<PathBuf>,
    #[command(flatten)]
    pub detect: DetectArgs,
}

/// Element options of `process` (the `stablekeypoints` element's properties).
#[cfg(feature = "video")]
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Element")]
pub struct ElementArgs {
    #[command(flatten)]
    pub pass: PassArgs,
    /// Draw each keypoint's id next to it
    #[arg(long)]
    pub draw_ids: bool,
}

/// A video in, keypoints and an annotated video out; or a corpus of videos (--inputs), as
/// one shard of a cluster job array.
///
/// Trains on VIDEO unless --tokens is given (writing DIR/tokens.safetensors), then runs every
/// frame through the stablekeypoints element into DIR/keypoints.jsonl (JSON
/// lines), DIR/keypoints.coco.json with --coco and DIR/annotated.mp4 (keypoints drawn).
///
/// With --inputs (a list file of video paths or URIs, or a folder searched for videos), each
/// video of this shard goes to DIR/<name>/ with a done.json; a rerun skips what is done and
/// redoes what changed; a failing video gets failed.json and the run goes on. Exit status: 0
/// when every video of the shard is done, 3 when some failed, 130/143 when interrupted.
/// Without --shard the shard comes from JOB_COMPLETION_INDEX with --shard-count or
/// SKP_SHARD_COUNT (Kubernetes Indexed Jobs), or SLURM_ARRAY_TASK_ID with
/// SLURM_ARRAY_TASK_COUNT (Slurm arrays).
#[cfg(feature = "video")]
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/ --steps 100
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/ --tokens t.safetensors
  stablekeypoints process --model sd15 --tokens t.safetensors --inputs videos.txt --out-dir /shared/out \\
      --shard 3/16 --workers 2")]
pub struct ProcessCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]), a single-file checkpoint (.safetensors, .ckpt), or a student
    /// file (distill's)
    #[arg(long, value_name = "DIR|ID|FILE|STUDENT", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// The video file
    #[arg(
        long,
        value_name = "VIDEO",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus: a text file of video paths or URIs (one per line), or a folder searched for videos
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output folder (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Tokens to use instead of training on the video (training flags are then refused)
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Pose file (eval --save-regressor): named landmarks in the records and the COCO output
    #[arg(long, value_name = "FILE")]
    pub pose: Option<PathBuf>,
    /// Write no annotated.mp4 (keypoints only)
    #[arg(long)]
    pub no_annotated: bool,
    /// Also write keypoints.coco.json (COCO keypoint results)
    #[arg(long)]
    pub coco: bool,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub element: ElementArgs,
    #[command(flatten)]
    pub objects: BoxesArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// How a corpus run (`process --inputs`) shares the work and retries.
#[cfg(feature = "video")]
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Corpus")]
pub struct CorpusArgs {
    /// This task's share: video j of the sorted list when j mod N == I [default: from the environment, else all]
    #[arg(long, value_name = "I/N", requires = "inputs", value_parser = shard)]
    pub shard: Option<Shard>,
    /// N with JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's completions) [env: SKP_SHARD_COUNT]
    #[arg(long, value_name = "N", requires = "inputs", conflicts_with = "shard",
          value_parser = bounded(1, limits::MAX_SHARDS))]
    pub shard_count: Option<usize>,
    /// Videos processed at once (pipelines in parallel, one loaded model)
    #[arg(long, value_name = "W", default_value_t = 1, requires = "inputs",
          value_parser = bounded(1, limits::MAX_WORKERS))]
    pub workers: usize,
    /// Attempts per video over all runs; a video that failed this often is skipped
    #[arg(long, value_name = "N", default_value_t = 3, requires = "inputs",
          value_parser = bounded(1, limits::MAX_ATTEMPTS))]
    pub max_attempts: usize,
}

#[cfg(feature = "video")]
fn shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

/// Progress of a corpus: done, failed and missing videos against the work list of a
/// `process --inputs` output folder, with frames, time and throughput.
///
/// Exit status: 0 when every video is done, 3 otherwise.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints corpus-status /shared/out
  stablekeypoints corpus-status /shared/out --json
  stablekeypoints corpus-status /shared/out --merge all.jsonl")]
pub struct CorpusStatusCmd {
    /// The output folder of process --inputs
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// One JSON object instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Write the keypoint lines of every done video into one file, each with its "video"
    #[arg(long, value_name = "OUT.jsonl")]
    pub merge: Option<PathBuf>,
    /// List every failed video (the report lists the first 20)
    #[arg(long)]
    pub all: bool,
}

/// Convert the reference's embedding.pt and indices.pt (a folder as its main.py saves them)
/// to a tokens file.
///
/// The settings the reference ran with (its defaults unless given) are recorded in the file:
/// input 512, --map-res (its --feature_upsample_res), --noise-level, --layers and the
/// --augment-* ranges.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints import-tokens outputs/ --out celeba.safetensors")]
pub struct ImportTokensCmd {
    /// Folder with embedding.pt ([1, N, D] or [N, D]) and indices.pt ([K])
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Output tokens file
    #[arg(long, value_name = "TOKENS.safetensors")]
    pub out: PathBuf,
    /// The reference's --feature_upsample_res
    #[arg(long, value_name = "R", default_value_t = 128, value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: usize,
    /// The reference's --noise_level
    #[arg(long, value_name = "I", default_value = "-1", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: NoiseLevel,
    /// The reference's --layers
    #[arg(long, value_name = "L,...", default_value = "0,1,2,3", value_parser = layer_set)]
    pub layers: LayerSet,
    #[command(flatten)]
    pub augment: AugmentArgs,
}

/// Label order of the reference's regressor columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabelOrder {
    /// (row, column) per landmark: loaders that swap their labels, as CelebA's and CUB's
    Yx,
    /// (x, y) per landmark: loaders that keep them
    Xy,
}

/// Convert the reference's regressor.pt to a pose file (the element's `pose`).
///
/// The regressor maps the keypoints of the tokens in --tokens (default: the regressor's own
/// folder, holding embedding.pt and indices.pt) to the labelled landmarks.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints import-pose outputs/regressor.pt --label-order yx --names celeba_names.txt --out pose.json")]
pub struct ImportPoseCmd {
    /// The reference's regressor.pt ([2K, 2L])
    #[arg(value_name = "REGRESSOR.pt")]
    pub regressor: PathBuf,
    /// Tokens the regressor was fitted for (a tokens file or a folder of the reference's .pt files) [default: the regressor's folder]
    #[arg(long, value_name = "FILE|DIR")]
    pub tokens: Option<PathBuf>,
    /// Order of each landmark's two label columns in the reference's data loader
    #[arg(long, value_enum)]
    pub label_order: LabelOrder,
    /// Output pose file
    #[arg(long, value_name = "OUT.json")]
    pub out: PathBuf,
    /// Landmark names, one per line [default: landmark0, ...]
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Skeleton: one pair per line, `a b`, indices or names
    #[arg(long, value_name = "FILE")]
    pub skeleton: Option<PathBuf>,
}

/// Per-stage timings of one frame (median of --runs after a warm-up), or --conv: 3x3
/// convolutions, candle against our Winograd kernel.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints bench --model out/model --runs 5
  stablekeypoints bench --conv")]
pub struct BenchCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]), or a student file
    #[arg(
        long,
        value_name = "DIR|ID|STUDENT",
        value_parser = model_path,
        required_unless_present = "conv",
        conflicts_with = "conv"
    )]
    pub model: Option<PathBuf>,
    /// Tokens file [default: 500 random tokens, 10 selected]
    #[arg(long, value_name = "FILE", conflicts_with = "conv")]
    pub tokens: Option<PathBuf>,
    /// Square model input side [default: the tokens file's]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE), conflicts_with = "conv")]
    pub size: Option<usize>,
    /// Attention-map resolution [default: the tokens file's]
    #[arg(long, value_name = "R", value_parser = bounded(1, MAX_MAP_RES), conflicts_with = "conv")]
    pub map_res: Option<usize>,
    /// Timed runs after the warm-up
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = bounded(1, limits::MAX_RUNS))]
    pub runs: usize,
    /// Frames per forward pass
    #[arg(long, value_name = "B", default_value_t = 1,
          value_parser = bounded(1, limits::MAX_BATCH_SIZE), conflicts_with = "conv")]
    pub batch: usize,
    /// Compute device: cpu (f32) or cuda:N (f16)
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = device, conflicts_with = "conv")]
    pub device: DeviceSpec,
    /// Time 3x3 convolutions instead of a model
    #[arg(long)]
    pub conv: bool,
}

/// Print a shell completion script.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints completions bash > ~/.local/share/bash-completion/completions/stablekeypoints")]
pub struct CompletionsCmd {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

fn distill_defaults() -> stablekeypoints::student::distill::DistillConfig {
    Default::default()
}

/// `a,b,c,d`: the student's four stage widths.
fn widths(s: &str) -> Result<[usize; 4], String> {
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let w: [usize; 4] = v
        .try_into()
        .map_err(|_| "four widths, e.g. 16,32,64,128".to_string())?;
    match w
        .iter()
        .find(|&&x| x == 0 || x > stablekeypoints::student::MAX_WIDTH)
    {
        Some(x) => Err(format!(
            "width {x}: each must be 1..={}",
            stablekeypoints::student::MAX_WIDTH
        )),
        None => Ok(w),
    }
}

/// Distil a teacher (a model and its keypoint tokens) into a small student network that
/// runs in real time on a CPU.
///
/// The teacher labels every input once (cached in OUT.labels.safetensors, so a long
/// labelling run resumes); the student then learns the teacher's keypoints as heatmaps
/// under the tokens' augmentation warps and a photometric jitter, one item in
/// --holdout-every held out and its error printed. Checkpoints go to OUT.ckpt.safetensors;
/// Ctrl-C leaves a resumable one. Inputs as for train.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints distill --model models/figure --input frames/ --out student.safetensors
  stablekeypoints distill --model sd15 --tokens taichi.safetensors --inputs corpus.txt --teacher-augmentations 10 --out taichi-student.safetensors
  stablekeypoints distill ... --resume")]
pub struct DistillCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// A folder of images, one image, a label CSV's images, or a video file
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus of videos (a list file of paths or URIs, or a folder)
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output student file (its folder is created if missing)
    #[arg(long, value_name = "STUDENT.safetensors")]
    pub out: PathBuf,
    /// The teacher's keypoints from an earlier `process` run instead of running the teacher:
    /// its keypoints.jsonl for --input VIDEO, its --out-dir for --inputs (each video's
    /// NAME/keypoints.jsonl); frames are matched by timestamp, and only records computed
    /// from their own frame are used
    #[arg(
        long,
        value_name = "JSONL|DIR",
        conflicts_with = "teacher_augmentations"
    )]
    pub labels: Option<PathBuf>,
    /// Teacher test-time augmentation passes per input (eval's 10 make a better teacher)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub teacher_augmentations: usize,
    /// The student's square input side, a multiple of 16
    #[arg(long, value_name = "S", default_value_t = distill_defaults().input_size, value_parser = bounded(16, stablekeypoints::student::MAX_INPUT_SIZE))]
    pub student_size: usize,
    /// Channel widths of the student's four stages
    #[arg(long, value_name = "A,B,C,D", default_value = "16,32,64,128", value_parser = widths)]
    pub widths: [usize; 4],
    /// Optimiser steps
    #[arg(long, value_name = "N", default_value_t = distill_defaults().steps,
          value_parser = bounded(1, limits::MAX_STEPS))]
    pub steps: usize,
    /// Images per step
    #[arg(long, value_name = "B", default_value_t = distill_defaults().batch_size,
          value_parser = bounded(1, limits::MAX_TRAIN_BATCH_SIZE))]
    pub batch_size: usize,
    /// Adam learning rate (cosine decay to 5%)
    #[arg(long, value_name = "LR", default_value_t = distill_defaults().lr)]
    pub lr: f64,
    /// Standard deviation of the target heatmaps, in heatmap cells (4 input pixels)
    #[arg(long, value_name = "CELLS", default_value_t = distill_defaults().sigma)]
    pub sigma: f32,
    /// Hold out one input in N and report the student's error on them (0 = none)
    #[arg(long, value_name = "N", default_value_t = distill_defaults().holdout_every, value_parser = bounded(0, limits::MAX_FRAMES))]
    pub holdout_every: usize,
    /// Photometric jitter strength (brightness, contrast, saturation; 0 = none)
    #[arg(long, value_name = "J", default_value_t = distill_defaults().jitter)]
    pub jitter: f32,
    /// Warp ranges [default: the tokens file's]
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// Write the checkpoint every N steps and after the last (0 = only after the last)
    #[arg(long, value_name = "N", default_value_t = distill_defaults().checkpoint_every, value_parser = bounded(0, limits::MAX_STEPS))]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint (and label cache) next to the output
    #[arg(long)]
    pub resume: bool,
    /// Inputs kept, spread uniformly over the sorted list or the video [default: all images; 300 frames of a video]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_FRAMES))]
    pub max_frames: Option<usize>,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Export a student file as an ONNX model (image in, K heatmaps out; the preprocessing and
/// the teacher's identity in its metadata).
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  stablekeypoints export-onnx student.safetensors --out student.onnx"
)]
pub struct ExportOnnxCmd {
    /// The student file (distill's output)
    #[arg(value_name = "STUDENT.safetensors")]
    pub student: PathBuf,
    /// Output ONNX file
    #[arg(long, value_name = "FILE.onnx")]
    pub out: PathBuf,
}
