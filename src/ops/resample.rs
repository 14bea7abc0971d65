//! Separable resizing with PyTorch `F.interpolate` semantics (align_corners=False).
//!
//! Each axis is a dense `[out, in]` matrix, so a resize is two matmuls: it runs on any candle
//! device and is differentiable. Weights are computed in f32 with torch's formulas, including
//! the fused multiply-adds its compiled CPU kernels use, so they match torch's own weights.

use candle_core::{Result, Tensor};

/// Cubic convolution constant used by PyTorch.
const CUBIC_A: f32 = -0.75;

/// Kernel for |x| <= 1: `((A+2)x - (A+3))x² + 1`, contracted into FMAs like torch's build
/// (without them the bicubic goldens differ by ~3e-6 instead of ~5e-7).
fn cubic1(x: f32) -> f32 {
    ((CUBIC_A + 2.0).mul_add(x, -(CUBIC_A + 3.0)) * x).mul_add(x, 1.0)
}

/// Kernel for 1 < |x| < 2: `((Ax - 5A)x + 8A)x - 4A`, FMA-contracted.
fn cubic2(x: f32) -> f32 {
    CUBIC_A
        .mul_add(x, -5.0 * CUBIC_A)
        .mul_add(x, 8.0 * CUBIC_A)
        .mul_add(x, -4.0 * CUBIC_A)
}

/// Source coordinate `scale·(dst + 0.5) - 0.5` (align_corners=False), one FMA as in torch.
fn source_index(scale: f32, dst: usize) -> f32 {
    scale.mul_add(dst as f32 + 0.5, -0.5)
}

/// torch's `guard_index_and_lambda`: index = min(floor(src), in-1), lambda clamped to [0, 1].
fn index_and_lambda(src: f32, in_size: usize) -> (i64, f32) {
    let i0 = (src.floor() as i64).min(in_size as i64 - 1);
    (i0, (src - i0 as f32).clamp(0.0, 1.0))
}

/// Bicubic resampling matrix, row-major `[out_size, in_size]` (PyTorch `upsample_bicubic2d`,
/// align_corners=False, A = -0.75, no antialias). Source coordinates are not clamped at 0;
/// taps beyond the border are clamped onto the border row, where their weights accumulate.
pub fn bicubic_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    assert!(in_size > 0, "bicubic_matrix: empty input axis");
    let mut m = vec![0f32; out_size * in_size];
    let scale = in_size as f32 / out_size as f32;
    for d in 0..out_size {
        let src = source_index(scale, d);
        let (i0, t) = index_and_lambda(src, in_size);
        let coeffs = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, c) in coeffs.into_iter().enumerate() {
            let idx = (i0 - 1 + k as i64).clamp(0, in_size as i64 - 1) as usize;
            m[d * in_size + idx] += c;
        }
    }
    m
}

/// Bilinear resampling matrix, row-major `[out_size, in_size]` (PyTorch `upsample_bilinear2d`,
/// align_corners=False, no antialias): source coordinate clamped at 0, upper tap clamped.
pub fn bilinear_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    assert!(in_size > 0, "bilinear_matrix: empty input axis");
    let mut m = vec![0f32; out_size * in_size];
    let scale = in_size as f32 / out_size as f32;
    for d in 0..out_size {
        let src = source_index(scale, d).max(0.0);
        let (i0, lambda) = index_and_lambda(src, in_size);
        let i0 = i0 as usize;
        let i1 = (i0 + 1).min(in_size - 1);
        m[d * in_size + i0] += 1.0 - lambda;
        m[d * in_size + i1] += lambda;
    }
    m
}

/// Interpolation kernel for [`resize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// PyTorch `mode="bilinear"`, align_corners=False.
    Bilinear,
    /// PyTorch `mode="bicubic"`, align_corners=False.
    Bicubic,
}

impl Interp {
    fn matrix(self, in_size: usize, out_size: usize) -> Vec<f32> {
        match self {
            Interp::Bilinear => bilinear_matrix(in_size, out_size),
            Interp::Bicubic => bicubic_matrix(in_size, out_size),
        }
    }
}

