//! Video frames and images -> the model's square RGB input, and model coordinates back to
//! frame pixels. Handles the packed RGB layouts and the planar YUV layouts decoders emit.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Pixel layouts accepted as input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Rgbx,
    Bgrx,
    Argb,
    Abgr,
    Xrgb,
    Xbgr,
    /// Planar Y, U, V (4:2:0).
    I420,
    /// Y plane + interleaved UV plane (4:2:0).
    Nv12,
}

impl PixelFormat {
    /// (bytes per pixel, offsets of R, G, B) for packed formats.
    fn packed(self) -> Option<(usize, [usize; 3])> {
        Some(match self {
            PixelFormat::Rgb => (3, [0, 1, 2]),
            PixelFormat::Bgr => (3, [2, 1, 0]),
            PixelFormat::Rgba | PixelFormat::Rgbx => (4, [0, 1, 2]),
            PixelFormat::Bgra | PixelFormat::Bgrx => (4, [2, 1, 0]),
            PixelFormat::Argb | PixelFormat::Xrgb => (4, [1, 2, 3]),
            PixelFormat::Abgr | PixelFormat::Xbgr => (4, [3, 2, 1]),
            PixelFormat::I420 | PixelFormat::Nv12 => return None,
        })
    }

    fn planes(self) -> usize {
        match self {
            PixelFormat::I420 => 3,
            PixelFormat::Nv12 => 2,
            _ => 1,
        }
    }
}

/// YUV -> RGB conversion matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    #[default]
    Bt601,
    Bt709,
}

/// A borrowed frame: planes with their strides in bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub planes: [(&'a [u8], usize); 3],
    pub matrix: YuvMatrix,
    /// YUV sample range: full (0-255) or limited (16-235).
    pub full_range: bool,
}

impl<'a> FrameRef<'a> {
    /// A packed RGB-family frame.
    pub fn packed(
        format: PixelFormat,
        width: usize,
        height: usize,
        data: &'a [u8],
        stride: usize,
    ) -> Result<Self> {
        Self::new(format, width, height, [(data, stride), (&[], 0), (&[], 0)])
    }

    /// Any format; validates that the planes are large enough for the size and strides.
    pub fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        planes: [(&'a [u8], usize); 3],
    ) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Invalid(format!(
                "frame size {width}x{height} is empty"
            )));
        }
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        // Sizes come from the caller (caps, headers): overflow means "too large".
        let need: [(Option<usize>, usize); 3] = match format {
            PixelFormat::I420 => [(Some(width), height), (Some(cw), ch), (Some(cw), ch)],
            PixelFormat::Nv12 => [(Some(width), height), (cw.checked_mul(2), ch), (Some(0), 0)],
            f => [
                (
                    f.packed().and_then(|(bpp, _)| width.checked_mul(bpp)),
                    height,
                ),
                (Some(0), 0),
                (Some(0), 0),
            ],
        };
        for (i, &(row_bytes, rows)) in need.iter().enumerate().take(format.planes()) {
            let (data, stride) = planes[i];
            let needed = row_bytes.and_then(|r| {
                stride
                    .checked_mul(rows - 1)
                    .and_then(|b| b.checked_add(r))
                    .filter(|_| stride >= r)
            });
            if needed.is_none_or(|n| data.len() < n) {
                return Err(Error::Invalid(format!(
                    "{format:?} frame {width}x{height}: plane {i} has {} bytes with stride {stride}, needs rows of {} bytes x {rows}",
                    data.len(),
                    row_bytes.map_or_else(|| "too many".to_string(), |r| r.to_string()),
                )));
            }
        }
        Ok(Self {
            format,
            width,
            height,
            planes,
            matrix: YuvMatrix::Bt601,
            full_range: false,
        })
    }

    /// RGB in [0, 1] of the pixels `xs` of row `y`, into `out` (the format's branch taken
    /// once per row; YUV converted in a loop the compiler vectorises).
    fn gather_row(&self, y: usize, xs: &[usize], out: &mut [[f32; 3]], yuv: &mut Vec<[f32; 3]>) {
        if let Some((bpp, off)) = self.format.packed() {
            let (d, s) = self.planes[0];
            let row = &d[y * s..];
            for (o, &x) in out.iter_mut().zip(xs) {
                let p = &row[x * bpp..][..bpp];
                *o = [
                    p[off[0]] as f32 / 255.0,
                    p[off[1]] as f32 / 255.0,
                    p[off[2]] as f32 / 255.0,
                ];
            }
            return;
        }
        yuv.clear();
        let (yd, ys) = self.planes[0];
        let luma = &yd[y * ys..];
        match self.format {
            PixelFormat::I420 => {
                let (ud, us) = self.planes[1];
                let (vd, vs) = self.planes[2];
                let (ur, vr) = (&ud[(y / 2) * us..], &vd[(y / 2) * vs..]);
                yuv.extend(
                    xs.iter()
                        .map(|&x| [luma[x] as f32, ur[x / 2] as f32, vr[x / 2] as f32]),
                );
            }
            _ => {
                let (uv, s) = self.planes[1];
                let uvr = &uv[(y / 2) * s..];
                yuv.extend(xs.iter().map(|&x| {
                    let p = (x / 2) * 2;
                    [luma[x] as f32, uvr[p] as f32, uvr[p + 1] as f32]
                }));
            }
        }
        for (o, &[l, u, v]) in out.iter_mut().zip(yuv.iter()) {
            *o = yuv_to_rgb(l, u, v, self.matrix, self.full_range);
        }
    }

    /// RGB in [0, 1] of pixel (x, y) (the tests' reference for `gather_row`).
    #[cfg(test)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        if let Some((bpp, off)) = self.format.packed() {
            let (d, s) = self.planes[0];
            let p = y * s + x * bpp;
            return [
                d[p + off[0]] as f32 / 255.0,
                d[p + off[1]] as f32 / 255.0,
                d[p + off[2]] as f32 / 255.0,
            ];
        }
        let (yd, ys) = self.planes[0];
        let luma = yd[y * ys + x] as f32;
        let (u, v) = match self.format {
            PixelFormat::I420 => {
                let (ud, us) = self.planes[1];
                let (vd, vs) = self.planes[2];
                (
                    ud[(y / 2) * us + x / 2] as f32,
                    vd[(y / 2) * vs + x / 2] as f32,
                )
            }
            _ => {
                let (uv, s) = self.planes[1];
                let p = (y / 2) * s + (x / 2) * 2;
                (uv[p] as f32, uv[p + 1] as f32)
            }
        };
        yuv_to_rgb(luma, u, v, self.matrix, self.full_range)
    }
}

