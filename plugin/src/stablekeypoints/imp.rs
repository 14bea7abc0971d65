//! The `stablekeypoints` element: frames -> core detector -> metadata (and, as
//! conveniences, the overlay's drawing and the pose element's landmarks). The model code is
//! in the `stablekeypoints` crate.
//!
//! Buffers go through our own `submit_input_buffer`/`generate_output` instead of
//! `transform_frame_ip` so that late frames are kept (QoS skips inference, never frames)
//! and frames can wait for their batch (`batch-size`); which frame is inferred when is
//! [`stablekeypoints::stream::Scheduler`].

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_transform::GenerateOutputSuccess;
use gst_base::subclass::prelude::*;
use gst_video::subclass::prelude::*;

use stablekeypoints::estimator::Estimator;
use stablekeypoints::stream::{self, Resolved, Scheduler, Verdict};
use stablekeypoints::Keypoint;

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::infer::{self, LoadSettings, Work};
use super::objects::{self, Crop, ObjectSettings, Objects};
use super::output::{self, FrameContext};
use super::props::{self, Settings};
use super::stats::Stats;
use super::CAT;
use crate::convert::ToRgb;
use crate::formats::{core_reads, refusal_reason};
use crate::lock;
use crate::meta::{FrameKeypoints, TokenIdentity};
use crate::overlay::{Blender, DrawSettings};
use crate::pose::Pose;

mod roi;

/// Asked by downstream elements that need the inference interval (the track element's
/// interpolation latency); answered with its `inference-interval` field.
pub const SCHEDULE_QUERY: &str = "stablekeypoints-schedule";

struct State {
    /// Taken out while an inference runs so that no lock is held meanwhile.
    detector: Option<Estimator>,
    num_keypoints: usize,
    tokens: TokenIdentity,
    pose: Option<Arc<Pose>>,
    /// Testing aid (see [`super::StableKeypoints::set_test_inference_delay`]).
    delay: Duration,
    model_name: String,
    info: Option<gst_video::VideoInfo>,
    scheduler: Scheduler<gst::Buffer>,
    ready: VecDeque<gst::Buffer>,
    queued: Option<(gst::Buffer, bool)>,
    /// With roi-list: the objects followed across frames.
    objects: Objects,
    /// With roi-list: each inferred frame's crops and their keypoints, in stream order,
    /// until the frame is finished.
    inferred_objects: VecDeque<(Vec<Crop>, Vec<Vec<Keypoint>>)>,
    /// Kinds of bad ROI warned about (each posted once).
    warned: Vec<&'static str>,
    /// How the detector squares its input.
    crop: stablekeypoints::CropMode,
}

#[derive(Default)]
pub struct StableKeypoints {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// Running time before which frames are late (from QoS events).
    earliest: Mutex<Option<gst::ClockTime>>,
    reported_latency: Mutex<gst::ClockTime>,
    /// Model input of formats the core does not read (set with the caps).
    convert: Mutex<Option<ToRgb>>,
    /// Drawing into formats without a native layout.
    blender: Mutex<Blender>,
    /// The last caps refused with a warning (warned once, not on every query).
    refused: Mutex<Option<String>>,
    test_delay: Mutex<Duration>,
}

impl StableKeypoints {
    pub(super) fn set_test_inference_delay(&self, delay: Duration) {
        *lock(&self.test_delay) = delay;
    }

    fn started(&self) -> bool {
        lock(&self.state).is_some()
    }

    /// Lateness of `buf` against the last QoS event, as GstBaseTransform judges it.
    fn is_late(&self, buf: &gst::BufferRef) -> bool {
        if !self.obj().is_qos() {
            return false;
        }
        let Some(earliest) = *lock(&self.earliest) else {
            return false;
        };
        let segment = self.obj().segment();
        let Some(seg) = segment.downcast_ref::<gst::ClockTime>() else {
            return false;
        };
        seg.to_running_time(buf.pts())
            .is_some_and(|rt| rt <= earliest)
    }

    /// Runs the detector on the frames (or their regions) as one batch, without holding
    /// any lock, counted as inferred frames.
    fn infer(
        &self,
        buffers: &[&gst::BufferRef],
        keys: &[u64],
        info: &gst_video::VideoInfo,
        work: Work,
    ) -> Result<Vec<Vec<Keypoint>>, gst::FlowError> {
        self.infer_counted(buffers, keys, info, work, true)
    }

