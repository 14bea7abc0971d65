//! Rasteriser: a desaturated background, then the parts far to near as anti-aliased
//! capsules and rounded polygons (coverage from the signed distance), with a part-id buffer
//! that gives each joint's visibility and each part's visible area.

use crate::figure::{
    project, Body, Pose, Projected, Shape, JOINT_PARTS, NUM_JOINTS, NUM_PARTS, PART_COLOURS,
};
use crate::rng::Rng;

/// Id-buffer value of pixels no part covers.
pub const BACKGROUND: u8 = 255;

/// A part counts as present when at least this fraction of the image shows it (4 pixels at
/// 128x128).
pub const MIN_PRESENT_FRACTION: f32 = 4.0 / (128.0 * 128.0);

/// A procedural background: vertical gradient, optional floor, soft rectangles, pixel noise.
/// All colours have low saturation so that the parts' hues stand out.
#[derive(Clone, Debug, PartialEq)]
pub struct Background {
    top: [f32; 3],
    bottom: [f32; 3],
    /// Horizon height (fraction of the side) and the floor's near and far colours.
    floor: Option<(f32, [f32; 3], [f32; 3])>,
    /// `[x0, y0, x1, y1]`, colour, opacity.
    rects: Vec<([f32; 4], [f32; 3], f32)>,
    noise: f32,
    noise_seed: u64,
}

fn dull_colour(rng: &mut Rng, lo: f32, hi: f32) -> [f32; 3] {
    let g = rng.range(lo, hi);
    let sat = rng.range(0.0, 0.12);
    let hue = rng.range(0.0, std::f32::consts::TAU);
    let third = std::f32::consts::TAU / 3.0;
    [
        (g + sat * hue.cos()).clamp(0.0, 1.0),
        (g + sat * (hue - third).cos()).clamp(0.0, 1.0),
        (g + sat * (hue + third).cos()).clamp(0.0, 1.0),
    ]
}

impl Background {
    pub fn sample(rng: &mut Rng) -> Self {
        let top = dull_colour(rng, 0.25, 0.9);
        let bottom = dull_colour(rng, 0.2, 0.85);
        let floor = rng.chance(0.7).then(|| {
            (
                rng.range(0.5, 0.85),
                dull_colour(rng, 0.15, 0.7),
                dull_colour(rng, 0.25, 0.8),
            )
        });
        let rects = (0..rng.below(5))
            .map(|_| {
                let (x, y) = (rng.range(-0.2, 1.0), rng.range(-0.2, 0.9));
                let (w, h) = (rng.range(0.05, 0.5), rng.range(0.05, 0.6));
                (
                    [x, y, x + w, y + h],
                    dull_colour(rng, 0.15, 0.95),
                    rng.range(0.3, 0.9),
                )
            })
            .collect();
        Background {
            top,
            bottom,
            floor,
            rects,
            noise: rng.range(0.0, 0.025),
            noise_seed: rng.next_u64(),
        }
    }

    /// Linear RGB in [0, 1], `[width * height * 3]`, row-major: the background stretched
    /// to a `width` x `height` image (a `size` x `size` render paints it at `size`, `size`).
    pub fn paint(&self, width: usize, height: usize) -> Vec<f32> {
        let mut img = vec![0.0f32; width * height * 3];
        let (inv_w, inv_h) = (1.0 / width as f32, 1.0 / height as f32);
        let lerp = |a: [f32; 3], b: [f32; 3], t: f32| {
            [
                a[0] + (b[0] - a[0]) * t,
                a[1] + (b[1] - a[1]) * t,
                a[2] + (b[2] - a[2]) * t,
            ]
        };
        let (fw, fh) = (width as f32, height as f32);
        for y in 0..height {
            let v = (y as f32 + 0.5) * inv_h;
            let row = match self.floor {
                Some((h, near, far)) if v >= h => lerp(far, near, (v - h) / (1.0 - h)),
                _ => lerp(self.top, self.bottom, v),
            };
            for x in 0..width {
                let u = (x as f32 + 0.5) * inv_w;
                let mut c = row;
                for (r, col, a) in &self.rects {
                    // Soft edges, about one pixel wide at any size.
                    let d = ((r[0] - u) * fw)
                        .max((u - r[2]) * fw)
                        .max((r[1] - v) * fh)
                        .max((v - r[3]) * fh);
                    let a = a * (0.5 - d).clamp(0.0, 1.0);
                    c = lerp(c, *col, a);
                }
                let n = if self.noise > 0.0 {
                    let mut h = Rng::stream(self.noise_seed, (y * width + x) as u64);
                    self.noise * (h.uniform() * 2.0 - 1.0)
                } else {
                    0.0
                };
                let p = &mut img[(y * width + x) * 3..][..3];
                for k in 0..3 {
                    p[k] = c[k] + n;
                }
            }
        }
        img
    }
}

