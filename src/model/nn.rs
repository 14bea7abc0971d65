//! Layers shared by the VAE and the UNet, loaded with diffusers' key names.
//!
//! Fused candle kernels (softmax, layer norm) have no backward pass; when a tensor takes
//! part in a gradient computation the composite forms are used instead.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// 2-D convolution with bias (PyTorch `nn.Conv2d`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
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
        })
    }
}

impl Conv2d {
    /// Winograd pays off once there are enough 4x4 output tiles to amortise the weight
    /// transform (measured with `stablekeypoints bench --conv`).
    fn use_winograd(&self, x: &Tensor) -> bool {
        let (_, _, h, w) = match x.dims4() {
            Ok(d) => d,
            Err(_) => return false,
        };
        let k = self.weight.dims();
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.bias.is_some()
            && k[2] == 3
            && k[3] == 3
            && self.stride == 1
            && self.padding <= 1
            && h * w >= 48 * 48
            && k[0] * k[1] >= 64 * 64
            && !x.track_op()
            && !self.weight.track_op()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.use_winograd(x) {
            let op = crate::ops::conv::Winograd3x3 {
                padding: self.padding,
            };
            let b = self.bias.as_ref().expect("checked in use_winograd");
            return x.contiguous()?.apply_op3_no_bwd(&self.weight, b, &op);
        }
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `nn.Linear`, optionally without bias.
pub fn linear(vb: VarBuilder, cin: usize, cout: usize, bias: bool) -> Result<candle_nn::Linear> {
    let w = vb.get((cout, cin), "weight")?;
    let b = if bias {
        Some(vb.get(cout, "bias")?)
    } else {
        None
    };
    Ok(candle_nn::Linear::new(w, b))
}

/// A 1x1 projection stored as conv `[c_out, c_in, 1, 1]` (SD 1.x) or linear `[c_out, c_in]`
/// (SD 2.x `use_linear_projection`); both are applied as a matrix product.
pub fn projection(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    stored_as_linear: bool,
) -> Result<candle_nn::Linear> {
    let w = if stored_as_linear {
        vb.get((cout, cin), "weight")?
    } else {
        vb.get((cout, cin, 1, 1), "weight")?.reshape((cout, cin))?
    };
    Ok(candle_nn::Linear::new(w, Some(vb.get(cout, "bias")?)))
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

/// Softmax over the last dimension; differentiable when the input is tracked.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        return crate::ops::softmax::softmax_last_dim_with_grad(x);
    }
    if x.track_op() || !x.is_contiguous() {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.apply_op1_no_bwd(&crate::ops::attnmap::FastSoftmax);
    }
    candle_nn::ops::softmax_last_dim(x)
}
