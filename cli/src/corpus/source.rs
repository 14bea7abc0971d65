//! The work list of a corpus: the videos of a folder or a list file (paths or URIs), sorted,
//! each with its stable output folder name.

use super::{DONE, FAILED, MANIFEST};
use crate::uri::{file_uri_path, is_uri};
use stablekeypoints::util::Fnv;
use stablekeypoints::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name extensions taken as videos when a folder is searched.
pub const VIDEO_EXTENSIONS: [&str; 21] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "flv", "ogv",
    "ogg", "wmv", "3gp", "mxf", "y4m", "h264", "h265", "ivf",
];

/// Where a video is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// Anything GStreamer has a source for (`file://`, `http://`, ...).
    Uri(String),
}

impl Source {
    /// The path or URI, as GStreamer is given it.
    pub fn location(&self) -> String {
        match self {
            Source::File(p) => p.to_string_lossy().into_owned(),
            Source::Uri(u) => u.clone(),
        }
    }

    /// The local file behind a path or a `file://` URI.
    pub fn local_file(&self) -> Option<PathBuf> {
        match self {
            Source::File(p) => Some(p.clone()),
            Source::Uri(u) => file_uri_path(u),
        }
    }
}

/// One video of the work list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Video {
    /// Its identity: the path relative to the searched folder, or the list's line as written.
    pub key: String,
    pub source: Source,
    /// Its output folder's name ([`stable_name`]).
    pub name: String,
}

fn has_video_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The sorted work list of `inputs`: a folder searched recursively for video files (hidden
/// entries, `exclude` and folders holding a [`MANIFEST`] or [`DONE`], i.e. our outputs, are
/// skipped), or a text file of video paths or URIs, one per line (blank lines and `#` lines
/// skipped; relative paths are relative to the list's folder). Sorted by key, so that every
/// shard of a job array computes the same list.
pub fn work_list(inputs: &Path, exclude: Option<&Path>) -> Result<Vec<Video>> {
    // Absolute locations: records and `corpus.json` are read from other working folders.
    let inputs = &std::path::absolute(inputs).unwrap_or_else(|_| inputs.to_path_buf());
    let mut videos = if inputs.is_dir() {
        let mut found = Vec::new();
        let exclude = exclude.and_then(|p| p.canonicalize().ok());
        find_videos(inputs, inputs, exclude.as_deref(), &mut found)?;
        if found.is_empty() {
            return Err(Error::Invalid(format!(
                "--inputs {}: no video files found (extensions {})",
                inputs.display(),
                VIDEO_EXTENSIONS.join(", ")
            )));
        }
        found
    } else if inputs.is_file() {
        if has_video_extension(inputs) {
            return Err(Error::Invalid(format!(
                "--inputs {}: is a video; --inputs takes a list file (one video per line) or a \
                 folder (--input takes one video)",
                inputs.display()
            )));
        }
        read_list(inputs)?
    } else {
        return Err(Error::Io {
            path: inputs.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such list file or folder (--inputs)",
            ),
        });
    };
    videos.sort_by(|a, b| a.key.cmp(&b.key));
    for pair in videos.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(Error::Invalid(format!(
                "--inputs {}: {:?} and {:?} would share the output folder {} (rename one)",
                inputs.display(),
                pair[0].key,
                pair[1].key,
                pair[0].name
            )));
        }
    }
    Ok(videos)
}

fn find_videos(
    root: &Path,
    dir: &Path,
    exclude: Option<&Path>,
    out: &mut Vec<Video>,
) -> Result<()> {
    let io = |e| Error::io(dir, e);
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        entries.push(e.map_err(io)?.path());
    }
    if entries.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == MANIFEST || n == DONE || n == FAILED)
    }) {
        return Ok(());
    }
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            if exclude.is_some_and(|x| p.canonicalize().is_ok_and(|c| c == x)) {
                continue;
            }
            find_videos(root, &p, exclude, out)?;
        } else if has_video_extension(&p) {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push(Video {
                name: stable_name(&key),
                key,
                source: Source::File(p),
            });
        }
    }
    Ok(())
}

fn read_list(list: &Path) -> Result<Vec<Video>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    let base = list
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut videos = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if let Some(first) = seen.insert(entry.to_string(), i + 1) {
            return Err(Error::Invalid(format!(
                "{}:{}: {entry:?} is listed twice (also on line {first})",
                list.display(),
                i + 1
            )));
        }
        let source = if is_uri(entry) {
            Source::Uri(entry.to_string())
        } else {
            let p = Path::new(entry);
            Source::File(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            })
        };
        videos.push(Video {
            key: entry.to_string(),
            name: stable_name(entry),
            source,
        });
    }
    if videos.is_empty() {
        return Err(Error::Invalid(format!(
            "--inputs {}: the list names no videos (one path or URI per line)",
            list.display()
        )));
    }
    Ok(videos)
}

