//! Direct 3x3 stride-1 convolution for narrow layers (the student's 16-128 channels on
//! maps of 8-64 pixels), where im2col's 9x copy and small GEMMs cost more than the
//! arithmetic.
//!
//! The input is copied once with a one-pixel zero border and row pitch `wp = w + 2`.
//! Outputs are computed at every flat position `p = y * wp + x` of that pitch (the two
//! columns past `w` are computed and dropped), so tap `(ky, kx)` of output `p` is input
//! `p + ky * wp + kx`: every tap of a block of outputs is one contiguous vector load.
//! A block is 4 output channels by `NV` vectors of pixels, held in registers across all
//! input channels and taps; each load feeds 4 FMAs and each weight broadcast `NV`.
//! AVX-512 (4 x 4 x 16 pixels) or AVX2+FMA (4 x 3 x 8) is picked at run time, with a
//! scalar path for other CPUs.

use super::buf::OutBuf;
use rayon::prelude::*;

/// Output channels per block (weights are packed in groups of this many).
const CO: usize = 4;
/// Pixels per block: the widest kernel's (AVX-512: 4 vectors of 16).
const MAX_BLOCK: usize = 64;

/// 3x3 weights packed for the kernel: `[cout / 4][cin][9][4]`, `cout` zero-padded to 4.
pub struct Packed3x3 {
    w: Vec<f32>,
    cin: usize,
    cout: usize,
}

impl Packed3x3 {
    /// From PyTorch-layout weights `[cout, cin, 3, 3]`.
    pub fn new(w: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(w.len(), cout * cin * 9, "3x3 weights [cout, cin, 3, 3]");
        let groups = cout.div_ceil(CO);
        let mut p = vec![0f32; groups * cin * 9 * CO];
        for co in 0..cout {
            for ci in 0..cin {
                for t in 0..9 {
                    p[((co / CO * cin + ci) * 9 + t) * CO + co % CO] = w[(co * cin + ci) * 9 + t];
                }
            }
        }
        Self { w: p, cin, cout }
    }
}

/// The block kernel picked for this CPU.
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether the kernel has a half-width form for small maps.
    fn halves(self) -> bool {
        !matches!(self, Isa::Scalar)
    }

    /// Pixels per block, full or half width.
    fn block(self, half: bool) -> usize {
        match (self, half) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, false) => 64,
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, true) => 32,
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, false) => 24,
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, true) => 16,
            (Isa::Scalar, _) => 16,
        }
    }
}

/// Epilogue of a layer: bias, then an optional residual `[cout, h, w]`, then ReLU.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// `conv3x3(x)` with padding 1 and stride 1 or 2 for one image `x` `[cin, h, w]`, then the
/// epilogue; `[cout, oh, ow]` with `oh = ceil(h / stride)`. `parallel` spreads the blocks
/// over rayon's threads.
pub fn conv3x3(
    x: &[f32],
    h: usize,
    w: usize,
    stride: usize,
    k: &Packed3x3,
    e: Epilogue,
    parallel: bool,
) -> Vec<f32> {
    conv3x3_with(Isa::detect(), x, h, w, stride, k, e, parallel)
}

/// The input laid out so that every tap of a block of outputs is one contiguous load.
struct Padded {
    x: Vec<f32>,
    /// Floats from one input channel to the next.
    cs: usize,
    /// Row pitch of the flat output positions.
    wp: usize,
    /// Offset of each tap from the output position.
    taps: [usize; 9],
}

impl Padded {
    /// Stride 1: each channel with a one-pixel zero border, pitch `w + 2`; tap `(ky, kx)`
    /// of output `p` is input `p + ky * wp + kx`.
    fn stride1(x: &[f32], cin: usize, h: usize, w: usize, slack: usize) -> Self {
        let wp = w + 2;
        let cs = (h + 2) * wp + slack;
        let mut xp = vec![0f32; cin * cs];
        for ci in 0..cin {
            for y in 0..h {
                let dst = ci * cs + (y + 1) * wp + 1;
                xp[dst..dst + w].copy_from_slice(&x[(ci * h + y) * w..][..w]);
            }
        }
        let taps = std::array::from_fn(|t| t / 3 * wp + t % 3);
        Self {
            x: xp,
            cs,
            wp,
            taps,
        }
    }

