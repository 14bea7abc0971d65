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
mod tests {
    use super::*;

    fn kp(id: usize, x: f32, y: f32, score: f32) -> Keypoint {
        Keypoint { id, x, y, score }
    }

    /// The keypoints an inference of frame `i` gives in these tests.
    fn infer(i: u64) -> Vec<Keypoint> {
        vec![
            kp(0, 0.1 * i as f32, 0.5, 0.25),
            kp(1, 0.5, 0.05 * i as f32, 0.5),
        ]
    }

    fn settings(interval: u64, gap: GapPolicy, batch: usize) -> StreamSettings {
        StreamSettings {
            interval,
            gap,
            batch_size: batch,
            batch_timeout: None,
        }
    }

    /// Runs frames 0..lates.len() (late where `lates` says) through a scheduler, inferring
    /// batches at once; returns (frame, keypoints' first x, origin) in output order.
    fn run(s: &StreamSettings, lates: &[bool]) -> Vec<(u64, Option<f32>, Origin)> {
        let mut sch = Scheduler::<u64>::default();
        let now = Instant::now();
        let mut out = Vec::new();
        let take = |sch: &mut Scheduler<u64>, out: &mut Vec<_>| {
            let b = sch.take_batch();
            let k = b.to_infer().map(|&i| infer(i)).collect();
            out.extend(sch.complete(b, k, s));
        };
        for (i, &late) in lates.iter().enumerate() {
            let p = sch.push(i as u64, late, now, s);
            out.extend(p.ready);
            if p.run_batch {
                take(&mut sch, &mut out);
            }
        }
        if sch.has_pending() {
            take(&mut sch, &mut out);
        }
        out.into_iter()
            .map(|r| (r.frame, r.keypoints.map(|k| k[0].x), r.origin))
            .collect()
    }

    #[test]
    fn schedule_infers_every_interval_and_retries_after_skips() {
        let mut s = Schedule::default();
        let mut pattern = Vec::new();
        for _ in 0..7 {
            let due = s.due(3);
            pattern.push(due);
            if due {
                s.inferred()
            } else {
                s.skipped()
            }
        }
        assert_eq!(pattern, [true, false, false, true, false, false, true]);
        // A late due frame is skipped; the next one is due again.
        let mut s = Schedule::default();
        s.inferred();
        s.skipped();
        assert!(s.due(2));
        s.skipped(); // late
        assert!(s.due(2));
        assert!(Schedule::default().due(0));
    }

    #[test]
    fn hold_last_repeats_the_last_inference_and_none_gives_nothing() {
        use Origin::*;
        let x = |i: u64| Some(0.1 * i as f32);
        let held = run(&settings(3, GapPolicy::HoldLast, 1), &[false; 5]);
        assert_eq!(
            held,
            [
                (0, x(0), Inference),
                (1, x(0), Interval),
                (2, x(0), Interval),
                (3, x(3), Inference),
                (4, x(3), Interval)
            ]
        );
        let none = run(&settings(3, GapPolicy::None, 1), &[false; 4]);
        assert_eq!(
            none,
            [
                (0, x(0), Inference),
                (1, None, Interval),
                (2, None, Interval),
                (3, x(3), Inference)
            ]
        );
    }

    #[test]
    fn late_frames_carry_the_last_keypoints_under_every_policy() {
        use Origin::*;
        for gap in [GapPolicy::None, GapPolicy::HoldLast] {
            // Frame 1 is due (interval 1) but late; frame 0 late too: nothing to hold yet.
            let out = run(&settings(1, gap, 1), &[true, false, true, false]);
            assert_eq!(
                out,
                [
                    (0, None, Late),
                    (1, Some(0.1), Inference),
                    (2, Some(0.1), Late),
                    (3, Some(0.3), Inference)
                ],
                "{gap:?}"
            );
        }
    }

    #[test]
    fn batches_give_the_results_of_single_frames_in_order() {
        for (interval, gap) in [
            (1, GapPolicy::HoldLast),
            (3, GapPolicy::None),
            (2, GapPolicy::HoldLast),
        ] {
            let lates = [
                false, false, true, false, false, false, false, true, false, false,
            ];
            let one = run(&settings(interval, gap, 1), &lates);
            let four = run(&settings(interval, gap, 4), &lates);
            assert_eq!(one, four, "interval {interval} {gap:?}");
        }
    }

