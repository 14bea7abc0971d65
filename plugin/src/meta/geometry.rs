//! The frame our keypoints were made for, and the one place that decides whether they still
//! fit the frame a reader holds.
//!
//! Keypoints are positions in a picture; a geometric transform after the inference element
//! moves the picture under them. On GStreamer 1.22 a meta's transform function is only told
//! about copies and scaling, and `videoflip`, `videocrop`, `videobox` and `aspectratiocrop`
//! copy our metas unchanged (or drop them), so the positions cannot be moved with the
//! picture. Instead the [`carrier`](super::carrier) records the frame's size (followed
//! through scalers) and a [`Signature`] of its picture: a tiny luma grid, which a flip or a
//! rotation of a frame of the same size rearranges. Readers trust the keypoints only while
//! both still match ([`check`]), and drop them otherwise.

use gst_video::prelude::*;
use std::fmt;

/// Cells per side of a signature's grid.
pub const GRID: usize = 8;
/// Samples per cell and axis (64 per cell, 4096 a frame: a few microseconds).
const SAMPLES: usize = 8;
/// How much closer (sum over the cells, in 8-bit luma levels) a rearranged signature must be
/// to the frame than the recorded one before the frame is taken as flipped or rotated:
/// scaling, conversion and drawing change the cells a little, in no pattern of a flip.
const MARGIN: u32 = 3 * (GRID * GRID) as u32;
/// How far (the same sum) the frame may be from the recorded picture when no scaler can
/// have changed it: an element dropped the size meta (as crops and borders do) and the size
/// is the same, so only a copy is expected; a crop scaled back to the size is not.
const CHANGED: u32 = 8 * (GRID * GRID) as u32;

/// The mean luma (8 bits, full range) of each cell of a `GRID` x `GRID` grid laid over the
/// frame, row by row: positions are proportional, so it survives scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(pub [u8; GRID * GRID]);

/// The flips and rotations of a frame (`videoflip`'s methods other than `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Clockwise,
    Rotate180,
    Counterclockwise,
    HorizontalFlip,
    VerticalFlip,
    UpperLeftDiagonal,
    UpperRightDiagonal,
}

impl Turn {
    pub const ALL: [Turn; 7] = [
        Turn::Clockwise,
        Turn::Rotate180,
        Turn::Counterclockwise,
        Turn::HorizontalFlip,
        Turn::VerticalFlip,
        Turn::UpperLeftDiagonal,
        Turn::UpperRightDiagonal,
    ];

    /// The cell of the original grid that lands on cell (`r`, `c`) of the turned one.
    fn source(self, r: usize, c: usize) -> (usize, usize) {
        let l = GRID - 1;
        match self {
            Turn::Clockwise => (l - c, r),
            Turn::Rotate180 => (l - r, l - c),
            Turn::Counterclockwise => (c, l - r),
            Turn::HorizontalFlip => (r, l - c),
            Turn::VerticalFlip => (l - r, c),
            Turn::UpperLeftDiagonal => (c, r),
            Turn::UpperRightDiagonal => (l - c, l - r),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Turn::Clockwise => "rotated 90 degrees clockwise",
            Turn::Rotate180 => "rotated 180 degrees",
            Turn::Counterclockwise => "rotated 90 degrees counter-clockwise",
            Turn::HorizontalFlip => "mirrored left to right",
            Turn::VerticalFlip => "flipped upside down",
            Turn::UpperLeftDiagonal => "flipped across its upper-left diagonal",
            Turn::UpperRightDiagonal => "flipped across its upper-right diagonal",
        }
    }
}

