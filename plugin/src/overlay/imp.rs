//! The `stablekeypointsoverlay` element: metadata in, pixels out. Draws each buffer's
//! keypoints where they are now, so it works after a scaler (positions are normalised; ROI
//! rectangles are rescaled by GStreamer's meta transform), and not at all after a flip,
//! rotation, crop or border moved the picture under them.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::subclass::prelude::*;

use std::sync::{LazyLock, Mutex};

use super::blend::Blender;
use super::draw::{draw_buffer, scene_all, DrawSettings, Foreign};
use crate::lock;
use crate::meta::geometry::Frames;
use crate::meta::{dlstreamer, FrameKeypoints, ReadError};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypointsoverlay",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints overlay"),
    )
});

const DEFAULT_RADIUS: u32 = 0;
const DEFAULT_LINE_WIDTH: u32 = 0;
const DEFAULT_DRAW_IDS: bool = false;
const DEFAULT_MIN_CONFIDENCE: f64 = 0.5;

#[derive(Clone, Debug)]
struct Settings {
    radius: u32,
    line_width: u32,
    draw_ids: bool,
    min_confidence: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            radius: DEFAULT_RADIUS,
            line_width: DEFAULT_LINE_WIDTH,
            draw_ids: DEFAULT_DRAW_IDS,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
        }
    }
}

struct State {
    frames: Frames,
    blender: Blender,
    /// Malformed metadata, and keypoints that no longer fit the frame, are warned about
    /// once per stream each.
    warned_malformed: bool,
    warned_moved: bool,
}

#[derive(Default)]
pub struct StableKeypointsOverlay {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl StableKeypointsOverlay {
    /// Warns once (`warned`) about metadata that cannot be drawn (the frame still passes).
    fn warn_once(&self, warned: &mut bool, what: &dyn std::fmt::Display) {
        if !std::mem::replace(warned, true) {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                ("Not drawing keypoint metadata: {}", what)
            );
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypointsOverlay {
    const NAME: &'static str = "GstStableKeypointsOverlay";
    type Type = super::StableKeypointsOverlay;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for StableKeypointsOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("radius")
                    .nick("Radius")
                    .blurb("Radius of the keypoint discs in pixels (0 = from the frame: max(3, min(width, height) / 100))")
                    .maximum(1024)
                    .default_value(DEFAULT_RADIUS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb("Width of the skeleton's lines in pixels (0 = half the radius, at least 2)")
                    .maximum(1024)
                    .default_value(DEFAULT_LINE_WIDTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw-ids")
                    .nick("Draw ids")
                    .blurb("Draw each keypoint's id beside it (another producer's points: their index)")
                    .default_value(DEFAULT_DRAW_IDS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-confidence")
                    .nick("Minimum confidence")
                    .blurb("Points with a lower DL Streamer confidence are not drawn (ours: 1 visible, 0 not; gvawatermark uses 0.5)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_MIN_CONFIDENCE)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "radius" => s.radius = value.get().expect("type checked upstream"),
            "line-width" => s.line_width = value.get().expect("type checked upstream"),
            "draw-ids" => s.draw_ids = value.get().expect("type checked upstream"),
            "min-confidence" => s.min_confidence = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "radius" => s.radius.to_value(),
            "line-width" => s.line_width.to_value(),
            "draw-ids" => s.draw_ids.to_value(),
            "min-confidence" => s.min_confidence.to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Drawing is cheap: late frames are drawn, never dropped.
        self.obj().set_qos(false);
    }
}

impl GstObjectImpl for StableKeypointsOverlay {}

impl ElementImpl for StableKeypointsOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints overlay",
                "Filter/Effect/Video",
                "Draws the keypoints, ids and pose skeletons of the buffers' metadata (ours and \
                 DL Streamer-layout keypoints) into the frames",
                "stablekeypoints developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| crate::formats::pad_templates(&crate::formats::template_caps()));
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for StableKeypointsOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    /// Maps the frame only when something is to be drawn (VideoFilter would map every one).
    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let s = lock(&self.settings).clone();
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let ours = match FrameKeypoints::all_for_frame(buf, Some(&state.frames)) {
            Some(Ok(f)) => f,
            Some(Err(e @ ReadError::Malformed(_))) => {
                self.warn_once(&mut state.warned_malformed, &e);
                Vec::new()
            }
            Some(Err(e @ ReadError::Moved(_))) => {
                self.warn_once(&mut state.warned_moved, &e);
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut foreign: Vec<Foreign> = Vec::new();
        for t in dlstreamer::foreign_tensors(buf) {
            match t {
                Ok(t) => foreign.push(t),
                Err(e) => self.warn_once(&mut state.warned_malformed, &e),
            }
        }
        if ours.is_empty() && foreign.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let settings = DrawSettings {
            radius: s.radius,
            line_width: s.line_width,
            ids: s.draw_ids,
            min_confidence: s.min_confidence as f32,
        };
        let (w, h) = state.frames.size();
        let overlay = scene_all(w, h, &ours, &foreign, &settings);
        draw_buffer(buf, state.frames.info(), &overlay, &mut state.blender).map_err(|e| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("{}", e));
            gst::FlowError::Error
        })?;
        gst::trace!(CAT, imp = self, "drew {} dots", overlay.dots.len());
        Ok(gst::FlowSuccess::Ok)
    }
}

impl VideoFilterImpl for StableKeypointsOverlay {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        outcaps: &gst::Caps,
        out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        gst::debug!(CAT, imp = self, "configured for {:?}", incaps);
        let mut st = lock(&self.state);
        let frames = Frames::new(in_info.clone());
        match st.as_mut() {
            Some(state) => state.frames = frames,
            None => {
                *st = Some(State {
                    frames,
                    blender: Blender::default(),
                    warned_malformed: false,
                    warned_moved: false,
                })
            }
        }
        drop(st);
        self.parent_set_info(incaps, in_info, outcaps, out_info)
    }
}
