//! Where the publish element's records go: a file, standard output or an MQTT broker, as
//! JSON lines or COCO keypoint results.

use stablekeypoints::export::coco::Coco;
use stablekeypoints::export::{LineWriter, Record};
use stablekeypoints::util::output_target;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mqtt::{self, Counters, Publisher};
use super::FormatProp;

/// What to open (from the element's settings).
pub enum Target {
    File(PathBuf),
    Stdout,
    Mqtt(mqtt::Config),
}

enum Sink {
    LinesFile {
        path: PathBuf,
        lines: LineWriter<File>,
    },
    /// Replaced as a whole at each EOS and every few seconds between: `path` is the file a
    /// symbolic link `location` leads to, `lock` the open file holding its lock.
    CocoFile {
        path: PathBuf,
        lock: File,
    },
    Stdout(LineWriter<io::Stdout>),
    Mqtt(Publisher),
}

pub struct Output {
    sink: Sink,
    format: FormatProp,
    /// COCO frames of a file or stdout, written as one document (see [`Output::save_coco`]).
    coco: Coco,
    /// Frames in the COCO document last written.
    coco_written: usize,
    /// When the COCO file was last replaced, and what that cost.
    coco_saved: (Instant, Duration),
    counters: Arc<Counters>,
}

/// The least time between two rewrites of a COCO file before EOS: a process killed without
/// an EOS (SIGTERM, a crash) loses at most the records of about this long. Rewrites also wait
/// ten times their own cost, so a long run's growing document costs at most ~10% of the time.
const COCO_SAVE_EVERY: Duration = Duration::from_secs(2);

/// Replaces `path` (a regular file or a new name, see [`output_target`]) with `bytes` in one
/// step, through `PATH.part` in the same folder: a crash leaves the old or the new document,
/// and a failure (a full disk) removes the `.part` file.
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Takes the lock (flock) of `file`, open at `path`, so that a second publisher on the same
/// file is refused instead of interleaving its lines with ours. A file system without locks
/// goes on without.
fn lock_file(file: &File, path: &Path) -> Result<(), String> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "location={}: already being written by another publisher (it holds the file's \
             lock); give each publisher its own file",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e))
            if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(37) =>
        {
            Ok(())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("location={}: cannot lock: {e}", path.display()))
        }
    }
}

/// Opens (creating, not truncating) and locks the file at `path`.
fn open_locked(path: &Path) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("location={}: cannot create: {e}", path.display()))?;
    lock_file(&file, path)?;
    Ok(file)
}

