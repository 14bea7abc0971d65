//! Small file helpers: outputs written under temporary names and renamed into place only
//! when complete, output paths checked before any work, safetensors files with a canonical
//! header (byte-identical for the same contents), and a small hash.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// 64-bit FNV-1a, for fingerprints and content keys (not security).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// The folder a file path is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// What `m` is, for errors: "a character device", "a FIFO (named pipe)", ...
fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The file that writing the output `path` replaces: `path` itself, or the target its
/// symbolic links lead to (so that the links stay and the target is replaced, atomically, in
/// its own folder). Refuses a folder, and a device node, FIFO or socket (renaming a new file
/// over one would replace it with a regular file). `what` names the output in errors (a flag
/// such as `--out`, a property such as `location`).
pub fn output_target(path: &Path, what: &str) -> Result<PathBuf> {
    let bad = |m: String| Error::Invalid(format!("{what} {}: {m}", path.display()));
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return Err(bad("not a file name".into()));
    }
    // What the name leads to (through every link), as the kernel sees it: /dev/stdout is a
    // link to /proc/self/fd/1, whose target text ("pipe:[...]") names no file.
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            return Err(bad("is a folder; give the name of a file to write".into()));
        }
        if !m.is_file() {
            return Err(bad(format!(
                "is {}, not a regular file: outputs are written to a temporary file renamed \
                 over the old one, which would replace it; give the name of a regular file",
                kind_of(&m)
            )));
        }
    }
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                // A relative target is relative to the link's folder (an absolute one replaces
                // it in `join`).
                p = folder_of(&p).join(target);
            }
            Ok(_) => return Ok(p),
            // A new name (or one whose folder cannot be made: writing it says why).
            Err(_) if p.file_name().is_some() => return Ok(p),
            Err(_) => {
                return Err(bad(format!(
                    "its link leads to {}: not a file name",
                    p.display()
                )))
            }
        }
    }
    Err(bad("too many levels of symbolic links".into()))
}

/// The files a command reads (model, tokens, pose, images, videos, label CSVs), so that no
/// output replaces one of them ([`Inputs::check`]), whether by the same name or through
/// another (a hard or symbolic link, `..`): files are compared by (device, inode).
#[derive(Debug, Default)]
pub struct Inputs {
    /// (flag, path as given or found in the folder given, (device, inode))
    files: Vec<(String, PathBuf, (u64, u64))>,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the input `path` (given with the flag `what`): a file, or the files of a folder
    /// (a model's, a folder of images) to a few levels down. A missing path adds nothing (its
    /// reader reports it).
    pub fn add(&mut self, what: &str, path: &Path) -> &mut Self {
        self.walk(what, path, 4, &|_| true);
        self
    }

    /// [`add`](Self::add), keeping only the files of a folder that `keep` accepts (the images
    /// of a folder of images, not the outputs written beside them).
    pub fn add_where(&mut self, what: &str, path: &Path, keep: &dyn Fn(&Path) -> bool) {
        if path.is_dir() {
            self.walk(what, path, 4, keep);
        } else {
            self.add(what, path);
        }
    }

    fn walk(&mut self, what: &str, path: &Path, depth: usize, keep: &dyn Fn(&Path) -> bool) {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(path) else {
            return;
        };
        if m.is_dir() {
            if depth == 0 {
                return;
            }
            let Ok(entries) = std::fs::read_dir(path) else {
                return;
            };
            for e in entries.flatten() {
                self.walk(what, &e.path(), depth - 1, keep);
            }
        } else if keep(path) {
            self.files
                .push((what.to_string(), path.to_path_buf(), (m.dev(), m.ino())));
        }
    }

    /// Refuses the output `path` (given with `what`) when it is one of the inputs, naming both.
    pub fn check(&self, path: &Path, what: &str) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        // A file that does not exist yet is no input.
        let Ok(m) = std::fs::metadata(path) else {
            return Ok(());
        };
        let id = (m.dev(), m.ino());
        match self.files.iter().find(|f| f.2 == id) {
            Some((flag, input, _)) => Err(Error::Invalid(format!(
                "{what} {} is the input {flag} {}: an output may not replace an input; \
                 choose another output name",
                path.display(),
                input.display()
            ))),
            None => Ok(()),
        }
    }
}

