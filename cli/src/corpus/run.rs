//! `process --inputs`: a corpus of videos, run as one task of a cluster job array. The work
//! list and the records are the sibling modules'; this module runs this shard's videos
//! through [`pipeline::run_video`] on `--workers` threads sharing one loaded model, skips
//! what a `done.json` covers, and records each failure in `failed.json` instead of stopping.
//!
//! Per video, under its folder's lock: stale temporaries of a killed run are removed, the
//! outputs are staged and renamed into place, then `done.json` is written and `failed.json`
//! removed. A kill at any point leaves either the previous state or the complete outputs,
//! and a rerun redoes only the video that was not done.

use super::lock::{lock_folder, FolderLock};
use super::records::{
    self, read_record, remove_temporaries, unix_now, write_record, Done, Failed, InputStamp,
    Manifest, OutputFile, DONE_SCHEMA, FAILED_SCHEMA,
};
use super::shard::choose_shard;
use super::source::{work_list, Video};
use super::{DONE, FAILED, MANIFEST, PARTLY_DONE};
use crate::args::ProcessCmd;
use crate::interrupt;
use crate::pipeline::{self, check_model_and_tokens, register_element, ElementJob, VideoDone};
use stablekeypoints::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What happened to one video in this run.
enum Outcome {
    /// Processed now.
    Done {
        frames: u64,
        seconds: f64,
    },
    /// Its `done.json` covers it.
    Skipped,
    Failed {
        error: String,
        attempt: u32,
    },
    /// Failed `--max-attempts` times with these inputs and settings: not tried again.
    GaveUp {
        error: String,
        attempts: u32,
    },
    /// Stopped by SIGINT/SIGTERM; nothing recorded.
    Interrupted,
}

/// What every worker shares.
struct Run<'a> {
    out_dir: &'a Path,
    job: ElementJob<'a>,
    settings: serde_json::Value,
    max_attempts: u32,
    shard: String,
    host: String,
    no_locks_warned: AtomicBool,
}

pub fn cmd_process_corpus(c: &ProcessCmd, inputs: &Path) -> Result<ExitCode, Error> {
    let student = stablekeypoints::estimator::Estimator::is_student(&c.model);
    let tokens = match c.tokens.as_deref() {
        Some(t) => t,
        None if student => Path::new(""),
        None => {
            return Err(Error::Invalid(
                "--inputs needs --tokens (a corpus is processed with given tokens, or with a \
                 student file as --model)"
                    .into(),
            ))
        }
    };
    let out_dir = &c.out_dir;
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--out-dir {}: is a file, not a folder",
            out_dir.display()
        )));
    }
    let list = work_list(inputs, Some(out_dir))?;
    let choice = choose_shard(c.corpus.shard, c.corpus.shard_count, |k| {
        std::env::var(k).ok()
    })?;
    // One model for every pipeline of the run: the elements share the one held here.
    let _model = if student {
        crate::pipeline::check_student(c)?;
        None
    } else {
        Some(check_model_and_tokens(c, tokens)?)
    };
    register_element()?;
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::Invalid(format!(
            "--out-dir {}: cannot create it: {e}",
            out_dir.display()
        ))
    })?;
    let hashing = Instant::now();
    let settings = settings(c, tokens)?;
    let hashed = hashing.elapsed().as_secs_f64();
    write_manifest(out_dir, &Manifest::new(inputs, settings.clone(), &list))?;
    let mine = choice.shard.select(&list);
    let workers = c.corpus.workers.min(mine.len()).max(1);
    eprintln!(
        "shard {} ({}): {} of the {} videos of {}, {workers} at a time, into {} \
         (model and tokens hashed in {hashed:.1} s)",
        choice.shard,
        choice.from,
        mine.len(),
        list.len(),
        inputs.display(),
        out_dir.display()
    );
    let run = Run {
        out_dir,
        job: ElementJob::new(c, tokens),
        settings,
        max_attempts: c.corpus.max_attempts as u32,
        shard: choice.shard.to_string(),
        host: records::host_name(),
        no_locks_warned: AtomicBool::new(false),
    };
    let armed = interrupt::Armed::new();
    let start = Instant::now();
    let outcomes = run_workers(&run, &mine, workers);
    drop(armed);
    summarize(&run, &outcomes, mine.len(), start.elapsed().as_secs_f64())
}