/// The output folder name of a video: its key without the extension, reduced to
/// `[A-Za-z0-9._-]` and 80 characters, then `-` and 12 hex digits of the key's hash (so that
/// keys that reduce alike still differ).
pub fn stable_name(key: &str) -> String {
    let stem = match key.rsplit_once('.') {
        Some((s, ext)) if !s.is_empty() && !ext.contains('/') => s,
        _ => key,
    };
    let mut s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    let mut h = Fnv::new();
    h.write(key.as_bytes());
    format!("{s}-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::test_dir;

    #[test]
    fn a_folder_gives_its_videos_sorted_without_our_outputs() {
        let d = test_dir("folder");
        for f in [
            "b.mp4",
            "a/z.MKV",
            "a/y.mov",
            "notes.txt",
            ".hidden.mp4",
            "c d.webm",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        // An earlier output folder inside the inputs, and one given as exclude.
        std::fs::create_dir_all(d.join("out/a-1")).unwrap();
        std::fs::write(d.join("out/corpus.json"), "{}").unwrap();
        std::fs::write(d.join("out/a-1/annotated.mp4"), "x").unwrap();
        std::fs::create_dir_all(d.join("res")).unwrap();
        std::fs::write(d.join("res/annotated.mp4"), "x").unwrap();
        let list = work_list(&d, Some(&d.join("res"))).unwrap();
        let keys: Vec<&str> = list.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["a/y.mov", "a/z.MKV", "b.mp4", "c d.webm"]);
        assert_eq!(list[2].source, Source::File(d.join("b.mp4")));
        assert!(list[0].name.starts_with("a_y-"), "{}", list[0].name);
        assert!(list[3].name.starts_with("c_d-"), "{}", list[3].name);
        std::fs::write(d.join("notes.txt"), "# nothing yet\n\n").unwrap();
        let e = work_list(&d.join("notes.txt"), None);
        assert!(e.unwrap_err().to_string().contains("names no videos"));
        let e = work_list(&d.join("b.mp4"), None).unwrap_err().to_string();
        assert!(e.contains("is a video"), "{e}");
        let e = work_list(&d.join("nope"), None).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("--inputs"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_list_gives_paths_and_uris_sorted_and_refuses_duplicates() {
        let d = test_dir("list");
        let list = d.join("videos.txt");
        std::fs::write(
            &list,
            "# corpus\nclips/b.mp4\n\n  /abs/a.mp4  \nfile:///data/x%20y.mp4\nhttp://host/v.mp4\n",
        )
        .unwrap();
        let v = work_list(&list, None).unwrap();
        let keys: Vec<&str> = v.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/abs/a.mp4",
                "clips/b.mp4",
                "file:///data/x%20y.mp4",
                "http://host/v.mp4"
            ]
        );
        assert_eq!(v[0].source, Source::File(PathBuf::from("/abs/a.mp4")));
        assert_eq!(v[1].source, Source::File(d.join("clips/b.mp4")));
        // Relative to the list's folder, made absolute.
        let here = std::env::current_dir().unwrap();
        let rel = d.strip_prefix(&here).unwrap_or(&d).join("videos.txt");
        let v = work_list(&rel, None).unwrap();
        assert_eq!(v[1].source, Source::File(d.join("clips/b.mp4")));
        assert_eq!(
            v[2].source.local_file(),
            Some(PathBuf::from("/data/x y.mp4"))
        );
        assert_eq!(v[3].source.local_file(), None);
        assert_eq!(v[3].source.location(), "http://host/v.mp4");
        std::fs::write(&list, "a.mp4\nb.mp4\na.mp4\n").unwrap();
        let e = work_list(&list, None).unwrap_err().to_string();
        assert!(e.contains("videos.txt:3") && e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_are_stable_readable_and_distinct() {
        // Hand-checked: FNV-1a of the key, 48 bits.
        let mut h = Fnv::new();
        h.write(b"clips/a b.mp4");
        let hash = format!("{:012x}", h.finish() & 0xffff_ffff_ffff);
        assert_eq!(stable_name("clips/a b.mp4"), format!("clips_a_b-{hash}"));
        assert_ne!(stable_name("clips/a b.mp4"), stable_name("clips/a_b.mp4"));
        assert!(stable_name(".x.mp4").starts_with("_x-"));
        assert!(stable_name("http://h/v.mkv").starts_with("http___h_v-"));
        let long = "x".repeat(300) + ".mp4";
        assert_eq!(stable_name(&long).len(), 80 + 1 + 12);
        assert!(is_uri("s3+x://b/k") && !is_uri("a/b.mp4") && !is_uri("1a://x"));
    }
}