impl Signature {
    /// The signature of a mapped frame; `None` for formats whose samples are not plain
    /// integers in planes (tiled, palette, bit-packed groups).
    pub fn of_frame(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Option<Self> {
        let info = frame.info();
        let finfo = info.format_info();
        let flags_ok = !(finfo.is_complex() || finfo.is_tiled() || finfo.has_palette());
        if !flags_ok || !(8..=16).contains(&finfo.bits()) {
            return None;
        }
        let (w, h) = (info.width() as usize, info.height() as usize);
        if w == 0 || h == 0 {
            return None;
        }
        let limited = info.colorimetry().range() == gst_video::VideoColorRange::Range16_235;
        let comps: &[u32] = if finfo.is_rgb() { &[0, 1, 2] } else { &[0] };
        let reader = comps
            .iter()
            .map(|&c| Component::of(frame, c))
            .collect::<Option<Vec<_>>>()?;
        let mut v = [0u32; 3];
        let n = GRID * SAMPLES;
        // Sample k of n along a side of `len` pixels: the centre of its stretch, so that a
        // flip maps the samples onto each other.
        let at = |k: usize, len: usize| ((2 * k + 1) * len / (2 * n)).min(len - 1);
        let mut sums = [0u32; GRID * GRID];
        for i in 0..n {
            let y = at(i, h);
            for j in 0..n {
                let x = at(j, w);
                for (v, r) in v.iter_mut().zip(&reader) {
                    *v = r.get(x, y)?;
                }
                let luma = if finfo.is_rgb() {
                    // BT.601 weights (x256); the comparison is relative, any fixed weights do.
                    (77 * v[0] + 150 * v[1] + 29 * v[2]) >> 8
                } else if limited {
                    ((v[0].saturating_sub(16)) * 255 / 219).min(255)
                } else {
                    v[0]
                };
                sums[(i / SAMPLES) * GRID + j / SAMPLES] += luma;
            }
        }
        let per_cell = (SAMPLES * SAMPLES) as u32;
        Some(Self(sums.map(|s| ((s + per_cell / 2) / per_cell) as u8)))
    }

    /// The signature of `buffer`, a frame of `info`, if it can be mapped and read.
    pub fn of_buffer(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Option<Self> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
        Self::of_frame(&frame)
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// This signature after the frame was turned.
    pub fn turned(&self, t: Turn) -> Self {
        let mut out = [0u8; GRID * GRID];
        for (i, v) in out.iter_mut().enumerate() {
            let (r, c) = t.source(i / GRID, i % GRID);
            *v = self.0[r * GRID + c];
        }
        Self(out)
    }

    /// Sum of the cells' absolute differences.
    fn distance(&self, other: &Self) -> u32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(&a, &b)| a.abs_diff(b) as u32)
            .sum()
    }
}

/// One component's samples in a mapped frame.
struct Component<'a> {
    data: &'a [u8],
    stride: usize,
    pstride: usize,
    offset: usize,
    w_sub: u32,
    h_sub: u32,
    /// Samples of more than 8 bits are 16-bit words (endianness, shift and mask).
    wide: bool,
    le: bool,
    shift: u32,
    depth: u32,
}

impl<'a> Component<'a> {
    fn of(frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>, c: u32) -> Option<Self> {
        let finfo = frame.format_info();
        let i = c as usize;
        let plane = *finfo.plane().get(i)?;
        let pstride = usize::try_from(*finfo.pixel_stride().get(i)?).ok()?;
        let stride = usize::try_from(*frame.plane_stride().get(plane as usize)?).ok()?;
        let depth = *finfo.depth().get(i)?;
        if pstride == 0 || !(1..=16).contains(&depth) {
            return None;
        }
        Some(Self {
            data: frame.plane_data(plane).ok()?,
            stride,
            pstride,
            offset: *finfo.poffset().get(i)? as usize,
            w_sub: *finfo.w_sub().get(i)?,
            h_sub: *finfo.h_sub().get(i)?,
            wide: finfo.bits() > 8,
            le: finfo.is_le(),
            shift: *finfo.shift().get(i)?,
            depth,
        })
    }

    /// The sample at pixel (`x`, `y`), scaled to 8 bits.
    fn get(&self, x: usize, y: usize) -> Option<u32> {
        let at = (y >> self.h_sub) * self.stride + (x >> self.w_sub) * self.pstride + self.offset;
        let raw = if self.wide {
            let b = self.data.get(at..at + 2)?;
            let word = if self.le {
                u16::from_le_bytes([b[0], b[1]])
            } else {
                u16::from_be_bytes([b[0], b[1]])
            };
            (word as u32 >> self.shift) & ((1 << self.depth) - 1)
        } else {
            *self.data.get(at)? as u32
        };
        Some(if self.depth >= 8 {
            raw >> (self.depth - 8)
        } else {
            raw * 255 / ((1 << self.depth) - 1)
        })
    }
}

/// The frame keypoints were made for, as the carrier records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// `None` when the producer had no frame to read (or could not read its format).
    pub signature: Option<Signature>,
}

