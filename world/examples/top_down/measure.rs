//! Top-down keypoints on clips of several figures, through the engine as the
//! `stablekeypoints` element runs them with `inference-region=roi-list`: each figure's box
//! (true, or jittered as a detector's would be) grown by the margin, squared, inferred with
//! the other figures of its frame in one batch; the pose file's regressor read in the view.
//! Scored against the world's true joints, and against the same figure rendered alone in the
//! same frame (same background, pose, place and box).

use skp_world::figure::{NUM_JOINTS, SKELETON};
use skp_world::people::{jitter_box, People, PeopleFrame};
use skp_world::rng::Rng;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::pose::Regressor;
use stablekeypoints::{CropMode, FrameRef, PixelFormat, Region};

/// A clip and how its boxes are made.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub seed: u64,
    pub figures: usize,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    /// Boxes moved and resized by up to this share of their size (0: the true boxes).
    pub jitter: f64,
    /// The element's `object-margin`.
    pub margin: f64,
    /// Every `step`-th frame is inferred.
    pub step: usize,
    /// Each figure's crop with the other figures' pixels black (a perfect instance mask).
    pub hide_others: bool,
}

impl Setup {
    /// `figures` figures over `frames` frames of 512x256 (seed 1), true boxes, margin 0.05,
    /// every frame inferred, the clip's own pixels.
    pub fn clip(figures: usize, frames: usize) -> Self {
        Self {
            seed: 1,
            figures,
            frames,
            width: 512,
            height: 256,
            jitter: 0.0,
            margin: 0.05,
            step: 1,
            hide_others: false,
        }
    }
}

/// One figure over the clip.
#[derive(Clone, Debug, Default)]
pub struct PersonScore {
    pub id: usize,
    /// Frames in which it was inferred.
    pub frames: usize,
    /// Its keypoints, and those nearer another figure's true skeleton than its own.
    pub keypoints: usize,
    /// Nearer another figure's skeleton than its own: in the clip, alone (the same
    /// figure's keypoints, with the others' skeletons where they are in the clip), and in
    /// the clip but not alone (assigned to another figure).
    pub nearer_another: usize,
    pub nearer_another_alone: usize,
    pub misassigned: usize,
    /// Mean error of the regressed joints (visible ones), in the clip and alone, pixels.
    pub error: f64,
    pub error_alone: f64,
}

impl PersonScore {
    pub fn own_share(&self) -> f64 {
        1.0 - self.misassigned as f64 / self.keypoints.max(1) as f64
    }
}

/// What a clip gave.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    pub people: Vec<PersonScore>,
    /// Share of the frames where two figures' true boxes overlap with IoU >= 0.3.
    pub overlapping: f64,
}

fn segment_distance(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p[0] - a[0] - t * dx).hypot(p[1] - a[1] - t * dy)
}

/// Distance from `p` to a figure's true skeleton (every bone, hidden or not).
fn skeleton_distance(p: [f32; 2], joints: &[[f32; 2]; NUM_JOINTS]) -> f32 {
    SKELETON
        .iter()
        .map(|&[a, b]| segment_distance(p, joints[a], joints[b]))
        .fold(f32::INFINITY, f32::min)
}

/// The box `[x0, y0, x1, y1)` as a region, moved and resized by up to `amount` of its size.
fn region(b: [usize; 4], amount: f64, rng: &mut Rng) -> Region {
    let (x, y) = (b[0] as f64, b[1] as f64);
    let [x, y, w, h] = jitter_box([x, y, b[2] as f64 - x, b[3] as f64 - y], amount, rng);
    Region { x, y, w, h }
}

/// Keypoints (pixels) of `regions` of `frame`, one batch; the regions are grown by `margin`.
fn keypoints(
    est: &mut Estimator,
    frame: &PeopleFrame,
    regions: &[(usize, Region)],
    margin: f64,
    key: u64,
) -> Vec<Vec<[f32; 2]>> {
    let f = FrameRef::packed(
        PixelFormat::Rgb,
        frame.width,
        frame.height,
        &frame.rgb,
        frame.width * 3,
    )
    .expect("a packed frame");
    // Each figure its own noise, the same in the clip and alone.
    let items: Vec<(usize, Region)> = regions.iter().map(|(_, r)| (0, r.grown(margin))).collect();
    let keys: Vec<u64> = regions
        .iter()
        .map(|&(id, _)| key * 1024 + id as u64)
        .collect();
    stablekeypoints::Item::regions(&[f], &items, &keys)
        .and_then(|i| est.detect(i))
        .expect("inference")
        .iter()
        .map(|d| {
            (0..d.keypoints.len())
                .map(|i| {
                    let (x, y) = d.pixel(i);
                    [x, y]
                })
                .collect()
        })
        .collect()
}

/// `frame` with every pixel that differs from `alone` (the other figures') black.
fn others_hidden(frame: &PeopleFrame, alone: &PeopleFrame) -> PeopleFrame {
    let rgb = frame
        .rgb
        .chunks_exact(3)
        .zip(alone.rgb.chunks_exact(3))
        .flat_map(|(c, a)| if c == a { [c[0], c[1], c[2]] } else { [0; 3] })
        .collect();
    PeopleFrame {
        rgb,
        ..frame.clone()
    }
}

