//! Caps and frames: every native format at odd sizes, padded strides, big and non-square
//! frames, renegotiation, caps outside the template, scalers and converters.

use super::*;

/// The formats the core reads itself (the others: `tests/inference/formats.rs`).
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
    let skp = inference_element("");
    let sink = skp.static_pad("sink").unwrap();
    // Every raw format in system memory is taken (tests/inference/formats.rs)...
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
    let mut hn =
        gst_check::Harness::with_element(&inference_element(""), Some("sink"), Some("src"));
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
