//! Clips of 1 to 4 figures walking across a wide frame: each its own [`Motion`] (body and
//! pose sequence; the background is the first one's), about 0.8 of the frame high, nearer
//! figures a little larger and lower. They move horizontally as a loose group at slightly
//! different speeds, so that they overtake each other (the nearer one drawn over the
//! farther: joints it covers are not visible) and enter and leave the frame, and they are
//! together in the middle of the clip.
//!
//! Walk: figure `p`'s pelvis is at `x_p(t) = c + o_p + dir * v_p * (t - D / 2)` (units of the
//! frame height, `c` the frame's centre, `D` the clip's length, `o_p` within 0.08 of 0,
//! `v_p` within 12% of the group's speed `v = max(0.5, (W/H + 0.4) / D)` per second),
//! wrapped so that a figure that leaves on one side comes back on the other (the wrap
//! happens wholly outside the frame). The group crosses the frame once in a short clip
//! (at 60 frames of 15 fps it starts and ends partly outside).
//!
//! Also [`jitter`]: boxes moved and resized as a real detector's would be.

use crate::figure::{project, Dof, Pose, Projected, NUM_JOINTS, NUM_PARTS};
use crate::motion::Motion;
use crate::render::Canvas;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Most figures in a clip.
pub const MAX_FIGURES: usize = 4;
/// How far outside the frame (units of its height) a figure goes before it wraps round.
const WRAP_MARGIN: f32 = 0.6;

#[derive(Clone, Debug)]
struct Walker {
    motion: Motion,
    /// Pelvis x at time 0 before wrapping (units of the frame height).
    x0: f32,
    /// Signed speed, units of the frame height per second.
    speed: f32,
    scale: f32,
    y: f32,
    /// Larger is nearer: drawn later.
    depth: f32,
}

/// A clip of several figures.
#[derive(Clone, Debug)]
pub struct People {
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    walkers: Vec<Walker>,
    /// The background painted once.
    painted: Vec<f32>,
}

/// One figure in one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// The figure's index in the clip.
    pub id: usize,
    /// Pixel box `[x0, y0, x1, y1)` of the figure's pixels (also those a nearer figure
    /// covers), clipped to the frame; `None` when no pixel of it is in the frame.
    pub bbox: Option<[usize; 4]>,
    /// Joint positions in pixels (may lie outside the frame).
    pub joints: [[f32; 2]; NUM_JOINTS],
    pub visible: [bool; NUM_JOINTS],
}

/// One rendered frame.
#[derive(Clone, Debug, PartialEq)]
pub struct PeopleFrame {
    pub width: usize,
    pub height: usize,
    /// RGB8, row-major.
    pub rgb: Vec<u8>,
    /// Every figure drawn, by id.
    pub people: Vec<Person>,
}

impl People {
    /// The clip `seed` of `figures` figures (1 to [`MAX_FIGURES`]), `frames` frames long.
    pub fn new(
        seed: u64,
        figures: usize,
        frames: usize,
        fps: f32,
        width: usize,
        height: usize,
    ) -> Self {
        let figures = figures.clamp(1, MAX_FIGURES);
        let seconds = frames as f32 / fps;
        let mut rng = Rng::stream(seed, 0x7065_6f70_6c65);
        let aspect = width as f32 / height as f32;
        let dir = if rng.chance(0.5) { 1.0 } else { -1.0 };
        let v = (0.5f32).max((aspect + 0.4) / seconds.max(1e-3));
        // Speeds spread evenly over +-12%, depths over [0, 1], each in a random order.
        let mut order: Vec<usize> = (0..figures).collect();
        let mut depths: Vec<usize> = (0..figures).collect();
        for list in [&mut order, &mut depths] {
            for i in (1..list.len()).rev() {
                list.swap(i, rng.below(i + 1));
            }
        }
        let spread = |k: usize| {
            if figures == 1 {
                0.0
            } else {
                k as f32 / (figures - 1) as f32
            }
        };
        let walkers = (0..figures)
            .map(|p| {
                let motion = Motion::new(Rng::stream(seed, p as u64).next_u64(), seconds);
                let depth = spread(depths[p]);
                let x_mid = 0.5 * aspect + rng.range(-0.08, 0.08);
                let speed = dir * v * (0.88 + 0.24 * spread(order[p]) + rng.range(-0.02, 0.02));
                Walker {
                    motion,
                    x0: x_mid - speed * 0.5 * seconds,
                    speed,
                    scale: 0.74 + 0.1 * depth,
                    y: 0.5 + 0.04 * depth,
                    depth,
                }
            })
            .collect::<Vec<Walker>>();
        let painted = walkers[0].motion.background.paint(width, height);
        People {
            width,
            height,
            fps,
            walkers,
            painted,
        }
    }

    pub fn figures(&self) -> usize {
        self.walkers.len()
    }

    fn pose(&self, p: usize, t: f32) -> Pose {
        let w = &self.walkers[p];
        let mut pose = w.motion.pose_at(t);
        let span = self.width as f32 / self.height as f32 + 2.0 * WRAP_MARGIN;
        let x = (w.x0 + w.speed * t + WRAP_MARGIN).rem_euclid(span) - WRAP_MARGIN;
        pose.set(Dof::Scale, w.scale);
        pose.set(Dof::X, x);
        pose.set(Dof::Y, w.y);
        pose
    }

