//! `eval`: fit the keypoints -> landmarks regressor on labelled training images and score it
//! on the test images (glue over `stablekeypoints::eval`).

use crate::args::{EvalCmd, MetricName};
use crate::detect::{open, Opened};
use crate::progress::Progress;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::eval::{
    self, LabelSet, Metric, PoseModel, Protocol, Regressor, Report, Sample,
};
use stablekeypoints::util::{check_output_file, Inputs};
use stablekeypoints::Error;
use std::path::Path;

/// The metric, refusing the options of the other metrics.
fn metric(c: &EvalCmd) -> Result<Metric, Error> {
    let only = |flag: &str, given: bool, metric: MetricName, name: &str| {
        if given && c.metric != metric {
            Err(Error::Invalid(format!(
                "{flag} only applies to --metric {name}"
            )))
        } else {
            Ok(())
        }
    };
    only(
        "--eyes",
        c.eyes.is_some(),
        MetricName::InterOcular,
        "inter-ocular",
    )?;
    only("--pck-px", c.pck_px.is_some(), MetricName::Pck, "pck")?;
    only(
        "--flip-pairs",
        !c.flip_pairs.is_empty(),
        MetricName::OrientationInvariant,
        "orientation-invariant",
    )?;
    Ok(match c.metric {
        MetricName::Taichi => Metric::TaiChi,
        MetricName::InterOcular => {
            let (left, right) = c.eyes.unwrap_or((0, 1));
            Metric::InterOcular { left, right }
        }
        MetricName::Visible => Metric::Visible,
        MetricName::Pck => Metric::Pck {
            px: c.pck_px.unwrap_or(6.0),
        },
        MetricName::OrientationInvariant => Metric::OrientationInvariant {
            // Without --flip-pairs, the reference's list (32 landmarks).
            pairs: if c.flip_pairs.is_empty() {
                stablekeypoints::pose::H36M_SWAP_PAIRS.to_vec()
            } else {
                c.flip_pairs.clone()
            },
        },
    })
}

pub fn cmd_eval(c: EvalCmd) -> Result<(), Error> {
    let metric = metric(&c)?;
    // Everything cheap is checked before minutes of detection.
    let (train, test) = label_sets(&c, &metric)?;
    let l = train.num_landmarks;
    let (names, skeleton) = names_and_skeleton(&c, l)?;
    if let Some(p) = &c.save_regressor {
        check_regressor_output(&c, p, &train, &test)?;
    }

    // The reference's evaluation: 10 passes unless told otherwise, every one a random warp
    // (a student has one deterministic pass).
    let mut augmentations = 1;
    let mut opened = open(&c.model, &c.detect, |tokens| {
        let mut settings = c.detect.settings(tokens)?;
        settings.augmentations = c
            .detect
            .augmentations
            .unwrap_or(eval::DEFAULT_AUGMENTATIONS);
        settings.warp_every_pass = true;
        augmentations = settings.augmentations;
        Ok(settings)
    })?;
    let protocol = Protocol::from(c.protocol);
    let given_pose = c
        .pose
        .as_deref()
        .map(|p| given_pose(p, &opened, &test))
        .transpose()?;
    let det = &mut opened.estimator;
    let train_samples = match given_pose {
        Some(_) => Vec::new(),
        None => detect(det, &train, "train")?,
    };
    let test_samples = detect(det, &test, "test")?;
    for (set, samples) in [(&train, &train_samples), (&test, &test_samples)] {
        warn_outside(set, samples);
    }
    let reg = match &given_pose {
        Some((_, reg)) => reg.clone(),
        None => eval::fit(&train_samples, &metric, protocol)?,
    };
    let report = eval::evaluate(&reg, &test_samples, &metric, protocol)?;
    if report.scored_images == 0 {
        return Err(Error::Invalid(format!(
            "{}: none of its {} images could be scored with --metric {} ({} skipped), so \
             there is no score",
            test.path.display(),
            report.test_images,
            report.metric,
            report.skipped_images
        )));
    }

    if let Some(path) = &c.save_regressor {
        let mut pose = PoseModel::new(&reg, opened.keys.indices.clone(), names.clone(), skeleton)?;
        pose.tokens_hash = Some(opened.keys.hash.clone());
        pose.save(path)?;
        eprintln!("wrote {}", path.display());
    }
    let run = Run {
        opened: &opened,
        augmentations,
        train_images: train_samples.len(),
    };
    if c.json {
        print_json(&report, &run)
    } else {
        print_text(&c, &report, &run, names.as_deref());
        Ok(())
    }
}

