//! Set-up shared by the element's test binaries: GStreamer with the plugin registered, a
//! tiny generated model, and the core detector the element's output is compared with.
#![allow(dead_code)] // each test binary uses its own subset

#[path = "../../../tests/common/coco.rs"]
pub mod coco;
#[path = "../../../tests/common/temp.rs"]
pub mod temp;

use gst::prelude::*;
use gst_video::prelude::*;
use gststablekeypoints::meta::FrameKeypoints;
use stablekeypoints::eval::{PoseModel, Regressor};
use stablekeypoints::init::{init_model, TinyArch};
use stablekeypoints::{DetectOptions, Detector, Model, PixelFormat, Tokens};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

pub const NUM_KEYPOINTS: usize = 6;
pub const NUM_TOKENS: usize = 24;
/// `cross_attention_dim` of the tiny SD1 model.
pub const CONTEXT_DIM: usize = 32;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gststablekeypoints::plugin_register_static().expect("register plugin");
    });
}

/// Scratch directory of this test process (under cargo's target/tmp).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = format!("{}-", env!("CARGO_CRATE_NAME"));
        sweep_ended_runs(root, &prefix);
        let d = root.join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Removes the scratch folders of earlier test processes that have ended (a folder is named
/// by its process id), so runs do not pile up: a process cannot remove its own at exit.
fn sweep_ended_runs(root: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The tiny model directory (with tokens.safetensors), generated once per process.
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch().join("model");
        init_model(&d, TinyArch::TinySd1, 7, NUM_TOKENS, NUM_KEYPOINTS).expect("init tiny model");
        d
    })
}

pub fn tokens_path() -> PathBuf {
    model_dir().join("tokens.safetensors")
}

/// The folder for `GST_PLUGIN_PATH` of child processes, made once per process: only our
/// library in it (GStreamer scans plugin paths recursively, and cargo's deps folder, next
/// to the test binary, holds unrelated shared objects).
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let name = "libgststablekeypoints.so";
        let so = [deps.join(name), deps.parent().unwrap().join(name)]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{name} not found next to {}", exe.display()));
        let dir = scratch().join("plugin-path");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&so, dir.join(name)).unwrap();
        dir
    })
}