/// The temporary name `path` is written under before the rename: `.NAME.tmpPID` in the same
/// folder (so that the rename stays on one file system).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    folder_of(path).join(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written file behind.
/// A symbolic link at `path` is kept: its target is replaced ([`output_target`]); a device
/// node or FIFO is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = output_target(path, "cannot write")?;
    let tmp = temp_path(&target);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Checks, before any work, that `path` can be written as an output file: it is a regular
/// file or a new name, not a folder nor a device ([`output_target`]), and the folder of the
/// file it replaces exists (it is created if missing) and takes a new file. `what` names the
/// output in errors (a flag such as `--out`).
pub fn check_output_file(path: &Path, what: &str) -> Result<()> {
    let bad = |m: String| Err(Error::Invalid(format!("{what} {}: {m}", path.display())));
    let target = output_target(path, what)?;
    let dir = folder_of(&target);
    if let Err(e) = std::fs::create_dir_all(dir) {
        return bad(format!("cannot create its folder {}: {e}", dir.display()));
    }
    let probe = temp_path(&target);
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bad(format!("cannot write in {}: {e}", dir.display())),
    }
}

/// Output files staged under temporary names ([`temp_path`]) in their own folders and renamed
/// into place by [`commit`](Self::commit) once all of them are complete. Dropped without a
/// commit (an error, an interruption), the temporary files are removed and the previous
/// outputs are left as they were.
#[derive(Debug, Default)]
pub struct StagedOutputs {
    /// (final path, temporary path)
    files: Vec<(PathBuf, PathBuf)>,
}

