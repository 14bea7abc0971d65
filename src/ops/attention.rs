//! Fused multi-head attention for inference on the CPU: per block of query rows, the
//! scores `q kᵀ`, their softmax and the product with `v` stay in a cache-sized buffer
//! instead of a `[B, H, L, N]` score tensor written to and read back from memory
//! (64 MB per head for SD's 64x64 self-attention).

use super::buf::OutBuf;
use super::simd;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows per task.
const ROWS: usize = 64;

/// The differentiable path caps one score tensor at this many elements (SD's 64x64
/// self-attention would otherwise need ~0.5 GB per image).
const MAX_SCORE_ELEMS: usize = 1 << 25;

/// `softmax(q kᵀ * scale) v` per head. `q` `[B, L, C]` (heads side by side in C, as
/// `to_q` produces them), `k` and `v` `[B or 1, H, N, C/H]`; the result is `[B, L, C]`.
/// Tracked or non-CPU-f32 inputs fall back to candle's ops (differentiable).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, l, c) = q.dims3()?;
    let (_, heads, _, d) = k.dims4()?;
    if super::gemm::applies(q, k) && super::gemm::applies(q, v) {
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &Attention {
                scale: scale as f32,
            },
        );
    }
    // Differentiable path, in query-row chunks that bound the score tensor.
    let qh = q.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous()?;
    let kt = k.transpose(2, 3)?.contiguous()?;
    let n = k.dim(2)?;
    let rows = (MAX_SCORE_ELEMS / (b * heads * n).max(1)).clamp(1, l.max(1));
    let mut outs = Vec::new();
    for start in (0..l).step_by(rows) {
        let qc = qh.narrow(2, start, rows.min(l - start))?;
        let s = (qc.broadcast_matmul(&kt)? * scale)?;
        outs.push(super::softmax::softmax_last_dim(&s)?.broadcast_matmul(v)?);
    }
    let o = if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        Tensor::cat(&outs, 2)?
    };
    o.transpose(1, 2)?.reshape((b, l, c))
}

struct Attention {
    scale: f32,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let q = super::contiguous_f32(s1, l1, "attention: q")?.as_ptr();
        let k = super::contiguous_f32(s2, l2, "attention: k")?.as_ptr();
        let v = super::contiguous_f32(s3, l3, "attention: v")?.as_ptr();
        let (b, l, c) = l1.shape().dims3()?;
        let (bk, h, n, d) = l2.shape().dims4()?;
        if l3.dims() != l2.dims() || h * d != c || !(bk == 1 || bk == b) || n == 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let (q, k, v) = (q as usize, k as usize, v as usize);
        let mut out = OutBuf::new(b * l * c);
        let optr = out.ptr();
        let dims = Dims {
            l,
            c,
            bk,
            h,
            n,
            d,
            blocks: l.div_ceil(ROWS),
        };
        (0..b * h * dims.blocks).into_par_iter().for_each_init(
            || vec![0f32; ROWS * n],
            |scores, task| {
                let (q, k, v) = (q as *const f32, k as *const f32, v as *const f32);
                // SAFETY: the operands' contiguous extents were checked above; each task
                // writes its own rows x head-columns of `out`.
                unsafe { dims.attend(task, scores, q, k, v, optr.get(), self.scale) };
            },
        );
        // SAFETY: every (row, head) block was written by its task (d > 0 as h * d = c > 0).
        let out = unsafe { out.assume_init() };
        Ok((CpuStorage::F32(out), Shape::from((b, l, c))))
    }
}

/// The shapes of a fused attention: `q` [B, L, C], `k`/`v` [`bk`, H, N, D], tasks of
/// [`ROWS`] query rows of one head of one image (`blocks` per head).
#[derive(Clone, Copy)]
struct Dims {
    l: usize,
    c: usize,
    bk: usize,
    h: usize,
    n: usize,
    d: usize,
    blocks: usize,
}

impl Dims {
    /// Task `task`: `softmax(q kᵀ * scale) v` for its rows and head, the scores in
    /// `scores` (at least `ROWS * N`), into its rows x head-columns of `out`.
    ///
    /// # Safety
    /// `q`, `k`, `v` and `out` must be contiguous buffers of these shapes.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn attend(
        &self,
        task: usize,
        scores: &mut [f32],
        q: *const f32,
        k: *const f32,
        v: *const f32,
        out: *mut f32,
        scale: f32,
    ) {
        let Dims {
            l,
            c,
            bk,
            h,
            n,
            d,
            blocks,
        } = *self;
        let (img, rest) = (task / (h * blocks), task % (h * blocks));
        let (head, blk) = (rest / blocks, rest % blocks);
        let r0 = blk * ROWS;
        let rows = ROWS.min(l - r0);
        let kv = (if bk == 1 { 0 } else { img } * h + head) * n * d;
        let qp = q.add((img * l + r0) * c + head * d);
        let (kp, vp) = (k.add(kv), v.add(kv));
        // scores[rows, n] = scale * q_blk [rows, d] @ k_headᵀ [d, n]
        gemm::gemm(
            rows,
            n,
            d,
            scores.as_mut_ptr(),
            1,
            n as isize,
            false,
            qp,
            1,
            c as isize,
            kp,
            d as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
        for row in scores[..rows * n].chunks_exact_mut(n) {
            simd::softmax_row(row);
        }
        // out[rows, head cols] = scores [rows, n] @ v_head [n, d]
        gemm::gemm(
            rows,
            d,
            n,
            out.add((img * l + r0) * c + head * d),
            1,
            c as isize,
            false,
            scores.as_ptr(),
            1,
            n as isize,
            vp,
            1,
            d as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_composite_attention() {
        let dev = Device::Cpu;
        // L not a multiple of the row block; broadcast and per-image keys.
        for (b, bk, l, n, h, d) in [
            (2, 1, 150, 37, 4, 8),
            (2, 2, 70, 130, 2, 16),
            (1, 1, 5, 3, 1, 4),
        ] {
            let q = Tensor::randn(0f32, 1.0, (b, l, h * d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (bk, h, n, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (bk, h, n, d), &dev).unwrap();
            let got = attention(&q, &k, &v, 0.3).unwrap();
            // The tracked path is the composite one.
            let qv = Var::from_tensor(&q).unwrap();
            let want = attention(qv.as_tensor(), &k, &v, 0.3).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-5, "{b} {bk} {l} {n} {h} {d}: {err}");
        }
    }
}
