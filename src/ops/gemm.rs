//! Matrix products and im2col convolutions on the `gemm` crate for untracked CPU f32
//! tensors.
//!
//! candle's CPU matmul asks for its thread count on every call, which re-reads
//! `/proc/cpuinfo` unless `RAYON_NUM_THREADS` is set (about a quarter of a tiny-model
//! frame), and copies transposed operands; here the count is read once and strided views
//! go to `gemm` as they are. Convolutions that Winograd does not cover (stride 2, 1x1,
//! small maps) become blocks of im2col columns times the weight matrix.

use super::buf::OutBuf;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

fn parallelism() -> gemm::Parallelism {
    static THREADS: OnceLock<usize> = OnceLock::new();
    let n = *THREADS.get_or_init(candle_core::utils::get_num_threads);
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

/// Whether [`matmul`] and [`conv2d`] take the fast path for these operands.
pub fn applies(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && !a.track_op()
        && !b.track_op()
}

/// `a @ b` with batch dimensions broadcast (as `Tensor::broadcast_matmul`).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !applies(a, b) || a.rank() < 2 || b.rank() < 2 {
        return a.broadcast_matmul(b);
    }
    a.apply_op2_no_bwd(b, &MatMul)
}

struct MatMul;

/// The operands of a broadcast matmul: dims and strides padded to `rank`, the product's
/// `m x k @ k x n` and its batch dims.
struct Operands {
    rank: usize,
    da: Vec<usize>,
    sa: Vec<isize>,
    db: Vec<usize>,
    sb: Vec<isize>,
    m: usize,
    k: usize,
    n: usize,
    batch: Vec<usize>,
}

impl Operands {
    fn of(l1: &Layout, l2: &Layout) -> Result<Self> {
        let rank = l1.dims().len().max(l2.dims().len());
        let (da, sa) = padded(l1, rank);
        let (db, sb) = padded(l2, rank);
        let (m, k, k2, n) = (da[rank - 2], da[rank - 1], db[rank - 2], db[rank - 1]);
        if k != k2 {
            candle_core::bail!("matmul: shapes {:?} and {:?}", l1.dims(), l2.dims());
        }
        let mut batch = Vec::with_capacity(rank - 2);
        for i in 0..rank - 2 {
            batch.push(match (da[i], db[i]) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => candle_core::bail!("matmul: batch dims {:?} and {:?}", l1.dims(), l2.dims()),
            });
        }
        Ok(Self {
            rank,
            da,
            sa,
            db,
            sb,
            m,
            k,
            n,
            batch,
        })
    }
}

/// The batch index after `idx` in row-major order over `dims` (wrapping to zeros).
fn next_index(idx: &mut [usize], dims: &[usize]) {
    for i in (0..idx.len()).rev() {
        idx[i] += 1;
        if idx[i] < dims[i] {
            break;
        }
        idx[i] = 0;
    }
}

/// `[batch..., rows, cols]` strides of a layout, batch dims left-padded to `rank`.
fn padded(l: &Layout, rank: usize) -> (Vec<usize>, Vec<isize>) {
    let (d, s) = (l.dims(), l.stride());
    let pad = rank - d.len();
    let mut dims = vec![1; pad];
    dims.extend_from_slice(d);
    let mut strides = vec![0isize; pad];
    strides.extend(s.iter().map(|&x| x as isize));
    (dims, strides)
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "gemm-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => (a, b),
            _ => candle_core::bail!("matmul: f32 operands expected"),
        };
        let Operands {
            rank,
            da,
            sa,
            db,
            sb,
            m,
            k,
            n,
            batch,
        } = Operands::of(l1, l2)?;
        let count: usize = batch.iter().product();
        if k == 0 {
            let mut shape = batch;
            shape.extend([m, n]);
            return Ok((
                CpuStorage::F32(vec![0f32; count * m * n]),
                Shape::from(shape),
            ));
        }
        let mut out = OutBuf::new(count * m * n);
        let (a0, b0) = (l1.start_offset() as isize, l2.start_offset() as isize);
        let mut idx = vec![0usize; batch.len()];
        for bi in 0..count {
            let (mut oa, mut ob) = (a0, b0);
            for (i, &v) in idx.iter().enumerate() {
                if da[i] > 1 {
                    oa += v as isize * sa[i];
                }
                if db[i] > 1 {
                    ob += v as isize * sb[i];
                }
            }
            // SAFETY: offsets and strides come from valid layouts of these storages; the
            // destination block is this batch item's rows.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.ptr().get().add(bi * m * n),
                    1,
                    n as isize,
                    false,
                    a.as_ptr().offset(oa),
                    sa[rank - 1],
                    sa[rank - 2],
                    b.as_ptr().offset(ob),
                    sb[rank - 1],
                    sb[rank - 2],
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism(),
                );
            }
            next_index(&mut idx, &batch);
        }
        let mut shape = batch;
        shape.extend([m, n]);
        // SAFETY: each batch item's gemm wrote its m x n block (k > 0).
        Ok((
            CpuStorage::F32(unsafe { out.assume_init() }),
            Shape::from(shape),
        ))
    }
}

/// Convolution of `x` [B, C, H, W] with `w` [O, C, kh, kw] (no bias) by im2col + GEMM.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !applies(x, w) || stride == 0 {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &Im2ColConv { stride, padding })
}

