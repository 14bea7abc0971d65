//! `process`: the offline path for a video. Trains tokens on the video unless `--tokens` is
//! given, then runs every frame through the `stablekeypoints` GStreamer element in a
//! `gst-launch-1.0` subprocess, writing `keypoints.jsonl` (`stablekeypointspublish
//! location=`) and an annotated `annotated.mp4`. The CLI itself never links GStreamer.

use crate::args::{Args, USAGE};
use crate::train;
use crate::video::{self, drain_stderr, gst_error, io_err, location, quote as quoted, GST_LAUNCH};
use stablekeypoints::train::Fnv;
use stablekeypoints::{CropMode, Error};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// File name of the plugin library cargo builds.
pub const PLUGIN_FILE: &str = "libgststablekeypoints.so";

/// Environment variable overriding where the plugin is: the `.so` itself or a folder for
/// `GST_PLUGIN_PATH`.
pub const PLUGIN_ENV: &str = "SKP_PLUGIN_PATH";

/// A folder for `GST_PLUGIN_PATH` that holds the plugin: `$SKP_PLUGIN_PATH` (a folder as is,
/// a file via a symlink), else `libgststablekeypoints.so` next to this executable (cargo
/// builds both into the same `target/<profile>`), linked into a private folder because
/// GStreamer scans plugin folders recursively and `target/` holds unrelated libraries.
pub fn plugin_dir() -> Result<PathBuf, Error> {
    let so = match std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_dir() {
                return Ok(p);
            }
            if !p.is_file() {
                return Err(Error::Invalid(format!(
                    "{PLUGIN_ENV}={}: no such plugin file or folder",
                    p.display()
                )));
            }
            p
        }
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::Invalid(format!("cannot locate this executable: {e}")))?;
            let dir = exe.parent().unwrap_or(Path::new("."));
            let p = dir.join(PLUGIN_FILE);
            if !p.is_file() {
                return Err(Error::Invalid(format!(
                    "the GStreamer plugin {PLUGIN_FILE} is not next to {} (build it with \
                     `cargo build -p gst-plugin-stablekeypoints` in the same profile), or set \
                     {PLUGIN_ENV} to the plugin file",
                    exe.display()
                )));
            }
            p
        }
    };
    let so = so.canonicalize().map_err(|e| io_err(&so, e))?;
    let mut h = Fnv::new();
    h.write(so.to_string_lossy().as_bytes());
    let dir = std::env::temp_dir().join(format!("stablekeypoints-plugin-{}", h.hex()));
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let link = dir.join(so.file_name().unwrap_or(PLUGIN_FILE.as_ref()));
    if std::fs::read_link(&link).ok().as_deref() != Some(so.as_path()) {
        // Replace atomically: concurrent runs may share the folder.
        let tmp = dir.join(format!(".link{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&so, &tmp).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| io_err(&link, e))?;
    }
    Ok(dir)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

pub fn cmd_process(a: Args) -> Result<(), Error> {
    if !a.positional.is_empty() {
        return Err(Error::Invalid(format!(
            "unexpected argument {:?}\n\n{USAGE}",
            a.positional[0]
        )));
    }
    let model = PathBuf::from(a.required("model")?);
    let input = PathBuf::from(a.required("input")?);
    let out_dir = PathBuf::from(a.required("out-dir")?);
    if !input.is_file() {
        return Err(Error::Io {
            path: input,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such video file"),
        });
    }
    let crop = a
        .get("crop")
        .map(str::parse::<CropMode>)
        .transpose()?
        .unwrap_or_default();
    let augmentations: usize = a.parse_opt("augmentations")?.unwrap_or(1);
    let seed: u64 = a.parse_opt("seed")?.unwrap_or(0);
    // Fail before training when the element cannot run.
    let plugins = plugin_dir()?;
    let info = video::probe(&input)?;
    std::fs::create_dir_all(&out_dir).map_err(|e| io_err(&out_dir, e))?;

    let tokens = match a.get("tokens") {
        Some(t) => PathBuf::from(t),
        None => {
            let out = out_dir.join("tokens.safetensors");
            let mut flags: Vec<(String, Option<String>)> = a
                .flags
                .iter()
                .filter(|(n, _)| {
                    train::SWITCHES.contains(&n.as_str()) || train::OPTIONS.contains(&n.as_str())
                })
                .cloned()
                .collect();
            for (n, v) in [("model", &model), ("input", &input), ("out", &out)] {
                flags.push((n.into(), Some(v.to_string_lossy().into_owned())));
            }
            train::cmd_train(Args {
                flags,
                positional: Vec::new(),
            })?;
            out
        }
    };

    let jsonl = out_dir.join("keypoints.jsonl");
    let mp4 = out_dir.join("annotated.mp4");
    for p in [&jsonl, &mp4] {
        if p.exists() {
            std::fs::remove_file(p).map_err(|e| io_err(p, e))?;
        }
    }
    let prop = |name: &str, p: &Path| format!("{name}={}", quoted(&p.to_string_lossy()));
    let mut args: Vec<String> = vec![
        "-q".into(),
        "filesrc".into(),
        location(&input),
        "!".into(),
        "decodebin".into(),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
        "stablekeypoints".into(),
        prop("model", &model),
        prop("tokens", &tokens),
        format!(
            "crop-mode={}",
            match crop {
                CropMode::Letterbox => "letterbox",
                CropMode::CenterCrop => "center-crop",
                CropMode::Stretch => "stretch",
            }
        ),
        format!("augmentations={augmentations}"),
        format!("seed={seed}"),
        format!("noise={}", !a.has("no-noise")),
        "draw=true".into(),
        format!("draw-ids={}", a.has("draw-ids")),
    ];
    if let Some(d) = a.get("device") {
        args.push(format!("device={}", quoted(d)));
    }
    args.extend([
        "!".into(),
        "stablekeypointspublish".into(),
        prop("location", &jsonl),
    ]);
    args.extend(["!".into(), "videoconvert".into(), "!".into()]);
    // x264 wants even sizes for 4:2:0.
    let (w, h) = (info.width, info.height);
    if w % 2 == 1 || h % 2 == 1 {
        args.extend([
            "videoscale".into(),
            "!".into(),
            format!("video/x-raw,width={},height={}", (w + 1) & !1, (h + 1) & !1),
            "!".into(),
            "videoconvert".into(),
            "!".into(),
        ]);
    }
    args.extend(
        [
            "video/x-raw,format=I420",
            "!",
            "x264enc",
            "speed-preset=veryfast",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ]
        .map(String::from),
    );
    args.push(location(&mp4));

    let mut gst_path = plugins.into_os_string();
    if let Some(old) = std::env::var_os("GST_PLUGIN_PATH").filter(|v| !v.is_empty()) {
        gst_path.push(":");
        gst_path.push(old);
    }
    eprintln!(
        "running {} frames of {} through the stablekeypoints element",
        info.frames,
        input.display()
    );
    let start = Instant::now();
    let mut child = std::process::Command::new(GST_LAUNCH)
        .args(&args)
        .env("GST_PLUGIN_PATH", &gst_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            path: input.clone(),
            source: std::io::Error::other(format!("cannot run {GST_LAUNCH}: {e}")),
        })?;
    let err = drain_stderr(&mut child);
    let tty = std::io::stderr().is_terminal();
    let mut stderr = std::io::stderr();
    let mut last = (Instant::now(), usize::MAX);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| io_err(&input, e))? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
        if last.0.elapsed() >= Duration::from_secs(if tty { 1 } else { 10 }) {
            let n = count_lines(&jsonl);
            if n != last.1 {
                let line = format!(
                    "frame {n}/{} ({:.0} s)",
                    info.frames,
                    start.elapsed().as_secs_f64()
                );
                let _ = if tty {
                    write!(stderr, "\r\x1b[2K{line}")
                } else {
                    writeln!(stderr, "{line}")
                };
            }
            last = (Instant::now(), n);
        }
    };
    if tty {
        let _ = writeln!(stderr);
    }
    let log = err.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Invalid(format!(
            "{}: the stablekeypoints pipeline failed: {}",
            input.display(),
            gst_error(&log)
        )));
    }
    let n = count_lines(&jsonl);
    eprintln!(
        "wrote {} ({n} frames) and {} in {:.1} s",
        jsonl.display(),
        mp4.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
