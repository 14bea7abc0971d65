//! `skp-world people` and `jitter`: clips of several figures with their true boxes, joints
//! and visibility, and boxes moved as a detector's would be.

use serde_json::Value;
use skp_world::io::{write_people, OVERLAP_IOU};
use skp_world::people::{jitter, People};
use stablekeypoints::boxes::Boxes;
use std::path::{Path, PathBuf};

const FRAMES: usize = 60;

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("people-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the clip of `seed` with `figures` figures; its folder and overlap share.
fn clip(name: &str, seed: u64, figures: usize) -> (PathBuf, f64) {
    let dir = scratch(name);
    let people = People::new(seed, figures, FRAMES, 15.0, 512, 256);
    let share = write_people(&dir, &people, FRAMES).unwrap();
    (dir, share)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn boxes_enclose_every_visible_joint_and_match_boxes_jsonl() {
    let (dir, _) = clip("enclose", 1, 3);
    let people = lines(&dir.join("people.jsonl"));
    assert_eq!(people.len(), FRAMES);
    let boxes = Boxes::read(&dir.join("boxes.jsonl")).unwrap();
    let mut checked = 0;
    for (i, rec) in people.iter().enumerate() {
        assert_eq!(rec["frame"], i);
        assert_eq!(
            (rec["width"].as_u64(), rec["height"].as_u64()),
            (Some(512), Some(256))
        );
        let objects = boxes.by_frame(i as u64);
        let persons = rec["people"].as_array().unwrap();
        assert_eq!(objects.len(), persons.len(), "frame {i}");
        for (p, o) in persons.iter().zip(objects) {
            let b: Vec<f64> = p["box"].as_array().unwrap().iter().map(f).collect();
            assert_eq!([o.x, o.y, o.w, o.h], [b[0], b[1], b[2], b[3]]);
            assert_eq!((o.id, o.label.as_str()), (p["id"].as_u64(), "person"));
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[0] + b[2] <= 512.0 && b[1] + b[3] <= 256.0);
            assert!(b[2] > 0.0 && b[3] > 0.0);
            let joints = p["joints"].as_array().unwrap();
            let visible = p["visible"].as_array().unwrap();
            assert_eq!((joints.len(), visible.len()), (14, 14));
            for (j, v) in joints.iter().zip(visible) {
                if v.as_bool().unwrap() {
                    let (x, y) = (f(&j[0]), f(&j[1]));
                    assert!(
                        x >= b[0] && x <= b[0] + b[2] && y >= b[1] && y <= b[1] + b[3],
                        "frame {i}: joint ({x}, {y}) outside {b:?}"
                    );
                    checked += 1;
                }
            }
        }
        let t = boxes.record_by_frame(i as u64).unwrap().timestamp.unwrap();
        assert!((t - i as f64 / 15.0).abs() < 1e-12);
    }
    assert!(checked > FRAMES * 14, "{checked} visible joints");
}

#[test]
fn figures_overlap_in_a_third_of_the_frames_for_the_documented_seed() {
    for figures in [2, 3] {
        let (_, share) = clip(&format!("overlap{figures}"), 1, figures);
        assert!(share >= 1.0 / 3.0, "{figures} figures: {share}");
    }
    let (_, share) = clip("overlap1", 1, 1);
    assert_eq!(share, 0.0, "one figure overlaps nothing");
    assert_eq!(OVERLAP_IOU, 0.3);
}

#[test]
fn figures_enter_leave_and_hide_each_other() {
    let (dir, _) = clip("edges", 1, 2);
    let people = lines(&dir.join("people.jsonl"));
    let counts: Vec<usize> = people
        .iter()
        .map(|r| r["people"].as_array().unwrap().len())
        .collect();
    assert!(counts.contains(&1) && counts.contains(&2), "{counts:?}");
    let hidden = |edge: bool| {
        people.iter().any(|r| {
            r["people"].as_array().unwrap().iter().any(|p| {
                let b: Vec<f64> = p["box"].as_array().unwrap().iter().map(f).collect();
                let at_edge = b[0] == 0.0 || b[0] + b[2] == 512.0;
                let seen = p["visible"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| v.as_bool().unwrap())
                    .count();
                at_edge == edge && seen < 14
            })
        })
    };
    assert!(
        hidden(true),
        "a figure partly outside has fewer than 14 visible joints"
    );
    assert!(hidden(false), "a figure inside hidden by the other");
    // Alone, each figure is in its own frames, the same place.
    for p in 0..2 {
        assert!(dir
            .join(format!("alone/{p}/frames/{:05}.png", FRAMES - 1))
            .is_file());
    }
    let both = image::open(dir.join("frames/00030.png")).unwrap().to_rgb8();
    let alone = image::open(dir.join("alone/0/frames/00030.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(both.dimensions(), (512, 256));
    assert_eq!(alone.dimensions(), (512, 256));
    assert_eq!(
        both.get_pixel(0, 0),
        alone.get_pixel(0, 0),
        "the same background"
    );
}

#[test]
fn clips_are_a_function_of_the_seed() {
    let (a, _) = clip("same-a", 5, 3);
    let (b, _) = clip("same-b", 5, 3);
    let (c, _) = clip("other", 6, 3);
    for file in [
        "people.jsonl",
        "boxes.jsonl",
        "frames/00017.png",
        "alone/2/frames/00040.png",
    ] {
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
        assert_eq!(read(&a), read(&b), "{file}");
        assert_ne!(read(&a), read(&c), "{file}");
    }
}

#[test]
fn jitter_moves_boxes_by_at_most_the_amount() {
    let (dir, _) = clip("jitter", 1, 3);
    let text = std::fs::read_to_string(dir.join("boxes.jsonl")).unwrap();
    let amount = 0.1;
    let out = jitter(&text, amount, 9).unwrap();
    assert_eq!(out, jitter(&text, amount, 9).unwrap(), "deterministic");
    assert_ne!(out, jitter(&text, amount, 10).unwrap());
    let before = Boxes::parse(Path::new("in"), text.as_bytes()).unwrap();
    let after = Boxes::parse(Path::new("out"), out.as_bytes()).unwrap();
    let (mut moved, mut n) = (0.0f64, 0);
    for (r, s) in before.records().iter().zip(after.records()) {
        assert_eq!(
            (r.frame, r.timestamp, r.size),
            (s.frame, s.timestamp, s.size)
        );
        assert_eq!(r.objects.len(), s.objects.len());
        for (o, j) in r.objects.iter().zip(&s.objects) {
            assert_eq!((o.id, &o.label), (j.id, &j.label));
            let eps = 1e-9;
            let (dx, dy) = (
                (j.x + j.w / 2.0) - (o.x + o.w / 2.0),
                (j.y + j.h / 2.0) - (o.y + o.h / 2.0),
            );
            assert!(dx.abs() <= amount * o.w + eps && dy.abs() <= amount * o.h + eps);
            assert!((j.w / o.w - 1.0).abs() <= amount + eps);
            assert!((j.h / o.h - 1.0).abs() <= amount + eps);
            moved += dx.abs() / o.w;
            n += 1;
        }
    }
    assert!(
        n > 0 && moved / n as f64 > 0.2 * amount,
        "the boxes do move"
    );
    // Other fields are kept; a line that is not JSON is named.
    let kept = jitter(
        "{\"frame\": 1, \"objects\": [{\"box\": [0, 0, 10, 10], \"x\": 1}], \"note\": \"a\"}\n",
        0.0,
        1,
    )
    .unwrap();
    assert_eq!(
        kept,
        "{\"frame\":1,\"objects\":[{\"box\":[0.0,0.0,10.0,10.0],\"x\":1}],\"note\":\"a\"}\n"
    );
    assert!(jitter("\n{]", 0.1, 1).unwrap_err().starts_with("line 2: "));
}
