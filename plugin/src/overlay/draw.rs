//! One frame's drawing from its metadata, shared by the `stablekeypointsoverlay` element and
//! the inference element's `draw=true`, so that both draw the same pixels.

use super::blend::Blender;
use super::canvas::Canvas;
use super::scene::{object_rgb, Dot, ObjectMark, Overlay, Skeleton, Style};
use crate::formats::{native, yuv_of};
pub use crate::meta::dlstreamer::Foreign;
use crate::meta::FrameKeypoints;
use gst::glib;
use gst_video::prelude::*;

/// What to draw and how big.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrawSettings {
    /// Dot radius in pixels; 0 = from the frame.
    pub radius: u32,
    /// Skeleton line width in pixels; 0 = from the radius.
    pub line_width: u32,
    /// Draw each point's id (for another producer's points: their index).
    pub ids: bool,
    /// Points whose DL Streamer confidence is lower are not drawn; ours have 1 when visible
    /// and 0 otherwise (see [`crate::meta::dlstreamer::keypoints_tensor`]).
    pub min_confidence: f32,
}

impl Default for DrawSettings {
    fn default() -> Self {
        Self {
            radius: 0,
            line_width: 0,
            ids: false,
            min_confidence: 0.5,
        }
    }
}

/// Lays out a `width` x `height` frame's drawing: our keypoints (visible ones unless
/// `min_confidence` is 0 or less; positions are normalised, so this holds after a scaler)
/// with the pose skeleton under them, and every foreign keypoint tensor (points whose
/// confidence reaches `min_confidence`, joined by their skeleton where both ends are
/// drawn, as `gvawatermark` does).
pub fn scene(
    width: u32,
    height: u32,
    ours: Option<&FrameKeypoints>,
    foreign: &[Foreign],
    s: &DrawSettings,
) -> Overlay {
    scene_all(
        width,
        height,
        ours.map(std::slice::from_ref).unwrap_or(&[]),
        foreign,
        s,
    )
}

/// [`scene`] for every set of keypoints of a frame: the whole frame's as [`scene`] draws
/// them, and each object's (top-down inference) in the object's colour ([`object_rgb`]),
/// with its box outlined in that colour, its pose skeleton, and with `ids` the object's id
/// beside the box (in place of its keypoints' ids).
pub fn scene_all(
    width: u32,
    height: u32,
    sets: &[FrameKeypoints],
    foreign: &[Foreign],
    s: &DrawSettings,
) -> Overlay {
    let ours = sets.iter().find(|f| f.object.is_none());
    let mut dots = Vec::new();
    let mut landmarks: Vec<(f32, f32)> = Vec::new();
    let mut connections: &[[u32; 2]] = &[];
    if let Some(f) = ours {
        dots.extend(shown_dots(f, width, height, s.min_confidence));
        if let Some(p) = &f.pose {
            landmarks = pose_pixels(f, width, height);
            connections = &p.connections;
        }
    }
    let tensors = foreign_lines(foreign, s.min_confidence, &mut dots);
    let mut skeletons = vec![Skeleton {
        points: &landmarks,
        connections,
        joints: true,
    }];
    skeletons.extend(tensors.iter().map(|(points, lines)| Skeleton {
        points,
        connections: lines,
        joints: false,
    }));
    let objects: Vec<(&FrameKeypoints, Vec<(f32, f32)>)> = sets
        .iter()
        .filter(|f| f.object.is_some())
        .map(|f| (f, pose_pixels(f, width, height)))
        .collect();
    skeletons.extend(objects.iter().map(|(f, landmarks)| Skeleton {
        points: landmarks,
        connections: f.pose.as_ref().map_or(&[], |p| &p.connections),
        joints: true,
    }));
    let marks = objects
        .iter()
        .filter_map(|(f, _)| object_mark(f, width, height, s.min_confidence))
        .collect();
    let (w, h) = (width as usize, height as usize);
    let style = Style::for_frame(w, h, s.radius, s.line_width);
    Overlay::new(w, h, style, &dots, s.ids, &skeletons).with_objects(marks, s.ids)
}

