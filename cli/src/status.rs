//! `corpus-status DIR`: what the tasks of a job array have done, from the records in the
//! output folder (no task needs to be running, and several may be).

use crate::args::CorpusStatusCmd;
use crate::corpus::records::{Done, Manifest};
use crate::corpus::state::{self, State, VideoStatus};
use crate::corpus::{DONE, FAILED, PARTLY_DONE};
use stablekeypoints::Error;
use std::process::ExitCode;

/// Failed videos the text report lists without `--all`.
const SHOW_FAILED: usize = 20;

pub fn cmd_corpus_status(c: CorpusStatusCmd) -> Result<ExitCode, Error> {
    let (manifest, videos) = state::status(&c.dir)?;
    let summary = Summary::of(&videos);
    let merged = match &c.merge {
        Some(out) => Some(state::merge_lines(&c.dir, &videos, out)?),
        None => None,
    };
    if c.json {
        print_json(&c, &manifest, &videos, &summary, merged);
    } else {
        print_text(&c, &manifest, &videos, &summary, merged);
    }
    if summary.done == videos.len() {
        Ok(ExitCode::SUCCESS)
    } else {
        if !c.json {
            eprintln!(
                "not complete: {} of {} videos have no current {DONE}",
                videos.len() - summary.done,
                videos.len()
            );
        }
        Ok(ExitCode::from(PARTLY_DONE))
    }
}

/// The videos by state, and the frames and times of the done ones.
struct Summary<'a> {
    done: usize,
    failed: usize,
    running: usize,
    stale: usize,
    missing: usize,
    /// The done videos' records.
    records: Vec<&'a Done>,
    frames: u64,
    /// Seconds of processing, summed over the done videos.
    busy: f64,
    /// Seconds from the first start to the last finish.
    wall: f64,
    per_worker: Option<f64>,
    per_hour: Option<f64>,
    /// Input, attempts and error of each failed video.
    failures: Vec<(&'a str, u32, &'a str)>,
}

impl<'a> Summary<'a> {
    fn of(videos: &'a [VideoStatus]) -> Self {
        let count = |f: fn(&State) -> bool| videos.iter().filter(|v| f(&v.state)).count();
        let done = count(|s| matches!(s, State::Done(_)));
        let records: Vec<&Done> = videos
            .iter()
            .filter_map(|v| match &v.state {
                State::Done(d) => Some(d.as_ref()),
                _ => None,
            })
            .collect();
        let frames: u64 = records.iter().map(|d| d.frames).sum();
        let busy: f64 = records.iter().map(|d| d.seconds).sum();
        let first = records
            .iter()
            .map(|d| d.started)
            .fold(f64::INFINITY, f64::min);
        let last = records.iter().map(|d| d.finished).fold(0.0, f64::max);
        let wall = if records.is_empty() {
            0.0
        } else {
            last - first
        };
        Summary {
            done,
            failed: count(|s| matches!(s, State::Failed(_))),
            running: count(|s| matches!(s, State::Running)),
            stale: count(|s| matches!(s, State::Stale)),
            missing: count(|s| matches!(s, State::Missing)),
            records,
            frames,
            busy,
            wall,
            per_worker: (busy > 0.0).then(|| frames as f64 / busy),
            per_hour: (wall > 0.0).then(|| done as f64 * 3600.0 / wall),
            failures: videos
                .iter()
                .filter_map(|v| match &v.state {
                    State::Failed(f) => {
                        Some((v.video.input.as_str(), f.attempts, f.error.as_str()))
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

fn print_json(
    c: &CorpusStatusCmd,
    manifest: &Manifest,
    videos: &[VideoStatus],
    s: &Summary,
    merged: Option<(usize, u64)>,
) {
    let report = serde_json::json!({
        "dir": c.dir.to_string_lossy(),
        "inputs": manifest.inputs,
        "videos": videos.len(),
        "done": s.done,
        "failed": s.failed,
        "running": s.running,
        "stale": s.stale,
        "missing": s.missing,
        "frames": s.frames,
        "processing_seconds": s.busy,
        "wall_seconds": s.wall,
        "frames_per_second_per_worker": s.per_worker,
        "videos_per_hour": s.per_hour,
        "failures": s.failures.iter().map(|(i, a, e)| {
            serde_json::json!({"input": i, "attempts": a, "error": e})
        }).collect::<Vec<_>>(),
        "merged": merged.map(|(v, l)| serde_json::json!({
            "file": c.merge.as_ref().map(|p| p.to_string_lossy().into_owned()),
            "videos": v,
            "lines": l,
        })),
    });
    println!("{report}");
}

fn print_text(
    c: &CorpusStatusCmd,
    manifest: &Manifest,
    videos: &[VideoStatus],
    s: &Summary,
    merged: Option<(usize, u64)>,
) {
    println!(
        "corpus {} (--inputs {}): {} videos",
        c.dir.display(),
        manifest.inputs,
        videos.len()
    );
    let Summary {
        done,
        failed,
        running,
        stale,
        missing,
        frames,
        busy,
        wall,
        ..
    } = s;
    println!("  done     {done:>7}  ({frames} frames)");
    println!("  failed   {failed:>7}");
    println!("  running  {running:>7}");
    println!("  to redo  {stale:>7}  (done with other settings or inputs)");
    println!("  missing  {missing:>7}");
    if !s.records.is_empty() {
        let rate = s
            .per_worker
            .map_or(String::new(), |r| format!(" ({r:.1} frames/s per worker)"));
        let hourly = s
            .per_hour
            .map_or(String::new(), |r| format!(": {r:.0} videos/hour"));
        println!(
            "time: {busy:.1} s of video processing{rate}; {wall:.1} s from the first start \
             to the last finish{hourly}"
        );
    }
    if !s.failures.is_empty() {
        println!("failed (each folder's {FAILED}):");
        let show = if c.all { s.failures.len() } else { SHOW_FAILED };
        for (input, attempts, error) in s.failures.iter().take(show) {
            println!("  {input} ({attempts} attempts): {error}");
        }
        if s.failures.len() > show {
            println!(
                "  ... and {} more (--all lists them)",
                s.failures.len() - show
            );
        }
    }
    if let (Some((v, l)), Some(out)) = (merged, &c.merge) {
        println!("merged {l} lines of {v} videos into {}", out.display());
    }
}
