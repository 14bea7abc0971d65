//! The `stablekeypointstrack` element: One-Euro smoothing (what `stablekeypoints
//! smoothing=one-euro` gave: the core smoother on the inferred keypoints and the buffer
//! timestamps), interpolation between inferences (the assertions of the inference element's
//! former `gap-policy=interpolate`), the look-ahead latency, and metadata rewritten in place
//! with every other meta kept.

use gst::prelude::*;
use gststablekeypoints::meta::{
    semantic_tag, FrameKeypoints, KeypointMeta, Origin, TokenIdentity, ROI_TYPE,
};
use stablekeypoints::track::{KeypointSmoother, OneEuroParams};
use stablekeypoints::Keypoint;

use crate::common;
use common::*;

fn rgb_info(w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// Frame `i` of random content at 25 fps.
fn frame(info: &gst_video::VideoInfo, i: u64) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(noise_bytes(info.size(), 77 + i));
    let b = buf.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(40 * i));
    b.set_duration(gst::ClockTime::from_mseconds(40));
    buf
}

/// Pushes `n` frames and EOS through `hn`; every buffer that came out, in order.
fn run(hn: &mut gst_check::Harness, info: &gst_video::VideoInfo, n: u64) -> Vec<gst::Buffer> {
    hn.set_src_caps(info.to_caps().unwrap());
    let mut outs = Vec::new();
    for i in 0..n {
        hn.push(frame(info, i)).unwrap();
        outs.extend(std::iter::from_fn(|| hn.try_pull()));
    }
    hn.push_event(gst::event::Eos::new());
    outs.extend(std::iter::from_fn(|| hn.try_pull()));
    outs
}

fn inference(extra: &str) -> gst_check::Harness {
    chain_harness(&format!("stablekeypoints name=skp {} {extra}", props()))
}

fn tracked(extra: &str, track: &str) -> gst_check::Harness {
    chain_harness(&format!(
        "stablekeypoints name=skp {} {extra} ! stablekeypointstrack {track}",
        props()
    ))
}

#[test]
fn one_euro_smoothing_equals_the_core_smoother_on_the_inferred_keypoints() {
    let info = rgb_info(48, 40);
    let n = 8;
    // Held frames (interval 2) are smoothed too, as they leave.
    let raw: Vec<FrameKeypoints> = run(&mut inference("inference-interval=2"), &info, n)
        .iter()
        .map(|b| read_meta(b))
        .collect();
    let track = "smoothing=one-euro min-cutoff=0.5 beta=0.3 d-cutoff=2";
    let outs = run(&mut tracked("inference-interval=2", track), &info, n);
    assert_eq!(outs.len(), n as usize);
    let p = OneEuroParams {
        min_cutoff: 0.5,
        beta: 0.3,
        d_cutoff: 2.0,
    };
    let mut smoother = KeypointSmoother::default();
    let mut moved = 0.0f32;
    for (i, (b, r)) in outs.iter().zip(&raw).enumerate() {
        let m = read_meta(b);
        let mut want: Vec<Keypoint> = r
            .keypoints
            .iter()
            .map(|k| Keypoint {
                id: k.id as usize,
                x: k.x,
                y: k.y,
                score: k.confidence,
            })
            .collect();
        smoother.smooth(&mut want, b.pts().unwrap().nseconds() as f64 / 1e9, &p);
        assert_eq!(m.keypoints.len(), want.len());
        for (k, w) in m.keypoints.iter().zip(&want) {
            assert_eq!((k.id as usize, k.x, k.y), (w.id, w.x, w.y), "frame {i}");
        }
        for (k, r) in m.keypoints.iter().zip(&r.keypoints) {
            assert_eq!((k.confidence, k.visible), (r.confidence, r.visible));
            moved = moved.max((k.x - r.x).abs().max((k.y - r.y).abs()));
        }
        assert_eq!((m.origin, m.inferred), (r.origin, r.inferred), "frame {i}");
        assert_eq!(m.tokens, r.tokens);
    }
    assert!(moved > 1e-4, "smoothing changed nothing");
}

