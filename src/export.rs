//! Per-frame export records, shared by the GStreamer elements and the CLI so that they write
//! the same fields: the JSON lines schema ([`Record`], [`SCHEMA`]), a line writer that keeps
//! a file made of complete lines ([`LineWriter`]), and COCO keypoint results ([`coco`]).
//!
//! # JSON lines, schema `stablekeypoints-frame/1`
//!
//! One JSON object per frame, one line each (field order as below):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | string | `stablekeypoints-frame/1`; the number grows when a field changes meaning or goes away (new fields may appear without it) |
//! | `frame` | uint | index of the buffer since the element started (every buffer counts, also those without keypoints), or with the publish element's `frame-index=timestamp` the source's frame index (stream time x frame rate); for `detect`, of the image on the command line |
//! | `image` | string, optional | `detect` only: the image file |
//! | `pts` | uint or null | buffer timestamp, nanoseconds |
//! | `stream_time`, `running_time` | uint or null | the timestamp in the segment's stream and running time, nanoseconds |
//! | `duration` | uint or null | buffer duration, nanoseconds |
//! | `width`, `height` | uint | size in pixels of the frame that `x`, `y` refer to |
//! | `inferred` | bool | true when the keypoints were not computed from this frame (held, interpolated, skipped for QoS) |
//! | `object_id`, `label`, `roi` | uint, string, array | schema `/2` only, see below |
//! | `keypoints` | array | one [`KeypointRecord`] per keypoint, in token order |
//! | `pose` | array, optional | with a pose file: one [`LandmarkRecord`] per landmark, in the pose file's order |
//! | `skeleton` | array, optional | with a pose file: landmark index pairs `[a, b]` (0-based) |
//!
//! A keypoint is `{"id", "x", "y", "nx", "ny", "confidence", "visible"}`: `id` the token's
//! id (stable across frames), `x`, `y` pixels of the `width` x `height` frame (origin at the
//! top-left corner of the top-left pixel, so the centre of pixel (0, 0) is (0.5, 0.5)),
//! `nx`, `ny` the same divided by `width`, `height`, `confidence` the peak of the keypoint's
//! averaged attention map (higher = surer) and `visible` whether it reaches the element's
//! `keypoint-threshold`. A landmark is `{"name", "x", "y", "nx", "ny"}` (regressed, so it may
//! lie outside the frame). Numbers that are not finite are written as `null`.
//!
//! # Schema `stablekeypoints-frame/2`: one record per object
//!
//! With keypoints per object (top-down inference on an upstream detector's boxes) a frame
//! has one record per object, each under schema `stablekeypoints-frame/2` ([`OBJECT_SCHEMA`]):
//! the fields of `/1` (all of the frame's records share `frame` and the times; `keypoints` and
//! `pose` are the object's, still in pixels and normalised to the whole frame) plus
//! `object_id` (uint, the object's id, stable across frames), `label` (string, the detector's
//! label, e.g. `person`) and `roi` (`[x, y, w, h]`, the object's box normalised to the
//! frame). The whole frame's keypoints (full-frame inference) stay one `/1` record per frame,
//! so a reader of `/1` that checks `schema` never mistakes an object for a frame.

pub mod coco;

use serde::{Deserialize, Deserializer, Serialize};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// Value of the `schema` field of a frame's record (the whole frame's keypoints).
pub const SCHEMA: &str = "stablekeypoints-frame/1";
/// Value of the `schema` field of an object's record (one per object of a frame).
pub const OBJECT_SCHEMA: &str = "stablekeypoints-frame/2";

/// The keypoints of one frame, as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub frame: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub pts: Option<u64>,
    pub stream_time: Option<u64>,
    pub running_time: Option<u64>,
    pub duration: Option<u64>,
    pub width: u32,
    pub height: u32,
    pub inferred: bool,
    /// The object's fields (schema [`OBJECT_SCHEMA`]); `None` for a whole frame's record.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRecord>,
    pub keypoints: Vec<KeypointRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pose: Option<Vec<LandmarkRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skeleton: Option<Vec<[u32; 2]>>,
}

/// The object a [`Record`] of schema [`OBJECT_SCHEMA`] is that of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Stable across frames.
    pub object_id: u64,
    /// The detector's label.
    pub label: String,
    /// The object's box `[x, y, w, h]`, normalised to the frame.
    pub roi: [f32; 4],
}