    /// [`Self::infer`], counted as inferred frames or not (`frames`: the objects of a frame
    /// the interval skips are not).
    fn infer_counted(
        &self,
        buffers: &[&gst::BufferRef],
        keys: &[u64],
        info: &gst_video::VideoInfo,
        work: Work,
        frames: bool,
    ) -> Result<Vec<Vec<Keypoint>>, gst::FlowError> {
        let (mut detector, delay) = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            let detector = state.detector.take().ok_or(gst::FlowError::Flushing)?;
            (detector, state.delay)
        };
        let started = Instant::now();
        let result = infer::detect(
            &mut detector,
            lock(&self.convert).as_mut(),
            buffers,
            keys,
            info,
            work,
        );
        std::thread::sleep(delay.saturating_mul(buffers.len() as u32));
        let elapsed = started.elapsed();
        if let Some(state) = lock(&self.state).as_mut() {
            state.detector = Some(detector);
        }
        match result {
            Ok(k) if !frames => Ok(k),
            Ok(k) => {
                let n = buffers.len().max(1);
                lock(&self.stats).inferred_batch(buffers.len(), elapsed);
                gst::trace!(CAT, imp = self, "{} frames took {:?}", n, elapsed);
                self.maybe_update_latency();
                Ok(k)
            }
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Keypoint inference failed: {}", e)
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// Latency this element adds: the inference time of a batch and the time a batch takes
    /// to fill (see [`stream::inference_latency`]).
    fn own_latency(&self) -> gst::ClockTime {
        let stream = lock(&self.settings).stream();
        let fps = lock(&self.state)
            .as_ref()
            .and_then(|st| st.info.as_ref().map(|i| i.fps()));
        lock(&self.stats).latency(&stream, fps)
    }

    /// Asks the pipeline to redistribute latency when inference became much slower.
    fn maybe_update_latency(&self) {
        let now = self.own_latency();
        let mut reported = lock(&self.reported_latency);
        if *reported > gst::ClockTime::ZERO && now > reported.saturating_add(*reported / 4) {
            *reported = now;
            drop(reported);
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    /// One input frame through the scheduler; returns the frames that are now complete.
    fn process(
        &self,
        buffer: gst::Buffer,
        late: bool,
        s: &Settings,
    ) -> Result<Vec<Resolved<gst::Buffer>>, gst::FlowError> {
        let pushed = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            if state.info.is_none() {
                drop(st);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("No caps set before the first buffer")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            state
                .scheduler
                .push(buffer, late, Instant::now(), &s.stream())
        };
        lock(&self.stats).scheduled(pushed.verdict);
        if pushed.verdict == Verdict::Late {
            gst::debug!(CAT, imp = self, "late frame: skipping inference");
        }
        let mut out = pushed.ready;
        if pushed.run_batch {
            out.extend(self.run_batch(s)?);
        }
        Ok(out)
    }

    /// Infers the queued frames that need it as one batch and resolves all queued frames.
    fn run_batch(&self, s: &Settings) -> Result<Vec<Resolved<gst::Buffer>>, gst::FlowError> {
        let (batch, info) = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            (state.scheduler.take_batch(), info)
        };
        let buffers: Vec<&gst::BufferRef> = batch.to_infer().map(|b| b.as_ref()).collect();
        let keypoints = match self.object_settings(s) {
            _ if buffers.is_empty() => Vec::new(),
            None => self.infer(&buffers, &batch.keys(), &info, Work::Frames)?,
            Some(o) => {
                self.infer_objects(&buffers, &batch.keys(), &info, &o)?;
                // The frames' keypoints are their objects' (queued in `inferred_objects`).
                vec![Vec::new(); buffers.len()]
            }
        };
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        Ok(state.scheduler.complete(batch, keypoints, &s.stream()))
    }

    /// Metadata (and with `draw`, the overlay) of one finished frame.
    fn finish(
        &self,
        r: Resolved<gst::Buffer>,
        s: &Settings,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let Resolved {
            frame: mut buffer,
            keypoints,
            origin,
            index,
            key,
        } = r;
        let Some(keypoints) = keypoints else {
            return Ok(buffer);
        };
        let frame = {
            let st = lock(&self.state);
            let state = st.as_ref().ok_or(gst::FlowError::Flushing)?;
            FrameContext {
                info: state.info.clone().ok_or(gst::FlowError::NotNegotiated)?,
                num_keypoints: state.num_keypoints,
                model: state.model_name.clone(),
                tokens: state.tokens.clone(),
                pose: state.pose.clone(),
            }
        };
        let threshold = s.keypoint_threshold as f32;
        let entries = match self.object_settings(s) {
            None => vec![frame.entry(&keypoints, None, origin, threshold)],
            Some(o) => self.object_entries(&buffer, &frame, (origin, index, key), &o, threshold)?,
        };
        if entries.is_empty() {
            return Ok(buffer);
        }
        let buf = buffer.make_mut();
        let draw = s.draw.then(|| DrawSettings {
            radius: s.radius,
            line_width: s.line_width,
            ids: s.draw_ids,
            ..Default::default()
        });
        let drawn = output::attach(
            buf,
            &frame.info,
            &entries,
            draw.as_ref(),
            &mut lock(&self.blender),
        );
        drawn.map_err(|e| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("{}", e));
            gst::FlowError::Error
        })?;
        #[cfg(feature = "analytics")]
        for f in &entries {
            if let Err(e) = crate::analytics::attach(f, buf) {
                gst::warning!(CAT, imp = self, "cannot add analytics keypoints: {}", e);
            }
        }
        Ok(buffer)
    }

