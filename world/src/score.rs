//! Compares the element's JSON lines (`pose` landmarks per frame) with a clip's true joints.

use crate::figure::{JOINTS, NUM_JOINTS};
use crate::render::Render;
use std::path::Path;

/// Mean landmark error over the visible joints of a clip.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub frames: usize,
    pub joints: usize,
    /// Mean L2 error in pixels of the clip's frames.
    pub mean_px: f64,
    /// Per joint, in `JOINTS` order (NaN where never visible).
    pub per_joint_px: [f64; NUM_JOINTS],
}

/// Parses a label CSV written by `skp-world` (header, then image and x,y per joint).
pub fn read_labels(path: &Path) -> Result<Vec<Joints>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 1 + 2 * NUM_JOINTS {
            return Err(format!(
                "{}:{}: {} fields, expected {}",
                path.display(),
                n + 1,
                f.len(),
                1 + 2 * NUM_JOINTS
            ));
        }
        let mut row = [None; NUM_JOINTS];
        for (j, r) in row.iter_mut().enumerate() {
            let (x, y) = (f[1 + 2 * j], f[2 + 2 * j]);
            if !x.is_empty() {
                let p = |s: &str| {
                    s.parse::<f64>()
                        .map_err(|_| format!("{}:{}: bad number {s:?}", path.display(), n + 1))
                };
                *r = Some([p(x)?, p(y)?]);
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Scores `jsonl` (one record per frame, in frame order, with `pose`) against `labels`.
pub fn score(labels: &Path, jsonl: &Path) -> Result<Score, String> {
    let truth = read_labels(labels)?;
    let text = std::fs::read_to_string(jsonl).map_err(|e| format!("{}: {e}", jsonl.display()))?;
    let (mut sum, mut n) = ([0.0f64; NUM_JOINTS], [0usize; NUM_JOINTS]);
    let mut frames = 0;
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("{}:{}: {m}", jsonl.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
        let frame = v["frame"].as_u64().ok_or_else(|| at("no `frame`"))? as usize;
        let row = truth
            .get(frame)
            .ok_or_else(|| at(&format!("frame {frame} has no label")))?;
        let pose = v["pose"]
            .as_array()
            .ok_or_else(|| at("no `pose` (run the element with pose=...)"))?;
        for lm in pose {
            let name = lm["name"].as_str().unwrap_or_default();
            let Some(j) = JOINTS.iter().position(|&n| n == name) else {
                return Err(at(&format!("unknown landmark {name:?}")));
            };
            let (x, y) = (lm["x"].as_f64(), lm["y"].as_f64());
            if let (Some([tx, ty]), Some(x), Some(y)) = (row[j], x, y) {
                sum[j] += ((x - tx).powi(2) + (y - ty).powi(2)).sqrt();
                n[j] += 1;
            }
        }
        frames += 1;
    }
    let joints = n.iter().sum::<usize>();
    if joints == 0 {
        return Err(format!("{}: no visible joint scored", jsonl.display()));
    }
    Ok(Score {
        frames,
        joints,
        mean_px: sum.iter().sum::<f64>() / joints as f64,
        per_joint_px: std::array::from_fn(|j| sum[j] / n[j] as f64),
    })
}

/// Scores per-object records (`stablekeypoints-frame/2`, with `object_id` and `pose`)
/// against a multi-figure clip's `people.jsonl`: each record's landmarks against the true
/// joints of the figure whose id is its `object_id` (the boxes files that `skp-world people`
/// writes give the figures' ids to the objects). Per figure, by id.
pub fn score_people(people: &Path, jsonl: &Path) -> Result<Vec<(u64, Score)>, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    // (frame, id) -> true joints, visible ones only.
    let mut truth = std::collections::HashMap::new();
    for (i, line) in read(people)?.lines().enumerate() {
        let at = |m: &str| format!("{}:{}: {m}", people.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
        let frame = v["frame"].as_u64().ok_or_else(|| at("no `frame`"))?;
        for p in v["people"].as_array().ok_or_else(|| at("no `people`"))? {
            let id = p["id"]
                .as_u64()
                .ok_or_else(|| at("a person without `id`"))?;
            let joints: Vec<Option<[f64; 2]>> = (0..NUM_JOINTS)
                .map(|j| {
                    let xy = &p["joints"][j];
                    (p["visible"][j].as_bool() == Some(true))
                        .then(|| Some([xy[0].as_f64()?, xy[1].as_f64()?]))
                        .flatten()
                })
                .collect();
            truth.insert((frame, id), joints);
        }
    }
    let mut per: std::collections::BTreeMap<u64, ([f64; NUM_JOINTS], [usize; NUM_JOINTS], usize)> =
        Default::default();
    for (i, line) in read(jsonl)?.lines().enumerate() {
        let at = |m: &str| format!("{}:{}: {m}", jsonl.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
        let frame = v["frame"].as_u64().ok_or_else(|| at("no `frame`"))?;
        let id = v["object_id"]
            .as_u64()
            .ok_or_else(|| at("no `object_id` (run the element with inference-region=roi-list)"))?;
        let Some(row) = truth.get(&(frame, id)) else {
            return Err(at(&format!("object {id} is no figure of frame {frame}")));
        };
        let pose = v["pose"]
            .as_array()
            .ok_or_else(|| at("no `pose` (run the element with pose=...)"))?;
        let (sum, n, frames) = per
            .entry(id)
            .or_insert(([0.0; NUM_JOINTS], [0; NUM_JOINTS], 0));
        *frames += 1;
        for lm in pose {
            let name = lm["name"].as_str().unwrap_or_default();
            let Some(j) = JOINTS.iter().position(|&n| n == name) else {
                return Err(at(&format!("unknown landmark {name:?}")));
            };
            if let (Some([tx, ty]), Some(x), Some(y)) = (row[j], lm["x"].as_f64(), lm["y"].as_f64())
            {
                sum[j] += (x - tx).hypot(y - ty);
                n[j] += 1;
            }
        }
    }
    if per.is_empty() {
        return Err(format!("{}: no object records", jsonl.display()));
    }
    Ok(per
        .into_iter()
        .map(|(id, (sum, n, frames))| {
            let joints = n.iter().sum::<usize>();
            (
                id,
                Score {
                    frames,
                    joints,
                    mean_px: sum.iter().sum::<f64>() / joints.max(1) as f64,
                    per_joint_px: std::array::from_fn(|j| sum[j] / n[j] as f64),
                },
            )
        })
        .collect())
}

/// The mean-pose baseline of a labelled split: every test image gets the training split's
/// mean position of each joint (over the images where it is visible).
#[derive(Clone, Debug, PartialEq)]
pub struct MeanPose {
    /// `eval --metric taichi`: per image the sum over visible joints of the L2 error in
    /// pixels of the image scaled to 256x256, mean over the test images.
    pub taichi: f64,
    /// Mean L2 error in pixels of the images over all visible test joints.
    pub mean_px: f64,
    pub per_joint_px: [f64; NUM_JOINTS],
}

pub fn mean_pose(train: &Path, test: &Path, image_size: f64) -> Result<MeanPose, String> {
    mean_pose_of(&read_labels(train)?, &read_labels(test)?, image_size)
}

/// One image's joints in pixels, `None` where not visible (a row of a label CSV).
pub type Joints = [Option<[f64; 2]>; NUM_JOINTS];

/// A render's visible joints.
pub fn joints_of(r: &Render) -> Joints {
    std::array::from_fn(|j| {
        r.visible[j].then(|| [f64::from(r.joints[j][0]), f64::from(r.joints[j][1])])
    })
}

/// [`mean_pose`] of label rows.
pub fn mean_pose_of(
    train: &[Joints],
    test: &[Joints],
    image_size: f64,
) -> Result<MeanPose, String> {
    let mut mean = [[0.0f64; 2]; NUM_JOINTS];
    let mut count = [0usize; NUM_JOINTS];
    for row in train {
        for (j, p) in row.iter().enumerate() {
            if let Some([x, y]) = p {
                mean[j][0] += x;
                mean[j][1] += y;
                count[j] += 1;
            }
        }
    }
    for j in 0..NUM_JOINTS {
        if count[j] == 0 {
            return Err(format!("joint {} is never visible in training", JOINTS[j]));
        }
        mean[j] = [mean[j][0] / count[j] as f64, mean[j][1] / count[j] as f64];
    }
    let (mut sum, mut n) = ([0.0f64; NUM_JOINTS], [0usize; NUM_JOINTS]);
    let mut taichi = 0.0;
    for row in test {
        for (j, p) in row.iter().enumerate() {
            if let Some([x, y]) = p {
                let e = ((x - mean[j][0]).powi(2) + (y - mean[j][1]).powi(2)).sqrt();
                sum[j] += e;
                n[j] += 1;
                taichi += e * 256.0 / image_size;
            }
        }
    }
    Ok(MeanPose {
        taichi: taichi / test.len().max(1) as f64,
        mean_px: sum.iter().sum::<f64>() / n.iter().sum::<usize>().max(1) as f64,
        per_joint_px: std::array::from_fn(|j| sum[j] / n[j] as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label row with `head` at (hx, hy), `neck` at (10, 10) and every other joint hidden.
    fn row(name: &str, hx: f64, hy: f64) -> String {
        format!("{name},{hx},{hy},10,10{}\n", ",,".repeat(NUM_JOINTS - 2))
    }

    /// A label row with `head` at (hx, hy) and every other joint visible at (10, 10).
    fn full_row(name: &str, hx: f64, hy: f64) -> String {
        format!("{name},{hx},{hy}{}\n", ",10,10".repeat(NUM_JOINTS - 1))
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("skp-world-score-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn score_is_the_mean_distance_over_visible_joints() {
        let d = tmp("score");
        let labels = write(
            &d,
            "labels.csv",
            &(crate::io::label_header() + &row("a", 0.0, 0.0) + &row("b", 4.0, 4.0)),
        );
        // Frame 0: head 5 px off (3-4-5), neck exact; frame 1: head exact, neck 2 px off;
        // a landmark of a hidden joint (left_ankle) is not scored.
        let lm = |n: &str, x: f64, y: f64| format!(r#"{{"name":"{n}","x":{x},"y":{y}}}"#);
        let jsonl = write(
            &d,
            "k.jsonl",
            &format!(
                "{{\"frame\":0,\"pose\":[{},{},{}]}}\n{{\"frame\":1,\"pose\":[{},{}]}}\n",
                lm("head", 3.0, 4.0),
                lm("neck", 10.0, 10.0),
                lm("left_ankle", 99.0, 99.0),
                lm("head", 4.0, 4.0),
                lm("neck", 12.0, 10.0)
            ),
        );
        let s = score(&labels, &jsonl).unwrap();
        assert_eq!((s.frames, s.joints), (2, 4));
        assert!((s.mean_px - 7.0 / 4.0).abs() < 1e-12, "{}", s.mean_px);
        assert!((s.per_joint_px[0] - 2.5).abs() < 1e-12);
        assert!((s.per_joint_px[1] - 1.0).abs() < 1e-12);
        assert!(s.per_joint_px[12].is_nan());

        let bad = write(&d, "bad.jsonl", "{\"frame\":0}\n");
        let e = score(&labels, &bad).unwrap_err();
        assert!(e.contains("bad.jsonl:1") && e.contains("pose"), "{e}");
        let late = write(&d, "late.jsonl", "{\"frame\":7,\"pose\":[]}\n");
        assert!(score(&labels, &late)
            .unwrap_err()
            .contains("frame 7 has no label"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn mean_pose_predicts_the_training_mean() {
        let d = tmp("mean");
        // Training head positions (0,0) and (4,0): mean (2,0); every other joint at (10,10).
        let train = write(
            &d,
            "train.csv",
            &(crate::io::label_header() + &full_row("a", 0.0, 0.0) + &full_row("b", 4.0, 0.0)),
        );
        let test = write(
            &d,
            "test.csv",
            &(crate::io::label_header() + &full_row("c", 2.0, 3.0) + &full_row("d", 2.0, 0.0)),
        );
        let m = mean_pose(&train, &test, 128.0).unwrap();
        // Head errors 3 and 0, the others 0: per image sums 3 and 0 at 128, 6 and 0 at 256.
        assert!((m.taichi - 3.0).abs() < 1e-12, "{}", m.taichi);
        assert!((m.mean_px - 3.0 / (2 * NUM_JOINTS) as f64).abs() < 1e-12);
        assert!((m.per_joint_px[0] - 1.5).abs() < 1e-12);
        let e = mean_pose(
            &write(&d, "short.csv", &(crate::io::label_header() + "a,1,2\n")),
            &test,
            128.0,
        )
        .unwrap_err();
        assert!(e.contains("short.csv:2") && e.contains("fields"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }
}
