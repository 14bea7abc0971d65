//! `detect`: keypoints of image files.

use crate::args::{DetectArgs, DetectCmd};
use crate::images::read_image;
use stablekeypoints::detect::content_key;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::util::{check_output_file, safetensors_bytes, write_atomic};
use stablekeypoints::{DetectSettings, Detector, Error, FrameRef, Model, PixelFormat, Tokens};
use std::path::Path;
use std::sync::Arc;

/// The detector with `settings` (from `args`); a bad `--size` or `--map-res` is blamed on
/// the flag, a value the tokens file brings on the tokens file.
pub fn detector(
    model: Arc<Model>,
    tokens: &Tokens,
    tokens_path: &Path,
    args: &DetectArgs,
    settings: &DetectSettings,
) -> Result<Detector, Error> {
    if let Some(s) = args.size {
        let m = model.size_multiple();
        if !s.is_multiple_of(m) || s > MAX_INPUT_SIZE {
            return Err(Error::Invalid(format!(
                "--size {s}: must be a multiple of {m} for the model at {} (and at most {MAX_INPUT_SIZE})",
                model.dir.display()
            )));
        }
    }
    if let Some(r) = args.map_res.filter(|&r| r > MAX_MAP_RES) {
        return Err(Error::Invalid(format!(
            "--map-res {r}: at most {MAX_MAP_RES}"
        )));
    }
    Detector::new(model, tokens, settings.to_options()?).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })
}

pub fn cmd_detect(c: DetectCmd) -> Result<(), Error> {
    let tokens_path = c.model.tokens_path();
    if let Some(out) = &c.dump_maps {
        check_output_file(out, "--dump-maps")?;
    }
    let (device, dtype) = c.detect.device.device.open()?;
    // Read every input first so that a bad image fails before minutes of model work.
    let images = c
        .images
        .iter()
        .map(|p| read_image(p).map(|i| (p.display().to_string(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = Tokens::load(&tokens_path)?;
    let model = Arc::new(Model::load(&c.model.model, &device, dtype)?);
    let settings = c.detect.settings(&tokens)?;
    let mut det = detector(model, &tokens, &tokens_path, &c.detect, &settings)?;
    for (i, (name, img)) in images.iter().enumerate() {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
        // Noise and warps per image content: an image's keypoints do not depend on the
        // other images or their order.
        det.set_item_key(content_key(w, h, img.as_raw()));
        let (d, maps, low) = det.detect_frame_full(&frame)?;
        if i == 0 {
            if let Some(out) = &c.dump_maps {
                dump_maps(out, &maps, low.as_ref())?;
            }
        }
        if c.json {
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

/// `maps` [K, R, R] (single pass) when available, and the input-size maps as `maps_full`,
/// written atomically.
fn dump_maps(
    path: &Path,
    full: &candle_core::Tensor,
    low: Option<&candle_core::Tensor>,
) -> Result<(), Error> {
    let host = |t: &candle_core::Tensor| -> Result<(Vec<usize>, Vec<u8>), Error> {
        let t = t
            .to_dtype(candle_core::DType::F32)?
            .to_device(&candle_core::Device::Cpu)?;
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        Ok((
            t.dims().to_vec(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ))
    };
    let full = host(full)?;
    let low = low.map(host).transpose()?;
    fn view((shape, data): &(Vec<usize>, Vec<u8>)) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, shape.clone(), data)
            .expect("sizes match")
    }
    let mut views = vec![("maps_full", view(&full))];
    if let Some(l) = &low {
        views.push(("maps", view(l)));
    }
    let bytes = safetensors_bytes(views, &Default::default()).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes)
}
