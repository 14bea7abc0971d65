//! DL Streamer interop: the keypoints in DL Streamer's layout, read back as DL Streamer's
//! `gvawatermark` reads them (a reader written here from its public sources), before and
//! after a scaler, and a Python consumer (PyGObject, none of our code) that reads both our
//! structures and DL Streamer's from the buffers.

use gst::glib;
use gst::prelude::*;
use gststablekeypoints::meta::FrameKeypoints;
use serde_json::Value;
use std::sync::{Arc, Mutex};

use crate::common;
use common::*;

/// One keypoints tensor as `gvawatermark` reads it: its name, its points and its skeleton.
struct Tensor {
    name: String,
    points: Vec<Drawn>,
    lines: Vec<(usize, usize)>,
}

/// A point as `gvawatermark` places it, and whether it draws it.
#[derive(Debug)]
struct Drawn {
    x: f32,
    y: f32,
    shown: bool,
}

/// DL Streamer's reading of the `format=keypoints` parameter structures of a ROI meta,
/// written from its public sources (not copied): `include/dlstreamer/gst/videoanalytics/
/// tensor.h` (`Tensor::data<float>` takes the bytes of the `GVariant` in `data_buffer`, via
/// `gva_get_tensor_data` of `include/dlstreamer/gst/metadata/gva_tensor_meta.h`; `dims()`
/// reads `dims` as an array of uint; `get_vector<float>("confidence")`), and
/// `src/monolithic/gst/elements/gvawatermark/gstgvawatermarkimpl.cpp`
/// (`preparePrimsForKeypoints`: point i at `rect.x + rect.w * data[dims[1] * i]`,
/// `rect.y + rect.h * data[dims[1] * i + 1]`, skipped below confidence 0.5 or at (-1, -1);
/// `preparePrimsForKeypointConnections`: `point_connections` are name pairs looked up in
/// `point_names`).
fn watermark_read(roi: &gst_video::VideoRegionOfInterestMeta) -> Vec<Tensor> {
    let (rx, ry, rw, rh) = roi.rect();
    let mut out = Vec::new();
    for s in roi.params() {
        if s.get::<&str>("format").ok() != Some("keypoints") {
            continue;
        }
        let v = s
            .value("data_buffer")
            .unwrap()
            .get::<glib::Variant>()
            .unwrap();
        assert_eq!(
            v.type_().as_str(),
            "ay",
            "data_buffer is a GVariant of bytes"
        );
        let data: Vec<f32> = v
            .data()
            .chunks(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let dims: Vec<u32> = s
            .get::<gst::ArrayRef>("dims")
            .unwrap()
            .iter()
            .map(|d| d.get::<u32>().unwrap())
            .collect();
        let (n, d) = (dims[0] as usize, dims[1] as usize);
        assert_eq!(data.len(), n * d, "{dims:?}");
        assert_eq!(s.get::<i32>("precision").unwrap(), 10, "FP32");
        let confidence: Vec<f32> = s
            .get::<gst::ArrayRef>("confidence")
            .unwrap()
            .iter()
            .map(|c| c.get::<f32>().unwrap())
            .collect();
        let names: Vec<String> = s
            .get::<gst::ArrayRef>("point_names")
            .unwrap()
            .iter()
            .map(|c| c.get::<String>().unwrap())
            .collect();
        let points = (0..n)
            .map(|i| {
                let (x, y) = (data[d * i], data[d * i + 1]);
                Drawn {
                    x: rx as f32 + rw as f32 * x,
                    y: ry as f32 + rh as f32 * y,
                    shown: confidence[i] >= 0.5 && !(x == -1.0 && y == -1.0),
                }
            })
            .collect();
        let mut lines = Vec::new();
        if let Ok(pairs) = s.get::<gst::ArrayRef>("point_connections") {
            let pairs: Vec<String> = pairs.iter().map(|p| p.get::<String>().unwrap()).collect();
            for p in pairs.chunks(2) {
                let at = |name: &String| names.iter().position(|m| m == name).unwrap();
                lines.push((at(&p[0]), at(&p[1])));
            }
        }
        out.push(Tensor {
            name: s.name().to_string(),
            points,
            lines,
        });
    }
    out
}

/// The buffers at the sink of `desc` (which ends in `fakesink name=sink`).
fn run(desc: &str) -> Vec<gst::Buffer> {
    init();
    let p = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let store = Arc::new(Mutex::new(Vec::new()));
    let s = store.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                s.lock().unwrap().push(b.copy());
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    for msg in p
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(60))
    {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let buffers = std::mem::take(&mut *store.lock().unwrap());
    buffers
}

fn ours(b: &gst::BufferRef) -> gst::meta::MetaRef<'_, gst_video::VideoRegionOfInterestMeta> {
    b.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .find(|m| m.roi_type() == "stablekeypoints")
        .unwrap()
}

