//! `skp-world`: writes renders of the figure world (see the crate docs).

use clap::{Args, Parser, Subcommand};
use skp_world::figure::JOINTS;
use skp_world::io::{write_clip, write_dataset, write_labelled, write_people, OVERLAP_IOU};
use skp_world::people::{jitter, People};
use skp_world::SceneOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Renders of an articulated figure with exact joints: the world `models/figure` was trained
/// on (scripts/world/make-model.sh) and the demo's clips.
#[derive(Parser)]
#[command(name = "skp-world", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Training bundle for scripts/world/train.py: images u8 [N,S,S,3], present u8 [N,14]
    /// (parts shown), joints f32 [N,14,2] (pixels), visible u8 [N,14]
    Dataset {
        #[arg(long, value_name = "FILE.safetensors")]
        out: PathBuf,
        #[command(flatten)]
        set: Set,
        /// Share of scenes that leave parts out
        #[arg(long, default_value_t = SceneOptions::TRAINING.drop_fraction, value_parser = unit)]
        drop_fraction: f32,
        /// In such a scene, the chance of each part being left out
        #[arg(long, default_value_t = SceneOptions::TRAINING.drop_rate, value_parser = unit)]
        drop_rate: f32,
    },
    /// Whole figures as DIR/images/*.png, DIR/labels.csv (stablekeypoints eval format),
    /// DIR/joints.txt, DIR/skeleton.txt
    Labelled {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        set: Set,
    },
    /// A slow motion as DIR/frames/NNNNN.png with the true joints in DIR/labels.csv
    Clip {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        frames: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 15.0, value_parser = positive_f32)]
        fps: f32,
        #[arg(long, default_value_t = 256, value_parser = side)]
        size: usize,
        /// Replace an existing clip folder
        #[arg(long)]
        force: bool,
    },
    /// 1 to 4 figures walking across a wide frame, passing each other and the frame's edges:
    /// DIR/frames/NNNNN.png, DIR/people.jsonl (true boxes, joints, visibility per figure),
    /// DIR/boxes.jsonl (the boxes for stablekeypointsboxes) and each figure alone in
    /// DIR/alone/<p>/frames/NNNNN.png; prints the share of frames in which two figures' boxes
    /// overlap (IoU >= 0.3)
    People {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        frames: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4))]
        figures: u64,
        #[arg(long, default_value_t = 512, value_parser = side)]
        width: usize,
        #[arg(long, default_value_t = 256, value_parser = side)]
        height: usize,
        #[arg(long, default_value_t = 15.0, value_parser = positive_f32)]
        fps: f32,
        /// Replace an existing clip folder
        #[arg(long)]
        force: bool,
    },
    /// Boxes moved and resized as a detector's would be: each box's centre by up to AMOUNT of
    /// its width and height, each side scaled by a factor in [1 - AMOUNT, 1 + AMOUNT]
    /// (independent, uniform); the records are otherwise kept
    Jitter {
        #[arg(long, value_name = "IN.jsonl")]
        boxes: PathBuf,
        #[arg(long, value_name = "OUT.jsonl")]
        out: PathBuf,
        #[arg(long, default_value_t = 0.1, value_parser = unit)]
        amount: f32,
        #[arg(long)]
        seed: u64,
    },
    /// Mean error of the element's `pose` landmarks against the clip's true joints
    Score {
        #[arg(long, value_name = "DIR/labels.csv")]
        labels: PathBuf,
        #[arg(long, value_name = "KEYPOINTS.jsonl")]
        jsonl: PathBuf,
    },
    /// Per figure, mean error of the element's per-object `pose` landmarks (records with
    /// `object_id`) against a multi-figure clip's true joints
    ScorePeople {
        #[arg(long, value_name = "DIR/people.jsonl")]
        people: PathBuf,
        #[arg(long, value_name = "KEYPOINTS.jsonl")]
        jsonl: PathBuf,
    },
    /// The baseline that predicts the training split's mean pose for every test image, in
    /// `stablekeypoints eval --metric taichi` units and mean pixels
    MeanPose {
        #[arg(long, value_name = "TRAIN/labels.csv")]
        train: PathBuf,
        #[arg(long, value_name = "TEST/labels.csv")]
        test: PathBuf,
        /// Side of the labelled images in pixels
        #[arg(long, default_value_t = 128, value_parser = side)]
        size: usize,
    },
}

/// A set of random scenes.
#[derive(Args)]
struct Set {
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    count: u64,
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value_t = 128, value_parser = side)]
    size: usize,
    /// Replace an existing output
    #[arg(long)]
    force: bool,
}

