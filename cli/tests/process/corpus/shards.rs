//! Shards: four processes cover every video once, the same shard twice does each video once,
//! the model is loaded once per run, a killed shard resumes, SIGTERM stops every worker.

use super::*;

fn temporaries(dir: &Path) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|k| k.contains("/.") || k.starts_with('.'))
        .collect()
}

#[test]
fn four_shards_in_four_processes_cover_every_video_once() {
    let dir = temp_dir("shards");
    let Some(_) = make_corpus(&dir.join("clips"), 9, 4) else {
        return;
    };
    let out = dir.join("out");
    // Four tasks at once into one folder (two of them with two workers), as an array runs.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut c = corpus_cmd(&dir.join("clips"), &out);
            c.arg("--shard").arg(format!("{i}/4"));
            if i % 2 == 1 {
                c.args(["--workers", "2"]);
            }
            c.stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let list = manifest(&out);
    assert_eq!(list.len(), 9);
    let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "the work list is sorted");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, o) in outputs.iter().enumerate() {
        let err = stderr(o);
        assert!(o.status.success(), "shard {i}: {err}");
        assert!(
            err.contains(&format!("shard {i}/4 (--shard {i}/4)")),
            "{err}"
        );
        for key in logged(&err, "done") {
            let j = keys.iter().position(|k| *k == key).unwrap();
            assert_eq!(j % 4, i, "shard {i} took video {j} ({key})");
            *seen.entry(key).or_default() += 1;
        }
    }
    // Every video exactly once, and its record says which shard did it.
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    for (j, (key, name)) in list.iter().enumerate() {
        let done = json(&out.join(name).join("done.json"));
        assert_eq!(done["input"], key.as_str());
        assert_eq!(done["shard"], format!("{}/4", j % 4));
        assert_eq!(done["frames"], 4);
        let lines = std::fs::read_to_string(out.join(name).join("keypoints.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 4);
        // Its hash is what sha256sum says.
        let sum = Command::new("sha256sum")
            .arg(out.join(name).join("annotated.mp4"))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            done["outputs"]["annotated.mp4"]["sha256"].as_str().unwrap(),
            sum.split(' ').next().unwrap()
        );
    }
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));
    let status = run({
        let mut c = bin();
        c.arg("corpus-status").arg(&out).arg("--json");
        c
    });
    assert!(status.status.success(), "{}", stderr(&status));
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (report["videos"].as_u64(), report["done"].as_u64()),
        (Some(9), Some(9))
    );
    assert_eq!(report["frames"], 36);
}

#[test]
fn the_model_is_loaded_once_for_all_the_videos_of_a_run() {
    let dir = temp_dir("one-model");
    let Some(_) = make_corpus(&dir.join("clips"), 3, 2) else {
        return;
    };
    let mut c = corpus_cmd(&dir.join("clips"), &dir.join("out"));
    c.args(["--workers", "2"])
        .env("GST_DEBUG", "stablekeypoints:5")
        .env("GST_DEBUG_NO_COLOR", "1");
    let o = run(c);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(logged(&err, "done").len(), 3, "{err}");
    let count = |s: &str| err.lines().filter(|l| l.contains(s)).count();
    assert_eq!(count(": loaded from disk"), 1, "{err}");
    assert!(
        count(": already loaded") >= 3,
        "every element reuses it: {err}"
    );
}

