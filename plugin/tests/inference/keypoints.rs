//! The element's keypoints against the core's: gst-inspect, the literal `filesrc ! decodebin !
//! stablekeypoints ! fakesink`, Harness in RGB, I420 and NV12, the noise level and stretch, the
//! reference's tokens directory, and the CUDA device.

use super::*;

/// A fresh core detector with the element's default options and this crop mode.
fn core_detector(crop: CropMode) -> Detector {
    core_detector_with(DetectOptions {
        crop,
        ..Default::default()
    })
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
    let dir = plugin_dir();
    let out = std::process::Command::new("gst-inspect-1.0")
        .arg("stablekeypoints")
        .env("GST_PLUGIN_PATH", dir)
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
/// tests/golden.rs and tests/engine/fidelity.rs check against diffusers and PIL. The default
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
