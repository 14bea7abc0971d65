//! Layers shared by the VAE and the UNet, loaded with diffusers' key names.
//!
//! Fused candle kernels (softmax, layer norm) have no backward pass; when a tensor takes
//! part in a gradient computation the composite forms are used instead.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use std::sync::{Arc, OnceLock};

/// Softmax over the last dimension, differentiable when the input is tracked (the kernels
/// are `ops::softmax`'s).
pub use crate::ops::softmax::softmax_last_dim;

/// 2-D convolution with bias (PyTorch `nn.Conv2d`).
///
/// Weights are constants: when the input takes part in a gradient computation the layer
/// runs as [`ConstConv`], whose backward yields the input gradient only (candle's own
/// convolution backward also computes, and keeps, a gradient for the weights).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// `W` with in/out channels swapped and the kernel rotated by 180 degrees: the
    /// input-gradient of a stride-1 convolution is a convolution with it.
    flipped: Arc<OnceLock<Tensor>>,
}

impl Conv2d {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((cout, cin, k, k), "weight")?;
        let bias = Some(vb.get(cout, "bias")?);
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            flipped: Arc::default(),
        })
    }

    /// A layer from its tensors (`weight` [cout, cin, k, k]).
    pub fn from_tensors(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            weight,
            bias,
            stride,
            padding,
            flipped: Arc::default(),
        }
    }

    /// Winograd pays off once there are enough 4x4 output tiles to amortise the weight
    /// transform (measured with `stablekeypoints bench --conv`).
    fn use_winograd(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> bool {
        let (_, _, h, w) = match x.dims4() {
            Ok(d) => d,
            Err(_) => return false,
        };
        let k = weight.dims();
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && weight.dtype() == DType::F32
            && k[2] == 3
            && k[3] == 3
            && stride == 1
            && padding <= 1
            && k[0] * k[1] >= 16 * 16
            // Few tiles cannot amortise transforming many channels' weights.
            && (h * w >= 48 * 48 || (h * w >= 16 * 16 && k[0] * k[1] <= 128 * 128))
    }

    /// Convolution of an untracked input with `weight` (no gradient).
    fn conv(
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        if let Ok((b, _, h, w)) = x.dims4() {
            let k = weight.dims();
            let (oh, ow) = (
                (h + 2 * padding).saturating_sub(k[2]) / stride + 1,
                (w + 2 * padding).saturating_sub(k[3]) / stride + 1,
            );
            crate::ops::flops::add(2 * b * k[0] * k[1] * k[2] * k[3] * oh * ow);
        }
        if Self::use_winograd(x, weight, stride, padding) {
            let op = crate::ops::conv::Winograd3x3 { padding };
            let zeros;
            let b = match bias {
                Some(b) => b,
                None => {
                    zeros = Tensor::zeros(weight.dim(0)?, DType::F32, x.device())?;
                    &zeros
                }
            };
            return x.contiguous()?.apply_op3_no_bwd(weight, b, &op);
        }
        let y = crate::ops::gemm::conv2d(x, weight, stride, padding)?;
        match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }

    fn flipped(&self) -> Result<&Tensor> {
        if let Some(t) = self.flipped.get() {
            return Ok(t);
        }
        let (co, ci, kh, kw) = self.weight.dims4()?;
        let w: Vec<f64> = self.weight.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mut f = vec![0f64; w.len()];
        for o in 0..co {
            for i in 0..ci {
                for y in 0..kh {
                    for x in 0..kw {
                        f[((i * co + o) * kh + kh - 1 - y) * kw + kw - 1 - x] =
                            w[((o * ci + i) * kh + y) * kw + x];
                    }
                }
            }
        }
        let t = Tensor::from_vec(f, (ci, co, kh, kw), self.weight.device())?
            .to_dtype(self.weight.dtype())?;
        Ok(self.flipped.get_or_init(|| t))
    }

    /// Gradient with respect to the input of this convolution, for an input of `x_shape`.
    fn input_grad(&self, grad: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        if self.stride == 1 && kh == kw && self.padding < kh {
            // Full correlation with the rotated kernel, cropped by the forward padding.
            return Self::conv(grad, self.flipped()?, None, 1, kh - 1 - self.padding);
        }
        let out_size = (grad.dim(2)? - 1) * self.stride + kh - 2 * self.padding;
        let out_padding = x_shape[2] - out_size;
        let g = grad.conv_transpose2d(&self.weight, self.padding, out_padding, self.stride, 1)?;
        crate::ops::flops::add(2 * g.elem_count() / g.dim(1)? * grad.dim(1)? * kh * kw);
        Ok(g)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() && x.device().is_cpu() {
            return x.apply_op1(ConstConv(self.clone()));
        }
        Self::conv(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

/// [`Conv2d`] as a custom op of its input alone (CPU).
struct ConstConv(Conv2d);

impl CustomOp1 for ConstConv {
    fn name(&self) -> &'static str {
        "conv2d-const-weights"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = &self.0;
        let y = Conv2d::conv(
            &cpu_tensor(s, l)?,
            &c.weight,
            c.bias.as_ref(),
            c.stride,
            c.padding,
        )?;
        cpu_storage(&y)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.0.input_grad(grad, arg.dims())?))
    }
}

