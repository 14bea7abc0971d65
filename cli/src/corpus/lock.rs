//! The lock of a video's output folder, held by the process working on the video.

use super::LOCK;
use stablekeypoints::{Error, Result};
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
        Ok(()) => Ok(Some(FolderLock { _file: file })),
        Err(e) if no_locks(&e) => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
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
