//! A live source with a slow model keeps pace.

use super::*;

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
