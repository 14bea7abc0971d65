//! Evaluation against labelled landmarks (method.md section 5): detect the unsupervised
//! keypoints of every labelled image, fit the linear regressor keypoints -> landmarks on the
//! training split, and score the regressed landmarks of the test split with the paper's
//! metrics.
//!
//! - [`csv`]: the label file format ([`LabelSet`]);
//! - [`metrics`]: `taichi`, `inter-ocular`, `visible`, `pck`, `orientation-invariant`, each
//!   under the paper's protocol or the visibility-aware one ([`Protocol`]);
//! - the regressor and the pose file live in [`crate::pose`].

pub mod csv;
pub mod metrics;

pub use crate::pose::{pinv, pinv_sym, PoseModel, Regressor};
pub use csv::{LabelRow, LabelSet};
pub use metrics::{Metric, MetricValue, Protocol, Scored};

use crate::detect::{DetectOptions, Item};
use crate::error::{Error, Result};
use crate::estimator::Estimator;
use crate::frame::{
    apply_mask, mask_to_model_input, to_model_input, CropMode, Fit, FrameRef, PixelFormat,
};

/// Test-time augmentation passes of the reference's evaluation (`--augmentation_iterations`).
pub const DEFAULT_AUGMENTATIONS: usize = 10;

/// Detection settings for evaluation as the reference runs it: 10 passes, each a random warp
/// (the first too), seeded noise at the tokens' timestep.
pub fn default_detect_options() -> DetectOptions {
    DetectOptions {
        augmentations: DEFAULT_AUGMENTATIONS,
        warp_every_pass: true,
        ..DetectOptions::default()
    }
}
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One labelled image with its detected keypoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: PathBuf,
    pub width: usize,
    pub height: usize,
    /// Detected keypoints, normalised to the image ([0, 1]), in token order.
    pub keypoints: Vec<[f64; 2]>,
    /// Labelled landmarks in pixels; None = not visible.
    pub labels: Vec<Option<[f64; 2]>>,
    /// The labels as written, negative coordinates included; None = no coordinates.
    pub raw_labels: Vec<Option<[f64; 2]>>,
}

impl Sample {
    /// Row of X: the keypoints flattened `x0, y0, x1, y1, ...`, minus 0.5.
    pub fn x_row(&self) -> Vec<f64> {
        self.keypoints
            .iter()
            .flat_map(|p| [p[0] - 0.5, p[1] - 0.5])
            .collect()
    }

    /// Row of Y: the visible landmarks divided by the image size, minus 0.5.
    pub fn y_row(&self) -> Vec<Option<[f64; 2]>> {
        self.centre(&self.labels)
    }

    /// Row of Y with every landmark as written (the reference's all-row fits); an error names
    /// the image and the landmark without coordinates.
    pub fn y_row_raw(&self) -> Result<Vec<[f64; 2]>> {
        self.centre(&self.raw_labels)
            .into_iter()
            .enumerate()
            .map(|(j, p)| {
                p.ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: landmark {j} has no coordinates, but the paper protocol fits and \
                         scores every landmark for this metric (use the visibility protocol)",
                        self.image.display()
                    ))
                })
            })
            .collect()
    }

    fn centre(&self, labels: &[Option<[f64; 2]>]) -> Vec<Option<[f64; 2]>> {
        let (w, h) = (self.width as f64, self.height as f64);
        labels
            .iter()
            .map(|p| p.map(|p| [p[0] / w - 0.5, p[1] / h - 0.5]))
            .collect()
    }
}

/// Decodes an image file to RGB8, upright (EXIF orientation applied).
pub use crate::imagefile::read_rgb;

