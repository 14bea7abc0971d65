//! What happens to each frame of a video stream between the decoder and the keypoints:
//! which frames are inferred (`inference-interval`, lateness), how frames wait for their
//! batch, which keypoints the frames without an inference carry (the gap policy), the
//! interpolation of held frames, and the latency all that adds.
//!
//! GStreamer-free and generic over the frame handle `F` (a `gst::Buffer` in the elements),
//! so that the elements are thin glue and every decision is unit-tested here.

use crate::detect::Keypoint;
use crate::track::interpolate;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How frames without their own inference get keypoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GapPolicy {
    /// No keypoints on such frames.
    None,
    /// The last inferred keypoints.
    #[default]
    HoldLast,
    /// Linear interpolation between the inferences before and after (needs look-ahead:
    /// see [`Interpolator`]).
    Interpolate,
}

/// Where a frame's keypoints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Inferred on this very frame.
    Inference,
    /// Not due under the inference interval: the last inference's keypoints.
    Interval,
    /// Late (QoS): inference skipped, the last inference's keypoints.
    Late,
    /// Interpolated between the inferences before and after.
    Interpolated,
}

impl Origin {
    /// The name used in metadata and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Inference => "inference",
            Origin::Interval => "interval",
            Origin::Late => "late",
            Origin::Interpolated => "interpolated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Origin::Inference,
            Origin::Interval,
            Origin::Late,
            Origin::Interpolated,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// Not computed from this frame (the `inferred` flag of the metadata).
    pub fn inferred(self) -> bool {
        self != Origin::Inference
    }
}

/// Decides which frames run inference: every `interval`-th frame after the last inference,
/// and always the first. Late frames (QoS) skip inference and are retried on the next frame.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    since_last: Option<u64>,
}

impl Schedule {
    /// Whether the next frame should be inferred (`interval` >= 1).
    pub fn due(&self, interval: u64) -> bool {
        match self.since_last {
            None => true,
            Some(n) => n + 1 >= interval.max(1),
        }
    }

    /// Records that a frame was inferred.
    pub fn inferred(&mut self) {
        self.since_last = Some(0);
    }

    /// Records that a frame was not inferred.
    pub fn skipped(&mut self) {
        if let Some(n) = &mut self.since_last {
            *n += 1;
        }
    }

    pub fn reset(&mut self) {
        self.since_last = None;
    }
}

/// The settings a [`Scheduler`] reads for each frame (they may change between frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Infer every `interval`-th frame (>= 1).
    pub interval: u64,
    /// `None` or `HoldLast` (`Interpolate` is an [`Interpolator`] after the scheduler and
    /// behaves as `HoldLast` here).
    pub gap: GapPolicy,
    /// Frames inferred together (>= 1).
    pub batch_size: usize,
    /// A frame arriving this long after the first queued one runs the partial batch.
    pub batch_timeout: Option<Duration>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            interval: 1,
            gap: GapPolicy::HoldLast,
            batch_size: 1,
            batch_timeout: None,
        }
    }
}

/// What the scheduler decided for one arriving frame (for statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Due and on time: it is (or waits to be) inferred.
    Infer,
    /// Not due under the interval.
    Interval,
    /// Due but late.
    Late,
}

/// A frame waiting for its batch.
#[derive(Debug)]
pub struct Pending<F> {
    pub frame: F,
    /// Index since the start of the stream.
    pub index: u64,
    /// Item key of its noise and warps: frames since the start or the last flush.
    pub key: u64,
    pub late: bool,
    /// In the batch; otherwise only waiting behind it.
    pub infer: bool,
}

/// A frame whose keypoints are known, in stream order.
#[derive(Debug, PartialEq)]
pub struct Resolved<F> {
    pub frame: F,
    pub index: u64,
    /// Item key of its noise and warps, as [`Pending::key`].
    pub key: u64,
    /// `None` when the gap policy gives none (or nothing was inferred yet).
    pub keypoints: Option<Vec<Keypoint>>,
    pub origin: Origin,
}

/// The outcome of [`Scheduler::push`].
#[derive(Debug)]
pub struct Pushed<F> {
    pub verdict: Verdict,
    /// Frames complete now, in order.
    pub ready: Vec<Resolved<F>>,
    /// The queued frames must be inferred now ([`Scheduler::take_batch`]).
    pub run_batch: bool,
}

/// Frames taken out of the scheduler to be inferred (without holding it).
#[derive(Debug)]
pub struct Batch<F> {
    frames: Vec<Pending<F>>,
}

