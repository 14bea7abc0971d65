//! The keypoints -> landmarks linear map (method.md section 5) used by `eval` and by the
//! element's `pose` property: its fits, the pose file that stores it, the import of the
//! reference's `regressor.pt`, and the small dense linear algebra they need (f64,
//! row-major, no external solver).
//!
//! X holds one row per image: the K detected keypoints, normalised to [0, 1], flattened as
//! `x0, y0, x1, y1, ...` and minus 0.5. Y holds the labelled landmarks the same way (divided
//! by the image width and height, minus 0.5). The prediction is `0.5 + (x - 0.5) W`; there is
//! no intercept, as in the reference. The reference fits W three ways:
//! - per landmark on the rows where it is visible (`return_regressor_visible`):
//!   [`Regressor::fit`] with None for hidden landmarks;
//! - on all rows (`return_regressor`, `W = pinv(X^T X) X^T Y`): [`Regressor::fit`] with every
//!   landmark given;
//! - Human3.6M's swap-refit (`return_regressor_human36m`): [`Regressor::fit_swap_refit`].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Eigenvalues below this fraction of the largest magnitude are treated as zero by
/// [`pinv_sym`]. numpy's default is 1e-15; a slightly larger cut-off keeps exactly
/// rank-deficient normal matrices (e.g. two keypoints that coincide on every image, whose
/// computed eigenvalue is rounding noise) from blowing up. The two agree whenever X^T X is
/// not numerically singular.
pub const PINV_RTOL: f64 = 1e-10;