/// Resizes the last two dims of `x` (`[..., H, W]` -> `[..., out_h, out_w]`) as `My · x · Mxᵀ`.
///
/// Works for any number of leading dims, on x's device, in x's dtype (as far as candle's matmul
/// supports it there), and is differentiable. Same size on both axes returns `x` unchanged.
pub fn resize(x: &Tensor, out_h: usize, out_w: usize, mode: Interp) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        candle_core::bail!("resize: expected [..., H, W], got {:?}", dims);
    }
    let (lead, hw) = dims.split_at(dims.len() - 2);
    let (h, w) = (hw[0], hw[1]);
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let batch: usize = lead.iter().product();
    let (dev, dtype) = (x.device(), x.dtype());

    let my = Tensor::from_vec(mode.matrix(h, out_h), (out_h, h), dev)?.to_dtype(dtype)?;
    let mx = mode.matrix(w, out_w);
    // Mxᵀ built on the host so the matmul operand is contiguous.
    let mut mxt = vec![0f32; w * out_w];
    for o in 0..out_w {
        for i in 0..w {
            mxt[i * out_w + o] = mx[o * w + i];
        }
    }
    let mxt = Tensor::from_vec(mxt, (w, out_w), dev)?.to_dtype(dtype)?;

    // Width: one 2-D matmul over all rows. reshape copies x if it is not contiguous.
    let y = x.reshape((batch * h, w))?.matmul(&mxt)?;
    let y = y.reshape((batch, h, out_w))?;
    // Height: batched matmul with My broadcast (batch stride 0, no copy).
    let z = my
        .unsqueeze(0)?
        .broadcast_as((batch, out_h, h))?
        .matmul(&y)?;
    let mut out_dims = lead.to_vec();
    out_dims.extend([out_h, out_w]);
    z.reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use std::collections::HashMap;

    fn goldens() -> HashMap<String, Tensor> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ops_golden.safetensors"
        );
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        a.to_dtype(DType::F32)
            .unwrap()
            .sub(&b.to_dtype(DType::F32).unwrap())
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

    fn check_golden(input: &str, output: &str, mode: Interp) {
        let g = goldens();
        let x = &g[input];
        let want = &g[output];
        let (oh, ow) = (want.dims()[2], want.dims()[3]);
        let got = resize(x, oh, ow, mode).unwrap();
        let err = max_abs_diff(&got, want);
        assert!(err < 2e-6, "{output}: max abs err {err}");
        // Goldens are far from trivial: a wrong kernel would be way off.
        assert!(max_abs_diff(want, &want.zeros_like().unwrap()) > 0.1);
    }

    #[test]
    fn bicubic_goldens_square() {
        check_golden("bicubic_in", "bicubic_out_13", Interp::Bicubic);
        check_golden("bicubic_in", "bicubic_out_16", Interp::Bicubic);
        // 5 -> 3 is a downsample: no antialias, same kernel.
        check_golden("bicubic_in", "bicubic_out_3", Interp::Bicubic);
    }

    #[test]
    fn bicubic_golden_rect() {
        check_golden("bicubic_rect_in", "bicubic_rect_out", Interp::Bicubic);
    }

    #[test]
    fn bilinear_goldens() {
        check_golden("bilinear_in", "bilinear_out", Interp::Bilinear);
        check_golden("bilinear_sq_in", "bilinear_sq_out", Interp::Bilinear);
    }

    #[test]
    fn bilinear_is_not_bicubic() {
        // The tests above must be able to tell the kernels apart.
        let g = goldens();
        let got = resize(&g["bicubic_in"], 13, 13, Interp::Bilinear).unwrap();
        assert!(max_abs_diff(&got, &g["bicubic_out_13"]) > 1e-2);
    }

    #[test]
    fn bicubic_hand_values() {
        // Cubic coefficients at t = 0.5 with A = -0.75: [-0.09375, 0.59375, 0.59375, -0.09375].
        assert_eq!(cubic2(1.5), -0.09375);
        assert_eq!(cubic1(0.5), 0.59375);
        // 2 -> 1: src = 0.5, taps -1, 0, 1, 2 clamp onto 0, 0, 1, 1.
        assert_eq!(bicubic_matrix(2, 1), vec![0.5, 0.5]);
        // 4 -> 8, dst 0: src = -0.25 (not clamped), i0 = -1, t = 0.75; taps -2..1 -> 0,0,0,1.
        let m = bicubic_matrix(4, 8);
        let t = 0.75f32;
        let c = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        assert_eq!(&m[0..4], &[c[0] + c[1] + c[2], c[3], 0.0, 0.0]);
        // dst 1: src = 0.25, i0 = 0, taps -1..2 -> 0,0,1,2.
        let c = [cubic2(1.25), cubic1(0.25), cubic1(0.75), cubic2(1.75)];
        assert_eq!(&m[4..8], &[c[0] + c[1], c[2], c[3], 0.0]);
        // Rows sum to one (partition of unity), up to rounding.
        for n in [1, 3, 7, 16, 128] {
            for out in [1, 2, 5, 16, 33] {
                let m = bicubic_matrix(n, out);
                for r in m.chunks(n) {
                    assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                }
            }
        }
        // Identity size is the identity matrix.
        let m = bicubic_matrix(6, 6);
        for r in 0..6 {
            for c in 0..6 {
                assert_eq!(m[r * 6 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn bilinear_hand_values() {
        assert_eq!(
            bilinear_matrix(2, 4),
            vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]
        );
        // 4 -> 2 downsample: src = 0.5 and 2.5.
        assert_eq!(
            bilinear_matrix(4, 2),
            vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
        );
        assert_eq!(bilinear_matrix(1, 3), vec![1.0, 1.0, 1.0]);
        assert_eq!(bilinear_matrix(3, 3), {
            let mut e = vec![0.0; 9];
            e[0] = 1.0;
            e[4] = 1.0;
            e[8] = 1.0;
            e
        });
    }

    #[test]
    fn leading_dims_layout_and_dtype() {
        let g = goldens();
        let x = &g["bicubic_rect_in"]; // [1, 2, 4, 6]
        let want = &g["bicubic_rect_out"];
        // No leading dims / three leading dims give the same planes.
        let plane = x.get(0).unwrap().get(1).unwrap();
        let got2 = resize(&plane, 9, 11, Interp::Bicubic).unwrap();
        let want_plane = want.get(0).unwrap().get(1).unwrap();
        assert!(max_abs_diff(&got2, &want_plane) < 1e-5);
        let x5 = x.unsqueeze(0).unwrap(); // [1, 1, 2, 4, 6]
        let got5 = resize(&x5, 9, 11, Interp::Bicubic).unwrap();
        assert_eq!(got5.dims(), &[1, 1, 2, 9, 11]);
        assert!(max_abs_diff(&got5.squeeze(0).unwrap(), want) < 1e-5);
        // Non-contiguous input: resize a transposed view, compare with the transposed result.
        let xt = x.transpose(2, 3).unwrap(); // [1, 2, 6, 4]
        assert!(!xt.is_contiguous());
        let got_t = resize(&xt, 11, 9, Interp::Bicubic).unwrap();
        assert!(max_abs_diff(&got_t.transpose(2, 3).unwrap(), want) < 1e-5);
        // f64 input stays f64.
        let got64 = resize(&x.to_dtype(DType::F64).unwrap(), 9, 11, Interp::Bicubic).unwrap();
        assert_eq!(got64.dtype(), DType::F64);
        assert!(max_abs_diff(&got64, want) < 1e-5);
        // Same size is the identity, one axis changing still works.
        let same = resize(x, 4, 6, Interp::Bicubic).unwrap();
        assert_eq!(max_abs_diff(&same, x), 0.0);
        let only_w = resize(x, 4, 11, Interp::Bilinear).unwrap();
        assert_eq!(only_w.dims(), &[1, 2, 4, 11]);
        let m = bilinear_matrix(6, 11);
        let row: Vec<f32> = x
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(2)
            .unwrap()
            .to_vec1()
            .unwrap();
        let out: Vec<f32> = only_w
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(2)
            .unwrap()
            .to_vec1()
            .unwrap();
        for o in 0..11 {
            let e: f32 = (0..6).map(|i| m[o * 6 + i] * row[i]).sum();
            assert!((out[o] - e).abs() < 1e-6);
        }
    }

    #[test]
    fn gradient_flows() {
        // d/dx sum(My x Mxᵀ) = (column sums of My) ⊗ (column sums of Mx).
        let x =
            Var::from_tensor(&Tensor::ones((2, 3, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let y = resize(x.as_tensor(), 7, 4, Interp::Bicubic).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap();
        assert_eq!(gx.dims(), &[2, 3, 5]);
        let my = bicubic_matrix(3, 7);
        let mx = bicubic_matrix(5, 4);
        let cy: Vec<f32> = (0..3)
            .map(|i| (0..7).map(|o| my[o * 3 + i]).sum())
            .collect();
        let cx: Vec<f32> = (0..5)
            .map(|j| (0..4).map(|o| mx[o * 5 + j]).sum())
            .collect();
        let g: Vec<Vec<Vec<f32>>> = gx.to_vec3().unwrap();
        for plane in g {
            for (i, row) in plane.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    assert!((v - cy[i] * cx[j]).abs() < 1e-5);
                }
            }
        }
    }
}
