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

mod common;
use common::*;

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

/// A Harness around the element with `props` (`name=value`, space-separated).
fn harness(props: &str, caps: &str) -> gst_check::Harness {
    init();
    let el = gst::ElementFactory::make("stablekeypointspublish")
        .build()
        .unwrap();
    for p in props.split_whitespace() {
        let (k, v) = p.split_once('=').unwrap();
        el.set_property_from_str(k, v);
    }
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

#[test]
fn passthrough_same_buffer_one_record_per_frame_with_metadata() {
    let path = scratch().join("harness.jsonl");
    let mut h = harness(
        &format!("location={}", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let metas = [meta(0, false), meta(2, true)];
    let inputs = [
        buffer(0, Some(&metas[0])),
        buffer(1, None),
        buffer(2, Some(&metas[1])),
    ];
    for b in &inputs {
        let ptr = b.as_ptr();
        h.push(b.clone()).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.as_ptr(), ptr, "the very same buffer leaves (no copy)");
        assert_eq!(
            out.map_readable().unwrap().as_slice(),
            b.map_readable().unwrap().as_slice()
        );
        assert_eq!(
            FrameKeypoints::from_buffer(&out).map(|r| r.unwrap().keypoints),
            FrameKeypoints::from_buffer(b).map(|r| r.unwrap().keypoints)
        );
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let recs = lines(&path);
    assert_eq!(recs.len(), 2, "no record for the buffer without metadata");
    assert_record_is(&recs[0], &metas[0], 0, 100, 50);
    assert_record_is(&recs[1], &metas[1], 2, 100, 50);
    assert_eq!(recs[1].pts, Some(80_000_000));
    assert_eq!(recs[1].duration, Some(40_000_000));
    assert_eq!(recs[1].running_time, Some(80_000_000));
    assert_eq!(h.element().unwrap().property::<u64>("records-sent"), 2);
    assert_eq!(h.element().unwrap().property::<u64>("records-dropped"), 0);
}

#[test]
fn pixels_refer_to_the_frame_at_the_element() {
    // After a scaler: the normalised positions stay, the pixels follow the caps.
    let m = meta(1, false);
    let frame = |m: &FrameKeypoints| {
        let mut b = gst::Buffer::from_mut_slice(vec![90u8; 100 * 50 * 3]);
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::ZERO);
            m.attach(b);
        }
        b
    };
    let path = scratch().join("scaled.jsonl");
    init();
    let mut h = gst_check::Harness::new_parse(&format!(
        "videoscale ! capsfilter caps=video/x-raw,width=200,height=150 \
         ! stablekeypointspublish location={}",
        path.display()
    ));
    h.set_src_caps_str("video/x-raw,format=RGB,width=100,height=50,framerate=25/1");
    h.push(frame(&m)).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert_record_is(&lines(&path)[0], &m, 0, 200, 150);
    // Caps of another size without a scaler (a crop or border changed the frame): no
    // record, rather than one at the wrong place.
    let path = scratch().join("other-size.jsonl");
    let mut h = harness(
        &format!("location={}", path.display()),
        "video/x-raw,format=RGB,width=200,height=150,framerate=25/1",
    );
    h.push(buffer(0, Some(&m))).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(lines(&path).is_empty());
    // Without video caps: the size the keypoints were computed on.
    let path = scratch().join("any-caps.jsonl");
    let mut h = harness(&format!("location={}", path.display()), "application/x-foo");
    h.push(buffer(0, Some(&m))).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert_record_is(&lines(&path)[0], &m, 0, 100, 50);
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

#[test]
fn pipeline_records_equal_the_metadata() {
    let n = 5;
    let ours = scratch().join("publish.jsonl");
    let (metas, msgs) = model_pipeline(
        n,
        &format!("location={} post-messages=true", ours.display()),
    );
    assert_eq!(metas.len(), n as usize);
    let recs = lines(&ours);
    assert_eq!(recs.len(), n as usize);
    for (i, (r, m)) in recs.iter().zip(&metas).enumerate() {
        assert_record_is(r, m, i as u64, 64, 48);
        assert_eq!(r.pts, Some(i as u64 * 1_000_000_000 / 30));
    }
    // Bus messages: the inference element's structure, one per frame, from our element.
    let ours: Vec<&gst::StructureRef> = msgs
        .iter()
        .filter(|m| m.src().is_some_and(|s| s.name() == "pub"))
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure(),
            _ => None,
        })
        .collect();
    assert_eq!(ours.len(), n as usize);
    for (i, (s, m)) in ours.iter().zip(&metas).enumerate() {
        assert_eq!(s.name(), gststablekeypoints::MESSAGE_NAME);
        assert_eq!(s.get::<u64>("frame").unwrap(), i as u64);
        assert_eq!(s.get::<i32>("width").unwrap(), 64);
        assert_eq!(s.get::<bool>("inferred").unwrap(), m.inferred);
        let list = s.get::<gst::List>("keypoints").unwrap();
        assert_eq!(list.len(), m.keypoints.len());
        for (v, k) in list.iter().zip(&m.keypoints) {
            let kp = v.get::<gst::Structure>().unwrap();
            assert_eq!(kp.get::<u32>("id").unwrap(), k.id);
            assert_eq!(kp.get::<f32>("nx").unwrap(), k.x);
            assert_eq!(kp.get::<f32>("x").unwrap(), k.x * 64.0);
            assert_eq!(kp.get::<f32>("confidence").unwrap(), k.confidence);
        }
    }
}

