//! A soak run: every frame inferred, RSS must stay flat.

use super::*;

/// `SKP_SOAK_FRAMES` frames (10,000 by default), every one inferred, through the whole
/// element (in Y444_10LE, x264enc's default: conversion to RGB and drawing by blending, the
/// paths that keep buffers across frames; messages, JSON lines), then the track element's
/// smoothing (which rewrites the metadata of every frame); RSS must stay
/// flat after the warm-up. Run it with
/// `cargo test -p gst-plugin-stablekeypoints --test reliability -- --ignored soak`.
#[test]
#[ignore = "long: run with --ignored (test.sh runs a bounded one)"]
fn soak_rss_stays_flat() {
    if !isolated(module_path!(), "soak_rss_stays_flat") {
        return;
    }
    let frames: u64 = std::env::var("SKP_SOAK_FRAMES")
        .ok()
        .map(|v| v.parse().expect("SKP_SOAK_FRAMES is a number"))
        .unwrap_or(10_000);
    assert!(frames >= 100, "SKP_SOAK_FRAMES must be at least 100");
    let json = scratch().join("soak.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=Y444_10LE,width=64,height=48,framerate=30/1 \
         ! stablekeypoints name=skp {} draw=true draw-ids=true ! stablekeypointstrack smoothing=one-euro \
         ! stablekeypointspublish post-messages=true location={} ! fakesink name=sink sync=false",
        props(),
        json.display()
    );
    let p = launch(&desc);
    let step = (frames / 20).max(1);
    let warmup = (frames / 10).max(50);
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    {
        let pad = p.by_name("sink").unwrap().static_pad("sink").unwrap();
        let count = AtomicU64::new(0);
        let s = samples.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let i = count.fetch_add(1, Ordering::SeqCst) + 1;
            if i == warmup || i.is_multiple_of(step) || i == frames {
                s.lock().unwrap().push((i, rss_kib()));
            }
            gst::PadProbeReturn::Ok
        });
    }
    let start_rss = rss_kib();
    let started = Instant::now();
    p.set_state(gst::State::Playing).unwrap();
    // The bus is drained all along (one message per frame).
    wait_eos_or_error(&p, Duration::from_secs(frames * 2 + 120)).unwrap();
    let elapsed = started.elapsed();
    let stats = p
        .by_name("skp")
        .unwrap()
        .property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    let samples = samples.lock().unwrap().clone();
    let warm = samples.iter().find(|(i, _)| *i == warmup).unwrap().1;
    let end = samples.last().unwrap().1;
    let peak = samples
        .iter()
        .filter(|(i, _)| *i >= warmup)
        .map(|s| s.1)
        .max()
        .unwrap();
    println!(
        "soak: {frames} frames in {:.1} s ({:.1} ms/frame); RSS before start {start_rss} KiB, \
         after {warmup} frames (warm-up) {warm} KiB, peak after warm-up {peak} KiB, at the end {end} KiB",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / frames as f64
    );
    println!("soak: RSS samples (frame, KiB): {samples:?}");
    assert_eq!(stats.get::<u64>("frames-processed").unwrap(), frames);
    assert_eq!(
        stats.get::<u64>("frames-inferred").unwrap(),
        frames,
        "every frame inferred: {stats}"
    );
    assert_eq!(json_lines(&json).len() as u64, frames);
    let bound = 8 * 1024;
    assert!(
        peak <= warm + bound,
        "RSS grew by {} KiB after the warm-up (bound {bound} KiB)",
        peak - warm
    );
}
