//! `detect`: keypoints of image files.

use crate::args::{DetectArgs, DetectCmd, OutputFormat};
use crate::images::read_image;
use stablekeypoints::detect::content_key;
use stablekeypoints::export::coco::Coco;
use stablekeypoints::export::Record;
use stablekeypoints::pose::{PoseModel, Regressor};
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::util::{check_output_file, safetensors_bytes, write_atomic, Inputs};
use stablekeypoints::{DetectSettings, Detector, Error, FrameRef, Model, PixelFormat, Tokens};
use std::io::Write;
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
        let mut inputs = Inputs::new();
        inputs
            .add("--model", &c.model.model)
            .add("--tokens", &tokens_path);
        if let Some(pose) = &c.pose {
            inputs.add("--pose", pose);
        }
        for image in &c.images {
            inputs.add("IMAGE", image);
        }
        inputs.check(out, "--dump-maps")?;
    }
    let (device, dtype) = c.detect.device.device.open()?;
    // Read every input first so that a bad image fails before minutes of model work.
    let images = c
        .images
        .iter()
        .map(|p| read_image(p).map(|i| (p.display().to_string(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = Tokens::load(&tokens_path)?;
    let pose = c
        .pose
        .as_deref()
        .map(|p| load_pose(p, &tokens, &tokens_path))
        .transpose()?;
    let mut coco = Coco::new();
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
        let mut record = Record::still(
            i as u64,
            Some(name),
            w as u32,
            h as u32,
            &d.keypoints,
            0.0, // the element's default keypoint-threshold: every keypoint is visible
        );
        if let Some((p, reg)) = &pose {
            record.add_pose(p, reg)?;
        }
        match c.output() {
            OutputFormat::Json => {
                std::io::stdout()
                    .write_all(&record.to_line())
                    .map_err(stdout_err)?;
            }
            OutputFormat::Coco => coco
                .add(i as u64, Some(name), &record)
                .map_err(Error::Invalid)?,
            OutputFormat::Table => print_table(&record),
        }
    }
    if c.output() == OutputFormat::Coco {
        let mut out = std::io::stdout();
        out.write_all(&coco.to_json())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(stdout_err)?;
    }
    Ok(())
}

/// The table of one image: a line per keypoint, then one per landmark.
fn print_table(r: &Record) {
    let name = r.image.as_deref().unwrap_or("");
    println!("{name} ({}x{})", r.width, r.height);
    for k in &r.keypoints {
        println!(
            "  {:>3}  x {:8.2}  y {:8.2}  confidence {:.5}",
            k.id, k.x, k.y, k.confidence
        );
    }
    for l in r.pose.iter().flatten() {
        println!("  {:>12}  x {:8.2}  y {:8.2}", l.name, l.x, l.y);
    }
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        path: "<standard output>".into(),
        source: e,
    }
}

/// A pose file and its regressor, checked against the tokens as the elements check it
/// (same keypoint count, token indices and, when recorded, fingerprint); errors name the
/// pose file.
pub fn load_pose(
    path: &Path,
    tokens: &Tokens,
    tokens_path: &Path,
) -> Result<(PoseModel, Regressor), Error> {
    let pose = PoseModel::load(path)?;
    let source = format!("tokens {}", tokens_path.display());
    pose.check_tokens(&tokens.indices, &tokens.fingerprint(), &source)
        .map_err(|m| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("cannot use this pose: {m}")),
        })?;
    let reg = pose.regressor()?;
    Ok((pose, reg))
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
