//! One video through the `stablekeypoints` element, in a GStreamer pipeline of this
//! process: what `process --input` runs once and `process --inputs` once per video of its
//! shard. The keypoints go to `keypoints.jsonl` and `keypoints.coco.json`
//! (`stablekeypointspublish`), the drawn frames to `annotated.mp4`:
//!
//! ```text
//! filesrc ! decodebin ! videoconvert ! stablekeypoints ... draw=true [pose=POSE]
//!   ! stablekeypointspublish location=keypoints.jsonl frame-index=timestamp
//!   ! stablekeypointspublish location=keypoints.coco.json format=coco frame-index=timestamp
//!   ! videoconvert ! videoscale ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink
//! ```
//!
//! The element is this build's (registered statically from the plugin crate);
//! `SKP_PLUGIN_PATH` loads another build of it instead.

mod chain;
mod check;
mod job;
mod probes;
mod stream;

pub use check::{check_model_and_tokens, check_student};
pub use job::{ElementJob, KEYPOINTS};
pub use stream::preroll;

use crate::interrupt;
use crate::mp4;
use crate::progress::Progress;
use crate::timeline::{Gap, Timeline};
use crate::uri::file_uri_path;
use crate::video::{self, file_error, set_state, LOG_EVERY};
use chain::{chain, Chain};
use gst::prelude::*;
use probes::{lock, stream_ends};
use stablekeypoints::util::StagedOutputs;
use stablekeypoints::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;
use stream::Stream;

/// Environment variable naming another build of the plugin: the `.so` itself or a folder
/// holding it.
pub const PLUGIN_ENV: &str = "SKP_PLUGIN_PATH";

/// Makes the `stablekeypoints` element available: this build's, or the one `SKP_PLUGIN_PATH`
/// names.
pub fn register_element() -> Result<(), Error> {
    video::init()?;
    match std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            let loaded = if p.is_file() {
                gst::Plugin::load_file(&p)
                    .map(|_| ())
                    .map_err(|e| format!("cannot load it: {e}"))
            } else if p.is_dir() {
                if gst::Registry::get().scan_path(&p)
                    || gst::ElementFactory::find("stablekeypoints").is_some()
                {
                    Ok(())
                } else {
                    Err("no GStreamer plugin in that folder".into())
                }
            } else {
                Err("no such plugin file or folder".into())
            };
            loaded.map_err(|m| Error::Invalid(format!("{PLUGIN_ENV}={}: {m}", p.display())))?;
        }
        None => gststablekeypoints::plugin_register_static().map_err(|e| {
            Error::Invalid(format!("cannot register the stablekeypoints element: {e}"))
        })?,
    }
    if gst::ElementFactory::find("stablekeypoints").is_none() {
        return Err(Error::Invalid(
            "the GStreamer element stablekeypoints is not available".into(),
        ));
    }
    Ok(())
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// What one video gave.
pub struct VideoDone {
    pub frames: u64,
    pub seconds: f64,
    /// The files written (renamed into place).
    pub outputs: Vec<PathBuf>,
    /// Frames missing between decoded ones (said in a warning too).
    pub gaps: Vec<Gap>,
}
/// Runs every frame of `input` (a path, or a URI) through the element into `out_dir` (created
/// if missing), with a progress bar when `progress`. The outputs are staged and renamed into
/// place only when every frame the file declares was decoded and written to each of them;
/// otherwise nothing in `out_dir` changes. The caller arms [`interrupt`].
pub fn run_video(
    input: &Path,
    out_dir: &Path,
    job: &ElementJob,
    progress: bool,
) -> Result<VideoDone, Error> {
    let start = Instant::now();
    let stream = preroll(input)?;
    let (outputs, staged, temps) = stage_outputs(input, out_dir, job)?;
    let chain = chain(job, &stream, &temps)?;
    let refs: Vec<&gst::Element> = chain.elements.iter().collect();
    let (pipeline, _) = video::decoding_pipeline(input, &refs)?;
    let reached = stream_ends(&pipeline);
    let total = stream.duration.and_then(|d| stream.frames_in(d));
    if progress {
        eprintln!(
            "running {} frames of {} through the stablekeypoints element",
            total.map_or("the".to_string(), |n| n.to_string()),
            input.display()
        );
    }
    let result = run(
        &pipeline,
        input,
        &stream,
        total,
        &chain.timeline,
        start,
        progress,
    );
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    // Success only when the file was decoded to the end it declares, and every decoded
    // frame has its line, its encoded frame and its COCO entry.
    let timeline = lock(&chain.timeline);
    let decoded = timeline.frames();
    let reached = gst::ClockTime::from_nseconds(reached.load(Ordering::SeqCst));
    if let Some(declared) = stream.duration.filter(|&d| reached + timeline.slack() < d) {
        return Err(file_error(
            input,
            format!(
                "decoding ended at {:.3} s of the {:.3} s the file declares, after {decoded} \
                 frames (truncated or damaged?); nothing was written to {}",
                reached.nseconds() as f64 / 1e9,
                declared.nseconds() as f64 / 1e9,
                out_dir.display()
            ),
        ));
    }
    Written::of(&chain, job, &temps[0]).check(decoded, input, out_dir)?;
    if job.annotated {
        set_mp4_times(input, &temps[1], &outputs[1])?;
    }
    staged.commit()?;
    warn_missing(input, &timeline, decoded, total);
    Ok(VideoDone {
        frames: decoded,
        seconds: start.elapsed().as_secs_f64(),
        outputs,
        gaps: timeline.gaps().to_vec(),
    })
}

