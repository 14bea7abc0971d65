//! Where each video of a corpus stands, read from the records of its output folder
//! (`corpus-status`), and the merged keypoint lines of the done videos.

use super::lock::is_locked;
use super::records::{
    read_record, unique_temp_path, Done, Failed, InputStamp, Manifest, ManifestVideo,
    MANIFEST_SCHEMA,
};
use super::source::Source;
use super::{DONE, FAILED, MANIFEST};
use crate::uri::is_uri;
use stablekeypoints::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a video stands, as `corpus-status` sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Complete for the corpus's settings.
    Done(Box<Done>),
    /// Its last attempt with the corpus's settings failed.
    Failed(Box<Failed>),
    /// A process holds its lock.
    Running,
    /// Done, but with other settings, another input or outputs missing: to redo.
    Stale,
    /// Not started, or stopped before it was done.
    Missing,
}

/// A video of the manifest with its state.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoStatus {
    pub video: ManifestVideo,
    pub state: State,
}

/// Reads `dir`'s manifest and every video's records. An input that is a local file and can be
/// read here is compared with its record's size and mtime; others are taken as unchanged.
pub fn status(dir: &Path) -> Result<(Manifest, Vec<VideoStatus>)> {
    let path = dir.join(MANIFEST);
    let manifest: Manifest = read_record(&path)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no {MANIFEST}: not an output folder of `stablekeypoints process --inputs` \
             (or no shard has started yet)",
            dir.display()
        ))
    })?;
    if manifest.schema != MANIFEST_SCHEMA {
        return Err(Error::Invalid(format!(
            "{}: schema {:?}, expected {MANIFEST_SCHEMA:?}",
            path.display(),
            manifest.schema
        )));
    }
    let videos = manifest
        .videos
        .iter()
        .map(|v| {
            let folder = dir.join(&v.name);
            let source = if is_uri(&v.location) {
                Source::Uri(v.location.clone())
            } else {
                Source::File(PathBuf::from(&v.location))
            };
            let stamp = InputStamp::of(&source).ok();
            let same_input = |s: &InputStamp| stamp.is_none_or(|now| now == *s);
            let done: Option<Done> = read_record(&folder.join(DONE)).ok().flatten();
            let failed: Option<Failed> = read_record(&folder.join(FAILED)).ok().flatten();
            let state = if is_locked(&folder) {
                State::Running
            } else if let Some(d) = done.as_ref().filter(|d| {
                d.settings == manifest.settings
                    && same_input(&d.stamp)
                    && d.outputs_present(&folder)
            }) {
                State::Done(Box::new(d.clone()))
            } else if let Some(f) =
                failed.filter(|f| f.settings == manifest.settings && same_input(&f.stamp))
            {
                State::Failed(Box::new(f))
            } else if done.is_some() {
                State::Stale
            } else {
                State::Missing
            };
            VideoStatus {
                video: v.clone(),
                state,
            }
        })
        .collect();
    Ok((manifest, videos))
}

/// Writes the keypoint lines of every done video, in work-list order, into one file at `out`,
/// each record with `"video"` (the work list's key) first. Returns (videos, lines).
pub fn merge_lines(dir: &Path, videos: &[VideoStatus], out: &Path) -> Result<(usize, u64)> {
    let tmp = unique_temp_path(out);
    let res = (|| -> Result<(usize, u64)> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(out, e))?;
        let mut w = std::io::BufWriter::new(file);
        let (mut n_videos, mut n_lines) = (0, 0);
        for v in videos {
            let State::Done(done) = &v.state else {
                continue;
            };
            if !done.outputs.contains_key("keypoints.jsonl") {
                continue;
            }
            let path = dir.join(&v.video.name).join("keypoints.jsonl");
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let key = serde_json::to_string(&v.video.input).expect("a string serialises");
            for (i, line) in text.lines().enumerate() {
                let rest = line.strip_prefix('{').ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}:{}: not a JSON object line",
                        path.display(),
                        i + 1
                    ))
                })?;
                let sep = if rest.trim_start().starts_with('}') {
                    ""
                } else {
                    ","
                };
                writeln!(w, "{{\"video\":{key}{sep}{rest}").map_err(|e| Error::io(out, e))?;
                n_lines += 1;
            }
            n_videos += 1;
        }
        let file = w.into_inner().map_err(|e| Error::io(out, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(out, e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok((n_videos, n_lines))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::records::{OutputFile, DONE_SCHEMA};
    use crate::corpus::test_dir;

    #[test]
    fn merged_lines_carry_the_video_first() {
        let d = test_dir("merge");
        let mk = |name: &str, input: &str, lines: &str, state: fn(Done) -> State| {
            std::fs::create_dir_all(d.join(name)).unwrap();
            std::fs::write(d.join(name).join("keypoints.jsonl"), lines).unwrap();
            let done = Done {
                schema: DONE_SCHEMA.into(),
                input: input.into(),
                location: input.into(),
                stamp: InputStamp::default(),
                settings: serde_json::Value::Null,
                outputs: [(
                    "keypoints.jsonl".to_string(),
                    OutputFile {
                        size: lines.len() as u64,
                        sha256: String::new(),
                    },
                )]
                .into(),
                frames: 0,
                gaps: Vec::new(),
                seconds: 0.0,
                started: 0.0,
                finished: 0.0,
                attempt: 1,
                shard: "0/1".into(),
                host: "h".into(),
                version: "0".into(),
            };
            VideoStatus {
                video: ManifestVideo {
                    input: input.into(),
                    location: input.into(),
                    name: name.into(),
                },
                state: state(done),
            }
        };
        let videos = [
            mk("a", "a \"q\".mp4", "{\"frame\":0}\n{\"frame\":1}\n", |d| {
                State::Done(Box::new(d))
            }),
            mk("b", "b.mp4", "{\"frame\":9}\n", |_| State::Missing),
            mk("c", "c.mp4", "{}\n", |d| State::Done(Box::new(d))),
        ];
        let out = d.join("all.jsonl");
        assert_eq!(merge_lines(&d, &videos, &out).unwrap(), (2, 3));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"video\":\"a \\\"q\\\".mp4\",\"frame\":0}\n\
             {\"video\":\"a \\\"q\\\".mp4\",\"frame\":1}\n\
             {\"video\":\"c.mp4\"}\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
