//! `detect`: keypoints of image files.

use crate::args::{DetectArgs, DetectCmd, ModelTokensArgs, OutputFormat};
use crate::images::read_image;
use stablekeypoints::boxes::{Boxes, ObjectBox};
use stablekeypoints::detect::content_key;
use stablekeypoints::estimator::{Estimator, KeypointIdentity};
use stablekeypoints::export::coco::Coco;
use stablekeypoints::export::{LandmarkRecord, ObjectRecord, Record, OBJECT_SCHEMA};
use stablekeypoints::model::MapSpec;
use stablekeypoints::pose::{PoseModel, Regressor};
use stablekeypoints::student::Student;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::util::{check_output_file, safetensors_bytes, write_atomic, Inputs};
use stablekeypoints::{
    DetectSettings, Detector, Error, FrameRef, Model, PixelFormat, Region, Tokens,
};
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
    Detector::new(model, tokens, settings.to_options()).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })
}

/// What `--model` names, opened: a student file, or a model folder with its tokens.
pub struct Opened {
    pub estimator: Estimator,
    /// The tokens the keypoints are those of (a student's are its teacher's).
    pub keys: KeypointIdentity,
    /// Those tokens in messages: `tokens FILE` or `student FILE`.
    pub source: String,
    /// The teacher's map settings (none for a student).
    pub spec: Option<MapSpec>,
}

/// Opens `--model` with `settings(tokens)`; with a student, the teacher's detection flags
/// are errors naming them.
pub fn open(
    m: &ModelTokensArgs,
    args: &DetectArgs,
    settings: impl FnOnce(&Tokens) -> Result<DetectSettings, Error>,
) -> Result<Opened, Error> {
    let (device, dtype) = args.device.device.open()?;
    if Estimator::is_student(&m.model) {
        let teacher_only: Vec<&str> = [
            ("--size", args.size.is_some()),
            ("--map-res", args.map_res.is_some()),
            ("--augmentations", args.augmentations.is_some()),
            ("--no-noise", args.no_noise),
            ("--noise-level", args.noise_level.is_some()),
            ("--layers", args.layers.is_some()),
            ("--augment-*", args.augment.given()),
        ]
        .into_iter()
        .filter_map(|(f, given)| given.then_some(f))
        .collect();
        if !teacher_only.is_empty() {
            return Err(Error::Invalid(format!(
                "{} only apply to a diffusion model, not to the student {}",
                teacher_only.join(", "),
                m.model.display()
            )));
        }
        let student = Student::load(&m.model, &device)?;
        if let Some(t) = &m.tokens {
            student.check_tokens(&Tokens::load(t)?, t)?;
        }
        if args.crop.crop != student.info.crop {
            return Err(Error::Invalid(format!(
                "--crop: the student {} was distilled with crop mode {:?}",
                m.model.display(),
                student.info.crop
            )));
        }
        return Ok(Opened {
            keys: KeypointIdentity {
                indices: student.info.token_indices.clone(),
                hash: student.info.tokens_hash.clone(),
            },
            source: format!("student {}", m.model.display()),
            estimator: Estimator::Student(Box::new(student)),
            spec: None,
        });
    }
    let tokens_path = m.tokens_path();
    let tokens = Tokens::load(&tokens_path)?;
    let model = Arc::new(Model::open(&m.weights.source(&m.model), &device, dtype)?);
    let settings = settings(&tokens)?;
    let det = detector(model, &tokens, &tokens_path, args, &settings)?;
    Ok(Opened {
        keys: KeypointIdentity::of(&tokens),
        source: format!("tokens {}", tokens_path.display()),
        spec: Some(det.map_spec()),
        estimator: Estimator::teacher(det),
    })
}

