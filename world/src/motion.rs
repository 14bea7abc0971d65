//! Slow Tai-Chi-like motion: random key poses a few seconds apart (moderate joint angles, a
//! heading that drifts), joined by Catmull-Rom splines in every DOF.

use crate::figure::{place, Body, Dof, Pose, NUM_DOFS};
use crate::render::Background;
use crate::rng::Rng;

/// A clip's figure, background and key poses.
#[derive(Clone, Debug)]
pub struct Motion {
    pub body: Body,
    pub background: Background,
    keys: Vec<Pose>,
    key_seconds: f32,
}

impl Motion {
    /// A motion of at least `seconds` from `seed`.
    pub fn new(seed: u64, seconds: f32) -> Self {
        let mut rng = Rng::stream(seed, 0x6d6f_7469_6f6e);
        let body = Body::sample(&mut rng, 0.05);
        let background = Background::sample(&mut rng);
        let key_seconds = rng.range(2.0, 3.0);
        let n = (seconds.max(0.0) / key_seconds).ceil() as usize + 3;
        let scale = rng.range(0.66, 0.78);
        let mut heading = rng.range(-40.0, 40.0);
        let keys = (0..n)
            .map(|_| {
                let mut p = Pose::random_articulation(&mut rng, 0.6, 0.0);
                heading = (heading + rng.range(-45.0, 45.0)).clamp(-110.0, 110.0);
                p.set(Dof::Yaw, heading);
                place(&body, &mut p, &mut rng, (scale, scale), 0.0);
                p
            })
            .collect();
        Motion {
            body,
            background,
            keys,
            key_seconds,
        }
    }

    /// The pose at `t` seconds (C1-continuous; clamped to the joint ranges).
    pub fn pose_at(&self, t: f32) -> Pose {
        let u = (t.max(0.0) / self.key_seconds).min((self.keys.len() - 3) as f32);
        let i = (u.floor() as usize).min(self.keys.len() - 4);
        let f = u - i as f32;
        let (p0, p1, p2, p3) = (
            &self.keys[i],
            &self.keys[i + 1],
            &self.keys[i + 2],
            &self.keys[i + 3],
        );
        let mut out = [0.0f32; NUM_DOFS];
        for (d, o) in out.iter_mut().enumerate() {
            let (a, b, c, e) = (p0.0[d], p1.0[d], p2.0[d], p3.0[d]);
            // Catmull-Rom between b and c.
            *o = 0.5
                * (2.0 * b
                    + (c - a) * f
                    + (2.0 * a - 5.0 * b + 4.0 * c - e) * f * f
                    + (3.0 * b - a - 3.0 * c + e) * f * f * f);
        }
        let mut p = Pose(out);
        p.clamp();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::project;

    #[test]
    fn motion_is_smooth_and_passes_through_its_keys() {
        let m = Motion::new(4, 20.0);
        assert_eq!(m.pose_at(m.key_seconds).0, {
            let mut k = m.keys[2].clone();
            k.clamp();
            k.0
        });
        let fps = 15.0;
        let mut prev = project(&m.body, &m.pose_at(0.0)).joints;
        let mut max_step: f32 = 0.0;
        for f in 1..300 {
            let j = project(&m.body, &m.pose_at(f as f32 / fps)).joints;
            for (a, b) in j.iter().zip(&prev) {
                max_step = max_step.max(((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt());
            }
            prev = j;
        }
        // Slow: no joint moves more than 2.5% of the image between frames, but it moves.
        assert!(max_step < 0.025 && max_step > 0.002, "{max_step}");
        // Deterministic.
        assert_eq!(Motion::new(4, 20.0).pose_at(3.3), m.pose_at(3.3));
    }
}
