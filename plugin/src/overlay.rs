//! Drawing keypoints into frames in their native pixel layout (no conversion round trip).

use stablekeypoints::frame::YuvMatrix;

/// Fixed palette, indexed by keypoint id modulo its length (same colours as `palette_rgb`).
const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [220, 190, 255],
    [170, 110, 40],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 215, 180],
    [0, 0, 128],
    [128, 128, 128],
];

/// Colour of the pose skeleton and its landmarks.
pub const SKELETON_RGB: [u8; 3] = [255, 255, 255];

/// The RGB colour the overlay uses for keypoint `id`.
pub fn palette_rgb(id: usize) -> [u8; 3] {
    PALETTE[id % PALETTE.len()]
}

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

/// Pixel layout of a frame to draw into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Packed RGB family: bytes per pixel, offsets of R, G, B and of alpha if any.
    Packed {
        bpp: usize,
        rgb: [usize; 3],
        alpha: Option<usize>,
    },
    I420,
    Nv12,
}

/// YUV conversion of the overlay colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Yuv {
    pub matrix: YuvMatrix,
    pub full_range: bool,
}

impl Yuv {
    fn convert(&self, [r, g, b]: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = match self.matrix {
            YuvMatrix::Bt601 => (0.299f32, 0.114f32),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let (r, g, b) = (r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0);
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let cb = (b - y) / (2.0 * (1.0 - kb));
        let cr = (r - y) / (2.0 * (1.0 - kr));
        let (ys, yo, cs) = if self.full_range {
            (255.0, 0.0, 255.0)
        } else {
            (219.0, 16.0, 224.0)
        };
        let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        [q(yo + ys * y), q(128.0 + cs * cb), q(128.0 + cs * cr)]
    }
}

/// Mutable planes of one frame with their strides.
pub struct Canvas<'a> {
    pub layout: Layout,
    pub width: usize,
    pub height: usize,
    pub planes: [(&'a mut [u8], usize); 3],
    pub yuv: Yuv,
}

/// One point to draw, in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dot {
    pub id: usize,
    pub x: f32,
    pub y: f32,
}

impl Canvas<'_> {
    /// Filled circles of `radius` px (at least the pixel under the point) in the palette
    /// colour of each id, optionally with the id in small digits beside it.
    pub fn draw(&mut self, dots: &[Dot], radius: f32, ids: bool) {
        if self.width == 0 || self.height == 0 {
            return;
        }
        for d in dots {
            if !d.x.is_finite() || !d.y.is_finite() {
                continue;
            }
            // Clamp into the frame so a point on the edge still shows.
            let x = d.x.clamp(0.0, self.width as f32 - 0.5);
            let y = d.y.clamp(0.0, self.height as f32 - 0.5);
            let colour = palette_rgb(d.id);
            self.circle(x, y, radius.max(0.0), colour);
            if ids {
                self.number(x + radius + 1.0, y - radius - 1.0, d.id, radius);
            }
        }
    }

    /// A pose: lines `width` px wide between the connected points, then a dot of `radius`
    /// at every point, all in [`SKELETON_RGB`]. Points are clamped into the frame as in
    /// [`Canvas::draw`]; non-finite points and the lines touching them are skipped.
    pub fn draw_skeleton(
        &mut self,
        points: &[(f32, f32)],
        connections: &[[u32; 2]],
        radius: f32,
        width: f32,
    ) {
        if self.width == 0 || self.height == 0 {
            return;
        }
        let (w, h) = (self.width as f32 - 0.5, self.height as f32 - 0.5);
        let at = |i: u32| {
            points
                .get(i as usize)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (x.clamp(0.0, w), y.clamp(0.0, h)))
        };
        for &[a, b] in connections {
            if let (Some(p), Some(q)) = (at(a), at(b)) {
                self.line(p, q, width.max(1.0) / 2.0, SKELETON_RGB);
            }
        }
        for i in 0..points.len() {
            if let Some((x, y)) = at(i as u32) {
                self.circle(x, y, radius.max(0.0), SKELETON_RGB);
            }
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

    fn circle(&mut self, cx: f32, cy: f32, r: f32, colour: [u8; 3]) {
        let (px, py) = (cx.floor() as i64, cy.floor() as i64);
        let r2 = r * r;
        let ri = r.ceil() as i64 + 1;
        self.fill(px - ri, py - ri, px + ri, py + ri, colour, |x, y| {
            let (dx, dy) = (x + 0.5 - cx, y + 0.5 - cy);
            dx * dx + dy * dy <= r2 || (x as i64 == px && y as i64 == py)
        });
    }

    fn number(&mut self, left: f32, top: f32, id: usize, radius: f32) {
        let scale = (radius / 3.0).round().max(1.0) as i64;
        let text = id.to_string();
        let (mut x0, y0) = (left.round() as i64, top.round() as i64 - 5 * scale);
        for ch in text.bytes() {
            let glyph = DIGITS[(ch - b'0') as usize];
            let (gx, gy) = (x0, y0);
            self.fill(
                gx,
                gy,
                gx + 3 * scale,
                gy + 5 * scale,
                [255, 255, 255],
                |x, y| {
                    let col = ((x as i64 - gx) / scale) as usize;
                    let row = ((y as i64 - gy) / scale) as usize;
                    row < 5 && col < 3 && glyph[row] & (0b100 >> col) != 0
                },
            );
            x0 += 4 * scale;
        }
    }

    /// Sets the pixels in [x0, x1) x [y0, y1), clipped to the frame, for which `inside`
    /// holds. Chroma of 4:2:0 formats is set where the centre of the 2x2 block is inside.
    fn fill(
        &mut self,
        x0: i64,
        y0: i64,
        x1: i64,
        y1: i64,
        colour: [u8; 3],
        inside: impl Fn(f32, f32) -> bool,
    ) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (x0, y0, x1, y1) = (x0.max(0), y0.max(0), x1.min(w), y1.min(h));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        match self.layout {
            Layout::Packed { bpp, rgb, alpha } => {
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for y in y0..y1 {
                    for x in x0..x1 {
                        if inside(x as f32, y as f32) {
                            let p = y as usize * stride + x as usize * bpp;
                            for c in 0..3 {
                                data[p + rgb[c]] = colour[c];
                            }
                            if let Some(a) = alpha {
                                data[p + a] = 255;
                            }
                        }
                    }
                }
            }
            Layout::I420 | Layout::Nv12 => {
                let [yy, u, v] = self.yuv.convert(colour);
                {
                    let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            if inside(x as f32, y as f32) {
                                data[y as usize * stride + x as usize] = yy;
                            }
                        }
                    }
                }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_canvas(buf: &mut [u8], w: usize, h: usize) -> Canvas<'_> {
        Canvas {
            layout: Layout::Packed {
                bpp: 3,
                rgb: [0, 1, 2],
                alpha: None,
            },
            width: w,
            height: h,
            planes: [(buf, w * 3), (&mut [], 0), (&mut [], 0)],
            yuv: Yuv::default(),
        }
    }

