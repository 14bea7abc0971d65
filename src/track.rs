//! Temporal post-processing of per-frame keypoints for video: One-Euro smoothing and the
//! linear interpolation of keypoints between two inferences (used by [`crate::stream`]).
//!
//! GStreamer-free so that the plugin, the CLI and offline tools share it.

use crate::detect::Keypoint;

/// One-Euro filter parameters (Casiez et al., CHI 2012). Cut-offs in Hz.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneEuroParams {
    /// Cut-off at zero speed: lower = smoother at rest, more lag.
    pub min_cutoff: f64,
    /// Speed coefficient: higher = less lag on fast motion.
    pub beta: f64,
    /// Cut-off of the derivative estimate.
    pub d_cutoff: f64,
}

impl Default for OneEuroParams {
    fn default() -> Self {
        Self {
            min_cutoff: 1.0,
            beta: 0.0,
            d_cutoff: 1.0,
        }
    }
}

fn alpha(cutoff: f64, dt: f64) -> f64 {
    let tau = 1.0 / (2.0 * std::f64::consts::PI * cutoff.max(1e-6));
    1.0 / (1.0 + tau / dt)
}

/// A One-Euro filter of one scalar signal.
#[derive(Clone, Debug, Default)]
pub struct OneEuro {
    last: Option<(f64, f64, f64)>, // (t, x_hat, dx_hat)
}

impl OneEuro {
    /// Filters sample `x` taken at time `t` seconds. Non-increasing time (a seek, a
    /// repeated timestamp) restarts the filter at `x`.
    pub fn filter(&mut self, x: f64, t: f64, p: &OneEuroParams) -> f64 {
        let Some((t0, x0, dx0)) = self.last else {
            self.last = Some((t, x, 0.0));
            return x;
        };
        let dt = t - t0;
        if dt.is_nan() || dt <= 0.0 || !x.is_finite() {
            self.last = Some((t, x, 0.0));
            return x;
        }
        let dx = (x - x0) / dt;
        let dx_hat = dx0 + alpha(p.d_cutoff, dt) * (dx - dx0);
        let cutoff = p.min_cutoff + p.beta * dx_hat.abs();
        let x_hat = x0 + alpha(cutoff, dt) * (x - x0);
        self.last = Some((t, x_hat, dx_hat));
        x_hat
    }

    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// One-Euro filters for the x and y of every keypoint id.
#[derive(Clone, Debug, Default)]
pub struct KeypointSmoother {
    filters: Vec<(OneEuro, OneEuro)>,
}

impl KeypointSmoother {
    /// Smooths positions in place (ids index the filters; scores are left alone).
    pub fn smooth(&mut self, kps: &mut [Keypoint], t: f64, p: &OneEuroParams) {
        for k in kps {
            if self.filters.len() <= k.id {
                self.filters.resize_with(k.id + 1, Default::default);
            }
            let (fx, fy) = &mut self.filters[k.id];
            k.x = fx.filter(k.x as f64, t, p) as f32;
            k.y = fy.filter(k.y as f64, t, p) as f32;
        }
    }

    pub fn reset(&mut self) {
        self.filters.clear();
    }
}

/// Keypoints `t` of the way from `a` to `b` (`t` in [0, 1]), matched by id; ids missing
/// from `b` keep `a`'s value. Scores are interpolated too.
pub fn interpolate(a: &[Keypoint], b: &[Keypoint], t: f32) -> Vec<Keypoint> {
    a.iter()
        .map(|ka| match b.iter().find(|kb| kb.id == ka.id) {
            Some(kb) => Keypoint {
                id: ka.id,
                x: ka.x + (kb.x - ka.x) * t,
                y: ka.y + (kb.y - ka.y) * t,
                score: ka.score + (kb.score - ka.score) * t,
            },
            None => *ka,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(id: usize, x: f32, y: f32) -> Keypoint {
        Keypoint {
            id,
            x,
            y,
            score: 1.0,
        }
    }

    #[test]
    fn one_euro_passes_constants_and_damps_jitter() {
        let p = OneEuroParams::default();
        let mut f = OneEuro::default();
        for i in 0..10 {
            assert_eq!(f.filter(0.5, i as f64 / 30.0, &p), 0.5);
        }
        // Alternating +-0.1 jitter around 0.5 comes out much smaller.
        let mut max_dev: f64 = 0.0;
        for i in 10..100 {
            let x = if i % 2 == 0 { 0.6 } else { 0.4 };
            let y = f.filter(x, i as f64 / 30.0, &p);
            max_dev = max_dev.max((y - 0.5).abs());
        }
        assert!(max_dev < 0.05, "{max_dev}");
    }

    #[test]
    fn one_euro_with_beta_follows_fast_motion() {
        let slow = OneEuroParams::default();
        let fast = OneEuroParams { beta: 10.0, ..slow };
        let (mut a, mut b) = (OneEuro::default(), OneEuro::default());
        let (mut ya, mut yb) = (0.0, 0.0);
        for i in 0..30 {
            let t = i as f64 / 30.0;
            ya = a.filter(t, t, &slow);
            yb = b.filter(t, t, &fast);
        }
        let target = 29.0 / 30.0;
        assert!((target - yb).abs() < (target - ya).abs());
        assert!((target - yb).abs() < 0.05, "{yb}");
    }

    #[test]
    fn one_euro_restarts_on_time_going_back() {
        let p = OneEuroParams::default();
        let mut f = OneEuro::default();
        f.filter(0.0, 1.0, &p);
        f.filter(0.0, 1.1, &p);
        assert_eq!(f.filter(0.9, 0.5, &p), 0.9);
    }

    #[test]
    fn smoother_keeps_ids_apart() {
        let p = OneEuroParams::default();
        let mut s = KeypointSmoother::default();
        let mut a = vec![kp(0, 0.1, 0.1), kp(3, 0.9, 0.9)];
        s.smooth(&mut a, 0.0, &p);
        assert_eq!(a, vec![kp(0, 0.1, 0.1), kp(3, 0.9, 0.9)]);
        let mut b = vec![kp(0, 0.2, 0.1), kp(3, 0.9, 0.9)];
        s.smooth(&mut b, 0.04, &p);
        assert!(b[0].x > 0.1 && b[0].x < 0.2);
        assert_eq!((b[1].x, b[1].y), (0.9, 0.9));
    }

    #[test]
    fn interpolation_is_linear_by_id() {
        let a = vec![kp(0, 0.0, 0.0), kp(1, 1.0, 1.0)];
        let b = vec![kp(1, 0.0, 0.5), kp(0, 1.0, 0.5)];
        let m = interpolate(&a, &b, 0.25);
        assert_eq!(m[0], kp(0, 0.25, 0.125));
        assert_eq!(m[1], kp(1, 0.75, 0.875));
        assert_eq!(interpolate(&a, &b, 0.0), a);
        assert_eq!(interpolate(&a, &[], 0.5), a);
    }
}
