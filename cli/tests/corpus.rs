//! Corpora (issue 16): `process --inputs` as the shards of a job array, resumable and
//! recording failures; `corpus-status`; `train --inputs`; the cluster examples run as they
//! are. Short clips (64x48, a few frames) are made with gst-launch-1.0 (videotestsrc, x264enc)
//! and the tiny test model keeps each video well under a second.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
}

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny-sd1")
}

fn tiny_tokens() -> PathBuf {
    tiny_dir().join("tokens.safetensors")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skp-corpus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const PATTERNS: [&str; 8] = [
    "ball",
    "smpte",
    "pinwheel",
    "spokes",
    "gradient",
    "checkers-8",
    "circular",
    "zone-plate",
];

/// A clip of `frames` frames of `pattern` at `path`; false (with a message) when GStreamer
/// cannot make it outside CI.
fn make_clip(path: &Path, pattern: &str, frames: usize) -> bool {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc"])
        .arg(format!("pattern={pattern}"))
        .arg(format!("num-buffers={frames}"))
        .args([
            "!",
            "video/x-raw,width=64,height=48,framerate=30/1",
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
        ])
        .arg(format!("location={}", path.display()))
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        other => {
            let msg = format!("gst-launch-1.0 cannot make the test clips: {other:?}");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            false
        }
    }
}

/// `n` clips `clip0.mp4` ... in `dir` (patterns in turn), `frames` each.
fn make_corpus(dir: &Path, n: usize, frames: usize) -> Option<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("clip{i}.mp4"));
            make_clip(&p, PATTERNS[i % PATTERNS.len()], frames).then_some(p)
        })
        .collect()
}