    #[test]
    fn a_batch_runs_when_full_or_when_a_frame_arrives_after_the_timeout() {
        let s = settings(1, GapPolicy::HoldLast, 3);
        let t0 = Instant::now();
        let mut sch = Scheduler::<u64>::default();
        assert!(!sch.push(0, false, t0, &s).run_batch);
        assert!(!sch.push(1, false, t0, &s).run_batch);
        let p = sch.push(2, false, t0, &s);
        assert!(p.run_batch && p.ready.is_empty());
        let b = sch.take_batch();
        assert_eq!(b.to_infer().copied().collect::<Vec<_>>(), [0, 1, 2]);
        // Frames behind the batch (not due) wait in it without being inferred.
        let s = StreamSettings {
            interval: 2,
            batch_timeout: Some(Duration::from_millis(50)),
            ..s
        };
        let mut sch = Scheduler::<u64>::default();
        assert!(!sch.push(0, false, t0, &s).run_batch);
        let p = sch.push(1, false, t0 + Duration::from_millis(49), &s);
        assert!(!p.run_batch && p.ready.is_empty());
        assert!(
            sch.push(2, false, t0 + Duration::from_millis(50), &s)
                .run_batch
        );
        let b = sch.take_batch();
        assert_eq!(
            (b.num_infer(), b.to_infer().copied().collect::<Vec<_>>()),
            (2, vec![0, 2])
        );
        let k = vec![infer(0), infer(2)];
        let out = sch.complete(b, k, &s);
        let origins: Vec<Origin> = out.iter().map(|r| r.origin).collect();
        assert_eq!(
            origins,
            [Origin::Inference, Origin::Interval, Origin::Inference]
        );
        assert_eq!(out[1].keypoints, Some(infer(0)));
        assert!(!sch.has_pending());
    }

    #[test]
    fn verdicts_count_interval_and_late_skips() {
        let s = settings(2, GapPolicy::HoldLast, 1);
        let mut sch = Scheduler::<u64>::default();
        let now = Instant::now();
        let mut verdicts = Vec::new();
        for (i, late) in [false, false, true, false].into_iter().enumerate() {
            let p = sch.push(i as u64, late, now, &s);
            verdicts.push(p.verdict);
            if p.run_batch {
                let b = sch.take_batch();
                let k = b.to_infer().map(|&i| infer(i)).collect();
                sch.complete(b, k, &s);
            }
        }
        use Verdict::*;
        assert_eq!(verdicts, [Infer, Interval, Late, Infer]);
    }

    #[test]
    fn flush_drops_queued_frames_and_the_next_frame_is_inferred() {
        let s = settings(3, GapPolicy::HoldLast, 4);
        let mut sch = Scheduler::<u64>::default();
        let now = Instant::now();
        sch.push(0, false, now, &s);
        sch.push(1, false, now, &s);
        sch.flush();
        assert!(!sch.has_pending());
        let p = sch.push(10, false, now, &s);
        assert_eq!(p.verdict, Verdict::Infer);
        let b = sch.take_batch();
        let out = sch.complete(b, vec![infer(10)], &s);
        assert_eq!(out[0].index, 2, "indices go on across a flush");
        // Nothing of before the flush is held.
        let mut sch = Scheduler::<u64>::default();
        let one = settings(2, GapPolicy::HoldLast, 1);
        let b = {
            sch.push(0, false, now, &one);
            sch.take_batch()
        };
        sch.complete(b, vec![infer(0)], &one);
        sch.flush();
        let late = sch.push(1, true, now, &one);
        assert_eq!(late.ready[0].keypoints, None);
    }

