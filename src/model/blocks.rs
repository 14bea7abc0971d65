//! ResNet blocks and resamplers (diffusers `resnet.py`, `downsampling.py`, `upsampling.py`).

use super::nn::{group_norm, linear, Conv2d, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// diffusers `ResnetBlock2D` with the default time-embedding mode (added after conv1).
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: super::nn::GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: super::nn::GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(vb.pp("norm1"), groups, cin, eps)?,
            conv1: Conv2d::new(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj: temb
                .map(|t| linear(vb.pp("time_emb_proj"), t, cout, true))
                .transpose()?,
            norm2: group_norm(vb.pp("norm2"), groups, cout, eps)?,
            conv2: Conv2d::new(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(Conv2d::new(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// `temb` is the already SiLU-activated time embedding, [B, temb_channels].
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = match (&self.time_emb_proj, temb) {
            (Some(p), Some(t)) => h.broadcast_add(&p.forward(t)?.unsqueeze(2)?.unsqueeze(3)?)?,
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

/// Stride-2 3x3 convolution. `padding == 0` is the VAE's asymmetric (right/bottom) padding.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
    asymmetric: bool,
}

impl Downsample {
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            asymmetric: padding == 0,
        })
    }
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling to `size` (2x by default) followed by a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        self.conv.forward(&x.upsample_nearest2d(size.0, size.1)?)
    }
}
