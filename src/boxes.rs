//! Object boxes per frame from a file: the detections of a detector that runs elsewhere (or
//! of none: true boxes of a rendered world, hand-drawn ones), read by the
//! `stablekeypointsboxes` element and the CLI.
//!
//! Two forms, told apart by content:
//!
//! - **JSON lines**, one record per frame, blank lines allowed:
//!
//!   ```text
//!   {"frame": 12, "timestamp": 0.8, "width": 512, "height": 256, "objects": [{"id": 3, "label": "person", "box": [40, 20, 100, 210], "confidence": 0.9}]}
//!   ```
//!
//!   `frame` (the 0-based index of the decoded frame) and/or `timestamp` (seconds of stream
//!   time): at least one. `width` and `height` (together or neither): the size of the frame
//!   the boxes were measured on; with them, boxes are rescaled to the frame they are applied
//!   to ([`FrameBoxes::scaled_to`]), without them they are taken as that frame's pixels.
//!   `objects` (may be empty): `box` `[x, y, w, h]` in pixels (top-left corner, origin at
//!   the frame's top-left corner, pixel edges at whole numbers; `x` and `y` may be negative,
//!   `w` and `h` not), `id` (a track id, optional), `label` (default `person`),
//!   `confidence` (optional). Other fields are ignored. No two records may name the same
//!   frame, or the same timestamp.
//! - **COCO detection results**: a JSON array of `{"image_id", "category_id", "bbox": [x,
//!   y, w, h], "score"}` (pycocotools' `loadRes` input), or a COCO document `{"images",
//!   "annotations", "categories"}` whose `annotations` are such results. `image_id` is the
//!   0-based frame index, as our own COCO export numbers its images
//!   ([`crate::export::coco`]: `image_id` = the record's `frame`); in a document, the
//!   `images` entry of that id gives `width` and `height` (the frame size the boxes refer
//!   to) and `categories` give the labels. Without categories, `category_id` 1 (COCO's
//!   `person`, also the default) is labelled `person` and any other by its number. A
//!   `track_id` becomes the box's id; `score` its confidence. COCO's `bbox` has the same
//!   convention as ours (pixel edges at whole numbers).
//!
//! Errors name the file and the line (JSON lines) or the array index (COCO) and what is
//! wrong; no input makes the parser panic.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Label of a box that names none (and of COCO's category 1).
pub const DEFAULT_LABEL: &str = "person";

/// One object's box, in pixels of the frame its record refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectBox {
    /// Track id, when the detector (or tracker) gave one.
    pub id: Option<u64>,
    pub label: String,
    /// Top-left corner.
    pub x: f64,
    pub y: f64,
    /// Width and height, never negative.
    pub w: f64,
    pub h: f64,
    pub confidence: Option<f32>,
}

impl ObjectBox {
    /// The box with its coordinates multiplied by `sx` horizontally and `sy` vertically.
    pub fn scaled(&self, sx: f64, sy: f64) -> ObjectBox {
        ObjectBox {
            x: self.x * sx,
            y: self.y * sy,
            w: self.w * sx,
            h: self.h * sy,
            ..self.clone()
        }
    }

    /// The box rounded to whole pixels and clipped to a `width` x `height` frame, as
    /// `[x0, y0, x1, y1)`; `None` when nothing of it is left (outside the frame, or empty).
    pub fn pixel_rect(&self, width: u32, height: u32) -> Option<[u32; 4]> {
        // `as` saturates (and NaN, which parsing keeps out, becomes 0).
        let edge = |v: f64, size: u32| v.round().clamp(0.0, size as f64) as u32;
        let (x0, x1) = (edge(self.x, width), edge(self.x + self.w, width));
        let (y0, y1) = (edge(self.y, height), edge(self.y + self.h, height));
        (x0 < x1 && y0 < y1).then_some([x0, y0, x1, y1])
    }
}

/// The boxes of one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameBoxes {
    /// 0-based index of the decoded frame.
    pub frame: Option<u64>,
    /// Stream time in seconds.
    pub timestamp: Option<f64>,
    /// `(width, height)` of the frame the boxes were measured on.
    pub size: Option<(u32, u32)>,
    pub objects: Vec<ObjectBox>,
}

