//! The `stablekeypointspublish` element: keypoint metadata -> records -> file, standard
//! output or MQTT, and optionally bus messages. Passthrough: buffers are never written,
//! copied or held.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mqtt::{self, Counters};
use super::output::{Output, Target};
use super::{FormatProp, FrameIndexProp, QosProp, CAT};
use crate::export::{self, FrameTimes};
use crate::framerate::{FrameRate, SourceIndex};
use crate::meta::geometry::Frames;
use crate::meta::{FrameKeypoints, ReadError};

const DEFAULT_TOPIC: &str = "stablekeypoints";
const DEFAULT_QOS: QosProp = QosProp::AtMostOnce;
const DEFAULT_QUEUE_SIZE: u32 = 256;
const DEFAULT_FLUSH_TIMEOUT_MS: u32 = 2000;
const DEFAULT_FORMAT: FormatProp = FormatProp::JsonLines;
const DEFAULT_POST_MESSAGES: bool = false;
const DEFAULT_FRAME_INDEX: FrameIndexProp = FrameIndexProp::Count;
/// At most one dropped-records warning per this interval (and one at EOS).
const WARNING_INTERVAL: Duration = Duration::from_secs(1);
/// Name of the details structure of the dropped-records warning.
pub const DROPPED_DETAILS: &str = "stablekeypointspublish-dropped";

#[derive(Clone, Debug)]
struct Settings {
    location: Option<String>,
    address: Option<String>,
    topic: String,
    client_id: Option<String>,
    qos: QosProp,
    username: Option<String>,
    password: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    queue_size: u32,
    flush_timeout: u32,
    format: FormatProp,
    post_messages: bool,
    frame_index: FrameIndexProp,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: None,
            address: None,
            topic: DEFAULT_TOPIC.into(),
            client_id: None,
            qos: DEFAULT_QOS,
            username: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT_MS,
            format: DEFAULT_FORMAT,
            post_messages: DEFAULT_POST_MESSAGES,
            frame_index: DEFAULT_FRAME_INDEX,
        }
    }
}

impl Settings {
    /// The output to open; errors name the properties at fault.
    fn target(&self) -> Result<Option<Target>, String> {
        match (&self.location, &self.address) {
            (Some(l), Some(a)) => Err(format!(
                "location={l} and address={a} are both set: use one (or two elements after a tee)"
            )),
            (Some(l), None) if l == "-" => Ok(Some(Target::Stdout)),
            (Some(l), None) => Ok(Some(Target::File(l.into()))),
            (None, Some(a)) => {
                static CLIENTS: AtomicU32 = AtomicU32::new(0);
                let client_id = self.client_id.clone().unwrap_or_else(|| {
                    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
                    format!("stablekeypoints-{}-{n}", std::process::id())
                });
                Ok(Some(Target::Mqtt(mqtt::Config {
                    address: a.clone(),
                    topic: self.topic.clone(),
                    client_id,
                    qos: self.qos as u8,
                    username: self.username.clone(),
                    password: self.password.clone(),
                    ca_file: self.tls_ca_file.clone(),
                    cert_file: self.tls_cert_file.clone(),
                    key_file: self.tls_key_file.clone(),
                    queue_size: self.queue_size as usize,
                })))
            }
            (None, None) if self.post_messages => Ok(None),
            (None, None) => Err(
                "nothing to publish to: set location (a file, or - for standard output), \
                 address (an MQTT broker) or post-messages=true"
                    .into(),
            ),
        }
    }
}

struct State {
    output: Option<Output>,
    /// The frames from the caps (raw video caps only): the size records are in, and what
    /// the keypoints are checked against; else the metadata's source size.
    frames: Option<Frames>,
    /// The caps' frame rate, when usable.
    rate: Option<FrameRate>,
    /// `frame-index=count`.
    next_index: u64,
    /// `frame-index=timestamp`.
    source_index: SourceIndex,
    /// `records-dropped` when the last warning was posted.
    warned_dropped: u64,
    last_warning: Option<Instant>,
    warned_malformed: bool,
    /// Keypoints that no longer fit the frame are warned about once.
    warned_moved: bool,
}

