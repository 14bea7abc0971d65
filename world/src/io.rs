//! Output formats: the training bundle for the Python script, labelled PNG sets with the
//! label CSV that `stablekeypoints eval` reads, and motion clips as PNG frames.

use crate::figure::{JOINTS, NUM_JOINTS, NUM_PARTS, SKELETON};
use crate::motion::Motion;
use crate::people::{overlapping, People};
use crate::render::{render, Render};
use crate::{Scene, SceneOptions};
use safetensors::tensor::{Dtype, TensorView};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, String>;

fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_err(path, e))
}

pub fn write_png(path: &Path, r: &Render) -> Result<()> {
    write_rgb(path, r.size, r.size, &r.rgb)
}

/// An RGB8 `width` x `height` image as a PNG.
pub fn write_rgb(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let img = image::RgbImage::from_raw(width as u32, height as u32, rgb.to_vec())
        .ok_or_else(|| io_err(path, "image buffer has the wrong size"))?;
    img.save(path).map_err(|e| io_err(path, e))
}

/// One label CSV line: the image, then x,y per joint in pixels, empty when not visible.
pub fn label_line(image: &str, r: &Render) -> String {
    let mut s = image.to_string();
    for j in 0..NUM_JOINTS {
        if r.visible[j] {
            let _ = write!(s, ",{:.3},{:.3}", r.joints[j][0], r.joints[j][1]);
        } else {
            s.push_str(",,");
        }
    }
    s.push('\n');
    s
}

pub(crate) fn label_header() -> String {
    let mut s = "image".to_string();
    for j in JOINTS {
        let _ = write!(s, ",{j}_x,{j}_y");
    }
    s.push('\n');
    s
}

/// `joints.txt` (one name per line) and `skeleton.txt` (`a b` per line), as `eval --names`
/// and `--skeleton` read them.
pub fn write_pose_names(dir: &Path) -> Result<()> {
    create_dir(dir)?;
    let names: String = JOINTS.iter().map(|j| format!("{j}\n")).collect();
    write(&dir.join("joints.txt"), names.as_bytes())?;
    let sk: String = SKELETON
        .iter()
        .map(|[a, b]| format!("{} {}\n", JOINTS[*a], JOINTS[*b]))
        .collect();
    write(&dir.join("skeleton.txt"), sk.as_bytes())
}