/// YUV (0-255 samples) -> RGB in [0, 1].
pub fn yuv_to_rgb(y: f32, u: f32, v: f32, m: YuvMatrix, full_range: bool) -> [f32; 3] {
    let (kr, kb) = match m {
        YuvMatrix::Bt601 => (0.299f32, 0.114f32),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
    };
    let kg = 1.0 - kr - kb;
    let (yy, cb, cr) = if full_range {
        (y / 255.0, (u - 128.0) / 255.0, (v - 128.0) / 255.0)
    } else {
        ((y - 16.0) / 219.0, (u - 128.0) / 224.0, (v - 128.0) / 224.0)
    };
    let r = yy + 2.0 * (1.0 - kr) * cr;
    let b = yy + 2.0 * (1.0 - kb) * cb;
    let g = (yy - kr * r - kb * b) / kg;
    [r.clamp(0.0, 1.0), g.clamp(0.0, 1.0), b.clamp(0.0, 1.0)]
}

/// How a non-square frame becomes the square model input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CropMode {
    /// Scale the whole frame into the square and pad the rest with black (nothing is lost).
    #[default]
    Letterbox,
    /// Scale the shorter side to the square and cut the centre (no padding, borders lost).
    CenterCrop,
    /// Resize each axis to the square on its own (aspect ratio not kept), with PIL's
    /// `resize(BILINEAR)` filter: what the reference's CelebA, DeepFashion and custom-image
    /// loaders do.
    Stretch,
}

impl CropMode {
    /// Every mode, in the order of the element's `crop-mode` enum values.
    pub const ALL: [CropMode; 3] = [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch];

    /// The canonical name: the CLI's `--crop` value, the element's `crop-mode` nick and the
    /// student file's `crop`.
    pub fn name(self) -> &'static str {
        match self {
            CropMode::Letterbox => "letterbox",
            CropMode::CenterCrop => "center-crop",
            CropMode::Stretch => "stretch",
        }
    }

    /// Other names [`FromStr`](std::str::FromStr) accepts for this mode.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            CropMode::Letterbox => &["pad"],
            CropMode::CenterCrop => &["crop"],
            CropMode::Stretch => &[],
        }
    }

    /// What the mode does, in one line (the CLI's help of each value).
    pub fn summary(self) -> &'static str {
        match self {
            CropMode::Letterbox => "Scale the whole frame into the square and pad with black",
            CropMode::CenterCrop => "Scale the shorter side to the square and cut the centre",
            CropMode::Stretch => {
                "Resize each axis on its own (PIL bilinear), as the reference's loaders"
            }
        }
    }
}

