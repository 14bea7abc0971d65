//! The raw formats the elements take: which ones the core reads and the overlay draws
//! natively, their pixel layouts and colour conversion ([`Layout`], [`Yuv`]), and the caps
//! of the pad templates (every raw format, native ones first).

use gst_video::prelude::*;
use stablekeypoints::frame::YuvMatrix;
use stablekeypoints::{FrameRef, PixelFormat};

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

/// How the element reads and draws a format without conversion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Native {
    /// The core's name for the frame (YV12 is read as I420 with its chroma planes swapped).
    pub format: PixelFormat,
    pub layout: Layout,
    pub swap_uv: bool,
}

pub(crate) fn native(f: gst_video::VideoFormat) -> Option<Native> {
    use gst_video::VideoFormat as V;
    let packed = |format, bpp, rgb, alpha| Native {
        format,
        layout: Layout::Packed { bpp, rgb, alpha },
        swap_uv: false,
    };
    let planar = |format, layout, swap_uv| Native {
        format,
        layout,
        swap_uv,
    };
    Some(match f {
        V::Rgb => packed(PixelFormat::Rgb, 3, [0, 1, 2], None),
        V::Bgr => packed(PixelFormat::Bgr, 3, [2, 1, 0], None),
        V::Rgba => packed(PixelFormat::Rgba, 4, [0, 1, 2], Some(3)),
        V::Bgra => packed(PixelFormat::Bgra, 4, [2, 1, 0], Some(3)),
        V::Rgbx => packed(PixelFormat::Rgbx, 4, [0, 1, 2], None),
        V::Bgrx => packed(PixelFormat::Bgrx, 4, [2, 1, 0], None),
        V::Argb => packed(PixelFormat::Argb, 4, [1, 2, 3], Some(0)),
        V::Abgr => packed(PixelFormat::Abgr, 4, [3, 2, 1], Some(0)),
        V::Xrgb => packed(PixelFormat::Xrgb, 4, [1, 2, 3], None),
        V::Xbgr => packed(PixelFormat::Xbgr, 4, [3, 2, 1], None),
        V::I420 => planar(PixelFormat::I420, Layout::I420, false),
        V::Yv12 => planar(PixelFormat::I420, Layout::I420, true),
        V::Nv12 => planar(PixelFormat::Nv12, Layout::Nv12, false),
        _ => return None,
    })
}

/// Formats the element reads and draws in place, first in the caps (preferred).
const NATIVE_FORMATS: [gst_video::VideoFormat; 13] = {
    use gst_video::VideoFormat as V;
    [
        V::I420,
        V::Yv12,
        V::Nv12,
        V::Rgb,
        V::Bgr,
        V::Rgba,
        V::Bgra,
        V::Rgbx,
        V::Bgrx,
        V::Argb,
        V::Abgr,
        V::Xrgb,
        V::Xbgr,
    ]
};

/// Formats of the pad templates: the native ones, then every other raw format of this
/// GStreamer (those with pack/unpack functions, which `VideoConverter` converts to RGB and
/// `gst_video_overlay_composition_blend` draws into).
pub(crate) fn formats() -> Vec<gst_video::VideoFormat> {
    NATIVE_FORMATS
        .into_iter()
        .chain(gst_video::VideoFormat::iter_raw().filter(|f| !NATIVE_FORMATS.contains(f)))
        .collect()
}

/// The core's YUV matrix for this frame, if the core converts it (RGB frames need none).
pub(crate) fn core_matrix(info: &gst_video::VideoInfo) -> Option<YuvMatrix> {
    use gst_video::VideoColorMatrix as M;
    match info.colorimetry().matrix() {
        M::Bt709 => Some(YuvMatrix::Bt709),
        M::Bt601 | M::Unknown => Some(YuvMatrix::Bt601),
        _ => None,
    }
}

/// Whether the core reads frames of these caps itself (otherwise they are converted).
pub(crate) fn core_reads(info: &gst_video::VideoInfo) -> bool {
    native(info.format()).is_some() && (info.is_rgb() || core_matrix(info).is_some())
}

/// Overlay colours in the frame's own YUV matrix and range.
pub(crate) fn yuv_of(info: &gst_video::VideoInfo) -> Yuv {
    let c = info.colorimetry();
    let full = c.range() == gst_video::VideoColorRange::Range0_255;
    match c.matrix().kr_kb() {
        Ok((kr, kb)) => Yuv::with_coefficients(kr as f32, kb as f32, full),
        Err(_) => Yuv::new(YuvMatrix::Bt601, full),
    }
}

/// The frame as the core sees it, for caps that [`core_reads`].
pub(crate) fn frame_ref<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
    info: &gst_video::VideoInfo,
) -> Result<FrameRef<'a>, String> {
    let n = native(info.format()).ok_or_else(|| format!("unsupported format {}", info.format()))?;
    let planes = frame.planes_data();
    let strides = frame.plane_stride();
    let stride = |i: usize| strides.get(i).map_or(0, |&s| s.max(0) as usize);
    let (u, v) = if n.swap_uv { (2, 1) } else { (1, 2) };
    let mut f = FrameRef::new(
        n.format,
        info.width() as usize,
        info.height() as usize,
        [
            (planes[0], stride(0)),
            (planes[u], stride(u)),
            (planes[v], stride(v)),
        ],
    )
    .map_err(|e| e.to_string())?;
    f.matrix = core_matrix(info).unwrap_or(YuvMatrix::Bt601);
    f.full_range = info.colorimetry().range() == gst_video::VideoColorRange::Range0_255;
    Ok(f)
}

/// Why caps that the pad template does not take are refused, for the warning.
pub(crate) fn refusal_reason(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return "no caps".into();
    };
    if s.name() != "video/x-raw" {
        return format!(
            "{} is not raw video (decode it first, e.g. with decodebin)",
            s.name()
        );
    }
    if let Some(f) = caps.features(0) {
        let system = f.size() == 1 && f.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY);
        if !f.is_any() && !system {
            return format!(
                "buffers with the caps features {f} are not supported: the element reads and \
                 draws frames in system memory, so download them first (e.g. gldownload for \
                 GL memory, cudadownload for CUDA memory)"
            );
        }
    }
    match s.get::<&str>("format") {
        Ok(f) if !formats().iter().any(|g| g.to_str() == f) => {
            format!("format {f} is not a raw format that GStreamer converts to RGB")
        }
        _ => "they do not match the element's caps (see gst-inspect-1.0 for the caps of this element)".into(),
    }
}

/// The pad template caps of the video elements: every raw format in system memory.
pub(crate) fn template_caps() -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format_list(formats())
        .build()
}

/// The pad template caps of the metadata-only elements: raw video of any format, in any
/// memory (they never touch the pixels).
pub(crate) fn any_video_caps() -> gst::Caps {
    gst::Caps::builder("video/x-raw").any_features().build()
}

/// An always-present `src` and `sink` pad template with these caps.
pub(crate) fn pad_templates(caps: &gst::Caps) -> Vec<gst::PadTemplate> {
    [
        ("src", gst::PadDirection::Src),
        ("sink", gst::PadDirection::Sink),
    ]
    .into_iter()
    .map(|(name, dir)| {
        gst::PadTemplate::new(name, dir, gst::PadPresence::Always, caps).expect("valid template")
    })
    .collect()
}
