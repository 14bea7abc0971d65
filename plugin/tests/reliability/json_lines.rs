//! The JSON lines file under faults.

use super::*;

#[test]
fn json_lines_stay_whole_when_the_pipeline_errors_mid_stream() {
    init();
    let info = video_info(F::Rgb, 32, 24);
    // Our element fails (a truncated buffer cannot be mapped) after 3 good frames.
    let json = scratch().join("error-mid-stream.jsonl");
    let p = launch(&format!(
        "appsrc name=src format=time caps={} ! stablekeypoints {} ! stablekeypointspublish location={} \
         ! fakesink",
        info.to_caps().unwrap().to_string().replace(' ', ""),
        props(),
        json.display()
    ));
    let src = p.by_name("src").unwrap();
    let push = |buf: gst::Buffer| src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buf]);
    p.set_state(gst::State::Playing).unwrap();
    for i in 0..3 {
        let flow = push(timed(
            Pixels::random(F::Rgb, 32, 24, i).standard_buffer(&info, i),
            i,
        ));
        assert_eq!(flow, gst::FlowReturn::Ok);
    }
    let _ = push(timed(gst::Buffer::with_size(100).unwrap(), 3));
    for i in 4..6 {
        let _ = push(timed(
            Pixels::random(F::Rgb, 32, 24, i).standard_buffer(&info, i),
            i,
        ));
    }
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    let err =
        wait_eos_or_error(&p, Duration::from_secs(60)).expect_err("a truncated buffer is an error");
    p.set_state(gst::State::Null).unwrap();
    assert!(err.0.contains("Keypoint inference failed"), "{err:?}");
    let lines = json_lines(&json);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["frame"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // Downstream fails after 4 buffers.
    let json = scratch().join("downstream-error.jsonl");
    let p = launch(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=RGB,width=24,height=16 \
         ! stablekeypoints {} ! stablekeypointspublish location={} ! identity error-after=4 ! fakesink",
        props(),
        json.display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    let err = wait_eos_or_error(&p, Duration::from_secs(60)).expect_err("identity errors");
    p.set_state(gst::State::Null).unwrap();
    assert!(err.2.starts_with("identity"), "{err:?}");
    let lines = json_lines(&json);
    assert!((4..=5).contains(&lines.len()), "{} lines", lines.len());
}

#[test]
fn json_lines_stay_whole_when_set_to_null_without_eos() {
    let json = scratch().join("null-without-eos.jsonl");
    let p = launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,format=BGRx,width=24,height=16,framerate=50/1 \
         ! stablekeypoints {} inference-interval=3 ! stablekeypointstrack gap-policy=interpolate \
         ! stablekeypointspublish location={} ! fakesink name=sink",
        props(),
        json.display()
    ));
    let n = count_buffers(&p, "sink");
    play_then_stop(&p, &n, 8);
    let lines = json_lines(&json);
    assert!(lines.len() >= 8, "{} lines", lines.len());
    let frames: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
}

#[test]
fn json_write_failure_leaves_only_whole_lines() {
    if !isolated(module_path!(), "json_write_failure_leaves_only_whole_lines") {
        return;
    }
    // A file size limit makes a write stop in the middle of a line (disk-full alike).
    let json = scratch().join("limited.jsonl");
    let pipeline = format!(
        "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=24,height=16 \
         ! stablekeypoints {} ! stablekeypointspublish location={} ! fakesink",
        props(),
        json.display()
    );
    model_dir(); // written before the limit applies
    let p = launch(&pipeline);
    let limit: u64 = 2500;
    // SAFETY (both blocks): plain libc calls; SIGXFSZ is ignored so that the write fails
    // with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let outcome = p
        .set_state(gst::State::Playing)
        .map(|_| wait_eos_or_error(&p, Duration::from_secs(60)));
    let _ = p.set_state(gst::State::Null);
    // The limit applies to every file this process writes, including a redirected
    // stdout/stderr: lift it before printing or failing.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let err = outcome.unwrap().expect_err("the write fails");
    println!("write failure: {err:?}");
    assert!(
        err.0.to_lowercase().contains("cannot write keypoints to")
            && err.0.contains(&json.display().to_string()),
        "{err:?}"
    );
    let len = std::fs::metadata(&json).unwrap().len();
    assert!(len > 0 && len <= limit, "{len} bytes");
    let lines = json_lines(&json);
    assert!(!lines.is_empty());
}
