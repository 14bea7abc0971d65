//! Element tests on a tiny generated model: Harness for buffer-exact checks, real pipelines
//! (including the literal `filesrc ! decodebin ! stablekeypoints ! fakesink`) for the rest.

use gst::prelude::*;
use gst_video::prelude::*;
use gststablekeypoints::meta::{FrameKeypoints, Origin, ROI_TYPE};
use stablekeypoints::frame::YuvMatrix;
use stablekeypoints::{CropMode, DetectOptions, Detector, FrameRef, Tokens};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod common;
use common::*;

/// A fresh core detector with the element's default options and this crop mode.
fn core_detector(crop: CropMode) -> Detector {
    core_detector_with(DetectOptions {
        crop,
        ..Default::default()
    })
}

fn video_info(format: gst_video::VideoFormat, w: u32, h: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// A frame buffer with random content and timestamps of frame `i` at 25 fps.
fn frame_buffer(info: &gst_video::VideoInfo, i: u64) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(noise_bytes(info.size(), i + 1));
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i));
        b.set_duration(gst::ClockTime::from_mseconds(40));
    }
    buf
}

/// Runs the core detector on a mapped buffer exactly as the element sees it.
fn core_detect(
    det: &mut Detector,
    buf: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    key: u64,
) -> stablekeypoints::Detection {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).unwrap();
    let p = frame.planes_data();
    let s = frame.plane_stride();
    let st = |i: usize| s.get(i).map_or(0, |&v| v as usize);
    let mut f = FrameRef::new(
        core_format(info.format()),
        info.width() as usize,
        info.height() as usize,
        [(p[0], st(0)), (p[1], st(1)), (p[2], st(2))],
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

fn read_meta(buf: &gst::BufferRef) -> FrameKeypoints {
    FrameKeypoints::from_buffer(buf)
        .expect("buffer carries keypoint metadata")
        .expect("metadata is well formed")
}

fn assert_matches_core(meta: &FrameKeypoints, det: &stablekeypoints::Detection) {
    assert_eq!(meta.keypoints.len(), det.keypoints.len());
    for (m, k) in meta.keypoints.iter().zip(&det.keypoints) {
        assert_eq!(m.id as usize, k.id);
        assert!(
            (m.x - k.x).abs() < 1e-6 && (m.y - k.y).abs() < 1e-6,
            "{m:?} vs {k:?}"
        );
        assert!(
            (m.confidence - k.score).abs() <= 1e-6 * k.score.abs().max(1.0),
            "{m:?} vs {k:?}"
        );
    }
}

fn harness(
    extra: &str,
    format: gst_video::VideoFormat,
    w: u32,
    h: u32,
) -> (gst_check::Harness, gst_video::VideoInfo) {
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
    let mut hn = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    let info = video_info(format, w, h);
    hn.set_src_caps(info.to_caps().unwrap());
    (hn, info)
}

/// An encoded clip (MJPEG in AVI: only -base and -good plugins) of `n` frames.
fn encoded_clip(name: &str, w: u32, h: u32, n: u32) -> PathBuf {
    let path = scratch().join(name);
    run_pipeline(
        &format!(
            "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,width={w},height={h},framerate=10/1 \
             ! jpegenc ! avimux ! filesink location={}",
            path.display()
        ),
        None,
    )
    .expect("encode test clip");
    path
}

#[test]
fn gst_inspect_lists_the_element_and_its_properties() {
    // The cdylib is built with the rlib this test links, next to the test binary's deps.
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = "libgststablekeypoints.so";
    let so = [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found next to {}", exe.display()));
    // Only our plugin in the path: the deps folder holds unrelated shared objects.
    let dir = scratch().join("plugin-path");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).unwrap();
    let out = std::process::Command::new("gst-inspect-1.0")
        .arg("stablekeypoints")
        .env("GST_PLUGIN_PATH", &dir)
        .env("GST_REGISTRY", scratch().join("registry.bin"))
        .output()
        .expect("run gst-inspect-1.0 (gstreamer1.0-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gst-inspect failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Filter/Analyzer/Video"), "{text}");
    // Property lines read `  name   : blurb`.
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    for p in [
        "model",
        "tokens",
        "pose",
        "device",
        "input-size",
        "crop-mode",
        "augmentations",
        "seed",
        "noise",
        "noise-level",
        "batch-size",
        "batch-timeout",
        "inference-interval",
        "gap-policy",
        "keypoint-threshold",
        "draw",
        "draw-ids",
        "radius",
        "line-width",
        "stats",
    ] {
        assert!(listed.contains(&p), "property {p} missing:\n{text}");
    }
    // Moved to stablekeypointstrack and stablekeypointspublish, or a testing aid that is not
    // a property.
    for p in [
        "post-messages",
        "json-location",
        "smoothing",
        "min-cutoff",
        "beta",
        "d-cutoff",
        "inference-delay-ms",
    ] {
        assert!(!listed.contains(&p), "property {p} still listed:\n{text}");
    }
    for f in ["I420", "NV12", "RGB", "BGRx"] {
        assert!(text.contains(f), "{f} missing from the caps");
    }
}

