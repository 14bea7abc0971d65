//! Numeric building blocks with PyTorch semantics (resampling, affine warps, noise schedule, RNG).

pub mod attention;
pub mod attnmap;
mod buf;
pub mod conv;
pub mod direct;
pub mod flops;
pub mod gemm;
pub mod norm;
pub mod resample;
pub mod rng;
pub mod schedule;
pub mod simd;
pub mod softmax;
pub mod warp;

use candle_core::{CpuStorage, Layout, Result};

/// The f32 values of a custom op's operand, which must be contiguous; `what` names the
/// op and operand in the error.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what} must be contiguous f32"),
    }
}