    /// Stride 2: the bordered input split into its four phases (even/odd rows x columns),
    /// each `(oh + 1) x (ow + 1)`; tap `(ky, kx)` of output `(oy, ox)` is pixel
    /// `(oy + ky / 2, ox + kx / 2)` of phase `(ky % 2, kx % 2)`, so again one offset per tap.
    fn stride2(x: &[f32], cin: usize, h: usize, w: usize, slack: usize) -> Self {
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let wp = ow + 1;
        let plane = (oh + 1) * wp;
        let cs = 4 * plane + slack;
        let mut xp = vec![0f32; cin * cs];
        for ci in 0..cin {
            // Bordered row r = y + 1 goes to phase row r / 2 of phase r % 2, likewise columns.
            for y in 0..h {
                let (r, src) = (y + 1, &x[(ci * h + y) * w..][..w]);
                let base = ci * cs + (r % 2) * 2 * plane + r / 2 * wp;
                for (xx, &v) in src.iter().enumerate() {
                    let c = xx + 1;
                    xp[base + (c % 2) * plane + c / 2] = v;
                }
            }
        }
        let taps = std::array::from_fn(|t| {
            let (ky, kx) = (t / 3, t % 3);
            ((ky % 2) * 2 + kx % 2) * plane + ky / 2 * wp + kx / 2
        });
        Self {
            x: xp,
            cs,
            wp,
            taps,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv3x3_with(
    isa: Isa,
    x: &[f32],
    h: usize,
    w: usize,
    stride: usize,
    k: &Packed3x3,
    e: Epilogue,
    parallel: bool,
) -> Vec<f32> {
    let (cin, cout) = (k.cin, k.cout);
    assert_eq!(x.len(), cin * h * w, "direct conv input [{cin}, {h}, {w}]");
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    assert_eq!(e.bias.len(), cout, "direct conv bias");
    if let Some(r) = e.residual {
        assert_eq!(r.len(), cout * oh * ow, "direct conv residual");
    }
    // Small maps take half blocks: a 64-pixel block on an 8x8 map would compute 128
    // positions for 64 outputs.
    let half = isa.halves() && oh * (ow + 2) < 4 * isa.block(false);
    let block = isa.block(half);
    // Slack so the last block's loads stay in bounds.
    let slack = block + 2;
    let pad = match stride {
        1 => Padded::stride1(x, cin, h, w, slack),
        2 => Padded::stride2(x, cin, h, w, slack),
        s => panic!("direct conv: stride {s} (1 or 2)"),
    };
    let (cs, wp, taps) = (pad.cs, pad.wp, pad.taps);
    let flat = oh * wp;
    let blocks = flat.div_ceil(block);
    let groups = cout.div_ceil(CO);
    let mut out = OutBuf::new(cout * oh * ow);
    let optr = out.ptr();
    let geom = OutGeom {
        oh,
        ow,
        wp,
        cout,
        block,
    };
    // A task is one group of 4 output channels over a run of blocks (~256 pixels).
    let per_task = (256 / block).max(1);
    let runs = blocks.div_ceil(per_task);
    let task = |t: usize| {
        let (g, run) = (t / runs, t % runs);
        let wg = &k.w[g * cin * 9 * CO..][..cin * 9 * CO];
        let mut acc = [[0f32; MAX_BLOCK]; CO];
        for b in run * per_task..((run + 1) * per_task).min(blocks) {
            let p0 = b * block;
            // SAFETY: pad.x holds cin channels of cs floats; the block's loads end at
            // p0 + block + max(taps) <= cs; wg holds cin * 9 * 4 weights.
            unsafe {
                run_block(
                    isa,
                    half,
                    pad.x.as_ptr().add(p0),
                    cs,
                    &taps,
                    wg,
                    cin,
                    &mut acc,
                )
            };
            // SAFETY: out holds cout * oh * ow floats; the block's outputs of group g are
            // written by this task only.
            unsafe { geom.write_block(&acc, p0, g, &e, optr.get()) };
        }
    };
    if parallel {
        (0..groups * runs).into_par_iter().for_each(task);
    } else {
        (0..groups * runs).for_each(task);
    }
    // SAFETY: every (co, y, x) lies in exactly one block of one group, written above.
    unsafe { out.assume_init() }
}

/// Where a block's outputs go: the output map `[cout, oh, ow]`, the padded row width `wp`
/// of the block positions and the block length.
#[derive(Clone, Copy)]
struct OutGeom {
    oh: usize,
    ow: usize,
    wp: usize,
    cout: usize,
    block: usize,
}

impl OutGeom {
    /// Writes the accumulators of the block at position `p0` for output channel group `g`
    /// through the epilogue, row segment by row segment (no division per pixel).
    ///
    /// # Safety
    /// `out` must hold `cout * oh * ow` floats, these outputs written by no one else.
    #[inline(always)]
    unsafe fn write_block(
        &self,
        acc: &[[f32; MAX_BLOCK]; CO],
        p0: usize,
        g: usize,
        e: &Epilogue,
        out: *mut f32,
    ) {
        let OutGeom {
            oh,
            ow,
            wp,
            cout,
            block,
        } = *self;
        let (mut y, mut x0) = (p0 / wp, p0 % wp);
        let mut i = 0;
        while i < block && y < oh {
            let len = ow.saturating_sub(x0).min(block - i);
            for (j, acc) in acc.iter().enumerate() {
                let co = g * CO + j;
                if co >= cout {
                    break;
                }
                let o = (co * oh + y) * ow + x0;
                let bias = e.bias[co];
                // SAFETY: the segment (co, y, x0..x0 + len) is in bounds (the caller's).
                let dst = unsafe { std::slice::from_raw_parts_mut(out.add(o), len) };
                let src = &acc[i..i + len];
                match e.residual {
                    Some(r) => {
                        for ((d, &a), &r) in dst.iter_mut().zip(src).zip(&r[o..o + len]) {
                            *d = epilogue(a + bias + r, e.relu);
                        }
                    }
                    None => {
                        for (d, &a) in dst.iter_mut().zip(src) {
                            *d = epilogue(a + bias, e.relu);
                        }
                    }
                }
            }
            // Past the row's end: skip the padding columns to the next row.
            i += wp - x0;
            x0 = 0;
            y += 1;
        }
    }
}

#[inline(always)]
fn epilogue(v: f32, relu: bool) -> f32 {
    if relu {
        v.max(0.0)
    } else {
        v
    }
}

/// # Safety
/// `x` points into channel 0 of the padded input at the block's first pixel; channels are
/// `cs` apart and every tap's `block` floats are readable.
#[allow(clippy::too_many_arguments)]
unsafe fn run_block(
    isa: Isa,
    half: bool,
    x: *const f32,
    cs: usize,
    taps: &[usize; 9],
    w: &[f32],
    cin: usize,
    acc: &mut [[f32; MAX_BLOCK]; CO],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if half => x86::block_avx512::<2>(x, cs, taps, w.as_ptr(), cin, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::block_avx512::<4>(x, cs, taps, w.as_ptr(), cin, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if half => x86::block_avx2::<2>(x, cs, taps, w.as_ptr(), cin, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::block_avx2::<3>(x, cs, taps, w.as_ptr(), cin, acc),
        Isa::Scalar => {
            let n = Isa::Scalar.block(false);
            for a in acc.iter_mut() {
                a[..n].fill(0.0);
            }
            for ci in 0..cin {
                let xc = x.add(ci * cs);
                for (t, &off) in taps.iter().enumerate() {
                    let wt = &w[(ci * 9 + t) * CO..][..CO];
                    for i in 0..n {
                        let v = *xc.add(off + i);
                        for (a, &wv) in acc.iter_mut().zip(wt) {
                            a[i] += wv * v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CO, MAX_BLOCK};
    use std::arch::x86_64::*;

    /// 4 channels x NV vectors of 16 pixels.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512<const NV: usize>(
        x: *const f32,
        cs: usize,
        taps: &[usize; 9],
        w: *const f32,
        cin: usize,
        out: &mut [[f32; MAX_BLOCK]; CO],
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; CO];
        for ci in 0..cin {
            let xc = x.add(ci * cs);
            let wc = w.add(ci * 9 * CO);
            for (t, &off) in taps.iter().enumerate() {
                let xt = xc.add(off);
                let v: [__m512; NV] = std::array::from_fn(|j| _mm512_loadu_ps(xt.add(16 * j)));
                for (c, acc) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*wc.add(t * CO + c));
                    for j in 0..NV {
                        acc[j] = _mm512_fmadd_ps(b, v[j], acc[j]);
                    }
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            for (j, v) in a.iter().enumerate() {
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * j), *v);
            }
        }
    }

    /// 4 channels x NV vectors of 8 pixels (at 3, 12 of the 16 registers accumulate).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2<const NV: usize>(
        x: *const f32,
        cs: usize,
        taps: &[usize; 9],
        w: *const f32,
        cin: usize,
        out: &mut [[f32; MAX_BLOCK]; CO],
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; CO];
        for ci in 0..cin {
            let xc = x.add(ci * cs);
            let wc = w.add(ci * 9 * CO);
            for (t, &off) in taps.iter().enumerate() {
                let xt = xc.add(off);
                let v: [__m256; NV] = std::array::from_fn(|j| _mm256_loadu_ps(xt.add(8 * j)));
                for (c, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*wc.add(t * CO + c));
                    for j in 0..NV {
                        acc[j] = _mm256_fmadd_ps(b, v[j], acc[j]);
                    }
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            for (j, v) in a.iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * j), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Plain 7-loop convolution with padding 1 and the same epilogue.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        stride: usize,
        wt: &[f32],
        cout: usize,
        e: Epilogue,
    ) -> Vec<f32> {
        let (oh, ow) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
        let mut o = vec![0f32; cout * oh * ow];
        for co in 0..cout {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut s = 0f64;
                    for ci in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (y * stride + ky) as isize - 1;
                                let ix = (xx * stride + kx) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                s += (wt[((co * cin + ci) * 3 + ky) * 3 + kx]
                                    * x[(ci * h + iy as usize) * w + ix as usize])
                                    as f64;
                            }
                        }
                    }
                    let i = (co * oh + y) * ow + xx;
                    let mut v = s as f32 + e.bias[co] + e.residual.map_or(0.0, |r| r[i]);
                    if e.relu {
                        v = v.max(0.0);
                    }
                    o[i] = v;
                }
            }
        }
        o
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    #[test]
    fn every_kernel_matches_the_plain_convolution() {
        // Channel counts off the block of 4, odd sides and sides off every vector width,
        // 1x1, small maps (half blocks) and large ones, at both strides.
        let cases = [
            (3, 16, 9, 13),
            (16, 16, 64, 64),
            (5, 6, 1, 1),
            (32, 7, 8, 3),
            (2, 4, 3, 70),
            (64, 8, 8, 8),
            (8, 12, 17, 16),
        ];
        for &(cin, cout, h, w) in &cases {
            for stride in [1, 2] {
                let x = rand(cin * h * w, 1);
                let wt = rand(cout * cin * 9, 2);
                let bias = rand(cout, 3);
                let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
                let res = rand(cout * oh * ow, 4);
                let k = Packed3x3::new(&wt, cout, cin);
                for (residual, relu) in [(None, false), (Some(&res[..]), true)] {
                    let e = Epilogue {
                        bias: &bias,
                        residual,
                        relu,
                    };
                    let want = reference(&x, cin, h, w, stride, &wt, cout, e);
                    for isa in isas() {
                        for parallel in [false, true] {
                            let got = conv3x3_with(isa, &x, h, w, stride, &k, e, parallel);
                            assert_eq!(got.len(), want.len());
                            let err = got
                                .iter()
                                .zip(&want)
                                .map(|(a, b)| (a - b).abs())
                                .fold(0f32, f32::max);
                            assert!(
                                err < 1e-5,
                                "{cin}->{cout} at {h}x{w}, stride {stride}: error {err} (isa {})",
                                isa.block(false)
                            );
                        }
                    }
                }
            }
        }
    }
}
