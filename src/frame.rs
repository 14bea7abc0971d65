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
mod tests {
    use super::*;

    /// `to_model_input` as first written: every supersample interpolated on its own.
    fn model_input_by_samples(frame: &FrameRef, size: usize, mode: CropMode) -> Vec<f32> {
        let fit = Fit::new(frame.width, frame.height, size, mode);
        let mut out = vec![0f32; 3 * size * size];
        let inv = 1.0 / fit.scale_x;
        let taps = (inv.ceil() as usize).clamp(1, 4);
        let (w, h) = (frame.width as f64, frame.height as f64);
        let plane = size * size;
        for i in 0..size {
            for j in 0..size {
                let mut acc = [0f32; 3];
                for ty in 0..taps {
                    for tx in 0..taps {
                        let fx = (j as f64 + (tx as f64 + 0.5) / taps as f64 - fit.offset_x) * inv;
                        let fy = (i as f64 + (ty as f64 + 0.5) / taps as f64 - fit.offset_y) * inv;
                        if fx < 0.0 || fy < 0.0 || fx >= w || fy >= h {
                            continue;
                        }
                        let c = bilinear(frame, fx - 0.5, fy - 0.5);
                        for k in 0..3 {
                            acc[k] += c[k];
                        }
                    }
                }
                for k in 0..3 {
                    out[k * plane + i * size + j] = acc[k] / (taps * taps) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn separable_fit_equals_sampling_each_supersample() {
        let mut seed = 9u32;
        let mut byte = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 24) as u8
        };
        // Shrinking (1 to 4 taps), enlarging, odd sides, both YUV layouts and a packed one.
        for &(w, h) in &[
            (1920usize, 1080usize),
            (227, 128),
            (33, 57),
            (300, 301),
            (7, 5),
        ] {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let y: Vec<u8> = (0..w * h).map(|_| byte()).collect();
            let u: Vec<u8> = (0..cw * ch).map(|_| byte()).collect();
            let v: Vec<u8> = (0..cw * ch).map(|_| byte()).collect();
            let uv: Vec<u8> = (0..cw * ch * 2).map(|_| byte()).collect();
            let bgrx: Vec<u8> = (0..w * h * 4).map(|_| byte()).collect();
            let frames = [
                FrameRef::new(PixelFormat::I420, w, h, [(&y, w), (&u, cw), (&v, cw)]).unwrap(),
                FrameRef::new(PixelFormat::Nv12, w, h, [(&y, w), (&uv, cw * 2), (&[], 0)]).unwrap(),
                FrameRef::packed(PixelFormat::Bgrx, w, h, &bgrx, w * 4).unwrap(),
            ];
            for f in &frames {
                for mode in [CropMode::Letterbox, CropMode::CenterCrop] {
                    for size in [64, 128] {
                        let want = model_input_by_samples(f, size, mode);
                        let (got, _) = to_model_input(f, size, mode);
                        let err = got
                            .iter()
                            .zip(&want)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            err < 1e-5,
                            "{:?} {w}x{h} {mode:?} at {size}: {err}",
                            f.format
                        );
                    }
                }
            }
        }
    }
    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn a_region_is_the_frame_cut_to_it() {
        let (w, h) = (97usize, 61usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &rgb, w * 3).unwrap();
        // A square region inside the frame equals the frame cut to it (same pixels, letterbox
        // of a square pads nothing), and its fit maps model coordinates into the region.
        let (x0, y0, side) = (20usize, 9usize, 40usize);
        let cut: Vec<u8> = (y0..y0 + side)
            .flat_map(|y| rgb[(y * w + x0) * 3..][..side * 3].to_vec())
            .collect();
        let sub = FrameRef::packed(PixelFormat::Rgb, side, side, &cut, side * 3).unwrap();
        let region = Region {
            x: x0 as f64,
            y: y0 as f64,
            w: side as f64,
            h: side as f64,
        };
        for mode in [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch] {
            for size in [16, 32, 64] {
                let (want, _) = to_model_input(&sub, size, CropMode::CenterCrop);
                let (got, fit) = region_to_model_input(&frame, &region, size, mode).unwrap();
                // The outermost samples differ: the cut frame repeats its edge where the
                // region reads the frame's pixels beyond it.
                let inner = |v: &[f32]| -> Vec<f32> {
                    (0..3 * size * size)
                        .filter(|i| {
                            let (r, c) = (i / size % size, i % size);
                            (1..size - 1).contains(&r) && (1..size - 1).contains(&c)
                        })
                        .map(|i| v[i])
                        .collect()
                };
                assert!(
                    max_diff(&inner(&got), &inner(&want)) < 1e-6,
                    "{mode:?} at {size}"
                );
                let (x, y) = fit.to_frame(0.25, 0.75);
                assert!(
                    (x - (x0 as f32 + 10.0)).abs() < 1e-4 && (y - (y0 as f32 + 30.0)).abs() < 1e-4
                );
            }
        }
        // The whole frame as a region is the frame itself, in either squaring mode.
        let whole = Region {
            x: 0.0,
            y: 0.0,
            w: w as f64,
            h: h as f64,
        };
        for mode in [CropMode::Letterbox, CropMode::CenterCrop] {
            let (want, wfit) = to_model_input(&frame, 48, mode);
            let (got, gfit) = region_to_model_input(&frame, &whole, 48, mode).unwrap();
            assert!(max_diff(&got, &want) < 1e-6, "{mode:?}");
            assert_eq!(wfit.to_frame(0.3, 0.6), gfit.to_frame(0.3, 0.6));
        }
        // Letterbox pads a tall box with black beside it, not with the frame's pixels.
        let tall = Region {
            x: 30.0,
            y: 10.0,
            w: 20.0,
            h: 40.0,
        };
        let (lb, _) = region_to_model_input(&frame, &tall, 40, CropMode::Letterbox).unwrap();
        for c in 0..3 {
            for y in 0..40 {
                for x in (0..10).chain(30..40) {
                    assert_eq!(lb[c * 1600 + y * 40 + x], 0.0, "({x}, {y})");
                }
                assert!(lb[c * 1600 + y * 40 + 20] > 0.0 || c > 0);
            }
        }
        // Past the frame is black, and empty or non-finite regions are errors.
        let out = Region {
            x: -200.0,
            y: -200.0,
            w: 50.0,
            h: 50.0,
        };
        let (black, _) = region_to_model_input(&frame, &out, 16, CropMode::Letterbox).unwrap();
        assert!(black.iter().all(|&v| v == 0.0));
        for bad in [
            Region { w: 0.0, ..region },
            Region { h: -3.0, ..region },
            Region {
                x: f64::NAN,
                ..region
            },
            Region {
                w: f64::INFINITY,
                ..region
            },
        ] {
            assert!(region_to_model_input(&frame, &bad, 16, CropMode::Letterbox).is_err());
        }
    }

    #[test]
    fn regions_are_grown_and_squared_about_their_centre() {
        let r = Region {
            x: 10.0,
            y: 20.0,
            w: 40.0,
            h: 100.0,
        };
        assert_eq!(
            r.grown(0.1),
            Region {
                x: 6.0,
                y: 10.0,
                w: 48.0,
                h: 120.0
            }
        );
        assert_eq!(
            r.squared(CropMode::Letterbox),
            Region {
                x: -20.0,
                y: 20.0,
                w: 100.0,
                h: 100.0
            }
        );
        assert_eq!(
            r.squared(CropMode::CenterCrop),
            Region {
                x: 10.0,
                y: 50.0,
                w: 40.0,
                h: 40.0
            }
        );
        assert_eq!(r.squared(CropMode::Stretch), r);
    }

    fn bilinear(frame: &FrameRef, x: f64, y: f64) -> [f32; 3] {
        let x = x.clamp(0.0, (frame.width - 1) as f64);
        let y = y.clamp(0.0, (frame.height - 1) as f64);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = (
            (x0 + 1).min(frame.width - 1),
            (y0 + 1).min(frame.height - 1),
        );
        let (ax, ay) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
        let p00 = frame.rgb(x0, y0);
        let p01 = frame.rgb(x1, y0);
        let p10 = frame.rgb(x0, y1);
        let p11 = frame.rgb(x1, y1);
        let mut o = [0f32; 3];
        for k in 0..3 {
            let top = p00[k] + (p01[k] - p00[k]) * ax;
            let bot = p10[k] + (p11[k] - p10[k]) * ax;
            o[k] = top + (bot - top) * ay;
        }
        o
    }

    #[test]
    fn square_frame_of_model_size_is_copied_exactly() {
        let (w, h) = (4, 4);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        let f = FrameRef::packed(PixelFormat::Rgb, w, h, &data, w * 3).unwrap();
        let (t, fit) = to_model_input(&f, 4, CropMode::Letterbox);
        assert_eq!((fit.scale_x, fit.scale_y), (1.0, 1.0));
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    assert!(
                        (t[c * 16 + y * 4 + x] - data[(y * w + x) * 3 + c] as f32 / 255.0).abs()
                            < 1e-6
                    );
                }
            }
        }
    }

    #[test]
    fn letterbox_and_crop_mappings_round_trip() {
        for mode in [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch] {
            let fit = Fit::new(320, 180, 128, mode);
            let (nx, ny) = fit.to_model(100.0, 50.0);
            let (x, y) = fit.to_frame(nx, ny);
            assert!(
                (x - 100.0).abs() < 1e-3 && (y - 50.0).abs() < 1e-3,
                "{mode:?}"
            );
        }
        // Letterbox: 320x180 -> scale 0.4, 72 px of content height centred: bars of 28 px.
        let fit = Fit::new(320, 180, 128, CropMode::Letterbox);
        assert!((fit.offset_y - 28.0).abs() < 1e-9 && fit.offset_x == 0.0);
        // A point in the bar clamps to the frame edge.
        assert_eq!(fit.to_frame(0.5, 0.0).1, 0.0);
        // Stretch: each axis on its own, no offsets; the square's corners are the frame's.
        let fit = Fit::new(320, 180, 128, CropMode::Stretch);
        assert_eq!((fit.scale_x, fit.scale_y), (0.4, 128.0 / 180.0));
        assert_eq!((fit.offset_x, fit.offset_y), (0.0, 0.0));
        assert_eq!(fit.to_frame(1.0, 1.0), (320.0, 180.0));
        assert_eq!(fit.to_frame(0.25, 0.5), (80.0, 90.0));
        assert_eq!("stretch".parse::<CropMode>().unwrap(), CropMode::Stretch);
        for (s, mode) in [
            ("letterbox", CropMode::Letterbox),
            ("pad", CropMode::Letterbox),
            ("center-crop", CropMode::CenterCrop),
            ("crop", CropMode::CenterCrop),
        ] {
            assert_eq!(s.parse::<CropMode>().unwrap(), mode);
        }
        for mode in CropMode::ALL {
            assert_eq!(mode.name().parse::<CropMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), mode.name());
        }
        assert!("squash"
            .parse::<CropMode>()
            .unwrap_err()
            .to_string()
            .contains("stretch"));
    }

    #[test]
    fn pil_taps_by_hand() {
        // Upscaling 2 -> 4: plain bilinear, half-pixel centres, edges clamped.
        let t = pil_bilinear_taps(2, 4);
        assert_eq!(t[0], (0, vec![1.0]));
        assert_eq!(t[1], (0, vec![0.75, 0.25]));
        assert_eq!(t[2], (0, vec![0.25, 0.75]));
        assert_eq!(t[3], (1, vec![1.0]));
        // Halving 4 -> 2: the triangle widens to support 2, centres at 1 and 3.
        let t = pil_bilinear_taps(4, 2);
        // Output 0: centre 1, inputs 0..3 at distances 0.5, 0.5, 1.5 (/2): 0.75, 0.75, 0.25.
        assert_eq!(t[0].0, 0);
        let w: Vec<f64> = [0.75, 0.75, 0.25].iter().map(|v| v / 1.75).collect();
        for (a, b) in t[0].1.iter().zip(&w) {
            assert!((a - b).abs() < 1e-15);
        }
        for (_, w) in pil_bilinear_taps(37, 8)
            .iter()
            .chain(&pil_bilinear_taps(5, 64))
        {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn masks_are_binarised_resampled_and_applied() {
        // 4x2 mask, left half foreground (value 1 as in Human3.6M, 255 alike), stretched to 4.
        let mask = [1u8, 1, 0, 0, 255, 255, 0, 0];
        let m = mask_to_model_input(&mask, 4, 2, 4, CropMode::Stretch).unwrap();
        for row in m.chunks_exact(4) {
            assert_eq!(row, &[1.0, 1.0, 0.0, 0.0]);
        }
        let mut img: Vec<f32> = (0..48).map(|i| i as f32).collect();
        apply_mask(&mut img, &m).unwrap();
        assert_eq!(&img[16..20], &[16.0, 17.0, 0.0, 0.0]);
        assert!(apply_mask(&mut img, &m[..8]).is_err());
        assert!(mask_to_model_input(&mask, 3, 2, 4, CropMode::Stretch).is_err());
    }

    #[test]
    fn letterbox_pads_black_and_keeps_content() {
        let (w, h) = (8, 4);
        let data = vec![255u8; w * h * 4];
        let f = FrameRef::packed(PixelFormat::Bgrx, w, h, &data, w * 4).unwrap();
        let (t, _) = to_model_input(&f, 8, CropMode::Letterbox);
        assert_eq!(t[0], 0.0); // top bar
        assert!((t[4 * 8 + 4] - 1.0).abs() < 1e-6); // middle row
    }

    #[test]
    fn yuv_formats_agree_with_rgb() {
        // Neutral chroma, limited range: grey level (Y - 16) / 219.
        let (w, h) = (4, 2);
        let y = vec![126u8; w * h];
        let u = vec![128u8; 2];
        let v = vec![128u8; 2];
        let f = FrameRef::new(PixelFormat::I420, w, h, [(&y, w), (&u, 2), (&v, 2)]).unwrap();
        let c = f.rgb(3, 1);
        assert!(c.iter().all(|&x| (x - 110.0 / 219.0).abs() < 1e-6), "{c:?}");
        let uv = vec![128u8; 4];
        let f = FrameRef::new(PixelFormat::Nv12, w, h, [(&y, w), (&uv, 4), (&[], 0)]).unwrap();
        assert_eq!(f.rgb(2, 0), c);
        // Pure red in BT.601 limited range: Y=81, U=90, V=240.
        let r = yuv_to_rgb(81.0, 90.0, 240.0, YuvMatrix::Bt601, false);
        assert!(
            (r[0] - 1.0).abs() < 0.01 && r[1] < 0.01 && r[2] < 0.02,
            "{r:?}"
        );
    }

    #[test]
    fn huge_sizes_and_strides_are_errors_not_overflows() {
        // Regression (fuzz target `frame`): `width * bpp` and `stride * (rows - 1)`
        // overflowed (a panic with overflow checks, a bogus size check without).
        let data = vec![0u8; 64];
        let m = usize::MAX;
        for (w, h, stride) in [
            (m, 1, 3),
            (m / 3 + 1, 1, m),
            (4, m, m / 2),
            (1, 3, m),
            (2, 2, m),
        ] {
            assert!(FrameRef::packed(PixelFormat::Rgb, w, h, &data, stride).is_err());
            assert!(FrameRef::packed(PixelFormat::Bgrx, w, h, &data, stride).is_err());
        }
        let e = FrameRef::new(PixelFormat::Nv12, m, 2, [(&data, m), (&data, m), (&[], 0)]);
        assert!(e.unwrap_err().to_string().contains("plane 0"));
        let planes = [(&data[..], 4), (&data[..], m), (&data[..], 2)];
        assert!(FrameRef::new(PixelFormat::I420, 4, 4, planes).is_err());
    }

    /// Stable stand-in for the `frame` fuzz target (fuzz/): seeded random layouts either
    /// are rejected or resample in bounds to colours in [0, 1].
    #[test]
    fn random_layouts_are_rejected_or_read_in_bounds() {
        use crate::ops::rng::Rng;
        const FORMATS: [PixelFormat; 12] = [
            PixelFormat::Rgb,
            PixelFormat::Bgr,
            PixelFormat::Rgba,
            PixelFormat::Bgra,
            PixelFormat::Rgbx,
            PixelFormat::Bgrx,
            PixelFormat::Argb,
            PixelFormat::Abgr,
            PixelFormat::Xrgb,
            PixelFormat::Xbgr,
            PixelFormat::I420,
            PixelFormat::Nv12,
        ];
        let mut rng = Rng::new(6);
        let data: Vec<u8> = (0..2048).map(|_| rng.below(256) as u8).collect();
        let mut accepted = 0;
        for _ in 0..4000 {
            let size = |rng: &mut Rng| match rng.below(8) {
                0 => rng.next_u64() as usize,
                1 => usize::MAX - rng.below(4),
                _ => rng.below(40),
            };
            let (w, h) = (size(&mut rng), size(&mut rng));
            let plane = |rng: &mut Rng| {
                let start = rng.below(data.len() + 1);
                let len = rng.below(data.len() - start + 1);
                (&data[start..start + len], size(rng))
            };
            let planes = [plane(&mut rng), plane(&mut rng), plane(&mut rng)];
            let format = FORMATS[rng.below(FORMATS.len())];
            let Ok(mut f) = FrameRef::new(format, w, h, planes) else {
                continue;
            };
            accepted += 1;
            f.full_range = rng.below(2) == 0;
            let mode = [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch][rng.below(3)];
            let (t, _) = to_model_input(&f, 1 + rng.below(12), mode);
            assert!(
                t.iter().all(|v| (0.0..=1.0).contains(v)),
                "{format:?} {w}x{h}"
            );
        }
        assert!(
            accepted > 50,
            "too few valid layouts to mean anything: {accepted}"
        );
    }

    #[test]
    fn short_planes_are_rejected() {
        let data = vec![0u8; 10];
        let e = FrameRef::packed(PixelFormat::Rgb, 4, 4, &data, 12).unwrap_err();
        assert!(e.to_string().contains("plane 0"), "{e}");
        assert!(FrameRef::packed(PixelFormat::Rgb, 0, 4, &data, 12).is_err());
    }
}
