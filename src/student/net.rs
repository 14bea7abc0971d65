//! The student network: a small residual convolutional encoder with a two-level top-down
//! path and a K-channel heatmap head at a quarter of the input resolution.
//!
//! One forward function serves training (candle's differentiable ops on `Var`s) and
//! inference (the project's CPU kernels: a direct kernel for 3x3 stride-1, im2col + GEMM
//! for the rest), so the two can only differ by float rounding.

use candle_core::{Module, Result, Tensor};

/// Layers of the `skp-student-1` architecture, in file order: `(name, widths index of the
/// input, widths index of the output, kernel, stride)`, where index 4 is the image's 3
/// channels and 5 the keypoint count.
pub const LAYERS: [(&str, usize, usize, usize, usize); 16] = [
    ("stem", IMG, 0, 3, 2),
    ("b1", 0, 0, 3, 1),
    ("down2", 0, 1, 3, 2),
    ("b2a", 1, 1, 3, 1),
    ("b2b", 1, 1, 3, 1),
    ("down3", 1, 2, 3, 2),
    ("b3a", 2, 2, 3, 1),
    ("b3b", 2, 2, 3, 1),
    ("down4", 2, 3, 3, 2),
    ("b4a", 3, 3, 3, 1),
    ("b4b", 3, 3, 3, 1),
    ("lat4", 3, 2, 1, 1),
    ("fuse3", 2, 2, 3, 1),
    ("lat3", 2, 1, 1, 1),
    ("fuse2", 1, 1, 3, 1),
    ("head", 1, KPTS, 1, 1),
];
const IMG: usize = 4;
const KPTS: usize = 5;

/// Output stride of the heatmaps.
pub const STRIDE: usize = 4;
/// Input sides must be multiples of this (four stride-2 stages).
pub const SIZE_MULTIPLE: usize = 16;

/// Channel count of a `LAYERS` width index.
pub fn channels(widths: &[usize; 4], k: usize, idx: usize) -> usize {
    match idx {
        IMG => 3,
        KPTS => k,
        i => widths[i],
    }
}

/// `[cout, cin, k, k]` of layer `i`.
pub fn weight_shape(widths: &[usize; 4], k: usize, i: usize) -> [usize; 4] {
    let (_, ci, co, ks, _) = LAYERS[i];
    [channels(widths, k, co), channels(widths, k, ci), ks, ks]
}

/// Multiply-adds x 2 of one forward pass at input side `size`.
pub fn flops(widths: &[usize; 4], k: usize, size: usize) -> u64 {
    let mut side = size;
    let mut total = 0u64;
    for (i, &(name, ..)) in LAYERS.iter().enumerate() {
        let [co, ci, ks, _] = weight_shape(widths, k, i);
        let stride = LAYERS[i].4;
        side = match name {
            "lat4" => size / 16,
            "fuse3" | "lat3" => size / 8,
            "fuse2" | "head" => size / 4,
            _ => side / stride,
        };
        total += 2 * (co * ci * ks * ks * side * side) as u64;
    }
    total
}

/// Parameters (weights and biases).
pub fn parameters(widths: &[usize; 4], k: usize) -> usize {
    (0..LAYERS.len())
        .map(|i| {
            let [co, ci, ks, _] = weight_shape(widths, k, i);
            co * ci * ks * ks + co
        })
        .sum()
}

/// 2x nearest-neighbour upsampling by broadcasting (differentiable with plain ops).
fn up2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// The forward pass with `conv(i, x)` = layer i's convolution with bias (padding k/2).
/// Input [B, 3, S, S] in [0, 1]; output heatmaps [B, K, S/4, S/4].
pub fn forward(x: &Tensor, conv: &dyn Fn(usize, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    // Centre the input: the model input is [0, 1] RGB.
    let x = ((x - 0.5)? * 2.0)?;
    let block = |a: usize, x: &Tensor| -> Result<Tensor> {
        let y = conv(a, x)?.relu()?;
        (conv(a + 1, &y)? + x)?.relu()
    };
    let s1 = conv(0, &x)?.relu()?;
    let s1 = conv(1, &s1)?.relu()?;
    let d2 = conv(2, &s1)?.relu()?;
    let b2 = block(3, &d2)?;
    let d3 = conv(5, &b2)?.relu()?;
    let b3 = block(6, &d3)?;
    let d4 = conv(8, &b3)?.relu()?;
    let b4 = block(9, &d4)?;
    let t3 = (up2(&conv(11, &b4)?)? + b3)?;
    let f3 = conv(12, &t3)?.relu()?;
    let t2 = (up2(&conv(13, &f3)?)? + b2)?;
    let f2 = conv(14, &t2)?.relu()?;
    conv(15, &f2)
}

/// The layers as the project's inference convolutions.
pub struct FastConvs(pub Vec<crate::model::nn::Conv2d>);

impl FastConvs {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        forward(x, &|i, x| self.0[i].forward(x))
    }
}

