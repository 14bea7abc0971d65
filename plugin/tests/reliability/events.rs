//! Events and state changes: flushes, seeks, EOS, QoS and latency extremes, state cycles,
//! and the noise key of each frame.

use super::*;

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

#[test]
fn state_cycles_do_not_leak_threads_or_memory() {
    if !isolated(module_path!(), "state_cycles_do_not_leak_threads_or_memory") {
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
