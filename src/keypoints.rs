//! From per-token maps to keypoints, on host data (row-major `h x w` f32 slices).

use serde::Serialize;

/// Default radius (pixels) of [`weighted_peak`], as in the reference.
pub const DEFAULT_WEIGHTED_RADIUS_PX: f32 = 5.0;

/// A keypoint: position normalised to [0, 1] (pixel centres at +0.5) and the map's peak value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MapPeak {
    /// Horizontal position, `(col + 0.5) / w` for a pixel.
    pub x: f32,
    /// Vertical position, `(row + 0.5) / h` for a pixel.
    pub y: f32,
    /// Map value at the argmax pixel.
    pub score: f32,
}

/// Flat index of the first maximum in row-major order (like `torch.argmax` of the flattened
/// map), NaN counting as smaller than everything; 0 if the map is all NaN.
fn argmax_index(map: &[f32]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in map.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

fn check_dims(map: &[f32], h: usize, w: usize) {
    assert!(h > 0 && w > 0, "keypoints: empty map");
    assert_eq!(map.len(), h * w, "keypoints: map is not {h}x{w}");
}

/// Peak at the centre of the argmax pixel. Ties go to the first maximum in row-major order;
/// an all-NaN map gives pixel 0 with score NaN.
pub fn argmax_peak(map: &[f32], h: usize, w: usize) -> MapPeak {
    check_dims(map, h, w);
    let i = argmax_index(map);
    let (row, col) = (i / w, i % w);
    MapPeak {
        x: ((col as f64 + 0.5) / w as f64) as f32,
        y: ((row as f64 + 0.5) / h as f64) as f32,
        score: map[i],
    }
}

/// Mass-weighted mean of the pixel centres within Euclidean distance `radius_px` (inclusive)
/// of the argmax pixel centre. Negative and NaN values weigh 0; with no mass the argmax is
/// returned. The score is the peak value.
pub fn weighted_peak(map: &[f32], h: usize, w: usize, radius_px: f32) -> MapPeak {
    let peak = argmax_peak(map, h, w);
    if radius_px.is_nan() || radius_px < 0.0 {
        return peak;
    }
    let i = argmax_index(map);
    let (pr, pc) = ((i / w) as i64, (i % w) as i64);
    let r = f64::from(radius_px);
    let r2 = r * r;
    let reach = r.floor() as i64;
    let (mut mass, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for row in (pr - reach).max(0)..=(pr + reach).min(h as i64 - 1) {
        for col in (pc - reach).max(0)..=(pc + reach).min(w as i64 - 1) {
            let (dr, dc) = ((row - pr) as f64, (col - pc) as f64);
            if dr * dr + dc * dc > r2 {
                continue;
            }
            // f32::max drops NaN, so NaN pixels weigh 0 too.
            let m = f64::from(map[row as usize * w + col as usize].max(0.0));
            mass += m;
            sx += m * (col as f64 + 0.5);
            sy += m * (row as f64 + 0.5);
        }
    }
    if mass <= 0.0 || !mass.is_finite() {
        return peak;
    }
    MapPeak {
        x: (sx / mass / w as f64) as f32,
        y: (sy / mass / h as f64) as f32,
        score: peak.score,
    }
}

/// Unnormalised Gaussian on an `h x w` grid: `exp(-d² / (2 sigma²))` with `d` the distance from
/// the pixel centre `(col + 0.5, row + 0.5)` to `(cx_px, cy_px)`; 1 where they coincide.
pub fn gaussian_target(h: usize, w: usize, cx_px: f32, cy_px: f32, sigma: f32) -> Vec<f32> {
    let (cx, cy) = (f64::from(cx_px), f64::from(cy_px));
    let inv = 1.0 / (2.0 * f64::from(sigma) * f64::from(sigma));
    let mut out = Vec::with_capacity(h * w);
    for row in 0..h {
        let dy = row as f64 + 0.5 - cy;
        for col in 0..w {
            let dx = col as f64 + 0.5 - cx;
            out.push((-(dx * dx + dy * dy) * inv).exp() as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    fn load(rel: &str) -> HashMap<String, Tensor> {
        let path = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), rel);
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    #[test]
    fn single_peak() {
        let (h, w) = (4, 6);
        let mut m = vec![0.1f32; h * w];
        m[2 * w + 5] = 3.0;
        let p = argmax_peak(&m, h, w);
        assert_eq!(
            p,
            MapPeak {
                x: 5.5 / 6.0,
                y: 2.5 / 4.0,
                score: 3.0
            }
        );
        // Negative maps work too.
        let m: Vec<f32> = (0..h * w).map(|i| -(i as f32) - 1.0).collect();
        let p = argmax_peak(&m, h, w);
        assert_eq!((p.x, p.y, p.score), (0.5 / 6.0, 0.5 / 4.0, -1.0));
    }

    #[test]
    fn ties_take_first_in_row_major_order() {
        let (h, w) = (3, 3);
        let mut m = vec![0f32; 9];
        m[5] = 2.0; // row 1, col 2
        m[7] = 2.0; // row 2, col 1
        m[3] = 2.0; // row 1, col 0 -> first
        let p = argmax_peak(&m, h, w);
        assert_eq!((p.x, p.y), (0.5 / 3.0, 1.5 / 3.0));
        let p = argmax_peak(&[1.0; 6], 2, 3);
        assert_eq!((p.x, p.y), (0.5 / 3.0, 0.25));
    }

    #[test]
    fn nan_is_smallest() {
        let m = [f32::NAN, 0.5, f32::NAN, 0.7, 0.7, f32::NAN];
        let p = argmax_peak(&m, 2, 3);
        assert_eq!((p.x, p.y, p.score), (0.5 / 3.0, 0.75, 0.7));
        let p = argmax_peak(&[f32::NAN; 4], 2, 2);
        assert_eq!((p.x, p.y), (0.25, 0.25));
        assert!(p.score.is_nan());
        let w = weighted_peak(&[f32::NAN, 1.0, f32::NAN, 1.0], 2, 2, 5.0);
        assert_eq!((w.x, w.y, w.score), (0.75, 0.5, 1.0));
        let w = weighted_peak(&[f32::NAN; 4], 2, 2, 5.0);
        assert_eq!((w.x, w.y), (0.25, 0.25));
    }

    #[test]
    fn weighted_symmetric_blob_is_exact_centre() {
        // Symmetric blob centred between pixels (4, 6) and (4, 7) horizontally: x centre = 7.0.
        let (h, w) = (9, 14);
        let mut m = vec![0f32; h * w];
        for r in 0..h {
            for c in 0..w {
                let dx = c as f32 + 0.5 - 7.0;
                let dy = r as f32 + 0.5 - 4.5;
                m[r * w + c] = (-(dx * dx + dy * dy) / 4.0).exp();
            }
        }
        let a = argmax_peak(&m, h, w);
        assert_eq!((a.x, a.y), (6.5 / 14.0, 4.5 / 9.0)); // first of the two tied maxima
        let p = weighted_peak(&m, h, w, 50.0);
        assert!((p.x - 7.0 / 14.0).abs() < 1e-6, "{p:?}");
        assert!((p.y - 4.5 / 9.0).abs() < 1e-6, "{p:?}");
        assert_eq!(p.score, a.score);
    }

    #[test]
    fn weighted_asymmetric_by_hand() {
        // Peak 4 at (row 2, col 2); mass 2 at (2, 3), 1 at (1, 2), negative at (2, 1)
        // (clamped to 0) and a big value at (2, 6) outside the radius 3.
        let (h, w) = (5, 8);
        let mut m = vec![0f32; h * w];
        m[2 * w + 2] = 4.0;
        m[2 * w + 3] = 2.0;
        m[w + 2] = 1.0;
        m[2 * w + 1] = -5.0;
        m[2 * w + 6] = 3.9;
        // Pixel (1, 5) is at distance sqrt(1 + 9) > 3: excluded; (2, 5) at exactly 3: included.
        m[w + 5] = 3.5;
        m[2 * w + 5] = 0.5;
        let p = weighted_peak(&m, h, w, 3.0);
        // x: (4*2.5 + 2*3.5 + 1*2.5 + 0.5*5.5) / 7.5 = 22.25 / 7.5
        // y: (4*2.5 + 2*2.5 + 1*1.5 + 0.5*2.5) / 7.5 = 17.75 / 7.5
        assert!((p.x - (22.25 / 7.5) / 8.0).abs() < 1e-6, "{p:?}");
        assert!((p.y - (17.75 / 7.5) / 5.0).abs() < 1e-6, "{p:?}");
        assert_eq!(p.score, 4.0);
        // Radius 0: only the peak pixel.
        let p0 = weighted_peak(&m, h, w, 0.0);
        assert_eq!(p0, argmax_peak(&m, h, w));
    }

    #[test]
    fn weighted_zero_mass_falls_back() {
        let m = vec![-1.0f32, -2.0, -3.0, -0.5];
        assert_eq!(weighted_peak(&m, 2, 2, 5.0), argmax_peak(&m, 2, 2));
        let z = vec![0f32; 6];
        assert_eq!(weighted_peak(&z, 2, 3, 5.0), argmax_peak(&z, 2, 3));
    }

    #[test]
    fn gaussian_matches_golden() {
        let g = load("tests/data/ops_golden.safetensors");
        let want: Vec<f32> = g["gauss_sigma2_R16_at_5_9"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = gaussian_target(16, 16, 9.5, 5.5, 2.0);
        assert_eq!(got.len(), 256);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        assert_eq!(got[5 * 16 + 9], 1.0);
        // Hand value: one pixel right of the centre, exp(-1/8).
        assert!((got[5 * 16 + 10] - (-0.125f32).exp()).abs() < 1e-7);
        // Transposed centre gives a different map (the test is orientation-sensitive).
        let t = gaussian_target(16, 16, 5.5, 9.5, 2.0);
        assert!(t.iter().zip(&want).any(|(a, b)| (a - b).abs() > 0.1));
        // Rectangular grid: the peak of a pixel-centred target is that pixel.
        let r = gaussian_target(3, 7, 6.5, 0.5, 1.0);
        assert_eq!(
            argmax_peak(&r, 3, 7),
            MapPeak {
                x: 6.5 / 7.0,
                y: 0.5 / 3.0,
                score: 1.0
            }
        );
    }

    #[test]
    fn argmax_matches_reference_tta_keypoints() {
        // Real maps from the reference pipeline (tiny-sd1 TTA maps, 8 x 128 x 128).
        let g = load("tests/data/tiny-sd1/golden.safetensors");
        let maps: Vec<Vec<Vec<f32>>> = g["tta_maps"].to_vec3().unwrap();
        let kp: Vec<Vec<f32>> = g["tta_keypoints"].to_vec2().unwrap();
        let scores: Vec<f32> = g["tta_scores"].to_vec1().unwrap();
        for (k, m) in maps.iter().enumerate() {
            let flat = m.concat();
            let p = argmax_peak(&flat, 128, 128);
            assert_eq!(
                (p.x, p.y, p.score),
                (kp[k][0], kp[k][1], scores[k]),
                "map {k}"
            );
        }
    }
}
