//! The student's CPU inference: its 3x3 convolutions (99% of the arithmetic) on the direct
//! kernel of `ops::direct`, its 1x1 ones as one GEMM on the `gemm` crate's kernels (AVX2 or
//! AVX-512, chosen at run time), with the bias, the residual and the ReLU applied in one
//! pass over the output. No tensors, no per-op dispatch: at
//! 0.2 GFLOP a frame the framework's overheads would cost more than the arithmetic.

use super::net::{self, LAYERS};
use super::StudentWeights;
use crate::ops::direct::{self, Epilogue, Packed3x3};
use rayon::prelude::*;

struct Layer {
    kernel: Kernel,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    stride: usize,
}

/// A layer's weights, laid out for the kernel that runs it.
enum Kernel {
    /// 3x3, stride 1 or 2.
    Direct(Packed3x3),
    /// 1x1, stride 1: `[cout, cin]`, row-major.
    Pointwise(Vec<f32>),
}

/// A feature map `[c, h, w]`.
struct Map {
    v: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
}

/// The student's layers, ready to run.
pub struct Engine {
    layers: Vec<Layer>,
    k: usize,
    size: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Act {
    None,
    Relu,
}

impl Engine {
    pub fn new(w: &StudentWeights) -> Self {
        let info = &w.info;
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(i, (wt, b))| {
                let [cout, cin, k, _] = net::weight_shape(&info.widths, info.num_keypoints, i);
                let stride = LAYERS[i].4;
                let kernel = match (k, stride) {
                    (3, _) => Kernel::Direct(Packed3x3::new(wt, cout, cin)),
                    (1, 1) => Kernel::Pointwise(wt.clone()),
                    _ => unreachable!("the student has 3x3 and 1x1 stride-1 layers only"),
                };
                Layer {
                    kernel,
                    b: b.clone(),
                    cin,
                    cout,
                    stride,
                }
            })
            .collect();
        Self {
            layers,
            k: info.num_keypoints,
            size: info.input_size,
        }
    }

    /// Heatmaps `[n, K, S/4, S/4]` of `n` inputs `[3, S, S]` in [0, 1] (concatenated):
    /// frames in parallel, or one frame's products on every thread.
    pub fn run(&self, inputs: &[f32], n: usize) -> Vec<f32> {
        let s = self.size;
        let (plane, hs) = (3 * s * s, s / net::STRIDE);
        assert_eq!(inputs.len(), n * plane, "student input size");
        let per = self.k * hs * hs;
        let mut out = vec![0f32; n * per];
        let threads = rayon::current_num_threads();
        if n == 1 || threads == 1 {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            for (x, o) in inputs.chunks(plane).zip(out.chunks_mut(per)) {
                o.copy_from_slice(&self.frame(x, par).v);
            }
        } else {
            inputs
                .par_chunks(plane)
                .zip(out.par_chunks_mut(per))
                .for_each(|(x, o)| o.copy_from_slice(&self.frame(x, gemm::Parallelism::None).v));
        }
        out
    }

    fn frame(&self, x: &[f32], par: gemm::Parallelism) -> Map {
        let s = self.size;
        let x = Map {
            v: x.iter().map(|&v| (v - 0.5) * 2.0).collect(),
            c: 3,
            h: s,
            w: s,
        };
        let conv = |i: usize, x: &Map, act: Act, residual: Option<&Map>| {
            conv(&self.layers[i], x, act, residual, par)
        };
        let s1 = conv(0, &x, Act::Relu, None);
        let s1 = conv(1, &s1, Act::Relu, None);
        let d2 = conv(2, &s1, Act::Relu, None);
        let y = conv(3, &d2, Act::Relu, None);
        let b2 = conv(4, &y, Act::Relu, Some(&d2));
        let d3 = conv(5, &b2, Act::Relu, None);
        let y = conv(6, &d3, Act::Relu, None);
        let b3 = conv(7, &y, Act::Relu, Some(&d3));
        let d4 = conv(8, &b3, Act::Relu, None);
        let y = conv(9, &d4, Act::Relu, None);
        let b4 = conv(10, &y, Act::Relu, Some(&d4));
        let t3 = up2_add(&conv(11, &b4, Act::None, None), &b3);
        let f3 = conv(12, &t3, Act::Relu, None);
        let t2 = up2_add(&conv(13, &f3, Act::None, None), &b2);
        let f2 = conv(14, &t2, Act::Relu, None);
        conv(15, &f2, Act::None, None)
    }
}