/// `process --inputs INPUTS --out-dir OUT` with the tiny model and its tokens.
fn corpus_cmd(inputs: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--tokens")
        .arg(tiny_tokens())
        .arg("--inputs")
        .arg(inputs)
        .arg("--out-dir")
        .arg(out);
    // The tests choose their shards; the CI runner may be a task of an array itself.
    for v in [
        "JOB_COMPLETION_INDEX",
        "SKP_SHARD_COUNT",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// (key, folder name) of every video of `out/corpus.json`, in list order.
fn manifest(out: &Path) -> Vec<(String, String)> {
    json(&out.join("corpus.json"))["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["input"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file under `dir` (relative path -> bytes), the folder locks aside.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != ".lock" {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

fn temporaries(dir: &Path) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|k| k.contains("/.") || k.starts_with('.'))
        .collect()
}

/// Lines of a process's log that say `verb KEY` (`done`, `skipped`, `FAILED`).
fn logged(err: &str, verb: &str) -> Vec<String> {
    err.lines()
        .filter_map(|l| {
            let rest = l.split_once("] ")?.1;
            let rest = rest.strip_prefix(verb)?.strip_prefix(' ')?;
            let end = [": ", " ("].iter().filter_map(|sep| rest.find(sep)).min()?;
            Some(rest[..end].to_string())
        })
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

#[test]
fn a_broken_video_is_recorded_and_the_rest_complete() {
    let dir = temp_dir("broken");
    let clips = dir.join("clips");
    if !(make_clip(&clips.join("a.mp4"), "ball", 4) && make_clip(&clips.join("c.mp4"), "smpte", 4))
    {
        return;
    }
    std::fs::write(clips.join("broken.mp4"), "not a video").unwrap();
    // A list file: relative paths, a file:// URI (read through uridecodebin), a missing file.
    let list = dir.join("videos.txt");
    let uri = format!("file://{}", clips.join("c.mp4").display());
    std::fs::write(
        &list,
        format!("# test corpus\nclips/a.mp4\nclips/broken.mp4\n\nclips/missing.mp4\n{uri}\n"),
    )
    .unwrap();
    let out = dir.join("out");
    let process = || {
        let mut c = corpus_cmd(&list, &out);
        c.args(["--max-attempts", "2"]);
        run(c)
    };
    let o = process();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "some failed: exit 3: {err}");
    let mut done = logged(&err, "done");
    done.sort();
    assert_eq!(done, ["clips/a.mp4", uri.as_str()], "{err}");
    assert!(
        err.contains("FAILED clips/broken.mp4 (attempt 1 of 2)"),
        "{err}"
    );
    assert!(
        err.contains("FAILED clips/missing.mp4 (attempt 1 of 2)"),
        "{err}"
    );
    let names: BTreeMap<String, String> = manifest(&out).into_iter().collect();
    let failed = json(&out.join(&names["clips/broken.mp4"]).join("failed.json"));
    assert_eq!(failed["attempts"], 1);
    let e = failed["error"].as_str().unwrap();
    assert!(
        e.contains("broken.mp4") && e.contains("cannot decode"),
        "{e}"
    );
    let missing = json(&out.join(&names["clips/missing.mp4"]).join("failed.json"));
    assert!(missing["error"].as_str().unwrap().contains("missing.mp4"));
    assert!(!out
        .join(&names["clips/broken.mp4"])
        .join("done.json")
        .exists());
    // The URI's record has the file's size: the local file behind file:// is stat'ed.
    let c_done = json(&out.join(&names[&uri]).join("done.json"));
    assert_eq!(
        c_done["size"].as_u64(),
        Some(std::fs::metadata(clips.join("c.mp4")).unwrap().len())
    );
    // Rerun: the good ones are skipped, the broken one tried a second and last time.
    let o = process();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(logged(&err, "done").is_empty(), "{err}");
    assert!(
        err.contains("FAILED clips/broken.mp4 (attempt 2 of 2)"),
        "{err}"
    );
    let o = process();
    let err = stderr(&o);
    assert!(
        err.contains("gave up on clips/broken.mp4: failed 2 times (--max-attempts 2)"),
        "{err}"
    );
    let failed = json(&out.join(&names["clips/broken.mp4"]).join("failed.json"));
    assert_eq!(failed["attempts"], 2, "a given-up video is not tried");
    // The status report counts them and names the errors.
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(&out);
        c
    });
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{text}");
    assert!(text.contains("4 videos"), "{text}");
    assert!(text.contains("done           2  (8 frames)"), "{text}");
    assert!(text.contains("failed         2"), "{text}");
    assert!(text.contains("clips/broken.mp4 (2 attempts):"), "{text}");
    // A fixed file (another size and mtime) starts afresh and completes.
    assert!(make_clip(&clips.join("broken.mp4"), "spokes", 4));
    let o = process();
    let err = stderr(&o);
    assert_eq!(logged(&err, "done"), ["clips/broken.mp4"], "{err}");
    let folder = out.join(&names["clips/broken.mp4"]);
    assert!(!folder.join("failed.json").exists());
    assert_eq!(json(&folder.join("done.json"))["attempt"], 1);
    // The merged lines carry their video.
    let merged = dir.join("all.jsonl");
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(&out).arg("--merge").arg(&merged);
        c
    });
    assert_eq!(o.status.code(), Some(3), "missing.mp4 is still missing");
    let lines: Vec<Value> = std::fs::read_to_string(&merged)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let per_video: Vec<&str> = lines.iter().map(|l| l["video"].as_str().unwrap()).collect();
    // Work-list order: a, broken (fixed), then the URI; missing.mp4 has no lines.
    let mut want = vec!["clips/a.mp4"; 4];
    want.extend(["clips/broken.mp4"; 4]);
    want.extend([uri.as_str(); 4]);
    assert_eq!(per_video, want);
    assert_eq!(lines[4]["frame"], 0);
    assert!(lines
        .iter()
        .all(|l| l["schema"] == "stablekeypoints-frame/1"));
}