/// Runs `mine` on `workers` threads, each taking the next video until none is left or a
/// signal came.
fn run_workers(run: &Run, mine: &[(usize, &Video)], workers: usize) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= mine.len() || interrupt::received().is_some() {
                    break;
                }
                let video = mine[i].1;
                let outcome = process_one(run, video);
                let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                log(run, video, &outcome, n, mine.len());
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(outcome);
            });
        }
    });
    outcomes.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The shard's summary line, then the exit status: an error when interrupted,
/// [`PARTLY_DONE`] when some videos failed.
fn summarize(run: &Run, outcomes: &[Outcome], total: usize, wall: f64) -> Result<ExitCode, Error> {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let done_now = count(|o| matches!(o, Outcome::Done { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    let gave_up = count(|o| matches!(o, Outcome::GaveUp { .. }));
    let frames: u64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Done { frames, .. } => *frames,
            _ => 0,
        })
        .sum();
    let busy: f64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Done { seconds, .. } => *seconds,
            _ => 0.0,
        })
        .sum();
    let rate = if done_now > 0 && wall > 0.0 {
        format!(
            " ({:.1} frames/s per worker, {:.0} videos/hour)",
            frames as f64 / busy.max(1e-9),
            done_now as f64 * 3600.0 / wall
        )
    } else {
        String::new()
    };
    eprintln!(
        "shard {}: {}: {done_now} done now, {skipped} done before, {failed} failed, \
         {gave_up} given up; {frames} frames in {wall:.1} s{rate}",
        run.shard,
        videos(total)
    );
    if let Some(sig) = interrupt::received() {
        return Err(Error::Invalid(format!(
            "interrupted by {}: {} of the shard's {} videos were not finished (their outputs \
             are as before); rerun to continue",
            interrupt::name(sig),
            total - done_now - skipped,
            total
        )));
    }
    if failed + gave_up > 0 {
        eprintln!(
            "not complete: {} failed (each folder's {FAILED} has the error); a rerun retries \
             a video up to --max-attempts {} in all",
            videos(failed + gave_up),
            run.max_attempts
        );
        return Ok(ExitCode::from(PARTLY_DONE));
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 video`, `3 videos`.
pub fn videos(n: usize) -> String {
    format!("{n} video{}", if n == 1 { "" } else { "s" })
}

fn log(run: &Run, video: &Video, outcome: &Outcome, n: usize, total: usize) {
    let what = match outcome {
        Outcome::Done { frames, seconds } => format!(
            "done {}: {frames} frames in {seconds:.1} s ({:.1} frames/s)",
            video.key,
            *frames as f64 / seconds.max(1e-9)
        ),
        Outcome::Skipped => format!("skipped {}: done before ({DONE})", video.key),
        Outcome::Failed { error, attempt: 0 } => format!("FAILED {}: {error}", video.key),
        Outcome::Failed { error, attempt } => format!(
            "FAILED {} (attempt {attempt} of {}): {error}",
            video.key, run.max_attempts
        ),
        Outcome::GaveUp { error, attempts } => format!(
            "gave up on {}: failed {attempts} times (--max-attempts {}): {error}",
            video.key, run.max_attempts
        ),
        Outcome::Interrupted => format!("interrupted {}", video.key),
    };
    eprintln!("[{n}/{total}] {what}");
}

/// One video, under its folder's lock.
fn process_one(run: &Run, video: &Video) -> Outcome {
    let folder = run.out_dir.join(&video.name);
    let failed = |error: String, attempt: u32| Outcome::Failed { error, attempt };
    if let Err(e) = std::fs::create_dir_all(&folder) {
        return failed(format!("{}: cannot create it: {e}", folder.display()), 0);
    }
    let _lock = match lock(run, &folder) {
        Ok(l) => l,
        Err(e) => return failed(e.to_string(), 0),
    };
    // Anything left under a temporary name was a writer that died (we hold the lock).
    remove_temporaries(&folder);
    let stamp = InputStamp::of(&video.source);
    let stamp_or_default = stamp.as_ref().copied().unwrap_or_default();
    let done: Option<Done> = read_record(&folder.join(DONE)).ok().flatten();
    if let Some(d) = &done {
        // An input that cannot be stat'ed (gone, or a remote URI) is taken as unchanged, as
        // corpus-status does.
        let covered = match &stamp {
            Ok(s) => d.covers(s, &run.settings, &folder),
            Err(_) => d.settings == run.settings && d.outputs_present(&folder),
        };
        if covered {
            return Outcome::Skipped;
        }
    }
    let earlier: Option<Failed> = read_record(&folder.join(FAILED)).ok().flatten();
    let prior = earlier
        .as_ref()
        .map_or(0, |f| f.attempts_for(&stamp_or_default, &run.settings));
    if prior >= run.max_attempts {
        return Outcome::GaveUp {
            error: earlier.map(|f| f.error).unwrap_or_default(),
            attempts: prior,
        };
    }
    let attempt = Attempt {
        video,
        folder: &folder,
        stamp: stamp_or_default,
        number: prior + 1,
        started: unix_now(),
    };
    let result = match &stamp {
        Ok(_) => run_video(run, video, &folder),
        Err(e) => Err(Error::Invalid(format!("{}: {e}", video.source.location()))),
    };
    match result {
        Ok((v, outputs)) => attempt.succeeded(run, v, outputs, done),
        Err(_) if interrupt::received().is_some() => Outcome::Interrupted,
        Err(e) => attempt.failed(run, e),
    }
}

/// Locks `folder`; without locks on its file system, says so once and goes on.
fn lock(run: &Run, folder: &Path) -> Result<Option<FolderLock>, Error> {
    let lock = lock_folder(folder)?;
    if lock.is_none() && !run.no_locks_warned.swap(true, Ordering::SeqCst) {
        eprintln!(
            "warning: {}: the file system has no locks; two tasks of the same shard running \
             at once may both process a video",
            run.out_dir.display()
        );
    }
    Ok(lock)
}

/// The video through the pipeline into `folder`, and its outputs' sizes and hashes.
fn run_video(
    run: &Run,
    video: &Video,
    folder: &Path,
) -> Result<(VideoDone, BTreeMap<String, OutputFile>), Error> {
    let input = PathBuf::from(video.source.location());
    let v = pipeline::run_video(&input, folder, &run.job, false)?;
    let mut outputs = BTreeMap::new();
    for p in &v.outputs {
        let name = p
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        outputs.insert(name, output_file(p)?);
    }
    Ok((v, outputs))
}

/// One attempt at a video, to be recorded.
struct Attempt<'a> {
    video: &'a Video,
    folder: &'a Path,
    stamp: InputStamp,
    /// 1 for the first.
    number: u32,
    started: f64,
}

impl Attempt<'_> {
    /// Writes `done.json`, removes `failed.json` and the outputs of `before` that this run
    /// did not write.
    fn succeeded(
        &self,
        run: &Run,
        v: VideoDone,
        outputs: BTreeMap<String, OutputFile>,
        before: Option<Done>,
    ) -> Outcome {
        let (video, folder) = (self.video, self.folder);
        let record = Done {
            schema: DONE_SCHEMA.into(),
            input: video.key.clone(),
            location: video.source.location(),
            stamp: self.stamp,
            settings: run.settings.clone(),
            outputs,
            frames: v.frames,
            gaps: v.gaps,
            seconds: v.seconds,
            started: self.started,
            finished: unix_now(),
            attempt: self.number,
            shard: run.shard.clone(),
            host: run.host.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if let Err(e) = write_record(&folder.join(DONE), &record) {
            return Outcome::Failed {
                error: e.to_string(),
                attempt: self.number,
            };
        }
        let _ = std::fs::remove_file(folder.join(FAILED));
        // Outputs of an earlier run that this one does not write (e.g. the annotated
        // video before --no-annotated) would look current: remove them.
        if let Some(old) = before {
            let now: BTreeSet<&String> = record.outputs.keys().collect();
            for name in old.outputs.keys().filter(|n| !now.contains(n)) {
                let _ = std::fs::remove_file(folder.join(name));
            }
        }
        Outcome::Done {
            frames: v.frames,
            seconds: v.seconds,
        }
    }

    /// Writes `failed.json`.
    fn failed(&self, run: &Run, e: Error) -> Outcome {
        let error = e.to_string();
        let record = Failed {
            schema: FAILED_SCHEMA.into(),
            input: self.video.key.clone(),
            location: self.video.source.location(),
            stamp: self.stamp,
            settings: run.settings.clone(),
            error: error.clone(),
            attempts: self.number,
            last_attempt: unix_now(),
            shard: run.shard.clone(),
            host: run.host.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let error = match write_record(&self.folder.join(FAILED), &record) {
            Ok(()) => error,
            Err(w) => format!("{error} (and {FAILED} could not be written: {w})"),
        };
        Outcome::Failed {
            error,
            attempt: self.number,
        }
    }
}

/// Everything that changes a video's outputs: the hashes of the tokens, the model's UNet and
/// VAE and the pose, and the element's options. A rerun with other settings redoes the video.
fn settings(c: &ProcessCmd, tokens: &Path) -> Result<serde_json::Value, Error> {
    let model_files: Vec<PathBuf> = if c.model.is_file() {
        vec![c.model.clone()]
    } else {
        ["unet", "vae"].iter().map(|d| c.model.join(d)).collect()
    };
    let job = ElementJob::new(c, tokens);
    Ok(serde_json::json!({
        "tokens_sha256": match tokens.as_os_str().is_empty() {
            true => None,
            false => Some(sha256_of(&[tokens.to_path_buf()])?),
        },
        "model_sha256": sha256_of(&model_files)?,
        "pose_sha256": match job.pose {
            Some(p) => Some(sha256_of(&[p.to_path_buf()])?),
            None => None,
        },
        "crop": format!("{:?}", job.crop),
        "augmentations": job.augmentations,
        "seed": job.seed,
        "noise": job.noise,
        "draw_ids": job.draw_ids,
        "device": job.device.to_string(),
        "annotated": job.annotated,
        "coco": job.coco,
    }))
}

/// SHA-256 (hex) of files and folders: a file's bytes; a folder's files (recursively, sorted)
/// each as its path relative to the folder, its length and its bytes.
fn sha256_of(paths: &[PathBuf]) -> Result<String, Error> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for root in paths {
        if !root.is_dir() {
            hash_file(root, &mut ctx)?;
            continue;
        }
        let mut files = Vec::new();
        list_files(root, &mut files)?;
        files.sort();
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(&f).to_string_lossy();
            ctx.update(rel.as_bytes());
            ctx.update(&[0]);
            let len = std::fs::metadata(&f).map_or(0, |m| m.len());
            ctx.update(&len.to_le_bytes());
            hash_file(&f, &mut ctx)?;
        }
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let io = |e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.is_dir() {
            list_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Feeds a file's bytes to `ctx`; returns its length.
fn hash_file(path: &Path, ctx: &mut ring::digest::Context) -> Result<u64, Error> {
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io)?;
        if k == 0 {
            return Ok(n);
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
}

/// An output's size and SHA-256 (what `sha256sum` prints), for `done.json`.
fn output_file(path: &Path) -> Result<OutputFile, Error> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let size = hash_file(path, &mut ctx)?;
    Ok(OutputFile {
        size,
        sha256: hex(ctx.finish().as_ref()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `corpus.json` (every task writes the same one); says so when the work list changed
/// since the folder's last run.
fn write_manifest(out_dir: &Path, manifest: &Manifest) -> Result<(), Error> {
    let path = out_dir.join(MANIFEST);
    if let Ok(Some(old)) = read_record::<Manifest>(&path) {
        let before: BTreeSet<&str> = old.videos.iter().map(|v| v.input.as_str()).collect();
        let now: BTreeSet<&str> = manifest.videos.iter().map(|v| v.input.as_str()).collect();
        let (added, removed) = (
            now.difference(&before).count(),
            before.difference(&now).count(),
        );
        if added + removed > 0 {
            eprintln!(
                "warning: the work list changed since {} was written ({added} videos added, \
                 {removed} removed); every task of a job array must see the same list, or the \
                 shards overlap",
                path.display()
            );
        }
    }
    write_record(&path, manifest)
}
