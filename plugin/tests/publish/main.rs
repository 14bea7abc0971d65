//! The `stablekeypointspublish` element: passthrough, records equal to the metadata, files,
//! COCO, one record per object, start errors, and a real MQTT broker (Debian's mosquitto,
//! started per test on a free localhost port) including an outage in the middle of a live
//! stream.

use gst::prelude::*;
use gststablekeypoints::meta::{
    semantic_tag, FrameKeypoints, KeypointMeta, LandmarkMeta, ObjectMeta, PoseMeta,
};
use serde_json::Value;
use stablekeypoints::export::{Record, OBJECT_SCHEMA, SCHEMA};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod broker;
mod files;
mod messages;
mod objects;
mod pipeline;
mod records;

/// Waits for `cond` (polled every 10 ms) at most `secs` seconds.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Frame metadata with hand-picked values; `pose` adds three landmarks (one outside).
fn meta(i: u32, pose: bool) -> FrameKeypoints {
    let kp = |id, x, y, confidence, visible| KeypointMeta {
        id,
        x,
        y,
        confidence,
        visible,
    };
    FrameKeypoints {
        semantic_tag: semantic_tag(2),
        model: "m".into(),
        source_width: 100,
        source_height: 50,
        inferred: i % 2 == 1,
        keypoints: vec![
            kp(4, 0.25 + 0.01 * i as f32, 0.5, 0.125, true),
            kp(9, 0.75, 0.1, 0.03125, false),
        ],
        pose: pose.then(|| PoseMeta {
            landmarks: vec![
                LandmarkMeta {
                    name: "head".into(),
                    x: 0.5,
                    y: 0.2,
                },
                LandmarkMeta {
                    name: "tail".into(),
                    x: 1.5,
                    y: 0.5,
                },
            ],
            connections: vec![[0, 1]],
        }),
        rect: (0, 0, 0, 0),
        ..Default::default()
    }
}

/// A 1-byte buffer of frame `i` (25 fps timestamps) with our metadata when `with_meta`.
fn buffer(i: u32, with_meta: Option<&FrameKeypoints>) -> gst::Buffer {
    let mut b = gst::Buffer::from_slice(vec![i as u8; 16]);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        if let Some(m) = with_meta {
            m.attach(b);
        }
    }
    b
}

/// The element with `props` (`name=value`, space-separated).
fn element(props: &str) -> gst::Element {
    init();
    let el = gst::ElementFactory::make("stablekeypointspublish")
        .build()
        .unwrap();
    for p in props.split_whitespace() {
        let (k, v) = p.split_once('=').unwrap();
        el.set_property_from_str(k, v);
    }
    el
}

/// The element of `props` started (PLAYING, no data), or the error of its start.
fn started(props: &str) -> Result<gst::Element, String> {
    let el = element(props);
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    if el.set_state(gst::State::Playing).is_ok() {
        return Ok(el);
    }
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let _ = el.set_state(gst::State::Null);
    Err(e.error().to_string())
}

/// A Harness around the element with `props`.
fn harness(props: &str, caps: &str) -> gst_check::Harness {
    let el = element(props);
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(caps);
    h
}

fn lines(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "complete lines");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// The record the element must write for `m` as frame `index` at 25 fps, positions in pixels
/// of a `w` x `h` frame (computed here from the metadata, field by field).
fn assert_record_is(r: &Record, m: &FrameKeypoints, index: u64, w: u32, h: u32) {
    assert_eq!(r.schema, SCHEMA);
    assert_eq!(r.frame, index);
    assert_eq!((r.width, r.height), (w, h));
    assert_eq!(r.inferred, m.inferred);
    assert_eq!(r.keypoints.len(), m.keypoints.len());
    for (k, e) in r.keypoints.iter().zip(&m.keypoints) {
        assert_eq!(k.id, e.id);
        assert_eq!(
            (k.nx, k.ny),
            (e.x, e.y),
            "normalised positions as in the meta"
        );
        assert_eq!((k.x, k.y), (e.x * w as f32, e.y * h as f32));
        assert_eq!(k.confidence, e.confidence);
        assert_eq!(k.visible, e.visible);
    }
    match (&r.pose, &m.pose) {
        (None, None) => assert!(r.skeleton.is_none()),
        (Some(rp), Some(mp)) => {
            assert_eq!(rp.len(), mp.landmarks.len());
            for (l, e) in rp.iter().zip(&mp.landmarks) {
                assert_eq!(l.name, e.name);
                assert_eq!((l.nx, l.ny), (e.x, e.y));
                assert_eq!((l.x, l.y), (e.x * w as f32, e.y * h as f32));
            }
            assert_eq!(r.skeleton.as_ref(), Some(&mp.connections));
        }
        other => panic!("pose mismatch: {other:?}"),
    }
}

