//! The `stablekeypoints` binary end to end: init-model + detect, parity of its output with
//! the diffusers golden, and one-line errors (never a panic) for bad inputs.

use candle_core::{Device, IndexOp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
}

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(p)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skp-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run stablekeypoints")
}

/// Exit code != 0, exactly one line on stderr mentioning every `needles`, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

fn detect(model: &Path, tokens: &Path, extra: &[&str], images: &[&Path]) -> Output {
    let mut c = bin();
    c.arg("detect")
        .arg("--model")
        .arg(model)
        .arg("--tokens")
        .arg(tokens)
        .args(extra);
    for i in images {
        c.arg(i);
    }
    run(&mut c)
}

#[test]
fn init_model_then_detect_end_to_end() {
    let d = tmpdir("e2e");
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
    let other = tmpdir("e2e-other");
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
    let d = tmpdir("golden");
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
fn missing_model_dir_is_a_one_line_error() {
    let out = detect(
        Path::new("/nonexistent/model"),
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["/nonexistent/model"]);
    // A directory without unet/.
    let d = tmpdir("nounet");
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["unet"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn truncated_weights_name_the_file() {
    let d = tmpdir("trunc");
    copy_dir(&data("tiny-sd1/unet"), &d.join("unet"));
    copy_dir(&data("tiny-sd1/vae"), &d.join("vae"));
    let w = d.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["unet/diffusion_pytorch_model.safetensors"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn mis_shaped_tensor_names_key_and_shapes() {
    let d = tmpdir("shape");
    copy_dir(&data("tiny-sd1/unet"), &d.join("unet"));
    copy_dir(&data("tiny-sd1/vae"), &d.join("vae"));
    // The config now asks for a wider context than the weights have.
    let cfg = d.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"cross_attention_dim\": 32", "\"cross_attention_dim\": 40");
    std::fs::write(&cfg, text).unwrap();
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["attn2.to_k.weight", "[32, 40]", "[32, 32]"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn tokens_of_the_wrong_width_are_rejected() {
    // tiny-sd2's tokens are 48 wide; tiny-sd1 expects 32.
    let out = detect(
        &data("tiny-sd1"),
        &data("tiny-sd2/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["tiny-sd2/tokens.safetensors", "48", "32"]);
}

#[test]
fn unreadable_image_is_named() {
    let d = tmpdir("img");
    let bad = d.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = detect(
        &data("tiny-sd1"),
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&bad],
    );
    assert_clean_error(&out, &["broken.png"]);
    let out = detect(
        &data("tiny-sd1"),
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&d.join("missing.jpg")],
    );
    assert_clean_error(&out, &["missing.jpg"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let out = detect(
        &data("tiny-sd1"),
        &data("tiny-sd1/tokens.safetensors"),
        &["--size", "100"],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["100"]);
    let out = run(bin().args(["detect", "--model"]));
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn missing_tensor_is_named() {
    let d = tmpdir("missing-key");
    copy_dir(&data("tiny-sd1/vae"), &d.join("vae"));
    std::fs::create_dir_all(d.join("unet")).unwrap();
    std::fs::copy(
        data("tiny-sd1/unet/config.json"),
        d.join("unet/config.json"),
    )
    .unwrap();
    let mut t = candle_core::safetensors::load(
        data("tiny-sd1/unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let key = "up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_q.weight";
    assert!(t.remove(key).is_some());
    candle_core::safetensors::save(&t, d.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["unet/diffusion_pytorch_model.safetensors", key]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn non_finite_weights_are_an_error_not_garbage_keypoints() {
    let d = tmpdir("nan");
    copy_dir(&data("tiny-sd1/vae"), &d.join("vae"));
    std::fs::create_dir_all(d.join("unet")).unwrap();
    std::fs::copy(
        data("tiny-sd1/unet/config.json"),
        d.join("unet/config.json"),
    )
    .unwrap();
    let mut t = candle_core::safetensors::load(
        data("tiny-sd1/unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let key = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight";
    let nan = (t[key].ones_like().unwrap() * f64::NAN).unwrap();
    t.insert(key.to_string(), nan);
    candle_core::safetensors::save(&t, d.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &["--json"],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["non-finite"]);
    assert!(out.stdout.is_empty(), "no keypoints printed");
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

fn records(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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
    let d = tmpdir("same-image");
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
    let d = tmpdir("exif");
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
    let d = tmpdir("twice");
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
    let d = tmpdir("coco");
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
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    // The elements' schema, with the image named, and the landmarks.
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
    let results = common::check_results(&doc, k, &sizes);
    assert_eq!(results.len(), 2);
    for (i, (res, r)) in results.iter().zip(&records).enumerate() {
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

    // With the pose: the dataset, its landmarks the hand-computed ones.
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&["--no-noise", "--format", "coco", "--pose", pose_arg])).unwrap();
    let (cat, anns) = common::check_dataset(&doc);
    assert_eq!(cat["keypoints"], serde_json::json!(common::POSE_NAMES));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2], [2, 3]]));
    assert_eq!(doc["images"][1]["file_name"], square.display().to_string());
    assert_eq!(anns.len(), 2);
    for (i, (ann, r)) in anns.iter().zip(&records).enumerate() {
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
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_pose_fitted_with_other_tokens_is_a_one_line_error_naming_it() {
    let d = tmpdir("pose-other");
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

/// A hub id is found in the local cache as `huggingface-cli download` leaves it (snapshot
/// files are links into `blobs/`, `refs/main` names the snapshot) and gives the same
/// keypoints as the folder; an id that is not cached says where it looked and how to get it.
#[test]
fn a_hub_id_in_the_local_cache_is_the_same_model_as_its_folder() {
    let d = tmpdir("hub");
    let model = data("tiny-sd1");
    let repo = d.join("hub").join("models--tiny-org--tiny-sd1");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    for (i, part) in ["unet", "vae"].iter().enumerate() {
        std::fs::create_dir_all(snapshot.join(part)).unwrap();
        for (j, file) in ["config.json", "diffusion_pytorch_model.safetensors"]
            .iter()
            .enumerate()
        {
            let blob = repo.join("blobs").join(format!("blob{i}{j}"));
            std::fs::copy(model.join(part).join(file), &blob).unwrap();
            std::os::unix::fs::symlink(
                Path::new("../../../blobs").join(format!("blob{i}{j}")),
                snapshot.join(part).join(file),
            )
            .unwrap();
        }
    }
    let tokens = model.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let by_folder = detect(&model, &tokens, &["--json"], &[&image]);
    assert!(
        by_folder.status.success(),
        "{}",
        String::from_utf8_lossy(&by_folder.stderr)
    );
    let mut c = bin();
    c.env("HF_HUB_CACHE", d.join("hub"))
        .args([
            "detect",
            "--model",
            "tiny-org/tiny-sd1",
            "--json",
            "--tokens",
        ])
        .arg(&tokens)
        .arg(&image);
    let by_id = run(&mut c);
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    assert_eq!(by_id.stdout, by_folder.stdout);

    let mut c = bin();
    c.env("HF_HUB_CACHE", d.join("hub"))
        .args(["detect", "--model", "tiny-org/other", "--tokens"])
        .arg(&tokens)
        .arg(&image);
    // clap's form for a bad flag value: the error, then where to find help.
    let out = run(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    for needle in [
        "'--model <DIR|ID|FILE>'",
        "models--tiny-org--other does not exist",
        "huggingface-cli download tiny-org/other",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `form` (the weights of `model` in another form) gives the same keypoints with the
/// model's tokens and has the same identity.
fn assert_same_model(form: &Path, model: &Path) {
    let tokens = model.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let want = detect(model, &tokens, &["--json"], &[&image]);
    let got = detect(form, &tokens, &["--json"], &[&image]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, want.stdout);
    // The weights' fingerprint; the older config hash is of config.json files, which a
    // single file does not have.
    let id = |m: &Path| {
        stablekeypoints::model::ModelIdentity::of(m)
            .unwrap()
            .weights
    };
    assert_eq!(id(form), id(model));
}

/// `init-model --single-file` is refused for the miniature architectures (a single file
/// has no config, and they do not follow SD's layer sizes), before anything is written; the
/// full-size form is measured in docs/models.md.
#[test]
fn init_model_single_file_is_refused_for_tiny_architectures() {
    let d = tmpdir("init-single");
    let out = run(bin()
        .args(["init-model", "--arch", "tiny-sd2", "--out"])
        .arg(d.join("m"))
        .arg("--single-file")
        .arg(d.join("m.safetensors")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only sd15 and sd21"),
        "{err}"
    );
    assert!(!d.join("m").exists() && !d.join("m.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// Weights in shards with a `*.safetensors.index.json` (as diffusers saves large models)
/// are the same model as the single file: the same keypoints and the same identity; a
/// missing shard is an error naming it.
#[test]
fn sharded_weights_are_the_same_model_as_the_single_file() {
    let d = tmpdir("shards");
    let model = data("tiny-sd1");
    let sharded = d.join("sharded");
    copy_dir(&model, &sharded);
    let unet = sharded.join("unet");
    let single = unet.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(tensors, None, &unet.join(&file)).unwrap();
        for n in part.iter() {
            map.insert(n.to_string(), file.clone().into());
        }
    }
    std::fs::remove_file(&single).unwrap();
    let index = unet.join("diffusion_pytorch_model.safetensors.index.json");
    let json = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(&index, json.to_string()).unwrap();

    assert_same_model(&sharded, &model);
    let (tokens, image) = (
        model.join("tokens.safetensors"),
        data("tiny-sd1/image_wide.png"),
    );

    std::fs::remove_file(unet.join("diffusion_pytorch_model-00002-of-00002.safetensors")).unwrap();
    assert_clean_error(
        &detect(&sharded, &tokens, &[], &[&image]),
        &[
            "diffusion_pytorch_model.safetensors.index.json",
            "shard diffusion_pytorch_model-00002-of-00002.safetensors",
            "is missing",
        ],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// diffusers folders with only PyTorch `.bin` weights (written here in `torch.save`'s zip
/// format by `tests/python/torch_save.py`, without PyTorch) are the same model as the
/// safetensors: the same keypoints and the same identity.
#[test]
fn bin_weights_are_the_same_model_as_the_safetensors() {
    let d = tmpdir("bin");
    let model = data("tiny-sd1");
    let bins = d.join("bin");
    copy_dir(&model, &bins);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_save.py");
    for part in ["unet", "vae"] {
        let st = bins.join(part).join("diffusion_pytorch_model.safetensors");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&st)
            .arg(bins.join(part).join("diffusion_pytorch_model.bin"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(st).unwrap();
    }
    assert_same_model(&bins, &model);
    let (tokens, image) = (
        model.join("tokens.safetensors"),
        data("tiny-sd1/image_wide.png"),
    );

    // A .bin that is not a torch.save archive is an error naming it.
    let vae = bins.join("vae").join("diffusion_pytorch_model.bin");
    std::fs::write(&vae, b"not a zip").unwrap();
    assert_clean_error(
        &detect(&bins, &tokens, &[], &[&image]),
        &["diffusion_pytorch_model.bin"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A student file where a diffusion model is needed (given to `train`) is named as a
/// student file, not as a folder that does not exist or a foreign checkpoint.
#[test]
fn a_student_given_as_a_diffusion_model_is_called_a_student() {
    let d = tmpdir("file-model");
    let student =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/figure/student.safetensors");
    let out = run(bin()
        .args(["train", "--model"])
        .arg(&student)
        .arg("--input")
        .arg(data("tiny-sd1/image.png"))
        .arg("--out")
        .arg(d.join("t.safetensors")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("student.safetensors: is a student file of `stablekeypoints distill`, not a diffusion model"),
        "{err}"
    );
    assert!(!d.join("t.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn detect_boxes_gives_one_record_per_object_with_the_cores_keypoints_of_its_box() {
    use stablekeypoints::detect::content_key;
    use stablekeypoints::estimator::Estimator;
    use stablekeypoints::{DetectSettings, Detector, FrameRef, Model, PixelFormat, Region, Tokens};
    use std::sync::Arc;

    let d = tmpdir("detect-boxes");
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

/// Tiny models whose architecture a single file implies (32 groups; SD 1.x: 8 heads and
/// convolution projections, SD 2.x: heads of width 64 and linear projections), written by
/// `init-model`'s generator as diffusers folders.
fn single_file_archs(d: &Path) -> Vec<PathBuf> {
    use stablekeypoints::init::{init_model_from, unet_config_json, vae_config_json, TinyArch};
    let mut vae = vae_config_json(TinyArch::TinySd1);
    vae["block_out_channels"] = serde_json::json!([32, 32, 64, 64]);
    vae["norm_num_groups"] = 32.into();
    let mut sd1 = unet_config_json(TinyArch::TinySd1);
    sd1["norm_num_groups"] = 32.into();
    sd1["attention_head_dim"] = 8.into();
    let mut sd2 = unet_config_json(TinyArch::TinySd2);
    sd2["norm_num_groups"] = 32.into();
    sd2["block_out_channels"] = serde_json::json!([64, 64, 128, 128]);
    sd2["attention_head_dim"] = serde_json::json!([1, 1, 2, 2]);
    [("sd1-like", sd1), ("sd2-like", sd2)]
        .into_iter()
        .map(|(name, unet)| {
            let dir = d.join(name);
            init_model_from(&dir, &unet, &vae, 3, (8, 4), (128, 64), name).unwrap();
            dir
        })
        .collect()
}

/// Single-file checkpoints in the original Stable Diffusion layout (`model.diffusion_model.*`,
/// `first_stage_model.*`), SD 1.x and 2.x alike, are the same model as their diffusers
/// folder: the same keypoints and the same identity; with EMA copies those are read, and
/// `--no-ema` reads the others (another model).
#[test]
fn single_files_in_the_original_layout_are_the_same_model_as_the_folder() {
    use stablekeypoints::model::{single_file::write_original, ModelIdentity, ModelSource};
    let d = tmpdir("single-file");
    for folder in single_file_archs(&d) {
        let plain = folder.with_extension("safetensors");
        write_original(&folder, &plain, false).unwrap();
        assert_same_model(&plain, &folder);
        let ema = folder.with_extension("ema.safetensors");
        write_original(&folder, &ema, true).unwrap();
        assert_same_model(&ema, &folder);
        let no_ema = ModelSource {
            model: ema.clone(),
            no_ema: true,
            ..ModelSource::default()
        };
        assert_ne!(
            ModelIdentity::of_source(&no_ema).unwrap().weights,
            ModelIdentity::of(&folder).unwrap().weights
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Single files that are not a model this engine runs end in one line naming the file and
/// what is wrong: truncated, foreign (no UNet), a class-label conditioning that is not
/// SDXL's, an inpainting UNet, no VAE.
#[test]
fn single_files_that_cannot_load_say_why() {
    use stablekeypoints::model::single_file::write_original;
    let d = tmpdir("single-file-errors");
    let folder = single_file_archs(&d).remove(0);
    let good = d.join("good.safetensors");
    write_original(&folder, &good, false).unwrap();
    let tensors = candle_core::safetensors::load(&good, &Device::Cpu).unwrap();
    let write =
        |name: &str, edit: &dyn Fn(&mut std::collections::HashMap<String, candle_core::Tensor>)| {
            let mut t = tensors.clone();
            edit(&mut t);
            let p = d.join(name);
            candle_core::safetensors::save(&t, &p).unwrap();
            p
        };
    let truncated = d.join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = write("foreign.safetensors", &|t| {
        t.retain(|k, _| k.starts_with("first_stage_model."))
    });
    let no_vae = write("no-vae.safetensors", &|t| {
        t.retain(|k, _| !k.starts_with("first_stage_model."))
    });
    let label = write("class-label.safetensors", &|t| {
        let x = candle_core::Tensor::zeros((8, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        t.insert("model.diffusion_model.label_emb.0.weight".into(), x);
    });
    let inpaint = write("inpaint.safetensors", &|t| {
        let k = "model.diffusion_model.input_blocks.0.0.weight";
        let w = candle_core::Tensor::zeros((32, 9, 3, 3), candle_core::DType::F32, &Device::Cpu);
        t.insert(k.into(), w.unwrap());
    });
    let tokens = folder.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    for (file, why) in [
        (&truncated, "not a valid safetensors file"),
        (
            &foreign,
            "not a Stable Diffusion checkpoint in the original layout",
        ),
        (
            &no_vae,
            "has no VAE (no first_stage_model.* tensors); pass --vae",
        ),
        (
            &label,
            "label embedding `model.diffusion_model.label_emb.0.weight` other than SDXL's",
        ),
        (
            &inpaint,
            "the UNet takes 9 input channels (an inpainting UNet)",
        ),
    ] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_clean_error(&detect(file, &tokens, &[], &[&image]), &[name, why]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--vae` takes the VAE from a folder or a single file: a single file without one plus
/// its folder's VAE is the folder's model; another VAE is another model. `--no-ema` reads a
/// single file's plain UNet weights.
#[test]
fn vae_and_no_ema_choose_the_parts() {
    use stablekeypoints::model::{single_file::write_original, ModelIdentity, ModelSource};
    let d = tmpdir("vae-flag");
    let folder = single_file_archs(&d).remove(0);
    let whole = d.join("whole.safetensors");
    write_original(&folder, &whole, true).unwrap();
    let mut tensors = candle_core::safetensors::load(&whole, &Device::Cpu).unwrap();
    let vae_only: std::collections::HashMap<_, _> = tensors
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("first_stage_model.")?.to_string(), v.clone())))
        .collect();
    let vae_file = d.join("vae.safetensors");
    candle_core::safetensors::save(&vae_only, &vae_file).unwrap();
    tensors.retain(|k, _| !k.starts_with("first_stage_model."));
    let unet_only = d.join("unet-only.safetensors");
    candle_core::safetensors::save(&tensors, &unet_only).unwrap();

    let tokens = folder.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let want = detect(&folder, &tokens, &["--json"], &[&image]);
    let id = |model: &Path, vae: Option<&Path>, no_ema: bool| {
        ModelIdentity::of_source(&ModelSource {
            model: model.to_path_buf(),
            vae: vae.map(Path::to_path_buf),
            no_ema,
        })
        .unwrap()
        .weights
    };
    for vae in [&vae_file, &folder, &folder.join("vae")] {
        let vae_arg = vae.to_str().unwrap();
        let got = detect(
            &unet_only,
            &tokens,
            &["--json", "--vae", vae_arg],
            &[&image],
        );
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, want.stdout, "--vae {vae_arg}");
        assert_eq!(id(&unet_only, Some(vae), false), id(&folder, None, false));
    }
    // Another VAE: another model.
    let other = data("tiny-sd1");
    assert_ne!(id(&folder, Some(&other), false), id(&folder, None, false));
    // --no-ema: the plain (halved) weights.
    let plain = detect(&whole, &tokens, &["--json", "--no-ema"], &[&image]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_ne!(plain.stdout, want.stdout);
    assert_ne!(id(&whole, None, true), id(&whole, None, false));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `.ckpt` training checkpoints in the original layout (a dict with `state_dict` beside
/// `optimizer_states` and counters; written by `tests/python/torch_save.py --ckpt`, without
/// PyTorch) are the same model as the folder; with EMA copies those are read.
#[test]
fn ckpt_files_are_the_same_model_as_the_folder() {
    use stablekeypoints::model::single_file::write_original;
    let d = tmpdir("ckpt");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_save.py");
    for folder in single_file_archs(&d) {
        let st = folder.with_extension("safetensors");
        write_original(&folder, &st, true).unwrap();
        let ckpt = folder.with_extension("ckpt");
        let out = Command::new("python3")
            .arg(&script)
            .arg("--ckpt")
            .arg(&st)
            .arg(&ckpt)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_model(&ckpt, &folder);
    }
    std::fs::remove_dir_all(&d).unwrap();
}