    /// Frames through a hold-last scheduler (interval 3), then an interpolator.
    #[test]
    fn interpolation_puts_held_frames_on_the_line_between_inferences() {
        let s = settings(3, GapPolicy::HoldLast, 1);
        let resolved = {
            let mut sch = Scheduler::<u64>::default();
            let now = Instant::now();
            let mut out = Vec::new();
            for i in 0..5 {
                let p = sch.push(i, false, now, &s);
                out.extend(p.ready);
                if p.run_batch {
                    let b = sch.take_batch();
                    let k = b.to_infer().map(|&i| infer(i)).collect();
                    out.extend(sch.complete(b, k, &s));
                }
            }
            out
        };
        let mut it = Interpolator::default();
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        for r in resolved {
            out.extend(it.push(Tracked {
                frame: r.frame,
                keypoints: r.keypoints,
                origin: Some(r.origin),
            }));
            waiting.push(it.held());
        }
        assert_eq!(waiting, [0, 1, 2, 0, 1]);
        out.extend(it.drain());
        let frames: Vec<u64> = out.iter().map(|t| t.frame).collect();
        assert_eq!(frames, [0, 1, 2, 3, 4], "order kept");
        let (a, b) = (infer(0), infer(3));
        for (i, t) in [(1, 1.0 / 3.0), (2, 2.0 / 3.0)] {
            let k = out[i].keypoints.as_ref().unwrap();
            assert_eq!(out[i].origin, Some(Origin::Interpolated));
            for j in 0..2 {
                assert!((k[j].x - (a[j].x + (b[j].x - a[j].x) * t)).abs() < 1e-6);
                assert!((k[j].y - (a[j].y + (b[j].y - a[j].y) * t)).abs() < 1e-6);
            }
        }
        // Released at the end with the last inference's keypoints, still marked held.
        assert_eq!(out[4].keypoints, Some(infer(3)));
        assert_eq!(out[4].origin, Some(Origin::Interval));
    }

    #[test]
    fn late_frames_and_frames_without_keypoints_release_the_held_ones() {
        let t = |frame, k: Option<u64>, origin| Tracked {
            frame,
            keypoints: k.map(infer),
            origin: Some(origin),
        };
        let mut it = Interpolator::default();
        assert_eq!(it.push(t(0, Some(0), Origin::Inference)).len(), 1);
        assert!(it.push(t(1, Some(0), Origin::Interval)).is_empty());
        let out = it.push(t(2, Some(0), Origin::Late));
        assert_eq!(out.iter().map(|t| t.frame).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(out[0].keypoints, Some(infer(0)));
        assert!(it.push(t(3, Some(0), Origin::Interval)).is_empty());
        let out = it.push(Tracked {
            frame: 4,
            keypoints: None,
            origin: None,
        });
        assert_eq!(out.len(), 2);
        // Nothing inferred yet (or after a flush): held frames are not held.
        let mut it = Interpolator::default();
        assert_eq!(it.push(t(0, Some(0), Origin::Interval)).len(), 1);
        it.push(t(1, Some(1), Origin::Inference));
        it.flush();
        assert_eq!(it.push(t(2, Some(1), Origin::Interval)).len(), 1);
    }

    #[test]
    fn latency_of_batches_and_look_ahead() {
        let ms = Duration::from_millis;
        let frame = Some(ms(40));
        assert_eq!(inference_latency(ms(7), 1, 3, None, frame), ms(7));
        // A batch of 4 waits 3 frames (interval 1), or the timeout plus one frame.
        assert_eq!(inference_latency(ms(7), 4, 1, None, frame), ms(28 + 120));
        assert_eq!(
            inference_latency(ms(7), 4, 1, Some(ms(50)), frame),
            ms(28 + 90)
        );
        assert_eq!(
            inference_latency(ms(7), 4, 2, Some(ms(500)), frame),
            ms(28 + 240)
        );
        assert_eq!(
            inference_latency(ms(7), 4, 1, Some(ms(50)), None),
            ms(28 + 50)
        );
        assert_eq!(interpolation_latency(4, frame), ms(120));
        assert_eq!(interpolation_latency(1, frame), Duration::ZERO);
        // Absurd values saturate instead of overflowing.
        let hour = Some(Duration::from_secs(3600));
        assert!(interpolation_latency(u64::MAX, hour) >= Duration::from_secs(3600 * 1000));
        assert!(inference_latency(Duration::MAX, 64, u64::MAX, None, hour) == Duration::MAX);
    }

    #[test]
    fn origins_round_trip_their_names() {
        for o in [
            Origin::Inference,
            Origin::Interval,
            Origin::Late,
            Origin::Interpolated,
        ] {
            assert_eq!(Origin::parse(o.as_str()), Some(o));
            assert_eq!(o.inferred(), o != Origin::Inference);
        }
        assert_eq!(Origin::parse("held"), None);
    }
}