#[test]
fn decodebin_pipeline_runs_to_eos_with_metadata_matching_the_core() {
    let (w, h, n) = (160u32, 96u32, 6usize);
    let clip = encoded_clip("clip.avi", w, h, n as u32);
    let mut per_mode = Vec::new();
    for (mode, crop) in [
        ("letterbox", CropMode::Letterbox),
        ("center-crop", CropMode::CenterCrop),
    ] {
        let desc = format!(
            "filesrc location={} ! decodebin ! stablekeypoints {} crop-mode={mode} ! fakesink name=sink",
            clip.display(),
            props()
        );
        let (_, bufs) = run_pipeline(&desc, Some("sink")).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(bufs.len(), n, "{mode}: every frame reaches the sink");
        // The decoder's caps, to run the core on the very same bytes.
        let caps = gst::parse::launch(&format!(
            "filesrc location={} ! decodebin ! fakesink name=sink",
            clip.display()
        ))
        .ok()
        .and_then(|p| {
            let p = p.downcast::<gst::Pipeline>().ok()?;
            p.set_state(gst::State::Paused).ok()?;
            let _ = p.state(gst::ClockTime::from_seconds(30));
            let caps = p.by_name("sink")?.static_pad("sink")?.current_caps();
            p.set_state(gst::State::Null).ok()?;
            caps
        })
        .expect("decoded caps");
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        let mut det = core_detector(crop);
        let mut first = None;
        for (i, b) in bufs.iter().enumerate() {
            let meta = read_meta(b);
            assert_eq!((meta.source_width, meta.source_height), (w, h));
            assert_eq!(meta.keypoints.len(), NUM_KEYPOINTS);
            assert_eq!(
                meta.semantic_tag,
                format!("stablekeypoints-{NUM_KEYPOINTS}-kp")
            );
            assert!(!meta.inferred);
            for k in &meta.keypoints {
                assert!(
                    (0.0..=1.0).contains(&k.x) && (0.0..=1.0).contains(&k.y),
                    "{mode}: {k:?}"
                );
            }
            let (rx, ry, rw, rh) = meta.rect;
            assert!(
                rw > 0 && rh > 0 && rx + rw <= w && ry + rh <= h,
                "{mode}: rect {:?}",
                meta.rect
            );
            assert_matches_core(&meta, &core_detect(&mut det, b, &info, i as u64));
            if i == 0 {
                first = Some(meta.keypoints.clone());
            }
        }
        per_mode.push(first.unwrap());
    }
    assert_ne!(per_mode[0], per_mode[1], "crop-mode has no effect");
}

#[test]
fn harness_metadata_equals_core_detection_rgb_i420_nv12() {
    use gst_video::VideoFormat as F;
    for (format, w, h) in [
        (F::Rgb, 96, 64),
        (F::I420, 70, 90),
        (F::Nv12, 64, 48),
        (F::Bgrx, 80, 80),
    ] {
        let (mut hn, info) = harness("", format, w, h);
        let mut det = core_detector(CropMode::Letterbox);
        for i in 0..3 {
            let input = frame_buffer(&info, i);
            let expected = core_detect(&mut det, &input, &info, i);
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            let meta = read_meta(&out);
            assert_eq!((meta.source_width, meta.source_height), (w, h));
            assert_matches_core(&meta, &expected);
        }
    }
}

/// `noise-level` picks the reference's DDIM timestep by index (-2 = t = 20) and
/// `crop-mode=stretch` resizes each axis on its own: the core with those options, which
/// tests/golden.rs and tests/fidelity.rs check against diffusers and PIL. The default
/// (-51) is the tokens file's timestep, which -1 (t = 0) equals for this file.
#[test]
fn noise_level_and_stretch_equal_the_core() {
    use gst_video::VideoFormat as F;
    let (w, h) = (96, 48);
    let run = |extra: &str, opts: DetectOptions| {
        let (mut hn, info) = harness(extra, F::Rgb, w, h);
        let mut det = core_detector_with(opts);
        let mut metas = Vec::new();
        for i in 0..2 {
            let input = frame_buffer(&info, i);
            let expected = core_detect(&mut det, &input, &info, i);
            hn.push(input).unwrap();
            let meta = read_meta(&hn.pull().unwrap());
            assert_matches_core(&meta, &expected);
            metas.push(meta);
        }
        (hn, metas)
    };
    let (hn, default) = run("", DetectOptions::default());
    let e = hn.element().unwrap();
    assert_eq!(e.property::<i32>("noise-level"), -51);
    let (_, t0) = run("noise-level=-1", DetectOptions::default());
    assert_eq!(default, t0);
    let (_, t20) = run(
        "noise-level=-2",
        DetectOptions {
            timestep: Some(20),
            ..Default::default()
        },
    );
    let (_, stretch) = run(
        "noise-level=-2 crop-mode=stretch",
        DetectOptions {
            timestep: Some(20),
            crop: CropMode::Stretch,
            ..Default::default()
        },
    );
    assert_ne!(t20, default, "noise-level has no effect");
    assert_ne!(stretch, t20, "crop-mode=stretch has no effect");
}

/// `tokens=DIR` with the reference's `embedding.pt` and `indices.pt` (written by
/// `torch.save` in the golden script) detects as the core with that directory.
#[test]
fn tokens_directory_of_the_references_files() {
    use gst_video::VideoFormat as F;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let (model, dir) = (data.join("tiny-sd1"), data.join("reference-tokens"));
    let extra = format!(
        "model={} tokens={} input-size=128",
        model.display(),
        dir.display()
    );
    let (mut hn, info) = harness(&extra, F::Rgb, 64, 48);
    let tokens = Tokens::load(&dir).unwrap();
    let model =
        stablekeypoints::Model::load(&model, &candle_core::Device::Cpu, candle_core::DType::F32)
            .unwrap();
    let opts = DetectOptions {
        input_size: Some(128),
        ..Default::default()
    };
    let mut det = Detector::new(Arc::new(model), &tokens, opts).unwrap();
    let input = frame_buffer(&info, 0);
    let expected = core_detect(&mut det, &input, &info, 0);
    hn.push(input).unwrap();
    let meta = read_meta(&hn.pull().unwrap());
    assert_eq!(meta.keypoints.len(), tokens.indices.len());
    assert_matches_core(&meta, &expected);
}

