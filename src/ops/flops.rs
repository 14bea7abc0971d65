//! Count of convolution and matrix-product FLOPs (2 per multiply-add, direct convolution
//! equivalent) issued by the calling thread, read by `stablekeypoints bench` to report
//! GFLOP/s per stage. Per thread, so that concurrent pipelines (and tests) do not mix.

use std::cell::Cell;

thread_local! {
    static FLOPS: Cell<u64> = const { Cell::new(0) };
}

pub fn add(n: usize) {
    FLOPS.with(|f| f.set(f.get().wrapping_add(n as u64)));
}

/// FLOPs counted on this thread since its previous call.
pub fn take() -> u64 {
    FLOPS.with(|f| f.replace(0))
}
