//! Video input through a `gst-launch-1.0` subprocess, so that neither the core library nor
//! the CLI links GStreamer.
//!
//! A first pass decodes the whole file into a `fakesink` (with `-v`) to learn the frame
//! size, pixel aspect ratio and frame count; a second pass decodes to raw RGBA at a size
//! that keeps the display aspect ratio, written to stdout (`fdsink`), and keeps the frames
//! sampled uniformly over the whole video.

use stablekeypoints::frame::to_model_input;
use stablekeypoints::train::{Fnv, TrainData};
use stablekeypoints::{CropMode, Error, FrameRef, PixelFormat};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const GST_LAUNCH: &str = "gst-launch-1.0";

/// Frames kept from a video when `--max-frames` is not given.
pub const DEFAULT_MAX_FRAMES: usize = 300;

/// A path is treated as a video when it is a file that is not a png/jpg image.
pub fn is_video(path: &Path, is_image: impl Fn(&Path) -> bool) -> bool {
    path.is_file() && !is_image(path)
}

/// A property value double-quoted for gst-launch's parser (quotes and backslashes escaped).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `location="..."` for a file path.
pub fn location(path: &Path) -> String {
    format!("location={}", quote(&path.to_string_lossy()))
}

/// Spawns gst-launch-1.0; a missing executable is a clear error naming `what`.
pub fn spawn(args: &[String], what: &Path, stdout: Stdio) -> Result<Child, Error> {
    Command::new(GST_LAUNCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{GST_LAUNCH} not found on PATH: video input needs GStreamer's command line \
                     tools (Debian/Ubuntu: gstreamer1.0-tools, plus gstreamer1.0-plugins-good/-bad/-libav \
                     for the codecs)"
                )
            } else {
                format!("cannot run {GST_LAUNCH}: {e}")
            };
            Error::Io {
                path: what.to_path_buf(),
                source: std::io::Error::other(msg),
            }
        })
}

/// The most telling line of gst-launch's stderr: the first `ERROR: from element ...:`
/// message without the element path, or an `erroneous pipeline` warning.
pub fn gst_error(stderr: &str) -> String {
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("ERROR: from element ") {
            return rest
                .split_once(": ")
                .map(|(_, m)| m)
                .unwrap_or(rest)
                .trim()
                .to_string();
        }
        if let Some(rest) = line.strip_prefix("WARNING: erroneous pipeline: ") {
            return rest.trim().to_string();
        }
    }
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("gst-launch-1.0 failed without a message")
        .to_string()
}

/// Reads a child's stderr fully on a thread (so that a full pipe never blocks it).
pub fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// An I/O error naming `path`.
pub fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn decode_error(path: &Path, msg: String) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("cannot decode the video with GStreamer: {msg}")),
    }
}

/// What the first pass learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: usize,
    pub height: usize,
    /// Pixel aspect ratio (numerator, denominator).
    pub par: (u64, u64),
    pub frames: usize,
}

impl VideoInfo {
    /// Width of the frame when displayed with square pixels.
    pub fn display_width(&self) -> f64 {
        self.width as f64 * self.par.0 as f64 / self.par.1.max(1) as f64
    }
}

/// `name=(type)value` out of a caps string printed by gst-launch -v.
fn caps_field<'a>(caps: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=(");
    let i = caps.find(&key)? + key.len();
    let rest = &caps[i..];
    let v = &rest[rest.find(')')? + 1..];
    Some(v.split([',', ';']).next().unwrap_or(v).trim())
}

