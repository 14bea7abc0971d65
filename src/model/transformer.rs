//! diffusers' `Transformer2DModel` and its pieces (attention, GEGLU feed-forward, transformer
//! block), shared by the UNet's down, mid and up blocks. Cross-attention layers report to a
//! [`CrossAttentionHook`], so the blocks know nothing of what is recorded from them.

use super::config::UNetConfig;
use super::nn::{group_norm, linear, projection, GroupNorm, LayerNorm, Linear};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Observes the cross-attention layers of a UNet pass (the map recorder implements it) and
/// may end the pass early.
pub trait CrossAttentionHook {
    /// Whether to observe the cross-attention at `stage` whose feature map is `side` x `side`.
    fn wants(&self, stage: Stage, side: usize) -> bool;
    /// One wanted layer: `q = to_q(x)` [B, side*side, C] (the layer's own projection, shared
    /// with its attention) and `k`, its heads-split keys [1, heads, N, C/heads]. Returns true
    /// to stop the pass here.
    fn observe(&mut self, attn: &Attention, q: &Tensor, k: &Tensor, side: usize) -> Result<bool>;
    /// The pass ran to its end without `observe` stopping it; an error here is the pass's.
    fn end_of_pass(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Multi-head attention with diffusers' `Attention` keys (`to_q`, `to_k`, `to_v`, `to_out.0`).
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    pub(crate) heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, query_dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: linear(vb.pp("to_q"), query_dim, query_dim, false)?,
            to_k: linear(vb.pp("to_k"), context_dim, query_dim, false)?,
            to_v: linear(vb.pp("to_v"), context_dim, query_dim, false)?,
            to_out: linear(vb.pp("to_out").pp(0), query_dim, query_dim, true)?,
            heads,
        })
    }

    /// [B, L, C] -> [B, heads, L, C/heads]
    pub(crate) fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        x.reshape((b, l, self.heads, c / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    pub(crate) fn scale(&self, channels: usize) -> f64 {
        1.0 / ((channels / self.heads) as f64).sqrt()
    }

    /// Keys and values for a context [B or 1, N, Cctx], split into heads.
    pub(crate) fn kv(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.to_k.forward(context)?)?,
            self.split_heads(&self.to_v.forward(context)?)?,
        ))
    }

    /// Attention of the queries `q = to_q(x)` [B, L, C] over precomputed heads-split
    /// keys/values.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, l, c) = q.dims3()?;
        let n = k.dim(2)?;
        // Scores and weighted values: two products of b x l x n x c multiply-adds.
        crate::ops::flops::add(4 * b * l * n * c);
        let o = crate::ops::attention::attention(q, k, v, self.scale(c))?;
        self.to_out.forward(&o)
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`).
#[derive(Debug, Clone)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: linear(vb.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: linear(vb.pp("net").pp(2), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let half = h.dim(D::Minus1)? / 2;
        let a = h.narrow(D::Minus1, 0, half)?;
        let gate = h.narrow(D::Minus1, half, half)?.gelu_erf()?;
        self.out.forward(&(a * gate)?)
    }
}

#[derive(Debug, Clone)]
pub(super) struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    pub(super) attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    /// Index of `attn2` among all cross-attentions, in execution order.
    pub(super) cross_id: usize,
}

/// diffusers `Transformer2DModel` (continuous input).
#[derive(Debug, Clone)]
pub(super) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Linear,
    pub(super) blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

/// Where the UNet is inside its forward pass, for a hook's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Down,
    Mid,
    Up,
}

/// Precomputed keys/values of the token embeddings for every cross-attention layer.
/// They depend only on the tokens, so the element computes them once per token set.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) kv: Vec<(Tensor, Tensor)>,
}

/// What a forward pass carries through the blocks.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a Context,
    pub(super) hook: &'a mut dyn CrossAttentionHook,
}

impl Transformer2D {
    pub(super) fn new(
        vb: VarBuilder,
        c: usize,
        heads: usize,
        layers: usize,
        cfg: &UNetConfig,
        next_id: &mut usize,
    ) -> Result<Self> {
        let linear_proj = cfg.use_linear_projection;
        let blocks = (0..layers)
            .map(|i| {
                let vb = vb.pp("transformer_blocks").pp(i);
                let id = *next_id;
                *next_id += 1;
                Ok(TransformerBlock {
                    norm1: LayerNorm::new(vb.pp("norm1"), c, 1e-5)?,
                    attn1: Attention::new(vb.pp("attn1"), c, c, heads)?,
                    norm2: LayerNorm::new(vb.pp("norm2"), c, 1e-5)?,
                    attn2: Attention::new(vb.pp("attn2"), c, cfg.cross_attention_dim, heads)?,
                    norm3: LayerNorm::new(vb.pp("norm3"), c, 1e-5)?,
                    ff: FeedForward::new(vb.pp("ff"), c)?,
                    cross_id: id,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(vb.pp("norm"), cfg.norm_num_groups, c, 1e-6)?,
            proj_in: projection(vb.pp("proj_in"), c, c, linear_proj)?,
            blocks,
            proj_out: projection(vb.pp("proj_out"), c, c, linear_proj)?,
        })
    }

    /// Returns `None` when the recorder has all it needs (early exit).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        stage: Stage,
        run: &mut Run,
    ) -> Result<Option<Tensor>> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .permute((0, 2, 3, 1))?
            .reshape((b, h * w, c))?;
        let mut t = self.proj_in.forward(&t)?;
        for blk in &self.blocks {
            let n1 = blk.norm1.forward(&t)?;
            let (k, v) = blk.attn1.kv(&n1)?;
            t = (blk.attn1.attend(&blk.attn1.to_q.forward(&n1)?, &k, &v)? + t)?;
            let n2 = blk.norm2.forward(&t)?;
            let q = blk.attn2.to_q.forward(&n2)?;
            let (k, v) = &run.ctx.kv[blk.cross_id];
            if run.hook.wants(stage, h) && run.hook.observe(&blk.attn2, &q, k, h)? {
                return Ok(None);
            }
            t = (blk.attn2.attend(&q, k, v)? + t)?;
            t = (blk.ff.forward(&blk.norm3.forward(&t)?)? + t)?;
        }
        let t = self.proj_out.forward(&t)?;
        let t = t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        Ok(Some((t + x)?))
    }
}
