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
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_66;
    let p = p * r + 0.5;
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

multiversion! {
    /// In-place softmax of one row.
    pub fn softmax_row(row: &mut [f32]) {
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
    /// Softmax of `xs` into `out`.
    pub fn softmax_row_into(xs: &[f32], out: &mut [f32]) {
        let m = max(xs);
        let sum = exp_store_sum(xs, m, out);
        scale(out, 1.0 / sum);
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
            let mut out = vec![0f32; n];
            softmax_row_into(&xs, &mut out);
            let mut inplace = xs.clone();
            softmax_row(&mut inplace);
            for (i, &v) in xs.iter().enumerate() {
                let p = ((v - m) as f64).exp() / want;
                assert!(
                    (out[i] as f64 - p).abs() < 1e-6 * p.max(1e-3),
                    "n={n} i={i}"
                );
                assert_eq!(out[i], inplace[i]);
            }
        }
        let mut nan = vec![0.0, f32::NAN, 1.0];
        softmax_row(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()));
    }
}