    /// Before a serialized event (EOS, caps, segment, ...): infers the partial batch and
    /// pushes its frames.
    fn drain(&self) {
        let s = lock(&self.settings).clone();
        let pending = lock(&self.state)
            .as_ref()
            .is_some_and(|st| st.scheduler.has_pending());
        if !pending {
            return;
        }
        // Inference errors are posted already; or the element is stopping.
        let Ok(outs) = self.run_batch(&s) else {
            return;
        };
        for out in outs {
            let Ok(buf) = self.finish(out, &s) else {
                return;
            };
            if let Err(e) = self.obj().src_pad().push(buf) {
                gst::debug!(CAT, imp = self, "pushing a queued frame: {:?}", e);
                return;
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypoints {
    const NAME: &'static str = "GstStableKeypoints";
    type Type = super::StableKeypoints;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for StableKeypoints {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(props::specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY) && self.started() {
            gst::warning!(
                CAT,
                imp = self,
                "`{}` can only be changed in the NULL or READY state",
                name
            );
            return;
        }
        props::set(&mut lock(&self.settings), name, value);
        gst::debug!(CAT, imp = self, "set `{}`", name);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return lock(&self.stats).to_structure().to_value();
        }
        props::get(&lock(&self.settings), pspec.name())
    }
}

impl GstObjectImpl for StableKeypoints {}

impl ElementImpl for StableKeypoints {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints detector",
                "Filter/Analyzer/Video",
                "Detects unsupervised keypoints (StableKeypoints, Stable Diffusion attention) and \
                 attaches them as region-of-interest metadata (optionally drawn)",
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

impl BaseTransformImpl for StableKeypoints {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        let delay = *lock(&self.test_delay);
        let loaded = infer::open(&LoadSettings {
            model: s.model.as_deref(),
            vae: s.vae.as_deref(),
            no_ema: s.no_ema,
            tokens: s.tokens.as_deref(),
            pose: s.pose.as_deref(),
            device: &s.device,
            detect: &s.detect,
            delay,
        })?;
        gst::info!(
            CAT,
            imp = self,
            "loaded {} ({} keypoints, input {}), one frame takes {:?}",
            loaded.model_name,
            loaded.detector.num_keypoints(),
            loaded.detector.input_size(),
            loaded.warmup
        );
        *lock(&self.stats) = Stats {
            warmup: loaded.warmup,
            ..Default::default()
        };
        *lock(&self.earliest) = None;
        let crop = loaded.detector.crop();
        *lock(&self.state) = Some(State {
            num_keypoints: loaded.detector.num_keypoints(),
            detector: Some(loaded.detector),
            tokens: loaded.tokens,
            pose: loaded.pose.map(Arc::new),
            delay,
            model_name: loaded.model_name,
            info: None,
            scheduler: Scheduler::default(),
            ready: VecDeque::new(),
            queued: None,
            objects: Objects::default(),
            inferred_objects: VecDeque::new(),
            warned: Vec::new(),
            crop,
        });
        *lock(&self.reported_latency) = gst::ClockTime::ZERO;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        *lock(&self.convert) = None;
        *lock(&self.blender) = Blender::default();
        Ok(())
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        let ok = self.parent_accept_caps(direction, caps);
        if !ok {
            // Negotiation then fails with a bare not-negotiated error: say why, once.
            let text = caps.to_string();
            let mut refused = lock(&self.refused);
            if refused.as_deref() != Some(text.as_str()) {
                let why = refusal_reason(caps);
                gst::warning!(CAT, imp = self, "refusing {}: {}", text, why);
                *refused = Some(text.clone());
                drop(refused);
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Cannot handle caps {}: {}", text, why)
                );
            }
        }
        ok
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Src {
            if let gst::QueryViewMut::Custom(q) = query.view_mut() {
                let s = q.structure_mut();
                if s.name() == SCHEDULE_QUERY {
                    let interval = lock(&self.settings).inference_interval.max(1);
                    s.set("inference-interval", interval);
                    return true;
                }
            }
        }
        let is_latency = matches!(query.view(), gst::QueryView::Latency(_));
        if direction != gst::PadDirection::Src || !is_latency {
            return BaseTransformImplExt::parent_query(self, direction, query);
        }
        if !BaseTransformImplExt::parent_query(self, direction, query) {
            return false;
        }
        let ours = self.own_latency();
        *lock(&self.reported_latency) = ours;
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let (live, min, max) = q.result();
            gst::debug!(CAT, imp = self, "adding {} of latency", ours);
            q.set(
                live,
                min.saturating_add(ours),
                max.map(|m| m.saturating_add(ours)),
            );
        }
        true
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Qos(q) = event.view() {
            let (_, _, diff, timestamp) = q.get();
            *lock(&self.earliest) = timestamp.map(|ts| {
                if diff >= 0 {
                    ts.saturating_add(gst::ClockTime::from_nseconds(diff as u64))
                } else {
                    ts.saturating_sub(gst::ClockTime::from_nseconds(diff.unsigned_abs()))
                }
            });
        }
        self.parent_src_event(event)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                // A flush (seek) starts a new stream: its first frame is inferred, and no
                // keypoints from before it are held.
                if let Some(state) = lock(&self.state).as_mut() {
                    state.scheduler.flush();
                    state.ready.clear();
                    state.queued = None;
                    state.objects.flush();
                    state.inferred_objects.clear();
                }
                *lock(&self.earliest) = None;
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
        let late = self.is_late(&inbuf);
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        state.queued = Some((inbuf, late));
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(&self) -> Result<GenerateOutputSuccess, gst::FlowError> {
        let queued = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            if let Some(buf) = state.ready.pop_front() {
                return Ok(GenerateOutputSuccess::Buffer(buf));
            }
            state.queued.take()
        };
        let Some((buffer, late)) = queued else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        // Settings are copied once per frame; property changes apply from the next frame.
        let s = lock(&self.settings).clone();
        let mut done = VecDeque::new();
        for out in self.process(buffer, late, &s)? {
            done.push_back(self.finish(out, &s)?);
        }
        let first = done.pop_front();
        if let Some(state) = lock(&self.state).as_mut() {
            state.ready.extend(done);
        }
        Ok(first.map_or(
            GenerateOutputSuccess::NoOutput,
            GenerateOutputSuccess::Buffer,
        ))
    }
}

impl VideoFilterImpl for StableKeypoints {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        outcaps: &gst::Caps,
        out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        *lock(&self.convert) = if core_reads(in_info) {
            None
        } else {
            let to_rgb = ToRgb::new(in_info).map_err(|e| {
                gst::loggable_error!(CAT, "cannot convert {} to RGB: {}", in_info.format(), e)
            })?;
            gst::debug!(
                CAT,
                imp = self,
                "{} goes to the model through RGB",
                in_info.format()
            );
            Some(to_rgb)
        };
        let mut st = lock(&self.state);
        let state = st
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps set before start"))?;
        gst::debug!(CAT, imp = self, "configured for {:?}", incaps);
        state.info = Some(in_info.clone());
        drop(st);
        self.parent_set_info(incaps, in_info, outcaps, out_info)
    }
}
