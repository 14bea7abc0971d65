//! The literal `filesrc ! decodebin ! stablekeypoints ! fakesink` on clips that real encoders
//! make in those formats.

use super::*;

/// What went into and came out of the element in a pipeline.
struct Seen {
    caps: Option<gst::Caps>,
    inputs: Vec<gst::Buffer>,
    outputs: Vec<gst::Buffer>,
}

/// Runs the literal `filesrc ! decodebin ! stablekeypoints ! fakesink` on `clip`.
fn decode_through_element(clip: &std::path::Path, extra: &str) -> Seen {
    init();
    let desc = format!(
        "filesrc location={} ! decodebin ! stablekeypoints name=skp {} {extra} ! fakesink name=sink",
        clip.display(),
        props()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen {
        caps: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
    }));
    let sink_pad = p.by_name("skp").unwrap().static_pad("sink").unwrap();
    let s = seen.clone();
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(b) = info.buffer() {
            let mut s = s.lock().unwrap();
            s.caps = pad.current_caps();
            s.inputs.push(b.copy_deep().unwrap());
        }
        gst::PadProbeReturn::Ok
    });
    let out_pad = p.by_name("sink").unwrap().static_pad("sink").unwrap();
    let s = seen.clone();
    out_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer() {
            s.lock().unwrap().outputs.push(b.copy());
        }
        gst::PadProbeReturn::Ok
    });
    run(&p).unwrap_or_else(|e| panic!("{desc}: {e}"));
    let mut s = seen.lock().unwrap();
    Seen {
        caps: s.caps.take(),
        inputs: std::mem::take(&mut s.inputs),
        outputs: std::mem::take(&mut s.outputs),
    }
}

#[test]
fn decodebin_pipelines_run_on_what_real_encoders_give() {
    // (clip, encoder fragment, the format decodebin must give for the test to cover it)
    let clips: [(&str, &str, F); 12] = [
        ("x264-default.mp4", "x264enc ! mp4mux", F::Y44410le),
        (
            "x264-444.mp4",
            "video/x-raw,format=Y444 ! x264enc ! mp4mux",
            F::Y444,
        ),
        (
            "x264-422.mp4",
            "video/x-raw,format=Y42B ! x264enc ! mp4mux",
            F::Y42b,
        ),
        (
            "x264-420-10.mp4",
            "video/x-raw,format=I420_10LE ! x264enc ! mp4mux",
            F::I42010le,
        ),
        (
            "x264-422-10.mp4",
            "video/x-raw,format=I422_10LE ! x264enc ! mp4mux",
            F::I42210le,
        ),
        (
            "x265-420-10.mkv",
            "video/x-raw,format=I420_10LE ! x265enc ! h265parse ! matroskamux",
            F::I42010le,
        ),
        ("theora.ogg", "theoraenc ! oggmux", F::Y444),
        ("vp9.webm", "vp9enc ! webmmux", F::Y44412le),
        (
            "jpeg-grey.avi",
            "video/x-raw,format=GRAY8 ! jpegenc ! avimux",
            F::Gray8,
        ),
        ("yuy2.mkv", "video/x-raw,format=YUY2 ! matroskamux", F::Yuy2),
        ("uyvy.mkv", "video/x-raw,format=UYVY ! matroskamux", F::Uyvy),
        ("ffv1.mkv", "avenc_ffv1 ! matroskamux", F::Gbra12le),
    ];
    for (name, fragment, format) in clips {
        let clip = encode(name, fragment);
        let seen = decode_through_element(&clip, "");
        let mut det = core_detector();
        let info = gst_video::VideoInfo::from_caps(&seen.caps.expect("negotiated")).unwrap();
        assert_eq!(
            info.format(),
            format,
            "{name}: decodebin gives another format"
        );
        assert_eq!(seen.outputs.len(), 3, "{name}");
        for (i, (inp, out)) in seen.inputs.iter().zip(&seen.outputs).enumerate() {
            let what = format!("{name} ({format:?}) frame {i}");
            assert_matches_core(
                &read_meta(out),
                &core_on_rgb(&mut det, inp, &info, i as u64),
                &what,
            );
            assert!(
                bytes(out) == bytes(inp),
                "{what}: bytes changed with draw=false"
            );
        }
        let drawn = decode_through_element(&clip, "draw=true draw-ids=true");
        assert_eq!(drawn.outputs.len(), 3, "{name}");
        for (inp, out) in drawn.inputs.iter().zip(&drawn.outputs) {
            assert!(bytes(out) != bytes(inp), "{name}: nothing drawn");
        }
    }
    // No software decoder gives P010 (hardware ones do): the same checks from videotestsrc.
    init();
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=2 pattern=ball ! video/x-raw,format=P010_10LE,width=64,height=48 \
         ! stablekeypoints {} draw=true ! fakesink",
        props()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    run(&p).unwrap();
}