/// Keypoints of every shown figure: one batch, or each in its own frame with the others
/// hidden.
fn keypoints_of_all(
    est: &mut Estimator,
    clip: &People,
    frame: &PeopleFrame,
    shown: &[(usize, Region)],
    s: &Setup,
    i: usize,
) -> Vec<Vec<[f32; 2]>> {
    if !s.hide_others {
        return keypoints(est, frame, shown, s.margin, i as u64);
    }
    shown
        .iter()
        .map(|&(id, r)| {
            let masked = others_hidden(frame, &clip.render(i, Some(id)));
            keypoints(est, &masked, &[(id, r)], s.margin, i as u64).remove(0)
        })
        .collect()
}

/// Joints (pixels) regressed from keypoints (pixels) in the view of `region`.
fn joints(
    reg: &Regressor,
    kp: &[[f32; 2]],
    region: Region,
    margin: f64,
    crop: CropMode,
) -> Vec<[f64; 2]> {
    let v = region.grown(margin).squared(crop);
    let in_view: Vec<[f64; 2]> = kp
        .iter()
        .map(|p| [(p[0] as f64 - v.x) / v.w, (p[1] as f64 - v.y) / v.h])
        .collect();
    reg.predict(&in_view)
        .into_iter()
        .map(|[x, y]| [v.x + x * v.w, v.y + y * v.h])
        .collect()
}

fn joint_error(
    pred: &[[f64; 2]],
    truth: &[[f32; 2]; NUM_JOINTS],
    visible: &[bool; NUM_JOINTS],
) -> (f64, usize) {
    let mut e = (0.0, 0);
    for j in (0..NUM_JOINTS).filter(|&j| visible[j]) {
        e.0 += (pred[j][0] - truth[j][0] as f64).hypot(pred[j][1] - truth[j][1] as f64);
        e.1 += 1;
    }
    e
}

/// Every figure of the clip `s`, scored (figures smaller than `min_side` pixels skipped, as
/// the element's `min-object-size`); without a regressor the joint errors are NaN.
pub fn measure(est: &mut Estimator, reg: Option<&Regressor>, s: &Setup, min_side: usize) -> Scores {
    let clip = People::new(s.seed, s.figures, s.frames, 15.0, s.width, s.height);
    let crop = est.crop();
    let mut people: Vec<PersonScore> = (0..s.figures)
        .map(|id| PersonScore {
            id,
            ..Default::default()
        })
        .collect();
    let mut sums = vec![[(0.0f64, 0usize); 2]; s.figures];
    let mut overlapping = 0;
    let mut counted = 0;
    for i in (0..s.frames).step_by(s.step.max(1)) {
        counted += 1;
        let frame = clip.render(i, None);
        if skp_world::people::overlapping(&frame, 0.3) {
            overlapping += 1;
        }
        let mut rng = Rng::stream(s.seed ^ 0x6a69_7474, i as u64);
        let shown: Vec<(usize, Region)> = frame
            .people
            .iter()
            .filter_map(|p| {
                let b = p.bbox?;
                (b[2] - b[0] >= min_side && b[3] - b[1] >= min_side)
                    .then(|| (p.id, region(b, s.jitter, &mut rng)))
            })
            .collect();
        if shown.is_empty() {
            continue;
        }
        let found = keypoints_of_all(est, &clip, &frame, &shown, s, i);
        for ((id, r), kp) in shown.iter().zip(&found) {
            let me = frame.people.iter().find(|p| p.id == *id).expect("drawn");
            let score = &mut people[*id];
            score.frames += 1;
            if let Some(reg) = reg {
                let (e, n) = joint_error(
                    &joints(reg, kp, *r, s.margin, crop),
                    &me.joints,
                    &me.visible,
                );
                sums[*id][0].0 += e;
                sums[*id][0].1 += n;
            }
            // The same figure alone in the same frame, through the same box.
            let alone = clip.render(i, Some(*id));
            let kp_alone = keypoints(est, &alone, &[(*id, *r)], s.margin, i as u64).remove(0);
            let me_alone = &alone.people[0];
            // A keypoint nearer another figure's true skeleton than its own: counted as
            // that figure's when the same keypoint of the figure alone was not (where bodies
            // cross, a keypoint on its own body can be nearer a limb of the other).
            let elsewhere = |p: [f32; 2]| {
                let own = skeleton_distance(p, &me.joints);
                frame
                    .people
                    .iter()
                    .filter(|o| o.id != *id && o.bbox.is_some())
                    .any(|o| skeleton_distance(p, &o.joints) < own)
            };
            for (&p, &q) in kp.iter().zip(&kp_alone) {
                score.keypoints += 1;
                let (clip, alone) = (elsewhere(p), elsewhere(q));
                score.nearer_another += clip as usize;
                score.nearer_another_alone += alone as usize;
                score.misassigned += (clip && !alone) as usize;
            }
            // Over the joints scored in the clip (those no other figure hides).
            if let Some(reg) = reg {
                let (e, n) = joint_error(
                    &joints(reg, &kp_alone, *r, s.margin, crop),
                    &me_alone.joints,
                    &me.visible,
                );
                sums[*id][1].0 += e;
                sums[*id][1].1 += n;
            }
        }
    }
    for (p, [m, a]) in people.iter_mut().zip(sums) {
        let mean = |(sum, n): (f64, usize)| {
            if reg.is_some() {
                sum / n.max(1) as f64
            } else {
                f64::NAN
            }
        };
        p.error = mean(m);
        p.error_alone = mean(a);
    }
    Scores {
        people,
        overlapping: overlapping as f64 / counted.max(1) as f64,
    }
}
