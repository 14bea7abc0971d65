//! The `stablekeypointsboxes` element: a boxes file's records as ROI metas, in place.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use stablekeypoints::boxes::{Boxes, ObjectBox};
use stablekeypoints::Error;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use super::{
    BoxesFrameIndexProp, CONFIDENCE, DETECTION, LABEL, LABEL_ID, OBJECT_ID, OBJECT_ID_FIELD, X_MAX,
    X_MIN, Y_MAX, Y_MIN,
};
use crate::export::FrameTimes;
use crate::framerate::{FrameRate, SourceIndex};
use crate::lock;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypointsboxes",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints object boxes from a file"),
    )
});

const DEFAULT_FRAME_INDEX: BoxesFrameIndexProp = BoxesFrameIndexProp::Count;
/// Skipped boxes are warned about at most once in this many frames.
const WARN_EVERY: u64 = 30;
/// Without a frame rate or a buffer duration, a record's timestamp must match this closely.
const DEFAULT_TOLERANCE_S: f64 = 0.001;

#[derive(Clone, Debug)]
struct Settings {
    location: Option<PathBuf>,
    frame_index: BoxesFrameIndexProp,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: None,
            frame_index: DEFAULT_FRAME_INDEX,
        }
    }
}

struct State {
    boxes: Boxes,
    /// Each label's `label_id`: its rank among the file's labels (sorted).
    label_ids: BTreeMap<String, i32>,
    /// The frame size from the caps.
    size: Option<(u32, u32)>,
    rate: Option<FrameRate>,
    next_index: u64,
    source_index: SourceIndex,
    /// The frame index of the last warning about skipped boxes.
    last_warning: Option<u64>,
}

