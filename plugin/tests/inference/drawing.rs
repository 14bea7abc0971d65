//! Drawing: pixels change only near the keypoints, bytes pass untouched without drawing, and a
//! pose's skeleton is drawn along its segments; bad pose files.

use super::*;

#[test]
fn without_draw_output_bytes_equal_input_bytes() {
    use gst_video::VideoFormat as F;
    for format in [F::Rgb, F::I420, F::Nv12, F::Bgrx] {
        let (mut hn, info) = harness("", format, 50, 30);
        for i in 0..2 {
            let input = frame_buffer(&info, i);
            let reference = input.copy_deep().unwrap();
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            assert!(FrameKeypoints::from_buffer(&out).is_some());
            let (a, b) = (
                reference.map_readable().unwrap(),
                out.map_readable().unwrap(),
            );
            assert!(
                a.as_slice() == b.as_slice(),
                "{format:?}: bytes changed with draw=false"
            );
            assert_eq!(out.pts(), reference.pts());
        }
    }
}

#[test]
fn bad_or_mismatched_pose_files_fail_the_state_change_naming_the_file() {
    init();
    let cases = bad_pose_cases("pose");
    for (path, why) in cases {
        let desc = format!(
            "videotestsrc num-buffers=2 ! stablekeypoints {} pose={} ! fakesink",
            props(),
            path.display()
        );
        let err = run_pipeline(&desc, None).expect_err("pipeline must fail");
        let message = err.lines().next().unwrap_or_default();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(why),
            "{}: {err}",
            path.display()
        );
    }
}

#[test]
fn draw_changes_pixels_only_near_keypoints() {
    use gst_video::VideoFormat as F;
    // A dot of radius 3 with its two rings.
    let radius = gststablekeypoints::overlay::Style::new(3.0, 2.0).dot_extent();
    assert_eq!(radius, 5.0);
    for format in [F::Rgb, F::I420, F::Nv12, F::Rgba] {
        let (mut hn, info) = harness("draw=true radius=3", format, 90, 60);
        let input = frame_buffer(&info, 0);
        let reference = input.copy_deep().unwrap();
        hn.push(input).unwrap();
        let out = hn.pull().unwrap();
        let meta = read_meta(&out);
        let pts: Vec<(f32, f32)> = meta.keypoints.iter().map(|k| k.pixel(90, 60)).collect();
        let changed = changed_pixels(&reference, &out, &info);
        assert!(!changed.is_empty(), "{format:?}: nothing drawn");
        for (plane, x, y) in &changed {
            // Chroma samples cover 2x2 pixels: allow their half-diagonal.
            let slack = if *plane == 0 { 1.0 } else { 2.5 };
            let near = pts
                .iter()
                .any(|(px, py)| ((x - px).powi(2) + (y - py).powi(2)).sqrt() <= radius + slack);
            assert!(
                near,
                "{format:?}: plane {plane} changed at ({x}, {y}), far from {pts:?}"
            );
        }
        // Every keypoint got its dot: the first plane changed within the radius.
        for (px, py) in &pts {
            assert!(
                changed.iter().any(|(p, x, y)| *p == 0
                    && (x - px).abs() <= radius + 1.0
                    && (y - py).abs() <= radius + 1.0),
                "{format:?}: no dot at ({px}, {py})"
            );
        }
    }
}