impl std::fmt::Display for CropMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CropMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s || m.aliases().contains(&s))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                Error::Invalid(format!("unknown crop mode {s:?} ({})", names.join(", ")))
            })
    }
}

/// A rectangle of a frame in pixels (continuous coordinates, corners at integers), such as
/// an object's box. It may reach past the frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Region {
    /// The box with `margin` of its width and height added on each side.
    pub fn grown(&self, margin: f64) -> Self {
        Self {
            x: self.x - self.w * margin,
            y: self.y - self.h * margin,
            w: self.w * (1.0 + 2.0 * margin),
            h: self.h * (1.0 + 2.0 * margin),
        }
    }

    /// The square the model sees of this box, as `mode` squares a frame: letterbox keeps
    /// the whole box (the square around it, black beside the box), centre-crop its middle
    /// square, stretch the box itself.
    pub fn squared(&self, mode: CropMode) -> Self {
        let side = match mode {
            CropMode::Letterbox => self.w.max(self.h),
            CropMode::CenterCrop => self.w.min(self.h),
            CropMode::Stretch => return *self,
        };
        Self {
            x: self.x + (self.w - side) / 2.0,
            y: self.y + (self.h - side) / 2.0,
            w: side,
            h: side,
        }
    }

    /// Whether the box has a positive, finite size and position.
    pub fn is_valid(&self) -> bool {
        [self.x, self.y, self.w, self.h]
            .iter()
            .all(|v| v.is_finite())
            && self.w > 0.0
            && self.h > 0.0
    }
}

/// The axis-aligned mapping between frame pixels and model-input pixels:
/// model = frame * scale + offset per axis (continuous pixel coordinates, corners at
/// integers). Letterbox and centre-crop scale both axes alike; stretch does not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub size: usize,
    pub width: usize,
    pub height: usize,
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Fit {
    pub fn new(width: usize, height: usize, size: usize, mode: CropMode) -> Self {
        let (w, h, s) = (width as f64, height as f64, size as f64);
        let (scale_x, scale_y) = match mode {
            CropMode::Letterbox => (s / w.max(h), s / w.max(h)),
            CropMode::CenterCrop => (s / w.min(h), s / w.min(h)),
            CropMode::Stretch => (s / w, s / h),
        };
        Self {
            size,
            width,
            height,
            scale_x,
            scale_y,
            offset_x: (s - w * scale_x) / 2.0,
            offset_y: (s - h * scale_y) / 2.0,
        }
    }

    /// `region` of a `width` x `height` frame resized onto the square, each axis on its own
    /// (square it first with [`Region::squared`] to keep the aspect ratio). What lies
    /// outside the frame is black, as the letterbox's padding.
    pub fn of_region(width: usize, height: usize, region: &Region, size: usize) -> Self {
        let s = size as f64;
        let (scale_x, scale_y) = (s / region.w, s / region.h);
        Self {
            size,
            width,
            height,
            scale_x,
            scale_y,
            offset_x: -region.x * scale_x,
            offset_y: -region.y * scale_y,
        }
    }

    /// Normalised model coordinates ([0, 1] over the square) -> frame pixels, clamped to the frame.
    pub fn to_frame(&self, nx: f32, ny: f32) -> (f32, f32) {
        let s = self.size as f64;
        let x = (nx as f64 * s - self.offset_x) / self.scale_x;
        let y = (ny as f64 * s - self.offset_y) / self.scale_y;
        (
            x.clamp(0.0, self.width as f64) as f32,
            y.clamp(0.0, self.height as f64) as f32,
        )
    }

    /// Frame pixels -> normalised model coordinates.
    pub fn to_model(&self, x: f32, y: f32) -> (f32, f32) {
        let s = self.size as f64;
        (
            ((x as f64 * self.scale_x + self.offset_x) / s) as f32,
            ((y as f64 * self.scale_y + self.offset_y) / s) as f32,
        )
    }
}

/// Resamples `frame` into a `[3, size, size]` planar RGB buffer in [0, 1]. Letterbox and
/// centre-crop: bilinear, with box supersampling when shrinking so small inputs do not alias.
/// Stretch: [`resize_pil_bilinear`].
pub fn to_model_input(frame: &FrameRef, size: usize, mode: CropMode) -> (Vec<f32>, Fit) {
    let fit = Fit::new(frame.width, frame.height, size, mode);
    if mode == CropMode::Stretch {
        return (resize_pil_bilinear(frame, size, size), fit);
    }
    (resample(frame, &fit, None), fit)
}

