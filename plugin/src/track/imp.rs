//! The `stablekeypointstrack` element. Buffers go through our own
//! `submit_input_buffer`/`generate_output` so that frames can wait for the next inference
//! (`gap-policy=interpolate`) and leave in order.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_transform::GenerateOutputSuccess;
use gst_base::subclass::prelude::*;

use stablekeypoints::stream::{interpolation_latency, Origin};
use stablekeypoints::track::OneEuroParams;
use stablekeypoints::Keypoint;

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use super::sets::{Done, Key, Set, Sets, Smoothers};
use super::{SmoothingProp, TrackGapProp};
use crate::lock;
use crate::meta::geometry::Frames;
use crate::meta::{FrameKeypoints, ReadError};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypointstrack",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints tracking and smoothing"),
    )
});

const DEFAULT_MIN_CUTOFF: f64 = 1.0;
const DEFAULT_BETA: f64 = 0.0;
const DEFAULT_D_CUTOFF: f64 = 1.0;
/// An object missing for this long (in frames at the stream's rate, 30 fps when unknown)
/// is forgotten: when it comes back, its smoothing starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
struct Settings {
    smoothing: SmoothingProp,
    min_cutoff: f64,
    beta: f64,
    d_cutoff: f64,
    gap_policy: TrackGapProp,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            smoothing: SmoothingProp::None,
            min_cutoff: DEFAULT_MIN_CUTOFF,
            beta: DEFAULT_BETA,
            d_cutoff: DEFAULT_D_CUTOFF,
            gap_policy: TrackGapProp::HoldLast,
        }
    }
}

impl Settings {
    fn one_euro(&self) -> Option<OneEuroParams> {
        (self.smoothing == SmoothingProp::OneEuro).then_some(OneEuroParams {
            min_cutoff: self.min_cutoff,
            beta: self.beta,
            d_cutoff: self.d_cutoff,
        })
    }
}

/// A buffer with its sets of keypoints (parsed once: the whole frame's, each object's),
/// their keys and its index in the stream.
struct Frame {
    buffer: gst::Buffer,
    metas: Vec<FrameKeypoints>,
    keys: Vec<Option<Key>>,
    index: u64,
}

#[derive(Default)]
struct State {
    info: Option<gst_video::VideoInfo>,
    /// What the keypoints are checked against (raw video caps only).
    frames: Option<Frames>,
    sets: Sets<Frame>,
    smoothers: Smoothers,
    next_index: u64,
    ready: VecDeque<gst::Buffer>,
    queued: Option<gst::Buffer>,
    /// Malformed metadata, keypoints that no longer fit the frame and stale landmarks are
    /// warned about once.
    warned_malformed: bool,
    warned_moved: bool,
    warned_pose: bool,
}

#[derive(Default)]
pub struct StableKeypointsTrack {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

fn core_keypoints(f: &FrameKeypoints) -> Vec<Keypoint> {
    f.keypoints
        .iter()
        .map(|k| Keypoint {
            id: k.id as usize,
            x: k.x,
            y: k.y,
            score: k.confidence,
        })
        .collect()
}

impl StableKeypointsTrack {
    /// Frames an object may be missing for before it is forgotten.
    fn forget_after(state: &State) -> u64 {
        let rate = state
            .info
            .as_ref()
            .map(|i| i.fps())
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map_or(30.0, |f| f.numer() as f64 / f.denom() as f64);
        (FORGET_AFTER.as_secs_f64() * rate).ceil() as u64
    }

