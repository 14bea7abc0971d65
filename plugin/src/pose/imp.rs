//! The `stablekeypointspose` element: loads the pose file on READY -> PAUSED, checks it
//! against the tokens each buffer's metadata names, and adds the landmarks in place.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use super::regress::{Pose, PoseError};
use crate::lock;
use crate::meta::geometry::Frames;
use crate::meta::{FrameKeypoints, ReadError, TokenIdentity};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypointspose",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints pose regression"),
    )
});

#[derive(Clone, Debug, Default)]
struct Settings {
    pose: Option<PathBuf>,
}

struct State {
    pose: Pose,
    info: Option<gst_video::VideoInfo>,
    /// What the keypoints are checked against (raw video caps only).
    frames: Option<Frames>,
    /// The tokens last checked against the pose file.
    checked: Option<TokenIdentity>,
    warned_unchecked: bool,
    /// Keypoints that no longer fit the frame are warned about once.
    warned_moved: bool,
}

#[derive(Default)]
pub struct StableKeypointsPose {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl StableKeypointsPose {
    fn fail(&self, e: PoseError) -> gst::FlowError {
        gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", e));
        gst::FlowError::Error
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StableKeypointsPose {
    const NAME: &'static str = "GstStableKeypointsPose";
    type Type = super::StableKeypointsPose;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StableKeypointsPose {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![glib::ParamSpecString::builder("pose")
                .nick("Pose")
                .blurb("Pose file from `stablekeypoints eval --save-regressor`: regress named landmarks and a skeleton from the keypoints")
                .mutable_ready()
                .build()]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if lock(&self.state).is_some() {
            gst::warning!(
                CAT,
                imp = self,
                "`{}` can only be changed in the NULL or READY state",
                pspec.name()
            );
            return;
        }
        match pspec.name() {
            "pose" => {
                lock(&self.settings).pose = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "pose" => lock(&self.settings)
                .pose
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for StableKeypointsPose {}

impl ElementImpl for StableKeypointsPose {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "StableKeypoints pose",
                "Filter/Analyzer/Video",
                "Regresses named landmarks and a skeleton from the keypoint metadata with a pose \
                 file fitted on the same tokens",
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

impl BaseTransformImpl for StableKeypointsPose {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let path = lock(&self.settings).pose.clone().ok_or_else(|| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                ("The `pose` property is not set (a file from `stablekeypoints eval --save-regressor`)")
            )
        })?;
        let pose = Pose::load(&path).map_err(|e| match e {
            PoseError::Load(m) => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", m)),
            PoseError::Unusable(m) => gst::error_msg!(gst::LibraryError::Settings, ("{}", m)),
        })?;
        *lock(&self.state) = Some(State {
            pose,
            info: None,
            frames: None,
            checked: None,
            warned_unchecked: false,
            warned_moved: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if let Some(state) = lock(&self.state).as_mut() {
            state.info = gst_video::VideoInfo::from_caps(incaps).ok();
            state.frames = Frames::from_caps(incaps);
        }
        self.parent_set_caps(incaps, outcaps)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let mut sets = match FrameKeypoints::all_for_frame(buf, state.frames.as_ref()) {
            None => return Ok(gst::FlowSuccess::Ok),
            Some(Ok(f)) => f,
            Some(Err(e @ ReadError::Moved(_))) => {
                if !std::mem::replace(&mut state.warned_moved, true) {
                    drop(guard);
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        ("Not regressing landmarks from {}", e)
                    );
                }
                return Ok(gst::FlowSuccess::Ok);
            }
            Some(Err(e)) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "not regressing from malformed metadata: {}",
                    e
                );
                return Ok(gst::FlowSuccess::Ok);
            }
        };
        let (w, h) = state
            .info
            .as_ref()
            .map_or((sets[0].source_width, sets[0].source_height), |i| {
                (i.width(), i.height())
            });
        // Each set its landmarks: the whole frame's, and each object's in its own box.
        for frame in &mut sets {
            match &frame.tokens {
                Some(t) if state.checked.as_ref() != Some(t) => {
                    if let Err(e) = state.pose.check_identity(t) {
                        drop(guard);
                        return Err(self.fail(e));
                    }
                    state.checked = Some(t.clone());
                }
                Some(_) => {}
                None if !state.warned_unchecked => {
                    state.warned_unchecked = true;
                    gst::warning!(
                        CAT,
                        imp = self,
                        "the keypoint metadata does not name its tokens: {} is not checked against them",
                        state.pose.path.display()
                    );
                }
                None => {}
            }
            match state.pose.landmarks_of(frame) {
                Ok(p) => frame.pose = Some(p),
                Err(e) => {
                    drop(guard);
                    return Err(self.fail(e));
                }
            }
        }
        drop(guard);
        FrameKeypoints::replace_all(&sets, buf, w, h);
        Ok(gst::FlowSuccess::Ok)
    }
}