/// COCO's field rules for a results array (types, 3 values per keypoint, v in {0, 1, 2}
/// integers, x = y = 0 when v = 0, labelled points inside the image in 0-indexed pixels);
/// returns (image_id, keypoints) per result.
fn coco_results(arr: &[Value], k: usize, w: f64, h: f64) -> Vec<(u64, Vec<f64>)> {
    arr.iter()
        .map(|r| {
            let id = r["image_id"].as_u64().expect("integer image_id");
            assert_eq!(r["category_id"].as_u64(), Some(1));
            assert!(r["score"].is_f64() || r["score"].is_u64(), "{r}");
            let kp = r["keypoints"].as_array().expect("keypoints");
            assert_eq!(kp.len(), 3 * k);
            for t in kp.chunks(3) {
                let v = t[2].as_u64().expect("integer v");
                assert!(v <= 2);
                let (x, y) = (t[0].as_f64().unwrap(), t[1].as_f64().unwrap());
                if v == 0 {
                    assert_eq!((x, y), (0.0, 0.0));
                } else {
                    assert!((0.0..=w - 1.0).contains(&x) && (0.0..=h - 1.0).contains(&y));
                }
            }
            (id, kp.iter().map(|v| v.as_f64().unwrap()).collect())
        })
        .collect()
}

#[test]
fn coco_file_from_the_model_follows_the_field_rules() {
    let n = 4;
    let path = scratch().join("results.coco.json");
    let (metas, _) = model_pipeline(n, &format!("location={} format=coco", path.display()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let results = coco_results(
        v.as_array().expect("a results array"),
        NUM_KEYPOINTS,
        64.0,
        48.0,
    );
    assert_eq!(results.len(), n as usize);
    for (i, ((id, kp), m)) in results.iter().zip(&metas).enumerate() {
        assert_eq!(*id, i as u64, "image_id is the frame index");
        for (t, k) in kp.chunks(3).zip(&m.keypoints) {
            // 0-indexed pixels: half a pixel left of and above our pixel positions, within
            // the image.
            let want = |v: f32, size: f64| (v as f64 * size - 0.5).clamp(0.0, size - 1.0);
            assert!((t[0] - want(k.x, 64.0)).abs() < 1e-4, "{t:?} {k:?}");
            assert!((t[1] - want(k.y, 48.0)).abs() < 1e-4, "{t:?} {k:?}");
            assert_eq!(t[2], if k.visible { 2.0 } else { 1.0 });
        }
        let mean = m.keypoints.iter().map(|k| k.confidence).sum::<f32>() / m.keypoints.len() as f32;
        let score = v[i]["score"].as_f64().unwrap();
        assert!(
            (score - mean as f64).abs() < 1e-6,
            "score {score} vs mean {mean}"
        );
    }
}

#[test]
fn coco_with_a_pose_names_the_keypoints_and_a_1_based_skeleton() {
    let path = scratch().join("pose.coco.json");
    let mut h = harness(
        &format!("location={} format=coco", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    // Until the first EOS the file already holds a valid (empty) result list.
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "[]");
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, true)))).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cat = &v["categories"][0];
    assert_eq!(cat["id"], 1);
    assert_eq!(cat["keypoints"], serde_json::json!(["head", "tail"]));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2]]));
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert!(images
        .iter()
        .all(|i| i["width"] == 100 && i["height"] == 50));
    let anns = v["annotations"].as_array().unwrap();
    let results = coco_results(anns, 2, 100.0, 50.0);
    for (j, ((id, kp), a)) in results.iter().zip(anns).enumerate() {
        assert_eq!(*id, j as u64);
        assert_eq!(a["id"], j as u64 + 1, "annotation ids from 1");
        // head at (50, 10) px -> (49.5, 9.5); the tail at x = 150 is outside the frame.
        assert_eq!(kp, &[49.5, 9.5, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(a["num_keypoints"], 1);
        assert_eq!(a["iscrowd"], 0);
    }
    assert_eq!(h.element().unwrap().property::<u64>("records-sent"), 3);
}

fn start_error(props: &str) -> String {
    init();
    let desc = format!("videotestsrc num-buffers=1 ! stablekeypointspublish {props} ! fakesink");
    let pipeline = gst::parse::launch(&desc).unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .expect("an error or EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => panic!("{props}: the pipeline ran"),
    }
}

#[test]
fn bad_settings_fail_the_state_change_naming_the_property_and_value() {
    let free = free_port();
    for (props, want) in [
        (
            "location=/nonexistent/dir/k.jsonl".to_string(),
            "location=/nonexistent/dir/k.jsonl",
        ),
        ("".into(), "nothing to publish to"),
        ("location=/tmp/x address=localhost".into(), "both set"),
        (
            "address=mqtt://localhost:99999".into(),
            "address=mqtt://localhost:99999",
        ),
        (
            "address=http://localhost".into(),
            "address=http://localhost",
        ),
        (
            format!("address=127.0.0.1:{free}"),
            &format!("address=127.0.0.1:{free}"),
        ),
        (
            format!("address=mqtts://127.0.0.1:{free} tls-ca-file=/nonexistent/ca.pem"),
            "tls-ca-file=/nonexistent/ca.pem",
        ),
        (
            format!("address=127.0.0.1:{free} topic=a/+/b"),
            "topic=a/+/b",
        ),
    ]
    .iter()
    .map(|(p, w)| (p.clone(), w.to_string()))
    .collect::<Vec<_>>()
    {
        let err = start_error(&props);
        assert!(err.contains(&want), "{props}: {err}");
    }
}

// --- The broker ---------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto not installed: run scripts/install-deps.sh")
}