/// `stablekeypoints` on the tiny model, with the `extra` properties (`name=value` pairs).
pub fn inference_element(extra: &str) -> gst::Element {
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

/// `format` at `w` x `h`, 25 frames a second.
pub fn video_info(format: gst_video::VideoFormat, w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// `buf` with the timestamps of frame `i` at 25 frames a second.
pub fn timed(mut buf: gst::Buffer, i: u64) -> gst::Buffer {
    let b = buf.make_mut();
    b.set_pts(gst::ClockTime::from_mseconds(40 * i));
    b.set_duration(gst::ClockTime::from_mseconds(40));
    buf
}

/// The element's `model` and `tokens` properties for the tiny model.
pub fn props() -> String {
    format!(
        "model={} tokens={}",
        model_dir().display(),
        tokens_path().display()
    )
}

/// A fresh core detector with these options on the tiny model (loaded once).
pub fn core_detector_with(opts: DetectOptions) -> Detector {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        Arc::new(
            Model::load(
                model_dir(),
                &candle_core::Device::Cpu,
                candle_core::DType::F32,
            )
            .unwrap(),
        )
    });
    let tokens = Tokens::load(&tokens_path()).unwrap();
    Detector::new(model.clone(), &tokens, opts).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The core's name for a GStreamer video format.
pub fn core_format(f: gst_video::VideoFormat) -> PixelFormat {
    use gst_video::VideoFormat as F;
    match f {
        F::Rgb => PixelFormat::Rgb,
        F::Bgr => PixelFormat::Bgr,
        F::Rgba => PixelFormat::Rgba,
        F::Bgra => PixelFormat::Bgra,
        F::Rgbx => PixelFormat::Rgbx,
        F::Bgrx => PixelFormat::Bgrx,
        F::Argb => PixelFormat::Argb,
        F::Abgr => PixelFormat::Abgr,
        F::Xrgb => PixelFormat::Xrgb,
        F::Xbgr => PixelFormat::Xbgr,
        F::I420 => PixelFormat::I420,
        F::Nv12 => PixelFormat::Nv12,
        // Read as I420 with the chroma planes swapped.
        F::Yv12 => PixelFormat::I420,
        other => panic!("no core format for {other:?}"),
    }
}

/// The formats of the element's sink pad template, in order.
pub fn element_formats() -> Vec<gst_video::VideoFormat> {
    init();
    let factory = gst::ElementFactory::find("stablekeypoints").unwrap();
    let template = factory
        .static_pad_templates()
        .into_iter()
        .find(|t| t.name_template() == "sink")
        .unwrap();
    let caps = template.caps();
    let list = caps
        .structure(0)
        .unwrap()
        .get::<gst::List>("format")
        .unwrap();
    list.iter()
        .map(|v| v.get::<&str>().unwrap().parse().unwrap())
        .collect()
}

/// The formats the core reads itself (the others go through GStreamer's converter).
pub fn is_native(f: gst_video::VideoFormat) -> bool {
    use gst_video::VideoFormat as F;
    matches!(
        f,
        F::Rgb
            | F::Bgr
            | F::Rgba
            | F::Bgra
            | F::Rgbx
            | F::Bgrx
            | F::Argb
            | F::Abgr
            | F::Xrgb
            | F::Xbgr
            | F::I420
            | F::Yv12
            | F::Nv12
    )
}

/// (bytes per row without padding, rows) of each plane of frames of `info`, for formats
/// whose planes are rows of samples; `None` for tiled formats, formats packing pixels in
/// groups (v210, IYU1, ...) and paletted ones.
pub fn plane_rows(info: &gst_video::VideoInfo) -> Option<Vec<(usize, usize)>> {
    let f = info.format_info();
    // IYU1 packs 4 pixels into 6 bytes.
    if f.is_complex()
        || f.is_tiled()
        || f.has_palette()
        || f.format() == gst_video::VideoFormat::Iyu1
    {
        return None;
    }
    let mut planes = vec![(0usize, 0usize); f.n_planes() as usize];
    for c in 0..f.n_components() as usize {
        let (w, h) = (
            f.scale_width(c as u8, info.width()) as usize,
            f.scale_height(c as u8, info.height()) as usize,
        );
        // Whole pixel strides (GStreamer's offsets within a packed pixel are not always
        // filled in, e.g. Y412).
        let end = f.pixel_stride()[c] as usize * w;
        let p = &mut planes[f.plane()[c] as usize];
        *p = (p.0.max(end), p.1.max(h));
    }
    Some(planes)
}

fn rgb_info(like: &gst_video::VideoInfo) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, like.width(), like.height())
        .fps(like.fps())
        .interlace_mode(like.interlace_mode())
        .build()
        .unwrap()
}

/// `src` (frames of `from`) converted to `to` by GStreamer's converter, without dithering.
pub fn convert_frame(
    src: &gst::BufferRef,
    from: &gst_video::VideoInfo,
    to: &gst_video::VideoInfo,
) -> gst::Buffer {
    let mut config = gst_video::VideoConverterConfig::new();
    config.set_dither_method(gst_video::VideoDitherMethod::None);
    let conv = gst_video::VideoConverter::new(from, to, Some(config)).unwrap();
    let mut out = gst::Buffer::with_size(to.size()).unwrap();
    {
        let src = gst_video::VideoFrameRef::from_buffer_ref_readable(src, from).unwrap();
        let mut dest =
            gst_video::VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), to).unwrap();
        conv.frame_ref(&src, &mut dest);
    }
    out
}

/// A frame of `info` holding a random RGB picture (so that every sample is valid, which
/// random bytes are not for formats of more than 8 bits), timestamped as frame `i` at 25 fps.
pub fn random_frame(info: &gst_video::VideoInfo, seed: u64) -> gst::Buffer {
    let rgb = rgb_info(info);
    let picture = gst::Buffer::from_mut_slice(noise_bytes(rgb.size(), seed));
    convert_frame(&picture, &rgb, info)
}

/// A frame of `info` of one colour.
pub fn uniform_frame(info: &gst_video::VideoInfo, colour: [u8; 3]) -> gst::Buffer {
    let rgb = rgb_info(info);
    let bytes: Vec<u8> = colour.iter().copied().cycle().take(rgb.size()).collect();
    convert_frame(&gst::Buffer::from_mut_slice(bytes), &rgb, info)
}

