//! Reliability of the element (issue 6): bad models and tokens, every format at odd sizes,
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

mod common;
use common::*;

/// A fresh core detector with the element's default options.
fn core_detector() -> Detector {
    core_detector_with(DetectOptions::default())
}

/// Runs this test alone in a child process (`cargo test` runs the other tests of this
/// binary in parallel threads, which would pollute thread counts, RSS and rlimits).
/// Returns true in the child, where the test body runs; in the parent it waits for the
/// child, fails if the child failed, and returns false.
fn isolated(name: &str) -> bool {
    if std::env::var_os("SKP_ISOLATED_CHILD").is_some() {
        return true;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SKP_ISOLATED_CHILD", "1")
        .status()
        .expect("run the test binary");
    assert!(status.success(), "{name} failed in its child process");
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

fn video_info(format: gst_video::VideoFormat, w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

fn timed(mut buf: gst::Buffer, i: u64) -> gst::Buffer {
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i));
        b.set_duration(gst::ClockTime::from_mseconds(40));
    }
    buf
}

fn element(extra: &str) -> gst::Element {
    init();
    let element = gst::ElementFactory::make("stablekeypoints")
        .property("model", model_dir().to_str().unwrap())
        .property("tokens", tokens_path().to_str().unwrap())
        .build()
        .unwrap();
    for kv in extra.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        element.set_property_from_str(k, v);
    }
    element
}

