//! The paper's landmark metrics (method.md section 5), on predictions normalised to the
//! image and ground truth in pixels of that image. Only visible landmarks are scored.

use crate::error::{Error, Result};
use serde::Serialize;

/// One test image: regressed landmarks (normalised to [0, 1] of the image) and the labels
/// (pixels; None = not visible).
#[derive(Clone, Copy, Debug)]
pub struct Scored<'a> {
    pub width: f64,
    pub height: f64,
    pub pred: &'a [[f64; 2]],
    pub gt: &'a [Option<[f64; 2]>],
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
}

/// Which number to report.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Tai-Chi-HD: images treated as 256 x 256; per image the *sum* over visible landmarks
    /// of the L2 error in pixels at 256; mean over all test images.
    TaiChi,
    /// CelebA: per image the mean over visible landmarks of the pixel L2 error divided by
    /// the labelled distance between landmarks `left` and `right` (the eyes); mean over
    /// images, in percent. Images without both eyes visible are skipped.
    InterOcular { left: usize, right: usize },
    /// CUB: per image the mean over visible landmarks of the L2 error with each axis
    /// normalised by the image size; mean over images with a visible landmark, in percent.
    Visible,
    /// DeepFashion: percentage of visible landmarks (all images pooled) within `px` pixels
    /// (L2, pixels of each image) of the label.
    Pck { px: f64 },
    /// Human3.6M: per image the mean over visible landmarks of the normalised L2 error x 128
    /// (pixels at 128 x 128), the smaller of the labels' order and the order with every
    /// left/right pair in `pairs` swapped; mean over images with a visible landmark.
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

    /// What the number means.
    pub fn unit(&self) -> String {
        match self {
            Metric::TaiChi => {
                "sum over visible landmarks of the L2 error in pixels at 256x256, mean over images"
                    .into()
            }
            Metric::InterOcular { left, right } => format!(
                "mean L2 error in % of the inter-ocular distance (landmarks {left} and {right})"
            ),
            Metric::Visible => {
                "mean L2 error over visible landmarks, in % of the image size".into()
            }
            Metric::Pck { px } => format!("% of visible landmarks within {px} px"),
            Metric::OrientationInvariant { .. } => {
                "mean L2 error x 128 (pixels at 128x128), best of the original and left/right-swapped labels"
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
                let mut seen = vec![false; num_landmarks];
                for &(a, b) in pairs {
                    check(a, "--flip-pairs")?;
                    check(b, "--flip-pairs")?;
                    if a == b || seen[a] || seen[b] {
                        return Err(Error::Invalid(format!(
                            "--flip-pairs: landmark pair {a}:{b} repeats a landmark"
                        )));
                    }
                    seen[a] = true;
                    seen[b] = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The metric over `images`.
    pub fn score(&self, images: &[Scored]) -> Result<MetricValue> {
        if let Some(l) = images.first().map(|s| s.gt.len()) {
            self.validate(l)?;
            if images.iter().any(|s| s.gt.len() != l || s.pred.len() != l) {
                return Err(Error::Invalid(
                    "predictions and labels differ in landmark count".into(),
                ));
            }
        }
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
                    let mut swap: Vec<usize> = (0..l).collect();
                    for &(a, b) in pairs {
                        swap[a] = b;
                        swap[b] = a;
                    }
                    let straight = mean(visible.iter().map(|&j| s.norm_error(j, j).unwrap()));
                    // Prediction j against label swap[j], over the visible labels.
                    let flipped = mean(
                        (0..l)
                            .filter(|&j| s.gt[swap[j]].is_some())
                            .map(|j| s.norm_error(j, swap[j]).unwrap()),
                    );
                    per_image.push(128.0 * straight.min(flipped));
                }
            }
        }
        let scored = per_image.len();
        let value = match self {
            Metric::Pck { .. } => {
                if pck.1 == 0 {
                    f64::NAN
                } else {
                    100.0 * pck.0 as f64 / pck.1 as f64
                }
            }
            _ => mean(per_image.into_iter()),
        };
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
            value,
            scored_images: scored,
            skipped_images: images.len() - scored,
        })
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
