//! MQTT throughput of `stablekeypointspublish`: synthetic buffers carrying 10 keypoints of
//! metadata pushed through the element as fast as possible to a broker on localhost, per QoS
//! level. Prints records/s delivered (start to the last confirmation at EOS) and the time
//! the streaming thread spends per buffer.
//!
//! cargo run --release -p gst-plugin-stablekeypoints --example bench-publish [-- RECORDS [ADDRESS]]
//!
//! Without ADDRESS it starts Debian's `mosquitto` on a free 127.0.0.1 port itself.

use gst::prelude::*;
use gststablekeypoints::meta::{semantic_tag, FrameKeypoints, KeypointMeta};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker() -> (Broker, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = std::env::temp_dir().join(format!("skp-bench-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto not installed (scripts/install-deps.sh), or pass an ADDRESS");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto does not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    (Broker(child), format!("mqtt://127.0.0.1:{port}"))
}

fn frame(i: u64) -> gst::Buffer {
    let meta = FrameKeypoints {
        semantic_tag: semantic_tag(10),
        model: "out/model".into(),
        source_width: 1920,
        source_height: 1080,
        inferred: false,
        keypoints: (0..10)
            .map(|k| KeypointMeta {
                id: k,
                x: 0.05 + 0.09 * k as f32 + 1e-4 * (i % 97) as f32,
                y: 0.5 + 0.3 * ((k + i as u32) as f32 * 0.7).sin(),
                confidence: 0.02 + 0.001 * k as f32,
                visible: true,
            })
            .collect(),
        ..Default::default()
    };
    let mut b = gst::Buffer::with_size(1).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(i * 33_333_333));
        b.set_duration(gst::ClockTime::from_nseconds(33_333_333));
        meta.attach(b);
    }
    b
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(20_000, |a| a.parse().expect("RECORDS"));
    let (_broker, address) = match args.next() {
        Some(a) => (None, a),
        None => {
            let (b, a) = start_broker();
            (Some(b), a)
        }
    };
    gst::init().unwrap();
    gststablekeypoints::plugin_register_static().unwrap();
    // Buffers made beforehand: the loop times the element, not building metadata.
    let buffers: Vec<gst::Buffer> = (0..n).map(frame).collect();
    let line = record_bytes(&buffers[1]);
    println!("{n} records of 10 keypoints (~{line} bytes each) to {address}");
    for qos in ["at-most-once", "at-least-once", "exactly-once"] {
        let el = gst::ElementFactory::make("stablekeypointspublish")
            .property("address", &address)
            .property("topic", "skp/bench")
            .property("queue-size", 65535u32)
            .property("flush-timeout", 600_000u32)
            .property_from_str("mqtt-qos", qos)
            .build()
            .unwrap();
        let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
        h.set_src_caps_str("video/x-raw,format=RGB,width=1920,height=1080,framerate=30/1");
        let start = Instant::now();
        let mut pushing = Duration::ZERO;
        for b in &buffers {
            let t = Instant::now();
            h.push(b.clone()).unwrap();
            pushing += t.elapsed();
            // Pull so that the harness does not keep every buffer.
            let _ = h.try_pull();
        }
        h.push_event(gst::event::Eos::new());
        let elapsed = start.elapsed().as_secs_f64();
        let sent: u64 = el.property("records-sent");
        let dropped: u64 = el.property("records-dropped");
        println!(
            "{qos:>14}: {:>8.0} records/s delivered ({sent} sent, {dropped} dropped, {elapsed:.2} s); \
             streaming thread {:.1} us per buffer",
            sent as f64 / elapsed,
            pushing.as_secs_f64() * 1e6 / n as f64
        );
    }
}

/// Bytes of the JSON record of `buffer` (as the element builds it from the metadata).
fn record_bytes(buffer: &gst::BufferRef) -> usize {
    use stablekeypoints::export::{KeypointRecord, Record, SCHEMA};
    let m = FrameKeypoints::from_buffer(buffer).unwrap().unwrap();
    let t = Some(33_333_333u64);
    let r = Record {
        schema: SCHEMA.into(),
        frame: 0,
        image: None,
        pts: t,
        stream_time: t,
        running_time: t,
        duration: t,
        width: 1920,
        height: 1080,
        inferred: false,
        object: None,
        keypoints: m
            .keypoints
            .iter()
            .map(|k| KeypointRecord::new(k.id, k.x, k.y, k.confidence, k.visible, 1920, 1080))
            .collect(),
        pose: None,
        skeleton: None,
    };
    serde_json::to_vec(&r).unwrap().len()
}