/// `device=cuda:0` (f16) reports the CPU's keypoint scores, frame by frame, in a decoder's
/// format. Built with `--features cuda`; needs a GPU (scripts/gpu-check.sh).
#[cfg(feature = "cuda")]
#[test]
fn cuda_device_reports_the_cpu_keypoints() {
    let format = gst_video::VideoFormat::I420;
    let (mut gpu, info) = harness("device=cuda:0", format, 160, 120);
    let (mut cpu, _) = harness("device=cpu", format, 160, 120);
    for i in 0..3 {
        gpu.push(frame_buffer(&info, i)).unwrap();
        cpu.push(frame_buffer(&info, i)).unwrap();
        let (g, c) = (
            read_meta(&gpu.pull().unwrap()),
            read_meta(&cpu.pull().unwrap()),
        );
        assert_eq!(g.keypoints.len(), c.keypoints.len());
        for (a, b) in g.keypoints.iter().zip(&c.keypoints) {
            assert_eq!(a.id, b.id);
            assert!(
                (a.confidence - b.confidence).abs() <= 3e-2 * b.confidence.abs(),
                "frame {i}: GPU {a:?} vs CPU {b:?}"
            );
        }
    }
}

#[test]
fn draw_changes_pixels_only_near_keypoints() {
    use gst_video::VideoFormat as F;
    // A dot of radius 3 with its two rings.
    let radius = gststablekeypoints::overlay::Style::new(3.0, 2.0).dot_extent();
    assert_eq!(radius, 5.0);
    for format in [F::Rgb, F::I420, F::Nv12, F::Rgba] {
        let (mut hn, info) = harness("draw=true radius=3", format, 90, 60);
        let input = frame_buffer(&info, 0);
        let reference = input.copy_deep().unwrap();
        hn.push(input).unwrap();
        let out = hn.pull().unwrap();
        let meta = read_meta(&out);
        let pts: Vec<(f32, f32)> = meta.keypoints.iter().map(|k| k.pixel(90, 60)).collect();
        let changed = changed_pixels(&reference, &out, &info);
        assert!(!changed.is_empty(), "{format:?}: nothing drawn");
        for (plane, x, y) in &changed {
            // Chroma samples cover 2x2 pixels: allow their half-diagonal.
            let slack = if *plane == 0 { 1.0 } else { 2.5 };
            let near = pts
                .iter()
                .any(|(px, py)| ((x - px).powi(2) + (y - py).powi(2)).sqrt() <= radius + slack);
            assert!(
                near,
                "{format:?}: plane {plane} changed at ({x}, {y}), far from {pts:?}"
            );
        }
        // Every keypoint got its dot: the first plane changed within the radius.
        for (px, py) in &pts {
            assert!(
                changed.iter().any(|(p, x, y)| *p == 0
                    && (x - px).abs() <= radius + 1.0
                    && (y - py).abs() <= radius + 1.0),
                "{format:?}: no dot at ({px}, {py})"
            );
        }
    }
}

#[test]
fn without_draw_output_bytes_equal_input_bytes() {
    use gst_video::VideoFormat as F;
    for format in [F::Rgb, F::I420, F::Nv12, F::Bgrx] {
        let (mut hn, info) = harness("", format, 50, 30);
        for i in 0..2 {
            let input = frame_buffer(&info, i);
            let reference = input.copy_deep().unwrap();
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            assert!(FrameKeypoints::from_buffer(&out).is_some());
            let (a, b) = (
                reference.map_readable().unwrap(),
                out.map_readable().unwrap(),
            );
            assert!(
                a.as_slice() == b.as_slice(),
                "{format:?}: bytes changed with draw=false"
            );
            assert_eq!(out.pts(), reference.pts());
        }
    }
}

#[test]
fn missing_model_or_tokens_fails_the_state_change_naming_the_path() {
    init();
    for (what, prop) in [
        ("model", "model=/nonexistent/skp-model".to_string()),
        (
            "tokens",
            format!(
                "model={} tokens=/nonexistent/skp-tokens.safetensors",
                model_dir().display()
            ),
        ),
    ] {
        let desc = format!("videotestsrc num-buffers=2 ! stablekeypoints {prop} ! fakesink");
        let err = run_pipeline(&desc, None).expect_err("pipeline must fail");
        let path = if what == "model" {
            "/nonexistent/skp-model"
        } else {
            "/nonexistent/skp-tokens.safetensors"
        };
        // The message itself (first line), not only the debug details, names the path.
        let message = err.lines().next().unwrap_or_default();
        assert!(
            message.contains(path),
            "{what}: error does not name {path}: {err}"
        );
    }
    // No model at all: a clear message too.
    let err = run_pipeline(
        "videotestsrc num-buffers=1 ! stablekeypoints ! fakesink",
        None,
    )
    .unwrap_err();
    assert!(
        err.lines().next().unwrap_or_default().contains("`model`"),
        "{err}"
    );
}

#[test]
fn inference_interval_with_gap_policies() {
    use gst_video::VideoFormat as F;
    let frames = |extra: &str, n: u64| {
        let (mut hn, info) = harness(extra, F::Rgb, 48, 48);
        let mut outs = Vec::new();
        for i in 0..n {
            hn.push(frame_buffer(&info, i)).unwrap();
            while let Some(b) = hn.try_pull() {
                outs.push(b);
            }
        }
        hn.push_event(gst::event::Eos::new());
        while let Some(b) = hn.try_pull() {
            outs.push(b);
        }
        let stats = hn.element().unwrap().property::<gst::Structure>("stats");
        (outs, stats)
    };
    // hold-last: frames 1, 2 repeat frame 0, marked inferred; frame 3 is inferred anew.
    let (outs, stats) = frames("inference-interval=3 gap-policy=hold-last", 4);
    assert_eq!(outs.len(), 4);
    let count = |f: &str| stats.get::<u64>(f).unwrap();
    assert_eq!(
        (
            count("frames-inferred"),
            count("frames-interval-skipped"),
            count("frames-skipped")
        ),
        (2, 2, 0)
    );
    let m: Vec<FrameKeypoints> = outs.iter().map(|b| read_meta(b)).collect();
    assert_eq!(
        m.iter().map(|f| f.inferred).collect::<Vec<_>>(),
        [false, true, true, false]
    );
    assert_eq!(m[1].keypoints, m[0].keypoints);
    assert_eq!(m[2].keypoints, m[0].keypoints);
    let origins: Vec<Option<Origin>> = m.iter().map(|f| f.origin).collect();
    use Origin::{Inference, Interval};
    assert_eq!(
        origins,
        [
            Some(Inference),
            Some(Interval),
            Some(Interval),
            Some(Inference)
        ]
    );
    // none: no metadata on frames without inference.
    let (outs, _) = frames("inference-interval=3 gap-policy=none", 4);
    let has: Vec<bool> = outs
        .iter()
        .map(|b| FrameKeypoints::from_buffer(b).is_some())
        .collect();
    assert_eq!(has, [true, false, false, true]);
    // interpolate: tests/track.rs (stablekeypointstrack).
}