#[test]
fn changed_tokens_redo_everything_and_a_touched_input_redoes_itself() {
    let dir = temp_dir("changed");
    let clips = dir.join("clips");
    let Some(paths) = make_corpus(&clips, 3, 4) else {
        return;
    };
    let tokens = dir.join("tokens.safetensors");
    std::fs::copy(tiny_tokens(), &tokens).unwrap();
    let out = dir.join("out");
    let process = |extra: &[&str]| {
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(&tokens)
            .arg("--inputs")
            .arg(&clips)
            .arg("--out-dir")
            .arg(&out)
            .args(extra)
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID");
        let o = run(c);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let keys = ["clip0.mp4", "clip1.mp4", "clip2.mp4"];
    assert_eq!(logged(&process(&[]), "done"), keys);
    let first = files(&out);
    assert_eq!(logged(&process(&[]), "skipped"), keys, "nothing changed");
    assert_eq!(files(&out), first, "a skip rewrites nothing");
    // Other tokens at the same path (one embedding changed).
    let mut t = stablekeypoints::Tokens::load(&tokens).unwrap();
    for v in &mut t.embeddings[..t.context_dim] {
        *v = -*v;
    }
    t.save(&tokens).unwrap();
    // Half the work, then the status: the other half is to redo (done with other settings).
    assert_eq!(logged(&process(&["--shard", "1/2"]), "done"), ["clip1.mp4"]);
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(&out).arg("--json");
        c
    });
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (report["done"].as_u64(), report["stale"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(logged(&process(&[]), "done"), ["clip0.mp4", "clip2.mp4"]);
    let names: Vec<String> = manifest(&out).into_iter().map(|(_, n)| n).collect();
    let sha =
        |name: &str| json(&out.join(name).join("done.json"))["settings"]["tokens_sha256"].clone();
    assert_ne!(sha(&names[0]), first_sha(&first, &names[0]));
    // Touching an input (same bytes, new mtime) redoes that video only.
    let o = Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(&paths[2])
        .status()
        .unwrap();
    assert!(o.success());
    let err = process(&[]);
    assert_eq!(logged(&err, "done"), ["clip2.mp4"], "{err}");
    assert_eq!(logged(&err, "skipped"), ["clip0.mp4", "clip1.mp4"], "{err}");
    // Without the annotated video: redone, and the old annotated.mp4 is removed, not left to
    // look current.
    let err = process(&["--no-annotated"]);
    assert_eq!(logged(&err, "done"), keys, "{err}");
    for n in &names {
        assert!(!out.join(n).join("annotated.mp4").exists());
        assert!(out.join(n).join("keypoints.jsonl").is_file());
    }
}

/// The tokens hash in `done.json` of an earlier snapshot.
fn first_sha(snapshot: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    let done: Value = serde_json::from_slice(&snapshot[&format!("{name}/done.json")]).unwrap();
    done["settings"]["tokens_sha256"].clone()
}

#[test]
fn train_on_a_corpus_samples_frames_uniformly_over_all_its_videos() {
    let dir = temp_dir("train");
    let clips = dir.join("clips");
    if !(make_clip(&clips.join("a.mp4"), "ball", 10)
        && make_clip(&clips.join("b/b.mp4"), "smpte", 20)
        && make_clip(&clips.join("c.mp4"), "pinwheel", 30))
    {
        return;
    }
    std::fs::write(clips.join("bad.mkv"), "not a video").unwrap();
    let out = dir.join("tokens.safetensors");
    let o = run({
        let mut c = bin();
        c.args(["train", "--model"])
            .arg(tiny_dir())
            .arg("--inputs")
            .arg(&clips)
            .arg("--out")
            .arg(&out)
            .args([
                "--steps",
                "2",
                "--batch-size",
                "1",
                "--num-tokens",
                "16",
                "--num-candidates",
                "8",
                "--num-keypoints",
                "4",
                "--num-indices",
                "4",
                "--map-res",
                "16",
                "--max-frames",
                "7",
            ]);
        c
    });
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // 60 frames in list order a (0-9), b/b (10-29), c (30-59); 7 spread uniformly:
    // i * 59 / 6 = 0 9 19 29 39 49 59, i.e. a: 0 9; b: 9 19; c: 9 19 29.
    assert!(err.contains("skipped "), "{err}");
    assert!(err.contains("bad.mkv"), "{err}");
    assert!(
        err.contains(
            "sampled 7 of the 60 frames of 3 videos uniformly, from 3 of them (1 skipped):"
        ),
        "{err}"
    );
    for line in ["  a.mp4: 0 9\n", "  b/b.mp4: 9 19\n", "  c.mp4: 9 19 29\n"] {
        assert!(err.contains(line), "{line:?} in {err}");
    }
    assert!(err.contains("on 7 images"), "{err}");
    assert_eq!(
        stablekeypoints::Tokens::load(&out).unwrap().indices.len(),
        4
    );
}

#[test]
fn process_takes_a_pose_and_writes_coco_results() {
    let dir = temp_dir("pose");
    let clip = dir.join("a.mp4");
    if !make_clip(&clip, "ball", 5) {
        return;
    }
    // A pose whose one landmark is keypoint 0: rows 0 and 1 of W are the identity.
    let tokens = stablekeypoints::Tokens::load(&tiny_tokens()).unwrap();
    let k = tokens.indices.len();
    let mut weights = vec![vec![0.0, 0.0]; 2 * k];
    weights[0] = vec![1.0, 0.0];
    weights[1] = vec![0.0, 1.0];
    let pose = dir.join("pose.json");
    std::fs::write(
        &pose,
        serde_json::json!({
            "format": "stablekeypoints-pose", "version": 1, "num_keypoints": k,
            "num_landmarks": 1, "token_indices": tokens.indices, "names": ["nose"],
            "skeleton": [], "weights": weights,
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.join("out");
    let o = run({
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_tokens())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(&out)
            .arg("--pose")
            .arg(&pose)
            .args(["--coco", "--no-annotated"]);
        c
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("annotated.mp4").exists());
    let records: Vec<Value> = std::fs::read_to_string(out.join("keypoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    for r in &records {
        let (lm, kp) = (&r["pose"][0], &r["keypoints"][0]);
        assert_eq!(lm["name"], "nose");
        for axis in ["nx", "ny"] {
            let (a, b) = (lm[axis].as_f64().unwrap(), kp[axis].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{axis}: {a} vs {b}");
        }
    }
    // COCO with a pose: a keypoint dataset, one annotation per frame, the named landmark.
    let coco = json(&out.join("keypoints.coco.json"));
    assert_eq!(coco["images"].as_array().unwrap().len(), 5);
    assert_eq!(coco["annotations"].as_array().unwrap().len(), 5);
    assert_eq!(
        coco["categories"][0]["keypoints"],
        serde_json::json!(["nose"])
    );
    // A pose fitted with other tokens is refused before anything runs.
    let mut other = json(&pose);
    other["token_indices"] = serde_json::json!((0..k).map(|i| i + 1000).collect::<Vec<_>>());
    std::fs::write(&pose, other.to_string()).unwrap();
    let o = run({
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_tokens())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(dir.join("out2"))
            .arg("--pose")
            .arg(&pose);
        c
    });
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("--pose") && err.contains("pose.json"), "{err}");
    assert!(!dir.join("out2").exists());
}

#[test]
fn corpus_flags_and_environments_are_checked_before_any_work() {
    let dir = temp_dir("flags");
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    std::fs::write(clips.join("a.mp4"), "x").unwrap();
    let out = dir.join("out");
    let fails = |c: &mut Command, needles: &[&str]| {
        let o = c.output().unwrap();
        let err = stderr(&o);
        assert!(!o.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} in {err}");
        }
        assert!(!out.exists(), "nothing written: {err}");
    };
    let base = || {
        let mut c = corpus_cmd(&clips, &out);
        c.env_remove("SKP_SHARD_COUNT");
        c
    };
    fails(base().args(["--shard", "4/4"]), &["--shard", "not below"]);
    fails(base().args(["--shard", "two"]), &["--shard", "I/N"]);
    fails(base().args(["--workers", "0"]), &["--workers"]);
    fails(
        base().env("JOB_COMPLETION_INDEX", "1"),
        &["JOB_COMPLETION_INDEX=1", "--shard-count"],
    );
    fails(
        base()
            .env("JOB_COMPLETION_INDEX", "3")
            .args(["--shard-count", "3"]),
        &["JOB_COMPLETION_INDEX=3", "not below the shard count 3"],
    );
    fails(
        base().args(["--shard-count", "2"]),
        &["--shard-count 2 without"],
    );
    // --inputs needs --tokens; --shard needs --inputs; --input and --inputs exclude each other.
    let mut c = bin();
    c.args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--inputs")
        .arg(&clips)
        .arg("--out-dir")
        .arg(&out);
    fails(&mut c, &["--tokens"]);
    let mut c = bin();
    c.args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(clips.join("a.mp4"))
        .args(["--shard", "0/2", "--out-dir"])
        .arg(&out);
    fails(&mut c, &["--shard", "--inputs"]);
    fails(base().arg("--input").arg(clips.join("a.mp4")), &["--input"]);
    // A video given as the list, and an empty folder.
    let mut c = corpus_cmd(&clips.join("a.mp4"), &out);
    fails(&mut c, &["is a video"]);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(&mut corpus_cmd(&empty, &out), &["no video files"]);
    // The environment: a Slurm task takes its shard (with the count as the script fixes it).
    let o = run({
        let mut c = base();
        c.env("SLURM_ARRAY_TASK_ID", "1")
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .env("SKP_SHARD_COUNT", "5");
        c
    });
    let err = stderr(&o);
    assert!(
        err.contains("shard 1/5 (SLURM_ARRAY_TASK_ID=1 and SKP_SHARD_COUNT=5): 0 of the 1 videos"),
        "{err}"
    );
    assert!(o.status.success(), "an empty shard is complete: {err}");
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(&dir);
        c
    });
    assert!(stderr(&o).contains("corpus.json"), "{}", stderr(&o));
}

/// `$(NAME)` (Kubernetes) replaced from `vars`.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unset variable in {s}");
    out
}

