//! `train --inputs`: training frames sampled uniformly over all the frames of a corpus of
//! videos (the method learns its tokens from a data set, not from one clip).

use super::source::{work_list, Video};
use crate::video::{self, index_list, sample_indices, VideoInfo, DEFAULT_MAX_FRAMES};
use stablekeypoints::frame::to_model_input;
use stablekeypoints::train::{Fnv, TrainData};
use stablekeypoints::util::{available_memory, human_bytes};
use stablekeypoints::{CropMode, Error, FrameRef, PixelFormat};
use std::path::{Path, PathBuf};

struct Frame {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
    /// The video's output folder name and the frame's timestamp (nanoseconds).
    source: (String, Option<u64>),
}

/// Frames of many videos, held as RGBA at a size where the model input needs no upscaling.
pub struct CorpusFrames {
    frames: Vec<Frame>,
    /// `KEY#FRAME` per frame: the data set's identity in checkpoints.
    names: Vec<String>,
    crop: CropMode,
    fingerprint: String,
}

impl CorpusFrames {
    /// Counts the frames of every video of `inputs` (a list file or a folder, as for
    /// `process --inputs`), then keeps `max_frames` (default [`DEFAULT_MAX_FRAMES`]) spread
    /// uniformly over the concatenation of all of them in list order, first and last frame
    /// of the corpus included. Videos that do not decode are skipped and listed; none
    /// readable is an error.
    pub fn new(
        inputs: &Path,
        max_frames: Option<usize>,
        size: usize,
        crop: CropMode,
    ) -> Result<Self, Error> {
        let list = work_list(inputs, None)?;
        eprintln!(
            "counting the frames of the {} videos of {}",
            list.len(),
            inputs.display()
        );
        let (videos, skipped) = probe_all(&list);
        if videos.is_empty() {
            return Err(Error::Invalid(format!(
                "--inputs {}: none of the {} videos can be decoded",
                inputs.display(),
                list.len()
            )));
        }
        let total: usize = videos.iter().map(|(_, _, i)| i.frames).sum();
        let picks = sample_indices(total, max_frames.unwrap_or(DEFAULT_MAX_FRAMES));
        let keep = per_video(&picks, &videos);
        check_memory(&videos, &keep, size, crop)?;
        let mut frames = Vec::with_capacity(picks.len());
        let mut names = Vec::with_capacity(picks.len());
        let mut shown = Vec::new();
        for ((video, location, info), keep) in videos.iter().zip(&keep) {
            if keep.is_empty() {
                continue;
            }
            let (width, height) = info.decode_size(size, crop);
            let decoded = video::decode_frames(location, width, height, keep, info.frames)?;
            for (&i, (rgba, pts)) in keep.iter().zip(decoded) {
                names.push(format!("{}#{i}", video.key));
                frames.push(Frame {
                    width,
                    height,
                    rgba,
                    source: (video.name.clone(), pts),
                });
            }
            shown.push(format!("{}: {}", video.key, index_list(keep)));
        }
        let fingerprint = fingerprint(inputs, crop, &names, &frames, shown.len());
        eprintln!(
            "sampled {} of the {total} frames of {} videos uniformly, from {} of them{}:",
            frames.len(),
            videos.len(),
            shown.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} skipped)", skipped.len())
            }
        );
        const SHOW: usize = 20;
        for s in shown.iter().take(SHOW) {
            eprintln!("  {s}");
        }
        if shown.len() > SHOW {
            eprintln!("  ... and {} more videos", shown.len() - SHOW);
        }
        Ok(Self {
            frames,
            names,
            crop,
            fingerprint,
        })
    }
}

/// The videos of `list` that decode, with their locations and what a probe learned; and
/// the others, each with its reason (printed).
fn probe_all(list: &[Video]) -> (Vec<(&Video, PathBuf, VideoInfo)>, Vec<String>) {
    let mut videos = Vec::new();
    let mut skipped = Vec::new();
    for v in list {
        let location = PathBuf::from(v.source.location());
        match video::probe(&location) {
            Ok(info) if info.frames > 0 => videos.push((v, location, info)),
            Ok(_) => skipped.push(format!("{}: no frames", v.key)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    (videos, skipped)
}

/// Global frame indices (`picks`, sorted) -> the frames to keep of each video.
fn per_video<T>(picks: &[usize], videos: &[(T, PathBuf, VideoInfo)]) -> Vec<Vec<usize>> {
    let mut keep: Vec<Vec<usize>> = vec![Vec::new(); videos.len()];
    let (mut v, mut first) = (0, 0);
    for &g in picks {
        while g >= first + videos[v].2.frames {
            first += videos[v].2.frames;
            v += 1;
        }
        keep[v].push(g - first);
    }
    keep
}

/// Refuses frames that would take more than half of the available memory as RGBA.
fn check_memory<T>(
    videos: &[(T, PathBuf, VideoInfo)],
    keep: &[Vec<usize>],
    size: usize,
    crop: CropMode,
) -> Result<(), Error> {
    let need: u64 = videos
        .iter()
        .zip(keep)
        .map(|((_, _, info), k)| {
            let (w, h) = info.decode_size(size, crop);
            k.len() as u64 * (w * h * 4) as u64
        })
        .sum();
    if let Some(avail) = available_memory().filter(|&a| need > a / 2) {
        return Err(Error::Invalid(format!(
            "--max-frames {}: the frames take {} as RGBA, more than half of the {} of memory \
             available; keep fewer frames",
            keep.iter().map(Vec::len).sum::<usize>(),
            human_bytes(need),
            human_bytes(avail)
        )));
    }
    Ok(())
}

/// The data set's identity in checkpoints: the crop, and every frame's name and pixels.
fn fingerprint(
    inputs: &Path,
    crop: CropMode,
    names: &[String],
    frames: &[Frame],
    videos: usize,
) -> String {
    let mut h = Fnv::new();
    h.write(format!("{crop:?}").as_bytes());
    for (name, f) in names.iter().zip(frames) {
        h.write(name.as_bytes());
        h.write(&(f.width as u64).to_le_bytes());
        h.write(&(f.height as u64).to_le_bytes());
        h.write(&f.rgba);
    }
    format!(
        "corpus {} ({} frames of {videos} videos), {}",
        inputs.display(),
        frames.len(),
        h.hex()
    )
}

impl TrainData for CorpusFrames {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>, Error> {
        let f = &self.frames[index];
        let frame = FrameRef::packed(PixelFormat::Rgba, f.width, f.height, &f.rgba, f.width * 4)?;
        Ok(to_model_input(&frame, size, self.crop).0)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn source(&self, index: usize) -> Option<(String, Option<u64>)> {
        Some(self.frames[index].source.clone())
    }
    fn items(&self) -> Vec<String> {
        self.names.clone()
    }
}