/// Packed RGB of a frame (GStreamer's conversion), rows without padding: bytes and stride.
pub fn rgb_of(buf: &gst::BufferRef, info: &gst_video::VideoInfo) -> (Vec<u8>, usize) {
    let rgb = rgb_info(info);
    let out = convert_frame(buf, info, &rgb);
    let map = out.map_readable().unwrap();
    let (row, stride) = (3 * info.width() as usize, rgb.stride()[0] as usize);
    let bytes = (0..info.height() as usize)
        .flat_map(|y| map[y * stride..y * stride + row].iter().copied())
        .collect();
    (bytes, row)
}

/// The core detector on the frame converted to RGB.
pub fn core_on_rgb(
    det: &mut Detector,
    buf: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    key: u64,
) -> stablekeypoints::Detection {
    let (rgb, stride) = rgb_of(buf, info);
    let f = stablekeypoints::FrameRef::packed(
        PixelFormat::Rgb,
        info.width() as usize,
        info.height() as usize,
        &rgb,
        stride,
    )
    .unwrap();
    det.detect(vec![stablekeypoints::Item::frame(f, key)])
        .unwrap()
        .remove(0)
}

pub fn read_meta(buf: &gst::BufferRef) -> gststablekeypoints::meta::FrameKeypoints {
    gststablekeypoints::meta::FrameKeypoints::from_buffer(buf)
        .expect("buffer carries keypoint metadata")
        .expect("metadata is well formed")
}

/// The element's keypoints equal the core's detection, and are in this frame's pixel
/// coordinates.
pub fn assert_matches_core(
    meta: &gststablekeypoints::meta::FrameKeypoints,
    det: &stablekeypoints::Detection,
    what: &str,
) {
    assert_eq!(
        (meta.source_width as usize, meta.source_height as usize),
        (det.width, det.height),
        "{what}: source size"
    );
    assert_eq!(meta.keypoints.len(), det.keypoints.len(), "{what}");
    for (i, (m, k)) in meta.keypoints.iter().zip(&det.keypoints).enumerate() {
        assert_eq!(m.id as usize, k.id, "{what}");
        let (px, py) = m.pixel(meta.source_width, meta.source_height);
        let (cx, cy) = det.pixel(i);
        assert!(
            (px - cx).abs() < 1e-3 && (py - cy).abs() < 1e-3,
            "{what}: keypoint {i} at ({px}, {py}) px, core says ({cx}, {cy})"
        );
        assert!(
            (0.0..=det.width as f32).contains(&px) && (0.0..=det.height as f32).contains(&py),
            "{what}: keypoint {i} ({px}, {py}) outside the frame"
        );
        assert!(
            (m.confidence - k.score).abs() <= 1e-6 * k.score.abs().max(1.0),
            "{what}: {m:?} vs {k:?}"
        );
    }
}

/// A Harness around a chain of elements in gst-launch syntax (e.g. `stablekeypoints
/// name=skp ... ! stablekeypointstrack ...`), fed and drained at its ends.
pub fn chain_harness(desc: &str) -> gst_check::Harness {
    init();
    gst_check::Harness::new_parse(desc)
}

/// The inference element of a harness: the element itself, or the one named `skp` in a
/// chain.
pub fn inference_of(hn: &gst_check::Harness) -> gst::Element {
    let element = hn.element().expect("harness element");
    match element.downcast_ref::<gst::Bin>() {
        Some(bin) => bin
            .by_name("skp")
            .expect("an element named skp in the chain"),
        None => element,
    }
}

// ---------------------------------------------------------------------------------------
// A pose file realising hand-picked landmarks, for the pose element and `pose=`.

/// Landmarks of the test pose, by hand from the keypoints `k` (normalised, token order):
/// a = k0, b = k0 mirrored through the centre, c = (x of k1, 1 - y of k2),
/// d = (mean of the x of k3 and k4, y of k5).
pub fn hand_landmarks(k: &[(f64, f64)]) -> Vec<(f64, f64)> {
    vec![
        k[0],
        (1.0 - k[0].0, 1.0 - k[0].1),
        (k[1].0, 1.0 - k[2].1),
        ((k[3].0 + k[4].0) / 2.0, k[5].1),
    ]
}