/// Along the a-b segment `seg` (through the centre, several pixels long) the first plane of
/// `posed` is the skeleton colour, except under the keypoints' dots, drawn on top.
fn the_first_segment_is_white(
    posed: &gst::Buffer,
    info: &gst_video::VideoInfo,
    seg: ((f32, f32), (f32, f32)),
    style: &gststablekeypoints::overlay::Style,
) {
    use gst_video::VideoFormat as F;
    let (format, w, h) = (info.format(), info.width(), info.height());
    let dots: Vec<(f32, f32)> = read_meta(posed)
        .keypoints
        .iter()
        .map(|k| k.pixel(w, h))
        .collect();
    let (p, q) = seg;
    let len = ((q.0 - p.0).powi(2) + (q.1 - p.1).powi(2)).sqrt();
    assert!(len > 8.0, "{format:?}: segment a-b only {len} px long");
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(posed, info).unwrap();
    let (data, stride) = (
        frame.plane_data(0).unwrap(),
        frame.plane_stride()[0] as usize,
    );
    let full = info.colorimetry().range() == gst_video::VideoColorRange::Range0_255;
    for i in 0..=20 {
        let t = i as f32 / 20.0;
        let (x, y) = (
            (p.0 + t * (q.0 - p.0)) as usize,
            (p.1 + t * (q.1 - p.1)) as usize,
        );
        let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
        if dots
            .iter()
            .any(|&(dx, dy)| (cx - dx).hypot(cy - dy) <= style.dot_extent() + 1.0)
        {
            continue;
        }
        if format == F::Rgb {
            assert_eq!(
                &data[y * stride + x * 3..][..3],
                &[255, 255, 255],
                "({x}, {y})"
            );
        } else {
            let white = if full { 255 } else { 235 };
            assert_eq!(data[y * stride + x], white, "{format:?} ({x}, {y})");
        }
    }
}

#[test]
fn pose_skeleton_is_drawn_along_its_segments_and_nowhere_else() {
    use gst_video::VideoFormat as F;
    let (w, h) = (90u32, 60u32);
    let pose_prop = format!("pose={}", test_pose().display());
    // Drawn by the inference element (`draw=true pose=...`), and by the pose and overlay
    // elements after it.
    for (format, elements) in [F::Rgb, F::I420, F::Nv12]
        .into_iter()
        .flat_map(|f| [(f, false), (f, true)])
    {
        let run = |pose: bool| {
            let info = video_info(format, w, h);
            let mut hn = if elements {
                let pose = if pose {
                    format!("! stablekeypointspose {pose_prop}")
                } else {
                    String::new()
                };
                chain_harness(&format!(
                    "stablekeypoints {} {pose} ! stablekeypointsoverlay radius=4",
                    props()
                ))
            } else {
                let extra = if pose { pose_prop.as_str() } else { "" };
                harness(&format!("draw=true radius=4 {extra}"), format, w, h).0
            };
            hn.set_src_caps(info.to_caps().unwrap());
            hn.push(frame_buffer(&info, 3)).unwrap();
            (hn.pull().unwrap(), info)
        };
        let (plain, info) = run(false);
        let (posed, _) = run(true);
        let pose = read_meta(&posed).pose.unwrap();
        let clamp =
            |(x, y): (f32, f32)| (x.clamp(0.0, w as f32 - 0.5), y.clamp(0.0, h as f32 - 0.5));
        let pts: Vec<(f32, f32)> = pose
            .landmarks
            .iter()
            .map(|l| clamp(l.pixel(w, h)))
            .collect();
        let segs: Vec<((f32, f32), (f32, f32))> = pose
            .connections
            .iter()
            .map(|&[a, b]| (pts[a as usize], pts[b as usize]))
            .collect();
        // For radius=4: white lines 2 px wide outlined by 1 px of black on each side (2 px
        // from the line), landmarks of radius 2 outlined to 3; chroma samples cover 2x2.
        let style = gststablekeypoints::overlay::Style::for_frame(w as usize, h as usize, 4, 0);
        assert_eq!((style.line_width, style.ring), (2.0, 1.0));
        let changed = changed_pixels(&plain, &posed, &info);
        assert!(!changed.is_empty(), "{format:?}: no skeleton drawn");
        for (plane, x, y) in &changed {
            let slack = if *plane == 0 { 1.0f32 } else { 2.5 };
            let near_line = segs
                .iter()
                .any(|&(p, q)| segment_dist2(*x, *y, p, q) <= (2.0 + slack).powi(2));
            let near_dot = pts
                .iter()
                .any(|&(px, py)| (x - px).powi(2) + (y - py).powi(2) <= (3.0 + slack).powi(2));
            assert!(
                near_line || near_dot,
                "{format:?}: plane {plane} changed at ({x}, {y}), far from the skeleton {segs:?}"
            );
        }
        the_first_segment_is_white(&posed, &info, segs[0], &style);
    }
}
