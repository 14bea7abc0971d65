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

#[cfg(test)]
mod tests {
    use crate::model::nn::{Conv2d, Linear};
    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::VarBuilder;

    #[test]
    fn layers_count_their_multiply_adds() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        // 3x3 stride 2 padding 1: 9x9 -> 5x5.
        let conv = Conv2d::new(vb.pp("c"), 4, 6, 3, 2, 1).unwrap();
        let x = Tensor::zeros((2, 4, 9, 9), DType::F32, &dev).unwrap();
        super::take();
        conv.forward(&x).unwrap();
        assert_eq!(super::take(), 2 * 2 * 6 * 4 * 9 * 5 * 5);
        let lin = Linear::new(Tensor::zeros((7, 5), DType::F32, &dev).unwrap(), None);
        lin.forward(&Tensor::zeros((3, 4, 5), DType::F32, &dev).unwrap())
            .unwrap();
        assert_eq!(super::take(), 2 * 3 * 4 * 5 * 7);
        assert_eq!(super::take(), 0);
    }
}
