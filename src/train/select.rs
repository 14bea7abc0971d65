//! Host-side token selection (method.md section 3): Gaussian-KL candidate ranking, furthest
//! point sampling and the dataset-wide vote. Maps are row-major `r x r` f32 slices.

use crate::keypoints::gaussian_target;

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
    let (row, col) = (peak / r, peak % r);
    let mut t = gaussian_target(r, r, col as f32 + 0.5, row as f32 + 0.5, sigma);
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
    assert_eq!(map.len(), r * r, "gaussian_kl: map is not {r}x{r}");
    let t = kl_target(r, argmax(map), sigma);
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

/// The `num` tokens of `maps` ([n, r, r], flat) with the lowest [`gaussian_kl`], best first
/// (ties: lower token index first).
pub fn rank_candidates(maps: &[f32], n: usize, r: usize, num: usize, sigma: f32) -> Vec<usize> {
    assert_eq!(
        maps.len(),
        n * r * r,
        "rank_candidates: maps are not [{n}, {r}, {r}]"
    );
    let plane = r * r;
    let kl = parallel_map(n, |i| {
        gaussian_kl(&maps[i * plane..(i + 1) * plane], r, sigma)
    });
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| kl[a].total_cmp(&kl[b]).then(a.cmp(&b)));
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
        assert_eq!(rank_candidates(&maps, 4, r, 4, 2.0), vec![1, 3, 2, 0]);
        assert_eq!(rank_candidates(&maps, 4, r, 2, 2.0), vec![1, 3]);
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
