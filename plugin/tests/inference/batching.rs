//! Batches: batch-size 4 gives batch-size 1's metadata in order; caps changes, flushes and the
//! timeout release partial batches; the latency grows with the batch.

use super::*;

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