    /// Frame `index` with the figures `only` names (all: `None`), far to near.
    pub fn render(&self, index: usize, only: Option<usize>) -> PeopleFrame {
        let t = index as f32 / self.fps;
        let mut canvas = Canvas::new(self.painted.clone(), self.width, self.height);
        let mut drawn_order: Vec<usize> = (0..self.figures())
            .filter(|&p| only.is_none_or(|o| o == p))
            .collect();
        drawn_order.sort_by(|&a, &b| {
            self.walkers[a]
                .depth
                .total_cmp(&self.walkers[b].depth)
                .then(a.cmp(&b))
        });
        let all = [true; NUM_PARTS];
        let mut drawn: Vec<(usize, Projected, Option<[usize; 4]>)> = Vec::new();
        for p in drawn_order {
            let projected = project(&self.walkers[p].motion.body, &self.pose(p, t));
            let bbox = canvas.draw(p as u8, &projected, &all);
            drawn.push((p, projected, bbox));
        }
        let mut people: Vec<Person> = drawn
            .iter()
            .map(|(p, projected, bbox)| {
                let (joints, visible) = canvas.joints(*p as u8, projected, &all);
                Person {
                    id: *p,
                    bbox: *bbox,
                    joints,
                    visible,
                }
            })
            .collect();
        people.sort_by_key(|p| p.id);
        PeopleFrame {
            width: self.width,
            height: self.height,
            rgb: canvas.rgb(),
            people,
        }
    }
}

/// Intersection over union of two pixel boxes `[x0, y0, x1, y1)`.
pub fn iou(a: [usize; 4], b: [usize; 4]) -> f64 {
    let area = |r: [usize; 4]| (r[2].saturating_sub(r[0]) * r[3].saturating_sub(r[1])) as f64;
    let i = [
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ];
    let inter = area(i);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Whether some pair of the frame's figures has boxes with an IoU of at least `threshold`.
pub fn overlapping(frame: &PeopleFrame, threshold: f64) -> bool {
    let boxes: Vec<[usize; 4]> = frame.people.iter().filter_map(|p| p.bbox).collect();
    boxes
        .iter()
        .enumerate()
        .any(|(i, a)| boxes[i + 1..].iter().any(|b| iou(*a, *b) >= threshold))
}

/// A `people.jsonl` line.
#[derive(Serialize)]
pub struct PeopleLine {
    pub frame: usize,
    pub timestamp: f64,
    pub width: usize,
    pub height: usize,
    pub people: Vec<PersonLine>,
}

#[derive(Serialize)]
pub struct PersonLine {
    pub id: usize,
    #[serde(rename = "box")]
    pub bbox: [usize; 4],
    pub joints: Vec<[f32; 2]>,
    pub visible: Vec<bool>,
}

/// A boxes line (`stablekeypoints::boxes` JSON lines), as `skp-world` writes and
/// [`jitter`] reads it: the fields it knows in order, any others kept after them.
#[derive(Serialize, Deserialize)]
pub struct BoxesLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    pub objects: Vec<BoxObject>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
pub struct BoxObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl PeopleFrame {
    /// The frame's `people.jsonl` and `boxes.jsonl` lines (figures with a pixel in it).
    pub fn lines(&self, index: usize, fps: f32) -> (PeopleLine, BoxesLine) {
        let timestamp = index as f64 / fps as f64;
        let inside: Vec<(&Person, [usize; 4])> = self
            .people
            .iter()
            .filter_map(|p| p.bbox.map(|b| (p, [b[0], b[1], b[2] - b[0], b[3] - b[1]])))
            .collect();
        let people = PeopleLine {
            frame: index,
            timestamp,
            width: self.width,
            height: self.height,
            people: inside
                .iter()
                .map(|(p, b)| PersonLine {
                    id: p.id,
                    bbox: *b,
                    joints: p
                        .joints
                        .iter()
                        .map(|j| j.map(|v| (v * 1000.0).round() / 1000.0))
                        .collect(),
                    visible: p.visible.to_vec(),
                })
                .collect(),
        };
        let boxes = BoxesLine {
            frame: Some(index as u64),
            timestamp: Some(timestamp),
            width: Some(self.width as u64),
            height: Some(self.height as u64),
            objects: inside
                .iter()
                .map(|(p, b)| BoxObject {
                    id: Some(p.id as u64),
                    label: Some("person".into()),
                    bbox: b.map(|v| v as f64),
                    confidence: None,
                    rest: Default::default(),
                })
                .collect(),
            rest: Default::default(),
        };
        (people, boxes)
    }
}

/// A box `[x, y, w, h]` moved and resized as [`jitter`] moves each box, drawing from `rng`.
pub fn jitter_box([x, y, w, h]: [f64; 4], amount: f64, rng: &mut Rng) -> [f64; 4] {
    let mut u = || (rng.uniform() as f64 * 2.0 - 1.0) * amount;
    let (cx, cy) = (x + 0.5 * w + u() * w, y + 0.5 * h + u() * h);
    let (w2, h2) = (w * (1.0 + u()), h * (1.0 + u()));
    [cx - 0.5 * w2, cy - 0.5 * h2, w2, h2]
}

/// Each box of a boxes JSON-lines text moved and resized as a detector's would be: its
/// centre by up to `amount` of its width and height, each side scaled by a factor in
/// `[1 - amount, 1 + amount]`, all four independent and uniform (stream `seed`, one per
/// line). Blank lines are dropped; the records keep their other fields. Errors name the line.
pub fn jitter(text: &str, amount: f64, seed: u64) -> Result<String, String> {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut rec: BoxesLine =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let mut rng = Rng::stream(seed, i as u64);
        for o in &mut rec.objects {
            o.bbox = jitter_box(o.bbox, amount, &mut rng);
        }
        out.push_str(&serde_json::to_string(&rec).map_err(|e| format!("line {}: {e}", i + 1))?);
        out.push('\n');
    }
    Ok(out)
}