/// One keypoint read off a heatmap [h, w]: arg-max, refined by a parabola through its
/// neighbours on each axis; `(x, y)` normalised to the input square, and the peak value.
pub fn heatmap_peak(m: &[f32], h: usize, w: usize) -> (f32, f32, f32) {
    let (mut best, mut bi) = (f32::NEG_INFINITY, 0usize);
    for (i, &v) in m.iter().enumerate() {
        if v > best {
            best = v;
            bi = i;
        }
    }
    let (py, px) = (bi / w, bi % w);
    let refine = |lo: Option<f32>, c: f32, hi: Option<f32>| -> f32 {
        match (lo, hi) {
            (Some(a), Some(b)) => {
                let d = a - 2.0 * c + b;
                if d < 0.0 {
                    (0.5 * (a - b) / d).clamp(-0.5, 0.5)
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    };
    let at = |y: usize, x: usize| m[y * w + x];
    let dx = refine(
        (px > 0).then(|| at(py, px - 1)),
        best,
        (px + 1 < w).then(|| at(py, px + 1)),
    );
    let dy = refine(
        (py > 0).then(|| at(py - 1, px)),
        best,
        (py + 1 < h).then(|| at(py + 1, px)),
    );
    (
        (px as f32 + dx + 0.5) / w as f32,
        (py as f32 + dy + 0.5) / h as f32,
        best,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_and_parameters_are_hand_counted() {
        // widths 16/32/64/128, K = 10, input 128: the stem alone is 64*64*16*27*2.
        let w = [16, 32, 64, 128];
        let stem = 64 * 64 * 16 * 27 * 2u64;
        let head = 32 * 32 * 10 * 32 * 2u64;
        let total = flops(&w, 10, 128);
        assert!(total > stem + head);
        let b1 = 64 * 64 * 16 * 144 * 2u64;
        let down2 = 32 * 32 * 32 * 144 * 2u64;
        let b2 = 2 * 32 * 32 * 32 * 288 * 2u64;
        let down3 = 16 * 16 * 64 * 288 * 2u64;
        let b3 = 2 * 16 * 16 * 64 * 576 * 2u64;
        let down4 = 8 * 8 * 128 * 576 * 2u64;
        let b4 = 2 * 8 * 8 * 128 * 1152 * 2u64;
        let lat4 = 8 * 8 * 64 * 128 * 2u64;
        let fuse3 = 16 * 16 * 64 * 576 * 2u64;
        let lat3 = 16 * 16 * 32 * 64 * 2u64;
        let fuse2 = 32 * 32 * 32 * 288 * 2u64;
        assert_eq!(
            total,
            stem + b1 + down2 + b2 + down3 + b3 + down4 + b4 + lat4 + fuse3 + lat3 + fuse2 + head
        );
        let p = 16 * 27
            + 16 * 144
            + 32 * 144
            + 2 * 32 * 288
            + 64 * 288
            + 2 * 64 * 576
            + 128 * 576
            + 2 * 128 * 1152
            + 64 * 128
            + 64 * 576
            + 32 * 64
            + 32 * 288
            + 10 * 32;
        let biases =
            16 + 16 + 32 + 32 + 32 + 64 + 64 + 64 + 128 + 128 + 128 + 64 + 64 + 32 + 32 + 10;
        assert_eq!(parameters(&w, 10), p + biases);
    }

    #[test]
    fn peak_is_refined_towards_the_larger_neighbour() {
        // A parabola sampled at x = 1, 2, 3 around its vertex at 2.25 (row 1 of 3).
        let f = |x: f32| 1.0 - (x - 2.25) * (x - 2.25);
        let mut m = vec![0f32; 3 * 5];
        for x in 0..5 {
            m[5 + x] = f(x as f32);
        }
        let (x, y, v) = heatmap_peak(&m, 3, 5);
        assert!((x - (2.25 + 0.5) / 5.0).abs() < 1e-6, "{x}");
        // Row neighbours are 0 below the peak value 0.9375: a symmetric parabola, no shift.
        assert!((y - 1.5 / 3.0).abs() < 1e-6, "{y}");
        assert_eq!(v, f(2.0));
    }
}