#[test]
fn interpolation_puts_the_frames_between_inferences_on_the_line() {
    let info = rgb_info(48, 48);
    // Frames 1, 2 lie on the line from frame 0 to frame 3, in order; the frame held at EOS
    // (4) gets frame 3's keypoints.
    let outs = run(
        &mut tracked("inference-interval=3", "gap-policy=interpolate"),
        &info,
        5,
    );
    assert_eq!(outs.len(), 5);
    let pts: Vec<_> = outs.iter().map(|b| b.pts().unwrap()).collect();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "order kept: {pts:?}");
    let m: Vec<FrameKeypoints> = outs.iter().map(|b| read_meta(b)).collect();
    for (i, t) in [(1, 1.0 / 3.0), (2, 2.0 / 3.0)] {
        assert!(m[i].inferred);
        assert_eq!(m[i].origin, Some(Origin::Interpolated));
        for j in 0..NUM_KEYPOINTS {
            let (a, b, k) = (m[0].keypoints[j], m[3].keypoints[j], m[i].keypoints[j]);
            assert!(
                (k.x - (a.x + (b.x - a.x) * t)).abs() < 1e-5,
                "frame {i} kp {j}"
            );
            assert!(
                (k.y - (a.y + (b.y - a.y) * t)).abs() < 1e-5,
                "frame {i} kp {j}"
            );
        }
    }
    assert!(m[4].inferred);
    assert_eq!(m[4].origin, Some(Origin::Interval));
    assert_eq!(m[4].keypoints, m[3].keypoints);
}

/// Hand-made metadata on a 100x50 frame: keypoint 0 at (x, 0.5), keypoint 1 at (0.5, 0.25).
fn hand_meta(x: f32, confidence: f32, origin: Origin) -> FrameKeypoints {
    let kp = |id, x, y| KeypointMeta {
        id,
        x,
        y,
        confidence,
        visible: confidence >= 0.15,
    };
    FrameKeypoints {
        semantic_tag: semantic_tag(2),
        model: "hand".into(),
        source_width: 100,
        source_height: 50,
        inferred: origin.inferred(),
        keypoints: vec![kp(0, x, 0.5), kp(1, 0.5, 0.25)],
        origin: Some(origin),
        threshold: Some(0.15),
        tokens: Some(TokenIdentity {
            indices: vec![3, 1],
            hash: "0123456789abcdef".into(),
        }),
        ..Default::default()
    }
}

/// A 100x50 RGB buffer of frame `i` carrying `meta`, another element's ROI meta and a
/// reference timestamp meta.
fn hand_buffer(i: u64, meta: &FrameKeypoints) -> gst::Buffer {
    let mut buf = gst::Buffer::with_size(100 * 50 * 3).unwrap();
    let b = buf.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_mseconds(40 * i));
    let mut face = gst_video::VideoRegionOfInterestMeta::add(b, "face", (5, 6, 7, 8));
    face.add_param(
        gst::Structure::builder("detection")
            .field("label_id", 3i32)
            .build(),
    );
    meta.attach(b);
    let caps = gst::Caps::new_empty_simple("timestamp/x-test");
    gst::ReferenceTimestampMeta::add(b, &caps, gst::ClockTime::from_seconds(i), None);
    buf
}

#[test]
fn metadata_is_rewritten_in_place_and_other_metas_are_kept() {
    init();
    let mut hn = gst_check::Harness::new("stablekeypointstrack");
    hn.element()
        .unwrap()
        .set_property_from_str("gap-policy", "interpolate");
    hn.set_src_caps_str("video/x-raw,format=RGB,width=100,height=50,framerate=25/1");
    let held = hand_meta(0.2, 0.1, Origin::Interval);
    let metas = [
        hand_meta(0.2, 0.1, Origin::Inference),
        held.clone(),
        held,
        hand_meta(0.8, 0.4, Origin::Inference),
    ];
    let mut outs = Vec::new();
    for (i, m) in metas.iter().enumerate() {
        hn.push(hand_buffer(i as u64, m)).unwrap();
        outs.extend(std::iter::from_fn(|| hn.try_pull()));
    }
    assert_eq!(outs.len(), 4);
    for (i, b) in outs.iter().enumerate() {
        let m = read_meta(b);
        let t = i as f32 / 3.0;
        // x from 0.2 to 0.8, confidence from 0.1 to 0.4: visible (>= 0.15) from frame 1 on.
        let (x, c) = (0.2 + 0.6 * t, 0.1 + 0.3 * t);
        assert!((m.keypoints[0].x - x).abs() < 1e-6, "frame {i}: {m:?}");
        assert!((m.keypoints[0].confidence - c).abs() < 1e-6, "frame {i}");
        assert_eq!(m.keypoints[0].visible, i > 0, "frame {i}");
        let origin = if i == 1 || i == 2 {
            Origin::Interpolated
        } else {
            Origin::Inference
        };
        assert_eq!(m.origin, Some(origin), "frame {i}");
        assert_eq!(m.tokens, metas[0].tokens, "the identity travels on");
        // The box follows the visible keypoints (in pixels of this 100x50 frame).
        let want = FrameKeypoints {
            keypoints: m.keypoints.clone(),
            ..hand_meta(0.0, 0.0, Origin::Inference)
        };
        assert_eq!(m.rect, want.bounding_box(), "frame {i}");
        // Everything else is still there.
        let rois: Vec<_> = b
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .collect();
        assert_eq!(rois.len(), 2, "frame {i}");
        let face = rois.iter().find(|r| r.roi_type() == "face").unwrap();
        assert_eq!(face.rect(), (5, 6, 7, 8));
        assert!(face.param("detection").is_some());
        let ours = rois.iter().find(|r| r.roi_type() == ROI_TYPE).unwrap();
        assert_eq!(ours.id(), 1, "frame {i}: the ROI id is kept");
        let ts = b.meta::<gst::ReferenceTimestampMeta>().unwrap();
        assert_eq!(ts.timestamp(), gst::ClockTime::from_seconds(i as u64));
    }
}