#[test]
fn the_same_shard_twice_at_once_does_each_video_once() {
    // A replaced pod may overlap the one it replaces: the folder locks keep them apart.
    let dir = temp_dir("twice");
    let Some(_) = make_corpus(&dir.join("clips"), 4, 4) else {
        return;
    };
    let out = dir.join("out");
    let spawn = || {
        corpus_cmd(&dir.join("clips"), &out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        stderr(&a),
        stderr(&b)
    );
    let mut done = logged(&stderr(&a), "done");
    done.extend(logged(&stderr(&b), "done"));
    let mut skipped = logged(&stderr(&a), "skipped");
    skipped.extend(logged(&stderr(&b), "skipped"));
    done.sort();
    skipped.sort();
    let keys: Vec<String> = manifest(&out).into_iter().map(|(k, _)| k).collect();
    assert_eq!(done, keys, "each video done once");
    assert_eq!(skipped, keys, "and skipped by the other process");
}

#[test]
fn a_killed_shard_resumes_without_redoing_or_losing_outputs() {
    let dir = temp_dir("kill");
    let clips = dir.join("clips");
    // The second video is long enough to be killed in the middle of.
    if !(make_clip(&clips.join("a.mp4"), "ball", 4)
        && make_clip(&clips.join("b.mp4"), "smpte", 90)
        && make_clip(&clips.join("c.mp4"), "pinwheel", 4))
    {
        return;
    }
    // The reference: one process, the whole list.
    let reference = dir.join("ref");
    let o = run(corpus_cmd(&clips, &reference));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("out");
    let mut child = corpus_cmd(&clips, &out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until b's keypoints are being written, then SIGKILL (no chance to clean up).
    let names: BTreeMap<String, String> = {
        let t0 = Instant::now();
        while !out.join("corpus.json").exists() {
            assert!(t0.elapsed() < Duration::from_secs(60), "no corpus.json");
            std::thread::sleep(Duration::from_millis(5));
        }
        manifest(&out).into_iter().collect()
    };
    let (a, b, c) = (&names["a.mp4"], &names["b.mp4"], &names["c.mp4"]);
    let t0 = Instant::now();
    let partial = loop {
        let busy = std::fs::read_dir(out.join(b)).ok().and_then(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(".keypoints.jsonl.tmp")
                    && std::fs::read(p).is_ok_and(|t| t.contains(&b'\n'))
            })
        });
        if let Some(p) = busy {
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "b never started");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // Complete or absent: a is done, b has only its temporaries, c has not started.
    let a_done = std::fs::read(out.join(a).join("done.json")).unwrap();
    for f in ["keypoints.jsonl", "annotated.mp4", "done.json"] {
        assert!(!out.join(b).join(f).exists(), "b/{f} exists after the kill");
        assert!(!out.join(c).join(f).exists());
    }
    assert!(
        partial.exists(),
        "the killed writer's temporary stays until the rerun"
    );
    // The rerun: a skipped (its record not even rewritten), b redone, c done.
    let o = run(corpus_cmd(&clips, &out));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(logged(&err, "skipped"), ["a.mp4"], "{err}");
    assert_eq!(logged(&err, "done"), ["b.mp4", "c.mp4"], "{err}");
    assert_eq!(
        std::fs::read(out.join(a).join("done.json")).unwrap(),
        a_done
    );
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));
    // Every output byte-identical to the single uninterrupted run (the records differ only in
    // times and attempts).
    let (got, want) = (files(&out), files(&reference));
    let outputs = |m: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        m.keys()
            .filter(|k| !k.ends_with(".json"))
            .cloned()
            .collect()
    };
    assert_eq!(outputs(&got), outputs(&want));
    assert_eq!(outputs(&got).len(), 6);
    for k in outputs(&want) {
        assert!(got[&k] == want[&k], "{k} differs from the single run's");
    }
    let b_done = json(&out.join(b).join("done.json"));
    assert_eq!(b_done["frames"], 90);
    assert_eq!(
        b_done["outputs"],
        json(&reference.join(b).join("done.json"))["outputs"]
    );
}

#[test]
fn sigterm_stops_every_worker_and_keeps_what_is_done() {
    // Kubernetes stops a pod with SIGTERM (node drain, preemption): the videos in progress
    // stop and leave nothing, nothing is recorded as failed, and the exit status is 143.
    let dir = temp_dir("sigterm");
    let clips = dir.join("clips");
    if !(make_clip(&clips.join("a.mp4"), "ball", 4)
        && make_clip(&clips.join("b.mp4"), "smpte", 300)
        && make_clip(&clips.join("c.mp4"), "pinwheel", 300))
    {
        return;
    }
    let out = dir.join("out");
    let child = corpus_cmd(&clips, &out)
        .args(["--workers", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Both long videos under way (a is done by then, or b and c would not both run).
    let running = |name: &str| {
        std::fs::read_dir(out.join(name)).is_ok_and(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".keypoints.jsonl.tmp")
                    && std::fs::read(e.path()).is_ok_and(|t| t.contains(&b'\n'))
            })
        })
    };
    let names: BTreeMap<String, String> = loop {
        if out.join("corpus.json").exists() {
            break manifest(&out).into_iter().collect();
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    };
    while !(running(&names["b.mp4"]) && running(&names["c.mp4"])) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "b and c never ran together"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(
        out.join(&names["a.mp4"]).join("done.json").is_file(),
        "{err}"
    );
    for v in ["b.mp4", "c.mp4"] {
        let listed: Vec<String> = std::fs::read_dir(out.join(&names[v]))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, [".lock"], "{v}: only the lock is left: {err}");
    }
}
