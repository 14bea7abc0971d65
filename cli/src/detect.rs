//! `detect`: keypoints of image files.

use crate::args::{device_from_str, Args, USAGE};
use stablekeypoints::{Detector, Error, FrameRef, Model, PixelFormat, Tokens};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn read_image(path: &Path) -> Result<image::RgbImage, Error> {
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

pub fn cmd_detect(a: Args) -> Result<(), Error> {
    let model_dir = PathBuf::from(a.required("model")?);
    let tokens_path = PathBuf::from(a.required("tokens")?);
    if a.positional.is_empty() {
        return Err(Error::Invalid(format!("no IMAGE given\n\n{USAGE}")));
    }
    let opts = crate::args::detect_options(&a)?;
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
