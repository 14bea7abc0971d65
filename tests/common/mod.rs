//! Helpers shared by the core's test binaries (golden, cuda, engine): model folders under
//! tests/data, tensor comparisons, temporary folders that clean up and synthetic frames.
#![allow(dead_code)] // each test binary uses its own subset

pub mod images;
pub mod temp;

use candle_core::{DType, Tensor};
use std::path::PathBuf;

/// A model directory under tests/data, relative to the working directory (the package
/// root under `cargo test`): the CUDA test binary is also built on one machine and run from
/// a checkout on the GPU machine.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from("tests/data").join(name)
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Relative L2 error of the mean-subtracted tensors.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (flat(a), flat(b));
    let ma = a.iter().sum::<f32>() / a.len() as f32;
    let mb = b.iter().sum::<f32>() / b.len() as f32;
    let num: f32 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - ma) - (y - mb)).powi(2))
        .sum();
    let den: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (num / den).sqrt()
}
