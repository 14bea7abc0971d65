//! Host-side token selection (method.md section 3): candidate ranking (Gaussian KL, entropy
//! or a fixed set, the reference's `--top_k_strategy`), furthest point sampling and the
//! dataset-wide vote. Maps are row-major `r x r` f32 slices.

use crate::keypoints::gaussian_target;
use serde::{Deserialize, Serialize};

/// How each image's candidate tokens are ranked (the reference's `--top_k_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopKStrategy {
    /// The lowest KL divergence from Gaussians at the map's peaks ([`gaussian_kl_subjects`]).
    #[default]
    Gaussian,
    /// The lowest entropy of the map's softmax over its pixels ([`softmax_entropy`]).
    Entropy,
    /// Always tokens `0..num_candidates`, whatever the maps.
    Consistent,
}

impl TopKStrategy {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian",
            Self::Entropy => "entropy",
            Self::Consistent => "consistent",
        }
    }
}

/// How one image's tokens are chosen: rank `num_candidates` by `strategy`, then furthest
/// point sampling of `num_keypoints`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectConfig {
    pub strategy: TopKStrategy,
    pub num_candidates: usize,
    pub num_keypoints: usize,
    /// Gaussian sigma in pixels at the map resolution.
    pub sigma: f32,
    /// Peaks per map (the reference's `num_subjects`).
    pub num_subjects: usize,
}

/// Around an earlier peak, pixels closer than this fraction of the map side are masked
/// before the next peak is taken (the reference's `find_k_max_pixels`: 0.05 x the side).
pub const SUBJECT_MASK_FRACTION: f64 = 0.05;

/// The `num` peaks of a map for `num` subjects, as flat pixel indices: the arg-max, then
/// the arg-max of the map with every pixel whose index lies within `0.05 r` of the previous
/// peak's centre (index + 0.5) set to 0, and so on (so later peaks can repeat when the
/// rest of the map is 0, as in the reference). Masked pixels become 0, so this assumes a
/// non-negative map, as attention probabilities are.
pub fn k_max_pixels(map: &[f32], r: usize, num: usize) -> Vec<usize> {
    let first = argmax(map);
    if num <= 1 {
        return vec![first];
    }
    let radius2 = (SUBJECT_MASK_FRACTION * r as f64).powi(2);
    let mut m = map.to_vec();
    let mut peaks = vec![first];
    while peaks.len() < num {
        let p = *peaks.last().expect("non-empty");
        let (pr, pc) = ((p / r) as f64 + 0.5, (p % r) as f64 + 0.5);
        for (i, v) in m.iter_mut().enumerate() {
            let (dy, dx) = ((i / r) as f64 - pr, (i % r) as f64 - pc);
            if dx * dx + dy * dy <= radius2 {
                *v *= 0.0;
            }
        }
        peaks.push(argmax(&m));
    }
    peaks
}

/// The mean of peak-1 Gaussians at the given flat pixels (centres at +0.5), `[r, r]` flat:
/// the reference's `gaussian_circles` for one map.
pub fn gaussian_mean(r: usize, peaks: &[usize], sigma: f32) -> Vec<f32> {
    if let [p] = peaks {
        return gaussian_target(r, r, (p % r) as f32 + 0.5, (p / r) as f32 + 0.5, sigma);
    }
    let mut acc = vec![0f64; r * r];
    for &p in peaks {
        let g = gaussian_target(r, r, (p % r) as f32 + 0.5, (p / r) as f32 + 0.5, sigma);
        for (a, v) in acc.iter_mut().zip(g) {
            *a += f64::from(v);
        }
    }
    let n = peaks.len() as f64;
    acc.into_iter().map(|a| (a / n) as f32).collect()
}

/// Added to the map logits before the pixel softmax and to the Gaussian target before it is
/// normalised (reference `epsilon`).
pub const KL_EPSILON: f32 = 1e-5;