    /// One arriving buffer through the interpolation; returns the frames complete now.
    fn accept(&self, state: &mut State, buffer: gst::Buffer, s: &Settings) -> Vec<Done<Frame>> {
        let index = state.next_index;
        state.next_index += 1;
        let metas = match FrameKeypoints::all_for_frame(&buffer, state.frames.as_ref()) {
            Some(Ok(f)) => f,
            Some(Err(e @ ReadError::Malformed(_))) => {
                if !std::mem::replace(&mut state.warned_malformed, true) {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        ("Passing malformed keypoint metadata on untouched: {}", e)
                    );
                }
                Vec::new()
            }
            Some(Err(e @ ReadError::Moved(_))) => {
                if !std::mem::replace(&mut state.warned_moved, true) {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        ("Not tracking {}", e)
                    );
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        let keys = Key::of_all(&metas);
        let sets = metas
            .iter()
            .zip(&keys)
            .map(|(m, &key)| Set {
                key,
                keypoints: core_keypoints(m),
                origin: m.origin,
            })
            .collect();
        let forget_after = Self::forget_after(state);
        let frame = Frame {
            buffer,
            metas,
            keys,
            index,
        };
        let interpolate = s.gap_policy == TrackGapProp::Interpolate;
        state.sets.push(frame, sets, interpolate, forget_after)
    }

    /// Smoothing and the rewritten metadata of one complete frame.
    fn finish(&self, state: &mut State, done: Done<Frame>, s: &Settings) -> gst::Buffer {
        let Done {
            frame:
                Frame {
                    mut buffer,
                    mut metas,
                    keys,
                    index,
                },
            sets,
        } = done;
        let forget_after = Self::forget_after(state);
        let one_euro = s.one_euro();
        let any_interpolated = sets
            .iter()
            .any(|(_, origin)| *origin == Some(Origin::Interpolated));
        if metas.is_empty() || (!any_interpolated && one_euro.is_none()) {
            state.smoothers.frame_done(forget_after);
            return buffer;
        }
        let (w, h) = state
            .info
            .as_ref()
            .map_or((metas[0].source_width, metas[0].source_height), |i| {
                (i.width(), i.height())
            });
        let t = buffer.pts().map_or_else(
            || {
                let rate = state
                    .info
                    .as_ref()
                    .map(|i| i.fps())
                    .filter(|f| f.numer() > 0 && f.denom() > 0)
                    .map_or(30.0, |f| f.numer() as f64 / f.denom() as f64);
                index as f64 / rate
            },
            |t| t.nseconds() as f64 / 1e9,
        );
        for ((meta, key), (mut keypoints, origin)) in metas.iter_mut().zip(&keys).zip(sets) {
            let interpolated = origin == Some(Origin::Interpolated);
            if let (Some(p), Some(key)) = (&one_euro, key) {
                state.smoothers.smooth(*key, &mut keypoints, t, p);
            }
            for (m, k) in meta.keypoints.iter_mut().zip(&keypoints) {
                m.x = k.x;
                m.y = k.y;
                if interpolated {
                    m.confidence = k.score;
                    if let Some(t) = meta.threshold {
                        m.visible = k.score >= t;
                    }
                }
            }
            if interpolated {
                meta.origin = Some(Origin::Interpolated);
                meta.inferred = true;
            }
        }
        state.smoothers.frame_done(forget_after);
        if metas.iter().any(|m| m.pose.is_some())
            && !std::mem::replace(&mut state.warned_pose, true)
        {
            gst::warning!(
                CAT,
                imp = self,
                "pose landmarks were regressed before tracking; place stablekeypointspose \
                 after stablekeypointstrack to regress them from the tracked keypoints"
            );
        }
        FrameKeypoints::replace_all(&metas, buffer.make_mut(), w, h);
        buffer
    }

    /// Before a serialized event (EOS, caps, segment, ...): the held frames leave with the
    /// keypoints they carry.
    fn drain(&self) {
        let s = lock(&self.settings).clone();
        let outs: Vec<gst::Buffer> = {
            let mut state = lock(&self.state);
            let held = state.sets.drain();
            held.into_iter()
                .map(|t| self.finish(&mut state, t, &s))
                .collect()
        };
        for buf in outs {
            if let Err(e) = self.obj().src_pad().push(buf) {
                gst::debug!(CAT, imp = self, "pushing a held frame: {:?}", e);
                return;
            }
        }
    }

    /// The inference interval of the `stablekeypoints` element upstream (1 if none says).
    fn upstream_interval(&self) -> u64 {
        let s = gst::Structure::new_empty(crate::stablekeypoints::SCHEDULE_QUERY);
        let mut q = gst::query::Custom::new(s);
        if !self.obj().sink_pad().peer_query(&mut q) {
            return 1;
        }
        q.structure()
            .and_then(|s| s.get::<u32>("inference-interval").ok())
            .map_or(1, u64::from)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypointsTrack {
    const NAME: &'static str = "GstStableKeypointsTrack";
    type Type = super::StableKeypointsTrack;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StableKeypointsTrack {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("smoothing", SmoothingProp::None)
                    .nick("Smoothing")
                    .blurb("Temporal smoothing of keypoint positions, on the buffer timestamps")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-cutoff")
                    .nick("Min cut-off")
                    .blurb("One-Euro minimum cut-off frequency in Hz (lower = smoother, more lag)")
                    .minimum(1e-6)
                    .default_value(DEFAULT_MIN_CUTOFF)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("beta")
                    .nick("Beta")
                    .blurb("One-Euro speed coefficient (higher = less lag on fast motion)")
                    .minimum(0.0)
                    .default_value(DEFAULT_BETA)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("d-cutoff")
                    .nick("Derivative cut-off")
                    .blurb("One-Euro cut-off frequency of the speed estimate in Hz")
                    .minimum(1e-6)
                    .default_value(DEFAULT_D_CUTOFF)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("gap-policy", TrackGapProp::HoldLast)
                    .nick("Gap policy")
                    .blurb("Frames the inference element did not infer: pass them on, or hold them and interpolate (adds up to N - 1 frames of latency for inference-interval N)")
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "smoothing" => s.smoothing = value.get().expect("type checked upstream"),
            "min-cutoff" => s.min_cutoff = value.get().expect("type checked upstream"),
            "beta" => s.beta = value.get().expect("type checked upstream"),
            "d-cutoff" => s.d_cutoff = value.get().expect("type checked upstream"),
            "gap-policy" => s.gap_policy = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "smoothing" => s.smoothing.to_value(),
            "min-cutoff" => s.min_cutoff.to_value(),
            "beta" => s.beta.to_value(),
            "d-cutoff" => s.d_cutoff.to_value(),
            "gap-policy" => s.gap_policy.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for StableKeypointsTrack {}

impl ElementImpl for StableKeypointsTrack {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints tracker",
                "Filter/Analyzer/Video",
                "Smooths keypoint metadata over time (One-Euro) and interpolates the keypoints \
                 of frames between two inferences",
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

impl BaseTransformImpl for StableKeypointsTrack {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = State::default();
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let mut state = lock(&self.state);
        state.info = gst_video::VideoInfo::from_caps(incaps).ok();
        state.frames = Frames::from_caps(incaps);
        drop(state);
        self.parent_set_caps(incaps, outcaps)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let is_latency = matches!(query.view(), gst::QueryView::Latency(_));
        if direction != gst::PadDirection::Src || !is_latency {
            return BaseTransformImplExt::parent_query(self, direction, query);
        }
        if !BaseTransformImplExt::parent_query(self, direction, query) {
            return false;
        }
        if lock(&self.settings).gap_policy != TrackGapProp::Interpolate {
            return true;
        }
        let frame = lock(&self.state)
            .info
            .as_ref()
            .map(|i| i.fps())
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map(|f| Duration::from_secs_f64(f.denom() as f64 / f.numer() as f64));
        let ahead = interpolation_latency(self.upstream_interval(), frame);
        let ours = gst::ClockTime::from_nseconds(
            u64::try_from(ahead.as_nanos())
                .unwrap_or(u64::MAX)
                .min(gst::ClockTime::MAX.nseconds()),
        );
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let (live, min, max) = q.result();
            gst::debug!(CAT, imp = self, "adding {} of look-ahead latency", ours);
            q.set(
                live,
                min.saturating_add(ours),
                max.map(|m| m.saturating_add(ours)),
            );
        }
        true
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                // A new stream: nothing is held, interpolated from or smoothed with.
                let mut state = lock(&self.state);
                state.sets.flush();
                state.smoothers.reset();
                state.ready.clear();
                state.queued = None;
            }
            _ if event.is_serialized() => self.drain(),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn submit_input_buffer(
        &self,
        _is_discont: bool,
        inbuf: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        lock(&self.state).queued = Some(inbuf);
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(&self) -> Result<GenerateOutputSuccess, gst::FlowError> {
        let s = lock(&self.settings).clone();
        let mut state = lock(&self.state);
        if let Some(buf) = state.ready.pop_front() {
            return Ok(GenerateOutputSuccess::Buffer(buf));
        }
        let Some(buffer) = state.queued.take() else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        let complete = self.accept(&mut state, buffer, &s);
        let mut done: VecDeque<gst::Buffer> = complete
            .into_iter()
            .map(|t| self.finish(&mut state, t, &s))
            .collect();
        let first = done.pop_front();
        state.ready.extend(done);
        Ok(first.map_or(
            GenerateOutputSuccess::NoOutput,
            GenerateOutputSuccess::Buffer,
        ))
    }
}