#[derive(Default)]
pub struct StableKeypointsBoxes {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

/// The DL Streamer parameter structures of a box whose clipped rectangle is `rect` in a
/// `w` x `h` frame.
fn params(b: &ObjectBox, rect: [u32; 4], w: u32, h: u32, label_id: i32) -> Vec<gst::Structure> {
    let (fw, fh) = (w as f64, h as f64);
    let detection = gst::Structure::builder(DETECTION)
        .field(X_MIN, rect[0] as f64 / fw)
        .field(Y_MIN, rect[1] as f64 / fh)
        .field(X_MAX, rect[2] as f64 / fw)
        .field(Y_MAX, rect[3] as f64 / fh)
        .field(CONFIDENCE, b.confidence.map_or(1.0, f64::from))
        .field(LABEL, b.label.as_str())
        .field(LABEL_ID, label_id)
        .build();
    let mut out = vec![detection];
    if let Some(id) = b.id.and_then(|id| i32::try_from(id).ok()) {
        out.push(
            gst::Structure::builder(OBJECT_ID)
                .field(OBJECT_ID_FIELD, id)
                .build(),
        );
    }
    out
}

impl StableKeypointsBoxes {
    /// The boxes of the buffer's record, in pixels of its frame, and the index it is known
    /// by in messages.
    fn lookup(
        &self,
        state: &mut State,
        mode: BoxesFrameIndexProp,
        times: &FrameTimes,
        w: u32,
        h: u32,
    ) -> (u64, Vec<ObjectBox>) {
        let t = times.stream_time.or(times.pts);
        match mode {
            BoxesFrameIndexProp::Count => {
                let index = state.next_index;
                state.next_index += 1;
                let boxes = state.boxes.record_by_frame(index);
                (index, boxes.map_or_else(Vec::new, |r| r.scaled_to(w, h)))
            }
            BoxesFrameIndexProp::Timestamp => {
                let index = state.source_index.next(state.rate, t);
                if !state.boxes.has_timestamps() {
                    let boxes = state.boxes.record_by_frame(index);
                    return (index, boxes.map_or_else(Vec::new, |r| r.scaled_to(w, h)));
                }
                let frame = times
                    .duration
                    .or(state.rate.map(|r| r.frame_duration()))
                    .map(|d| d.nseconds() as f64 * 1e-9);
                let tolerance = frame.map_or(DEFAULT_TOLERANCE_S, |d| 0.5 * d);
                let boxes = t.and_then(|t| {
                    state
                        .boxes
                        .record_by_time(t.nseconds() as f64 * 1e-9, tolerance)
                });
                (index, boxes.map_or_else(Vec::new, |r| r.scaled_to(w, h)))
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypointsBoxes {
    const NAME: &'static str = "GstStableKeypointsBoxes";
    type Type = super::StableKeypointsBoxes;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StableKeypointsBoxes {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("Boxes file: JSON lines (one record per frame) or COCO detection results; read when the element starts")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("frame-index", DEFAULT_FRAME_INDEX)
                    .nick("Frame index")
                    .blurb("Which record goes with a buffer: count (the n-th buffer is frame n) or timestamp (the record within half a frame of the stream time)")
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "location" => {
                s.location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
            }
            "frame-index" => s.frame_index = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "location" => s
                .location
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .to_value(),
            "frame-index" => s.frame_index.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for StableKeypointsBoxes {}

impl ElementImpl for StableKeypointsBoxes {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints object boxes",
                "Filter/Analyzer/Video",
                "Attaches the object boxes of a file (JSON lines or COCO detections) to each \
                 frame as ROI metadata with DL Streamer's detection and object_id parameters",
                "stablekeypoints developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| crate::formats::pad_templates(&crate::formats::any_video_caps()));
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for StableKeypointsBoxes {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let location = lock(&self.settings).location.clone();
        let Some(path) = location else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("No boxes file: set the location property")
            ));
        };
        let boxes = Boxes::read(&path).map_err(|e| match e {
            Error::Io { .. } => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e)),
            e => gst::error_msg!(gst::ResourceError::Read, ("{}", e)),
        })?;
        let mut labels: Vec<&str> = boxes
            .records()
            .iter()
            .flat_map(|r| r.objects.iter().map(|o| o.label.as_str()))
            .collect();
        labels.sort_unstable();
        labels.dedup();
        let label_ids = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i32::try_from(i).unwrap_or(i32::MAX)))
            .collect();
        gst::info!(
            CAT,
            imp = self,
            "{}: {} frames of boxes",
            path.display(),
            boxes.records().len()
        );
        *lock(&self.state) = Some(State {
            boxes,
            label_ids,
            size: None,
            rate: None,
            next_index: 0,
            source_index: SourceIndex::default(),
            last_warning: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let size = incaps.structure(0).and_then(|s| {
            let w = u32::try_from(s.get::<i32>("width").ok()?).ok()?;
            let h = u32::try_from(s.get::<i32>("height").ok()?).ok()?;
            (w > 0 && h > 0).then_some((w, h))
        });
        if let Some(state) = lock(&self.state).as_mut() {
            state.size = size;
            state.rate = FrameRate::of_caps(incaps);
        }
        self.parent_set_caps(incaps, outcaps)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            // A new stream: counting starts again, indices come from timestamps alone.
            if let Some(state) = lock(&self.state).as_mut() {
                state.next_index = 0;
                state.source_index.reset();
            }
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mode = lock(&self.settings).frame_index;
        let segment = self.obj().segment();
        let times = FrameTimes::of(buf, &segment);
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let Some((w, h)) = state.size else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("No frame size: the caps have no width and height")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let (index, boxes) = self.lookup(state, mode, &times, w, h);
        let mut skipped = Vec::new();
        for b in &boxes {
            let Some(rect) = b.pixel_rect(w, h) else {
                skipped.push(b);
                continue;
            };
            let label_id = state.label_ids.get(&b.label).copied().unwrap_or(0);
            let mut meta = gst_video::VideoRegionOfInterestMeta::add(
                buf,
                &b.label,
                (rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]),
            );
            for p in params(b, rect, w, h, label_id) {
                meta.add_param(p);
            }
        }
        let due = state
            .last_warning
            .is_none_or(|l| index.abs_diff(l) >= WARN_EVERY);
        if !skipped.is_empty() && due {
            state.last_warning = Some(index);
            let list: Vec<String> = skipped
                .iter()
                .map(|b| {
                    format!(
                        "{}{} [{}, {}, {}, {}]",
                        b.label,
                        b.id.map_or(String::new(), |i| format!(" {i}")),
                        b.x,
                        b.y,
                        b.w,
                        b.h
                    )
                })
                .collect();
            gst::warning!(
                CAT,
                imp = self,
                "frame {} ({}x{}): skipping boxes outside the frame or empty: {} (warned once in {} frames)",
                index,
                w,
                h,
                list.join(", "),
                WARN_EVERY
            );
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