#[derive(Default)]
pub struct StableKeypointsPublish {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Kept after the element stops, so the final counts stay readable.
    counters: Mutex<Arc<Counters>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn into a panic in the streaming thread.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StableKeypointsPublish {
    fn counters(&self) -> Arc<Counters> {
        lock(&self.counters).clone()
    }

    /// The dropped-records warning, if records were dropped since the last one and the rate
    /// limit (or `force`) allows one now.
    fn drop_warning(&self, state: &mut State, force: bool) -> Option<gst::Message> {
        let counters = self.counters();
        let total = counters.dropped();
        let new = total.saturating_sub(state.warned_dropped);
        if new == 0
            || !(force
                || state
                    .last_warning
                    .is_none_or(|t| t.elapsed() >= WARNING_INTERVAL))
        {
            return None;
        }
        state.warned_dropped = total;
        state.last_warning = Some(Instant::now());
        let reason = state
            .output
            .as_ref()
            .and_then(Output::drop_reason)
            .unwrap_or_default();
        let text = format!("Dropped {new} keypoint records ({total} in all): {reason}");
        gst::warning!(CAT, imp = self, "{}", text);
        let details = gst::Structure::builder(DROPPED_DETAILS)
            .field("records-dropped", total)
            .field("records-sent", counters.sent())
            .field("reason", reason)
            .build();
        Some(
            gst::message::Warning::builder(gst::ResourceError::Write, &text)
                .details(details)
                .src(&*self.obj())
                .build(),
        )
    }

    fn post(&self, msg: Option<gst::Message>) {
        if let Some(m) = msg {
            let _ = self.obj().post_message(m);
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypointsPublish {
    const NAME: &'static str = "GstStableKeypointsPublish";
    type Type = super::StableKeypointsPublish;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StableKeypointsPublish {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let string = |name: &str, nick: &str, blurb: &str| {
                glib::ParamSpecString::builder(name)
                    .nick(nick)
                    .blurb(blurb)
                    .mutable_ready()
                    .build()
            };
            vec![
                string(
                    "location",
                    "Location",
                    "File to write the records to; - for standard output",
                ),
                string(
                    "address",
                    "Broker address",
                    "MQTT broker: host[:port], mqtt://host[:port] (1883) or mqtts://host[:port] (TLS, 8883); IPv6 hosts in brackets",
                ),
                glib::ParamSpecString::builder("topic")
                    .nick("Topic")
                    .blurb("MQTT topic of the records (no + or #)")
                    .default_value(Some(DEFAULT_TOPIC))
                    .mutable_ready()
                    .build(),
                string(
                    "client-id",
                    "Client id",
                    "MQTT client id, unique on the broker; default: stablekeypoints-<pid>-<n>",
                ),
                // Not `qos`: that is BaseTransform's own property (QoS events).
                glib::ParamSpecEnum::builder_with_default("mqtt-qos", DEFAULT_QOS)
                    .nick("QoS")
                    .blurb("MQTT quality of service of the records")
                    .mutable_ready()
                    .build(),
                string("username", "Username", "MQTT user name"),
                string("password", "Password", "MQTT password (with username); reads back as *****"),
                string(
                    "tls-ca-file",
                    "TLS CA file",
                    "PEM file of the CA certificates that sign the broker's (mqtts://); default: the system's",
                ),
                string(
                    "tls-cert-file",
                    "TLS certificate file",
                    "PEM file of the client certificate chain (with tls-key-file)",
                ),
                string(
                    "tls-key-file",
                    "TLS key file",
                    "PEM file of the client certificate's private key (with tls-cert-file)",
                ),
                glib::ParamSpecUInt::builder("queue-size")
                    .nick("Queue size")
                    .blurb("Records waiting for the broker; more are dropped and counted")
                    .minimum(1)
                    .maximum(65535)
                    .default_value(DEFAULT_QUEUE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("flush-timeout")
                    .nick("Flush timeout")
                    .blurb("At EOS, wait at most this many ms for the broker to take the queued records")
                    .maximum(600_000)
                    .default_value(DEFAULT_FLUSH_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("format", DEFAULT_FORMAT)
                    .nick("Format")
                    .blurb("json-lines (one record per frame, or per object) or coco (COCO keypoint results)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("frame-index", DEFAULT_FRAME_INDEX)
                    .nick("Frame index")
                    .blurb("How each record's `frame` is numbered: count (buffers since the element started) or timestamp (the source's frame index, stream time x frame rate: frames lost upstream leave their numbers unused; frames without a timestamp, and variable-rate streams, are counted on)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a `stablekeypoints` element message per frame on the bus")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("records-sent")
                    .nick("Records sent")
                    .blurb("Records written (file, stdout: lines, or frames in the COCO document) or delivered to the broker as far as the QoS level confirms")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-processed")
                    .nick("Frames processed")
                    .blurb("Buffers that passed the element since it started, with records or without (a frame without keypoint metadata, e.g. no objects, has none); a failed write is not counted")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("records-dropped")
                    .nick("Records dropped")
                    .blurb("Records dropped because the broker was away, the queue full, or they were still queued at stop")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY) && lock(&self.state).is_some() {
            gst::warning!(
                CAT,
                imp = self,
                "`{}` can only be changed in the NULL or READY state",
                name
            );
            return;
        }
        let string = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        let path = |v: &glib::Value| string(v).map(PathBuf::from);
        let mut s = lock(&self.settings);
        match name {
            "location" => s.location = string(value),
            "address" => s.address = string(value),
            // Kept as set, empty too: refused at start with the other MQTT settings.
            "topic" => {
                s.topic = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "client-id" => s.client_id = string(value),
            "mqtt-qos" => s.qos = value.get().expect("type checked upstream"),
            "username" => s.username = string(value),
            "password" => s.password = string(value),
            "tls-ca-file" => s.tls_ca_file = path(value),
            "tls-cert-file" => s.tls_cert_file = path(value),
            "tls-key-file" => s.tls_key_file = path(value),
            "queue-size" => s.queue_size = value.get().expect("type checked upstream"),
            "flush-timeout" => s.flush_timeout = value.get().expect("type checked upstream"),
            "format" => s.format = value.get().expect("type checked upstream"),
            "post-messages" => s.post_messages = value.get().expect("type checked upstream"),
            "frame-index" => s.frame_index = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
        gst::debug!(CAT, imp = self, "set `{}`", name);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).to_value();
        let s = lock(&self.settings);
        match pspec.name() {
            "location" => s.location.to_value(),
            "address" => s.address.to_value(),
            "topic" => s.topic.to_value(),
            "client-id" => s.client_id.to_value(),
            "mqtt-qos" => s.qos.to_value(),
            "username" => s.username.to_value(),
            // Write-mostly: never read back a secret.
            "password" => s.password.as_ref().map(|_| "*****").to_value(),
            "tls-ca-file" => path(&s.tls_ca_file),
            "tls-cert-file" => path(&s.tls_cert_file),
            "tls-key-file" => path(&s.tls_key_file),
            "queue-size" => s.queue_size.to_value(),
            "flush-timeout" => s.flush_timeout.to_value(),
            "format" => s.format.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "frame-index" => s.frame_index.to_value(),
            "records-sent" => self.counters().sent().to_value(),
            "frames-processed" => self.counters().frames().to_value(),
            "records-dropped" => self.counters().dropped().to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for StableKeypointsPublish {}

impl ElementImpl for StableKeypointsPublish {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints record publisher",
                "Filter/Metadata",
                "Writes the keypoint metadata of each frame as a record (JSON lines or COCO) to \
                 a file, standard output or an MQTT broker; buffers pass unchanged",
                "stablekeypoints developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            ["src", "sink"]
                .into_iter()
                .map(|name| {
                    let dir = if name == "src" {
                        gst::PadDirection::Src
                    } else {
                        gst::PadDirection::Sink
                    };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps)
                        .expect("valid template")
                })
                .collect()
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for StableKeypointsPublish {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        let fail = |e: String| gst::error_msg!(gst::ResourceError::OpenWrite, ("{}", e));
        let counters = Arc::new(Counters::default());
        let output = match s.target().map_err(fail)? {
            Some(t) => Some(Output::open(t, s.format, counters.clone()).map_err(fail)?),
            None => None,
        };
        *lock(&self.counters) = counters;
        *lock(&self.state) = Some(State {
            output,
            frames: None,
            rate: None,
            next_index: 0,
            source_index: SourceIndex::default(),
            warned_dropped: 0,
            last_warning: None,
            warned_malformed: false,
            warned_moved: false,
        });
        gst::info!(CAT, imp = self, "publishing ({:?})", s.format);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = lock(&self.state).take();
        if let Some(out) = state.and_then(|s| s.output) {
            if let Err(e) = out.close() {
                gst::warning!(CAT, imp = self, "{}", e);
            }
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if let Some(state) = lock(&self.state).as_mut() {
            state.frames = Frames::from_caps(incaps);
            state.rate = FrameRate::of_caps(incaps);
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            // A seek: the next frame's index comes from its own timestamp.
            if let Some(state) = lock(&self.state).as_mut() {
                state.source_index.reset();
            }
        }
        if let gst::EventView::Eos(_) = event.view() {
            let timeout = Duration::from_millis(lock(&self.settings).flush_timeout as u64);
            let (result, warning) = match lock(&self.state).as_mut() {
                Some(state) => {
                    let r = state.output.as_mut().map(|o| o.finish(timeout));
                    (r, self.drop_warning(state, true))
                }
                None => (None, None),
            };
            self.post(warning);
            match result {
                Some(Ok(false)) => gst::warning!(
                    CAT,
                    imp = self,
                    "records still queued after flush-timeout; they are dropped when the element stops"
                ),
                Some(Err(e)) => {
                    gst::element_imp_error!(self, gst::ResourceError::Write, ("{}", e));
                    return false;
                }
                _ => {}
            }
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (post_messages, frame_index) = {
            let s = lock(&self.settings);
            (s.post_messages, s.frame_index)
        };
        let segment = self.obj().segment();
        let times = FrameTimes::of(buf, &segment);
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let index = match frame_index {
            FrameIndexProp::Count => {
                state.next_index += 1;
                state.next_index - 1
            }
            FrameIndexProp::Timestamp => {
                let t = times.stream_time.or(times.pts);
                state.source_index.next(state.rate, t)
            }
        };
        let (mut messages, mut error, mut moved) = (Vec::new(), None, None);
        match FrameKeypoints::all_for_frame(buf, state.frames.as_ref()) {
            None => {}
            Some(Err(e @ ReadError::Moved(_))) if !state.warned_moved => {
                state.warned_moved = true;
                moved = Some(e);
            }
            Some(Err(ReadError::Moved(_))) => {}
            Some(Err(e)) if !state.warned_malformed => {
                state.warned_malformed = true;
                gst::warning!(CAT, imp = self, "frame {}: {}; no record", index, e);
            }
            Some(Err(_)) => {}
            // One record (and message) per set: the whole frame's, each object's.
            Some(Ok(sets)) => {
                for frame in &sets {
                    let (w, h) = state
                        .frames
                        .as_ref()
                        .map_or((frame.source_width, frame.source_height), Frames::size);
                    if post_messages {
                        messages.push(export::message(frame, index, &times, w, h));
                    }
                    if let Some(out) = state.output.as_mut() {
                        if error.is_none() {
                            let record = export::record(frame, index, &times, w, h);
                            error = out.write(&record).err();
                        }
                    }
                }
            }
        }
        let warning = self.drop_warning(state, false);
        drop(guard);
        if let Some(e) = moved {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                ("Frame {}: no record of {}", index, e)
            );
        }
        for st in messages {
            self.post(Some(
                gst::message::Element::builder(st).src(&*self.obj()).build(),
            ));
        }
        self.post(warning);
        if let Some(e) = error {
            gst::element_imp_error!(self, gst::ResourceError::Write, ("{}", e));
            return Err(gst::FlowError::Error);
        }
        self.counters().add_frame();
        Ok(gst::FlowSuccess::Ok)
    }
}
