//! The training objective of one image (method.md section 3): token selection on detached
//! maps, then sharpening and equivariance MSEs on the tracked ones.

use super::select::{
    argmax, argmax_locations, furthest_point_sampling, gaussian_mean, k_max_pixels,
    rank_candidates, SelectConfig,
};
use crate::error::Result;
use crate::ops::warp::{warp_with, DevicePlan};
use candle_core::{DType, Tensor};

/// Reference loss weights and Gaussian width (pixels at the map resolution).
pub const SHARPENING_WEIGHT: f64 = 100.0;
pub const EQUIVARIANCE_WEIGHT: f64 = 1000.0;
pub const SIGMA: f32 = 2.0;

/// The tokens one training image optimises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Candidates of the unwarped maps (the strategy's ranking), best first.
    pub candidates: Vec<usize>,
    /// Furthest-point sample of the candidates on the warped image's argmax locations.
    pub tokens: Vec<usize>,
    /// Per selected token, the flat peak pixels of its unwarped map (one per subject,
    /// [`k_max_pixels`]): the sharpening target's centres.
    pub peaks: Vec<Vec<usize>>,
}

/// Chooses the tokens from host copies of the maps of the image (`maps`) and of its warp
/// (`warped`), both `[n, r, r]` flat.
pub fn select(maps: &[f32], warped: &[f32], n: usize, r: usize, cfg: &SelectConfig) -> Selection {
    let candidates = rank_candidates(maps, n, r, cfg);
    let plane = r * r;
    let loc = |t: usize| {
        let i = argmax(&warped[t * plane..(t + 1) * plane]);
        (i / r, i % r)
    };
    let tokens = furthest_point_sampling(&candidates, loc, cfg.num_keypoints);
    let peaks = tokens
        .iter()
        .map(|&t| k_max_pixels(&maps[t * plane..(t + 1) * plane], r, cfg.num_subjects))
        .collect();
    Selection {
        candidates,
        tokens,
        peaks,
    }
}

/// The vote's per-image pick: candidates and furthest point sampling on the same maps.
pub fn vote_pick(maps: &[f32], n: usize, r: usize, cfg: &SelectConfig) -> Vec<usize> {
    let candidates = rank_candidates(maps, n, r, cfg);
    let locs = argmax_locations(maps, n, r);
    furthest_point_sampling(&candidates, |t| locs[t], cfg.num_keypoints)
}

/// Sharpening targets `[K, r, r]` (flat): per token the mean of peak-1 Gaussians centred on
/// its peak pixels (one Gaussian per subject).
pub fn sharpening_targets(r: usize, peaks: &[Vec<usize>], sigma: f32) -> Vec<f32> {
    peaks
        .iter()
        .flat_map(|p| gaussian_mean(r, p, sigma))
        .collect()
}

/// Unweighted loss terms of one image (scalar tensors).
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// MSE between the selected maps and their peak Gaussians.
    pub sharpening: Tensor,
    /// MSE between the selected maps and the inverse-warped maps of the warped image.
    pub equivariance: Tensor,
}

impl LossTerms {
    /// `ws * sharpening + we * equivariance`.
    pub fn total(&self, ws: f64, we: f64) -> Result<Tensor> {
        Ok(((&self.sharpening * ws)? + (&self.equivariance * we)?)?)
    }
}

/// Loss terms for maps `[N, R, R]` of the image and of its warp (tracked or not), with
/// `back` the inverse warp at R x R.
pub fn loss_terms(
    maps: &Tensor,
    warped: &Tensor,
    sel: &Selection,
    back: &DevicePlan,
    sigma: f32,
) -> Result<LossTerms> {
    let (_, r, r2) = maps.dims3()?;
    assert_eq!(r, r2, "square maps");
    let k = sel.tokens.len();
    let dev = maps.device();
    let idx: Vec<u32> = sel.tokens.iter().map(|&t| t as u32).collect();
    let idx = Tensor::from_vec(idx, k, dev)?;
    let m = maps.index_select(&idx, 0)?;
    let mw = warped.index_select(&idx, 0)?;
    let target = Tensor::from_vec(sharpening_targets(r, &sel.peaks, sigma), (k, r, r), dev)?
        .to_dtype(m.dtype())?;
    let sharpening = (&m - target)?.sqr()?.mean_all()?;
    let back = warp_with(&mw, back)?;
    let equivariance = (&m - back)?.sqr()?.mean_all()?;
    Ok(LossTerms {
        sharpening,
        equivariance,
    })
}

