//! Fused attention-map kernel for inference: upsample one head's logits from s x s to
//! R x R, softmax over all N tokens at every output pixel, keep only the K selected tokens.
//!
//! The composite path materialises [R, R, N] upsampled logits and probabilities (65 M
//! values per head for SD at R = 128) only to keep K = 10 of N = 500. Here each output
//! pixel's N logits come from its 4x4 interpolation taps and live in a small row buffer.

use super::contiguous_f32;
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
        let x = contiguous_f32(s, l, "attention maps: logits")?;
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
        let taps4 = padded_taps(&self.taps);
        // One task per (image, output row).
        out.par_chunks_mut(r * k)
            .enumerate()
            .for_each(|(task, orow)| {
                let (img, i) = (task / r, task % r);
                let base = &x[img * side * side * n..(img + 1) * side * side * n];
                row(
                    base,
                    &self.taps[i],
                    &self.taps,
                    taps4.as_deref(),
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

/// Column taps padded to exactly 4 (zero weights), for the AVX-512 kernel; `None` when
/// the CPU lacks AVX-512 or a column has more than 4 taps.
fn padded_taps(taps: &[Vec<(usize, f32)>]) -> Option<Vec<[(usize, f32); 4]>> {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return taps
            .iter()
            .map(|t| {
                let first = *t.first()?;
                let mut out = [(first.0, 0.0); 4];
                out.get_mut(..t.len())?.copy_from_slice(t);
                Some(out)
            })
            .collect();
    }
    None
}

/// [`fused_row`] through the AVX-512 kernel when `taps4` is available.
#[allow(clippy::too_many_arguments)]
fn row(
    base: &[f32],
    row_taps: &[(usize, f32)],
    taps: &[Vec<(usize, f32)>],
    taps4: Option<&[[(usize, f32); 4]]>,
    side: usize,
    n: usize,
    select: &[usize],
    weight: f32,
    orow: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t4) = taps4 {
        // SAFETY: `taps4` is only `Some` when the CPU has AVX-512F (`padded_taps`).
        unsafe { avx512::fused_row(base, row_taps, t4, side, n, select, weight, orow) };
        return;
    }
    let _ = taps4;
    fused_row(base, row_taps, taps, side, n, select, weight, orow);
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

/// AVX-512 version of [`fused_row`]: 16 tokens per register, the 4-tap column
/// interpolation and the maximum in one pass, exp through `vscalefps` (no clamp of the
/// exponent needed). Same function as the portable kernel to float rounding.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    pub use crate::ops::simd::avx512::{available, exp_nonpos};
    use std::arch::x86_64::*;

    const W: usize = 16;

    /// See [`super::fused_row`]; `taps` are the column taps padded to 4.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub fn fused_row(
        base: &[f32],
        row_taps: &[(usize, f32)],
        taps: &[[(usize, f32); 4]],
        side: usize,
        n: usize,
        select: &[usize],
        weight: f32,
        orow: &mut [f32],
    ) {
        let chunks = n.div_ceil(W);
        let np = chunks * W;
        // Row-interpolated logits [s, np], padding lanes zero.
        let mut rowbuf = vec![0f32; side * np];
        for (q, dst) in rowbuf.chunks_exact_mut(np).enumerate() {
            let dst = &mut dst[..n];
            for &(p, wy) in row_taps {
                let src = &base[(p * side + q) * n..][..n];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += wy * s;
                }
            }
        }
        let mut logits = vec![0f32; np];
        // Lanes of the last chunk that hold tokens.
        let tail = ((1u32 << (n - chunks.saturating_sub(1) * W)) - 1) as u16;
        for (o, ct) in orow.chunks_mut(select.len()).zip(taps) {
            // Bounds-checked here so that the loads below stay inside `rowbuf`.
            let rows = ct.map(|(q, w)| (rowbuf[q * np..][..np].as_ptr(), _mm512_set1_ps(w)));
            let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
            for c in 0..chunks {
                // SAFETY: every row has `np` floats; `logits` has `np`.
                let v = unsafe {
                    let off = c * W;
                    let v = _mm512_mul_ps(rows[0].1, _mm512_loadu_ps(rows[0].0.add(off)));
                    let v = _mm512_fmadd_ps(rows[1].1, _mm512_loadu_ps(rows[1].0.add(off)), v);
                    let v = _mm512_fmadd_ps(rows[2].1, _mm512_loadu_ps(rows[2].0.add(off)), v);
                    let v = _mm512_fmadd_ps(rows[3].1, _mm512_loadu_ps(rows[3].0.add(off)), v);
                    _mm512_storeu_ps(logits.as_mut_ptr().add(off), v);
                    v
                };
                let keep = if c + 1 == chunks { tail } else { 0xffff };
                vmax = _mm512_mask_max_ps(vmax, keep, v, vmax);
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
            let mut acc = _mm512_setzero_ps();
            for c in 0..chunks {
                // SAFETY: as above.
                unsafe {
                    let p = logits.as_mut_ptr().add(c * W);
                    let e = exp_nonpos(_mm512_sub_ps(_mm512_loadu_ps(p), m));
                    _mm512_storeu_ps(p, e);
                    let keep = if c + 1 == chunks { tail } else { 0xffff };
                    acc = _mm512_mask_add_ps(acc, keep, acc, e);
                }
            }
            let inv = weight / _mm512_reduce_add_ps(acc);
            for (dst, &t) in o.iter_mut().zip(select) {
                *dst += logits[t] * inv;
            }
        }
    }
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
    let taps4 = padded_taps(&op.taps);
    // Heads one after the other: one head's logits stay in cache across the rows.
    for h in 0..heads {
        out.par_chunks_mut(r * sel)
            .enumerate()
            .for_each(|(task, orow)| {
                let (img, i) = (task / r, task % r);
                let base = &logits[(img * heads + h) * l * n..][..l * n];
                let (taps, select) = (&op.taps, &op.select);
                let t4 = taps4.as_deref();
                row(base, &taps[i], taps, t4, side, n, select, weight, orow);
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
        let q = contiguous_f32(s1, l1, "attention maps: q")?;
        let k = contiguous_f32(s2, l2, "attention maps: k")?;
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
        let x = contiguous_f32(s, l, "softmax: input")?;
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

    /// Both row kernels on SD-like shapes (N not a multiple of 16, border columns with
    /// fewer than 4 taps, a downsampled axis), against f64.
    #[test]
    fn row_kernels_match_f64_softmax() {
        let mut rng = crate::ops::rng::Rng::new(7);
        for (s, r, n) in [(16usize, 128usize, 500usize), (5, 11, 37), (9, 4, 16)] {
            let base: Vec<f32> = (0..s * s * n).map(|_| 4.0 * rng.normal() as f32).collect();
            let dense = bicubic_matrix(s, r);
            let taps = sparse_taps(&dense, r, s);
            let select = vec![0usize, n / 2, n - 1];
            for i in [0, r / 2, r - 1] {
                // f64 reference: upsample, softmax over N, select.
                let mut want = vec![0f64; r * select.len()];
                for (o, w) in want.chunks_mut(select.len()).enumerate() {
                    let l: Vec<f64> = (0..n)
                        .map(|t| {
                            let mut v = 0f64;
                            for &(p, wy) in &taps[i] {
                                for &(q, wx) in &taps[o] {
                                    v += wy as f64 * wx as f64 * base[(p * s + q) * n + t] as f64;
                                }
                            }
                            v
                        })
                        .collect();
                    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
                    for (d, &t) in w.iter_mut().zip(&select) {
                        *d = 0.5 * (l[t] - m).exp() / z;
                    }
                }
                let portable = run_row(&base, &taps, None, s, n, &select, i);
                let t4 = padded_taps(&taps);
                let fast = run_row(&base, &taps, t4.as_deref(), s, n, &select, i);
                for (got, name) in [(portable, "portable"), (fast, "dispatched")] {
                    for (g, w) in got.iter().zip(&want) {
                        let err = (*g as f64 - w).abs();
                        assert!(err <= 2e-6 * w.max(1e-3), "{name} s={s} r={r}: {g} vs {w}");
                    }
                }
            }
        }
    }

    fn run_row(
        base: &[f32],
        taps: &[Vec<(usize, f32)>],
        taps4: Option<&[[(usize, f32); 4]]>,
        s: usize,
        n: usize,
        select: &[usize],
        i: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; taps.len() * select.len()];
        row(base, &taps[i], taps, taps4, s, n, select, 0.5, &mut out);
        out
    }

    #[test]
    fn nan_logits_give_nan_maps() {
        let (s, r, n) = (4, 8, 20);
        let mut base = vec![0.5f32; s * s * n];
        base[(s + 1) * n + 3] = f32::NAN;
        let taps = sparse_taps(&bicubic_matrix(s, r), r, s);
        let t4 = padded_taps(&taps);
        let out = run_row(&base, &taps, t4.as_deref(), s, n, &[0, 3], 2);
        assert!(out[2..4].iter().all(|v| v.is_nan()), "{out:?}");
        assert!(out.iter().all(|v| v.is_nan() || (*v - 0.025).abs() < 1e-6));
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
