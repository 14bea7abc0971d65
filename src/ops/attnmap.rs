//! Fused attention-map kernel for inference: upsample one head's logits from s x s to
//! R x R, softmax over all N tokens at every output pixel, keep only the K selected tokens.
//!
//! The composite path materialises [R, R, N] upsampled logits and probabilities (65 M
//! values per head for SD at R = 128) only to keep K = 10 of N = 500. Here each output
//! pixel's N logits come from its 4x4 interpolation taps and live in a small row buffer.

use super::simd::{self, multiversion};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// Non-zero taps of each row of a dense `[out, in]` interpolation matrix.
pub fn sparse_taps(dense: &[f32], out: usize, inp: usize) -> Vec<Vec<(usize, f32)>> {
    (0..out)
        .map(|o| {
            (0..inp)
                .filter_map(|i| {
                    let w = dense[o * inp + i];
                    (w != 0.0).then_some((i, w))
                })
                .collect()
        })
        .collect()
}

/// Input: one head's logits `[B, s, s, N]` (contiguous f32). Output `[B, R, R, K]`.
#[derive(Clone)]
pub struct UpsampledSoftmaxSelect {
    pub side: usize,
    pub out: usize,
    /// Interpolation taps per output row/column (same matrix for both axes).
    pub taps: Vec<Vec<(usize, f32)>>,
    pub select: Vec<usize>,
}

impl UpsampledSoftmaxSelect {
    fn check_select(&self, n: usize) -> Result<()> {
        match self.select.iter().find(|&&i| i >= n) {
            Some(&bad) => {
                candle_core::bail!("attention maps: token {bad} out of range for {n} tokens")
            }
            None => Ok(()),
        }
    }
}

impl CustomOp1 for UpsampledSoftmaxSelect {
    fn name(&self) -> &'static str {
        "upsampled-softmax-select"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("attention maps: logits must be contiguous f32"),
        };
        let (b, sh, sw, n) = l.shape().dims4()?;
        let (side, r, k) = (self.side, self.out, self.select.len());
        if sh != side || sw != side || self.taps.len() != r {
            candle_core::bail!(
                "attention maps: logits {:?} do not match side {side}",
                l.shape()
            );
        }
        self.check_select(n)?;
        let mut out = vec![0f32; b * r * r * k];
        // One task per (image, output row).
        out.par_chunks_mut(r * k)
            .enumerate()
            .for_each(|(task, orow)| {
                let (img, i) = (task / r, task % r);
                let base = &x[img * side * side * n..(img + 1) * side * side * n];
                fused_row(
                    base,
                    &self.taps[i],
                    &self.taps,
                    side,
                    n,
                    &self.select,
                    1.0,
                    orow,
                );
            });
        Ok((CpuStorage::F32(out), Shape::from((b, r, r, k))))
    }
}

multiversion! {
    /// One output row of [`UpsampledSoftmaxSelect`]: `base` is one image's logits
    /// `[s, s, N]`, `row_taps` the vertical taps of this row; `weight` times the row's
    /// `[R, K]` probabilities is added to `orow`.
    #[allow(clippy::too_many_arguments)]
    fn fused_row(
        base: &[f32],
        row_taps: &[(usize, f32)],
        taps: &[Vec<(usize, f32)>],
        side: usize,
        n: usize,
        select: &[usize],
        weight: f32,
        orow: &mut [f32],
    ) {
        let side_n = side * n;
        // Row-interpolated logits for this output row: [s (columns), N].
        let mut rowbuf = vec![0f32; side_n];
        for &(p, wy) in row_taps {
            simd::axpy(&mut rowbuf, wy, &base[p * side_n..(p + 1) * side_n]);
        }
        let mut logits = vec![0f32; n];
        for (o, col_taps) in orow.chunks_mut(select.len()).zip(taps) {
            let m = interpolate_max(&rowbuf, col_taps, n, &mut logits);
            let inv = weight / simd::exp_sum(&logits, m);
            for (dst, &t) in o.iter_mut().zip(select) {
                *dst += simd::exp_nonpos(logits[t] - m) * inv;
            }
        }
    }
}

/// `logits` = sum of the taps' rows of `rowbuf`; returns its maximum.
#[inline(always)]
fn interpolate_max(rowbuf: &[f32], taps: &[(usize, f32)], n: usize, logits: &mut [f32]) -> f32 {
    logits.iter_mut().for_each(|v| *v = 0.0);
    for &(q, w) in taps {
        simd::axpy(logits, w, &rowbuf[q * n..(q + 1) * n]);
    }
    simd::max(logits)
}

