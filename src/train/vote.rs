//! After training: the dataset-wide vote that picks the K keypoint tokens, and the tokens
//! file holding them.

use super::loss::{to_host, vote_pick};
use super::select;
use super::streams::{shuffled_index, stream, STREAM_VOTE, STREAM_VOTE_ORDER};
use super::Trainer;
use crate::error::Result;
use crate::tokens::Tokens;
use candle_core::Tensor;

impl Trainer<'_> {
    /// The dataset-wide vote: for `num_indices` images, the candidates and furthest
    /// point sampling on the image's maps; returns the K most picked `(token, count)`.
    pub fn vote(&mut self, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<(usize, usize)>> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let ctx = self.model.prepare_context(&self.embeddings_tensor()?)?;
        let total = self.cfg.num_indices;
        let mut picks = Vec::with_capacity(total);
        for v in 0..total as u64 {
            let image = shuffled_index(self.cfg.seed, STREAM_VOTE_ORDER, v, self.data.len());
            let mut rng = stream(self.cfg.seed, STREAM_VOTE, v);
            let flip = self.cfg.flip && rng.uniform() < 0.5;
            let z = self.latent(image, flip, None)?;
            let mut noise = vec![0f32; z.elem_count()];
            rng.fill_normal(&mut noise);
            let noise = Tensor::from_vec(noise, z.shape(), &self.model.device)?;
            let maps =
                self.model
                    .maps_from_latent(&z, Some(&noise), &ctx, &self.cfg.map_spec(), None)?;
            let host = to_host(&maps)?;
            picks.push(vote_pick(&host, n, r, &self.cfg.select_config()));
            progress(v as usize + 1, total);
        }
        Ok(select::vote(&picks, self.cfg.num_keypoints))
    }

    /// The tokens file for the current embeddings and the vote result.
    pub fn tokens(&self, votes: &[(usize, usize)]) -> Result<Tokens> {
        let indices: Vec<usize> = votes.iter().map(|v| v.0).collect();
        let mut t = Tokens::new(
            self.embeddings.clone(),
            self.cfg.num_tokens,
            self.model.context_dim(),
            indices.clone(),
        )?;
        t.input_size = self.cfg.input_size;
        t.map_res = self.cfg.map_res;
        t.num_layers = self.cfg.num_layers;
        t.layers = self.cfg.layers;
        t.timestep = self.cfg.timestep;
        // The reference evaluates with the ranges it trained with.
        t.augment = self.cfg.augment;
        let counts: Vec<usize> = votes.iter().map(|v| v.1).collect();
        for (k, v) in self.model_id.entries().into_iter().chain([
            ("generator", "stablekeypoints train".to_string()),
            (
                "train_config",
                serde_json::to_string(&self.cfg).expect("config serialises"),
            ),
            ("train_steps_done", self.step.to_string()),
            ("data_fingerprint", self.data.fingerprint()),
            ("selected_indices", format!("{indices:?}")),
            ("selected_counts", format!("{counts:?}")),
        ]) {
            t.extra.insert(k.to_string(), v);
        }
        Ok(t)
    }
}