/// Creates `out_dir` and stages the outputs of `job` in it: the final paths, the staging,
/// and the staged files (in the order of [`ElementJob::outputs`]). No output may replace one
/// of the run's inputs.
fn stage_outputs(
    input: &Path,
    out_dir: &Path,
    job: &ElementJob,
) -> Result<(Vec<PathBuf>, StagedOutputs, Vec<PathBuf>), Error> {
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::Invalid(format!(
            "--out-dir {}: cannot create it: {e}",
            out_dir.display()
        ))
    })?;
    let outputs = job.outputs(out_dir);
    let inputs = job.inputs(input);
    for p in &outputs {
        inputs.check(p, "--out-dir")?;
    }
    let mut staged = StagedOutputs::new();
    let mut temps = Vec::new();
    for p in &outputs {
        temps.push(staged.stage(p, "--out-dir")?);
    }
    Ok((outputs, staged, temps))
}

/// Warns of the frames missing between decoded ones, and of an end short of what the file
/// declares (within the end's tolerance, but still a frame short).
fn warn_missing(input: &Path, timeline: &Timeline, decoded: u64, total: Option<u64>) {
    for gap in timeline.gaps() {
        eprintln!("warning: {}: {gap}", input.display());
    }
    if let Some(total) = total.filter(|&t| decoded < t && timeline.gaps().is_empty()) {
        eprintln!(
            "warning: {}: {decoded} of the {total} frames the file declares were decoded \
             (the end may be cut or damaged)",
            input.display()
        );
    }
}

/// What reached each output: keypoint lines, encoded frames, COCO frames.
struct Written {
    lines: u64,
    /// Per object: the frames that passed the JSON lines publisher (a frame has a line per
    /// object, and none without objects).
    frames: Option<u64>,
    /// The file has other than the lines the publisher wrote.
    lost: bool,
    encoded: Option<u64>,
    cocos: Option<u64>,
}

