//! `distill`: a student network from a teacher (glue over `stablekeypoints::student`), and
//! `export-onnx`.

use crate::args::{DistillCmd, ExportOnnxCmd};
use crate::images::{is_csv, ImageFiles, LabelImages};
use crate::interrupt;
use crate::progress::{duration, Progress};
use crate::train::{is_video, video_frames, TrainInput};
use stablekeypoints::detect::DetectOptions;
use stablekeypoints::export::Record;
use stablekeypoints::frame::Fit;
use stablekeypoints::model::ModelIdentity;
use stablekeypoints::student::distill::Labels;
use stablekeypoints::student::distill::{
    self, checkpoint_path, labels_path, DistillConfig, DistillEvent, Distiller, Images, LabelEvent,
    LabelIdentity, TeacherId,
};
use stablekeypoints::student::net::SIZE_MULTIPLE;
use stablekeypoints::student::StudentWeights;
use stablekeypoints::train::TrainData;
use stablekeypoints::util::{check_output_file, write_atomic, Inputs};
use stablekeypoints::{Detector, Error, Model, Tokens};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::Path;

#[cfg(feature = "video")]
use crate::pipeline::KEYPOINTS;
/// `process`'s JSON lines (its module needs the `video` feature, as labels from videos do).
#[cfg(not(feature = "video"))]
const KEYPOINTS: &str = "keypoints.jsonl";
use std::sync::Arc;
use std::time::Instant;

/// The inputs, as `train` reads them.
fn open_data(
    input: TrainInput,
    max: Option<usize>,
    size: usize,
    crop: stablekeypoints::CropMode,
) -> Result<Box<dyn TrainData>, Error> {
    Ok(match input {
        TrainInput::Path(p) if is_video(p) => video_frames(input, max, size, crop)?,
        TrainInput::Path(p) if is_csv(p) && p.is_file() => {
            Box::new(LabelImages::new(p, max, crop)?)
        }
        TrainInput::Path(p) => Box::new(ImageFiles::new(p, max, crop)?),
        TrainInput::Corpus(_) => video_frames(input, max, size, crop)?,
    })
}

fn stopped(what: &str) -> Error {
    let sig = interrupt::received().unwrap_or(libc::SIGINT);
    Error::Invalid(format!(
        "stopped by {} during {what}; rerun with --resume to continue",
        interrupt::name(sig)
    ))
}

pub fn cmd_distill(c: DistillCmd) -> Result<(), Error> {
    check_outputs(&c)?;
    if !c.student_size.is_multiple_of(SIZE_MULTIPLE) {
        return Err(Error::Invalid(format!(
            "--student-size {}: must be a multiple of {SIZE_MULTIPLE}",
            c.student_size
        )));
    }
    let input = match (&c.input, &c.inputs) {
        (_, Some(corpus)) => TrainInput::Corpus(corpus),
        (Some(p), None) => TrainInput::Path(p),
        (None, None) => unreachable!("clap requires --input or --inputs"),
    };
    let crop = c.crop.crop;
    let tokens_path = c.model.tokens_path();
    let tokens = Tokens::load(&tokens_path)?;
    let teacher_size = tokens.input_size;
    if let Some(l) = &c.labels {
        if !l.exists() {
            return Err(Error::Invalid(format!(
                "--labels {}: no such file or folder",
                l.display()
            )));
        }
    }
    let data = open_data(input, c.max_frames, teacher_size, crop)?;
    if data.is_empty() {
        return Err(Error::Invalid("no inputs to distil from".into()));
    }
    let teacher_id = TeacherId {
        model: ModelIdentity::of_source(&c.model.weights.source(&c.model.model))?.weights,
        tokens_hash: tokens.fingerprint(),
        token_indices: tokens.indices.clone(),
    };
    let _armed = interrupt::Armed::new();
    let started = Instant::now();
    let (data, labels): (Box<dyn TrainData>, _) = match &c.labels {
        Some(path) => {
            let (keep, labels) = labels_from_records(
                path,
                data.as_ref(),
                teacher_size,
                crop,
                tokens.indices.len(),
            )?;
            eprintln!(
                "labels from {}: {} of the {} frames have a record computed from them",
                path.display(),
                keep.len(),
                data.len()
            );
            (Box::new(Subset { data, keep }), labels)
        }
        None => {
            let labels = teacher_labels(&c, &tokens, &tokens_path, data.as_ref(), &teacher_id)?;
            (data, labels)
        }
    };
    let label_seconds = started.elapsed().as_secs_f64();
    distil(
        &c,
        &tokens,
        data.as_ref(),
        &labels,
        teacher_id,
        label_seconds,
    )
}