fn harness(extra: &str, caps: gst::Caps) -> gst_check::Harness {
    let mut hn = gst_check::Harness::with_element(&element(extra), Some("sink"), Some("src"));
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

// ---------------------------------------------------------------------------------------
// 1. Bad models and tokens: an element error on READY->PAUSED naming the file and problem.

/// Writes a safetensors file by hand (the core's writer refuses invalid token sets).
fn safetensors_bytes(
    tensors: &[(&str, &str, Vec<usize>, Vec<u8>)],
    meta: &[(&str, &str)],
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                               "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// A tokens file with `n` x `c` finite embeddings, the given indices and metadata.
fn tokens_bytes(n: usize, c: usize, indices: &[i64], meta: &[(&str, &str)]) -> Vec<u8> {
    let emb: Vec<u8> = (0..n * c)
        .flat_map(|i| ((i % 17) as f32 * 0.1 - 0.8).to_le_bytes())
        .collect();
    let idx: Vec<u8> = indices.iter().flat_map(|v| v.to_le_bytes()).collect();
    safetensors_bytes(
        &[
            ("embeddings", "F32", vec![n, c], emb),
            ("indices", "I64", vec![indices.len()], idx),
        ],
        meta,
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A private copy of the tiny model, to break.
fn model_copy(name: &str) -> PathBuf {
    let d = scratch().join("broken").join(name);
    let _ = std::fs::remove_dir_all(&d);
    copy_dir(model_dir(), &d);
    d
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Sets up `stablekeypoints` with `props` in `videotestsrc ! stablekeypoints ! fakesink`,
/// checks that NULL->READY succeeds and READY->PAUSED fails, and returns the text of the
/// error message the element posted.
fn start_error(props: &[(&str, String)]) -> String {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").build().unwrap();
    let skp = gst::ElementFactory::make("stablekeypoints")
        .name("skp")
        .build()
        .unwrap();
    for (k, v) in props {
        skp.set_property_from_str(k, v);
    }
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    pipeline.add_many([&src, &skp, &sink]).unwrap();
    gst::Element::link_many([&src, &skp, &sink]).unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Ready)
        .expect("NULL->READY loads nothing and succeeds");
    let res = pipeline.set_state(gst::State::Paused);
    let err = bus
        .iter_timed(gst::ClockTime::from_seconds(10))
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some((
                e.error().to_string(),
                e.debug().map(|d| d.to_string()).unwrap_or_default(),
                m.src().map(|s| s.name().to_string()),
            )),
            _ => None,
        });
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(res.is_err(), "READY->PAUSED succeeded with {props:?}");
    let (text, debug, src) = err.unwrap_or_else(|| panic!("no error message for {props:?}"));
    assert_eq!(src.as_deref(), Some("skp"), "{text}");
    assert!(
        !text.to_lowercase().contains("panic") && !debug.to_lowercase().contains("panic"),
        "panicked: {text} {debug}"
    );
    text
}

/// What is wrong, the element properties, and the texts the message must contain.
type Case = (&'static str, Vec<(&'static str, String)>, Vec<String>);

#[test]
fn bad_models_and_tokens_fail_ready_to_paused_naming_file_and_problem() {
    let good_model = model_dir().display().to_string();
    let good_tokens = tokens_path().display().to_string();
    let dir = scratch().join("bad-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let tokens_case = |name: &str, bytes: Vec<u8>| {
        let p = file(name, &bytes);
        vec![
            ("model", good_model.clone()),
            ("tokens", p.display().to_string()),
        ]
    };
    let model_case = |p: &Path| {
        vec![
            ("model", p.display().to_string()),
            ("tokens", good_tokens.clone()),
        ]
    };
    let weights = |m: &Path, part: &str| m.join(part).join("diffusion_pytorch_model.safetensors");

    // (what, properties, text the message must contain: the file and the problem)
    let mut cases: Vec<Case> = Vec::new();

    // Model directories.
    let p = dir.join("no-such-model");
    cases.push((
        "missing model",
        model_case(&p),
        vec![p.display().to_string(), "does not exist".into()],
    ));
    // A file is read as a single-file checkpoint.
    let p = file("model-is-a-file", b"not a checkpoint");
    cases.push((
        "model is a file that is no checkpoint",
        model_case(&p),
        vec![
            p.display().to_string(),
            "not a valid safetensors file".into(),
        ],
    ));
    let p = dir.join("empty-model");
    std::fs::create_dir_all(&p).unwrap();
    cases.push((
        "directory without unet/",
        model_case(&p),
        vec![
            p.join("unet").display().to_string(),
            "no `unet/` directory".into(),
        ],
    ));
    let m = model_copy("no-vae");
    std::fs::remove_dir_all(m.join("vae")).unwrap();
    cases.push((
        "directory without vae/",
        model_case(&m),
        vec![
            m.join("vae").display().to_string(),
            "no `vae/` directory".into(),
        ],
    ));
    let m = model_copy("no-weights");
    std::fs::remove_file(weights(&m, "unet")).unwrap();
    cases.push((
        "unet/ without weights",
        model_case(&m),
        vec![
            m.join("unet").display().to_string(),
            "no diffusion_pytorch_model".into(),
        ],
    ));
    let m = model_copy("bin-weights");
    std::fs::rename(
        weights(&m, "unet"),
        m.join("unet/diffusion_pytorch_model.bin"),
    )
    .unwrap();
    cases.push((
        "safetensors renamed to .bin",
        model_case(&m),
        vec![
            m.join("unet/diffusion_pytorch_model.bin")
                .display()
                .to_string(),
            "not a PyTorch weights file".into(),
        ],
    ));
    let m = model_copy("truncated");
    let w = weights(&m, "unet");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    cases.push((
        "truncated unet weights",
        model_case(&m),
        vec![w.display().to_string(), "not a valid safetensors".into()],
    ));
    let m = model_copy("truncated-header");
    let w = weights(&m, "vae");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..100]).unwrap();
    cases.push((
        "vae weights cut inside the header",
        model_case(&m),
        vec![w.display().to_string(), "not a valid safetensors".into()],
    ));
    let m = model_copy("garbage");
    let w = weights(&m, "unet");
    std::fs::write(&w, noise_bytes(4096, 3)).unwrap();
    cases.push((
        "garbage unet weights",
        model_case(&m),
        vec![w.display().to_string(), "not a valid safetensors".into()],
    ));
    let m = model_copy("empty-weights");
    let w = weights(&m, "vae");
    std::fs::write(&w, b"").unwrap();
    cases.push((
        "empty vae weights",
        model_case(&m),
        vec![w.display().to_string(), "not a valid safetensors".into()],
    ));
    let m = model_copy("huge-header");
    let w = weights(&m, "unet");
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&w, bytes).unwrap();
    cases.push((
        "header length past the end",
        model_case(&m),
        vec![w.display().to_string(), "not a valid safetensors".into()],
    ));
    let m = model_copy("wrong-tensors");
    let w = weights(&m, "vae");
    std::fs::copy(tokens_path(), &w).unwrap();
    cases.push((
        "weights without the model's tensors",
        model_case(&m),
        vec![w.display().to_string(), "cannot find tensor".into()],
    ));

    // config.json files.
    let m = model_copy("no-config");
    std::fs::remove_file(m.join("unet/config.json")).unwrap();
    cases.push((
        "missing unet config",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "No such file".into(),
        ],
    ));
    let m = model_copy("bad-json");
    std::fs::write(m.join("vae/config.json"), b"{\"block_out_channels\": [32, ").unwrap();
    cases.push((
        "truncated vae config",
        model_case(&m),
        vec![
            m.join("vae/config.json").display().to_string(),
            "not valid JSON".into(),
        ],
    ));
    let m = model_copy("config-array");
    std::fs::write(m.join("unet/config.json"), b"[1, 2, 3]").unwrap();
    cases.push((
        "config not an object",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "not a JSON object".into(),
        ],
    ));
    let m = model_copy("unknown-field");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("addition_embed_type".into(), "image".into());
    });
    cases.push((
        "unknown unet field",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "addition_embed_type".into(),
            "unsupported value".into(),
        ],
    ));
    let m = model_copy("unknown-block");
    edit_json(&m.join("unet/config.json"), |c| {
        c["down_block_types"][0] = "SimpleCrossAttnDownBlock2D".into();
    });
    cases.push((
        "unknown block type",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "unsupported block type SimpleCrossAttnDownBlock2D".into(),
        ],
    ));
    let m = model_copy("groups");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("norm_num_groups".into(), 7.into());
    });
    cases.push((
        "channels not divisible by groups",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "not divisible by norm_num_groups = 7".into(),
        ],
    ));
    let m = model_copy("block-count");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert(
            "up_block_types".into(),
            serde_json::json!(["UpBlock2D", "CrossAttnUpBlock2D"]),
        );
    });
    cases.push((
        "block lists of different lengths",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "up_block_types 2".into(),
        ],
    ));
    let m = model_copy("heads");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("attention_head_dim".into(), serde_json::json!([2, 2]));
    });
    cases.push((
        "per-block list of the wrong length",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "attention_head_dim".into(),
            "has 2 entries but there are 4 blocks".into(),
        ],
    ));
    let m = model_copy("many-blocks");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("block_out_channels".into(), serde_json::json!(vec![32; 70]));
        c.insert(
            "down_block_types".into(),
            serde_json::json!(vec!["DownBlock2D"; 70]),
        );
        c.insert(
            "up_block_types".into(),
            serde_json::json!(vec!["UpBlock2D"; 70]),
        );
    });
    cases.push((
        "70 blocks (shift overflow)",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "at most 8".into(),
        ],
    ));
    let m = model_copy("vae-rgb");
    edit_json(&m.join("vae/config.json"), |c| {
        c.insert("in_channels".into(), 1.into());
    });
    cases.push((
        "vae not RGB",
        model_case(&m),
        vec![
            m.join("vae/config.json").display().to_string(),
            "expected 3 (RGB)".into(),
        ],
    ));
    let m = model_copy("wrong-type");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("layers_per_block".into(), "two".into());
    });
    cases.push((
        "field of the wrong type",
        model_case(&m),
        vec![
            m.join("unet/config.json").display().to_string(),
            "layers_per_block".into(),
        ],
    ));
    let m = model_copy("context");
    edit_json(&m.join("unet/config.json"), |c| {
        c.insert("cross_attention_dim".into(), 48.into());
    });
    cases.push((
        "config contradicts the weights",
        model_case(&m),
        vec![weights(&m, "unet").display().to_string(), "shape".into()],
    ));

    // Tokens files.
    let p = dir.join("no-such-tokens.safetensors");
    cases.push((
        "missing tokens",
        vec![
            ("model", good_model.clone()),
            ("tokens", p.display().to_string()),
        ],
        vec![p.display().to_string(), "No such file".into()],
    ));
    let p = dir.join("tokens-dir.safetensors");
    std::fs::create_dir_all(&p).unwrap();
    cases.push((
        "tokens path is a directory",
        vec![
            ("model", good_model.clone()),
            ("tokens", p.display().to_string()),
        ],
        vec![p.display().to_string(), "directory".into()],
    ));
    let all: Vec<i64> = (0..NUM_KEYPOINTS as i64).collect();
    for (what, name, bytes, needle) in [
        (
            "garbage tokens",
            "garbage.safetensors",
            noise_bytes(300, 9),
            "not a safetensors file",
        ),
        (
            "empty tokens file",
            "empty.safetensors",
            Vec::new(),
            "not a safetensors file",
        ),
        (
            "truncated tokens",
            "truncated.safetensors",
            {
                let b = tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[]);
                b[..b.len() - 40].to_vec()
            },
            "not a safetensors file",
        ),
        (
            "tokens of the wrong width",
            "width.safetensors",
            tokens_bytes(NUM_TOKENS, 48, &all, &[]),
            "tokens have width 48",
        ),
        (
            "index out of range",
            "range.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[0, 24], &[]),
            "holds 24, out of range for 24 tokens",
        ),
        (
            "negative index",
            "negative.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[0, -1], &[]),
            "non-negative",
        ),
        (
            "duplicate index",
            "twice.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[3, 3], &[]),
            "token 3 twice",
        ),
        (
            "no keypoint tokens",
            "no-indices.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[], &[]),
            "`indices` is empty",
        ),
        (
            "no tokens at all",
            "no-tokens.safetensors",
            tokens_bytes(0, CONTEXT_DIM, &[0], &[]),
            "`embeddings` is empty",
        ),
        (
            "embeddings not a matrix",
            "shape.safetensors",
            safetensors_bytes(
                &[
                    (
                        "embeddings",
                        "F32",
                        vec![NUM_TOKENS * CONTEXT_DIM],
                        vec![0; NUM_TOKENS * CONTEXT_DIM * 4],
                    ),
                    ("indices", "I64", vec![1], vec![0; 8]),
                ],
                &[],
            ),
            "must be [N, context_dim]",
        ),
        (
            "no indices tensor",
            "no-indices-tensor.safetensors",
            safetensors_bytes(
                &[(
                    "embeddings",
                    "F32",
                    vec![NUM_TOKENS, CONTEXT_DIM],
                    vec![0; NUM_TOKENS * CONTEXT_DIM * 4],
                )],
                &[],
            ),
            "missing tensor `indices`",
        ),
        (
            "non-finite embedding",
            "nan.safetensors",
            safetensors_bytes(
                &[
                    (
                        "embeddings",
                        "F32",
                        vec![1, CONTEXT_DIM],
                        f32::NAN.to_le_bytes().repeat(CONTEXT_DIM),
                    ),
                    ("indices", "I64", vec![1], vec![0; 8]),
                ],
                &[],
            ),
            "non-finite",
        ),
        (
            "input_size not a multiple of 64",
            "size.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("input_size", "100")]),
            "input size 100 must be a positive multiple of 64",
        ),
        (
            "huge input_size",
            "huge.safetensors",
            tokens_bytes(
                NUM_TOKENS,
                CONTEXT_DIM,
                &all,
                &[("input_size", "1099511627776")],
            ),
            "larger than 4096",
        ),
        (
            "bad metadata",
            "meta.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("map_res", "lots")]),
            "`map_res` = \"lots\" is not a non-negative integer",
        ),
        (
            "timestep out of range",
            "timestep.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("timestep", "1000")]),
            "outside 0..1000",
        ),
    ] {
        let props = tokens_case(name, bytes);
        let path = props[1].1.clone();
        cases.push((what, props, vec![path, needle.to_string()]));
    }

    // Other properties.
    cases.push((
        "input-size not a multiple of 64",
        vec![
            ("model", good_model.clone()),
            ("tokens", good_tokens.clone()),
            ("input-size", "100".into()),
        ],
        vec![good_model.clone(), "input size 100".into()],
    ));
    cases.push((
        "unknown device",
        vec![
            ("model", good_model.clone()),
            ("tokens", good_tokens.clone()),
            ("device", "tpu:0".into()),
        ],
        vec![good_model.clone(), "unknown device \"tpu:0\"".into()],
    ));
    // An uncreatable records file is the publish element's (tests/publish.rs).

    let mut failures = Vec::new();
    for (what, props, needles) in &cases {
        let text = start_error(props);
        println!("{what}: {text}");
        for n in needles {
            if !text.contains(n.as_str()) {
                failures.push(format!("{what}: message {text:?} does not contain {n:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(scratch().join("broken"));
    // The element is usable again after all those failures.
    let mut hn = harness("", video_info(F::Rgb, 16, 16).to_caps().unwrap());
    let info = video_info(F::Rgb, 16, 16);
    hn.push(Pixels::random(F::Rgb, 16, 16, 1).standard_buffer(&info, 1))
        .unwrap();
    read_meta(&hn.pull().unwrap());
}

// ---------------------------------------------------------------------------------------
// 2. Caps and frames.

/// The formats the core reads itself (the others: `tests/formats.rs`).
const NATIVE_FORMATS: [gst_video::VideoFormat; 13] = [
    F::Yv12,
    F::Rgb,
    F::Bgr,
    F::Rgba,
    F::Bgra,
    F::Rgbx,
    F::Bgrx,
    F::Argb,
    F::Abgr,
    F::Xrgb,
    F::Xbgr,
    F::I420,
    F::Nv12,
];

#[test]
fn every_native_format_at_odd_sizes_matches_the_core_and_passes_bytes_through() {
    for format in NATIVE_FORMATS {
        for (w, h) in [(1, 1), (17, 9), (9, 17), (2, 3)] {
            let info = video_info(format, w, h);
            let mut hn = harness("", info.to_caps().unwrap());
            let mut det = core_detector();
            for i in 0..2 {
                let px = Pixels::random(format, w as usize, h as usize, 100 + i);
                let expected = px.detect(&mut det, &info, i);
                let input = timed(px.standard_buffer(&info, i), i);
                let before = input.map_readable().unwrap().to_vec();
                hn.push(input).unwrap();
                let out = hn.pull().unwrap();
                let what = format!("{format:?} {w}x{h} frame {i}");
                assert_matches_core(&read_meta(&out), &expected, &what);
                assert!(
                    *out.map_readable().unwrap() == *before,
                    "{what}: bytes changed with draw=false"
                );
            }
        }
    }
}

#[test]
fn padded_strides_and_plane_offsets_from_a_video_meta() {
    for format in NATIVE_FORMATS {
        let (w, h) = (23usize, 13usize);
        let info = video_info(format, w as u32, h as u32);
        let mut hn = harness("draw=true", info.to_caps().unwrap());
        let mut det = core_detector();
        for (i, pad) in [(0u64, 5usize), (1, 64), (2, 1)] {
            let px = Pixels::random(format, w, h, 200 + i);
            let expected = px.detect(&mut det, &info, i);
            let input = timed(px.padded_buffer(pad, i), i);
            let before = input.map_readable().unwrap().to_vec();
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            let what = format!("{format:?} {w}x{h} with {pad} bytes of row padding");
            assert_matches_core(&read_meta(&out), &expected, &what);
            // Drawing went through the meta's layout: only plane bytes changed, never the
            // padding or the gaps.
            let after = out.map_readable().unwrap();
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(out.as_ref(), &info).unwrap();
            let mut inside = vec![false; after.len()];
            for (p, &(row, rows)) in plane_geometry(format, w, h).iter().enumerate() {
                let off = out.meta::<gst_video::VideoMeta>().unwrap().offset()[p];
                let stride = frame.plane_stride()[p] as usize;
                for r in 0..rows {
                    inside[off + r * stride..off + r * stride + row].fill(true);
                }
            }
            for (j, (a, b)) in before.iter().zip(after.iter()).enumerate() {
                assert!(inside[j] || a == b, "{what}: padding byte {j} changed");
            }
        }
    }
}

#[test]
fn big_frame_4096x2160() {
    for format in [F::Nv12, F::Bgrx] {
        let (w, h) = (4096u32, 2160u32);
        let info = video_info(format, w, h);
        let mut hn = harness("draw=true", info.to_caps().unwrap());
        let mut det = core_detector();
        let px = Pixels::random(format, w as usize, h as usize, 42);
        let expected = px.detect(&mut det, &info, 0);
        hn.push(timed(px.standard_buffer(&info, 0), 0)).unwrap();
        let out = hn.pull().unwrap();
        assert_matches_core(&read_meta(&out), &expected, &format!("{format:?} {w}x{h}"));
    }
}

#[test]
fn non_square_pixels_keep_keypoints_in_stored_pixels() {
    // 72x48 stored pixels shown as 96x48 (PAR 4/3): the element (like the core) works on
    // the stored pixel grid, and its coordinates are stored pixels.
    for (format, par) in [(F::Rgb, (4, 3)), (F::I420, (10, 11)), (F::Nv12, (1, 2))] {
        let info = gst_video::VideoInfo::builder(format, 72, 48)
            .fps(gst::Fraction::new(25, 1))
            .par(gst::Fraction::new(par.0, par.1))
            .build()
            .unwrap();
        let json = scratch().join(format!("par-{format:?}.jsonl"));
        let mut hn = chain(
            "",
            &publish(&json, "post-messages=true"),
            info.to_caps().unwrap(),
        );
        let mut det = core_detector();
        let px = Pixels::random(format, 72, 48, 5);
        let expected = px.detect(&mut det, &info, 0);
        hn.push(timed(px.standard_buffer(&info, 0), 0)).unwrap();
        let meta = read_meta(&hn.pull().unwrap());
        assert_matches_core(&meta, &expected, &format!("{format:?} PAR {par:?}"));
        hn.push_event(gst::event::Eos::new());
        let lines = json_lines(&json);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(72), Some(48))
        );
        for (j, i) in lines[0]["keypoints"].as_array().unwrap().iter().zip(0..) {
            let (x, y) = expected.pixel(i);
            assert!(
                (j["x"].as_f64().unwrap() as f32 - x).abs() < 1e-3,
                "{format:?}"
            );
            assert!(
                (j["y"].as_f64().unwrap() as f32 - y).abs() < 1e-3,
                "{format:?}"
            );
        }
    }
}

#[test]
fn renegotiation_to_other_sizes_and_formats_mid_stream() {
    let json = scratch().join("renegotiation.jsonl");
    let first = video_info(F::Rgb, 48, 32);
    let mut hn = chain("draw=true", &publish(&json, ""), first.to_caps().unwrap());
    let mut det = core_detector();
    let mut sizes = Vec::new();
    let mut i = 0u64;
    for (format, w, h) in [
        (F::Rgb, 48, 32),
        (F::I420, 33, 17),
        (F::Bgrx, 64, 64),
        (F::Nv12, 1, 1),
        (F::Rgba, 17, 9),
        (F::Rgb, 48, 32),
    ] {
        let info = video_info(format, w, h);
        hn.set_src_caps(info.to_caps().unwrap());
        for _ in 0..2 {
            let px = Pixels::random(format, w as usize, h as usize, 300 + i);
            let expected = px.detect(&mut det, &info, i);
            hn.push(timed(px.standard_buffer(&info, i), i)).unwrap();
            let out = hn.pull().unwrap();
            assert_matches_core(
                &read_meta(&out),
                &expected,
                &format!("{format:?} {w}x{h}, frame {i}"),
            );
            sizes.push((w as u64, h as u64));
            i += 1;
        }
    }
    hn.push_event(gst::event::Eos::new());
    let lines = json_lines(&json);
    let got: Vec<(u64, u64)> = lines
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, sizes, "JSON records carry each frame's own size");
}

#[test]
fn renegotiation_releases_held_frames_with_their_own_size() {
    // stablekeypointstrack gap-policy=interpolate holds frames; a caps change must push them
    // first, described with the caps they were received with.
    let a = video_info(F::Rgb, 40, 30);
    let mut hn = tracked(
        "inference-interval=4",
        "gap-policy=interpolate",
        a.to_caps().unwrap(),
    );
    for i in 0..3 {
        hn.push(timed(
            Pixels::random(F::Rgb, 40, 30, i).standard_buffer(&a, i),
            i,
        ))
        .unwrap();
    }
    let before = pull_all(&mut hn);
    assert_eq!(before.len(), 1, "frames 1 and 2 are held");
    let b = video_info(F::I420, 21, 11);
    hn.set_src_caps(b.to_caps().unwrap());
    let held = pull_all(&mut hn);
    assert_eq!(
        held.len(),
        2,
        "held frames are released before the new caps"
    );
    for buf in &held {
        let m = read_meta(buf);
        assert_eq!((m.source_width, m.source_height), (40, 30));
        assert!(m.inferred);
        assert_eq!(m.keypoints, read_meta(&before[0]).keypoints);
    }
    // Frame 3 waits for frame 4 (interval 4); both carry the new size.
    for i in 3..5 {
        hn.push(timed(
            Pixels::random(F::I420, 21, 11, i).standard_buffer(&b, i),
            i,
        ))
        .unwrap();
    }
    let after = pull_all(&mut hn);
    assert_eq!(after.len(), 2);
    for buf in &after {
        let m = read_meta(buf);
        assert_eq!((m.source_width, m.source_height), (21, 11));
    }
}

#[test]
fn caps_outside_the_template_are_refused_at_negotiation_with_the_reason() {
    init();
    let skp = element("");
    let sink = skp.static_pad("sink").unwrap();
    // Every raw format in system memory is taken (tests/formats.rs)...
    for format in [
        "YUY2",
        "GRAY8",
        "I420_10LE",
        "NV21",
        "RGB16",
        "v210",
        "P010_10LE",
    ] {
        let caps: gst::Caps =
            format!("video/x-raw,format={format},width=32,height=32,framerate=25/1")
                .parse()
                .unwrap();
        assert!(sink.query_accept_caps(&caps), "{format} refused");
    }
    // ... other memory, overlay-composition caps features and what is not raw video are not.
    for caps in [
        "video/x-raw(memory:GLMemory),format=RGBA,width=32,height=32,framerate=25/1",
        "video/x-raw(memory:DMABuf),format=NV12,width=32,height=32,framerate=25/1",
        "video/x-raw(memory:CUDAMemory),format=NV12,width=32,height=32,framerate=25/1",
        "video/x-raw(memory:SystemMemory, meta:GstVideoOverlayComposition),format=I420,\
         width=32,height=32,framerate=25/1",
        "video/x-bayer,format=rggb,width=32,height=32,framerate=25/1",
        "image/jpeg,width=32,height=32,framerate=25/1",
    ] {
        let caps: gst::Caps = caps.parse().unwrap();
        assert!(!sink.query_accept_caps(&caps), "{caps} accepted");
        assert!(
            sink.query_caps(Some(&caps)).is_empty(),
            "{caps} in the caps"
        );
    }

    // In a pipeline: a filtered link to GL memory cannot even be made...
    let desc = |link: &str| {
        format!(
            "appsrc format=time ! {link} ! stablekeypoints {} ! fakesink",
            props()
        )
    };
    let err = gst::parse::launch(&desc(
        "video/x-raw(memory:GLMemory),format=RGBA,width=32,height=24",
    ))
    .expect_err("a GL memory link must be refused");
    assert!(err.to_string().contains("can't handle caps"), "{err}");
    // ... and caps that only appear at run time fail negotiation with a not-negotiated
    // error (no panic), after a warning from the element saying why.
    let p = launch(&format!(
        "appsrc name=src format=time ! stablekeypoints name=skp {} ! fakesink",
        props()
    ));
    let src = p.by_name("src").unwrap();
    src.set_property_from_str(
        "caps",
        "video/x-raw(memory:GLMemory),format=RGBA,width=32,height=24,framerate=25/1",
    );
    let _ = p.set_state(gst::State::Playing);
    let _ = src.emit_by_name::<gst::FlowReturn>(
        "push-buffer",
        &[&gst::Buffer::with_size(32 * 24 * 4).unwrap()],
    );
    let bus = p.bus().unwrap();
    let (mut warnings, mut error) = (Vec::new(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while error.is_none() && Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Warning(w) if msg.src().is_some_and(|s| s.name() == "skp") => {
                warnings.push(w.error().to_string())
            }
            gst::MessageView::Error(e) => {
                error = Some(format!("{} {:?}", e.error(), e.debug()));
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let error = error.expect("GL memory caps must fail");
    assert!(
        error.contains("not-negotiated") || error.to_lowercase().contains("negotiat"),
        "{error}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("memory:GLMemory") && w.contains("system memory")),
        "no warning naming the reason: {warnings:?}"
    );
    // A harness pushing unsupported caps gets not-negotiated, not a crash.
    let mut hn = gst_check::Harness::with_element(&element(""), Some("sink"), Some("src"));
    hn.set_src_caps_str("video/x-bayer,format=rggb,width=16,height=16,framerate=25/1");
    assert!(hn.push(gst::Buffer::with_size(16 * 16).unwrap()).is_err());
}

#[test]
fn videoscale_and_videoconvert_output_matches_the_core() {
    // Real upstream elements producing odd sizes (padded rows) in several formats.
    for (format, w, h) in [
        (F::Rgb, 17, 9),
        (F::I420, 33, 15),
        (F::Nv12, 19, 7),
        (F::Bgrx, 5, 3),
    ] {
        let desc = format!(
            "videotestsrc num-buffers=3 pattern=ball ! video/x-raw,width=64,height=48 ! videoscale \
             ! videoconvert ! video/x-raw,format={},width={w},height={h},pixel-aspect-ratio=1/1 \
             ! stablekeypoints {} ! fakesink name=sink",
            format.to_str(),
            props()
        );
        let p = launch(&desc);
        let bufs = keep_buffers(&p, "sink");
        p.set_state(gst::State::Playing).unwrap();
        wait_eos_or_error(&p, Duration::from_secs(60)).unwrap();
        let caps = p
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .current_caps();
        p.set_state(gst::State::Null).unwrap();
        let info = gst_video::VideoInfo::from_caps(&caps.expect("negotiated caps")).unwrap();
        let bufs = bufs.lock().unwrap();
        assert_eq!(bufs.len(), 3);
        let mut det = core_detector();
        for (i, b) in bufs.iter().enumerate() {
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), &info).unwrap();
            let px = Pixels::from_frame(&frame);
            assert_matches_core(
                &read_meta(b),
                &px.detect(&mut det, &info, i as u64),
                &format!("{format:?} {w}x{h} frame {i}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. Events and state changes.

fn segment_event() -> gst::Event {
    gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new())
}

#[test]
fn flush_starts_a_new_stream() {
    let info = video_info(F::Rgb, 32, 24);
    for policy in ["interpolate", "hold-last", "none"] {
        let json = scratch().join(format!("flush-{policy}.jsonl"));
        // Interpolation is the track element's, after the inference element's hold-last.
        let (upstream, track) = match policy {
            "interpolate" => ("hold-last", "gap-policy=interpolate"),
            p => (p, ""),
        };
        let mut hn = tracked(
            &format!("inference-interval=3 gap-policy={upstream}"),
            &format!("smoothing=one-euro {track} {}", publish(&json, "")),
            info.to_caps().unwrap(),
        );
        let mut det = core_detector();
        let frame = |i: u64| Pixels::random(F::Rgb, 32, 24, 400 + i);
        let f0 = frame(0);
        let e0 = f0.detect(&mut det, &info, 0);
        hn.push(timed(f0.standard_buffer(&info, 0), 0)).unwrap();
        hn.push(timed(frame(1).standard_buffer(&info, 1), 1))
            .unwrap();
        let before = pull_all(&mut hn);
        assert_matches_core(&read_meta(&before[0]), &e0, policy);
        // Seek-like flush: whatever was held is dropped, and the next frame is inferred
        // afresh (not held, not interpolated from or smoothed with the old keypoints).
        assert!(hn.push_event(gst::event::FlushStart::new()));
        assert!(hn.push_event(gst::event::FlushStop::new(true)));
        assert!(hn.push_event(segment_event()));
        while hn.try_pull().is_some() {}
        let f = frame(10);
        // Its noise is that of frame 0 again: frames are counted from the flush.
        let expected = f.detect(&mut det, &info, 0);
        hn.push(timed(f.standard_buffer(&info, 0), 0)).unwrap();
        let out = pull_all(&mut hn);
        assert_eq!(
            out.len(),
            1,
            "{policy}: the first frame after the flush comes out"
        );
        let m = read_meta(&out[0]);
        assert!(
            !m.inferred,
            "{policy}: first frame after a flush must be inferred"
        );
        assert_matches_core(&m, &expected, &format!("{policy} after flush"));
        // And the stream goes on normally.
        for i in 1..4 {
            hn.push(timed(frame(10 + i).standard_buffer(&info, i), i))
                .unwrap();
        }
        hn.push_event(gst::event::Eos::new());
        let rest = pull_all(&mut hn);
        assert_eq!(rest.len(), 3, "{policy}");
        json_lines(&json);
    }
}

#[test]
fn seek_mid_stream_in_a_pipeline() {
    let json = scratch().join("seek.jsonl");
    let desc = format!(
        "videotestsrc pattern=ball ! video/x-raw,format=I420,width=40,height=30,framerate=10/1 \
         ! stablekeypoints {} inference-interval=4 ! stablekeypointstrack gap-policy=interpolate \
         ! stablekeypointspublish location={} ! fakesink name=sink sync=false",
        props(),
        json.display()
    );
    let p = launch(&desc);
    let bufs = keep_buffers(&p, "sink");
    p.set_state(gst::State::Paused).unwrap();
    p.state(gst::ClockTime::from_seconds(30)).0.unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bufs.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "no buffers");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Seek into [10 s, 11 s): 10 frames, then EOS.
    p.seek(
        1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(10),
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(11),
    )
    .unwrap();
    wait_eos_or_error(&p, Duration::from_secs(60)).unwrap();
    p.set_state(gst::State::Null).unwrap();
    let bufs = bufs.lock().unwrap();
    let after: Vec<&gst::Buffer> = bufs
        .iter()
        .filter(|b| b.pts().unwrap() >= gst::ClockTime::from_seconds(10))
        .collect();
    assert_eq!(after.len(), 10, "every frame of the seeked range arrives");
    let m: Vec<FrameKeypoints> = after.iter().map(|b| read_meta(b)).collect();
    assert!(
        !m[0].inferred,
        "the first frame after the seek is inferred afresh"
    );
    assert_eq!(
        m.iter().map(|f| f.inferred).collect::<Vec<_>>(),
        [false, true, true, true, false, true, true, true, false, true]
    );
    let pts: Vec<_> = after.iter().map(|b| b.pts().unwrap()).collect();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "order kept: {pts:?}");
    // Every line is whole, and every frame that reached the sink has its line.
    let lines = json_lines(&json);
    for b in bufs.iter() {
        let pts = b.pts().unwrap().nseconds();
        assert!(
            lines.iter().any(|l| l["pts"].as_u64() == Some(pts)),
            "no line for {pts}"
        );
    }
}

#[test]
fn eos_releases_a_partially_filled_hold() {
    let info = video_info(F::Nv12, 30, 20);
    let json = scratch().join("eos-hold.jsonl");
    let mut hn = tracked(
        "inference-interval=5",
        &format!("gap-policy=interpolate {}", publish(&json, "")),
        info.to_caps().unwrap(),
    );
    for i in 0..3 {
        hn.push(timed(
            Pixels::random(F::Nv12, 30, 20, i).standard_buffer(&info, i),
            i,
        ))
        .unwrap();
    }
    assert_eq!(
        pull_all(&mut hn).len(),
        1,
        "frames 1 and 2 wait for frame 5"
    );
    // The file is complete as soon as EOS went through, before the element stops.
    assert!(hn.push_event(gst::event::Eos::new()));
    let held = pull_all(&mut hn);
    assert_eq!(held.len(), 2, "EOS releases the held frames");
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["inferred"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [false, true, true]
    );
    assert_eq!(
        lines
            .iter()
            .map(|l| l["frame"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(lines[1]["keypoints"], lines[0]["keypoints"]);
    let stats = inference_of(&hn).property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames-processed").unwrap(), 3);
    assert_eq!(stats.get::<u64>("frames-inferred").unwrap(), 1);

    // The same in a pipeline: 7 frames at interval 5 all reach the sink and the file.
    let json = scratch().join("eos-hold-pipeline.jsonl");
    let p = launch(&format!(
        "videotestsrc num-buffers=7 ! video/x-raw,format=RGB,width=24,height=24 \
         ! stablekeypoints {} inference-interval=5 ! stablekeypointstrack gap-policy=interpolate \
         ! stablekeypointspublish location={} ! fakesink name=sink",
        props(),
        json.display()
    ));
    let n = count_buffers(&p, "sink");
    p.set_state(gst::State::Playing).unwrap();
    wait_eos_or_error(&p, Duration::from_secs(60)).unwrap();
    let lines = json_lines(&json); // at EOS, before NULL
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 7);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["inferred"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [false, true, true, true, true, false, true]
    );
}

#[test]
fn extreme_qos_and_latency_values_do_not_panic() {
    // One frame per hour and a huge interval with interpolation: the look-ahead latency
    // (interval - 1 frames) overflows the clock range and must saturate.
    init();
    let info = gst_video::VideoInfo::builder(F::Rgb, 16, 16)
        .fps(gst::Fraction::new(1, 3600))
        .build()
        .unwrap();
    let mut hn = tracked(
        "inference-interval=4294967295",
        "gap-policy=interpolate",
        info.to_caps().unwrap(),
    );
    hn.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    hn.push(timed(
        Pixels::random(F::Rgb, 16, 16, 1).standard_buffer(&info, 0),
        0,
    ))
    .unwrap();
    let first = read_meta(&hn.pull().unwrap());
    let latency = hn.query_latency().expect("latency answered");
    assert!(
        latency >= gst::ClockTime::from_seconds(3600 * 1000),
        "{latency}"
    );
    // A QoS event whose timestamp + jitter is past the end of the clock range.
    assert!(hn.push_upstream_event(gst::event::Qos::new(
        gst::QOSType::Throttle,
        1.0,
        i64::MAX,
        gst::ClockTime::MAX,
    )));
    hn.push(timed(
        Pixels::random(F::Rgb, 16, 16, 2).standard_buffer(&info, 1),
        1,
    ))
    .unwrap();
    let late = read_meta(&hn.pull().unwrap());
    assert!(late.inferred, "every frame is late now");
    assert_eq!(late.keypoints, first.keypoints);
    let stats = inference_of(&hn).property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames-processed").unwrap(), 2);
}

#[test]
fn core_detector_refuses_sizes_that_cannot_be_allocated() {
    // Regression: an input size that is a multiple of 64 but huge (from `--size` or a
    // tokens file) passed `Detector::new`, and resampling then overflowed or aborted.
    let tokens = Tokens::load(&tokens_path()).unwrap();
    let model = Arc::new(
        Model::load(
            model_dir(),
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap(),
    );
    for (input_size, map_res) in [(Some(1usize << 40), None), (None, Some(1usize << 20))] {
        let opts = DetectOptions {
            input_size,
            map_res,
            ..Default::default()
        };
        let e = Detector::new(model.clone(), &tokens, opts)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("too large"), "{e}");
    }
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

#[test]
fn state_cycles_do_not_leak_threads_or_memory() {
    if !isolated("state_cycles_do_not_leak_threads_or_memory") {
        return;
    }
    let json = scratch().join("cycles.jsonl");
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=48,height=32,framerate=30/1 \
         ! stablekeypoints {} draw=true ! stablekeypointspublish post-messages=true location={} \
         ! fakesink name=sink",
        props(),
        json.display()
    );
    let p = launch(&desc);
    let n = count_buffers(&p, "sink");
    // Warm-up: thread pools, the plugin's statics and the allocator settle.
    for _ in 0..3 {
        play_then_stop(&p, &n, 3);
    }
    let (t0, m0) = (threads(), rss_kib());
    let cycles: usize = std::env::var("SKP_STATE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    for i in 0..cycles {
        play_then_stop(&p, &n, 3);
        if std::env::var_os("SKP_STATE_CYCLES").is_some() {
            println!("cycle {i}: threads {}, RSS {} KiB", threads(), rss_kib());
        }
    }
    // New pipelines (new element instances) each time, too.
    let pipelines: usize = std::env::var("SKP_NEW_PIPELINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for i in 0..pipelines {
        let q = launch(&desc);
        let n = count_buffers(&q, "sink");
        play_then_stop(&q, &n, 3);
        if std::env::var_os("SKP_NEW_PIPELINES").is_some() {
            println!("pipeline {i}: threads {}, RSS {} KiB", threads(), rss_kib());
        }
    }
    // Idle task-pool threads may take a moment to exit.
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads() > t0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (t1, m1) = (threads(), rss_kib());
    println!(
        "state cycles: threads {t0} -> {t1}, RSS {m0} -> {m1} KiB after {cycles} PLAYING->NULL->PLAYING \
         cycles and {pipelines} new pipelines"
    );
    assert!(t1 <= t0 + 1, "threads leaked: {t0} -> {t1}");
    assert!(m1 <= m0 + 32 * 1024, "memory grew: {m0} -> {m1} KiB");
    let lines = json_lines(&json);
    assert!(lines.len() >= 3, "the last run's records");
}

// ---------------------------------------------------------------------------------------
// 4. Soak.

/// `SKP_SOAK_FRAMES` frames (10,000 by default), every one inferred, through the whole
/// element (in Y444_10LE, x264enc's default: conversion to RGB and drawing by blending, the
/// paths that keep buffers across frames; messages, JSON lines), then the track element's
/// smoothing (which rewrites the metadata of every frame); RSS must stay
/// flat after the warm-up. Run it with
/// `cargo test -p gst-plugin-stablekeypoints --test reliability -- --ignored soak`.
#[test]
#[ignore = "long: run with --ignored (test.sh runs a bounded one)"]
fn soak_rss_stays_flat() {
    if !isolated("soak_rss_stays_flat") {
        return;
    }
    let frames: u64 = std::env::var("SKP_SOAK_FRAMES")
        .ok()
        .map(|v| v.parse().expect("SKP_SOAK_FRAMES is a number"))
        .unwrap_or(10_000);
    assert!(frames >= 100, "SKP_SOAK_FRAMES must be at least 100");
    let json = scratch().join("soak.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=Y444_10LE,width=64,height=48,framerate=30/1 \
         ! stablekeypoints name=skp {} draw=true draw-ids=true ! stablekeypointstrack smoothing=one-euro \
         ! stablekeypointspublish post-messages=true location={} ! fakesink name=sink sync=false",
        props(),
        json.display()
    );
    let p = launch(&desc);
    let step = (frames / 20).max(1);
    let warmup = (frames / 10).max(50);
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    {
        let pad = p.by_name("sink").unwrap().static_pad("sink").unwrap();
        let count = AtomicU64::new(0);
        let s = samples.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let i = count.fetch_add(1, Ordering::SeqCst) + 1;
            if i == warmup || i.is_multiple_of(step) || i == frames {
                s.lock().unwrap().push((i, rss_kib()));
            }
            gst::PadProbeReturn::Ok
        });
    }
    let start_rss = rss_kib();
    let started = Instant::now();
    p.set_state(gst::State::Playing).unwrap();
    // The bus is drained all along (one message per frame).
    wait_eos_or_error(&p, Duration::from_secs(frames * 2 + 120)).unwrap();
    let elapsed = started.elapsed();
    let stats = p
        .by_name("skp")
        .unwrap()
        .property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    let samples = samples.lock().unwrap().clone();
    let warm = samples.iter().find(|(i, _)| *i == warmup).unwrap().1;
    let end = samples.last().unwrap().1;
    let peak = samples
        .iter()
        .filter(|(i, _)| *i >= warmup)
        .map(|s| s.1)
        .max()
        .unwrap();
    println!(
        "soak: {frames} frames in {:.1} s ({:.1} ms/frame); RSS before start {start_rss} KiB, \
         after {warmup} frames (warm-up) {warm} KiB, peak after warm-up {peak} KiB, at the end {end} KiB",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / frames as f64
    );
    println!("soak: RSS samples (frame, KiB): {samples:?}");
    assert_eq!(stats.get::<u64>("frames-processed").unwrap(), frames);
    assert_eq!(
        stats.get::<u64>("frames-inferred").unwrap(),
        frames,
        "every frame inferred: {stats}"
    );
    assert_eq!(json_lines(&json).len() as u64, frames);
    let bound = 8 * 1024;
    assert!(
        peak <= warm + bound,
        "RSS grew by {} KiB after the warm-up (bound {bound} KiB)",
        peak - warm
    );
}

// ---------------------------------------------------------------------------------------
// 6. The JSON lines file under faults.

#[test]
fn json_lines_stay_whole_when_the_pipeline_errors_mid_stream() {
    init();
    let info = video_info(F::Rgb, 32, 24);
    // Our element fails (a truncated buffer cannot be mapped) after 3 good frames.
    let json = scratch().join("error-mid-stream.jsonl");
    let p = launch(&format!(
        "appsrc name=src format=time caps={} ! stablekeypoints {} ! stablekeypointspublish location={} \
         ! fakesink",
        info.to_caps().unwrap().to_string().replace(' ', ""),
        props(),
        json.display()
    ));
    let src = p.by_name("src").unwrap();
    let push = |buf: gst::Buffer| src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buf]);
    p.set_state(gst::State::Playing).unwrap();
    for i in 0..3 {
        let flow = push(timed(
            Pixels::random(F::Rgb, 32, 24, i).standard_buffer(&info, i),
            i,
        ));
        assert_eq!(flow, gst::FlowReturn::Ok);
    }
    let _ = push(timed(gst::Buffer::with_size(100).unwrap(), 3));
    for i in 4..6 {
        let _ = push(timed(
            Pixels::random(F::Rgb, 32, 24, i).standard_buffer(&info, i),
            i,
        ));
    }
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    let err =
        wait_eos_or_error(&p, Duration::from_secs(60)).expect_err("a truncated buffer is an error");
    p.set_state(gst::State::Null).unwrap();
    assert!(err.0.contains("Keypoint inference failed"), "{err:?}");
    let lines = json_lines(&json);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["frame"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // Downstream fails after 4 buffers.
    let json = scratch().join("downstream-error.jsonl");
    let p = launch(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=RGB,width=24,height=16 \
         ! stablekeypoints {} ! stablekeypointspublish location={} ! identity error-after=4 ! fakesink",
        props(),
        json.display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    let err = wait_eos_or_error(&p, Duration::from_secs(60)).expect_err("identity errors");
    p.set_state(gst::State::Null).unwrap();
    assert!(err.2.starts_with("identity"), "{err:?}");
    let lines = json_lines(&json);
    assert!((4..=5).contains(&lines.len()), "{} lines", lines.len());
}

#[test]
fn json_lines_stay_whole_when_set_to_null_without_eos() {
    let json = scratch().join("null-without-eos.jsonl");
    let p = launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,format=BGRx,width=24,height=16,framerate=50/1 \
         ! stablekeypoints {} inference-interval=3 ! stablekeypointstrack gap-policy=interpolate \
         ! stablekeypointspublish location={} ! fakesink name=sink",
        props(),
        json.display()
    ));
    let n = count_buffers(&p, "sink");
    play_then_stop(&p, &n, 8);
    let lines = json_lines(&json);
    assert!(lines.len() >= 8, "{} lines", lines.len());
    let frames: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
}

#[test]
fn json_write_failure_leaves_only_whole_lines() {
    if !isolated("json_write_failure_leaves_only_whole_lines") {
        return;
    }
    // A file size limit makes a write stop in the middle of a line (disk-full alike).
    let json = scratch().join("limited.jsonl");
    let pipeline = format!(
        "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=24,height=16 \
         ! stablekeypoints {} ! stablekeypointspublish location={} ! fakesink",
        props(),
        json.display()
    );
    model_dir(); // written before the limit applies
    let p = launch(&pipeline);
    let limit: u64 = 2500;
    // SAFETY (both blocks): plain libc calls; SIGXFSZ is ignored so that the write fails
    // with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let outcome = p
        .set_state(gst::State::Playing)
        .map(|_| wait_eos_or_error(&p, Duration::from_secs(60)));
    let _ = p.set_state(gst::State::Null);
    // The limit applies to every file this process writes, including a redirected
    // stdout/stderr: lift it before printing or failing.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let err = outcome.unwrap().expect_err("the write fails");
    println!("write failure: {err:?}");
    assert!(
        err.0.to_lowercase().contains("cannot write keypoints to")
            && err.0.contains(&json.display().to_string()),
        "{err:?}"
    );
    let len = std::fs::metadata(&json).unwrap().len();
    assert!(len > 0 && len <= limit, "{len} bytes");
    let lines = json_lines(&json);
    assert!(!lines.is_empty());
}

#[test]
fn a_frame_s_noise_is_keyed_by_its_index_since_the_start_or_the_last_flush() {
    // Frame i's noise comes from (seed, i), i counting every frame since the start or the
    // last flush (inferred or not): with inference-interval=2, frames 0, 2, 4 are inferred
    // with keys 0, 2, 4, whatever was inferred before them.
    let info = video_info(F::Rgb, 32, 24);
    let frame = |i: u64| Pixels::random(F::Rgb, 32, 24, 700 + i);
    for extra in ["inference-interval=2", "inference-interval=2 batch-size=2"] {
        let mut hn = harness(&format!("{extra} gap-policy=none"), info.to_caps().unwrap());
        let mut det = core_detector();
        let mut first = Vec::new();
        for i in 0..5 {
            hn.push(timed(frame(i).standard_buffer(&info, i), i))
                .unwrap();
        }
        hn.push_event(gst::event::Eos::new());
        let out = pull_all(&mut hn);
        assert_eq!(out.len(), 5, "{extra}");
        for i in [0u64, 2, 4] {
            let want = frame(i).detect(&mut det, &info, i);
            let m = read_meta(&out[i as usize]);
            assert_matches_core(&m, &want, &format!("{extra}: frame {i}"));
            first.push(m);
        }
        // Key 1 on frame 2 (what a shared stream would have given it) differs.
        let other = frame(2).detect(&mut det, &info, 1);
        let scores =
            |k: &[stablekeypoints::Keypoint]| k.iter().map(|k| k.score).collect::<Vec<_>>();
        assert_ne!(
            first[1]
                .keypoints
                .iter()
                .map(|k| k.confidence)
                .collect::<Vec<_>>(),
            scores(&other.keypoints),
            "{extra}"
        );
    }
    // After a flush the count starts again: the same frames give the same keypoints.
    let mut hn = harness("", info.to_caps().unwrap());
    let run = |hn: &mut gst_check::Harness| -> Vec<FrameKeypoints> {
        for i in 0..3 {
            hn.push(timed(frame(i).standard_buffer(&info, i), i))
                .unwrap();
        }
        pull_all(hn).iter().map(|b| read_meta(b)).collect()
    };
    let a = run(&mut hn);
    assert!(hn.push_event(gst::event::FlushStart::new()));
    assert!(hn.push_event(gst::event::FlushStop::new(true)));
    assert!(hn.push_event(segment_event()));
    let b = run(&mut hn);
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.keypoints, y.keypoints);
    }
}

#[test]
fn count_properties_have_the_cli_s_bounds() {
    init();
    let e = gst::ElementFactory::make("stablekeypoints")
        .build()
        .unwrap();
    for (name, max) in [
        ("augmentations", stablekeypoints::limits::MAX_AUGMENTATIONS),
        ("batch-size", stablekeypoints::limits::MAX_BATCH_SIZE),
    ] {
        let p = e.find_property(name).unwrap();
        let p = p.downcast_ref::<gst::glib::ParamSpecUInt>().unwrap();
        assert_eq!((p.minimum(), p.maximum()), (1, max as u32), "{name}");
    }
    // A value past the bound that reaches the detector anyway is refused at start.
    let tokens = Tokens::load(&tokens_path()).unwrap();
    let model = Arc::new(
        Model::load(
            model_dir(),
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap(),
    );
    let opts = DetectOptions {
        augmentations: stablekeypoints::limits::MAX_AUGMENTATIONS + 1,
        ..Default::default()
    };
    let e = Detector::new(model, &tokens, opts)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("augmentations 65") && e.contains("between 1 and 64"),
        "{e}"
    );
}
