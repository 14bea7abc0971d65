//! Cross-attention map recorder (method.md section 2).
//!
//! The reference upsamples each observed layer's query input bicubically to R x R and runs
//! `to_q` there. Both steps are linear, so the logits are computed at the layer's own
//! side `s` and upsampled instead (same function up to float rounding, ~(R/s)^2 fewer
//! `to_q` FLOPs); only the softmax over the N tokens runs at R x R. The query projection
//! is the layer's own, shared with its attention.

use super::transformer::{Attention, CrossAttentionHook, Stage};
use crate::ops::attnmap::{sparse_taps, UpsampledSoftmaxSelect};
use crate::ops::resample::bicubic_matrix;
use candle_core::{DType, Result, Tensor};
use std::collections::HashMap;

/// Which of the observed layers (the up-path cross-attentions of side <= latent/2, in
/// execution order) are averaged: bit `i` = the `i`-th. The reference's `--layers`
/// (default `0 1 2 3`, the first four); a set, so order and repeats do not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<usize>", into = "Vec<usize>")]
pub struct LayerSet(u64);

impl LayerSet {
    /// Layer indices must be below this.
    pub const LIMIT: usize = 64;

    /// The first `n` layers (`n` clamped to 1..=[`Self::LIMIT`]).
    pub fn first(n: usize) -> Self {
        let n = n.clamp(1, Self::LIMIT);
        Self(if n == Self::LIMIT {
            u64::MAX
        } else {
            (1u64 << n) - 1
        })
    }

    /// The set of `indices`; empty or out-of-range indices are an error saying so.
    pub fn from_indices(indices: &[usize]) -> std::result::Result<Self, String> {
        if indices.is_empty() {
            return Err(
                "the layer list is empty (give observed-layer indices such as 0,1,2,3)".into(),
            );
        }
        let mut bits = 0u64;
        for &i in indices {
            if i >= Self::LIMIT {
                return Err(format!(
                    "layer index {i} is too large (observed layers are numbered from 0, below {})",
                    Self::LIMIT
                ));
            }
            bits |= 1 << i;
        }
        Ok(Self(bits))
    }

    pub fn contains(&self, i: usize) -> bool {
        i < Self::LIMIT && self.0 & (1 << i) != 0
    }

    /// Number of layers averaged.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The highest index: recording may stop once it is recorded.
    pub fn last(&self) -> usize {
        63 - self.0.leading_zeros() as usize
    }

    /// The indices, ascending.
    pub fn indices(&self) -> Vec<usize> {
        (0..Self::LIMIT).filter(|&i| self.contains(i)).collect()
    }
}

impl TryFrom<Vec<usize>> for LayerSet {
    type Error = String;
    fn try_from(v: Vec<usize>) -> std::result::Result<Self, String> {
        Self::from_indices(&v)
    }
}

impl From<LayerSet> for Vec<usize> {
    fn from(l: LayerSet) -> Self {
        l.indices()
    }
}

impl std::fmt::Display for LayerSet {
    /// Comma-separated indices, `0,1,2,3` (what [`std::str::FromStr`] reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.indices().iter().map(|i| i.to_string()).collect();
        f.write_str(&s.join(","))
    }
}

impl std::str::FromStr for LayerSet {
    type Err = String;
    /// `0,1,2,3` (spaces allowed around the commas).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let idx = s
            .split(',')
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| {
                    format!("{p:?} in {s:?} is not a layer index (comma-separated integers from 0)")
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Self::from_indices(&idx)
    }
}

/// Which maps to keep and which layers to average.
#[derive(Debug)]
pub struct MapRecorder {
    max_side: usize,
    layers: LayerSet,
    /// Observed layers so far (averaged or not).
    seen: usize,
    map_res: usize,
    /// Token indices to keep (softmax still runs over all N); `None` keeps all.
    select: Option<Tensor>,
    sum: Option<Tensor>,
    sides: Vec<usize>,
    interp: HashMap<usize, Tensor>,
    elapsed: std::time::Duration,
    timed: bool,
    flops: u64,
}

