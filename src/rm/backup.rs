//! What a backup needs from a store in use, and the store's one path.
//!
//! Owns: the backup pin (root 30) and the store's path (roots 31–32). A backup copies the
//! segment files of a store that other processes keep using; only reclaiming deletes segment
//! files, so the backup pins the log: while a live process holds the pin, no process claims
//! the reclaimer's role (`compact.rs`), and the backup waits for a reclaim step under way to
//! end before it reads where the log stands. A dead backup's pin is void, and cleared when its
//! slot is reaped. The path: the process that builds the region records the canonical path it
//! opened the store under; a process that reaches the same store under another path (a bind
//! mount) is refused, so every process of a store names it alike (see `Rm::open`).

use super::layout::*;
use super::Rm;
use crate::error::{Error, Result};
use crate::log::{Media, Point};
use crate::shm::Txn;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a backup waits for a reclaim step under way to end.
const PIN_WAIT: Duration = Duration::from_secs(60);

/// The longest path kept in the region.
const MAX_PATH: usize = 4096;

impl<M: Media> Rm<M> {
    /// Pins the log for a backup (no segment is reclaimed until [`Rm::unpin_backup`], or this
    /// process's death), makes everything committed so far durable, and returns where the log
    /// stands: a copy of segments `first..=tail`, the tail cut at `end`, is a crash image of
    /// the store that holds every branch acknowledged before this call.
    pub fn pin_for_backup(&self) -> Result<Point> {
        let me = self.slot as u64;
        let taken = self.shared(|t| {
            let cur = t.get_u64(R_BACKUP)?;
            let free = cur == 0 || cur == me || self.slot_dead(cur);
            if free {
                t.set_u64(R_BACKUP, me)?;
            }
            Ok(free)
        })?;
        if !taken {
            return Err(Error::Retry(
                "another backup of this store is running; try again when it has ended".into(),
            ));
        }
        let point = self.settle_for_backup();
        if point.is_err() {
            self.unpin_backup();
        }
        point
    }

    fn settle_for_backup(&self) -> Result<Point> {
        let me = self.slot as u64;
        let deadline = Instant::now() + PIN_WAIT;
        // A reclaimer that claimed before the pin finishes its step (and sees the pin before
        // the next one).
        loop {
            let busy = self.shared(|t| {
                let c = t.get_u64(R_COMPACTOR)?;
                Ok(c != 0 && c != me && !self.slot_dead(c))
            })?;
            if !busy {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Retry(format!(
                    "a reclaim of log space in another process did not end within {} s",
                    PIN_WAIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let point = self.log.point()?;
        // Committed records up to the point become durable (with sync=none this syncs
        // nothing: the copy then holds what a crash of every process would leave).
        self.log.sync_to(point.written)?;
        Ok(point)
    }

    /// Lets reclaiming go on (also done when this process closes the store or dies).
    pub fn unpin_backup(&self) {
        let me = self.slot as u64;
        let _ = self.shared(|t| {
            if t.get_u64(R_BACKUP)? == me {
                t.set_u64(R_BACKUP, 0)?;
            }
            Ok(())
        });
    }
}

/// Records the store's canonical path in the region (by the process that built it).
pub(super) fn record_path(t: &mut Txn<'_>, path: &Path) -> std::result::Result<(), String> {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    if bytes.is_empty() || bytes.len() > MAX_PATH {
        return Ok(());
    }
    let err = |e: crate::shm::Error| format!("recording the store's path: {e}");
    let o = t.alloc(bytes.len() as u64).map_err(err)?;
    t.init_bytes(o, bytes).map_err(err)?;
    t.set_u64(R_PATH, o).map_err(err)?;
    t.set_u64(R_PATH_LEN, bytes.len() as u64).map_err(err)?;
    Ok(())
}

/// The path the store's builder recorded, if any.
pub(super) fn recorded_path(t: &Txn<'_>) -> std::result::Result<Option<String>, String> {
    let err = |e: crate::shm::Error| format!("reading the store's path: {e}");
    let (o, n) = (
        t.get_u64(R_PATH).map_err(err)?,
        t.get_u64(R_PATH_LEN).map_err(err)?,
    );
    if o == 0 || n == 0 || n > MAX_PATH as u64 {
        return Ok(None);
    }
    let mut v = vec![0u8; n as usize];
    t.read_bytes(o, &mut v).map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&v).into_owned()))
}