/// A mosquitto on 127.0.0.1:`port` with a config of its own (anonymous, no persistence).
struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(name: &str, extra: &str) -> Self {
        let port = free_port();
        let conf = scratch().join(format!("{name}.conf"));
        // Started as root, mosquitto becomes the `mosquitto` user, who cannot read the
        // certificates and password files under a private checkout (a clone in `mktemp -d`).
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}{extra}"
            ),
        )
        .unwrap();
        let mut b = Self {
            child: None,
            port,
            conf,
        };
        b.restart();
        b
    }

    /// (Re)starts it on the same port; returns once it accepts connections.
    fn restart(&mut self) {
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("mosquitto exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "mosquitto does not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn address(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A subscriber on its own thread; resubscribes after every reconnection.
struct Subscriber {
    client: rumqttc::Client,
    messages: mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    fn new(port: u16, topic: &str) -> Self {
        let mut opts = rumqttc::MqttOptions::new(format!("sub-{}", free_port()), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        let (tx, messages) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, t, s) = (client.clone(), topic.to_string(), stop.clone());
        std::thread::spawn(move || {
            use rumqttc::{Event, Packet};
            for ev in conn.iter() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(t.as_str(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p.payload.to_vec()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker is away: retry (rumqttc reconnects on the next poll).
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Self {
            client,
            messages,
            stop,
        }
    }

    /// Messages until `marker` (published by the test after everything else).
    fn until_marker(&self, marker: &[u8], secs: u64) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.messages.recv_timeout(left).expect("marker in time");
            if m == marker {
                return out;
            }
            out.push(m);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
    }
}

fn record(payload: &[u8]) -> Record {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(payload)))
}

#[test]
fn broker_receives_every_frame_once_in_order_equal_to_the_metadata() {
    let broker = Broker::start("once", "");
    let topic = "skp/test/once";
    let sub = Subscriber::new(broker.port, topic);
    let n = 8;
    let (metas, _) = model_pipeline(
        n,
        &format!(
            "address={} topic={topic} mqtt-qos=at-least-once client-id=skp-once",
            broker.address()
        ),
    );
    assert_eq!(metas.len(), n as usize);
    // EOS waited for the broker's acknowledgements: a marker sent now arrives after them.
    sub.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, b"end".to_vec())
        .unwrap();
    let got = sub.until_marker(b"end", 20);
    assert_eq!(got.len(), n as usize, "every frame exactly once");
    for (i, (p, m)) in got.iter().zip(&metas).enumerate() {
        assert_record_is(&record(p), m, i as u64, 64, 48);
    }
}

#[test]
fn eos_while_the_broker_is_away_is_bounded_and_every_record_is_counted() {
    let mut broker = Broker::start("away", "");
    let mut h = harness(
        &format!(
            "address={} flush-timeout=300 mqtt-qos=at-least-once",
            broker.address()
        ),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let el = h.element().unwrap();
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    wait_for("3 acknowledged records", 10, || {
        el.property::<u64>("records-sent") == 3
    });
    broker.kill();
    // Buffers keep flowing while the broker is away.
    for i in 3..8 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
        h.pull().unwrap();
    }
    let t = Instant::now();
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "EOS took {:?}",
        t.elapsed()
    );
    drop(h); // stops the element: what is still queued counts as dropped
    assert_eq!(el.property::<u64>("records-sent"), 3);
    assert_eq!(el.property::<u64>("records-dropped"), 5);
}

#[test]
fn broker_outage_mid_stream_drops_and_counts_then_delivery_resumes() {
    let mut broker = Broker::start("outage", "");
    let topic = "skp/test/outage";
    let sub = Subscriber::new(broker.port, topic);
    init();
    // A live source at 30 fps: the stream goes on while the broker is away.
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints {} inference-interval=3 \
         ! stablekeypointspublish name=pub address={} topic={topic} mqtt-qos=at-least-once flush-timeout=2000 \
         ! fakesink name=sink sync=false",
        props(),
        broker.address()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let _stop = Stopped(pipeline.clone());
    let publ = pipeline.by_name("pub").unwrap();
    let metas = collect_metas(&pipeline, "sink");
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut got: Vec<Record> = Vec::new();
    let receive = |got: &mut Vec<Record>, until: &dyn Fn(&[Record]) -> bool, secs| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !until(got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = sub.messages.recv_timeout(left).expect("records in time");
            got.push(record(&m));
        }
    };
    receive(&mut got, &|g| g.len() >= 5, 60);

    broker.kill();
    wait_for("dropped records", 20, || {
        publ.property::<u64>("records-dropped") > 0
    });
    // The element's warning, among whatever else the pipeline says.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped_at_warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Warning],
            )
            .expect("a dropped-records warning");
        if let gst::MessageView::Warning(w) = msg.view() {
            if let Some(d) = w
                .details()
                .filter(|d| d.name() == "stablekeypointspublish-dropped")
            {
                assert!(w.error().to_string().contains("Dropped"), "{}", w.error());
                // The reason recorded when records were dropped: the outage, never the
                // queue (256 places, a few records).
                let reason = d.get::<String>("reason").unwrap();
                assert!(
                    reason.contains("not connected to the broker")
                        || reason.contains("lost with the connection"),
                    "{reason}"
                );
                break d.get::<u64>("records-dropped").unwrap();
            }
        }
    };
    assert!(dropped_at_warning > 0);
    // Frames from here on reach the element after the broker went away.
    let outage = metas.lock().unwrap().len() as u64;

    broker.restart();
    receive(
        &mut got,
        &|g| g.last().is_some_and(|r| r.frame >= outage),
        30,
    );

    pipeline.send_event(gst::event::Eos::new());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(20)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    let (sent, dropped) = (
        publ.property::<u64>("records-sent"),
        publ.property::<u64>("records-dropped"),
    );
    pipeline.set_state(gst::State::Null).unwrap();
    let metas = std::mem::take(&mut *metas.lock().unwrap());
    // After EOS every record is accounted for exactly once.
    assert_eq!(
        sent + dropped,
        metas.len() as u64,
        "sent {sent} + dropped {dropped}"
    );
    assert!(dropped > 0);
    sub.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, b"end".to_vec())
        .unwrap();
    got.extend(sub.until_marker(b"end", 20).iter().map(|p| record(p)));
    // Records in flight when the broker died count as dropped although the broker may have
    // forwarded them before dying: at most rumqttc's in-flight window (100) of them.
    assert!(
        got.len() as u64 <= sent + 100,
        "received {} records, sent {sent}",
        got.len()
    );
    for pair in got.windows(2) {
        assert!(pair[1].frame > pair[0].frame, "each record once, in order");
    }
    for r in &got {
        assert_record_is(r, &metas[r.frame as usize], r.frame, 64, 48);
    }
}

