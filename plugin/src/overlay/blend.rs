//! Drawing into the raw formats without a native [`Layout`]: the overlay is rendered into
//! ARGB/AYUV rectangles that GStreamer blends into the frame.

use super::canvas::Canvas;
use super::scene::Overlay;
use crate::formats::{Layout, Yuv};
use gst::glib;
use gst_video::prelude::*;

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
