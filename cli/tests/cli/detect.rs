//! `init-model` + `detect` end to end: parity with the diffusers golden, the same image gets
//! the same keypoints wherever it appears, EXIF orientation, byte-identical outputs, JSON
//! records and COCO that agree, a pose, and one record per object with `--boxes`.

use super::*;

#[test]
fn init_model_then_detect_end_to_end() {
    let d = temp_dir("e2e");
    let out = run(bin()
        .args(["init-model", "--out"])
        .arg(d.join("m"))
        .args(["--seed", "3"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = d.join("m");
    for f in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "tokens.safetensors",
    ] {
        assert!(m.join(f).is_file(), "{f} missing");
    }
    let wide = data("tiny-sd1/image_wide.png");
    let out = detect(
        &m,
        &m.join("tokens.safetensors"),
        &["--json", "--augmentations", "2"],
        &[&wide, &wide],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one record per image: {text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["width"], 160);
    assert_eq!(v["height"], 120);
    let kps = v["keypoints"].as_array().unwrap();
    assert_eq!(kps.len(), 10);
    for k in kps {
        let (x, y, nx, ny) = (
            k["x"].as_f64().unwrap(),
            k["y"].as_f64().unwrap(),
            k["nx"].as_f64().unwrap(),
            k["ny"].as_f64().unwrap(),
        );
        assert!(
            (0.0..=160.0).contains(&x) && (0.0..=120.0).contains(&y),
            "{k}"
        );
        assert!(
            (x - nx * 160.0).abs() < 1e-3 && (y - ny * 120.0).abs() < 1e-3,
            "{k}"
        );
    }
    // Seeded: the same command gives the same output; different seed, a different model.
    let again = detect(
        &m,
        &m.join("tokens.safetensors"),
        &["--json", "--augmentations", "2"],
        &[&wide, &wide],
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
    let other = temp_dir("e2e-other");
    assert!(run(bin()
        .args(["init-model", "--out"])
        .arg(&other)
        .args(["--seed", "4"]))
    .status
    .success());
    let a = std::fs::read(m.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let b = std::fs::read(other.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert_ne!(a, b);
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn detect_output_and_dumped_maps_match_diffusers_golden() {
    let d = temp_dir("golden");
    let dump = d.join("maps.safetensors");
    let model = data("tiny-sd1");
    let out = detect(
        &model,
        &model.join("tokens.safetensors"),
        &[
            "--json",
            "--no-noise",
            "--dump-maps",
            dump.to_str().unwrap(),
        ],
        &[&model.join("image.png")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden =
        candle_core::safetensors::load(model.join("golden.safetensors"), &Device::Cpu).unwrap();
    let idx: Vec<i64> = golden["indices"].to_vec1().unwrap();
    let dumped = candle_core::safetensors::load(&dump, &Device::Cpu).unwrap();
    let maps = &dumped["maps"];
    assert_eq!(maps.dims(), &[idx.len(), 64, 64]);
    for (i, &t) in idx.iter().enumerate() {
        let want = golden["maps_zero"].i(t as usize).unwrap();
        let got = maps.i(i).unwrap();
        let diff: f32 = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(
            diff <= 1e-4 * scale,
            "map {i}: max diff {diff} (scale {scale})"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<Vec<f32>> = golden["keypoints_zero"].to_vec2().unwrap();
    let kps = v["keypoints"].as_array().unwrap();
    for (k, w) in kps.iter().zip(&want) {
        // Flat peaks can tie within float noise; 2 px at 128 is the golden's own ambiguity.
        let (nx, ny) = (
            k["nx"].as_f64().unwrap() as f32,
            k["ny"].as_f64().unwrap() as f32,
        );
        assert!(
            (nx - w[0]).abs() <= 2.0 / 128.0 && (ny - w[1]).abs() <= 2.0 / 128.0,
            "{k} vs {w:?}"
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_same_image_gets_the_same_keypoints_wherever_it_appears() {
    // Issue 13: `detect img.png img.png` gave two different answers: the noise was one
    // stream per run. Now it is drawn per image, from the seed and the image's content.
    let tiny = data("tiny-sd1");
    let (a, b) = (tiny.join("image.png"), tiny.join("image_wide.png"));
    let tokens = tiny.join("tokens.safetensors");
    let flags = ["--json", "--augmentations", "3", "--seed", "4"];
    let one = records(&detect(&tiny, &tokens, &flags, &[&a, &a, &b]));
    let other = records(&detect(&tiny, &tokens, &flags, &[&b, &a]));
    assert_eq!(one[0]["keypoints"], one[1]["keypoints"]);
    assert_eq!(one[0]["keypoints"], other[1]["keypoints"]);
    assert_eq!(one[2]["keypoints"], other[0]["keypoints"]);
    // A copy under another name is the same image.
    let d = temp_dir("same-image");
    let copy = d.join("copy.png");
    std::fs::copy(&a, &copy).unwrap();
    let alone = records(&detect(&tiny, &tokens, &flags, &[&copy]));
    assert_eq!(alone[0]["keypoints"], one[0]["keypoints"]);
    // The seed still matters.
    let reseeded = records(&detect(
        &tiny,
        &tokens,
        &["--json", "--augmentations", "3", "--seed", "5"],
        &[&a],
    ));
    assert_ne!(reseeded[0]["keypoints"], one[0]["keypoints"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A little-endian TIFF header with one IFD entry: Orientation (0x0112) = `o`.
fn exif_orientation(o: u16) -> Vec<u8> {
    let mut v = b"II*\0".to_vec();
    v.extend(8u32.to_le_bytes());
    v.extend(1u16.to_le_bytes());
    v.extend(0x0112u16.to_le_bytes());
    v.extend(3u16.to_le_bytes());
    v.extend(1u32.to_le_bytes());
    v.extend(o.to_le_bytes());
    v.extend([0, 0]);
    v.extend(0u32.to_le_bytes());
    v
}

#[test]
fn exif_orientation_is_applied_before_detection() {
    // Issue 13: a JPEG with EXIF orientation 6 was processed as stored (on its side).
    use image::ImageEncoder;
    let tiny = data("tiny-sd1");
    let tokens = tiny.join("tokens.safetensors");
    let stored = image::open(tiny.join("image_wide.png")).unwrap().to_rgb8(); // 160x120
    let (w, h) = stored.dimensions();
    let d = temp_dir("exif");
    // Orientation 6: shown rotated 90 degrees clockwise.
    let upright = image::imageops::rotate90(&stored);
    let upright_png = d.join("upright.png");
    upright.save(&upright_png).unwrap();
    let tagged_png = d.join("tagged.png");
    {
        let mut e =
            image::codecs::png::PngEncoder::new(std::fs::File::create(&tagged_png).unwrap());
        e.set_exif_metadata(exif_orientation(6)).unwrap();
        e.write_image(stored.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
    }
    let tagged_jpg = d.join("tagged.jpg");
    {
        let f = std::fs::File::create(&tagged_jpg).unwrap();
        let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(f, 95);
        e.set_exif_metadata(exif_orientation(6)).unwrap();
        e.write_image(stored.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
    }
    let r = records(&detect(
        &tiny,
        &tokens,
        &["--json"],
        &[&upright_png, &tagged_png, &tagged_jpg],
    ));
    for rec in &r {
        assert_eq!(
            (rec["width"].as_u64(), rec["height"].as_u64()),
            (Some(120), Some(160)),
            "{rec}"
        );
    }
    // The same upright pixels: the same keypoints.
    assert_eq!(r[0]["keypoints"], r[1]["keypoints"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn outputs_written_twice_are_byte_identical() {
    let d = temp_dir("twice");
    for m in ["m1", "m2"] {
        let out = run(bin().args(["init-model", "--out"]).arg(d.join(m)));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "tokens.safetensors",
    ] {
        assert_eq!(
            std::fs::read(d.join("m1").join(f)).unwrap(),
            std::fs::read(d.join("m2").join(f)).unwrap(),
            "{f}"
        );
    }
    let tiny = data("tiny-sd1");
    let img = tiny.join("image.png");
    for n in ["a", "b"] {
        let path = d.join(format!("{n}.safetensors"));
        let out = detect(
            &tiny,
            &tiny.join("tokens.safetensors"),
            &["--dump-maps", path.to_str().unwrap()],
            &[&img],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(d.join("a.safetensors")).unwrap(),
        std::fs::read(d.join("b.safetensors")).unwrap()
    );
    // --dump-maps is checked before the model runs.
    let out = detect(
        &tiny,
        &tiny.join("tokens.safetensors"),
        &["--dump-maps", d.to_str().unwrap()],
        &[&img],
    );
    assert_clean_error(&out, &["--dump-maps", "is a folder"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The JSON records and the COCO document of `detect` agree, by COCO's field rules: one
/// result per image, `x - 0.5` in COCO's pixel-index coordinates, v = 2 (every keypoint
/// visible), the score the mean confidence; with a pose, a dataset whose category has the
/// pose's names and 1-based skeleton and whose landmarks are the hand-computed regression.
#[test]
fn detect_writes_json_records_and_coco_keypoints_that_agree() {
    let d = temp_dir("coco");
    let model = data("tiny-sd1");
    let tokens_path = model.join("tokens.safetensors");
    let tokens = stablekeypoints::Tokens::load(&tokens_path).unwrap();
    let k = tokens.indices.len();
    let pose = d.join("pose.json");
    common::write_pose(&pose, &tokens);
    let (wide, square) = (data("tiny-sd1/image_wide.png"), model.join("image.png"));
    let images = [wide.as_path(), square.as_path()];
    let ok = |extra: &[&str]| {
        let out = detect(&model, &tokens_path, extra, &images);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        String::from_utf8(out.stdout).unwrap()
    };
    let pose_arg = pose.to_str().unwrap();
    let records: Vec<serde_json::Value> = ok(&["--no-noise", "--json", "--pose", pose_arg])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    records_carry_the_pose(&records, &images, k);
    let sizes: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, [(160, 120), (128, 128)]);
    // The table says the same.
    let table = ok(&["--no-noise", "--pose", pose_arg]);
    assert!(
        table.contains("(160x120)") && table.contains("confidence"),
        "{table}"
    );
    assert!(table.contains("middle"), "{table}");

    // Without a pose: results, one per image, equal to the records.
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&["--no-noise", "--format", "coco"])).unwrap();
    coco_results_equal_the_records(&doc, &records, &sizes, k);

    // With the pose: the dataset, its landmarks the hand-computed ones.
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&["--no-noise", "--format", "coco", "--pose", pose_arg])).unwrap();
    coco_dataset_has_the_hand_computed_landmarks(&doc, &records, &sizes, &square);
    std::fs::remove_dir_all(&d).unwrap();
}

type Json = serde_json::Value;

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap()
}

/// The elements' schema, with the image named, and the landmarks of the test pose.
fn records_carry_the_pose(records: &[Json], images: &[&Path], k: usize) {
    let f = num;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["schema"], "stablekeypoints-frame/1");
        assert_eq!(r["frame"], i);
        assert_eq!(r["image"], images[i].display().to_string());
        assert!(r["pts"].is_null() && r["inferred"] == false);
        let kps = r["keypoints"].as_array().unwrap();
        assert_eq!(kps.len(), k);
        for kp in kps {
            assert!(
                kp["confidence"].is_number() && kp["score"].is_null(),
                "{kp}"
            );
            assert_eq!(kp["visible"], true);
        }
        let norm: Vec<(f64, f64)> = kps.iter().map(|kp| (f(&kp["nx"]), f(&kp["ny"]))).collect();
        let lms = r["pose"].as_array().unwrap();
        assert_eq!(lms.len(), 3);
        for ((l, (x, y)), name) in lms
            .iter()
            .zip(common::hand_landmarks(&norm))
            .zip(common::POSE_NAMES)
        {
            assert_eq!(l["name"], name);
            assert!(
                (f(&l["nx"]) - x).abs() < 1e-5 && (f(&l["ny"]) - y).abs() < 1e-5,
                "{l}"
            );
            assert!((f(&l["x"]) - x * f(&r["width"])).abs() < 1e-3, "{l}");
        }
        assert_eq!(r["skeleton"], serde_json::json!([[0, 1], [1, 2]]));
    }
}

/// Without a pose: COCO results, one per image, equal to the records.
fn coco_results_equal_the_records(doc: &Json, records: &[Json], sizes: &[(u64, u64)], k: usize) {
    let f = num;
    let results = common::check_results(doc, k, sizes);
    assert_eq!(results.len(), 2);
    for (i, (res, r)) in results.iter().zip(records).enumerate() {
        assert_eq!(doc[i]["image_id"], i);
        let kps = r["keypoints"].as_array().unwrap();
        for (t, kp) in res.iter().zip(kps) {
            let (w, h) = sizes[i];
            let want = |v: f64, size: u64| (v - 0.5).clamp(0.0, (size - 1) as f64);
            assert!((t.0 - want(f(&kp["x"]), w)).abs() < 1e-3, "{t:?} vs {kp}");
            assert!((t.1 - want(f(&kp["y"]), h)).abs() < 1e-3, "{t:?} vs {kp}");
            assert_eq!(t.2, 2);
        }
        let mean = kps.iter().map(|kp| f(&kp["confidence"])).sum::<f64>() / k as f64;
        assert!((f(&doc[i]["score"]) - mean).abs() < 1e-6);
    }
}

/// With the pose: a COCO dataset whose landmarks are the hand-computed ones.
fn coco_dataset_has_the_hand_computed_landmarks(
    doc: &Json,
    records: &[Json],
    sizes: &[(u64, u64)],
    square: &Path,
) {
    let f = num;
    let (cat, anns) = common::check_dataset(doc);
    assert_eq!(cat["keypoints"], serde_json::json!(common::POSE_NAMES));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2], [2, 3]]));
    assert_eq!(doc["images"][1]["file_name"], square.display().to_string());
    assert_eq!(anns.len(), 2);
    for (i, (ann, r)) in anns.iter().zip(records).enumerate() {
        let (w, h) = sizes[i];
        let norm: Vec<(f64, f64)> = r["keypoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kp| (f(&kp["nx"]), f(&kp["ny"])))
            .collect();
        for (t, (x, y)) in ann.iter().zip(common::hand_landmarks(&norm)) {
            let (px, py) = (x * w as f64, y * h as f64);
            if (0.0..w as f64).contains(&px) && (0.0..h as f64).contains(&py) {
                assert!(
                    (t.0 - (px - 0.5).max(0.0)).abs() < 1e-3,
                    "{t:?} vs {x}, {y}"
                );
                assert!(
                    (t.1 - (py - 0.5).max(0.0)).abs() < 1e-3,
                    "{t:?} vs {x}, {y}"
                );
                assert_eq!(t.2, 2);
            } else {
                assert_eq!(*t, (0.0, 0.0, 0));
            }
        }
    }
    // The centre landmark is inside every frame: at least one labelled point each.
    assert!(anns.iter().all(|a| a[2].2 == 2));
}

#[test]
fn a_pose_fitted_with_other_tokens_is_a_one_line_error_naming_it() {
    let d = temp_dir("pose-other");
    let model = data("tiny-sd1");
    let mut tokens = stablekeypoints::Tokens::load(&model.join("tokens.safetensors")).unwrap();
    let pose = d.join("other.json");
    // Same indices, another fingerprint: fitted with other tokens.
    common::write_pose(&pose, &tokens);
    let mut p = stablekeypoints::pose::PoseModel::load(&pose).unwrap();
    p.tokens_hash = Some("0123456789abcdef".into());
    p.save(&pose).unwrap();
    let out = detect(
        &model,
        &model.join("tokens.safetensors"),
        &["--format", "coco", "--pose", pose.to_str().unwrap()],
        &[&model.join("image.png")],
    );
    assert_clean_error(&out, &["other.json", "hash 0123456789abcdef"]);
    assert!(out.stdout.is_empty());
    // Other indices.
    tokens.indices.reverse();
    common::write_pose(&pose, &tokens);
    let out = detect(
        &model,
        &model.join("tokens.safetensors"),
        &["--pose", pose.to_str().unwrap()],
        &[&model.join("image.png")],
    );
    assert_clean_error(&out, &["other.json", "token indices"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The authors' `embedding.pt` + `indices.pt` directory works wherever a tokens file does.
#[test]
fn cli_reads_a_reference_token_directory() {
    let detect = |tokens: &Path| {
        let out = bin()
            .arg("detect")
            .arg("--model")
            .arg(data("tiny-sd1"))
            .arg("--tokens")
            .arg(tokens)
            .args(["--size", "128", "--map-res", "64", "--no-noise", "--json"])
            .arg(data("tiny-sd1/image.png"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let from_dir = detect(&data("reference-tokens"));
    assert!(from_dir.contains("\"keypoints\""), "{from_dir}");
    assert_eq!(from_dir, detect(&data("tiny-sd1/tokens.safetensors")));
}

#[test]
fn detect_boxes_gives_one_record_per_object_with_the_cores_keypoints_of_its_box() {
    use stablekeypoints::detect::content_key;
    use stablekeypoints::estimator::Estimator;
    use stablekeypoints::{DetectSettings, Detector, FrameRef, Model, PixelFormat, Region, Tokens};
    use std::sync::Arc;

    let d = temp_dir("detect-boxes");
    let tiny = data("tiny-sd1");
    let tokens = tiny.join("tokens.safetensors");
    let (a, b) = (tiny.join("image.png"), tiny.join("image_wide.png"));
    // Image 0 (128x128): two boxes, the second measured on a 64x64 frame (scaled x2); image
    // 1 has no record; the third has an empty one.
    let boxes = d.join("boxes.jsonl");
    std::fs::write(
        &boxes,
        concat!(
            r#"{"frame": 0, "objects": [{"id": 3, "label": "person", "box": [10, 20, 40, 40]}, "#,
            r#"{"label": "dog", "box": [40, 5, 20, 20], "ignored": 1}], "width": 64, "height": 64}"#,
            "\n",
            r#"{"frame": 2, "objects": []}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = detect(
        &tiny,
        &tokens,
        &["--json", "--boxes", boxes.to_str().unwrap()],
        &[&a, &b, &b],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    // Scaled to 128x128: the first box doubles too (the record's size applies to all).
    let want = [
        (3u64, "person", [20.0, 40.0, 80.0, 80.0]),
        (1, "dog", [80.0, 10.0, 40.0, 40.0]),
    ];
    let img = stablekeypoints::imagefile::read_rgb(&a).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3).unwrap();
    let device = candle_core::Device::Cpu;
    let t = Tokens::load(&tokens).unwrap();
    let model = Arc::new(Model::load(&tiny, &device, candle_core::DType::F32).unwrap());
    let opts = DetectSettings::default().to_options();
    let mut est = Estimator::teacher(Detector::new(model, &t, opts).unwrap());
    let key = content_key(w, h, img.as_raw());
    for (j, (r, (id, label, [x, y, bw, bh]))) in recs.iter().zip(want).enumerate() {
        assert_eq!(r["schema"], "stablekeypoints-frame/2");
        assert_eq!(r["frame"], 0);
        assert_eq!(r["object_id"], id);
        assert_eq!(r["label"], label);
        let roi: Vec<f64> = serde_json::from_value(r["roi"].clone()).unwrap();
        let norm = [x / 128.0, y / 128.0, bw / 128.0, bh / 128.0];
        for (g, n) in roi.iter().zip(norm) {
            assert!((g - n).abs() < 1e-6, "roi {roi:?} vs {norm:?}");
        }
        let region = Region { x, y, w: bw, h: bh }.grown(0.15);
        let core = est
            .detect(
                stablekeypoints::Item::regions(
                    &[frame],
                    &[(0, region)],
                    &[key.wrapping_mul(1024) + j as u64],
                )
                .unwrap(),
            )
            .unwrap()
            .remove(0);
        let kps = r["keypoints"].as_array().unwrap();
        assert_eq!(kps.len(), core.keypoints.len());
        for (k, c) in kps.iter().zip(&core.keypoints) {
            assert_eq!(k["nx"].as_f64().unwrap() as f32, c.x, "{k}");
            assert_eq!(k["ny"].as_f64().unwrap() as f32, c.y, "{k}");
        }
    }
    // A missing or malformed boxes file is one line naming it (and the line).
    let missing = d.join("missing.jsonl");
    let out = detect(
        &tiny,
        &tokens,
        &["--json", "--boxes", missing.to_str().unwrap()],
        &[&a],
    );
    assert_clean_error(&out, &["missing.jsonl"]);
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"frame\": 0, \"objects\": []}\n{\"frame\": \n").unwrap();
    let out = detect(
        &tiny,
        &tokens,
        &["--json", "--boxes", bad.to_str().unwrap()],
        &[&a],
    );
    assert_clean_error(&out, &["bad.jsonl:2"]);
    std::fs::remove_dir_all(&d).unwrap();
}
