//! Corpora (issue 16): `process --inputs` as the shards of a job array, resumable and
//! recording failures; `corpus-status`; `train --inputs`; the cluster examples run as they
//! are. Short clips (64x48, a few frames) are made with gst-launch-1.0 (videotestsrc, x264enc)
//! and the tiny test model keeps each video well under a second.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, *};

mod cluster;
mod failures;
mod outputs;
mod shards;

const PATTERNS: [&str; 8] = [
    "ball",
    "smpte",
    "pinwheel",
    "spokes",
    "gradient",
    "checkers-8",
    "circular",
    "zone-plate",
];

/// A clip of `frames` frames of `pattern` at `path`; false (with a message) when GStreamer
/// cannot make it outside CI.
fn make_clip(path: &Path, pattern: &str, frames: usize) -> bool {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc"])
        .arg(format!("pattern={pattern}"))
        .arg(format!("num-buffers={frames}"))
        .args([
            "!",
            "video/x-raw,width=64,height=48,framerate=30/1",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=I420",
            "!",
            "x264enc",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", path.display()))
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        other => {
            let msg = format!("gst-launch-1.0 cannot make the test clips: {other:?}");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            false
        }
    }
}

/// `n` clips `clip0.mp4` ... in `dir` (patterns in turn), `frames` each.
fn make_corpus(dir: &Path, n: usize, frames: usize) -> Option<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("clip{i}.mp4"));
            make_clip(&p, PATTERNS[i % PATTERNS.len()], frames).then_some(p)
        })
        .collect()
}

/// `process --inputs INPUTS --out-dir OUT` with the tiny model and its tokens.
fn corpus_cmd(inputs: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--tokens")
        .arg(tiny_tokens())
        .arg("--inputs")
        .arg(inputs)
        .arg("--out-dir")
        .arg(out);
    // The tests choose their shards; the CI runner may be a task of an array itself.
    for v in [
        "JOB_COMPLETION_INDEX",
        "SKP_SHARD_COUNT",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// (key, folder name) of every video of `out/corpus.json`, in list order.
fn manifest(out: &Path) -> Vec<(String, String)> {
    json(&out.join("corpus.json"))["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["input"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file under `dir` (relative path -> bytes), the folder locks aside.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != ".lock" {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// Lines of a process's log that say `verb KEY` (`done`, `skipped`, `FAILED`).
fn logged(err: &str, verb: &str) -> Vec<String> {
    err.lines()
        .filter_map(|l| {
            let rest = l.split_once("] ")?.1;
            let rest = rest.strip_prefix(verb)?.strip_prefix(' ')?;
            let end = [": ", " ("].iter().filter_map(|sep| rest.find(sep)).min()?;
            Some(rest[..end].to_string())
        })
        .collect()
}
