//! Time of the element's overlay stage: K = 10 keypoints with ids and an 18-joint skeleton
//! drawn natively into frames of each layout (median of `RUNS` draws).
//!
//! cargo run --release -p gst-plugin-stablekeypoints --example bench-overlay

use gststablekeypoints::overlay::{Canvas, Dot, Layout, Yuv};
use std::time::Instant;

const RUNS: usize = 200;

fn main() {
    let dots: Vec<Dot> = (0..10)
        .map(|i| Dot {
            id: i,
            x: 0.1 + 0.08 * i as f32,
            y: 0.5 + 0.3 * ((i as f32) * 0.7).sin(),
        })
        .collect();
    let joints: Vec<(f32, f32)> = (0..18)
        .map(|i| (0.2 + 0.03 * i as f32, 0.2 + 0.04 * i as f32))
        .collect();
    let bones: Vec<[u32; 2]> = (0..17).map(|i| [i, i + 1]).collect();
    println!("overlay: 10 keypoints + ids + 18-joint skeleton, radius 4 (median of {RUNS})");
    for (w, h) in [(320usize, 240usize), (1920, 1080)] {
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
                Layout::I420 => (vec![0u8; w * h], vec![0u8; w * h / 4], vec![0u8; w * h / 4]),
                Layout::Nv12 => (vec![0u8; w * h], vec![0u8; w * h / 2], vec![]),
            };
            let strides = match layout {
                Layout::Packed { bpp, .. } => [w * bpp, 0, 0],
                Layout::I420 => [w, w / 2, w / 2],
                Layout::Nv12 => [w, w, 0],
            };
            let scale = |d: &Dot| Dot {
                id: d.id,
                x: d.x * w as f32,
                y: d.y * h as f32,
            };
            let pts: Vec<Dot> = dots.iter().map(scale).collect();
            let joints_px: Vec<(f32, f32)> = joints
                .iter()
                .map(|&(x, y)| (x * w as f32, y * h as f32))
                .collect();
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let mut canvas = Canvas {
                    layout,
                    width: w,
                    height: h,
                    planes: [
                        (&mut p0[..], strides[0]),
                        (&mut p1[..], strides[1]),
                        (&mut p2[..], strides[2]),
                    ],
                    yuv: Yuv::default(),
                };
                let t = Instant::now();
                canvas.draw(&pts, 4.0, true);
                canvas.draw_skeleton(&joints_px, &bones, 4.0, 2.0);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            println!("  {w:>4}x{h:<4} {name:>4}: {:8.1} us", times[RUNS / 2]);
        }
    }
}
