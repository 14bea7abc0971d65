//! `stablekeypoints` command line: glue over the core library.

use stablekeypoints::model::init::{init_model, TinyArch};
use stablekeypoints::{
    CropMode, DetectOptions, Detector, Error, FrameRef, Model, PeakMode, PixelFormat, Tokens,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "\
stablekeypoints: unsupervised keypoints from Stable Diffusion attention maps

USAGE:
  stablekeypoints init-model --out DIR [--arch tiny-sd1|tiny-sd2|sd15|sd21] [--seed S]
                             [--tokens N] [--keypoints K]
  stablekeypoints detect --model DIR --tokens FILE [--size S] [--map-res R]
                         [--augmentations N] [--seed S] [--no-noise] [--crop letterbox|center-crop]
                         [--peak argmax|weighted] [--device cpu|cuda:N]
                         [--dump-maps OUT.safetensors] [--json] IMAGE...

detect prints one record per image; x, y are pixels of the original image, nx, ny the
same normalised to [0, 1]. --dump-maps writes the first image's maps.
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
struct Args {
    flags: Vec<(String, Option<String>)>,
    positional: Vec<String>,
}

impl Args {
    fn parse(raw: Vec<String>, switches: &[&str], valued: &[&str]) -> Result<Self, Error> {
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut it = raw.into_iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                if switches.contains(&name.as_str()) {
                    flags.push((name, None));
                } else if valued.contains(&name.as_str()) {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| Error::Invalid(format!("--{name} needs a value")))?,
                    };
                    flags.push((name, Some(v)));
                } else {
                    return Err(Error::Invalid(format!(
                        "unknown option --{name}\n\n{USAGE}"
                    )));
                }
            } else {
                positional.push(a);
            }
        }
        Ok(Self { flags, positional })
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| Error::Invalid(format!("missing --{name}\n\n{USAGE}")))
    }

    fn parse_opt<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Error> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Invalid(format!("--{name}: cannot parse {v:?}")))
            })
            .transpose()
    }
}

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
        "detect" => cmd_detect(Args::parse(
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

/// `cpu` or `cuda[:N]`, with the compute dtype for it (f16 on CUDA).
pub fn device_from_str(s: &str) -> Result<(candle_core::Device, candle_core::DType), Error> {
    use candle_core::{DType, Device};
    if s == "cpu" {
        return Ok((Device::Cpu, DType::F32));
    }
    if let Some(rest) = s.strip_prefix("cuda") {
        let ord = match rest.strip_prefix(':') {
            Some(n) => n
                .parse()
                .map_err(|_| Error::Invalid(format!("bad device {s:?}")))?,
            None if rest.is_empty() => 0,
            None => return Err(Error::Invalid(format!("bad device {s:?}"))),
        };
        let dev = Device::new_cuda(ord).map_err(|e| Error::Invalid(format!("device {s}: {e}")))?;
        return Ok((dev, DType::F16));
    }
    Err(Error::Invalid(format!(
        "unknown device {s:?} (cpu, cuda:N)"
    )))
}

fn read_image(path: &Path) -> Result<image::RgbImage, Error> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .decode()
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(img.to_rgb8())
}

fn cmd_detect(a: Args) -> Result<(), Error> {
    let model_dir = PathBuf::from(a.required("model")?);
    let tokens_path = PathBuf::from(a.required("tokens")?);
    if a.positional.is_empty() {
        return Err(Error::Invalid(format!("no IMAGE given\n\n{USAGE}")));
    }
    let opts = DetectOptions {
        input_size: a.parse_opt("size")?,
        map_res: a.parse_opt("map-res")?,
        augmentations: a.parse_opt("augmentations")?.unwrap_or(1),
        seed: a.parse_opt("seed")?.unwrap_or(0),
        noise: !a.has("no-noise"),
        crop: a
            .get("crop")
            .map(str::parse::<CropMode>)
            .transpose()?
            .unwrap_or_default(),
        peak: match a.get("peak").unwrap_or("argmax") {
            "argmax" => PeakMode::Argmax,
            "weighted" => PeakMode::Weighted { radius: 5.0 },
            o => {
                return Err(Error::Invalid(format!(
                    "--peak: unknown mode {o:?} (argmax, weighted)"
                )))
            }
        },
        ..Default::default()
    };
    let (device, dtype) = device_from_str(a.get("device").unwrap_or("cpu"))?;
    // Read every input first so that a bad image fails before minutes of model work.
    let images = a
        .positional
        .iter()
        .map(|p| read_image(Path::new(p)).map(|i| (p.clone(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = Tokens::load(&tokens_path)?;
    let model = Arc::new(Model::load(&model_dir, &device, dtype)?);
    let mut det = Detector::new(model, &tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.clone(),
            msg: m,
        },
        e => e,
    })?;
    for (i, (name, img)) in images.iter().enumerate() {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
        let (d, maps, low) = det.detect_frame_full(&frame)?;
        if i == 0 {
            if let Some(out) = a.get("dump-maps") {
                dump_maps(Path::new(out), &maps, low.as_ref())?;
            }
        }
        if a.has("json") {
            let kps: Vec<_> = d
                .keypoints
                .iter()
                .map(|k| {
                    serde_json::json!({"id": k.id, "x": k.x * w as f32, "y": k.y * h as f32,
                                       "nx": k.x, "ny": k.y, "score": k.score})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": name, "width": w, "height": h, "keypoints": kps})
            );
        } else {
            println!("{name} ({w}x{h})");
            for k in &d.keypoints {
                println!(
                    "  {:>3}  x {:8.2}  y {:8.2}  score {:.5}",
                    k.id,
                    k.x * w as f32,
                    k.y * h as f32,
                    k.score
                );
            }
        }
    }
    Ok(())
}

/// `maps` [K, R, R] (single pass) when available, and the input-size maps as `maps_full`.
fn dump_maps(
    path: &Path,
    full: &candle_core::Tensor,
    low: Option<&candle_core::Tensor>,
) -> Result<(), Error> {
    let mut m = std::collections::HashMap::new();
    if let Some(l) = low {
        m.insert(
            "maps".to_string(),
            l.to_dtype(candle_core::DType::F32)?
                .to_device(&candle_core::Device::Cpu)?,
        );
    }
    m.insert(
        "maps_full".to_string(),
        full.to_dtype(candle_core::DType::F32)?
            .to_device(&candle_core::Device::Cpu)?,
    );
    candle_core::safetensors::save(&m, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
