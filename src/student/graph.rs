//! The student's differentiable convolution for training: im2col as a custom op whose
//! backward is col2im, then a matrix product, so that both directions run on the GEMM
//! kernels (candle's CPU convolution backward goes through a direct transposed convolution,
//! about ten times slower at these sizes).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(c: usize, h: usize, w: usize, k: usize, s: usize) -> Self {
        let p = k / 2;
        Self {
            c,
            h,
            w,
            k,
            s,
            p,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        }
    }

    /// Input index of (channel plane offset, ky, kx, output pixel), if inside the image.
    #[inline(always)]
    fn source(&self, ky: usize, kx: usize, q: usize) -> Option<usize> {
        let (oy, ox) = (q / self.ow, q % self.ow);
        let y = (oy * self.s + ky) as isize - self.p as isize;
        let x = (ox * self.s + kx) as isize - self.p as isize;
        (y >= 0 && x >= 0 && (y as usize) < self.h && (x as usize) < self.w)
            .then(|| y as usize * self.w + x as usize)
    }
}

/// `[B, C, H, W]` -> `[B, C*k*k, OH*OW]`, padding k/2.
struct Im2Col {
    k: usize,
    s: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "student-im2col"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::ops::contiguous_f32(st, l, "im2col: input")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let g = Geometry::new(c, h, w, self.k, self.s);
        let (kk, pix) = (g.k * g.k, g.oh * g.ow);
        let mut out = vec![0f32; b * c * kk * pix];
        out.par_chunks_mut(kk * pix)
            .enumerate()
            .for_each(|(bc, dst)| {
                let plane = &x[bc * h * w..(bc + 1) * h * w];
                for (r, row) in dst.chunks_mut(pix).enumerate() {
                    let (ky, kx) = (r / g.k, r % g.k);
                    for (q, d) in row.iter_mut().enumerate() {
                        *d = g.source(ky, kx, q).map_or(0.0, |i| plane[i]);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c * kk, pix))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        let op = Col2Im {
            g: Geometry::new(c, h, w, self.k, self.s),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The adjoint of [`Im2Col`]: sums each column entry back into its input pixel.
struct Col2Im {
    g: Geometry,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "student-col2im"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = crate::ops::contiguous_f32(st, l, "col2im: gradient")?;
        let g = self.g;
        let (kk, pix) = (g.k * g.k, g.oh * g.ow);
        let b = l.shape().dims3()?.0;
        let mut out = vec![0f32; b * g.c * g.h * g.w];
        out.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(bc, plane)| {
                let src = &cols[bc * kk * pix..(bc + 1) * kk * pix];
                for (r, row) in src.chunks(pix).enumerate() {
                    let (ky, kx) = (r / g.k, r % g.k);
                    for (q, &v) in row.iter().enumerate() {
                        if let Some(i) = g.source(ky, kx, q) {
                            plane[i] += v;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, g.c, g.h, g.w))))
    }
}

/// Differentiable convolution with bias (padding k/2), as im2col + matmul.
pub fn conv(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize) -> Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (co, _, k, _) = w.dims4()?;
    let g = Geometry::new(c, h, wd, k, stride);
    let cols = if k == 1 && stride == 1 {
        x.reshape((b, c, h * wd))?
    } else {
        x.contiguous()?.apply_op1(Im2Col { k, s: stride })?
    };
    let wm = w
        .reshape((1, co, c * k * k))?
        .broadcast_as((b, co, c * k * k))?;
    wm.matmul(&cols)?
        .reshape((b, co, g.oh, g.ow))?
        .broadcast_add(&bias.reshape((1, co, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::ops::rng::Rng::new(seed);
        let mut v = vec![0f32; n];
        r.fill_normal(&mut v);
        v
    }

    #[test]
    fn values_and_gradients_equal_candles_convolution() {
        let dev = Device::Cpu;
        for (k, s, (h, w)) in [
            (3, 1, (9, 7)),
            (3, 2, (10, 8)),
            (3, 2, (9, 9)),
            (1, 1, (5, 6)),
        ] {
            let (b, c, co) = (2, 3, 4);
            let x = Var::from_tensor(
                &Tensor::from_vec(rand(b * c * h * w, 1), (b, c, h, w), &dev).unwrap(),
            )
            .unwrap();
            let wt = Var::from_tensor(
                &Tensor::from_vec(rand(co * c * k * k, 2), (co, c, k, k), &dev).unwrap(),
            )
            .unwrap();
            let bias = Var::from_tensor(&Tensor::from_vec(rand(co, 3), co, &dev).unwrap()).unwrap();
            let ours = conv(x.as_tensor(), wt.as_tensor(), bias.as_tensor(), s).unwrap();
            let theirs = x
                .as_tensor()
                .conv2d(wt.as_tensor(), k / 2, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias.as_tensor().reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert!(diff(&ours, &theirs) < 1e-5, "k {k} s {s}: values");
            // A loss that weighs every output differently.
            let weights = Tensor::from_vec(rand(ours.elem_count(), 4), ours.dims(), &dev).unwrap();
            let ga = (ours * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gb = (theirs * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("input", &x), ("weight", &wt), ("bias", &bias)] {
                let (a, b) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gb.get(v.as_tensor()).unwrap(),
                );
                assert!(diff(a, b) < 1e-4, "k {k} s {s}: gradient of the {name}");
            }
        }
    }
}
