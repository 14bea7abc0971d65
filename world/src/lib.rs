//! The figure world: a procedurally rendered articulated figure with exact 2D joints and
//! visibility, the miniature world in which the `models/figure` diffusion model was trained
//! and on which the keypoint method is measured against ground truth. No GStreamer here:
//! clips are written as PNG frames that `gst-launch-1.0` encodes.

pub mod figure;
pub mod io;
pub mod motion;
pub mod people;
pub mod render;
pub mod rng;
pub mod score;

use figure::{place, Body, Dof, Pose, NUM_PARTS};
use render::{render, Background, Render};
use rng::Rng;

/// How random scenes are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SceneOptions {
    /// Share of scenes in which parts are left out (training renders, so that the captions
    /// carry information); 0 for held-out renders.
    pub drop_fraction: f32,
    /// In such a scene, the chance of each part being left out.
    pub drop_rate: f32,
}

impl SceneOptions {
    /// Whole figures only.
    pub const HELD_OUT: SceneOptions = SceneOptions {
        drop_fraction: 0.0,
        drop_rate: 0.0,
    };
    /// The model's training renders.
    pub const TRAINING: SceneOptions = SceneOptions {
        drop_fraction: 0.5,
        drop_rate: 0.25,
    };
}

/// A random figure in a random pose over a random background.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub body: Body,
    pub pose: Pose,
    pub background: Background,
    pub drawn: [bool; NUM_PARTS],
}

impl Scene {
    /// Scene `index` of the set `seed`: a pure function of both.
    pub fn sample(seed: u64, index: u64, opts: SceneOptions) -> Self {
        let mut rng = Rng::stream(seed, index);
        let body = Body::sample(&mut rng, 0.06);
        // Mostly towards the camera, sometimes any way round.
        let yaw = if rng.chance(0.3) { 180.0 } else { 75.0 };
        let mut pose = Pose::random_articulation(&mut rng, 1.0, yaw);
        let overflow = if rng.chance(0.2) { 0.15 } else { 0.0 };
        place(&body, &mut pose, &mut rng, (0.5, 0.95), overflow);
        let background = Background::sample(&mut rng);
        let mut drawn = [true; NUM_PARTS];
        if rng.chance(opts.drop_fraction) {
            for d in drawn.iter_mut() {
                *d = !rng.chance(opts.drop_rate);
            }
            if !drawn.iter().any(|&d| d) {
                drawn[rng.below(NUM_PARTS)] = true;
            }
        }
        debug_assert!(pose.get(Dof::Scale) > 0.0);
        Scene {
            body,
            pose,
            background,
            drawn,
        }
    }

    pub fn render(&self, size: usize) -> Render {
        render(&self.body, &self.pose, &self.background, size, &self.drawn)
    }
}
