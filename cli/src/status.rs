//! `corpus-status DIR`: what the tasks of a job array have done, from the records in the
//! output folder (no task needs to be running, and several may be).

use crate::args::CorpusStatusCmd;
use crate::corpus::records::Done;
use crate::corpus::state::{self, State};
use crate::corpus::{DONE, FAILED, PARTLY_DONE};
use stablekeypoints::Error;
use std::process::ExitCode;

/// Failed videos the text report lists without `--all`.
const SHOW_FAILED: usize = 20;

pub fn cmd_corpus_status(c: CorpusStatusCmd) -> Result<ExitCode, Error> {
    let (manifest, videos) = state::status(&c.dir)?;
    let count = |f: fn(&State) -> bool| videos.iter().filter(|v| f(&v.state)).count();
    let done = count(|s| matches!(s, State::Done(_)));
    let failed = count(|s| matches!(s, State::Failed(_)));
    let running = count(|s| matches!(s, State::Running));
    let stale = count(|s| matches!(s, State::Stale));
    let missing = count(|s| matches!(s, State::Missing));
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
    let per_worker = (busy > 0.0).then(|| frames as f64 / busy);
    let per_hour = (wall > 0.0).then(|| done as f64 * 3600.0 / wall);
    let merged = match &c.merge {
        Some(out) => Some(state::merge_lines(&c.dir, &videos, out)?),
        None => None,
    };
    let failures: Vec<(&str, u32, &str)> = videos
        .iter()
        .filter_map(|v| match &v.state {
            State::Failed(f) => Some((v.video.input.as_str(), f.attempts, f.error.as_str())),
            _ => None,
        })
        .collect();
    if c.json {
        let report = serde_json::json!({
            "dir": c.dir.to_string_lossy(),
            "inputs": manifest.inputs,
            "videos": videos.len(),
            "done": done,
            "failed": failed,
            "running": running,
            "stale": stale,
            "missing": missing,
            "frames": frames,
            "processing_seconds": busy,
            "wall_seconds": wall,
            "frames_per_second_per_worker": per_worker,
            "videos_per_hour": per_hour,
            "failures": failures.iter().map(|(i, a, e)| {
                serde_json::json!({"input": i, "attempts": a, "error": e})
            }).collect::<Vec<_>>(),
            "merged": merged.map(|(v, l)| serde_json::json!({
                "file": c.merge.as_ref().map(|p| p.to_string_lossy().into_owned()),
                "videos": v,
                "lines": l,
            })),
        });
        println!("{report}");
    } else {
        println!(
            "corpus {} (--inputs {}): {} videos",
            c.dir.display(),
            manifest.inputs,
            videos.len()
        );
        println!("  done     {done:>7}  ({frames} frames)");
        println!("  failed   {failed:>7}");
        println!("  running  {running:>7}");
        println!("  to redo  {stale:>7}  (done with other settings or inputs)");
        println!("  missing  {missing:>7}");
        if !records.is_empty() {
            let rate =
                per_worker.map_or(String::new(), |r| format!(" ({r:.1} frames/s per worker)"));
            let hourly = per_hour.map_or(String::new(), |r| format!(": {r:.0} videos/hour"));
            println!(
                "time: {busy:.1} s of video processing{rate}; {wall:.1} s from the first start \
                 to the last finish{hourly}"
            );
        }
        if !failures.is_empty() {
            println!("failed (each folder's {FAILED}):");
            let show = if c.all { failures.len() } else { SHOW_FAILED };
            for (input, attempts, error) in failures.iter().take(show) {
                println!("  {input} ({attempts} attempts): {error}");
            }
            if failures.len() > show {
                println!(
                    "  ... and {} more (--all lists them)",
                    failures.len() - show
                );
            }
        }
        if let (Some((v, l)), Some(out)) = (merged, &c.merge) {
            println!("merged {l} lines of {v} videos into {}", out.display());
        }
    }
    if done == videos.len() {
        Ok(ExitCode::SUCCESS)
    } else {
        if !c.json {
            eprintln!(
                "not complete: {} of {} videos have no current {DONE}",
                videos.len() - done,
                videos.len()
            );
        }
        Ok(ExitCode::from(PARTLY_DONE))
    }
}
