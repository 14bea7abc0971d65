//! `stablekeypoints` command line: glue over the core library.

mod args;
mod bench;
mod detect;
mod eval;
mod process;
mod train;
mod video;

use args::Args;
use stablekeypoints::model::init::{init_model, TinyArch};
use stablekeypoints::Error;

// Reuses freed activation buffers across layers and frames (see `stablekeypoints::alloc`).
#[global_allocator]
static ALLOC: stablekeypoints::alloc::CachingAlloc = stablekeypoints::alloc::CachingAlloc::new();
use std::path::PathBuf;
use std::process::ExitCode;

pub const USAGE: &str = "\
stablekeypoints: unsupervised keypoints from Stable Diffusion attention maps

USAGE:
  stablekeypoints init-model --out DIR [--arch tiny-sd1|tiny-sd2|sd15|sd21] [--seed S]
                             [--tokens N] [--keypoints K]
  stablekeypoints detect --model DIR --tokens FILE [--size S] [--map-res R]
                         [--augmentations N] [--seed S] [--no-noise] [--crop letterbox|center-crop]
                         [--peak argmax|weighted] [--device cpu|cuda:N]
                         [--dump-maps OUT.safetensors] [--json] IMAGE...
  stablekeypoints bench --model DIR [--tokens FILE] [--size S] [--map-res R] [--runs N]
                        [--batch B] [--device cpu|cuda:N]
  stablekeypoints bench --conv [--runs N]
  stablekeypoints train --model DIR --input PATH --out TOKENS.safetensors [--steps 500]
                        [--batch-size 4] [--lr 5e-3] [--num-tokens 500] [--num-keypoints 10]
                        [--num-candidates 25] [--num-indices 100] [--size S] [--map-res 128]
                        [--seed S] [--checkpoint-every 50] [--resume] [--flip] [--max-frames N]
                        [--crop letterbox|center-crop] [--device cpu|cuda:N]
  stablekeypoints eval --model DIR --tokens FILE --train LABELS.csv --test LABELS.csv
                       --metric taichi|inter-ocular|visible|pck|orientation-invariant
                       [--eyes 0,1] [--pck-px 6] [--flip-pairs L:R,...] [--augmentations N]
                       [--seed S] [--no-noise] [--size S] [--map-res R]
                       [--crop letterbox|center-crop] [--peak argmax|weighted]
                       [--device cpu|cuda:N] [--json] [--save-regressor OUT.json]
                       [--names FILE] [--skeleton FILE]
  stablekeypoints process --model DIR --input VIDEO --out-dir DIR [--tokens FILE]
                          [train flags] [--augmentations N] [--no-noise] [--draw-ids]

detect prints one record per image; x, y are pixels of the original image, nx, ny the
same normalised to [0, 1]. --dump-maps writes the first image's maps.
train learns tokens from the png/jpg images under PATH (recursively; --max-frames N keeps N
spread over the sorted list) or from a video file (decoded with gst-launch-1.0; --max-frames,
default 300, frames sampled uniformly over the whole video) and checkpoints to
TOKENS.ckpt.safetensors next to the output.
eval fits the linear keypoints -> landmarks regressor on --train and reports --metric on
--test; LABELS.csv lines are: image path (relative to the CSV), then x,y per landmark in
pixels (empty or negative = not visible).
process trains on VIDEO unless --tokens is given (DIR/tokens.safetensors), then runs every
frame through the stablekeypoints GStreamer element (plugin next to this executable, or
$SKP_PLUGIN_PATH) into DIR/keypoints.jsonl and DIR/annotated.mp4.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Minimal flag parser: `--flag value`, `--switch`, positionals.
fn run(mut args: Vec<String>) -> Result<(), Error> {
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
        print!("{USAGE}");
        return Ok(());
    }
    let cmd = args.remove(0);
    match cmd.as_str() {
        "init-model" => cmd_init_model(Args::parse(
            args,
            &[],
            &["out", "arch", "seed", "tokens", "keypoints"],
        )?),
        "detect" => detect::cmd_detect(Args::parse(
            args,
            &["no-noise", "json"],
            &[
                "model",
                "tokens",
                "size",
                "map-res",
                "augmentations",
                "seed",
                "crop",
                "peak",
                "device",
                "dump-maps",
            ],
        )?),
        "bench" => bench::cmd_bench(Args::parse(
            args,
            &["conv"],
            &[
                "model", "tokens", "size", "map-res", "runs", "batch", "device",
            ],
        )?),
        "train" => train::cmd_train(Args::parse(
            args,
            &train::SWITCHES,
            &[&["model", "input", "out"][..], &train::OPTIONS].concat(),
        )?),
        "eval" => eval::cmd_eval(Args::parse(
            args,
            &["no-noise", "json"],
            &[
                "model",
                "tokens",
                "train",
                "test",
                "metric",
                "eyes",
                "pck-px",
                "flip-pairs",
                "augmentations",
                "seed",
                "size",
                "map-res",
                "crop",
                "peak",
                "device",
                "save-regressor",
                "names",
                "skeleton",
            ],
        )?),
        "process" => {
            let own = ["model", "input", "out-dir", "tokens", "augmentations"];
            process::cmd_process(Args::parse(
                args,
                &[&train::SWITCHES[..], &["no-noise", "draw-ids"]].concat(),
                &[&own[..], &train::OPTIONS].concat(),
            )?)
        }
        other => Err(Error::Invalid(format!(
            "unknown command {other:?}\n\n{USAGE}"
        ))),
    }
}

fn cmd_init_model(a: Args) -> Result<(), Error> {
    let out = PathBuf::from(a.required("out")?);
    let arch: TinyArch = a.get("arch").unwrap_or("tiny-sd1").parse()?;
    let seed = a.parse_opt("seed")?.unwrap_or(0);
    let big = matches!(arch, TinyArch::Sd15 | TinyArch::Sd21);
    let n = a
        .parse_opt("tokens")?
        .unwrap_or(if big { 500 } else { 100 });
    let k = a.parse_opt("keypoints")?.unwrap_or(10);
    init_model(&out, arch, seed, n, k)?;
    println!("wrote {arch:?} model and tokens to {}", out.display());
    Ok(())
}
