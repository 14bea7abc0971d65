//! diffusers `UNet2DConditionModel` (SD 1.x / 2.x family), run only as far as a
//! [`CrossAttentionHook`] (the attention recorder) needs. Key names follow diffusers so its
//! safetensors load unchanged.

use super::blocks::{Downsample, ResnetBlock, Upsample};
use super::config::{DownBlockType, UNetConfig, UpBlockType};
use super::nn::{group_norm, linear, Conv2d, Linear};
use super::transformer::{Attention, Run, Stage, Transformer2D};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use super::transformer::{Context, CrossAttentionHook};

#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample>,
}

#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Upsample>,
}

/// The conditional UNet.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time_1: Linear,
    time_2: Linear,
    down: Vec<DownBlock>,
    mid: (ResnetBlock, Transformer2D, ResnetBlock),
    up: Vec<UpBlock>,
    cross_attn: Vec<Attention>,
}

macro_rules! early_exit {
    ($e:expr) => {
        match $e {
            Some(x) => x,
            None => return Ok(()),
        }
    };
}

impl UNet {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let g = cfg.norm_num_groups;
        let eps = cfg.norm_eps;
        let mut next_id = 0;
        let conv_in = Conv2d::new(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?;
        let tvb = vb.pp("time_embedding");
        let time_1 = linear(tvb.pp("linear_1"), ch[0], temb, true)?;
        let time_2 = linear(tvb.pp("linear_2"), temb, temb, true)?;

        let mut down = Vec::new();
        let mut cin = ch[0];
        for (i, &cout) in ch.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let layers = cfg.layers_per_block[i];
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let rin = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock::new(
                    vb.pp("resnets").pp(j),
                    rin,
                    cout,
                    Some(temb),
                    g,
                    eps,
                )?);
                if cfg.down_block_types[i] == DownBlockType::CrossAttn {
                    attentions.push(Transformer2D::new(
                        vb.pp("attentions").pp(j),
                        cout,
                        cfg.num_attention_heads[i],
                        cfg.transformer_layers_per_block[i],
                        cfg,
                        &mut next_id,
                    )?);
                }
            }
            let downsample = if i + 1 < n {
                Some(Downsample::new(
                    vb.pp("downsamplers").pp(0),
                    cout,
                    cfg.downsample_padding,
                )?)
            } else {
                None
            };
            down.push(DownBlock {
                resnets,
                attentions,
                downsample,
            });
            cin = cout;
        }

        let c = ch[n - 1];
        let mvb = vb.pp("mid_block");
        let mid = (
            ResnetBlock::new(mvb.pp("resnets").pp(0), c, c, Some(temb), g, eps)?,
            Transformer2D::new(
                mvb.pp("attentions").pp(0),
                c,
                cfg.num_attention_heads[n - 1],
                cfg.transformer_layers_per_block[n - 1],
                cfg,
                &mut next_id,
            )?,
            ResnetBlock::new(mvb.pp("resnets").pp(1), c, c, Some(temb), g, eps)?,
        );

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut prev_out = rev[0];
        for i in 0..n {
            let vb = vb.pp("up_blocks").pp(i);
            let out = rev[i];
            let input = rev[(i + 1).min(n - 1)];
            let layers = cfg.layers_per_block[n - 1 - i] + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let rin = if j == 0 { prev_out } else { out };
                resnets.push(ResnetBlock::new(
                    vb.pp("resnets").pp(j),
                    rin + skip,
                    out,
                    Some(temb),
                    g,
                    eps,
                )?);
                if cfg.up_block_types[i] == UpBlockType::CrossAttn {
                    attentions.push(Transformer2D::new(
                        vb.pp("attentions").pp(j),
                        out,
                        cfg.up_heads(i),
                        cfg.transformer_layers_per_block[n - 1 - i],
                        cfg,
                        &mut next_id,
                    )?);
                }
            }
            let upsample = if i + 1 < n {
                Some(Upsample::new(vb.pp("upsamplers").pp(0), out)?)
            } else {
                None
            };
            up.push(UpBlock {
                resnets,
                attentions,
                upsample,
            });
            prev_out = out;
        }
        // Weights after conv_out are never needed for maps; still require them so a
        // truncated checkpoint is caught at load time.
        let _ = group_norm(vb.pp("conv_norm_out"), g, ch[0], eps)?;
        let _ = Conv2d::new(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?;

        let mut cross_attn = Vec::new();
        let all = down
            .iter()
            .flat_map(|d| d.attentions.iter())
            .chain(std::iter::once(&mid.1))
            .chain(up.iter().flat_map(|u| u.attentions.iter()));
        for t in all {
            for b in &t.blocks {
                debug_assert_eq!(b.cross_id, cross_attn.len());
                cross_attn.push(b.attn2.clone());
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            conv_in,
            time_1,
            time_2,
            down,
            mid,
            up,
            cross_attn,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Keys/values of `embeddings` [N, Cctx] for every cross-attention layer.
    pub fn prepare_context(&self, embeddings: &Tensor) -> Result<Context> {
        let e = embeddings.unsqueeze(0)?;
        let kv = self
            .cross_attn
            .iter()
            .map(|a| a.kv(&e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Context { kv })
    }

    /// Sinusoidal timestep embedding (diffusers `Timesteps` + `TimestepEmbedding`), SiLU applied.
    fn time_embedding(&self, t: f64, batch: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dim = self.cfg.block_out_channels[0];
        let half = dim / 2;
        let mut v = vec![0f32; dim];
        for i in 0..half {
            // diffusers computes the frequencies in float32.
            let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - self.cfg.freq_shift as f32);
            let arg = t as f32 * exponent.exp();
            let (s, c) = (arg.sin(), arg.cos());
            if self.cfg.flip_sin_to_cos {
                v[i] = c;
                v[half + i] = s;
            } else {
                v[i] = s;
                v[half + i] = c;
            }
        }
        let e = Tensor::from_vec(v, (1, dim), dev)?.to_dtype(dtype)?;
        let e = self.time_2.forward(&self.time_1.forward(&e)?.silu()?)?;
        e.silu()?.repeat((batch, 1))
    }

    /// Runs the UNet on `latent` [B, C, h, w] at timestep `t` until `hook` stops the pass.
    pub fn record(
        &self,
        latent: &Tensor,
        t: f64,
        ctx: &Context,
        hook: &mut dyn CrossAttentionHook,
    ) -> Result<()> {
        let b = latent.dim(0)?;
        let temb = self.time_embedding(t, b, latent.dtype(), latent.device())?;
        let temb = Some(&temb);
        let mut run = Run { ctx, hook };
        let mut x = self.conv_in.forward(latent)?;
        let mut skips = vec![x.clone()];
        for blk in &self.down {
            for (j, r) in blk.resnets.iter().enumerate() {
                x = r.forward(&x, temb)?;
                if let Some(a) = blk.attentions.get(j) {
                    x = early_exit!(a.forward(&x, Stage::Down, &mut run)?);
                }
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsample {
                x = d.forward(&x)?;
                skips.push(x.clone());
            }
        }
        x = self.mid.0.forward(&x, temb)?;
        x = early_exit!(self.mid.1.forward(&x, Stage::Mid, &mut run)?);
        x = self.mid.2.forward(&x, temb)?;
        for blk in &self.up {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .expect("skip connections match the block layout");
                x = r.forward(&Tensor::cat(&[&x, &skip], 1)?, temb)?;
                if let Some(a) = blk.attentions.get(j) {
                    x = early_exit!(a.forward(&x, Stage::Up, &mut run)?);
                }
            }
            if let Some(u) = &blk.upsample {
                let (h, w) = match skips.last() {
                    Some(s) => (s.dim(2)?, s.dim(3)?),
                    None => (2 * x.dim(2)?, 2 * x.dim(3)?),
                };
                x = u.forward(&x, (h, w))?;
            }
        }
        run.hook.end_of_pass()
    }
}
