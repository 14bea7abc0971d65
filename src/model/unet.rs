//! diffusers `UNet2DConditionModel` (SD 1.x / 2.x and SDXL base), run only as far as a
//! [`CrossAttentionHook`] (the attention recorder) needs. Key names follow diffusers so its
//! safetensors load unchanged.

use super::blocks::{Downsample, ResnetBlock, Upsample};
use super::config::{DownBlockType, TextTime, UNetConfig, UpBlockType};
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

/// SDXL's added embedding (`add_embedding.linear_1`, `linear_2`), fed a zero pooled text
/// embedding and the time ids of the model input's size (see [`UNet::record`]).
#[derive(Debug, Clone)]
struct AddEmbedding {
    cfg: TextTime,
    linear_1: Linear,
    linear_2: Linear,
}

/// The conditional UNet.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time_1: Linear,
    time_2: Linear,
    add_embedding: Option<AddEmbedding>,
    /// Input pixels per latent pixel (the VAE's down-sampling), for SDXL's time ids.
    pixels_per_latent: usize,
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

/// What every block of one UNet is built with.
struct Build<'a> {
    cfg: &'a UNetConfig,
    temb: usize,
    next_id: usize,
}

impl Build<'_> {
    fn resnet(&self, vb: VarBuilder, cin: usize, cout: usize) -> Result<ResnetBlock> {
        let c = self.cfg;
        ResnetBlock::new(
            vb,
            cin,
            cout,
            Some(self.temb),
            c.norm_num_groups,
            c.norm_eps,
        )
    }

    fn transformer(
        &mut self,
        vb: VarBuilder,
        c: usize,
        heads: usize,
        depth: usize,
    ) -> Result<Transformer2D> {
        Transformer2D::new(vb, c, heads, depth, self.cfg, &mut self.next_id)
    }

    /// Down block `i` taking `cin` channels.
    fn down(&mut self, vb: VarBuilder, i: usize, cin: usize) -> Result<DownBlock> {
        let cfg = self.cfg;
        let cout = cfg.block_out_channels[i];
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..cfg.layers_per_block[i] {
            let rin = if j == 0 { cin } else { cout };
            resnets.push(self.resnet(vb.pp("resnets").pp(j), rin, cout)?);
            if cfg.down_block_types[i] == DownBlockType::CrossAttn {
                attentions.push(self.transformer(
                    vb.pp("attentions").pp(j),
                    cout,
                    cfg.num_attention_heads[i],
                    cfg.transformer_layers_per_block[i],
                )?);
            }
        }
        let downsample = (i + 1 < cfg.block_out_channels.len())
            .then(|| Downsample::new(vb.pp("downsamplers").pp(0), cout, cfg.downsample_padding))
            .transpose()?;
        Ok(DownBlock {
            resnets,
            attentions,
            downsample,
        })
    }

    fn mid(&mut self, vb: VarBuilder) -> Result<(ResnetBlock, Transformer2D, ResnetBlock)> {
        let cfg = self.cfg;
        let n = cfg.block_out_channels.len();
        let c = cfg.block_out_channels[n - 1];
        Ok((
            self.resnet(vb.pp("resnets").pp(0), c, c)?,
            self.transformer(
                vb.pp("attentions").pp(0),
                c,
                cfg.num_attention_heads[n - 1],
                cfg.transformer_layers_per_block[n - 1],
            )?,
            self.resnet(vb.pp("resnets").pp(1), c, c)?,
        ))
    }

    /// Up block `i` after a block of `prev_out` channels (diffusers reverses the per-block
    /// lists on the way up).
    fn up(&mut self, vb: VarBuilder, i: usize, prev_out: usize) -> Result<UpBlock> {
        let cfg = self.cfg;
        let n = cfg.block_out_channels.len();
        let rev = |k: usize| cfg.block_out_channels[n - 1 - k];
        let (out, input) = (rev(i), rev((i + 1).min(n - 1)));
        let layers = cfg.layers_per_block[n - 1 - i] + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip = if j == layers - 1 { input } else { out };
            let rin = if j == 0 { prev_out } else { out };
            resnets.push(self.resnet(vb.pp("resnets").pp(j), rin + skip, out)?);
            if cfg.up_block_types[i] == UpBlockType::CrossAttn {
                attentions.push(self.transformer(
                    vb.pp("attentions").pp(j),
                    out,
                    cfg.up_heads(i),
                    cfg.transformer_layers_per_block[n - 1 - i],
                )?);
            }
        }
        let upsample = (i + 1 < n)
            .then(|| Upsample::new(vb.pp("upsamplers").pp(0), out))
            .transpose()?;
        Ok(UpBlock {
            resnets,
            attentions,
            upsample,
        })
    }
}

/// diffusers' `get_timestep_embedding` of each value (frequencies in float32, as diffusers
/// computes them), one row of `dim` per value.
fn sinusoids(values: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let mut v = vec![0f32; dim * values.len()];
    for (row, &t) in v.chunks_mut(dim).zip(values) {
        for i in 0..half {
            let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - shift as f32);
            let (s, c) = (t * exponent.exp()).sin_cos();
            let (a, b) = if flip_sin_to_cos { (c, s) } else { (s, c) };
            row[i] = a;
            row[half + i] = b;
        }
    }
    v
}