/// One rendered image with its exact annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct Render {
    pub size: usize,
    /// RGB8, row-major `[size, size, 3]`.
    pub rgb: Vec<u8>,
    /// Part drawn on top at each pixel (coverage at least one half), or [`BACKGROUND`].
    pub ids: Vec<u8>,
    /// Joint positions in pixels (origin top-left corner of the image; pixel centres at +0.5).
    pub joints: [[f32; 2]; NUM_JOINTS],
    /// A joint is visible when it lies in the image and a part it belongs to is on top there.
    pub visible: [bool; NUM_JOINTS],
    /// Pixels of the id buffer per part.
    pub part_pixels: [u32; NUM_PARTS],
    /// A part is present when drawn and at least [`MIN_PRESENT_FRACTION`] of the image shows it.
    pub present: [bool; NUM_PARTS],
}

fn seg_dist(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (bx, by) = (b[0] - a[0], b[1] - a[1]);
    let (px, py) = (p[0] - a[0], p[1] - a[1]);
    let len2 = bx * bx + by * by;
    let t = if len2 > 0.0 {
        ((px * bx + py * by) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((px - t * bx).powi(2) + (py - t * by).powi(2)).sqrt()
}

/// Signed distance (negative inside) from `p` to a shape, all in pixels.
fn signed_distance(shape: &Shape, p: [f32; 2]) -> f32 {
    match shape {
        Shape::Capsule { a, b, r } => seg_dist(p, *a, *b) - r,
        Shape::Polygon { points, r } => {
            let n = points.len();
            if n < 3 {
                let d = (0..n)
                    .map(|i| seg_dist(p, points[i], points[(i + 1) % n]))
                    .fold(f32::MAX, f32::min);
                return d - r;
            }
            let mut d = f32::MAX;
            let (mut pos, mut neg) = (false, false);
            for i in 0..n {
                let (a, b) = (points[i], points[(i + 1) % n]);
                d = d.min(seg_dist(p, a, b));
                let c = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
                pos |= c > 0.0;
                neg |= c < 0.0;
            }
            let inside = !(pos && neg);
            (if inside { -d } else { d }) - r
        }
    }
}

fn scaled(shape: &Shape, s: f32) -> Shape {
    let sp = |p: [f32; 2]| [p[0] * s, p[1] * s];
    match shape {
        Shape::Capsule { a, b, r } => Shape::Capsule {
            a: sp(*a),
            b: sp(*b),
            r: r * s,
        },
        Shape::Polygon { points, r } => Shape::Polygon {
            points: points.iter().map(|&p| sp(p)).collect(),
            r: r * s,
        },
    }
}

fn pixel_bounds(shape: &Shape, width: usize, height: usize) -> Option<[usize; 4]> {
    let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    let (pts, r): (Vec<[f32; 2]>, f32) = match shape {
        Shape::Capsule { a, b, r } => (vec![*a, *b], *r),
        Shape::Polygon { points, r } => (points.clone(), *r),
    };
    for p in pts {
        b[0] = b[0].min(p[0] - r - 1.0);
        b[1] = b[1].min(p[1] - r - 1.0);
        b[2] = b[2].max(p[0] + r + 1.0);
        b[3] = b[3].max(p[1] + r + 1.0);
    }
    if b[2] < 0.0 || b[3] < 0.0 || b[0] >= width as f32 || b[1] >= height as f32 {
        return None;
    }
    let lo = |v: f32| v.max(0.0).floor() as usize;
    let hi = |v: f32, size: usize| (v.ceil().max(0.0) as usize).min(size);
    Some([lo(b[0]), lo(b[1]), hi(b[2], width), hi(b[3], height)])
}

/// An image that figures are drawn into one after another (the later over the earlier),
/// with the part and the figure on top at each pixel. Figure coordinates are normalised to
/// the image height (a square image: its side).
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Linear RGB in [0, 1], row-major.
    img: Vec<f32>,
    /// Part on top at each pixel (coverage at least one half), or [`BACKGROUND`].
    pub ids: Vec<u8>,
    /// Figure on top at each pixel (its index in drawing calls' `figure`), or [`BACKGROUND`].
    pub owner: Vec<u8>,
}

impl Canvas {
    /// A canvas over a painted background ([`Background::paint`] at this size).
    pub fn new(painted: Vec<f32>, width: usize, height: usize) -> Self {
        assert_eq!(painted.len(), width * height * 3, "painted background size");
        Canvas {
            width,
            height,
            img: painted,
            ids: vec![BACKGROUND; width * height],
            owner: vec![BACKGROUND; width * height],
        }
    }

    /// Draws `projected` (its parts far to near; those whose `drawn` entry is false left out)
    /// as figure `figure`. Returns the pixel box `[x0, y0, x1, y1)` of what it covered (at
    /// least one half), whatever is drawn over it later; `None` when nothing.
    pub fn draw(
        &mut self,
        figure: u8,
        projected: &Projected,
        drawn: &[bool; NUM_PARTS],
    ) -> Option<[usize; 4]> {
        let (w, h) = (self.width, self.height);
        let s = h as f32;
        let mut parts = projected.parts.clone();
        // Far to near; ties keep the part order.
        parts.sort_by(|a, b| a.depth.total_cmp(&b.depth));
        let mut bbox: Option<[usize; 4]> = None;
        for ps in parts.iter().filter(|ps| drawn[ps.part]) {
            let shape = scaled(&ps.shape, s);
            let Some([x0, y0, x1, y1]) = pixel_bounds(&shape, w, h) else {
                continue;
            };
            let col = PART_COLOURS[ps.part].map(|c| c as f32 / 255.0);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = signed_distance(&shape, [x as f32 + 0.5, y as f32 + 0.5]);
                    let a = (0.5 - d).clamp(0.0, 1.0);
                    if a <= 0.0 {
                        continue;
                    }
                    let i = y * w + x;
                    let p = &mut self.img[i * 3..][..3];
                    for k in 0..3 {
                        p[k] += (col[k] - p[k]) * a;
                    }
                    if a >= 0.5 {
                        self.ids[i] = ps.part as u8;
                        self.owner[i] = figure;
                        let b = bbox.get_or_insert([x, y, x + 1, y + 1]);
                        *b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
                    }
                }
            }
        }
        bbox
    }

    /// Joint positions in pixels of `projected` (drawn as `figure`) and their visibility: a
    /// joint is visible when it lies in the image and a part of this figure that it belongs
    /// to is on top there.
    pub fn joints(
        &self,
        figure: u8,
        projected: &Projected,
        drawn: &[bool; NUM_PARTS],
    ) -> ([[f32; 2]; NUM_JOINTS], [bool; NUM_JOINTS]) {
        let s = self.height as f32;
        let joints = projected.joints.map(|j| [j[0] * s, j[1] * s]);
        let visible = std::array::from_fn(|j| {
            let [x, y] = joints[j];
            if !(x >= 0.0 && y >= 0.0 && x < self.width as f32 && y < s) {
                return false;
            }
            let i = y as usize * self.width + x as usize;
            let id = self.ids[i];
            self.owner[i] == figure && JOINT_PARTS[j].iter().any(|&p| drawn[p] && id == p as u8)
        });
        (joints, visible)
    }

    /// RGB8, row-major.
    pub fn rgb(&self) -> Vec<u8> {
        self.img
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }
}