#[test]
fn late_frames_skip_inference_and_reuse_keypoints() {
    use gst_video::VideoFormat as F;
    let (mut hn, info) = harness("", F::Rgb, 48, 48);
    hn.push(frame_buffer(&info, 0)).unwrap();
    let first = read_meta(&hn.pull().unwrap());
    // Downstream says everything before 1 s (running time) is late.
    assert!(hn.push_upstream_event(gst::event::Qos::new(
        gst::QOSType::Throttle,
        0.5,
        500_000_000,
        gst::ClockTime::from_mseconds(500),
    )));
    hn.push(frame_buffer(&info, 1)).unwrap();
    let late = read_meta(&hn.pull().unwrap());
    assert!(late.inferred);
    assert_eq!(late.origin, Some(Origin::Late));
    assert_eq!(late.keypoints, first.keypoints);
    let element = hn.element().unwrap();
    let stats = element.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames-processed").unwrap(), 2);
    assert_eq!(stats.get::<u64>("frames-skipped").unwrap(), 1);
    assert_eq!(stats.get::<u64>("frames-inferred").unwrap(), 1);
    assert!(stats.get::<f64>("mean-inference-ms").unwrap() > 0.0);
    // A frame past the late horizon is inferred again.
    let mut b = frame_buffer(&info, 30);
    b.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_seconds(2));
    hn.push(b).unwrap();
    assert!(!read_meta(&hn.pull().unwrap()).inferred);
}

#[test]
fn latency_query_includes_the_inference_time() {
    use gst_video::VideoFormat as F;
    let (mut hn, info) = harness("", F::Rgb, 32, 32);
    hn.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    hn.push(frame_buffer(&info, 0)).unwrap();
    let _ = hn.pull().unwrap();
    let latency = hn.query_latency().expect("latency answered");
    let stats = hn.element().unwrap().property::<gst::Structure>("stats");
    let per_frame = stats
        .get::<f64>("mean-inference-ms")
        .unwrap()
        .max(stats.get::<f64>("warmup-ms").unwrap());
    let ours = latency.nseconds() as f64 / 1e6 - 10.0;
    assert!(
        ours > 0.0 && (ours - per_frame).abs() < 1e-3,
        "latency {latency} vs {per_frame} ms"
    );
}

#[test]
fn model_properties_are_fixed_while_running() {
    use gst_video::VideoFormat as F;
    let (hn, _) = harness("", F::Rgb, 32, 32);
    let element = hn.element().unwrap();
    let before = element.property::<Option<String>>("model");
    element.set_property("model", "/elsewhere");
    assert_eq!(element.property::<Option<String>>("model"), before);
    // Post-processing knobs change in PLAYING.
    element.set_property("draw", true);
    assert!(element.property::<bool>("draw"));
    let _ = ROI_TYPE;
}

