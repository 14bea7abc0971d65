//! Drawing keypoints, their ids and a pose skeleton. Each frame's drawing is laid out once
//! ([`Overlay`]: sizes from the frame, labels placed), then rendered either straight into the
//! frame's planes ([`Canvas`], for the RGB family, I420/YV12 and NV12) or into small
//! ARGB/AYUV rectangles that GStreamer blends into any other raw format ([`Blender`]).

use gst::glib;
use gst_video::prelude::*;
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

const BLACK: [u8; 3] = [0, 0, 0];
const WHITE: [u8; 3] = [255, 255, 255];

/// Colour of the pose skeleton and its landmarks (outlined in black).
pub const SKELETON_RGB: [u8; 3] = WHITE;

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

/// Pixel layout of a frame (or rectangle) to draw into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Packed RGB family: bytes per pixel, offsets of R, G, B and of alpha if any.
    Packed {
        bpp: usize,
        rgb: [usize; 3],
        alpha: Option<usize>,
    },
    /// Planar Y, U, V, 4:2:0 (YV12 is this with the chroma planes swapped).
    I420,
    Nv12,
    /// A, Y, U, V bytes (GStreamer's AYUV), colours converted with the canvas's `yuv`.
    Ayuv,
}

/// RGB -> Y'CbCr conversion of the overlay colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yuv {
    kr: f32,
    kb: f32,
    full_range: bool,
}

impl Default for Yuv {
    /// BT.601, limited range.
    fn default() -> Self {
        Self::new(YuvMatrix::Bt601, false)
    }
}

impl Yuv {
    pub fn new(matrix: YuvMatrix, full_range: bool) -> Self {
        let (kr, kb) = match matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        Self::with_coefficients(kr, kb, full_range)
    }

    /// Any matrix by its luma coefficients (e.g. BT.2020: 0.2627, 0.0593).
    pub fn with_coefficients(kr: f32, kb: f32, full_range: bool) -> Self {
        Self { kr, kb, full_range }
    }

    /// 8-bit Y, Cb, Cr of an RGB colour.
    pub fn convert(&self, [r, g, b]: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = (self.kr, self.kb);
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

/// Sizes of everything drawn, in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    /// Radius of a keypoint's coloured disc.
    pub radius: f32,
    /// Width of each of the two rings (black inside, white outside) around it, and of the
    /// black outline of the skeleton's lines and landmarks.
    pub ring: f32,
    /// Width of the skeleton's white lines; landmarks are white dots of this radius.
    pub line_width: f32,
    /// Pixels per glyph cell of the id digits (a digit is 3 x 5 cells).
    pub text_scale: i64,
}

impl Style {
    pub fn new(radius: f32, line_width: f32) -> Self {
        let radius = radius.max(0.0);
        Self {
            radius,
            ring: (radius / 5.0).round().max(1.0),
            line_width: line_width.max(1.0),
            text_scale: (((radius + 1.0) / 2.5).round() as i64).max(1),
        }
    }

    /// The element's sizes for a frame: `radius` and `line_width` in pixels, 0 meaning
    /// "from the frame": radius max(3, min(w, h) / 100), lines half the radius (at least 2).
    pub fn for_frame(width: usize, height: usize, radius: u32, line_width: u32) -> Self {
        let radius = if radius > 0 {
            radius as f32
        } else {
            (width.min(height) / 100).max(3) as f32
        };
        let line_width = if line_width > 0 {
            line_width as f32
        } else {
            (radius / 2.0).round().max(2.0)
        };
        Self::new(radius, line_width)
    }

    /// Radius of a keypoint's dot including its rings.
    pub fn dot_extent(&self) -> f32 {
        self.radius + 2.0 * self.ring
    }
}

/// One point to draw, in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dot {
    pub id: usize,
    pub x: f32,
    pub y: f32,
}