impl MapRecorder {
    /// Averages the up-path cross-attentions with side <= `max_side` whose index (in
    /// execution order among those) is in `layers`.
    pub fn new(max_side: usize, layers: LayerSet, map_res: usize, select: Option<Tensor>) -> Self {
        Self {
            max_side,
            layers,
            seen: 0,
            map_res,
            select,
            sum: None,
            sides: Vec::new(),
            interp: HashMap::new(),
            elapsed: std::time::Duration::ZERO,
            timed: false,
            flops: 0,
        }
    }

    pub fn max_side(&self) -> usize {
        self.max_side
    }

    /// Layers averaged so far.
    pub fn recorded(&self) -> usize {
        self.sides.len()
    }

    /// Spatial sides of the averaged layers, in execution order.
    pub fn sides(&self) -> &[usize] {
        &self.sides
    }

    /// Measure the time spent in map computation (synchronises the device per layer).
    pub fn with_timing(mut self) -> Self {
        self.timed = true;
        self
    }

    /// Matrix-product FLOPs of the recording (query projection and logits).
    pub fn flops(&self) -> u64 {
        self.flops
    }

    /// Time spent computing maps (zero unless `with_timing`).
    pub fn elapsed(&self) -> std::time::Duration {
        self.elapsed
    }

    pub fn complete(&self) -> bool {
        self.seen > self.layers.last()
    }

    /// Adds one layer's maps; `q` is the query projection of `attn` [B, s*s, C] (the
    /// layer's own, shared with its attention), `k` its heads-split keys [1, h, N, d].
    /// Returns true once all layers are recorded.
    fn record(&mut self, attn: &Attention, q: &Tensor, k: &Tensor, side: usize) -> Result<bool> {
        let index = self.seen;
        self.seen += 1;
        if !self.layers.contains(index) {
            return Ok(self.complete());
        }
        let start = std::time::Instant::now();
        let (b, l, c) = q.dims3()?;
        if l != side * side {
            candle_core::bail!("attention input has {l} positions, expected {side}x{side}");
        }
        let r = self.map_res;
        let m = match self.interp.get(&side) {
            Some(m) => m.clone(),
            None => {
                let m = Tensor::from_vec(bicubic_matrix(side, r), (r, side), q.device())?;
                self.interp.insert(side, m.clone());
                m
            }
        };
        let heads = attn.heads;
        // [B, s*s, C], heads side by side.
        let q_flat = q.to_dtype(DType::F32)?;
        let k = k.to_dtype(DType::F32)?;
        let n = k.dim(2)?;
        let scale = attn.scale(c);
        crate::ops::flops::add(2 * b * l * n * c);
        self.flops += (2 * b * l * n * c) as u64;
        // Built once per layer, not per head: taps and selection only depend on the layer.
        let fused = self.fused_op(&q_flat, side)?;
        let fused = match fused {
            Some(op) if !q_flat.track_op() && !k.track_op() => {
                // All heads in one fused pass (inference), q and k read in place.
                let layer = q_flat.contiguous()?.apply_op2_no_bwd(
                    &k.contiguous()?,
                    &crate::ops::attnmap::LayerMaps {
                        scale: scale as f32,
                        maps: op,
                    },
                )?;
                return self.add_layer(layer, side, start);
            }
            other => other,
        };
        let q_heads = attn.split_heads(&q_flat)?;
        let mut layer: Option<Tensor> = None;
        // One head at a time bounds memory to B*R*R*N floats.
        for h in 0..heads {
            let qh = q_heads.narrow(1, h, 1)?.squeeze(1)?; // [B, s*s, d]
            let kh = k.narrow(1, h, 1)?.squeeze(1)?.t()?.contiguous()?; // [1, d, N]
            let logits = (crate::ops::gemm::matmul(&qh, &kh)? * scale)?; // [B, s*s, N]
            if let Some(op) = fused.clone() {
                let l4 = logits.reshape((b, side, side, n))?;
                let probs = if l4.track_op() {
                    l4.apply_op1(crate::ops::softmax::UpsampledSoftmaxSelectGrad(op))?
                } else {
                    l4.apply_op1_no_bwd(&op)?
                };
                layer = Some(match layer {
                    Some(acc) => (acc + probs)?,
                    None => probs,
                });
                continue;
            }
            // Bicubic upsampling of the logits as two matrix products, N kept last.
            let up = m.broadcast_matmul(&logits.reshape((b, side, side * n))?)?; // [B, R, s*N]
            let up = m.broadcast_matmul(&up.reshape((b * r, side, n))?)?; // [B*R, R, N]
            let probs = super::nn::softmax_last_dim(&up.reshape((b, r, r, n))?)?;
            let probs = match &self.select {
                Some(idx) => probs.index_select(idx, 3)?,
                None => probs,
            };
            layer = Some(match layer {
                Some(acc) => (acc + probs)?,
                None => probs,
            });
        }
        let layer = (layer.expect("at least one head") / heads as f64)?;
        self.add_layer(layer, side, start)
    }