impl Written {
    /// What the publishers and the encoder of `chain` passed, and the lines of the staged
    /// keypoints file `jsonl`.
    fn of(chain: &Chain, job: &ElementJob, jsonl: &Path) -> Self {
        let lines = count_lines(jsonl);
        // Per object, a frame has as many lines as it has objects (none without): every
        // frame must then have passed both publishers, and every record reached the file.
        let per_object = job.objects.is_some();
        let sent = chain.jsonl.property::<u64>("records-sent");
        Written {
            lines,
            frames: per_object.then(|| chain.jsonl.property::<u64>("frames-processed")),
            lost: lines != sent,
            encoded: chain.encoded.as_ref().map(|e| e.load(Ordering::SeqCst)),
            cocos: chain.coco.as_ref().map(|p| {
                p.property::<u64>(if per_object {
                    "frames-processed"
                } else {
                    "records-sent"
                })
            }),
        }
    }

    /// Every one of the `decoded` frames must be in every output.
    fn check(&self, decoded: u64, input: &Path, out_dir: &Path) -> Result<(), Error> {
        if self.frames.unwrap_or(self.lines) == decoded
            && !self.lost
            && self.encoded.is_none_or(|e| e == decoded)
            && self.cocos.is_none_or(|c| c == decoded)
        {
            return Ok(());
        }
        let mut wrote = vec![match self.frames {
            Some(f) => format!("{f} frames of {} keypoint lines", self.lines),
            None => format!("{} keypoint lines", self.lines),
        }];
        wrote.extend(self.encoded.map(|e| format!("{e} annotated frames")));
        wrote.extend(self.cocos.map(|c| format!("{c} COCO frames")));
        Err(Error::Invalid(format!(
            "the pipeline stopped early: {decoded} frames decoded from {}, but {} written; \
             nothing was written to {}",
            input.display(),
            wrote.join(" and "),
            out_dir.display()
        )))
    }
}

/// The same frames give the same bytes: the MP4 header times of `tmp` (staged for `output`)
/// are the input's mtime.
fn set_mp4_times(input: &Path, tmp: &Path, output: &Path) -> Result<(), Error> {
    let local = file_uri_path(&input.to_string_lossy()).unwrap_or_else(|| input.to_path_buf());
    let mtime = std::fs::metadata(local)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + mp4::MP4_EPOCH_OFFSET);
    mp4::set_times(tmp, mtime).map_err(|e| Error::Io {
        path: output.to_path_buf(),
        source: e,
    })?;
    Ok(())
}

/// Plays the pipeline to EOS with progress (frames decoded of the total), or stops it at
/// SIGINT/SIGTERM.
fn run(
    pipeline: &gst::Pipeline,
    input: &Path,
    stream: &Stream,
    total: Option<u64>,
    timeline: &Mutex<Timeline>,
    start: Instant,
    progress: bool,
) -> Result<(), Error> {
    let what = "the stablekeypoints pipeline failed";
    set_state(pipeline, gst::State::Playing, input, what)?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut bar =
        progress.then(|| Progress::new(total.unwrap_or(0), "frame {pos}/{len} [{bar:30}] {eta}"));
    loop {
        if let Some(sig) = interrupt::received() {
            return Err(Error::Invalid(format!(
                "interrupted by {}: stopped the pipeline; the earlier outputs are unchanged",
                interrupt::name(sig)
            )));
        }
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                return Err(file_error(
                    input,
                    format!("{what}: {}", video::describe_error(e)),
                ))
            }
            Some(_) => {
                let done = lock(timeline).frames();
                let Some(bar) = bar.as_mut() else { break };
                bar.set(done, "", true, || {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    format!("frame {done}{of} ({:.0} s)", start.elapsed().as_secs_f64())
                });
                break;
            }
            None => {
                let Some(bar) = bar.as_mut() else { continue };
                let done = pipeline
                    .query_position::<gst::ClockTime>()
                    .and_then(|p| stream.frames_in(p));
                if let Some(done) = done {
                    let log = bar.due(LOG_EVERY);
                    bar.set(done, "", log, || {
                        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                        format!("frame {done}{of} ({:.0} s)", start.elapsed().as_secs_f64())
                    });
                }
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(())
}
