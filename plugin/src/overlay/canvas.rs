//! Rendering a laid-out [`Overlay`] straight into the planes of a frame (or a rectangle).

use super::scene::{palette_rgb, Label, Overlay, BLACK, SKELETON_RGB, WHITE};
use crate::formats::{Layout, Yuv};

/// 3x5 digit glyphs, one row per 3 bits (MSB = left column).
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Mutable planes of one frame (or of a rectangle of it) with their strides.
pub struct Canvas<'a> {
    pub layout: Layout,
    pub width: usize,
    pub height: usize,
    pub planes: [(&'a mut [u8], usize); 3],
    pub yuv: Yuv,
    /// Frame position of the canvas's top-left pixel: (0, 0) for a whole frame (always so
    /// for the 4:2:0 layouts).
    pub origin: (i64, i64),
}

impl Canvas<'_> {
    /// Draws `o` (laid out for the whole frame) clipped to this canvas: the skeleton (white
    /// lines and landmarks outlined in black), the keypoints (a disc in the id's palette
    /// colour inside a black and a white ring, so that it shows on any background), then the
    /// id labels (white digits on a black box).
    pub fn render(&mut self, o: &Overlay) {
        let s = o.style;
        let half = s.line_width / 2.0;
        // Objects' boxes under everything else: their colour outlined in black.
        let box_half = o.outline_half();
        for ob in &o.objects {
            self.outline(ob.rect, box_half + s.ring, BLACK);
        }
        for ob in &o.objects {
            self.outline(ob.rect, box_half, ob.colour);
        }
        // All outlines first, so that no outline cuts through a line or landmark.
        for &[p, q] in &o.bones {
            self.line(p, q, half + s.ring, BLACK);
        }
        for &(x, y) in &o.joints {
            self.circle(x, y, s.line_width + s.ring, BLACK);
        }
        for &[p, q] in &o.bones {
            self.line(p, q, half, SKELETON_RGB);
        }
        for &(x, y) in &o.joints {
            self.circle(x, y, s.line_width, SKELETON_RGB);
        }
        for d in &o.dots {
            self.circle(d.x, d.y, s.radius + 2.0 * s.ring, WHITE);
            self.circle(d.x, d.y, s.radius + s.ring, BLACK);
            self.circle(d.x, d.y, s.radius, palette_rgb(d.id));
        }
        for ob in &o.objects {
            for d in &ob.dots {
                self.circle(d.x, d.y, s.radius + 2.0 * s.ring, WHITE);
                self.circle(d.x, d.y, s.radius + s.ring, BLACK);
                self.circle(d.x, d.y, s.radius, ob.colour);
            }
        }
        for l in o
            .labels
            .iter()
            .chain(o.objects.iter().flat_map(|ob| &ob.label))
        {
            self.fill(l.x0, l.y0, l.x1, l.y1, BLACK, |_, _| true);
            self.number(l);
        }
    }

    /// The sides of the box `[x0, y0, x1, y1)`, through its edge pixels' centres, `half`
    /// px each side.
    fn outline(&mut self, rect: [i64; 4], half: f32, colour: [u8; 3]) {
        let [x0, y0, x1, y1] = rect.map(|v| v as f32);
        let (x0, y0, x1, y1) = (x0 + 0.5, y0 + 0.5, x1 - 0.5, y1 - 0.5);
        for (p, q) in [
            ((x0, y0), (x1, y0)),
            ((x1, y0), (x1, y1)),
            ((x1, y1), (x0, y1)),
            ((x0, y1), (x0, y0)),
        ] {
            self.line(p, q, half, colour);
        }
    }

    /// The pixels whose centre lies within `half` px of the segment p-q.
    fn line(&mut self, p: (f32, f32), q: (f32, f32), half: f32, colour: [u8; 3]) {
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let len2 = dx * dx + dy * dy;
        let pad = half.ceil() as i64 + 1;
        let (x0, x1) = (p.0.min(q.0).floor() as i64, p.0.max(q.0).floor() as i64);
        let (y0, y1) = (p.1.min(q.1).floor() as i64, p.1.max(q.1).floor() as i64);
        self.fill(
            x0 - pad,
            y0 - pad,
            x1 + pad + 1,
            y1 + pad + 1,
            colour,
            |x, y| {
                let (cx, cy) = (x + 0.5 - p.0, y + 0.5 - p.1);
                // Closest point of the segment: the projection clamped to its ends.
                let t = if len2 > 0.0 {
                    ((cx * dx + cy * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (cx - t * dx, cy - t * dy);
                ex * ex + ey * ey <= half * half
            },
        );
    }

    /// A filled circle (at least the pixel under the centre).
    fn circle(&mut self, cx: f32, cy: f32, r: f32, colour: [u8; 3]) {
        let (px, py) = (cx.floor() as i64, cy.floor() as i64);
        let r2 = r * r;
        let ri = r.ceil() as i64 + 1;
        self.fill(
            px - ri,
            py - ri,
            px + ri + 1,
            py + ri + 1,
            colour,
            |x, y| {
                let (dx, dy) = (x + 0.5 - cx, y + 0.5 - cy);
                dx * dx + dy * dy <= r2 || (x as i64 == px && y as i64 == py)
            },
        );
    }

    fn number(&mut self, l: &Label) {
        let s = ((l.y1 - l.y0) / 7).max(1);
        let (mut gx, gy) = (l.x0 + s, l.y0 + s);
        for ch in l.id.to_string().bytes() {
            let glyph = DIGITS[(ch - b'0') as usize];
            let x0 = gx;
            self.fill(gx, gy, gx + 3 * s, gy + 5 * s, WHITE, |x, y| {
                let col = ((x as i64 - x0) / s) as usize;
                let row = ((y as i64 - gy) / s) as usize;
                row < 5 && col < 3 && glyph[row] & (0b100 >> col) != 0
            });
            gx += 4 * s;
        }
    }

    /// Sets the pixels in [x0, x1) x [y0, y1) (frame coordinates), clipped to the canvas,
    /// for which `inside` (given frame coordinates) holds. Chroma of 4:2:0 layouts is set
    /// where the centre of the 2x2 block is inside.
    fn fill(
        &mut self,
        x0: i64,
        y0: i64,
        x1: i64,
        y1: i64,
        colour: [u8; 3],
        inside: impl Fn(f32, f32) -> bool,
    ) {
        let (ox, oy) = self.origin;
        let (w, h) = (self.width as i64, self.height as i64);
        // Canvas coordinates from here on.
        let (x0, y0, x1, y1) = (
            (x0 - ox).max(0),
            (y0 - oy).max(0),
            (x1 - ox).min(w),
            (y1 - oy).min(h),
        );
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let at = |x: i64, y: i64| inside((x + ox) as f32, (y + oy) as f32);
        let rect = (x0, y0, x1, y1);
        match self.layout {
            Layout::Packed { bpp, rgb, alpha } => {
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for_each_inside(rect, at, |x, y| {
                    let p = y as usize * stride + x as usize * bpp;
                    for c in 0..3 {
                        data[p + rgb[c]] = colour[c];
                    }
                    if let Some(a) = alpha {
                        data[p + a] = 255;
                    }
                });
            }
            Layout::Ayuv => {
                let [yy, u, v] = self.yuv.convert(colour);
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for_each_inside(rect, at, |x, y| {
                    let p = y as usize * stride + x as usize * 4;
                    data[p..p + 4].copy_from_slice(&[255, yy, u, v]);
                });
            }
            Layout::I420 | Layout::Nv12 => {
                let [yy, u, v] = self.yuv.convert(colour);
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for_each_inside(rect, at, |x, y| {
                    data[y as usize * stride + x as usize] = yy;
                });
                self.fill_chroma(rect, [u, v], inside);
            }
        }
    }

    /// The chroma of a 4:2:0 layout in the canvas rectangle `rect`: set to `uv` where the
    /// centre of the 2x2 block is `inside`.
    fn fill_chroma(
        &mut self,
        (x0, y0, x1, y1): (i64, i64, i64, i64),
        [u, v]: [u8; 2],
        inside: impl Fn(f32, f32) -> bool,
    ) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (cw, ch) = ((w + 1) / 2, (h + 1) / 2);
        for cy in (y0 / 2)..((y1 + 1) / 2).min(ch) {
            for cx in (x0 / 2)..((x1 + 1) / 2).min(cw) {
                // Centre of the block, moved inside the frame for odd sizes.
                let bx = ((2 * cx) as f32 + 0.5).min(w as f32 - 1.0);
                let by = ((2 * cy) as f32 + 0.5).min(h as f32 - 1.0);
                if !inside(bx, by) {
                    continue;
                }
                let (cx, cy) = (cx as usize, cy as usize);
                if self.layout == Layout::I420 {
                    let s1 = self.planes[1].1;
                    self.planes[1].0[cy * s1 + cx] = u;
                    let s2 = self.planes[2].1;
                    self.planes[2].0[cy * s2 + cx] = v;
                } else {
                    let s1 = self.planes[1].1;
                    let p = cy * s1 + 2 * cx;
                    self.planes[1].0[p] = u;
                    self.planes[1].0[p + 1] = v;
                }
            }
        }
    }
}

/// Calls `set` on the pixels of the canvas rectangle `(x0, y0, x1, y1)` where `at` holds,
/// row by row (inlined into each layout's loop).
#[inline(always)]
fn for_each_inside(
    (x0, y0, x1, y1): (i64, i64, i64, i64),
    at: impl Fn(i64, i64) -> bool,
    mut set: impl FnMut(i64, i64),
) {
    for y in y0..y1 {
        for x in x0..x1 {
            if at(x, y) {
                set(x, y);
            }
        }
    }
}