/// Pushes `n` frames of metadata through the element (QoS 1) and returns it after EOS, or
/// the start error.
fn publish_frames(props: &str, n: u32) -> Result<gst::Element, String> {
    init();
    let el = gst::ElementFactory::make("stablekeypointspublish")
        .build()
        .unwrap();
    for p in props.split_whitespace() {
        let (k, v) = p.split_once('=').unwrap();
        el.set_property_from_str(k, v);
    }
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    if el.set_state(gst::State::Playing).is_err() {
        let msg = bus
            .pop_filtered(&[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!()
        };
        let _ = el.set_state(gst::State::Null);
        return Err(e.error().to_string());
    }
    el.set_state(gst::State::Null).unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=100,height=50,framerate=25/1");
    for i in 0..n {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    Ok(el)
}

#[test]
fn tls_with_client_certificates_and_its_errors() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let dir = scratch().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("skp test CA");
    let (other_ca, _) = ca("another CA");
    let leaf = |names: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client_pem, client_key) = leaf(vec![], "client");
    let ca_file = write("ca.pem", ca_cert.pem());
    let other_file = write("other-ca.pem", other_ca.pem());
    let (sc, sk) = (
        write("server.pem", server_pem),
        write("server.key", server_key),
    );
    let (cc, ck) = (
        write("client.pem", client_pem),
        write("client.key", client_key),
    );
    let broker = Broker::start(
        "tls",
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca_file.display(),
            sc.display(),
            sk.display()
        ),
    );
    let address = format!("mqtts://127.0.0.1:{}", broker.port);
    let tls = format!(
        "address={address} mqtt-qos=at-least-once tls-ca-file={}",
        ca_file.display()
    );
    let el = publish_frames(
        &format!(
            "{tls} tls-cert-file={} tls-key-file={}",
            cc.display(),
            ck.display()
        ),
        4,
    )
    .unwrap();
    assert_eq!(
        el.property::<u64>("records-sent"),
        4,
        "acknowledged over TLS"
    );
    // The broker wants a client certificate.
    let err = publish_frames(&tls, 1).unwrap_err();
    assert!(err.contains(&format!("address={address}")), "{err}");
    // A broker certificate from another CA is refused.
    let err = publish_frames(
        &format!(
            "address={address} tls-ca-file={} tls-cert-file={} tls-key-file={}",
            other_file.display(),
            cc.display(),
            ck.display()
        ),
        1,
    )
    .unwrap_err();
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // A key that is not a key.
    let err = publish_frames(
        &format!(
            "{tls} tls-cert-file={} tls-key-file={}",
            cc.display(),
            cc.display()
        ),
        1,
    )
    .unwrap_err();
    assert!(
        err.contains(&format!("tls-key-file={}", cc.display())),
        "{err}"
    );
}

