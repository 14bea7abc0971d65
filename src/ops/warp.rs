//! Affine warps with PyTorch `affine_grid` + `grid_sample` semantics (bilinear, zero padding,
//! align_corners=False).
//!
//! A warp is precomputed on the host as a [`SamplePlan`] (4 bilinear taps per output pixel);
//! applying it is a gather plus weighted sum, on any device and differentiable.

use crate::ops::rng::Rng;
use candle_core::{DType, Device, Result, Tensor};

/// 2x3 affine matrix in normalised coordinates ([-1, 1], align_corners=False), as in
/// `F.affine_grid`: the output pixel at normalised (x, y) samples the input at `theta · (x, y, 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Row-major `[[a, b, tx], [c, d, ty]]`.
    pub theta: [[f32; 3]; 2],
}

impl Affine {
    /// `[[cos·s, sin·s, tx], [-sin·s, cos·s, ty]]`, computed in f64 and rounded to f32.
    pub fn from_params(angle_deg: f64, scale: f64, tx: f64, ty: f64) -> Self {
        let (sin, cos) = angle_deg.to_radians().sin_cos();
        Self {
            theta: [
                [(cos * scale) as f32, (sin * scale) as f32, tx as f32],
                [(-sin * scale) as f32, (cos * scale) as f32, ty as f32],
            ],
        }
    }

    /// The identity warp.
    pub fn identity() -> Self {
        Self {
            theta: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        }
    }

    /// Inverse warp: inverts `[[theta], [0, 0, 1]]` in f64 and keeps the top two rows.
    /// A singular theta gives non-finite entries.
    pub fn inverse(&self) -> Self {
        let t = self.theta.map(|r| r.map(f64::from));
        let [[a, b, c], [d, e, f]] = t;
        let det = a * e - b * d;
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        let tx = -(ia * c + ib * f);
        let ty = -(id * c + ie * f);
        Self {
            theta: [
                [ia as f32, ib as f32, tx as f32],
                [id as f32, ie as f32, ty as f32],
            ],
        }
    }

    /// Random augmentation warp with the reference's ranges ([`AugmentRanges::default`]).
    pub fn random(rng: &mut Rng) -> Self {
        Self::random_in(rng, &AugmentRanges::default())
    }

    /// Random augmentation warp (method.md section 3), as the reference's
    /// `RandomAffineWithInverse`. Draw order from `rng`: angle uniform in
    /// [-degrees, degrees], scale in [scale.0, scale.1], tx in [-translate.0, translate.0],
    /// ty in [-translate.1, translate.1].
    pub fn random_in(rng: &mut Rng, r: &AugmentRanges) -> Self {
        let angle = rng.uniform_range(-r.degrees, r.degrees);
        let scale = rng.uniform_range(r.scale[0], r.scale[1]);
        let tx = rng.uniform_range(-r.translate[0], r.translate[0]);
        let ty = rng.uniform_range(-r.translate[1], r.translate[1]);
        Self::from_params(angle, scale, tx, ty)
    }
}

/// Ranges of the random augmentation warps (training and test-time augmentation); `Default`
/// is the reference's (`--augment_degrees 15 --augment_scale 0.8 1.0 --augment_translate
/// 0.25 0.25`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentRanges {
    /// Rotation: uniform in [-degrees, degrees].
    pub degrees: f64,
    /// Scale: uniform in [scale[0], scale[1]].
    pub scale: [f64; 2],
    /// Translation per axis, in normalised coordinates ([-1, 1] spans the image): uniform in
    /// [-translate[i], translate[i]].
    pub translate: [f64; 2],
}

impl Default for AugmentRanges {
    fn default() -> Self {
        Self {
            degrees: 15.0,
            scale: [0.8, 1.0],
            translate: [0.25, 0.25],
        }
    }
}

impl AugmentRanges {
    /// Finite, non-negative rotation and translation, `0 < scale[0] <= scale[1]`; the error
    /// says which range is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.degrees.is_finite() && self.degrees >= 0.0) {
            return Err(format!(
                "augmentation rotation {} must be a finite number of degrees >= 0",
                self.degrees
            ));
        }
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(format!(
                "augmentation scale range {lo},{hi} must satisfy 0 < low <= high"
            ));
        }
        if self.translate.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(format!(
                "augmentation translation {},{} must be finite and >= 0",
                self.translate[0], self.translate[1]
            ));
        }
        Ok(())
    }
}

