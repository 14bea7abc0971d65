//! The `stablekeypoints` binary on images, one module per subject: `detect` end to end and
//! its parity with the diffusers golden, one-line errors for bad inputs, model files in every
//! form, the command line itself (`args`), `eval`, the reference's settings (`fidelity`),
//! `distill` and the student, and `train`. Videos and corpora: the `process` test binary.

use candle_core::{Device, IndexOp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../common/mod.rs"]
mod common;
use common::*;

#[cfg(feature = "video")]
mod args;
mod detect;
mod errors;
mod eval;
mod fidelity;
mod model_files;
mod student;
mod train;

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run stablekeypoints")
}

/// Exit code != 0, exactly one line on stderr mentioning every `needles`, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
}

fn detect(model: &Path, tokens: &Path, extra: &[&str], images: &[&Path]) -> Output {
    let mut c = bin();
    c.arg("detect")
        .arg("--model")
        .arg(model)
        .arg("--tokens")
        .arg(tokens)
        .args(extra);
    for i in images {
        c.arg(i);
    }
    run(&mut c)
}

fn records(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Tiny models whose architecture a single file implies (32 groups; SD 1.x: 8 heads and
/// convolution projections, SD 2.x: heads of width 64 and linear projections), written by
/// `init-model`'s generator as diffusers folders.
fn single_file_archs(d: &Path) -> Vec<PathBuf> {
    use stablekeypoints::init::{init_model_from, unet_config_json, vae_config_json, TinyArch};
    let mut vae = vae_config_json(TinyArch::TinySd1);
    vae["block_out_channels"] = serde_json::json!([32, 32, 64, 64]);
    vae["norm_num_groups"] = 32.into();
    let mut sd1 = unet_config_json(TinyArch::TinySd1);
    sd1["norm_num_groups"] = 32.into();
    sd1["attention_head_dim"] = 8.into();
    let mut sd2 = unet_config_json(TinyArch::TinySd2);
    sd2["norm_num_groups"] = 32.into();
    sd2["block_out_channels"] = serde_json::json!([64, 64, 128, 128]);
    sd2["attention_head_dim"] = serde_json::json!([1, 1, 2, 2]);
    [("sd1-like", sd1), ("sd2-like", sd2)]
        .into_iter()
        .map(|(name, unet)| {
            let dir = d.join(name);
            init_model_from(&dir, &unet, &vae, 3, (8, 4), (128, 64), name).unwrap();
            dir
        })
        .collect()
}