#[test]
fn username_and_password() {
    let passwd = scratch().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["skp", "s3cret"])
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(status.success());
    let broker = Broker::start(
        "auth",
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    );
    let base = format!(
        "address={} mqtt-qos=at-least-once username=skp",
        broker.address()
    );
    let el = publish_frames(&format!("{base} password=s3cret"), 3).unwrap();
    assert_eq!(el.property::<u64>("records-sent"), 3);
    assert_eq!(
        el.property::<String>("password"),
        "*****",
        "never read back"
    );
    let err = publish_frames(&format!("{base} password=wrong"), 1).unwrap_err();
    assert!(
        err.contains(&broker.address()) && err.contains("NotAuthorized"),
        "{err}"
    );
}

/// `location=-`: the records on standard output, checked from a child process (this test
/// binary again), since the test harness owns this process's stdout.
/// An element of `props` started (PLAYING, no data), or the error of its start.
fn started(props: &str) -> Result<gst::Element, String> {
    init();
    let el = gst::ElementFactory::make("stablekeypointspublish")
        .build()
        .unwrap();
    for p in props.split_whitespace() {
        let (k, v) = p.split_once('=').unwrap();
        el.set_property_from_str(k, v);
    }
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

#[test]
fn files_go_through_links_never_over_devices_and_one_publisher_each() {
    // Issue 24 (4, 6): format=coco renamed its document over a symbolic link or a device
    // node (which became a regular file), and two publishers on one file interleaved lines.
    let dir = scratch().join("links");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let link = dir.join("k.coco.json");
    std::os::unix::fs::symlink("real/k.coco.json", &link).unwrap();
    publish_frames(&format!("format=coco location={}", link.display()), 3).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("real/k.coco.json")).unwrap()).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 3);
    assert_eq!(std::fs::read_dir(dir.join("real")).unwrap().count(), 1);

    // A device node or a FIFO is refused at start, and stays what it was.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, kind) in [
        ("/dev/null".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
    ] {
        let e = started(&format!("format=coco location={path}")).unwrap_err();
        assert!(
            e.contains(&format!("location {path}")) && e.contains(kind),
            "{e}"
        );
    }
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());

    // A second publisher on a file that one is writing is refused, naming the file; the
    // first one's lines are whole.
    for format in ["json-lines", "coco"] {
        let file = dir.join(format!("shared.{format}"));
        let props = format!("format={format} location={}", file.display());
        let first = started(&props).unwrap();
        let e = started(&props).unwrap_err();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("another publisher"),
            "{format}: {e}"
        );
        first.set_state(gst::State::Null).unwrap();
        // Free again once the first one stops.
        started(&props)
            .unwrap()
            .set_state(gst::State::Null)
            .unwrap();
    }
}

