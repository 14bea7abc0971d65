//! Drawing in every format family: dots near the keypoints only, id labels that read on white
//! and on yellow.

use super::*;

/// One format of each family, converted and native.
const DRAW_FORMATS: [F; 23] = [
    // planar YUV, 8 and 10 bit
    F::Y444,
    F::Y42b,
    F::I420,
    F::Yv12,
    F::I42010le,
    F::I42210le,
    F::Y44410le,
    // semi-planar
    F::Nv12,
    F::Nv21,
    F::Nv16,
    F::P01010le,
    // packed YUV
    F::Yuy2,
    F::Uyvy,
    F::V210,
    F::Ayuv,
    // grey
    F::Gray8,
    F::Gray16Le,
    // RGB
    F::Rgb,
    F::Bgrx,
    F::Gbr,
    F::Rgb16,
    F::Argb64,
    F::Bgr10a2Le,
];

#[test]
fn drawing_shows_the_dots_near_the_keypoints_only_in_every_family() {
    let (w, h) = (90u32, 60u32);
    let style = Style::for_frame(w as usize, h as usize, 3, 0);
    for (format, overlay) in DRAW_FORMATS
        .into_iter()
        .flat_map(|f| DRAWERS.map(|o| (f, o)))
    {
        let info = video_info(format, w, h);
        let finfo = info.format_info();
        let sub = (0..finfo.n_components() as usize)
            .map(|c| finfo.w_sub()[c].max(finfo.h_sub()[c]))
            .max()
            .unwrap() as f32;
        let grey = finfo.is_gray();
        let mut hn = drawing("radius=3", &info, overlay);
        let input = timed(random_frame(&info, 31), 0);
        let (before, stride) = rgb_of(&input, &info);
        hn.push(input).unwrap();
        let out = hn.pull().unwrap();
        let (after, _) = rgb_of(&out, &info);
        let meta = read_meta(&out);
        let dots: Vec<(usize, f32, f32)> = meta
            .keypoints
            .iter()
            .map(|k| {
                let (x, y) = k.pixel(w, h);
                (
                    k.id as usize,
                    x.clamp(0.0, w as f32 - 0.5),
                    y.clamp(0.0, h as f32 - 0.5),
                )
            })
            .collect();
        // Subsampled chroma spreads a change over its sample's pixels.
        // (and the conversion back to RGB interpolates it over one more sample).
        let reach = style.dot_extent() + 1.0 + 2.0 * (2f32.powf(sub) - 1.0);
        let mut changed = 0;
        for y in 0..h as usize {
            for x in 0..w as usize {
                if pixel(&before, stride, x, y) == pixel(&after, stride, x, y) {
                    continue;
                }
                changed += 1;
                let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
                assert!(
                    dots.iter()
                        .any(|&(_, px, py)| (cx - px).hypot(cy - py) <= reach),
                    "{format:?}: ({x}, {y}) changed, far from every keypoint {dots:?}"
                );
            }
        }
        assert!(changed > 0, "{format:?}: nothing drawn");
        // The centre of each dot (not covered by a later one) has the id's colour.
        for (i, &(id, px, py)) in dots.iter().enumerate() {
            let covered = dots[i + 1..]
                .iter()
                .any(|&(_, qx, qy)| (px - qx).hypot(py - qy) <= style.dot_extent() + 1.0);
            if covered {
                continue;
            }
            let got = pixel(&after, stride, px as usize, py as usize);
            let want = palette_rgb(id);
            let close = if grey {
                (luma(got) - luma(want)).abs() <= 8.0
            } else {
                (0..3).all(|c| (got[c] as i32 - want[c] as i32).abs() <= 24)
            };
            assert!(
                close,
                "{format:?}: dot {id} at ({px}, {py}) is {got:?}, not {want:?}"
            );
        }
    }
}

#[test]
fn id_labels_read_on_white_and_yellow_in_every_family() {
    let (w, h) = (90u32, 60u32);
    let style = Style::for_frame(w as usize, h as usize, 3, 0);
    for (format, overlay) in DRAW_FORMATS
        .into_iter()
        .flat_map(|f| DRAWERS.map(|o| (f, o)))
    {
        let info = video_info(format, w, h);
        for bg in [[255u8, 255, 255], [255, 255, 0]] {
            let mut hn = drawing("draw-ids=true radius=3", &info, overlay);
            // The labels are where the element's layout put them: recomputed below from
            // the keypoints in the metadata.
            let input = timed(uniform_frame(&info, bg), 0);
            let bg_luma = luma(pixel(&rgb_of(&input, &info).0, 0, 0, 0));
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            let (rgb, stride) = rgb_of(&out, &info);
            let meta = read_meta(&out);
            let dots: Vec<Dot> = meta
                .keypoints
                .iter()
                .map(|k| {
                    let (x, y) = k.pixel(w, h);
                    Dot {
                        id: k.id as usize,
                        x,
                        y,
                    }
                })
                .collect();
            let o = Overlay::new(w as usize, h as usize, style, &dots, true, &[]);
            assert_eq!(o.labels.len(), dots.len(), "{format:?}");
            for l in &o.labels {
                assert!(
                    l.x0 >= 0 && l.y0 >= 0 && l.x1 <= w as i64 && l.y1 <= h as i64,
                    "{format:?}: label {l:?} outside the frame"
                );
                let (mut dark, mut light) = (0, 0);
                for y in l.y0..l.y1 {
                    for x in l.x0..l.x1 {
                        let v = luma(pixel(&rgb, stride, x as usize, y as usize));
                        if v < 80.0 {
                            dark += 1;
                        } else if v > 170.0 {
                            light += 1;
                        }
                    }
                }
                let area = (l.x1 - l.x0) * (l.y1 - l.y0);
                let what = format!("{format:?} on {bg:?}: label {l:?}");
                // A black box (most of it) with white digits (at least the 7 cells of a
                // "1"), nothing in between, standing out from the background.
                assert_eq!(dark + light, area, "{what}: {dark} dark, {light} light");
                assert!(
                    dark * 2 > area && light >= 7,
                    "{what}: {dark} dark, {light} light"
                );
                assert!(bg_luma - 80.0 > 120.0, "{what}: background {bg_luma}");
            }
        }
    }
}