/// First pass: decodes `path` once and returns its frame size and frame count.
pub fn probe(path: &Path) -> Result<VideoInfo, Error> {
    if !path.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let args: Vec<String> = [
        "-v",
        "filesrc",
        &location(path),
        "!",
        "decodebin",
        "!",
        "videoconvert",
        "!",
        "capsfilter",
        "name=skpcaps",
        "caps=video/x-raw,format=RGBA",
        "!",
        "fakesink",
        "name=skpsink",
        "silent=false",
        "sync=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = spawn(&args, path, Stdio::piped())?;
    let err = drain_stderr(&mut child);
    let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
    let (mut frames, mut caps) = (0usize, None::<String>);
    let mut line = Vec::new();
    loop {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = String::from_utf8_lossy(&line);
        if l.contains("skpsink: last-message = chain") {
            frames += 1;
        } else if caps.is_none() && l.contains("skpcaps.GstPad:src: caps = ") {
            caps = Some(l.into_owned());
        }
    }
    let status = child.wait().map_err(|e| io_err(path, e))?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(decode_error(path, gst_error(&stderr)));
    }
    let caps = caps.ok_or_else(|| decode_error(path, "no video stream found".into()))?;
    let int = |n: &str| caps_field(&caps, n).and_then(|v| v.parse::<usize>().ok());
    let (Some(width), Some(height)) = (int("width"), int("height")) else {
        return Err(decode_error(
            path,
            format!("unexpected caps {}", caps.trim()),
        ));
    };
    let par = caps_field(&caps, "pixel-aspect-ratio")
        .and_then(|v| v.split_once('/'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .filter(|&(a, b): &(u64, u64)| a > 0 && b > 0)
        .unwrap_or((1, 1));
    if frames == 0 || width == 0 || height == 0 {
        return Err(decode_error(path, "the video has no frames".into()));
    }
    Ok(VideoInfo {
        width,
        height,
        par,
        frames,
    })
}

/// `m` frame indices spread uniformly over `0..n` (first and last included when m > 1).
pub fn sample_indices(n: usize, m: usize) -> Vec<usize> {
    if m == 0 || m >= n {
        return (0..n).collect();
    }
    if m == 1 {
        return vec![0];
    }
    (0..m).map(|i| i * (n - 1) / (m - 1)).collect()
}

/// Second pass: decodes `path` to RGBA `width x height` (square pixels) and returns the
/// frames whose index is in `keep` (sorted), in order.
pub fn decode_frames(
    path: &Path,
    width: usize,
    height: usize,
    keep: &[usize],
) -> Result<Vec<Vec<u8>>, Error> {
    let args: Vec<String> = vec![
        "-q".into(),
        "filesrc".into(),
        location(path),
        "!".into(),
        "decodebin".into(),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
        "videoscale".into(),
        "!".into(),
        format!("video/x-raw,format=RGBA,width={width},height={height},pixel-aspect-ratio=1/1"),
        "!".into(),
        "fdsink".into(),
        "fd=1".into(),
        "sync=false".into(),
    ];
    let mut child = spawn(&args, path, Stdio::piped())?;
    let err = drain_stderr(&mut child);
    let mut out = child.stdout.take().expect("stdout piped");
    let size = width * height * 4;
    let mut buf = vec![0u8; size];
    let mut frames = Vec::with_capacity(keep.len());
    let mut next = keep.iter().peekable();
    let mut index = 0usize;
    while next.peek().is_some() {
        if out.read_exact(&mut buf).is_err() {
            break;
        }
        if next.peek() == Some(&&index) {
            frames.push(buf.clone());
            next.next();
        }
        index += 1;
    }
    // The remaining frames are not needed: stop the decoder (ours, by id).
    let done_early = next.peek().is_none();
    drop(out);
    if done_early {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| io_err(path, e))?;
    let stderr = err.join().unwrap_or_default();
    if !done_early && !status.success() {
        return Err(decode_error(path, gst_error(&stderr)));
    }
    if frames.is_empty() {
        return Err(decode_error(path, "no frame could be decoded".into()));
    }
    Ok(frames)
}

/// Frames sampled from a video, held as RGBA at a size where the model input needs no
/// upscaling, resampled to the model input on request (as image files are).
pub struct VideoFrames {
    pub info: VideoInfo,
    /// Indices of the kept frames in the video.
    pub indices: Vec<usize>,
    width: usize,
    height: usize,
    frames: Vec<Vec<u8>>,
    crop: CropMode,
    fingerprint: String,
}

impl VideoFrames {
    /// Samples `max_frames` frames (default [`DEFAULT_MAX_FRAMES`]) uniformly over the video,
    /// decoded at a size suited to a `size x size` model input with `crop`.
    pub fn new(
        path: &Path,
        max_frames: Option<usize>,
        size: usize,
        crop: CropMode,
    ) -> Result<Self, Error> {
        let info = probe(path)?;
        let indices = sample_indices(info.frames, max_frames.unwrap_or(DEFAULT_MAX_FRAMES));
        // Scale so that the model input is reached without upscaling: the longer side to
        // `size` for letterbox, the shorter for centre-crop; never enlarge.
        let (dw, dh) = (info.display_width(), info.height as f64);
        let side = match crop {
            CropMode::Letterbox => dw.max(dh),
            CropMode::CenterCrop => dw.min(dh),
        };
        let scale = (size as f64 / side).min(1.0);
        let width = ((dw * scale).round() as usize).max(1);
        let height = ((dh * scale).round() as usize).max(1);
        let frames = decode_frames(path, width, height, &indices)?;
        let indices = indices[..frames.len()].to_vec();
        let mut h = Fnv::new();
        h.write(format!("{crop:?} {width}x{height} {:?}", info).as_bytes());
        for i in &indices {
            h.write(&(*i as u64).to_le_bytes());
        }
        // The pixels too: a re-encoded file with the same name must not resume.
        for f in &frames {
            h.write(f);
        }
        let fingerprint = format!(
            "video {} ({} of {} frames), {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            frames.len(),
            info.frames,
            h.hex()
        );
        Ok(Self {
            info,
            indices,
            width,
            height,
            frames,
            crop,
            fingerprint,
        })
    }
}

impl TrainData for VideoFrames {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        let (w, h) = (self.width, self.height);
        let frame = FrameRef::packed(PixelFormat::Rgba, w, h, &self.frames[index], w * 4)?;
        Ok(to_model_input(&frame, size, self.crop).0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// `0 3 6 ... 29`, shortened in the middle when long.
pub fn index_list(indices: &[usize]) -> String {
    let show = |v: &[usize]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if indices.len() <= 12 {
        show(indices)
    } else {
        format!(
            "{} ... {}",
            show(&indices[..6]),
            show(&indices[indices.len() - 3..])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_sampling_spans_the_video() {
        assert_eq!(sample_indices(30, 10), [0, 3, 6, 9, 12, 16, 19, 22, 25, 29]);
        assert_eq!(sample_indices(5, 10), [0, 1, 2, 3, 4]);
        assert_eq!(sample_indices(5, 1), [0]);
        assert_eq!(
            index_list(&sample_indices(100, 20)),
            "0 5 10 15 20 26 ... 88 93 99"
        );
    }

    #[test]
    fn gst_errors_are_reduced_to_the_message() {
        let log = "Setting pipeline...\nERROR: from element /GstPipeline:pipeline0/GstDecodeBin:decodebin0/GstTypeFindElement:typefind: Could not determine type of stream.\nAdditional debug info:\n";
        assert_eq!(gst_error(log), "Could not determine type of stream.");
        assert_eq!(
            gst_error("WARNING: erroneous pipeline: no element \"x264enc\"\n"),
            "no element \"x264enc\""
        );
        let caps = "/GstPipeline:pipeline0/GstCapsFilter:skpcaps.GstPad:src: caps = video/x-raw, width=(int)160, height=(int)120, pixel-aspect-ratio=(fraction)4/3, format=(string)RGBA";
        assert_eq!(caps_field(caps, "width"), Some("160"));
        assert_eq!(caps_field(caps, "pixel-aspect-ratio"), Some("4/3"));
        assert_eq!(caps_field(caps, "format"), Some("RGBA"));
        assert_eq!(
            location(Path::new("a \"b\".mp4")),
            "location=\"a \\\"b\\\".mp4\""
        );
    }
}