/// The Python training bundle: `images` u8 [N, S, S, 3], `present` u8 [N, P] (part shown),
/// `joints` f32 [N, J, 2] (pixels), `visible` u8 [N, J].
pub fn write_dataset(
    path: &Path,
    count: usize,
    seed: u64,
    size: usize,
    opts: SceneOptions,
) -> Result<()> {
    let mut images = Vec::with_capacity(count * size * size * 3);
    let mut present = Vec::with_capacity(count * NUM_PARTS);
    let mut joints = Vec::with_capacity(count * NUM_JOINTS * 2 * 4);
    let mut visible = Vec::with_capacity(count * NUM_JOINTS);
    for i in 0..count {
        let r = Scene::sample(seed, i as u64, opts).render(size);
        images.extend_from_slice(&r.rgb);
        present.extend(r.present.iter().map(|&p| p as u8));
        for j in r.joints {
            joints.extend(j[0].to_le_bytes());
            joints.extend(j[1].to_le_bytes());
        }
        visible.extend(r.visible.iter().map(|&v| v as u8));
    }
    let view =
        |dt, shape: Vec<usize>, data| TensorView::new(dt, shape, data).map_err(|e| io_err(path, e));
    let tensors = vec![
        (
            "images",
            view(Dtype::U8, vec![count, size, size, 3], &images)?,
        ),
        (
            "present",
            view(Dtype::U8, vec![count, NUM_PARTS], &present)?,
        ),
        (
            "joints",
            view(Dtype::F32, vec![count, NUM_JOINTS, 2], &joints)?,
        ),
        (
            "visible",
            view(Dtype::U8, vec![count, NUM_JOINTS], &visible)?,
        ),
    ];
    let meta = [
        ("format", "skp-world-dataset".to_string()),
        ("seed", seed.to_string()),
        ("size", size.to_string()),
        ("drop_fraction", opts.drop_fraction.to_string()),
        ("drop_rate", opts.drop_rate.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::tensor::serialize(tensors, Some(meta)).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    write(path, &bytes)
}

/// `count` whole-figure renders as `DIR/images/NNNNNN.png` with `DIR/labels.csv`, plus
/// `joints.txt` and `skeleton.txt`.
pub fn write_labelled(dir: &Path, count: usize, seed: u64, size: usize) -> Result<()> {
    let img_dir = dir.join("images");
    create_dir(&img_dir)?;
    let mut csv = label_header();
    for i in 0..count {
        let r = Scene::sample(seed, i as u64, SceneOptions::HELD_OUT).render(size);
        let name = format!("images/{i:06}.png");
        write_png(&dir.join(&name), &r)?;
        csv.push_str(&label_line(&name, &r));
    }
    write(&dir.join("labels.csv"), csv.as_bytes())?;
    write_pose_names(dir)
}

/// A motion clip as `DIR/frames/NNNNN.png` with the true joints of every frame in
/// `DIR/labels.csv`. Returns the frame paths.
pub fn write_clip(
    dir: &Path,
    seed: u64,
    frames: usize,
    fps: f32,
    size: usize,
) -> Result<Vec<PathBuf>> {
    let frame_dir = dir.join("frames");
    create_dir(&frame_dir)?;
    let motion = Motion::new(seed, frames as f32 / fps);
    let mut csv = label_header();
    let all = [true; NUM_PARTS];
    let mut paths = Vec::with_capacity(frames);
    for f in 0..frames {
        let pose = motion.pose_at(f as f32 / fps);
        let r = render(&motion.body, &pose, &motion.background, size, &all);
        let name = format!("frames/{f:05}.png");
        let path = dir.join(&name);
        write_png(&path, &r)?;
        csv.push_str(&label_line(&name, &r));
        paths.push(path);
    }
    write(&dir.join("labels.csv"), csv.as_bytes())?;
    write_pose_names(dir)?;
    Ok(paths)
}

/// A clip of several figures ([`People`]) as `DIR/frames/NNNNN.png`, the true joints and
/// boxes in `DIR/people.jsonl`, the boxes alone in `DIR/boxes.jsonl` (the
/// `stablekeypointsboxes` format) and each figure alone, in the same place and pose over the
/// same background, as `DIR/alone/<p>/frames/NNNNN.png`. Returns the share of frames in
/// which some pair of figures' boxes has an IoU of at least [`OVERLAP_IOU`].
pub fn write_people(dir: &Path, clip: &People, frames: usize) -> Result<f64> {
    let frame_dir = dir.join("frames");
    create_dir(&frame_dir)?;
    for p in 0..clip.figures() {
        create_dir(&dir.join(format!("alone/{p}/frames")))?;
    }
    let (mut people, mut boxes) = (String::new(), String::new());
    let mut overlaps = 0;
    for f in 0..frames {
        let frame = clip.render(f, None);
        write_rgb(
            &frame_dir.join(format!("{f:05}.png")),
            frame.width,
            frame.height,
            &frame.rgb,
        )?;
        overlaps += overlapping(&frame, OVERLAP_IOU) as usize;
        let (p, b) = frame.lines(f, clip.fps);
        let json = |e: serde_json::Error| io_err(dir, e);
        people.push_str(&serde_json::to_string(&p).map_err(json)?);
        people.push('\n');
        boxes.push_str(&serde_json::to_string(&b).map_err(json)?);
        boxes.push('\n');
        for p in 0..clip.figures() {
            let alone = clip.render(f, Some(p));
            let path = dir.join(format!("alone/{p}/frames/{f:05}.png"));
            write_rgb(&path, alone.width, alone.height, &alone.rgb)?;
        }
    }
    write(&dir.join("people.jsonl"), people.as_bytes())?;
    write(&dir.join("boxes.jsonl"), boxes.as_bytes())?;
    write_pose_names(dir)?;
    Ok(overlaps as f64 / frames.max(1) as f64)
}

/// The IoU at which two figures' boxes count as overlapping.
pub const OVERLAP_IOU: f64 = 0.3;
