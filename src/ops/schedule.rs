//! DDIM noise schedule of Stable Diffusion, built as the reference builds it (method.md
//! section 1): diffusers `DDIMScheduler` with scaled-linear betas and its default
//! `steps_offset` 0, `set_timesteps(50)` -> timesteps 980, 960, ..., 0. The reference's
//! `noise_level` indexes that list (-1, the last, is t = 0).

/// Cumulative alphas of the training schedule and the inference timesteps.
#[derive(Clone, Debug, PartialEq)]
pub struct DdimSchedule {
    /// `alphas_cumprod[t]` for t in 0..num_train_timesteps (float32 values, widened).
    pub alphas_cumprod: Vec<f64>,
    /// Inference timesteps in execution order (descending), e.g. 980, 960, ..., 0.
    pub timesteps: Vec<usize>,
}

/// Inference steps of the reference's scheduler (`NUM_DDIM_STEPS`).
pub const NUM_INFERENCE_STEPS: usize = 50;
/// The reference's default `noise_level`: the last of the inference timesteps.
pub const DEFAULT_NOISE_LEVEL: isize = -1;

/// `torch.linspace(start, end, steps, dtype=float32)` bit for bit: f32 ends and step, the first
/// half counted up from `start`, the second half down from `end`, each with a fused
/// multiply-add. (Without the FMA, ~12% of the SD alphas_cumprod entries are off by an ulp.)
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

impl DdimSchedule {
    /// Schedule from diffusers' "scaled_linear" betas and "leading" timestep spacing.
    ///
    /// Betas and alphas are computed in f32 like diffusers/torch; the cumulative product
    /// accumulates in f64 and rounds each entry to f32, as torch's CPU `cumprod` does for f32.
    pub fn scaled_linear(
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        num_inference_steps: usize,
        steps_offset: usize,
    ) -> Self {
        let mut acc = 1.0f64;
        let alphas_cumprod = linspace_f32(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps)
            .into_iter()
            .map(|b| {
                let alpha = 1.0f32 - b * b;
                acc *= f64::from(alpha);
                f64::from(acc as f32)
            })
            .collect();
        let ratio = num_train_timesteps / num_inference_steps;
        let timesteps = (0..num_inference_steps)
            .rev()
            .map(|i| i * ratio + steps_offset)
            .collect();
        Self {
            alphas_cumprod,
            timesteps,
        }
    }

    /// Stable Diffusion as the reference sets it up: betas 0.00085..0.012 scaled_linear, 1000
    /// train steps, 50 inference steps, steps_offset 0 (timesteps 980, 960, ..., 0). The
    /// reference's pipeline later rewrites the config to steps_offset 1, but its timesteps were
    /// set before and are not recomputed.
    pub fn stable_diffusion() -> Self {
        Self::scaled_linear(0.00085, 0.012, 1000, NUM_INFERENCE_STEPS, 0)
    }

    /// The timestep of the reference's `noise_level`: an index into [`Self::timesteps`],
    /// negative from the end as in Python (-1 = the last, t = 0 for SD).
    pub fn timestep_of_level(&self, level: isize) -> crate::error::Result<usize> {
        let n = self.timesteps.len() as isize;
        let i = if level < 0 { n + level } else { level };
        if !(0..n).contains(&i) {
            return Err(crate::error::Error::Invalid(format!(
                "noise level {level} is outside -{n}..{} (an index into the {n} DDIM timesteps, \
                 -1 = the last)",
                n - 1
            )));
        }
        Ok(self.timesteps[i as usize])
    }

    /// `alpha_bar(t) = alphas_cumprod[t]`. Panics if `t` is out of range.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }

