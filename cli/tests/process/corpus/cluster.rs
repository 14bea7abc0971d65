//! Flags and environments checked before any work, the cluster examples as they are, and a
//! video with lost frames done with its gaps recorded.

use super::*;

/// `$(NAME)` (Kubernetes) replaced from `vars`.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unset variable in {s}");
    out
}

/// The variables a user sets for the cluster examples: the tiny model, the corpus `list`,
/// the output folder `out`, the CPU.
fn our_vars(list: &Path, out: &Path) -> BTreeMap<String, String> {
    [
        ("MODEL", tiny_dir()),
        ("TOKENS", tiny_tokens()),
        ("CORPUS_LIST", list.to_path_buf()),
        ("OUT_DIR", out.to_path_buf()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
    .chain([("DEVICE".to_string(), "cpu".to_string())])
    .collect()
}

/// `corpus-status` of `out` counts the 5 videos done.
fn status_ok(out: &Path) {
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(out).arg("--json");
        c
    });
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(o.status.success(), "{report}");
    assert_eq!(report["done"], 5);
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
    kubernetes_job_covers_the_corpus(&dir, &list);
    slurm_array_covers_the_corpus(&dir, &list);
}

/// Kubernetes: the container's command as written, its env, every index of the Job.
fn kubernetes_job_covers_the_corpus(dir: &Path, list: &Path) {
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
    let vars = our_vars(list, &out);
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
}

/// Slurm: the script itself, as each task of its array runs it.
fn slurm_array_covers_the_corpus(dir: &Path, list: &Path) {
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
            .envs(our_vars(list, &out));
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