pub const POSE_NAMES: [&str; 4] = ["a", "b", "c", "d"];
pub const POSE_SKELETON: [[usize; 2]; 3] = [[0, 1], [1, 2], [2, 3]];

/// Writes a pose file as `eval --save-regressor` does, with weights realising
/// [`hand_landmarks`] (`0.5 + (x - 0.5) W`), fitted with `indices` on `k` keypoints.
pub fn write_pose(name: &str, k: usize, indices: Vec<usize>) -> PathBuf {
    let l = POSE_NAMES.len();
    let mut w = vec![0f64; 2 * k * 2 * l];
    // Row 2 * kp + axis, column 2 * landmark + axis.
    let mut set = |kp: usize, axis: usize, lm: usize, lm_axis: usize, v: f64| {
        if kp < k {
            w[(2 * kp + axis) * 2 * l + 2 * lm + lm_axis] = v;
        }
    };
    set(0, 0, 0, 0, 1.0);
    set(0, 1, 0, 1, 1.0);
    set(0, 0, 1, 0, -1.0);
    set(0, 1, 1, 1, -1.0);
    set(1, 0, 2, 0, 1.0);
    set(2, 1, 2, 1, -1.0);
    set(3, 0, 3, 0, 0.5);
    set(4, 0, 3, 0, 0.5);
    set(5, 1, 3, 1, 1.0);
    let reg = Regressor {
        num_keypoints: k,
        num_landmarks: l,
        weights: w,
    };
    let pose = PoseModel::new(
        &reg,
        indices,
        Some(POSE_NAMES.iter().map(|s| s.to_string()).collect()),
        POSE_SKELETON.to_vec(),
    )
    .unwrap();
    let path = scratch().join(name);
    pose.save(&path).unwrap();
    path
}

pub fn test_pose() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let indices = Tokens::load(&tokens_path()).unwrap().indices;
        write_pose("pose.json", NUM_KEYPOINTS, indices)
    })
}

/// The landmarks the core computes from the metadata's keypoints, and by hand.
pub fn expected_landmarks(meta: &FrameKeypoints) -> (Vec<[f64; 2]>, Vec<(f64, f64)>) {
    let k: Vec<[f64; 2]> = meta
        .keypoints
        .iter()
        .map(|k| [k.x as f64, k.y as f64])
        .collect();
    let core = PoseModel::load(test_pose())
        .unwrap()
        .regressor()
        .unwrap()
        .predict(&k);
    let hand = hand_landmarks(&k.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>());
    (core, hand)
}

// ---------------------------------------------------------------------------------------
// Drawing checks.

/// Pixels (x, y) whose bytes differ between two frames, per plane with its subsampling.
pub fn changed_pixels(
    a: &gst::BufferRef,
    b: &gst::BufferRef,
    info: &gst_video::VideoInfo,
) -> Vec<(usize, f32, f32)> {
    let fa = gst_video::VideoFrameRef::from_buffer_ref_readable(a, info).unwrap();
    let fb = gst_video::VideoFrameRef::from_buffer_ref_readable(b, info).unwrap();
    let mut out = Vec::new();
    for plane in 0..fa.n_planes() {
        let stride = fa.plane_stride()[plane as usize] as usize;
        let (pa, pb) = (fa.plane_data(plane).unwrap(), fb.plane_data(plane).unwrap());
        let (sub, bpp) = match (info.format(), plane) {
            (gst_video::VideoFormat::I420, 0) | (gst_video::VideoFormat::Nv12, 0) => (1, 1),
            (gst_video::VideoFormat::I420, _) => (2, 1),
            (gst_video::VideoFormat::Nv12, _) => (2, 2),
            _ => (1, info.format_info().pixel_stride()[0] as usize),
        };
        let rows = fa.plane_height(plane) as usize;
        let cols = (info.width() as usize).div_ceil(sub);
        for y in 0..rows {
            for x in 0..cols {
                let p = y * stride + x * bpp;
                if pa[p..p + bpp] != pb[p..p + bpp] {
                    // Centre of the (sub-sampled) sample in frame pixels.
                    out.push((
                        plane as usize,
                        ((x * sub) as f32 + sub as f32 / 2.0),
                        (y * sub) as f32 + sub as f32 / 2.0,
                    ));
                }
            }
        }
    }
    out
}