/// Flat index of the first maximum in row-major order (`torch.argmax`); NaN counts as
/// smaller than everything, an all-NaN map gives 0.
pub fn argmax(map: &[f32]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in map.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// The Gaussian target of the KL ranking for a map whose argmax is the flat pixel `peak`:
/// `exp(-d²/2σ²)` around that pixel's centre, plus [`KL_EPSILON`], normalised to sum 1.
pub fn kl_target(r: usize, peak: usize, sigma: f32) -> Vec<f32> {
    kl_target_peaks(r, &[peak], sigma)
}

/// [`kl_target`] for several peaks: the mean of their Gaussians, plus [`KL_EPSILON`],
/// normalised to sum 1.
pub fn kl_target_peaks(r: usize, peaks: &[usize], sigma: f32) -> Vec<f32> {
    let mut t = gaussian_mean(r, peaks, sigma);
    for v in &mut t {
        *v += KL_EPSILON;
    }
    let sum: f64 = t.iter().map(|&v| f64::from(v)).sum();
    for v in &mut t {
        *v = (f64::from(*v) / sum) as f32;
    }
    t
}

/// KL(target || softmax(map + eps)) of one map, the target being [`kl_target`] at the map's
/// argmax. Lower = more like a single Gaussian blob. Non-finite maps give +inf.
pub fn gaussian_kl(map: &[f32], r: usize, sigma: f32) -> f64 {
    gaussian_kl_subjects(map, r, sigma, 1)
}

/// [`gaussian_kl`] against the target of the map's `num_subjects` peaks ([`k_max_pixels`],
/// [`kl_target_peaks`]): the reference's `find_top_k_gaussian` score.
pub fn gaussian_kl_subjects(map: &[f32], r: usize, sigma: f32, num_subjects: usize) -> f64 {
    assert_eq!(map.len(), r * r, "gaussian_kl: map is not {r}x{r}");
    let t = kl_target_peaks(r, &k_max_pixels(map, r, num_subjects), sigma);
    // log softmax(x + eps)_i = (x_i + eps) - logsumexp(x + eps)
    let xs: Vec<f64> = map.iter().map(|&v| f64::from(v + KL_EPSILON)).collect();
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return f64::INFINITY;
    }
    let lse = max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    let kl: f64 = t
        .iter()
        .zip(&xs)
        .map(|(&ti, &x)| {
            let ti = f64::from(ti);
            ti * (ti.ln() - (x - lse))
        })
        .sum();
    if kl.is_nan() {
        f64::INFINITY
    } else {
        kl
    }
}

/// Entropy (nats) of `softmax(map)` over its pixels, each log-probability taken of the
/// probability clamped to `[eps, 1 - eps]` (`eps` = f32's machine epsilon), as torch's
/// `Categorical(probs=...).entropy()` computes it. Non-finite maps give +inf.
pub fn softmax_entropy(map: &[f32]) -> f64 {
    let eps = f64::from(f32::EPSILON);
    let max = map
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return f64::INFINITY;
    }
    let z: f64 = map.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    let h = -map
        .iter()
        .map(|&v| {
            let p = (f64::from(v) - max).exp() / z;
            p * p.clamp(eps, 1.0 - eps).ln()
        })
        .sum::<f64>();
    if h.is_nan() {
        f64::INFINITY
    } else {
        h
    }
}

/// The score the ranking sorts by (lower = better): [`gaussian_kl_subjects`] or
/// [`softmax_entropy`] per token of `maps` ([n, r, r], flat); None for `Consistent`.
pub fn candidate_scores(maps: &[f32], n: usize, r: usize, cfg: &SelectConfig) -> Option<Vec<f64>> {
    assert_eq!(
        maps.len(),
        n * r * r,
        "rank_candidates: maps are not [{n}, {r}, {r}]"
    );
    let plane = r * r;
    let map = |i: usize| &maps[i * plane..(i + 1) * plane];
    match cfg.strategy {
        TopKStrategy::Gaussian => Some(parallel_map(n, |i| {
            gaussian_kl_subjects(map(i), r, cfg.sigma, cfg.num_subjects)
        })),
        TopKStrategy::Entropy => Some(parallel_map(n, |i| softmax_entropy(map(i)))),
        TopKStrategy::Consistent => None,
    }
}

/// The `cfg.num_candidates` tokens of `maps` ([n, r, r], flat) with the lowest score, best
/// first (ties: lower token index first); `Consistent`: tokens `0..num_candidates`.
pub fn rank_candidates(maps: &[f32], n: usize, r: usize, cfg: &SelectConfig) -> Vec<usize> {
    let num = cfg.num_candidates.min(n);
    let Some(score) = candidate_scores(maps, n, r, cfg) else {
        return (0..num).collect();
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
    order.truncate(num);
    order
}

/// Runs `f(0..n)` over the available cores (results in index order).
fn parallel_map<T: Send, F: Fn(usize) -> T + Sync>(n: usize, f: F) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n.max(1));
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(n))
                        .map(f)
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("selection worker panicked"))
            .collect()
    })
}