const SOURCE: &str =
    "videotestsrc num-buffers=3 pattern=ball ! video/x-raw,format=RGB,width=64,height=48";

/// Checks DL Streamer's reading of `b` against our metadata in a `w` x `h` frame, to `tol`
/// pixels.
fn assert_dlstreamer_sees_ours(b: &gst::BufferRef, w: u32, h: u32, tol: f32) {
    let meta: FrameKeypoints = read_meta(b);
    let pose = meta.pose.as_ref().unwrap();
    let tensors = watermark_read(&ours(b));
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["dlstreamer-keypoints", "dlstreamer-pose"]);
    assert!(tensors[0].lines.is_empty());
    assert_eq!(tensors[0].points.len(), meta.keypoints.len());
    for (p, k) in tensors[0].points.iter().zip(&meta.keypoints) {
        let (x, y) = k.pixel(w, h);
        assert!(
            (p.x - x).abs() <= tol && (p.y - y).abs() <= tol,
            "{p:?} vs {k:?}"
        );
        // Drawn exactly when visible: our visibility is its confidence.
        assert_eq!(p.shown, k.visible, "{k:?}");
    }
    for (p, l) in tensors[1].points.iter().zip(&pose.landmarks) {
        let (x, y) = l.pixel(w, h);
        assert!(
            (p.x - x).abs() <= tol && (p.y - y).abs() <= tol,
            "{p:?} vs {l:?}"
        );
        assert!(p.shown);
    }
    let want: Vec<(usize, usize)> = pose
        .connections
        .iter()
        .map(|&[a, b]| (a as usize, b as usize))
        .collect();
    assert_eq!(tensors[1].lines, want);
}

#[test]
fn gvawatermark_reads_our_keypoints_and_pose_where_they_are() {
    let pose = test_pose().display().to_string();
    // A threshold at the median confidence hides about half of the keypoints.
    let mut scores: Vec<f32> = run(&format!(
        "{SOURCE} ! stablekeypoints {} ! fakesink name=sink",
        props()
    ))
    .iter()
    .flat_map(|b| read_meta(b).keypoints.into_iter().map(|k| k.confidence))
    .collect();
    scores.sort_by(f32::total_cmp);
    let threshold = scores[scores.len() / 2];
    let bufs = run(&format!(
        "{SOURCE} ! stablekeypoints {} pose={pose} keypoint-threshold={threshold} ! fakesink name=sink",
        props()
    ));
    assert_eq!(bufs.len(), 3);
    let mut hidden = 0;
    for b in &bufs {
        assert_dlstreamer_sees_ours(b, 64, 48, 1e-3);
        hidden += read_meta(b).keypoints.iter().filter(|k| !k.visible).count();
    }
    assert!(hidden > 0, "the threshold hid nothing: visibility untested");
    // A scaler keeps the ROI box (rescaled) but, in GStreamer 1.22, drops its parameter
    // structures; the keypoints survive in our carrier meta, and an element of ours after the
    // scaler (here the pose element) writes the DL Streamer tensors again at the new size:
    // the points land on the keypoints.
    let bufs = run(&format!(
        "{SOURCE} ! stablekeypoints {} ! videoscale ! video/x-raw,width=160,height=120 \
         ! stablekeypointspose pose={pose} ! fakesink name=sink",
        props()
    ));
    assert_eq!(bufs.len(), 3);
    for b in &bufs {
        assert_dlstreamer_sees_ours(b, 160, 120, 1e-3);
    }
}

