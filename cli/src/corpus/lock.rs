//! The lock of a video's output folder, held by the process working on the video.

use super::LOCK;
use stablekeypoints::{Error, Result};
use std::io::Write;
use std::path::Path;

/// The lock of a video's folder (released when dropped, or when the process dies).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Locks `folder`'s [`LOCK`] file, waiting for a process that holds it. `Ok(None)` when the
/// file system has no locks (the caller goes on without).
pub fn lock_folder(folder: &Path) -> Result<Option<FolderLock>> {
    let path = folder.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.lock() {
        Ok(()) => Ok(Some(FolderLock::holding(file))),
        Err(e) if no_locks(&e) => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

impl FolderLock {
    /// The lock of `file`, which now names this process (for the error of a run refused).
    fn holding(mut file: std::fs::File) -> Self {
        let _ = file.set_len(0).and_then(|_| {
            writeln!(
                file,
                "process {} on {}",
                std::process::id(),
                super::records::host_name()
            )
        });
        FolderLock { _file: file }
    }
}

/// Locks `folder`'s [`LOCK`] file without waiting: when another run holds it, the error
/// names that run (its process and host) and the folder, given with the flag `what`.
/// `Ok(None)` when the file system has no locks.
pub fn try_lock_folder(folder: &Path, what: &str) -> Result<Option<FolderLock>> {
    let path = folder.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FolderLock::holding(file))),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another process".into());
            Err(Error::Invalid(format!(
                "{what} {}: in use by another run ({holder}, holding {}); wait for it to end \
                 or choose another folder",
                folder.display(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) if no_locks(&e) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn no_locks(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(37) // ENOLCK
}

/// Whether another process holds `folder`'s lock now.
pub fn is_locked(folder: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(folder.join(LOCK))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::test_dir;

    #[test]
    fn a_held_lock_is_seen_and_waited_for() {
        let d = test_dir("lock");
        assert!(!is_locked(&d));
        let held = lock_folder(&d).unwrap().expect("local file systems lock");
        // A second run is refused at once, naming the one that holds it.
        let e = try_lock_folder(&d, "--out-dir").unwrap_err().to_string();
        let me = format!("process {} on", std::process::id());
        assert!(e.contains("--out-dir") && e.contains(&me), "{e}");
        // flock locks belong to the open file: another open sees it held.
        assert!(is_locked(&d));
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.clone();
        let waiter = std::thread::spawn(move || {
            let _l = lock_folder(&dir).unwrap();
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "the second lock waits");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        assert!(!is_locked(&d));
        let _ = std::fs::remove_dir_all(&d);
    }
}
