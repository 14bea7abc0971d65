//! Reliability of the element: bad models and tokens, every format at odd sizes,
//! padded strides, renegotiation, flushes and seeks, state cycles, a soak run, and the JSON
//! lines file under faults. Everything runs on the tiny generated model.
//!
//! Tests that measure this process (threads, RSS) or change its limits run alone in a child
//! process (see `isolated`).

use gst::prelude::*;
use gst_video::prelude::*;
use gststablekeypoints::meta::FrameKeypoints;
use stablekeypoints::frame::YuvMatrix;
use stablekeypoints::Tokens;
use stablekeypoints::{DetectOptions, Detection, Detector, FrameRef, Model};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst_video::VideoFormat as F;

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod bad_inputs;
mod caps;
mod events;
mod json_lines;
mod soak;

/// A fresh core detector with the element's default options.
fn core_detector() -> Detector {
    core_detector_with(DetectOptions::default())
}

/// Runs this test alone in a child process (`cargo test` runs the other tests of this
/// binary in parallel threads, which would pollute thread counts, RSS and rlimits).
/// `module` is the test's `module_path!()`, so that the child runs it by its full name.
/// Returns true in the child, where the test body runs; in the parent it waits for the
/// child, fails if the child failed or ran no test, and returns false.
fn isolated(module: &str, name: &str) -> bool {
    if std::env::var_os("SKP_ISOLATED_CHILD").is_some() {
        return true;
    }
    let name = match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SKP_ISOLATED_CHILD", "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed in its child process");
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its child"
    );
    false
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

// ---------------------------------------------------------------------------------------
// Frames: logical pixels, GStreamer buffers in any layout, and the core reference.

/// (bytes per row, rows) of each plane, without any padding.
fn plane_geometry(format: gst_video::VideoFormat, w: usize, h: usize) -> Vec<(usize, usize)> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    match format {
        F::I420 | F::Yv12 => vec![(w, h), (cw, ch), (cw, ch)],
        F::Nv12 => vec![(w, h), (2 * cw, ch)],
        F::Rgb | F::Bgr => vec![(3 * w, h)],
        _ => vec![(4 * w, h)],
    }
}

/// The pixels of one frame as tightly packed planes: what the frame *is*, independent of
/// how a buffer lays it out.
struct Pixels {
    format: gst_video::VideoFormat,
    width: usize,
    height: usize,
    planes: Vec<Vec<u8>>,
}

impl Pixels {
    fn random(format: gst_video::VideoFormat, width: usize, height: usize, seed: u64) -> Self {
        let planes = plane_geometry(format, width, height)
            .iter()
            .enumerate()
            .map(|(i, &(row, rows))| noise_bytes(row * rows, seed * 7 + i as u64))
            .collect();
        Self {
            format,
            width,
            height,
            planes,
        }
    }