/// One keypoint of a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeypointRecord {
    pub id: u32,
    #[serde(deserialize_with = "nullable")]
    pub x: f32,
    #[serde(deserialize_with = "nullable")]
    pub y: f32,
    #[serde(deserialize_with = "nullable")]
    pub nx: f32,
    #[serde(deserialize_with = "nullable")]
    pub ny: f32,
    #[serde(deserialize_with = "nullable")]
    pub confidence: f32,
    pub visible: bool,
}

/// One landmark of a [`Record`]'s pose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LandmarkRecord {
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub x: f32,
    #[serde(deserialize_with = "nullable")]
    pub y: f32,
    #[serde(deserialize_with = "nullable")]
    pub nx: f32,
    #[serde(deserialize_with = "nullable")]
    pub ny: f32,
}

/// serde_json writes non-finite floats as `null`; read them back as NaN.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

impl KeypointRecord {
    /// A keypoint at normalised (`nx`, `ny`) of a `width` x `height` frame.
    pub fn new(
        id: u32,
        nx: f32,
        ny: f32,
        confidence: f32,
        visible: bool,
        width: u32,
        height: u32,
    ) -> Self {
        Self {
            id,
            x: nx * width as f32,
            y: ny * height as f32,
            nx,
            ny,
            confidence,
            visible,
        }
    }
}

impl LandmarkRecord {
    /// A landmark at normalised (`nx`, `ny`) of a `width` x `height` frame.
    pub fn new(name: &str, nx: f32, ny: f32, width: u32, height: u32) -> Self {
        Self {
            name: name.to_string(),
            x: nx * width as f32,
            y: ny * height as f32,
            nx,
            ny,
        }
    }
}

impl Record {
    /// The record of a still image, the `frame`-th (no timestamps; computed from it, so
    /// not `inferred`): `keypoints` as the detector gives them (normalised), in pixels of a
    /// `width` x `height` image, visible from `threshold` up.
    pub fn still(
        frame: u64,
        image: Option<&str>,
        width: u32,
        height: u32,
        keypoints: &[crate::Keypoint],
        threshold: f32,
    ) -> Self {
        Self {
            schema: SCHEMA.into(),
            frame,
            image: image.map(str::to_string),
            pts: None,
            stream_time: None,
            running_time: None,
            duration: None,
            width,
            height,
            inferred: false,
            object: None,
            keypoints: keypoints
                .iter()
                .map(|k| {
                    let visible = k.score >= threshold;
                    KeypointRecord::new(k.id as u32, k.x, k.y, k.score, visible, width, height)
                })
                .collect(),
            pose: None,
            skeleton: None,
        }
    }

    /// Adds the landmarks `pose` regresses from the record's keypoints (as the elements'
    /// `pose` does: from `nx`, `ny`, in token order), with its names and skeleton.
    pub fn add_pose(
        &mut self,
        pose: &crate::pose::PoseModel,
        regressor: &crate::pose::Regressor,
    ) -> crate::Result<()> {
        if self.keypoints.len() != regressor.num_keypoints {
            return Err(crate::Error::Invalid(format!(
                "the pose reads {} keypoints but the record has {}",
                regressor.num_keypoints,
                self.keypoints.len()
            )));
        }
        let xy: Vec<[f64; 2]> = self
            .keypoints
            .iter()
            .map(|k| [f64::from(k.nx), f64::from(k.ny)])
            .collect();
        let (w, h) = (self.width, self.height);
        self.pose = Some(
            pose.names
                .iter()
                .zip(regressor.predict(&xy))
                .map(|(name, [x, y])| LandmarkRecord::new(name, x as f32, y as f32, w, h))
                .collect(),
        );
        self.skeleton = Some(
            pose.skeleton
                .iter()
                .map(|&[a, b]| [a as u32, b as u32])
                .collect(),
        );
        Ok(())
    }

    /// The record as one line: compact JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("records always serialise");
        line.push(b'\n');
        line
    }
}