    #[test]
    fn circle_is_filled_round_and_local() {
        let (w, h) = (20, 20);
        let mut buf = vec![0u8; w * h * 3];
        rgb_canvas(&mut buf, w, h).draw(
            &[Dot {
                id: 1,
                x: 10.0,
                y: 10.0,
            }],
            3.0,
            false,
        );
        let at = |x: usize, y: usize| {
            [
                buf[(y * w + x) * 3],
                buf[(y * w + x) * 3 + 1],
                buf[(y * w + x) * 3 + 2],
            ]
        };
        assert_eq!(at(10, 10), palette_rgb(1));
        assert_eq!(at(8, 10), palette_rgb(1));
        assert_eq!(at(13, 10), [0, 0, 0]);
        assert_eq!(at(12, 12), [0, 0, 0]); // corner of the box, outside the circle
        let changed = (0..w * h)
            .filter(|&i| buf[i * 3..i * 3 + 3] != [0, 0, 0])
            .count();
        assert!((20..=36).contains(&changed), "{changed}");
    }

    #[test]
    fn points_outside_are_clamped_and_never_panic() {
        let (w, h) = (7, 5);
        let mut buf = vec![0u8; w * h * 3];
        let dots = [
            Dot {
                id: 0,
                x: -50.0,
                y: 2.0,
            },
            Dot {
                id: 2,
                x: 100.0,
                y: 100.0,
            },
            Dot {
                id: 3,
                x: f32::NAN,
                y: 1.0,
            },
        ];
        rgb_canvas(&mut buf, w, h).draw(&dots, 2.0, true);
        assert_eq!(&buf[2 * w * 3..2 * w * 3 + 3], &palette_rgb(0));
        let last = ((h - 1) * w + w - 1) * 3;
        assert_eq!(&buf[last..last + 3], &palette_rgb(2));
    }

