//! Fast CPU 3x3 stride-1 convolution: Winograd F(4x4, 3x3) (Lavin & Gray, 2016).
//!
//! Each 4x4 output tile costs 36 multiplies per (c_in, c_out) pair instead of 144, and the
//! multiplies are 36 independent GEMMs per block of tiles, run on the fast `gemm` kernel.
//! Blocks of tiles are processed in parallel. Used for inference only (no backward): the
//! SD VAE encoder is almost all such convolutions.

use super::buf::{OutBuf, OutPtr};
use super::simd::multiversion;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

/// Output tile side (m) and input tile side (m + 2).
const M: usize = 4;
const T: usize = 6;
/// Tiles transformed and multiplied together per task.
const TILE_BLOCK: usize = 96;

/// Filter transform G (6x3).
const G: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Tiles transformed together, one per SIMD lane.
const LANES: usize = 8;
type Lanes = [f32; LANES];

/// B^T applied to one column of 6 lane vectors.
#[inline(always)]
fn bt(v: &[Lanes; T]) -> [Lanes; T] {
    // B^T rows: [4,0,-5,0,1,0] [0,-4,-4,1,1,0] [0,4,-4,-1,1,0] [0,-2,-1,2,1,0] [0,2,-1,-2,1,0] [0,4,0,-5,0,1]
    let mut o = [[0f32; LANES]; T];
    for l in 0..LANES {
        let (a, b) = (v[1][l] + v[2][l], v[1][l] - v[2][l]);
        let c = v[1][l] - v[3][l];
        o[0][l] = 4.0 * v[0][l] - 5.0 * v[2][l] + v[4][l];
        o[1][l] = -4.0 * a + v[3][l] + v[4][l];
        o[2][l] = 4.0 * b - v[3][l] + v[4][l];
        o[3][l] = -2.0 * c - v[2][l] + v[4][l];
        o[4][l] = 2.0 * c - v[2][l] + v[4][l];
        o[5][l] = 4.0 * v[1][l] - 5.0 * v[3][l] + v[5][l];
    }
    o
}

/// A^T applied to one column of 6 lane vectors -> 4.
#[inline(always)]
fn at(v: &[Lanes; T]) -> [Lanes; M] {
    // A^T rows: [1,1,1,1,1,0] [0,1,-1,2,-2,0] [0,1,1,4,4,0] [0,1,-1,8,-8,1]
    let mut o = [[0f32; LANES]; M];
    for l in 0..LANES {
        let (a, b) = (v[1][l] + v[2][l], v[1][l] - v[2][l]);
        let (c, d) = (v[3][l] + v[4][l], v[3][l] - v[4][l]);
        o[0][l] = v[0][l] + a + c;
        o[1][l] = b + 2.0 * d;
        o[2][l] = a + 4.0 * c;
        o[3][l] = b + 8.0 * d + v[5][l];
    }
    o
}

/// Tile geometry shared by the transforms.
#[derive(Clone, Copy)]
struct Tiles {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    pad: usize,
}

impl Tiles {
    /// (image, top-left input row, top-left input column) of a tile.
    fn origin(&self, tile: usize) -> (usize, isize, isize) {
        let img = tile / (self.th * self.tw);
        let (ty, tx) = ((tile % (self.th * self.tw)) / self.tw, tile % self.tw);
        (
            img,
            (ty * M) as isize - self.pad as isize,
            (tx * M) as isize - self.pad as isize,
        )
    }
}

multiversion! {
    /// Input transform of tiles `t0..t0+nt` into `v[xi][ci][t]` (`TILE_BLOCK` columns).
    fn input_block(x: &[f32], cin: usize, g: Tiles, t0: usize, nt: usize, v: &mut [f32]) {
        let (h, w) = (g.h, g.w);
        for ci in 0..cin {
            for l0 in (0..nt).step_by(LANES) {
                // d[i][j][lane]: the 6x6 input patch of each lane's tile.
                let mut d = [[[0f32; LANES]; T]; T];
                for l in 0..LANES.min(nt - l0) {
                    let (img, y0, x0) = g.origin(t0 + l0 + l);
                    let plane = &x[(img * cin + ci) * h * w..(img * cin + ci + 1) * h * w];
                    let inside = y0 >= 0
                        && x0 >= 0
                        && y0 as usize + T <= h
                        && x0 as usize + T <= w;
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = y0 + i as isize;
                        if !inside && (y < 0 || y >= h as isize) {
                            continue;
                        }
                        let src = &plane[y as usize * w..(y as usize + 1) * w];
                        for (j, e) in row.iter_mut().enumerate() {
                            let xx = x0 + j as isize;
                            if inside || (xx >= 0 && xx < w as isize) {
                                e[l] = src[xx as usize];
                            }
                        }
                    }
                }
                // B^T d B: columns, then rows.
                let mut tmp = [[[0f32; LANES]; T]; T];
                for j in 0..T {
                    let col = bt(&std::array::from_fn(|i| d[i][j]));
                    for i in 0..T {
                        tmp[i][j] = col[i];
                    }
                }
                for (i, trow) in tmp.iter().enumerate() {
                    let row = bt(trow);
                    for (j, vals) in row.iter().enumerate() {
                        let at = ((i * T + j) * cin + ci) * TILE_BLOCK + l0;
                        let n = LANES.min(nt - l0);
                        v[at..at + n].copy_from_slice(&vals[..n]);
                    }
                }
            }
        }
    }
}

