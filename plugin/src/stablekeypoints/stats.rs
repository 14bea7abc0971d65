//! The inference element's read-only `stats` property.

use super::objects::Selection;
use stablekeypoints::stream::{self, StreamSettings, Verdict};
use std::time::Duration;

/// Counters behind the read-only `stats` property.
#[derive(Clone, Debug, Default)]
pub(super) struct Stats {
    pub processed: u64,
    pub inferred: u64,
    pub skipped_late: u64,
    /// Not due under `inference-interval`.
    pub skipped_interval: u64,
    pub objects_inferred: u64,
    pub objects_held: u64,
    pub objects_small: u64,
    pub objects_over_max: u64,
    pub rois_clipped: u64,
    pub rois_skipped: u64,
    pub inference_total: Duration,
    pub last_inference: Duration,
    pub warmup: Duration,
}

impl Stats {
    /// The latency the element adds with these timings (see
    /// [`stream::inference_latency`]): a batch's inference and the time a batch takes to
    /// fill, in a stream of `fps`.
    pub fn latency(&self, st: &StreamSettings, fps: Option<gst::Fraction>) -> gst::ClockTime {
        let frame = fps
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map(|fps| Duration::from_secs_f64(fps.denom() as f64 / fps.numer() as f64));
        clock(stream::inference_latency(
            self.warmup.max(self.mean_inference()),
            st.batch_size as u64,
            st.interval,
            st.batch_timeout,
            frame,
        ))
    }

    /// A batch of `frames` inferred in `elapsed`.
    pub fn inferred_batch(&mut self, frames: usize, elapsed: Duration) {
        self.inferred += frames as u64;
        self.inference_total += elapsed;
        self.last_inference = elapsed / frames.max(1) as u32;
    }

    /// A frame through the scheduler, with its `verdict`.
    pub fn scheduled(&mut self, verdict: Verdict) {
        self.processed += 1;
        match verdict {
            Verdict::Interval => self.skipped_interval += 1,
            Verdict::Late => self.skipped_late += 1,
            Verdict::Infer => {}
        }
    }

    /// What a frame's object selection left out.
    pub fn selected(&mut self, sel: &Selection) {
        self.objects_small += sel.small;
        self.objects_over_max += sel.over_max;
        self.rois_clipped += sel.clipped;
        self.rois_skipped += sel.skipped.len() as u64;
    }

    pub fn mean_inference(&self) -> Duration {
        if self.inferred == 0 {
            self.warmup
        } else {
            // Not `Duration / u32`: the count may exceed u32 (and would wrap to 0).
            Duration::from_secs_f64(self.inference_total.as_secs_f64() / self.inferred as f64)
        }
    }

    pub fn to_structure(&self) -> gst::Structure {
        let st = self;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        gst::Structure::builder("stablekeypoints-stats")
            .field("frames-processed", st.processed)
            .field("frames-inferred", st.inferred)
            .field("frames-skipped", st.skipped_late)
            .field("frames-interval-skipped", st.skipped_interval)
            .field("mean-inference-ms", ms(st.mean_inference()))
            .field("last-inference-ms", ms(st.last_inference))
            .field("warmup-ms", ms(st.warmup))
            .field("objects-inferred", st.objects_inferred)
            .field("objects-held", st.objects_held)
            .field("objects-small", st.objects_small)
            .field("objects-over-max", st.objects_over_max)
            .field("rois-clipped", st.rois_clipped)
            .field("rois-skipped", st.rois_skipped)
            .build()
    }
}

/// `d` as a clock time (saturating).
fn clock(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(
        u64::try_from(d.as_nanos()).map_or(gst::ClockTime::MAX.nseconds(), |n| {
            n.min(gst::ClockTime::MAX.nseconds())
        }),
    )
}