    #[test]
    fn yuv_colours_round_trip_through_the_core_conversion() {
        for yuv in [
            Yuv::default(),
            Yuv {
                matrix: YuvMatrix::Bt709,
                full_range: true,
            },
        ] {
            for id in 0..PALETTE.len() {
                let c = palette_rgb(id);
                let [y, u, v] = yuv.convert(c);
                let back = stablekeypoints::frame::yuv_to_rgb(
                    y as f32,
                    u as f32,
                    v as f32,
                    yuv.matrix,
                    yuv.full_range,
                );
                for k in 0..3 {
                    assert!(
                        (back[k] * 255.0 - c[k] as f32).abs() < 4.0,
                        "{id} {c:?} {back:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn i420_and_nv12_draw_luma_and_chroma() {
        let (w, h) = (9, 7); // odd sizes
        let (cw, ch) = (5, 4);
        for layout in [Layout::I420, Layout::Nv12] {
            let mut y = vec![16u8; w * h];
            let mut u = vec![
                128u8;
                if layout == Layout::I420 {
                    cw * ch
                } else {
                    2 * cw * ch
                }
            ];
            let mut v = vec![128u8; cw * ch];
            let s1 = if layout == Layout::I420 { cw } else { 2 * cw };
            let mut c = Canvas {
                layout,
                width: w,
                height: h,
                planes: [(&mut y, w), (&mut u, s1), (&mut v, cw)],
                yuv: Yuv::default(),
            };
            c.draw(
                &[Dot {
                    id: 0,
                    x: 8.9,
                    y: 6.9,
                }],
                1.0,
                false,
            );
            let [ey, eu, ev] = Yuv::default().convert(palette_rgb(0));
            assert_eq!(y[6 * w + 8], ey);
            assert_eq!(y[0], 16);
            if layout == Layout::I420 {
                assert_eq!((u[3 * cw + 4], v[3 * cw + 4]), (eu, ev));
            } else {
                assert_eq!((u[3 * s1 + 8], u[3 * s1 + 9]), (eu, ev));
            }
            assert_eq!(u[0], 128);
        }
    }

    /// Squared distance from pixel (x, y)'s centre to the segment p-q.
    fn to_segment2(x: usize, y: usize, p: (f32, f32), q: (f32, f32)) -> f32 {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let t = (((px - p.0) * dx + (py - p.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
        (px - p.0 - t * dx).powi(2) + (py - p.1 - t * dy).powi(2)
    }

    #[test]
    fn skeleton_lines_follow_the_segments_and_stay_thin() {
        let (w, h) = (40, 30);
        let mut buf = vec![0u8; w * h * 3];
        let pts = [(5.0, 5.0), (35.0, 20.0), (5.0, 25.0)];
        rgb_canvas(&mut buf, w, h).draw_skeleton(&pts, &[[0, 1], [1, 2]], 0.0, 2.0);
        let lit = |x: usize, y: usize| buf[(y * w + x) * 3..(y * w + x) * 3 + 3] == SKELETON_RGB;
        for (a, b) in [(0, 1), (1, 2)] {
            let (p, q) = (pts[a], pts[b]);
            // Every pixel under the segment is drawn: the line has no gaps.
            for i in 0..=100 {
                let t = i as f32 / 100.0;
                let (x, y) = (p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1));
                assert!(lit(x as usize, y as usize), "gap at ({x}, {y})");
            }
        }
        for y in 0..h {
            for x in 0..w {
                let d = to_segment2(x, y, pts[0], pts[1]).min(to_segment2(x, y, pts[1], pts[2]));
                // Width 2: centres within 1 px are drawn, no others (no third segment 2-0).
                assert_eq!(lit(x, y), d <= 1.0, "({x}, {y}) at {d}");
            }
        }
    }

    #[test]
    fn skeleton_is_clamped_and_skips_non_finite_points() {
        let (w, h) = (10, 8);
        let mut buf = vec![0u8; w * h * 3];
        let pts = [(-20.0, 3.0), (50.0, 3.0), (f32::NAN, 1.0)];
        rgb_canvas(&mut buf, w, h).draw_skeleton(&pts, &[[0, 1], [1, 2], [2, 7]], 1.0, 1.0);
        // The clamped line spans row 3 from edge to edge; nothing reaches row 0.
        for x in 0..w {
            assert_eq!(&buf[(3 * w + x) * 3..(3 * w + x) * 3 + 3], &SKELETON_RGB);
        }
        assert!(buf[..w * 3].iter().all(|&b| b == 0));
    }

    #[test]
    fn skeleton_in_nv12_sets_luma_and_chroma_of_the_line() {
        let (w, h) = (16, 8);
        let (cw, ch) = (8, 4);
        let mut y = vec![16u8; w * h];
        let mut uv = vec![128u8; 2 * cw * ch];
        let mut c = Canvas {
            layout: Layout::Nv12,
            width: w,
            height: h,
            planes: [(&mut y, w), (&mut uv, 2 * cw), (&mut [], 0)],
            yuv: Yuv::default(),
        };
        c.draw_skeleton(&[(0.0, 4.0), (15.9, 4.0)], &[[0, 1]], 0.0, 2.0);
        let [ey, eu, ev] = Yuv::default().convert(SKELETON_RGB);
        for x in 0..w {
            assert_eq!((y[3 * w + x], y[4 * w + x]), (ey, ey), "{x}");
            assert_eq!(y[w + x], 16);
        }
        // Chroma row 2 covers luma rows 4-5; its block centres (y = 5) lie 1 px off the line.
        assert_eq!((uv[2 * 2 * cw + 6], uv[2 * 2 * cw + 7]), (eu, ev));
        assert_eq!(uv[0], 128);
    }

    #[test]
    fn ids_are_drawn_in_white() {
        let (w, h) = (40, 30);
        let mut buf = vec![0u8; w * h * 3];
        rgb_canvas(&mut buf, w, h).draw(
            &[Dot {
                id: 7,
                x: 10.0,
                y: 20.0,
            }],
            3.0,
            true,
        );
        let white = (0..w * h)
            .filter(|&i| buf[i * 3..i * 3 + 3] == [255, 255, 255])
            .count();
        assert!(white >= 5, "{white}");
    }
}
