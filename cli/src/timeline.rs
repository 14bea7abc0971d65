//! The decoded frames' timestamps as they reach the element: how many frames, and the
//! longest interval between two. [`crate::pipeline::run_video`] feeds it from a pad probe.

use gststablekeypoints::framerate::FrameRate;

/// What the timestamps of a stream's frames said so far.
#[derive(Debug)]
pub struct Timeline {
    rate: Option<FrameRate>,
    frames: u64,
    last: Option<gst::ClockTime>,
    longest: gst::ClockTime,
}

/// Decoding may end this much short of the declared end when nothing better is known.
const MIN_SLACK: gst::ClockTime = gst::ClockTime::from_mseconds(50);

impl Timeline {
    /// A stream of this nominal rate (`None`: variable or unusable).
    pub fn new(rate: Option<FrameRate>) -> Self {
        Self {
            rate,
            frames: 0,
            last: None,
            longest: gst::ClockTime::ZERO,
        }
    }

    /// The next frame, at stream time `t` (if it has a timestamp).
    pub fn push(&mut self, t: Option<gst::ClockTime>) {
        self.frames += 1;
        let Some(t) = t else { return };
        if let Some(prev) = self.last.filter(|&p| p < t) {
            self.longest = self.longest.max(t - prev);
        }
        self.last = Some(t);
    }

    pub fn frames(&self) -> u64 {
        self.frames
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u64, fps: u64) -> Option<gst::ClockTime> {
        Some(gst::ClockTime::from_nseconds(i * 1_000_000_000 / fps))
    }

    #[test]
    fn the_slack_is_a_frame_and_a_half_or_the_longest_interval_and_a_half() {
        // 1.5 frames at 30 fps.
        let mut t = Timeline::new(FrameRate::new(30, 1));
        for i in 0..10 {
            t.push(at(i, 30));
        }
        assert_eq!(t.frames(), 10);
        assert_eq!(t.slack().nseconds(), 50_000_000);
        // Without a rate: 1.5 times the longest interval between two frames.
        let mut v = Timeline::new(None);
        for ms in [0, 10, 500, 520, 1500, 1510] {
            v.push(Some(gst::ClockTime::from_mseconds(ms)));
        }
        assert_eq!(v.slack(), gst::ClockTime::from_mseconds(1470));
        assert_eq!(Timeline::new(None).slack(), MIN_SLACK);
        // Frames without timestamps, or going back, count and change nothing else.
        let mut n = Timeline::new(FrameRate::new(25, 1));
        n.push(None);
        n.push(at(10, 25));
        n.push(at(2, 25));
        n.push(at(3, 25));
        assert_eq!((n.frames(), n.slack().nseconds()), (4, 60_000_000));
    }
}