/// A Python 3 with PyGObject and GStreamer's GstVideo introspection data, if installed
/// (`scripts/install-deps.sh` installs python3-gi and gir1.2-gst-plugins-base-1.0).
fn python_with_gi() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        std::process::Command::new(py)
            .args([
                "-c",
                "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstVideo', '1.0'); \
                 from gi.repository import Gst, GstVideo",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_consumer_reads_our_structures_and_dlstreamers() {
    let Some(python) = python_with_gi() else {
        eprintln!(
            "SKIPPED: no python3 with PyGObject and GstVideo-1.0 (install python3-gi and \
             gir1.2-gst-plugins-base-1.0, as scripts/install-deps.sh does)"
        );
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/read_keypoints.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(model_dir())
        .arg(tokens_path())
        .arg(test_pose())
        .arg("3")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", scratch().join("python-registry.bin"))
        .output()
        .expect("run the Python consumer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{python} {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(frames.len(), 3, "{stdout}");
    // The same pipeline here: what Python read is what the Rust reader reads.
    let bufs = run(&format!(
        "{SOURCE} ! stablekeypoints {} pose={} ! fakesink name=sink",
        props(),
        test_pose().display()
    ));
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (f, b) in frames.iter().zip(&bufs) {
        let m = read_meta(b);
        let ids: Vec<u32> = m.keypoints.iter().map(|k| k.id).collect();
        assert_eq!(f["ids"], serde_json::json!(ids));
        assert_eq!(
            floats(&f["x"]),
            m.keypoints.iter().map(|k| k.x).collect::<Vec<_>>()
        );
        assert_eq!(
            floats(&f["y"]),
            m.keypoints.iter().map(|k| k.y).collect::<Vec<_>>()
        );
        let conf: Vec<f32> = m.keypoints.iter().map(|k| k.confidence).collect();
        assert_eq!(floats(&f["confidence"]), conf);
        assert_eq!(f["origin"], "inference");
        let tokens = m.tokens.as_ref().unwrap();
        assert_eq!(f["tokens_hash"], tokens.hash.as_str());
        assert_eq!(f["token_indices"], serde_json::json!(tokens.indices));
        let (x, y, w, h) = m.rect;
        assert_eq!(f["rect"], serde_json::json!([x, y, w, h]));
        let pose = m.pose.as_ref().unwrap();
        let names: Vec<&str> = pose.landmarks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(f["pose"]["names"], serde_json::json!(names));
        // DL Streamer's tensors, decoded by Python from the GVariant.
        let dls = &f["dlstreamer-keypoints"];
        assert_eq!(dls["dims"], serde_json::json!([m.keypoints.len(), 2]));
        assert_eq!(dls["precision"], 10);
        let data = floats(&dls["data"]);
        for (i, k) in m.keypoints.iter().enumerate() {
            let (px, py) = k.pixel(64, 48);
            let (dx, dy) = (
                x as f32 + w as f32 * data[2 * i],
                y as f32 + h as f32 * data[2 * i + 1],
            );
            assert!((dx - px).abs() < 1e-3 && (dy - py).abs() < 1e-3, "{i}");
        }
        let pose_t = &f["dlstreamer-pose"];
        assert_eq!(pose_t["point_names"], serde_json::json!(names));
        let pairs: Vec<&str> = pose
            .connections
            .iter()
            .flatten()
            .map(|&i| names[i as usize])
            .collect();
        assert_eq!(pose_t["point_connections"], serde_json::json!(pairs));
    }
}

#[test]
fn our_overlay_draws_our_dlstreamer_tensor_where_it_draws_our_keypoints() {
    // Round trip: the DL Streamer tensor the inference element wrote, moved alone onto
    // another producer's ROI meta (as if DL Streamer had made it), is drawn by the overlay
    // where it draws our own keypoints.
    let bufs = run(&format!(
        "{SOURCE} ! stablekeypoints {} ! fakesink name=sink",
        props()
    ));
    let b = &bufs[0];
    let meta = read_meta(b);
    let roi = ours(b);
    let tensor = roi.param("dlstreamer-keypoints").unwrap().to_owned();
    let rect = roi.rect();
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 64, 48)
        .build()
        .unwrap();
    let grey = || gst::Buffer::from_mut_slice(vec![90u8; info.size()]);
    let draw = |buf: gst::Buffer| {
        let mut hn = gst_check::Harness::new("stablekeypointsoverlay");
        hn.set_src_caps(info.to_caps().unwrap());
        hn.push(buf).unwrap();
        hn.pull().unwrap()
    };
    let mut theirs = grey();
    {
        let r = theirs.get_mut().unwrap();
        let mut m = gst_video::VideoRegionOfInterestMeta::add(r, "person", rect);
        m.add_param(tensor);
    }
    let mut mine = grey();
    meta.attach(mine.get_mut().unwrap());
    let (a, b) = (draw(theirs), draw(mine));
    let (a, b) = (a.map_readable().unwrap(), b.map_readable().unwrap());
    let px = |m: &[u8], x: f32, y: f32| {
        let (x, y) = ((x as usize).min(63), (y as usize).min(47));
        [
            m[(y * 64 + x) * 3],
            m[(y * 64 + x) * 3 + 1],
            m[(y * 64 + x) * 3 + 2],
        ]
    };
    let drawn = meta.keypoints.iter().filter(|k| k.visible).count();
    assert!(drawn > 0);
    for k in meta.keypoints.iter().filter(|k| k.visible) {
        let (x, y) = k.pixel(64, 48);
        assert_eq!(
            px(&a, x, y),
            px(&b, x, y),
            "keypoint {} at ({x}, {y})",
            k.id
        );
    }
    let differ = a.chunks(3).zip(b.chunks(3)).filter(|(p, q)| p != q).count();
    assert!(differ * 100 < 64 * 48, "{differ} pixels differ");
    assert!(a.iter().any(|&v| v != 90), "nothing drawn");
}