impl UNet {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let conv_in = Conv2d::new(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?;
        let tvb = vb.pp("time_embedding");
        let time_1 = linear(tvb.pp("linear_1"), ch[0], temb, true)?;
        let time_2 = linear(tvb.pp("linear_2"), temb, temb, true)?;
        let add_embedding = cfg
            .text_time
            .map(|tt| {
                let avb = vb.pp("add_embedding");
                Ok::<_, candle_core::Error>(AddEmbedding {
                    cfg: tt,
                    linear_1: linear(avb.pp("linear_1"), tt.input_dim(), temb, true)?,
                    linear_2: linear(avb.pp("linear_2"), temb, temb, true)?,
                })
            })
            .transpose()?;
        let mut b = Build {
            cfg,
            temb,
            next_id: 0,
        };
        let mut down = Vec::new();
        let mut cin = ch[0];
        for (i, &cout) in ch.iter().enumerate() {
            down.push(b.down(vb.pp("down_blocks").pp(i), i, cin)?);
            cin = cout;
        }
        let mid = b.mid(vb.pp("mid_block"))?;
        let mut up = Vec::new();
        for i in 0..n {
            let prev_out = ch[n - 1 - i.saturating_sub(1)];
            up.push(b.up(vb.pp("up_blocks").pp(i), i, prev_out)?);
        }
        // Weights after conv_out are never needed for maps; still require them so a
        // truncated checkpoint is caught at load time.
        let _ = group_norm(
            vb.pp("conv_norm_out"),
            cfg.norm_num_groups,
            ch[0],
            cfg.norm_eps,
        )?;
        let _ = Conv2d::new(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?;
        let cross_attn = cross_attentions(&down, &mid.1, &up);
        Ok(Self {
            cfg: cfg.clone(),
            conv_in,
            time_1,
            time_2,
            add_embedding,
            pixels_per_latent: 8,
            down,
            mid,
            up,
            cross_attn,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Sets the VAE's down-sampling factor (8 unless set), which gives SDXL's time ids the
    /// model input's size in pixels.
    pub fn set_pixels_per_latent(&mut self, factor: usize) {
        self.pixels_per_latent = factor;
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

    /// Timestep embedding (diffusers `Timesteps` + `TimestepEmbedding`), plus SDXL's added
    /// embedding for an input of `size` (H, W) pixels; SiLU applied.
    fn time_embedding(
        &self,
        t: f64,
        size: (usize, usize),
        batch: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let dim = cfg.block_out_channels[0];
        let v = sinusoids(&[t as f32], dim, cfg.flip_sin_to_cos, cfg.freq_shift);
        let e = Tensor::from_vec(v, (1, dim), dev)?.to_dtype(dtype)?;
        let mut e = self.time_2.forward(&self.time_1.forward(&e)?.silu()?)?;
        if let Some(a) = &self.add_embedding {
            e = (e + a.forward(size, cfg, dtype, dev)?)?;
        }
        e.silu()?.repeat((batch, 1))
    }

    /// Runs the UNet on `latent` [B, C, h, w] at timestep `t` until `hook` stops the pass.
    /// An SDXL UNet gets a zero pooled text embedding (the learned tokens stand for the
    /// text) and the time ids (H, W, 0, 0, H, W) of the model input in pixels: no crop,
    /// the original size the input size, as SDXL's pipeline conditions an uncropped image.
    pub fn record(
        &self,
        latent: &Tensor,
        t: f64,
        ctx: &Context,
        hook: &mut dyn CrossAttentionHook,
    ) -> Result<()> {
        let (b, _, h, w) = latent.dims4()?;
        let size = (h * self.pixels_per_latent, w * self.pixels_per_latent);
        let temb = self.time_embedding(t, size, b, latent.dtype(), latent.device())?;
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

impl AddEmbedding {
    /// `add_embedding(concat(pooled = 0, sinusoids(time ids)))` for an input of `size`.
    fn forward(
        &self,
        size: (usize, usize),
        cfg: &UNetConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let (h, w) = (size.0 as f32, size.1 as f32);
        let ids = [h, w, 0.0, 0.0, h, w];
        let mut v = vec![0f32; self.cfg.pooled_dim];
        v.extend(sinusoids(
            &ids,
            self.cfg.time_embed_dim,
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        ));
        let x = Tensor::from_vec(v, (1, self.cfg.input_dim()), dev)?.to_dtype(dtype)?;
        self.linear_2.forward(&self.linear_1.forward(&x)?.silu()?)
    }
}

/// Every transformer block's cross-attention, in execution order (their `cross_id`s).
fn cross_attentions(down: &[DownBlock], mid: &Transformer2D, up: &[UpBlock]) -> Vec<Attention> {
    let all = down
        .iter()
        .flat_map(|d| d.attentions.iter())
        .chain(std::iter::once(mid))
        .chain(up.iter().flat_map(|u| u.attentions.iter()));
    let mut out = Vec::new();
    for t in all {
        for b in &t.blocks {
            debug_assert_eq!(b.cross_id, out.len());
            out.push(b.attn2.clone());
        }
    }
    out
}
