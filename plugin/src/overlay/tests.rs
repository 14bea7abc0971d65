//! Drawing tests on plain byte buffers.

use super::scene::{BLACK, PALETTE, WHITE};
use super::*;
use stablekeypoints::frame::YuvMatrix;

fn rgb_canvas(buf: &mut [u8], w: usize, h: usize) -> Canvas<'_> {
    Canvas {
        layout: Layout::Packed {
            bpp: 3,
            rgb: [0, 1, 2],
            alpha: None,
        },
        width: w,
        height: h,
        planes: [(buf, w * 3), (&mut [], 0), (&mut [], 0)],
        yuv: Yuv::default(),
        origin: (0, 0),
    }
}

/// An RGB frame of `bg` with `dots` (and ids) drawn at this style.
fn draw_rgb(
    w: usize,
    h: usize,
    bg: [u8; 3],
    style: Style,
    dots: &[Dot],
    ids: bool,
) -> (Vec<u8>, Overlay) {
    let mut buf: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
    let o = Overlay::new(w, h, style, dots, ids, &[]);
    rgb_canvas(&mut buf, w, h).render(&o);
    (buf, o)
}

fn px(buf: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
    let p = (y * w + x) * 3;
    [buf[p], buf[p + 1], buf[p + 2]]
}

fn luma([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

fn dot(id: usize, x: f32, y: f32) -> Dot {
    Dot { id, x, y }
}

fn joined<'a>(points: &'a [(f32, f32)], connections: &'a [[u32; 2]]) -> Skeleton<'a> {
    Skeleton {
        points,
        connections,
        joints: true,
    }
}

#[test]
fn a_dot_is_a_coloured_disc_in_a_black_and_a_white_ring() {
    let (w, h) = (30, 30);
    let style = Style::new(5.0, 2.0);
    assert_eq!(style.ring, 1.0);
    let (buf, _) = draw_rgb(w, h, [90, 90, 90], style, &[dot(1, 15.0, 15.0)], false);
    // Along the row through the centre (pixel centres at x + 0.5).
    assert_eq!(px(&buf, w, 15, 15), palette_rgb(1));
    assert_eq!(px(&buf, w, 19, 15), palette_rgb(1)); // 4.5 from the centre
    assert_eq!(px(&buf, w, 20, 15), BLACK); // 5.5
    assert_eq!(px(&buf, w, 21, 15), WHITE); // 6.5
    assert_eq!(px(&buf, w, 22, 15), [90, 90, 90]); // 7.5
    assert_eq!(px(&buf, w, 9, 15), BLACK); // 5.5 to the left
    assert_eq!(px(&buf, w, 8, 15), WHITE); // 6.5
    assert_eq!(px(&buf, w, 7, 15), [90, 90, 90]); // 7.5
    let changed = (0..w * h)
        .filter(|&i| buf[i * 3..i * 3 + 3] != [90, 90, 90])
        .count();
    // A disc of radius 7: pi 49 = 154.
    assert!((140..=170).contains(&changed), "{changed}");
}

#[test]
fn points_outside_are_clamped_and_never_panic() {
    let (w, h) = (7, 5);
    let mut buf = vec![0u8; w * h * 3];
    let dots = [
        dot(0, -50.0, 2.0),
        dot(2, 100.0, 100.0),
        dot(3, f32::NAN, 1.0),
    ];
    let o = Overlay::new(w, h, Style::new(0.0, 1.0), &dots, true, &[]);
    assert_eq!(o.dots.len(), 2);
    rgb_canvas(&mut buf, w, h).render(&o);
    // Radius 0: the pixel under each clamped point has the colour; labels drawn after
    // may cover it, so look without ids.
    let mut buf = vec![0u8; w * h * 3];
    let o = Overlay::new(w, h, Style::new(0.0, 1.0), &dots, false, &[]);
    rgb_canvas(&mut buf, w, h).render(&o);
    assert_eq!(px(&buf, w, 0, 2), palette_rgb(0));
    assert_eq!(px(&buf, w, w - 1, h - 1), palette_rgb(2));
    // Nothing at all in an empty frame.
    let o = Overlay::new(0, 0, Style::new(3.0, 1.0), &dots, true, &[]);
    assert!(o.is_empty() && o.bands().is_empty());
}

#[test]
fn yuv_colours_round_trip_through_the_core_conversion() {
    for (matrix, full) in [(YuvMatrix::Bt601, false), (YuvMatrix::Bt709, true)] {
        let yuv = Yuv::new(matrix, full);
        for c in PALETTE.iter().chain([&BLACK, &WHITE]) {
            let [y, u, v] = yuv.convert(*c);
            let back =
                stablekeypoints::frame::yuv_to_rgb(y as f32, u as f32, v as f32, matrix, full);
            for k in 0..3 {
                assert!(
                    (back[k] * 255.0 - c[k] as f32).abs() < 4.0,
                    "{c:?} {back:?}"
                );
            }
        }
    }
}

#[test]
fn i420_and_nv12_draw_luma_and_chroma() {
    let (w, h) = (9, 7); // odd sizes
    let (cw, ch) = (5, 4);
    for layout in [Layout::I420, Layout::Nv12] {
        let mut y = vec![16u8; w * h];
        let s1 = if layout == Layout::I420 { cw } else { 2 * cw };
        let mut u = vec![128u8; s1 * ch];
        let mut v = vec![128u8; cw * ch];
        let o = Overlay::new(w, h, Style::new(1.0, 1.0), &[dot(0, 8.9, 6.9)], false, &[]);
        Canvas {
            layout,
            width: w,
            height: h,
            planes: [(&mut y, w), (&mut u, s1), (&mut v, cw)],
            yuv: Yuv::default(),
            origin: (0, 0),
        }
        .render(&o);
        let [ey, eu, ev] = Yuv::default().convert(palette_rgb(0));
        assert_eq!(y[6 * w + 8], ey);
        assert_eq!(y[0], 16);
        if layout == Layout::I420 {
            assert_eq!((u[3 * cw + 4], v[3 * cw + 4]), (eu, ev));
        } else {
            assert_eq!((u[3 * s1 + 8], u[3 * s1 + 9]), (eu, ev));
        }
        assert_eq!(u[0], 128);
    }
}

/// Squared distance from pixel (x, y)'s centre to the segment p-q.
fn to_segment2(x: usize, y: usize, p: (f32, f32), q: (f32, f32)) -> f32 {
    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let t = (((px - p.0) * dx + (py - p.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    (px - p.0 - t * dx).powi(2) + (py - p.1 - t * dy).powi(2)
}

#[test]
fn skeleton_lines_follow_the_segments_outlined_in_black() {
    let (w, h) = (40, 30);
    let bg = [90u8, 90, 90];
    let mut buf: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
    let pts = [(5.0, 5.0), (35.0, 20.0), (5.0, 25.0)];
    let style = Style::new(3.0, 2.0); // white within 1 px of the line, black to 2 px
    let mut o = Overlay::new(w, h, style, &[], false, &[joined(&pts, &[[0, 1], [1, 2]])]);
    o.joints.clear(); // the lines alone
    rgb_canvas(&mut buf, w, h).render(&o);
    for y in 0..h {
        for x in 0..w {
            let d = to_segment2(x, y, pts[0], pts[1]).min(to_segment2(x, y, pts[1], pts[2]));
            let want = if d <= 1.0 {
                WHITE
            } else if d <= 4.0 {
                BLACK
            } else {
                bg
            };
            assert_eq!(px(&buf, w, x, y), want, "({x}, {y}) at {d}");
        }
    }
}

#[test]
fn skeleton_is_clamped_and_skips_non_finite_points() {
    let (w, h) = (10, 8);
    let pts = [(-20.0, 3.5), (50.0, 3.5), (f32::NAN, 1.0)];
    let o = Overlay::new(
        w,
        h,
        Style::new(1.0, 1.0),
        &[],
        false,
        &[joined(&pts, &[[0, 1], [1, 2], [2, 7]])],
    );
    assert_eq!(o.bones.len(), 1);
    assert_eq!(o.joints, vec![(0.0, 3.5), (9.5, 3.5)]);
    let mut buf = vec![7u8; w * h * 3];
    rgb_canvas(&mut buf, w, h).render(&o);
    // The clamped line spans row 3 from edge to edge, outlined above and below; nothing
    // reaches row 0.
    for x in 0..w {
        assert_eq!(px(&buf, w, x, 3), SKELETON_RGB, "{x}");
    }
    for x in 2..w - 2 {
        assert_eq!(px(&buf, w, x, 2), BLACK, "{x}");
        assert_eq!(px(&buf, w, x, 4), BLACK, "{x}");
    }
    assert!(buf[..w * 3].iter().all(|&b| b == 7));
}

#[test]
fn skeleton_in_nv12_sets_luma_and_chroma_of_the_line() {
    let (w, h) = (16, 8);
    let (cw, ch) = (8, 4);
    let mut y = vec![16u8; w * h];
    let mut uv = vec![100u8; 2 * cw * ch];
    let mut o = Overlay::new(
        w,
        h,
        Style::new(3.0, 2.0),
        &[],
        false,
        &[joined(&[(0.0, 4.0), (15.9, 4.0)], &[[0, 1]])],
    );
    o.joints.clear();
    Canvas {
        layout: Layout::Nv12,
        width: w,
        height: h,
        planes: [(&mut y, w), (&mut uv, 2 * cw), (&mut [], 0)],
        yuv: Yuv::default(),
        origin: (0, 0),
    }
    .render(&o);
    let [wy, wu, wv] = Yuv::default().convert(WHITE);
    let [by, ..] = Yuv::default().convert(BLACK);
    for x in 0..w {
        assert_eq!((y[3 * w + x], y[4 * w + x]), (wy, wy), "{x}");
        assert_eq!((y[2 * w + x], y[5 * w + x]), (by, by), "{x}");
        assert_eq!(y[w + x], 16);
    }
    // Chroma row 2 covers luma rows 4-5; its block centres (y = 5) lie 1 px off the line:
    // white (and black) have the neutral chroma.
    assert_eq!((uv[2 * 2 * cw + 6], uv[2 * 2 * cw + 7]), (wu, wv));
    assert_eq!(uv[0], 100);
}

#[test]
fn ids_are_white_digits_on_a_black_box_legible_on_white_and_yellow() {
    let (w, h) = (60, 40);
    for bg in [WHITE, [255, 255, 0], [0, 0, 0], [90, 90, 90]] {
        let (buf, o) = draw_rgb(w, h, bg, Style::new(3.0, 2.0), &[dot(7, 20.0, 25.0)], true);
        let l = o.labels[0];
        let (mut dark, mut light) = (0, 0);
        for y in l.y0..l.y1 {
            for x in l.x0..l.x1 {
                match px(&buf, w, x as usize, y as usize) {
                    BLACK => dark += 1,
                    WHITE => light += 1,
                    other => panic!("{bg:?}: label pixel ({x}, {y}) is {other:?}"),
                }
            }
        }
        // Digit 7 at scale 2: 7 cells of 2 x 2 lit; the box is 10 x 14.
        assert_eq!((light, dark), (28, 140 - 28), "{bg:?}");
        // Whatever the background, the box or the digits stand out from it by half the
        // luma range.
        let contrast = (luma(BLACK) - luma(bg))
            .abs()
            .max((luma(WHITE) - luma(bg)).abs());
        assert!(contrast >= 127.0, "{bg:?}: {contrast}");
        assert!((luma(WHITE) - luma(BLACK)) >= 250.0);
    }
}

#[test]
fn dots_contrast_with_black_white_and_yellow_backgrounds() {
    let (w, h) = (40, 40);
    for id in 0..PALETTE.len() {
        for bg in [BLACK, WHITE, [255, 255, 0]] {
            let (buf, _) = draw_rgb(
                w,
                h,
                bg,
                Style::new(4.0, 2.0),
                &[dot(id, 20.0, 20.0)],
                false,
            );
            // The most contrasting pixel within the dot's extent.
            let best = (12..28)
                .flat_map(|y| (12..28).map(move |x| (x, y)))
                .map(|(x, y)| (luma(px(&buf, w, x, y)) - luma(bg)).abs())
                .fold(0.0f32, f32::max);
            assert!(best >= 200.0, "id {id} on {bg:?}: best contrast {best}");
        }
    }
}

#[test]
fn a_label_at_the_top_right_corner_stays_whole_inside_the_frame() {
    let (w, h) = (50, 30);
    for (x, y) in [
        (49.9, 0.0),
        (49.0, 29.9),
        (0.0, 0.0),
        (0.0, 29.5),
        (25.0, 0.2),
    ] {
        let style = Style::new(3.0, 2.0);
        let (buf, o) = draw_rgb(w, h, [90, 90, 90], style, &[dot(12, x, y)], true);
        let l = o.labels[0];
        assert!(
            l.x0 >= 0 && l.y0 >= 0 && l.x1 <= w as i64 && l.y1 <= h as i64,
            "{l:?}"
        );
        // Full size (two digits: 18 x 14 at scale 2), nothing cut off.
        assert_eq!((l.x1 - l.x0, l.y1 - l.y0), (18, 14), "{l:?}");
        let drawn = (l.y0..l.y1)
            .flat_map(|yy| (l.x0..l.x1).map(move |xx| (xx, yy)))
            .filter(|&(xx, yy)| matches!(px(&buf, w, xx as usize, yy as usize), BLACK | WHITE))
            .count();
        assert_eq!(drawn, 18 * 14, "({x}, {y}): {l:?}");
    }
}

#[test]
fn labels_of_nearby_points_do_not_overlap_each_other_or_the_dots() {
    let (w, h) = (80, 60);
    let style = Style::new(3.0, 2.0);
    // Two points 4 px apart, and a cluster of four.
    for dots in [
        vec![dot(1, 30.0, 30.0), dot(2, 34.0, 30.0)],
        vec![
            dot(3, 40.0, 30.0),
            dot(4, 44.0, 30.0),
            dot(5, 40.0, 34.0),
            dot(6, 44.0, 34.0),
        ],
    ] {
        let o = Overlay::new(w, h, style, &dots, true, &[]);
        assert_eq!(o.labels.len(), dots.len());
        let reach = style.dot_extent().ceil() as i64 + 1;
        for (i, a) in o.labels.iter().enumerate() {
            for b in &o.labels[i + 1..] {
                assert_eq!(a.overlap(&[b.x0, b.y0, b.x1, b.y1]), 0, "{a:?} {b:?}");
            }
            for d in &o.dots {
                let (x, y) = (d.x.floor() as i64, d.y.floor() as i64);
                let disc = [x - reach, y - reach, x + reach + 1, y + reach + 1];
                assert_eq!(a.overlap(&disc), 0, "{a:?} covers dot {d:?}");
            }
        }
    }
}

#[test]
fn sizes_follow_the_frame_unless_set() {
    let s = Style::for_frame(1920, 1080, 0, 0);
    assert!(
        s.radius >= 10.0 && s.line_width >= 5.0 && s.ring >= 2.0,
        "{s:?}"
    );
    assert!(s.text_scale >= 4, "{s:?}"); // digits 20 px high
    let s = Style::for_frame(320, 240, 0, 0);
    assert_eq!(
        (s.radius, s.line_width, s.ring, s.text_scale),
        (3.0, 2.0, 1.0, 2)
    );
    let s = Style::for_frame(1920, 1080, 4, 3);
    assert_eq!((s.radius, s.line_width), (4.0, 3.0));
    // Drawn at 1080p with the defaults, a dot is more than 20 px across.
    let (w, h) = (1920, 1080);
    let (buf, _) = draw_rgb(
        w,
        h,
        [90, 90, 90],
        Style::for_frame(w, h, 0, 0),
        &[dot(0, 960.0, 540.0)],
        false,
    );
    let across = (900..1020)
        .filter(|&x| px(&buf, w, x, 540) != [90, 90, 90])
        .count();
    assert!(across > 20, "{across}");
}

#[test]
fn bands_cover_everything_drawn_without_overlapping() {
    let (w, h) = (120, 90);
    let dots = [
        dot(0, 10.0, 10.0),
        dot(1, 100.0, 12.0),
        dot(2, 60.0, 80.0),
        dot(3, 119.0, 89.0),
    ];
    let pts = [(30.0, 40.0), (50.0, 55.0)];
    let o = Overlay::new(
        w,
        h,
        Style::new(3.0, 2.0),
        &dots,
        true,
        &[joined(&pts, &[[0, 1]])],
    );
    let bands = o.bands();
    assert!(bands.len() >= 2, "{bands:?}");
    for (i, a) in bands.iter().enumerate() {
        assert!(a[0] >= 0 && a[1] >= 0 && a[2] <= w as i64 && a[3] <= h as i64);
        for b in &bands[i + 1..] {
            assert!(a[3] <= b[1], "bands {a:?} and {b:?} share rows");
        }
    }
    let (buf, _) = {
        let mut buf = vec![90u8; w * h * 3];
        rgb_canvas(&mut buf, w, h).render(&o);
        (buf, ())
    };
    for y in 0..h {
        for x in 0..w {
            if px(&buf, w, x, y) != [90, 90, 90] {
                let (x, y) = (x as i64, y as i64);
                assert!(
                    bands
                        .iter()
                        .any(|b| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y)),
                    "({x}, {y}) drawn outside the bands {bands:?}"
                );
            }
        }
    }
    // Rendering band by band with an origin gives the same pixels.
    let mut banded = vec![90u8; w * h * 3];
    for &[x0, y0, x1, y1] in &bands {
        let (bw, bh) = ((x1 - x0) as usize, (y1 - y0) as usize);
        let mut rect = vec![90u8; bw * bh * 3];
        Canvas {
            origin: (x0, y0),
            ..rgb_canvas(&mut rect, bw, bh)
        }
        .render(&o);
        for r in 0..bh {
            let at = ((y0 as usize + r) * w + x0 as usize) * 3;
            banded[at..at + bw * 3].copy_from_slice(&rect[r * bw * 3..(r + 1) * bw * 3]);
        }
    }
    assert!(banded == buf);
}