/// Renders `pose` of `body` over `background` at `size` x `size`; parts whose `drawn` entry
/// is false are left out (and are not present).
pub fn render(
    body: &Body,
    pose: &Pose,
    background: &Background,
    size: usize,
    drawn: &[bool; NUM_PARTS],
) -> Render {
    let mut canvas = Canvas::new(background.paint(size, size), size, size);
    let projected = project(body, pose);
    canvas.draw(0, &projected, drawn);
    let s = size as f32;
    let mut part_pixels = [0u32; NUM_PARTS];
    for &id in &canvas.ids {
        if id != BACKGROUND {
            part_pixels[id as usize] += 1;
        }
    }
    let min_px = (MIN_PRESENT_FRACTION * s * s).max(1.0) as u32;
    let present = std::array::from_fn(|p| drawn[p] && part_pixels[p] >= min_px);
    let (joints, visible) = canvas.joints(0, &projected, drawn);
    Render {
        size,
        rgb: canvas.rgb(),
        ids: canvas.ids,
        joints,
        visible,
        part_pixels,
        present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{Dof, NUM_PARTS};
    use crate::{Scene, SceneOptions};

    fn plain() -> Background {
        Background {
            top: [0.5; 3],
            bottom: [0.5; 3],
            floor: None,
            rects: vec![],
            noise: 0.0,
            noise_seed: 0,
        }
    }

    #[test]
    fn renders_are_a_function_of_the_seed() {
        let a = Scene::sample(11, 5, SceneOptions::TRAINING).render(96);
        let b = Scene::sample(11, 5, SceneOptions::TRAINING).render(96);
        assert_eq!(a, b);
        let c = Scene::sample(12, 5, SceneOptions::TRAINING).render(96);
        let d = Scene::sample(11, 6, SceneOptions::TRAINING).render(96);
        assert_ne!(a.rgb, c.rgb);
        assert_ne!(a.rgb, d.rgb);
    }

    #[test]
    fn visible_joints_lie_in_the_drawn_figure() {
        // The neutral figure faces the camera: every joint is visible, and a disc of two
        // pixels around each lies on the figure, drawn in one of the joint's parts colours.
        let r = render(
            &Body::default(),
            &Pose::neutral(),
            &plain(),
            128,
            &[true; NUM_PARTS],
        );
        assert!(r.visible.iter().all(|&v| v), "{:?}", r.visible);
        assert!(r.present.iter().all(|&v| v));
        for (j, p) in r.joints.iter().enumerate() {
            for (dx, dy) in [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)] {
                let (x, y) = ((p[0] as i32 + dx) as usize, (p[1] as i32 + dy) as usize);
                let id = r.ids[y * 128 + x];
                assert_ne!(id, BACKGROUND, "joint {j} at {p:?} +({dx},{dy})");
            }
            let id = r.ids[p[1] as usize * 128 + p[0] as usize] as usize;
            assert!(JOINT_PARTS[j].contains(&id), "joint {j}: part {id}");
            let px = &r.rgb[(p[1] as usize * 128 + p[0] as usize) * 3..][..3];
            assert_eq!(px, PART_COLOURS[id], "joint {j}");
        }
        // The background stays untouched far from the figure.
        assert_eq!(&r.rgb[..3], &[128, 128, 128]);
        assert_eq!(r.ids[0], BACKGROUND);
    }

    #[test]
    fn hidden_and_outside_joints_are_not_visible() {
        let b = Body::default();
        let all = [true; NUM_PARTS];
        // Seen from the left with the arms hanging, the left arm hides the right one.
        let mut p = Pose::neutral();
        p.set(Dof::Yaw, 90.0);
        p.set(Dof::LeftShoulderAbd, 0.0);
        p.set(Dof::RightShoulderAbd, 0.0);
        let r = render(&b, &p, &plain(), 128, &all);
        assert!(r.visible[4] && r.visible[6], "near elbow and wrist");
        assert!(!r.visible[5] && !r.visible[7], "far elbow and wrist");
        assert!(!r.present[3] || r.part_pixels[3] < r.part_pixels[2] / 4);
        // Moved down by half the image: the ankles and knees leave it.
        let mut p = Pose::neutral();
        p.set(Dof::Y, 0.85);
        let r = render(&b, &p, &plain(), 128, &all);
        assert!(r.joints[12][1] >= 128.0 && !r.visible[12] && !r.visible[13]);
        assert!(!r.present[12] && !r.present[13], "feet out of the image");
        assert!(r.visible[0] && r.visible[1]);
    }

    #[test]
    fn parts_left_out_are_neither_drawn_nor_present() {
        let mut drawn = [true; NUM_PARTS];
        drawn[4] = false;
        drawn[0] = false;
        let r = render(&Body::default(), &Pose::neutral(), &plain(), 128, &drawn);
        assert!(!r.present[4] && !r.present[0] && r.present[6]);
        assert_eq!(r.part_pixels[4], 0);
        assert!(!r.visible[0], "the head joint has no head");
        assert!(r.ids.iter().all(|&i| i != 4 && i != 0));
    }

    #[test]
    fn edges_are_anti_aliased() {
        // Along a row through the left thigh (the image's right half), the step from
        // background to part colour passes through intermediate values on both edges.
        let r = render(
            &Body::default(),
            &Pose::neutral(),
            &plain(),
            128,
            &[true; NUM_PARTS],
        );
        let knee = r.joints[10];
        let y = (knee[1] - 6.0) as usize;
        let row: Vec<u8> = (64..128).map(|x| r.rgb[(y * 128 + x) * 3 + 2]).collect();
        let col = PART_COLOURS[8][2];
        let mixed = row.iter().filter(|&&v| v != 128 && v != col).count();
        assert!((2..=4).contains(&mixed), "{row:?}");
        assert!(row.iter().filter(|&&v| v == col).count() >= 4, "{row:?}");
    }
}