#[test]
fn pose_skeleton_is_drawn_along_its_segments_and_nowhere_else() {
    use gst_video::VideoFormat as F;
    let (w, h) = (90u32, 60u32);
    let pose_prop = format!("pose={}", test_pose().display());
    // Drawn by the inference element (`draw=true pose=...`), and by the pose and overlay
    // elements after it.
    for (format, elements) in [F::Rgb, F::I420, F::Nv12]
        .into_iter()
        .flat_map(|f| [(f, false), (f, true)])
    {
        let run = |pose: bool| {
            let info = video_info(format, w, h);
            let mut hn = if elements {
                let pose = if pose {
                    format!("! stablekeypointspose {pose_prop}")
                } else {
                    String::new()
                };
                chain_harness(&format!(
                    "stablekeypoints {} {pose} ! stablekeypointsoverlay radius=4",
                    props()
                ))
            } else {
                let extra = if pose { pose_prop.as_str() } else { "" };
                harness(&format!("draw=true radius=4 {extra}"), format, w, h).0
            };
            hn.set_src_caps(info.to_caps().unwrap());
            hn.push(frame_buffer(&info, 3)).unwrap();
            (hn.pull().unwrap(), info)
        };
        let (plain, info) = run(false);
        let (posed, _) = run(true);
        let pose = read_meta(&posed).pose.unwrap();
        let clamp =
            |(x, y): (f32, f32)| (x.clamp(0.0, w as f32 - 0.5), y.clamp(0.0, h as f32 - 0.5));
        let pts: Vec<(f32, f32)> = pose
            .landmarks
            .iter()
            .map(|l| clamp(l.pixel(w, h)))
            .collect();
        let segs: Vec<((f32, f32), (f32, f32))> = pose
            .connections
            .iter()
            .map(|&[a, b]| (pts[a as usize], pts[b as usize]))
            .collect();
        // For radius=4: white lines 2 px wide outlined by 1 px of black on each side (2 px
        // from the line), landmarks of radius 2 outlined to 3; chroma samples cover 2x2.
        let style = gststablekeypoints::overlay::Style::for_frame(w as usize, h as usize, 4, 0);
        assert_eq!((style.line_width, style.ring), (2.0, 1.0));
        let changed = changed_pixels(&plain, &posed, &info);
        assert!(!changed.is_empty(), "{format:?}: no skeleton drawn");
        for (plane, x, y) in &changed {
            let slack = if *plane == 0 { 1.0f32 } else { 2.5 };
            let near_line = segs
                .iter()
                .any(|&(p, q)| segment_dist2(*x, *y, p, q) <= (2.0 + slack).powi(2));
            let near_dot = pts
                .iter()
                .any(|&(px, py)| (x - px).powi(2) + (y - py).powi(2) <= (3.0 + slack).powi(2));
            assert!(
                near_line || near_dot,
                "{format:?}: plane {plane} changed at ({x}, {y}), far from the skeleton {segs:?}"
            );
        }
        // Along the a-b segment (through the centre, several pixels long) the first plane is
        // the skeleton colour, except under the keypoints' dots, drawn on top.
        let dots: Vec<(f32, f32)> = read_meta(&posed)
            .keypoints
            .iter()
            .map(|k| k.pixel(w, h))
            .collect();
        let (p, q) = segs[0];
        let len = ((q.0 - p.0).powi(2) + (q.1 - p.1).powi(2)).sqrt();
        assert!(len > 8.0, "{format:?}: segment a-b only {len} px long");
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&posed, &info).unwrap();
        let (data, stride) = (
            frame.plane_data(0).unwrap(),
            frame.plane_stride()[0] as usize,
        );
        let full = info.colorimetry().range() == gst_video::VideoColorRange::Range0_255;
        for i in 0..=20 {
            let t = i as f32 / 20.0;
            let (x, y) = (
                (p.0 + t * (q.0 - p.0)) as usize,
                (p.1 + t * (q.1 - p.1)) as usize,
            );
            let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
            if dots
                .iter()
                .any(|&(dx, dy)| (cx - dx).hypot(cy - dy) <= style.dot_extent() + 1.0)
            {
                continue;
            }
            if format == F::Rgb {
                assert_eq!(
                    &data[y * stride + x * 3..][..3],
                    &[255, 255, 255],
                    "({x}, {y})"
                );
            } else {
                let white = if full { 255 } else { 235 };
                assert_eq!(data[y * stride + x], white, "{format:?} ({x}, {y})");
            }
        }
    }
}

#[test]
fn bad_or_mismatched_pose_files_fail_the_state_change_naming_the_file() {
    init();
    let indices = Tokens::load(&tokens_path()).unwrap().indices;
    let garbage = scratch().join("pose-garbage.json");
    std::fs::write(&garbage, "{\"format\": \"stablekeypoints-pose\", ").unwrap();
    let mut reversed = indices.clone();
    reversed.reverse();
    let cases = [
        (scratch().join("no-such-pose.json"), "No such file"),
        (garbage, "invalid pose file"),
        (
            write_pose(
                "pose-5kp.json",
                NUM_KEYPOINTS - 1,
                indices[..NUM_KEYPOINTS - 1].to_vec(),
            ),
            "reads 5 keypoints",
        ),
        (
            write_pose("pose-reversed.json", NUM_KEYPOINTS, reversed),
            "token indices",
        ),
        (
            pose_with_hash("pose-other-hash.json", "0123456789abcdef"),
            "hash 0123456789abcdef",
        ),
    ];
    for (path, why) in cases {
        let desc = format!(
            "videotestsrc num-buffers=2 ! stablekeypoints {} pose={} ! fakesink",
            props(),
            path.display()
        );
        let err = run_pipeline(&desc, None).expect_err("pipeline must fail");
        let message = err.lines().next().unwrap_or_default();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(why),
            "{}: {err}",
            path.display()
        );
    }
}

/// Same keypoints (positions exactly, confidences to float rounding), flags and landmarks.
fn assert_same_meta(a: &FrameKeypoints, b: &FrameKeypoints, what: &str) {
    assert_eq!(a.inferred, b.inferred, "{what}");
    assert_eq!(
        (a.source_width, a.source_height),
        (b.source_width, b.source_height),
        "{what}"
    );
    assert_eq!(a.keypoints.len(), b.keypoints.len(), "{what}");
    for (p, q) in a.keypoints.iter().zip(&b.keypoints) {
        assert_eq!(
            (p.id, p.x, p.y, p.visible),
            (q.id, q.x, q.y, q.visible),
            "{what}"
        );
        assert!(
            (p.confidence - q.confidence).abs() <= 1e-6 * q.confidence.abs().max(1e-3),
            "{what}: {p:?} vs {q:?}"
        );
    }
    match (&a.pose, &b.pose) {
        (Some(p), Some(q)) => {
            assert_eq!(p.connections, q.connections, "{what}");
            for (l, m) in p.landmarks.iter().zip(&q.landmarks) {
                assert_eq!(l.name, m.name, "{what}");
                assert!(
                    (l.x - m.x).abs() < 1e-6 && (l.y - m.y).abs() < 1e-6,
                    "{what}"
                );
            }
        }
        (p, q) => assert_eq!(p.is_some(), q.is_some(), "{what}"),
    }
}

/// What leaves the element's source pad, in order: buffers (by PTS) and events (by type).
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Buffer(gst::ClockTime),
    Event(gst::EventType),
}

fn record_src(hn: &gst_check::Harness) -> Arc<Mutex<Vec<Item>>> {
    let items = Arc::new(Mutex::new(Vec::new()));
    let store = items.clone();
    hn.element().unwrap().static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let item = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => Item::Buffer(b.pts().unwrap()),
                Some(gst::PadProbeData::Event(e)) => Item::Event(e.type_()),
                _ => return gst::PadProbeReturn::Ok,
            };
            store.lock().unwrap().push(item);
            gst::PadProbeReturn::Ok
        },
    );
    items
}

