//! Small seeded PRNG that gives the same stream on every platform.
//!
//! xoshiro256++ (Blackman & Vigna) seeded through SplitMix64. Floating-point outputs use only
//! IEEE basic operations (+, -, *, /, sqrt) and a local `ln`, never the platform libm, so the
//! values are bit-identical everywhere.

/// Seeded xoshiro256++ generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
    /// Second value of the last polar-method pair, handed out by the next `normal()`.
    spare: Option<u64>,
}

/// One SplitMix64 step: advances `state` and returns the mixed output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's finaliser: a bijective mix of 64 bits, for deriving independent seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Natural logarithm for finite `x > 0` from basic IEEE operations only (libm `ln` may differ
/// between platforms in the last bit). Accurate to a few ulp.
fn portable_ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let mut x = x;
    let mut e: i64 = 0;
    if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first (exact).
        x *= 18_014_398_509_481_984.0; // 2^54
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1023u64 << 52)); // [1, 2)
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(t), |t| <= 0.1716; 15 odd terms reach well below 1 ulp.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut series = 0.0;
    for k in (0..15).rev() {
        series = series * t2 + 1.0 / (2 * k + 1) as f64;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * t * series
}

impl Rng {
    /// Generator whose 256-bit state is four consecutive SplitMix64 outputs of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s, spare: None }
    }

    /// Generator with an explicit state (for test vectors). The state must not be all zero.
    #[cfg(test)]
    fn from_state(s: [u64; 4]) -> Self {
        Self { s, spare: None }
    }

    /// Next 64 random bits (xoshiro256++).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0) // 2^-53
    }

    /// Uniform in [lo, hi) (`lo + (hi - lo) * uniform()`; rounding may rarely give `hi`).
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal sample, Box–Muller in Marsaglia's polar form (no sin/cos, so portable).
    /// Values come in pairs; the second of a pair is returned by the next call.
    pub fn normal(&mut self) -> f64 {
        if let Some(bits) = self.spare.take() {
            return f64::from_bits(bits);
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * portable_ln(s) / s).sqrt();
                self.spare = Some((v * f).to_bits());
                return u * f;
            }
        }
    }

    /// Fills `out` with standard normal samples (rounded to f32), in order.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        for o in out {
            *o = self.normal() as f32;
        }
    }

    /// Unbiased integer in [0, n) (Lemire's multiply-and-reject). Panics if `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // Reject the low products that would over-represent some results.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_published_vector() {
        // First outputs of SplitMix64 started from state 0 (reference C implementation).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(&mut s), 0x06c4_5d18_8009_454f);
        assert_eq!(splitmix64(&mut s), 0xf88b_b8a8_724c_81ec);
    }

    #[test]
    fn xoshiro256pp_known_vector() {
        // xoshiro256++ from state [1, 2, 3, 4]; the first value is rotl(1 + 4, 23) + 1.
        let mut r = Rng::from_state([1, 2, 3, 4]);
        let expected: [u64; 10] = [
            41943041,
            58720359,
            3588806011781223,
            3591011842654386,
            9228616714210784205,
            9973669472204895162,
            14011001112246962877,
            12406186145184390807,
            15849039046786891736,
            10450023813501588000,
        ];
        for e in expected {
            assert_eq!(r.next_u64(), e);
        }
    }

    #[test]
    fn seed_zero_state_and_first_values_pinned() {
        let r = Rng::new(0);
        assert_eq!(
            r.s,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f,
                0xf88b_b8a8_724c_81ec
            ]
        );
        // First output = rotl(s0 + s3, 23) + s0 by hand.
        let (s0, s3) = (0xe220_a839_7b1d_cdafu64, 0xf88b_b8a8_724c_81ecu64);
        let first = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), first);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..64).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..64).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(43);
            (0..64).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));

        let mut r1 = Rng::new(7);
        let mut r2 = Rng::new(7);
        let mut v1 = vec![0f32; 101];
        let mut v2 = vec![0f32; 101];
        r1.fill_normal(&mut v1);
        r2.fill_normal(&mut v2);
        assert_eq!(v1, v2);
        assert_eq!(r1.normal().to_bits(), r2.normal().to_bits());
    }

    #[test]
    fn uniform_bounds() {
        let mut r = Rng::new(1);
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for _ in 0..100_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            lo = lo.min(u);
            hi = hi.max(u);
            let v = r.uniform_range(-15.0, 15.0);
            assert!((-15.0..15.0).contains(&v));
        }
        assert!(lo < 1e-3 && hi > 1.0 - 1e-3);
        // The largest possible value stays below 1.
        assert!(((u64::MAX >> 11) as f64 / 9_007_199_254_740_992.0) < 1.0);
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(2024);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let skew = xs.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64;
        // Standard errors: mean 0.0032, var 0.0045, skew 0.0077, kurt 0.031.
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!(skew.abs() < 0.04, "skew {skew}");
        assert!((kurt - 3.0).abs() < 0.15, "kurtosis {kurt}");
        let frac_1sd = xs.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        assert!((frac_1sd - 0.682_689).abs() < 0.006, "P(|x|<1) {frac_1sd}");
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut r = Rng::new(5);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7)] += 1;
        }
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 500, "{counts:?}");
        }
        assert_eq!(r.below(1), 0);
        // Huge n exercises the rejection threshold path.
        let big = usize::MAX / 3 * 2;
        for _ in 0..1000 {
            assert!(r.below(big) < big);
        }
    }

    #[test]
    fn portable_ln_matches_std() {
        let mut r = Rng::new(9);
        for _ in 0..10_000 {
            let x = r.uniform() + 1e-300;
            let (a, b) = (portable_ln(x), x.ln());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "{x}: {a} vs {b}"
            );
        }
        for x in [1.0, 2.0, 0.5, 1e-310, 1e300, std::f64::consts::E, 1.5, 0.75] {
            let (a, b) = (portable_ln(x), x.ln());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(portable_ln(1.0), 0.0);
    }
}