/// Why keypoints do not fit a frame any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The ROI meta carries our keypoints but the carrier meta is gone.
    NoRecord,
    /// A transform before a scaler changed the frame's size (a crop, a border, a rotation).
    BeforeScaler,
    /// Made for a frame of another size (a crop, a border, a rotation).
    Size { made: (u32, u32), now: (u32, u32) },
    /// The same size, but the picture is turned.
    Turned(Turn),
    /// The same size without a scaler's record, but another picture.
    Changed,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoRecord => write!(
                f,
                "the record of the frame they were made for is gone (an element between \
                 dropped the GstStableKeypointsMeta while keeping the region-of-interest meta)"
            ),
            Mismatch::BeforeScaler => write!(
                f,
                "the frame changed size before a scaler (a crop, border or rotation: \
                 videocrop, videobox, aspectratiocrop or videoflip)"
            ),
            Mismatch::Size { made, now } if (made.1, made.0) == *now => write!(
                f,
                "they were made for a {}x{} frame and this one is {}x{} (rotated by \
                 videoflip?)",
                made.0, made.1, now.0, now.1
            ),
            Mismatch::Size { made, now } => write!(
                f,
                "they were made for a {}x{} frame and this one is {}x{} (cropped, boxed, \
                 flipped or rotated: videocrop, videobox, aspectratiocrop, videoflip?)",
                made.0, made.1, now.0, now.1
            ),
            Mismatch::Turned(t) => write!(
                f,
                "the frame looks {} since they were made (videoflip?)",
                t.describe()
            ),
            Mismatch::Changed => write!(
                f,
                "the picture is no longer the one they were made for, and an element between \
                 dropped the record of its size (a crop or border scaled back to the size?)"
            ),
        }
    }
}

/// Whether keypoints made for `made`, whose size the scalers since followed to `scaled`
/// (`None`: an element dropped that record), still fit a `now` (width, height) frame whose
/// signature `signature` gives (called only when the sizes match; `None` when the reader
/// cannot read the pixels).
pub fn check(
    made: &Geometry,
    scaled: Option<(u32, u32)>,
    now: (u32, u32),
    signature: impl FnOnce() -> Option<Signature>,
) -> Result<(), Mismatch> {
    let size = scaled.unwrap_or((made.width, made.height));
    if size == (0, 0) {
        return Err(Mismatch::BeforeScaler);
    }
    if size != now {
        return Err(Mismatch::Size { made: size, now });
    }
    let Some(made) = made.signature else {
        return Ok(());
    };
    let Some(now) = signature() else {
        return Ok(());
    };
    let kept = now.distance(&made);
    let best = Turn::ALL
        .into_iter()
        .map(|t| (now.distance(&made.turned(t)), t))
        .min_by_key(|&(d, _)| d);
    match best {
        Some((d, t)) if d + MARGIN < kept => Err(Mismatch::Turned(t)),
        _ if scaled.is_none() && kept > CHANGED => Err(Mismatch::Changed),
        _ => Ok(()),
    }
}

/// The frames a reader gets, from its caps.
#[derive(Clone, Debug)]
pub struct Frames {
    info: gst_video::VideoInfo,
    /// Whether mapping a frame is cheap (system memory) for the signature's check.
    readable: bool,
}