impl FrameBoxes {
    /// The boxes in pixels of a `width` x `height` frame: rescaled from the record's frame
    /// size when it has one, as they are otherwise.
    pub fn scaled_to(&self, width: u32, height: u32) -> Vec<ObjectBox> {
        match self.size {
            Some((w, h)) if (w, h) != (width, height) => {
                let (sx, sy) = (width as f64 / w as f64, height as f64 / h as f64);
                self.objects.iter().map(|o| o.scaled(sx, sy)).collect()
            }
            _ => self.objects.clone(),
        }
    }
}

/// The records of a boxes file, looked up by frame index or by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Boxes {
    /// The file they came from (for messages).
    pub path: PathBuf,
    records: Vec<FrameBoxes>,
    /// Frame index -> record.
    frames: BTreeMap<u64, usize>,
    /// (timestamp, record), sorted by time.
    times: Vec<(f64, usize)>,
}

impl Boxes {
    /// Reads and checks a boxes file (either form, see the module documentation).
    pub fn read(path: &Path) -> Result<Boxes> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    /// Parses the contents of a boxes file; `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Boxes> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            at(path, line, "not UTF-8 text")
        })?;
        let records = match text.trim_start().as_bytes().first() {
            Some(b'[') => {
                let v: Value = serde_json::from_str(text).map_err(|e| {
                    at(
                        path,
                        e.line(),
                        format!("not JSON (a COCO results array): {e}"),
                    )
                })?;
                coco(path, &v, None)?
            }
            Some(b'{') => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(doc)) if doc.contains_key("annotations") => {
                    let annotations = doc.get("annotations").unwrap_or(&Value::Null);
                    coco(path, annotations, Some(&doc))?
                }
                _ => json_lines(path, text)?,
            },
            _ if text.trim().is_empty() => Vec::new(),
            _ => json_lines(path, text)?,
        };
        Self::index(path, records)
    }

    /// `records`: each with where it is in the file ("line 3", "results[2]").
    fn index(path: &Path, records: Vec<(String, FrameBoxes)>) -> Result<Boxes> {
        let mut frames = BTreeMap::new();
        let mut times = Vec::new();
        let mut first_at: BTreeMap<u64, &str> = BTreeMap::new();
        for (i, (place, r)) in records.iter().enumerate() {
            if let Some(f) = r.frame {
                if let Some(prev) = first_at.insert(f, place) {
                    return Err(Error::Invalid(format!(
                        "{}: {place}: frame {f} was already given ({prev})",
                        path.display()
                    )));
                }
                frames.insert(f, i);
            }
            if let Some(t) = r.timestamp {
                times.push((t, i));
            }
        }
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = times.windows(2).find(|w| w[0].0 == w[1].0) {
            let (a, b) = (&records[w[0].1].0, &records[w[1].1].0);
            return Err(Error::Invalid(format!(
                "{}: {b}: timestamp {} was already given ({a})",
                path.display(),
                w[1].0
            )));
        }
        Ok(Boxes {
            path: path.to_path_buf(),
            records: records.into_iter().map(|(_, r)| r).collect(),
            frames,
            times,
        })
    }

    /// The records, in file order (COCO: by frame).
    pub fn records(&self) -> &[FrameBoxes] {
        &self.records
    }

    /// Whether every record has a timestamp (lookups by time find them all).
    pub fn has_timestamps(&self) -> bool {
        self.times.len() == self.records.len()
    }

    /// The record of frame `index`.
    pub fn record_by_frame(&self, index: u64) -> Option<&FrameBoxes> {
        self.frames.get(&index).map(|&i| &self.records[i])
    }

    /// The record whose timestamp is nearest `seconds`, if it lies within `tolerance`
    /// seconds of it (ties: the earlier one).
    pub fn record_by_time(&self, seconds: f64, tolerance: f64) -> Option<&FrameBoxes> {
        if !seconds.is_finite() {
            return None;
        }
        let after = self.times.partition_point(|&(t, _)| t < seconds);
        let candidates = [after.checked_sub(1), Some(after)];
        candidates
            .into_iter()
            .flatten()
            .filter_map(|i| self.times.get(i))
            .map(|&(t, i)| ((t - seconds).abs(), i))
            .filter(|&(d, _)| d <= tolerance)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| &self.records[i])
    }

    /// The boxes of frame `index` (none when the file has no record of it).
    pub fn by_frame(&self, index: u64) -> &[ObjectBox] {
        self.record_by_frame(index)
            .map_or(&[], |r| r.objects.as_slice())
    }

    /// The boxes of the record nearest `seconds` within `tolerance` seconds (none without).
    pub fn by_time(&self, seconds: f64, tolerance: f64) -> &[ObjectBox] {
        self.record_by_time(seconds, tolerance)
            .map_or(&[], |r| r.objects.as_slice())
    }
}