/// `nn.Linear` with constant weights: like [`Conv2d`], a tracked input gets a backward
/// pass for the input only ([`ConstLinear`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (out, inp) = self.weight.dims2()?;
        crate::ops::flops::add(2 * x.elem_count() / inp.max(1) * inp * out);
        let y = crate::ops::gemm::matmul(x, &self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() && x.device().is_cpu() {
            return x.apply_op1(ConstLinear(self.clone()));
        }
        self.apply(x)
    }
}

/// [`Linear`] as a custom op of its input alone (CPU).
struct ConstLinear(Linear);

impl CustomOp1 for ConstLinear {
    fn name(&self) -> &'static str {
        "linear-const-weights"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_storage(&self.0.apply(&cpu_tensor(s, l)?)?)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (out, inp) = self.0.weight.dims2()?;
        crate::ops::flops::add(2 * grad.elem_count() / out.max(1) * inp * out);
        Ok(Some(grad.broadcast_matmul(&self.0.weight)?))
    }
}

/// A CPU tensor holding a copy of a custom op's input.
fn cpu_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let (a, b) = match l.contiguous_offsets() {
        Some(o) => o,
        None => candle_core::bail!("constant-weight layer: input must be contiguous"),
    };
    let dev = &Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[a..b], l.shape(), dev),
        CpuStorage::F64(v) => Tensor::from_slice(&v[a..b], l.shape(), dev),
        CpuStorage::F16(v) => Tensor::from_slice(&v[a..b], l.shape(), dev),
        CpuStorage::BF16(v) => Tensor::from_slice(&v[a..b], l.shape(), dev),
        _ => candle_core::bail!(
            "constant-weight layer: unsupported dtype {:?}",
            candle_core::backend::BackendStorage::dtype(s)
        ),
    }
}

/// The storage of a CPU tensor's (contiguous) values, as a custom op returns it.
fn cpu_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let flat = t.flatten_all()?;
    let storage = match t.dtype() {
        DType::F32 => CpuStorage::F32(flat.to_vec1()?),
        DType::F64 => CpuStorage::F64(flat.to_vec1()?),
        DType::F16 => CpuStorage::F16(flat.to_vec1()?),
        DType::BF16 => CpuStorage::BF16(flat.to_vec1()?),
        d => candle_core::bail!("constant-weight layer: unsupported dtype {d:?}"),
    };
    Ok((storage, t.shape().clone()))
}