/// `region` of `frame` (squared by `mode`, see [`Region::squared`]) as the model's input,
/// with the bilinear supersampling of [`to_model_input`]; the fit maps back to the frame.
pub fn region_to_model_input(
    frame: &FrameRef,
    region: &Region,
    size: usize,
    mode: CropMode,
) -> Result<(Vec<f32>, Fit)> {
    if !region.is_valid() {
        return Err(Error::Invalid(format!(
            "region {region:?} of a {}x{} frame is empty or not finite",
            frame.width, frame.height
        )));
    }
    let fit = Fit::of_region(frame.width, frame.height, &region.squared(mode), size);
    // Letterbox pads the box with black, as it pads a frame: no other object beside it.
    let shown = (mode == CropMode::Letterbox).then_some(region);
    Ok((resample(frame, &fit, shown), fit))
}

/// The frame through `fit` (an affine map per axis), supersampled bilinearly; only what
/// lies in `shown` (all of the frame: `None`), black elsewhere.
fn resample(frame: &FrameRef, fit: &Fit, shown: Option<&Region>) -> Vec<f32> {
    let size = fit.size;
    let axis = |offset: f64, scale: f64, len: usize, span: (f64, f64)| {
        let inv = 1.0 / scale;
        let taps = (inv.ceil() as usize).clamp(1, 4);
        supersample_axis(size, offset, inv, taps, len, span)
    };
    let (sx, sy) = shown.map_or(
        (
            (f64::NEG_INFINITY, f64::INFINITY),
            (f64::NEG_INFINITY, f64::INFINITY),
        ),
        |r| ((r.x, r.x + r.w), (r.y, r.y + r.h)),
    );
    // The taps x taps supersampled bilinear filter is separable (its samples, their
    // bilinear weights and the letterbox's black are all per axis), so the frame is read
    // once per needed pixel, a row at a time, instead of four times per sample.
    let wx = axis(fit.offset_x, fit.scale_x, frame.width, sx);
    let wy = axis(fit.offset_y, fit.scale_y, frame.height, sy);
    let mut cols: Vec<usize> = wx.iter().flatten().map(|&(x, _)| x).collect();
    cols.sort_unstable();
    cols.dedup();
    let col_of = |x: usize| cols.binary_search(&x).expect("column gathered");
    let wx: Vec<Vec<(usize, f32)>> = wx
        .iter()
        .map(|t| t.iter().map(|&(x, w)| (col_of(x), w)).collect())
        .collect();
    let mut rows: Vec<usize> = wy.iter().flatten().map(|&(y, _)| y).collect();
    rows.sort_unstable();
    rows.dedup();
    // Horizontal pass over the needed rows, [row][size][3], in bands across threads.
    let mut horiz = vec![[0f32; 3]; rows.len() * size];
    const BAND: usize = 32;
    horiz
        .par_chunks_mut(BAND * size)
        .zip(rows.par_chunks(BAND))
        .for_each(|(band, ys)| {
            let mut line = vec![[0f32; 3]; cols.len()];
            let mut scratch = Vec::new();
            for (hrow, &y) in band.chunks_mut(size).zip(ys) {
                frame.gather_row(y, &cols, &mut line, &mut scratch);
                for (h, taps) in hrow.iter_mut().zip(&wx) {
                    for &(c, w) in taps {
                        for k in 0..3 {
                            h[k] += w * line[c][k];
                        }
                    }
                }
            }
        });
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (i, taps) in wy.iter().enumerate() {
        for &(y, w) in taps {
            let r = rows.binary_search(&y).expect("row gathered");
            for (j, h) in horiz[r * size..][..size].iter().enumerate() {
                for k in 0..3 {
                    out[k * plane + i * size + j] += w * h[k];
                }
            }
        }
    }
    out
}

/// Along one axis of `len` pixels: for each of `size` outputs, the input pixels of its
/// `taps` supersamples' bilinear interpolation with their weights (each sample's share
/// `1 / taps` included). Samples outside the frame, or outside `lo..hi`, contribute nothing
/// (letterbox black).
fn supersample_axis(
    size: usize,
    offset: f64,
    inv: f64,
    taps: usize,
    len: usize,
    (lo, hi): (f64, f64),
) -> Vec<Vec<(usize, f32)>> {
    (0..size)
        .map(|o| {
            let mut ws: Vec<(usize, f32)> = Vec::with_capacity(2 * taps);
            let mut add = |i: usize, w: f32| match ws.iter_mut().find(|(j, _)| *j == i) {
                Some((_, v)) => *v += w,
                None => ws.push((i, w)),
            };
            for t in 0..taps {
                let f = (o as f64 + (t as f64 + 0.5) / taps as f64 - offset) * inv;
                if f < lo.max(0.0) || f >= hi.min(len as f64) {
                    continue;
                }
                let c = (f - 0.5).clamp(0.0, (len - 1) as f64);
                let i0 = c.floor() as usize;
                let a = (c - i0 as f64) as f32;
                let share = 1.0 / taps as f32;
                add(i0, (1.0 - a) * share);
                add((i0 + 1).min(len - 1), a * share);
            }
            ws
        })
        .collect()
}

