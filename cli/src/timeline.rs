//! The decoded frames' timestamps as they reach the element: how many frames, the longest
//! interval between two, and the frames missing between them (a file damaged in the middle).
//! [`crate::pipeline::run_video`] feeds it from a pad probe. A [`Gap`] is plain data (a
//! corpus's `done.json` lists them), so it exists without the `video` feature.

#[cfg(feature = "video")]
use gststablekeypoints::framerate::FrameRate;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Frames missing between two decoded ones: the source's frames `first_frame` to
/// `last_frame`, which would have covered stream times `start` to `end` (seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub first_frame: u64,
    pub last_frame: u64,
    pub frames: u64,
    pub start: f64,
    pub end: f64,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, s) = (self.frames, if self.frames == 1 { "" } else { "s" });
        let times = format!("{n} frame{s}, {:.3} s to {:.3} s", self.start, self.end);
        if n == 1 {
            write!(f, "frame {} ({times}) is missing", self.first_frame)?;
        } else {
            write!(
                f,
                "frames {} to {} ({times}) are missing",
                self.first_frame, self.last_frame
            )?;
        }
        write!(f, " (damaged?)")
    }
}

/// What the timestamps of a stream's frames said so far.
#[cfg(feature = "video")]
#[derive(Debug)]
pub struct Timeline {
    rate: Option<FrameRate>,
    frames: u64,
    last: Option<gst::ClockTime>,
    longest: gst::ClockTime,
    gaps: Vec<Gap>,
}

/// Decoding may end this much short of the declared end when nothing better is known.
#[cfg(feature = "video")]
const MIN_SLACK: gst::ClockTime = gst::ClockTime::from_mseconds(50);

#[cfg(feature = "video")]
impl Timeline {
    /// A stream of this nominal rate (`None`: variable or unusable).
    pub fn new(rate: Option<FrameRate>) -> Self {
        Self {
            rate,
            frames: 0,
            last: None,
            longest: gst::ClockTime::ZERO,
            gaps: Vec::new(),
        }
    }

    /// The next frame, at stream time `t` (if it has a timestamp).
    pub fn push(&mut self, t: Option<gst::ClockTime>) {
        self.frames += 1;
        let Some(t) = t else { return };
        if let Some(prev) = self.last.filter(|&p| p < t) {
            let interval = t - prev;
            self.longest = self.longest.max(interval);
            if let Some(gap) = self.rate.and_then(|r| gap(r, prev, t)) {
                self.gaps.push(gap);
            }
        }
        self.last = Some(t);
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// How far short of the declared duration decoding may end and the file still be
    /// complete (the last frame's duration may be unknown, and durations are rounded): 1.5
    /// frames of the nominal rate, else 1.5 times the longest interval seen between two
    /// frames (a variable-rate stream's frames may be long); at least 50 ms.
    pub fn slack(&self) -> gst::ClockTime {
        let frame = self.rate.map_or(self.longest, |r| r.frame_duration());
        (frame + frame / 2).max(MIN_SLACK)
    }
}

/// The frames of `rate` missing between frames at `prev` and `t`: none while they are at
/// most 1.5 frames apart (timestamps are rounded).
#[cfg(feature = "video")]
fn gap(rate: FrameRate, prev: gst::ClockTime, t: gst::ClockTime) -> Option<Gap> {
    let frame = rate.frame_duration();
    if t - prev <= frame + frame / 2 {
        return None;
    }
    let first = rate.index_at(prev) + 1;
    let next = rate.index_at(t);
    (next > first).then(|| {
        let secs = |i: u64| rate.time_of(i).nseconds() as f64 / 1e9;
        Gap {
            first_frame: first,
            last_frame: next - 1,
            frames: next - first,
            start: secs(first),
            end: secs(next),
        }
    })
}

#[cfg(all(test, feature = "video"))]
mod tests {
    use super::*;

    fn at(i: u64, fps: u64) -> Option<gst::ClockTime> {
        Some(gst::ClockTime::from_nseconds(i * 1_000_000_000 / fps))
    }

    #[test]
    fn frames_lost_in_the_middle_are_named_with_their_times() {
        // 120 frames at 30 fps with frames 40 to 54 lost.
        let mut t = Timeline::new(FrameRate::new(30, 1));
        for i in (0..40).chain(55..120) {
            t.push(at(i, 30));
        }
        assert_eq!(t.frames(), 105);
        assert_eq!(
            t.gaps(),
            [Gap {
                first_frame: 40,
                last_frame: 54,
                frames: 15,
                start: 1.333333333,
                end: 1.833333333,
            }]
        );
        assert_eq!(
            t.gaps()[0].to_string(),
            "frames 40 to 54 (15 frames, 1.333 s to 1.833 s) are missing (damaged?)"
        );
        // 1.5 frames at 30 fps.
        assert_eq!(t.slack().nseconds(), 50_000_000);
    }

    #[test]
    fn rounded_timestamps_and_variable_rates_are_no_gap() {
        // A millisecond time scale (frames 33 and 34 ms apart) and one frame lost.
        let mut t = Timeline::new(FrameRate::new(30, 1));
        for ms in [0, 33, 67, 100, 133, 200] {
            t.push(Some(gst::ClockTime::from_mseconds(ms)));
        }
        assert_eq!(t.gaps().len(), 1);
        assert_eq!(
            t.gaps()[0].to_string(),
            "frame 5 (1 frame, 0.167 s to 0.200 s) is missing (damaged?)"
        );
        // Without a rate nothing can be said missing; the slack follows the longest interval.
        let mut v = Timeline::new(None);
        for ms in [0, 10, 500, 520, 1500, 1510] {
            v.push(Some(gst::ClockTime::from_mseconds(ms)));
        }
        assert!(v.gaps().is_empty());
        assert_eq!(v.slack(), gst::ClockTime::from_mseconds(1470));
        assert_eq!(Timeline::new(None).slack(), MIN_SLACK);
        // Frames without timestamps, or going back, count and change nothing else.
        let mut n = Timeline::new(FrameRate::new(25, 1));
        n.push(None);
        n.push(at(10, 25));
        n.push(at(2, 25));
        n.push(at(3, 25));
        assert_eq!((n.frames(), n.gaps().len()), (4, 0));
    }
}