/// Squared distance from (x, y) to the segment p-q.
pub fn segment_dist2(x: f32, y: f32, p: (f32, f32), q: (f32, f32)) -> f32 {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((x - p.0) * dx + (y - p.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (x - p.0 - t * dx).powi(2) + (y - p.1 - t * dy).powi(2)
}

// ---------------------------------------------------------------------------------------
// Pipelines.

/// The element's keypoint messages among a pipeline's bus messages, in order.
pub fn keypoint_messages(msgs: &[gst::Message]) -> Vec<&gst::StructureRef> {
    msgs.iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == gststablekeypoints::MESSAGE_NAME),
            _ => None,
        })
        .collect()
}

/// Runs a gst-launch style pipeline to EOS, returning its bus messages or the error text.
pub fn run_pipeline(
    desc: &str,
    probe_sink: Option<&str>,
) -> Result<(Vec<gst::Message>, Vec<gst::Buffer>), String> {
    init();
    let pipeline = gst::parse::launch(desc).map_err(|e| e.to_string())?;
    let pipeline = pipeline.downcast::<gst::Pipeline>().unwrap();
    let buffers = Arc::new(Mutex::new(Vec::new()));
    if let Some(name) = probe_sink {
        let sink = pipeline.by_name(name).expect("named sink");
        let pad = sink.static_pad("sink").unwrap();
        let store = buffers.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                store.lock().unwrap().push(b.copy());
            }
            gst::PadProbeReturn::Ok
        });
    }
    let bus = pipeline.bus().unwrap();
    let res = pipeline.set_state(gst::State::Playing);
    let mut msgs = Vec::new();
    // A failed state change still posts its error message: read it either way.
    let mut outcome = res
        .map(|_| ())
        .map_err(|_| "state change failed".to_string());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                msgs.push(msg);
                break;
            }
            gst::MessageView::Error(e) => {
                outcome = Err(format!("{}\n{:?}", e.error(), e.debug()));
                break;
            }
            _ => msgs.push(msg),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    outcome?;
    if !msgs
        .iter()
        .any(|m| matches!(m.view(), gst::MessageView::Eos(_)))
    {
        return Err("no EOS within 120 s".into());
    }
    let bufs = std::mem::take(&mut *buffers.lock().unwrap());
    Ok((msgs, bufs))
}

/// The test pose (`test_pose`) recording `hash` as its tokens' fingerprint.
pub fn pose_with_hash(name: &str, hash: &str) -> PathBuf {
    let mut pose = PoseModel::load(test_pose()).unwrap();
    pose.tokens_hash = Some(hash.into());
    let path = scratch().join(name);
    pose.save(&path).unwrap();
    path
}

/// Pose files an element must refuse, each with what its error names: missing, garbage, too
/// few keypoints, other token indices, other tokens (hash). Files are named `{prefix}-*.json`.
pub fn bad_pose_cases(prefix: &str) -> Vec<(PathBuf, &'static str)> {
    let indices = Tokens::load(&tokens_path()).unwrap().indices;
    let garbage = scratch().join(format!("{prefix}-garbage.json"));
    std::fs::write(&garbage, "{\"format\": \"stablekeypoints-pose\", ").unwrap();
    let mut reversed = indices.clone();
    reversed.reverse();
    vec![
        (scratch().join("no-such-pose.json"), "No such file"),
        (garbage, "invalid pose file"),
        (
            write_pose(
                &format!("{prefix}-5kp.json"),
                NUM_KEYPOINTS - 1,
                indices[..NUM_KEYPOINTS - 1].to_vec(),
            ),
            "reads 5 keypoints",
        ),
        (
            write_pose(&format!("{prefix}-reversed.json"), NUM_KEYPOINTS, reversed),
            "token indices",
        ),
        // Same indices, other tokens.
        (
            pose_with_hash(&format!("{prefix}-other-hash.json"), "0123456789abcdef"),
            "hash 0123456789abcdef",
        ),
    ]
}
