//! Softmax ops with backward passes, for training on the CPU.
//!
//! candle's fused softmax has no backward, and the composite one (max, sub, exp, sum, div)
//! costs ~5 full-tensor passes forward and ~15 backward. Training differentiates through
//! softmaxes over [B, R, R, N] map logits (16 M values per head at R = 128, N = 500), where
//! that dominates the step. [`softmax_last_dim_with_grad`] is one parallel pass each way;
//! [`UpsampledSoftmaxSelectGrad`] never materialises the [B, R, R, N] tensors at all.

use super::attnmap::{FastSoftmax, UpsampledSoftmaxSelect};
use super::simd::{self, multiversion};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Softmax over the last dimension; differentiable when the input is tracked.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        return softmax_last_dim_with_grad(x);
    }
    if x.track_op() || !x.is_contiguous() {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.apply_op1_no_bwd(&FastSoftmax);
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// Softmax over the last dim of a contiguous f32/f64 CPU tensor, differentiable.
pub fn softmax_last_dim_with_grad(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxWithGrad)
}

struct SoftmaxWithGrad;

fn rows<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<(&'a [T], usize)> {
    let n = l.dims().last().copied().unwrap_or(1).max(1);
    match l.contiguous_offsets() {
        Some((a, b)) => Ok((&v[a..b], n)),
        None => candle_core::bail!("softmax: {what} must be contiguous"),
    }
}

/// Same arithmetic as candle's fused CPU softmax (max, exp(x - max), sum, divide).
fn softmax_row_f64(xs: &[f64], o: &mut [f64]) {
    let max = xs.iter().fold(f64::NEG_INFINITY, |m, &v| v.max(m));
    for (d, &s) in o.iter_mut().zip(xs) {
        *d = (s - max).exp();
    }
    let sum: f64 = o.iter().sum();
    for d in o.iter_mut() {
        *d /= sum;
    }
}

macro_rules! softmax_rows {
    ($name:ident, $bwd:ident, $t:ty, $row:path) => {
        fn $name(x: &[$t], n: usize) -> Vec<$t> {
            let mut out = vec![0 as $t; x.len()];
            out.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .for_each(|(o, xs)| $row(xs, o));
            out
        }

        fn $bwd(g: &[$t], y: &[$t], n: usize) -> Vec<$t> {
            let mut out = vec![0 as $t; y.len()];
            out.par_chunks_mut(n)
                .zip(g.par_chunks(n).zip(y.par_chunks(n)))
                .for_each(|(o, (gs, ys))| {
                    let dot: $t = gs.iter().zip(ys).map(|(a, b)| a * b).sum();
                    for ((d, &gv), &yv) in o.iter_mut().zip(gs).zip(ys) {
                        *d = yv * (gv - dot);
                    }
                });
            out
        }
    };
}

softmax_rows!(softmax_f32, softmax_bwd_f32, f32, simd::softmax_row_into);
softmax_rows!(softmax_f64, softmax_bwd_f64, f64, softmax_row_f64);

impl CustomOp1 for SoftmaxWithGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-with-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let (x, n) = rows(v, l, "input")?;
                CpuStorage::F32(softmax_f32(x, n))
            }
            CpuStorage::F64(v) => {
                let (x, n) = rows(v, l, "input")?;
                CpuStorage::F64(softmax_f64(x, n))
            }
            _ => candle_core::bail!("softmax with grad: only f32 and f64"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(res, &SoftmaxBwd)?))
    }
}

