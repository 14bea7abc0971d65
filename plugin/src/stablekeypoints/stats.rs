//! The inference element's read-only `stats` property.

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