/// Pushes frames `frames` (index, info) and EOS; returns the buffers that came out and how
/// many were out after each push.
fn run_frames(
    hn: &mut gst_check::Harness,
    frames: &[(u64, &gst_video::VideoInfo)],
) -> (Vec<gst::Buffer>, Vec<usize>) {
    let mut outs = Vec::new();
    let mut counts = Vec::new();
    let mut caps = None;
    for &(i, info) in frames {
        if caps.as_ref() != Some(info) {
            if caps.is_some() {
                hn.set_src_caps(info.to_caps().unwrap());
            }
            caps = Some(info.clone());
        }
        hn.push(frame_buffer(info, i)).unwrap();
        while let Some(b) = hn.try_pull() {
            outs.push(b);
        }
        counts.push(outs.len());
    }
    hn.push_event(gst::event::Eos::new());
    while let Some(b) = hn.try_pull() {
        outs.push(b);
    }
    (outs, counts)
}

#[test]
fn batch_size_4_gives_the_metadata_of_batch_size_1_in_order() {
    use gst_video::VideoFormat as F;
    let pose = format!("pose={}", test_pose().display());
    for policy in [
        "",
        "inference-interval=3 gap-policy=interpolate",
        "inference-interval=2 gap-policy=none",
    ] {
        // Interpolation is the track element's, and the pose is regressed after it.
        let chain = |batch: &str| {
            policy
                .strip_suffix(" gap-policy=interpolate")
                .map(|interval| {
                    chain_harness(&format!(
                        "stablekeypoints name=skp {} {interval} {batch} ! stablekeypointstrack \
                         gap-policy=interpolate ! stablekeypointspose {pose}",
                        props()
                    ))
                })
        };
        let info = video_info(F::Rgb, 48, 40);
        let mut one =
            chain("").unwrap_or_else(|| harness(&format!("{pose} {policy}"), F::Rgb, 48, 40).0);
        one.set_src_caps(info.to_caps().unwrap());
        let frames: Vec<(u64, &gst_video::VideoInfo)> = (0..10).map(|i| (i, &info)).collect();
        let (want, _) = run_frames(&mut one, &frames);
        let batch = "batch-size=4 batch-timeout=0";
        let mut four = chain(batch)
            .unwrap_or_else(|| harness(&format!("{pose} {policy} {batch}"), F::Rgb, 48, 40).0);
        four.set_src_caps(info.to_caps().unwrap());
        let items = record_src(&four);
        let (got, counts) = run_frames(&mut four, &frames);
        assert_eq!(got.len(), 10, "{policy:?}: every frame comes out");
        let pts: Vec<_> = got.iter().map(|b| b.pts().unwrap()).collect();
        let want_pts: Vec<_> = want.iter().map(|b| b.pts().unwrap()).collect();
        assert_eq!(pts, want_pts, "{policy:?}: same order and timestamps");
        assert!(pts.windows(2).all(|w| w[0] < w[1]), "{policy:?}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match (
                FrameKeypoints::from_buffer(g),
                FrameKeypoints::from_buffer(w),
            ) {
                (Some(g), Some(w)) => {
                    assert_same_meta(&g.unwrap(), &w.unwrap(), &format!("{policy:?} frame {i}"))
                }
                (g, w) => assert_eq!(g.is_some(), w.is_some(), "{policy:?} frame {i}"),
            }
        }
        if policy.is_empty() {
            // Every frame is inferred: a batch leaves with its 4th frame, and EOS pushes the
            // last 2 before itself.
            assert_eq!(counts, [0, 0, 0, 4, 4, 4, 4, 8, 8, 8]);
            let items = items.lock().unwrap();
            let eos = items
                .iter()
                .position(|i| *i == Item::Event(gst::EventType::Eos))
                .expect("EOS forwarded");
            let buffers_before = items[..eos]
                .iter()
                .filter(|i| matches!(i, Item::Buffer(_)))
                .count();
            assert_eq!(buffers_before, 10, "the partial batch leaves before EOS");
            let stats = inference_of(&four).property::<gst::Structure>("stats");
            assert_eq!(stats.get::<u64>("frames-inferred").unwrap(), 10);
        }
    }
}

#[test]
fn caps_change_flushes_a_partial_batch_with_its_own_size() {
    use gst_video::VideoFormat as F;
    let (mut one, a) = harness("", F::Rgb, 48, 40);
    let b = video_info(F::Nv12, 32, 24);
    let frames: Vec<(u64, &gst_video::VideoInfo)> =
        vec![(0, &a), (1, &a), (2, &b), (3, &b), (4, &b)];
    let (want, _) = run_frames(&mut one, &frames);
    let (mut four, _) = harness("batch-size=4 batch-timeout=0", F::Rgb, 48, 40);
    let items = record_src(&four);
    let (got, counts) = run_frames(&mut four, &frames);
    // Frames 0 and 1 leave when the new caps arrive (pulled after pushing frame 2).
    assert_eq!(counts, [0, 0, 2, 2, 2]);
    assert_eq!(got.len(), 5);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.pts(), w.pts());
        let m = read_meta(g);
        let size = if i < 2 { (48, 40) } else { (32, 24) };
        assert_eq!((m.source_width, m.source_height), size, "frame {i}");
        assert_same_meta(&m, &read_meta(w), &format!("frame {i}"));
    }
    // Order on the source pad (recorded after the first caps): the old frames, then the new
    // caps, then the new frames.
    let items = items.lock().unwrap();
    let seq: Vec<&Item> = items
        .iter()
        .filter(|i| matches!(i, Item::Buffer(_) | Item::Event(gst::EventType::Caps)))
        .collect();
    let t = |i: u64| Item::Buffer(gst::ClockTime::from_mseconds(40 * i));
    let caps = Item::Event(gst::EventType::Caps);
    assert_eq!(seq, [&t(0), &t(1), &caps, &t(2), &t(3), &t(4)], "{items:?}");
}

