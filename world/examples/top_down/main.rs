//! The figures of top-down keypoints on multi-figure clips (docs/people.md): per-person
//! joint error in the clip and alone, keypoints nearer another figure's skeleton, the same
//! with the model's own part embeddings and with the other figures' pixels hidden (what the
//! model's maps allow), and the engine's frames/s with 1, 2 and 4 people, for the committed
//! teacher and student.
//!
//! `cargo run --release -p skp-world --example top_down [-- FRAMES]`

mod measure;

use measure::{measure, Setup};
use skp_world::people::People;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::pose::PoseModel;
use stablekeypoints::student::Student;
use stablekeypoints::{DetectOptions, Detector, FrameRef, Model, PixelFormat, Region, Tokens};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .map_or(60, |a| a.parse().expect("FRAMES"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/figure");
    let model = Arc::new(
        Model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).expect("model"),
    );
    let tokens = Tokens::load(&dir.join("tokens.safetensors")).expect("tokens");
    let reg = PoseModel::load(&dir.join("pose.json"))
        .unwrap()
        .regressor()
        .unwrap();
    let teacher = || {
        Estimator::teacher(Detector::new(model.clone(), &tokens, DetectOptions::default()).unwrap())
    };
    let student = || {
        Estimator::Student(Box::new(
            Student::load(&dir.join("student.safetensors"), &candle_core::Device::Cpu).unwrap(),
        ))
    };
    println!("cpu: {}", cpu_name());
    let estimators: [(&str, &dyn Fn() -> Estimator); 2] =
        [("teacher", &teacher), ("student", &student)];
    accuracy(&estimators, &reg, frames);
    ceiling(&model, &dir, frames);
    speed(&estimators);
}

/// What the model's maps allow: the keypoints assigned to another figure with the learned
/// tokens and with the model's own part embeddings (the ideal tokens), in the clip as it
/// is and with the other figures' pixels hidden (a perfect instance mask); true boxes.
fn ceiling(model: &Arc<Model>, dir: &std::path::Path, frames: usize) {
    println!();
    println!("| tokens | pixels | figures | person | assigned to another |");
    println!("|---|---|---|---|---|");
    for file in ["tokens.safetensors", "part-tokens.safetensors"] {
        let tokens = Tokens::load(&dir.join(file)).expect("tokens");
        for hide_others in [false, true] {
            for figures in [2, 3] {
                let s = Setup {
                    hide_others,
                    ..Setup::clip(figures, frames)
                };
                let mut est = Estimator::teacher(
                    Detector::new(model.clone(), &tokens, DetectOptions::default()).unwrap(),
                );
                for p in &measure(&mut est, None, &s, 16).people {
                    println!(
                        "| {file} | {} | {figures} | {} | {} of {} ({:.1}%) |",
                        if hide_others { "others hidden" } else { "clip" },
                        p.id,
                        p.misassigned,
                        p.keypoints,
                        100.0 * (1.0 - p.own_share()),
                    );
                }
            }
        }
    }
}

type Named<'a> = (&'a str, &'a dyn Fn() -> Estimator);

/// Per-person assignment and joint error on clips of 2 and 3 figures.
fn accuracy(estimators: &[Named], reg: &stablekeypoints::pose::Regressor, frames: usize) {
    println!("| estimator | figures | boxes | margin | overlap | person | frames | assigned to another | nearer another's skeleton: clip / alone | error px | alone px | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &(name, make) in estimators {
        for figures in [2, 3] {
            for jitter in [0.0, 0.1] {
                let s = Setup {
                    jitter,
                    margin: std::env::var("SKP_MARGIN").map_or(0.15, |m| m.parse().unwrap()),
                    ..Setup::clip(figures, frames)
                };
                let scores = measure(&mut make(), Some(reg), &s, 16);
                for p in &scores.people {
                    println!(
                        "| {name} | {figures} | {} | {} | {:.0}% | {} | {} | {} of {} ({:.1}%) | {} / {} | {:.2} | {:.2} | {:.2} |",
                        if jitter > 0.0 { "jittered 10%" } else { "true" },
                        s.margin,
                        100.0 * scores.overlapping,
                        p.id,
                        p.frames,
                        p.misassigned,
                        p.keypoints,
                        100.0 * (1.0 - p.own_share()),
                        p.nearer_another,
                        p.nearer_another_alone,
                        p.error,
                        p.error_alone,
                        p.error / p.error_alone,
                    );
                }
            }
        }
    }
}

/// Frames/s of the engine (crop, inference, batch of a frame's people), 1080p frames.
fn speed(estimators: &[Named]) {
    println!();
    println!("| estimator | people | frames/s | crops/s |");
    println!("|---|---|---|---|");
    let clip = People::new(1, 4, 60, 15.0, 1920, 1080);
    let frame = clip.render(30, None);
    let f = FrameRef::packed(PixelFormat::Rgb, 1920, 1080, &frame.rgb, 1920 * 3).unwrap();
    let boxes: Vec<Region> = frame
        .people
        .iter()
        .filter_map(|p| p.bbox)
        .map(|b| {
            Region {
                x: b[0] as f64,
                y: b[1] as f64,
                w: (b[2] - b[0]) as f64,
                h: (b[3] - b[1]) as f64,
            }
            .grown(0.15)
        })
        .collect();
    for &(name, make) in estimators {
        let runs = if name == "teacher" { 6 } else { 100 };
        for n in [1usize, 2, 4] {
            let mut est = make();
            let items: Vec<(usize, Region)> = (0..n).map(|i| (0, boxes[i % boxes.len()])).collect();
            let keys: Vec<u64> = (0..n as u64).collect();
            stablekeypoints::Item::regions(&[f], &items, &keys)
                .and_then(|i| est.detect(i))
                .unwrap();
            let t = Instant::now();
            for _ in 0..runs {
                stablekeypoints::Item::regions(&[f], &items, &keys)
                    .and_then(|i| est.detect(i))
                    .unwrap();
            }
            let fps = runs as f64 / t.elapsed().as_secs_f64();
            println!("| {name} | {n} | {fps:.1} | {:.1} |", fps * n as f64);
        }
    }
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
