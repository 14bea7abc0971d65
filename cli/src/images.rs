//! Image files: decoding, and a folder of them or a label CSV's images as training data.

use stablekeypoints::eval::{row_input, LabelSet};
use stablekeypoints::frame::to_model_input;
use stablekeypoints::train::{Fnv, TrainData};
use stablekeypoints::{CropMode, Error, FrameRef, PixelFormat};
use std::path::{Path, PathBuf};

/// An image file decoded upright (EXIF orientation applied), as RGB8.
pub fn read_image(path: &Path) -> Result<image::RgbImage, Error> {
    stablekeypoints::imagefile::read_rgb(path)
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub fn is_csv(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// `m` of `n` indices spread uniformly, first and last included when m > 1.
fn spread(n: usize, m: usize) -> Vec<usize> {
    (0..m)
        .map(|i| if m == 1 { 0 } else { i * (n - 1) / (m - 1) })
        .collect()
}

/// Image files under `dir`, recursively, sorted by path.
fn find_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let p = entry
            .map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?
            .path();
        if p.is_dir() {
            find_images(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Image files, each decoded once up front to check it, then on demand (a step costs far
/// more than a decode).
pub struct ImageFiles {
    paths: Vec<PathBuf>,
    /// `paths` relative to the input folder: the data set's identity in checkpoints.
    names: Vec<String>,
    crop: CropMode,
    fingerprint: String,
}

/// The png/jpg images of `input` (a folder, searched recursively, or one image), sorted.
fn list_images(input: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut paths = Vec::new();
    if input.is_dir() {
        find_images(input, &mut paths)?;
    } else if input.is_file() {
        if !is_image(input) {
            return Err(Error::Invalid(format!(
                "{}: only folders of png/jpg images (or one image) are supported so far; \
                 extract video frames into a folder first",
                input.display()
            )));
        }
        paths.push(input.to_path_buf());
    } else {
        return Err(Error::Io {
            path: input.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no png/jpg images found",
            input.display()
        )));
    }
    Ok(paths)
}

/// Decodes each of `paths` (of `input`) to check it: those that do not decode are dropped
/// and listed on stderr; none left is an error naming them.
fn check_readable(input: &Path, paths: &mut Vec<PathBuf>) -> Result<(), Error> {
    let listed = paths.len();
    let mut skipped = Vec::new();
    let (mut smallest, mut largest) = ((u32::MAX, u32::MAX), (0, 0));
    paths.retain(|p| match read_image(p) {
        Ok(img) => {
            let d = img.dimensions();
            if d.0 as u64 * d.1 as u64 > largest.0 as u64 * largest.1 as u64 {
                largest = d;
            }
            if (d.0 as u64 * d.1 as u64) < smallest.0 as u64 * smallest.1 as u64 {
                smallest = d;
            }
            true
        }
        Err(e) => {
            skipped.push(e.to_string());
            false
        }
    });
    if paths.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: none of the {listed} images can be read: {}",
            input.display(),
            skipped.join("; ")
        )));
    }
    eprintln!(
        "checked {listed} images in {}: {} readable ({}x{} to {}x{}){}",
        input.display(),
        paths.len(),
        smallest.0,
        smallest.1,
        largest.0,
        largest.1,
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped:", skipped.len())
        }
    );
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    Ok(())
}

impl ImageFiles {
    /// Lists the images of `input`, decodes each one to check it (those that do not decode
    /// are skipped and listed on stderr; none left is an error naming them), then keeps
    /// `max_frames` of the good ones. The data set is identified by the files kept, so a
    /// checkpoint still resumes after a skipped file is removed.
    pub fn new(input: &Path, max_frames: Option<usize>, crop: CropMode) -> Result<Self, Error> {
        let mut paths = list_images(input)?;
        check_readable(input, &mut paths)?;
        if let Some(m) = max_frames.filter(|&m| m > 0 && m < paths.len()) {
            paths = spread(paths.len(), m)
                .into_iter()
                .map(|j| paths[j].clone())
                .collect();
        }
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.strip_prefix(input)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let mut h = Fnv::new();
        h.write(format!("{crop:?}").as_bytes());
        for (p, name) in paths.iter().zip(&names) {
            h.write(name.as_bytes());
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            h.write(&len.to_le_bytes());
        }
        let fingerprint = format!("{} images, {}", paths.len(), h.hex());
        Ok(Self {
            paths,
            names,
            crop,
            fingerprint,
        })
    }
}

impl TrainData for ImageFiles {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        let img = read_image(&self.paths[index])?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3)?;
        Ok(to_model_input(&frame, size, self.crop).0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn items(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// The images of a label CSV (the `eval` format; coordinates unused), each multiplied by
/// its mask when the row names one, as the reference's Human3.6M loader.
pub struct LabelImages {
    set: LabelSet,
    crop: CropMode,
    fingerprint: String,
}

impl LabelImages {
    /// Every image and mask must exist (checked now, before the model loads); `max_frames`
    /// keeps that many rows spread over the file.
    pub fn new(csv: &Path, max_frames: Option<usize>, crop: CropMode) -> Result<Self, Error> {
        let mut set = LabelSet::load(csv)?;
        if let Some(m) = max_frames.filter(|&m| m > 0 && m < set.rows.len()) {
            let keep = spread(set.rows.len(), m);
            set.rows = keep.into_iter().map(|j| set.rows[j].clone()).collect();
        }
        let base = csv.parent().unwrap_or(Path::new(""));
        let mut h = Fnv::new();
        h.write(format!("{crop:?}").as_bytes());
        for row in &set.rows {
            for p in std::iter::once(&row.image).chain(row.mask.as_ref()) {
                let meta = std::fs::metadata(p).map_err(|e| {
                    Error::Invalid(format!(
                        "{}:{}: {}: {e}",
                        csv.display(),
                        row.line,
                        p.display()
                    ))
                })?;
                let rel = p.strip_prefix(base).unwrap_or(p);
                h.write(rel.to_string_lossy().as_bytes());
                h.write(&meta.len().to_le_bytes());
            }
        }
        let masks = set.rows.iter().filter(|r| r.mask.is_some()).count();
        let fingerprint = format!("{} images ({masks} masked), {}", set.rows.len(), h.hex());
        Ok(Self {
            set,
            crop,
            fingerprint,
        })
    }
}

impl TrainData for LabelImages {
    fn len(&self) -> usize {
        self.set.rows.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        Ok(row_input(&self.set, &self.set.rows[index], size, self.crop)?.0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