/// Host copy of a tensor as f32.
pub(crate) fn to_host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.detach()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::warp::{Affine, SamplePlan};
    use candle_core::Device;

    #[test]
    fn targets_are_peak_one_at_pixel_centres() {
        let t = sharpening_targets(8, &[vec![0], vec![8 * 3 + 5]], 2.0);
        assert_eq!(t.len(), 2 * 64);
        assert_eq!(t[0], 1.0);
        assert_eq!(t[64 + 8 * 3 + 5], 1.0);
        // One pixel left of the second peak: exp(-1/8).
        assert!((t[64 + 8 * 3 + 4] - (-0.125f32).exp()).abs() < 1e-7);
        // Diagonal neighbour of the first: exp(-2/8).
        assert!((t[9] - (-0.25f32).exp()).abs() < 1e-7);
    }

    #[test]
    fn loss_terms_by_hand() {
        // N = 3 tokens at 4x4; select tokens 2 and 0; identity warp back.
        let dev = Device::Cpu;
        let r = 4;
        let vals: Vec<f32> = (0..3 * 16).map(|i| ((i * 7) % 11) as f32 / 10.0).collect();
        let warped_vals: Vec<f32> = vals.iter().map(|v| 1.0 - v).collect();
        let maps = Tensor::from_vec(vals.clone(), (3, r, r), &dev).unwrap();
        let warped = Tensor::from_vec(warped_vals.clone(), (3, r, r), &dev).unwrap();
        let sel = Selection {
            candidates: vec![2, 0, 1],
            tokens: vec![2, 0],
            peaks: vec![vec![argmax(&vals[32..48])], vec![argmax(&vals[0..16])]],
        };
        let plan = SamplePlan::new(&Affine::identity(), r, r, r, r)
            .to_device(&dev, DType::F32)
            .unwrap();
        let l = loss_terms(&maps, &warped, &sel, &plan, 1.5).unwrap();
        let tg = sharpening_targets(r, &sel.peaks, 1.5);
        let (mut s, mut e) = (0f64, 0f64);
        for (j, &t) in sel.tokens.iter().enumerate() {
            for p in 0..16 {
                let m = f64::from(vals[t * 16 + p]);
                s += (m - f64::from(tg[j * 16 + p])).powi(2);
                e += (m - f64::from(warped_vals[t * 16 + p])).powi(2);
            }
        }
        let sharp: f32 = l.sharpening.to_scalar().unwrap();
        let equi: f32 = l.equivariance.to_scalar().unwrap();
        assert!((f64::from(sharp) - s / 32.0).abs() < 1e-6);
        assert!((f64::from(equi) - e / 32.0).abs() < 1e-6);
        let tot: f32 = l.total(100.0, 1000.0).unwrap().to_scalar().unwrap();
        assert!((f64::from(tot) - (100.0 * s + 1000.0 * e) / 32.0).abs() < 1e-3);
    }

    #[test]
    fn inverse_warp_of_known_affine() {
        // A map warped by T and back by T^-1 (both as grid_sample) returns the map inside the
        // region both warps keep, and zero where T^-1 samples outside.
        let dev = Device::Cpu;
        let r = 16;
        let a = Affine::from_params(0.0, 1.0, 0.25, 0.0); // shift by 2 px (0.25 * r / 2)
        let mut plane = vec![0f32; r * r];
        for (i, v) in plane.iter_mut().enumerate() {
            *v = (i % 13) as f32;
        }
        let x = Tensor::from_vec(plane.clone(), (1, r, r), &dev).unwrap();
        let fwd = SamplePlan::new(&a, r, r, r, r)
            .to_device(&dev, DType::F32)
            .unwrap();
        let inv = SamplePlan::new(&a.inverse(), r, r, r, r)
            .to_device(&dev, DType::F32)
            .unwrap();
        let w: Vec<f32> = to_host(&warp_with(&x, &fwd).unwrap()).unwrap();
        let b: Vec<f32> =
            to_host(&warp_with(&warp_with(&x, &fwd).unwrap(), &inv).unwrap()).unwrap();
        for row in 0..r {
            for col in 0..r {
                // T samples the input at col + 2: warped[col] = x[col + 2] (0 past the edge).
                let want_w = if col + 2 < r {
                    plane[row * r + col + 2]
                } else {
                    0.0
                };
                assert_eq!(w[row * r + col], want_w, "warp ({row}, {col})");
                // T^-1 samples at col - 2: back[col] = warped[col - 2] = x[col] for
                // 2 <= col < r, and 0 for col < 2.
                let want_b = if col >= 2 { plane[row * r + col] } else { 0.0 };
                assert_eq!(b[row * r + col], want_b, "back ({row}, {col})");
            }
        }
        // The inverse theta is the hand-computed one.
        assert_eq!(a.inverse().theta, [[1.0, 0.0, -0.25], [0.0, 1.0, 0.0]]);
    }

    #[test]
    fn select_uses_warped_locations_for_fps() {
        // 4 tokens at 8x8. Unwarped: tokens 0, 1, 2 are blobs, token 3 flat. Warped maps put
        // tokens 0 and 1 next to each other and token 2 far away, so FPS with k = 2 picks 2.
        let r = 8;
        // Log-Gaussian blobs match the ranking's target exactly (KL ~ 0).
        let spike = |p: usize| -> Vec<f32> {
            crate::train::select::kl_target(r, p, 2.0)
                .iter()
                .map(|v| v.ln())
                .collect()
        };
        let mut maps = Vec::new();
        for p in [9, 20, 30] {
            maps.extend(spike(p));
        }
        maps.extend(vec![0.1f32; r * r]);
        let mut warped = Vec::new();
        for p in [0, 1, 63, 5] {
            warped.extend(spike(p));
        }
        let cfg = SelectConfig {
            strategy: crate::train::select::TopKStrategy::Gaussian,
            num_candidates: 3,
            num_keypoints: 2,
            sigma: 2.0,
            num_subjects: 1,
        };
        let sel = select(&maps, &warped, 4, r, &cfg);
        assert_eq!(sel.candidates.len(), 3);
        assert!(!sel.candidates.contains(&3));
        // Farthest pair on the warped locations: 0 (pixel 0) or 1 (pixel 1) with 2 (pixel 63);
        // the first pair in candidate order.
        assert!(sel.tokens.contains(&2));
        assert_eq!(sel.tokens.len(), 2);
        for (t, p) in sel.tokens.iter().zip(&sel.peaks) {
            assert_eq!(*p, vec![[9, 20, 30][*t]]);
        }
    }
}