    /// The pixels copied out of a mapped frame (any strides and offsets).
    fn from_frame(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Self {
        let info = frame.info();
        let (w, h) = (info.width() as usize, info.height() as usize);
        let planes = plane_geometry(info.format(), w, h)
            .iter()
            .enumerate()
            .map(|(i, &(row, rows))| {
                let data = frame.plane_data(i as u32).unwrap();
                let stride = frame.plane_stride()[i] as usize;
                (0..rows)
                    .flat_map(|r| data[r * stride..r * stride + row].iter().copied())
                    .collect()
            })
            .collect();
        Self {
            format: info.format(),
            width: w,
            height: h,
            planes,
        }
    }

    /// Writes the planes at `offsets`/`strides` into a buffer of `size` bytes whose other
    /// bytes (row padding, gaps between planes) are garbage.
    fn to_buffer(&self, size: usize, offsets: &[usize], strides: &[i32], seed: u64) -> gst::Buffer {
        let mut bytes = noise_bytes(size, seed ^ 0xdead_beef);
        for (i, (plane, &(row, rows))) in self
            .planes
            .iter()
            .zip(&plane_geometry(self.format, self.width, self.height))
            .enumerate()
        {
            for r in 0..rows {
                let at = offsets[i] + r * strides[i] as usize;
                bytes[at..at + row].copy_from_slice(&plane[r * row..(r + 1) * row]);
            }
        }
        gst::Buffer::from_mut_slice(bytes)
    }

    /// A buffer in the caps' standard layout (rows padded to GStreamer's alignment).
    fn standard_buffer(&self, info: &gst_video::VideoInfo, seed: u64) -> gst::Buffer {
        self.to_buffer(info.size(), info.offset(), info.stride(), seed)
    }

    /// A buffer whose planes have `pad` extra bytes per row and gaps between them, with a
    /// `GstVideoMeta` describing that layout (as a decoder with its own pool produces).
    fn padded_buffer(&self, pad: usize, seed: u64) -> gst::Buffer {
        let geometry = plane_geometry(self.format, self.width, self.height);
        let mut offsets = Vec::new();
        let mut strides = Vec::new();
        let mut at = 64; // a header gap before the first plane
        for &(row, rows) in &geometry {
            let stride = row + pad;
            offsets.push(at);
            strides.push(stride as i32);
            at += stride * rows + 32; // and a gap after each plane
        }
        let mut buf = self.to_buffer(at, &offsets, &strides, seed);
        gst_video::VideoMeta::add_full(
            buf.get_mut().unwrap(),
            gst_video::VideoFrameFlags::empty(),
            self.format,
            self.width as u32,
            self.height as u32,
            &offsets,
            &strides,
        )
        .unwrap();
        buf
    }

    /// The core detector on these pixels, with the caps' colorimetry.
    fn detect(&self, det: &mut Detector, info: &gst_video::VideoInfo, key: u64) -> Detection {
        let geometry = plane_geometry(self.format, self.width, self.height);
        let plane = |i: usize| -> (&[u8], usize) {
            self.planes
                .get(i)
                .map_or((&[][..], 0), |p| (&p[..], geometry[i].0))
        };
        // YV12 is I420 with V before U.
        let (u, v) = if self.format == F::Yv12 {
            (2, 1)
        } else {
            (1, 2)
        };
        let mut f = FrameRef::new(
            core_format(self.format),
            self.width,
            self.height,
            [plane(0), plane(u), plane(v)],
        )
        .unwrap();
        let c = info.colorimetry();
        f.matrix = if c.matrix() == gst_video::VideoColorMatrix::Bt709 {
            YuvMatrix::Bt709
        } else {
            YuvMatrix::Bt601
        };
        f.full_range = c.range() == gst_video::VideoColorRange::Range0_255;
        det.detect(vec![stablekeypoints::Item::frame(f, key)])
            .unwrap()
            .remove(0)
    }
}

fn harness(extra: &str, caps: gst::Caps) -> gst_check::Harness {
    let mut hn =
        gst_check::Harness::with_element(&inference_element(extra), Some("sink"), Some("src"));
    hn.set_src_caps(caps);
    hn
}

/// The inference element (named `skp`, with the tiny model and `extra`) followed by `after`
/// (`! element ...`), in a harness fed with `caps`.
fn chain(extra: &str, after: &str, caps: gst::Caps) -> gst_check::Harness {
    let mut hn = chain_harness(&format!(
        "stablekeypoints name=skp {} {extra} {after}",
        props()
    ));
    hn.set_src_caps(caps);
    hn
}

/// The inference element followed by `stablekeypointstrack` with `track` (and `after`).
fn tracked(extra: &str, track: &str, caps: gst::Caps) -> gst_check::Harness {
    chain(extra, &format!("! stablekeypointstrack {track}"), caps)
}

/// `! stablekeypointspublish location=json` (the JSON lines of a chain).
fn publish(json: &Path, extra: &str) -> String {
    format!(
        "! stablekeypointspublish location={} {extra}",
        json.display()
    )
}

fn pull_all(hn: &mut gst_check::Harness) -> Vec<gst::Buffer> {
    std::iter::from_fn(|| hn.try_pull()).collect()
}

/// Every line of a JSON lines file parses and the file ends with a newline (or is empty).
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: last line is incomplete: {:?}",
        path.display(),
        text.lines().last()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

fn launch(desc: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// Counts the buffers reaching the pad of element `name`.
fn count_buffers(pipeline: &gst::Pipeline, name: &str) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    let pad = pipeline.by_name(name).unwrap().static_pad("sink").unwrap();
    let c = n.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
        gst::PadProbeReturn::Ok
    });
    n
}

/// Keeps copies of the buffers reaching the pad of element `name`.
fn keep_buffers(pipeline: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<gst::Buffer>>> {
    let store = Arc::new(Mutex::new(Vec::new()));
    let pad = pipeline.by_name(name).unwrap().static_pad("sink").unwrap();
    let s = store.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer() {
            s.lock().unwrap().push(b.copy());
        }
        gst::PadProbeReturn::Ok
    });
    store
}

/// Error message (text, debug, source element name) if one is posted within `timeout`,
/// stopping at EOS.
fn wait_eos_or_error(
    pipeline: &gst::Pipeline,
    timeout: Duration,
) -> Result<(), (String, String, String)> {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                return Err((
                    e.error().to_string(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default(),
                    msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                ))
            }
            _ => {}
        }
    }
    panic!("neither EOS nor an error within {timeout:?}");
}

/// PLAYING until `frames` buffers reached the sink, then NULL; fails on a bus error.
fn play_then_stop(p: &gst::Pipeline, n: &AtomicU64, frames: u64) {
    n.store(0, Ordering::SeqCst);
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while n.load(Ordering::SeqCst) < frames {
        assert!(Instant::now() < deadline, "no frames within 60 s");
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(10)) {
            if let gst::MessageView::Error(e) = m.view() {
                panic!("{} {:?}", e.error(), e.debug());
            }
        }
    }
    p.set_state(gst::State::Null).unwrap();
    // Messages of the run (one per frame with post-messages) are dropped.
    while bus.pop().is_some() {}
}
