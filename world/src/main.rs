//! `skp-world`: writes renders of the figure world (see the crate docs).

use skp_world::io::{write_clip, write_dataset, write_labelled};
use skp_world::SceneOptions;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
skp-world: renders of an articulated figure with exact joints

USAGE:
  skp-world dataset --out FILE.safetensors --count N --seed S [--size 128]
                    [--drop-fraction 0.5] [--drop-rate 0.25]
      training bundle for scripts/world/train.py: images u8 [N,S,S,3], present u8 [N,14]
      (parts shown), joints f32 [N,14,2] (pixels), visible u8 [N,14]
  skp-world labelled --out DIR --count N --seed S [--size 128]
      whole figures as DIR/images/*.png, DIR/labels.csv (stablekeypoints eval format),
      DIR/joints.txt, DIR/skeleton.txt
  skp-world clip --out DIR --frames N --seed S [--fps 15] [--size 256]
      a slow motion as DIR/frames/NNNNN.png with the true joints in DIR/labels.csv
  skp-world score --labels DIR/labels.csv --jsonl KEYPOINTS.jsonl
      mean error of the element's `pose` landmarks against the clip's true joints
  skp-world mean-pose --train TRAIN/labels.csv --test TEST/labels.csv [--size 128]
      the baseline that predicts the training split's mean pose for every test image, in
      `stablekeypoints eval --metric taichi` units and mean pixels
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Self, String> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .filter(|k| known.contains(k))
                .ok_or_else(|| format!("unknown argument {a:?}\n\n{USAGE}"))?;
            let v = it
                .next()
                .ok_or_else(|| format!("flag --{key} needs a value"))?;
            m.insert(key.to_string(), v.clone());
        }
        Ok(Flags(m))
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: cannot parse {v:?}")),
            None => default.ok_or_else(|| format!("missing --{key}\n\n{USAGE}")),
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let positive = |v: usize, name: &str| {
        if v == 0 {
            Err(format!("--{name} must be positive"))
        } else {
            Ok(v)
        }
    };
    match cmd.as_str() {
        "dataset" => {
            let f = Flags::parse(
                rest,
                &["out", "count", "seed", "size", "drop-fraction", "drop-rate"],
            )?;
            let opts = SceneOptions {
                drop_fraction: f
                    .get("drop-fraction", Some(SceneOptions::TRAINING.drop_fraction))?,
                drop_rate: f.get("drop-rate", Some(SceneOptions::TRAINING.drop_rate))?,
            };
            if !(0.0..=1.0).contains(&opts.drop_fraction) || !(0.0..=1.0).contains(&opts.drop_rate)
            {
                return Err("--drop-fraction and --drop-rate must lie in [0, 1]".into());
            }
            write_dataset(
                &f.get::<PathBuf>("out", None)?,
                positive(f.get("count", None)?, "count")?,
                f.get("seed", None)?,
                positive(f.get("size", Some(128))?, "size")?,
                opts,
            )
        }
        "labelled" => {
            let f = Flags::parse(rest, &["out", "count", "seed", "size"])?;
            write_labelled(
                &f.get::<PathBuf>("out", None)?,
                positive(f.get("count", None)?, "count")?,
                f.get("seed", None)?,
                positive(f.get("size", Some(128))?, "size")?,
            )
        }
        "clip" => {
            let f = Flags::parse(rest, &["out", "frames", "seed", "fps", "size"])?;
            let fps: f32 = f.get("fps", Some(15.0))?;
            if !(fps.is_finite() && fps > 0.0) {
                return Err("--fps must be positive".into());
            }
            write_clip(
                &f.get::<PathBuf>("out", None)?,
                f.get("seed", None)?,
                positive(f.get("frames", None)?, "frames")?,
                fps,
                positive(f.get("size", Some(256))?, "size")?,
            )
            .map(|_| ())
        }
        "score" => {
            let f = Flags::parse(rest, &["labels", "jsonl"])?;
            let s = skp_world::score::score(
                &f.get::<PathBuf>("labels", None)?,
                &f.get::<PathBuf>("jsonl", None)?,
            )?;
            println!(
                "{} frames, {} visible joints: mean error {:.2} px",
                s.frames, s.joints, s.mean_px
            );
            for (name, e) in skp_world::figure::JOINTS.iter().zip(s.per_joint_px) {
                println!("  {name:<15} {e:6.2} px");
            }
            Ok(())
        }
        "mean-pose" => {
            let f = Flags::parse(rest, &["train", "test", "size"])?;
            let size: f64 = f.get("size", Some(128.0))?;
            let m = skp_world::score::mean_pose(
                &f.get::<PathBuf>("train", None)?,
                &f.get::<PathBuf>("test", None)?,
                size,
            )?;
            println!(
                "mean pose: taichi {:.2} (sum over visible joints at 256, mean over images), \
                 mean error {:.2} px",
                m.taichi, m.mean_px
            );
            for (name, e) in skp_world::figure::JOINTS.iter().zip(m.per_joint_px) {
                println!("  {name:<15} {e:6.2} px");
            }
            Ok(())
        }
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}
