//! Numeric building blocks with PyTorch semantics (resampling, affine warps, noise schedule, RNG).

pub mod attention;
pub mod attnmap;
mod buf;
pub mod conv;
pub mod flops;
pub mod gemm;
pub mod norm;
pub mod resample;
pub mod rng;
pub mod schedule;
pub mod simd;
pub mod softmax;
pub mod warp;