    fn add_layer(&mut self, layer: Tensor, side: usize, start: std::time::Instant) -> Result<bool> {
        let sum = match self.sum.take() {
            Some(acc) => (acc + layer)?,
            None => layer,
        };
        self.sides.push(side);
        if self.timed {
            sum.device().synchronize()?;
            self.elapsed += start.elapsed();
        }
        self.sum = Some(sum);
        Ok(self.complete())
    }

    /// The fused CPU kernel applies with a token selection (tracked logits get its
    /// backward, `ops::softmax::UpsampledSoftmaxSelectGrad`).
    fn fused_op(&self, q: &Tensor, side: usize) -> Result<Option<UpsampledSoftmaxSelect>> {
        let select = match &self.select {
            Some(s) if q.device().is_cpu() && q.dtype() == DType::F32 => s,
            _ => return Ok(None),
        };
        let r = self.map_res;
        Ok(Some(UpsampledSoftmaxSelect {
            side,
            out: r,
            taps: sparse_taps(&bicubic_matrix(side, r), r, side),
            select: select
                .to_vec1::<u32>()?
                .into_iter()
                .map(|i| i as usize)
                .collect(),
        }))
    }

    /// Mean over the recorded layers, [B, K or N, R, R].
    pub fn finish(self) -> Result<Tensor> {
        let n = self.sides.len();
        match self.sum {
            Some(s) => (s / n as f64)?.permute((0, 3, 1, 2))?.contiguous(),
            None => candle_core::bail!("no attention layer was recorded"),
        }
    }
}

impl CrossAttentionHook for MapRecorder {
    /// Up-path layers of side <= `max_side`, until the last of `layers` is recorded.
    fn wants(&self, stage: Stage, side: usize) -> bool {
        stage == Stage::Up && side <= self.max_side && !self.complete()
    }

    fn observe(&mut self, attn: &Attention, q: &Tensor, k: &Tensor, side: usize) -> Result<bool> {
        self.record(attn, q, k, side)
    }

    /// Fewer observed layers than `layers` names (a small input) average those there are,
    /// as the reference's `collect_maps`; none of them is an error.
    fn end_of_pass(&mut self) -> Result<()> {
        if self.recorded() == 0 {
            candle_core::bail!(
                "only {} up-path cross-attention layers have a side <= {} at this input size, \
                 none of the layers {} to be averaged (observed layers are numbered from 0)",
                self.seen,
                self.max_side,
                self.layers
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_sets_parse_print_and_bound() {
        let l: LayerSet = "3, 0,2".parse().unwrap();
        assert_eq!(l.indices(), vec![0, 2, 3]);
        assert_eq!(
            (l.len(), l.last(), l.to_string()),
            (3, 3, "0,2,3".to_string())
        );
        assert!(l.contains(2) && !l.contains(1) && !l.contains(64));
        assert_eq!(LayerSet::first(4).indices(), vec![0, 1, 2, 3]);
        assert_eq!(LayerSet::first(64).len(), 64);
        assert_eq!("1,1".parse::<LayerSet>().unwrap().indices(), vec![1]);
        for bad in ["", "a", "1,", "-1", "64"] {
            assert!(bad.parse::<LayerSet>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, "[0,2,3]");
        assert_eq!(serde_json::from_str::<LayerSet>(&json).unwrap(), l);
        assert!(serde_json::from_str::<LayerSet>("[]").is_err());
    }
}