/// The student, its label cache and its checkpoint are writable and replace no input; a
/// run that has not finished is continued only with `--resume`.
fn check_outputs(c: &DistillCmd) -> Result<(), Error> {
    let out = &c.out;
    let (labels_file, ckpt) = (labels_path(out), checkpoint_path(out));
    for p in [out, &labels_file, &ckpt] {
        check_output_file(p, "--out")?;
    }
    let mut inputs = Inputs::new();
    inputs
        .add("--model", &c.model.model)
        .add("--tokens", &c.model.tokens_path());
    for (flag, p) in [("--input", &c.input), ("--inputs", &c.inputs)] {
        if let Some(p) = p {
            inputs.add(flag, p);
        }
    }
    for p in [out, &labels_file, &ckpt] {
        inputs.check(p, "--out")?;
    }
    if !c.resume {
        distill::refuse_unfinished(&ckpt)?;
        if labels_file.exists() {
            return Err(Error::Invalid(format!(
                "{} holds the teacher's labels of an earlier run; continue it with --resume, \
                 or remove the file to label anew",
                labels_file.display()
            )));
        }
    }
    Ok(())
}

/// The teacher's keypoints of every input, cached next to the output (resumable).
fn teacher_labels(
    c: &DistillCmd,
    tokens: &Tokens,
    tokens_path: &Path,
    data: &dyn TrainData,
    teacher_id: &TeacherId,
) -> Result<Labels, Error> {
    let labels_file = labels_path(&c.out);
    let (device, dtype) = c.device.device.open()?;
    let model = Arc::new(Model::open(
        &c.model.weights.source(&c.model.model),
        &device,
        dtype,
    )?);
    let crop = c.crop.crop;
    let opts = DetectOptions {
        augmentations: c.teacher_augmentations,
        seed: c.seed.seed,
        crop,
        ..Default::default()
    };
    let mut teacher = Detector::new(model, tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })?;
    let id = LabelIdentity {
        teacher_model: teacher_id.model.clone(),
        tokens_hash: teacher_id.tokens_hash.clone(),
        data: data.fingerprint(),
        teacher_augmentations: c.teacher_augmentations,
        seed: c.seed.seed,
    };
    eprintln!(
        "labelling {} inputs with the teacher ({} keypoints, {} pass{} each); cache {}",
        data.len(),
        tokens.indices.len(),
        c.teacher_augmentations,
        if c.teacher_augmentations == 1 {
            ""
        } else {
            "es"
        },
        labels_file.display()
    );
    let mut bar = Progress::new(data.len() as u64, "label {pos}/{len} [{bar:30}] {eta}");
    let labels = distill::label(&mut teacher, data, &labels_file, &id, 50, &mut |ev| {
        match ev {
            LabelEvent::Resumed { done, total } => {
                bar.println(&format!("resumed labelling at {done} of {total}"));
                bar.set(done as u64, "", false, String::new);
            }
            LabelEvent::Item { done, total } => {
                bar.set(done as u64, "", done == total || done % 100 == 0, || {
                    format!("label {done}/{total}")
                });
            }
        }
        if interrupt::received().is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    bar.finish();
    labels.ok_or_else(|| stopped("labelling"))
}

/// Trains the student on `data` and `labels` and writes it.
fn distil(
    c: &DistillCmd,
    tokens: &Tokens,
    data: &dyn TrainData,
    labels: &Labels,
    teacher_id: TeacherId,
    label_seconds: f64,
) -> Result<(), Error> {
    let (out, ckpt) = (&c.out, checkpoint_path(&c.out));
    let cfg = config(c, tokens)?;
    let images = Images::read(data, tokens.input_size, c.student_size)?;
    let mut d = Distiller::new(cfg.clone(), labels, teacher_id)?;
    if c.resume && ckpt.is_file() {
        d.load_checkpoint(&ckpt)?;
        if d.step() > cfg.steps {
            return Err(Error::Invalid(format!(
                "{}: {} steps are done, more than the {} asked for; resume with --steps {} or more",
                ckpt.display(),
                d.step(),
                cfg.steps,
                d.step()
            )));
        }
        eprintln!("resumed at step {}", d.step());
    }
    let k = labels.k;
    eprintln!(
        "distilling into a {}x{} student (widths {:?}, {} parameters, {:.3} GFLOP per frame) on {} inputs, {} held out, for {} steps of {}; checkpoint {}",
        cfg.input_size,
        cfg.input_size,
        cfg.widths,
        stablekeypoints::student::net::parameters(&cfg.widths, k),
        stablekeypoints::student::net::flops(&cfg.widths, k, cfg.input_size) as f64 / 1e9,
        d.train_items().len(),
        d.holdout_items().len(),
        cfg.steps,
        cfg.batch_size,
        ckpt.display()
    );
    let train_started = Instant::now();
    let last_holdout = train_with_progress(&mut d, &images, labels, &ckpt, &cfg)?;
    let mut w = d.weights();
    record_run(&mut w.info.extra, c, labels, &cfg, last_holdout);
    w.save(out)?;
    eprintln!(
        "wrote {} (labelling {}, training {}{})",
        out.display(),
        duration(label_seconds),
        duration(train_started.elapsed().as_secs_f64()),
        if last_holdout.is_finite() {
            format!(", held-out error {last_holdout:.2} px")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The training settings of `c` (the warp ranges of `tokens` unless given).
fn config(c: &DistillCmd, tokens: &Tokens) -> Result<DistillConfig, Error> {
    Ok(DistillConfig {
        widths: c.widths,
        input_size: c.student_size,
        crop: c.crop.crop,
        steps: c.steps,
        batch_size: c.batch_size,
        lr: c.lr,
        sigma: c.sigma,
        holdout_every: c.holdout_every,
        seed: c.seed.seed,
        augment: c.augment.apply(tokens.augment)?,
        jitter: c.jitter,
        checkpoint_every: c.checkpoint_every,
    })
}

/// Trains `d` to `cfg.steps` with a progress bar (Ctrl-C stops it, leaving the checkpoint
/// `ckpt`); the last held-out error in pixels (NaN without one).
fn train_with_progress(
    d: &mut Distiller,
    images: &Images,
    labels: &Labels,
    ckpt: &Path,
    cfg: &DistillConfig,
) -> Result<f32, Error> {
    let mut steps = Progress::new(cfg.steps as u64, "step {pos}/{len} [{bar:30}] {msg}");
    let mut last_holdout = f32::NAN;
    let finished = d.run(images, labels, ckpt, 250, &mut |ev| {
        match ev {
            DistillEvent::Resumed { step } => steps.set(step as u64, "", false, String::new),
            DistillEvent::Holdout { step, error_px } => {
                last_holdout = error_px;
                steps.println(&format!(
                    "step {step}: held-out error {error_px:.2} px (at {0}x{0})",
                    cfg.input_size
                ));
            }
            DistillEvent::Step { stats, eta_seconds } => {
                let msg = format!(
                    "loss {:.5} {:.2} s/step ETA {}",
                    stats.loss,
                    stats.seconds,
                    duration(eta_seconds)
                );
                steps.set(stats.step as u64, &msg, true, || {
                    format!("step {}/{} {msg}", stats.step, stats.steps)
                });
            }
        }
        if interrupt::received().is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    steps.finish();
    if !finished {
        return Err(stopped(&format!(
            "training (checkpoint {})",
            ckpt.display()
        )));
    }
    Ok(last_holdout)
}

/// How the student was made, in its file's metadata.
fn record_run(
    extra: &mut BTreeMap<String, String>,
    c: &DistillCmd,
    labels: &Labels,
    cfg: &DistillConfig,
    last_holdout: f32,
) {
    match &c.labels {
        Some(p) => extra.insert("labels".into(), p.display().to_string()),
        None => extra.insert(
            "teacher_augmentations".into(),
            c.teacher_augmentations.to_string(),
        ),
    };
    extra.insert("inputs".into(), labels.points.len().to_string());
    extra.insert("steps".into(), cfg.steps.to_string());
    extra.insert("batch_size".into(), cfg.batch_size.to_string());
    extra.insert("seed".into(), cfg.seed.to_string());
    if last_holdout.is_finite() {
        extra.insert("holdout_error_px".into(), format!("{last_holdout:.3}"));
    }
}

pub fn cmd_export_onnx(c: ExportOnnxCmd) -> Result<(), Error> {
    check_output_file(&c.out, "--out")?;
    Inputs::new()
        .add("STUDENT", &c.student)
        .check(&c.out, "--out")?;
    let w = StudentWeights::load(&c.student)?;
    let bytes = stablekeypoints::student::onnx::export(&w)?;
    write_atomic(&c.out, &bytes)?;
    eprintln!(
        "wrote {} from {} (input `image` [N, 3, {2}, {2}], output `heatmaps` [N, {3}, {4}, {4}])",
        c.out.display(),
        c.student.display(),
        w.info.input_size,
        w.info.num_keypoints,
        w.info.input_size / stablekeypoints::student::net::STRIDE
    );
    Ok(())
}

/// The items of `data` that `keep` names.
struct Subset {
    data: Box<dyn TrainData>,
    keep: Vec<usize>,
}

impl TrainData for Subset {
    fn len(&self) -> usize {
        self.keep.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        self.data.image(self.keep[index], size)
    }
    fn fingerprint(&self) -> String {
        format!(
            "{} (frames with labels: {:?})",
            self.data.fingerprint(),
            self.keep
        )
    }
}

/// The labels of `data`'s frames from the JSON lines of an earlier `process` run (`path`:
/// the file for one video, the `--out-dir` of a corpus), matched by timestamp; only records
/// computed from their own frame (not held or interpolated ones) count. Returns the items
/// that have one, and their labels in the model square of side `size`.
fn labels_from_records(
    path: &Path,
    data: &dyn TrainData,
    size: usize,
    crop: stablekeypoints::CropMode,
    k: usize,
) -> Result<(Vec<usize>, Labels), Error> {
    let mut files: HashMap<String, HashMap<u64, Vec<[f32; 3]>>> = HashMap::new();
    let (mut keep, mut points) = (Vec::new(), Vec::new());
    for i in 0..data.len() {
        let Some((name, pts)) = data.source(i) else {
            return Err(Error::Invalid(format!(
                "--labels {}: the inputs are images, but labels from JSON lines are matched to \
                 the frames of videos by timestamp",
                path.display()
            )));
        };
        let Some(pts) = pts else { continue };
        if !files.contains_key(&name) {
            let file = if name.is_empty() {
                path.to_path_buf()
            } else {
                path.join(&name).join(KEYPOINTS)
            };
            let records = read_records(&file, size, crop, k)?;
            files.insert(name.clone(), records);
        }
        if let Some(p) = files[&name].get(&pts) {
            keep.push(i);
            points.push(p.clone());
        }
    }
    if keep.is_empty() {
        return Err(Error::Invalid(format!(
            "--labels {}: none of the {} frames has a record computed from it with its \
             timestamp (was it made from these videos?)",
            path.display(),
            data.len()
        )));
    }
    Ok((keep, Labels { k, points }))
}

/// The records of a JSON lines file computed from their own frame, by timestamp: each
/// keypoint `[x, y, confidence]` normalised to the model square of side `size`.
fn read_records(
    file: &Path,
    size: usize,
    crop: stablekeypoints::CropMode,
    k: usize,
) -> Result<HashMap<u64, Vec<[f32; 3]>>, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Io {
        path: file.to_path_buf(),
        source: e,
    })?;
    let bad = |n: usize, m: String| Error::Invalid(format!("{}:{}: {m}", file.display(), n + 1));
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: Record = serde_json::from_str(line)
            .map_err(|e| bad(n, format!("not a keypoints record: {e}")))?;
        // `inferred`: the keypoints were not computed from this frame.
        let (false, Some(pts)) = (r.inferred, r.pts) else {
            continue;
        };
        if r.keypoints.len() != k {
            return Err(bad(
                n,
                format!("{} keypoints, but the tokens have {k}", r.keypoints.len()),
            ));
        }
        let fit = Fit::new(r.width as usize, r.height as usize, size, crop);
        let mut p = vec![[0f32; 3]; k];
        for kp in &r.keypoints {
            let slot = p
                .get_mut(kp.id as usize)
                .ok_or_else(|| bad(n, format!("keypoint id {} of {k}", kp.id)))?;
            let (x, y) = fit.to_model(kp.x, kp.y);
            *slot = [x, y, kp.confidence];
        }
        out.insert(pts, p);
    }
    Ok(out)
}
