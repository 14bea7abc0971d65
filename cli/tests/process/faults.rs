//! Faults: model and tokens checked before earlier outputs are touched, truncated videos, an
//! audio track longer than the video, SIGINT and SIGTERM.

use super::*;

#[test]
fn process_checks_model_and_tokens_before_touching_earlier_outputs() {
    // Issue 13: a typo in --tokens (or --model) over an earlier result deleted
    // keypoints.jsonl and truncated annotated.mp4, and the error named the video.
    let dir = temp_dir("earlier");
    let Some(clip) = make_clip(&dir) else { return };
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let before = first_run(&clip, &result);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["annotated.mp4", "keypoints.jsonl"]);
    let typo = dir.join("typo.safetensors");
    for (model, tokens, named) in [
        (tiny_dir(), typo.clone(), "typo.safetensors"),
        (dir.join("no-model"), tokens.clone(), "no-model"),
    ] {
        let out = process_with_tokens(&clip, &result, &model, &tokens);
        assert_clean_error(&out, &[named]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("running"),
            "checked before the pipeline: {err}"
        );
        assert!(
            !err.contains("ball.mp4"),
            "the file at fault is named, not the video: {err}"
        );
        assert_eq!(
            snapshot(&result),
            before,
            "earlier outputs untouched ({named})"
        );
    }
    // An --out-dir that is a file.
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    let out = process_with_tokens(&clip, &file, &tiny_dir(), &tokens);
    assert_clean_error(&out, &["--out-dir", "is a file"]);
}

#[test]
fn a_truncated_video_is_an_error_not_a_short_success() {
    // Issue 13: `process` reported "wrote ... (67 frames)" and exited 0 on a clip of 120
    // frames cut in the middle. Now the frames decoded are checked against the frames the
    // file declares (and the lines and encoded frames against the frames decoded).
    let dir = temp_dir("truncated");
    let Some(clip) = make_clip_as(
        &dir,
        "faststart.mp4",
        "I420",
        &["x264enc", "!", "mp4mux", "faststart=true"],
    ) else {
        return;
    };
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    // The whole clip first: the earlier result.
    let before = first_run(&clip, &result);
    let out = process_with_tokens(&cut, &result, &tiny_dir(), &tokens);
    assert_clean_error(
        &out,
        &[
            "cut.mp4",
            "decoding ended at",
            "of the 1.000 s the file declares",
            "nothing was written",
        ],
    );
    assert_eq!(snapshot(&result), before);
}

#[test]
fn an_audio_track_longer_than_the_video_is_not_a_truncation() {
    // A container's duration is its longest stream's: 30 frames (1 s) with 2 s of AAC
    // declare 2 s, which read as 61 frames refused a complete file as truncated.
    let dir = temp_dir("audio");
    let clip = dir.join("av.mp4");
    let pipeline = format!(
        "-q videotestsrc pattern=ball num-buffers={FRAMES} \
         ! video/x-raw,width=96,height=72,framerate=30/1 ! videoconvert \
         ! video/x-raw,format=I420 ! x264enc ! queue ! mux. \
         audiotestsrc num-buffers=94 samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
         ! avenc_aac ! queue ! mux. mp4mux name=mux ! filesink location={}",
        clip.display()
    );
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    match gst(&args) {
        Some(o) if o.status.success() => {}
        o => {
            let msg = format!(
                "gst-launch-1.0 cannot make the clip with audio (avenc_aac missing?): {:?}",
                o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return;
        }
    }
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(result.join("keypoints.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), FRAMES);
    assert_eq!(decoded_frames(&result.join("annotated.mp4")), FRAMES);
}

/// Sends `signal` to `process` once it runs frames through the element: it must stop,
/// exit with 128 + the signal, leave the earlier outputs as they were and no temporaries.
fn interrupted(signal: &str, code: i32) {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir(&format!("signal-{signal}"));
    let Some(clip) = make_clip(&dir) else { return };
    let long = dir.join("long.mp4");
    let loc = format!("location={}", long.display());
    let made = gst(&[
        "-q",
        "videotestsrc",
        "pattern=ball",
        "num-buffers=600",
        "!",
        "video/x-raw,width=96,height=72,framerate=30/1",
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=I420",
        "!",
        "x264enc",
        "!",
        "mp4mux",
        "!",
        "filesink",
        &loc,
    ])
    .unwrap();
    assert!(made.status.success());
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let before = first_run(&clip, &result);
    let mut child = process_cmd(tiny_dir(), &long, &result)
        .arg("--tokens")
        .arg(&tokens)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut err = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        err += &l;
        err.push('\n');
        if l.starts_with("running") {
            break;
        }
    }
    // Into the frames, then the signal.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap()
        .success());
    for l in lines {
        err += &l.unwrap();
        err.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code), "{err}");
    assert!(
        err.contains(&format!("interrupted by SIG{signal}")),
        "{err}"
    );
    assert!(!err.contains("wrote"), "{err}");
    assert_eq!(
        snapshot(&result),
        before,
        "earlier outputs as they were, no temporaries"
    );
}

#[test]
fn sigint_stops_process_and_keeps_the_earlier_outputs() {
    interrupted("INT", 130);
}

#[test]
fn sigterm_stops_process_and_keeps_the_earlier_outputs() {
    interrupted("TERM", 143);
}