multiversion! {
    /// Output transform of `mbuf[xi][co][t]` for tiles `t0..t0+nt`, plus bias, into `out`.
    fn output_block(
        mbuf: &[f32],
        cout: usize,
        bias: Option<&[f32]>,
        g: Tiles,
        t0: usize,
        nt: usize,
        out: OutPtr,
    ) {
        let (oh, ow) = (g.h + 2 * g.pad - 2, g.w + 2 * g.pad - 2);
        for co in 0..cout {
            let bv = bias.map_or(0.0, |b| b[co]);
            for l0 in (0..nt).step_by(LANES) {
                let n = LANES.min(nt - l0);
                let mut m = [[[0f32; LANES]; T]; T];
                for (i, row) in m.iter_mut().enumerate() {
                    for (j, e) in row.iter_mut().enumerate() {
                        let at = ((i * T + j) * cout + co) * TILE_BLOCK + l0;
                        e[..n].copy_from_slice(&mbuf[at..at + n]);
                    }
                }
                // A^T m A: columns, then rows.
                let mut tmp = [[[0f32; LANES]; T]; M];
                for j in 0..T {
                    let col = at(&std::array::from_fn(|i| m[i][j]));
                    for i in 0..M {
                        tmp[i][j] = col[i];
                    }
                }
                let y: [[Lanes; M]; M] = std::array::from_fn(|i| at(&tmp[i]));
                for l in 0..n {
                    let (img, y0, x0) = g.origin(t0 + l0 + l);
                    let (oy0, ox0) = ((y0 + g.pad as isize) as usize, (x0 + g.pad as isize) as usize);
                    let base = (img * cout + co) * oh * ow;
                    for (i, row) in y.iter().enumerate().take(oh.saturating_sub(oy0)) {
                        for (j, vals) in row.iter().enumerate().take(ow.saturating_sub(ox0)) {
                            // SAFETY: each (img, co, oy, ox) belongs to exactly one tile.
                            unsafe {
                                *out.get().add(base + (oy0 + i) * ow + ox0 + j) = vals[l] + bv
                            };
                        }
                    }
                }
            }
        }
    }
}

/// U[xi][co][ci] = (G g G^T)[xi] for weights [co, ci, 3, 3].
fn transform_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0f32; T * T * cout * cin];
    // Parallel over output channels; each writes its own [ci] rows at 36 positions.
    let rows: Vec<Vec<f32>> = (0..cout)
        .into_par_iter()
        .map(|co| {
            let mut r = vec![0f32; T * T * cin];
            for ci in 0..cin {
                let g = &w[(co * cin + ci) * 9..(co * cin + ci) * 9 + 9];
                // G g (6x3), then (G g) G^T (6x6).
                let mut gg = [[0f32; 3]; T];
                for i in 0..T {
                    for j in 0..3 {
                        gg[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
                    }
                }
                for i in 0..T {
                    for j in 0..T {
                        r[(i * T + j) * cin + ci] =
                            gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
                    }
                }
            }
            r
        })
        .collect();
    for (co, r) in rows.iter().enumerate() {
        for xi in 0..T * T {
            let dst = (xi * cout + co) * cin;
            u[dst..dst + cin].copy_from_slice(&r[xi * cin..(xi + 1) * cin]);
        }
    }
    u
}