#[test]
fn the_cluster_examples_run_with_the_clis_flags() {
    let dir = temp_dir("cluster");
    let clips = dir.join("clips");
    let Some(paths) = make_corpus(&clips, 5, 3) else {
        return;
    };
    let list = dir.join("videos.txt");
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).unwrap();
    let ours = |out: &Path| -> BTreeMap<String, String> {
        [
            ("MODEL", tiny_dir()),
            ("TOKENS", tiny_tokens()),
            ("CORPUS_LIST", list.clone()),
            ("OUT_DIR", out.to_path_buf()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
        .chain([("DEVICE".to_string(), "cpu".to_string())])
        .collect()
    };
    let status_ok = |out: &Path| {
        let o = run({
            let mut c = bin();
            c.arg("corpus-status").arg(out).arg("--json");
            c
        });
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(o.status.success(), "{report}");
        assert_eq!(report["done"], 5);
    };

    // Kubernetes: the container's command as written, its env, every index of the Job.
    let yaml = std::fs::read_to_string(repo().join("examples/cluster/indexed-job.yaml")).unwrap();
    let field = |name: &str| -> String {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in the manifest"))
            .split('#')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("completionMode"), "Indexed");
    let completions: usize = field("completions").parse().unwrap();
    let command: Vec<String> = serde_json::from_str(&field("command")).unwrap();
    assert_eq!(&command[..2], ["stablekeypoints", "process"]);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let lines: Vec<&str> = yaml.lines().map(str::trim).collect();
    for w in lines.windows(2) {
        if let (Some(k), Some(v)) = (w[0].strip_prefix("- name: "), w[1].strip_prefix("value: ")) {
            env.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    }
    assert_eq!(
        env["SKP_SHARD_COUNT"],
        completions.to_string(),
        "count = completions"
    );
    let out = dir.join("k8s");
    let vars = ours(&out);
    for index in 0..completions {
        let args: Vec<String> = command[1..].iter().map(|a| expand(a, &vars)).collect();
        let o = run({
            let mut c = bin();
            c.args(&args)
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .env("SKP_SHARD_COUNT", &env["SKP_SHARD_COUNT"])
                .env_remove("SLURM_ARRAY_TASK_ID");
            c
        });
        let err = stderr(&o);
        assert!(o.status.success(), "index {index}: {args:?}: {err}");
        assert!(
            err.contains(&format!(
                "shard {index}/{completions} (JOB_COMPLETION_INDEX"
            )),
            "{err}"
        );
    }
    status_ok(&out);
    let names: Vec<String> = manifest(&out).into_iter().map(|(_, n)| n).collect();
    for n in &names {
        // The manifest asks for COCO results and no annotated video.
        assert!(out.join(n).join("keypoints.coco.json").is_file());
        assert!(!out.join(n).join("annotated.mp4").exists());
    }

    // Slurm: the script itself, as each task of its array runs it.
    let script = repo().join("examples/cluster/slurm-array.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let array = text
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .unwrap();
    let (range, _) = array.split_once('%').unwrap_or((array, ""));
    let (lo, hi) = range.split_once('-').unwrap();
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    assert_eq!(lo, 0, "shard indices are task ids from 0");
    assert!(
        text.contains(&format!(
            "SKP_SHARD_COUNT=\"${{SKP_SHARD_COUNT:-{}}}\"",
            hi + 1
        )),
        "the script fixes the count to the array's size"
    );
    let out = dir.join("slurm");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_stablekeypoints"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let task = |id: usize, count: usize| {
        let mut c = Command::new("bash");
        c.arg(&script)
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", id.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", count.to_string())
            .env_remove("SKP_SHARD_COUNT")
            .env_remove("JOB_COMPLETION_INDEX")
            .envs(ours(&out));
        run(c)
    };
    for id in lo..=hi {
        let o = task(id, hi + 1);
        assert!(o.status.success(), "task {id}: {}", stderr(&o));
    }
    status_ok(&out);
    // A rerun of two tasks (sbatch --array=3,5: a count of 2) keeps task 3's share.
    let o = task(3, 2);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("shard 3/{}", hi + 1)), "{err}");
}

