//! The store's lock file, `mmxa.lock`, beside the segment files.
//!
//! Owns: taking the open-file-description lock that says one process runs the store. The lock
//! is the kernel's, released when its holder closes the file or dies, so nothing stale is left
//! behind; the descriptor is listed in [`crate::inherit`] so a child created by `fork` cannot
//! keep it alive.

use super::segment::lock_exclusive;
use crate::inherit::NoInherit;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// The store's lock, held while it lives (kept by the open store).
pub type StoreLock = Arc<NoInherit<File>>;

/// Takes the lock of the store in `dir` if no process holds it (`Ok(None)` if one does).
pub fn try_lock_store(dir: &Path) -> io::Result<Option<StoreLock>> {
    let path = dir.join("mmxa.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    match lock_exclusive(&file) {
        Ok(()) => Ok(Some(Arc::new(NoInherit::new(file)))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::PermissionDenied
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}