/// `n` frames of the tiny model through the inference element and the publish element;
/// returns the published buffers' metadata and the bus messages.
fn model_pipeline(n: u32, publish: &str) -> (Vec<FrameKeypoints>, Vec<gst::Message>) {
    init();
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints {} ! stablekeypointspublish name=pub {publish} ! fakesink name=sink",
        props()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let _stop = Stopped(pipeline.clone());
    let metas = collect_metas(&pipeline, "sink");
    let msgs = run_to_eos(&pipeline, 120);
    pipeline.set_state(gst::State::Null).unwrap();
    let m = std::mem::take(&mut *metas.lock().unwrap());
    (m, msgs)
}

/// Sets the pipeline to NULL however the test ends (a pipeline dropped while playing
/// crashes the process at exit, taking the other tests' results with it).
struct Stopped(gst::Pipeline);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Collects the metadata of every buffer reaching the element named `name`.
fn collect_metas(pipeline: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<FrameKeypoints>>> {
    let metas = Arc::new(Mutex::new(Vec::new()));
    let store = metas.clone();
    let pad = pipeline.by_name(name).unwrap().static_pad("sink").unwrap();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer() {
            let m = FrameKeypoints::from_buffer(b)
                .expect("metadata")
                .expect("well formed");
            store.lock().unwrap().push(m);
        }
        gst::PadProbeReturn::Ok
    });
    metas
}

/// Plays `pipeline` until EOS; panics on an error or after `secs`. Returns the messages.
fn run_to_eos(pipeline: &gst::Pipeline, secs: u64) -> Vec<gst::Message> {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut msgs = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(secs)) {
        match msg.view() {
            gst::MessageView::Eos(_) => return msgs,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            _ => msgs.push(msg),
        }
    }
    panic!("no EOS within {secs} s");
}

/// COCO's field rules for a results array (`common::coco`), with our one category; returns
/// (image_id, keypoints) per result.
fn coco_results(arr: &[Value], k: usize, w: f64, h: f64) -> Vec<(u64, Vec<f64>)> {
    arr.iter()
        .map(|r| {
            assert_eq!(r["category_id"].as_u64(), Some(1));
            let triples = coco::check_result(r, k, w as u64, h as u64);
            let id = r["image_id"].as_u64().expect("integer image_id");
            let flat = triples.iter().flat_map(|&(x, y, v)| [x, y, v as f64]);
            (id, flat.collect())
        })
        .collect()
}

fn record(payload: &[u8]) -> Record {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(payload)))
}

/// Pushes `n` frames of metadata through the element (QoS 1) and returns it after EOS, or
/// the start error.
fn publish_frames(props: &str, n: u32) -> Result<gst::Element, String> {
    let el = started(props)?;
    el.set_state(gst::State::Null).unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=100,height=50,framerate=25/1");
    for i in 0..n {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    Ok(el)
}

/// Frame `i`'s keypoints of two objects (ids 5 and 8), as [`meta`] made them, each in its
/// box.
fn objects(i: u32) -> Vec<FrameKeypoints> {
    [(5u64, [0.1f32, 0.2, 0.3, 0.6]), (8, [0.5, 0.0, 0.5, 1.0])]
        .into_iter()
        .map(|(id, bbox)| {
            let mut m = meta(i, false);
            for k in &mut m.keypoints {
                k.x = bbox[0] + k.x * bbox[2];
                k.y = bbox[1] + k.y * bbox[3];
            }
            m.object = Some(ObjectMeta {
                id,
                label: "person".into(),
                bbox,
                roi_id: id as i32,
                ..Default::default()
            });
            m
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