/// Argmax pixel `(row, col)` of every map in `maps` ([n, r, r], flat).
pub fn argmax_locations(maps: &[f32], n: usize, r: usize) -> Vec<(usize, usize)> {
    assert_eq!(
        maps.len(),
        n * r * r,
        "argmax_locations: maps are not [{n}, {r}, {r}]"
    );
    maps.chunks_exact(r * r)
        .map(|m| {
            let i = argmax(m);
            (i / r, i % r)
        })
        .collect()
}

fn dist2(a: (usize, usize), b: (usize, usize)) -> u64 {
    let dy = a.0.abs_diff(b.0) as u64;
    let dx = a.1.abs_diff(b.1) as u64;
    dy * dy + dx * dx
}

/// Furthest point sampling of `k` tokens among `candidates` (in ranking order), with
/// `loc(token)` the token's argmax pixel: first the farthest pair (the first such pair in
/// candidate order), then repeatedly the candidate whose distance to the chosen set is
/// largest (the first on ties). Candidates already chosen are skipped, so the result has no
/// repeats; it is shorter than `k` only when there are fewer candidates. With one candidate
/// (or `k == 1`) the first candidate alone is returned.
pub fn furthest_point_sampling(
    candidates: &[usize],
    loc: impl Fn(usize) -> (usize, usize),
    k: usize,
) -> Vec<usize> {
    if k == 0 || candidates.is_empty() {
        return Vec::new();
    }
    if k == 1 || candidates.len() == 1 {
        return vec![candidates[0]];
    }
    // Squared integer pixel distances: exact, so ties are ties as in the reference's f32
    // distances at power-of-two resolutions.
    let locs: Vec<(usize, usize)> = candidates.iter().map(|&c| loc(c)).collect();
    let mut best: Option<(u64, usize, usize)> = None;
    for i in 0..candidates.len() {
        for j in i + 1..candidates.len() {
            let d = dist2(locs[i], locs[j]);
            if best.is_none_or(|(b, _, _)| d > b) {
                best = Some((d, i, j));
            }
        }
    }
    let (_, i, j) = best.expect("at least two candidates");
    let mut chosen = vec![i, j];
    while chosen.len() < k {
        let mut next: Option<(u64, usize)> = None;
        for c in 0..candidates.len() {
            if chosen.contains(&c) {
                continue;
            }
            let d = chosen
                .iter()
                .map(|&s| dist2(locs[c], locs[s]))
                .min()
                .expect("non-empty");
            if next.is_none_or(|(b, _)| d > b) {
                next = Some((d, c));
            }
        }
        match next {
            Some((_, c)) => chosen.push(c),
            None => break,
        }
    }
    chosen.into_iter().map(|c| candidates[c]).collect()
}

