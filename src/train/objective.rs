//! The objective of one image pair (method.md section 3): token selection on the untracked
//! maps, the sharpening and equivariance losses, and their gradient with respect to the
//! embeddings.

use super::data::ImageSample;
use super::loss::{loss_terms, select as select_tokens, to_host, LossTerms, Selection};
use super::select;
use super::Trainer;
use crate::error::Result;
use crate::ops::warp::SamplePlan;
use candle_core::{DType, Tensor, Var};

pub(super) fn token_tensor(tokens: &[usize], dev: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    Ok(Tensor::from_vec(v, tokens.len(), dev)?)
}

/// Loss of one image.
#[derive(Clone, Debug)]
pub struct SampleLoss {
    pub terms: LossTerms,
    /// Weighted total (scalar tensor, tracked when the embeddings are).
    pub total: Tensor,
    pub selection: Selection,
    /// Mean entropy of the selected tokens' maps of the image (lower = sharper).
    pub entropy: f64,
}

/// Loss of one image and its gradient with respect to the embeddings.
#[derive(Clone, Debug)]
pub struct SampleGrad {
    /// Weighted total, times the requested scale.
    pub loss: f64,
    /// Weighted terms, times the scale (they add up to `loss`).
    pub sharpening: f64,
    pub equivariance: f64,
    /// Mean entropy of the selected tokens' maps of the image.
    pub entropy: f64,
    pub selection: Selection,
    /// d loss / d embeddings, row-major `[N, context_dim]` (zero when the loss is not finite).
    pub grad: Vec<f32>,
}