#[test]
fn without_work_buffers_pass_untouched_in_any_memory() {
    init();
    // Metadata only: caps in other memory are taken (the pixels are never mapped).
    let mut hn = gst_check::Harness::new("stablekeypointstrack");
    hn.set_src_caps_str(
        "video/x-raw(memory:GLMemory),format=RGBA,width=100,height=50,framerate=25/1",
    );
    let m = hand_meta(0.3, 0.2, Origin::Inference);
    let input = hand_buffer(0, &m);
    let before = read_meta(&input);
    hn.push(input).unwrap();
    let out = hn.pull().unwrap();
    assert_eq!(read_meta(&out), before);
    // Without metadata: nothing to do either.
    hn.push(gst::Buffer::with_size(16).unwrap()).unwrap();
    assert!(FrameKeypoints::from_buffer(&hn.pull().unwrap()).is_none());
}

#[test]
fn interpolation_adds_its_look_ahead_to_the_latency() {
    let info = rgb_info(32, 32);
    // At 25 fps and interval 4, a frame waits up to 3 frames (120 ms) for the next
    // inference; the custom schedule query crosses the queue.
    let ours = |track: &str| {
        let mut hn = chain_harness(&format!(
            "stablekeypoints name=skp {} inference-interval=4 ! queue ! stablekeypointstrack {track}",
            props()
        ));
        hn.set_src_caps(info.to_caps().unwrap());
        hn.set_upstream_latency(gst::ClockTime::from_mseconds(10));
        // A first frame carries the caps (and their frame rate) past the queue.
        hn.push(frame(&info, 0)).unwrap();
        hn.pull().unwrap();
        let latency = hn.query_latency().expect("latency answered");
        let stats = inference_of(&hn).property::<gst::Structure>("stats");
        let per_frame = stats
            .get::<f64>("mean-inference-ms")
            .unwrap()
            .max(stats.get::<f64>("warmup-ms").unwrap());
        (latency.nseconds() as f64 / 1e6 - 10.0, per_frame)
    };
    let (plain, pf) = ours("smoothing=one-euro");
    assert!((plain - pf).abs() < 1e-3, "{plain} ms vs {pf} ms");
    let (ahead, pf) = ours("gap-policy=interpolate");
    assert!(
        (ahead - (pf + 120.0)).abs() < 1e-3,
        "{ahead} ms vs {pf} + 120 ms"
    );
}

#[test]
fn pipeline_interpolates_and_smooths_to_eos() {
    init();
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=7 pattern=ball ! video/x-raw,format=I420,width=40,height=30,framerate=10/1 \
         ! stablekeypoints {} inference-interval=3 \
         ! stablekeypointstrack gap-policy=interpolate smoothing=one-euro ! fakesink name=sink",
        props()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                store.lock().unwrap().push(read_meta(b).origin);
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    use Origin::*;
    let i = Some(Inference);
    let t = Some(Interpolated);
    assert_eq!(*seen.lock().unwrap(), [i, t, t, i, t, t, i]);
}