#[test]
fn flush_drops_a_partial_batch_and_timeout_infers_one() {
    use gst_video::VideoFormat as F;
    let (mut hn, info) = harness("batch-size=4 batch-timeout=0", F::Rgb, 32, 32);
    for i in 0..2 {
        hn.push(frame_buffer(&info, i)).unwrap();
    }
    assert!(hn.push_event(gst::event::FlushStart::new()));
    assert!(hn.push_event(gst::event::FlushStop::new(true)));
    assert!(
        hn.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    let frames: Vec<(u64, &gst_video::VideoInfo)> = (10..14).map(|i| (i, &info)).collect();
    let (got, counts) = run_frames(&mut hn, &frames);
    assert_eq!(counts, [0, 0, 0, 4], "the flushed frames never come out");
    // As a fresh element would see them: nothing of the dropped frames carries over.
    let (mut fresh, _) = harness("", F::Rgb, 32, 32);
    let (want, _) = run_frames(&mut fresh, &frames);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.pts(), w.pts());
        assert_same_meta(&read_meta(g), &read_meta(w), &format!("frame {i}"));
    }
    let stats = hn.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames-inferred").unwrap(), 4);

    // batch-timeout: a frame arriving 1 ms or more after the first pending one runs the batch.
    let (mut hn, info) = harness("batch-size=4 batch-timeout=1", F::Rgb, 32, 32);
    hn.push(frame_buffer(&info, 0)).unwrap();
    assert!(hn.try_pull().is_none(), "waits for its batch");
    std::thread::sleep(std::time::Duration::from_millis(20));
    hn.push(frame_buffer(&info, 1)).unwrap();
    let out: Vec<gst::Buffer> = std::iter::from_fn(|| hn.try_pull()).collect();
    assert_eq!(out.len(), 2, "the timeout ran the partial batch");
}

#[test]
fn latency_grows_with_batch_size() {
    use gst_video::VideoFormat as F;
    // 25 fps: a batch of 4 waits 3 frames (120 ms) unless the timeout ends it sooner.
    let ours = |extra: &str| {
        let (mut hn, _) = harness(extra, F::Rgb, 32, 32);
        hn.set_upstream_latency(gst::ClockTime::from_mseconds(10));
        let latency = hn.query_latency().expect("latency answered");
        let stats = hn.element().unwrap().property::<gst::Structure>("stats");
        let per_frame = stats.get::<f64>("warmup-ms").unwrap();
        (latency.nseconds() as f64 / 1e6 - 10.0, per_frame)
    };
    let (one, pf) = ours("");
    assert!((one - pf).abs() < 1e-3, "batch 1: {one} ms vs {pf} ms");
    let (four, pf) = ours("batch-size=4");
    assert!(
        (four - (4.0 * pf + 120.0)).abs() < 1e-3,
        "batch 4: {four} ms"
    );
    let (capped, pf) = ours("batch-size=4 batch-timeout=50");
    // The timeout is checked when a frame arrives: up to 50 ms plus one frame.
    assert!(
        (capped - (4.0 * pf + 90.0)).abs() < 1e-3,
        "timeout 50: {capped} ms"
    );
}

/// What the sink of a live run saw.
struct LiveRun {
    /// Per buffer: PTS, and how far the clock's running time was past the buffer's when it
    /// reached the sink (before the sink waits for it), in ms.
    pts: Vec<gst::ClockTime>,
    lag_ms: Vec<f64>,
    metas: Vec<Option<FrameKeypoints>>,
    stats: gst::Structure,
    latency: gst::ClockTime,
}

/// `videotestsrc is-live=true` at 30 fps through the element into a synchronising sink.
fn run_live(element_props: &str, delay_ms: u64, n: u32) -> LiveRun {
    init();
    let desc = format!(
        "videotestsrc is-live=true num-buffers={n} pattern=ball \
         ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints name=skp {} {element_props} ! fakesink name=sink sync=true qos=true",
        props()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    // The testing aid that stands in for a slower model (not a property).
    pipeline
        .by_name("skp")
        .unwrap()
        .downcast::<gststablekeypoints::StableKeypoints>()
        .unwrap()
        .set_test_inference_delay(std::time::Duration::from_millis(delay_ms));
    let sink = pipeline.by_name("sink").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(b), Some(el)) = (info.buffer(), pad.parent_element()) else {
                return gst::PadProbeReturn::Ok;
            };
            let now = el.current_running_time();
            let rt = pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
                e.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(b.pts()))
            });
            let lag = match (now, rt) {
                (Some(now), Some(rt)) => (now.nseconds() as f64 - rt.nseconds() as f64) / 1e6,
                _ => f64::NAN,
            };
            let meta = FrameKeypoints::from_buffer(b).map(|m| m.unwrap());
            store.lock().unwrap().push((b.pts().unwrap(), lag, meta));
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    let latency = sink.downcast_ref::<gst_base::BaseSink>().unwrap().latency();
    let stats = pipeline
        .by_name("skp")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    LiveRun {
        pts: seen.iter().map(|s| s.0).collect(),
        lag_ms: seen.iter().map(|s| s.1).collect(),
        metas: seen.into_iter().map(|s| s.2).collect(),
        stats,
        latency,
    }
}