/// The regressor of the pose file `path` (`--pose`), checked against the tokens and the
/// landmarks of the `test` labels.
fn given_pose(
    path: &Path,
    opened: &Opened,
    test: &LabelSet,
) -> Result<(PoseModel, Regressor), Error> {
    let (p, reg) = crate::detect::load_pose(path, &opened.keys, &opened.source)?;
    let l = test.num_landmarks;
    if p.num_landmarks != l {
        return Err(Error::Invalid(format!(
            "--pose {}: {} landmarks, but {} has {l}",
            path.display(),
            p.num_landmarks,
            test.path.display()
        )));
    }
    Ok((p, reg))
}

/// The test labels and the training ones (with `--pose`, the test set stands in for the
/// checks of the training one: nothing is fitted), checked against each other and the
/// metric.
fn label_sets(c: &EvalCmd, metric: &Metric) -> Result<(LabelSet, LabelSet), Error> {
    let test = LabelSet::load(&c.test)?;
    let train = match &c.train {
        Some(p) => LabelSet::load(p)?,
        None => test.clone(),
    };
    if train.num_landmarks != test.num_landmarks {
        return Err(Error::Invalid(format!(
            "{} has {} landmarks but {} has {}",
            train.path.display(),
            train.num_landmarks,
            test.path.display(),
            test.num_landmarks
        )));
    }
    // Nothing to fit or to score is an error now, not after minutes of detection (nor a
    // perfect score of nothing).
    train.require_visible("training")?;
    test.require_visible("test")?;
    metric
        .validate(train.num_landmarks)
        .map_err(|e| match (metric, c.flip_pairs.is_empty()) {
            (Metric::OrientationInvariant { .. }, true) => Error::Invalid(format!(
                "the reference's Human3.6M swap list (the default of --flip-pairs, 32 landmarks) \
             does not fit the labels: {e}"
            )),
            _ => e,
        })?;
    Ok((train, test))
}

/// Landmark names (`--names`) and skeleton pairs (`--skeleton`).
type NamesAndSkeleton = (Option<Vec<String>>, Vec<[usize; 2]>);

/// `--names` and `--skeleton`, checked against the `l` labelled landmarks.
fn names_and_skeleton(c: &EvalCmd, l: usize) -> Result<NamesAndSkeleton, Error> {
    let names = c.names.as_deref().map(eval::read_names).transpose()?;
    if let (Some(n), Some(p)) = (&names, &c.names) {
        if n.len() != l {
            return Err(Error::Invalid(format!(
                "{}: {} names, but the labels have {l} landmarks",
                p.display(),
                n.len()
            )));
        }
    }
    let skeleton = match &c.skeleton {
        Some(p) => {
            let s = eval::read_skeleton(p, names.as_deref().unwrap_or(&[]))?;
            if let Some(q) = s.iter().find(|q| q[0] >= l || q[1] >= l) {
                return Err(Error::Invalid(format!(
                    "{}: pair {} {} names a landmark beyond the {l} labelled ones",
                    p.display(),
                    q[0],
                    q[1]
                )));
            }
            s
        }
        None => Vec::new(),
    };
    Ok((names, skeleton))
}

