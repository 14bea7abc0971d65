//! Adam on host f32 buffers, with `torch.optim.Adam`'s per-element arithmetic (no weight
//! decay, no amsgrad). Its state is plain data so checkpoints can hold it exactly; candle's
//! `AdamW` (weight decay 0) computes the same update but keeps its moments private.

/// Adam state for one flat parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of updates applied so far.
    pub step: u64,
    /// First moment (`exp_avg`).
    pub m: Vec<f32>,
    /// Second moment (`exp_avg_sq`).
    pub v: Vec<f32>,
}

impl Adam {
    /// torch defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn new(len: usize, lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// One update of `params` with gradient `grad` (torch `_single_tensor_adam` order:
    /// `m.lerp_(g, 1-β1)`, `v.mul_(β2).addcmul_(g, g, 1-β2)`,
    /// `p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, -lr/bc1)`).
    pub fn update(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter size");
        assert_eq!(grad.len(), self.m.len(), "Adam: gradient size");
        self.step += 1;
        let t = self.step as i32;
        let w1 = (1.0 - self.beta1) as f32;
        let b2 = self.beta2 as f32;
        let w2 = (1.0 - self.beta2) as f32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt() as f32;
        let step_size = (-(self.lr / bc1)) as f32;
        let eps = self.eps as f32;
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            // torch's lerp for weight < 0.5: self + weight * (end - self).
            *m += w1 * (g - *m);
            *v = *v * b2 + w2 * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p += step_size * *m / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_steps_by_hand() {
        let mut a = Adam::new(3, 0.01);
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g1 = [0.3f32, -4.0, 0.0];
        a.update(&mut p, &g1);
        // Step 1: m_hat = g, v_hat = g², so p -= lr * g / (|g| + eps); zero grad = no move.
        assert!((p[0] - (1.0 - 0.01)).abs() < 1e-6);
        assert!((p[1] - (-2.0 + 0.01)).abs() < 1e-6);
        assert_eq!(p[2], 0.5);
        // Step 2 in f64 from the formulas.
        let g2 = [0.1f32, 1.0, 2.0];
        let before = p.clone();
        a.update(&mut p, &g2);
        for i in 0..3 {
            let (g1, g2) = (f64::from(g1[i]), f64::from(g2[i]));
            let m = 0.9 * (0.1 * g1) + 0.1 * g2;
            let v = 0.999 * (0.001 * g1 * g1) + 0.001 * g2 * g2;
            let mh = m / (1.0 - 0.81);
            let vh = v / (1.0 - 0.999f64.powi(2));
            let want = f64::from(before[i]) - 0.01 * mh / (vh.sqrt() + 1e-8);
            assert!(
                (f64::from(p[i]) - want).abs() < 1e-6,
                "{i}: {} vs {want}",
                p[i]
            );
        }
        assert_eq!(a.step, 2);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let grads: Vec<Vec<f32>> = (0..6)
            .map(|s| (0..5).map(|i| ((s * 5 + i) as f32 * 0.37).sin()).collect())
            .collect();
        let mut a = Adam::new(5, 5e-3);
        let mut p = vec![0.1f32; 5];
        for g in &grads {
            a.update(&mut p, g);
        }
        let mut b = Adam::new(5, 5e-3);
        let mut q = vec![0.1f32; 5];
        for g in &grads[..3] {
            b.update(&mut q, g);
        }
        let mut c = b.clone();
        for g in &grads[3..] {
            c.update(&mut q, g);
        }
        assert_eq!(p, q);
        assert_eq!(a, c);
    }
}