/// `nn.Linear`, optionally without bias.
pub fn linear(vb: VarBuilder, cin: usize, cout: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((cout, cin), "weight")?;
    let b = if bias {
        Some(vb.get(cout, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// A 1x1 projection stored as conv `[c_out, c_in, 1, 1]` (SD 1.x) or linear `[c_out, c_in]`
/// (SD 2.x `use_linear_projection`); both are applied as a matrix product.
pub fn projection(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    stored_as_linear: bool,
) -> Result<Linear> {
    let w = if stored_as_linear {
        vb.get((cout, cin), "weight")?
    } else {
        vb.get((cout, cin, 1, 1), "weight")?.reshape((cout, cin))?
    };
    Ok(Linear::new(w, Some(vb.get(cout, "bias")?)))
}

pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    Ok(GroupNorm {
        weight: vb.get(channels, "weight")?,
        bias: vb.get(channels, "bias")?,
        groups,
        eps,
    })
}

/// GroupNorm with affine parameters; `forward_silu` fuses the SiLU that follows it in
/// ResNet blocks.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if x.device().is_cpu()
            && x.dtype() == DType::F32
            && !x.track_op()
            && !self.weight.track_op()
        {
            let op = crate::ops::norm::GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu,
            };
            return x
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        if x.track_op()
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && !self.weight.track_op()
            && !self.bias.track_op()
        {
            let op = crate::ops::norm::GroupNormGrad {
                op: crate::ops::norm::GroupNormOp {
                    groups: self.groups,
                    eps: self.eps,
                    silu,
                },
                weight: self.weight.to_dtype(DType::F32)?.to_vec1()?,
                bias: self.bias.to_dtype(DType::F32)?.to_vec1()?,
            };
            return x.contiguous()?.apply_op1(op);
        }
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let xg = x.reshape((b, self.groups, ()))?.to_dtype(DType::F32)?;
        let mean = xg.mean_keepdim(2)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xn = xc
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?
            .reshape(dims.as_slice())?;
        let mut shape = vec![1; dims.len()];
        shape[1] = c;
        let y = xn
            .broadcast_mul(&self.weight.reshape(shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(shape.as_slice())?)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }
}

/// LayerNorm over the last dimension with affine parameters.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.track_op() && x.is_contiguous() {
            return candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_sub(&mean)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        x.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::flops;
    use crate::test_util::max_rel;
    use candle_core::Var;

    /// Input gradient of `sum(layer(x) * probe)` via the layer and via candle's own ops.
    fn grads(
        x: &Tensor,
        probe: &Tensor,
        layer: impl Fn(&Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let v1 = Var::from_tensor(x).unwrap();
        let y1 = layer(v1.as_tensor()).unwrap();
        let g1 = (&y1 * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let v2 = Var::from_tensor(x).unwrap();
        let y2 = reference(v2.as_tensor()).unwrap();
        let g2 = (&y2 * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (
            y1,
            y2,
            g1.get(v1.as_tensor()).unwrap().clone(),
            g2.get(v2.as_tensor()).unwrap().clone(),
        )
    }

    #[test]
    fn constant_weight_conv_matches_candle_forward_and_input_gradient() {
        let dev = Device::Cpu;
        // (c_in, c_out, side, kernel, stride, padding): Winograd and direct stride-1
        // 3x3, SD's stride-2 downsampler, 1x1 shortcut.
        for (ci, co, s, k, stride, pad) in [
            (16, 24, 20, 3, 1, 1),
            (3, 5, 9, 3, 1, 1),
            (8, 8, 11, 3, 2, 1),
            (8, 8, 10, 3, 2, 0),
            (6, 10, 7, 1, 1, 0),
        ] {
            let w = (Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap() * 0.2).unwrap();
            let b = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let conv = Conv2d {
                weight: w.clone(),
                bias: Some(b.clone()),
                stride,
                padding: pad,
                flipped: Arc::default(),
            };
            let x = Tensor::randn(0f32, 1.0, (2, ci, s, s), &dev).unwrap();
            let o = (s + 2 * pad - k) / stride + 1;
            let probe = Tensor::randn(0f32, 1.0, (2, co, o, o), &dev).unwrap();
            let (y1, y2, g1, g2) = grads(
                &x,
                &probe,
                |x| conv.forward(x),
                |x| {
                    x.conv2d(&w, pad, stride, 1, 1)?
                        .broadcast_add(&b.reshape((1, co, 1, 1))?)
                },
            );
            assert!(
                max_rel(&y1, &y2) < 1e-5,
                "forward {ci}->{co} k{k} s{stride} p{pad}"
            );
            assert!(
                max_rel(&g1, &g2) < 1e-5,
                "gradient {ci}->{co} k{k} s{stride} p{pad}"
            );
            // The untracked path gives the same values.
            assert!(max_rel(&conv.forward(&x).unwrap(), &y2) < 1e-5);
        }
    }

    #[test]
    fn constant_weight_linear_matches_candle_in_f32_and_f64() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let w = Tensor::randn(0f32, 1.0, (7, 5), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let b = Tensor::randn(0f32, 1.0, 7, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let lin = Linear::new(w.clone(), Some(b.clone()));
            let reference = candle_nn::Linear::new(w, Some(b));
            for shape in [vec![3, 5], vec![2, 3, 5], vec![2, 2, 3, 5]] {
                let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let mut out = shape.clone();
                *out.last_mut().unwrap() = 7;
                let probe = Tensor::randn(0f32, 1.0, out.as_slice(), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let (y1, y2, g1, g2) =
                    grads(&x, &probe, |x| lin.forward(x), |x| reference.forward(x));
                let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                assert!(max_rel(&f(&y1), &f(&y2)) < 1e-6, "{dtype:?} {shape:?}");
                assert!(max_rel(&f(&g1), &f(&g2)) < 1e-6, "{dtype:?} {shape:?}");
            }
        }
    }

    #[test]
    fn constant_weight_layers_leave_no_weight_gradient() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let conv = Conv2d {
            weight: w.clone(),
            bias: Some(Tensor::zeros(4, DType::F32, &dev).unwrap()),
            stride: 1,
            padding: 1,
            flipped: Arc::default(),
        };
        let lw = Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap();
        let lin = Linear::new(lw.clone(), None);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 3, 5, 5), &dev).unwrap()).unwrap();
        let y = conv.forward(x.as_tensor()).unwrap();
        let y = lin
            .forward(&y.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap())
            .unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        assert!(g.get(&w).is_none(), "conv weights got a gradient buffer");
        assert!(g.get(&lw).is_none(), "linear weights got a gradient buffer");
        // candle's own layers would keep one.
        let y = x.as_tensor().conv2d(&w, 1, 1, 1, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&w).is_some());
    }

    #[test]
    fn layers_count_their_multiply_adds() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        // 3x3 stride 2 padding 1: 9x9 -> 5x5.
        let conv = Conv2d::new(vb.pp("c"), 4, 6, 3, 2, 1).unwrap();
        let x = Tensor::zeros((2, 4, 9, 9), DType::F32, &dev).unwrap();
        flops::take();
        conv.forward(&x).unwrap();
        assert_eq!(flops::take(), 2 * 2 * 6 * 4 * 9 * 5 * 5);
        let lin = Linear::new(Tensor::zeros((7, 5), DType::F32, &dev).unwrap(), None);
        lin.forward(&Tensor::zeros((3, 4, 5), DType::F32, &dev).unwrap())
            .unwrap();
        assert_eq!(flops::take(), 2 * 3 * 4 * 5 * 7);
        assert_eq!(flops::take(), 0);
    }
}
