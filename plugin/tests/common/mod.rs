//! Set-up shared by the element's test binaries: GStreamer with the plugin registered, a
//! tiny generated model, and the core detector the element's output is compared with.
#![allow(dead_code)] // each test binary uses its own subset

use stablekeypoints::model::init::{init_model, TinyArch};
use stablekeypoints::{DetectOptions, Detector, Model, PixelFormat, Tokens};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

pub const NUM_KEYPOINTS: usize = 6;
pub const NUM_TOKENS: usize = 24;
/// `cross_attention_dim` of the tiny SD1 model.
pub const CONTEXT_DIM: usize = 32;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gststablekeypoints::plugin_register_static().expect("register plugin");
    });
}

/// Scratch directory of this test process (under cargo's target/tmp).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The tiny model directory (with tokens.safetensors), generated once per process.
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch().join("model");
        init_model(&d, TinyArch::TinySd1, 7, NUM_TOKENS, NUM_KEYPOINTS).expect("init tiny model");
        d
    })
}

pub fn tokens_path() -> PathBuf {
    model_dir().join("tokens.safetensors")
}

/// The element's `model` and `tokens` properties for the tiny model.
pub fn props() -> String {
    format!(
        "model={} tokens={}",
        model_dir().display(),
        tokens_path().display()
    )
}

/// A fresh core detector with these options on the tiny model (loaded once).
pub fn core_detector_with(opts: DetectOptions) -> Detector {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        Arc::new(
            Model::load(
                model_dir(),
                &candle_core::Device::Cpu,
                candle_core::DType::F32,
            )
            .unwrap(),
        )
    });
    let tokens = Tokens::load(&tokens_path()).unwrap();
    Detector::new(model.clone(), &tokens, opts).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The core's name for a GStreamer video format.
pub fn core_format(f: gst_video::VideoFormat) -> PixelFormat {
    use gst_video::VideoFormat as F;
    match f {
        F::Rgb => PixelFormat::Rgb,
        F::Bgr => PixelFormat::Bgr,
        F::Rgba => PixelFormat::Rgba,
        F::Bgra => PixelFormat::Bgra,
        F::Rgbx => PixelFormat::Rgbx,
        F::Bgrx => PixelFormat::Bgrx,
        F::Argb => PixelFormat::Argb,
        F::Abgr => PixelFormat::Abgr,
        F::Xrgb => PixelFormat::Xrgb,
        F::Xbgr => PixelFormat::Xbgr,
        F::I420 => PixelFormat::I420,
        F::Nv12 => PixelFormat::Nv12,
        other => panic!("no core format for {other:?}"),
    }
}