impl<F> Batch<F> {
    /// The frames to run through the model, in order.
    pub fn to_infer(&self) -> impl Iterator<Item = &F> {
        self.frames.iter().filter(|p| p.infer).map(|p| &p.frame)
    }

    /// The item keys of [`Batch::to_infer`]'s frames.
    pub fn keys(&self) -> Vec<u64> {
        self.frames
            .iter()
            .filter(|p| p.infer)
            .map(|p| p.key)
            .collect()
    }

    pub fn num_infer(&self) -> usize {
        self.frames.iter().filter(|p| p.infer).count()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Frame scheduling, batching and the `none`/`hold-last` gap policies: frames go in with
/// their lateness, and come out in the same order with their keypoints. Frames to infer wait
/// until `batch_size` of them are there (or the timeout passed); the frames that arrive
/// meanwhile wait behind them, so that every frame is resolved in order, exactly as one at a
/// time.
#[derive(Debug)]
pub struct Scheduler<F> {
    schedule: Schedule,
    /// The last inferred keypoints.
    last: Option<Vec<Keypoint>>,
    pending: VecDeque<Pending<F>>,
    pending_infer: usize,
    /// Arrival of the first pending frame (for the batch timeout).
    pending_since: Option<Instant>,
    next_index: u64,
    next_key: u64,
}

impl<F> Default for Scheduler<F> {
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            last: None,
            pending: VecDeque::new(),
            pending_infer: 0,
            pending_since: None,
            next_index: 0,
            next_key: 0,
        }
    }
}

impl<F> Scheduler<F> {
    /// One arriving frame, `late` when downstream said so, at time `now`.
    pub fn push(&mut self, frame: F, late: bool, now: Instant, s: &StreamSettings) -> Pushed<F> {
        let index = self.next_index;
        self.next_index += 1;
        let key = self.next_key;
        self.next_key += 1;
        let due = self.schedule.due(s.interval);
        let infer = due && !late;
        if infer {
            self.schedule.inferred();
        } else {
            self.schedule.skipped();
        }
        let verdict = match (due, late) {
            (false, _) => Verdict::Interval,
            (true, true) => Verdict::Late,
            (true, false) => Verdict::Infer,
        };
        let p = Pending {
            frame,
            index,
            key,
            late,
            infer,
        };
        if !infer && self.pending.is_empty() {
            return Pushed {
                verdict,
                ready: vec![self.resolve(p, None, s)],
                run_batch: false,
            };
        }
        self.pending.push_back(p);
        self.pending_infer += infer as usize;
        let since = *self.pending_since.get_or_insert(now);
        let run_batch = self.pending_infer >= s.batch_size.max(1)
            || s.batch_timeout
                .is_some_and(|t| now.saturating_duration_since(since) >= t);
        Pushed {
            verdict,
            ready: Vec::new(),
            run_batch,
        }
    }

    /// Whether frames are queued (a partial batch, or frames behind it).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the queued frames out to be inferred; [`Scheduler::complete`] resolves them.
    pub fn take_batch(&mut self) -> Batch<F> {
        self.pending_infer = 0;
        self.pending_since = None;
        Batch {
            frames: self.pending.drain(..).collect(),
        }
    }

    /// Resolves a batch with the keypoints of its frames to infer, in order.
    pub fn complete(
        &mut self,
        batch: Batch<F>,
        keypoints: Vec<Vec<Keypoint>>,
        s: &StreamSettings,
    ) -> Vec<Resolved<F>> {
        let mut keypoints = keypoints.into_iter();
        batch
            .frames
            .into_iter()
            .map(|p| {
                let k = if p.infer { keypoints.next() } else { None };
                self.resolve(p, k, s)
            })
            .collect()
    }

    /// A new stream (flush): queued frames are dropped, the next frame is inferred, and no
    /// keypoints of before are held. Frame indices go on; noise keys start again at 0.
    pub fn flush(&mut self) {
        self.next_key = 0;
        self.pending.clear();
        self.pending_infer = 0;
        self.pending_since = None;
        self.schedule.reset();
        self.last = None;
    }

    fn resolve(
        &mut self,
        p: Pending<F>,
        keypoints: Option<Vec<Keypoint>>,
        s: &StreamSettings,
    ) -> Resolved<F> {
        let Pending {
            frame,
            index,
            key,
            late,
            ..
        } = p;
        if let Some(k) = keypoints {
            self.last = Some(k.clone());
            return Resolved {
                frame,
                index,
                key,
                keypoints: Some(k),
                origin: Origin::Inference,
            };
        }
        let origin = if late { Origin::Late } else { Origin::Interval };
        let keypoints = match s.gap {
            GapPolicy::None if !late => None,
            _ => self.last.clone(),
        };
        Resolved {
            frame,
            index,
            key,
            keypoints,
            origin,
        }
    }
}

