//! Comparisons shared by the unit tests.

use candle_core::Tensor;

/// Largest absolute element of `t`.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// [`max_abs_diff`] relative to the largest magnitude of `b` (which must not be all zero).
pub fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let s = max_abs(b);
    assert!(s > 0.0, "reference is all zero");
    max_abs_diff(a, b) / s
}