/// The keypoints of `f` that are drawn, in pixels of a `width` x `height` frame.
fn shown_dots(
    f: &FrameKeypoints,
    width: u32,
    height: u32,
    min_confidence: f32,
) -> impl Iterator<Item = Dot> + '_ {
    let shown = move |visible: bool| f32::from(u8::from(visible)) >= min_confidence;
    f.keypoints
        .iter()
        .filter(move |k| shown(k.visible))
        .map(move |k| {
            let (x, y) = k.pixel(width, height);
            Dot {
                id: k.id as usize,
                x,
                y,
            }
        })
}

/// The pose landmarks of `f` in pixels (none without a pose).
fn pose_pixels(f: &FrameKeypoints, width: u32, height: u32) -> Vec<(f32, f32)> {
    f.pose.as_ref().map_or_else(Vec::new, |p| {
        p.landmarks.iter().map(|l| l.pixel(width, height)).collect()
    })
}

/// Per tensor: its points in pixels and the lines between drawn ones.
type Lines = (Vec<(f32, f32)>, Vec<[u32; 2]>);

/// The foreign tensors' points and lines; their shown points are added to `dots`.
fn foreign_lines(foreign: &[Foreign], min_confidence: f32, dots: &mut Vec<Dot>) -> Vec<Lines> {
    let mut tensors: Vec<Lines> = Vec::new();
    for (t, rect) in foreign {
        let points = t.pixels(*rect);
        let shown: Vec<bool> = (0..points.len())
            .map(|i| t.shown(i, min_confidence))
            .collect();
        dots.extend(
            points
                .iter()
                .enumerate()
                .filter(|&(i, _)| shown[i])
                .map(|(i, &(x, y))| Dot { id: i, x, y }),
        );
        let lines = t
            .connections
            .iter()
            .filter(|[a, b]| shown[*a] && shown[*b])
            .map(|&[a, b]| [a as u32, b as u32])
            .collect();
        tensors.push((points, lines));
    }
    tensors
}

/// An object's box, colour and drawn keypoints (`None` for the frame's own set).
fn object_mark(
    f: &FrameKeypoints,
    width: u32,
    height: u32,
    min_confidence: f32,
) -> Option<ObjectMark> {
    let o = f.object.as_ref()?;
    let (x, y, bw, bh) = o.rect_in(width, height);
    let (x, y) = (i64::from(x), i64::from(y));
    Some(ObjectMark {
        id: o.id,
        colour: object_rgb(o.id),
        rect: [x, y, x + i64::from(bw), y + i64::from(bh)],
        dots: shown_dots(f, width, height, min_confidence).collect(),
        label: None,
    })
}

/// Renders `overlay` into a mapped frame: straight into the planes of the formats with a
/// native layout, by blending into the others (through `blender`, which keeps its buffers
/// for the next frame).
pub fn render(
    frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    overlay: &Overlay,
    blender: &mut Blender,
) -> Result<(), glib::BoolError> {
    let info = frame.info().clone();
    let yuv = yuv_of(&info);
    let Some(n) = native(info.format()) else {
        return blender.blend(frame, overlay, yuv);
    };
    let strides: Vec<usize> = frame
        .plane_stride()
        .iter()
        .map(|&v| v.max(0) as usize)
        .collect();
    let stride = |i: usize| strides.get(i).copied().unwrap_or(0);
    let [p0, p1, p2, _] = frame.planes_data_mut();
    let (u, v, su, sv) = if n.swap_uv {
        (p2, p1, stride(2), stride(1))
    } else {
        (p1, p2, stride(1), stride(2))
    };
    Canvas {
        layout: n.layout,
        width: info.width() as usize,
        height: info.height() as usize,
        planes: [(p0, stride(0)), (u, su), (v, sv)],
        yuv,
        origin: (0, 0),
    }
    .render(overlay);
    Ok(())
}

/// Draws `overlay` into `buffer` (frames of `info`), mapping it only if there is something
/// to draw. Errors say what failed.
pub fn draw_buffer(
    buffer: &mut gst::BufferRef,
    info: &gst_video::VideoInfo,
    overlay: &Overlay,
    blender: &mut Blender,
) -> Result<(), String> {
    if overlay.is_empty() {
        return Ok(());
    }
    let mut vf = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
        .map_err(|e| format!("cannot map the frame for drawing: {e}"))?;
    render(&mut vf, overlay, blender).map_err(|e| format!("cannot blend the overlay: {e}"))
}
