//! Video frames and images -> the model's square RGB input, and model coordinates back to
//! frame pixels. Handles the packed RGB layouts and the planar YUV layouts decoders emit.

use crate::error::{Error, Result};

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

    /// RGB in [0, 1] of pixel (x, y).
    #[inline]
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
}

impl std::str::FromStr for CropMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "letterbox" | "pad" => Ok(CropMode::Letterbox),
            "center-crop" | "crop" => Ok(CropMode::CenterCrop),
            _ => Err(Error::Invalid(format!(
                "unknown crop mode {s:?} (letterbox, center-crop)"
            ))),
        }
    }
}

/// The similarity mapping between frame pixels and model-input pixels:
/// model = frame * scale + offset (continuous pixel coordinates, corners at integers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub size: usize,
    pub width: usize,
    pub height: usize,
    pub scale: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Fit {
    pub fn new(width: usize, height: usize, size: usize, mode: CropMode) -> Self {
        let (w, h, s) = (width as f64, height as f64, size as f64);
        let scale = match mode {
            CropMode::Letterbox => s / w.max(h),
            CropMode::CenterCrop => s / w.min(h),
        };
        Self {
            size,
            width,
            height,
            scale,
            offset_x: (s - w * scale) / 2.0,
            offset_y: (s - h * scale) / 2.0,
        }
    }

    /// Normalised model coordinates ([0, 1] over the square) -> frame pixels, clamped to the frame.
    pub fn to_frame(&self, nx: f32, ny: f32) -> (f32, f32) {
        let s = self.size as f64;
        let x = (nx as f64 * s - self.offset_x) / self.scale;
        let y = (ny as f64 * s - self.offset_y) / self.scale;
        (
            x.clamp(0.0, self.width as f64) as f32,
            y.clamp(0.0, self.height as f64) as f32,
        )
    }

    /// Frame pixels -> normalised model coordinates.
    pub fn to_model(&self, x: f32, y: f32) -> (f32, f32) {
        let s = self.size as f64;
        (
            ((x as f64 * self.scale + self.offset_x) / s) as f32,
            ((y as f64 * self.scale + self.offset_y) / s) as f32,
        )
    }
}

/// Resamples `frame` into a `[3, size, size]` planar RGB buffer in [0, 1] (bilinear, with
/// box supersampling when shrinking so small inputs do not alias).
pub fn to_model_input(frame: &FrameRef, size: usize, mode: CropMode) -> (Vec<f32>, Fit) {
    let fit = Fit::new(frame.width, frame.height, size, mode);
    let mut out = vec![0f32; 3 * size * size];
    let inv = 1.0 / fit.scale;
    let taps = (inv.ceil() as usize).clamp(1, 4);
    let (w, h) = (frame.width as f64, frame.height as f64);
    let plane = size * size;
    for i in 0..size {
        for j in 0..size {
            let mut acc = [0f32; 3];
            let mut n = 0usize;
            for ty in 0..taps {
                for tx in 0..taps {
                    let mx = j as f64 + (tx as f64 + 0.5) / taps as f64;
                    let my = i as f64 + (ty as f64 + 0.5) / taps as f64;
                    let fx = (mx - fit.offset_x) * inv;
                    let fy = (my - fit.offset_y) * inv;
                    n += 1;
                    if fx < 0.0 || fy < 0.0 || fx >= w || fy >= h {
                        continue; // letterbox padding stays black
                    }
                    let c = bilinear(frame, fx - 0.5, fy - 0.5);
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
            }
            for k in 0..3 {
                out[k * plane + i * size + j] = acc[k] / n as f32;
            }
        }
    }
    (out, fit)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_frame_of_model_size_is_copied_exactly() {
        let (w, h) = (4, 4);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        let f = FrameRef::packed(PixelFormat::Rgb, w, h, &data, w * 3).unwrap();
        let (t, fit) = to_model_input(&f, 4, CropMode::Letterbox);
        assert_eq!(fit.scale, 1.0);
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
        for mode in [CropMode::Letterbox, CropMode::CenterCrop] {
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
            let mode = if rng.below(2) == 0 {
                CropMode::Letterbox
            } else {
                CropMode::CenterCrop
            };
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
