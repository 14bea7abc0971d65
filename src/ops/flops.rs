//! Process-wide count of convolution and matrix-product FLOPs (2 per multiply-add, direct
//! convolution equivalent), read by `stablekeypoints bench` to report GFLOP/s per stage.

use std::sync::atomic::{AtomicU64, Ordering};

static FLOPS: AtomicU64 = AtomicU64::new(0);

pub fn add(n: usize) {
    FLOPS.fetch_add(n as u64, Ordering::Relaxed);
}

/// FLOPs counted since the previous call.
pub fn take() -> u64 {
    FLOPS.swap(0, Ordering::Relaxed)
}