fn unit(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    (0.0..=1.0)
        .contains(&v)
        .then_some(v)
        .ok_or_else(|| format!("{v} does not lie in [0, 1]"))
}

fn positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    (v.is_finite() && v > 0.0)
        .then_some(v)
        .ok_or_else(|| format!("{v} is not positive"))
}

fn side(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    (16..=4096)
        .contains(&v)
        .then_some(v)
        .ok_or_else(|| format!("{v} pixels: the side must lie in 16..=4096"))
}

/// Earlier outputs are kept unless `--force`: a file, or a folder that is not empty. With
/// `--force` a folder is emptied first, so that no frame of an earlier, longer clip stays.
fn check_out(path: &Path, force: bool) -> Result<(), String> {
    let dir = path.is_dir();
    let taken = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => path.exists(),
    };
    if !taken {
        return Ok(());
    }
    if !force {
        return Err(format!(
            "{} exists and is not empty; pass --force to replace it",
            path.display()
        ));
    }
    if dir {
        std::fs::remove_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn print_errors(per_joint: &[f64]) {
    for (name, e) in JOINTS.iter().zip(per_joint) {
        println!("  {name:<15} {e:6.2} px");
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Dataset {
            out,
            set,
            drop_fraction,
            drop_rate,
        } => {
            check_out(&out, set.force)?;
            let opts = SceneOptions {
                drop_fraction,
                drop_rate,
            };
            write_dataset(&out, set.count as usize, set.seed, set.size, opts)
        }
        Command::Labelled { out, set } => {
            check_out(&out, set.force)?;
            write_labelled(&out, set.count as usize, set.seed, set.size)
        }
        Command::Clip {
            out,
            frames,
            seed,
            fps,
            size,
            force,
        } => {
            check_out(&out, force)?;
            write_clip(&out, seed, frames as usize, fps, size).map(|_| ())
        }
        Command::People {
            out,
            frames,
            seed,
            figures,
            width,
            height,
            fps,
            force,
        } => {
            check_out(&out, force)?;
            let clip = People::new(seed, figures as usize, frames as usize, fps, width, height);
            people_clip(&out, &clip, frames, figures)
        }
        Command::Jitter {
            boxes,
            out,
            amount,
            seed,
        } => jitter_file(&boxes, &out, amount, seed),
        Command::Score { labels, jsonl } => score(&labels, &jsonl),
        Command::ScorePeople { people, jsonl } => score_people(&people, &jsonl),
        Command::MeanPose { train, test, size } => mean_pose(&train, &test, size),
    }
}

/// Writes `clip` (`frames` frames of `figures` figures) to `out`, and says how often two
/// figures overlap.
fn people_clip(out: &Path, clip: &People, frames: u64, figures: u64) -> Result<(), String> {
    let share = write_people(out, clip, frames as usize)?;
    println!(
        "{frames} frames of {figures} figures in {}: two figures' boxes overlap \
         (IoU >= {OVERLAP_IOU}) in {:.1}% of them",
        out.display(),
        100.0 * share
    );
    Ok(())
}

/// The boxes file `boxes` with every box jittered, written to `out`.
fn jitter_file(boxes: &Path, out: &Path, amount: f32, seed: u64) -> Result<(), String> {
    let text = std::fs::read_to_string(boxes).map_err(|e| format!("{}: {e}", boxes.display()))?;
    let jittered =
        jitter(&text, amount as f64, seed).map_err(|e| format!("{}: {e}", boxes.display()))?;
    std::fs::write(out, jittered).map_err(|e| format!("{}: {e}", out.display()))
}

fn score(labels: &Path, jsonl: &Path) -> Result<(), String> {
    let s = skp_world::score::score(labels, jsonl)?;
    println!(
        "{} frames, {} visible joints: mean error {:.2} px",
        s.frames, s.joints, s.mean_px
    );
    print_errors(&s.per_joint_px);
    Ok(())
}

fn score_people(people: &Path, jsonl: &Path) -> Result<(), String> {
    for (id, s) in skp_world::score::score_people(people, jsonl)? {
        println!(
            "figure {id}: {} frames, {} visible joints: mean error {:.2} px",
            s.frames, s.joints, s.mean_px
        );
    }
    Ok(())
}

fn mean_pose(train: &Path, test: &Path, size: usize) -> Result<(), String> {
    let m = skp_world::score::mean_pose(train, test, size as f64)?;
    println!(
        "mean pose: taichi {:.2} (sum over visible joints at 256, mean over images), \
         mean error {:.2} px",
        m.taichi, m.mean_px
    );
    print_errors(&m.per_joint_px);
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
