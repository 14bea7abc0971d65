//! Vectorisable f32 row kernels (max, shifted exp-sum, axpy) with runtime dispatch.
//!
//! The crate is built for the baseline x86-64 target (SSE2), so hot loops are written
//! with 8 independent accumulators and compiled a second time with AVX2 enabled, picked
//! at run time. The lanes also break the sequential dependency of f32 reductions, which
//! the compiler may not reorder on its own.

const L: usize = 8;

/// Defines `$name` twice (baseline and AVX2+FMA) and dispatches on the running CPU.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// ln 2 = LN2_HI - LN2_LO (Cody-Waite): `n * LN2_HI` is exact for the n of f32 exps.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = 2.121_944_4e-4;
/// exp(r) = 1 + r + r^2 * poly(r) on |r| <= ln2/2, Horner coefficients from the highest.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_66,
    0.5,
];

/// exp(x) for x <= 0 with ~2 ulp error; branch-free so the loops vectorise.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    // A compare-select rather than f32::max so that NaN propagates instead of clamping.
    #[allow(clippy::manual_clamp)]
    let x = if x < -87.0 { -87.0 } else { x };
    // x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2). `t` holds n in its low
    // mantissa bits, which become the exponent of 2^n without a float->int conversion.
    let t = x * std::f32::consts::LOG2_E + 12582912.0;
    let n = t - 12582912.0;
    let r = x - n * LN2_HI + n * LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| p * r + c);
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

/// Largest element (NaNs are skipped here and surface through [`exp_store_sum`]).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; L];
    let chunks = xs.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `sum(exp(x - m))` over `xs`, for `m >= max(xs)`.
#[inline(always)]
pub fn exp_sum(xs: &[f32], m: f32) -> f32 {
    let full = xs.len() / L * L;
    let mut acc = [0f32; L];
    for c in xs[..full].chunks_exact(L) {
        for i in 0..L {
            acc[i] += exp_nonpos(c[i] - m);
        }
    }
    acc.iter().sum::<f32>() + xs[full..].iter().map(|&v| exp_nonpos(v - m)).sum::<f32>()
}

/// `out = exp(x - m)`, returning the sum, for `m >= max(xs)`.
#[inline(always)]
pub fn exp_store_sum(xs: &[f32], m: f32, out: &mut [f32]) -> f32 {
    let len = xs.len().min(out.len());
    let full = len / L * L;
    let mut acc = [0f32; L];
    for (o, c) in out[..full]
        .chunks_exact_mut(L)
        .zip(xs[..full].chunks_exact(L))
    {
        for i in 0..L {
            let e = exp_nonpos(c[i] - m);
            o[i] = e;
            acc[i] += e;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (o, &v) in out[full..len].iter_mut().zip(&xs[full..len]) {
        *o = exp_nonpos(v - m);
        sum += *o;
    }
    sum
}

/// `dst += w * src`.
#[inline(always)]
pub fn axpy(dst: &mut [f32], w: f32, src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += w * s;
    }
}

/// `dst *= s`.
#[inline(always)]
pub fn scale(dst: &mut [f32], s: f32) {
    dst.iter_mut().for_each(|d| *d *= s);
}

/// In-place softmax of one row.
pub fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let p = row.as_mut_ptr();
        // SAFETY: AVX-512F is present; source and destination are the same `row`.
        unsafe { avx512::softmax(p, p, row.len()) };
        return;
    }
    softmax_row_portable(row)
}

/// Softmax of `xs` into `out` (of the same length).
pub fn softmax_row_into(xs: &[f32], out: &mut [f32]) {
    let n = xs.len().min(out.len());
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F is present; both slices hold at least `n` floats.
        unsafe { avx512::softmax(xs.as_ptr(), out.as_mut_ptr(), n) };
        return;
    }
    softmax_row_into_portable(&xs[..n], &mut out[..n])
}

