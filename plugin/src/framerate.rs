//! A stream's nominal frame rate, when it has one that can be trusted: what turns a timestamp
//! into the source's frame index and says how far apart frames should be.
//!
//! Variable-rate streams (caps `framerate=0/1`, from phones and screen recorders) have none,
//! and neither do absurd rates (above [`MAX_FPS`](crate::framerate::MAX_FPS): a container's
//! time scale taken for a rate, a broken header), which would make every frame look like
//! many.

/// Rates above this many frames per second are not taken as a frame rate.
pub const MAX_FPS: u64 = 1000;

/// A usable nominal frame rate: `num / den` frames per second, positive, at most
/// [`MAX_FPS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    num: u64,
    den: u64,
}

const NS: u128 = 1_000_000_000;

impl FrameRate {
    /// `num / den` frames per second, or `None` for a variable (0/1), negative or absurd rate.
    pub fn new(num: i32, den: i32) -> Option<Self> {
        let (num, den) = (u64::try_from(num).ok()?, u64::try_from(den).ok()?);
        (num > 0 && den > 0 && num <= MAX_FPS * den).then_some(Self { num, den })
    }

    /// The `framerate` of video caps, when usable.
    pub fn of_caps(caps: &gst::CapsRef) -> Option<Self> {
        let f = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
        Self::new(f.numer(), f.denom())
    }

    /// One frame's duration (nearest nanosecond).
    pub fn frame_duration(&self) -> gst::ClockTime {
        self.time_of(1)
    }

    /// When frame `index` starts (nearest nanosecond).
    pub fn time_of(&self, index: u64) -> gst::ClockTime {
        let (num, den) = (self.num as u128, self.den as u128);
        let ns = (index as u128 * den * NS + num / 2) / num;
        gst::ClockTime::from_nseconds(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The index of the frame at `t` (nearest: timestamps are rounded to nanoseconds, and a
    /// muxer may round them to its time scale).
    pub fn index_at(&self, t: gst::ClockTime) -> u64 {
        let (num, den) = (self.num as u128, self.den as u128);
        let unit = den * NS;
        u64::try_from((t.nseconds() as u128 * num + unit / 2) / unit).unwrap_or(u64::MAX)
    }
}

/// The source's frame index of each frame, from its timestamp: the nearest frame of the
/// rate, so frames lost upstream leave their indices unused. Never repeats or goes back (a
/// frame whose timestamp rounds to an index already given gets the next one); without a
/// rate or a timestamp, the next index.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceIndex {
    last: Option<u64>,
}

impl SourceIndex {
    /// The index of the frame at stream time `t` of a stream of `rate`.
    pub fn next(&mut self, rate: Option<FrameRate>, t: Option<gst::ClockTime>) -> u64 {
        let next = self.last.map_or(0, |l| l.saturating_add(1));
        let index = match (rate, t) {
            (Some(r), Some(t)) => r.index_at(t).max(next),
            _ => next,
        };
        self.last = Some(index);
        index
    }

    /// A new stream (after a flush): the next frame's index comes from its timestamp alone.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(v)
    }

    #[test]
    fn variable_and_absurd_rates_are_no_rate() {
        gst::init().unwrap();
        assert_eq!(FrameRate::new(0, 1), None, "variable rate");
        assert_eq!(FrameRate::new(-30, 1), None);
        assert_eq!(FrameRate::new(30, 0), None);
        assert_eq!(FrameRate::new(90_000, 1), None, "a time scale");
        assert_eq!(FrameRate::new(1001, 1), None);
        assert!(FrameRate::new(1000, 1).is_some());
        assert!(FrameRate::new(2001, 2).is_none());
        assert!(FrameRate::new(1, 3600).is_some(), "one frame an hour");
        let caps = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(0, 1))
            .build();
        assert_eq!(FrameRate::of_caps(&caps), None);
        let caps = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(30000, 1001))
            .build();
        assert_eq!(FrameRate::of_caps(&caps), FrameRate::new(30000, 1001));
        assert_eq!(
            FrameRate::of_caps(&gst::Caps::new_empty_simple("video/x-raw")),
            None
        );
    }

    #[test]
    fn times_and_indices_of_frames() {
        // Worked by hand: 30 fps frames are 33 333 333.3 ns apart; NTSC's 29.97 fps frames
        // 33 366 666.6 ns.
        let r30 = FrameRate::new(30, 1).unwrap();
        assert_eq!(r30.frame_duration().nseconds(), 33_333_333);
        assert_eq!(r30.time_of(40).nseconds(), 1_333_333_333);
        assert_eq!(r30.time_of(55).nseconds(), 1_833_333_333);
        assert_eq!(
            r30.index_at(gst::ClockTime::from_nseconds(1_333_333_333)),
            40
        );
        // A muxer's millisecond time scale: 1.333 s is still frame 40, 1.350 s frame 41.
        assert_eq!(r30.index_at(ms(1333)), 40);
        assert_eq!(r30.index_at(ms(1350)), 41);
        assert_eq!(r30.index_at(gst::ClockTime::ZERO), 0);
        let ntsc = FrameRate::new(30000, 1001).unwrap();
        assert_eq!(ntsc.frame_duration().nseconds(), 33_366_667);
        assert_eq!(ntsc.time_of(30_000).nseconds(), 1_001_000_000_000);
        assert_eq!(ntsc.index_at(ms(1_001_000)), 30_000);
        for i in [0, 1, 7, 1000, 123_456] {
            assert_eq!(ntsc.index_at(ntsc.time_of(i)), i);
        }
        // No overflow at the far end of the clock.
        assert_eq!(
            FrameRate::new(1000, 1)
                .unwrap()
                .index_at(gst::ClockTime::MAX),
            18_446_744_073_710
        );
    }

    #[test]
    fn source_indices_skip_lost_frames_and_never_repeat() {
        let r = FrameRate::new(25, 1);
        let mut s = SourceIndex::default();
        let at = |s: &mut SourceIndex, t: Option<u64>| s.next(r, t.map(ms));
        // Frames 0, 1, 2, then 3 to 5 lost, then 6, 7.
        let got: Vec<u64> = [0, 40, 80, 240, 280]
            .into_iter()
            .map(|t| at(&mut s, Some(t)))
            .collect();
        assert_eq!(got, [0, 1, 2, 6, 7]);
        // A timestamp that rounds back onto 7, or goes back, or is missing: the next index.
        assert_eq!(at(&mut s, Some(285)), 8);
        assert_eq!(at(&mut s, Some(100)), 9);
        assert_eq!(at(&mut s, None), 10);
        // After a flush (a seek back), the timestamp alone.
        s.reset();
        assert_eq!(at(&mut s, Some(80)), 2);
        // Without a rate: counted.
        let mut v = SourceIndex::default();
        assert_eq!(
            [0, 500, 2000].map(|t| v.next(None, Some(ms(t)))),
            [0, 1, 2],
            "a variable-rate stream is counted"
        );
        // A stream that does not start at 0 keeps its source indices.
        let mut late = SourceIndex::default();
        assert_eq!(late.next(r, Some(ms(400))), 10);
    }
}