/// `--save-regressor` may not replace any file the run reads.
fn check_regressor_output(
    c: &EvalCmd,
    out: &Path,
    train: &LabelSet,
    test: &LabelSet,
) -> Result<(), Error> {
    check_output_file(out, "--save-regressor")?;
    let mut inputs = Inputs::new();
    inputs
        .add("--model", &c.model.model)
        .add("--tokens", &c.model.tokens_path());
    for (flag, set) in [("--train", train), ("--test", test)] {
        inputs.add(flag, &set.path);
        for row in &set.rows {
            inputs.add(flag, &row.image);
            if let Some(mask) = &row.mask {
                inputs.add(flag, mask);
            }
        }
    }
    for (flag, path) in [("--names", &c.names), ("--skeleton", &c.skeleton)] {
        if let Some(path) = path {
            inputs.add(flag, path);
        }
    }
    inputs.check(out, "--save-regressor")
}

/// The keypoints of every image of `set` (`what` in the progress bar).
fn detect(det: &mut Estimator, set: &LabelSet, what: &str) -> Result<Vec<Sample>, Error> {
    let total = set.rows.len() as u64;
    let mut bar = Progress::new(
        total,
        &format!("detecting {what} {{pos}}/{{len}} [{{bar:30}}] {{eta}}"),
    );
    let out = eval::detect_set(det, set, &mut |done, total| {
        bar.set(done as u64, "", done == total || done % 50 == 0, || {
            format!("detecting {what} {done}/{total}")
        });
    });
    bar.finish();
    out
}

/// Warns of the rows of `set` with landmarks outside their image.
fn warn_outside(set: &LabelSet, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    let sizes: Vec<(usize, usize)> = samples.iter().map(|s| (s.width, s.height)).collect();
    let lines = set.lines_outside(&sizes);
    if !lines.is_empty() {
        let shown: Vec<String> = lines.iter().take(10).map(|l| l.to_string()).collect();
        let more = if lines.len() > 10 { ", ..." } else { "" };
        eprintln!(
            "warning: {}: {} rows have landmarks outside their image (lines {}{more}); \
             they count as visible",
            set.path.display(),
            lines.len(),
            shown.join(", ")
        );
    }
}

/// How the keypoints were detected, for the report.
struct Run<'a> {
    opened: &'a Opened,
    augmentations: usize,
    train_images: usize,
}

fn print_json(report: &Report, run: &Run) -> Result<(), Error> {
    let mut v = serde_json::to_value(report)
        .map_err(|e| Error::Invalid(format!("cannot serialise the report: {e}")))?;
    v["train_images"] = run.train_images.into();
    v["augmentations"] = run.augmentations.into();
    if let Some(spec) = &run.opened.spec {
        v["timestep"] = spec.timestep.into();
    } else {
        v["student"] = run.opened.source.clone().into();
    }
    println!("{v}");
    Ok(())
}

fn print_text(c: &EvalCmd, report: &Report, run: &Run, names: Option<&[String]>) {
    println!("{}: {:.4}", report.metric, report.value);
    println!("  ({}; {} protocol)", report.unit, report.protocol);
    match &run.opened.spec {
        Some(spec) => println!(
            "  detection: {} warped passes per image, timestep {}, layers {}",
            run.augmentations, spec.timestep, spec.layers
        ),
        None => println!("  detection: the {}, one pass per image", run.opened.source),
    }
    let fitted = match &c.pose {
        Some(p) => format!("the regressor of {}", p.display()),
        None => format!("fitted on {} training images", run.train_images),
    };
    println!(
        "  {fitted}; {} test images, {} scored; {} keypoints -> {} landmarks",
        report.test_images, report.scored_images, report.keypoints, report.landmarks
    );
    let per: Vec<String> = report
        .per_landmark_px
        .iter()
        .enumerate()
        .map(|(j, e)| {
            let name = names.map(|n| n[j].clone()).unwrap_or_else(|| j.to_string());
            match e {
                Some(e) => format!("{name} {e:.2}"),
                None => format!("{name} -"),
            }
        })
        .collect();
    println!("  mean L2 per landmark (px): {}", per.join(", "));
}
