//! Settings: missing files, the inference interval and gap policies, late frames, the latency
//! query, model properties fixed while running, new weights under a held path.

use super::*;

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
    // interpolate: tests/elements/track.rs (stablekeypointstrack).
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
