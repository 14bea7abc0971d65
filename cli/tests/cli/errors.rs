//! One-line errors (never a panic) that name the file, tensor or flag at fault.

use super::*;

#[test]
fn truncated_weights_name_the_file() {
    let d = temp_dir("trunc");
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
    let d = temp_dir("shape");
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
    let d = temp_dir("img");
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
    let d = temp_dir("missing-key");
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
    let d = temp_dir("nan");
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
    let d = temp_dir("nounet");
    let out = detect(
        &d,
        &data("tiny-sd1/tokens.safetensors"),
        &[],
        &[&data("tiny-sd1/image.png")],
    );
    assert_clean_error(&out, &["unet"]);
    std::fs::remove_dir_all(&d).unwrap();
}
