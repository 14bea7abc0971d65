//! Files: through links, never over devices, one publisher each; `location=-`.

use super::*;

#[test]
fn files_go_through_links_never_over_devices_and_one_publisher_each() {
    // Issue 24 (4, 6): format=coco renamed its document over a symbolic link or a device
    // node (which became a regular file), and two publishers on one file interleaved lines.
    let dir = scratch().join("links");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let link = dir.join("k.coco.json");
    std::os::unix::fs::symlink("real/k.coco.json", &link).unwrap();
    publish_frames(&format!("format=coco location={}", link.display()), 3).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("real/k.coco.json")).unwrap()).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 3);
    assert_eq!(std::fs::read_dir(dir.join("real")).unwrap().count(), 1);

    // A device node or a FIFO is refused at start, and stays what it was.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, kind) in [
        ("/dev/null".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
    ] {
        let e = started(&format!("format=coco location={path}")).unwrap_err();
        assert!(
            e.contains(&format!("location {path}")) && e.contains(kind),
            "{e}"
        );
    }
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());

    // A second publisher on a file that one is writing is refused, naming the file; the
    // first one's lines are whole.
    for format in ["json-lines", "coco"] {
        let file = dir.join(format!("shared.{format}"));
        let props = format!("format={format} location={}", file.display());
        let first = started(&props).unwrap();
        let e = started(&props).unwrap_err();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("another publisher"),
            "{format}: {e}"
        );
        first.set_state(gst::State::Null).unwrap();
        // Free again once the first one stops.
        started(&props)
            .unwrap()
            .set_state(gst::State::Null)
            .unwrap();
    }
}

/// `location=-`: the records on standard output, checked from a child process (this test
/// binary again), since the test harness owns this process's stdout.
#[test]
fn location_dash_writes_json_lines_to_standard_output() {
    const CHILD: &str = "SKP_PUBLISH_STDOUT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        publish_frames("location=-", 3).unwrap();
        return;
    }
    // The test's name in this binary: its module path without the crate.
    let (_, module) = module_path!().split_once("::").unwrap();
    let name = format!("{module}::location_dash_writes_json_lines_to_standard_output");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let recs: Vec<Record> = text
        .lines()
        // libtest's own "test ... " may precede the first record on its line.
        .filter_map(|l| l.find("{\"schema\"").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{text}");
    for (i, r) in recs.iter().enumerate() {
        assert_record_is(r, &meta(i as u32, false), i as u64, 100, 50);
    }
}