/// The taps of PIL's `BILINEAR` resampling along one axis (`Image.resize`, whole-image box):
/// output pixel `i` is the weighted sum of inputs `start..start + weights.len()`. The
/// triangle filter's support grows with the shrink factor (antialiasing), output pixel
/// centres map to `(i + 0.5) * in / out`, and taps outside the image are dropped and the
/// rest renormalised. Upscaling is plain bilinear with half-pixel centres.
pub fn pil_bilinear_taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support is 1
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; then clipped to the image.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let mut w: Vec<f64> = (lo..hi)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            (lo, w)
        })
        .collect()
}

/// The whole frame resized to `out_w x out_h` (planar RGB in [0, 1]) as PIL's
/// `Image.resize((out_w, out_h), BILINEAR)` computes it on float images: a horizontal pass
/// into f32, then a vertical one, each accumulating in f64. (On 8-bit images PIL rounds
/// both passes to integers: results differ from this by up to about 1/255.)
pub fn resize_pil_bilinear(frame: &FrameRef, out_w: usize, out_h: usize) -> Vec<f32> {
    let (w, h) = (frame.width, frame.height);
    let tx = pil_bilinear_taps(w, out_w);
    let ty = pil_bilinear_taps(h, out_h);
    // Horizontal pass over every input row: [h][out_w][3].
    let mut rows = vec![0f32; h * out_w * 3];
    let mut line = vec![[0f32; 3]; w];
    let (all, mut scratch): (Vec<usize>, _) = ((0..w).collect(), Vec::new());
    for y in 0..h {
        frame.gather_row(y, &all, &mut line, &mut scratch);
        for (i, (lo, wts)) in tx.iter().enumerate() {
            let mut acc = [0f64; 3];
            for (k, &wt) in wts.iter().enumerate() {
                let p = line[lo + k];
                for c in 0..3 {
                    acc[c] += f64::from(p[c]) * wt;
                }
            }
            for c in 0..3 {
                rows[(y * out_w + i) * 3 + c] = acc[c] as f32;
            }
        }
    }
    let plane = out_w * out_h;
    let mut out = vec![0f32; 3 * plane];
    for (j, (lo, wts)) in ty.iter().enumerate() {
        for i in 0..out_w {
            let mut acc = [0f64; 3];
            for (k, &wt) in wts.iter().enumerate() {
                let o = ((lo + k) * out_w + i) * 3;
                for c in 0..3 {
                    acc[c] += f64::from(rows[o + c]) * wt;
                }
            }
            for c in 0..3 {
                out[c * plane + j * out_w + i] = acc[c] as f32;
            }
        }
    }
    out
}

/// A foreground mask (`width x height` bytes, one per pixel; non-zero = foreground, so both
/// 0/1 and 0/255 masks work) resampled to the model input exactly like an image of that size
/// with `mode`: `[size, size]` weights in [0, 1].
pub fn mask_to_model_input(
    mask: &[u8],
    width: usize,
    height: usize,
    size: usize,
    mode: CropMode,
) -> Result<Vec<f32>> {
    if mask.len() != width * height {
        return Err(Error::Invalid(format!(
            "mask has {} values, expected {width}x{height}",
            mask.len()
        )));
    }
    let rgb: Vec<u8> = mask
        .iter()
        .flat_map(|&m| if m != 0 { [255u8; 3] } else { [0u8; 3] })
        .collect();
    let frame = FrameRef::packed(PixelFormat::Rgb, width, height, &rgb, width * 3)?;
    let (mut input, _) = to_model_input(&frame, size, mode);
    input.truncate(size * size);
    Ok(input)
}

/// Multiplies a planar RGB model input `[3, S, S]` by a mask `[S, S]` (the reference's
/// Human3.6M loader: image times foreground mask, after both are resized).
pub fn apply_mask(input: &mut [f32], mask: &[f32]) -> Result<()> {
    if input.len() != 3 * mask.len() {
        return Err(Error::Invalid(format!(
            "mask of {} pixels for an image of {} values (expected 3 per mask pixel)",
            mask.len(),
            input.len()
        )));
    }
    for plane in input.chunks_exact_mut(mask.len()) {
        for (v, m) in plane.iter_mut().zip(mask) {
            *v *= m;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
