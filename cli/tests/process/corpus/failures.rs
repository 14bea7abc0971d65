//! Failures and changes: a broken video is recorded and the rest complete; changed tokens
//! redo everything and a touched input redoes itself.

use super::*;

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
    status_counts_them_and_names_the_errors(&out);
    // A fixed file (another size and mtime) starts afresh and completes.
    assert!(make_clip(&clips.join("broken.mp4"), "spokes", 4));
    let o = process();
    let err = stderr(&o);
    assert_eq!(logged(&err, "done"), ["clips/broken.mp4"], "{err}");
    let folder = out.join(&names["clips/broken.mp4"]);
    assert!(!folder.join("failed.json").exists());
    assert_eq!(json(&folder.join("done.json"))["attempt"], 1);
    merged_lines_carry_their_video(&dir, &out, &uri);
}

/// After the corpus of `a_broken_video_is_recorded_and_the_rest_complete` gave up on its
/// broken video: the status report counts them and names the errors.
fn status_counts_them_and_names_the_errors(out: &Path) {
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(out);
        c
    });
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{text}");
    assert!(text.contains("4 videos"), "{text}");
    assert!(text.contains("done           2  (8 frames)"), "{text}");
    assert!(text.contains("failed         2"), "{text}");
    assert!(text.contains("clips/broken.mp4 (2 attempts):"), "{text}");
}

/// The merged lines carry their video, in work-list order.
fn merged_lines_carry_their_video(dir: &Path, out: &Path, uri: &str) {
    let merged = dir.join("all.jsonl");
    let o = run({
        let mut c = bin();
        c.arg("corpus-status").arg(out).arg("--merge").arg(&merged);
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
    want.extend([uri; 4]);
    assert_eq!(per_video, want);
    assert_eq!(lines[4]["frame"], 0);
    assert!(lines
        .iter()
        .all(|l| l["schema"] == "stablekeypoints-frame/1"));
}
