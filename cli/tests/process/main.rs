//! Videos, one module per subject: `train --input VIDEO` and `process` on synthetic clips
//! made with gst-launch-1.0 (videotestsrc pattern=ball, 30 frames; H.264 in MP4 as I420,
//! Y444 and 10-bit, raw GRAY8 in Matroska), with tiny training settings so that everything
//! runs in seconds; progress lines without a terminal; and their error messages.
//!
//! The CLI decodes in process (GStreamer linked, the element registered statically): the
//! tests only need gst-launch-1.0 with x264enc to make the clips (GStreamer's tools and
//! -ugly plugins). They say so and return early when it is truly absent (CI must not skip).
//!
//! `corpus`: corpora as the shards of a job array; `workflow`: a user's workflow from
//! labelling a corpus to an exported student.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../common/mod.rs"]
mod common;
use common::clips::clip_at_times;
use common::*;

const FRAMES: usize = 30;

mod boxes;
mod corpus;
mod faults;
mod frames;
mod video;
mod workflow;

fn gst(args: &[&str]) -> Option<Output> {
    Command::new("gst-launch-1.0").args(args).output().ok()
}

/// The synthetic clip, or None (with a message) when GStreamer cannot make it.
fn make_clip(dir: &Path) -> Option<PathBuf> {
    make_clip_as(dir, "ball.mp4", "I420", &["x264enc", "!", "mp4mux"])
}

/// A clip whose frames are `format` before `encode` (elements, `!`-separated).
fn make_clip_as(dir: &Path, name: &str, format: &str, encode: &[&str]) -> Option<PathBuf> {
    let clip = dir.join(name);
    let loc = format!("location={}", clip.display());
    let num = format!("num-buffers={FRAMES}");
    let caps = format!("video/x-raw,format={format}");
    let mut args = vec![
        "-q",
        "videotestsrc",
        "pattern=ball",
        &num,
        "!",
        "video/x-raw,width=96,height=72,framerate=30/1",
        "!",
        "videoconvert",
        "!",
        &caps,
        "!",
    ];
    args.extend_from_slice(encode);
    args.extend(["!", "filesink", &loc]);
    let out = gst(&args);
    match out {
        Some(o) if o.status.success() => Some(clip),
        Some(o) => {
            let msg = format!(
                "gst-launch-1.0 cannot encode the test clip (x264enc missing?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "gst-launch-1.0 is not installed"
            );
            eprintln!("SKIPPED: gst-launch-1.0 is not installed");
            None
        }
    }
}

/// Tiny training settings: a few steps on small maps.
const TINY_TRAIN: [&str; 14] = [
    "--steps",
    "3",
    "--batch-size",
    "1",
    "--num-tokens",
    "16",
    "--num-candidates",
    "8",
    "--num-keypoints",
    "4",
    "--num-indices",
    "4",
    "--map-res",
    "16",
];

/// Frames of a video, counted by decoding it.
fn decoded_frames(path: &Path) -> usize {
    let loc = format!("location={}", path.display());
    let out = gst(&[
        "-v",
        "filesrc",
        &loc,
        "!",
        "decodebin",
        "!",
        "fakesink",
        "name=count",
        "silent=false",
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{} does not decode: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("count: last-message = chain"))
        .count()
}

fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{err}");
    for n in needles {
        assert!(last.contains(n), "error {last:?} does not mention {n:?}");
    }
}

/// The files of `dir` and their bytes; the run's lock file (`.lock`, which names the last
/// run that held the folder) is not an output.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != ".lock")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `process --model MODEL --input INPUT --out-dir OUT_DIR`, for more flags.
fn process_cmd(
    model: impl AsRef<OsStr>,
    input: impl AsRef<OsStr>,
    out_dir: impl AsRef<OsStr>,
) -> Command {
    let mut c = bin();
    c.args(["process", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out-dir")
        .arg(out_dir);
    c
}

/// `train --input INPUT --out OUT` on the tiny model with the fast settings, for more flags.
fn train_cmd(input: impl AsRef<OsStr>, out: impl AsRef<OsStr>) -> Command {
    let mut c = bin();
    c.args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(TINY_TRAIN);
    c
}

/// The caps of the first frame decodebin gives for `path`, read in process:
/// `gst-launch-1.0 -v` can reach EOS before it prints the sink's caps on a loaded machine.
fn first_decoded_caps(path: &Path) -> gst::Caps {
    use gst::prelude::*;
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample();
    pipeline.set_state(gst::State::Null).unwrap();
    let sample = sample.unwrap_or_else(|e| panic!("no decoded frame in {}: {e}", path.display()));
    sample.caps().expect("a decoded sample has caps").to_owned()
}

/// A first `process` run of `clip` into `result` with the tiny model and its tokens, which
/// must succeed: the earlier outputs that a later run is checked against.
fn first_run(clip: &Path, result: &Path) -> Vec<(String, Vec<u8>)> {
    let out = process_with_tokens(clip, result, &tiny_dir(), &tiny_tokens());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    snapshot(result)
}

fn process_with_tokens(clip: &Path, out_dir: &Path, model: &Path, tokens: &Path) -> Output {
    process_cmd(model, clip, out_dir)
        .arg("--tokens")
        .arg(tokens)
        .output()
        .unwrap()
}

/// Runs `cmd` to its end, or kills it after `secs` seconds and fails: the cases below used
/// to wait forever.
fn output_within(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = pipes.1.read_to_end(&mut err);
        let _ = pipes.0.read_to_end(&mut out);
        (out, err)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (_, err) = readers.join().unwrap();
            panic!(
                "{cmd:?} still running after {secs} s: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (stdout, stderr) = readers.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}
