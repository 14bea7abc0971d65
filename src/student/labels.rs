//! The teacher's labels of the inputs a student learns from: computed once per input and
//! cached next to the student file, so that a long labelling run resumes.

use crate::detect::{Detector, Item};
use crate::error::{Error, Result};
use crate::train::TrainData;
use crate::util::{safetensors_bytes, write_atomic};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The teacher's keypoints of every item: `[x, y, confidence]` per keypoint, normalised to
/// the model square.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub k: usize,
    pub points: Vec<Vec<[f32; 3]>>,
}

/// What labels are valid for: a cache made for another teacher, other data or other passes
/// is not reused.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelIdentity {
    pub teacher_model: String,
    pub tokens_hash: String,
    pub data: String,
    pub teacher_augmentations: usize,
    pub seed: u64,
}

impl LabelIdentity {
    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("teacher_model".into(), self.teacher_model.clone()),
            ("tokens_hash".into(), self.tokens_hash.clone()),
            ("data".into(), self.data.clone()),
            (
                "teacher_augmentations".into(),
                self.teacher_augmentations.to_string(),
            ),
            ("seed".into(), self.seed.to_string()),
        ])
    }
}

/// The label cache next to the student file.
pub fn labels_path(out: &Path) -> PathBuf {
    suffixed(out, ".labels.safetensors")
}

fn save_labels(path: &Path, id: &LabelIdentity, labels: &Labels, total: usize) -> Result<()> {
    let flat: Vec<u8> = labels
        .points
        .iter()
        .flatten()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let shape = vec![labels.points.len(), labels.k, 3];
    let view = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, shape, &flat)
        .map_err(|e| Error::Invalid(format!("labels: {e}")))?;
    let mut meta = id.metadata();
    meta.insert("total".into(), total.to_string());
    let bytes = safetensors_bytes(vec![("points", view)], &meta).map_err(Error::Invalid)?;
    write_atomic(path, &bytes)
}

/// Labels cached at `path` for `id` (possibly a prefix of the items), or None when there
/// are none; a cache for another teacher or other data is an error naming it.
fn load_labels(path: &Path, id: &LabelIdentity, k: usize) -> Result<Option<Labels>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::checkpoint(path, m);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable label cache ({e})")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    for (key, want) in id.metadata() {
        let have = meta.get(&key).cloned().unwrap_or_default();
        if have != want {
            return Err(bad(format!(
                "this label cache was made with {key} {have:?}, not {want:?}; remove it to label anew"
            )));
        }
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("unreadable label cache ({e})")))?;
    let t = st
        .tensor("points")
        .map_err(|_| bad("no `points` tensor".into()))?;
    if t.shape().len() != 3 || t.shape()[1] != k || t.shape()[2] != 3 {
        return Err(bad(format!(
            "`points` has shape {:?}, expected [n, {k}, 3]",
            t.shape()
        )));
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let points = v
        .chunks_exact(3 * k)
        .map(|item| item.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect())
        .collect();
    Ok(Some(Labels { k, points }))
}

/// Progress of the labelling.
pub enum LabelEvent {
    Resumed { done: usize, total: usize },
    Item { done: usize, total: usize },
}

/// The teacher's keypoints of every item of `data`, at the teacher's input size; resumes
/// from and saves to the cache at `cache` (every `save_every` items and at the end). Item
/// `i` is the detector's item key `i` (its noise and warps). `Ok(None)`: stopped by
/// `on_event`, the cache holding what was done.
pub fn label(
    teacher: &mut Detector,
    data: &dyn TrainData,
    cache: &Path,
    id: &LabelIdentity,
    save_every: usize,
    on_event: &mut dyn FnMut(LabelEvent) -> ControlFlow<()>,
) -> Result<Option<Labels>> {
    let k = teacher.num_keypoints();
    let total = data.len();
    let mut labels = load_labels(cache, id, k)?.unwrap_or(Labels {
        k,
        points: Vec::new(),
    });
    if labels.points.len() > total {
        return Err(Error::checkpoint(
            cache,
            format!(
                "holds {} items but the data has {total}",
                labels.points.len()
            ),
        ));
    }
    if !labels.points.is_empty() {
        let done = labels.points.len();
        if on_event(LabelEvent::Resumed { done, total }).is_break() {
            return Ok(None);
        }
    }
    let size = teacher.input_size();
    let mut since_save = 0;
    while labels.points.len() < total {
        let i = labels.points.len();
        let input = data.image(i, size)?;
        let kps = teacher
            .detect(vec![Item::input(input, None, i as u64)])?
            .remove(0)
            .keypoints;
        labels
            .points
            .push(kps.iter().map(|p| [p.x, p.y, p.score]).collect());
        since_save += 1;
        let done = labels.points.len();
        if since_save >= save_every || done == total {
            save_labels(cache, id, &labels, total)?;
            since_save = 0;
        }
        if on_event(LabelEvent::Item { done, total }).is_break() {
            save_labels(cache, id, &labels, total)?;
            return Ok(None);
        }
    }
    Ok(Some(labels))
}

/// `out` with `suffix` appended to its file name (the files that go with a student file).
pub(super) fn suffixed(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
