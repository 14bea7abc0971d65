//! Odd videos: under 16 pixels, without a video stream, variable frame rates, frames lost in
//! the middle or short of what the file declares; outputs never replace an input and one
//! run holds an output folder.

use super::*;

/// A raw GRAY8 clip of `w x h` pixels in Matroska (no encoder has a minimum size).
fn tiny_clip(dir: &Path, w: usize, h: usize) -> Option<PathBuf> {
    let caps = format!("video/x-raw,width={w},height={h},framerate=30/1");
    let clip = dir.join(format!("v{w}x{h}.mkv"));
    let loc = format!("location={}", clip.display());
    let num = format!("num-buffers={FRAMES}");
    let out = gst(&[
        "-q",
        "videotestsrc",
        "pattern=ball",
        &num,
        "!",
        &caps,
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=GRAY8",
        "!",
        "matroskamux",
        "!",
        "filesink",
        &loc,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(clip)
}

/// The size of the first decoded frame of `path`.
fn decoded_size(path: &Path) -> (i32, i32) {
    let caps = first_decoded_caps(path);
    let s = caps.structure(0).unwrap();
    (s.get("width").unwrap(), s.get("height").unwrap())
}

#[test]
fn videos_under_16_pixels_are_processed_with_the_annotated_video_scaled_up() {
    // Issue 24 (1): below 16 pixels the annotated branch (H.264 in MP4) could not link, the
    // video went nowhere and `process` never ended.
    let dir = temp_dir("tiny");
    let tokens = tiny_dir().join("tokens.safetensors");
    for ((w, h), encoded) in [((2, 2), (16, 16)), ((640, 8), (1280, 16))] {
        let Some(clip) = tiny_clip(&dir, w, h) else {
            return;
        };
        let result = dir.join(format!("out{w}x{h}"));
        let out = output_within(
            process_cmd(tiny_dir(), &clip, &result)
                .arg("--tokens")
                .arg(&tokens),
            120,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{w}x{h}: {err}");
        assert!(
            err.contains(&format!(
                "the annotated video is {}x{}",
                encoded.0, encoded.1
            )),
            "{err}"
        );
        let lines = std::fs::read_to_string(result.join("keypoints.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), FRAMES, "{w}x{h}");
        let annotated = result.join("annotated.mp4");
        assert_eq!(decoded_frames(&annotated), FRAMES, "{w}x{h}");
        assert_eq!(decoded_size(&annotated), encoded);
    }
}

#[test]
fn a_file_without_video_says_so_at_once() {
    // Issue 24 (2): `train --input` on an audio-only file waited forever at 0% CPU, and
    // `process` gave up after 60 s ("no video frame within 60 s").
    let dir = temp_dir("audio-only");
    let clip = dir.join("audio.mp4");
    let loc = format!("location={}", clip.display());
    match gst(&[
        "-q",
        "audiotestsrc",
        "num-buffers=40",
        "!",
        "avenc_aac",
        "!",
        "mp4mux",
        "!",
        "filesink",
        &loc,
    ]) {
        Some(o) if o.status.success() => {}
        o => {
            let msg = format!("gst-launch-1.0 cannot make an AAC file: {o:?}");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return;
        }
    }
    let tokens = tiny_dir().join("tokens.safetensors");
    let started = std::time::Instant::now();
    let train = output_within(&mut train_cmd(&clip, dir.join("t.safetensors")), 30);
    assert_clean_error(&train, &["audio.mp4", "has no video stream", "audio/x-raw"]);
    let process = output_within(
        process_cmd(tiny_dir(), &clip, dir.join("out"))
            .arg("--tokens")
            .arg(&tokens),
        30,
    );
    assert_clean_error(&process, &["audio.mp4", "has no video stream"]);
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn no_output_replaces_an_input_and_one_run_per_out_dir() {
    // Issue 24 (5, 6): `train --input clip.mp4 --out clip.mp4` replaced the video with the
    // tokens; `process --input OUT/annotated.mp4 --out-dir OUT` replaced its own input; and
    // two runs into one folder both exited 0, the last replacing the other's outputs.
    let dir = temp_dir("inputs");
    let Some(clip) = make_clip(&dir) else { return };
    let before = std::fs::read(&clip).unwrap();
    let out = train_cmd(&clip, dir.join("./ball.mp4")).output().unwrap();
    assert_clean_error(&out, &["--out", "is the input --input", "ball.mp4"]);
    assert_eq!(std::fs::read(&clip).unwrap(), before);

    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    first_run(&clip, &result);
    let annotated = result.join("annotated.mp4");
    // The annotated video as the input, by its name and through a link.
    let link = dir.join("link.mp4");
    std::os::unix::fs::symlink(&annotated, &link).unwrap();
    for input in [&annotated, &link] {
        let before = snapshot(&result);
        let out = process_with_tokens(input, &result, &tiny_dir(), &tokens);
        assert_clean_error(
            &out,
            &["--out-dir", "annotated.mp4", "is the input --input"],
        );
        assert_eq!(snapshot(&result), before);
    }

    // A second run while one holds the folder stops at once, naming the first.
    let first = std::process::Command::new("flock")
        .arg(result.join(".lock"))
        .args([
            "sh",
            "-c",
            "echo process 4242 on elsewhere > \"$0\"; sleep 30",
        ])
        .arg(result.join(".lock"))
        .spawn();
    let Ok(mut first) = first else {
        eprintln!("SKIPPED: flock(1) is not installed");
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = output_within(
        process_cmd(tiny_dir(), &clip, &result)
            .arg("--tokens")
            .arg(&tokens),
        30,
    );
    let _ = first.kill();
    let _ = first.wait();
    assert_clean_error(
        &out,
        &[
            "--out-dir",
            "in use by another run",
            "process 4242 on elsewhere",
        ],
    );
}

/// The `frame` and `stream_time` (the time in the source) of every line of a keypoints
/// file.
fn frames_and_times(jsonl: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["frame"].as_u64().unwrap(),
                v["stream_time"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_variable_frame_rate_video_is_processed_frame_by_frame() {
    // Issue 24, 9: a file without a frame rate (screen recorders, phones) was refused as
    // "truncated or damaged" and every output discarded: the decoder gives its last frame
    // no duration, so decoding "ended" a frame short of what the file declares. Frames 30
    // ms to 1 s apart, the last one held for a second. Matroska says framerate=0/1; an
    // MP4 of such frames reads as 1000000000/1, a rate that is no frame rate either.
    let times: Vec<u64> = vec![
        0, 30, 70, 100, 400, 430, 1430, 1460, 1500, 1800, 1830, 1870, 2900,
    ];
    for (name, mux) in [("vfr.mkv", "matroskamux"), ("vfr.mp4", "mp4mux")] {
        let dir = temp_dir(&format!("vfr-{mux}"));
        let Some(clip) = clip_at_times(&dir.join(name), &times, 1000, (0, 1), mux) else {
            return;
        };
        let result = dir.join("result");
        let tokens = tiny_dir().join("tokens.safetensors");
        let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            !err.contains("missing"),
            "{name}: no frame is missing: {err}"
        );
        let got = frames_and_times(&result.join("keypoints.jsonl"));
        let want: Vec<(u64, u64)> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| (i as u64, t * 1_000_000))
            .collect();
        assert_eq!(got, want, "{name}: every frame, counted, at its own time");
        // Each frame in the annotated video too (mp4mux used to drop the last one).
        assert_eq!(
            decoded_frames(&result.join("annotated.mp4")),
            times.len(),
            "{name}"
        );
    }
}

#[test]
fn frames_lost_in_the_middle_are_reported_and_later_frames_keep_their_index() {
    // Issue 24, 10: 15 of 120 frames missing in the middle of a file: `process` said
    // nothing and numbered the frames after the gap 40, 41, ... instead of 55, 56, ...
    let dir = temp_dir("gap");
    let ms = |i: u64| (i * 1000).div_ceil(30);
    let kept: Vec<u64> = (0..40).chain(55..120).collect();
    let times: Vec<u64> = kept.iter().map(|&i| ms(i)).collect();
    let Some(clip) = clip_at_times(&dir.join("gap.mp4"), &times, 33, (30, 1), "mp4mux") else {
        return;
    };
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("gap.mp4: frames 40 to 54 (15 frames, 1.333 s to 1.833 s) are missing"),
        "no warning naming the lost frames: {err}"
    );
    let got = frames_and_times(&result.join("keypoints.jsonl"));
    assert_eq!(got.len(), kept.len());
    for ((frame, pts), (&i, &t)) in got.iter().zip(kept.iter().zip(&times)) {
        assert_eq!(*frame, i, "the source's frame index");
        // The muxer's time scale rounds: within a millisecond of the source's time.
        assert!(
            pts.abs_diff(t * 1_000_000) <= 1_000_000,
            "frame {i}: at {pts} ns"
        );
    }
    assert_eq!(decoded_frames(&result.join("annotated.mp4")), kept.len());
}

/// A file cut so that its end falls within the end-of-file tolerance (an AVI cut at half
/// still declares the frames it indexes) is processed with a warning naming the frames
/// decoded against those declared; the whole file gets none.
#[test]
fn a_file_a_frame_short_of_what_it_declares_is_warned_about() {
    let dir = temp_dir("cut-avi");
    let Some(whole) = make_clip_as(&dir, "whole.avi", "I420", &["jpegenc", "!", "avimux"]) else {
        return;
    };
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("cut.avi");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let process = |input: &Path, out: &str| {
        let o = bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_dir().join("tokens.safetensors"))
            .arg("--no-noise")
            .arg("--input")
            .arg(input)
            .arg("--out-dir")
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = process(&whole, "whole");
    assert!(!err.contains("warning"), "{err}");
    let err = process(&cut, "cut");
    let warning = err
        .lines()
        .find(|l| l.contains("frames the file declares were decoded"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    // "N of the M frames ...": fewer decoded than declared, and the lines match the N.
    let words: Vec<&str> = warning.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").unwrap();
    let (decoded, declared): (usize, usize) = (
        words[at - 1].parse().unwrap(),
        words[at + 2].parse().unwrap(),
    );
    assert!(decoded < declared, "{warning}");
    let lines = std::fs::read_to_string(dir.join("cut/keypoints.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), decoded);
    let _ = std::fs::remove_dir_all(&dir);
}