/// Head-mean attention maps of one observed layer, fused: `q` `[B, s*s, C]` (the
/// layer's query projection, heads side by side), `k` `[H, N, C/H]` (the context's keys),
/// logits `q kᵀ * scale` per head at s x s, then per output row and head the fused
/// upsampling, softmax over all N and selection of [`UpsampledSoftmaxSelect`]. Returns
/// `[B, R, R, K]`. One parallel pass per layer instead of one op chain per head.
fn layer_maps(
    q: &[f32],
    k: &[f32],
    (b, heads, n, d): (usize, usize, usize, usize),
    scale: f32,
    op: &UpsampledSoftmaxSelect,
) -> Result<Vec<f32>> {
    let (side, r, sel) = (op.side, op.out, op.select.len());
    let (l, c) = (side * side, heads * d);
    if q.len() != b * l * c || k.len() != heads * n * d || op.taps.len() != r {
        candle_core::bail!(
            "attention maps: q {} / k {} values do not match",
            q.len(),
            k.len()
        );
    }
    op.check_select(n)?;
    // logits[img][head] = [s, s, N]
    let mut logits = vec![0f32; b * heads * l * n];
    logits
        .par_chunks_mut(l * n)
        .enumerate()
        .for_each(|(task, dst)| {
            let (img, h) = (task / heads, task % heads);
            // SAFETY: q rows of image `img`, columns of head `h` (row stride C); k rows of
            // head `h` read transposed; `dst` is [l, n].
            unsafe {
                gemm::gemm(
                    l,
                    n,
                    d,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr().add(img * l * c + h * d),
                    1,
                    c as isize,
                    k.as_ptr().add(h * n * d),
                    d as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    let mut out = vec![0f32; b * r * r * sel];
    let weight = 1.0 / heads as f32;
    // Heads one after the other: one head's logits stay in cache across the rows.
    for h in 0..heads {
        out.par_chunks_mut(r * sel)
            .enumerate()
            .for_each(|(task, orow)| {
                let (img, i) = (task / r, task % r);
                let base = &logits[(img * heads + h) * l * n..][..l * n];
                let (taps, select) = (&op.taps, &op.select);
                fused_row(base, &taps[i], taps, side, n, select, weight, orow);
            });
    }
    Ok(out)
}

/// [`layer_maps`] as an op of `q` `[B, s*s, C]` and `k` `[1, H, N, C/H]` (contiguous
/// f32, read in place), giving `[B, R, R, K]`.
pub struct LayerMaps {
    pub scale: f32,
    pub maps: UpsampledSoftmaxSelect,
}

impl CustomOp2 for LayerMaps {
    fn name(&self) -> &'static str {
        "layer-attention-maps"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k) = match (s1, s2, l1.contiguous_offsets(), l2.contiguous_offsets()) {
            (CpuStorage::F32(q), CpuStorage::F32(k), Some((a, b)), Some((c, d))) => {
                (&q[a..b], &k[c..d])
            }
            _ => candle_core::bail!("attention maps: q and k must be contiguous f32"),
        };
        let (b, _, _) = l1.shape().dims3()?;
        let (_, heads, n, d) = l2.shape().dims4()?;
        let out = layer_maps(q, k, (b, heads, n, d), self.scale, &self.maps)?;
        let (r, sel) = (self.maps.out, self.maps.select.len());
        Ok((CpuStorage::F32(out), Shape::from((b, r, r, sel))))
    }
}

/// Row softmax over the last dimension (CPU, f32) using `exp_nonpos`; rows in parallel.
pub struct FastSoftmax;

impl CustomOp1 for FastSoftmax {
    fn name(&self) -> &'static str {
        "fast-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("softmax: input must be contiguous f32"),
        };
        let n = *l.shape().dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        if n > 0 {
            out.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .for_each(|(o, xs)| simd::softmax_row_into(xs, o));
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::resample::bicubic_matrix;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, Tensor};

    #[test]
    fn fast_softmax_matches_candle() {
        let x = Tensor::randn(0f32, 4f32, (3, 5, 77), &Device::Cpu).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let got = x.apply_op1_no_bwd(&FastSoftmax).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(err < 1e-6, "max err {err}");
    }

    #[test]
    fn matches_composite_upsample_softmax_select() {
        let dev = Device::Cpu;
        let (b, s, n, r) = (2, 4, 37, 13);
        let logits = Tensor::randn(0f32, 2f32, (b, s, s, n), &dev).unwrap();
        let dense = bicubic_matrix(s, r);
        let m = Tensor::from_vec(dense.clone(), (r, s), &dev).unwrap();
        let up = m
            .broadcast_matmul(&logits.reshape((b, s, s * n)).unwrap())
            .unwrap();
        let up = m
            .broadcast_matmul(&up.reshape((b * r, s, n)).unwrap())
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&up.reshape((b, r, r, n)).unwrap()).unwrap();
        let select = vec![5usize, 0, 36];
        let idx = Tensor::from_vec(
            select.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            3,
            &dev,
        )
        .unwrap();
        let want = probs.index_select(&idx, 3).unwrap();
        let op = UpsampledSoftmaxSelect {
            side: s,
            out: r,
            taps: sparse_taps(&dense, r, s),
            select,
        };
        let got = logits.apply_op1_no_bwd(&op).unwrap();
        let err = max_abs_diff(&got, &want);
        let scale: f32 = want.max_all().unwrap().to_scalar().unwrap();
        assert!(err <= 1e-5 * scale, "max err {err} (scale {scale})");
    }
}