/// 3x3, stride 1, zero padding `pad` (0 or 1), input NCHW contiguous.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_winograd(
    x: &[f32],
    (n, cin, h, w): (usize, usize, usize, usize),
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
    pad: usize,
) -> Vec<f32> {
    let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
    let (th, tw) = (oh.div_ceil(M), ow.div_ceil(M));
    let tiles = n * th * tw;
    let u = transform_weights(weight, cout, cin);
    let mut out = OutBuf::new(n * cout * oh * ow);
    let optr = out.ptr();
    let blocks = tiles.div_ceil(TILE_BLOCK);
    let geom = Tiles { h, w, th, tw, pad };
    (0..blocks).into_par_iter().for_each_init(
        || {
            (
                vec![0f32; T * T * cin * TILE_BLOCK],
                vec![0f32; T * T * cout * TILE_BLOCK],
            )
        },
        |(v, mbuf), b| {
            let t0 = b * TILE_BLOCK;
            let nt = TILE_BLOCK.min(tiles - t0);
            input_block(x, cin, geom, t0, nt, v);
            // 36 GEMMs: M[xi] (cout x nt) = U[xi] (cout x cin) * V[xi] (cin x nt).
            for xi in 0..T * T {
                // SAFETY: all pointers index inside their buffers; strides are row-major.
                unsafe {
                    gemm::gemm(
                        cout,
                        nt,
                        cin,
                        mbuf.as_mut_ptr().add(xi * cout * TILE_BLOCK),
                        1,
                        TILE_BLOCK as isize,
                        false,
                        u.as_ptr().add(xi * cout * cin),
                        1,
                        cin as isize,
                        v.as_ptr().add(xi * cin * TILE_BLOCK),
                        1,
                        TILE_BLOCK as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            output_block(mbuf, cout, bias, geom, t0, nt, optr);
        },
    );
    // SAFETY: every (image, channel, pixel) belongs to exactly one tile, written above.
    unsafe { out.assume_init() }
}

/// candle op: `x` [N, Cin, H, W], `weight` [Cout, Cin, 3, 3], `bias` [Cout].
pub struct Winograd3x3 {
    pub padding: usize,
}

impl CustomOp3 for Winograd3x3 {
    fn name(&self) -> &'static str {
        "winograd-conv3x3"
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
        let (n, cin, h, w) = l1.shape().dims4()?;
        let (cout, wcin, kh, kw) = l2.shape().dims4()?;
        if wcin != cin
            || kh != 3
            || kw != 3
            || self.padding > 1
            || h + 2 * self.padding < 3
            || w + 2 * self.padding < 3
        {
            candle_core::bail!(
                "winograd conv: unsupported shapes {:?} * {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let x = super::contiguous_f32(s1, l1, "winograd conv: input")?;
        let wt = super::contiguous_f32(s2, l2, "winograd conv: weight")?;
        let b = super::contiguous_f32(s3, l3, "winograd conv: bias")?;
        let out = conv3x3_winograd(x, (n, cin, h, w), wt, cout, Some(b), self.padding);
        let (oh, ow) = (h + 2 * self.padding - 2, w + 2 * self.padding - 2);
        Ok((CpuStorage::F32(out), Shape::from((n, cout, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rng::Rng;
    use candle_core::{Device, Tensor};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0f32; n];
        Rng::new(seed).fill_normal(&mut v);
        v
    }

    fn check(n: usize, cin: usize, cout: usize, h: usize, w: usize, pad: usize) {
        let x = rand(n * cin * h * w, 1);
        let wt: Vec<f32> = rand(cout * cin * 9, 2)
            .iter()
            .map(|v| v / (cin as f32 * 9.0).sqrt())
            .collect();
        let b = rand(cout, 3);
        let dev = Device::Cpu;
        let xt = Tensor::from_vec(x, (n, cin, h, w), &dev).unwrap();
        let wt = Tensor::from_vec(wt, (cout, cin, 3, 3), &dev).unwrap();
        let bt = Tensor::from_vec(b, cout, &dev).unwrap();
        let want = xt
            .conv2d(&wt, pad, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bt.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        let got = xt
            .apply_op3_no_bwd(&wt, &bt, &Winograd3x3 { padding: pad })
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = (&got - &want)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let norm = want
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(
            diff / norm < 1e-5,
            "rel err {} for {n}x{cin}x{h}x{w} -> {cout}, pad {pad}",
            diff / norm
        );
    }

    #[test]
    fn matches_direct_convolution() {
        check(1, 3, 5, 8, 8, 1);
        check(2, 16, 8, 13, 11, 1); // partial tiles, batch
        check(1, 8, 4, 7, 9, 0); // no padding
        check(1, 64, 32, 33, 40, 1); // several tile blocks
    }

    #[test]
    fn single_tap_is_a_shift() {
        // Kernel with one 1 at (0, 0): out[y][x] = in[y-1][x-1] with padding 1.
        let (h, w) = (9, 6);
        let x: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let mut k = vec![0f32; 9];
        k[0] = 1.0;
        let out = conv3x3_winograd(&x, (1, 1, h, w), &k, 1, None, 1);
        for y in 0..h {
            for xx in 0..w {
                let want = if y == 0 || xx == 0 {
                    0.0
                } else {
                    x[(y - 1) * w + xx - 1]
                };
                assert!(
                    (out[y * w + xx] - want).abs() < 1e-3,
                    "({y},{xx}): {} vs {want}",
                    out[y * w + xx]
                );
            }
        }
    }
}