impl StagedOutputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `path` ([`check_output_file`]) and returns the temporary path to write it to.
    /// A symbolic link at `path` is kept: its target is what the commit replaces.
    pub fn stage(&mut self, path: &Path, what: &str) -> Result<PathBuf> {
        check_output_file(path, what)?;
        let target = output_target(path, what)?;
        let tmp = temp_path(&target);
        let _ = std::fs::remove_file(&tmp);
        self.files.push((target, tmp.clone()));
        Ok(tmp)
    }

    /// Renames every staged file into place (each rename is atomic).
    pub fn commit(mut self) -> Result<()> {
        for (path, tmp) in std::mem::take(&mut self.files) {
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

impl Drop for StagedOutputs {
    fn drop(&mut self) {
        for (_, tmp) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A safetensors file of `tensors` with `metadata`, its header in a canonical form (keys
/// sorted, metadata included), so that the same contents always give the same bytes (the
/// `safetensors` crate writes its metadata map in hash order).
pub fn safetensors_bytes<'a>(
    tensors: Vec<(&'a str, safetensors::tensor::TensorView<'a>)>,
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let meta = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let bytes = safetensors::tensor::serialize(tensors, meta).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| e.to_string())?;
    let mut canonical: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for (k, v) in &header {
        if k == "__metadata__" {
            let sorted: serde_json::Map<String, serde_json::Value> = metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            canonical.insert(k, serde_json::Value::Object(sorted));
        } else {
            canonical.insert(k, v.clone());
        }
    }
    let mut text = serde_json::to_vec(&canonical).map_err(|e| e.to_string())?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Memory the system can still give (`MemAvailable` of `/proc/meminfo`), when known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `1.5 GiB`, `300 MiB`.
pub fn human_bytes(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let b = b as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skp-util-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn staged_outputs_replace_only_on_commit() {
        let d = tmp("staged");
        let a = d.join("a.txt");
        std::fs::write(&a, "old").unwrap();
        {
            let mut s = StagedOutputs::new();
            let t = s.stage(&a, "--out").unwrap();
            std::fs::write(&t, "new").unwrap();
            // Dropped without commit: the old file stays, the temporary is gone.
        }
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let mut s = StagedOutputs::new();
        let t = s.stage(&a, "--out").unwrap();
        std::fs::write(&t, "new").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn output_checks_name_the_flag_and_the_path() {
        let d = tmp("check");
        let e = check_output_file(&d, "--out").unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("is a folder"), "{e}");
        let file = d.join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_output_file(&file.join("p.json"), "--save-regressor")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--save-regressor") && e.contains("cannot create"),
            "{e}"
        );
        // A missing folder is created; nothing is left in it.
        let p = d.join("new/sub/p.json");
        check_output_file(&p, "--out").unwrap();
        assert!(d.join("new/sub").is_dir());
        assert_eq!(std::fs::read_dir(d.join("new/sub")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn outputs_write_through_symlinks_and_refuse_devices() {
        // Issue 24 (4): the atomic writers renamed a new file over a symbolic link (and over
        // /dev/null), replacing it with a regular file.
        let d = tmp("links");
        std::fs::create_dir_all(d.join("real")).unwrap();
        let target = d.join("real/t.safetensors");
        std::fs::write(&target, "old").unwrap();
        let link = d.join("link.safetensors");
        std::os::unix::fs::symlink("real/t.safetensors", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        // Staged outputs too; a dangling link gets its target created.
        let dangling = d.join("dangling.json");
        std::os::unix::fs::symlink(d.join("real/new.json"), &dangling).unwrap();
        for (path, file) in [
            (&link, target.clone()),
            (&dangling, d.join("real/new.json")),
        ] {
            let mut s = StagedOutputs::new();
            let t = s.stage(path, "--out").unwrap();
            assert_eq!(
                t.parent(),
                Some(d.join("real").as_path()),
                "temp beside the target"
            );
            std::fs::write(&t, "staged").unwrap();
            s.commit().unwrap();
            assert!(std::fs::symlink_metadata(path)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "staged");
        }
        // Device nodes and FIFOs are refused, and stay what they were.
        let fifo = d.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let dev_link = d.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &dev_link).unwrap();
        for (path, kind) in [
            (Path::new("/dev/null"), "a character device"),
            (dev_link.as_path(), "a character device"),
            (fifo.as_path(), "a FIFO"),
        ] {
            let e = check_output_file(path, "--out").unwrap_err().to_string();
            assert!(e.contains("--out") && e.contains(kind), "{e}");
            let e = write_atomic(path, b"x").unwrap_err().to_string();
            assert!(e.contains(kind), "{e}");
            assert!(StagedOutputs::new().stage(path, "--out").is_err());
        }
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_output_may_not_be_an_input_by_any_name() {
        // Issue 24 (5): `train --input clip.mp4 --out clip.mp4` replaced the video.
        let d = tmp("inputs");
        let clip = d.join("clip.mp4");
        std::fs::write(&clip, "video").unwrap();
        std::fs::create_dir_all(d.join("model/unet")).unwrap();
        let weights = d.join("model/unet/w.safetensors");
        std::fs::write(&weights, "w").unwrap();
        let hard = d.join("hard.mp4");
        std::fs::hard_link(&clip, &hard).unwrap();
        let soft = d.join("soft.mp4");
        std::os::unix::fs::symlink(&clip, &soft).unwrap();
        let mut inputs = Inputs::new();
        inputs
            .add("--input", &clip)
            .add("--model", &d.join("model"))
            .add("--tokens", &d.join("missing"));
        for out in [
            clip.clone(),
            hard,
            soft,
            d.join("model/../clip.mp4"),
            d.join("./clip.mp4"),
        ] {
            let e = inputs.check(&out, "--out").unwrap_err().to_string();
            assert!(
                e.contains(&format!("--out {}", out.display()))
                    && e.contains(&format!("--input {}", clip.display())),
                "{e}"
            );
        }
        let e = inputs.check(&weights, "--out").unwrap_err().to_string();
        assert!(e.contains("the input --model"), "{e}");
        inputs.check(&d.join("new.safetensors"), "--out").unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn safetensors_header_is_canonical_and_readable() {
        let data: Vec<u8> = (0..24u8).collect();
        let meta: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect();
        let make = || {
            let views = vec![
                (
                    "b",
                    TensorView::new(Dtype::F32, vec![2, 2], &data[..16]).unwrap(),
                ),
                (
                    "a",
                    TensorView::new(Dtype::U8, vec![8], &data[16..]).unwrap(),
                ),
            ];
            safetensors_bytes(views, &meta).unwrap()
        };
        let first = make();
        for _ in 0..5 {
            assert_eq!(make(), first);
        }
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let (k1, k10, k2) = (
            header.find("\"key1\"").unwrap(),
            header.find("\"key10\"").unwrap(),
            header.find("\"key2\"").unwrap(),
        );
        assert!(k1 < k10 && k10 < k2, "{header}");
        let st = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &data[..16]);
        assert_eq!(st.tensor("a").unwrap().data(), &data[16..]);
        let (_, m) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap().len(), 20);
    }
}