impl Output {
    /// Opens the target: creates the file, or connects to the broker. Errors name the
    /// property and its value.
    pub fn open(
        target: Target,
        format: FormatProp,
        counters: Arc<Counters>,
    ) -> Result<Self, String> {
        let sink = match target {
            Target::File(path) => {
                let cannot =
                    |e: io::Error| format!("location={}: cannot create: {e}", path.display());
                match format {
                    // A regular file is locked, then emptied; lines go to a FIFO or a device
                    // (/dev/stdout) as they come.
                    FormatProp::JsonLines => {
                        let regular = !std::fs::metadata(&path).is_ok_and(|m| !m.is_file());
                        let file = if regular {
                            let file = open_locked(&path)?;
                            file.set_len(0).map_err(cannot)?;
                            file
                        } else {
                            File::create(&path).map_err(cannot)?
                        };
                        Sink::LinesFile {
                            lines: LineWriter::new(file),
                            path,
                        }
                    }
                    FormatProp::Coco => {
                        // Replaced by a rename at each EOS: through a symbolic link, its target
                        // (in the target's folder); never a device or a FIFO.
                        let path = output_target(&path, "location").map_err(|e| e.to_string())?;
                        let lock = open_locked(&path)?;
                        // An empty result list until the first EOS, so the file always parses.
                        replace_file(&path, b"[]\n").map_err(cannot)?;
                        // The lock belongs to the file replaced: take the new one's.
                        drop(lock);
                        Sink::CocoFile {
                            lock: open_locked(&path)?,
                            path,
                        }
                    }
                }
            }
            Target::Stdout => Sink::Stdout(LineWriter::new(io::stdout())),
            Target::Mqtt(config) => Sink::Mqtt(Publisher::connect(&config, counters.clone())?),
        };
        Ok(Self {
            sink,
            format,
            coco: Coco::new(),
            coco_written: 0,
            coco_saved: (Instant::now(), Duration::ZERO),
            counters,
        })
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::LinesFile { path, .. } | Sink::CocoFile { path, .. } => {
                path.display().to_string()
            }
            Sink::Stdout(_) => "standard output".into(),
            Sink::Mqtt(_) => "the broker".into(),
        }
    }

    /// Writes (or queues) one record. An error is fatal (a file that cannot be written); a
    /// record the broker cannot take now is counted as dropped instead.
    pub fn write(&mut self, record: &Record) -> Result<(), String> {
        let failed = |name: String, e: io::Error| format!("cannot write keypoints to {name}: {e}");
        match (&mut self.sink, self.format) {
            (Sink::LinesFile { lines, .. }, _) => {
                if let Err(e) = lines.write_record(record) {
                    return Err(failed(self.name(), e));
                }
                self.counters.add_sent(1);
            }
            (Sink::Stdout(lines), FormatProp::JsonLines) => {
                if let Err(e) = lines.write_record(record) {
                    return Err(failed(self.name(), e));
                }
                self.counters.add_sent(1);
            }
            (Sink::Mqtt(p), FormatProp::JsonLines) => {
                p.publish(serde_json::to_vec(record).expect("records always serialise"));
            }
            (Sink::Mqtt(p), FormatProp::Coco) => {
                p.publish(Coco::frame_json(record.frame, None, record)?);
            }
            (Sink::CocoFile { .. }, _) => {
                self.coco.add(record.frame, None, record)?;
                let (at, cost) = self.coco_saved;
                if at.elapsed() >= COCO_SAVE_EVERY.max(cost * 10) {
                    self.save_coco()?;
                }
            }
            (Sink::Stdout(_), FormatProp::Coco) => self.coco.add(record.frame, None, record)?,
        }
        Ok(())
    }

    /// Writes the COCO document of every frame so far (a file is replaced in one step; the
    /// standard output gets it once, at EOS).
    fn save_coco(&mut self) -> Result<(), String> {
        if self.coco.len() == self.coco_written {
            return Ok(());
        }
        let started = Instant::now();
        let mut doc = self.coco.to_json();
        doc.push(b'\n');
        match &mut self.sink {
            Sink::CocoFile { path, lock } => {
                replace_file(path, &doc)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                *lock = open_locked(path)?;
            }
            Sink::Stdout(_) => {
                let mut out = io::stdout().lock();
                out.write_all(&doc)
                    .and_then(|_| out.flush())
                    .map_err(|e| format!("cannot write to standard output: {e}"))?
            }
            Sink::LinesFile { .. } | Sink::Mqtt(_) => {}
        }
        let new = self.coco.len() - self.coco_written;
        self.counters.add_sent(new as u64);
        self.coco_written = self.coco.len();
        self.coco_saved = (Instant::now(), started.elapsed());
        Ok(())
    }

    /// Why records were dropped, if the output drops any.
    pub fn drop_reason(&self) -> Option<String> {
        match &self.sink {
            Sink::Mqtt(p) => p.drop_reason(),
            _ => None,
        }
    }

    /// At EOS: writes the COCO document, syncs the file, or waits up to `timeout` for the
    /// broker to take the queued records (false when some are still queued).
    pub fn finish(&mut self, timeout: Duration) -> Result<bool, String> {
        if self.format == FormatProp::Coco {
            self.save_coco()?;
        }
        match &mut self.sink {
            Sink::LinesFile { path, lines } => lines
                .sync()
                .map_err(|e| format!("cannot flush {}: {e}", path.display()))?,
            Sink::CocoFile { .. } => {}
            Sink::Stdout(lines) => lines
                .sync()
                .map_err(|e| format!("cannot flush standard output: {e}"))?,
            Sink::Mqtt(p) => return Ok(p.flush(timeout)),
        }
        Ok(true)
    }

    /// When the element stops: what [`Output::finish`] does (without waiting for the
    /// broker), then disconnects.
    pub fn close(mut self) -> Result<(), String> {
        let result = self.finish(Duration::ZERO).map(drop);
        if let Sink::Mqtt(p) = &mut self.sink {
            p.shutdown();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_replace_leaves_no_part_file() {
        // Issue 24 (13): a write or rename that failed (a full disk) left `PATH.part`.
        let dir = std::env::temp_dir().join(format!("skp-publish-part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A folder where the document goes: the `.part` is written, the rename fails.
        std::fs::create_dir_all(dir.join("doc.json/inside")).unwrap();
        assert!(replace_file(&dir.join("doc.json"), b"[]\n").is_err());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["doc.json"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