fn at(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}:{line}: {msg}", path.display()))
}

fn json_lines(path: &Path, text: &str) -> Result<Vec<(String, FrameBoxes)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| at(path, n, format!("not JSON: {e}")))?;
        let r = record(&v).map_err(|m| at(path, n, m))?;
        out.push((format!("line {n}"), r));
    }
    Ok(out)
}

fn record(v: &Value) -> std::result::Result<FrameBoxes, String> {
    let Value::Object(o) = v else {
        return Err(format!("a record is a JSON object, not {}", kind(v)));
    };
    let frame = opt(o, "frame", |v| index(v, "frame"))?;
    let timestamp = opt(o, "timestamp", |v| {
        let t = number(v, "timestamp")?;
        if t < 0.0 {
            return Err(format!("timestamp {t} is negative"));
        }
        Ok(t)
    })?;
    if frame.is_none() && timestamp.is_none() {
        return Err("the record has neither `frame` nor `timestamp`".into());
    }
    let size = frame_size(o)?;
    let objects = match o.get("objects") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| object(v).map_err(|m| format!("objects[{i}]: {m}")))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(v) => return Err(format!("`objects` is an array, not {}", kind(v))),
        None => return Err("the record has no `objects` array".into()),
    };
    Ok(FrameBoxes {
        frame,
        timestamp,
        size,
        objects,
    })
}

fn frame_size(o: &Map<String, Value>) -> std::result::Result<Option<(u32, u32)>, String> {
    let side = |name: &str| {
        opt(o, name, |v| {
            let s = index(v, name)?;
            u32::try_from(s)
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| format!("`{name}` {s} is not a frame size (1 to {})", u32::MAX))
        })
    };
    match (side("width")?, side("height")?) {
        (Some(w), Some(h)) => Ok(Some((w, h))),
        (None, None) => Ok(None),
        _ => Err("`width` and `height` go together: one is missing".into()),
    }
}

fn object(v: &Value) -> std::result::Result<ObjectBox, String> {
    let Value::Object(o) = v else {
        return Err(format!("an object is a JSON object, not {}", kind(v)));
    };
    let [x, y, w, h] = bbox(o.get("box"), "box")?;
    let label = opt(o, "label", |v| match v {
        Value::String(s) => Ok(s.clone()),
        v => Err(format!("`label` is a string, not {}", kind(v))),
    })?;
    Ok(ObjectBox {
        id: opt(o, "id", |v| index(v, "id"))?,
        label: label.unwrap_or_else(|| DEFAULT_LABEL.to_string()),
        x,
        y,
        w,
        h,
        confidence: opt(o, "confidence", |v| confidence(v, "confidence"))?,
    })
}

/// `[x, y, w, h]`: four finite numbers, the sides not negative.
fn bbox(v: Option<&Value>, name: &str) -> std::result::Result<[f64; 4], String> {
    let a = match v {
        Some(Value::Array(a)) => a,
        Some(v) => return Err(format!("`{name}` is [x, y, w, h], not {}", kind(v))),
        None => return Err(format!("no `{name}`")),
    };
    if a.len() != 4 {
        return Err(format!(
            "`{name}` has {} numbers, not 4 ([x, y, w, h])",
            a.len()
        ));
    }
    let mut b = [0.0; 4];
    for (i, (v, o)) in a.iter().zip(&mut b).enumerate() {
        *o = number(v, &format!("{name}[{i}]"))?;
    }
    for (i, side) in [(2, "width"), (3, "height")] {
        if b[i] < 0.0 {
            return Err(format!("`{name}` has a negative {side}, {}", b[i]));
        }
    }
    Ok(b)
}

