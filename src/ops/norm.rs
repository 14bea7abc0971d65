//! Fused CPU group normalisation with optional SiLU (inference, and training with an
//! input-only backward).
//!
//! candle's GroupNorm is a chain of ~6 full-tensor passes that each allocate; at the VAE's
//! 128 x 512 x 512 activations one pass per statistic plus one fused output pass is several
//! times cheaper, and the groups run in parallel.

use super::contiguous_f32;
use super::simd::{exp_nonpos, multiversion};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` [B, C, ...] normalised per (batch, group), then `* weight + bias`, then SiLU if `silu`.
pub struct GroupNormOp {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

/// Elements per (batch, group) and per channel of an input of `dims`.
fn group_sizes(dims: &[usize], groups: usize) -> (usize, usize) {
    let spatial: usize = dims[2..].iter().product();
    ((dims[1] / groups) * spatial, spatial)
}

fn group_norm_f32(
    x: &[f32],
    dims: &[usize],
    w: &[f32],
    b: &[f32],
    g: usize,
    eps: f64,
    silu: bool,
) -> Vec<f32> {
    let c = dims[1];
    let (per_group, spatial) = group_sizes(dims, g);
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(per_group)
        .zip(x.par_chunks(per_group))
        .enumerate()
        .for_each(|(i, (o, xs))| {
            let (mean, inv) = stats(xs, eps);
            let c0 = (i % g) * (c / g);
            for (k, (oc, xc)) in o.chunks_mut(spatial).zip(xs.chunks(spatial)).enumerate() {
                let scale = (inv * w[c0 + k] as f64) as f32;
                let shift = (b[c0 + k] as f64 - mean * inv * w[c0 + k] as f64) as f32;
                affine_act(xc, scale, shift, silu, oc);
            }
        });
    out
}

multiversion! {
    /// `o = act(x * scale + shift)`, act = SiLU or identity.
    fn affine_act(xs: &[f32], scale: f32, shift: f32, silu: bool, o: &mut [f32]) {
        if silu {
            for (ov, &xv) in o.iter_mut().zip(xs) {
                let y = xv * scale + shift;
                // sigmoid from exp(-|y|) so the fast exp only sees non-positive inputs.
                let e = exp_nonpos(-y.abs());
                let sig = if y >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                *ov = y * sig;
            }
        } else {
            for (ov, &xv) in o.iter_mut().zip(xs) {
                *ov = xv * scale + shift;
            }
        }
    }
}

multiversion! {
    /// Mean and 1/sqrt(var + eps) of one group, accumulated in f64 lanes (groups hold up
    /// to millions of values).
    fn stats(xs: &[f32], eps: f64) -> (f64, f64) {
        const L: usize = 8;
        let n = xs.len() as f64;
        let full = xs.len() / L * L;
        let mut acc = [0f64; L];
        for c in xs[..full].chunks_exact(L) {
            for i in 0..L {
                acc[i] += c[i] as f64;
            }
        }
        let rest: f64 = xs[full..].iter().map(|&v| v as f64).sum();
        let mean = (acc.iter().sum::<f64>() + rest) / n;
        let mut acc = [0f64; L];
        for c in xs[..full].chunks_exact(L) {
            for i in 0..L {
                let d = c[i] as f64 - mean;
                acc[i] += d * d;
            }
        }
        let rest: f64 = xs[full..].iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        let var = (acc.iter().sum::<f64>() + rest) / n;
        (mean, 1.0 / (var + eps).sqrt())
    }
}

/// [`GroupNormOp`] with constant affine parameters as an op of the input alone, with a
/// backward pass for the input (training through ResNet blocks without candle's ~6-pass
/// composite and its saved intermediates).
pub struct GroupNormGrad {
    pub op: GroupNormOp,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl CustomOp1 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "group-norm-act-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "group norm: input")?;
        let dims = l.shape().dims();
        self.check(dims)?;
        let (g, eps, silu) = (self.op.groups, self.op.eps, self.op.silu);
        let out = group_norm_f32(x, dims, &self.weight, &self.bias, g, eps, silu);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims().to_vec();
        self.check(&dims)?;
        let x: Vec<f32> = arg.flatten_all()?.to_vec1()?;
        let gy: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let (g, c) = (self.op.groups, dims[1]);
        let (per_group, spatial) = group_sizes(&dims, g);
        let (w, b) = (&self.weight, &self.bias);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(per_group)
            .zip(x.par_chunks(per_group).zip(gy.par_chunks(per_group)))
            .enumerate()
            .for_each(|(i, (d, (xs, gs)))| {
                let (mean, inv) = stats(xs, self.op.eps);
                let c0 = (i % g) * (c / g);
                // Pass 1: d <- dL/dxhat; sums of it and of it * xhat.
                let (mut s1, mut s2) = (0f64, 0f64);
                for (k, ((dc, xc), gc)) in d
                    .chunks_mut(spatial)
                    .zip(xs.chunks(spatial))
                    .zip(gs.chunks(spatial))
                    .enumerate()
                {
                    let (wk, bk) = (w[c0 + k], b[c0 + k]);
                    for ((dv, &xv), &gv) in dc.iter_mut().zip(xc).zip(gc) {
                        let xhat = ((xv as f64 - mean) * inv) as f32;
                        let dz = if self.op.silu {
                            let z = wk * xhat + bk;
                            let sg = 1.0 / (1.0 + (-z).exp());
                            gv * sg * (1.0 + z * (1.0 - sg))
                        } else {
                            gv
                        };
                        *dv = dz * wk;
                        s1 += *dv as f64;
                        s2 += (*dv * xhat) as f64;
                    }
                }
                // Pass 2: dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
                let n = xs.len() as f64;
                let (m1, m2) = (s1 / n, s2 / n);
                for (dv, &xv) in d.iter_mut().zip(xs) {
                    let xhat = (xv as f64 - mean) * inv;
                    *dv = (inv * (*dv as f64 - m1 - xhat * m2)) as f32;
                }
            });
        Ok(Some(Tensor::from_vec(dx, dims, arg.device())?))
    }
}

impl GroupNormGrad {
    fn check(&self, dims: &[usize]) -> Result<()> {
        self.op.check(dims, self.weight.len(), self.bias.len())
    }
}

impl GroupNormOp {
    /// Input `dims` [B, C, ...] against the groups and `weights`/`biases` lengths.
    fn check(&self, dims: &[usize], weights: usize, biases: usize) -> Result<()> {
        let g = self.groups;
        if dims.len() < 2
            || g == 0
            || !dims[1].is_multiple_of(g)
            || weights != dims[1]
            || biases != dims[1]
        {
            candle_core::bail!("group norm: input {dims:?}, {g} groups, {weights} weights");
        }
        Ok(())
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "group norm: input")?;
        let w = contiguous_f32(s2, l2, "group norm: weight")?;
        let b = contiguous_f32(s3, l3, "group norm: bias")?;
        let dims = l1.shape().dims();
        self.check(dims, w.len(), b.len())?;
        let out = group_norm_f32(x, dims, w, b, self.groups, self.eps, self.silu);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs, max_abs_diff};
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn matches_candle_group_norm_and_silu() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (2, 8, 5, 7), &dev)
            .unwrap()
            .affine(3.0, 1.5)
            .unwrap();
        let w = Tensor::randn(1f32, 0.2, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.2, 8, &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), 8, 4, 1e-5).unwrap();
        let want = reference.forward(&x).unwrap();
        for silu in [false, true] {
            let op = GroupNormOp {
                groups: 4,
                eps: 1e-5,
                silu,
            };
            let got = x.apply_op3_no_bwd(&w, &b, &op).unwrap();
            let want = if silu {
                want.silu().unwrap()
            } else {
                want.clone()
            };
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-5, "silu={silu}: max err {err}");
        }
        let bad = GroupNormOp {
            groups: 3,
            eps: 1e-5,
            silu: false,
        };
        assert!(x.apply_op3_no_bwd(&w, &b, &bad).is_err());
    }

    #[test]
    fn backward_matches_candle_composite() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (2, 8, 5, 7), &dev)
            .unwrap()
            .affine(2.0, 0.5)
            .unwrap();
        let w = Tensor::randn(1f32, 0.3, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 8, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1f32, (2, 8, 5, 7), &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), 8, 4, 1e-5).unwrap();
        for silu in [false, true] {
            let v1 = Var::from_tensor(&x).unwrap();
            let op = GroupNormGrad {
                op: GroupNormOp {
                    groups: 4,
                    eps: 1e-5,
                    silu,
                },
                weight: w.to_vec1().unwrap(),
                bias: b.to_vec1().unwrap(),
            };
            let y1 = v1.as_tensor().apply_op1(op).unwrap();
            let gs1 = (&y1 * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let v2 = Var::from_tensor(&x).unwrap();
            let mut y2 = reference.forward(v2.as_tensor()).unwrap();
            if silu {
                y2 = y2.silu().unwrap();
            }
            let g2 = (&y2 * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (g1, g2) = (
                gs1.get(v1.as_tensor()).unwrap(),
                g2.get(v2.as_tensor()).unwrap(),
            );
            let err = max_abs_diff(g1, g2);
            let scale = max_abs(g2);
            assert!(
                scale > 1e-3 && err < 1e-4 * scale,
                "silu={silu}: {err} vs {scale}"
            );
            assert!(gs1.get(&w).is_none() && gs1.get(&b).is_none());
        }
    }
}
