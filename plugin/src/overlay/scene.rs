//! What one frame's drawing consists of, laid out once: sizes from the frame, points
//! clamped into it, id labels placed beside their dots.

/// Fixed palette, indexed by keypoint id modulo its length (same colours as `palette_rgb`).
pub(crate) const PALETTE: [[u8; 3]; 20] = [
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

pub(crate) const BLACK: [u8; 3] = [0, 0, 0];
pub(crate) const WHITE: [u8; 3] = [255, 255, 255];

/// Colour of the pose skeleton and its landmarks (outlined in black).
pub const SKELETON_RGB: [u8; 3] = WHITE;

/// The RGB colour the overlay uses for keypoint `id`.
pub fn palette_rgb(id: usize) -> [u8; 3] {
    PALETTE[id % PALETTE.len()]
}

/// The RGB colour of object `id`'s box and keypoints (top-down inference): stable across
/// frames, different for consecutive ids.
pub fn object_rgb(id: u64) -> [u8; 3] {
    PALETTE[(id % PALETTE.len() as u64) as usize]
}

/// An object's drawing: its box outlined in its colour, its keypoints as dots of that
/// colour, and its id beside the box's top-left corner when ids are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectMark {
    pub id: u64,
    pub colour: [u8; 3],
    /// The box `[x0, y0, x1, y1)` in frame pixels.
    pub rect: [i64; 4],
    pub dots: Vec<Dot>,
    /// Placed by [`Overlay::with_objects`].
    pub label: Option<Label>,
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
    pub(crate) fn overlap(&self, b: &[i64; 4]) -> i64 {
        let w = self.x1.min(b[2]) - self.x0.max(b[0]);
        let h = self.y1.min(b[3]) - self.y0.max(b[1]);
        w.max(0) * h.max(0)
    }
}

/// A skeleton to draw: points in frame pixels, the index pairs of the lines between them,
/// and whether each point gets a dot of its own (a pose's landmarks do; the points of
/// another producer's keypoints are drawn as keypoints and only joined by the lines).
#[derive(Clone, Copy, Debug)]
pub struct Skeleton<'a> {
    pub points: &'a [(f32, f32)],
    pub connections: &'a [[u32; 2]],
    pub joints: bool,
}

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
    /// Objects' boxes and keypoints (top-down inference), drawn in their colours.
    pub objects: Vec<ObjectMark>,
}

impl Overlay {
    /// Dots at `dots` (non-finite ones skipped, the others clamped into the frame so that a
    /// point on the edge still shows), with their ids if `ids`, and skeletons: lines between
    /// the `connections` of their `points` and, for those with `joints`, a dot at each point
    /// (non-finite points and their lines skipped, the others clamped).
    pub fn new(
        width: usize,
        height: usize,
        style: Style,
        dots: &[Dot],
        ids: bool,
        skeletons: &[Skeleton<'_>],
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
        for s in skeletons {
            let at = |i: u32| s.points.get(i as usize).and_then(|&(x, y)| inside(x, y));
            bones.extend(
                s.connections
                    .iter()
                    .filter_map(|&[a, b]| Some([at(a)?, at(b)?])),
            );
            if s.joints {
                joints.extend((0..s.points.len() as u32).filter_map(at));
            }
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
            objects: Vec::new(),
        }
    }

    /// Adds `objects`: their dots clamped into the frame (non-finite ones skipped), their
    /// boxes clipped to it, and with `ids` each id's label above the box's top-left corner
    /// (inside the box where there is no room above).
    pub fn with_objects(mut self, objects: Vec<ObjectMark>, ids: bool) -> Self {
        let (w, h) = (self.width as i64, self.height as i64);
        let (fw, fh) = (self.width as f32 - 0.5, self.height as f32 - 0.5);
        let s = self.style.text_scale;
        for mut o in objects {
            o.dots.retain(|d| d.x.is_finite() && d.y.is_finite());
            for d in &mut o.dots {
                d.x = d.x.clamp(0.0, fw.max(0.0));
                d.y = d.y.clamp(0.0, fh.max(0.0));
            }
            let [x0, y0, x1, y1] = o.rect;
            o.rect = [
                x0.clamp(0, w),
                y0.clamp(0, h),
                x1.clamp(0, w),
                y1.clamp(0, h),
            ];
            o.label = (ids && o.rect[0] < o.rect[2] && o.rect[1] < o.rect[3]).then(|| {
                let digits = o.id.to_string().len() as i64;
                let (bw, bh) = ((4 * digits + 1) * s, 7 * s);
                let x0 = o.rect[0].min(w - bw).max(0);
                let above = o.rect[1] - bh;
                let y0 = if above >= 0 {
                    above
                } else {
                    o.rect[1].min(h - bh).max(0)
                };
                Label {
                    id: usize::try_from(o.id).unwrap_or(usize::MAX),
                    x0,
                    y0,
                    x1: (x0 + bw).min(w),
                    y1: (y0 + bh).min(h),
                }
            });
            self.objects.push(o);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.dots.is_empty()
            && self.bones.is_empty()
            && self.joints.is_empty()
            && self.objects.is_empty()
    }

    /// Half the width of an object's outline, with its black edge.
    pub(crate) fn outline_half(&self) -> f32 {
        (self.style.line_width / 2.0).max(1.0)
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
        let pad = (self.outline_half() + s.ring).ceil() as i64 + 1;
        for o in &self.objects {
            let [x0, y0, x1, y1] = o.rect;
            // The four sides of the outline.
            boxes.extend([
                [x0 - pad, y0 - pad, x1 + pad, y0 + pad],
                [x0 - pad, y1 - pad, x1 + pad, y1 + pad],
                [x0 - pad, y0 - pad, x0 + pad, y1 + pad],
                [x1 - pad, y0 - pad, x1 + pad, y1 + pad],
            ]);
            boxes.extend(o.dots.iter().map(|d| around(d.x, d.y, s.dot_extent())));
            boxes.extend(o.label.iter().map(|l| [l.x0, l.y0, l.x1, l.y1]));
        }
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