    /// `(sqrt(abar_t), sqrt(1 - abar_t))`, the factors of `z_t = a * z + b * eps`.
    pub fn noise_coefficients(&self, t: usize) -> (f64, f64) {
        let a = self.alpha_bar(t);
        (a.sqrt(), (1.0 - a).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    fn goldens() -> HashMap<String, Tensor> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ops_golden.safetensors"
        );
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    #[test]
    fn alphas_cumprod_match_diffusers() {
        let g = goldens();
        let gold: Vec<f64> = g["alphas_cumprod"].to_vec1().unwrap();
        let s = DdimSchedule::stable_diffusion();
        assert_eq!(s.alphas_cumprod.len(), 1000);
        assert_eq!(gold.len(), 1000);
        for (t, (a, b)) in s.alphas_cumprod.iter().zip(&gold).enumerate() {
            // Bit-exact: the same f32 operations as torch (the brief only asks for ~1e-7).
            assert_eq!(a, b, "t={t}");
            assert_eq!(s.alpha_bar(t), *a);
        }
    }

    #[test]
    fn alphas_cumprod_differs_from_f64_schedule() {
        // The f64-only schedule is a different function at the f32 level; make sure the
        // test above could tell them apart.
        let g = goldens();
        let f32_gold: Vec<f64> = g["alphas_cumprod"].to_vec1().unwrap();
        let f64_gold: Vec<f64> = g["alphas_cumprod_f64"].to_vec1().unwrap();
        let worst = f32_gold
            .iter()
            .zip(&f64_gold)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0f64, f64::max);
        assert!(worst > 1e-7, "{worst}");
        let s = DdimSchedule::stable_diffusion();
        for (a, b) in s.alphas_cumprod.iter().zip(&f64_gold) {
            assert!(((a - b) / b).abs() < 1e-5);
        }
    }

    #[test]
    fn hand_values() {
        let s = DdimSchedule::stable_diffusion();
        // abar_0 = 1 - beta_start (beta_0 = 0.00085 up to f32 rounding).
        assert!((s.alpha_bar(0) - (1.0 - 0.00085)).abs() < 1e-7);
        let b1 = {
            let step = (0.012f64.sqrt() - 0.00085f64.sqrt()) / 999.0;
            let r = 0.00085f64.sqrt() + step;
            r * r
        };
        assert!((s.alpha_bar(1) - (1.0 - 0.00085) * (1.0 - b1)).abs() < 1e-7);
        let (a, b) = s.noise_coefficients(1);
        assert!((a * a + b * b - 1.0).abs() < 1e-12);
        assert!((a - s.alpha_bar(1).sqrt()).abs() < 1e-15);
        // The reference's operating point t = 0: sqrt(1 - abar_0) = sqrt(0.00085) = 0.0292.
        let (_, b0) = s.noise_coefficients(0);
        assert!((b0 - 0.00085f64.sqrt()).abs() < 1e-6, "{b0}");
        // Monotone decreasing.
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn timesteps_match_the_reference_scheduler() {
        // Golden: diffusers' DDIMScheduler constructed with the reference's arguments and
        // `set_timesteps(50)` called as the reference does.
        let g = goldens();
        let gold: Vec<i64> = g["ddim_timesteps"].to_vec1().unwrap();
        let s = DdimSchedule::stable_diffusion();
        let ours: Vec<i64> = s.timesteps.iter().map(|&t| t as i64).collect();
        assert_eq!(ours, gold);
        assert_eq!(s.timesteps[0], 980);
        assert_eq!(*s.timesteps.last().unwrap(), 0);
        assert_eq!(s.timesteps.len(), 50);
    }

    #[test]
    fn noise_levels_index_the_timesteps_like_python() {
        let g = goldens();
        let gold: Vec<i64> = g["ddim_timesteps"].to_vec1().unwrap();
        let s = DdimSchedule::stable_diffusion();
        // The reference's default noise level is the last timestep of its list: t = 0.
        let default = s.timestep_of_level(DEFAULT_NOISE_LEVEL).unwrap();
        assert_eq!(default as i64, *gold.last().unwrap());
        assert_eq!(default, 0);
        assert_eq!(s.timestep_of_level(0).unwrap(), 980);
        assert_eq!(s.timestep_of_level(49).unwrap(), 0);
        assert_eq!(s.timestep_of_level(-50).unwrap(), 980);
        assert_eq!(s.timestep_of_level(-2).unwrap(), 20);
        for bad in [50, -51, isize::MAX, isize::MIN] {
            let e = s.timestep_of_level(bad).unwrap_err().to_string();
            assert!(
                e.contains("noise level") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }
}