pub fn cmd_detect(c: DetectCmd) -> Result<(), Error> {
    // The boxes file fails first, naming itself (and the line at fault).
    let boxes = c.objects.boxes.as_deref().map(Boxes::read).transpose()?;
    if let Some(out) = &c.dump_maps {
        check_dump_maps(&c, out, boxes.is_some())?;
    }
    // Read every input first so that a bad image fails before minutes of model work.
    let images = c
        .images
        .iter()
        .map(|p| read_image(p).map(|i| (p.display().to_string(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut opened = open(&c.model, &c.detect, |t| c.detect.settings(t))?;
    if c.dump_maps.is_some() && opened.spec.is_none() {
        return Err(Error::Invalid(format!(
            "--dump-maps: the {} has heatmaps, not attention maps",
            opened.source
        )));
    }
    let pose = c
        .pose
        .as_deref()
        .map(|p| load_pose(p, &opened.keys, &opened.source))
        .transpose()?;
    let mut coco = Coco::new();
    for (i, (name, img)) in images.iter().enumerate() {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
        // Noise and warps per image content: an image's keypoints do not depend on the
        // other images or their order.
        let key = content_key(w, h, img.as_raw());
        if let Some(boxes) = &boxes {
            let objects = ObjectJob {
                boxes,
                classes: &c.objects.classes(),
                margin: c.objects.object_margin,
            };
            for record in objects.records(&mut opened.estimator, i, name, &frame, key, &pose)? {
                emit(c.output(), &mut coco, &record, (i, name))?;
            }
            continue;
        }
        let d = match &mut opened.estimator {
            Estimator::Teacher(det) => {
                let diag = det.diagnose(stablekeypoints::Item::frame(frame, key), None)?;
                let (d, maps, low) = (diag.detection, diag.maps, diag.low_res);
                if i == 0 {
                    if let Some(out) = &c.dump_maps {
                        dump_maps(out, &maps, low.as_ref())?;
                    }
                }
                d
            }
            e => e
                .detect(vec![stablekeypoints::Item::frame(frame, key)])?
                .remove(0),
        };
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
        emit(c.output(), &mut coco, &record, (i, name))?;
    }
    if c.output() == OutputFormat::Coco {
        let mut out = std::io::stdout();
        out.write_all(&coco.to_json())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(stdout_err)?;
    }
    Ok(())
}

/// `--dump-maps OUT` is not given with boxes, is writable and replaces no input.
fn check_dump_maps(c: &DetectCmd, out: &Path, boxes: bool) -> Result<(), Error> {
    if boxes {
        return Err(Error::Invalid(
            "--dump-maps: not with --boxes (the maps are those of a whole image)".into(),
        ));
    }
    check_output_file(out, "--dump-maps")?;
    let mut inputs = Inputs::new();
    inputs
        .add("--model", &c.model.model)
        .add("--tokens", &c.model.tokens_path());
    if let Some(pose) = &c.pose {
        inputs.add("--pose", pose);
    }
    for image in &c.images {
        inputs.add("IMAGE", image);
    }
    inputs.check(out, "--dump-maps")
}

/// Prints `record` of image `i` (`name`) in `format`; COCO collects it in `coco`, printed at
/// the end.
fn emit(
    format: OutputFormat,
    coco: &mut Coco,
    record: &Record,
    (i, name): (usize, &str),
) -> Result<(), Error> {
    match format {
        OutputFormat::Json => std::io::stdout()
            .write_all(&record.to_line())
            .map_err(stdout_err)?,
        OutputFormat::Coco => coco
            .add(i as u64, Some(name), record)
            .map_err(Error::Invalid)?,
        OutputFormat::Table => print_table(record),
    }
    Ok(())
}

/// Item keys of objects, as the element keys them: object j of the image with key k is
/// item `k * KEYS_PER_IMAGE + j`.
pub const KEYS_PER_IMAGE: u64 = 1024;

/// `--boxes`: keypoints per object of an image.
struct ObjectJob<'a> {
    boxes: &'a Boxes,
    /// Labels inferred; empty = all.
    classes: &'a [String],
    margin: f64,
}

impl ObjectJob<'_> {
    /// One record per box of image `index` (none without boxes): the box, grown by the
    /// margin, squared by the crop mode and inferred as item `key * KEYS_PER_IMAGE + j`;
    /// keypoints normalised to the image. A box with nothing inside the image is skipped.
    fn records(
        &self,
        estimator: &mut Estimator,
        index: usize,
        name: &str,
        frame: &FrameRef,
        key: u64,
        pose: &Option<(PoseModel, Regressor)>,
    ) -> Result<Vec<Record>, Error> {
        let (w, h) = (frame.width as u32, frame.height as u32);
        let Some(record) = self.boxes.record_by_frame(index as u64) else {
            return Ok(Vec::new());
        };
        let objects: Vec<(u64, ObjectBox, [u32; 4])> = record
            .scaled_to(w, h)
            .into_iter()
            .enumerate()
            .filter(|(_, o)| self.classes.is_empty() || self.classes.contains(&o.label))
            .filter_map(|(j, o)| {
                let rect = o.pixel_rect(w, h)?;
                Some((o.id.unwrap_or(j as u64), o, rect))
            })
            .collect();
        let regions: Vec<(usize, Region)> = objects
            .iter()
            .map(|(_, _, r)| (0, rect_region(r).grown(self.margin)))
            .collect();
        let keys: Vec<u64> = (0..regions.len() as u64)
            .map(|j| key.wrapping_mul(KEYS_PER_IMAGE).wrapping_add(j))
            .collect();
        let detections = estimator.detect(stablekeypoints::Item::regions(
            std::slice::from_ref(frame),
            &regions,
            &keys,
        )?)?;
        let crop = estimator.crop();
        let mut out = Vec::with_capacity(objects.len());
        for (((id, o, rect), (_, region)), d) in objects.iter().zip(&regions).zip(detections) {
            let mut record = Record::still(index as u64, Some(name), w, h, &d.keypoints, 0.0);
            record.schema = OBJECT_SCHEMA.into();
            let (fw, fh) = (w as f32, h as f32);
            record.object = Some(ObjectRecord {
                object_id: *id,
                label: o.label.clone(),
                roi: [
                    rect[0] as f32 / fw,
                    rect[1] as f32 / fh,
                    (rect[2] - rect[0]) as f32 / fw,
                    (rect[3] - rect[1]) as f32 / fh,
                ],
            });
            if let Some((p, reg)) = pose {
                let v = region.squared(crop);
                let (iw, ih) = (f64::from(w), f64::from(h));
                let view = [v.x / iw, v.y / ih, v.w / iw, v.h / ih].map(|c| c as f32);
                add_pose_in_view(&mut record, p, reg, view)?;
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// A pixel rectangle `[x0, y0, x1, y1)` as a region.
fn rect_region(r: &[u32; 4]) -> Region {
    Region {
        x: r[0] as f64,
        y: r[1] as f64,
        w: (r[2] - r[0]) as f64,
        h: (r[3] - r[1]) as f64,
    }
}

/// An object's landmarks, regressed as the pose element regresses them: from its keypoints
/// in the `view` they were inferred in (`[x, y, w, h]` normalised to the image; the
/// regressor reads keypoints of the model's input), then mapped back to the image.
fn add_pose_in_view(
    record: &mut Record,
    pose: &PoseModel,
    reg: &Regressor,
    view: [f32; 4],
) -> Result<(), Error> {
    let [vx, vy, vw, vh] = view;
    let mut in_view = record.clone();
    for k in &mut in_view.keypoints {
        k.nx = (k.nx - vx) / vw;
        k.ny = (k.ny - vy) / vh;
    }
    in_view.add_pose(pose, reg)?;
    let (w, h) = (record.width, record.height);
    record.pose = in_view.pose.map(|ls| {
        ls.iter()
            .map(|l| LandmarkRecord::new(&l.name, vx + l.nx * vw, vy + l.ny * vh, w, h))
            .collect()
    });
    record.skeleton = in_view.skeleton;
    Ok(())
}

/// The table of one image (or object): a line per keypoint, then one per landmark.
fn print_table(r: &Record) {
    let name = r.image.as_deref().unwrap_or("");
    match &r.object {
        Some(o) => println!(
            "{name} ({}x{}) object {} {} roi {:.4} {:.4} {:.4} {:.4}",
            r.width, r.height, o.object_id, o.label, o.roi[0], o.roi[1], o.roi[2], o.roi[3]
        ),
        None => println!("{name} ({}x{})", r.width, r.height),
    }
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

/// A pose file and its regressor, checked against the keypoints' tokens as the elements
/// check it (same keypoint count, token indices and, when recorded, fingerprint); errors
/// name the pose file. `source` names the tokens (`tokens FILE`, `student FILE`).
pub fn load_pose(
    path: &Path,
    keys: &KeypointIdentity,
    source: &str,
) -> Result<(PoseModel, Regressor), Error> {
    let pose = PoseModel::load(path)?;
    pose.check_tokens(&keys.indices, &keys.hash, source)
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