/// `(dy, y) -> y * (dy - sum(dy * y))` per row.
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-last-dim-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("softmax bwd: shapes {:?} and {:?}", l1.shape(), l2.shape());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => {
                let ((g, n), (y, _)) = (rows(g, l1, "grad")?, rows(y, l2, "output")?);
                CpuStorage::F32(softmax_bwd_f32(g, y, n))
            }
            (CpuStorage::F64(g), CpuStorage::F64(y)) => {
                let ((g, n), (y, _)) = (rows(g, l1, "grad")?, rows(y, l2, "output")?);
                CpuStorage::F64(softmax_bwd_f64(g, y, n))
            }
            _ => candle_core::bail!("softmax bwd: only f32 and f64, same dtype"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// [`UpsampledSoftmaxSelect`] (one head's logits `[B, s, s, N]` -> bicubic upsampling to
/// R x R -> softmax over N -> the K selected tokens `[B, R, R, K]`) with a backward pass
/// into the low-resolution logits. The backward recomputes each output pixel's N logits
/// from the interpolation taps, so neither direction keeps [B, R, R, N] values: with
/// `u` the upsampled logits, `p = softmax(u)` and `a = p[select]`,
/// `du = scatter(g * a) - p * sum(g * a)`, then `dx = Upᵀ du`.
pub struct UpsampledSoftmaxSelectGrad(pub UpsampledSoftmaxSelect);

impl CustomOp1 for UpsampledSoftmaxSelectGrad {
    fn name(&self) -> &'static str {
        "upsampled-softmax-select-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu_fwd(s, l)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = &self.0;
        let (b, side, _, n) = arg.dims4()?;
        let (r, k) = (op.out, op.select.len());
        let x: Vec<f32> = arg.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        if g.len() != b * r * r * k {
            candle_core::bail!("attention maps bwd: gradient {:?}", grad.shape());
        }
        // Per (image, output row): gradient w.r.t. the row-interpolated logits [side, N].
        let rows: Vec<Vec<f32>> = (0..b * r)
            .into_par_iter()
            .map(|task| {
                let (img, i) = (task / r, task % r);
                let mut grow = vec![0f32; side * n];
                grad_row(
                    &x[img * side * side * n..(img + 1) * side * side * n],
                    &op.taps[i],
                    &op.taps,
                    n,
                    &op.select,
                    &g[(img * r + i) * r * k..][..r * k],
                    &mut grow,
                );
                grow
            })
            .collect();
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(side * side * n)
            .enumerate()
            .for_each(|(img, d)| {
                for i in 0..r {
                    let grow = &rows[img * r + i];
                    for &(p, wy) in &op.taps[i] {
                        for (o, &v) in d[p * side * n..(p + 1) * side * n].iter_mut().zip(grow) {
                            *o += wy * v;
                        }
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

multiversion! {
    /// Gradient of one output row of [`UpsampledSoftmaxSelect`] with respect to that
    /// row's vertically interpolated logits (`grow`, `[s, N]`); `g` is the row's `[R, K]`
    /// output gradient.
    fn grad_row(
        base: &[f32],
        row_taps: &[(usize, f32)],
        taps: &[Vec<(usize, f32)>],
        n: usize,
        select: &[usize],
        g: &[f32],
        grow: &mut [f32],
    ) {
        let k = select.len();
        let mut rowbuf = vec![0f32; grow.len()];
        for &(p, wy) in row_taps {
            simd::axpy(&mut rowbuf, wy, &base[p * grow.len()..(p + 1) * grow.len()]);
        }
        let mut u = vec![0f32; n];
        let mut ga = vec![0f32; k];
        for (j, col_taps) in taps.iter().enumerate() {
            u.iter_mut().for_each(|v| *v = 0.0);
            for &(q, wx) in col_taps {
                simd::axpy(&mut u, wx, &rowbuf[q * n..(q + 1) * n]);
            }
            simd::softmax_row(&mut u); // u is now p
            for ((a, &gv), &t) in ga.iter_mut().zip(&g[j * k..(j + 1) * k]).zip(select) {
                *a = gv * u[t];
            }
            let c: f32 = ga.iter().sum();
            simd::scale(&mut u, -c);
            for (&t, &v) in select.iter().zip(&ga) {
                u[t] += v;
            }
            for &(q, wx) in col_taps {
                simd::axpy(&mut grow[q * n..(q + 1) * n], wx, &u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs, max_abs_diff};
    use candle_core::{DType, Device, Var, D};

    #[test]
    fn matches_composite_forward_and_backward() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::randn(0f32, 2.0, (3, 4, 7), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // A weighting that makes the gradient non-trivial.
            let w = Tensor::randn(0f32, 1.0, (3, 4, 7), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let v1 = Var::from_tensor(&x).unwrap();
            let v2 = Var::from_tensor(&x).unwrap();
            let y1 = softmax_last_dim_with_grad(v1.as_tensor()).unwrap();
            let y2 = candle_nn::ops::softmax(v2.as_tensor(), D::Minus1).unwrap();
            let diff = |a: &Tensor, b: &Tensor| -> f64 {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            assert!(diff(&y1, &y2) < 1e-6);
            let g1 = (&y1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&y2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (g1, g2) = (
                g1.get(v1.as_tensor()).unwrap(),
                g2.get(v2.as_tensor()).unwrap(),
            );
            assert!(diff(g1, g2) < 1e-6, "{dtype:?}");
            // Rows of the gradient of a softmax sum to zero.
            let s = g1
                .sum_keepdim(2)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap();
            assert!(s
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .all(|v| *v < 1e-6));
        }
    }

    #[test]
    fn close_to_candle_fused_softmax() {
        let x = Tensor::randn(0f32, 3.0, (5, 33), &Device::Cpu).unwrap();
        let a: Vec<f32> = softmax_last_dim_with_grad(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = candle_nn::ops::softmax_last_dim(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "{x} vs {y}");
        }
    }

    #[test]
    fn upsampled_select_backward_matches_composite() {
        use crate::ops::attnmap::sparse_taps;
        use crate::ops::resample::bicubic_matrix;
        let dev = Device::Cpu;
        let (b, s, n, r) = (2, 4, 29, 11);
        let x = Tensor::randn(0f32, 2.0, (b, s, s, n), &dev).unwrap();
        let select = vec![3usize, 0, 28, 17];
        let k = select.len();
        let w = Tensor::randn(0f32, 1.0, (b, r, r, k), &dev).unwrap();
        // Composite reference: dense upsampling, softmax, index_select.
        let v1 = Var::from_tensor(&x).unwrap();
        let dense = bicubic_matrix(s, r);
        let m = Tensor::from_vec(dense.clone(), (r, s), &dev).unwrap();
        let up = m
            .broadcast_matmul(&v1.as_tensor().reshape((b, s, s * n)).unwrap())
            .unwrap();
        let up = m
            .broadcast_matmul(&up.reshape((b * r, s, n)).unwrap())
            .unwrap();
        let p = candle_nn::ops::softmax(&up.reshape((b, r, r, n)).unwrap(), D::Minus1).unwrap();
        let idx = Tensor::from_vec(
            select.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            k,
            &dev,
        )
        .unwrap();
        let want = p.index_select(&idx, 3).unwrap();
        let gw = (&want * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = gw.get(v1.as_tensor()).unwrap();
        // Fused op with backward.
        let v2 = Var::from_tensor(&x).unwrap();
        let op = UpsampledSoftmaxSelect {
            side: s,
            out: r,
            taps: sparse_taps(&dense, r, s),
            select,
        };
        let got = v2
            .as_tensor()
            .apply_op1(UpsampledSoftmaxSelectGrad(op))
            .unwrap();
        let gg = (&got * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gg = gg.get(v2.as_tensor()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
        let scale = max_abs(gw);
        assert!(scale > 1e-3);
        assert!(
            max_abs_diff(gg, gw) < 1e-5 * scale.max(1.0),
            "{}",
            max_abs_diff(gg, gw)
        );
    }
}