/// Eigen-decomposition of the symmetric `n x n` matrix `a` (row-major; only symmetric input
/// makes sense) by cyclic Jacobi rotations. Returns the eigenvalues and the matrix V
/// (row-major) whose columns are the matching orthonormal eigenvectors: `a = V diag(l) V^T`.
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "sym_eigen: matrix is not {n}x{n}");
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..64 {
        let mut off = 0f64;
        for p in 0..n {
            for q in 0..n {
                if p != q {
                    off += a[p * n + q] * a[p * n + q];
                }
            }
        }
        if off <= 1e-30 * total || off < f64::MIN_POSITIVE {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation in the (p, q) plane that zeroes a[p][q].
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = if theta.is_finite() {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                } else {
                    0.0
                };
                if t == 0.0 {
                    continue;
                }
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Moore-Penrose pseudo-inverse of the symmetric `n x n` matrix `a` (row-major) with the
/// relative cut-off `rtol`: `V diag(1/l for |l| > rtol * max|l|, else 0) V^T`.
pub fn pinv_sym(a: &[f64], n: usize, rtol: f64) -> Vec<f64> {
    let (vals, v) = sym_eigen(a, n);
    let max = vals.iter().fold(0f64, |m, l| m.max(l.abs()));
    let mut out = vec![0f64; n * n];
    if max == 0.0 || !max.is_finite() {
        return out;
    }
    for (k, &l) in vals.iter().enumerate() {
        if l.abs() <= rtol * max {
            continue;
        }
        let inv = 1.0 / l;
        for i in 0..n {
            let vi = v[i * n + k] * inv;
            if vi == 0.0 {
                continue;
            }
            for j in 0..n {
                out[i * n + j] += vi * v[j * n + k];
            }
        }
    }
    out
}

/// Pseudo-inverse of the general `m x n` matrix `a` (row-major), as the `n x m` matrix
/// `pinv(A^T A) A^T`.
pub fn pinv(a: &[f64], m: usize, n: usize, rtol: f64) -> Vec<f64> {
    assert_eq!(a.len(), m * n, "pinv: matrix is not {m}x{n}");
    let ata = gram(a, m, n);
    // The cut-off applies to the eigenvalues of A^T A, the squares of A's singular values.
    let p = pinv_sym(&ata, n, rtol * rtol);
    matmul_t(&p, n, n, a, m)
}

/// `A^T A` (n x n) of the `m x n` matrix `a`.
fn gram(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for r in 0..m {
        let row = &a[r * n..(r + 1) * n];
        for i in 0..n {
            if row[i] == 0.0 {
                continue;
            }
            for j in i..n {
                out[i * n + j] += row[i] * row[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            out[i * n + j] = out[j * n + i];
        }
    }
    out
}

/// `P B^T` for `P` (p x n) and `B` (m x n): a `p x m` matrix.
fn matmul_t(p: &[f64], rows: usize, n: usize, b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0f64; rows * m];
    for i in 0..rows {
        for j in 0..m {
            out[i * m + j] = (0..n).map(|k| p[i * n + k] * b[j * n + k]).sum();
        }
    }
    out
}

/// The reference's Human3.6M left/right swap list (`swap_points` in its eval.py), kept as it
/// is: landmark 28 appears twice, in `(20, 28)` and `(21, 28)`, so the swap it makes is not a
/// permutation (landmarks 20 and 21 both take 28's place, 28 takes 21's, and 20's is lost).
pub const H36M_SWAP_PAIRS: [(usize, usize); 12] = [
    (1, 6),
    (2, 7),
    (3, 8),
    (4, 9),
    (5, 10),
    (17, 25),
    (18, 26),
    (19, 27),
    (20, 28),
    (21, 28),
    (22, 30),
    (23, 31),
];

/// The landmark reordering of a swap list, built as the reference builds it: from the
/// identity, `perm[a] = b; perm[b] = a` for each pair in order. Swapped landmark `j` is
/// landmark `perm[j]`. Pair indices must be below `l`.
pub fn swap_permutation(pairs: &[(usize, usize)], l: usize) -> Result<Vec<usize>> {
    let mut perm: Vec<usize> = (0..l).collect();
    for &(a, b) in pairs {
        if a >= l || b >= l {
            return Err(Error::Invalid(format!(
                "swap pair {a}:{b} names a landmark beyond the {l} labelled ones"
            )));
        }
        perm[a] = b;
        perm[b] = a;
    }
    Ok(perm)
}

/// The fitted map from keypoints to landmarks: `weights` is `2K x 2L`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Regressor {
    pub num_keypoints: usize,
    pub num_landmarks: usize,
    pub weights: Vec<f64>,
}

impl Regressor {
    /// Fits per landmark on the rows where it is visible. `x[i]` is row i of X (2K values,
    /// already minus 0.5); `y[i][j]` is landmark j of row i (normalised, minus 0.5) or None.
    /// With every landmark given this is the plain all-rows fit.
    pub fn fit(x: &[Vec<f64>], y: &[Vec<Option<[f64; 2]>>]) -> Result<Self> {
        let (Some(x0), Some(y0)) = (x.first(), y.first()) else {
            return Err(Error::Invalid(
                "no training samples to fit the regressor".into(),
            ));
        };
        if x.len() != y.len() {
            return Err(Error::Invalid(format!(
                "{} keypoint rows but {} label rows",
                x.len(),
                y.len()
            )));
        }
        let d = x0.len();
        let l = y0.len();
        if d == 0 || d % 2 != 0 || l == 0 {
            return Err(Error::Invalid(format!(
                "cannot fit {d} keypoint coordinates to {l} landmarks"
            )));
        }
        if let Some(i) = (0..x.len()).find(|&i| x[i].len() != d || y[i].len() != l) {
            return Err(Error::Invalid(format!(
                "sample {i} has {} keypoint coordinates and {} landmarks, expected {d} and {l}",
                x[i].len(),
                y[i].len()
            )));
        }
        let mut weights = vec![0f64; d * 2 * l];
        for j in 0..l {
            let rows: Vec<usize> = (0..x.len()).filter(|&i| y[i][j].is_some()).collect();
            if rows.is_empty() {
                return Err(Error::Invalid(format!(
                    "landmark {j} is not visible in any training image: cannot fit it"
                )));
            }
            let mut xtx = vec![0f64; d * d];
            let mut xty = vec![0f64; d * 2];
            for &i in &rows {
                let (xi, yi) = (&x[i], y[i][j].expect("visible"));
                for a in 0..d {
                    for b in a..d {
                        xtx[a * d + b] += xi[a] * xi[b];
                    }
                    xty[a * 2] += xi[a] * yi[0];
                    xty[a * 2 + 1] += xi[a] * yi[1];
                }
            }
            for a in 0..d {
                for b in 0..a {
                    xtx[a * d + b] = xtx[b * d + a];
                }
            }
            let p = pinv_sym(&xtx, d, PINV_RTOL);
            for a in 0..d {
                for c in 0..2 {
                    let w: f64 = (0..d).map(|b| p[a * d + b] * xty[b * 2 + c]).sum();
                    weights[a * 2 * l + 2 * j + c] = w;
                }
            }
        }
        Ok(Self {
            num_keypoints: d / 2,
            num_landmarks: l,
            weights,
        })
    }

    /// The reference's Human3.6M fit (`return_regressor_human36m`): fit on all rows, then,
    /// while more than 10 training rows are predicted better (mean L2 over landmarks) with
    /// their labels reordered by `perm` ([`swap_permutation`]), reorder those rows' labels
    /// and fit again. The fit is `(X^T X)^-1 X^T Y` (a pseudo-inverse here, the same for an
    /// invertible X^T X). Returns the regressor and the number of fits.
    pub fn fit_swap_refit(
        x: &[Vec<f64>],
        y: &[Vec<[f64; 2]>],
        perm: &[usize],
    ) -> Result<(Self, usize)> {
        /// The reference loops until it settles; a cap turns an oscillation into an error.
        const MAX_FITS: usize = 1000;
        let mut y: Vec<Vec<Option<[f64; 2]>>> = y
            .iter()
            .map(|r| r.iter().map(|&p| Some(p)).collect())
            .collect();
        if let Some(r) = y.iter().find(|r| r.len() != perm.len()) {
            return Err(Error::Invalid(format!(
                "swap list for {} landmarks, labels have {}",
                perm.len(),
                r.len()
            )));
        }
        for fits in 1..=MAX_FITS {
            let reg = Self::fit(x, &y)?;
            let mut swap = Vec::new();
            for (i, xi) in x.iter().enumerate() {
                let kp: Vec<[f64; 2]> = xi
                    .chunks_exact(2)
                    .map(|c| [c[0] + 0.5, c[1] + 0.5])
                    .collect();
                let pred = reg.predict(&kp);
                let label = |j: usize| y[i][j].expect("all given");
                let err = |p: [f64; 2], g: [f64; 2]| (p[0] - 0.5 - g[0]).hypot(p[1] - 0.5 - g[1]);
                let l = perm.len() as f64;
                let straight: f64 =
                    (0..perm.len()).map(|j| err(pred[j], label(j))).sum::<f64>() / l;
                let swapped: f64 = (0..perm.len())
                    .map(|j| err(pred[j], label(perm[j])))
                    .sum::<f64>()
                    / l;
                if straight > swapped {
                    swap.push(i);
                }
            }
            if swap.len() <= 10 {
                return Ok((reg, fits));
            }
            for i in swap {
                let row = y[i].clone();
                y[i] = perm.iter().map(|&p| row[p]).collect();
            }
        }
        Err(Error::Invalid(format!(
            "the Human3.6M swap-refit regressor did not settle after {MAX_FITS} fits"
        )))
    }

    /// A regressor from the reference's weights (`regressor.pt`, `2K x 2L`, row-major f64):
    /// its keypoint rows are `y0, x0, y1, x1, ...` (its arg-max gives row, column), and its
    /// landmark columns follow its data loader: `y, x` per landmark (`labels_yx`, CelebA,
    /// Tai-Chi-HD and DeepFashion swap their labels to that order) or `x, y`.
    pub fn from_reference_weights(w: &[f64], k: usize, l: usize, labels_yx: bool) -> Result<Self> {
        if w.len() != 4 * k * l || k == 0 || l == 0 {
            return Err(Error::Invalid(format!(
                "{} weights for {k} keypoints and {l} landmarks (expected {})",
                w.len(),
                4 * k * l
            )));
        }
        let l2 = 2 * l;
        let mut weights = vec![0f64; 2 * k * l2];
        for kp in 0..k {
            for c in 0..2 {
                for j in 0..l {
                    for d in 0..2 {
                        let col = if labels_yx { 1 - d } else { d };
                        weights[(2 * kp + c) * l2 + 2 * j + d] =
                            w[(2 * kp + 1 - c) * l2 + 2 * j + col];
                    }
                }
            }
        }
        Ok(Self {
            num_keypoints: k,
            num_landmarks: l,
            weights,
        })
    }

    /// Landmarks (normalised to the image) of normalised keypoints `[x, y]` per keypoint.
    pub fn predict(&self, keypoints: &[[f64; 2]]) -> Vec<[f64; 2]> {
        assert_eq!(keypoints.len(), self.num_keypoints, "keypoint count");
        let l2 = 2 * self.num_landmarks;
        let mut out = vec![0.5f64; l2];
        for (k, p) in keypoints.iter().enumerate() {
            for (c, &v) in p.iter().enumerate() {
                let xv = v - 0.5;
                let row = &self.weights[(2 * k + c) * l2..(2 * k + c + 1) * l2];
                for (o, w) in out.iter_mut().zip(row) {
                    *o += xv * w;
                }
            }
        }
        out.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
    }
}

/// Format tag of the pose file written by `eval --save-regressor`.
pub const POSE_FORMAT: &str = "stablekeypoints-pose";

/// A fitted regressor with landmark names and skeleton: what `eval --save-regressor` writes
/// (JSON). Landmarks are `0.5 + (x - 0.5) W`, `x` the keypoints normalised to the frame
/// and flattened `x0, y0, x1, y1, ...` in the order of the tokens file's `indices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoseModel {
    /// Always [`POSE_FORMAT`].
    pub format: String,
    pub version: u32,
    /// K: keypoints the regressor reads.
    pub num_keypoints: usize,
    /// L: landmarks it outputs.
    pub num_landmarks: usize,
    /// Token indices of the tokens file the regressor was fitted with (its keypoint order).
    pub token_indices: Vec<usize>,
    /// One name per landmark.
    pub names: Vec<String>,
    /// Landmark index pairs joined by a skeleton line.
    pub skeleton: Vec<[usize; 2]>,
    /// `2K` rows of `2L` weights.
    pub weights: Vec<Vec<f64>>,
    /// [`crate::Tokens::fingerprint`] of the tokens it was fitted with, when known (files
    /// written before it was recorded, and imported reference regressors, have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_hash: Option<String>,
}

impl PoseModel {
    pub fn new(
        reg: &Regressor,
        token_indices: Vec<usize>,
        names: Option<Vec<String>>,
        skeleton: Vec<[usize; 2]>,
    ) -> Result<Self> {
        let l = reg.num_landmarks;
        let names = names.unwrap_or_else(|| (0..l).map(|j| format!("landmark{j}")).collect());
        if names.len() != l {
            return Err(Error::Invalid(format!(
                "{} landmark names for {l} landmarks",
                names.len()
            )));
        }
        if let Some(p) = skeleton.iter().find(|p| p[0] >= l || p[1] >= l) {
            return Err(Error::Invalid(format!(
                "skeleton pair {} {} names a landmark beyond the {l} labelled ones",
                p[0], p[1]
            )));
        }
        Ok(Self {
            format: POSE_FORMAT.into(),
            version: 1,
            num_keypoints: reg.num_keypoints,
            num_landmarks: l,
            token_indices,
            names,
            skeleton,
            weights: reg
                .weights
                .chunks_exact(2 * l)
                .map(|r| r.to_vec())
                .collect(),
            tokens_hash: None,
        })
    }

    /// The reference's `regressor.pt` (a `[2K, 2L]` tensor saved by `torch.save`) as a pose
    /// model for the tokens with `token_indices` (its `indices.pt`, K of them); see
    /// [`Regressor::from_reference_weights`] for `labels_yx`. Errors name the file.
    pub fn import_reference(
        path: &Path,
        token_indices: Vec<usize>,
        names: Option<Vec<String>>,
        skeleton: Vec<[usize; 2]>,
        labels_yx: bool,
    ) -> Result<Self> {
        let bad = |m: String| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(m),
        };
        let t = crate::torchfile::read_tensor(path)?;
        let (rows, cols) = t.dims2().map_err(|_| {
            bad(format!(
                "the regressor must be a [2K, 2L] matrix, got shape {:?}",
                t.dims()
            ))
        })?;
        let k = token_indices.len();
        if rows != 2 * k || cols == 0 || cols % 2 != 0 {
            return Err(bad(format!(
                "regressor of shape [{rows}, {cols}] for {k} keypoint tokens (expected [{}, 2L])",
                2 * k
            )));
        }
        let w: Vec<f64> = t
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(|e| bad(format!("cannot read the regressor's values: {e}")))?;
        if w.iter().any(|v| !v.is_finite()) {
            return Err(bad("the regressor holds non-finite weights".into()));
        }
        let reg = Regressor::from_reference_weights(&w, k, cols / 2, labels_yx)?;
        Self::new(&reg, token_indices, names, skeleton)
    }

    pub fn regressor(&self) -> Result<Regressor> {
        let (k, l) = (self.num_keypoints, self.num_landmarks);
        if self.weights.len() != 2 * k || self.weights.iter().any(|r| r.len() != 2 * l) {
            return Err(Error::Invalid(format!(
                "pose weights are not {} rows of {} values",
                2 * k,
                2 * l
            )));
        }
        Ok(Regressor {
            num_keypoints: k,
            num_landmarks: l,
            weights: self.weights.concat(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("cannot serialise the pose model: {e}")))?;
        crate::util::write_atomic(path, text.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let p: Self = serde_json::from_str(&text).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("invalid pose file: {e}")),
        })?;
        if p.format != POSE_FORMAT {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "invalid pose file: format {:?}, expected {POSE_FORMAT:?}",
                    p.format
                )),
            });
        }
        p.regressor()?;
        if p.names.len() != p.num_landmarks
            || p.skeleton
                .iter()
                .any(|s| s[0] >= p.num_landmarks || s[1] >= p.num_landmarks)
        {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(
                    "invalid pose file: names or skeleton do not match num_landmarks",
                ),
            });
        }
        Ok(p)
    }

    /// Checks that this pose reads the keypoints of tokens with these `indices` and
    /// fingerprint `hash` ([`crate::Tokens::fingerprint`]; `source` names them in the
    /// message): the same count, the same token indices in the same order, and the same
    /// fingerprint when the file records one. The error says what differs.
    pub fn check_tokens(
        &self,
        indices: &[usize],
        hash: &str,
        source: &str,
    ) -> std::result::Result<(), String> {
        if self.num_keypoints != indices.len() {
            return Err(format!(
                "it reads {} keypoints but {source} give {}",
                self.num_keypoints,
                indices.len()
            ));
        }
        if self.token_indices != indices {
            return Err(format!(
                "it was fitted with token indices {:?} but {source} select {:?}",
                self.token_indices, indices
            ));
        }
        match &self.tokens_hash {
            Some(h) if h != hash => Err(format!(
                "it was fitted with tokens of hash {h} but {source} have hash {hash}"
            )),
            _ => Ok(()),
        }
    }
}