multiversion! {
    fn softmax_row_portable(row: &mut [f32]) {
        let m = max(row);
        let full = row.len() / L * L;
        let mut acc = [0f32; L];
        for c in row[..full].chunks_exact_mut(L) {
            for i in 0..L {
                let e = exp_nonpos(c[i] - m);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for v in &mut row[full..] {
            *v = exp_nonpos(*v - m);
            sum += *v;
        }
        scale(row, 1.0 / sum);
    }
}

multiversion! {
    fn softmax_row_into_portable(xs: &[f32], out: &mut [f32]) {
        let m = max(xs);
        let sum = exp_store_sum(xs, m, out);
        scale(out, 1.0 / sum);
    }
}

/// 16-lane AVX-512 kernels, picked at run time where the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    const W: usize = 16;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// exp(x) for x <= 0 (16 lanes), the polynomial of [`super::exp_nonpos`] scaled by
    /// `vscalefps`; NaN propagates.
    ///
    /// # Safety
    /// Outside AVX-512F code, only where [`available`] is true.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp_nonpos(x: __m512) -> __m512 {
        // max(c, x) returns x when x is NaN.
        let x = _mm512_max_ps(_mm512_set1_ps(-100.0), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(p, n)
    }

    /// Softmax of `n` floats from `src` into `dst` (which may be `src`).
    ///
    /// # Safety
    /// Both point to `n` valid floats and either coincide or do not overlap.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax(src: *const f32, dst: *mut f32, n: usize) {
        let full = n / W * W;
        let tail = ((1u32 << (n - full)) - 1) as u16;
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(W) {
            // max(x, acc) returns acc when x is NaN: NaNs surface through the exps.
            vmax = _mm512_max_ps(_mm512_loadu_ps(src.add(i)), vmax);
        }
        let t = _mm512_mask_loadu_ps(vmax, tail, src.add(full));
        let m = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(t, vmax)));
        let mut acc = _mm512_setzero_ps();
        for i in (0..full).step_by(W) {
            let e = exp_nonpos(_mm512_sub_ps(_mm512_loadu_ps(src.add(i)), m));
            _mm512_storeu_ps(dst.add(i), e);
            acc = _mm512_add_ps(acc, e);
        }
        let e = exp_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, src.add(full)), m));
        _mm512_mask_storeu_ps(dst.add(full), tail, e);
        let acc = _mm512_mask_add_ps(acc, tail, acc, e);
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(acc));
        for i in (0..full).step_by(W) {
            _mm512_storeu_ps(dst.add(i), _mm512_mul_ps(_mm512_loadu_ps(dst.add(i)), inv));
        }
        let t = _mm512_maskz_loadu_ps(tail, dst.add(full));
        _mm512_mask_storeu_ps(dst.add(full), tail, _mm512_mul_ps(t, inv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (a, b) = (exp_nonpos(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos(-1000.0), exp_nonpos(-87.0));
        assert!(exp_nonpos(f32::NAN).is_nan());
        assert_eq!(exp_nonpos(0.0), 1.0);
    }

    #[test]
    fn row_kernels_match_scalar_code() {
        // Lengths around the lane count exercise the remainders.
        for n in [1usize, 7, 8, 9, 77, 500] {
            let xs: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&xs), m);
            let want: f64 = xs.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let got = exp_sum(&xs, m) as f64;
            let mut e = vec![0f32; n];
            let stored = exp_store_sum(&xs, m, &mut e) as f64;
            assert!((stored - want).abs() < 1e-6 * want);
            assert!((got - want).abs() < 1e-6 * want, "n={n}: {got} vs {want}");
            // The dispatched kernels (AVX-512 where present) and the portable ones.
            let mut out = vec![0f32; n];
            softmax_row_into(&xs, &mut out);
            let mut inplace = xs.clone();
            softmax_row(&mut inplace);
            let mut port = vec![0f32; n];
            softmax_row_into_portable(&xs, &mut port);
            let mut port_inplace = xs.clone();
            softmax_row_portable(&mut port_inplace);
            for (i, &v) in xs.iter().enumerate() {
                let p = ((v - m) as f64).exp() / want;
                for got in [out[i], port[i]] {
                    assert!((got as f64 - p).abs() < 1e-6 * p.max(1e-3), "n={n} i={i}");
                }
                assert_eq!(out[i], inplace[i]);
                assert_eq!(port[i], port_inplace[i]);
            }
        }
        for n in [3, 20] {
            let mut nan = vec![0.5; n];
            nan[1] = f32::NAN;
            let mut port = nan.clone();
            softmax_row(&mut nan);
            softmax_row_portable(&mut port);
            assert!(nan.iter().chain(&port).all(|v| v.is_nan()), "n={n}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_accurate() {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn exp16(xs: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: both arrays hold 16 floats.
            unsafe {
                let e = avx512::exp_nonpos(_mm512_loadu_ps(xs.as_ptr()));
                _mm512_storeu_ps(out.as_mut_ptr(), e);
            }
            out
        }
        if !avx512::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        // (An array built per iteration here made LLVM 22's loop vectorizer crash.)
        let xs: Vec<f32> = (0..320_000).map(|i| i as f32 * -87.0 / 320_000.0).collect();
        let mut worst = 0f64;
        for c in xs.chunks_exact(16) {
            let c: &[f32; 16] = c.try_into().unwrap();
            // SAFETY: AVX-512F is present (checked above).
            let got = unsafe { exp16(c) };
            for (g, &x) in got.iter().zip(c) {
                let want = (x as f64).exp();
                worst = worst.max((*g as f64 - want).abs() / want);
            }
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }
}