#[test]
fn a_video_with_lost_frames_is_done_with_its_gaps_recorded() {
    // Issue 24, 10: frames lost in the middle of a video are named in the log and in its
    // done.json (`gaps`), and the frames after them keep their source index.
    let dir = temp_dir("gaps");
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let ms = |i: u64| (i * 1000).div_ceil(30);
    let kept: Vec<u64> = (0..10).chain(15..20).collect();
    let times: Vec<u64> = kept.iter().map(|&i| ms(i)).collect();
    let clip = clips.join("gap.mp4");
    if common::clips::clip_at_times(&clip, &times, 33, (30, 1), "mp4mux").is_none()
        || !make_clip(&clips.join("whole.mp4"), "ball", 4)
    {
        return;
    }
    let out = dir.join("out");
    let o = run(corpus_cmd(&clips, &out));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("gap.mp4: frames 10 to 14 (5 frames, 0.333 s to 0.500 s) are missing"),
        "{err}"
    );
    let names: BTreeMap<String, String> = manifest(&out).into_iter().collect();
    let done = json(&out.join(&names["gap.mp4"]).join("done.json"));
    assert_eq!(done["frames"], 15);
    assert_eq!(
        done["gaps"],
        serde_json::json!([{
            "first_frame": 10,
            "last_frame": 14,
            "frames": 5,
            // Nanoseconds in seconds: 10 / 30 s is 333 333 333 ns.
            "start": 0.333333333,
            "end": 0.5,
        }])
    );
    let whole = json(&out.join(&names["whole.mp4"]).join("done.json"));
    assert_eq!(whole["gaps"], serde_json::json!([]));
    let lines = std::fs::read_to_string(out.join(&names["gap.mp4"]).join("keypoints.jsonl"));
    let frames: Vec<u64> = lines
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["frame"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(frames, kept);
}