impl Trainer<'_> {
    /// `fixed` reuses a selection instead of choosing the tokens from these maps.
    pub fn sample_loss(
        &self,
        emb: &Tensor,
        sample: &ImageSample,
        fixed: Option<&Selection>,
    ) -> Result<SampleLoss> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let spec = self.cfg.map_spec();
        let dev = &self.model.device;
        // The selection needs all N maps but no gradient: an untracked pass. The tracked pass
        // then keeps only the K selected maps (softmax still over all N), so no [N, R, R]
        // tensor is part of the graph (tiny model, N = 500, R = 128: 3.0 s and 0.4 GB per
        // image pair against 3.9 s and 2.7 GB for one tracked pass over all N maps).
        // Training uses the same passes through `sample_grad`.
        let selection = match fixed {
            Some(s) => s.clone(),
            None => {
                let ctx = self.model.prepare_context(&emb.detach())?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    None,
                )?; // [2, N, R, R]
                let host = to_host(&maps)?;
                let plane = n * r * r;
                select_tokens(
                    &host[..plane],
                    &host[plane..],
                    n,
                    r,
                    &self.cfg.select_config(),
                )
            }
        };
        let k = selection.tokens.len();
        let ctx = self.model.prepare_context(emb)?;
        let maps = self.model.maps_from_latent(
            &sample.latents,
            Some(&sample.noise),
            &ctx,
            &spec,
            Some(&token_tensor(&selection.tokens, dev)?),
        )?; // [2, K, R, R]
        let entropy = to_host(&maps.get(0)?)?
            .chunks_exact(r * r)
            .map(select::map_entropy)
            .sum::<f64>()
            / k.max(1) as f64;
        // The maps are already the selected ones, in selection order.
        let local = Selection {
            tokens: (0..k).collect(),
            ..selection.clone()
        };
        let back = SamplePlan::new(&sample.affine.inverse(), r, r, r, r)
            .to_device(maps.device(), maps.dtype())?;
        let terms = loss_terms(&maps.get(0)?, &maps.get(1)?, &local, &back, self.cfg.sigma)?;
        let total = terms.total(self.cfg.sharpening_weight, self.cfg.equivariance_weight)?;
        Ok(SampleLoss {
            terms,
            total,
            selection,
            entropy,
        })
    }

    /// Loss of one sample and its gradient with respect to the embeddings (`emb`, row-major
    /// `[N, context_dim]`), the loss scaled by `scale`. Same value and gradient as
    /// [`Self::sample_loss`], but the graph of only one image is alive at a time: the loss is
    /// differentiated with respect to the selected maps first (maps taken from the untracked
    /// pass), then each image's tracked pass is backpropagated with those map gradients.
    /// This halves peak memory, which decides whether SD 1.5 at 512 fits in RAM.
    pub fn sample_grad(
        &self,
        emb: &[f32],
        sample: &ImageSample,
        fixed: Option<&Selection>,
        scale: f64,
    ) -> Result<SampleGrad> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let c = self.model.context_dim();
        let dev = &self.model.device;
        let emb_t = Tensor::from_slice(emb, (n, c), dev)?;
        let plane = r * r;
        let (selection, values) = self.selected_maps(&emb_t, sample, fixed)?;
        let k = selection.tokens.len();
        // Loss on leaf copies of the selected maps -> dL/dM for both images.
        let leaves = Var::from_vec(values, (2, k, r, r), dev)?;
        let local = Selection {
            tokens: (0..k).collect(),
            ..selection.clone()
        };
        let back =
            SamplePlan::new(&sample.affine.inverse(), r, r, r, r).to_device(dev, DType::F32)?;
        let m = leaves.as_tensor();
        let terms = loss_terms(&m.get(0)?, &m.get(1)?, &local, &back, self.cfg.sigma)?;
        let total =
            (terms.total(self.cfg.sharpening_weight, self.cfg.equivariance_weight)? * scale)?;
        let scalar = |t: &Tensor| -> Result<f64> {
            Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
        };
        let loss = scalar(&total)?;
        let entropy = to_host(&m.get(0)?)?
            .chunks_exact(plane)
            .map(select::map_entropy)
            .sum::<f64>()
            / k.max(1) as f64;
        let mut out = SampleGrad {
            loss,
            sharpening: scalar(&terms.sharpening)? * self.cfg.sharpening_weight * scale,
            equivariance: scalar(&terms.equivariance)? * self.cfg.equivariance_weight * scale,
            entropy,
            selection,
            grad: vec![0f32; n * c],
        };
        if !loss.is_finite() {
            return Ok(out);
        }
        let dmaps = total.backward()?.get(m).cloned().unwrap_or(m.zeros_like()?);
        self.add_embedding_grad(&emb_t, sample, &dmaps, &out.selection.tokens, &mut out.grad)?;
        Ok(out)
    }

    /// Untracked pass: the selection (on all N maps, or `fixed`) and the values of the K
    /// selected maps of both images, [2, K, R, R] flat.
    fn selected_maps(
        &self,
        emb_t: &Tensor,
        sample: &ImageSample,
        fixed: Option<&Selection>,
    ) -> Result<(Selection, Vec<f32>)> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let spec = self.cfg.map_spec();
        let dev = &self.model.device;
        let plane = r * r;
        Ok(match fixed {
            None => {
                let ctx = self.model.prepare_context(emb_t)?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    None,
                )?;
                let host = to_host(&maps)?; // [2, N, R, R]
                let sel = select_tokens(
                    &host[..n * plane],
                    &host[n * plane..],
                    n,
                    r,
                    &self.cfg.select_config(),
                );
                let mut v = Vec::with_capacity(2 * sel.tokens.len() * plane);
                for img in 0..2 {
                    for &t in &sel.tokens {
                        let o = (img * n + t) * plane;
                        v.extend_from_slice(&host[o..o + plane]);
                    }
                }
                (sel, v)
            }
            Some(sel) => {
                let ctx = self.model.prepare_context(emb_t)?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    Some(&token_tensor(&sel.tokens, dev)?),
                )?;
                (sel.clone(), to_host(&maps)?)
            }
        })
    }

    /// Tracked pass per image: adds the gradient of sum(maps * `dmaps`) with respect to the
    /// embeddings `emb_t` to `grad`, the maps being those of `tokens`.
    fn add_embedding_grad(
        &self,
        emb_t: &Tensor,
        sample: &ImageSample,
        dmaps: &Tensor,
        tokens: &[usize],
        grad: &mut [f32],
    ) -> Result<()> {
        let spec = self.cfg.map_spec();
        let dev = &self.model.device;
        let idx = token_tensor(tokens, dev)?;
        for img in 0..2 {
            let var = Var::from_tensor(emb_t)?;
            let ctx = self.model.prepare_context(var.as_tensor())?;
            let maps = self.model.maps_from_latent(
                &sample.latents.narrow(0, img, 1)?,
                Some(&sample.noise.narrow(0, img, 1)?),
                &ctx,
                &spec,
                Some(&idx),
            )?; // [1, K, R, R]
            let surrogate = (maps.get(0)? * dmaps.get(img)?)?.sum_all()?;
            if let Some(g) = surrogate.backward()?.get(var.as_tensor()) {
                for (a, v) in grad.iter_mut().zip(to_host(g)?) {
                    *a += v;
                }
            }
        }
        Ok(())
    }
}
