//! `eval`: fit the keypoints -> landmarks regressor on labelled training images and score it
//! on the test images (glue over `stablekeypoints::eval`).

use crate::args::{device_from_str, Args, USAGE};
use stablekeypoints::eval::{self, LabelSet, Metric, PoseModel};
use stablekeypoints::{Detector, Error, Model, Tokens};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn parse_index_pair(s: &str, sep: char, flag: &str) -> Result<(usize, usize), Error> {
    let bad = || {
        Error::Invalid(format!(
            "--{flag}: cannot read {s:?} as two landmark indices A{sep}B"
        ))
    };
    let (a, b) = s.split_once(sep).ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn metric_from_args(a: &Args) -> Result<Metric, Error> {
    let name = a.required("metric")?;
    Ok(match name {
        "taichi" => Metric::TaiChi,
        "inter-ocular" => {
            let (left, right) = parse_index_pair(a.get("eyes").unwrap_or("0,1"), ',', "eyes")?;
            Metric::InterOcular { left, right }
        }
        "visible" => Metric::Visible,
        "pck" => Metric::Pck {
            px: a.parse_opt("pck-px")?.unwrap_or(6.0),
        },
        "orientation-invariant" => {
            let pairs = a
                .get("flip-pairs")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|p| parse_index_pair(p, ':', "flip-pairs"))
                .collect::<Result<Vec<_>, _>>()?;
            Metric::OrientationInvariant { pairs }
        }
        o => {
            return Err(Error::Invalid(format!(
                "--metric: unknown metric {o:?} (taichi, inter-ocular, visible, pck, \
                 orientation-invariant)"
            )))
        }
    })
}

pub fn cmd_eval(a: Args) -> Result<(), Error> {
    if !a.positional.is_empty() {
        return Err(Error::Invalid(format!(
            "unexpected argument {:?}\n\n{USAGE}",
            a.positional[0]
        )));
    }
    let model_dir = PathBuf::from(a.required("model")?);
    let tokens_path = PathBuf::from(a.required("tokens")?);
    let metric = metric_from_args(&a)?;
    let opts = crate::args::detect_options(&a)?;
    // Everything cheap is checked before minutes of detection.
    let train = LabelSet::load(Path::new(a.required("train")?))?;
    let test = LabelSet::load(Path::new(a.required("test")?))?;
    if train.num_landmarks != test.num_landmarks {
        return Err(Error::Invalid(format!(
            "{} has {} landmarks but {} has {}",
            train.path.display(),
            train.num_landmarks,
            test.path.display(),
            test.num_landmarks
        )));
    }
    let l = train.num_landmarks;
    metric.validate(l)?;
    let names = a
        .get("names")
        .map(|p| eval::read_names(Path::new(p)))
        .transpose()?;
    if let Some(n) = &names {
        if n.len() != l {
            return Err(Error::Invalid(format!(
                "{}: {} names, but the labels have {l} landmarks",
                a.get("names").unwrap_or_default(),
                n.len()
            )));
        }
    }
    let skeleton = a
        .get("skeleton")
        .map(|p| eval::read_skeleton(Path::new(p), names.as_deref().unwrap_or(&[])))
        .transpose()?
        .unwrap_or_default();
    let save = a.get("save-regressor").map(PathBuf::from);
    if save.is_some() && a.has("skeleton") {
        if let Some(p) = skeleton.iter().find(|p| p[0] >= l || p[1] >= l) {
            return Err(Error::Invalid(format!(
                "{}: pair {} {} names a landmark beyond the {l} labelled ones",
                a.get("skeleton").unwrap_or_default(),
                p[0],
                p[1]
            )));
        }
    }

    let (device, dtype) = device_from_str(a.get("device").unwrap_or("cpu"))?;
    let tokens = Tokens::load(&tokens_path)?;
    let model = Arc::new(Model::load(&model_dir, &device, dtype)?);
    let mut det = Detector::new(model, &tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.clone(),
            msg: m,
        },
        e => e,
    })?;
    let tty = std::io::stderr().is_terminal();
    let mut detect = |set: &LabelSet, what: &str| {
        let mut err = std::io::stderr();
        eval::detect_set(&mut det, set, &mut |done, total| {
            if tty {
                let _ = write!(err, "\r\x1b[2Kdetecting {what} {done}/{total}");
                if done == total {
                    let _ = writeln!(err);
                }
            } else if done == total || done % 50 == 0 {
                let _ = writeln!(err, "detecting {what} {done}/{total}");
            }
        })
    };
    let train_samples = detect(&train, "train")?;
    let test_samples = detect(&test, "test")?;
    let reg = eval::fit(&train_samples)?;
    let report = eval::evaluate(&reg, &test_samples, &metric)?;

    if let Some(path) = &save {
        let pose = PoseModel::new(&reg, tokens.indices.clone(), names.clone(), skeleton)?;
        pose.save(path)?;
        eprintln!("wrote {}", path.display());
    }
    if a.has("json") {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| Error::Invalid(format!("cannot serialise the report: {e}")))?;
        v["train_images"] = train_samples.len().into();
        println!("{v}");
    } else {
        println!("{}: {:.4}", report.metric, report.value);
        println!("  ({})", report.unit);
        println!(
            "  fitted on {} training images; {} test images, {} scored; {} keypoints -> {} landmarks",
            train_samples.len(),
            report.test_images,
            report.scored_images,
            report.keypoints,
            report.landmarks
        );
        let per: Vec<String> = report
            .per_landmark_px
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let name = names
                    .as_ref()
                    .map(|n| n[j].clone())
                    .unwrap_or_else(|| j.to_string());
                match e {
                    Some(e) => format!("{name} {e:.2}"),
                    None => format!("{name} -"),
                }
            })
            .collect();
        println!("  mean L2 per landmark (px): {}", per.join(", "));
    }
    Ok(())
}