/// Counts how often each token was picked and returns the `k` most frequent as
/// `(token, count)`, most frequent first (ties: lower token index first).
pub fn vote(picks: &[Vec<usize>], k: usize) -> Vec<(usize, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for p in picks.iter().flatten() {
        *counts.entry(*p).or_insert(0usize) += 1;
    }
    let mut v: Vec<(usize, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// Entropy (nats) of a map normalised to sum 1 (negative and NaN values count as 0).
/// A single hot pixel gives 0, a uniform `r x r` map `ln(r²)`.
pub fn map_entropy(map: &[f32]) -> f64 {
    let vals = map.iter().map(|&v| f64::from(v.max(0.0)));
    let sum: f64 = vals.clone().sum();
    if sum <= 0.0 || !sum.is_finite() {
        return f64::NAN;
    }
    -vals
        .filter(|&v| v > 0.0)
        .map(|v| {
            let p = v / sum;
            p * p.ln()
        })
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_max_and_nan() {
        assert_eq!(argmax(&[0.0, 2.0, 1.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, -3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
    }

    #[test]
    fn kl_target_by_hand() {
        // 4x4, peak at pixel (1, 2), sigma 1: g = exp(-d²/2) around (2.5, 1.5).
        let t = kl_target(4, 6, 1.0);
        let mut g = vec![0f64; 16];
        for row in 0..4 {
            for col in 0..4 {
                let d2 = ((row as f64) - 1.0).powi(2) + ((col as f64) - 2.0).powi(2);
                g[row * 4 + col] = (-d2 / 2.0).exp() + 1e-5;
            }
        }
        let s: f64 = g.iter().sum();
        for (a, b) in t.iter().zip(&g) {
            assert!((f64::from(*a) - b / s).abs() < 1e-7, "{a} vs {}", b / s);
        }
        assert_eq!(argmax(&t), 6);
    }

    #[test]
    fn gaussian_kl_by_hand() {
        // A 2x2 map: KL(t || softmax(x + eps)) written out.
        let map = [0.5f32, 0.1, 0.2, 0.0];
        let t = kl_target(2, 0, 2.0);
        let xs: Vec<f64> = map.iter().map(|&v| f64::from(v + 1e-5)).collect();
        let z: f64 = xs.iter().map(|x| x.exp()).sum();
        let want: f64 = (0..4)
            .map(|i| {
                let ti = f64::from(t[i]);
                ti * (ti.ln() - (xs[i].exp() / z).ln())
            })
            .sum();
        assert!((gaussian_kl(&map, 2, 2.0) - want).abs() < 1e-9);
        // A map shaped like its target has a smaller KL than a flat one.
        let r = 16;
        let peaked: Vec<f32> = kl_target(r, 5 * r + 7, 2.0)
            .iter()
            .map(|v| v.ln())
            .collect();
        let flat = vec![0.3f32; r * r];
        assert!(gaussian_kl(&peaked, r, 2.0) < 1e-6);
        assert!(gaussian_kl(&flat, r, 2.0) > 1.0);
        assert_eq!(gaussian_kl(&[f32::NAN; 4], 2, 2.0), f64::INFINITY);
    }

    #[test]
    fn ranking_orders_by_kl() {
        // Token 0 flat, token 1 a perfect log-Gaussian, token 2 a broad bump, token 3 = token 1.
        let r = 16;
        let perfect: Vec<f32> = kl_target(r, 3 * r + 4, 2.0)
            .iter()
            .map(|v| v.ln())
            .collect();
        let broad: Vec<f32> = crate::keypoints::gaussian_target(r, r, 8.5, 8.5, 6.0)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let mut maps = vec![0.2f32; r * r];
        maps.extend(&perfect);
        maps.extend(&broad);
        maps.extend(&perfect);
        let cfg = |num| SelectConfig {
            strategy: TopKStrategy::Gaussian,
            num_candidates: num,
            num_keypoints: 2,
            sigma: 2.0,
            num_subjects: 1,
        };
        assert_eq!(rank_candidates(&maps, 4, r, &cfg(4)), vec![1, 3, 2, 0]);
        assert_eq!(rank_candidates(&maps, 4, r, &cfg(2)), vec![1, 3]);
        // Consistent: the first tokens whatever the maps.
        let fixed = SelectConfig {
            strategy: TopKStrategy::Consistent,
            ..cfg(3)
        };
        assert_eq!(rank_candidates(&maps, 4, r, &fixed), vec![0, 1, 2]);
        // Entropy: the flat map (token 0) has the largest entropy, ln(r²).
        let ent = SelectConfig {
            strategy: TopKStrategy::Entropy,
            ..cfg(4)
        };
        assert_eq!(*rank_candidates(&maps, 4, r, &ent).last().unwrap(), 0);
        assert!((softmax_entropy(&maps[..r * r]) - ((r * r) as f64).ln()).abs() < 1e-9);
    }

    #[test]
    fn softmax_entropy_by_hand() {
        // p = softmax([0, ln 3]) = [1/4, 3/4]: H = -(1/4 ln 1/4 + 3/4 ln 3/4).
        let h = softmax_entropy(&[0.0, 3f32.ln()]);
        let want = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((h - want).abs() < 1e-7, "{h} vs {want}");
        // Probabilities below eps count as eps inside the log (torch clamps them).
        let h = softmax_entropy(&[0.0, -40.0]);
        let p1 = (-40f64).exp() / (1.0 + (-40f64).exp());
        let want = -((1.0 - p1) * (1.0 - p1).min(1.0 - f64::from(f32::EPSILON)).ln()
            + p1 * f64::from(f32::EPSILON).ln());
        assert!((h - want).abs() < 1e-12, "{h} vs {want}");
        assert_eq!(softmax_entropy(&[f32::NAN, 1.0]), f64::INFINITY);
    }

    #[test]
    fn k_max_pixels_masks_a_radius_around_earlier_peaks() {
        // 40 x 40: radius 0.05 * 40 = 2 px from the peak's centre (index + 0.5).
        let r = 40;
        let mut m = vec![0f32; r * r];
        m[10 * r + 10] = 1.0;
        m[10 * r + 11] = 0.9; // d² = 0.25 + 0.25 from (10.5, 10.5): masked
        m[12 * r + 12] = 0.8; // d² = 2.25 + 2.25 = 4.5 > 4: kept
        m[30 * r + 5] = 0.7;
        assert_eq!(k_max_pixels(&m, r, 1), vec![10 * r + 10]);
        assert_eq!(
            k_max_pixels(&m, r, 3),
            vec![10 * r + 10, 12 * r + 12, 30 * r + 5]
        );
        // Pixel (12, 11): d² = (12 - 10.5)² + (11 - 10.5)² = 2.5 <= 4, masked by the first.
        m[12 * r + 11] = 0.85;
        assert_eq!(k_max_pixels(&m, r, 2), vec![10 * r + 10, 12 * r + 12]);
        // Everything masked: the arg-max of zeros is pixel 0, as torch's.
        let mut one = vec![0f32; r * r];
        one[5] = 1.0;
        assert_eq!(k_max_pixels(&one, r, 3), vec![5, 0, 0]);
    }

    #[test]
    fn multi_subject_targets_are_the_mean_of_their_gaussians() {
        let r = 16;
        let t = gaussian_mean(r, &[3 * r + 4, 12 * r + 9], 2.0);
        let a = gaussian_target(r, r, 4.5, 3.5, 2.0);
        let b = gaussian_target(r, r, 9.5, 12.5, 2.0);
        for i in 0..r * r {
            assert!((t[i] - (a[i] + b[i]) / 2.0).abs() < 1e-7);
        }
        assert_eq!(
            gaussian_mean(r, &[7], 2.0),
            gaussian_target(r, r, 7.5, 0.5, 2.0)
        );
        // A two-blob map (non-negative, as attention maps are) fits the two-subject target
        // better than the one-subject one.
        let two: Vec<f32> = gaussian_mean(r, &[3 * r + 4, 12 * r + 9], 2.0)
            .iter()
            .map(|v| 8.0 * v)
            .collect();
        assert_eq!(k_max_pixels(&two, r, 2), vec![3 * r + 4, 12 * r + 9]);
        let (kl1, kl2) = (
            gaussian_kl_subjects(&two, r, 2.0, 1),
            gaussian_kl_subjects(&two, r, 2.0, 2),
        );
        assert!(kl2 < 0.5 * kl1, "{kl2} vs {kl1}");
    }

    #[test]
    fn fps_fixed_points() {
        // Candidates 10..15 at fixed pixels (row, col).
        let pts = [(0, 0), (0, 1), (9, 9), (5, 5), (0, 9), (9, 0)];
        let loc = |t: usize| pts[t - 10];
        let c: Vec<usize> = (10..16).collect();
        // Farthest pair: (0,0)-(9,9) at d²=162 ties with (0,9)-(9,0); the first pair in
        // candidate order wins. Then (0,9) [min d² 81, first of the tie with (9,0)], then
        // (9,0), then (5,5) [min d² 32 vs (0,1) at 1].
        assert_eq!(
            furthest_point_sampling(&c, loc, 6),
            vec![10, 12, 14, 15, 13, 11]
        );
        assert_eq!(furthest_point_sampling(&c, loc, 3), vec![10, 12, 14]);
        assert_eq!(furthest_point_sampling(&c, loc, 2), vec![10, 12]);
        // More requested than available: every candidate once.
        assert_eq!(furthest_point_sampling(&c, loc, 10).len(), 6);
        // Degenerate: all at one pixel -> the first pair, then candidate order.
        let same = |_t: usize| (3, 3);
        assert_eq!(furthest_point_sampling(&[4, 2, 7], same, 3), vec![4, 2, 7]);
        assert_eq!(furthest_point_sampling(&[4, 2, 7], same, 1), vec![4]);
        assert!(furthest_point_sampling(&[], same, 3).is_empty());
        // Candidate order decides ties: reversed, (9,0)-(0,9) is the first farthest pair.
        let rev: Vec<usize> = (10..16).rev().collect();
        assert_eq!(furthest_point_sampling(&rev, loc, 2), vec![15, 14]);
    }

    #[test]
    fn vote_counts_and_orders() {
        let picks = vec![vec![3, 1, 2], vec![2, 3, 9], vec![2, 7, 1]];
        assert_eq!(vote(&picks, 3), vec![(2, 3), (1, 2), (3, 2)]);
        assert_eq!(vote(&picks, 10).len(), 5);
    }

    #[test]
    fn entropy_bounds() {
        let mut hot = vec![0f32; 16];
        hot[3] = 0.7;
        assert_eq!(map_entropy(&hot), 0.0);
        let flat = vec![0.25f32; 16];
        assert!((map_entropy(&flat) - 16f64.ln()).abs() < 1e-12);
        let half = [0.5f32, 0.5, 0.0, -1.0];
        assert!((map_entropy(&half) - 2f64.ln()).abs() < 1e-12);
    }
}