/// Outputs a [`LineWriter`] writes to: they can drop a partly written line and make what
/// was written durable.
pub trait LineOutput: Write {
    /// Cuts the output back to its first `len` bytes (after a failed write).
    fn cut_back(&mut self, len: u64) -> io::Result<()>;
    /// Flushes, and for files also syncs to disk.
    fn sync(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl LineOutput for File {
    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(drop)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sync_data()
    }
}

/// A pipe or terminal cannot take bytes back; lines still go out in one write each.
impl LineOutput for io::Stdout {
    fn cut_back(&mut self, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

impl LineOutput for Vec<u8> {
    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.truncate(len as usize);
        Ok(())
    }
}

/// Writes lines with one `write` each, so that a crash never leaves half a line. A failed
/// write (disk full, file size limit) may still have written part of the line: the output is
/// cut back to its complete lines, so it stays well formed.
pub struct LineWriter<W: LineOutput> {
    out: W,
    /// Bytes of complete lines written.
    complete: u64,
}

impl LineWriter<File> {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &std::path::Path) -> io::Result<Self> {
        Ok(Self::new(File::create(path)?))
    }
}

impl<W: LineOutput> LineWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, complete: 0 }
    }

    /// Writes `line` (which must end with a newline) in one write.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        debug_assert!(line.ends_with(b"\n"));
        match self.out.write_all(line) {
            Ok(()) => {
                self.complete += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.out.cut_back(self.complete);
                Err(e)
            }
        }
    }

    /// Writes `record` as one line.
    pub fn write_record(&mut self, record: &Record) -> io::Result<()> {
        self.write_line(&record.to_line())
    }

    /// Flushes (and syncs a file).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.sync()
    }

    /// Bytes of complete lines written so far.
    pub fn written(&self) -> u64 {
        self.complete
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with hand-chosen values: a 100 x 50 frame, three keypoints, optionally a
    /// pose of three landmarks (the last one outside the frame).
    pub(crate) fn sample(frame: u64, pose: bool) -> Record {
        let (w, h) = (100, 50);
        Record {
            schema: SCHEMA.into(),
            frame,
            image: None,
            pts: Some(frame * 40_000_000),
            stream_time: Some(frame * 40_000_000),
            running_time: None,
            duration: Some(40_000_000),
            width: w,
            height: h,
            inferred: frame % 2 == 1,
            object: None,
            keypoints: vec![
                KeypointRecord::new(3, 0.105, 0.2, 0.5, true, w, h),
                KeypointRecord::new(7, 0.5, 0.9, 0.01, false, w, h),
                KeypointRecord::new(9, 0.3, 0.6, 0.25, true, w, h),
            ],
            pose: pose.then(|| {
                vec![
                    LandmarkRecord::new("head", 0.5, 0.1, w, h),
                    LandmarkRecord::new("hip", 0.45, 0.6, w, h),
                    LandmarkRecord::new("foot", 1.2, -0.1, w, h),
                ]
            }),
            skeleton: pose.then(|| vec![[0, 1], [1, 2]]),
        }
    }

    #[test]
    fn a_still_images_record_with_hand_computed_pixels_visibility_and_landmarks() {
        use crate::pose::{PoseModel, Regressor};
        let kp = |id, x, y, score| crate::Keypoint { id, x, y, score };
        let keypoints = [kp(4, 0.25, 0.5, 0.5), kp(8, 0.75, 0.1, 0.2)];
        let mut r = Record::still(3, Some("a.png"), 200, 100, &keypoints, 0.3);
        assert_eq!((r.frame, r.image.as_deref()), (3, Some("a.png")));
        assert_eq!((r.pts, r.duration, r.inferred), (None, None, false));
        let k = r.keypoints[1];
        assert_eq!(
            (k.id, k.x, k.y, k.nx, k.confidence),
            (8, 150.0, 10.0, 0.75, 0.2)
        );
        assert_eq!((r.keypoints[0].visible, k.visible), (true, false));
        // Landmark 0 = keypoint 1; landmark 1 = (1 - x0, y0): 0.5 + (x - 0.5) W.
        let mut w = vec![0.0; 4 * 4];
        w[2 * 4] = 1.0; // x1 -> l0.x
        w[3 * 4 + 1] = 1.0; // y1 -> l0.y
        w[2] = -1.0; // x0 -> l1.x
        w[4 + 3] = 1.0; // y0 -> l1.y
        let reg = Regressor {
            num_keypoints: 2,
            num_landmarks: 2,
            weights: w,
        };
        let names = Some(vec!["a".to_string(), "b".to_string()]);
        let pose = PoseModel::new(&reg, vec![4, 8], names, vec![[0, 1]]).unwrap();
        r.add_pose(&pose, &reg).unwrap();
        let l = r.pose.as_ref().unwrap();
        assert_eq!((l[0].name.as_str(), l[0].nx), ("a", 0.75));
        assert!((l[0].ny - 0.1).abs() < 1e-7);
        assert_eq!((l[1].nx, l[1].ny, l[1].x, l[1].y), (0.75, 0.5, 150.0, 50.0));
        assert_eq!(r.skeleton, Some(vec![[0, 1]]));
        let v: serde_json::Value = serde_json::from_slice(&r.to_line()).unwrap();
        assert_eq!(v["image"], "a.png");
        // Other keypoint counts are refused.
        let mut one = Record::still(0, None, 10, 10, &keypoints[..1], 0.0);
        assert!(one.add_pose(&pose, &reg).is_err());
        let v: serde_json::Value = serde_json::from_slice(&one.to_line()).unwrap();
        assert!(!v.as_object().unwrap().contains_key("image"));
    }

    #[test]
    fn a_record_is_one_line_with_the_documented_fields_and_parses_back() {
        let r = sample(2, false);
        let line = r.to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let mut want = [
            "schema",
            "frame",
            "pts",
            "stream_time",
            "running_time",
            "duration",
            "width",
            "height",
            "inferred",
            "keypoints",
        ];
        want.sort();
        assert_eq!(keys, want, "no pose fields without a pose");
        // The schema field leads the line, so a reader can dispatch on a prefix.
        assert!(line.starts_with(b"{\"schema\":\"stablekeypoints-frame/1\",\"frame\":2,"));
        assert_eq!(v["pts"], 80_000_000);
        assert!(v["running_time"].is_null());
        assert_eq!(v["inferred"], false);
        let k = &v["keypoints"][0];
        assert_eq!(k["id"], 3);
        // 0.105 * 100 and 0.2 * 50 in f32, written as the shortest f32 decimal.
        assert_eq!(k["x"].as_f64().unwrap() as f32, 0.105f32 * 100.0);
        assert_eq!(k["y"].as_f64().unwrap(), 10.0);
        assert_eq!(k["nx"].as_f64().unwrap(), 0.105);
        assert_eq!(k["visible"], true);
        assert_eq!(v["keypoints"][1]["visible"], false);
        let back: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn pose_fields_and_non_finite_numbers() {
        let mut r = sample(0, true);
        r.keypoints[1].confidence = f32::NAN;
        let v: serde_json::Value = serde_json::from_slice(&r.to_line()).unwrap();
        assert_eq!(v["skeleton"], serde_json::json!([[0, 1], [1, 2]]));
        assert_eq!(v["pose"][2]["name"], "foot");
        assert_eq!(v["pose"][2]["nx"].as_f64().unwrap() as f32, 1.2f32);
        assert_eq!(v["pose"][2]["y"].as_f64().unwrap(), -5.0);
        assert!(v["keypoints"][1]["confidence"].is_null());
        let back: Record = serde_json::from_slice(&r.to_line()).unwrap();
        assert!(back.keypoints[1].confidence.is_nan());
        assert_eq!(back.pose, r.pose);
    }

    /// Accepts `limit` bytes, then fails in the middle of a write, as a full disk does.
    struct Full {
        data: Vec<u8>,
        limit: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.limit - self.data.len();
            if room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            let n = room.min(buf.len());
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LineOutput for Full {
        fn cut_back(&mut self, len: u64) -> io::Result<()> {
            self.data.truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_leaves_only_complete_lines() {
        let len = |f| sample(f, false).to_line().len();
        let mut w = LineWriter::new(Full {
            data: Vec::new(),
            limit: len(0) + len(1) + len(2) / 2,
        });
        w.write_record(&sample(0, false)).unwrap();
        w.write_record(&sample(1, false)).unwrap();
        assert!(w.write_record(&sample(2, false)).is_err());
        assert_eq!(w.written(), (len(0) + len(1)) as u64);
        let text = String::from_utf8(w.get_ref().data.clone()).unwrap();
        assert!(text.ends_with('\n'));
        let frames: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().frame)
            .collect();
        assert_eq!(frames, [0, 1]);
    }

    #[test]
    fn files_are_cut_back_to_complete_lines() {
        let dir = std::env::temp_dir().join(format!("skp-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.jsonl");
        let mut w = LineWriter::create(&path).unwrap();
        w.write_record(&sample(0, true)).unwrap();
        let good = std::fs::read(&path).unwrap();
        // A partial line on disk (as a write cut short leaves it) is removed again.
        w.out.write_all(b"{\"schema\":").unwrap();
        w.out.cut_back(w.written()).unwrap();
        w.write_record(&sample(1, true)).unwrap();
        w.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(std::str::from_utf8(&good).unwrap()));
        assert_eq!(text.lines().count(), 2);
        for l in text.lines() {
            serde_json::from_str::<Record>(l).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