#[test]
fn location_dash_writes_json_lines_to_standard_output() {
    const CHILD: &str = "SKP_PUBLISH_STDOUT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        publish_frames("location=-", 3).unwrap();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "location_dash_writes_json_lines_to_standard_output",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let recs: Vec<Record> = text
        .lines()
        // libtest's own "test ... " may precede the first record on its line.
        .filter_map(|l| l.find("{\"schema\"").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{text}");
    for (i, r) in recs.iter().enumerate() {
        assert_record_is(r, &meta(i as u32, false), i as u64, 100, 50);
    }
}

// ---------------------------------------------------------------------------------------
// The inference element's former `post-messages` and `json-location` tests, through this
// element (same assertions).

#[test]
fn messages_and_json_lines_one_per_frame() {
    let n = 5;
    let json = scratch().join("keypoints.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=smpte ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints {} ! stablekeypointspublish post-messages=true location={} ! fakesink name=sink",
        props(),
        json.display()
    );
    let (msgs, bufs) = run_pipeline(&desc, Some("sink")).unwrap();
    let ours = keypoint_messages(&msgs);
    assert_eq!(ours.len(), n, "one message per frame");
    let mut last_ts = None;
    for (s, b) in ours.iter().zip(&bufs) {
        let ts = s.get::<u64>("timestamp").unwrap();
        assert_eq!(Some(ts), b.pts().map(|t| t.nseconds()));
        assert!(last_ts.is_none_or(|l| ts > l), "timestamps increase");
        last_ts = Some(ts);
        for f in ["stream-time", "running-time", "duration"] {
            assert!(s.get::<u64>(f).unwrap() != u64::MAX, "{f} set");
        }
        let list = s.get::<gst::List>("keypoints").unwrap();
        assert_eq!(list.len(), NUM_KEYPOINTS);
        let meta = read_meta(b);
        for (v, k) in list.iter().zip(&meta.keypoints) {
            let kp = v.get::<gst::Structure>().unwrap();
            assert_eq!(kp.get::<u32>("id").unwrap(), k.id);
            assert_eq!(kp.get::<f32>("nx").unwrap(), k.x);
            assert!((kp.get::<f32>("x").unwrap() - k.x * 64.0).abs() < 1e-3);
        }
    }
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), n, "one JSON line per frame");
    let mut last_pts = -1i64;
    for (rec, b) in lines.iter().zip(&bufs) {
        let pts = rec["pts"].as_i64().unwrap();
        assert!(pts > last_pts, "pts increase");
        last_pts = pts;
        assert!(rec["stream_time"].is_u64());
        assert_eq!(
            (rec["width"].as_u64(), rec["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(rec["inferred"], false);
        let kps = rec["keypoints"].as_array().unwrap();
        let meta = read_meta(b);
        assert_eq!(kps.len(), NUM_KEYPOINTS);
        for (j, k) in kps.iter().zip(&meta.keypoints) {
            assert_eq!(j["id"].as_u64(), Some(k.id as u64));
            assert!((j["nx"].as_f64().unwrap() - k.x as f64).abs() < 1e-6);
            assert!((j["x"].as_f64().unwrap() - k.x as f64 * 64.0).abs() < 1e-3);
            assert!((j["y"].as_f64().unwrap() - k.y as f64 * 48.0).abs() < 1e-3);
            assert!(j["confidence"].is_f64() && j["visible"].is_boolean());
        }
    }
}

#[test]
fn pose_landmarks_in_meta_messages_and_json_equal_the_core_regression() {
    let (n, w, h) = (4usize, 64u32, 48u32);
    let json = scratch().join("pose.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width={w},height={h},framerate=30/1 \
         ! stablekeypoints {} pose={} ! stablekeypointspublish post-messages=true location={} \
         ! fakesink name=sink",
        props(),
        test_pose().display(),
        json.display()
    );
    let (msgs, bufs) = run_pipeline(&desc, Some("sink")).unwrap();
    assert_eq!(bufs.len(), n);
    let ours = keypoint_messages(&msgs);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((ours.len(), lines.len()), (n, n));
    let mut spread = 0.0f64;
    for ((b, msg), rec) in bufs.iter().zip(&ours).zip(&lines) {
        let meta = read_meta(b);
        let pose = meta.pose.as_ref().expect("pose metadata");
        let names: Vec<&str> = pose.landmarks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, POSE_NAMES);
        assert_eq!(pose.connections, [[0, 1], [1, 2], [2, 3]]);
        let (core, hand) = expected_landmarks(&meta);
        let msg_pose = msg.get::<gst::List>("pose").unwrap();
        let skeleton: Vec<i32> = msg
            .get::<gst::Array>("skeleton")
            .unwrap()
            .iter()
            .map(|v| v.get::<i32>().unwrap())
            .collect();
        assert_eq!(skeleton, [0, 1, 1, 2, 2, 3]);
        assert_eq!(rec["skeleton"], serde_json::json!([[0, 1], [1, 2], [2, 3]]));
        let rec_pose = rec["pose"].as_array().unwrap();
        assert_eq!((msg_pose.len(), rec_pose.len()), (4, 4));
        for (j, l) in pose.landmarks.iter().enumerate() {
            let (x, y) = (l.x as f64, l.y as f64);
            assert!(
                (x - core[j][0]).abs() < 1e-6 && (y - core[j][1]).abs() < 1e-6,
                "landmark {j}: {l:?} vs core {:?}",
                core[j]
            );
            assert!(
                (x - hand[j].0).abs() < 1e-6 && (y - hand[j].1).abs() < 1e-6,
                "landmark {j}: {l:?} vs hand {:?}",
                hand[j]
            );
            let m = msg_pose.as_slice()[j].get::<gst::Structure>().unwrap();
            assert_eq!(m.name(), "landmark");
            assert_eq!(m.get::<&str>("name").unwrap(), POSE_NAMES[j]);
            assert_eq!(
                (m.get::<f32>("nx").unwrap(), m.get::<f32>("ny").unwrap()),
                (l.x, l.y)
            );
            assert!((m.get::<f32>("x").unwrap() - l.x * w as f32).abs() < 1e-3);
            assert!((m.get::<f32>("y").unwrap() - l.y * h as f32).abs() < 1e-3);
            let r = &rec_pose[j];
            assert_eq!(r["name"], POSE_NAMES[j]);
            assert!((r["nx"].as_f64().unwrap() - x).abs() < 1e-6);
            assert!((r["ny"].as_f64().unwrap() - y).abs() < 1e-6);
            assert!((r["x"].as_f64().unwrap() - x * w as f64).abs() < 1e-3);
            assert!((r["y"].as_f64().unwrap() - y * h as f64).abs() < 1e-3);
        }
        spread += (pose.landmarks[0].x - pose.landmarks[1].x).abs() as f64;
    }
    // The landmarks move with the keypoints (not a constant the regressor fell back to).
    assert!(spread > 0.0);
}

#[test]
fn frame_index_timestamp_keeps_the_source_index_after_lost_frames() {
    // Issue 24, 10: frames lost upstream (a damaged file) shifted every later record's
    // `frame` down. With frame-index=timestamp a record's `frame` is the source's: the
    // stream time (here 40 ms a frame: 25 fps) times the caps' frame rate. Frames 3 to 5
    // are lost; frame 7 carries no keypoints (no record, its index still used).
    let metas: Vec<FrameKeypoints> = (0..9).map(|i| meta(i, false)).collect();
    let sent = [0u32, 1, 2, 6, 7, 8];
    let run = |name: &str, props: &str, caps: &str| -> Vec<(u64, Option<u64>)> {
        let path = scratch().join(format!("index-{name}.jsonl"));
        let mut h = harness(&format!("location={} {props}", path.display()), caps);
        for &i in &sent {
            let m = (i != 7).then(|| &metas[i as usize]);
            h.push(buffer(i, m)).unwrap();
            h.pull().unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        lines(&path).iter().map(|r| (r.frame, r.pts)).collect()
    };
    let ms = |i: u64| Some(40_000_000 * i);
    let caps = "video/x-raw,format=RGB,width=100,height=50,framerate=25/1";
    assert_eq!(
        run("timestamp", "frame-index=timestamp", caps),
        [0, 1, 2, 6, 8].map(|i| (i, ms(i))),
        "the source's indices"
    );
    // The default counts buffers, as before.
    assert_eq!(
        run("count", "", caps),
        [(0, ms(0)), (1, ms(1)), (2, ms(2)), (3, ms(6)), (5, ms(8))]
    );
    // Without a frame rate (a variable-rate stream) there is no index to read: counted.
    let vfr = "video/x-raw,format=RGB,width=100,height=50,framerate=0/1";
    assert_eq!(
        run("vfr", "frame-index=timestamp", vfr),
        [(0, ms(0)), (1, ms(1)), (2, ms(2)), (3, ms(6)), (5, ms(8))]
    );
}

/// A COCO file is rewritten every few seconds before EOS: a pipeline killed without one
/// (SIGTERM, a crash) leaves the results of all but its last seconds, never a `[]` that
/// reads as "no frames".
#[test]
fn a_coco_file_keeps_the_frames_of_a_run_stopped_without_eos() {
    let path = scratch().join("killed.coco.json");
    let mut h = harness(
        &format!("location={} format=coco", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let frames_in = |path: &Path| {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mut ids: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["image_id"].as_u64().unwrap())
            .collect();
        ids.dedup();
        ids.len()
    };
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    assert_eq!(frames_in(&path), 0, "not yet rewritten");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    h.push(buffer(3, Some(&meta(3, false)))).unwrap();
    assert_eq!(frames_in(&path), 4);
    h.push(buffer(4, Some(&meta(4, false)))).unwrap();
    // Dropped without an EOS, as a killed process leaves it.
    drop(h);
    assert!(frames_in(&path) >= 4);
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

/// Pushes frames 0 and 1 with two objects each, frame 2 with the whole frame's keypoints,
/// and EOS through a publisher with `props`.
fn publish_objects(props: &str) {
    let mut h = harness(
        props,
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    for i in 0..3 {
        let mut b = buffer(i, None);
        let sets = match i {
            2 => vec![meta(2, false)],
            i => objects(i),
        };
        FrameKeypoints::attach_all(&sets, b.get_mut().unwrap());
        h.push(b).unwrap();
        h.pull().unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
}

#[test]
fn one_record_per_object_with_its_id_label_and_roi_under_schema_2() {
    let path = scratch().join("objects.jsonl");
    publish_objects(&format!("location={}", path.display()));
    let recs = lines(&path);
    assert_eq!(
        recs.len(),
        5,
        "two objects on frames 0 and 1, the whole frame on 2"
    );
    for (r, (i, m)) in recs[..4].iter().zip(
        [0, 1]
            .into_iter()
            .flat_map(|i| objects(i).into_iter().map(move |m| (i, m))),
    ) {
        assert_eq!(r.schema, OBJECT_SCHEMA);
        assert_eq!(r.frame, i as u64);
        assert_eq!(r.pts, Some(40_000_000 * i as u64));
        let o = m.object.as_ref().unwrap();
        let ro = r.object.as_ref().expect("the object's fields");
        assert_eq!(
            (ro.object_id, ro.label.as_str(), ro.roi),
            (o.id, "person", o.bbox)
        );
        // Otherwise the record of /1, from the object's keypoints.
        let mut plain = r.clone();
        plain.schema = SCHEMA.into();
        assert_record_is(&plain, &m, i as u64, 100, 50);
    }
    assert_eq!(recs[4].schema, SCHEMA);
    assert!(recs[4].object.is_none());
    assert_record_is(&recs[4], &meta(2, false), 2, 100, 50);
    // The fields as a reader of the JSON sees them; none on the whole frame's record.
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[1]["schema"], "stablekeypoints-frame/2");
    assert_eq!(v[1]["object_id"], 8);
    assert_eq!(v[1]["label"], "person");
    assert_eq!(v[1]["roi"], serde_json::json!([0.5, 0.0, 0.5, 1.0]));
    assert_eq!(v[4]["schema"], "stablekeypoints-frame/1");
    assert!(v[4].get("object_id").is_none() && v[4].get("roi").is_none());
}

#[test]
fn coco_has_one_result_per_person_with_its_box_on_the_frames_image() {
    let path = scratch().join("objects.coco.json");
    publish_objects(&format!("location={} format=coco", path.display()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let arr = v.as_array().expect("a results array");
    let results = coco_results(arr, 2, 100.0, 50.0);
    let ids: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        [0, 0, 1, 1, 2],
        "one result per person, on its frame's image"
    );
    for (r, m) in arr.iter().zip(objects(0).iter().chain(&objects(1))) {
        let [x, y, w, h] = m.object.as_ref().unwrap().bbox;
        let want = [x * 100.0, y * 50.0, w * 100.0, h * 50.0];
        let got: Vec<f32> = r["bbox"]
            .as_array()
            .expect("the object's bbox")
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want);
        let mean = m.keypoints.iter().map(|k| k.confidence).sum::<f32>() / 2.0;
        assert!((r["score"].as_f64().unwrap() - mean as f64).abs() < 1e-6);
    }
    assert!(arr[4].get("bbox").is_none(), "the whole frame has no box");
}
