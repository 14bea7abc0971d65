//! The paper's landmark metrics (method.md section 5), on predictions normalised to the
//! image and ground truth in pixels of that image, under one of two protocols:
//!
//! - [`Protocol::Paper`]: the reference's `eval.py`, metric by metric (which landmarks count,
//!   which regressor, which threshold), in the unit the paper reports;
//! - [`Protocol::Visibility`]: visibility-aware variants of every metric (only visible
//!   landmarks count; a per-landmark regressor on the rows where it is visible).

use crate::error::{Error, Result};
use crate::pose::swap_permutation;
use serde::Serialize;

/// Which definitions the metrics and their regressor follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The reference's `eval.py`.
    #[default]
    Paper,
    /// Visibility-aware variants (this project's earlier definitions).
    Visibility,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Paper => "paper",
            Protocol::Visibility => "visibility",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(Protocol::Paper),
            "visibility" => Ok(Protocol::Visibility),
            _ => Err(Error::Invalid(format!(
                "unknown protocol {s:?} (paper, visibility)"
            ))),
        }
    }
}

/// How the regressor for a metric is fitted (see `pose`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Per landmark on the training rows where it is visible (`return_regressor_visible`).
    PerLandmarkVisible,
    /// On all rows with every landmark's coordinates as given (`return_regressor`).
    AllRows,
    /// Human3.6M's iterative left/right swap-refit (`return_regressor_human36m`).
    SwapRefit,
}

/// One test image: regressed landmarks (normalised to [0, 1] of the image) and the labels
/// (pixels; `gt` None = not visible, `raw` None = no coordinates in the label file).
#[derive(Clone, Copy, Debug)]
pub struct Scored<'a> {
    pub width: f64,
    pub height: f64,
    pub pred: &'a [[f64; 2]],
    pub gt: &'a [Option<[f64; 2]>],
    pub raw: &'a [Option<[f64; 2]>],
}

impl Scored<'_> {
    /// L2 distance between prediction `p` and label `g`, in pixels of the image.
    fn pixel_error(&self, p: usize, g: usize) -> Option<f64> {
        let gt = self.gt[g]?;
        let dx = self.pred[p][0] * self.width - gt[0];
        let dy = self.pred[p][1] * self.height - gt[1];
        Some(dx.hypot(dy))
    }

    /// The same in normalised units (each axis divided by the image size).
    fn norm_error(&self, p: usize, g: usize) -> Option<f64> {
        let gt = self.gt[g]?;
        let dx = self.pred[p][0] - gt[0] / self.width;
        let dy = self.pred[p][1] - gt[1] / self.height;
        Some(dx.hypot(dy))
    }

    /// Label `j` as written, normalised to the image (the reference's `kpts`).
    fn raw_norm(&self, j: usize) -> Result<[f64; 2]> {
        let g = self.raw[j].ok_or_else(|| {
            Error::Invalid(format!(
                "landmark {j} has no coordinates, but the paper protocol counts every landmark \
                 of this metric (use the visibility protocol for labels with gaps)"
            ))
        })?;
        Ok([g[0] / self.width, g[1] / self.height])
    }

    /// `|pred[p] * scale - gt_norm[g] * scale|` on the raw labels, as the reference computes
    /// it (scale 1: normalised units).
    fn raw_error(&self, p: usize, g: usize, scale: f64) -> Result<f64> {
        let gn = self.raw_norm(g)?;
        let dx = self.pred[p][0] * scale - gn[0] * scale;
        let dy = self.pred[p][1] * scale - gn[1] * scale;
        Ok(dx.hypot(dy))
    }
}

/// Which number to report. Each variant's definition under [`Protocol::Paper`] first
/// (the reference's `evaluation_method`), then under [`Protocol::Visibility`].
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Tai-Chi-HD (`mean_average_error`): images treated as 256 x 256; per image the *sum*
    /// over visible landmarks of the L2 error in pixels at 256; mean over all test images.
    /// Both protocols; per-landmark regressor.
    TaiChi,
    /// CelebA (`inter_eye_distance`). Paper: per image the mean over *all* landmarks of the L2
    /// error divided by the labelled distance between landmarks `left` and `right`, both in
    /// coordinates normalised by width and height; mean over images, in percent; regressor
    /// on all rows. Visibility: the same in pixels over visible landmarks, images without
    /// both eyes skipped, per-landmark regressor.
    InterOcular { left: usize, right: usize },
    /// CUB (`visible`): per image the mean over visible landmarks of the L2 error with each
    /// axis normalised by the image size; mean over images with a visible landmark, in
    /// percent. Both protocols; per-landmark regressor.
    Visible,
    /// DeepFashion (`pck`). Paper: per image the fraction of *all* landmarks whose L2 error
    /// at 256 x 256 scale is `< px`; mean over images, in percent; regressor on all rows.
    /// Visibility: percentage of visible landmarks (all images pooled) within `px` pixels
    /// (`<=`, pixels of each image), per-landmark regressor.
    Pck { px: f64 },
    /// Human3.6M (`orientation_invariant`): per image the mean normalised L2 error x 128, the
    /// smaller of the labels' order and the predictions reordered by the swap list `pairs`
    /// ([`swap_permutation`]); mean over images. Paper: all landmarks, the swap-refit
    /// regressor. Visibility: visible landmarks, per-landmark regressor.
    OrientationInvariant { pairs: Vec<(usize, usize)> },
}