/// A placed id label: a black box [x0, x1) x [y0, y1) in frame pixels with white digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub id: usize,
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl Label {
    fn overlap(&self, b: &[i64; 4]) -> i64 {
        let w = self.x1.min(b[2]) - self.x0.max(b[0]);
        let h = self.y1.min(b[3]) - self.y0.max(b[1]);
        w.max(0) * h.max(0)
    }
}

/// A pose to draw: points in frame pixels and the index pairs of the lines between them.
pub type Skeleton<'a> = (&'a [(f32, f32)], &'a [[u32; 2]]);

/// Everything drawn on one frame, laid out: points clamped into the frame, labels placed.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    pub width: usize,
    pub height: usize,
    pub style: Style,
    pub dots: Vec<Dot>,
    pub labels: Vec<Label>,
    pub bones: Vec<[(f32, f32); 2]>,
    pub joints: Vec<(f32, f32)>,
}

impl Overlay {
    /// Dots at `dots` (non-finite ones skipped, the others clamped into the frame so that a
    /// point on the edge still shows), with their ids if `ids`, and a skeleton: lines between
    /// the `connections` of `points` and a dot at each point (non-finite points and their
    /// lines skipped, the others clamped).
    pub fn new(
        width: usize,
        height: usize,
        style: Style,
        dots: &[Dot],
        ids: bool,
        skeleton: Option<Skeleton<'_>>,
    ) -> Self {
        let (w, h) = (width as f32 - 0.5, height as f32 - 0.5);
        let inside = |x: f32, y: f32| {
            (x.is_finite() && y.is_finite() && width > 0 && height > 0)
                .then(|| (x.clamp(0.0, w), y.clamp(0.0, h)))
        };
        let dots: Vec<Dot> = dots
            .iter()
            .filter_map(|d| inside(d.x, d.y).map(|(x, y)| Dot { id: d.id, x, y }))
            .collect();
        let (mut bones, mut joints) = (Vec::new(), Vec::new());
        if let Some((points, connections)) = skeleton {
            let at = |i: u32| points.get(i as usize).and_then(|&(x, y)| inside(x, y));
            bones = connections
                .iter()
                .filter_map(|&[a, b]| Some([at(a)?, at(b)?]))
                .collect();
            joints = (0..points.len() as u32).filter_map(at).collect();
        }
        let labels = if ids {
            place_labels(width, height, &style, &dots)
        } else {
            Vec::new()
        };
        Self {
            width,
            height,
            style,
            dots,
            labels,
            bones,
            joints,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dots.is_empty() && self.bones.is_empty() && self.joints.is_empty()
    }

    /// Boxes [x0, y0, x1, y1) (frame pixels, inside the frame) of each drawn item.
    fn extents(&self) -> Vec<[i64; 4]> {
        let s = &self.style;
        let around = |x: f32, y: f32, r: f32| {
            let r = r.ceil() as i64 + 1;
            let (x, y) = (x.floor() as i64, y.floor() as i64);
            [x - r, y - r, x + r + 1, y + r + 1]
        };
        let half = s.line_width / 2.0 + s.ring;
        let mut boxes: Vec<[i64; 4]> = self
            .dots
            .iter()
            .map(|d| around(d.x, d.y, s.dot_extent()))
            .chain(self.labels.iter().map(|l| [l.x0, l.y0, l.x1, l.y1]))
            .chain(self.bones.iter().map(|[p, q]| {
                let (a, b) = (around(p.0, p.1, half), around(q.0, q.1, half));
                [
                    a[0].min(b[0]),
                    a[1].min(b[1]),
                    a[2].max(b[2]),
                    a[3].max(b[3]),
                ]
            }))
            .chain(
                self.joints
                    .iter()
                    .map(|&(x, y)| around(x, y, s.line_width + s.ring)),
            )
            .collect();
        let (w, h) = (self.width as i64, self.height as i64);
        for b in &mut boxes {
            *b = [b[0].max(0), b[1].max(0), b[2].min(w), b[3].min(h)];
        }
        boxes.retain(|b| b[0] < b[2] && b[1] < b[3]);
        boxes
    }

    /// Horizontal bands [x0, y0, x1, y1) covering everything drawn, in frame pixels: rows
    /// of items that share rows are merged, so the bands do not overlap. Blending touches
    /// whole rows, so bands keep it to the rows that have something on them.
    pub fn bands(&self) -> Vec<[i64; 4]> {
        let mut boxes = self.extents();
        boxes.sort_by_key(|b| b[1]);
        let mut bands: Vec<[i64; 4]> = Vec::new();
        for b in boxes {
            match bands.last_mut() {
                Some(last) if b[1] < last[3] => {
                    *last = [
                        last[0].min(b[0]),
                        last[1],
                        last[2].max(b[2]),
                        last[3].max(b[3]),
                    ];
                }
                _ => bands.push(b),
            }
        }
        bands
    }
}

/// Places each id's label beside its dot: the first of eight positions around it (right
/// and above first) that lies inside the frame (shifted in where needed) and overlaps the
/// fewest other labels and dots.
fn place_labels(width: usize, height: usize, style: &Style, dots: &[Dot]) -> Vec<Label> {
    let s = style.text_scale;
    let reach = style.dot_extent().ceil() as i64 + 1;
    let obstacles: Vec<[i64; 4]> = dots
        .iter()
        .map(|d| {
            let (x, y) = (d.x.floor() as i64, d.y.floor() as i64);
            [x - reach, y - reach, x + reach + 1, y + reach + 1]
        })
        .collect();
    let (w, h) = (width as i64, height as i64);
    let mut labels: Vec<Label> = Vec::with_capacity(dots.len());
    for d in dots {
        let digits = d.id.to_string().len() as i64;
        // One cell of padding around the digits, one cell between them.
        let (bw, bh) = ((4 * digits + 1) * s, 7 * s);
        let (x, y) = (d.x.floor() as i64, d.y.floor() as i64);
        let (right, left) = (x + reach + 1, x - reach - bw);
        let (above, below) = (y - reach - bh, y + reach + 1);
        let (mid_x, mid_y) = (x - bw / 2, y - bh / 2);
        let candidates = [
            (right, above),
            (right, mid_y),
            (right, below),
            (left, above),
            (left, mid_y),
            (left, below),
            (mid_x, above),
            (mid_x, below),
        ];
        let mut best: Option<(i64, Label)> = None;
        for (cx, cy) in candidates {
            let x0 = cx.min(w - bw).max(0);
            let y0 = cy.min(h - bh).max(0);
            let l = Label {
                id: d.id,
                x0,
                y0,
                x1: (x0 + bw).min(w),
                y1: (y0 + bh).min(h),
            };
            // Covering another label hides its digits: worse than covering a dot.
            let cost = 4 * labels
                .iter()
                .map(|o| l.overlap(&[o.x0, o.y0, o.x1, o.y1]))
                .sum::<i64>()
                + obstacles.iter().map(|o| l.overlap(o)).sum::<i64>();
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, l));
            }
        }
        labels.extend(best.map(|(_, l)| l));
    }
    labels
}

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
        for l in &o.labels {
            self.fill(l.x0, l.y0, l.x1, l.y1, BLACK, |_, _| true);
            self.number(l);
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
        match self.layout {
            Layout::Packed { bpp, rgb, alpha } => {
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for y in y0..y1 {
                    for x in x0..x1 {
                        if at(x, y) {
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
            Layout::Ayuv => {
                let [yy, u, v] = self.yuv.convert(colour);
                let (data, stride) = (&mut *self.planes[0].0, self.planes[0].1);
                for y in y0..y1 {
                    for x in x0..x1 {
                        if at(x, y) {
                            let p = y as usize * stride + x as usize * 4;
                            data[p..p + 4].copy_from_slice(&[255, yy, u, v]);
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
                            if at(x, y) {
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

/// Rectangle format of GStreamer's overlay blending for RGB frames: ARGB as 32-bit words,
/// i.e. B, G, R, A bytes on little-endian machines.
#[cfg(target_endian = "little")]
const RECT_RGB: (gst_video::VideoFormat, [usize; 3], usize) =
    (gst_video::VideoFormat::Bgra, [2, 1, 0], 3);
#[cfg(target_endian = "big")]
const RECT_RGB: (gst_video::VideoFormat, [usize; 3], usize) =
    (gst_video::VideoFormat::Argb, [1, 2, 3], 0);

/// Draws an [`Overlay`] into frames of any raw format GStreamer can blend into: each band
/// of it is rendered into an ARGB rectangle (RGB frames) or an AYUV one (YUV and grey
/// frames, colours converted with the frame's own matrix and range) and blended with
/// `gst_video_overlay_composition_blend`. The rectangles' buffers are kept for the next
/// frame.
#[derive(Default)]
pub struct Blender {
    pool: Vec<gst::Buffer>,
}

impl Blender {
    pub fn blend(
        &mut self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        overlay: &Overlay,
        yuv: Yuv,
    ) -> Result<(), glib::BoolError> {
        let (format, layout) = if frame.format_info().is_rgb() {
            let (format, rgb, alpha) = RECT_RGB;
            (
                format,
                Layout::Packed {
                    bpp: 4,
                    rgb,
                    alpha: Some(alpha),
                },
            )
        } else {
            (gst_video::VideoFormat::Ayuv, Layout::Ayuv)
        };
        let bands = overlay.bands();
        let mut rects = Vec::with_capacity(bands.len());
        for (i, &[x0, y0, x1, y1]) in bands.iter().enumerate() {
            let (bw, bh) = ((x1 - x0) as usize, (y1 - y0) as usize);
            let size = bw * bh * 4;
            if self.pool.len() <= i {
                self.pool.push(gst::Buffer::with_size(size)?);
            }
            let slot = &mut self.pool[i];
            // Reused once the previous frame's composition has let go of it.
            if slot.size() < size || !slot.is_writable() {
                *slot = gst::Buffer::with_size(size)?;
            }
            let buf = slot.get_mut().expect("writable");
            if let Some(meta) = buf.meta_mut::<gst_video::VideoMeta>() {
                meta.remove()?;
            }
            {
                let mut map = buf.map_writable()?;
                let data = &mut map[..size];
                data.fill(0);
                Canvas {
                    layout,
                    width: bw,
                    height: bh,
                    planes: [(data, bw * 4), (&mut [], 0), (&mut [], 0)],
                    yuv,
                    origin: (x0, y0),
                }
                .render(overlay);
            }
            gst_video::VideoMeta::add(
                buf,
                gst_video::VideoFrameFlags::empty(),
                format,
                bw as u32,
                bh as u32,
            )?;
            rects.push(gst_video::VideoOverlayRectangle::new_raw(
                slot,
                x0 as i32,
                y0 as i32,
                bw as u32,
                bh as u32,
                gst_video::VideoOverlayFormatFlags::empty(),
            ));
        }
        if rects.is_empty() {
            return Ok(());
        }
        gst_video::VideoOverlayComposition::new(rects.iter())?.blend(frame)
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
            origin: (0, 0),
        }
    }

    /// An RGB frame of `bg` with `dots` (and ids) drawn at this style.
    fn draw_rgb(
        w: usize,
        h: usize,
        bg: [u8; 3],
        style: Style,
        dots: &[Dot],
        ids: bool,
    ) -> (Vec<u8>, Overlay) {
        let mut buf: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
        let o = Overlay::new(w, h, style, dots, ids, None);
        rgb_canvas(&mut buf, w, h).render(&o);
        (buf, o)
    }

    fn px(buf: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
        let p = (y * w + x) * 3;
        [buf[p], buf[p + 1], buf[p + 2]]
    }

    fn luma([r, g, b]: [u8; 3]) -> f32 {
        0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
    }

    fn dot(id: usize, x: f32, y: f32) -> Dot {
        Dot { id, x, y }
    }

    #[test]
    fn a_dot_is_a_coloured_disc_in_a_black_and_a_white_ring() {
        let (w, h) = (30, 30);
        let style = Style::new(5.0, 2.0);
        assert_eq!(style.ring, 1.0);
        let (buf, _) = draw_rgb(w, h, [90, 90, 90], style, &[dot(1, 15.0, 15.0)], false);
        // Along the row through the centre (pixel centres at x + 0.5).
        assert_eq!(px(&buf, w, 15, 15), palette_rgb(1));
        assert_eq!(px(&buf, w, 19, 15), palette_rgb(1)); // 4.5 from the centre
        assert_eq!(px(&buf, w, 20, 15), BLACK); // 5.5
        assert_eq!(px(&buf, w, 21, 15), WHITE); // 6.5
        assert_eq!(px(&buf, w, 22, 15), [90, 90, 90]); // 7.5
        assert_eq!(px(&buf, w, 9, 15), BLACK); // 5.5 to the left
        assert_eq!(px(&buf, w, 8, 15), WHITE); // 6.5
        assert_eq!(px(&buf, w, 7, 15), [90, 90, 90]); // 7.5
        let changed = (0..w * h)
            .filter(|&i| buf[i * 3..i * 3 + 3] != [90, 90, 90])
            .count();
        // A disc of radius 7: pi 49 = 154.
        assert!((140..=170).contains(&changed), "{changed}");
    }

    #[test]
    fn points_outside_are_clamped_and_never_panic() {
        let (w, h) = (7, 5);
        let mut buf = vec![0u8; w * h * 3];
        let dots = [
            dot(0, -50.0, 2.0),
            dot(2, 100.0, 100.0),
            dot(3, f32::NAN, 1.0),
        ];
        let o = Overlay::new(w, h, Style::new(0.0, 1.0), &dots, true, None);
        assert_eq!(o.dots.len(), 2);
        rgb_canvas(&mut buf, w, h).render(&o);
        // Radius 0: the pixel under each clamped point has the colour; labels drawn after
        // may cover it, so look without ids.
        let mut buf = vec![0u8; w * h * 3];
        let o = Overlay::new(w, h, Style::new(0.0, 1.0), &dots, false, None);
        rgb_canvas(&mut buf, w, h).render(&o);
        assert_eq!(px(&buf, w, 0, 2), palette_rgb(0));
        assert_eq!(px(&buf, w, w - 1, h - 1), palette_rgb(2));
        // Nothing at all in an empty frame.
        let o = Overlay::new(0, 0, Style::new(3.0, 1.0), &dots, true, None);
        assert!(o.is_empty() && o.bands().is_empty());
    }

    #[test]
    fn yuv_colours_round_trip_through_the_core_conversion() {
        for (matrix, full) in [(YuvMatrix::Bt601, false), (YuvMatrix::Bt709, true)] {
            let yuv = Yuv::new(matrix, full);
            for c in PALETTE.iter().chain([&BLACK, &WHITE]) {
                let [y, u, v] = yuv.convert(*c);
                let back =
                    stablekeypoints::frame::yuv_to_rgb(y as f32, u as f32, v as f32, matrix, full);
                for k in 0..3 {
                    assert!(
                        (back[k] * 255.0 - c[k] as f32).abs() < 4.0,
                        "{c:?} {back:?}"
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
            let s1 = if layout == Layout::I420 { cw } else { 2 * cw };
            let mut u = vec![128u8; s1 * ch];
            let mut v = vec![128u8; cw * ch];
            let o = Overlay::new(w, h, Style::new(1.0, 1.0), &[dot(0, 8.9, 6.9)], false, None);
            Canvas {
                layout,
                width: w,
                height: h,
                planes: [(&mut y, w), (&mut u, s1), (&mut v, cw)],
                yuv: Yuv::default(),
                origin: (0, 0),
            }
            .render(&o);
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
    fn skeleton_lines_follow_the_segments_outlined_in_black() {
        let (w, h) = (40, 30);
        let bg = [90u8, 90, 90];
        let mut buf: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
        let pts = [(5.0, 5.0), (35.0, 20.0), (5.0, 25.0)];
        let style = Style::new(3.0, 2.0); // white within 1 px of the line, black to 2 px
        let mut o = Overlay::new(w, h, style, &[], false, Some((&pts, &[[0, 1], [1, 2]])));
        o.joints.clear(); // the lines alone
        rgb_canvas(&mut buf, w, h).render(&o);
        for y in 0..h {
            for x in 0..w {
                let d = to_segment2(x, y, pts[0], pts[1]).min(to_segment2(x, y, pts[1], pts[2]));
                let want = if d <= 1.0 {
                    WHITE
                } else if d <= 4.0 {
                    BLACK
                } else {
                    bg
                };
                assert_eq!(px(&buf, w, x, y), want, "({x}, {y}) at {d}");
            }
        }
    }

    #[test]
    fn skeleton_is_clamped_and_skips_non_finite_points() {
        let (w, h) = (10, 8);
        let pts = [(-20.0, 3.5), (50.0, 3.5), (f32::NAN, 1.0)];
        let o = Overlay::new(
            w,
            h,
            Style::new(1.0, 1.0),
            &[],
            false,
            Some((&pts, &[[0, 1], [1, 2], [2, 7]])),
        );
        assert_eq!(o.bones.len(), 1);
        assert_eq!(o.joints, vec![(0.0, 3.5), (9.5, 3.5)]);
        let mut buf = vec![7u8; w * h * 3];
        rgb_canvas(&mut buf, w, h).render(&o);
        // The clamped line spans row 3 from edge to edge, outlined above and below; nothing
        // reaches row 0.
        for x in 0..w {
            assert_eq!(px(&buf, w, x, 3), SKELETON_RGB, "{x}");
        }
        for x in 2..w - 2 {
            assert_eq!(px(&buf, w, x, 2), BLACK, "{x}");
            assert_eq!(px(&buf, w, x, 4), BLACK, "{x}");
        }
        assert!(buf[..w * 3].iter().all(|&b| b == 7));
    }

    #[test]
    fn skeleton_in_nv12_sets_luma_and_chroma_of_the_line() {
        let (w, h) = (16, 8);
        let (cw, ch) = (8, 4);
        let mut y = vec![16u8; w * h];
        let mut uv = vec![100u8; 2 * cw * ch];
        let mut o = Overlay::new(
            w,
            h,
            Style::new(3.0, 2.0),
            &[],
            false,
            Some((&[(0.0, 4.0), (15.9, 4.0)], &[[0, 1]])),
        );
        o.joints.clear();
        Canvas {
            layout: Layout::Nv12,
            width: w,
            height: h,
            planes: [(&mut y, w), (&mut uv, 2 * cw), (&mut [], 0)],
            yuv: Yuv::default(),
            origin: (0, 0),
        }
        .render(&o);
        let [wy, wu, wv] = Yuv::default().convert(WHITE);
        let [by, ..] = Yuv::default().convert(BLACK);
        for x in 0..w {
            assert_eq!((y[3 * w + x], y[4 * w + x]), (wy, wy), "{x}");
            assert_eq!((y[2 * w + x], y[5 * w + x]), (by, by), "{x}");
            assert_eq!(y[w + x], 16);
        }
        // Chroma row 2 covers luma rows 4-5; its block centres (y = 5) lie 1 px off the line:
        // white (and black) have the neutral chroma.
        assert_eq!((uv[2 * 2 * cw + 6], uv[2 * 2 * cw + 7]), (wu, wv));
        assert_eq!(uv[0], 100);
    }

    #[test]
    fn ids_are_white_digits_on_a_black_box_legible_on_white_and_yellow() {
        let (w, h) = (60, 40);
        for bg in [WHITE, [255, 255, 0], [0, 0, 0], [90, 90, 90]] {
            let (buf, o) = draw_rgb(w, h, bg, Style::new(3.0, 2.0), &[dot(7, 20.0, 25.0)], true);
            let l = o.labels[0];
            let (mut dark, mut light) = (0, 0);
            for y in l.y0..l.y1 {
                for x in l.x0..l.x1 {
                    match px(&buf, w, x as usize, y as usize) {
                        BLACK => dark += 1,
                        WHITE => light += 1,
                        other => panic!("{bg:?}: label pixel ({x}, {y}) is {other:?}"),
                    }
                }
            }
            // Digit 7 at scale 2: 7 cells of 2 x 2 lit; the box is 10 x 14.
            assert_eq!((light, dark), (28, 140 - 28), "{bg:?}");
            // Whatever the background, the box or the digits stand out from it by half the
            // luma range.
            let contrast = (luma(BLACK) - luma(bg))
                .abs()
                .max((luma(WHITE) - luma(bg)).abs());
            assert!(contrast >= 127.0, "{bg:?}: {contrast}");
            assert!((luma(WHITE) - luma(BLACK)) >= 250.0);
        }
    }

    #[test]
    fn dots_contrast_with_black_white_and_yellow_backgrounds() {
        let (w, h) = (40, 40);
        for id in 0..PALETTE.len() {
            for bg in [BLACK, WHITE, [255, 255, 0]] {
                let (buf, _) = draw_rgb(
                    w,
                    h,
                    bg,
                    Style::new(4.0, 2.0),
                    &[dot(id, 20.0, 20.0)],
                    false,
                );
                // The most contrasting pixel within the dot's extent.
                let best = (12..28)
                    .flat_map(|y| (12..28).map(move |x| (x, y)))
                    .map(|(x, y)| (luma(px(&buf, w, x, y)) - luma(bg)).abs())
                    .fold(0.0f32, f32::max);
                assert!(best >= 200.0, "id {id} on {bg:?}: best contrast {best}");
            }
        }
    }

    #[test]
    fn a_label_at_the_top_right_corner_stays_whole_inside_the_frame() {
        let (w, h) = (50, 30);
        for (x, y) in [
            (49.9, 0.0),
            (49.0, 29.9),
            (0.0, 0.0),
            (0.0, 29.5),
            (25.0, 0.2),
        ] {
            let style = Style::new(3.0, 2.0);
            let (buf, o) = draw_rgb(w, h, [90, 90, 90], style, &[dot(12, x, y)], true);
            let l = o.labels[0];
            assert!(
                l.x0 >= 0 && l.y0 >= 0 && l.x1 <= w as i64 && l.y1 <= h as i64,
                "{l:?}"
            );
            // Full size (two digits: 18 x 14 at scale 2), nothing cut off.
            assert_eq!((l.x1 - l.x0, l.y1 - l.y0), (18, 14), "{l:?}");
            let drawn = (l.y0..l.y1)
                .flat_map(|yy| (l.x0..l.x1).map(move |xx| (xx, yy)))
                .filter(|&(xx, yy)| matches!(px(&buf, w, xx as usize, yy as usize), BLACK | WHITE))
                .count();
            assert_eq!(drawn, 18 * 14, "({x}, {y}): {l:?}");
        }
    }

    #[test]
    fn labels_of_nearby_points_do_not_overlap_each_other_or_the_dots() {
        let (w, h) = (80, 60);
        let style = Style::new(3.0, 2.0);
        // Two points 4 px apart, and a cluster of four.
        for dots in [
            vec![dot(1, 30.0, 30.0), dot(2, 34.0, 30.0)],
            vec![
                dot(3, 40.0, 30.0),
                dot(4, 44.0, 30.0),
                dot(5, 40.0, 34.0),
                dot(6, 44.0, 34.0),
            ],
        ] {
            let o = Overlay::new(w, h, style, &dots, true, None);
            assert_eq!(o.labels.len(), dots.len());
            let reach = style.dot_extent().ceil() as i64 + 1;
            for (i, a) in o.labels.iter().enumerate() {
                for b in &o.labels[i + 1..] {
                    assert_eq!(a.overlap(&[b.x0, b.y0, b.x1, b.y1]), 0, "{a:?} {b:?}");
                }
                for d in &o.dots {
                    let (x, y) = (d.x.floor() as i64, d.y.floor() as i64);
                    let disc = [x - reach, y - reach, x + reach + 1, y + reach + 1];
                    assert_eq!(a.overlap(&disc), 0, "{a:?} covers dot {d:?}");
                }
            }
        }
    }

    #[test]
    fn sizes_follow_the_frame_unless_set() {
        let s = Style::for_frame(1920, 1080, 0, 0);
        assert!(
            s.radius >= 10.0 && s.line_width >= 5.0 && s.ring >= 2.0,
            "{s:?}"
        );
        assert!(s.text_scale >= 4, "{s:?}"); // digits 20 px high
        let s = Style::for_frame(320, 240, 0, 0);
        assert_eq!(
            (s.radius, s.line_width, s.ring, s.text_scale),
            (3.0, 2.0, 1.0, 2)
        );
        let s = Style::for_frame(1920, 1080, 4, 3);
        assert_eq!((s.radius, s.line_width), (4.0, 3.0));
        // Drawn at 1080p with the defaults, a dot is more than 20 px across.
        let (w, h) = (1920, 1080);
        let (buf, _) = draw_rgb(
            w,
            h,
            [90, 90, 90],
            Style::for_frame(w, h, 0, 0),
            &[dot(0, 960.0, 540.0)],
            false,
        );
        let across = (900..1020)
            .filter(|&x| px(&buf, w, x, 540) != [90, 90, 90])
            .count();
        assert!(across > 20, "{across}");
    }

    #[test]
    fn bands_cover_everything_drawn_without_overlapping() {
        let (w, h) = (120, 90);
        let dots = [
            dot(0, 10.0, 10.0),
            dot(1, 100.0, 12.0),
            dot(2, 60.0, 80.0),
            dot(3, 119.0, 89.0),
        ];
        let pts = [(30.0, 40.0), (50.0, 55.0)];
        let o = Overlay::new(
            w,
            h,
            Style::new(3.0, 2.0),
            &dots,
            true,
            Some((&pts, &[[0, 1]])),
        );
        let bands = o.bands();
        assert!(bands.len() >= 2, "{bands:?}");
        for (i, a) in bands.iter().enumerate() {
            assert!(a[0] >= 0 && a[1] >= 0 && a[2] <= w as i64 && a[3] <= h as i64);
            for b in &bands[i + 1..] {
                assert!(a[3] <= b[1], "bands {a:?} and {b:?} share rows");
            }
        }
        let (buf, _) = {
            let mut buf = vec![90u8; w * h * 3];
            rgb_canvas(&mut buf, w, h).render(&o);
            (buf, ())
        };
        for y in 0..h {
            for x in 0..w {
                if px(&buf, w, x, y) != [90, 90, 90] {
                    let (x, y) = (x as i64, y as i64);
                    assert!(
                        bands
                            .iter()
                            .any(|b| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y)),
                        "({x}, {y}) drawn outside the bands {bands:?}"
                    );
                }
            }
        }
        // Rendering band by band with an origin gives the same pixels.
        let mut banded = vec![90u8; w * h * 3];
        for &[x0, y0, x1, y1] in &bands {
            let (bw, bh) = ((x1 - x0) as usize, (y1 - y0) as usize);
            let mut rect = vec![90u8; bw * bh * 3];
            Canvas {
                origin: (x0, y0),
                ..rgb_canvas(&mut rect, bw, bh)
            }
            .render(&o);
            for r in 0..bh {
                let at = ((y0 as usize + r) * w + x0 as usize) * 3;
                banded[at..at + bw * 3].copy_from_slice(&rect[r * bw * 3..(r + 1) * bw * 3]);
            }
        }
        assert!(banded == buf);
    }
}