/// The model input of one row's image (`[3, size, size]` in [0, 1], multiplied by the row's
/// foreground mask when it names one, as the reference's Human3.6M loader), its fit, and its
/// item key (a hash of its pixels, [`crate::detect::content_key`]). A missing or unreadable
/// image or mask is an error naming it and its CSV line.
pub fn row_input(
    set: &LabelSet,
    row: &LabelRow,
    size: usize,
    crop: CropMode,
) -> Result<(Vec<f32>, Fit, u64)> {
    let at = |msg: String| {
        Error::Invalid(format!(
            "{}:{}: {}: {msg}",
            set.path.display(),
            row.line,
            row.image.display()
        ))
    };
    let img = read_rgb(&row.image).map_err(|e| match e {
        Error::Io { source, .. } => at(source.to_string()),
        Error::Image { msg, .. } => at(format!("cannot read image: {msg}")),
        e => e,
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
    let (mut input, fit) = to_model_input(&frame, size, crop);
    if let Some(mask) = &row.mask {
        let plane = masked_plane(mask, w, h, size, crop).map_err(|m| {
            Error::Invalid(format!(
                "{}:{}: mask {}: {m}",
                set.path.display(),
                row.line,
                mask.display()
            ))
        })?;
        apply_mask(&mut input, &plane)?;
    }
    Ok((input, fit, crate::detect::content_key(w, h, img.as_raw())))
}

/// Detects the keypoints of every image of `set`, in order, each multiplied by its mask
/// when the row names one ([`row_input`]). `progress(done, total)` is called after each
/// image.
pub fn detect_set(
    det: &mut Estimator,
    set: &LabelSet,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Sample>> {
    let mut out = Vec::with_capacity(set.rows.len());
    for (i, row) in set.rows.iter().enumerate() {
        let (input, fit, key) = row_input(set, row, det.input_size(), det.crop())?;
        // Noise and warps per image, so that neither the CSV order nor the other rows
        // change an image's keypoints.
        let d = det
            .detect(vec![Item::input(input, Some(fit), key)])?
            .remove(0);
        out.push(Sample {
            image: row.image.clone(),
            width: fit.width,
            height: fit.height,
            keypoints: d
                .keypoints
                .iter()
                .map(|k| [f64::from(k.x), f64::from(k.y)])
                .collect(),
            labels: row.points.clone(),
            raw_labels: row.raw.clone(),
        });
        progress(i + 1, set.rows.len());
    }
    Ok(out)
}

/// The mask image at `path` as model-input weights for an image of `w x h`.
fn masked_plane(
    path: &Path,
    w: usize,
    h: usize,
    size: usize,
    crop: CropMode,
) -> std::result::Result<Vec<f32>, String> {
    let img = crate::imagefile::read_upright(path)
        .map_err(|e| match e {
            Error::Io { source, .. } => source.to_string(),
            Error::Image { msg, .. } => format!("cannot read image: {msg}"),
            e => e.to_string(),
        })?
        .to_luma8();
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(format!(
            "is {}x{}, but its image is {w}x{h}",
            img.width(),
            img.height()
        ));
    }
    mask_to_model_input(img.as_raw(), w, h, size, crop).map_err(|e| e.to_string())
}

/// Fits the regressor for `metric` on `train` as `protocol` says ([`Metric::fit`]).
pub fn fit(train: &[Sample], metric: &Metric, protocol: Protocol) -> Result<Regressor> {
    let x: Vec<Vec<f64>> = train.iter().map(Sample::x_row).collect();
    match metric.fit(protocol) {
        metrics::Fit::PerLandmarkVisible => {
            let y: Vec<Vec<Option<[f64; 2]>>> = train.iter().map(Sample::y_row).collect();
            Regressor::fit(&x, &y)
        }
        metrics::Fit::AllRows => {
            let y = train
                .iter()
                .map(|s| Ok(s.y_row_raw()?.into_iter().map(Some).collect()))
                .collect::<Result<Vec<Vec<_>>>>()?;
            Regressor::fit(&x, &y)
        }
        metrics::Fit::SwapRefit => {
            let Metric::OrientationInvariant { pairs } = metric else {
                unreachable!("only orientation-invariant swaps");
            };
            let y = train
                .iter()
                .map(Sample::y_row_raw)
                .collect::<Result<Vec<_>>>()?;
            let l = y.first().map_or(0, Vec::len);
            let perm = crate::pose::swap_permutation(pairs, l)?;
            Ok(Regressor::fit_swap_refit(&x, &y, &perm)?.0)
        }
    }
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub metric: String,
    pub protocol: String,
    pub value: f64,
    pub unit: String,
    pub test_images: usize,
    pub scored_images: usize,
    pub skipped_images: usize,
    pub keypoints: usize,
    pub landmarks: usize,
    /// Mean L2 error of each landmark in pixels of the images, over the test images where
    /// it is visible (None if it never is).
    pub per_landmark_px: Vec<Option<f64>>,
}

/// Regresses the landmarks of `test` with `reg` and scores them with `metric` under
/// `protocol`.
pub fn evaluate(
    reg: &Regressor,
    test: &[Sample],
    metric: &Metric,
    protocol: Protocol,
) -> Result<Report> {
    if let Some(s) = test
        .iter()
        .find(|s| s.keypoints.len() != reg.num_keypoints || s.labels.len() != reg.num_landmarks)
    {
        return Err(Error::Invalid(format!(
            "{}: {} keypoints and {} landmarks, but the regressor maps {} to {}",
            s.image.display(),
            s.keypoints.len(),
            s.labels.len(),
            reg.num_keypoints,
            reg.num_landmarks
        )));
    }
    let preds: Vec<Vec<[f64; 2]>> = test.iter().map(|s| reg.predict(&s.keypoints)).collect();
    let scored: Vec<Scored> = test
        .iter()
        .zip(&preds)
        .map(|(s, p)| Scored {
            width: s.width as f64,
            height: s.height as f64,
            pred: p,
            gt: &s.labels,
            raw: &s.raw_labels,
        })
        .collect();
    if metric.fit(protocol) != metrics::Fit::PerLandmarkVisible {
        for s in test {
            s.y_row_raw()?;
        }
    }
    let v = metric.score(&scored, protocol)?;
    let l = reg.num_landmarks;
    let mut sums = vec![(0f64, 0usize); l];
    for (s, p) in test.iter().zip(&preds) {
        for j in 0..l {
            if let Some(g) = s.labels[j] {
                let dx = p[j][0] * s.width as f64 - g[0];
                let dy = p[j][1] * s.height as f64 - g[1];
                sums[j].0 += dx.hypot(dy);
                sums[j].1 += 1;
            }
        }
    }
    Ok(Report {
        metric: metric.name().into(),
        protocol: protocol.name().into(),
        value: v.value,
        unit: metric.unit(protocol),
        test_images: test.len(),
        scored_images: v.scored_images,
        skipped_images: v.skipped_images,
        keypoints: reg.num_keypoints,
        landmarks: l,
        per_landmark_px: sums
            .into_iter()
            .map(|(s, n)| (n > 0).then(|| s / n as f64))
            .collect(),
    })
}

/// Landmark names, one per line (blank lines and `#` comments skipped).
pub fn read_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Skeleton pairs, `a b` per line (landmark indices, or names from `names`; blank lines and
/// `#` comments skipped). Errors name the file and line.
pub fn read_skeleton(path: &Path, names: &[String]) -> Result<Vec<[usize; 2]>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect();
        let err = |m: String| Error::Invalid(format!("{}:{}: {m}", path.display(), i + 1));
        if parts.len() != 2 {
            return Err(err(format!(
                "expected two landmarks (\"a b\"), found {:?}",
                line
            )));
        }
        let mut pair = [0usize; 2];
        for (k, p) in parts.iter().enumerate() {
            pair[k] = match p.parse::<usize>() {
                Ok(v) => v,
                Err(_) => names.iter().position(|n| n == p).ok_or_else(|| {
                    err(format!(
                        "{p:?} is neither a landmark index nor one of the landmark names"
                    ))
                })?,
            };
        }
        out.push(pair);
    }
    Ok(out)
}