fn confidence(v: &Value, name: &str) -> std::result::Result<f32, String> {
    let c = number(v, name)?;
    let f = c as f32;
    if !f.is_finite() {
        return Err(format!("`{name}` {c:e} is out of range"));
    }
    Ok(f)
}

/// A field that may be absent or null.
fn opt<T>(
    o: &Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&Value) -> std::result::Result<T, String>,
) -> std::result::Result<Option<T>, String> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

fn number(v: &Value, name: &str) -> std::result::Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(x) => Err(format!("`{name}` is {x}, not a finite number")),
        None => Err(format!("`{name}` is a number, not {}", kind(v))),
    }
}

fn index(v: &Value, name: &str) -> std::result::Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("`{name}` is a whole number from 0, not {v}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// COCO results (`v`, the array), with the document they came from when there is one.
fn coco(
    path: &Path,
    v: &Value,
    doc: Option<&Map<String, Value>>,
) -> Result<Vec<(String, FrameBoxes)>> {
    let what = if doc.is_some() {
        "annotations"
    } else {
        "results"
    };
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let Value::Array(results) = v else {
        return Err(bad(format!("COCO `{what}` is an array, not {}", kind(v))));
    };
    let mut sizes: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    let mut labels: BTreeMap<u64, String> = BTreeMap::new();
    if let Some(doc) = doc {
        for (list, name) in [("images", true), ("categories", false)] {
            let items = match doc.get(list) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(a)) => a,
                Some(v) => return Err(bad(format!("COCO `{list}` is an array, not {}", kind(v)))),
            };
            for (i, item) in items.iter().enumerate() {
                let here = |m: String| bad(format!("{list}[{i}]: {m}"));
                let Value::Object(o) = item else {
                    return Err(here(format!("not an object but {}", kind(item))));
                };
                let id = index(o.get("id").unwrap_or(&Value::Null), "id").map_err(here)?;
                if name {
                    if let Some(s) = frame_size(o).map_err(here)? {
                        sizes.insert(id, s);
                    }
                } else if let Some(Value::String(n)) = o.get("name") {
                    labels.insert(id, n.clone());
                }
            }
        }
    }
    let mut frames: BTreeMap<u64, (usize, FrameBoxes)> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let (image, b) = coco_result(r, &labels).map_err(|m| bad(format!("{what}[{i}]: {m}")))?;
        let entry = frames.entry(image).or_insert_with(|| {
            (
                i,
                FrameBoxes {
                    frame: Some(image),
                    timestamp: None,
                    size: sizes.get(&image).copied(),
                    objects: Vec::new(),
                },
            )
        });
        entry.1.objects.push(b);
    }
    Ok(frames
        .into_values()
        .map(|(i, r)| (format!("{what}[{i}]"), r))
        .collect())
}

fn coco_result(
    v: &Value,
    labels: &BTreeMap<u64, String>,
) -> std::result::Result<(u64, ObjectBox), String> {
    let Value::Object(o) = v else {
        return Err(format!("a result is a JSON object, not {}", kind(v)));
    };
    let image = index(o.get("image_id").unwrap_or(&Value::Null), "image_id")?;
    let [x, y, w, h] = bbox(o.get("bbox"), "bbox")?;
    let category = opt(o, "category_id", |v| index(v, "category_id"))?.unwrap_or(1);
    let label = match labels.get(&category) {
        Some(l) => l.clone(),
        None if labels.is_empty() && category == 1 => DEFAULT_LABEL.to_string(),
        None => category.to_string(),
    };
    let b = ObjectBox {
        id: opt(o, "track_id", |v| index(v, "track_id"))?,
        label,
        x,
        y,
        w,
        h,
        confidence: opt(o, "score", |v| confidence(v, "score"))?,
    };
    Ok((image, b))
}

#[cfg(test)]
mod tests;