/// A metric's value on a test set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricValue {
    pub value: f64,
    /// Images that entered the value.
    pub scored_images: usize,
    /// Images left out (no visible landmark, or no visible eye pair for inter-ocular).
    pub skipped_images: usize,
}

impl Metric {
    /// `taichi`, `inter-ocular`, `visible`, `pck` or `orientation-invariant`.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::TaiChi => "taichi",
            Metric::InterOcular { .. } => "inter-ocular",
            Metric::Visible => "visible",
            Metric::Pck { .. } => "pck",
            Metric::OrientationInvariant { .. } => "orientation-invariant",
        }
    }

    /// How the regressor for this metric is fitted under `protocol`.
    pub fn fit(&self, protocol: Protocol) -> Fit {
        match (protocol, self) {
            (Protocol::Paper, Metric::InterOcular { .. } | Metric::Pck { .. }) => Fit::AllRows,
            (Protocol::Paper, Metric::OrientationInvariant { .. }) => Fit::SwapRefit,
            _ => Fit::PerLandmarkVisible,
        }
    }

    /// What the number means.
    pub fn unit(&self, protocol: Protocol) -> String {
        let paper = protocol == Protocol::Paper;
        match self {
            Metric::TaiChi => {
                "sum over visible landmarks of the L2 error in pixels at 256x256, mean over images"
                    .into()
            }
            Metric::InterOcular { left, right } if paper => format!(
                "mean L2 error over all landmarks in % of the inter-ocular distance (landmarks \
                 {left} and {right}), both normalised by width and height"
            ),
            Metric::InterOcular { left, right } => format!(
                "mean L2 error in % of the inter-ocular distance (landmarks {left} and {right})"
            ),
            Metric::Visible => {
                "mean L2 error over visible landmarks, in % of the image size".into()
            }
            Metric::Pck { px } if paper => {
                format!("% of landmarks with an L2 error < {px} px at 256x256, mean over images")
            }
            Metric::Pck { px } => format!("% of visible landmarks within {px} px"),
            Metric::OrientationInvariant { .. } if paper => {
                "mean L2 error over all landmarks x 128 (normalised coordinates x 128), best of \
                 the labels' order and the swapped predictions"
                    .into()
            }
            Metric::OrientationInvariant { .. } => {
                "mean L2 error over visible landmarks x 128 (normalised coordinates x 128), best \
                 of the labels' order and the swapped predictions"
                    .into()
            }
        }
    }

    /// Checks landmark indices against `num_landmarks`.
    pub fn validate(&self, num_landmarks: usize) -> Result<()> {
        let check = |i: usize, what: &str| {
            if i >= num_landmarks {
                Err(Error::Invalid(format!(
                    "{what} names landmark {i}, but the labels have {num_landmarks} (0..{})",
                    num_landmarks.saturating_sub(1)
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Metric::InterOcular { left, right } => {
                check(*left, "--eyes")?;
                check(*right, "--eyes")?;
                if left == right {
                    return Err(Error::Invalid(
                        "--eyes needs two different landmarks".into(),
                    ));
                }
            }
            Metric::Pck { px } if !(px.is_finite() && *px > 0.0) => {
                return Err(Error::Invalid(format!(
                    "--pck-px {px}: the threshold must be positive"
                )));
            }
            Metric::OrientationInvariant { pairs } => {
                if pairs.is_empty() {
                    return Err(Error::Invalid(
                        "orientation-invariant needs --flip-pairs L:R,... (the landmark pairs \
                         a left/right flip swaps)"
                            .into(),
                    ));
                }
                // Repeats are allowed: the reference's own Human3.6M list has one.
                for &(a, b) in pairs {
                    check(a, "--flip-pairs")?;
                    check(b, "--flip-pairs")?;
                    if a == b {
                        return Err(Error::Invalid(format!(
                            "--flip-pairs: pair {a}:{b} swaps a landmark with itself"
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The metric over `images`.
    pub fn score(&self, images: &[Scored], protocol: Protocol) -> Result<MetricValue> {
        if let Some(l) = images.first().map(|s| s.gt.len()) {
            self.validate(l)?;
            if images
                .iter()
                .any(|s| s.gt.len() != l || s.pred.len() != l || s.raw.len() != l)
            {
                return Err(Error::Invalid(
                    "predictions and labels differ in landmark count".into(),
                ));
            }
        }
        match protocol {
            Protocol::Paper => self.score_paper(images),
            Protocol::Visibility => self.score_visibility(images),
        }
    }

    fn finish(&self, per_image: Vec<f64>, total: usize) -> Result<MetricValue> {
        let scored = per_image.len();
        if scored == 0 {
            return Err(Error::Invalid(format!(
                "{}: no test image could be scored (no visible landmarks{})",
                self.name(),
                if matches!(self, Metric::InterOcular { .. }) {
                    " or eye pair"
                } else {
                    ""
                }
            )));
        }
        Ok(MetricValue {
            value: mean(per_image.into_iter()),
            scored_images: scored,
            skipped_images: total - scored,
        })
    }

    /// The reference's `evaluate` in eval.py, per metric.
    fn score_paper(&self, images: &[Scored]) -> Result<MetricValue> {
        let mut per_image = Vec::with_capacity(images.len());
        for s in images {
            let l = s.gt.len();
            let visible: Vec<usize> = (0..l).filter(|&j| s.gt[j].is_some()).collect();
            match self {
                Metric::TaiChi => {
                    let mut e = 0f64;
                    for &j in &visible {
                        e += s.raw_error(j, j, 256.0)?;
                    }
                    per_image.push(e);
                }
                Metric::InterOcular { left, right } => {
                    let (a, b) = (s.raw_norm(*left)?, s.raw_norm(*right)?);
                    let eye = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
                    if eye.is_nan() || eye <= 0.0 {
                        continue; // the reference would divide by zero
                    }
                    let mut e = Vec::with_capacity(l);
                    for j in 0..l {
                        e.push(s.raw_error(j, j, 1.0)? / eye);
                    }
                    per_image.push(100.0 * mean(e.into_iter()));
                }
                Metric::Visible => {
                    if visible.is_empty() {
                        continue; // the reference would divide by zero
                    }
                    let mut e = 0f64;
                    for &j in &visible {
                        e += s.raw_error(j, j, 1.0)?;
                    }
                    per_image.push(100.0 * e / visible.len() as f64);
                }
                Metric::Pck { px } => {
                    let mut hits = 0usize;
                    for j in 0..l {
                        if s.raw_error(j, j, 256.0)? < *px {
                            hits += 1;
                        }
                    }
                    per_image.push(100.0 * hits as f64 / l as f64);
                }
                Metric::OrientationInvariant { pairs } => {
                    let perm = swap_permutation(pairs, l)?;
                    let (mut straight, mut swapped) = (0f64, 0f64);
                    for (j, &pj) in perm.iter().enumerate() {
                        straight += s.raw_error(j, j, 1.0)?;
                        swapped += s.raw_error(pj, j, 1.0)?;
                    }
                    per_image.push(128.0 * (straight / l as f64).min(swapped / l as f64));
                }
            }
        }
        self.finish(per_image, images.len())
    }

    fn score_visibility(&self, images: &[Scored]) -> Result<MetricValue> {
        let mut per_image = Vec::with_capacity(images.len());
        let mut pck = (0usize, 0usize);
        for s in images {
            let l = s.gt.len();
            let visible: Vec<usize> = (0..l).filter(|&j| s.gt[j].is_some()).collect();
            match self {
                Metric::TaiChi => {
                    let e: f64 = visible
                        .iter()
                        .map(|&j| s.norm_error(j, j).expect("visible") * 256.0)
                        .sum();
                    per_image.push(e);
                }
                Metric::InterOcular { left, right } => {
                    let (Some(a), Some(b)) = (s.gt[*left], s.gt[*right]) else {
                        continue;
                    };
                    let iod = (a[0] - b[0]).hypot(a[1] - b[1]);
                    if iod <= 0.0 {
                        continue;
                    }
                    let e = mean(
                        visible
                            .iter()
                            .map(|&j| s.pixel_error(j, j).expect("visible")),
                    );
                    per_image.push(100.0 * e / iod);
                }
                Metric::Visible => {
                    if !visible.is_empty() {
                        let e = mean(
                            visible
                                .iter()
                                .map(|&j| s.norm_error(j, j).expect("visible")),
                        );
                        per_image.push(100.0 * e);
                    }
                }
                Metric::Pck { px } => {
                    for &j in &visible {
                        pck.1 += 1;
                        if s.pixel_error(j, j).expect("visible") <= *px {
                            pck.0 += 1;
                        }
                    }
                    if !visible.is_empty() {
                        per_image.push(0.0);
                    }
                }
                Metric::OrientationInvariant { pairs } => {
                    if visible.is_empty() {
                        continue;
                    }
                    let perm = swap_permutation(pairs, l)?;
                    let straight = mean(visible.iter().map(|&j| s.norm_error(j, j).unwrap()));
                    // Prediction perm[j] against label j, over the visible labels.
                    let flipped = mean(visible.iter().map(|&j| s.norm_error(perm[j], j).unwrap()));
                    per_image.push(128.0 * straight.min(flipped));
                }
            }
        }
        let mut v = self.finish(per_image, images.len())?;
        if let Metric::Pck { .. } = self {
            v.value = 100.0 * pck.0 as f64 / pck.1 as f64;
        }
        Ok(v)
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0f64, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}