struct Im2ColConv {
    stride: usize,
    padding: usize,
}

/// Most f32 values in one block of im2col columns.
const COL_BLOCK: usize = 1 << 22;

impl CustomOp2 for Im2ColConv {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(s1, l1, "conv2d: input")?;
        let w = super::contiguous_f32(s2, l2, "conv2d: weight")?;
        let (bsz, c, h, wd) = l1.shape().dims4()?;
        let (o, c2, kh, kw) = l2.shape().dims4()?;
        let (s, p) = (self.stride, self.padding);
        if c != c2 || h + 2 * p < kh || wd + 2 * p < kw {
            candle_core::bail!("conv2d: input {:?}, kernel {:?}", l1.dims(), l2.dims());
        }
        let (oh, ow) = ((h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1);
        let (rows, pix) = (c * kh * kw, oh * ow);
        if rows == 0 {
            return Ok((
                CpuStorage::F32(vec![0f32; bsz * o * pix]),
                Shape::from((bsz, o, oh, ow)),
            ));
        }
        let mut out = OutBuf::new(bsz * o * pix);
        let optr = out.ptr().get();
        let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
        // Output pixels per block, so that the column buffer stays bounded.
        let block = (COL_BLOCK / rows.max(1)).clamp(64, pix.max(64));
        let mut col = if direct {
            Vec::new()
        } else {
            vec![0f32; rows * block.min(pix)]
        };
        for img in 0..bsz {
            let xi = &x[img * c * h * wd..(img + 1) * c * h * wd];
            // SAFETY: image `img`'s [O, H*W] block of the output.
            let oi = unsafe { optr.add(img * o * pix) };
            if direct {
                // SAFETY: W [O, C] times x [C, H*W] into out [O, H*W], all in bounds.
                unsafe { gemm_into(oi, pix, w, xi.as_ptr(), o, pix, c, pix) };
                continue;
            }
            for start in (0..pix).step_by(block) {
                let len = block.min(pix - start);
                // col[(ci, ky, kx)][j] = x[ci][oy*s + ky - p][ox*s + kx - p] for pixel j.
                col[..rows * len]
                    .par_chunks_mut(len)
                    .enumerate()
                    .for_each(|(r, dst)| {
                        let (ci, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
                        let plane = &xi[ci * h * wd..(ci + 1) * h * wd];
                        for (j, d) in dst.iter_mut().enumerate() {
                            let q = start + j;
                            let (oy, ox) = (q / ow, q % ow);
                            let (y, xx) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            *d = if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                plane[y as usize * wd + xx as usize]
                            } else {
                                0.0
                            };
                        }
                    });
                // SAFETY: W [O, rows] times col [rows, len] into out[:, start..start+len].
                unsafe { gemm_into(oi.add(start), pix, w, col.as_ptr(), o, len, rows, len) };
            }
        }
        // SAFETY: the gemms wrote all O x pix outputs of every image.
        let out = unsafe { out.assume_init() };
        Ok((CpuStorage::F32(out), Shape::from((bsz, o, oh, ow))))
    }
}

/// `dst[m, n] (row stride dst_rs) = w[m, k] @ src[k, n] (row stride src_rs)`.
///
/// # Safety
/// The pointers must cover the given extents.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: usize,
    w: &[f32],
    src: *const f32,
    m: usize,
    n: usize,
    k: usize,
    src_rs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        w.as_ptr(),
        1,
        k as isize,
        src,
        1,
        src_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_rel;
    use candle_core::Device;

    #[test]
    fn matmul_matches_candle_on_strided_and_broadcast_operands() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (1, 3, 7, 4), &dev).unwrap();
        assert!(max_rel(&matmul(&a, &b).unwrap(), &a.broadcast_matmul(&b).unwrap()) < 1e-6);
        // Transposed view (as `Linear` passes its weight) and a 2-D right operand.
        let w = Tensor::randn(0f32, 1.0, (6, 7), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 5, 7), &dev).unwrap();
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(max_rel(&matmul(&x, &w.t().unwrap()).unwrap(), &want) < 1e-6);
        // A narrowed (offset) left operand.
        let an = a.narrow(2, 1, 3).unwrap();
        let want = an.broadcast_matmul(&b).unwrap();
        assert!(max_rel(&matmul(&an, &b).unwrap(), &want) < 1e-6);
        assert!(matmul(&a, &Tensor::zeros((3, 8, 2), DType::F32, &dev).unwrap()).is_err());
    }

    #[test]
    fn im2col_conv_matches_candle() {
        let dev = Device::Cpu;
        for (c, o, h, w, k, s, p) in [
            (3, 4, 9, 7, 3, 2, 1),
            (5, 6, 8, 8, 3, 2, 0),
            (4, 3, 6, 5, 1, 1, 0),
            (2, 5, 7, 9, 3, 1, 1),
            (6, 2, 5, 5, 3, 1, 0),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
            let got = conv2d(&x, &wt, s, p).unwrap();
            let want = x.conv2d(&wt, p, s, 1, 1).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(
                max_rel(&got, &want) < 1e-5,
                "{c}->{o} {h}x{w} k{k} s{s} p{p}"
            );
        }
    }
}