/// Fractional parts this close to 0 or 1 (in input pixels) snap to the pixel, so that the
/// identity and integer shifts reproduce the input exactly despite f64 rounding.
const SNAP: f64 = 1e-9;

/// Precomputed bilinear taps of one warp: for output pixel `p` (row-major over
/// `out_h x out_w`), `output[p] = Σ_k weight[k][p] · input[idx[k][p]]` with `idx` flat
/// indices into the `in_h x in_w` plane. Taps outside the input have weight 0 and index 0.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplePlan {
    /// Input plane height.
    pub in_h: usize,
    /// Input plane width.
    pub in_w: usize,
    /// Output plane height.
    pub out_h: usize,
    /// Output plane width.
    pub out_w: usize,
    /// Flat input index per tap (top-left, top-right, bottom-left, bottom-right) and pixel.
    pub idx: [Vec<u32>; 4],
    /// Bilinear weight per tap and pixel (0 for taps outside the input).
    pub weight: [Vec<f32>; 4],
}

impl SamplePlan {
    /// Plan for warping an `in_h x in_w` plane into `out_h x out_w` with `theta`.
    ///
    /// Output pixel (i, j) has normalised coordinates x = (2j+1)/out_w - 1,
    /// y = (2i+1)/out_h - 1; it samples `theta · (x, y, 1)` mapped to input pixels by
    /// ix = ((gx + 1)·in_w - 1)/2 (same for y). Coordinates are computed in f64.
    pub fn new(theta: &Affine, in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Self {
        assert!(
            in_h * in_w <= u32::MAX as usize,
            "SamplePlan: input plane too large"
        );
        let n = out_h * out_w;
        let mut idx: [Vec<u32>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
        let mut weight: [Vec<f32>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
        let [[a, b, c], [d, e, f]] = theta.theta.map(|r| r.map(f64::from));
        let split = |v: f64| {
            let mut i0 = v.floor();
            let mut fr = v - i0;
            if fr < SNAP {
                fr = 0.0;
            } else if fr > 1.0 - SNAP {
                i0 += 1.0;
                fr = 0.0;
            }
            (i0 as i64, fr)
        };
        for i in 0..out_h {
            let y = (2 * i + 1) as f64 / out_h as f64 - 1.0;
            for j in 0..out_w {
                let x = (2 * j + 1) as f64 / out_w as f64 - 1.0;
                let gx = a * x + b * y + c;
                let gy = d * x + e * y + f;
                let (x0, fx) = split(((gx + 1.0) * in_w as f64 - 1.0) / 2.0);
                let (y0, fy) = split(((gy + 1.0) * in_h as f64 - 1.0) / 2.0);
                let taps = [
                    (y0, x0, (1.0 - fy) * (1.0 - fx)),
                    (y0, x0 + 1, (1.0 - fy) * fx),
                    (y0 + 1, x0, fy * (1.0 - fx)),
                    (y0 + 1, x0 + 1, fy * fx),
                ];
                for (k, (ty, tx, w)) in taps.into_iter().enumerate() {
                    let inside = w != 0.0
                        && (0..in_h as i64).contains(&ty)
                        && (0..in_w as i64).contains(&tx);
                    if inside {
                        idx[k].push((ty as usize * in_w + tx as usize) as u32);
                        weight[k].push(w as f32);
                    } else {
                        idx[k].push(0);
                        weight[k].push(0.0);
                    }
                }
            }
        }
        Self {
            in_h,
            in_w,
            out_h,
            out_w,
            idx,
            weight,
        }
    }

    /// Sum of the tap weights per output pixel, i.e. the warp of an all-ones plane (the TTA
    /// "count" map), in the same summation order as [`warp_plane_cpu`].
    pub fn coverage(&self) -> Vec<f32> {
        (0..self.out_h * self.out_w)
            .map(|p| (0..4).fold(0f32, |acc, k| acc + self.weight[k][p]))
            .collect()
    }

    /// Uploads the plan for [`warp_with`]: `(indices [4][P] as u32, weights [4][P])`.
    pub fn to_device(&self, device: &Device, dtype: DType) -> Result<DevicePlan> {
        let p = self.out_h * self.out_w;
        let mut idx = Vec::with_capacity(4);
        let mut weight = Vec::with_capacity(4);
        for k in 0..4 {
            idx.push(Tensor::from_slice(&self.idx[k], p, device)?);
            weight.push(Tensor::from_slice(&self.weight[k], (1, p), device)?.to_dtype(dtype)?);
        }
        Ok(DevicePlan {
            in_h: self.in_h,
            in_w: self.in_w,
            out_h: self.out_h,
            out_w: self.out_w,
            idx,
            weight,
        })
    }
}

/// A [`SamplePlan`] uploaded to a device, reusable across [`warp_with`] calls.
#[derive(Clone, Debug)]
pub struct DevicePlan {
    /// Input plane height.
    pub in_h: usize,
    /// Input plane width.
    pub in_w: usize,
    /// Output plane height.
    pub out_h: usize,
    /// Output plane width.
    pub out_w: usize,
    /// Per tap: flat input indices, u32 `[P]`.
    pub idx: Vec<Tensor>,
    /// Per tap: weights `[1, P]`.
    pub weight: Vec<Tensor>,
}

/// Warps one `in_h x in_w` plane into `output` (`out_h x out_w`) on the host.
pub fn warp_plane_cpu(plan: &SamplePlan, input: &[f32], output: &mut [f32]) {
    assert_eq!(
        input.len(),
        plan.in_h * plan.in_w,
        "warp_plane_cpu: input size"
    );
    assert_eq!(
        output.len(),
        plan.out_h * plan.out_w,
        "warp_plane_cpu: output size"
    );
    for (p, o) in output.iter_mut().enumerate() {
        // Same order as `warp_with` (w0x0 + w1x1 + w2x2 + w3x3, left to right), so both agree
        // bit for bit on the CPU. Zero-weight taps are still read (index 0), like the tensor
        // path: a non-finite input[0] would leak into padded pixels.
        *o = (0..4).fold(0f32, |acc, k| {
            acc + plan.weight[k][p] * input[plan.idx[k][p] as usize]
        });
    }
}

/// Warps `x` of shape `[C, H, W]` or `[B, C, H, W]` (H, W = the plan's input size) on x's
/// device and dtype. Differentiable with respect to `x`.
pub fn warp(x: &Tensor, plan: &SamplePlan) -> Result<Tensor> {
    warp_with(x, &plan.to_device(x.device(), x.dtype())?)
}

/// [`warp`] with a plan already uploaded to x's device (and dtype).
pub fn warp_with(x: &Tensor, plan: &DevicePlan) -> Result<Tensor> {
    let dims = x.dims();
    if !(dims.len() == 3 || dims.len() == 4) {
        candle_core::bail!("warp: expected [C, H, W] or [B, C, H, W], got {:?}", dims);
    }
    let (lead, hw) = dims.split_at(dims.len() - 2);
    if hw != [plan.in_h, plan.in_w] {
        candle_core::bail!(
            "warp: input is {:?} but the plan expects {}x{}",
            hw,
            plan.in_h,
            plan.in_w
        );
    }
    let rows: usize = lead.iter().product();
    let flat = x.reshape((rows, plan.in_h * plan.in_w))?;
    // One gather per tap keeps peak memory at [rows, P] instead of [rows, 4P].
    let mut out: Option<Tensor> = None;
    for (idx, w) in plan.idx.iter().zip(&plan.weight) {
        let term = flat.index_select(idx, 1)?.broadcast_mul(w)?;
        out = Some(match out {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let mut out_dims = lead.to_vec();
    out_dims.extend([plan.out_h, plan.out_w]);
    out.expect("four taps").reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use std::collections::HashMap;

    fn goldens() -> HashMap<String, Tensor> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ops_golden.safetensors"
        );
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    fn theta_of(t: &Tensor) -> Affine {
        let v: Vec<Vec<f32>> = t.squeeze(0).unwrap().to_vec2().unwrap();
        Affine {
            theta: [[v[0][0], v[0][1], v[0][2]], [v[1][0], v[1][1], v[1][2]]],
        }
    }

    fn assert_theta_close(got: &Affine, want: &Affine, tol: f32) {
        let diff = got
            .theta
            .iter()
            .flatten()
            .zip(want.theta.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff <= tol, "{got:?} vs {want:?}");
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    const PARAMS: [(f64, f64, f64, f64); 3] = [
        (10.0, 0.9, 0.1, -0.2),
        (-15.0, 0.8, -0.25, 0.25),
        (0.0, 1.0, 0.0, 0.0),
    ];

    #[test]
    fn from_params_matches_golden_theta() {
        let g = goldens();
        for (i, p) in PARAMS.iter().enumerate() {
            let want = theta_of(&g[&format!("warp_theta_{i}")]);
            let got = Affine::from_params(p.0, p.1, p.2, p.3);
            assert_theta_close(&got, &want, 1e-7);
        }
        assert_eq!(Affine::from_params(0.0, 1.0, 0.0, 0.0), Affine::identity());
        // 90 degrees, scale 2: [[0, 2, tx], [-2, 0, ty]].
        let r = Affine::from_params(90.0, 2.0, 0.5, -0.5).theta;
        assert!(r[0][0].abs() < 1e-7 && r[1][1].abs() < 1e-7);
        assert_eq!((r[0][1], r[1][0], r[0][2], r[1][2]), (2.0, -2.0, 0.5, -0.5));
    }

    #[test]
    fn warp_matches_grid_sample_goldens() {
        let g = goldens();
        let x = g["warp_in"].squeeze(0).unwrap(); // [3, 12, 10]
        for i in 0..3 {
            let th = theta_of(&g[&format!("warp_theta_{i}")]);
            let plan = SamplePlan::new(&th, 12, 10, 12, 10);
            let got = warp(&x, &plan).unwrap();
            let want = g[&format!("warp_out_{i}")].squeeze(0).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-5, "warp_out_{i}: {err}");
            // The batched form gives the same.
            let got4 = warp(&x.unsqueeze(0).unwrap(), &plan).unwrap();
            assert_eq!(max_abs_diff(&got4.squeeze(0).unwrap(), &got), 0.0);
        }
        // Sanity: the goldens are distinguishable (warp 0 is not the identity).
        assert!(max_abs_diff(&g["warp_out_0"], &g["warp_in"]) > 0.1);
    }

    #[test]
    fn inverse_matches_golden_and_warps_back() {
        let g = goldens();
        for i in 0..3 {
            let th = theta_of(&g[&format!("warp_theta_{i}")]);
            let want = theta_of(&g[&format!("warp_inv_theta_{i}")]);
            let inv = th.inverse();
            assert_theta_close(&inv, &want, 2e-7);
            let warped = g[&format!("warp_out_{i}")].squeeze(0).unwrap();
            let got = warp(&warped, &SamplePlan::new(&inv, 12, 10, 12, 10)).unwrap();
            let want = g[&format!("warp_back_{i}")].squeeze(0).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-5, "warp_back_{i}: {err}");
        }
        // Hand check: inverse of a pure scale + shift.
        let a = Affine {
            theta: [[2.0, 0.0, 1.0], [0.0, 4.0, -2.0]],
        };
        assert_eq!(a.inverse().theta, [[0.5, 0.0, -0.5], [0.0, 0.25, 0.5]]);
        assert_eq!(Affine::identity().inverse(), Affine::identity());
    }

    #[test]
    fn identity_is_exact() {
        let g = goldens();
        let x = g["warp_in"].squeeze(0).unwrap();
        for (h, w) in [(12, 10), (7, 13), (512, 512)] {
            let plan = SamplePlan::new(&Affine::identity(), h, w, h, w);
            assert!(plan.weight[0].iter().all(|&v| v == 1.0));
            assert!(plan.weight[1..].iter().flatten().all(|&v| v == 0.0));
            assert!(plan.idx[0]
                .iter()
                .enumerate()
                .all(|(p, &i)| i as usize == p));
        }
        let got = warp(&x, &SamplePlan::new(&Affine::identity(), 12, 10, 12, 10)).unwrap();
        assert_eq!(max_abs_diff(&got, &x), 0.0);
    }

    #[test]
    fn hand_computed_shifts_and_resampling() {
        // Shift by exactly one input pixel along x: tx = 2 / W.
        let (h, w) = (3, 4);
        let input: Vec<f32> = (0..h * w).map(|v| v as f32 + 1.0).collect();
        let plan = SamplePlan::new(
            &Affine {
                theta: [[1.0, 0.0, 2.0 / w as f32], [0.0, 1.0, 0.0]],
            },
            h,
            w,
            h,
            w,
        );
        let mut out = vec![0f32; h * w];
        warp_plane_cpu(&plan, &input, &mut out);
        for r in 0..h {
            for c in 0..w {
                let want = if c + 1 < w { input[r * w + c + 1] } else { 0.0 };
                assert_eq!(out[r * w + c], want);
            }
        }
        // Half a pixel along y: mean of rows r and r+1, half of the last row (zero padding).
        let plan = SamplePlan::new(
            &Affine {
                theta: [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0 / h as f32]],
            },
            h,
            w,
            h,
            w,
        );
        warp_plane_cpu(&plan, &input, &mut out);
        for r in 0..h {
            for c in 0..w {
                let below = if r + 1 < h {
                    input[(r + 1) * w + c]
                } else {
                    0.0
                };
                let want = 0.5 * (input[r * w + c] + below);
                assert!((out[r * w + c] - want).abs() < 1e-6);
            }
        }
        // Identity theta, 1x2 -> 1x4: sample points ix = -0.25, 0.25, 0.75, 1.25.
        let plan = SamplePlan::new(&Affine::identity(), 1, 2, 1, 4);
        let mut out = vec![0f32; 4];
        warp_plane_cpu(&plan, &[1.0, 2.0], &mut out);
        assert_eq!(out, vec![0.75, 1.25, 1.75, 1.5]);
        assert_eq!(plan.coverage(), vec![0.75, 1.0, 1.0, 0.75]);
        // Zoom far out: everything samples outside the image.
        let plan = SamplePlan::new(&Affine::from_params(0.0, 1.0, 5.0, 0.0), 3, 3, 3, 3);
        assert!(plan.coverage().iter().all(|&c| c == 0.0));
        assert!(plan.idx.iter().flatten().all(|&i| i == 0));
    }

    #[test]
    fn cpu_paths_agree_and_coverage_is_warp_of_ones() {
        let g = goldens();
        let x = g["warp_in"].squeeze(0).unwrap(); // [3, 12, 10]
        let mut rng = Rng::new(3);
        for _ in 0..5 {
            let a = Affine::random(&mut rng);
            // Different output size than input.
            let plan = SamplePlan::new(&a, 12, 10, 9, 14);
            let got = warp(&x, &plan).unwrap();
            assert_eq!(got.dims(), &[3, 9, 14]);
            let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
            for (c, want_plane) in got.iter().enumerate() {
                let input: Vec<f32> = x.get(c).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let mut out = vec![0f32; 9 * 14];
                warp_plane_cpu(&plan, &input, &mut out);
                let want: Vec<f32> = want_plane.concat();
                assert_eq!(out, want);
            }
            let ones = Tensor::ones((1, 12, 10), DType::F32, &Device::Cpu).unwrap();
            let cov: Vec<f32> = warp(&ones, &plan)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(cov, plan.coverage());
        }
    }

    #[test]
    fn gradient_is_scatter_of_weights() {
        let a = Affine::from_params(7.0, 0.85, 0.1, -0.05);
        let plan = SamplePlan::new(&a, 6, 5, 6, 5);
        let x =
            Var::from_tensor(&Tensor::ones((2, 6, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let y = warp(x.as_tensor(), &plan).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f32> = grads
            .get(x.as_tensor())
            .unwrap()
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut want = vec![0f32; 30];
        for k in 0..4 {
            for p in 0..30 {
                want[plan.idx[k][p] as usize] += plan.weight[k][p];
            }
        }
        for (a, b) in gx.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!(want.iter().any(|&v| v > 0.5));
    }

    #[test]
    fn random_ranges_and_draw_order() {
        let mut rng = Rng::new(11);
        for _ in 0..1000 {
            let a = Affine::random(&mut rng).theta;
            let s = (a[0][0] * a[0][0] + a[0][1] * a[0][1]).sqrt();
            assert!((0.8 - 1e-6..=1.0 + 1e-6).contains(&s));
            let angle = a[0][1].atan2(a[0][0]).to_degrees();
            assert!((-15.0 - 1e-3..=15.0 + 1e-3).contains(&angle));
            assert!(a[0][2].abs() <= 0.25 && a[1][2].abs() <= 0.25);
            assert_eq!(a[0][0], a[1][1]);
            assert_eq!(a[0][1], -a[1][0]);
        }
        let mut r1 = Rng::new(99);
        let mut r2 = Rng::new(99);
        let got = Affine::random(&mut r1);
        let angle = r2.uniform_range(-15.0, 15.0);
        let scale = r2.uniform_range(0.8, 1.0);
        let tx = r2.uniform_range(-0.25, 0.25);
        let ty = r2.uniform_range(-0.25, 0.25);
        assert_eq!(got, Affine::from_params(angle, scale, tx, ty));
        assert_eq!(r1.next_u64(), r2.next_u64());
    }

    #[test]
    fn custom_ranges_bound_the_warps_and_keep_the_draw_order() {
        let r = AugmentRanges {
            degrees: 40.0,
            scale: [0.5, 0.6],
            translate: [0.0, 0.1],
        };
        let mut rng = Rng::new(5);
        let mut widest = 0f64;
        for _ in 0..1000 {
            let a = Affine::random_in(&mut rng, &r).theta;
            let s = f64::from(a[0][0]).hypot(f64::from(a[0][1]));
            assert!((0.5 - 1e-6..=0.6 + 1e-6).contains(&s), "{s}");
            let angle = f64::from(a[0][1]).atan2(f64::from(a[0][0])).to_degrees();
            assert!(angle.abs() <= 40.0 + 1e-3, "{angle}");
            widest = widest.max(angle.abs());
            assert_eq!(a[0][2], 0.0);
            assert!(a[1][2].abs() <= 0.1);
        }
        assert!(widest > 35.0, "rotations reach the range: {widest}");
        let mut r1 = Rng::new(8);
        let mut r2 = Rng::new(8);
        let want = Affine::from_params(
            r2.uniform_range(-40.0, 40.0),
            r2.uniform_range(0.5, 0.6),
            r2.uniform_range(-0.0, 0.0),
            r2.uniform_range(-0.1, 0.1),
        );
        assert_eq!(Affine::random_in(&mut r1, &r), want);
        assert!(AugmentRanges::default().validate().is_ok());
        for bad in [
            AugmentRanges { degrees: -1.0, ..r },
            AugmentRanges {
                scale: [0.9, 0.8],
                ..r
            },
            AugmentRanges {
                scale: [0.0, 0.8],
                ..r
            },
            AugmentRanges {
                translate: [f64::NAN, 0.0],
                ..r
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn coverage_matches_reference_tta_count() {
        // Reference TTA count map: sum of inverse warps of ones at 128 x 128.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/tiny-sd1/golden.safetensors"
        );
        let g = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let thetas: Vec<Vec<Vec<f32>>> = g["tta_thetas"].to_vec3().unwrap();
        let invs: Vec<Vec<Vec<f32>>> = g["tta_inv_thetas"].to_vec3().unwrap();
        let want: Vec<f32> = g["tta_count"].flatten_all().unwrap().to_vec1().unwrap();
        let mut count = vec![0f32; 128 * 128];
        for (t, inv) in thetas.iter().zip(&invs) {
            let a = Affine {
                theta: [[t[0][0], t[0][1], t[0][2]], [t[1][0], t[1][1], t[1][2]]],
            };
            let ai = a.inverse();
            let want_inv = Affine {
                theta: [
                    [inv[0][0], inv[0][1], inv[0][2]],
                    [inv[1][0], inv[1][1], inv[1][2]],
                ],
            };
            assert_theta_close(&ai, &want_inv, 2e-7);
            let plan = SamplePlan::new(&ai, 128, 128, 128, 128);
            for (acc, c) in count.iter_mut().zip(plan.coverage()) {
                *acc += c;
            }
        }
        let err = count
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 5e-5, "{err}");
        assert!(want.iter().any(|&v| v < 2.5) && want.iter().any(|&v| v > 2.9));
    }

    #[test]
    fn shape_errors() {
        let plan = SamplePlan::new(&Affine::identity(), 4, 4, 4, 4);
        let bad = Tensor::zeros((2, 4, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(warp(&bad, &plan).is_err());
        let bad = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(warp(&bad, &plan).is_err());
    }
}
