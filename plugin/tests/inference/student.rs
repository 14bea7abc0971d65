//! The inference element with a student file as its model: the keypoints equal the core
//! student's on the same pixels, with the teacher tokens' identity in the metadata, so that
//! a pose fitted for those tokens applies and one for other tokens is refused.

use crate::common;

use common::*;
use stablekeypoints::student::{Student, StudentInfo, StudentWeights};
use stablekeypoints::Tokens;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A random student of the tiny model's tokens (their indices and fingerprint).
fn student_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let tokens = Tokens::load(&tokens_path()).unwrap();
        let k = tokens.indices.len();
        let info = StudentInfo {
            widths: [8, 8, 16, 16],
            num_keypoints: k,
            input_size: 64,
            crop: Default::default(),
            teacher_model: "tiny".into(),
            tokens_hash: tokens.fingerprint(),
            token_indices: tokens.indices.clone(),
            confidence_scale: vec![0.05; k],
            extra: Default::default(),
        };
        let mut w = StudentWeights::random(info, 3);
        // Larger head weights: keypoints that move with the picture.
        let last = w.layers.len() - 1;
        w.layers[last].0.iter_mut().for_each(|v| *v *= 100.0);
        let path = scratch().join("student.safetensors");
        w.save(&path).unwrap();
        path
    })
}

#[test]
fn the_element_runs_a_student_as_the_core_does() {
    init();
    let student = Student::load(student_file(), &candle_core::Device::Cpu).unwrap();
    // Packed RGB read natively, and formats the element converts with GStreamer as rgb_of does.
    for format in ["RGBx", "BGR", "Y444_10LE", "GRAY8"] {
        let desc = format!(
            "videotestsrc num-buffers=4 pattern=ball ! video/x-raw,format={format},width=96,height=72 \
             ! stablekeypoints model={} batch-size=2 ! fakesink name=sink",
            student_file().display()
        );
        let (_, buffers) = run_pipeline(&desc, Some("sink")).unwrap();
        assert_eq!(buffers.len(), 4, "{format}");
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", format)
            .field("width", 96)
            .field("height", 72)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        let mut moved = false;
        let mut first: Option<Vec<(f32, f32)>> = None;
        for buf in &buffers {
            let meta = read_meta(buf);
            let (rgb, stride) = rgb_of(buf, &info);
            let frame = stablekeypoints::FrameRef::packed(
                stablekeypoints::PixelFormat::Rgb,
                96,
                72,
                &rgb,
                stride,
            )
            .unwrap();
            let core = student.detect_frames(&[frame]).unwrap().remove(0);
            assert_matches_core(&meta, &core, format);
            let tokens = Tokens::load(&tokens_path()).unwrap();
            let ident = meta.tokens.as_ref().expect("tokens identity");
            assert_eq!(
                ident.hash,
                tokens.fingerprint(),
                "{format}: the teacher's tokens"
            );
            assert_eq!(
                ident.indices,
                tokens.indices.iter().map(|&i| i as u32).collect::<Vec<_>>()
            );
            assert!(
                meta.model.contains("student.safetensors"),
                "origin {}",
                meta.model
            );
            let pts: Vec<(f32, f32)> = meta.keypoints.iter().map(|k| (k.x, k.y)).collect();
            match &first {
                None => first = Some(pts),
                Some(f) => moved |= *f != pts,
            }
        }
        assert!(moved, "{format}: the keypoints follow the moving ball");
    }
}

#[test]
fn a_pose_for_the_teacher_tokens_applies_and_other_tokens_are_refused() {
    init();
    let ok = format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! stablekeypoints model={} \
         pose={} ! fakesink",
        student_file().display(),
        test_pose().display()
    );
    run_pipeline(&ok, None).expect("the tiny tokens' pose fits their student");
    let other = pose_with_hash("other-tokens-pose.json", "0123456789abcdef");
    let bad = format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! stablekeypoints model={} \
         pose={} ! fakesink",
        student_file().display(),
        other.display()
    );
    let err = run_pipeline(&bad, None).unwrap_err();
    assert!(err.contains("0123456789abcdef"), "{err}");
    // tokens= naming other tokens than the student's teacher's.
    let mut tokens = Tokens::load(&tokens_path()).unwrap();
    tokens.embeddings[0] += 1.0;
    let other_tokens = scratch().join("other-tokens.safetensors");
    tokens.save(&other_tokens).unwrap();
    let bad = format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! stablekeypoints model={} \
         tokens={} ! fakesink",
        student_file().display(),
        other_tokens.display()
    );
    let err = run_pipeline(&bad, None).unwrap_err();
    assert!(err.contains("distilled from tokens"), "{err}");
}

#[test]
fn a_damaged_student_file_is_an_error_naming_it() {
    init();
    let bytes = std::fs::read(student_file()).unwrap();
    let cut = scratch().join("cut-student.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let desc = format!(
        "videotestsrc num-buffers=1 ! video/x-raw,width=64,height=48 ! stablekeypoints model={} ! fakesink",
        cut.display()
    );
    let err = run_pipeline(&desc, None).unwrap_err();
    assert!(err.contains("cut-student.safetensors"), "{err}");
}