impl Frames {
    /// `None` for caps that are not raw video (then nothing can be checked).
    pub fn from_caps(caps: &gst::CapsRef) -> Option<Self> {
        let info = gst_video::VideoInfo::from_caps(caps).ok()?;
        let readable = caps.features(0).is_none_or(|f| {
            f.is_empty() || (f.size() == 1 && f.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY))
        });
        Some(Self { info, readable })
    }

    /// Frames in system memory.
    pub fn new(info: gst_video::VideoInfo) -> Self {
        Self {
            info,
            readable: true,
        }
    }

    pub fn info(&self) -> &gst_video::VideoInfo {
        &self.info
    }

    pub fn size(&self) -> (u32, u32) {
        (self.info.width(), self.info.height())
    }

    /// The signature of `buffer`, one of these frames, when its pixels can be read cheaply.
    pub fn signature(&self, buffer: &gst::BufferRef) -> Option<Signature> {
        self.readable
            .then(|| Signature::of_buffer(buffer, &self.info))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature whose cells all differ: cell i holds 3 i.
    fn ramp() -> Signature {
        Signature(std::array::from_fn(|i| (3 * i) as u8))
    }

    #[test]
    fn turns_rearrange_the_cells_as_videoflip_moves_the_pixels() {
        // Where the top-left cell goes, and what lands on the top-left cell, by hand.
        let s = ramp();
        let l = GRID - 1;
        let cell = |s: &Signature, r: usize, c: usize| s.0[r * GRID + c];
        let top_left = cell(&s, 0, 0);
        for (t, lands) in [
            (Turn::Clockwise, (0, l)),
            (Turn::Rotate180, (l, l)),
            (Turn::Counterclockwise, (l, 0)),
            (Turn::HorizontalFlip, (0, l)),
            (Turn::VerticalFlip, (l, 0)),
            (Turn::UpperLeftDiagonal, (0, 0)),
            (Turn::UpperRightDiagonal, (l, l)),
        ] {
            assert_eq!(cell(&s.turned(t), lands.0, lands.1), top_left, "{t:?}");
        }
        // Clockwise: the top row becomes the right column, read top to bottom.
        let cw = s.turned(Turn::Clockwise);
        for c in 0..GRID {
            assert_eq!(cell(&cw, c, l), cell(&s, 0, c));
        }
        // Four quarter turns, two flips: back where they started.
        let mut four = s;
        for _ in 0..4 {
            four = four.turned(Turn::Clockwise);
        }
        assert_eq!(four, s);
        for t in Turn::ALL {
            let back = match t {
                Turn::Clockwise => Turn::Counterclockwise,
                Turn::Counterclockwise => Turn::Clockwise,
                other => other,
            };
            assert_eq!(s.turned(t).turned(back), s, "{t:?}");
            assert_ne!(s.turned(t), s, "{t:?} changes an asymmetric grid");
        }
    }

    #[test]
    fn the_check_names_what_changed_and_tolerates_small_changes() {
        let s = ramp();
        let made = Geometry {
            width: 64,
            height: 48,
            signature: Some(s),
        };
        let scaled = Some((128, 96));
        assert_eq!(check(&made, scaled, (128, 96), || Some(s)), Ok(()));
        // Small changes everywhere (scaling, conversion) and a drawing in a corner.
        let mut noisy = s;
        for (i, v) in noisy.0.iter_mut().enumerate() {
            *v = v.saturating_add((i % 3) as u8);
        }
        noisy.0[0] = 255;
        assert_eq!(check(&made, scaled, (128, 96), || Some(noisy)), Ok(()));
        for t in Turn::ALL {
            let turned = || Some(s.turned(t));
            assert_eq!(
                check(&made, scaled, (128, 96), turned),
                Err(Mismatch::Turned(t))
            );
            assert_eq!(
                check(&made, None, (64, 48), turned),
                Err(Mismatch::Turned(t))
            );
        }
        // A symmetric picture (a flat grey frame) turned is the same picture.
        let flat = Signature([128; GRID * GRID]);
        let made_flat = Geometry {
            signature: Some(flat),
            ..made
        };
        assert_eq!(check(&made_flat, None, (64, 48), || Some(flat)), Ok(()));
        // Sizes first: the scalers' record, else the size made for; without signatures,
        // sizes only.
        assert_eq!(
            check(&made, scaled, (64, 48), || Some(s)),
            Err(Mismatch::Size {
                made: (128, 96),
                now: (64, 48)
            })
        );
        let rotated = check(&made, None, (48, 64), || None).unwrap_err();
        assert!(rotated.to_string().contains("rotated"), "{rotated}");
        assert_eq!(check(&made, scaled, (128, 96), || None), Ok(()));
        let unsigned = Geometry {
            signature: None,
            ..made
        };
        let half_turn = || Some(s.turned(Turn::Rotate180));
        assert_eq!(check(&unsigned, scaled, (128, 96), half_turn), Ok(()));
        assert_eq!(
            check(&made, Some((0, 0)), (64, 48), || Some(s)),
            Err(Mismatch::BeforeScaler)
        );
        // Another picture of the same size: tolerated after a scaler (drawing, blurring),
        // not where only a copy can have happened.
        let other = Signature(std::array::from_fn(|i| (3 * ((i + 8) % 64)) as u8));
        assert_eq!(check(&made, scaled, (128, 96), || Some(other)), Ok(()));
        assert_eq!(
            check(&made, None, (64, 48), || Some(other)),
            Err(Mismatch::Changed)
        );
        assert_eq!(check(&made, None, (64, 48), || Some(noisy)), Ok(()));
    }
}
