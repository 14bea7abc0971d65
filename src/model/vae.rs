//! The VAE encoder of diffusers' `AutoencoderKL`, returning the latent mean (no sampling).

use super::blocks::{Downsample, ResnetBlock};
use super::config::VaeConfig;
use super::nn::{group_norm, linear, Conv2d, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

const EPS: f64 = 1e-6;

/// Single-head self-attention of the VAE mid block, with its own group norm and residual.
#[derive(Debug, Clone)]
struct VaeAttention {
    norm: super::nn::GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    scale: f64,
}

impl VaeAttention {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        // Checkpoints converted by older diffusers use query/key/value/proj_attn.
        let (q, k, v, o) = if vb.contains_tensor("query.weight") {
            ("query", "key", "value", "proj_attn")
        } else {
            ("to_q", "to_k", "to_v", "to_out.0")
        };
        let lin = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            // Some exports keep these as 1x1 convolutions.
            match vb.get_unchecked("weight") {
                Ok(w) if w.rank() == 4 => {
                    let w = vb.get((c, c, 1, 1), "weight")?.reshape((c, c))?;
                    Ok(Linear::new(w, Some(vb.get(c, "bias")?)))
                }
                _ => linear(vb, c, c, true),
            }
        };
        Ok(Self {
            norm: group_norm(vb.pp("group_norm"), groups, c, EPS)?,
            q: lin(q)?,
            k: lin(k)?,
            v: lin(v)?,
            out: lin(o)?,
            scale: 1.0 / (c as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.q.forward(&t)?;
        let k = self.k.forward(&t)?;
        let v = self.v.forward(&t)?;
        crate::ops::flops::add(4 * b * (h * w) * (h * w) * c);
        let heads = |t: &Tensor| t.reshape((b, 1, h * w, c));
        let a = crate::ops::attention::attention(&q, &heads(&k)?, &heads(&v)?, self.scale)?;
        let o = self.out.forward(&a)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + o
    }
}

/// `AutoencoderKL.encoder` + `quant_conv`; `encode` returns `mean * scaling_factor`.
#[derive(Debug, Clone)]
pub struct VaeEncoder {
    conv_in: Conv2d,
    down: Vec<(Vec<ResnetBlock>, Option<Downsample>)>,
    mid: (ResnetBlock, Option<VaeAttention>, ResnetBlock),
    norm_out: super::nn::GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    latent_channels: usize,
    scaling_factor: f64,
}

impl VaeEncoder {
    /// `vb` points at the root of the VAE weights (keys `encoder.*`, `quant_conv.*`).
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let enc = vb.pp("encoder");
        let chans = &cfg.block_out_channels;
        let conv_in = Conv2d::new(enc.pp("conv_in"), cfg.in_channels, chans[0], 3, 1, 1)?;
        let mut down = Vec::new();
        let mut cin = chans[0];
        for (i, &cout) in chans.iter().enumerate() {
            let vb = enc.pp("down_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        vb.pp("resnets").pp(j),
                        if j == 0 { cin } else { cout },
                        cout,
                        None,
                        g,
                        EPS,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let ds = if i + 1 < chans.len() {
                Some(Downsample::new(vb.pp("downsamplers").pp(0), cout, 0)?)
            } else {
                None
            };
            down.push((resnets, ds));
            cin = cout;
        }
        let c = *chans.last().unwrap();
        let mvb = enc.pp("mid_block");
        let mid = (
            ResnetBlock::new(mvb.pp("resnets").pp(0), c, c, None, g, EPS)?,
            if cfg.mid_block_add_attention {
                Some(VaeAttention::new(mvb.pp("attentions").pp(0), c, g)?)
            } else {
                None
            },
            ResnetBlock::new(mvb.pp("resnets").pp(1), c, c, None, g, EPS)?,
        );
        let l2 = 2 * cfg.latent_channels;
        Ok(Self {
            conv_in,
            down,
            mid,
            norm_out: group_norm(enc.pp("conv_norm_out"), g, c, EPS)?,
            conv_out: Conv2d::new(enc.pp("conv_out"), c, l2, 3, 1, 1)?,
            quant_conv: if cfg.use_quant_conv {
                Some(Conv2d::new(vb.pp("quant_conv"), l2, l2, 1, 1, 0)?)
            } else {
                None
            },
            latent_channels: cfg.latent_channels,
            scaling_factor: cfg.scaling_factor,
        })
    }

    /// Images in [0, 1], shape [B, 3, H, W] -> scaled latent mean [B, C, H/f, W/f].
    pub fn encode(&self, images01: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(&images01.affine(2.0, -1.0)?)?;
        for (resnets, ds) in &self.down {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(ds) = ds {
                x = ds.forward(&x)?;
            }
        }
        x = self.mid.0.forward(&x, None)?;
        if let Some(a) = &self.mid.1 {
            x = a.forward(&x)?;
        }
        x = self.mid.2.forward(&x, None)?;
        x = self.conv_out.forward(&self.norm_out.forward_silu(&x)?)?;
        if let Some(q) = &self.quant_conv {
            x = q.forward(&x)?;
        }
        x.narrow(1, 0, self.latent_channels)? * self.scaling_factor
    }
}
