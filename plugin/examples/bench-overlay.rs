//! Time of the element's overlay stage: 10 keypoints with ids and an 18-joint skeleton
//! drawn natively into RGB/I420/NV12 frames at 320x240 and 1920x1080, with the default,
//! frame-relative sizes (median of `RUNS` draws).
//!
//! cargo run --release -p gst-plugin-stablekeypoints --example bench-overlay

use gststablekeypoints::overlay::{Canvas, Dot, Layout, Overlay, Style, Yuv};
use std::time::Instant;

const RUNS: usize = 50;

fn overlay(w: usize, h: usize) -> Overlay {
    let dots: Vec<Dot> = (0..10)
        .map(|i| Dot {
            id: i,
            x: (0.1 + 0.08 * i as f32) * w as f32,
            y: (0.5 + 0.3 * ((i as f32) * 0.7).sin()) * h as f32,
        })
        .collect();
    let joints: Vec<(f32, f32)> = (0..18)
        .map(|i| {
            (
                (0.2 + 0.03 * i as f32) * w as f32,
                (0.2 + 0.04 * i as f32) * h as f32,
            )
        })
        .collect();
    let bones: Vec<[u32; 2]> = (0..17).map(|i| [i, i + 1]).collect();
    Overlay::new(
        w,
        h,
        Style::for_frame(w, h, 0, 0),
        &dots,
        true,
        Some((&joints, &bones)),
    )
}

fn median(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn main() {
    println!(
        "native drawing: 10 keypoints + ids + 18-joint skeleton, default sizes (median of {RUNS})"
    );
    for (w, h) in [(320usize, 240usize), (1920, 1080)] {
        let o = overlay(w, h);
        for (name, layout) in [
            (
                "RGB",
                Layout::Packed {
                    bpp: 3,
                    rgb: [0, 1, 2],
                    alpha: None,
                },
            ),
            ("I420", Layout::I420),
            ("NV12", Layout::Nv12),
        ] {
            let (mut p0, mut p1, mut p2) = match layout {
                Layout::Packed { bpp, .. } => (vec![0u8; w * h * bpp], vec![], vec![]),
                Layout::Nv12 => (vec![0u8; w * h], vec![0u8; w * h / 2], vec![]),
                _ => (vec![0u8; w * h], vec![0u8; w * h / 4], vec![0u8; w * h / 4]),
            };
            let strides = match layout {
                Layout::Packed { bpp, .. } => [w * bpp, 0, 0],
                Layout::Nv12 => [w, w, 0],
                _ => [w, w / 2, w / 2],
            };
            let t = median(|| {
                Canvas {
                    layout,
                    width: w,
                    height: h,
                    planes: [
                        (&mut p0[..], strides[0]),
                        (&mut p1[..], strides[1]),
                        (&mut p2[..], strides[2]),
                    ],
                    yuv: Yuv::default(),
                    origin: (0, 0),
                }
                .render(&o);
            });
            println!("  {w:>4}x{h:<4} {name:>4}: {t:8.1} us");
        }
    }
}