#[test]
fn live_source_with_a_slow_model_keeps_pace() {
    // 80 ms per inference against 33 ms per frame: inferring every other frame would need
    // 40 ms per frame, more than the source gives.
    let n = 90u32;
    let slow = "inference-interval=2 gap-policy=hold-last";
    let run = run_live(slow, 80, n);
    let count = |f: &str| run.stats.get::<u64>(f).unwrap();
    let (inferred, late, interval) = (
        count("frames-inferred"),
        count("frames-skipped"),
        count("frames-interval-skipped"),
    );
    let max_lag = run.lag_ms.iter().cloned().fold(f64::MIN, f64::max);
    let latency_ms = run.latency.nseconds() as f64 / 1e6;
    let per_inference = run.stats.get::<f64>("mean-inference-ms").unwrap();
    eprintln!(
        "live: {} buffers, inferred {inferred}, skipped late {late}, interval {interval}, \
         {per_inference:.1} ms per inference, latency {latency_ms:.1} ms, max lag {max_lag:.1} ms",
        run.pts.len(),
    );
    // The element drops nothing: every frame reaches the sink, in order, 1/30 s apart.
    assert_eq!(run.pts.len(), n as usize);
    for (i, t) in run.pts.iter().enumerate() {
        let want = gst::ClockTime::SECOND.mul_div_floor(i as u64, 30).unwrap() + run.pts[0];
        assert!(
            t.nseconds().abs_diff(want.nseconds()) <= 1,
            "frame {i} at {t}"
        );
    }
    // Every skip is counted, and the gaps carry the last keypoints.
    assert_eq!(count("frames-processed"), n as u64);
    assert_eq!(inferred + late + interval, n as u64);
    assert!(late > 0, "QoS never skipped an inference");
    assert!(inferred > 0 && interval > 0);
    assert!(
        run.metas.iter().all(Option::is_some),
        "a frame without keypoints"
    );
    let fresh = run
        .metas
        .iter()
        .filter(|m| m.as_ref().is_some_and(|m| !m.inferred))
        .count();
    assert_eq!(
        fresh as u64, inferred,
        "frames marked not inferred = inferences"
    );
    // Latency is bounded: a buffer reaches the sink within the reported latency plus the
    // inference in progress when it arrived (two, with margin for a loaded machine)...
    let bound = latency_ms + 2.0 * per_inference + 100.0;
    assert!(
        run.lag_ms.iter().all(|&l| l < bound),
        "lag up to {max_lag:.1} ms, bound {bound:.1} ms: {:?}",
        run.lag_ms
    );
    // ... and does not grow: the last third of the stream lags as the first third.
    let third = run.lag_ms.len() / 3;
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let (first, end) = (
        mean(&run.lag_ms[..third]),
        mean(&run.lag_ms[run.lag_ms.len() - third..]),
    );
    assert!(
        end < first + per_inference,
        "lag grew from {first:.1} to {end:.1} ms"
    );

    // The same pipeline without QoS in the element falls behind the source: the bound means
    // something.
    let run = run_live(&format!("{slow} qos=false"), 80, n);
    let last = *run.lag_ms.last().unwrap();
    eprintln!("without QoS: lag at the end {last:.1} ms (bound {bound:.1} ms)");
    assert_eq!(run.stats.get::<u64>("frames-skipped").unwrap(), 0);
    assert!(last > bound, "without QoS the lag stayed at {last:.1} ms");
}

/// Weights replaced under the same path while an element holds the model: a new element
/// runs the new weights (the shared model cache is keyed by what the weights are, not by
/// the folder's path), and the element that held the old ones keeps them.
#[test]
fn new_weights_under_a_held_path_are_loaded_not_the_cached_ones() {
    use gst_video::VideoFormat as F;
    use stablekeypoints::init::{init_model, TinyArch};
    init();
    let dir = scratch().join("swapped-model");
    let fresh = scratch().join("swapped-model-new");
    init_model(&dir, TinyArch::TinySd1, 7, NUM_TOKENS, NUM_KEYPOINTS).unwrap();
    init_model(&fresh, TinyArch::TinySd1, 8, NUM_TOKENS, NUM_KEYPOINTS).unwrap();
    // Every element runs the first folder's tokens.
    let element = |model: &std::path::Path| {
        let e = gst::ElementFactory::make("stablekeypoints")
            .property("model", model.to_str().unwrap())
            .property("tokens", dir.join("tokens.safetensors").to_str().unwrap())
            .build()
            .unwrap();
        let mut hn = gst_check::Harness::with_element(&e, Some("sink"), Some("src"));
        let info = video_info(F::Rgb, 64, 48);
        hn.set_src_caps(info.to_caps().unwrap());
        (hn, info)
    };
    let keypoints = |hn: &mut gst_check::Harness, info: &gst_video::VideoInfo, i: u64| {
        hn.push(frame_buffer(info, i)).unwrap();
        read_meta(&hn.pull().unwrap())
            .keypoints
            .iter()
            .map(|k| (k.x, k.y))
            .collect::<Vec<_>>()
    };
    let (mut old, info) = element(&dir);
    let before = keypoints(&mut old, &info, 0);
    // What the old model gives on the next frame (the noise follows the frame count).
    let (mut witness, _) = element(&dir);
    keypoints(&mut witness, &info, 0);
    let next = keypoints(&mut witness, &info, 1);
    // New weights renamed over the old file, as a deployment replaces them.
    for part in ["unet", "vae"] {
        let file = |d: &std::path::Path| d.join(part).join("diffusion_pytorch_model.safetensors");
        let staged = scratch().join(format!("swapped-{part}.safetensors"));
        std::fs::copy(file(&fresh), &staged).unwrap();
        std::fs::rename(&staged, file(&dir)).unwrap();
    }
    let (mut new, _) = element(&dir);
    let after = keypoints(&mut new, &info, 0);
    let (mut reference, _) = element(&fresh);
    assert_eq!(
        after,
        keypoints(&mut reference, &info, 0),
        "the new weights ran"
    );
    assert_ne!(
        before, after,
        "the two models give other keypoints on this frame"
    );
    assert_eq!(
        next,
        keypoints(&mut old, &info, 1),
        "the holder kept its model"
    );
}