/// 2x nearest upsampling of `a` plus `skip` (same shape as the upsampled map).
fn up2_add(a: &Map, skip: &Map) -> Map {
    let (h, w) = (skip.h, skip.w);
    let mut v = skip.v.clone();
    for c in 0..skip.c {
        for y in 0..h {
            let src = &a.v[(c * a.h + y / 2) * a.w..][..a.w];
            let dst = &mut v[(c * h + y) * w..][..w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d += src[x / 2];
            }
        }
    }
    Map { v, c: skip.c, h, w }
}

/// `layer(x)` (padding k/2) + bias (+ `residual`), then `act`.
fn conv(l: &Layer, x: &Map, act: Act, residual: Option<&Map>, par: gemm::Parallelism) -> Map {
    debug_assert_eq!(x.c, l.cin);
    let w = match &l.kernel {
        Kernel::Pointwise(w) => w,
        Kernel::Direct(k) => {
            let e = Epilogue {
                bias: &l.b,
                residual: residual.map(|r| &r.v[..]),
                relu: act == Act::Relu,
            };
            let parallel = !matches!(par, gemm::Parallelism::None);
            return Map {
                v: direct::conv3x3(&x.v, x.h, x.w, l.stride, k, e, parallel),
                c: l.cout,
                h: x.h.div_ceil(l.stride),
                w: x.w.div_ceil(l.stride),
            };
        }
    };
    let (oh, ow) = (x.h, x.w);
    let pix = oh * ow;
    let rows = l.cin;
    let src: &[f32] = &x.v;
    // Output starts as the bias (plus the residual) and the product is added to it.
    let mut out = vec![0f32; l.cout * pix];
    for (o, row) in out.chunks_mut(pix).enumerate() {
        match residual {
            Some(r) => {
                for (d, &rv) in row.iter_mut().zip(&r.v[o * pix..(o + 1) * pix]) {
                    *d = rv + l.b[o];
                }
            }
            None => row.fill(l.b[o]),
        }
    }
    // SAFETY: out [cout, pix], w [cout, cin], src [cin, pix], all row-major and in bounds.
    unsafe {
        gemm::gemm(
            l.cout,
            pix,
            rows,
            out.as_mut_ptr(),
            1,
            pix as isize,
            true,
            w.as_ptr(),
            1,
            rows as isize,
            src.as_ptr(),
            1,
            pix as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    if act == Act::Relu {
        out.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    Map {
        v: out,
        c: l.cout,
        h: oh,
        w: ow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rng::Rng;
    use crate::student::{StudentInfo, StudentWeights};
    use candle_core::{Device, Tensor};

    /// A student with seeded random weights and biases (He scale: activations stay O(1)).
    fn random_student(widths: [usize; 4], k: usize, size: usize, seed: u64) -> StudentWeights {
        let info = StudentInfo {
            widths,
            num_keypoints: k,
            input_size: size,
            crop: Default::default(),
            teacher_model: "m".into(),
            tokens_hash: "t".into(),
            token_indices: (0..k).collect(),
            confidence_scale: vec![1.0; k],
            extra: Default::default(),
        };
        let mut w = StudentWeights::random(info, seed);
        let mut rng = Rng::new(seed);
        for (i, (wt, b)) in w.layers.iter_mut().enumerate() {
            if i + 1 == LAYERS.len() {
                wt.iter_mut().for_each(|v| *v *= 100.0);
            }
            rng.fill_normal(b);
            b.iter_mut().for_each(|v| *v *= 0.1);
        }
        w
    }

    #[test]
    fn engine_equals_the_training_graph() {
        for (widths, k, size, n) in [([8, 8, 16, 16], 5, 64, 3), ([16, 32, 64, 128], 10, 128, 1)] {
            let w = random_student(widths, k, size, 7);
            let mut rng = Rng::new(1);
            let mut x = vec![0f32; n * 3 * size * size];
            rng.fill_normal(&mut x);
            x.iter_mut()
                .for_each(|v| *v = (*v * 0.25 + 0.5).clamp(0.0, 1.0));
            let ours = Engine::new(&w).run(&x, n);
            let dev = Device::Cpu;
            let params = w.tensors(&dev).unwrap();
            let xt = Tensor::from_vec(x, (n, 3, size, size), &dev).unwrap();
            let graph = net::forward(&xt, &|i, t| {
                crate::student::graph::conv(t, &params[i].0, &params[i].1, LAYERS[i].4)
            })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            assert_eq!(ours.len(), graph.len());
            let scale = graph.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = ours
                .iter()
                .zip(&graph)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.1,
                "heatmaps of a random student are not all small"
            );
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "widths {widths:?}: max difference {diff} (largest value {scale})"
            );
        }
    }
}