/// A frame with the keypoints it carries, as the [`Interpolator`] sees it.
#[derive(Debug, PartialEq)]
pub struct Tracked<F> {
    pub frame: F,
    pub keypoints: Option<Vec<Keypoint>>,
    /// `None` for keypoints of unknown origin (passed on as they are).
    pub origin: Option<Origin>,
}

/// The `interpolate` gap policy after a [`Scheduler`] with `hold-last`: frames that carry
/// the last inference's keypoints because they were not due ([`Origin::Interval`]) wait for
/// the next inference and get the keypoints on the line between the two. Late frames, frames
/// without keypoints and [`Interpolator::drain`] (end of stream, new caps) release the
/// waiting frames with the keypoints they carry. Order is kept.
#[derive(Debug)]
pub struct Interpolator<F> {
    last: Option<Vec<Keypoint>>,
    held: VecDeque<Tracked<F>>,
}

impl<F> Default for Interpolator<F> {
    fn default() -> Self {
        Self {
            last: None,
            held: VecDeque::new(),
        }
    }
}

impl<F> Interpolator<F> {
    /// One frame in; the frames complete now out, in order.
    pub fn push(&mut self, t: Tracked<F>) -> Vec<Tracked<F>> {
        match (&t.keypoints, t.origin) {
            (Some(k), Some(Origin::Inference)) => {
                let previous = self.last.replace(k.clone());
                let n = self.held.len();
                let mut out: Vec<Tracked<F>> = self
                    .held
                    .drain(..)
                    .enumerate()
                    .map(|(i, h)| Tracked {
                        frame: h.frame,
                        keypoints: Some(match &previous {
                            Some(p) => interpolate(p, k, (i + 1) as f32 / (n + 1) as f32),
                            None => k.clone(),
                        }),
                        origin: Some(Origin::Interpolated),
                    })
                    .collect();
                out.push(t);
                out
            }
            (Some(_), Some(Origin::Interval)) if self.last.is_some() => {
                self.held.push_back(t);
                Vec::new()
            }
            _ => {
                let mut out = self.drain();
                out.push(t);
                out
            }
        }
    }

    /// The waiting frames, with the keypoints they carry (no later inference is coming).
    pub fn drain(&mut self) -> Vec<Tracked<F>> {
        self.held.drain(..).collect()
    }

    /// How many frames wait.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A new stream: waiting frames are dropped and nothing is interpolated across.
    pub fn flush(&mut self) {
        self.held.clear();
        self.last = None;
    }
}

/// Latency the inference adds: `batch` frames' inference (`per_frame` each) and, with
/// batches, the time a batch takes to fill: `(batch - 1) * interval` frames of
/// `frame_duration`, or `batch_timeout` plus one frame if that is shorter (the timeout is
/// only checked when a frame arrives; `batch_timeout` alone when the frame rate is unknown).
pub fn inference_latency(
    per_frame: Duration,
    batch: u64,
    interval: u64,
    batch_timeout: Option<Duration>,
    frame_duration: Option<Duration>,
) -> Duration {
    let batch = batch.max(1);
    let mut latency = per_frame.saturating_mul(sat_u32(batch));
    if batch > 1 {
        let fill = frame_duration
            .map(|f| f.saturating_mul(sat_u32((batch - 1).saturating_mul(interval.max(1)))));
        let wait = match (fill, batch_timeout) {
            (Some(fill), Some(t)) => fill.min(t.saturating_add(frame_duration.unwrap_or_default())),
            (fill, t) => fill.or(t).unwrap_or_default(),
        };
        latency = latency.saturating_add(wait);
    }
    latency
}

/// Look-ahead of the `interpolate` policy: a frame waits for the next inference, at most
/// `interval - 1` frames later.
pub fn interpolation_latency(interval: u64, frame_duration: Option<Duration>) -> Duration {
    match frame_duration {
        Some(f) if interval > 1 => f.saturating_mul(sat_u32(interval - 1)),
        _ => Duration::ZERO,
    }
}

/// Multiplies a duration by a u64 factor, saturating (`Duration::saturating_mul` takes u32).
fn sat_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
